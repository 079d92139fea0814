"""The receiver daemon's configuration (RxdConfig), loaded once in __main__."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from rxd.generate.llm import LlmDescriberConfig
from rxd.generate.local import TransformersDescriberConfig
from rxd.retrieval.llm_parse import LlmParserConfig
from semcom.config import (
    AuthConfig,
    ClientAuthConfig,
    ClientTlsConfig,
    Frozen,
    LoggingConfig,
    MetricsConfig,
    ServerConfig,
    ServerTlsConfig,
)
from semcom.errors import InvalidInput
from semcom.phy.learned import load_model_any
from semcom.schema import SchemaRegistry


class TaskConfig(Frozen):
    """What the receiver asks the transmitter to describe."""

    schema_id: str = Field("person/1", description="task schema sent to txd as the task requirement")


class IndexConfig(Frozen):
    """Where received records, their descriptions and embeddings are kept: one SQLite file (the default), or
    a PostgreSQL database that several rxd replicas share (rxd.retrieval.pg_store)."""

    kind: Literal["sqlite", "postgres"] = Field("sqlite", description="the index backend")
    path: Path = Field(Path("var/rxd/index.db"), description="SQLite file of the index; ':memory:' for none")
    dsn: SecretStr = Field(
        SecretStr(""),
        description="postgres: libpq connection string ('host=db dbname=semcom user=rxd'); best given in the "
        "environment (SEMCOM_RXD__INDEX__DSN); libpq's PG* variables (PGPASSWORD, ...) apply too",
    )
    dsn_file: Path | None = Field(
        None,
        description="postgres: a file holding the DSN (a container secret); read when rxd opens the index, "
        "and used when `dsn` is empty",
    )
    retention_days: float = Field(
        0.0, ge=0, description="postgres: records older than this many days are dropped (0: kept forever)"
    )
    partition_s: float = Field(
        86_400.0, gt=0, description="postgres: records are partitioned by time_s in tables of this span"
    )
    refresh_s: float = Field(
        1.0, gt=0, description="postgres: how often a replica reads descriptions other replicas stored"
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="postgres: connection timeout")

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> IndexConfig:
        if self.kind == "postgres" and not self.dsn.get_secret_value().strip() and self.dsn_file is None:
            raise ValueError("index.kind = 'postgres' needs index.dsn or index.dsn_file")
        return self


class TemplateConfig(Frozen):
    """Descriptions rendered from the schema's phrases with no model (the fast CPU default)."""

    kind: Literal["template"] = Field("template", description="selects this backend")


GenerateConfig = Annotated[
    TemplateConfig | LlmDescriberConfig | TransformersDescriberConfig, Field(discriminator="kind")
]


class EmbedderConfig(Frozen):
    """The functional head: all-MiniLM-L6-v2 sentence embeddings."""

    kind: Literal["sentence_transformers"] = Field(
        "sentence_transformers", description="selects the embedder (rxd.retrieval.embed.EMBEDDERS)"
    )
    model_path: str | None = Field(
        None, description="sentence-transformers folder; default: the packaged model"
    )
    batch_size: int = Field(64, ge=1, description="sentences embedded per batch")
    threads: int = Field(1, ge=1, description="torch threads (1 is fastest on a small, busy machine)")
    process: bool = Field(
        True,
        description="run the model in a child process of its own, so that its passes never wait for the "
        "threads that rank and answer queries (Python's GIL); false: in rxd's process",
    )


class HttpConfig(Frozen):
    """The HTTP/JSON API and the web page."""

    enabled: bool = Field(True, description="serve the web page and /api/*")
    listen: str = Field("127.0.0.1:8080", description="host:port of the HTTP server; port 0 picks one")
    tls: ServerTlsConfig = Field(ServerTlsConfig(), description="HTTPS (and client certificates) of the page")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest request body; more: 413")
    max_url_chars: int = Field(8190, ge=256, description="longest request line (URL); more: 414")


