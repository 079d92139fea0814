"""The retrieval engine: tiers, unknowns, hard filters, recency, notes, and every query error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.engine import MAX_TOP_K, Query, RetrievalEngine
from rxd.retrieval.parse import SlotSets, slot_sets
from rxd.retrieval.store import RecordStore
from semcom.errors import InvalidInput
from semcom.record import Record
from semcom.schema import SchemaRegistry
from tests.fixtures.records import BagOfWordsEncoder, person

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
VEHICLE = REGISTRY.get("vehicle/1")
WHITE_MAN = {
    "gender": "male",
    "upper_color": "white",
    "sleeve": "long",
    "lower_color": "black",
    "shoe_color": "black",
}


@pytest.fixture
def engine(tmp_path: Path) -> RetrievalEngine:
    store = RecordStore(tmp_path / "index.db", REGISTRY)
    eng = RetrievalEngine(REGISTRY, store, TemplateDescriber(), BagOfWordsEncoder())
    eng.ingest(
        [
            person(1, time_s=100.0, **WHITE_MAN),  # exact, old
            person(2, time_s=200.0, **WHITE_MAN),  # exact, recent
            person(3, time_s=300.0, gender="male", upper_color="white"),  # others unknown
            person(4, time_s=400.0, **{**WHITE_MAN, "lower_color": "blue"}),  # contradicts pants
            person(5, time_s=500.0, gender="female", upper_color="red", shoe_color="white"),
            person(6, time_s=600.0, stream_id="cam2", **WHITE_MAN),
            person(7, time_s=700.0),  # nothing known
        ]
    )
    return eng


def _ids(engine: RetrievalEngine, **kw: object) -> list[int]:
    result = engine.query(Query(schema_id=PERSON.id, **kw))  # type: ignore[arg-type]
    return [h.record.record_id for h in result.hits]


def test_exact_then_unknown_then_contradicting(engine: RetrievalEngine) -> None:
    text = "the man wearing a white long-sleeved shirt, black pants and black shoes"
    result = engine.query(Query(text=text, schema_id=PERSON.id, top_k=10))
    assert result.slots == slot_sets(WHITE_MAN) and result.note == ""
    ids = [h.record.record_id for h in result.hits]
    assert ids[:3] == [6, 2, 1]  # identical descriptions: most recent first
    assert ids[3:5] == [3, 7]  # no contradiction: more matched slots first
    assert ids[5:] == [4, 5]  # contradicting: more matched slots first
    by_id = {h.record.record_id: h for h in result.hits}
    assert by_id[2].matched_slots == tuple(WHITE_MAN) and by_id[2].unknown_slots == ()
    assert by_id[3].matched_slots == ("gender", "upper_color")
    assert by_id[3].unknown_slots == ("sleeve", "lower_color", "shoe_color")
    assert by_id[4].contradicted_slots == ("lower_color",)
    assert by_id[2].description.startswith("A male wearing a white shirt with long sleeves")
    assert -1.0 <= by_id[2].score <= 1.0 + 1e-6 and by_id[2].score > by_id[5].score


def test_a_slot_with_several_values_matches_any_of_them(engine: RetrievalEngine) -> None:
    text = "a man or a woman in a red or white top"
    result = engine.query(Query(text=text, schema_id=PERSON.id, top_k=10))
    assert result.slots == {"gender": ("male", "female"), "upper_color": ("red", "white")}
    ids = [h.record.record_id for h in result.hits]
    # Every record with a known gender and top matches both slots; record 7 (nothing known) comes last.
    assert set(ids[:6]) == {1, 2, 3, 4, 5, 6} and ids[6:] == [7]
    assert all(h.matched_slots == ("gender", "upper_color") for h in result.hits[:6])
    # Filters list values the same way, as a sequence or joined by "|"; and they still win over the text.
    for colours in (["blue", "red"], "red|blue", ("RED", " blue")):
        result = engine.query(
            Query(text="a white top", filters={"upper_color": colours}, schema_id=PERSON.id)
        )
        assert result.slots == {"upper_color": ("blue", "red")}
        assert result.hits[0].record.record_id == 5
        assert result.note == "filter upper_color=blue|red overrides 'white' from the text"


def test_filter_values_are_checked(engine: RetrievalEngine) -> None:
    for bad, why in ((["red", "mauve"], "mauve"), ([], "one or more values"), ("red|", "one or more values")):
        with pytest.raises(InvalidInput, match=why):
            engine.query(Query(filters={"upper_color": bad}, schema_id=PERSON.id))


def test_several_values_average_their_descriptions_without_a_model(engine: RetrievalEngine) -> None:
    calls = engine.embed_calls
    # The query vector is the mean of the combinations' descriptions: a stored one (record 3's) costs no
    # model call, one never seen ("female, white shirt") is described and embedded once.
    slots: SlotSets = {"gender": ("male",), "upper_color": ("white",)}
    one = engine._query_vector(PERSON, "", slots)
    both = engine._query_vector(PERSON, "", {**slots, "gender": ("male", "female")})
    assert engine.embed_calls == calls + 1
    assert abs(float(np.linalg.norm(both)) - 1.0) < 1e-5 and float(one @ both) < 1.0 - 1e-4


def test_filters_win_over_text_and_need_no_inference(engine: RetrievalEngine) -> None:
    calls = engine.embed_calls
    result = engine.query(Query(filters=WHITE_MAN, schema_id=PERSON.id, top_k=3))
    # A description of these slots exists: its stored embedding is the query vector.
    assert engine.embed_calls == calls
    assert [h.record.record_id for h in result.hits] == [6, 2, 1]
    result = engine.query(Query(text="a woman", filters={"gender": "Male "}, schema_id=PERSON.id, top_k=1))
    assert result.slots == {"gender": ("male",)} and result.hits[0].record.fields["gender"] == "male"
    assert result.note == "filter gender=male overrides 'female' from the text"


def test_hard_filters(engine: RetrievalEngine) -> None:
    assert _ids(engine, filters=WHITE_MAN, stream_id="cam2") == [6]
    assert _ids(engine, filters=WHITE_MAN, stream_id="cam9") == []
    assert _ids(engine, filters=WHITE_MAN, t0_s=150.0, t1_s=650.0, top_k=3) == [6, 2, 3]
    assert _ids(engine, filters=WHITE_MAN, t1_s=150.0) == [1]
    assert _ids(engine, filters={"gender": "female"}, location_ids=[5]) == [5]
    # Locations are hard filters; slots only tier: an unknown gender, then a contradicting one.
    assert _ids(engine, filters={"gender": "female"}, location_ids=[0, 6]) == [7, 6]
    assert _ids(engine, filters={"gender": "female"}, location_ids=[0, 6], t0_s=650.0) == [7]


def test_unknown_is_neither_match_nor_contradiction(engine: RetrievalEngine) -> None:
    result = engine.query(Query(filters={"lower_length": "short"}, schema_id=PERSON.id, top_k=10))
    assert all(h.unknown_slots == ("lower_length",) for h in result.hits)
    assert all(h.contradicted_slots == () for h in result.hits)


def test_query_without_attributes_ranks_by_similarity_and_explains(engine: RetrievalEngine) -> None:
    result = engine.query(Query(text="someone carrying an umbrella", schema_id=PERSON.id, top_k=3))
    assert result.slots == {} and len(result.hits) == 3
    assert "not understood: carrying, umbrella" in result.note
    assert "ask about gender (male, female)" in result.note
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)


def test_text_understood_whole_uses_the_stored_vector(engine: RetrievalEngine) -> None:
    calls = engine.embed_calls
    text = "the man wearing a white long-sleeved shirt, black pants and black shoes"
    result = engine.query(Query(text=text, schema_id=PERSON.id, top_k=3))
    assert result.note == "" and engine.embed_calls == calls
    assert [h.record.record_id for h in result.hits] == [6, 2, 1]
    # Leftover words (or slots no record has exactly) need the model on the text.
    engine.query(Query(text="a man in a white shirt carrying a bag", schema_id=PERSON.id))
    assert engine.embed_calls == calls + 1
    engine.query(Query(text="a woman in green shoes", schema_id=PERSON.id))
    assert engine.embed_calls == calls + 2


def test_query_vectors_are_cached(engine: RetrievalEngine) -> None:
    engine.query(Query(text="a red shirt", schema_id=PERSON.id))
    calls = engine.embed_calls
    engine.query(Query(text="a red shirt", schema_id=PERSON.id))
    assert engine.embed_calls == calls


def test_stats(engine: RetrievalEngine) -> None:
    stats = engine.stats()
    assert stats["records"] == 7 and stats["descriptions"] == 5
    assert stats["memory_hits"] == 2 and stats["memory_misses"] == 5
    assert stats["embed_calls"] == 1 and stats["embedded_texts"] == 5
    assert stats["memory_hit_rate"] == pytest.approx(2 / 7)
    assert {"describe_s", "embed_s", "store_s"} <= stats.keys()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query(schema_id=PERSON.id), "empty query"),
        (Query(text="   ", schema_id=PERSON.id), "ask about gender"),
        (Query(filters={"hat": "red"}, schema_id=PERSON.id), "no field 'hat'.*fields: gender, upper_color"),
        (
            Query(filters={"upper_color": "mauve"}, schema_id=PERSON.id),
            "'mauve' is not in.*allowed: unknown, black",
        ),
        (
            Query(filters={"sleeve": "unknown|"}, schema_id=PERSON.id),
            "give one or more values; allowed: unknown",
        ),
        (Query(text="man", schema_id=PERSON.id, top_k=0), "top_k must be 1..1000"),
        (Query(text="man", schema_id=PERSON.id, top_k=MAX_TOP_K + 1), "top_k must be 1..1000"),
        (Query(text="man", schema_id=PERSON.id, top_k=-3), "top_k"),
        (Query(text="man", schema_id="boat/1"), "unknown schema 'boat/1'"),
        (Query(text="man", schema_id=PERSON.id, t0_s=10.0, t1_s=5.0), "time range"),
        (Query(text="man", schema_id=PERSON.id, location_ids=[-1]), "location ids"),
    ],
)
def test_errors(engine: RetrievalEngine, query: Query, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        engine.query(query)


def test_max_top_k_is_accepted(engine: RetrievalEngine) -> None:
    assert len(engine.query(Query(text="man", schema_id=PERSON.id, top_k=MAX_TOP_K)).hits) == 7


def test_schemas_do_not_mix(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "index.db", REGISTRY)
    engine = RetrievalEngine(REGISTRY, store, TemplateDescriber(), BagOfWordsEncoder())
    car = Record(VEHICLE.id, "road", 1, 1, 1.0, 0, {"type": "car", "color": "red"})
    engine.ingest([car, person(2, gender="male")])
    result = engine.query(Query(text="a red car", schema_id=VEHICLE.id))
    assert [h.record.record_id for h in result.hits] == [1]
    assert result.hits[0].description == "A red car." and result.slots == slot_sets(
        {"type": "car", "color": "red"}
    )
    assert [h.record.record_id for h in engine.query(Query(text="man", schema_id=PERSON.id)).hits] == [2]


def test_importing_the_engine_does_not_import_torch() -> None:
    code = (
        "import sys, rxd.retrieval, rxd.retrieval.engine, rxd.retrieval.embed; "
        "bad = {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules); "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
