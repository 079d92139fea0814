"""The template describer (every combination renders, unknowns left out) and the description memory."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxd.retrieval.describe import DescriptionMemory, TemplateDescriber
from semcom.errors import InvalidInput
from semcom.record import UNKNOWN
from semcom.schema import Schema, SchemaRegistry

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
VEHICLE = REGISTRY.get("vehicle/1")
DESCRIBER = TemplateDescriber()


def _fields(schema: Schema) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({f.name: st.sampled_from(f.values) for f in schema.fields})


def _check_sentence(schema: Schema, fields: dict[str, str], text: str) -> None:
    assert text[0].isupper() and text.endswith(".") and text.count(".") == 1
    assert UNKNOWN not in text and "{" not in text and "  " not in text
    words = text.rstrip(".").replace(",", "").split()
    for name, value in fields.items():
        if value != UNKNOWN:
            assert value in words, (name, value, text)


@settings(max_examples=300, deadline=None)
@given(_fields(PERSON))
def test_every_person_combination_renders(fields: dict[str, str]) -> None:
    text = DESCRIBER.describe(PERSON, fields)
    _check_sentence(PERSON, fields, text)
    assert DESCRIBER.describe(PERSON, fields) == text  # deterministic


@settings(max_examples=100, deadline=None)
@given(_fields(VEHICLE))
def test_every_vehicle_combination_renders(fields: dict[str, str]) -> None:
    _check_sentence(VEHICLE, fields, DESCRIBER.describe(VEHICLE, fields))


@pytest.mark.parametrize("schema", [PERSON, VEHICLE], ids=lambda s: s.id)
def test_descriptions_are_distinct_for_distinct_combinations(schema: Schema) -> None:
    """Exhaustive: the description identifies its field values, so the memory's keys and texts agree."""
    texts = {
        DESCRIBER.describe(schema, dict(zip(schema.field_names, combo, strict=True)))
        for combo in itertools.product(*(f.values for f in schema.fields))
    }
    n_combos = 1
    for f in schema.fields:
        n_combos *= len(f.values)
    assert len(texts) == n_combos


@pytest.mark.parametrize(
    ("schema", "fields", "expected"),
    [
        (
            PERSON,
            {
                "gender": "male",
                "upper_color": "white",
                "sleeve": "long",
                "lower_color": "black",
                "lower_length": "long",
                "shoe_color": "black",
            },
            "A male wearing a white shirt with long sleeves, long black pants and black shoes.",
        ),
        (PERSON, {}, "A person."),
        (PERSON, {"gender": "female"}, "A female."),
        (
            PERSON,
            {"sleeve": "short", "shoe_color": "orange"},
            "A person wearing a shirt with short sleeves and orange shoes.",
        ),
        (
            PERSON,
            {"upper_color": "orange", "lower_length": "short"},
            "A person wearing an orange shirt and short pants.",
        ),
        (VEHICLE, {"type": "car", "color": "red"}, "A red car."),
        (VEHICLE, {"color": "orange"}, "An orange vehicle."),
        (VEHICLE, {"type": "bus", "color": UNKNOWN}, "A bus."),
        (VEHICLE, {}, "A vehicle."),
    ],
)
def test_known_sentences(schema: Schema, fields: dict[str, str], expected: str) -> None:
    assert DESCRIBER.describe(schema, fields) == expected


def test_other_verbs_per_schema() -> None:
    text = TemplateDescriber(verbs={"person": "in"}).describe(PERSON, {"gender": "male", "shoe_color": "red"})
    assert text == "A male in red shoes."


def test_bad_values_are_rejected() -> None:
    with pytest.raises(InvalidInput, match="mauve"):
        DESCRIBER.describe(PERSON, {"upper_color": "mauve"})
    with pytest.raises(InvalidInput, match="hat"):
        DESCRIBER.describe(PERSON, {"hat": "red"})


class CountingDescriber:
    def __init__(self) -> None:
        self.calls = 0

    def describe(self, schema: Schema, fields: Mapping[str, str]) -> str:
        self.calls += 1
        return DESCRIBER.describe(schema, fields)


def test_memory_describes_each_entry_once_and_counts_hits() -> None:
    counting = CountingDescriber()
    memory = DescriptionMemory(counting)
    assert memory.hit_rate == 0.0
    a = memory.get(PERSON, {"gender": "male", "upper_color": "white"})
    # The same entry spelled differently (missing fields, explicit unknowns, case) is the same key.
    b = memory.get(PERSON, {"upper_color": "White ", "gender": "male", "sleeve": UNKNOWN})
    c = memory.get(PERSON, {"gender": "female"})
    d = memory.get(VEHICLE, {"color": "white"})
    assert a == b and a[0] == 0 and c[0] == 1 and d[0] == 2
    assert a[1] == "A male wearing a white shirt."
    assert counting.calls == 3 and memory.hits == 1 and memory.misses == 3
    assert memory.hit_rate == pytest.approx(0.25)
    assert memory.peek(PERSON, {"gender": "female"}) == c and memory.peek(PERSON, {"gender": "male"}) is None
    assert (memory.hits, memory.misses, len(memory)) == (1, 3, 3)


def test_memory_restores_entries_and_continues_ids() -> None:
    counting = CountingDescriber()
    memory = DescriptionMemory(counting)
    memory.remember(PERSON.id, ("male",) + (UNKNOWN,) * 5, 7, "A male.")
    assert memory.get(PERSON, {"gender": "male"}) == (7, "A male.")
    assert memory.get(PERSON, {"gender": "female"})[0] == 8
    assert counting.calls == 1


def test_memory_is_consistent_under_threads() -> None:
    memory = DescriptionMemory(DESCRIBER)
    combos = [{"upper_color": c} for c in PERSON.field("upper_color").values] * 20
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def work(part: list[dict[str, str]]) -> None:
        got = [memory.get(PERSON, f) for f in part]
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=work, args=(combos[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r for r in results}) == len(PERSON.field("upper_color").values)
    assert sorted({i for i, _ in results}) == list(range(len(PERSON.field("upper_color").values)))
    assert memory.hits + memory.misses == len(combos)
