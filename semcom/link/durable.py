"""The outbox on disk: SQLite in WAL mode with synchronous=FULL, so an accepted record survives power loss."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from semcom.errors import InvalidInput, Overloaded
from semcom.link.outbox import Mark, RecordKey, RecordQueue, record_key
from semcom.record import Record

log = logging.getLogger(__name__)

_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS streams (stream_id TEXT PRIMARY KEY, next_record_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (upload_key TEXT PRIMARY KEY, start_time_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS emitted (
    upload_key TEXT NOT NULL, n INTEGER NOT NULL, record_id INTEGER NOT NULL, PRIMARY KEY (upload_key, n)
);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, stream_id TEXT NOT NULL, record_id INTEGER NOT NULL,
    body TEXT NOT NULL, UNIQUE (stream_id, record_id)
);
"""
_NEXT_ID = """
INSERT INTO streams VALUES (?, ?)
ON CONFLICT (stream_id) DO UPDATE SET next_record_id = max(next_record_id, excluded.next_record_id)
"""


def _dump(rec: Record) -> str:
    return json.dumps(
        [
            rec.schema_id,
            rec.stream_id,
            rec.track_id,
            rec.record_id,
            rec.time_s,
            rec.location_id,
            rec.fields,
            rec.confidence,
        ]
    )


def _load(body: str) -> Record:
    # Rows written before confidences were kept have seven items.
    schema_id, stream_id, track_id, record_id, time_s, location_id, fields, *rest = json.loads(body)
    confidence = rest[0] if rest else {}
    return Record(schema_id, stream_id, track_id, record_id, time_s, location_id, fields, confidence)


class SqliteOutbox(RecordQueue):
    """An Outbox in one SQLite file; the records of its table are exactly those accepted and not settled.

    Durability: WAL mode with synchronous=FULL fsyncs the write-ahead log at every commit, so `add` returns
    only once the record is on stable storage (power loss included, as far as the disk honours fsync).
    `add` commits the record and its stream's next record id in one transaction; `settle` deletes in one.
    Each opening counts one epoch (committed before the outbox is used), and every row still in the table is
    offered as waiting again. When the disk is full (or a file-size limit is hit) `add` raises Overloaded and
    the record is not accepted. Reads come from a copy in memory; one lock serialises the writers.
    """

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SQL)
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            self._epoch = (int(row[0]) if row else 0) + 1
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (self._epoch,))
        self._next_ids = {s: int(n) for s, n in self._db.execute("SELECT * FROM streams")}
        for (body,) in self._db.execute("SELECT body FROM records ORDER BY seq"):
            self._enqueue(_load(body))
        log.info("outbox %s: epoch %d, %d records unsettled", self.path, self._epoch, self._count)

    def _transaction(self) -> _Txn:
        return _Txn(self._db)

    @property
    def epoch(self) -> int:
        return self._epoch

    def next_record_id(self, stream_id: str) -> int:
        return self._next_ids.get(stream_id, 1)

    def emitted(self, upload_key: str) -> list[int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record_id FROM emitted WHERE upload_key = ? ORDER BY n", (upload_key,)
            ).fetchall()
        return [int(r) for (r,) in rows]

    def upload_start_s(self, upload_key: str, start_time_s: float) -> float:
        with self._lock, self._transaction():
            self._db.execute("INSERT OR IGNORE INTO uploads VALUES (?, ?)", (upload_key, start_time_s))
            (first,) = self._db.execute(
                "SELECT start_time_s FROM uploads WHERE upload_key = ?", (upload_key,)
            ).fetchone()
        return float(first)

    def forget_upload(self, upload_key: str) -> None:
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute("DELETE FROM uploads WHERE upload_key = ?", (upload_key,))
                    self._db.execute("DELETE FROM emitted WHERE upload_key = ?", (upload_key,))
            except sqlite3.Error as err:  # then a later upload of the same bytes resumes this one instead
                log.error("outbox %s: could not forget upload %s: %s", self.path, upload_key, err)

    def add(self, record: Record, mark: Mark | None = None) -> None:
        key = record_key(record)
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute("INSERT INTO records VALUES (NULL, ?, ?, ?)", (*key, _dump(record)))
                    self._db.execute(_NEXT_ID, (record.stream_id, record.record_id + 1))
                    if mark is not None:
                        self._db.execute("INSERT INTO emitted VALUES (?, ?, ?)", (*mark, record.record_id))
            except sqlite3.IntegrityError as err:
                raise InvalidInput(f"record {key} is already in the outbox") from err
            except sqlite3.Error as err:
                # SQLITE_FULL, EFBIG, EIO: the record is not stored, so it is not accepted.
                raise Overloaded(f"outbox {self.path} cannot store the record: {err}") from err
            self._next_ids[record.stream_id] = max(
                self.next_record_id(record.stream_id), record.record_id + 1
            )
            self._enqueue(record)

    def settle(self, keys: Iterable[RecordKey]) -> None:
        settled = self._release(keys)
        if not settled:
            return
        with self._lock:
            try:
                with self._transaction():
                    self._db.executemany("DELETE FROM records WHERE stream_id = ? AND record_id = ?", settled)
            except sqlite3.Error as err:
                # Harmless but worth a line: after a restart these records go out again, and the receiver
                # acknowledges an identical record without storing it twice.
                log.error("outbox %s: could not delete %d settled records: %s", self.path, len(settled), err)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Txn:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        if kind is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")
