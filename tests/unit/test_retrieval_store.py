"""The persistent index: reopening without re-embedding, idempotent re-adds, get, and bad input; the
contract tests run on SQLite and on PostgreSQL (a throwaway cluster, tests/fixtures/postgres.py)."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.engine import Query, RetrievalEngine
from rxd.retrieval.pg_store import PgStore
from rxd.retrieval.store import DescriptionEntry, RecordStore
from semcom.errors import InvalidInput
from semcom.record import UNKNOWN, Record
from semcom.schema import SchemaRegistry
from tests.fixtures.postgres import pg_dsn, pg_server  # noqa: F401  (fixtures)
from tests.fixtures.records import BagOfWordsEncoder, person

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")

RECORDS = [
    person(1, gender="male", upper_color="white", sleeve="long", lower_color="black", shoe_color="black"),
    person(2, gender="female", upper_color="red"),
    person(3, gender="male", upper_color="white", sleeve="long", lower_color="black", shoe_color="black"),
    person(4, stream_id="cam2", gender="male", upper_color="blue", lower_length="short"),
    person(5),
]


Opener = Callable[[], RecordStore | PgStore]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the index of this test (again and again: the same file or database), on each backend."""
    if request.param == "sqlite":
        return lambda: RecordStore(tmp_path / "index.db", REGISTRY)
    dsn = request.getfixturevalue("pg_dsn")
    return lambda: PgStore(dsn, REGISTRY, refresh_s=0.0)


def _on(opener: Opener, encoder: BagOfWordsEncoder) -> tuple[RecordStore | PgStore, RetrievalEngine]:
    store = opener()
    return store, RetrievalEngine(REGISTRY, store, TemplateDescriber(), encoder)


def _engine(path: Path, encoder: BagOfWordsEncoder) -> tuple[RecordStore, RetrievalEngine]:
    store = RecordStore(path, REGISTRY)
    return store, RetrievalEngine(REGISTRY, store, TemplateDescriber(), encoder)


def test_reopened_index_leaves_the_file_writable_by_others(tmp_path: Path) -> None:
    """Opening an index with descriptions keeps no write transaction open: another connection to the file
    (rxd's site counters live there too) writes at once instead of failing with "database is locked"."""
    store, engine = _engine(tmp_path / "index.db", BagOfWordsEncoder())
    engine.ingest(RECORDS)
    store.close()
    again = RecordStore(tmp_path / "index.db", REGISTRY)
    other = sqlite3.connect(tmp_path / "index.db", timeout=0)
    with other:
        other.execute("CREATE TABLE IF NOT EXISTS beside (x INTEGER)")
    other.close()
    assert again.count() == 5
    again.close()


def test_reopen_restores_everything_without_re_embedding(tmp_path: Path) -> None:
    encoder = BagOfWordsEncoder()
    store, engine = _engine(tmp_path / "index.db", encoder)
    engine.ingest(RECORDS)
    assert encoder.calls == 1 and len(encoder.texts) == 4  # records 1 and 3 share a description
    before = engine.query(Query(text="man in a white shirt", schema_id=PERSON.id, top_k=5))
    vectors = store.embeddings()
    store.close()

    encoder2 = BagOfWordsEncoder()
    store2, engine2 = _engine(tmp_path / "index.db", encoder2)
    assert store2.count() == 5 and store2.description_count() == 4
    np.testing.assert_array_equal(store2.embeddings(), vectors)
    engine2.ingest(RECORDS)  # a retransmission after restart: no new inference at all
    assert encoder2.calls == 0 and engine2.memory.misses == 0 and engine2.memory.hit_rate == 1.0
    engine2.ingest(
        [
            person(
                6, gender="male", upper_color="white", sleeve="long", lower_color="black", shoe_color="black"
            )
        ]
    )
    assert encoder2.calls == 0 and store2.count() == 6
    engine2.ingest([person(7, gender="female", upper_color="green")])
    assert encoder2.texts == ["A female wearing a green shirt."]
    new_id = store2.descriptions()[-1].desc_id
    assert new_id == 4  # ids continue after the restored ones
    after = engine2.query(Query(text="man in a white shirt", schema_id=PERSON.id, top_k=5))
    assert [h.record.record_id for h in after.hits][1:] == [h.record.record_id for h in before.hits][:4]
    assert after.hits[0].record.record_id == 6  # same description as 3 and 1, but the most recent
    store2.close()


def test_re_adding_is_idempotent_and_a_different_record_under_a_stored_id_is_refused(opener: Opener) -> None:
    encoder = BagOfWordsEncoder()
    store, engine = _on(opener, encoder)
    assert engine.ingest(RECORDS) == 0
    assert engine.ingest(RECORDS) == 0  # retransmissions of identical records: taken, stored once
    assert engine.ingest(RECORDS[:2] + RECORDS[:2]) == 0  # duplicates inside one burst too
    assert store.count() == 5 and store.conflicts == 0
    # Another record under a stored id (a transmitter that reused its ids): refused and counted, not stored.
    changed = person(2, gender="female", upper_color="green")
    assert engine.ingest([changed, person(9)]) == 1
    assert store.count() == 6 and store.conflicts == 1
    got = store.get("cam1", 2)
    assert got is not None and got.record.fields["upper_color"] == RECORDS[1].fields["upper_color"] != "green"
    store.close()
    reopened = opener()
    again = reopened.get("cam1", 2)
    assert reopened.count() == 6 and again is not None and again.record == got.record
    if isinstance(reopened, RecordStore):
        (rows,) = sqlite3.connect(reopened.path).execute("SELECT COUNT(*) FROM records").fetchone()
        assert rows == 6
    reopened.close()


