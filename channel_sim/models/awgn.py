"""Additive white Gaussian noise at a given Es/N0."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from channel_sim.models.base import ChannelBurst, ComplexArray, ModelConfig, SymbolModel


class AwgnConfig(ModelConfig):
    """Complex white Gaussian noise: y = x + n, n ~ CN(0, N0), N0 = 10^(-snr_db/10).

    SNR is Es/N0 per complex symbol for unit-energy symbols: N0 is the noise variance per complex symbol, N0/2
    per real dimension (I and Q). The noise level does not follow the received signal: after a fading model
    it sets the average SNR, and the instantaneous SNR is |h|^2 * Es/N0.
    """

    kind: Literal["awgn"] = "awgn"
    snr_db: float = Field(
        ge=-50.0,
        le=100.0,
        description="Es/N0 per complex symbol in dB, for unit average symbol energy; may be negative",
    )

    @property
    def n0(self) -> float:
        """Noise variance per complex symbol (linear)."""
        return float(10.0 ** (-self.snr_db / 10.0))

    def build(self) -> AwgnModel:
        return AwgnModel(self)


class AwgnModel(SymbolModel):
    """Adds CN(0, N0) noise to every symbol; stateless."""

    def __init__(self, config: AwgnConfig) -> None:
        self.config = config
        self._sigma = float(np.sqrt(config.n0 / 2.0))  # standard deviation per real dimension

    def apply_symbols(
        self, burst: ChannelBurst, symbols: ComplexArray, rng: np.random.Generator
    ) -> ChannelBurst:
        noise = rng.standard_normal((symbols.size, 2), dtype=np.float32)
        noise *= np.float32(self._sigma)
        out = symbols + noise.view(np.complex64).reshape(-1)
        return burst.replace(symbols=out)

    def describe(self) -> str:
        return self.config.describe()
