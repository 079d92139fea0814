"""LDPC: the 802.16e rate-1/2 family, encoder, layered min-sum decoder vs commpy 1.2.0, and the cliff."""

from __future__ import annotations

import math
from importlib import resources

import commpy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from semcom.phy.ldpc import WIMAX_Z, LdpcCode, wimax_r12_base
from semcom.phy.modem import demap_llr, modulate


def shipped_n1440_base() -> NDArray[np.int64]:
    text = resources.files("semcom.phy").joinpath("data", "wimax_rate_half_n1440_base_matrix.txt").read_text()
    return np.array(
        [line.split() for line in text.splitlines() if line and not line.startswith("#")], dtype=int
    )


def qam16_llrs(codewords: NDArray[np.uint8], snr_db: float, rng: np.random.Generator) -> NDArray[np.float32]:
    """16-QAM over AWGN at Es/N0 = snr_db, max-log LLRs, shape like `codewords`."""
    symbols = modulate(codewords.reshape(-1), "qam16")
    n0 = 10 ** (-snr_db / 10)
    noise = rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)
    y = (symbols + math.sqrt(n0 / 2) * noise).astype(np.complex64)
    return demap_llr(y, "qam16", n0).reshape(codewords.shape)


@pytest.fixture(scope="module")
def code() -> LdpcCode:
    return LdpcCode.wimax_r12(60)


@pytest.fixture(scope="module")
def commpy_code() -> commpy.LDPCCode:
    return commpy.LDPCCode.from_base_graph(shipped_n1440_base(), 60)


def test_z96_table_scaled_to_60_is_the_shipped_matrix() -> None:
    np.testing.assert_array_equal(wimax_r12_base(60), shipped_n1440_base())


@pytest.mark.parametrize("z", [*WIMAX_Z, 1, 5, 13, 61])
def test_family_codewords_satisfy_every_check(z: int) -> None:
    c = LdpcCode.wimax_r12(z)
    assert (c.n, c.k) == (24 * z, 12 * z)
    info = np.random.default_rng(z).integers(0, 2, (8, c.k), dtype=np.uint8)
    words = c.encode(info)
    np.testing.assert_array_equal(words[:, : c.k], info)  # systematic
    h = c.parity_check_matrix().astype(np.int64)
    assert not np.any((h @ words.T.astype(np.int64)) % 2)
    assert c.syndrome_ok(words).all()


def test_same_code_as_commpy(code: LdpcCode, commpy_code: commpy.LDPCCode) -> None:
    assert (commpy_code.n, commpy_code.k) == (code.n, code.k)
    np.testing.assert_array_equal(commpy_code.H, code.parity_check_matrix())
    rng = np.random.default_rng(4)
    ours = code.encode(rng.integers(0, 2, (20, code.k), dtype=np.uint8))
    assert not np.any((commpy_code.H.astype(np.int64) @ ours.T) % 2)
    theirs = np.array([commpy_code.encode(m) for m in rng.integers(0, 2, (20, commpy_code.k))])
    assert code.syndrome_ok(theirs).all()


def test_decisions_match_commpy_on_noisy_llrs(code: LdpcCode, commpy_code: commpy.LDPCCode) -> None:
    """Seed 5, 30 codewords, 16-QAM at 8 dB (raw BER ~2 %): both decoders return the sent codewords."""
    rng = np.random.default_rng(5)
    words = code.encode(rng.integers(0, 2, (30, code.k), dtype=np.uint8))
    llr = qam16_llrs(words, 8.0, rng)
    assert np.count_nonzero((llr < 0) != words.astype(bool)) > 100  # there is something to correct
    ours, ok, _ = code.decode_detailed(llr, max_iter=20)
    theirs = np.array([commpy_code.decode(row, max_iter=20)[1] for row in llr])
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, words)
    assert ok.all()


@pytest.mark.parametrize(("snr_db", "blocks", "check"), [(6.0, 300, "high"), (9.0, 2000, "low")])
def test_cliff_qam16_n1440(code: LdpcCode, snr_db: float, blocks: int, check: str) -> None:
    """n=1440 rate 1/2 + 16-QAM on AWGN, 20 iterations, seed 6: BLER >= 0.5 at 6 dB, <= 1e-3 at 9 dB."""
    rng = np.random.default_rng(6)
    info = rng.integers(0, 2, (blocks, code.k), dtype=np.uint8)
    decoded, _ = code.decode(qam16_llrs(code.encode(info), snr_db, rng), max_iter=20)
    bler = np.mean(np.any(decoded != info, axis=1))
    if check == "high":
        assert bler >= 0.5
    else:
        assert bler <= 1e-3


def test_noiseless_input_stops_before_iterating(code: LdpcCode) -> None:
    words = code.encode(np.random.default_rng(7).integers(0, 2, (3, code.k), dtype=np.uint8))
    _, ok, iterations = code.decode_detailed((1.0 - 2.0 * words).astype(np.float32) * 5)
    assert ok.all()
    assert not iterations.any()


def test_erased_and_infinite_llrs_are_handled(code: LdpcCode) -> None:
    words = code.encode(np.zeros((1, code.k), dtype=np.uint8))
    llr = np.full((1, code.n), np.inf, dtype=np.float32)
    llr[0, :100] = np.nan  # erasures
    info, ok = code.decode(llr)
    assert ok.all()
    np.testing.assert_array_equal(info, words[:, : code.k])


def test_bad_shapes_are_rejected(code: LdpcCode) -> None:
    with pytest.raises(ValueError, match="info"):
        code.encode(np.zeros(code.k + 1, dtype=np.uint8))
    with pytest.raises(ValueError, match="llr"):
        code.decode(np.zeros((2, code.n - 1), dtype=np.float32))
    with pytest.raises(ValueError, match="lifting"):
        LdpcCode.wimax_r12(97)


def test_encode_single_block_shape(code: LdpcCode) -> None:
    assert code.encode(np.zeros(code.k, dtype=np.uint8)).shape == (code.n,)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=96), st.integers(min_value=0, max_value=2**32 - 1))
def test_encoder_is_linear(z: int, seed: int) -> None:
    c = LdpcCode.wimax_r12(z)
    a, b = np.random.default_rng(seed).integers(0, 2, (2, c.k), dtype=np.uint8)
    np.testing.assert_array_equal(c.encode(a ^ b), c.encode(a) ^ c.encode(b))
