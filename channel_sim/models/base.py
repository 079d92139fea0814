"""The burst a channel model impairs, the model interface, and the base of every model's config."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

ComplexArray = NDArray[np.complex64]

# A complex NaN marks an erased symbol: it survives noise and gains, and a receiver can find it with isnan.
ERASED = np.complex64(complex(np.nan, np.nan))


@dataclass
class ChannelBurst:
    """One burst on its way through the channel.

    `symbols` are the burst's IQ symbols (1-D, complex64, unit average energy when sent), or None for a byte
    payload sent without a physical layer. Models never write into the array they receive (it may be a
    read-only view of a protobuf buffer); they return a new burst with a new array.
    """

    symbols: ComplexArray | None
    # Channel bits the burst occupies: len(symbols) * bits_per_symbol, or 8 * len(bytes).
    payload_bits: int
    # Accumulated by rate models; the proxy reports it and never sleeps on it.
    airtime_s: float = 0.0
    delay_s: float = 0.0
    # The whole burst is lost; its symbols are then irrelevant and symbol-level models leave it alone.
    dropped: bool = False
    # Per-symbol complex gain applied by fading models (genie CSI for experiments); None when none applied.
    gains: ComplexArray | None = None
    # How many symbols are erased (set to NaN+NaNj).
    erased: int = 0

    def replace(self, **changes: Any) -> ChannelBurst:
        """A copy with `changes` applied (dataclasses.replace, typed for this class)."""
        return replace(self, **changes)


class ChannelModel(ABC):
    """One impairment. Holds per-stream state only; draws randomness only from the `rng` it is given."""

    @abstractmethod
    def apply(self, burst: ChannelBurst, rng: np.random.Generator) -> ChannelBurst:
        """The burst after this impairment (a new object; `burst` and its arrays are left untouched)."""

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable spelling, e.g. "awgn(snr_db=9.0)"."""

    async def aclose(self) -> None:  # noqa: B027 - a hook with nothing to do in the built-in models
        """Release what the model holds when its stream ends or channel-sim stops. The built-in models are
        pure and hold nothing; a model that opens something (a trace file, an emulator) closes it here."""


class SymbolModel(ChannelModel):
    """A model that acts on IQ symbols; byte payloads and dropped bursts pass through unchanged."""

    def apply(self, burst: ChannelBurst, rng: np.random.Generator) -> ChannelBurst:
        if burst.symbols is None or burst.dropped:
            return burst
        symbols = np.asarray(burst.symbols, dtype=np.complex64).reshape(-1)
        return self.apply_symbols(burst, symbols, rng)

    @abstractmethod
    def apply_symbols(
        self, burst: ChannelBurst, symbols: ComplexArray, rng: np.random.Generator
    ) -> ChannelBurst:
        """Impair `symbols` (burst.symbols as a 1-D complex64 array; do not write into it)."""


def erase(burst: ChannelBurst, symbols: ComplexArray, mask: NDArray[np.bool_]) -> ChannelBurst:
    """The burst with the symbols under `mask` erased; already-erased symbols are not counted twice."""
    fresh = mask & ~np.isnan(symbols.real)
    count = int(np.count_nonzero(fresh))
    if count == 0:
        return burst.replace(symbols=symbols)
    out = symbols.copy()
    out[fresh] = ERASED
    return burst.replace(symbols=out, erased=burst.erased + count)


class ModelConfig(BaseModel, ABC):
    """Base of every model's options: immutable, unknown keys and non-finite numbers rejected.

    Subclasses declare `kind: Literal["..."]`, the discriminator of the `ChannelModelConfig` union.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @abstractmethod
    def build(self) -> ChannelModel:
        """A fresh model instance (with fresh per-stream state)."""

    def describe(self) -> str:
        """`kind(option=value, ...)`, e.g. "awgn(snr_db=9.0)"."""
        fields = self.model_dump()
        kind = fields.pop("kind")
        return f"{kind}({', '.join(f'{name}={value!r}' for name, value in fields.items())})"

    def to_dict(self) -> dict[str, Any]:
        """`{"kind": ..., **params}` with JSON-compatible values (the TOML / admin RPC spelling)."""
        return self.model_dump(mode="json")
