"""The transmitter daemon's configuration (TxdConfig), loaded once in __main__."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from semcom.burst import parse_phy
from semcom.config import AuthConfig, ClientTlsConfig, Frozen, LoggingConfig, MetricsConfig, ServerConfig
from semcom.errors import InvalidInput
from semcom.ids import check_stream_id
from semcom.phy.learned import load_model, load_model_any
from semcom.schema import SchemaRegistry
from txd.perception.pipeline import PerceptionConfig
from txd.understanding.attributes import AttributesConfig
from txd.understanding.vlm import VlmConfig

UnderstandingConfig = Annotated[AttributesConfig | VlmConfig, Field(discriminator="kind")]


class LinkConfig(Frozen):
    """The semantic link towards the receiver (directly, or through channel-sim)."""

    upstream: str = Field("127.0.0.1:50052", description="host:port of the Link service (channel-sim or rxd)")
    tls: ClientTlsConfig = Field(ClientTlsConfig(), description="TLS (mTLS) of the link connection")
    mcs: str = Field(
        "qpsk/ldpc_r12",
        description="modulation/coding of bursts, e.g. qam16/ldpc_r12, 'bytes' for no phy, or "
        "'learned/<model>' (a shipped name or a JSON file): field values through the learned channel "
        "adaptation module, each burst's header on qpsk/ldpc_r12",
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
        10_000, ge=1, description="records waiting to be sent before Announce refuses and analysis waits"
    )
    reconnect_s: float = Field(0.5, gt=0, description="pause before reconnecting a broken link")
    reconnect_max_s: float = Field(5.0, gt=0, description="longest pause between reconnection attempts")
    flush_timeout_s: float = Field(10.0, gt=0, description="how long shutdown waits for outstanding acks")
    ack_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a burst unanswered this long is sent again; when the receiver said nothing at all in "
        "that time, the link counts down and is reconnected (a frozen or vanished peer)",
    )
    keepalive_s: float = Field(
        300.0,
        ge=10,
        description="HTTP/2 ping interval on the link, which finds a dead or frozen peer while no burst is "
        "in flight; gRPC servers refuse pings more often than every 300 s unless they are configured to "
        "accept them (grpc.http2.min_recv_ping_interval_without_data_ms)",
    )
    keepalive_timeout_s: float = Field(
        20.0, gt=0, description="a ping unanswered this long breaks the connection (the link counts down)"
    )
    retry_later_s: float = Field(
        30.0, gt=0, description="a burst whose max_attempts ran out stays queued, tried again after this"
    )
    outbox_path: Path | None = Field(
        None,
        description="SQLite file of the outbox, where each accepted record stays until rxd acknowledged it "
        "(WAL, synchronous=FULL: fsync at every accepted record); null: <clips.dir>/.state/outbox.db; "
        "':memory:' keeps it in memory (a restart loses what was queued; no key may be set then)",
    )
    site_id: str = Field(
        "",
        max_length=64,
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$",
        description="this site's id in every burst header: rxd opens sealed frames with the key it holds "
        "for this id",
    )
    key_file: Path | None = Field(
        None,
        description="the site key (32 random bytes: head -c 32 /dev/urandom > site.key); frames are sealed "
        "with ChaCha20-Poly1305 under it; null: frames carry only a CRC (keyless demo mode)",
    )
    tag_bits: Literal[32, 64, 96, 128] = Field(
        128, description="AEAD tag bits per frame; a forgery succeeds with probability ~2^-tag_bits per try"
    )
    encrypt: bool = Field(True, description="encrypt the records of sealed frames (the header stays clear)")
    backhaul: bool = Field(
        True,
        description="with a site_id: open the backhaul to the upstream peer too, over which rxd fetches "
        "clips and keyframes from this site (the operations centre then needs no route to this txd)",
    )

    @model_validator(mode="after")
    def _key_needs_site(self) -> LinkConfig:
        if self.key_file is not None and not self.site_id:
            raise ValueError("link.key_file needs link.site_id: rxd picks the key by site id")
        if self.key_file is not None and str(self.outbox_path) == ":memory:":
            raise ValueError("link.key_file needs a durable outbox: its epoch keeps frame nonces unique")
        if self.key_file is not None and parse_phy(self.mcs).learned is not None:
            raise ValueError(
                f"link.mcs {self.mcs!r} sends field values as learned symbols, which no AEAD tag covers: "
                "unset link.key_file (keyless mode) or use a digital MCS"
            )
        return self

    @field_validator("mcs")
    @classmethod
    def _known_mcs(cls, value: str) -> str:
        try:
            learned = parse_phy(value).learned
            if learned is not None:
                load_model_any(learned, SchemaRegistry.builtin())  # missing or broken: named at load
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
    max_uploads: int = Field(
        4, ge=1, description="Ingest calls at once; one more is refused with RESOURCE_EXHAUSTED"
    )
    max_spool_bytes: int = Field(
        8 * 1024**3,
        gt=0,
        description="bytes all uploads in progress may spool together; beyond: RESOURCE_EXHAUSTED",
    )


class ClipStoreConfig(Frozen):
    """The original video kept on site for clips fetched on demand."""

    dir: Path = Field(Path("var/txd/clips"), description="where each stream's original video is kept")
    max_bytes: int = Field(20 * 1024**3, gt=0, description="oldest segments go once the store exceeds this")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="segments older than this go")
    max_clip_s: float = Field(600.0, gt=0, description="longest clip one FetchClip may ask for")
    segment_s: float = Field(
        60.0,
        gt=0,
        description="length of the rolling segments a pulled source is recorded in (each ends at the first "
        "keyframe after this many seconds); retention drops whole segments",
    )


class ThumbnailConfig(Frozen):
    """Keyframe thumbnails of analysed records, kept for FetchKeyframe (the page's thumbnails)."""

    enabled: bool = Field(True, description="keep a thumbnail of each analysed record's keyframe crop")
    format: Literal["jpeg", "webp"] = Field("jpeg", description="image format of the thumbnails")
    max_side_px: int = Field(160, ge=16, le=1024, description="longer side of a thumbnail, in pixels")
    quality: int = Field(70, ge=1, le=100, description="JPEG/WebP quality (higher: larger, sharper)")
    max_bytes: int = Field(64 * 1024**2, gt=0, description="oldest thumbnails go once all exceed this")
    max_items: int = Field(100_000, gt=0, description="oldest thumbnails go beyond this many")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="thumbnails older than this go")


