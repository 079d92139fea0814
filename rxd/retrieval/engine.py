"""The retrieval engine: records in (describe, embed, store) and queries out (parse, filter, tier, rank)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry

from .describe import Describer, DescriptionMemory, RecordChecker
from .embed import TextEncoder
from .parse import EmbeddedParser, ParsedQuery, QueryParser, SlotSets, attribute_help

MAX_TOP_K = 1000
_QUERY_CACHE = 1024
# A query vector for slots with several values averages the descriptions of at most this many combinations.
_MAX_COMBINATIONS = 16


@dataclass(frozen=True, kw_only=True)
class Query:
    """A search, from the service down to the store: free text and/or field filters (filters win over the
    text), plus hard filters; `min_probability` (0..1) drops hits less likely to satisfy every slot. A
    filter lists the values it accepts (OR): a sequence, or one string in which
    "|" separates values ("red|blue"). A time bound of 0 is open; empty `location_ids` and `stream_id`
    constrain nothing. The engine checks it (`top_k` included) once, in `RetrievalEngine.query`.
    """

    text: str = ""
    filters: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    schema_id: str
    stream_id: str = ""
    location_ids: Sequence[int] = ()
    t0_s: float = 0.0
    t1_s: float = 0.0
    top_k: int = 10
    min_probability: float = 0.0


@dataclass(frozen=True)
class SlotScore:
    """Why a hit scored what it did on one slot: the value sent (or "unknown"), the confidence carried
    with it (None: none stated, taken as certain), and the probability that the slot holds."""

    name: str
    value: str
    confidence: float | None
    probability: float


@dataclass(frozen=True)
class Hit:
    """One ranked record, from the store up to the service. `score` is the cosine similarity of its
    description to the query; `probability` that the record satisfies every queried slot (1 when the query
    has none), explained per slot by `slot_scores` (see rxd.retrieval.probability).

    Slots are the attributes the query asked about: `matched_slots` agree, `unknown_slots` were not seen by
    the transmitter (neither a match nor a contradiction), `contradicted_slots` disagree.
    """

    record: Record
    description: str
    score: float
    matched_slots: tuple[str, ...]
    unknown_slots: tuple[str, ...]
    contradicted_slots: tuple[str, ...] = ()
    probability: float = 1.0
    slot_scores: tuple[SlotScore, ...] = ()


@dataclass(frozen=True)
class QueryResult:
    hits: list[Hit]
    slots: SlotSets
    note: str


@dataclass(frozen=True)
class DescriptionEntry:
    """One distinct description: the field values (schema order) it was generated from, and its text."""

    desc_id: int
    schema_id: str
    values: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class StoredRecord:
    record: Record
    desc_id: int
    description: str


class IndexStore(Protocol):
    """What the engine needs from an index.

    `RecordStore` (one SQLite file, numpy in memory) is the embedded default; a networked vector database
    can implement this for deployments that outgrow one machine, running the filtered, tiered search itself.
    """

    def add(self, records: Sequence[Record], desc_ids: Sequence[int]) -> int:
        """desc_ids[i] is the description generated from records[i]'s field values. A record equal to one
        stored under its (stream_id, record_id) is stored once; a different one is refused, not stored:
        returns how many were refused."""

    def add_descriptions(self, entries: Sequence[DescriptionEntry], vectors: NDArray[np.float32]) -> None: ...
    def has_description(self, desc_id: int) -> bool: ...
    def get_description(self, desc_id: int) -> str | None: ...
    def description_vector(self, desc_id: int) -> NDArray[np.float32] | None: ...
    def descriptions(self) -> list[DescriptionEntry]: ...
    def get(self, stream_id: str, record_id: int) -> StoredRecord | None: ...
    def search(self, q: Query, slots: SlotSets, vector: NDArray[np.float32]) -> list[Hit]:
        """The `q.top_k` best records passing `q`'s hard filters, tiered by `slots`, ranked by `vector`."""

    def count(self) -> int: ...
    def description_count(self) -> int: ...
    def close(self) -> None: ...


class SlotTest(NamedTuple):
    """One queried slot as indices: the field's position in schema order and the accepted values' indices."""

    name: str
    column: int
    values: tuple[int, ...]


def slot_tests(schema: Schema, slots: SlotSets) -> list[SlotTest]:
    names = schema.field_names
    return [
        SlotTest(k, names.index(k), tuple(schema.field(k).index(v) for v in vs)) for k, vs in slots.items()
    ]


