"""The whole physical layer: frame bytes -> LDPC codewords -> pilots + symbols, and back with soft decoding.

What is sent for a frame of F bytes (K = 8 F information bits, MSB first) with coding "ldpc_r12":

1. Segmentation: C = ceil(K / 1152) codewords; the first K mod C carry ceil(K / C) bits, the others
   floor(K / C) (1152 is the largest 802.16e rate-1/2 information block, z = 96).
2. Code: every codeword uses the rate-1/2 802.16e base matrix lifted by z = ceil(ceil(K / C) / 12), with
   shifts floor(p z / 96) of the standard's z = 96 table. For z = 24, 28, ..., 96 that is exactly the
   standard's code (z = 60 is the n = 1440 code); other z (1..95) follow the same scaling rule, so a block
   is never more than 11 bits short of a whole code and short frames need no heavy puncturing.
3. Shortening: a codeword with K_c information bits fills positions 0..K_c-1 of the k = 12 z systematic
   bits; positions K_c..k-1 are known zeros, not sent (the receiver feeds them as certain zeros).
4. Puncturing: of the m = 12 z parity bits, K_c are sent: parity positions floor(i m / K_c), i = 0..K_c-1,
   spread evenly over the parity part (at most 11 are left out). So each codeword sends exactly 2 K_c
   bits, [its K_c information bits, then its K_c kept parity bits], and coded_bits = 2 K: rate 1/2 exactly.
5. Interleaving: with several codewords, whole symbols' worth of bits are interleaved: round r carries
   bits r*bps .. r*bps+bps-1 of codeword 0, then of codeword 1, ... (bps = bits per symbol), so a burst of
   erased or faded symbols is shared by all codewords and each codeword meets every bit position of the
   constellation equally often.
6. Scrambling: the coded bits, zero-padded to a whole number of symbols, are XORed with
   `scrambler_bits` (SplitMix64 from a fixed seed, restarted per burst), so the symbols are uniform
   whatever the frame.
7. Modulation: Gray mapping (modem.py); the burst is `pilot_count` known QPSK pilots (pilots.py), then the
   data symbols.

With coding "none" steps 1-5 are skipped: the K frame bits are scrambled and modulated (coded_bits = K).

The receiver estimates gain and noise from the pilots (least squares), sharpens the gain with the data
symbols' second and fourth moments (pilots.refine_with_data: the scrambler makes them predictable), demaps
max-log LLRs, descrambles, puts LLR +LLR_MAX on shortened positions and 0 on punctured ones, decodes with
layered normalised min-sum, and returns the frame bytes; checking the frame (CRC) is the frame codec's job.
When every codeword decodes, the reported SNR, gain and noise are re-estimated by least squares over the
pilots and all data symbols re-modulated from the decoded bits (hundreds of known symbols instead of 16);
otherwise, and for uncoded bursts, they are the pilot (+ moment) estimate.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from semcom.errors import DecodeError
from semcom.phy.ldpc import LLR_MAX, LdpcCode
from semcom.phy.mcs import Mcs
from semcom.phy.modem import BITS_PER_SYMBOL, demap_llr, modulate
from semcom.phy.pilots import ChannelEstimate, estimate_channel, pilot_symbols, refine_with_data

MAX_INFO_PER_CODEWORD = 1152
# Scrambler seed. The sequence is SplitMix64's output (not an LFSR: PRBS-15 from a fixed seed is far from
# uniform over a few hundred symbols, which would bias the receiver's moment estimates for constant frames).
SCRAMBLER_SEED = 0x5E3C_0A11_DA7A_F00D


def scrambler_bits(count: int) -> NDArray[np.uint8]:
    """The first `count` scrambler bits: SplitMix64 outputs for counter 1, 2, ..., 64 bits each, MSB first."""
    words = -(-count // 64)
    with np.errstate(over="ignore"):
        z = np.uint64(SCRAMBLER_SEED) + np.arange(1, words + 1, dtype=np.uint64) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return np.unpackbits(z.astype(">u8").view(np.uint8))[:count]


@dataclass(frozen=True)
class TxBurst:
    """A burst ready for the air: `pilot_symbols` pilots first, then the data symbols."""

    symbols: NDArray[np.complex64]
    info_bits: int
    coded_bits: int
    pilot_symbols: int


@dataclass(frozen=True)
class RxResult:
    """A decoded burst and what the receiver measured on the way."""

    frame: bytes
    snr_db: float  # Es/N0 estimate, NaN when it could not be estimated (no pilots, decoding failed)
    noise_var: float
    gain: complex
    blocks: int  # LDPC codewords in the burst (0 when uncoded)
    blocks_failed: int  # codewords whose parity checks still failed after decoding
    pre_fec_ber: float  # hard channel decisions vs the re-encoded decoded codewords; NaN when uncoded


@dataclass(frozen=True)
class _Plan:
    """How K information bits map onto LDPC codewords and onto the coded bit stream."""

    code: LdpcCode
    info_mask: NDArray[np.bool_]  # (blocks, k): True on the K_c carried positions of each codeword
    air_index: NDArray[np.int64]  # flat index into (blocks, n) of each coded bit, in air order
    llr_template: NDArray[np.float32]  # (blocks, n): +LLR_MAX on shortened positions, 0 elsewhere

    @property
    def blocks(self) -> int:
        return int(self.info_mask.shape[0])


def codeword_info_bits(info_bits: int) -> NDArray[np.int64]:
    """Information bits carried by each LDPC codeword of a frame of `info_bits` bits, in frame order: as
    few codewords as fit, sizes differing by one bit at most (none for an empty frame)."""
    blocks = -(-info_bits // MAX_INFO_PER_CODEWORD)
    if blocks <= 0:
        return np.zeros(0, dtype=np.int64)
    info_per_block = np.full(blocks, info_bits // blocks, dtype=np.int64)
    info_per_block[: info_bits % blocks] += 1
    return info_per_block


@lru_cache(maxsize=1024)
def _plan(info_bits: int, bits_per_symbol: int) -> _Plan:
    info_per_block = codeword_info_bits(info_bits)
    blocks = len(info_per_block)
    z = -(-int(info_per_block[0]) // 12)
    code = LdpcCode.wimax_r12(z)
    k = m = 12 * z
    info_mask = np.arange(k)[None, :] < info_per_block[:, None]
    template = np.zeros((blocks, code.n), dtype=np.float32)
    template[:, :k][~info_mask] = LLR_MAX
    # Sent per codeword: its K_c information bits, then parity positions floor(i m / K_c).
    sent = [
        np.concatenate([np.arange(kc), k + (np.arange(kc) * m) // kc]) + b * code.n
        for b, kc in enumerate(info_per_block.tolist())
    ]
    flat = np.concatenate(sent)
    # Interleave whole symbols: round r sends symbol r of every codeword (its bits r*bps .. r*bps+bps-1),
    # so each codeword meets every bit position of the constellation equally often. (A bit-by-bit
    # round robin would put codeword b only on bit positions b, b+C, ... mod bps: with 14 codewords and
    # 16-QAM half of them would get only the weak bits.)
    block = np.repeat(np.arange(blocks), 2 * info_per_block)
    pos = np.concatenate([np.arange(x.size) for x in sent])
    order = np.lexsort((pos % bits_per_symbol, block, pos // bits_per_symbol))
    air_index = flat[order]
    for array in (info_mask, template, air_index):
        array.setflags(write=False)
    return _Plan(code, info_mask, air_index, template)


_SCRAMBLER_CACHE = scrambler_bits(1 << 16)
_SCRAMBLER_SIGN = (1 - 2 * _SCRAMBLER_CACHE.astype(np.float32)).astype(np.float32)


def _scrambler(count: int) -> NDArray[np.uint8]:
    return _SCRAMBLER_CACHE[:count] if count <= _SCRAMBLER_CACHE.size else scrambler_bits(count)


def _descramble(llr: NDArray[np.float32]) -> NDArray[np.float32]:
    """Flip the LLR signs where the scrambler bit is 1."""
    if llr.size <= _SCRAMBLER_SIGN.size:
        return llr * _SCRAMBLER_SIGN[: llr.size]
    return llr * (1 - 2 * scrambler_bits(llr.size).astype(np.float32))


def coded_bits_for(info_bits: int, mcs: Mcs) -> int:
    """Coded bits on the air for a frame of `info_bits` bits."""
    if mcs.coding == "none" or info_bits == 0:
        return info_bits
    return 2 * info_bits


def burst_symbols(info_bits: int, mcs: Mcs, pilot_count: int) -> int:
    """Total symbols (pilots + data) of a burst."""
    return pilot_count + -(-coded_bits_for(info_bits, mcs) // BITS_PER_SYMBOL[mcs.modulation])


def transmit(frame: bytes, mcs: Mcs, *, pilot_count: int = 16) -> TxBurst:
    """Encode, scramble, modulate and prefix pilots (see the module docstring for the exact layout)."""
    if pilot_count < 0 or pilot_count == 1:
        raise ValueError(f"pilot_count must be 0 or >= 2, got {pilot_count}")
    bits = np.unpackbits(np.frombuffer(frame, dtype=np.uint8))
    coded = _encode(bits, mcs)
    symbols = np.concatenate([pilot_symbols(pilot_count), _map(coded, mcs)])
    return TxBurst(symbols=symbols, info_bits=bits.size, coded_bits=coded.size, pilot_symbols=pilot_count)


def _encode(bits: NDArray[np.uint8], mcs: Mcs) -> NDArray[np.uint8]:
    if mcs.coding == "none" or bits.size == 0:
        return bits
    plan = _plan(bits.size, BITS_PER_SYMBOL[mcs.modulation])
    info = np.zeros(plan.info_mask.shape, dtype=np.uint8)
    info[plan.info_mask] = bits
    return plan.code.encode(info).reshape(-1)[plan.air_index]


def _map(coded: NDArray[np.uint8], mcs: Mcs) -> NDArray[np.complex64]:
    """Zero-pad to whole symbols, scramble, modulate."""
    bps = BITS_PER_SYMBOL[mcs.modulation]
    padded = np.zeros(-(-coded.size // bps) * bps, dtype=np.uint8)
    padded[: coded.size] = coded
    return modulate(padded ^ _scrambler(padded.size), mcs.modulation)


def receive(
    symbols: NDArray[np.complex64],
    mcs: Mcs,
    *,
    info_bits: int,
    coded_bits: int,
    pilot_count: int,
    max_iter: int = 20,
) -> RxResult:
    """Estimate the channel, demap, decode; DecodeError when the burst does not match its header numbers.

    Non-finite symbols are treated as erasures, like NaN.
    """
    y = np.asarray(symbols, dtype=np.complex64).reshape(-1)
    _check_header(y.size, mcs, info_bits, coded_bits, pilot_count)
    if not np.isfinite(y).all():
        y = np.where(np.isfinite(y), y, np.complex64(complex(math.nan, math.nan)))
    pilots, data = pilot_symbols(pilot_count), y[pilot_count:]
    estimate = None
    if pilot_count:
        estimate = refine_with_data(estimate_channel(y[:pilot_count], pilots), data, mcs.modulation)
    gain = estimate.gain if estimate else 1.0 + 0j
    # Min-sum decoding does not depend on the LLR scale, so without pilots a nominal N0 of 1 decodes too.
    noise_var = estimate.noise_var if estimate else 1.0
    llr = _descramble(demap_llr(data, mcs.modulation, noise_var, gain))[:coded_bits]
    if mcs.coding == "none" or info_bits == 0:
        return _result(np.packbits(llr < 0).tobytes(), estimate, 0, 0, math.nan)
    plan = _plan(info_bits, BITS_PER_SYMBOL[mcs.modulation])
    info, ok, air, pre_fec_ber = _decode(plan, llr, max_iter)
    failed = int(plan.blocks - ok.sum())
    if failed == 0:
        with contextlib.suppress(DecodeError):  # everything erased: keep the pilot estimate
            estimate = estimate_channel(y, np.concatenate([pilots, _map(air, mcs)]))
    return _result(np.packbits(info[plan.info_mask]).tobytes(), estimate, plan.blocks, failed, pre_fec_ber)


def _decode(
    plan: _Plan, llr: NDArray[np.float32], max_iter: int
) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.uint8], float]:
    """(info bits per codeword, parity ok per codeword, re-encoded coded bits in air order, pre-FEC BER)."""
    full = plan.llr_template.copy()  # punctured positions stay 0: no information
    full.reshape(-1)[plan.air_index] = llr
    words, ok, _ = plan.code.decode_detailed(full, max_iter=max_iter)
    info = words[:, : plan.code.k]
    if not ok.all():  # where the checks hold the decisions already are the codeword
        words[~ok] = plan.code.encode(info[~ok])
    air = words.reshape(-1)[plan.air_index]
    known = llr != 0  # erased symbols carry no decision
    errors = np.count_nonzero((llr[known] < 0) != air[known].astype(bool))
    return info, ok, air, errors / max(int(known.sum()), 1)


def _check_header(count: int, mcs: Mcs, info_bits: int, coded_bits: int, pilot_count: int) -> None:
    if info_bits < 0 or info_bits % 8:
        raise DecodeError(f"info_bits {info_bits} is not a whole number of bytes")
    if pilot_count < 0 or pilot_count == 1:
        raise DecodeError(f"pilot count {pilot_count} is invalid (0 or >= 2)")
    expected_coded = coded_bits_for(info_bits, mcs)
    if coded_bits != expected_coded:
        raise DecodeError(
            f"coded_bits {coded_bits} does not match {mcs} for {info_bits} info bits ({expected_coded})"
        )
    expected = burst_symbols(info_bits, mcs, pilot_count)
    if count != expected:
        what = "truncated" if count < expected else "overlong"
        raise DecodeError(
            f"{what} burst: {count} symbols, header ({mcs}, {info_bits} info bits, {coded_bits} coded bits, "
            f"{pilot_count} pilots) needs {expected}"
        )


def _result(
    frame: bytes, estimate: ChannelEstimate | None, blocks: int, failed: int, pre_fec_ber: float
) -> RxResult:
    if estimate is None:
        return RxResult(frame, math.nan, math.nan, 1.0 + 0j, blocks, failed, pre_fec_ber)
    return RxResult(frame, estimate.snr_db, estimate.noise_var, estimate.gain, blocks, failed, pre_fec_ber)
