"""The record index: an embedded SQLite store by default (one file, survives restarts)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from semcom.record import Record


@dataclass(frozen=True)
class IndexedRecord:
    record: Record
    description: str


@dataclass(frozen=True)
class RecordFilter:
    """Exact constraints on stored records; empty members constrain nothing."""

    schema_id: str = ""
    fields: Mapping[str, str] | None = None
    stream_id: str = ""
    location_ids: Sequence[int] = ()
    t0_s: float = 0.0
    t1_s: float = 0.0


class RecordIndex(Protocol):
    """What the receiver needs from an index; a networked vector database can implement it too."""

    def add(self, items: Sequence[IndexedRecord]) -> None: ...
    def get(self, stream_id: str, record_id: int) -> IndexedRecord | None: ...
    def search(self, flt: RecordFilter, limit: int) -> list[IndexedRecord]: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    stream_id   TEXT    NOT NULL,
    record_id   INTEGER NOT NULL,
    schema_id   TEXT    NOT NULL,
    track_id    INTEGER NOT NULL,
    time_s      REAL    NOT NULL,
    location_id INTEGER NOT NULL,
    fields      TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (stream_id, record_id)
);
CREATE INDEX IF NOT EXISTS records_time ON records (time_s);
"""


class SqliteIndex:
    """Records in one SQLite file; writes are committed before the receiver acknowledges a burst."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")

    def add(self, items: Sequence[IndexedRecord]) -> None:
        rows = [
            (
                it.record.stream_id,
                it.record.record_id,
                it.record.schema_id,
                it.record.track_id,
                it.record.time_s,
                it.record.location_id,
                json.dumps(it.record.fields, sort_keys=True),
                it.description,
            )
            for it in items
        ]
        with self._lock, self._db:
            # A retransmitted burst carries the same ids: replacing keeps the index free of duplicates.
            self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def get(self, stream_id: str, record_id: int) -> IndexedRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM records WHERE stream_id = ? AND record_id = ?", (stream_id, record_id)
            ).fetchone()
        return None if row is None else _row(row)

    def search(self, flt: RecordFilter, limit: int) -> list[IndexedRecord]:
        where: list[str] = []
        args: list[object] = []
        if flt.schema_id:
            where.append("schema_id = ?")
            args.append(flt.schema_id)
        if flt.stream_id:
            where.append("stream_id = ?")
            args.append(flt.stream_id)
        if flt.location_ids:
            where.append(f"location_id IN ({', '.join('?' * len(flt.location_ids))})")
            args.extend(flt.location_ids)
        if flt.t0_s:
            where.append("time_s >= ?")
            args.append(flt.t0_s)
        if flt.t1_s:
            where.append("time_s <= ?")
            args.append(flt.t1_s)
        for name, value in (flt.fields or {}).items():
            where.append("json_extract(fields, ?) = ?")
            args.extend([f'$."{name}"', value])
        sql = "SELECT * FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_s DESC, record_id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [_row(r) for r in self._db.execute(sql, args).fetchall()]

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM records").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(row: tuple[object, ...]) -> IndexedRecord:
    stream_id, record_id, schema_id, track_id, time_s, location_id, fields, description = row
    rec = Record(
        schema_id=str(schema_id),
        stream_id=str(stream_id),
        track_id=int(track_id),  # type: ignore[call-overload]
        record_id=int(record_id),  # type: ignore[call-overload]
        time_s=float(time_s),  # type: ignore[arg-type]
        location_id=int(location_id),  # type: ignore[call-overload]
        fields=json.loads(str(fields)),
    )
    return IndexedRecord(rec, str(description))
