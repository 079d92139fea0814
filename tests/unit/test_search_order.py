"""The search's fast paths (descriptions ordered only as far as read, cameras and time windows read whole)
return exactly the hits of the full ranking, recomputed here one record at a time on seeded indexes; and
"unknown" is a filter value like the others, on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from rxd.retrieval import store as store_module
from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.engine import (
    Hit,
    IndexStore,
    Query,
    RetrievalEngine,
    SlotTest,
    rank_descriptions,
    slot_tests,
)
from rxd.retrieval.parse import SlotSets
from rxd.retrieval.pg_store import PgStore
from rxd.retrieval.probability import value_priors
from rxd.retrieval.store import RecordStore
from semcom.errors import InvalidInput
from semcom.record import UNKNOWN, Record
from semcom.schema import Schema, SchemaRegistry
from tests.fixtures.postgres import pg_dsn, pg_server  # noqa: F401  (fixtures)
from tests.fixtures.records import BagOfWordsEncoder

REGISTRY = SchemaRegistry.builtin()
PERSON1, PERSON2 = REGISTRY.get("person/1"), REGISTRY.get("person/2")
CONFIDENCES = [0.25, 0.5, 0.6, 0.75, 0.9, 0.97]
DAY_S = 86_400.0
SPAN_S = 10 * DAY_S


class Recording:
    """The store, keeping each search's arguments: the reference ranks with the same slots and vector."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self.calls: list[tuple[Query, SlotSets, NDArray[np.float32]]] = []

    def search(self, q: Query, slots: SlotSets, vector: NDArray[np.float32]) -> list[Hit]:
        self.calls.append((q, slots, vector))
        return self.store.search(q, slots, vector)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _records(n: int, seed: int) -> list[Record]:
    """person/1 and person/2 records on 12 cameras over ten days; a tenth of the fields unknown; person/2
    with a confidence on most known fields. Record ids are unique, so no two hits tie all the way down."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        schema = PERSON2 if rng.random() < 0.5 else PERSON1
        fields = {
            f.name: UNKNOWN if rng.random() < 0.1 else rng.choice(f.values[1 : 1 + rng.choice([2, 3, 5])])
            for f in schema.fields
        }
        conf = {}
        if schema is PERSON2:
            conf = {
                k: rng.choice(CONFIDENCES) for k, v in fields.items() if v != UNKNOWN and rng.random() < 0.8
            }
        stream = f"cam{rng.randrange(12)}"
        time_s = round(rng.uniform(0.0, SPAN_S), 1)
        out.append(Record(schema.id, stream, i % 4096, 1000 + i, time_s, rng.randrange(20), fields, conf))
    return out


def _queries(seed: int) -> list[Query]:
    rng = random.Random(seed)
    texts = ["a man in a red shirt", "woman with black trousers", "person in white shoes", "a man walking"]
    out: list[Query] = []
    for i in range(48):
        schema = (PERSON1, PERSON2)[i % 2]
        if i % 3 == 0:
            q = Query(text=rng.choice(texts), schema_id=schema.id)
        else:
            names = rng.sample(schema.field_names, rng.randint(1, 3))
            filters = {n: rng.sample(schema.field(n).values[:4], rng.randint(1, 2)) for n in names}
            q = Query(filters=filters, schema_id=schema.id)
        t0 = rng.uniform(0.0, SPAN_S - DAY_S)
        q = replace(q, top_k=rng.choice([1, 5, 10, 40]), min_probability=rng.choice([0.0, 0.0, 0.3, 0.6]))
        kind = i % 4
        if kind == 1:
            q = replace(
                q, stream_id=f"cam{rng.randrange(12)}", t0_s=t0, t1_s=t0 + rng.choice([3600.0, DAY_S])
            )
        elif kind == 2:
            q = replace(q, t0_s=t0, t1_s=t0 + DAY_S, location_ids=tuple(rng.sample(range(20), 5)))
        elif kind == 3 and i % 8 == 3:
            q = replace(q, stream_id=f"cam{rng.randrange(12)}")
        out.append(q)
    return out


def _old_factors(
    schema: Schema, tests: Sequence[SlotTest], fields: NDArray[Any], counts: NDArray[np.int64], usable: Any
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The slot factors per description as written before the search was optimised (an unknown field
    satisfies a slot that asks for "unknown")."""
    a = np.ones((len(fields), len(tests)))
    b = np.zeros((len(fields), len(tests)))
    for j, t in enumerate(tests):
        n_values = len(schema.fields[t.column].values)
        prior = value_priors(fields[usable, t.column], counts[usable], n_values)
        in_set = np.zeros(n_values, dtype=np.bool_)
        in_set[list(t.values)] = True
        p_set = float(prior[in_set].sum())
        v = fields[:, t.column].astype(np.int64)
        p_v = prior[np.minimum(v, n_values - 1)]
        rest = np.maximum(1.0 - p_v, 1e-12)
        matched = in_set[np.minimum(v, n_values - 1)] & (v > 0)
        r_in = (p_set - p_v) / rest
        r_out = p_set / rest
        a[:, j] = np.where(v == 0, 1.0 if in_set[0] else p_set, np.where(matched, r_in, r_out))
        b[:, j] = np.where(v == 0, 0.0, np.where(matched, 1.0 - r_in, -r_out))
    return a, b