class LinkRxConfig(Frozen):
    """Decoding of incoming bursts."""

    ldpc_iterations: int = Field(20, ge=1, le=200, description="belief-propagation iterations per codeword")
    site_keys: dict[str, Path] = Field(
        default_factory=dict,
        description="site id -> key file (32 random bytes, the same file as that txd's link.key_file); when "
        "any is set, only sealed frames from these sites are taken and every other burst is refused as "
        "unauthenticated; empty: keyless mode, unsealed frames only",
    )
    min_tag_bits: Literal[32, 64, 96, 128] = Field(
        128, description="shortest AEAD tag accepted: a sender cannot weaken the check below this"
    )
    learned_models: tuple[str, ...] = Field(
        ("person-s1", "person-s2", "person-s3"),
        description="learned phy models (shipped names or JSON files) bursts sent with txd's "
        "link.mcs = 'learned/<name>' are decoded with; a burst naming another model, or other weights, is "
        "refused and counted (bursts_model_refused)",
    )

    @field_validator("learned_models")
    @classmethod
    def _models_load(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            try:
                load_model_any(name, SchemaRegistry.builtin())
            except InvalidInput as err:
                raise ValueError(str(err)) from err
        return value


class EmbeddedParserConfig(Frozen):
    """Queries parsed by the embedded parser: the schema's words and synonyms, no model (the CPU default)."""

    kind: Literal["embedded"] = Field("embedded", description="selects this parser")


QueryParserConfig = Annotated[EmbeddedParserConfig | LlmParserConfig, Field(discriminator="kind")]


class QueryConfig(Frozen):
    """Query parsing and limits."""

    parser: QueryParserConfig = Field(
        EmbeddedParserConfig(),
        description="free text to slots: 'embedded' (no model) or 'llm' (an OpenAI-compatible server such "
        "as vLLM, answering in JSON held to the schema); model failures fall back to the embedded parser",
    )
    default_top_k: int = Field(10, ge=1, description="hits returned when a query names no top_k")
    max_top_k: int = Field(1000, ge=1, le=1000, description="largest top_k accepted")
    max_text_chars: int = Field(512, ge=16, le=65536, description="longest query text, in characters")
    timeout_s: float = Field(
        5.0, gt=0, description="time budget of one query (parsing and ranking); over it: DEADLINE_EXCEEDED"
    )
    workers: int = Field(
        8,
        ge=1,
        le=64,
        description="query threads, apart from the one that decodes and indexes bursts; queries whose texts "
        "wait for the sentence model at once share one pass, so more threads than cores pay off",
    )
    max_pending: int = Field(
        64, ge=1, description="queries running or waiting at once; more are refused (RESOURCE_EXHAUSTED)"
    )
    clip_before_s: float = Field(2.0, ge=0, description="a hit's clip starts this long before the record")
    clip_after_s: float = Field(3.0, ge=0, description="a hit's clip ends this long after the record")


class TransmitterPeerConfig(Frozen):
    """The transmitters, reached over the backward channel for clips, keyframes and status. Each site's txd
    (with link.site_id set) opens a backhaul to rxd and fetches travel back over it, so rxd needs no route
    to any camera; `address` is a fallback for streams of sites without one (older or unnamed txd)."""

    address: str = Field(
        "",
        description="host:port of a txd's Transmitter service, asked for streams whose site has no backhaul "
        "open; empty: none (fetches go over the sites' backhauls only)",
    )
    timeout_s: float = Field(60.0, gt=0, description="deadline of a clip fetch")
    tls: ClientTlsConfig = Field(ClientTlsConfig(), description="TLS (mTLS) towards txd")
    auth: ClientAuthConfig = Field(ClientAuthConfig(), description="the token sent to txd (admin scope)")


class RxdConfig(Frozen):
    """Root configuration of rxd."""

    server: ServerConfig = Field(
        ServerConfig(listen="127.0.0.1:50053"), description="Link + Receiver gRPC server"
    )
    metrics: MetricsConfig = Field(MetricsConfig(), description="Prometheus /metrics")
    logging: LoggingConfig = Field(LoggingConfig(), description="log output")
    task: TaskConfig = Field(TaskConfig(), description="the task requirement")
    index: IndexConfig = Field(IndexConfig(), description="the record index")
    generate: GenerateConfig = Field(
        TemplateConfig(),
        description="the generating agent: 'template' (no model), 'llm' (an OpenAI-compatible server such as "
        "vLLM) or 'transformers' (a local causal LM on CPU); model failures fall back to the template",
    )
    embedder: EmbedderConfig = Field(EmbedderConfig(), description="the functional head")
    http: HttpConfig = Field(HttpConfig(), description="HTTP API and web page")
    link: LinkRxConfig = Field(LinkRxConfig(), description="burst decoding")
    query: QueryConfig = Field(QueryConfig(), description="query parsing and limits")
    transmitter: TransmitterPeerConfig = Field(TransmitterPeerConfig(), description="the txd peer")
    auth: AuthConfig = Field(AuthConfig(), description="bearer tokens on the Receiver service and HTTP API")
