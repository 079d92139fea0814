"""The index: records and descriptions in one SQLite file, searched as in-memory numpy columns."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from semcom.record import Record
from semcom.schema import SchemaRegistry

from .describe import RecordChecker
from .engine import DescriptionEntry, Hit, IndexStore, Query, StoredRecord, ranked_hit, slot_tests
from .parse import SlotSets
from .probability import effective
from .ranking import DescriptionOrder

__all__ = ["DescriptionEntry", "Hit", "IndexStore", "Query", "RecordStore", "StoredRecord"]

_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS descriptions (
    desc_id INTEGER PRIMARY KEY, schema_id TEXT NOT NULL, fields TEXT NOT NULL, text TEXT NOT NULL,
    embedding BLOB NOT NULL, UNIQUE (schema_id, fields)
);
CREATE TABLE IF NOT EXISTS records (
    row INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, record_id INTEGER NOT NULL, schema_id TEXT NOT NULL,
    track_id INTEGER NOT NULL, time_s REAL NOT NULL, location_id INTEGER NOT NULL, fields TEXT NOT NULL,
    desc_id INTEGER NOT NULL, confidence TEXT NOT NULL DEFAULT '', UNIQUE (stream_id, record_id)
);
"""
# Indexes written before confidences were kept lack the column: added on open, empty (none stated).
_ADD_CONFIDENCE = "ALTER TABLE records ADD COLUMN confidence TEXT NOT NULL DEFAULT ''"
_INSERT = "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# What is loaded.
_COLUMNS_SQL = "row, stream_id, record_id, track_id, time_s, location_id, desc_id, confidence"
_IN_CHUNK = 900  # SQLite's default limit is 999 host parameters per statement
_LOAD_CHUNK = 1 << 16
_COLUMN_TYPES: dict[str, type[np.generic]] = {
    "stream": np.int32,
    "record_id": np.int64,
    "track_id": np.int64,
    "time_s": np.float64,
    "location_id": np.uint32,
    "desc_id": np.int32,
}
_LOCATION_TABLE_MAX = 1 << 20  # location filters up to this id use a lookup table, not np.isin
# A camera or time window holding at most this many records is scored whole (see _Groups.window).
WINDOW_MAX = 50_000


class _Row(NamedTuple):
    """One row of the records table."""

    row: int
    stream_id: str
    record_id: int
    schema_id: str
    track_id: int
    time_s: float
    location_id: int
    fields: str  # values in schema order, e.g. "male,white,long,black,unknown,black"
    desc_id: int
    confidence: str  # in schema order, empty where none is stated: "0.9167,0.5455,,,,"; "" for none at all

    def loaded(self) -> tuple[Any, ...]:
        """The columns kept in memory, as `_COLUMNS_SQL` selects them."""
        return (
            self.row,
            self.stream_id,
            self.record_id,
            self.track_id,
            self.time_s,
            self.location_id,
            self.desc_id,
            self.confidence,
        )


def _confidence_text(record: Record, names: Sequence[str]) -> str:
    if not record.confidence:
        return ""
    return ",".join(f"{record.confidence[n]:.6g}" if n in record.confidence else "" for n in names)


def _confidence_rows(texts: Sequence[str], width: int) -> NDArray[np.float32]:
    """Confidence texts as a (records x width) array, NaN where none is stated."""
    out = np.full((len(texts), width), np.nan, dtype=np.float32)
    for i, text in enumerate(texts):
        if text:
            for j, part in enumerate(text.split(",")):
                if part:
                    out[i, j] = float(part)
    return out


