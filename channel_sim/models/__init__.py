"""Channel models: each `kind` has a typed config whose `build()` makes a model; `parse_model` checks one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, ValidationError

from channel_sim.models.awgn import AwgnConfig
from channel_sim.models.base import ChannelBurst, ChannelModel, ModelConfig
from channel_sim.models.fading import RayleighConfig, RicianConfig
from channel_sim.models.loss import ErasureConfig, GilbertElliottConfig
from channel_sim.models.timing import DelayConfig, RateLimitConfig
from semcom.errors import InvalidInput

ChannelModelConfig = Annotated[
    AwgnConfig
    | RayleighConfig
    | RicianConfig
    | ErasureConfig
    | GilbertElliottConfig
    | DelayConfig
    | RateLimitConfig,
    Field(discriminator="kind"),
]

_CONFIG_TYPES: dict[str, type[ModelConfig]] = {
    str(cls.model_fields["kind"].default): cls
    for cls in (
        AwgnConfig,
        RayleighConfig,
        RicianConfig,
        ErasureConfig,
        GilbertElliottConfig,
        DelayConfig,
        RateLimitConfig,
    )
}

KINDS: tuple[str, ...] = tuple(_CONFIG_TYPES)

__all__ = [
    "KINDS",
    "AwgnConfig",
    "ChannelBurst",
    "ChannelChain",
    "ChannelModel",
    "ChannelModelConfig",
    "DelayConfig",
    "ErasureConfig",
    "GilbertElliottConfig",
    "ModelConfig",
    "RateLimitConfig",
    "RayleighConfig",
    "RicianConfig",
    "StreamChannel",
    "config_type",
    "parse_model",
]


def config_type(kind: str) -> type[ModelConfig]:
    """The config class of `kind`; InvalidInput naming the known kinds when there is none."""
    cls = _CONFIG_TYPES.get(kind)
    if cls is None:
        raise InvalidInput(f"unknown channel model kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return cls


def parse_model(kind: str, params: Mapping[str, object], *, where: str = "") -> ChannelModelConfig:
    """Validate one model's options, e.g. `parse_model("awgn", {"snr_db": 9})`.

    `params` may repeat `kind` (as in a `{"kind": ..., **params}` dict). Errors are InvalidInput whose message
    names each bad key by its path, prefixed with `where` (e.g. "models[2]") when given.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(kind, str):
        raise InvalidInput(f"{prefix}channel model kind must be a string, got {kind!r}")
    try:
        cls = config_type(kind)
    except InvalidInput as err:
        raise InvalidInput(f"{prefix}{err}") from None
    if not isinstance(params, Mapping):
        raise InvalidInput(
            f"{prefix}{kind} params must be a mapping of option names, got {type(params).__name__}"
        )
    if params.get("kind", kind) != kind:
        raise InvalidInput(f"{prefix}params say kind {params['kind']!r} but the model is {kind!r}")
    try:
        config = cls.model_validate({**params, "kind": kind})
    except ValidationError as err:
        raise InvalidInput(_explain(kind, cls, err, where)) from err
    return config  # type: ignore[return-value]  # cls is one of the union's members


def _explain(kind: str, cls: type[ModelConfig], err: ValidationError, where: str) -> str:
    """One "path: reason" clause per problem, then the options this kind accepts."""
    base = f"{where}." if where else ""
    problems = []
    for item in err.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"])
        # A model-level check (ValueError in a validator) reads better without pydantic's "Value error, ".
        reason = item["msg"]
        if item["type"] == "value_error" and "error" in item.get("ctx", {}):
            reason = str(item["ctx"]["error"])
        problems.append(f"{base}{key}: {reason}" if key else f"{where or kind}: {reason}")
    options = ", ".join(name for name in cls.model_fields if name != "kind")
    return f"invalid {kind} channel model: {'; '.join(problems)} (options: {options})"


# Last, because chain.py imports the names above from this package.
from channel_sim.models.chain import ChannelChain, StreamChannel  # noqa: E402
