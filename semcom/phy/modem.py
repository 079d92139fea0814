"""Gray-mapped BPSK/QPSK/16-QAM/64-QAM with unit average energy, and max-log LLR demapping."""

from __future__ import annotations

import math
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
    return modulation


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
    out = np.empty(b.size // bps, dtype=np.complex64)
    axes = 1 if modulation == "bpsk" else 2
    _modulate_kernel(np.ascontiguousarray(b), _LEVEL_OF_LABEL[modulation], axes, bps // axes, out)
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
    y = np.ascontiguousarray(symbols, dtype=np.complex64).reshape(-1)
    n0 = np.ascontiguousarray(noise_var, dtype=np.float32).reshape(-1)
    smallest, largest = (float(n0[0]), float(n0[0])) if n0.size == 1 else (float(n0.min()), float(n0.max()))
    if not (smallest > 0 and math.isfinite(largest)):
        raise ValueError("noise_var must be positive and finite")
    h = np.ascontiguousarray(1.0 if gain is None else gain, dtype=np.complex64).reshape(-1)
    for name, values in (("noise_var", n0), ("gain", h)):
        if values.size not in (1, y.size):
            raise ValueError(f"{name} must be a scalar or one value per symbol ({y.size}), got {values.size}")
    levels, labels = _TABLES[mod]
    out = np.empty(y.size * BITS_PER_SYMBOL[mod], dtype=np.float32)
    _demap_kernel(y, h, n0, levels, labels, 1 if mod == "bpsk" else 2, out)
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
def _modulate_kernel(
    bits: NDArray[np.uint8],
    level_of_label: NDArray[np.float32],
    axes: int,
    per_axis: int,
    out: NDArray[np.complex64],
) -> None:  # pragma: no cover - compiled
    for s in range(out.size):
        base = s * axes * per_axis
        re = 0
        for j in range(per_axis):
            re = (re << 1) | (bits[base + j] & 1)
        im_level = np.float32(0.0)
        if axes == 2:
            im = 0
            for j in range(per_axis):
                im = (im << 1) | (bits[base + per_axis + j] & 1)
            im_level = level_of_label[im]
        out[s] = complex(level_of_label[re], im_level)


@numba.njit(cache=True, nogil=True)
def _demap_kernel(
    ys: NDArray[np.complex64],
    gains: NDArray[np.complex64],
    noise: NDArray[np.float32],
    levels: NDArray[np.float32],
    labels: NDArray[np.uint8],
    axes: int,
    out: NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    count, per_axis = labels.shape
    bps = axes * per_axis
    dist = np.empty(count, dtype=np.float32)
    for s in range(ys.size):
        h = gains[s if gains.size > 1 else 0]
        h2 = h.real * h.real + h.imag * h.imag
        y = ys[s]
        if np.isnan(y.real) or np.isnan(y.imag) or h2 == 0:
            for j in range(bps):
                out[s * bps + j] = 0.0
            continue
        # y conj(h) / |h|^2 in real arithmetic (numba's complex division takes the slow, overflow-safe path).
        inv = np.float32(1.0) / h2
        eq_re = (y.real * h.real + y.imag * h.imag) * inv
        eq_im = (y.imag * h.real - y.real * h.imag) * inv
        w = h2 / noise[s if noise.size > 1 else 0]
        for a in range(axes):
            x = eq_re if a == 0 else eq_im
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