class _Columns:
    """Growable numpy columns, one row per record; doubling keeps appends amortised O(1) per record.
    `conf` holds each record's confidence per schema column (NaN: none stated)."""

    def __init__(self, width: int) -> None:
        self.n = 0
        self.data: dict[str, NDArray[Any]] = {k: np.zeros(0, dtype=t) for k, t in _COLUMN_TYPES.items()}
        self.data["conf"] = np.zeros((0, width), dtype=np.float32)

    def col(self, name: str) -> NDArray[Any]:
        return self.data[name][: self.n]

    def put(self, rows: NDArray[np.int64], values: dict[str, Sequence[Any] | NDArray[Any]]) -> None:
        top = int(rows.max()) + 1
        if top > len(self.data["desc_id"]):
            cap = max(top, 2 * len(self.data["desc_id"]), 1024)
            for name, old in self.data.items():
                self.data[name] = np.full((cap, *old.shape[1:]), np.nan if name == "conf" else 0, old.dtype)
                self.data[name][: self.n] = old[: self.n]
        for name, vals in values.items():
            self.data[name][rows] = vals
        self.n = max(self.n, top)


def _passing(c: _Columns, rows: NDArray[np.int64], spec: Query, stream: int | None) -> NDArray[np.int64]:
    """The subset of `rows` that pass the stream, location and time filters."""
    keep = np.ones(len(rows), dtype=np.bool_)
    if stream is not None:
        keep &= c.data["stream"][rows] == stream
    if spec.location_ids:
        loc = c.data["location_id"][rows]
        top = max(spec.location_ids)
        if top < _LOCATION_TABLE_MAX:
            # A lookup table is several times faster than np.isin.
            table = np.zeros(top + 2, dtype=np.bool_)
            table[list(spec.location_ids)] = True
            keep &= table[np.minimum(loc, top + 1)]
        else:
            keep &= np.isin(loc, np.asarray(spec.location_ids, dtype=np.int64))
    if spec.t0_s:
        keep &= c.data["time_s"][rows] >= spec.t0_s
    if spec.t1_s:
        keep &= c.data["time_s"][rows] <= spec.t1_s
    return rows[keep]