def _reference(
    engine: RetrievalEngine, records: Sequence[Record], q: Query, slots: SlotSets, vector: NDArray[np.float32]
) -> list[tuple[str, int, float, float]]:
    """(stream, record id, probability, similarity) of the top_k, every record scored, every description
    ranked with a full sort: the policy as RecordStore implemented it before."""
    schema = REGISTRY.get(q.schema_id)
    tests = slot_tests(schema, slots)
    entries = engine.store.descriptions()
    size = max(e.desc_id for e in entries) + 1
    fields = np.zeros((size, 6), dtype=np.uint8)
    vectors = np.zeros((size, BagOfWordsEncoder.dim), dtype=np.float32)
    usable = np.zeros(size, dtype=np.bool_)
    for e in entries:
        fields[e.desc_id] = [
            f.index(v) for f, v in zip(REGISTRY.get(e.schema_id).fields, e.values, strict=True)
        ]
        vectors[e.desc_id] = engine.store.description_vector(e.desc_id)
        usable[e.desc_id] = e.schema_id == q.schema_id
    desc_of = np.asarray([engine.memory.peek(REGISTRY.get(r.schema_id), r.fields)[0] for r in records])  # type: ignore[index]
    conf = np.asarray(
        [[r.confidence.get(f.name, np.nan) for f in REGISTRY.get(r.schema_id).fields] for r in records],
        dtype=np.float32,
    )
    eff = np.where(np.isnan(conf), np.float32(1.0), conf)
    counts = np.bincount(desc_of, minlength=size)
    cmin, cmax = np.full((size, 6), 2.0, np.float32), np.full((size, 6), -2.0, np.float32)
    np.minimum.at(cmin, desc_of, eff)
    np.maximum.at(cmax, desc_of, eff)
    a, b = _old_factors(schema, tests, fields, counts, usable)
    cols = [t.column for t in tests]
    bound = np.clip(np.prod(np.maximum(a + b * cmin[:, cols], a + b * cmax[:, cols]), axis=1), 0.0, 1.0)
    sims = np.einsum("ij,j->i", vectors, vector)
    ranks = rank_descriptions(fields, usable, tests, sims)
    eligible = usable & (bound >= q.min_probability)
    visit = np.lexsort((ranks, -bound))
    visit = visit[eligible[visit]]
    position = np.full(size, -1)
    position[visit] = np.arange(len(visit))
    time_s = np.asarray([r.time_s for r in records])
    keep = eligible[desc_of]
    keep &= np.asarray([not q.stream_id or r.stream_id == q.stream_id for r in records])
    keep &= np.asarray([not q.location_ids or r.location_id in q.location_ids for r in records])
    keep &= (time_s >= q.t0_s) if q.t0_s else True
    keep &= (time_s <= q.t1_s) if q.t1_s else True
    rows = np.flatnonzero(keep)
    d = desc_of[rows]
    p = np.prod(np.clip(a[d] + b[d] * eff[rows][:, cols], 0.0, 1.0), axis=1)
    rows, p, d = rows[p >= q.min_probability], p[p >= q.min_probability], d[p >= q.min_probability]
    ids = np.asarray([records[i].record_id for i in rows])
    top = np.lexsort((rows, -ids, -time_s[rows], position[d], -p))[: q.top_k]
    return [(records[rows[i]].stream_id, int(ids[i]), round(float(p[i]), 4), float(sims[d[i]])) for i in top]


