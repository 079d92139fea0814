"""A chain of channel models, instantiated per stream with a random stream derived from (seed, stream_id)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from channel_sim.models import ChannelModelConfig, parse_model
from channel_sim.models.base import ChannelBurst, ChannelModel, ModelConfig
from semcom.errors import InvalidInput

_MAX_SEED = 2**64 - 1  # the admin RPC carries the seed as uint64


def stream_entropy(seed: int, stream_id: str) -> tuple[int, int]:
    """The entropy a stream's random numbers are drawn from: stable across processes, platforms and runs.

    Python's hash() is salted per process, so the stream id goes through BLAKE2b instead.
    """
    digest = hashlib.blake2b(stream_id.encode("utf-8"), digest_size=16, person=b"semcom-channel").digest()
    return seed, int.from_bytes(digest, "little")


class StreamChannel:
    """The chain's models for one stream, with their state and random generators.

    Each model draws from its own generator (spawned from the stream's seed sequence), so that changing one
    model's options, e.g. sweeping the SNR of an `awgn` after a `rayleigh`, leaves the draws of the others as
    they were.
    """

    def __init__(self, stream_id: str, models: Sequence[ChannelModel], seed: int) -> None:
        self.stream_id = stream_id
        self.models = tuple(models)
        sequence = np.random.SeedSequence(stream_entropy(seed, stream_id))
        self._rngs = tuple(
            np.random.Generator(np.random.PCG64(child)) for child in sequence.spawn(len(models))
        )

    def apply(self, burst: ChannelBurst) -> ChannelBurst:
        """The burst after every model in order.

        Once a burst is dropped, symbol-level models leave it alone; burst-level ones (delay, rate_limit,
        Gilbert-Elliott per burst) still see it, since a lost burst still took time on the air.
        """
        for model, rng in zip(self.models, self._rngs, strict=True):
            burst = model.apply(burst, rng)
        return burst

    def describe(self) -> str:
        return "|".join(model.describe() for model in self.models) or "passthrough"

    async def aclose(self) -> None:
        for model in self.models:
            await model.aclose()


class ChannelChain:
    """An ordered list of model configs and a seed; `for_stream` builds the models for one stream."""

    def __init__(self, configs: Sequence[ChannelModelConfig], seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
            raise InvalidInput(f"channel seed must be an integer in [0, 2**64), got {seed!r}")
        for index, config in enumerate(configs):
            if not isinstance(config, ModelConfig):
                raise InvalidInput(
                    f"models[{index}]: expected a channel model config, got {type(config).__name__} "
                    "(use ChannelChain.from_dicts for plain dicts)"
                )
        self.configs: tuple[ChannelModelConfig, ...] = tuple(configs)
        self.seed = seed

    def for_stream(self, stream_id: str) -> StreamChannel:
        """Fresh model instances and generators for `stream_id`.

        The same (seed, stream_id) always gives the same impairments; the caller keeps the returned object for
        the stream's lifetime so that stateful models (Gilbert-Elliott) carry their state across its bursts.
        """
        return StreamChannel(stream_id, [config.build() for config in self.configs], self.seed)

    def describe(self) -> str:
        """E.g. "rayleigh(block_symbols=0)|awgn(snr_db=9.0)"; "passthrough" when the chain is empty."""
        return "|".join(config.describe() for config in self.configs) or "passthrough"

    def to_dicts(self) -> list[dict[str, Any]]:
        """`[{"kind": ..., **params}, ...]` with JSON-compatible values (for TOML and the admin RPC)."""
        return [config.to_dict() for config in self.configs]

    @classmethod
    def from_dicts(cls, items: Iterable[Mapping[str, object]], seed: int) -> ChannelChain:
        """The inverse of `to_dicts`; InvalidInput naming the item ("models[1].snr_db: ...") on bad input."""
        configs = []
        for index, item in enumerate(items):
            where = f"models[{index}]"
            if not isinstance(item, Mapping):
                raise InvalidInput(f"{where}: expected a mapping with a 'kind', got {type(item).__name__}")
            kind = item.get("kind")
            if not isinstance(kind, str):
                raise InvalidInput(f"{where}.kind: missing or not a string (got {kind!r})")
            configs.append(parse_model(kind, item, where=where))
        return cls(configs, seed)

    def __repr__(self) -> str:
        return f"ChannelChain({self.describe()!r}, seed={self.seed})"