class _Groups:
    """Rows grouped by description, most recent first within each (CSR), rebuilt lazily; also by stream
    then time, and by time, so that a camera or a time window is read directly.

    Rows added since the last build form a tail that every search scans in full; a build (one sort of
    all rows) happens when the tail outgrows max(min_tail, a tenth of the grouped rows), or after a
    retransmission changed a grouped row.
    """

    def __init__(self, min_tail: int) -> None:
        self.min_tail = min_tail
        self.order = np.zeros(0, dtype=np.int64)
        self.starts = np.zeros(1, dtype=np.int64)
        self.by_stream = np.zeros(0, dtype=np.int32)  # rows by (stream, time)
        self.stream_starts = np.zeros(1, dtype=np.int64)
        self.stream_times = np.zeros(0, dtype=np.float64)
        self.by_time = np.zeros(0, dtype=np.int32)
        self.times = np.zeros(0, dtype=np.float64)
        self.built = 0
        self.stale = False

    def refresh(self, c: _Columns, n_desc: int, n_streams: int) -> None:
        if not self.stale and c.n - self.built <= max(self.min_tail, self.built // 10):
            return
        desc, time_s, stream = c.col("desc_id"), c.col("time_s"), c.col("stream")
        self.order = np.lexsort((-c.col("record_id"), -time_s, desc)).astype(np.int64)
        self.starts = np.zeros(n_desc + 1, dtype=np.int64)
        np.cumsum(np.bincount(desc, minlength=n_desc), out=self.starts[1:])
        # int32 rows: an index of 2^31 records is far beyond what one process holds in memory.
        self.by_stream = np.lexsort((time_s, stream)).astype(np.int32)
        self.stream_times = time_s[self.by_stream]
        self.stream_starts = np.zeros(n_streams + 1, dtype=np.int64)
        np.cumsum(np.bincount(stream, minlength=n_streams), out=self.stream_starts[1:])
        self.by_time = np.argsort(time_s, kind="stable").astype(np.int32)
        self.times = time_s[self.by_time]
        self.built, self.stale = c.n, False

    def window(self, spec: Query, stream: int | None) -> NDArray[np.int64] | None:
        """The grouped rows of the query's camera (and time window), or of its time window, when they are
        at most WINDOW_MAX: a superset of those passing the filters, read by binary search. None when the
        query has neither filter or the window holds more."""
        if stream is not None:
            lo = hi = 0
            if stream < len(self.stream_starts) - 1:  # a stream first seen after the build: tail only
                lo, hi = int(self.stream_starts[stream]), int(self.stream_starts[stream + 1])
            rows, times = self.by_stream, self.stream_times
        elif spec.t0_s or spec.t1_s:
            lo, hi, rows, times = 0, len(self.times), self.by_time, self.times
        else:
            return None
        if spec.t0_s:
            lo += int(np.searchsorted(times[lo:hi], spec.t0_s, side="left"))
        if spec.t1_s:
            hi = lo + int(np.searchsorted(times[lo:hi], spec.t1_s, side="right"))
        return rows[lo:hi].astype(np.int64) if hi - lo <= WINDOW_MAX else None

    def counts(self, descs: NDArray[np.int64]) -> NDArray[np.int64]:
        inside = np.minimum(descs, len(self.starts) - 2)
        return np.where(descs < len(self.starts) - 1, self.starts[inside + 1] - self.starts[inside], 0)

    def rows(self, descs: NDArray[np.int64]) -> NDArray[np.int64]:
        """Grouped rows of `descs`, concatenated."""
        lengths = self.counts(descs)
        firsts = self.starts[np.minimum(descs, len(self.starts) - 1)]
        shift = np.repeat(firsts - (np.cumsum(lengths) - lengths), lengths)
        return np.asarray(self.order[shift + np.arange(int(lengths.sum()))], dtype=np.int64)


def _best(
    c: _Columns, order: DescriptionOrder, rows: NDArray[np.int64], p: NDArray[np.float64], spec: Query
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The top_k of `rows` (probabilities `p`) at or above min_probability: by probability, the place of
    their description in the visit order, the most recent, the highest id, then the first stored."""
    keep = p >= spec.min_probability
    rows, p = rows[keep], p[keep]
    desc = c.data["desc_id"][rows]
    keys = (rows, -c.data["record_id"][rows], -c.data["time_s"][rows], *order.position_key(desc), -p)
    top = np.lexsort(keys)[: spec.top_k]
    return rows[top], p[top]


def _top_rows(
    c: _Columns,
    groups: _Groups,
    order: DescriptionOrder,
    probability: Callable[[NDArray[np.int64]], NDArray[np.float64]],
    spec: Query,
    stream: int | None,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The `top_k` most probable records passing the filters, with their probabilities; ties by the
    description's bound, then today's rank, then the most recent (then highest id).

    A camera or time window small enough (see _Groups.window) is scored whole. Otherwise descriptions are
    visited in order, a few at a time, until top_k records are at least as probable as the next
    description's bound: a query touches the records it returns (and those filtered out on the way), not
    all of them. Records not yet grouped (the tail) are scored after the walk, only those whose
    description's bound reaches the walk's k-th probability (no other can enter the top k).
    """
    desc_of = c.data["desc_id"]
    tail = np.arange(groups.built, c.n, dtype=np.int64)
    window = groups.window(spec, stream)
    if window is not None:
        rows = np.concatenate([window, tail])
        rows = _passing(c, rows[order.eligible[desc_of[rows]]], spec, stream)
        return _best(c, order, rows, probability(rows), spec)
    pool, probs = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.float64)]
    pos, factor = 0, 1
    while True:
        p = np.concatenate(probs)
        kept = p[p >= spec.min_probability]
        if not order.covers(pos):
            break
        if len(kept) >= spec.top_k:
            kth = -np.partition(-kept, spec.top_k - 1)[spec.top_k - 1]
            if kth >= order.bound[order.order[pos]]:
                break
        want = (int(order.cum[pos - 1]) if pos else 0) + max(spec.top_k - len(kept), 1) * factor
        end = order.chunk(pos, want)
        rows = _passing(c, groups.rows(order.order[pos:end]), spec, stream)
        pool.append(rows)
        probs.append(probability(rows))
        pos, factor = end, factor * 4
    floor = -np.partition(-kept, spec.top_k - 1)[spec.top_k - 1] if len(kept) >= spec.top_k else 0.0
    tail_desc = desc_of[tail]
    tail = _passing(c, tail[order.eligible[tail_desc] & (order.bound[tail_desc] >= floor)], spec, stream)
    pool.append(tail)
    probs.append(probability(tail))
    return _best(c, order, np.concatenate(pool), np.concatenate(probs), spec)