Opener = Callable[[], IndexStore]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "sqlite":
        # A small regroup threshold: searches read grouped rows and a tail of rows added since.
        return lambda: RecordStore(tmp_path / "index.db", REGISTRY, regroup_after=300)
    dsn = request.getfixturevalue("pg_dsn")
    return lambda: PgStore(dsn, REGISTRY, refresh_s=0.0)


@pytest.mark.parametrize(("seed", "window_max"), [(0, store_module.WINDOW_MAX), (1, 0)])
def test_hits_equal_the_full_ranking(
    opener: Opener, seed: int, window_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seed 0 and 1, 2,400 records: every hit of 48 queries (text, filters, "unknown" among them, cameras,
    time windows, places, min_probability, top_k 1..40) equals the reference's, in order, probability and
    similarity; with seed 1 SQLite walks the descriptions even for a camera or a time window."""
    monkeypatch.setattr(store_module, "WINDOW_MAX", window_max)
    store = Recording(opener())
    engine = RetrievalEngine(REGISTRY, store, TemplateDescriber(), BagOfWordsEncoder())
    records = _records(2400, seed)
    for i in range(0, len(records), 400):
        engine.ingest(records[i : i + 400])
        engine.query(Query(text="a man", schema_id=PERSON1.id))  # groups what is stored so far
    for q in _queries(seed):
        hits = engine.query(q).hits
        _, slots, vector = store.calls[-1]
        got = [(h.record.stream_id, h.record.record_id, h.probability, h.score) for h in hits]
        assert got == _reference(engine, records, q, slots, vector), q
    store.close()


def test_unknown_is_a_filter_value(opener: Opener) -> None:
    """A filter may ask for "unknown": those records match it (probability 1), a sent value contradicts it;
    with other values (OR) it accepts both; a value outside the vocabulary is refused, naming "unknown"."""
    store = opener()
    engine = RetrievalEngine(REGISTRY, store, TemplateDescriber(), BagOfWordsEncoder())
    records = [
        Record("person/2", "cam1", 1, 1, 1.0, 0, {"sleeve": "long"}, {"sleeve": 0.9}),
        Record("person/2", "cam1", 2, 2, 2.0, 0, {"sleeve": UNKNOWN, "gender": "male"}),
        Record("person/2", "cam1", 3, 3, 3.0, 0, {"sleeve": "short"}, {"sleeve": 0.5}),
        Record("person/2", "cam1", 4, 4, 4.0, 0, {"gender": "female"}),
    ]
    engine.ingest(records)
    q = Query(filters={"sleeve": UNKNOWN}, schema_id=PERSON2.id, top_k=4)
    hits = engine.query(q).hits
    assert {h.record.record_id for h in hits[:2]} == {2, 4}  # both unknown (then by similarity)
    assert all(h.matched_slots == ("sleeve",) and h.unknown_slots == () for h in hits[:2])
    assert [h.probability for h in hits] == [1.0, 1.0, 0.0, 0.0]
    assert all(h.contradicted_slots == ("sleeve",) for h in hits[2:])
    assert {h.record.record_id for h in engine.query(replace(q, min_probability=0.5)).hits} == {2, 4}
    either = engine.query(replace(q, filters={"sleeve": ["long", UNKNOWN]})).hits
    assert {h.record.record_id for h in either[:2]} == {2, 4} and either[2].record.record_id == 1
    assert [h.probability for h in either][:3] == [1.0, 1.0, 0.9]
    both = engine.query(Query(filters={"sleeve": "unknown", "gender": "male"}, schema_id=PERSON2.id)).hits
    assert both[0].record.record_id == 2 and both[0].matched_slots == ("gender", "sleeve")
    with pytest.raises(
        InvalidInput, match="'unknwn' is not in its vocabulary; allowed: unknown, long, short"
    ):
        engine.query(Query(filters={"sleeve": "unknwn"}, schema_id=PERSON2.id))
    store.close()