def test_get(opener: Opener) -> None:
    store, engine = _on(opener, BagOfWordsEncoder())
    engine.ingest(RECORDS)
    got = store.get("cam2", 4)
    assert got is not None
    assert got.record == Record(
        schema_id=PERSON.id,
        stream_id="cam2",
        track_id=4,
        record_id=4,
        time_s=4.0,
        location_id=4,
        fields={
            "gender": "male",
            "upper_color": "blue",
            "sleeve": UNKNOWN,
            "lower_color": UNKNOWN,
            "lower_length": "short",
            "shoe_color": UNKNOWN,
        },
    )
    assert got.description == "A male wearing a blue shirt and short pants."
    assert store.get("cam1", 4) is None and store.get("nowhere", 1) is None
    assert engine.get("cam2", 4) == got and engine.count() == 5
    store.close()


def test_in_memory_store_and_empty_search() -> None:
    store = RecordStore(":memory:", REGISTRY)
    q = Query(text="man", schema_id=PERSON.id)
    assert store.count() == 0 and store.search(q, {}, np.zeros(4, dtype=np.float32)) == []
    store.close()


def test_bad_records_reject_the_whole_batch(opener: Opener) -> None:
    store, engine = _on(opener, BagOfWordsEncoder())
    bad = [
        person(10, gender="male"),
        Record(PERSON.id, "cam1", 1, 11, 1.0, 999, {}),  # location outside 8 bits
    ]
    with pytest.raises(InvalidInput, match="location_id 999"):
        engine.ingest(bad)
    with pytest.raises(InvalidInput, match="mauve"):
        engine.ingest([person(12, upper_color="mauve")])
    with pytest.raises(InvalidInput, match="unknown schema"):
        engine.ingest([Record("boat/1", "cam1", 1, 13, 1.0, 0, {})])
    with pytest.raises(InvalidInput, match="finite"):
        engine.ingest([person(14, time_s=float("nan"))])
    assert store.count() == 0
    store.close()


def test_store_checks_description_ids_and_dimensions(opener: Opener) -> None:
    store = opener()
    with pytest.raises(ValueError, match="never added"):
        store.add([person(1)], [0])
    entry = DescriptionEntry(0, PERSON.id, (UNKNOWN,) * 6, "A person.")
    store.add_descriptions([entry], np.full((1, 4), 0.5, dtype=np.float32))
    with pytest.raises(InvalidInput, match="4-d"):
        store.add_descriptions([entry], np.ones((1, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="one vector per description"):
        store.add_descriptions([entry], np.ones((2, 4), dtype=np.float32))
    store.add([person(1)], [0])
    assert store.get_description(0) == "A person." and store.get_description(1) is None
    vec = store.description_vector(0)
    assert vec is not None and vec.shape == (4,) and store.description_vector(9) is None
    store.close()


def _random_people(n: int, seed: int) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fields = {f.name: rng.choice(f.values[:4]) for f in PERSON.fields}  # few values: many ties
        out.append(
            Record(
                PERSON.id,
                f"cam{rng.randrange(3)}",
                i % 4096,
                i,
                float(rng.randrange(500)),
                rng.randrange(8),
                fields,
            )
        )
    return out


def test_grouped_search_equals_full_scan(tmp_path: Path) -> None:
    """Searching by description groups (with a tail, after retransmissions) returns what a full scan does."""
    records = _random_people(3000, seed=5)
    engines = []
    for name, regroup_after in (("grouped", 0), ("scanned", 10**9)):
        store = RecordStore(tmp_path / f"{name}.db", REGISTRY, regroup_after=regroup_after)
        engine = RetrievalEngine(REGISTRY, store, TemplateDescriber(), BagOfWordsEncoder())
        engine.ingest(records[:2000])
        engines.append(engine)
    rng = random.Random(6)
    for step in range(120):
        if step in (20, 60):  # new records (a tail) and changed records under stored ids (refused)
            more = records[2000:2500] if step == 20 else records[2500:]
            changed = [
                dataclasses.replace(r, time_s=r.time_s + 1000.0) for r in rng.sample(records[:2000], 50)
            ]
            for engine in engines:
                engine.ingest(more + changed)
        fields = rng.sample(PERSON.field_names, rng.randint(0, 3))
        query = Query(
            filters={f: rng.choice(PERSON.field(f).values[1:4]) for f in fields} if fields else {},
            text="" if fields else "a person",
            schema_id=PERSON.id,
            stream_id=rng.choice(["", "", "cam1", "cam9"]),
            location_ids=tuple(rng.sample(range(10), rng.randint(0, 3))),
            t0_s=rng.choice([0.0, 100.0, 350.0]),
            t1_s=rng.choice([0.0, 400.0]),
            top_k=rng.choice([1, 5, 50, 400]),
        )
        grouped, scanned = (e.query(query) for e in engines)
        key = [(h.record.stream_id, h.record.record_id) for h in grouped.hits]
        assert key == [(h.record.stream_id, h.record.record_id) for h in scanned.hits], query