class RecordStore:
    """Records + descriptions (text and embedding) in one SQLite file; everything is loaded into numpy
    columns on open, so a restart re-embeds nothing and a query over a million records is vectorised.

    Adding is idempotent on (stream_id, record_id): a retransmitted record equal to the stored one is taken
    and stored once; a different record under a stored id is refused (counted in `conflicts`, the stored
    one kept), since txd never gives an id twice. Commits use WAL with synchronous=FULL: a record is on
    stable storage before `add` returns, so before rxd acknowledges it, power loss included.
    A record's field values are its description's (checked on add); its confidences (as carried, e.g. by
    person/2 frames) are kept beside it and rank it (see rxd.retrieval.probability). Searches scan at most
    `regroup_after` (or a tenth of all) records in full;
    the rest are visited by description, best first. Safe to share between threads.
    """

    def __init__(self, path: Path | str, schemas: SchemaRegistry, *, regroup_after: int = 50_000) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._schemas = schemas
        self._schema_list = list(schemas)
        self._schema_codes = {s.id: i for i, s in enumerate(self._schema_list)}
        self._field_names = {s.id: s.field_names for s in self._schema_list}
        self._width = max(len(s.fields) for s in self._schema_list)
        big = max(len(f.values) for s in self._schema_list for f in s.fields) > 256
        self._field_dtype = np.uint16 if big else np.uint8
        self._cols = _Columns(self._width)
        self._groups = _Groups(regroup_after)
        self._streams: list[str] = []
        self._stream_codes: dict[str, int] = {}
        self._desc: dict[int, DescriptionEntry] = {}
        # Per description id: embedding, field value indices and schema code (-1: id unused).
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._desc_fields = np.zeros((0, self._width), dtype=self._field_dtype)
        self._desc_schema = np.zeros(0, dtype=np.int16)
        # Per description: its records, and the least and greatest effective confidence per column.
        self._desc_counts = np.zeros(0, dtype=np.int64)
        self._desc_size = 0  # one past the highest description id in use (the arrays have room beyond)
        self._desc_cmin = np.ones((0, self._width), dtype=np.float32)
        self._desc_cmax = np.ones((0, self._width), dtype=np.float32)
        self._checker = RecordChecker(schemas)
        self._lock = threading.Lock()
        self.conflicts = 0  # records refused: another record is stored under their (stream_id, record_id)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock:
            self._db.executescript(_SQL)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
            if "confidence" not in columns:
                with self._db:
                    self._db.execute(_ADD_CONFIDENCE)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL, not NORMAL: NORMAL in WAL mode may lose the last commits on power loss, and those are
            # records already acknowledged to txd, which will never send them again.
            self._db.execute("PRAGMA synchronous=FULL")
            self._load()

    # -- descriptions -------------------------------------------------------------------------------------

    def add_descriptions(self, entries: Sequence[DescriptionEntry], vectors: NDArray[np.float32]) -> None:
        """Keep new descriptions with their embeddings (row i of `vectors` belongs to entries[i])."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(entries):
            raise ValueError(f"need one vector per description, got {vectors.shape} for {len(entries)}")
        indices = [self._entry_indices(e) for e in entries]
        rows = [
            (e.desc_id, e.schema_id, ",".join(e.values), e.text, v.tobytes())
            for e, v in zip(entries, vectors, strict=True)
        ]
        with self._lock:
            if entries:
                self._check_dim(vectors.shape[1])
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO descriptions VALUES (?, ?, ?, ?, ?)", rows)
            for entry, vec, idx in zip(entries, vectors, indices, strict=True):
                self._put_description(entry, vec, idx)

    def _check_dim(self, dim: int) -> None:
        known = self._vectors.shape[1]
        if known == 0:
            self._vectors = np.zeros((0, dim), dtype=np.float32)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
        elif dim != known:
            raise InvalidInput(f"index {self.path} holds {known}-d embeddings; got {dim}-d ones")

    def _entry_indices(self, entry: DescriptionEntry) -> list[int]:
        schema = self._schemas.get(entry.schema_id)
        if len(entry.values) != len(schema.fields):
            raise InvalidInput(f"description {entry.desc_id}: {len(entry.values)} values for {schema.id}")
        return [f.index(v) for f, v in zip(schema.fields, entry.values, strict=True)]

    def _put_description(self, entry: DescriptionEntry, vec: NDArray[np.float32], idx: list[int]) -> None:
        size, dim = self._vectors.shape
        if entry.desc_id >= size:
            grow = max(entry.desc_id + 1, 2 * size, 256) - size
            self._vectors = np.concatenate([self._vectors, np.zeros((grow, dim), dtype=np.float32)])
            more = np.zeros((grow, self._width), dtype=self._field_dtype)
            self._desc_fields = np.concatenate([self._desc_fields, more])
            self._desc_schema = np.concatenate([self._desc_schema, np.full(grow, -1, dtype=np.int16)])
            self._desc_counts = np.concatenate([self._desc_counts, np.zeros(grow, dtype=np.int64)])
            high = np.full((grow, self._width), 2.0, dtype=np.float32)
            self._desc_cmin = np.concatenate([self._desc_cmin, high])
            self._desc_cmax = np.concatenate([self._desc_cmax, -high])
        self._vectors[entry.desc_id] = vec
        self._desc_fields[entry.desc_id, : len(idx)] = idx
        self._desc_schema[entry.desc_id] = self._schema_codes[entry.schema_id]
        self._desc[entry.desc_id] = entry
        self._desc_size = max(self._desc_size, entry.desc_id + 1)

    def has_description(self, desc_id: int) -> bool:
        return desc_id in self._desc

    def get_description(self, desc_id: int) -> str | None:
        entry = self._desc.get(desc_id)
        return None if entry is None else entry.text

    def description_vector(self, desc_id: int) -> NDArray[np.float32] | None:
        with self._lock:
            return self._vectors[desc_id].copy() if desc_id in self._desc else None

    def descriptions(self) -> list[DescriptionEntry]:
        with self._lock:
            return sorted(self._desc.values(), key=lambda e: e.desc_id)

    def embeddings(self) -> NDArray[np.float32]:
        """The embedding matrix of the distinct descriptions, row = description id (unused ids are zero)."""
        with self._lock:
            return self._vectors.copy()

    def description_count(self) -> int:
        return len(self._desc)

    # -- records ------------------------------------------------------------------------------------------

    def add(self, records: Sequence[Record], desc_ids: Sequence[int]) -> int:
        """Store records with the ids of their (added) descriptions; InvalidInput rejects the whole batch.

        Returns how many were refused because a different record holds their id (the rest are stored)."""
        if len(records) != len(desc_ids):
            raise ValueError(f"{len(records)} records but {len(desc_ids)} description ids")
        # The last occurrence wins within one batch, as it does across batches.
        latest = {(r.stream_id, r.record_id): (r, d) for r, d in zip(records, desc_ids, strict=True)}
        for rec, desc_id in latest.values():
            self._validate(rec, desc_id)
        with self._lock:
            existing = self._existing_rows(list(latest))
            table: list[_Row] = []
            conflicts = 0
            fresh = self._cols.n  # new records take the next rows
            for key, (r, d) in latest.items():
                row = existing.get(key)
                if row is not None:
                    conflicts += not self._same(row, r, d)
                    continue  # an identical retransmission is stored already
                row, fresh = fresh, fresh + 1
                fields = ",".join(self._desc[d].values)
                conf = _confidence_text(r, self._field_names[r.schema_id])
                table.append(
                    _Row(row, *key, r.schema_id, r.track_id, r.time_s, r.location_id, fields, d, conf)
                )
            with self._db:
                self._db.executemany(_INSERT, table)
            self._put_rows([t.loaded() for t in table])
            self.conflicts += conflicts
            return conflicts

    def _same(self, row: int, rec: Record, desc_id: int) -> bool:
        """Whether the stored row holds this record (its description fixes schema and field values)."""
        c = self._cols.data
        return bool(
            c["desc_id"][row] == desc_id
            and c["track_id"][row] == rec.track_id
            and c["time_s"][row] == rec.time_s
            and c["location_id"][row] == rec.location_id
        )

    def _validate(self, rec: Record, desc_id: int) -> None:
        """Check one record and that `desc_id` was generated from its field values."""
        entry = self._desc.get(desc_id)
        if entry is None:
            raise ValueError(f"record {rec.record_id}: description {desc_id} was never added")
        schema, values = self._checker.check(rec)
        if (schema.id, values) != (entry.schema_id, entry.values):
            raise ValueError(f"record {rec.record_id}: description {desc_id} is of other field values")

    def _existing_rows(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        by_stream: dict[str, list[int]] = {}
        for stream_id, record_id in keys:
            # A stream never seen holds nothing to replace: no lookups, which keeps bulk loads fast.
            if stream_id in self._stream_codes:
                by_stream.setdefault(stream_id, []).append(record_id)
        found: dict[tuple[str, int], int] = {}
        for stream_id, ids in by_stream.items():
            for i in range(0, len(ids), _IN_CHUNK):
                chunk = ids[i : i + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT record_id, row FROM records WHERE stream_id = ? AND record_id IN ({marks})"
                for record_id, row in self._db.execute(sql, (stream_id, *chunk)):
                    found[(stream_id, int(record_id))] = int(row)
        return found

    def _stream_code(self, stream_id: str) -> int:
        code = self._stream_codes.get(stream_id)
        if code is None:
            code = self._stream_codes[stream_id] = len(self._streams)
            self._streams.append(stream_id)
        return code

    def _put_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Copy rows shaped like `_COLUMNS_SQL` into the columns (the fields live in the descriptions)."""
        if not rows:
            return
        row, stream, record_id, track_id, time_s, location_id, desc_id, conf = zip(*rows, strict=True)
        codes = {s: self._stream_code(s) for s in set(stream)}
        conf_rows = _confidence_rows(conf, self._width)
        values: dict[str, Sequence[Any] | NDArray[Any]] = {
            "stream": [codes[s] for s in stream],
            "record_id": record_id,
            "track_id": track_id,
            "time_s": time_s,
            "location_id": location_id,
            "desc_id": desc_id,
        }
        values["conf"] = conf_rows
        self._cols.put(np.asarray(row, dtype=np.int64), values)
        descs = np.asarray(desc_id, dtype=np.int64)
        np.add.at(self._desc_counts, descs, 1)
        eff = effective(conf_rows)
        np.minimum.at(self._desc_cmin, descs, eff)
        np.maximum.at(self._desc_cmax, descs, eff)

    def get(self, stream_id: str, record_id: int) -> StoredRecord | None:
        with self._lock:
            found = self._db.execute(
                "SELECT row FROM records WHERE stream_id = ? AND record_id = ?", (stream_id, record_id)
            ).fetchone()
            return None if found is None else self._stored(int(found[0]))

    def _stored(self, row: int) -> StoredRecord:
        d = self._cols.data
        entry = self._desc[int(d["desc_id"][row])]
        names = self._field_names[entry.schema_id]
        conf = d["conf"][row]
        rec = Record(
            schema_id=entry.schema_id,
            stream_id=self._streams[int(d["stream"][row])],
            track_id=int(d["track_id"][row]),
            record_id=int(d["record_id"][row]),
            time_s=float(d["time_s"][row]),
            location_id=int(d["location_id"][row]),
            fields=dict(zip(names, entry.values, strict=True)),
            confidence={n: round(float(c), 4) for n, c in zip(names, conf, strict=False) if not np.isnan(c)},
        )
        return StoredRecord(rec, entry.desc_id, entry.text)

    def count(self) -> int:
        return self._cols.n

    # -- search -------------------------------------------------------------------------------------------

    def search(self, q: Query, slots: SlotSets, vector: NDArray[np.float32]) -> list[Hit]:
        """Hard filters; then the probability of satisfying every slot, tiers (all slots match, no slot
        contradicted, others), similarity, recency (see RetrievalEngine)."""
        schema = self._schemas.get(q.schema_id)
        tests = slot_tests(schema, slots)
        with self._lock:
            stream = self._stream_codes.get(q.stream_id, -1) if q.stream_id else None
            if self._cols.n == 0 or stream == -1:
                return []
            n = self._desc_size  # rank only the ids in use
            order = DescriptionOrder(
                schema,
                tests,
                fields=self._desc_fields[:n],
                usable=self._desc_schema[:n] == self._schema_codes[q.schema_id],
                counts=self._desc_counts[:n],
                cmin=self._desc_cmin[:n],
                cmax=self._desc_cmax[:n],
                vectors=self._vectors[:n],
                vector=vector,
                min_probability=q.min_probability,
            )
            factors = order.factors
            self._groups.refresh(self._cols, len(self._desc_schema), len(self._streams))
            desc_of, conf = self._cols.data["desc_id"], self._cols.data["conf"]
            columns = np.asarray(factors.columns, dtype=np.int64)

            def per_slot(rows: NDArray[np.int64]) -> NDArray[np.float64]:
                # Only the queried columns are gathered: the tail can hold 10^5 rows.
                return factors.rows(desc_of[rows], conf[rows[:, None], columns[None, :]])

            def probability(rows: NDArray[np.int64]) -> NDArray[np.float64]:
                if not len(columns):  # nothing asked: every record satisfies the empty conjunction
                    return np.ones(len(rows), dtype=np.float64)
                out: NDArray[np.float64] = np.prod(per_slot(rows), axis=1)
                return out

            rows, probs = _top_rows(self._cols, self._groups, order, probability, q, stream)
            slot_p = per_slot(rows)
            descs = desc_of[rows].astype(np.int64)
            sims = order.similarity(descs)
            return [
                ranked_hit(
                    self._stored(int(row)),
                    float(sims[i]),
                    self._desc_fields[descs[i]],
                    tests,
                    float(probs[i]),
                    slot_p[i],
                )
                for i, row in enumerate(rows)
            ]

    # -- lifecycle ----------------------------------------------------------------------------------------

    def _load(self) -> None:
        for desc_id, schema_id, fields, text, blob in self._db.execute("SELECT * FROM descriptions"):
            vec = np.frombuffer(blob, dtype=np.float32)
            self._check_dim(vec.shape[0])
            entry = DescriptionEntry(int(desc_id), schema_id, tuple(fields.split(",")), text)
            self._put_description(entry, vec, self._entry_indices(entry))
        cur = self._db.execute(f"SELECT {_COLUMNS_SQL} FROM records ORDER BY row")
        while batch := cur.fetchmany(_LOAD_CHUNK):
            if batch[0][0] != self._cols.n or batch[-1][0] != self._cols.n + len(batch) - 1:
                raise InvalidInput(f"index {self.path}: record rows are not dense near row {self._cols.n}")
            self._put_rows(batch)
        self._db.commit()  # _check_dim's row in meta: leave no write transaction open

    def close(self) -> None:
        with self._lock:
            self._db.close()
