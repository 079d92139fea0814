"""Known pilot symbols and the least-squares channel gain / noise estimate made from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np
from numpy.typing import NDArray

from semcom.errors import DecodeError
from semcom.phy.modem import modulate

# Reported SNR is capped here: a noise-free link would otherwise give an infinite SNR and infinite LLRs.
MAX_SNR_DB = 60.0


@cache
def _prbs9(count: int) -> NDArray[np.uint8]:
    """PRBS-9 (x^9 + x^5 + 1, all-ones seed): a standard, balanced, deterministic bit sequence."""
    state = 0x1FF
    out = np.empty(count, dtype=np.uint8)
    for i in range(count):
        bit = ((state >> 8) ^ (state >> 4)) & 1
        out[i] = bit
        state = ((state << 1) | bit) & 0x1FF
    out.setflags(write=False)
    return out


@cache
def pilot_symbols(n: int) -> NDArray[np.complex64]:
    """The first `n` pilots: QPSK symbols (unit energy) carrying the PRBS-9 sequence (read-only, cached)."""
    if n < 0:
        raise ValueError(f"pilot count must be >= 0, got {n}")
    out = modulate(_prbs9(2 * n), "qpsk")
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class ChannelEstimate:
    """One complex gain per burst (block fading) and the noise variance N0 per complex symbol."""

    gain: complex
    noise_var: float
    snr_db: float
    used: int  # symbols that entered the estimate (erased ones are skipped)


def estimate_channel(
    received: NDArray[np.complex64], reference: NDArray[np.complex64] | None = None
) -> ChannelEstimate:
    """Least-squares gain and residual noise variance from received symbols whose sent values are known.

    `reference` defaults to `pilot_symbols(len(received))`. With N usable (non-NaN) unit-energy references:
    h_hat = sum(conj(x) y) / sum(|x|^2) is unbiased with variance N0 / N. The residual power sum |y - h_hat x|^2
    has expectation (N - 1) N0 because fitting h_hat removes one complex degree of freedom, so
    N0_hat = sum |y - h_hat x|^2 / (N - 1) is unbiased; it is N0 times a chi-square with 2(N - 1) degrees of
    freedom over 2(N - 1): a relative standard deviation of 1/sqrt(N - 1), i.e. about 1.1 dB for 16 pilots.
    |h_hat|^2 overestimates |h|^2 by N0 / N on average, so the SNR uses |h_hat|^2 - N0_hat / N (floored at
    N0_hat / N): negligible above a few dB but it keeps low-SNR estimates from reading high. The SNR is the
    Es/N0 of the received data symbols (unit transmit energy), capped at MAX_SNR_DB.
    Raises DecodeError when fewer than 2 references are usable (no noise estimate possible).
    """
    y = np.ascontiguousarray(received, dtype=np.complex64).reshape(-1)
    x = pilot_symbols(y.size) if reference is None else np.ascontiguousarray(reference, dtype=np.complex64)
    x = x.reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"received ({y.size}) and reference ({x.size}) symbol counts differ")
    count, energy, gain, residual = _least_squares(y, x)
    if count < 2:
        raise DecodeError(f"only {count} of {y.size} pilot symbols are usable; cannot estimate the channel")
    noise_var = residual / (count - 1)
    mean_energy = energy / count
    signal = max(abs(gain) ** 2 - noise_var / energy, noise_var / energy) * mean_energy
    # Noise-free (or nearly) links: floor N0 so LLRs stay finite; the floor is MAX_SNR_DB below the signal.
    noise_var = max(noise_var, signal * 10.0 ** (-MAX_SNR_DB / 10.0), np.finfo(np.float32).tiny)
    snr_db = min(10.0 * math.log10(signal / noise_var), MAX_SNR_DB) if signal > 0 else -MAX_SNR_DB
    return ChannelEstimate(gain=gain, noise_var=noise_var, snr_db=snr_db, used=count)


@numba.njit(cache=True, nogil=True)
def _least_squares(
    y: NDArray[np.complex64], x: NDArray[np.complex64]
) -> tuple[int, float, complex, float]:  # pragma: no cover - compiled
    """(usable count, sum |x|^2, LS gain, residual power) over the non-NaN received symbols."""
    count = 0
    energy = 0.0
    cross = 0j
    for i in range(y.size):
        if not (np.isnan(y[i].real) or np.isnan(y[i].imag)):
            xi = complex(x[i])
            count += 1
            energy += xi.real * xi.real + xi.imag * xi.imag
            cross += xi.conjugate() * complex(y[i])
    gain = cross / energy if energy > 0 else 0j
    residual = 0.0
    for i in range(y.size):
        if not (np.isnan(y[i].real) or np.isnan(y[i].imag)):
            d = complex(y[i]) - gain * complex(x[i])
            residual += d.real * d.real + d.imag * d.imag
    return count, energy, gain, residual
