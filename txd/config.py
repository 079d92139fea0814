"""The transmitter daemon's configuration (TxdConfig), loaded once in __main__."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from semcom.burst import parse_mcs
from semcom.config import Frozen, LoggingConfig, MetricsConfig, ServerConfig
from semcom.errors import InvalidInput
from txd.perception.pipeline import PerceptionConfig
from txd.understanding.attributes import AttributesConfig
from txd.understanding.vlm import VlmConfig

UnderstandingConfig = Annotated[AttributesConfig | VlmConfig, Field(discriminator="kind")]


class LinkConfig(Frozen):
    """The semantic link towards the receiver (directly, or through channel-sim)."""

    upstream: str = Field("127.0.0.1:50052", description="host:port of the Link service (channel-sim or rxd)")
    mcs: str = Field(
        "qpsk/ldpc_r12", description="modulation/coding of bursts, e.g. qam16/ldpc_r12, or 'bytes' for no phy"
    )
    adaptive_mcs: bool = Field(False, description="pick the MCS from the receiver's SNR feedback")
    mcs_margin_db: float = Field(1.0, ge=0, description="SNR margin kept when choosing the MCS adaptively")
    pilot_symbols: int = Field(16, ge=4, le=1024, description="known symbols at the start of each burst")
    max_records_per_burst: int = Field(32, ge=1, le=255, description="records framed into one burst at most")
    batch_delay_s: float = Field(
        1.0, ge=0, description="how long a record may wait for others to share a burst (latency vs overhead)"
    )
    max_attempts: int = Field(
        4, ge=1, le=16, description="transmissions of a burst before its records count lost"
    )
    window: int = Field(64, ge=1, description="bursts in flight without an acknowledgement")
    max_queued_records: int = Field(
        10_000, ge=1, description="records waiting to be sent before Announce refuses"
    )
    reconnect_s: float = Field(0.5, gt=0, description="pause before reconnecting a broken link")
    reconnect_max_s: float = Field(5.0, gt=0, description="longest pause between reconnection attempts")
    flush_timeout_s: float = Field(10.0, gt=0, description="how long shutdown waits for outstanding acks")

    @field_validator("mcs")
    @classmethod
    def _known_mcs(cls, value: str) -> str:
        try:
            parse_mcs(value)
        except InvalidInput as err:
            raise ValueError(str(err)) from err
        return value


class SiteConfig(Frozen):
    """Where this camera site is."""

    location_id: int = Field(0, ge=0, le=255, description="default location id of ingested streams")
    schema_id: str = Field("person/1", description="task schema until the receiver asks for another")


class IngestConfig(Frozen):
    """Video coming in."""

    max_stream_bytes: int = Field(2 * 1024**3, gt=0, description="largest video accepted on one Ingest call")


class ClipStoreConfig(Frozen):
    """The original video kept on site for clips fetched on demand."""

    dir: Path = Field(Path("var/txd/clips"), description="where each stream's original video is kept")
    max_bytes: int = Field(20 * 1024**3, gt=0, description="oldest segments go once the store exceeds this")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="segments older than this go")
    max_clip_s: float = Field(600.0, gt=0, description="longest clip one FetchClip may ask for")


def _default_perception() -> PerceptionConfig:
    return PerceptionConfig(analysis_fps=5.0)


class TxdConfig(Frozen):
    """Root configuration of txd."""

    server: ServerConfig = Field(
        ServerConfig(listen="127.0.0.1:50051"), description="the Transmitter gRPC server"
    )
    metrics: MetricsConfig = Field(MetricsConfig(), description="Prometheus /metrics")
    logging: LoggingConfig = Field(LoggingConfig(), description="log output")
    link: LinkConfig = Field(LinkConfig(), description="the semantic link")
    site: SiteConfig = Field(SiteConfig(), description="this site")
    ingest: IngestConfig = Field(IngestConfig(), description="video ingest")
    clips: ClipStoreConfig = Field(ClipStoreConfig(), description="the clip store")
    perception: PerceptionConfig | None = Field(
        default_factory=_default_perception,
        description="detector, tracker and keyframes; null: ingested video is only decoded and stored",
    )
    understanding: UnderstandingConfig = Field(
        AttributesConfig(),
        description="the understanding agent: 'attributes' (embedded CPU model) or 'vlm' (an "
        "OpenAI-compatible VLM server such as vLLM)",
    )
