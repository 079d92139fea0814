"""The channel simulator's configuration (ChannelSimConfig), loaded once in __main__."""

from __future__ import annotations

from pydantic import Field

from channel_sim.models import ChannelModelConfig
from semcom.config import AuthConfig, ClientTlsConfig, Frozen, LoggingConfig, MetricsConfig, ServerConfig


class UpstreamConfig(Frozen):
    """The Link service bursts are forwarded to (rxd, or another channel-sim)."""

    address: str = Field("127.0.0.1:50053", description="host:port of the upstream Link service")
    tls: ClientTlsConfig = Field(ClientTlsConfig(), description="TLS (mTLS) towards the upstream")


class ChannelConfig(Frozen):
    """The chain of channel models applied to every burst, in order."""

    models: tuple[ChannelModelConfig, ...] = Field(
        (),
        description="channel models applied in order, e.g. [{kind='awgn', snr_db=9}]; empty passes through",
    )
    seed: int = Field(0, ge=0, description="seed of the per-stream random generators")
    realtime: bool = Field(
        False, description="sleep each burst's simulated delay instead of only reporting it"
    )
    pace_airtime: bool = Field(
        True,
        description="hold each burst for its airtime (a rate_limit model's payload_bits / bps) before "
        "forwarding it, one burst on the air at a time, so a slow link is slow and the sender's queue "
        "really fills; false: airtime is only reported in each burst's trace",
    )
    trace_gains: bool = Field(
        False, description="attach the fading gains to each burst (genie CSI experiments)"
    )


class ChannelSimConfig(Frozen):
    """Root configuration of channel-sim."""

    server: ServerConfig = Field(
        ServerConfig(listen="127.0.0.1:50052"), description="Link + ChannelAdmin server"
    )
    metrics: MetricsConfig = Field(MetricsConfig(), description="Prometheus /metrics")
    logging: LoggingConfig = Field(LoggingConfig(), description="log output")
    upstream: UpstreamConfig = Field(UpstreamConfig(), description="where bursts go next")
    channel: ChannelConfig = Field(ChannelConfig(), description="the channel")
    auth: AuthConfig = Field(AuthConfig(), description="bearer tokens on ChannelAdmin (admin scope)")
