"""Flat block fading: Rayleigh (scatter only) and Rician (line of sight + scatter), y = h x."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from channel_sim.models.base import ChannelBurst, ComplexArray, ModelConfig, SymbolModel

_BLOCK_DESCRIPTION = (
    "symbols per fading block: h is constant over each block and independent between blocks; blocks start "
    "at the first symbol of each burst; 0 = one h for the whole burst"
)


class RayleighConfig(ModelConfig):
    """Rayleigh block fading: h ~ CN(0, 1) (E|h|^2 = 1), y = h x; the gains are recorded in `burst.gains`.

    Adds no noise: chain an `awgn` model after it, whose SNR then is the average Es/N0.
    """

    kind: Literal["rayleigh"] = "rayleigh"
    block_symbols: int = Field(0, ge=0, description=_BLOCK_DESCRIPTION)

    def build(self) -> BlockFadingModel:
        return BlockFadingModel(self, k_factor=0.0, block_symbols=self.block_symbols)


class RicianConfig(ModelConfig):
    """Rician block fading: h = sqrt(K/(K+1)) + sqrt(1/(K+1)) * CN(0, 1), so E|h|^2 = 1, y = h x.

    K is the linear ratio of line-of-sight to scattered power (K = 0 is Rayleigh; K -> inf is no fading).
    The line-of-sight component has phase 0. Gains are recorded in `burst.gains`; no noise is added.
    """

    kind: Literal["rician"] = "rician"
    k_factor: float = Field(
        ge=0.0, le=1e9, description="line-of-sight to scattered power ratio K, linear (not dB); 0 = Rayleigh"
    )
    block_symbols: int = Field(0, ge=0, description=_BLOCK_DESCRIPTION)

    def build(self) -> BlockFadingModel:
        return BlockFadingModel(self, k_factor=self.k_factor, block_symbols=self.block_symbols)


class BlockFadingModel(SymbolModel):
    """Multiplies each block of symbols by one draw of h = los + scatter * CN(0, 1); stateless."""

    def __init__(self, config: RayleighConfig | RicianConfig, *, k_factor: float, block_symbols: int) -> None:
        self.config = config
        self.block_symbols = block_symbols
        self._los = float(np.sqrt(k_factor / (k_factor + 1.0)))
        self._scatter_sigma = float(np.sqrt(1.0 / (2.0 * (k_factor + 1.0))))  # per real dimension

    def apply_symbols(
        self, burst: ChannelBurst, symbols: ComplexArray, rng: np.random.Generator
    ) -> ChannelBurst:
        n = symbols.size
        if n == 0:
            return burst.replace(symbols=symbols.copy())
        block = self.block_symbols or n
        blocks = -(-n // block)
        draws = rng.standard_normal((blocks, 2))
        h = (self._los + self._scatter_sigma * (draws[:, 0] + 1j * draws[:, 1])).astype(np.complex64)
        gains = h if block == 1 else np.repeat(h, block)[:n]
        # Several fading models in a chain compose: the recorded gain is the product of all of them.
        total = gains if burst.gains is None else (burst.gains * gains).astype(np.complex64)
        return burst.replace(symbols=symbols * gains, gains=total)

    def describe(self) -> str:
        return self.config.describe()
