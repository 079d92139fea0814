"""Modem: Gray constellations, uncoded BER against closed forms, max-log LLRs against commpy 1.2.0."""

from __future__ import annotations

import math
from collections.abc import Callable

import commpy
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.special import erfc

from semcom.phy.modem import BITS_PER_SYMBOL, ModulationName, constellation, demap_llr, hard_bits, modulate

MODULATIONS: tuple[ModulationName, ...] = ("bpsk", "qpsk", "qam16", "qam64")


def qfunc(x: float) -> float:
    return 0.5 * float(erfc(x / math.sqrt(2.0)))


# Bit error probability of Gray-mapped constellations on AWGN as a function of g = Es/N0 (linear),
# unit-energy constellations. BPSK and QPSK are exact (Proakis, Digital Communications, 5th ed., 4.3);
# 16- and 64-QAM are the exact Gray-PAM expressions of Cho & Yoon, "On the general BER expression of one- and
# two-dimensional amplitude modulations", IEEE Trans. Commun. 50(7), 2002, eq. (14) with x = half the minimum
# distance over sigma: x = sqrt(g / 5) for 16-QAM, sqrt(g / 21) for 64-QAM.
def ber_bpsk(g: float) -> float:
    return qfunc(math.sqrt(2 * g))


def ber_qpsk(g: float) -> float:
    return qfunc(math.sqrt(g))


def ber_qam16(g: float) -> float:
    x = math.sqrt(g / 5)
    return (3 * qfunc(x) + 2 * qfunc(3 * x) - qfunc(5 * x)) / 4


def ber_qam64(g: float) -> float:
    x = math.sqrt(g / 21)
    return (7 * qfunc(x) + 6 * qfunc(3 * x) - qfunc(5 * x) + qfunc(9 * x) - qfunc(13 * x)) / 12


CLOSED_FORM: dict[ModulationName, Callable[[float], float]] = {
    "bpsk": ber_bpsk,
    "qpsk": ber_qpsk,
    "qam16": ber_qam16,
    "qam64": ber_qam64,
}
COMMPY = {
    "bpsk": commpy.MPSKModulator(2),
    "qpsk": commpy.MQAMModulator(4),
    "qam16": commpy.MQAMModulator(16),
    "qam64": commpy.MQAMModulator(64),
}


def awgn(symbols: NDArray[np.complex64], snr_db: float, rng: np.random.Generator) -> NDArray[np.complex64]:
    n0 = 10 ** (-snr_db / 10)
    noise = rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)
    return (symbols + math.sqrt(n0 / 2) * noise).astype(np.complex64)


@pytest.mark.parametrize("modulation", MODULATIONS)
def test_unit_energy_gray_and_same_points_as_commpy(modulation: ModulationName) -> None:
    points, labels = constellation(modulation)
    assert np.mean(np.abs(points) ** 2) == pytest.approx(1.0, rel=1e-6)
    # Gray: nearest neighbours differ in exactly one bit.
    dist = np.abs(points[:, None] - points[None, :])
    dmin = dist[dist > 1e-6].min()
    for i, j in zip(*np.nonzero(np.isclose(dist, dmin, rtol=1e-4)), strict=True):
        assert np.sum(labels[i] != labels[j]) == 1
    # Same mapping as commpy 1.2.0 (MQAMModulator for QAM/QPSK, MPSKModulator(2) for BPSK).
    ref = COMMPY[modulation].modulate(labels.reshape(-1))
    np.testing.assert_allclose(points, ref, atol=1e-6)


@pytest.mark.parametrize("modulation", MODULATIONS)
def test_modulate_rejects_partial_symbols(modulation: ModulationName) -> None:
    bps = BITS_PER_SYMBOL[modulation]
    if bps == 1:
        return
    with pytest.raises(ValueError, match="multiple"):
        modulate(np.zeros(bps + 1, dtype=np.uint8), modulation)


@pytest.mark.parametrize("modulation", MODULATIONS)
def test_uncoded_ber_matches_closed_form(modulation: ModulationName) -> None:
    """Seed 1, 600,000 bits per SNR point, 0..20 dB in 2 dB steps.

    Points where fewer than 50 errors are expected are skipped (too few to compare). Elsewhere the count must
    be within 5 binomial standard deviations of the expectation, plus 2 % for float32 rounding.
    """
    rng = np.random.default_rng(1)
    n_bits = 600_000
    bits = rng.integers(0, 2, n_bits, dtype=np.uint8)
    symbols = modulate(bits, modulation)
    checked = 0
    for snr_db in range(0, 21, 2):
        expected = CLOSED_FORM[modulation](10 ** (snr_db / 10)) * n_bits
        if expected < 50:
            continue
        errors = int(np.count_nonzero(hard_bits(awgn(symbols, snr_db, rng), modulation) != bits))
        tolerance = 5 * math.sqrt(expected) + 0.02 * expected
        assert abs(errors - expected) <= tolerance, (snr_db, errors, expected)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("modulation", MODULATIONS)
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_llrs_match_commpy(modulation: ModulationName, snr_db: float) -> None:
    """Seed 2: max-log LLRs equal commpy 1.2.0's soft_demodulate (same sign convention: + favours 0)."""
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2, 6 * 2000, dtype=np.uint8)
    y = awgn(modulate(bits, modulation), snr_db, rng)
    n0 = 10 ** (-snr_db / 10)
    ours = demap_llr(y, modulation, n0)
    ref = COMMPY[modulation].soft_demodulate(y.astype(np.complex128), n0)
    nonzero = np.abs(ref) > 1e-3 * np.abs(ref).max()
    assert np.array_equal(np.sign(ours[nonzero]), np.sign(ref[nonzero]))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("modulation", MODULATIONS)
def test_llrs_with_channel_gain_equalise(modulation: ModulationName) -> None:
    """y = h x + n demapped with gain h equals commpy on y / h with noise N0 / |h|^2 (seed 3)."""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 6 * 500, dtype=np.uint8)
    h = 0.4 * np.exp(1j * 2.1)
    n0 = 0.01
    y = awgn(h * modulate(bits, modulation), 20.0, rng)
    ours = demap_llr(y, modulation, n0, gain=h)
    ref = COMMPY[modulation].soft_demodulate(y.astype(np.complex128) / h, n0 / abs(h) ** 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    per_symbol_gain = np.full(y.size, h, dtype=np.complex64)
    np.testing.assert_allclose(
        demap_llr(y, modulation, np.full(y.size, n0, np.float32), per_symbol_gain), ours
    )


def test_erasures_and_zero_gain_give_zero_llr() -> None:
    y = modulate(np.array([0, 1, 1, 0, 1, 1, 0, 0], dtype=np.uint8), "qam16")
    y[0] = np.nan
    llr = demap_llr(y, "qam16", 0.1)
    assert np.all(llr[:4] == 0)
    assert np.all(llr[4:] != 0)
    assert np.all(demap_llr(y, "qam16", 0.1, gain=np.array([1, 0], dtype=np.complex64))[4:] == 0)


def test_noise_var_must_be_positive() -> None:
    with pytest.raises(ValueError, match="noise_var"):
        demap_llr(np.ones(2, dtype=np.complex64), "qpsk", 0.0)
