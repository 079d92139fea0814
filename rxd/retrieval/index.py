"""Opening the index the config names: SQLite (embedded, the default) or PostgreSQL (shared by replicas)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from semcom.errors import InvalidInput
from semcom.registry import Registry
from semcom.schema import SchemaRegistry

from .engine import IndexStore

if TYPE_CHECKING:
    from rxd.config import IndexConfig

IndexOpener = Callable[["IndexConfig", SchemaRegistry], IndexStore]


def open_sqlite(cfg: IndexConfig, schemas: SchemaRegistry) -> IndexStore:
    from .store import RecordStore

    return RecordStore(cfg.path, schemas)


def open_postgres(cfg: IndexConfig, schemas: SchemaRegistry) -> IndexStore:
    from .pg_store import PgStore

    return PgStore(
        dsn_of(cfg),
        schemas,
        retention_days=cfg.retention_days,
        partition_s=cfg.partition_s,
        refresh_s=cfg.refresh_s,
        connect_timeout_s=cfg.connect_timeout_s,
    )


def dsn_of(cfg: IndexConfig) -> str:
    """The DSN: `dsn`, else the first line of `dsn_file`; InvalidInput names a file that cannot be read."""
    dsn = cfg.dsn.get_secret_value().strip()
    if dsn or cfg.dsn_file is None:
        return dsn
    try:
        return cfg.dsn_file.read_text().strip()
    except OSError as err:
        raise InvalidInput(f"index.dsn_file {cfg.dsn_file}: {err.strerror or err}") from err


# Lazy: an rxd on SQLite never imports psycopg.
INDEXES: Registry[IndexOpener] = Registry(
    "index backend",
    {"sqlite": "rxd.retrieval.index:open_sqlite", "postgres": "rxd.retrieval.index:open_postgres"},
)


def open_index(
    cfg: IndexConfig, schemas: SchemaRegistry, registry: Registry[IndexOpener] = INDEXES
) -> IndexStore:
    """The index `cfg.kind` names, opened (PostgreSQL: connected and migrated; IndexUnavailable or
    SchemaMismatch say why not)."""
    return registry.load(cfg.kind)(cfg, schemas)


def describe_index(cfg: IndexConfig) -> str:
    """Where the index is, for logs: the SQLite path, or the database (no password)."""
    if cfg.kind == "sqlite":
        return str(cfg.path)
    from .pg_schema import redacted

    return f"postgres {redacted(dsn_of(cfg))}"
