"""Site ownership and counters kept in the index database: three small tables beside the records.

SQLite: a connection of its own to the index file (WAL: it never blocks the record writer). PostgreSQL: a
connection of its own to the index database; counters are added, never overwritten, so replicas add up.
link_sites holds each site's counters, link_site_streams each stream's site, link_stream_counters each
stream's link counts (semcom.link.receiver.StreamStats; the SNR is the last estimate written, NULL before
any).
"""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rxd.sites import COUNTER_NAMES, LAST_VALUE, STREAM_COUNTER_NAMES, SiteCounters, SiteStore
from semcom.link.receiver import StreamStats

if TYPE_CHECKING:
    from rxd.config import IndexConfig

_COLUMNS = ", ".join(COUNTER_NAMES)
_STREAM_COLUMNS = ", ".join(STREAM_COUNTER_NAMES)
_STREAM_FLOATS = {n for n in STREAM_COUNTER_NAMES if isinstance(getattr(StreamStats(), n), float)}


def _stream_table(text: str, integer: str, real: str) -> str:
    columns = ", ".join(
        f"{n} {real}"
        if n == LAST_VALUE
        else f"{n} {real if n in _STREAM_FLOATS else integer} NOT NULL DEFAULT 0"
        for n in STREAM_COUNTER_NAMES
    )
    return f"CREATE TABLE IF NOT EXISTS link_stream_counters (stream_id {text} PRIMARY KEY, {columns})"


_TABLES = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS link_sites (site_id TEXT PRIMARY KEY, "
        + ", ".join(
            f"{n} {'REAL' if n.startswith('last_') else 'INTEGER'} NOT NULL DEFAULT 0" for n in COUNTER_NAMES
        )
        + ")",
        "CREATE TABLE IF NOT EXISTS link_site_streams (stream_id TEXT PRIMARY KEY, site_id TEXT NOT NULL)",
        _stream_table("TEXT", "INTEGER", "REAL"),
    ],
    "postgres": [
        "CREATE TABLE IF NOT EXISTS link_sites (site_id text PRIMARY KEY, "
        + ", ".join(
            f"{n} {'double precision' if n.startswith('last_') else 'bigint'} NOT NULL DEFAULT 0"
            for n in COUNTER_NAMES
        )
        + ")",
        "CREATE TABLE IF NOT EXISTS link_site_streams (stream_id text PRIMARY KEY, site_id text NOT NULL)",
        _stream_table("text", "bigint", "double precision"),
    ],
}


def _upsert(mark: str, greatest: str) -> str:
    """Add a site's increments (the last_* times take the later one)."""
    values = ", ".join([mark] * (len(COUNTER_NAMES) + 1))
    sets = ", ".join(
        f"{n} = {greatest}(link_sites.{n}, excluded.{n})"
        if n.startswith("last_")
        else f"{n} = link_sites.{n} + excluded.{n}"
        for n in COUNTER_NAMES
    )
    return (
        f"INSERT INTO link_sites (site_id, {_COLUMNS}) VALUES ({values}) ON CONFLICT (site_id) DO UPDATE SET "
        + sets
    )


def _stream_upsert(mark: str) -> str:
    """Add a stream's increments; a measured SNR replaces the stored one (NULL: none measured since)."""
    values = ", ".join([mark] * (len(STREAM_COUNTER_NAMES) + 1))
    sets = ", ".join(
        f"{n} = COALESCE(excluded.{n}, link_stream_counters.{n})"
        if n == LAST_VALUE
        else f"{n} = link_stream_counters.{n} + excluded.{n}"
        for n in STREAM_COUNTER_NAMES
    )
    return (
        f"INSERT INTO link_stream_counters (stream_id, {_STREAM_COLUMNS}) VALUES ({values}) "
        "ON CONFLICT (stream_id) DO UPDATE SET " + sets
    )


def _rows(deltas: dict[str, SiteCounters]) -> list[tuple[Any, ...]]:
    return [(sid, *(getattr(d, n) for n in COUNTER_NAMES)) for sid, d in sorted(deltas.items())]


def _stream_rows(streams: dict[str, StreamStats]) -> list[tuple[Any, ...]]:
    """One row per stream; an SNR not measured (NaN) is written as NULL, so it keeps the stored one."""
    rows = []
    for stream_id, d in sorted(streams.items()):
        values = [getattr(d, n) for n in STREAM_COUNTER_NAMES]
        rows.append(
            tuple([stream_id, *(None if isinstance(v, float) and math.isnan(v) else v for v in values)])
        )
    return rows


def _loaded_streams(rows: list[tuple[Any, ...]]) -> dict[str, StreamStats]:
    out = {}
    for row in rows:
        s = StreamStats()
        for name, value in zip(STREAM_COUNTER_NAMES, row[1:], strict=True):
            if name in _STREAM_FLOATS:
                setattr(s, name, math.nan if value is None else float(value))
            else:
                setattr(s, name, int(value))
        out[str(row[0])] = s
    return out


