"""Burst-level timing models: delay with jitter, and a rate limit that accrues airtime."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from channel_sim.models.base import ChannelBurst, ChannelModel, ModelConfig


class DelayConfig(ModelConfig):
    """Adds `delay_s + |N(0, jitter_s^2)|` to each burst's `delay_s` (reported; the models never sleep).

    The jitter is half-normal so that a burst is never early: `jitter_s` is the standard deviation of the
    underlying normal, and the mean added jitter is jitter_s * sqrt(2/pi). Applies to every burst, dropped or
    not, symbols or bytes.
    """

    kind: Literal["delay"] = "delay"
    delay_s: float = Field(ge=0.0, le=3600.0, description="fixed delay added to every burst, in seconds")
    jitter_s: float = Field(
        0.0,
        ge=0.0,
        le=3600.0,
        description="standard deviation of the half-normal jitter, in seconds; 0 = none",
    )

    def build(self) -> DelayModel:
        return DelayModel(self)


class DelayModel(ChannelModel):
    """Fixed delay plus half-normal jitter; stateless."""

    def __init__(self, config: DelayConfig) -> None:
        self.config = config

    def apply(self, burst: ChannelBurst, rng: np.random.Generator) -> ChannelBurst:
        added = self.config.delay_s
        if self.config.jitter_s > 0:
            added += abs(float(rng.normal(0.0, self.config.jitter_s)))
        return burst.replace(delay_s=burst.delay_s + added)

    def describe(self) -> str:
        return self.config.describe()


class RateLimitConfig(ModelConfig):
    """A link of fixed capacity: each burst adds `payload_bits / bps` seconds to its `airtime_s`.

    The airtime is reported, never slept: a 219 Mbit video over 1 Mbit/s shows 219 s of airtime. Dropped
    bursts are counted too, since a lost burst still occupied the air.
    """

    kind: Literal["rate_limit"] = "rate_limit"
    bps: float = Field(gt=0.0, description="link capacity in channel bits per second (bit/s)")

    def build(self) -> RateLimitModel:
        return RateLimitModel(self)


class RateLimitModel(ChannelModel):
    """Accrues airtime from the burst's channel bits; stateless."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config

    def apply(self, burst: ChannelBurst, rng: np.random.Generator) -> ChannelBurst:
        return burst.replace(airtime_s=burst.airtime_s + burst.payload_bits / self.config.bps)

    def describe(self) -> str:
        return self.config.describe()