SourceKind = Literal["file", "http", "rtsp"]
# URL schemes a source may use, and the kind each one is.
SOURCE_SCHEMES: dict[str, SourceKind] = {
    "": "file",
    "file": "file",
    "http": "http",
    "https": "http",
    "rtsp": "rtsp",
    "rtsps": "rtsp",
}


class SourceConfig(Frozen):
    """A video txd pulls itself: a file, an HTTP(S) URL or an RTSP camera, analysed and recorded like an
    ingested stream."""

    stream_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="the stream's id in records, Status and FetchClip (semcom.ids: no '..')",
    )
    url: str = Field(
        min_length=1,
        description="a file path, file://, http(s):// or rtsp(s):// URL (credentials in the URL are kept out "
        "of logs and Status)",
    )
    location_id: int | None = Field(
        None, ge=0, le=255, description="location id of the stream's records; null: site.location_id"
    )
    loop: bool = Field(False, description="start again from the beginning when a file or HTTP video ends")
    record: bool = Field(True, description="keep the original video in the clip store for FetchClip")
    live: bool | None = Field(
        None,
        description="a live feed: reconnected when it ends, and frames are skipped rather than delayed when "
        "analysis falls behind; null: rtsp(s):// is live, files and HTTP are not",
    )
    container: str = Field("", description="FFmpeg format name to force (e.g. 'mpegts'); empty: probe")
    options: dict[str, str] = Field(
        default_factory=dict,
        description="extra FFmpeg options for opening the source, e.g. {rtsp_transport = 'udp'}",
    )
    open_timeout_s: float = Field(10.0, gt=0, description="how long connecting to a network source may take")
    read_timeout_s: float = Field(
        10.0, gt=0, description="how long a network source may send nothing before it counts as broken"
    )
    retry_s: float = Field(1.0, gt=0, description="first pause before retrying a failed network source")
    retry_max_s: float = Field(
        60.0, gt=0, description="longest pause between retries (doubling from retry_s)"
    )

    @field_validator("stream_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        try:
            return check_stream_id(value)
        except InvalidInput as err:
            raise ValueError(str(err)) from err

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.lower()
        if scheme not in SOURCE_SCHEMES:
            raise ValueError(
                f"scheme {scheme!r} is not supported; use a file path, file://, http(s):// or rtsp(s)://"
            )
        if SOURCE_SCHEMES[scheme] != "file" and not urlsplit(value).hostname:
            raise ValueError(f"{scheme}:// URL has no host")
        return value

    @property
    def kind(self) -> SourceKind:
        return SOURCE_SCHEMES[urlsplit(self.url).scheme.lower()]

    @property
    def is_live(self) -> bool:
        return self.kind == "rtsp" if self.live is None else self.live

    @property
    def target(self) -> str:
        """What FFmpeg opens: the path of a file source, else the URL itself."""
        if self.kind != "file":
            return self.url
        parts = urlsplit(self.url)
        return unquote(parts.path) if parts.scheme else self.url

    @property
    def display_url(self) -> str:
        """The URL with any password replaced by ***, for logs and Status."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))

    def ffmpeg_options(self) -> dict[str, str]:
        """Open options: socket timeouts (microseconds) for network sources, so that a dead peer fails
        instead of hanging; the configured options win."""
        timeout_us = str(int(self.read_timeout_s * 1e6))
        base: dict[str, str] = {}
        if self.kind == "http":
            base = {"rw_timeout": timeout_us}
        elif self.kind == "rtsp":
            base = {"timeout": timeout_us, "rtsp_transport": "tcp"}
        return {**base, **self.options}


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
    thumbnails: ThumbnailConfig = Field(ThumbnailConfig(), description="keyframe thumbnails")
    perception: PerceptionConfig | None = Field(
        default_factory=_default_perception,
        description="detector, tracker and keyframes; null: ingested video is only decoded and stored",
    )
    understanding: UnderstandingConfig = Field(
        AttributesConfig(),
        description="the understanding agent: 'attributes' (embedded CPU model) or 'vlm' (an "
        "OpenAI-compatible VLM server such as vLLM)",
    )
    auth: AuthConfig = Field(AuthConfig(), description="bearer tokens on the Transmitter service")
    sources: list[SourceConfig] = Field(
        default_factory=list,
        description="videos txd pulls itself from start-up on (files, HTTP, RTSP), one task each",
    )

    @model_validator(mode="after")
    def _unique_source_ids(self) -> TxdConfig:
        seen: set[str] = set()
        for source in self.sources:
            if source.stream_id in seen:
                raise ValueError(f"sources: stream_id {source.stream_id!r} is used twice")
            seen.add(source.stream_id)
        return self

    @model_validator(mode="after")
    def _learned_model_fits_the_schema(self) -> TxdConfig:
        learned = parse_phy(self.link.mcs).learned
        if learned is not None:
            try:
                load_model(learned, SchemaRegistry.builtin().get(self.site.schema_id))
            except InvalidInput as err:
                raise ValueError(f"link.mcs: {err}") from err
        return self