def rank_descriptions(
    fields: NDArray[Any], usable: NDArray[np.bool_], tests: Sequence[SlotTest], sims: NDArray[np.float32]
) -> NDArray[np.int64]:
    """The ranking policy, per description: its rank (0 best, equal keys share one; unusable: len(fields)).

    `fields` holds each description's value indices (0 = unknown); a slot matches any of its values
    ("unknown" among them when asked for; an unknown field is otherwise neither match nor contradiction).
    Key: tier (all slots match < none contradicted < some contradicted), then more matched slots, then
    higher similarity. Tiers depend only on field values, which a description shares with its records, so a
    store ranks descriptions, not records.
    """
    matched = np.zeros(len(fields), dtype=np.int64)
    unknown = np.zeros(len(fields), dtype=np.int64)
    for t in tests:
        hit = np.isin(fields[:, t.column], t.values)
        matched += hit
        unknown += (fields[:, t.column] == 0) & ~hit
    n = len(tests)
    tier = np.where(matched == n, 0, np.where(matched + unknown == n, 1, 2))
    # Similarity lies in [-1, 1], so 1 - sim < 4 never crosses into the next (tier, matched) step.
    key = (tier * (n + 1) + (n - matched)) * 4.0 + (1.0 - sims.astype(np.float64))
    key[~usable] = np.inf
    ranks = np.searchsorted(np.sort(key), key)
    ranks[~usable] = len(fields)
    return ranks


