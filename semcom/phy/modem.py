"""Gray-mapped BPSK/QPSK/16-QAM/64-QAM with unit average energy, and max-log LLR demapping."""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np
from numpy.typing import NDArray

ModulationName = Literal["bpsk", "qpsk", "qam16", "qam64"]

BITS_PER_SYMBOL: dict[ModulationName, int] = {"bpsk": 1, "qpsk": 2, "qam16": 4, "qam64": 6}

# Bits per symbol are split into an I half and a Q half; each half picks one level of a Gray-labelled PAM
# ladder (-(L-1), ..., -1, +1, ..., L-1): the level of index l carries the label l ^ (l >> 1), MSB first.
# This is the IEEE 802.11a / 802.16e mapping and the same as commpy's MQAMModulator. BPSK maps bit 0 to +1
# and bit 1 to -1 on the I axis only (as commpy's MPSKModulator(2)).
_NORM: dict[ModulationName, float] = {
    "bpsk": 1.0,
    "qpsk": 2.0**-0.5,
    "qam16": 10.0**-0.5,
    "qam64": 42.0**-0.5,
}


def _axis_table(modulation: ModulationName) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """(level per PAM index, bit label per PAM index (L, bits per axis)) of one axis."""
    if modulation == "bpsk":
        return np.array([1.0, -1.0], dtype=np.float32), np.array([[0], [1]], dtype=np.uint8)
    per_axis = BITS_PER_SYMBOL[modulation] // 2
    count = 1 << per_axis
    index = np.arange(count)
    levels = ((2 * index - (count - 1)) * _NORM[modulation]).astype(np.float32)
    gray = index ^ (index >> 1)
    labels = ((gray[:, None] >> np.arange(per_axis - 1, -1, -1)) & 1).astype(np.uint8)
    return levels, labels


_TABLES = {name: _axis_table(name) for name in BITS_PER_SYMBOL}


def _level_of_label(modulation: ModulationName) -> NDArray[np.float32]:
    """Level for each integer label value (MSB-first bits of one axis)."""
    levels, labels = _TABLES[modulation]
    weights = 1 << np.arange(labels.shape[1] - 1, -1, -1)
    out = np.empty(levels.size, dtype=np.float32)
    out[labels.astype(np.int64) @ weights] = levels
    return out


_LEVEL_OF_LABEL = {name: _level_of_label(name) for name in BITS_PER_SYMBOL}


def _check(modulation: str) -> ModulationName:
    if modulation not in BITS_PER_SYMBOL:
        raise ValueError(f"unknown modulation {modulation!r}; expected one of {sorted(BITS_PER_SYMBOL)}")
    return modulation  # type: ignore[return-value]


def constellation(modulation: ModulationName) -> tuple[NDArray[np.complex64], NDArray[np.uint8]]:
    """All points in label order (point i carries the bits of integer i, MSB first) and those bit labels."""
    bps = BITS_PER_SYMBOL[_check(modulation)]
    labels = ((np.arange(1 << bps)[:, None] >> np.arange(bps - 1, -1, -1)) & 1).astype(np.uint8)
    return modulate(labels.reshape(-1), modulation), labels


def modulate(bits: NDArray[np.uint8], modulation: ModulationName) -> NDArray[np.complex64]:
    """Map bits (0/1, first bit of each group is the MSB of the I label) to unit-energy symbols."""
    bps = BITS_PER_SYMBOL[_check(modulation)]
    b = np.asarray(bits, dtype=np.uint8).reshape(-1)
    if b.size % bps:
        raise ValueError(f"{modulation} needs a multiple of {bps} bits, got {b.size}")
    table = _LEVEL_OF_LABEL[modulation]
    if modulation == "bpsk":
        return table[b & 1].astype(np.complex64)
    per_axis = bps // 2
    groups = (b & 1).reshape(-1, 2, per_axis).astype(np.intp)
    weights = 1 << np.arange(per_axis - 1, -1, -1)
    label = groups @ weights
    out = np.empty(label.shape[0], dtype=np.complex64)
    out.real = table[label[:, 0]]
    out.imag = table[label[:, 1]]
    return out


def demap_llr(
    symbols: NDArray[np.complex64],
    modulation: ModulationName,
    noise_var: float | NDArray[np.float32],
    gain: complex | NDArray[np.complex64] | None = None,
) -> NDArray[np.float32]:
    """Max-log bit LLRs, LLR = log P(b=0 | y) / P(b=1 | y): positive means bit 0 is more likely.

    For y = h x + n with complex Gaussian n of variance `noise_var` (N0 per complex symbol, N0/2 per real
    dimension) the max-log LLR of a bit is (min_{x: b=1} |y - h x|^2 - min_{x: b=0} |y - h x|^2) / N0, which
    equals |h|^2 / N0 times the same distance difference for the equalised symbol y / h; square QAM
    separates into I and Q so each axis is a small PAM search. `noise_var` and `gain` are scalars or one
    value per symbol. NaN symbols (erasures) and zero gains give LLR 0. Output: one LLR per bit, in the
    order `modulate` takes bits.
    """
    mod = _check(modulation)
    y = np.asarray(symbols, dtype=np.complex64).reshape(-1)
    n0 = np.broadcast_to(np.asarray(noise_var, dtype=np.float32), y.shape)
    if np.any(n0 <= 0) or np.any(~np.isfinite(n0)):
        raise ValueError("noise_var must be positive and finite")
    if gain is None:
        eq = y
        weight = np.ascontiguousarray(1.0 / n0, dtype=np.float32)
    else:
        h = np.broadcast_to(np.asarray(gain, dtype=np.complex64), y.shape)
        h2 = (h.real**2 + h.imag**2).astype(np.float32)
        safe = np.where(h2 > 0, h2, np.float32(1.0))
        eq = (y * np.conj(h) / safe).astype(np.complex64)
        weight = np.ascontiguousarray(h2 / n0, dtype=np.float32)
    levels, labels = _TABLES[mod]
    out = np.empty(y.size * BITS_PER_SYMBOL[mod], dtype=np.float32)
    _demap_kernel(np.ascontiguousarray(eq), weight, levels, labels, 1 if mod == "bpsk" else 2, out)
    return out


def hard_bits(
    symbols: NDArray[np.complex64],
    modulation: ModulationName,
    gain: complex | NDArray[np.complex64] | None = None,
) -> NDArray[np.uint8]:
    """Nearest-point (Gray) hard decisions; erased symbols decide 0."""
    llr = demap_llr(symbols, modulation, 1.0, gain)
    return (llr < 0).astype(np.uint8)


@numba.njit(cache=True, nogil=True)
def _demap_kernel(
    eq: NDArray[np.complex64],
    weight: NDArray[np.float32],
    levels: NDArray[np.float32],
    labels: NDArray[np.uint8],
    axes: int,
    out: NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    count, per_axis = labels.shape
    bps = axes * per_axis
    dist = np.empty(count, dtype=np.float32)
    for s in range(eq.size):
        y = eq[s]
        w = weight[s]
        if np.isnan(y.real) or np.isnan(y.imag):
            for j in range(bps):
                out[s * bps + j] = 0.0
            continue
        for a in range(axes):
            x = y.real if a == 0 else y.imag
            for lv in range(count):
                d = x - levels[lv]
                dist[lv] = d * d
            for j in range(per_axis):
                d0 = np.float32(np.inf)
                d1 = np.float32(np.inf)
                for lv in range(count):
                    if labels[lv, j]:
                        d1 = min(d1, dist[lv])
                    else:
                        d0 = min(d0, dist[lv])
                out[s * bps + a * per_axis + j] = w * (d1 - d0)
