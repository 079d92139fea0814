"""What the page watches live: records as the index gains them, and per-stream totals read from the index."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from semcom.errors import Overloaded
from semcom.schema import SchemaRegistry

log = logging.getLogger(__name__)

# Read with a connection of its own (the index is in WAL mode, so reading never blocks the writer): the
# live view neither waits on the model worker nor adds work to it.
_TOTALS = (
    "SELECT stream_id, COUNT(*), MIN(time_s), MAX(time_s), MAX(row), GROUP_CONCAT(DISTINCT location_id) "
    "FROM records GROUP BY stream_id"
)
_AFTER = (
    "SELECT r.row, r.stream_id, r.record_id, r.schema_id, r.track_id, r.time_s, r.location_id, r.fields, "
    "d.text FROM records r JOIN descriptions d ON d.desc_id = r.desc_id WHERE r.row > ? ORDER BY r.row "
    "LIMIT ?"
)


@dataclass
class StreamTotals:
    """One stream as the index holds it."""

    stream_id: str
    records: int = 0
    first_time_s: float = 0.0
    last_time_s: float = 0.0
    location_ids: tuple[int, ...] = ()

    def add(self, time_s: float, location_id: int) -> None:
        self.records += 1
        self.first_time_s = min(self.first_time_s, time_s) if self.records > 1 else time_s
        self.last_time_s = max(self.last_time_s, time_s)
        if location_id not in self.location_ids:
            self.location_ids = tuple(sorted((*self.location_ids, location_id)))


class IndexTail:
    """Follows the index file: totals per stream counted once at start, then each new row as it appears.
    An index in memory (':memory:') cannot be followed: `enabled` is False and nothing is reported.
    Nor, for now, can a PostgreSQL index (see `for_index`)."""

    @classmethod
    def for_index(cls, kind: str, path: Path | str, schemas: SchemaRegistry) -> IndexTail:
        """The tail of the index rxd runs on. On PostgreSQL the live view is off (the page says so, and
        queries work as ever): following a table that several replicas write, and counting per stream over
        partitions of 10^8 rows at every page start, would need a feed of its own (LISTEN/NOTIFY)."""
        return cls(path if kind == "sqlite" else ":memory:", schemas)

    def __init__(self, path: Path | str, schemas: SchemaRegistry, *, batch: int = 500) -> None:
        self.path = Path(path)
        self.schemas = schemas
        self.batch = batch
        self.enabled = str(path) != ":memory:"
        self.streams: dict[str, StreamTotals] = {}
        self._last_row = -1
        self._db: sqlite3.Connection | None = None
        # Held by a scan for its whole run and by close: a scan whose awaiting task was cancelled (rxd
        # stopping) still runs on its thread, and closing the connection under it would crash sqlite3.
        self._lock = threading.Lock()

    def scan(self) -> list[dict[str, Any]]:
        """New records since the last scan, oldest first (at most `batch`); blocking, run it in a thread."""
        if not self.enabled:
            return []
        with self._lock:
            return self._scan()

    def _scan(self) -> list[dict[str, Any]]:
        if self._db is None:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            for sid, n, t0, t1, last, locs in self._db.execute(_TOTALS):
                ids = tuple(sorted(int(x) for x in str(locs).split(",") if x))
                self.streams[sid] = StreamTotals(sid, int(n), float(t0), float(t1), ids)
                self._last_row = max(self._last_row, int(last))
            return []
        out = []
        for row, sid, rid, schema_id, tid, time_s, loc, fields, text in self._db.execute(
            _AFTER, (self._last_row, self.batch)
        ):
            self._last_row = int(row)
            self.streams.setdefault(sid, StreamTotals(sid)).add(float(time_s), int(loc))
            names = self.schemas.get(schema_id).field_names
            out.append(
                {
                    "schema_id": schema_id,
                    "stream_id": sid,
                    "record_id": int(rid),
                    "track_id": int(tid),
                    "time_s": float(time_s),
                    "location_id": int(loc),
                    "fields": dict(zip(names, str(fields).split(","), strict=True)),
                    "description": text,
                }
            )
        return out

    def totals(self) -> list[dict[str, Any]]:
        return [asdict(s) for _, s in sorted(self.streams.items())]

    def close(self) -> None:
        """Close the connection once no scan uses it (blocking: waits for a scan in flight)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class EventHub:
    """Server-sent events to at most `max_listeners` pages. Publishing never waits: a listener whose queue
    is full (a slow or stalled browser) is dropped and its page reconnects, so no page can hold rxd back."""

    def __init__(self, *, max_listeners: int = 16, queue_events: int = 256) -> None:
        self.max_listeners = max_listeners
        self.queue_events = queue_events
        self._queues: set[asyncio.Queue[tuple[str, Any] | None]] = set()

    @property
    def listeners(self) -> int:
        return len(self._queues)

    def publish(self, event: str, data: Any) -> None:
        for q in list(self._queues):
            try:
                q.put_nowait((event, data))
            except asyncio.QueueFull:
                self._queues.discard(q)
                log.info("live view: dropped a listener that fell %d events behind", self.queue_events)

    def subscribe(self) -> asyncio.Queue[tuple[str, Any] | None]:
        """A new listener's queue; Overloaded when every slot is taken."""
        if len(self._queues) >= self.max_listeners:
            raise Overloaded(f"live view: {self.max_listeners} listeners already connected")
        q: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(self.queue_events)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, Any] | None]) -> None:
        self._queues.discard(q)

    def live(self, q: asyncio.Queue[tuple[str, Any] | None]) -> bool:
        """Whether `q` still listens (or has events left to deliver after being dropped)."""
        return q in self._queues or not q.empty()

    def close(self) -> None:
        """End every listener's stream (at shutdown, so that open pages do not hold the HTTP server)."""
        for q in list(self._queues):
            self._queues.discard(q)
            while q.full():
                q.get_nowait()
            q.put_nowait(None)