def slot_outcome(
    values: NDArray[Any], tests: Sequence[SlotTest]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(matched, unknown, contradicted) slot names for one description's value indices."""
    matched = tuple(t.name for t in tests if values[t.column] in t.values)
    unknown = tuple(t.name for t in tests if values[t.column] == 0 and t.name not in matched)
    return matched, unknown, tuple(t.name for t in tests if t.name not in matched and t.name not in unknown)


def ranked_hit(
    stored: StoredRecord,
    similarity: float,
    desc_values: NDArray[Any],
    tests: Sequence[SlotTest],
    probability: float,
    slot_probabilities: NDArray[np.floating],
) -> Hit:
    """A store's hit: the record, its description's similarity, its slot outcome, the probability that it
    satisfies every queried slot and that probability slot by slot (`slot_probabilities`, one per test)."""
    scores = tuple(
        SlotScore(
            t.name,
            stored.record.fields[t.name],
            stored.record.confidence.get(t.name),
            round(float(slot_probabilities[j]), 4),
        )
        for j, t in enumerate(tests)
    )
    return Hit(
        stored.record,
        stored.description,
        similarity,
        *slot_outcome(desc_values, tests),
        probability=round(probability, 4),
        slot_scores=scores,
    )


class RetrievalEngine:
    """Generating agent, functional head and index behind one synchronous API (run on a worker thread).

    Ranking is hybrid. Hard filters (time range, locations, stream) drop records, and so does
    `min_probability`. The rest are ordered by the probability that the record satisfies every queried slot,
    from the confidences carried with it (see rxd.retrieval.probability). Ties, and every record whose
    transmitter stated no confidence (taken at its word), keep today's tiers: (0) every slot matches; (1) no
    slot contradicted, some unknown - more matched slots first; (2) at least one slot contradicted - kept,
    last, more matched slots first, so a query always returns its closest records and says which slots
    disagree. Then cosine similarity between the query (its text; the description of its slots when there
    is no text) and each record's description, then the most recent first.
    """

    def __init__(
        self,
        schemas: SchemaRegistry,
        store: IndexStore,
        describer: Describer,
        embedder: TextEncoder,
        *,
        parser: QueryParser | None = None,
        max_top_k: int = MAX_TOP_K,
    ) -> None:
        self.schemas = schemas
        self.max_top_k = max_top_k
        self.parser: QueryParser = parser or EmbeddedParser()
        self.store = store
        self.describer = describer
        self.embedder = embedder
        self.memory = DescriptionMemory(describer)
        self._checker = RecordChecker(schemas)
        for entry in store.descriptions():
            self.memory.remember(entry.schema_id, entry.values, entry.desc_id, entry.text)
        self._ingest_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._vectors: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._timing = {"describe_s": 0.0, "embed_s": 0.0, "store_s": 0.0}
        self.embed_calls = 0
        self.embedded_texts = 0

    def ingest(self, records: Sequence[Record]) -> int:
        """Describe (through the memory), embed only descriptions never seen, store all records or none;
        returns how many were refused as conflicting with a stored record of the same id (see IndexStore)."""
        if not records:
            return 0
        with self._ingest_lock:
            t0 = time.perf_counter()
            desc_ids: list[int] = []
            new: dict[int, DescriptionEntry] = {}
            for rec in records:
                schema, values = self._checker.check(rec)
                desc_id, text = self.memory.get_values(schema, values)
                desc_ids.append(desc_id)
                if desc_id not in new and not self.store.has_description(desc_id):
                    new[desc_id] = DescriptionEntry(desc_id, schema.id, values, text)
            t1 = time.perf_counter()
            if new:
                entries = list(new.values())
                self.store.add_descriptions(entries, self._encode([e.text for e in entries]))
            t2 = time.perf_counter()
            conflicts = self.store.add(records, desc_ids)
            t3 = time.perf_counter()
            self._timing["describe_s"] += t1 - t0
            self._timing["embed_s"] += t2 - t1
            self._timing["store_s"] += t3 - t2
            return conflicts

    def _encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        vectors = self.embedder.encode(texts)
        self.embed_calls += 1
        self.embedded_texts += len(texts)
        return vectors

    def query(self, q: Query, parsed: ParsedQuery | None = None) -> QueryResult:
        """Ranked hits for `q`; InvalidInput for an empty query, a bad filter or a bad top_k.

        `parsed` is `q.text` already parsed (by a caller that awaited a model parser on its event loop);
        without it the engine's parser runs here.
        """
        schema = self.schemas.get(q.schema_id)
        if not 1 <= q.top_k <= self.max_top_k:
            raise InvalidInput(f"top_k must be 1..{self.max_top_k}, got {q.top_k}")
        if q.t0_s and q.t1_s and q.t1_s < q.t0_s:
            raise InvalidInput(f"time range ends ({q.t1_s}) before it starts ({q.t0_s})")
        if not 0.0 <= q.min_probability <= 1.0:  # NaN fails too
            raise InvalidInput(f"min_probability must be 0..1, got {q.min_probability}")
        if any(loc < 0 for loc in q.location_ids):
            raise InvalidInput(f"location ids must be >= 0, got {list(q.location_ids)}")
        filters = _filters(schema, q.filters)
        text = q.text.strip()
        if not text and not filters:
            raise InvalidInput(f"empty query: give text or field filters; ask about {attribute_help(schema)}")
        if not text:
            parsed = ParsedQuery({})
        elif parsed is None:
            parsed = self.parser.parse(text, schema)
        order = {name: i for i, name in enumerate(schema.field_names)}
        slots = dict(sorted({**parsed.slots, **filters}.items(), key=lambda kv: order[kv[0]]))
        understood = bool(parsed.slots) and not parsed.note
        hits = self.store.search(q, slots, self._query_vector(schema, text, slots, understood=understood))
        overridden = [
            f"filter {k}={'|'.join(v)} overrides {'|'.join(parsed.slots[k])!r} from the text"
            for k, v in filters.items()
            if set(parsed.slots.get(k, v)) != set(v)
        ]
        return QueryResult(hits, slots, "; ".join([parsed.note, *overridden] if parsed.note else overridden))

    def _query_vector(
        self, schema: Schema, text: str, slots: SlotSets, *, understood: bool = False
    ) -> NDArray[np.float32]:
        """The vector that orders hits within a tier.

        A query understood whole means its slots: the (mean, unit-normed) vector of the descriptions of its
        value combinations, stored ones reused so that no model runs when records with those fields exist.
        Otherwise the text is embedded (cached); a query with filters only is embedded as the descriptions
        its slots generate.
        """
        if text and not understood:
            return self._text_vector(text)
        names = list(slots)
        combos = itertools.islice(itertools.product(*slots.values()), _MAX_COMBINATIONS)
        vectors = [self._slots_vector(schema, dict(zip(names, combo, strict=True))) for combo in combos]
        if len(vectors) == 1:
            return vectors[0]
        mean = np.mean(vectors, axis=0)
        return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12), dtype=np.float32)

    def _slots_vector(self, schema: Schema, slots: Mapping[str, str]) -> NDArray[np.float32]:
        known = self.memory.peek(schema, slots)
        stored = self.store.description_vector(known[0]) if known is not None else None
        return stored if stored is not None else self._text_vector(self.describer.describe(schema, slots))

    def _text_vector(self, text: str) -> NDArray[np.float32]:
        with self._cache_lock:
            cached = self._vectors.get(text)
            if cached is not None:
                self._vectors.move_to_end(text)
                return cached
        vector = np.asarray(self._encode([text])[0], dtype=np.float32)
        with self._cache_lock:
            self._vectors[text] = vector
            if len(self._vectors) > _QUERY_CACHE:
                self._vectors.popitem(last=False)
        return vector

    def get(self, stream_id: str, record_id: int) -> StoredRecord | None:
        return self.store.get(stream_id, record_id)

    def count(self) -> int:
        return self.store.count()

    def stats(self) -> dict[str, Any]:
        """Counters for logs and metrics: sizes, the memory's hit rate, model calls and time per stage."""
        return {
            "records": self.store.count(),
            "descriptions": self.store.description_count(),
            "memory_hits": self.memory.hits,
            "memory_misses": self.memory.misses,
            "memory_hit_rate": self.memory.hit_rate,
            "embed_calls": self.embed_calls,
            "embedded_texts": self.embedded_texts,
            **self._timing,
            **self.parser.stats(),
        }


def _filters(schema: Schema, filters: Mapping[str, str | Sequence[str]]) -> SlotSets:
    """Validated filters as slot sets; InvalidInput names an unknown field or value and what is allowed.

    "unknown" is a value like the others: it asks for records whose field the transmitter could not read.
    """
    out: SlotSets = {}
    for name, raw in filters.items():
        spec = schema.field(name)
        given = raw.split("|") if isinstance(raw, str) else list(raw)
        values = [v.strip().lower() for v in given if isinstance(v, str) and v.strip()]
        if len(values) != len(given) or not values:
            raise InvalidInput(f"filter {name!r}: give one or more values; allowed: {', '.join(spec.values)}")
        for value in values:
            spec.index(value)
        out[name] = tuple(v for v in spec.values if v in values)
    return out
