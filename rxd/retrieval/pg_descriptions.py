"""A replica's copy of the PostgreSQL index's descriptions: embeddings, field values, counts, bounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from semcom.record import Record
from semcom.schema import SchemaRegistry

from .engine import DescriptionEntry

_Conn = psycopg.Connection[tuple[Any, ...]]
_INSERT = (
    "INSERT INTO descriptions (schema_id, fields, text, embedding) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (schema_id, fields) DO NOTHING RETURNING desc_id"
)
_SELECT = "SELECT desc_id, schema_id, fields, text, embedding FROM descriptions"
# One statement per batch: the bounds travel as array literals, since unnest would flatten 2-d arrays.
_COUNT = (
    "INSERT INTO desc_stats AS s SELECT d, n, lo::real[], hi::real[], nextval('desc_stats_seq') "
    "FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::text[]) AS t(d, n, lo, hi) ORDER BY d "
    "ON CONFLICT (desc_id) DO UPDATE SET n = s.n + EXCLUDED.n, "
    "conf_min = semcom_least(s.conf_min, EXCLUDED.conf_min), "
    "conf_max = semcom_greatest(s.conf_max, EXCLUDED.conf_max), seq = EXCLUDED.seq"
)
_STATS = "SELECT desc_id, n, conf_min, conf_max, seq FROM desc_stats"


class Descriptions:
    """Per database description id: embedding, field value indices, schema code (-1: id unused), records
    and the least and greatest effective confidence per schema column of its records.

    Polled: rows changed since the poll before the last one are read again, so that a transaction that
    took its id (or sequence number) before another but committed after it is still seen.
    """

    def __init__(self, schemas: SchemaRegistry) -> None:
        self._schemas = schemas
        self._codes = {s.id: i for i, s in enumerate(schemas)}
        self.width = max(len(s.fields) for s in schemas)
        big = max(len(f.values) for s in schemas for f in s.fields) > 256
        self._dtype = np.uint16 if big else np.uint8
        self.entries: dict[int, DescriptionEntry] = {}
        self.size = 0  # one past the highest id in use (the arrays have room beyond it)
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.fields = np.zeros((0, self.width), dtype=self._dtype)
        self.schema_codes = np.zeros(0, dtype=np.int16)
        self.counts = np.zeros(0, dtype=np.int64)
        self.cmin = np.ones((0, self.width), dtype=np.float32)
        self.cmax = np.ones((0, self.width), dtype=np.float32)
        self._desc_marks = (0, 0)  # (poll from, highest seen): description ids
        self._stats_marks = (0, 0)  # the same for desc_stats.seq

    def code(self, schema_id: str) -> int:
        return self._codes[schema_id]

    def record_count(self) -> int:
        return int(self.counts.sum())

    def forget_watermarks(self) -> None:
        self._desc_marks = (0, 0)
        self._stats_marks = (0, 0)

    def indices(self, entry: DescriptionEntry) -> list[int]:
        schema = self._schemas.get(entry.schema_id)
        if len(entry.values) != len(schema.fields):
            raise InvalidInput(f"description {entry.desc_id}: {len(entry.values)} values for {schema.id}")
        return [f.index(v) for f, v in zip(schema.fields, entry.values, strict=True)]

    def check_dim(self, dim: int) -> None:
        known = self.vectors.shape[1]
        if known == 0:
            self.vectors = np.zeros((len(self.vectors), dim), dtype=np.float32)
        elif dim != known:
            raise InvalidInput(f"the index holds {known}-d embeddings; got {dim}-d ones")

    def vector(self, desc_id: int) -> NDArray[np.float32] | None:
        return self.vectors[desc_id].copy() if desc_id in self.entries else None

    def store(
        self, conn: _Conn, entries: Sequence[DescriptionEntry], vectors: NDArray[np.float32]
    ) -> list[int]:
        """The database ids of `entries`, inserting those no replica stored (unique by schema and fields)."""
        ids = []
        with conn.transaction():
            for entry, vec in zip(entries, vectors, strict=True):
                fields = ",".join(entry.values)
                row = conn.execute(_INSERT, (entry.schema_id, fields, entry.text, vec.tobytes())).fetchone()
                if row is not None:
                    self._put(DescriptionEntry(int(row[0]), entry.schema_id, entry.values, entry.text), vec)
                    ids.append(int(row[0]))
                    continue
                # Another replica stored it first: its id, text and embedding are the index's.
                got = conn.execute(
                    f"{_SELECT} WHERE schema_id = %s AND fields = %s", (entry.schema_id, fields)
                )
                ids.append(self._load(got.fetchone()))
        return ids

    def count(self, conn: _Conn, fresh: Sequence[tuple[Record, int]], conf: NDArray[np.float32]) -> None:
        """Add the records just stored (in the caller's transaction) to their descriptions' counts and
        confidence bounds; this replica's copy follows at once."""
        if not fresh:
            return
        descs = np.asarray([d for _, d in fresh], dtype=np.int64)
        order = np.argsort(descs, kind="stable")
        ids, starts, counts = np.unique(descs[order], return_index=True, return_counts=True)
        lo = np.minimum.reduceat(conf[order], starts, axis=0)
        hi = np.maximum.reduceat(conf[order], starts, axis=0)

        def literal(row: NDArray[np.float32]) -> str:
            return "{" + ",".join(f"{x:.9g}" for x in row) + "}"

        conn.execute(
            _COUNT, (ids.tolist(), counts.tolist(), [literal(r) for r in lo], [literal(r) for r in hi])
        )
        got = conn.execute(f"{_STATS} WHERE desc_id = ANY(%s)", (ids.tolist(),)).fetchall()
        self._put_stats(got)

    def poll(self, conn: _Conn) -> None:
        """Read what changed since the poll before the last one (all of it after forget_watermarks)."""
        rows = conn.execute(f"{_SELECT} WHERE desc_id > %s", (self._desc_marks[0],)).fetchall()
        for row in rows:
            if int(row[0]) not in self.entries:
                self._load(row)
        top = max([self._desc_marks[1], *(int(r[0]) for r in rows)])
        self._desc_marks = (self._desc_marks[1], top)
        stats = conn.execute(f"{_STATS} WHERE seq > %s", (self._stats_marks[0],)).fetchall()
        for desc_id in {int(r[0]) for r in stats} - set(self.entries):  # committed after the first read
            self._load(conn.execute(f"{_SELECT} WHERE desc_id = %s", (desc_id,)).fetchone())
        self._put_stats(stats)
        top = max([self._stats_marks[1], *(int(r[4]) for r in stats)])
        self._stats_marks = (self._stats_marks[1], top)

    def _load(self, row: tuple[Any, ...] | None) -> int:
        if row is None:
            raise RuntimeError("a description the index refers to is missing")
        desc_id, schema_id, fields, text, blob = row
        entry = DescriptionEntry(int(desc_id), schema_id, tuple(fields.split(",")), text)
        vec = np.frombuffer(bytes(blob), dtype=np.float32)
        self.check_dim(len(vec))
        self._put(entry, vec)
        return entry.desc_id

    def _put(self, entry: DescriptionEntry, vec: NDArray[np.float32]) -> None:
        self._grow(entry.desc_id + 1)
        idx = self.indices(entry)
        self.vectors[entry.desc_id] = vec
        self.fields[entry.desc_id, : len(idx)] = idx
        self.schema_codes[entry.desc_id] = self._codes[entry.schema_id]
        self.entries[entry.desc_id] = entry
        self.size = max(self.size, entry.desc_id + 1)

    def _put_stats(self, rows: Sequence[tuple[Any, ...]]) -> None:
        for desc_id, n, cmin, cmax, _ in rows:
            self._grow(int(desc_id) + 1)
            self.counts[desc_id] = int(n)
            self.cmin[desc_id] = cmin
            self.cmax[desc_id] = cmax

    def _grow(self, size: int) -> None:
        have, dim = self.vectors.shape
        if size <= have:
            return
        grow = max(size, 2 * have, 256) - have
        self.vectors = np.concatenate([self.vectors, np.zeros((grow, dim), dtype=np.float32)])
        self.fields = np.concatenate([self.fields, np.zeros((grow, self.width), dtype=self._dtype)])
        self.schema_codes = np.concatenate([self.schema_codes, np.full(grow, -1, dtype=np.int16)])
        self.counts = np.concatenate([self.counts, np.zeros(grow, dtype=np.int64)])
        # No records yet: bounds that every record's confidence will replace (as RecordStore starts them).
        self.cmin = np.concatenate([self.cmin, np.full((grow, self.width), 2.0, dtype=np.float32)])
        self.cmax = np.concatenate([self.cmax, np.full((grow, self.width), -2.0, dtype=np.float32)])
