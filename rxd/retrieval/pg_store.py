"""The index on PostgreSQL: records as rows shared by rxd replicas, descriptions ranked in each replica."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray

from semcom.errors import BackendFailed
from semcom.record import Record
from semcom.schema import SchemaRegistry

from . import pg_schema
from .describe import RecordChecker
from .engine import DescriptionEntry, Hit, Query, StoredRecord, ranked_hit, slot_tests
from .parse import SlotSets
from .pg_descriptions import Descriptions
from .pg_schema import IndexUnavailable, SchemaMismatch
from .pg_search import FetchedRow, Ranked, top_rows
from .probability import effective
from .ranking import DescriptionOrder

__all__ = ["IndexUnavailable", "PgStore", "SchemaMismatch"]

log = logging.getLogger(__name__)

_Conn = psycopg.Connection[tuple[Any, ...]]
_COPY = "COPY records (stream_id, record_id, track_id, time_s, location_id, desc_id, conf) FROM STDIN"
_EXISTING = (
    "SELECT record_id, desc_id, track_id, time_s, location_id FROM records "
    "WHERE stream_id = %s AND record_id = ANY(%s)"
)
_LOCK_STREAMS = "SELECT pg_advisory_xact_lock(hashtextextended(s, 1)) FROM unnest(%s::text[]) AS s"
_HEADS = "SELECT stream_id, max_record_id FROM stream_heads WHERE stream_id = ANY(%s)"
_PUT_HEADS = (
    "INSERT INTO stream_heads AS h SELECT * FROM unnest(%s::text[], %s::bigint[]) "
    "ON CONFLICT (stream_id) DO UPDATE SET max_record_id = greatest(h.max_record_id, EXCLUDED.max_record_id)"
)
_GET = (
    "SELECT desc_id, stream_id, record_id, track_id, time_s, location_id, conf FROM records "
    "WHERE stream_id = %s AND record_id = %s"
)


class PgStore:
    """The IndexStore on PostgreSQL, for several rxd replicas on one database (or an index too big to load).

    Records are rows (filter columns, a description id, confidences), partitioned by time (`partition_s`
    a table) so that retention (`retention_days`) drops whole tables. Descriptions are unique by
    (schema, fields): a replica that meets one another has stored takes its id. Each replica keeps every
    description (embedding, field values, record count, confidence bounds) in memory and ranks them as
    RecordStore does, then fetches at most top_k records of each description it visits (an index scan of
    (desc_id, time_s DESC) where recency decides). What other replicas stored is seen within `refresh_s`
    (descriptions and their counts are polled); records themselves are read from the database by every query.

    The engine numbers descriptions itself (per process); the store maps those numbers to the database's
    ids, so replicas never need to agree on the engine's numbering. A connection lost is IndexUnavailable
    (not acknowledged: see pg_schema); the next call connects again. Safe to share between threads.
    """

    def __init__(
        self,
        dsn: str,
        schemas: SchemaRegistry,
        *,
        retention_days: float = 0.0,
        partition_s: float = 86_400.0,
        refresh_s: float = 1.0,
        connect_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dsn = dsn
        self.retention_days = retention_days
        self.partition_s = partition_s
        self.refresh_s = refresh_s
        self.connect_timeout_s = connect_timeout_s
        self._clock = clock
        self._schemas = schemas
        self._checker = RecordChecker(schemas)
        self._names = {s.id: s.field_names for s in schemas}
        self._desc = Descriptions(schemas)
        self._lock = threading.Lock()
        self._conn: _Conn | None = None
        self._buckets: set[int] = set()
        self._engine_ids: dict[int, int] = {}  # the engine's description number -> the database's id
        self._refreshed_at = -math.inf
        self.conflicts = 0  # records refused: another record is stored under their (stream_id, record_id)
        with self._lock:
            conn = self._db()
            self._refresh(conn, force=True)
            self._engine_ids = {d: d for d in self._desc.entries}
            self._apply_retention(conn)

    # -- connection ---------------------------------------------------------------------------------------

    def _db(self) -> _Conn:
        if self._conn is None or self._conn.closed:
            self._conn = pg_schema.connect(self.dsn, connect_timeout_s=self.connect_timeout_s)
            self._conn.autocommit = True  # transactions are explicit; reads never hold a snapshot open
            # On every connection: a database a newer rxd migrated meanwhile is refused here too.
            pg_schema.migrate(self._conn)
            self._buckets = pg_schema.existing_buckets(self._conn)
            self._desc.forget_watermarks()  # what changed while disconnected is read in full
        return self._conn

    @contextmanager
    def _guard(self) -> Iterator[_Conn]:
        """The connection; a lost one becomes IndexUnavailable and is dropped, to be opened again."""
        conn = self._db()
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            self._conn = None
            conn.close()
            raise IndexUnavailable(
                f"the index database went away: {str(err).strip() or type(err).__name__}"
            ) from err

    def _refresh(self, conn: _Conn, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._refreshed_at >= self.refresh_s:
            self._desc.poll(conn)
            self._refreshed_at = now

    # -- descriptions -------------------------------------------------------------------------------------

    def add_descriptions(self, entries: Sequence[DescriptionEntry], vectors: NDArray[np.float32]) -> None:
        """Keep new descriptions with their embeddings; one another replica stored first keeps its id, text
        and embedding."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(entries):
            raise ValueError(f"need one vector per description, got {vectors.shape} for {len(entries)}")
        for entry in entries:
            self._desc.indices(entry)
        with self._lock, self._guard() as conn:
            if entries:
                self._desc.check_dim(vectors.shape[1])
            ids = self._desc.store(conn, entries, vectors)
            for entry, desc_id in zip(entries, ids, strict=True):
                self._engine_ids[entry.desc_id] = desc_id

    def has_description(self, desc_id: int) -> bool:
        return desc_id in self._engine_ids

    def get_description(self, desc_id: int) -> str | None:
        entry = self._desc.entries.get(self._engine_ids.get(desc_id, -1))
        return None if entry is None else entry.text

    def description_vector(self, desc_id: int) -> NDArray[np.float32] | None:
        with self._lock:
            return self._desc.vector(self._engine_ids.get(desc_id, -1))

    def descriptions(self) -> list[DescriptionEntry]:
        """The descriptions this replica's engine knows, under the engine's numbers."""
        with self._lock:
            known = self._desc.entries
            return [
                DescriptionEntry(mine, known[db].schema_id, known[db].values, known[db].text)
                for mine, db in sorted(self._engine_ids.items())
            ]

    def description_count(self) -> int:
        """Descriptions stored, as of this replica's last look (within `refresh_s`)."""
        self._refresh_if_reachable()
        return len(self._desc.entries)

    # -- records ------------------------------------------------------------------------------------------

    def add(self, records: Sequence[Record], desc_ids: Sequence[int]) -> int:
        """Store records with the (engine's) ids of their descriptions, all or none; returns how many were
        refused because a different record holds their id. IndexUnavailable: nothing was stored."""
        if len(records) != len(desc_ids):
            raise ValueError(f"{len(records)} records but {len(desc_ids)} description ids")
        latest: dict[tuple[str, int], tuple[Record, int]] = {}
        for rec, mine in zip(records, desc_ids, strict=True):
            if mine not in self._engine_ids:
                raise ValueError(f"record {rec.record_id}: description {mine} was never added")
            latest[(rec.stream_id, rec.record_id)] = (rec, self._engine_ids[mine])
        for rec, desc_id in latest.values():
            self._validate(rec, desc_id)
        with self._lock, self._guard() as conn:
            buckets = {math.floor(r.time_s / self.partition_s) for r, _ in latest.values()}
            if not buckets <= self._buckets:
                pg_schema.create_partitions(conn, buckets, self.partition_s)
                self._buckets |= buckets
                self._apply_retention(conn, keep=buckets)
            with conn.transaction():
                conflicts, fresh = self._new_rows(conn, latest)
                with conn.cursor() as cur, cur.copy(_COPY) as copy:
                    for rec, desc_id in fresh:
                        copy.write_row(self._row(rec, desc_id))
                self._desc.count(conn, fresh, self._confidences([r for r, _ in fresh]))
            self.conflicts += conflicts
            return conflicts

    def _new_rows(
        self, conn: _Conn, latest: dict[tuple[str, int], tuple[Record, int]]
    ) -> tuple[int, list[tuple[Record, int]]]:
        """(refused, to store), under a lock per stream so that replicas never store one id twice. Only ids
        at or below their stream's highest stored id are looked up: a stream's new records need no lookup."""
        by_stream: dict[str, list[int]] = {}
        for stream_id, record_id in latest:
            by_stream.setdefault(stream_id, []).append(record_id)
        streams = sorted(by_stream)  # one lock order for every replica: no deadlock
        conn.execute(_LOCK_STREAMS, (streams,))
        heads: dict[str, int] = dict(conn.execute(_HEADS, (streams,)).fetchall())
        stored: dict[tuple[str, int], tuple[Any, ...]] = {}
        for stream_id, ids in by_stream.items():
            old = [i for i in ids if i <= heads.get(stream_id, -1)]
            if old:
                for row in conn.execute(_EXISTING, (stream_id, old)):
                    stored[(stream_id, int(row[0]))] = row[1:]
        conn.execute(_PUT_HEADS, (streams, [max(by_stream[s]) for s in streams]))
        conflicts, fresh = 0, []
        for key, (rec, desc_id) in latest.items():
            found = stored.get(key)
            if found is None:
                fresh.append((rec, desc_id))
            elif tuple(found) != (desc_id, rec.track_id, rec.time_s, rec.location_id):
                conflicts += 1  # a different record under a stored id: the stored one is kept
        return conflicts, fresh

    def _row(self, rec: Record, desc_id: int) -> tuple[Any, ...]:
        conf = [rec.confidence.get(n) for n in self._names[rec.schema_id]] if rec.confidence else None
        return (rec.stream_id, rec.record_id, rec.track_id, rec.time_s, rec.location_id, desc_id, conf)

    def _confidences(self, records: Sequence[Record]) -> NDArray[np.float32]:
        """Effective confidences (records x schema columns of the widest schema; not stated: certain)."""
        out = np.ones((len(records), self._desc.width), dtype=np.float32)
        for i, rec in enumerate(records):
            if rec.confidence:
                for j, name in enumerate(self._names[rec.schema_id]):
                    if name in rec.confidence:
                        out[i, j] = rec.confidence[name]
        return effective(out)

    def _validate(self, rec: Record, desc_id: int) -> None:
        schema, values = self._checker.check(rec)
        entry = self._desc.entries[desc_id]
        if (schema.id, values) != (entry.schema_id, entry.values):
            raise ValueError(f"record {rec.record_id}: description {desc_id} is of other field values")

    def get(self, stream_id: str, record_id: int) -> StoredRecord | None:
        with self._lock, self._guard() as conn:
            row = conn.execute(_GET, (stream_id, record_id)).fetchone()
            if row is None:
                return None
            if row[0] not in self._desc.entries:
                self._refresh(conn, force=True)
            return self._stored(row)

    def _stored(self, row: FetchedRow) -> StoredRecord:
        desc_id, stream_id, record_id, track_id, time_s, location_id, conf = row
        entry = self._desc.entries[int(desc_id)]
        names = self._names[entry.schema_id]
        rec = Record(
            schema_id=entry.schema_id,
            stream_id=stream_id,
            track_id=int(track_id),
            record_id=int(record_id),
            time_s=float(time_s),
            location_id=int(location_id),
            fields=dict(zip(names, entry.values, strict=True)),
            confidence={
                n: round(float(c), 4) for n, c in zip(names, conf or (), strict=False) if c is not None
            },
        )
        return StoredRecord(rec, entry.desc_id, entry.text)

    def count(self) -> int:
        """Records stored, as of this replica's last look (within `refresh_s`)."""
        self._refresh_if_reachable()
        return self._desc.record_count()

    def _refresh_if_reachable(self) -> None:
        """Counts are for logs and metrics: a database down leaves the last ones known."""
        with self._lock, contextlib.suppress(IndexUnavailable), self._guard() as conn:
            self._refresh(conn)

    # -- search -------------------------------------------------------------------------------------------

    def search(self, q: Query, slots: SlotSets, vector: NDArray[np.float32]) -> list[Hit]:
        """As RecordStore.search: hard filters, the probability of satisfying every slot, tiers,
        similarity, recency. BackendFailed when the database cannot be reached."""
        schema = self._schemas.get(q.schema_id)
        tests = slot_tests(schema, slots)
        try:
            with self._lock, self._guard() as conn:
                self._refresh(conn)
                d = self._desc
                if d.record_count() == 0:
                    return []
                n = d.size  # the arrays have room to grow: rank only the ids in use
                cmin, cmax = d.cmin[:n], d.cmax[:n]
                order = DescriptionOrder(
                    schema,
                    tests,
                    fields=d.fields[:n],
                    usable=d.schema_codes[:n] == d.code(q.schema_id),
                    counts=d.counts[:n],
                    cmin=cmin,
                    cmax=cmax,
                    vectors=d.vectors[:n],
                    vector=vector,
                    min_probability=q.min_probability,
                )

                def fetch(stmt: Any, params: dict[str, Any]) -> list[FetchedRow]:
                    return conn.execute(stmt, params).fetchall()

                rows, probs, slot_p = top_rows(q, Ranked(order, cmin, cmax, d.width), fetch)
        except IndexUnavailable as err:
            raise BackendFailed(str(err)) from err
        descs = np.asarray([row[0] for row in rows], dtype=np.int64)
        sims = order.similarity(descs)
        return [
            ranked_hit(
                self._stored(row),
                float(sims[i]),
                self._desc.fields[descs[i]],
                tests,
                float(probs[i]),
                slot_p[i],
            )
            for i, row in enumerate(rows)
        ]

    # -- lifecycle ----------------------------------------------------------------------------------------

    def apply_retention(self) -> int:
        """Drop the partitions older than `retention_days` (also done at open and with each new partition)."""
        with self._lock, self._guard() as conn:
            return self._apply_retention(conn)

    def _apply_retention(self, conn: _Conn, keep: set[int] | None = None) -> int:
        """Drop what is too old, except the partitions in `keep` (those a batch is about to fill: records
        that arrive late are stored, and go at the next retention)."""
        if self.retention_days <= 0:
            return 0
        cutoff_s = self._clock() - self.retention_days * 86_400.0
        dropped = pg_schema.drop_partitions_before(conn, cutoff_s, self.partition_s, keep or set())
        if dropped:
            self._buckets = pg_schema.existing_buckets(conn)
            self._refresh(conn, force=True)
        return dropped

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
