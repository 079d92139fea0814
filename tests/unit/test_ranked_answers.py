"""Ranked answers: hits ordered by the probability of satisfying every slot from carried confidences,
explained per slot, `min_probability` trading recall for precision, exact against a brute-force ranking,
and confidences kept across a restart (also in an index written before they were kept)."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.engine import Query, RetrievalEngine
from rxd.retrieval.store import RecordStore
from semcom.errors import InvalidInput
from semcom.record import UNKNOWN, Record
from semcom.schema import SchemaRegistry
from tests.fixtures.records import BagOfWordsEncoder

REGISTRY = SchemaRegistry.builtin()
PERSON2 = REGISTRY.get("person/2")


def rec(record_id: int, confidence: dict[str, float] | None = None, **fields: str) -> Record:
    return Record("person/2", "cam1", record_id, record_id, float(record_id), 1, fields, confidence or {})


def _engine(path: Path | str = ":memory:", regroup_after: int = 50_000) -> RetrievalEngine:
    store = RecordStore(path, REGISTRY, regroup_after=regroup_after)
    return RetrievalEngine(REGISTRY, store, TemplateDescriber(), BagOfWordsEncoder())


RECORDS = [
    rec(1, {"upper_color": 0.85}, upper_color="red"),
    rec(2, {"upper_color": 0.30}, upper_color="red"),
    rec(3, upper_color=UNKNOWN),
    rec(4, {"upper_color": 0.30}, upper_color="blue"),
    rec(5, {"upper_color": 0.95}, upper_color="blue"),
]


def test_hits_are_ordered_by_probability_and_explained_per_slot() -> None:
    engine = _engine()
    engine.ingest(RECORDS)
    hits = engine.query(Query(filters={"upper_color": "red"}, schema_id=PERSON2.id, top_k=5)).hits
    assert [h.record.record_id for h in hits][:2] == [1, 2]
    assert hits[0].probability == pytest.approx(0.85)
    assert hits[1].probability == pytest.approx(0.30)
    probs = [h.probability for h in hits]
    assert probs == sorted(probs, reverse=True)
    # Blue at 0.30 leaves 0.70 to the other ten colours: more likely red than blue at 0.95 is.
    assert [h.record.record_id for h in hits][2:].index(4) < [h.record.record_id for h in hits][2:].index(5)
    (score,) = hits[0].slot_scores
    assert (score.name, score.value, score.confidence, score.probability) == (
        "upper_color",
        "red",
        0.85,
        0.85,
    )
    unknown = next(h for h in hits if h.record.record_id == 3).slot_scores[0]
    assert unknown.value == UNKNOWN and unknown.confidence is None
    # The index's own counts, add-one smoothed: red 2+1 of 4 known + 11.
    assert unknown.probability == pytest.approx(3 / 15, abs=1e-4)


def test_min_probability_drops_the_unlikely() -> None:
    engine = _engine()
    engine.ingest(RECORDS)
    q = Query(filters={"upper_color": "red"}, schema_id=PERSON2.id, top_k=5, min_probability=0.5)
    assert [h.record.record_id for h in engine.query(q).hits] == [1]
    with pytest.raises(InvalidInput, match=r"min_probability must be 0\.\.1"):
        engine.query(dataclasses.replace(q, min_probability=float("nan")))


def test_records_without_confidence_keep_todays_tiers() -> None:
    engine = _engine()
    engine.ingest(
        [
            Record("person/1", "cam1", 1, 1, 1.0, 1, {"upper_color": "blue"}),
            Record("person/1", "cam1", 2, 2, 2.0, 1, {"upper_color": "red"}),
            Record("person/1", "cam1", 3, 3, 3.0, 1, {}),
        ]
    )
    hits = engine.query(Query(filters={"upper_color": "red"}, schema_id="person/1", top_k=3)).hits
    assert [h.record.record_id for h in hits] == [2, 3, 1]
    assert [h.probability for h in hits][0::2] == [1.0, 0.0]


def _random_records(n: int, seed: int) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        fields = {f.name: rng.choice(f.values) for f in PERSON2.fields[:3]}
        conf = {k: rng.choice([0.6, 0.75, 0.9, 0.25, 0.55]) for k, v in fields.items() if v != UNKNOWN}
        if rng.random() < 0.2:
            conf = {}
        out.append(rec(i, conf, **fields))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_equals_a_brute_force_ranking(seed: int) -> None:
    """Seeded random indexes (600 records, a grouped part and a tail): the top 20 probabilities of the
    walk equal the 20 largest of all records' probabilities, computed one record at a time."""
    engine = _engine(regroup_after=100)
    records = _random_records(600, seed)
    for i in range(0, 600, 50):
        engine.ingest(records[i : i + 50])
    filters = {"gender": "female", "upper_color": ["red", "blue"]}
    result = engine.query(Query(filters=filters, schema_id=PERSON2.id, top_k=20))
    every = engine.query(Query(filters=filters, schema_id=PERSON2.id, top_k=600)).hits
    assert len(every) == 600
    brute = sorted((h.probability for h in every), reverse=True)[:20]
    assert [h.probability for h in result.hits] == pytest.approx(brute)
    for h in every[:50]:
        assert h.probability == pytest.approx(
            float(np.prod([s.probability for s in h.slot_scores])), abs=2e-4
        )


def test_confidences_survive_a_restart_and_an_old_index_opens(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    engine = _engine(path)
    engine.ingest(RECORDS)
    engine.store.close()
    again = _engine(path)
    stored = again.get("cam1", 1)
    assert stored is not None and stored.record.confidence == {"upper_color": 0.85}
    again.store.close()
    # An index written before confidences were kept: the column is added, its records state none.
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE records DROP COLUMN confidence")
    old = _engine(path)
    stored = old.get("cam1", 1)
    assert stored is not None and stored.record.confidence == {}
    old.ingest([rec(9, {"upper_color": 0.6}, upper_color="red")])
    assert old.store.count() == 6
    old.store.close()


def test_cli_prints_the_probability_per_slot_and_each_fields_confidence() -> None:
    from semcom import client
    from semcom.cli import build_parser
    from semcom.pb.v1 import receiver_pb2

    record = rec(1, {"upper_color": 0.85}, upper_color="red").to_pb()
    hit = receiver_pb2.Hit(
        record=record,
        probability=0.85,
        slot_scores=[
            receiver_pb2.SlotScore(name="upper_color", value="red", confidence=0.85, probability=0.85)
        ],
    )
    line = client.format_hit(hit)
    assert line.startswith("[p 0.850 = upper_color 0.85 | sim 0.000]") and "upper_color=red (0.85)" in line
    argv = ["query", "red shirt", "--min-probability", "0.7", "--schema-id", "person/2"]
    args = build_parser().parse_args(argv)
    assert args.min_probability == 0.7 and args.schema_id == "person/2"
