"""The PostgreSQL index's schema: connecting with clear errors, versioned migrations, time partitions."""

from __future__ import annotations

import logging
import math
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

# Migrations are rxd/retrieval/migrations/NNNN_name.sql, applied in order; the newest number is the version
# this code writes and reads.
_MIGRATIONS = sorted(
    p.name for p in resources.files("rxd.retrieval.migrations").iterdir() if p.name.endswith(".sql")
)
SCHEMA_VERSION = len(_MIGRATIONS)
# Advisory lock keys (pg_advisory_xact_lock): one for migrations and partition DDL, one per stream (hashed).
_DDL_LOCK = 0x53454D434F4D  # "SEMCOM"
_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS semcom_schema (version integer NOT NULL)"


class IndexUnavailable(ConnectionError):
    """The index database cannot be reached (a wrong DSN, a server that is down or went away).

    Deliberately not a SemcomError: a burst whose records could not be stored must not be answered at all
    (a SemcomError would be acknowledged as REJECTED, and txd would give it up); the link call fails and
    txd sends the burst again once it has reconnected.
    """


class SchemaMismatch(RuntimeError):
    """The database was migrated by a newer rxd than this one: this rxd must not write into it."""


def redacted(dsn: str) -> str:
    """The DSN without its password, for error messages and logs."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def connect(dsn: str, *, connect_timeout_s: float) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection (autocommit off), or IndexUnavailable naming the DSN (password left out) and why."""
    try:
        return psycopg.connect(dsn, connect_timeout=max(1, math.ceil(connect_timeout_s)))
    except psycopg.ProgrammingError as err:  # a DSN that does not parse
        raise IndexUnavailable(f"index DSN {redacted(dsn)!r} is not valid: {err}") from err
    except psycopg.OperationalError as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise IndexUnavailable(f"cannot connect to the index database {redacted(dsn)!r}: {reason}") from err


def migrate(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """Bring the database to SCHEMA_VERSION (one transaction per migration, under an advisory lock, so that
    replicas starting together migrate once); SchemaMismatch if a newer rxd already migrated it further."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        conn.execute(_VERSION_TABLE)
        row = conn.execute("SELECT max(version) FROM semcom_schema").fetchone()
        found = int(row[0]) if row is not None and row[0] is not None else 0
        if found > SCHEMA_VERSION:
            raise SchemaMismatch(
                f"the index database is at schema version {found}, newer than this rxd's {SCHEMA_VERSION}: "
                "upgrade this rxd to the version the other replicas run (it would misread the records)"
            )
        for number, name in enumerate(_MIGRATIONS[found:], start=found + 1):
            text = resources.files("rxd.retrieval.migrations").joinpath(name).read_text()
            conn.execute(sql.SQL(text))  # our own file, not input
            conn.execute("INSERT INTO semcom_schema VALUES (%s)", (number,))
            log.info("index database migrated to schema version %d (%s)", number, name)
    return SCHEMA_VERSION


def partition_name(bucket: int) -> str:
    return f"records_p{bucket}" if bucket >= 0 else f"records_m{-bucket}"


def existing_buckets(conn: psycopg.Connection[tuple[Any, ...]]) -> set[int]:
    """The buckets whose partitions exist (names as partition_name writes them)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'records'::regclass"
    ).fetchall()
    out = set()
    for (name,) in rows:
        tail = str(name).removeprefix("records_")
        out.add(int(tail[1:]) if tail[0] == "p" else -int(tail[1:]))
    return out


def create_partitions(conn: psycopg.Connection[tuple[Any, ...]], buckets: set[int], width_s: float) -> None:
    """Create the partitions of `buckets` ([b * width_s, (b + 1) * width_s)) that do not exist yet."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        for bucket in sorted(buckets - existing_buckets(conn)):
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF records FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition_name(bucket)),
                    sql.Literal(bucket * width_s),
                    sql.Literal((bucket + 1) * width_s),
                )
            )


def drop_partitions_before(
    conn: psycopg.Connection[tuple[Any, ...]], cutoff_s: float, width_s: float, keep: set[int]
) -> int:
    """Drop every partition wholly older than `cutoff_s` but those of `keep` (retention); returns how many
    were dropped."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        old = sorted(b for b in existing_buckets(conn) - keep if (b + 1) * width_s <= cutoff_s)
        for bucket in old:
            table = sql.Identifier(partition_name(bucket))
            # Counts follow the records; the confidence bounds stay (still bounds, if looser ones).
            conn.execute(
                sql.SQL(
                    "WITH gone AS (SELECT desc_id, count(*) AS n FROM {} GROUP BY desc_id) "
                    "UPDATE desc_stats s SET n = s.n - gone.n, seq = nextval('desc_stats_seq') "
                    "FROM gone WHERE s.desc_id = gone.desc_id"
                ).format(table)
            )
            conn.execute(sql.SQL("DROP TABLE {}").format(table))
    if old:
        log.info("index retention: dropped %d partitions older than time_s %.0f", len(old), cutoff_s)
    return len(old)