def _loaded(
    sites: list[tuple[Any, ...]], streams: list[tuple[Any, ...]]
) -> tuple[dict[str, SiteCounters], dict[str, str]]:
    counters = {}
    for row in sites:
        c = SiteCounters()
        for name, value in zip(COUNTER_NAMES, row[1:], strict=True):
            setattr(c, name, float(value) if name.startswith("last_") else int(value))
        counters[str(row[0])] = c
    return counters, {str(s): str(site) for s, site in streams}


class SqliteSiteStore:
    """The two tables in the SQLite index file (or in memory for an index in memory)."""

    def __init__(self, path: Path | str) -> None:
        # A short wait: a flush that finds the index busy keeps its counts for the next one (rxd.sites).
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=5)
        self._lock = threading.Lock()
        with self._lock, self._db:
            for ddl in _TABLES["sqlite"]:
                self._db.execute(ddl)

    def load(self) -> tuple[dict[str, SiteCounters], dict[str, str]]:
        with self._lock:
            sites = self._db.execute(f"SELECT site_id, {_COLUMNS} FROM link_sites").fetchall()
            streams = self._db.execute("SELECT stream_id, site_id FROM link_site_streams").fetchall()
        return _loaded(sites, streams)

    def load_streams(self) -> dict[str, StreamStats]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT stream_id, {_STREAM_COLUMNS} FROM link_stream_counters"
            ).fetchall()
        return _loaded_streams(rows)

    def save(
        self, deltas: dict[str, SiteCounters], claims: dict[str, str], streams: dict[str, StreamStats]
    ) -> dict[str, str]:
        with self._lock, self._db:
            self._db.executemany(_upsert("?", "MAX"), _rows(deltas))
            self._db.executemany(_stream_upsert("?"), _stream_rows(streams))
            self._db.executemany(
                "INSERT OR IGNORE INTO link_site_streams (stream_id, site_id) VALUES (?, ?)", claims.items()
            )
            return {
                s: str(
                    self._db.execute(
                        "SELECT site_id FROM link_site_streams WHERE stream_id = ?", (s,)
                    ).fetchone()[0]
                )
                for s in claims
            }

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PgSiteStore:
    """The two tables in the PostgreSQL index database."""

    def __init__(self, dsn: str, *, connect_timeout_s: float) -> None:
        from rxd.retrieval.pg_schema import connect

        self._dsn = dsn
        self._timeout_s = connect_timeout_s
        self._connect = connect
        self._conn = connect(dsn, connect_timeout_s=connect_timeout_s)
        self._lock = threading.Lock()
        with self._lock, self._conn.transaction():
            for ddl in _TABLES["postgres"]:
                self._conn.execute(ddl)

    def _db(self) -> Any:
        if self._conn.closed:  # the database went away and came back: a fresh connection
            self._conn = self._connect(self._dsn, connect_timeout_s=self._timeout_s)
        return self._conn

    def load(self) -> tuple[dict[str, SiteCounters], dict[str, str]]:
        with self._lock:
            conn = self._db()
            with conn.transaction():
                sites = conn.execute(f"SELECT site_id, {_COLUMNS} FROM link_sites").fetchall()
                streams = conn.execute("SELECT stream_id, site_id FROM link_site_streams").fetchall()
        return _loaded(sites, streams)

    def load_streams(self) -> dict[str, StreamStats]:
        with self._lock:
            conn = self._db()
            with conn.transaction():
                rows = conn.execute(
                    f"SELECT stream_id, {_STREAM_COLUMNS} FROM link_stream_counters"
                ).fetchall()
        return _loaded_streams(rows)

    def save(
        self, deltas: dict[str, SiteCounters], claims: dict[str, str], streams: dict[str, StreamStats]
    ) -> dict[str, str]:
        with self._lock:
            try:
                return self._save(self._db(), deltas, claims, streams)
            except Exception:
                self._conn.close()  # the database went away: the next flush connects afresh
                raise

    def _save(
        self,
        conn: Any,
        deltas: dict[str, SiteCounters],
        claims: dict[str, str],
        streams: dict[str, StreamStats],
    ) -> dict[str, str]:
        with conn.transaction(), conn.cursor() as cur:
            if deltas:
                cur.executemany(_upsert("%s", "GREATEST"), _rows(deltas))
            if streams:
                cur.executemany(_stream_upsert("%s"), _stream_rows(streams))
            held: dict[str, str] = {}
            for stream_id, site_id in claims.items():
                cur.execute(
                    "INSERT INTO link_site_streams (stream_id, site_id) VALUES (%s, %s) "
                    "ON CONFLICT (stream_id) DO NOTHING",
                    (stream_id, site_id),
                )
                row = cur.execute(
                    "SELECT site_id FROM link_site_streams WHERE stream_id = %s", (stream_id,)
                ).fetchone()
                held[stream_id] = str(row[0]) if row else site_id
        return held

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_site_store(cfg: IndexConfig) -> SiteStore:
    """The site tables in the index `cfg` names (connected and created)."""
    if cfg.kind == "postgres":
        from rxd.retrieval.index import dsn_of

        return PgSiteStore(dsn_of(cfg), connect_timeout_s=cfg.connect_timeout_s)
    return SqliteSiteStore(cfg.path)
