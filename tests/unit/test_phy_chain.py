"""Whole chain: round trips for every MCS, burst layout, header checks, pilots, SNR estimates, MCS choice."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from numpy.typing import NDArray

from semcom.errors import DecodeError
from semcom.phy import (
    MCS_TABLE,
    Mcs,
    burst_symbols,
    estimate_channel,
    pilot_symbols,
    receive,
    select_mcs,
    transmit,
)
from semcom.phy.chain import RxResult, TxBurst

ALL_MCS = [
    Mcs.parse(f"{m}/{c}")
    for m, c in itertools.product(("bpsk", "qpsk", "qam16", "qam64"), ("none", "ldpc_r12"))
]


def channel(
    tx: TxBurst, snr_db: float, rng: np.random.Generator, gain: complex = 1.0
) -> NDArray[np.complex64]:
    n0 = 10 ** (-snr_db / 10)
    noise = rng.standard_normal(tx.symbols.size) + 1j * rng.standard_normal(tx.symbols.size)
    return (gain * tx.symbols + math.sqrt(n0 / 2) * noise).astype(np.complex64)


def rx(y: NDArray[np.complex64], mcs: Mcs, tx: TxBurst) -> RxResult:
    return receive(y, mcs, info_bits=tx.info_bits, coded_bits=tx.coded_bits, pilot_count=tx.pilot_symbols)


@pytest.mark.parametrize("mcs", ALL_MCS, ids=str)
def test_round_trip_every_mcs(mcs: Mcs) -> None:
    """Seed 8: frames of 1..2000 bytes with a random gain. 20 dB for every coded MCS and uncoded BPSK/QPSK.

    Uncoded 16-QAM and 64-QAM run at 30 dB: at 20 dB their uncoded BER (3e-6 and 9e-3) makes frame errors
    in a 2000-byte frame likely, which is physics, not a bug.
    """
    rng = np.random.default_rng(8)
    snr_db = 30.0 if mcs.coding == "none" and mcs.modulation in ("qam16", "qam64") else 20.0
    sizes = [1, 2, 17, 90, 91, 144, 145, 600, 1999, 2000, *rng.integers(1, 2001, 4)]
    for size in sizes:
        frame = rng.integers(0, 256, int(size), dtype=np.uint8).tobytes()
        tx = transmit(frame, mcs)
        gain = 0.7 * np.exp(2j * np.pi * rng.random())
        result = rx(channel(tx, snr_db, rng, gain), mcs, tx)
        assert result.frame == frame, (mcs, size)
        assert result.blocks_failed == 0
        # The estimate's error per dimension has variance N0 / (2 N) over N known symbols (the pilots, plus
        # the re-encoded data when coded): 4 sqrt(2) sigma in magnitude.
        known = tx.symbols.size if mcs.coding == "ldpc_r12" else tx.pilot_symbols
        assert abs(result.gain - gain) < 4 * math.sqrt(10 ** (-snr_db / 10) / known)


@pytest.mark.parametrize("mcs", ALL_MCS, ids=str)
@pytest.mark.parametrize("size", [1, 45, 144, 145, 1000])
def test_burst_layout(mcs: Mcs, size: int) -> None:
    tx = transmit(bytes(size), mcs, pilot_count=16)
    assert tx.info_bits == 8 * size
    assert tx.coded_bits == (2 if mcs.coding == "ldpc_r12" else 1) * 8 * size  # rate 1/2 on the wire
    assert tx.symbols.size == 16 + math.ceil(tx.coded_bits / mcs.bits_per_symbol)
    assert tx.symbols.size == burst_symbols(tx.info_bits, mcs, 16)
    np.testing.assert_array_equal(tx.symbols[:16], pilot_symbols(16))


def test_long_frames_at_the_cliff_edge() -> None:
    """Seed 13: 15 frames of 2000 bytes (14 codewords each) as 16-QAM at 9 dB all decode.

    Every codeword must see every bit position of the 16-QAM symbols; an interleaver that put some codewords
    only on the weak bits fails here (about one codeword in 40 at 8.5 dB).
    """
    rng = np.random.default_rng(13)
    mcs = Mcs("qam16", "ldpc_r12")
    for _ in range(15):
        frame = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
        tx = transmit(frame, mcs)
        result = rx(channel(tx, 9.0, rng, np.exp(2j * np.pi * rng.random())), mcs, tx)
        assert (result.frame, result.blocks, result.blocks_failed) == (frame, 14, 0)
        # Uncoded Gray 16-QAM at 9 dB: [3Q(x) + 2Q(3x) - Q(5x)] / 4, x = sqrt(Es / (5 N0)), is 0.0780; over
        # 32,000 coded bits the estimate's standard deviation is 2 %, so +-15 % leaves room for the
        # channel-estimate error.
        assert result.pre_fec_ber == pytest.approx(0.0780, rel=0.15)


def test_burst_erasure_is_spread_over_codewords() -> None:
    """Seed 14: 20 % of a 1500-byte QPSK burst erased in one run (NaN) at 12 dB still decodes."""
    rng = np.random.default_rng(14)
    mcs = Mcs("qpsk", "ldpc_r12")
    frame = rng.integers(0, 256, 1500, dtype=np.uint8).tobytes()
    tx = transmit(frame, mcs)
    y = channel(tx, 12.0, rng)
    start, length = 16 + 3000, (y.size - 16) // 5
    y[start : start + length] = np.nan
    result = rx(y, mcs, tx)
    assert result.frame == frame
    assert result.blocks == 11


@pytest.mark.parametrize("mcs", [Mcs("qam16", "ldpc_r12"), Mcs("qam64", "none")], ids=str)
def test_scrambled_symbols_are_uniform_whatever_the_frame(mcs: Mcs) -> None:
    """Constant frames still give unit mean power (what the receiver's moment estimates rely on).

    Tolerance: 4 standard deviations of the mean of |x|^2 over uniform symbols (variance 0.32 for 16-QAM,
    0.38 for 64-QAM).
    """
    for frame in (bytes(500), b"\xff" * 500):
        tx = transmit(frame, mcs)
        data = tx.symbols[16:]
        assert np.mean(np.abs(data) ** 2) == pytest.approx(1.0, abs=4 * math.sqrt(0.38 / data.size))
        assert rx(tx.symbols, mcs, tx).frame == frame  # noise-free


def test_header_mismatches_raise_decode_error() -> None:
    mcs = Mcs("qam16", "ldpc_r12")
    tx = transmit(b"x" * 100, mcs)
    y = tx.symbols
    with pytest.raises(DecodeError, match="truncated burst"):
        receive(y[:-1], mcs, info_bits=tx.info_bits, coded_bits=tx.coded_bits, pilot_count=16)
    with pytest.raises(DecodeError, match="overlong burst"):
        receive(np.append(y, y[:1]), mcs, info_bits=tx.info_bits, coded_bits=tx.coded_bits, pilot_count=16)
    with pytest.raises(DecodeError, match="coded_bits"):
        receive(y, mcs, info_bits=tx.info_bits, coded_bits=tx.coded_bits + 8, pilot_count=16)
    with pytest.raises(DecodeError, match="whole number of bytes"):
        receive(y, mcs, info_bits=tx.info_bits - 1, coded_bits=tx.coded_bits, pilot_count=16)


def test_erased_pilots_and_data_symbols() -> None:
    """Seed 9: 6 of 16 pilots and 10 % of data symbols erased (NaN) at 15 dB still decode."""
    rng = np.random.default_rng(9)
    mcs = Mcs("qpsk", "ldpc_r12")
    frame = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    tx = transmit(frame, mcs)
    y = channel(tx, 15.0, rng)
    y[[0, 3, 5, 8, 9, 15]] = np.nan
    y[16 + rng.choice(y.size - 16, (y.size - 16) // 10, replace=False)] = np.nan
    assert rx(y, mcs, tx).frame == frame
    y[:15] = np.nan
    with pytest.raises(DecodeError, match="pilot"):
        rx(y, mcs, tx)


def test_non_finite_symbols_are_erasures() -> None:
    rng = np.random.default_rng(15)
    mcs = Mcs("qam16", "ldpc_r12")
    frame = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
    tx = transmit(frame, mcs)
    y = channel(tx, 15.0, rng)
    y[[3, 40, 41]] = [np.inf, complex(1.0, -np.inf), complex(np.nan, 0.0)]
    assert rx(y, mcs, tx).frame == frame


def test_no_pilots_on_a_plain_awgn_link() -> None:
    rng = np.random.default_rng(10)
    mcs = Mcs("qam16", "ldpc_r12")
    frame = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    tx = transmit(frame, mcs, pilot_count=0)
    result = rx(channel(tx, 12.0, rng), mcs, tx)
    assert result.frame == frame
    assert abs(result.snr_db - 12.0) < 1.0  # from the decoded data symbols


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 20.0])
def test_chain_snr_estimate_within_1_db(snr_db: float) -> None:
    """Seed 11, 30 bursts of 100 bytes, QPSK rate 1/2, 16 pilots, random gain: every report within +-1 dB.

    Reports are made from the pilots plus the re-modulated decoded data (816 known symbols): the estimate's
    standard deviation is about 0.15 dB, so +-1 dB is over 6 sigma.
    """
    rng = np.random.default_rng(11)
    mcs = Mcs("qpsk", "ldpc_r12")
    for _ in range(30):
        frame = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
        tx = transmit(frame, mcs)
        gain = np.exp(2j * np.pi * rng.random())
        result = rx(channel(tx, snr_db, rng, gain), mcs, tx)
        assert result.frame == frame
        assert abs(result.snr_db - snr_db) <= 1.0
        assert result.pre_fec_ber >= 0.0


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 20.0])
def test_pilot_estimator_statistics(snr_db: float) -> None:
    """Seed 12, 4000 bursts of 16 pilots, gain 1: the (n-1) noise estimate is unbiased, the SNR centred.

    Tolerances: mean N0 within 3 % of the truth (its standard error is 0.4 %), median SNR error within
    +-0.5 dB, at least 50 % of single 16-pilot estimates within +-1 dB (N0_hat / N0 is chi-square with
    30 degrees of freedom over 30, inside [-1, +1] dB with probability 0.62; the gain error lowers that a
    little), gain error within 4 sqrt(2) sigma in magnitude (sigma = sqrt(N0 / 32) per dimension).
    """
    rng = np.random.default_rng(12)
    n0 = 10 ** (-snr_db / 10)
    x = pilot_symbols(16)
    noise = math.sqrt(n0 / 2) * (rng.standard_normal((4000, 16)) + 1j * rng.standard_normal((4000, 16)))
    estimates = [estimate_channel((x + row).astype(np.complex64)) for row in noise]
    noise_vars = np.array([e.noise_var for e in estimates])
    snr_err = np.array([e.snr_db for e in estimates]) - snr_db
    assert np.mean(noise_vars) == pytest.approx(n0, rel=0.03)
    # The plain mean of squared residuals would read (n-1)/n = 15/16 of N0: 6 % low, outside the tolerance.
    assert abs(np.mean(noise_vars) * 15 / 16 - n0) > 0.03 * n0
    assert abs(np.median(snr_err)) <= 0.5
    assert np.mean(np.abs(snr_err) <= 1.0) >= 0.5
    gains = np.array([e.gain for e in estimates])
    assert np.max(np.abs(gains - 1)) <= 4 * math.sqrt(2) * math.sqrt(n0 / 32)


def test_pilots_are_deterministic_unit_energy_qpsk() -> None:
    p = pilot_symbols(64)
    np.testing.assert_array_equal(p, pilot_symbols(64))
    np.testing.assert_array_equal(p[:16], pilot_symbols(16))
    np.testing.assert_allclose(np.abs(p), 1.0, rtol=1e-6)
    assert len({complex(v) for v in np.round(p, 4)}) == 4


def test_select_mcs_is_monotone_and_respects_margin() -> None:
    efficiencies = [select_mcs(s / 10).efficiency for s in range(-100, 400)]
    assert efficiencies == sorted(efficiencies)
    assert select_mcs(-20.0) == MCS_TABLE[0].mcs
    assert select_mcs(100.0).efficiency == max(e.mcs.efficiency for e in MCS_TABLE)
    assert select_mcs(math.nan) == MCS_TABLE[0].mcs
    for entry in MCS_TABLE:
        assert select_mcs(entry.min_snr_db + 1.0, margin_db=1.0).efficiency >= entry.mcs.efficiency
        assert select_mcs(entry.min_snr_db + 0.99, margin_db=1.0).efficiency <= entry.mcs.efficiency


def test_mcs_names() -> None:
    mcs = Mcs.parse("qam16/ldpc_r12")
    assert (str(mcs), mcs.bits_per_symbol, mcs.rate, mcs.efficiency) == ("qam16/ldpc_r12", 4, 0.5, 2.0)
    assert Mcs.parse("qpsk") == Mcs("qpsk", "none")
    with pytest.raises(ValueError, match="modulation"):
        Mcs.parse("qam256/none")
