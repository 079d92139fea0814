"""The embedded query parser: the paper's query, synonyms, colour-to-garment binding and helpful notes."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from rxd.retrieval.parse import attribute_help, parse_query, slot_sets
from semcom.schema import SchemaRegistry

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
VEHICLE = REGISTRY.get("vehicle/1")

PAPER = "the man wearing a white long-sleeved shirt, black pants and black shoes"
PAPER_SLOTS = {
    "gender": "male",
    "upper_color": "white",
    "sleeve": "long",
    "lower_color": "black",
    "shoe_color": "black",
}

CASES: list[tuple[str, Mapping[str, str | tuple[str, ...]]]] = [
    (PAPER, PAPER_SLOTS),
    ("The man wearing a white long sleeved shirt, black trousers and black shoes.", PAPER_SLOTS),
    ("man in a white shirt with long sleeves, black jeans and black sneakers", PAPER_SLOTS),
    ("a male, white long-sleeve top, black pants, black trainers", PAPER_SLOTS),
    ("gentleman wearing a long-sleeved white shirt and black trousers and black boots", PAPER_SLOTS),
    ("a man whose shirt is white with long sleeves, pants black, shoes black", PAPER_SLOTS),
    ("a woman in a gray jumper", {"gender": "female", "upper_color": "grey"}),
    ("lady with a grey sweater", {"gender": "female", "upper_color": "grey"}),
    ("women in blue jeans", {"gender": "female", "lower_color": "blue"}),
    (
        "a girl wearing a pink t-shirt and a long skirt",
        {"gender": "female", "upper_color": "pink", "lower_length": "long"},
    ),
    ("guy in black shorts", {"gender": "male", "lower_color": "black", "lower_length": "short"}),
    ("boy wearing short-sleeved red hoodie", {"gender": "male", "upper_color": "red", "sleeve": "short"}),
    ("someone in short sleeves", {"sleeve": "short"}),
    ("person with long pants", {"lower_length": "long"}),
    ("long grey trousers", {"lower_color": "grey", "lower_length": "long"}),
    ("a shirt that is white", {"upper_color": "white"}),
    ("shirt in green and trousers in brown", {"upper_color": "green", "lower_color": "brown"}),
    ("shirt white, pants black", {"upper_color": "white", "lower_color": "black"}),
    ("the jacket: yellow", {"upper_color": "yellow"}),
    ("orange coat and purple blouse", {"upper_color": ("orange", "purple")}),
    ("white shoes", {"shoe_color": "white"}),
    ("a pedestrian with brown boots", {"shoe_color": "brown"}),
    ("GREEN Shirt", {"upper_color": "green"}),
    ("men's black leather shoes", {"gender": "male", "shoe_color": "black"}),
    ("female", {"gender": "female"}),
    ("a navy cardigan", {"upper_color": "blue"}),
    ("a man in a white shirt and a woman", {"gender": ("male", "female"), "upper_color": "white"}),
]


@pytest.mark.parametrize(("text", "slots"), CASES, ids=[c[0][:40] for c in CASES])
def test_phrasings_map_to_slots(text: str, slots: Mapping[str, str | tuple[str, ...]]) -> None:
    assert parse_query(text, PERSON).slots == slot_sets(slots)


def test_paper_query_is_fully_understood() -> None:
    parsed = parse_query(PAPER, PERSON)
    assert parsed.unmatched == [] and parsed.note == ""
    assert list(parsed.slots) == list(PAPER_SLOTS)  # schema order


def test_conflicting_values_keep_both_and_say_so() -> None:
    parsed = parse_query("orange coat and purple blouse", PERSON)
    assert "shirt color: both 'orange' and 'purple' given; either is accepted" in parsed.note
    parsed = parse_query("a man in a white shirt and a woman", PERSON)
    assert "gender" in parsed.note


def test_colour_without_garment_is_reported() -> None:
    parsed = parse_query("man with black", PERSON)
    assert parsed.slots == {"gender": ("male",)}
    assert "'black' was not tied to a garment" in parsed.note
    assert "shirt color or pants color or shoes color" in parsed.note


@pytest.mark.parametrize("text", ["person in a zorbly shirt", "hello world", "asdf qwerty", "a red car"])
def test_nonsense_gives_empty_slots_and_a_useful_note(text: str) -> None:
    parsed = parse_query(text, PERSON)
    assert parsed.slots == {}
    assert parsed.note.startswith("no attribute understood")
    assert attribute_help(PERSON) in parsed.note
    assert "shirt color, pants color, shoes color (black, blue" in parsed.note


def test_unmatched_words_are_listed() -> None:
    parsed = parse_query("person in a zorbly shirt", PERSON)
    assert parsed.unmatched == ["zorbly"] and "not understood: zorbly" in parsed.note
    parsed = parse_query("a man carrying a red bag", PERSON)
    assert parsed.slots == {"gender": ("male",)}
    assert parsed.unmatched == ["carrying", "bag"]


def test_vehicle_schema_uses_its_own_words() -> None:
    assert parse_query("a red car", VEHICLE).slots == slot_sets({"type": "car", "color": "red"})
    assert parse_query("grey lorry", VEHICLE).slots == slot_sets({"type": "truck", "color": "grey"})
    parsed = parse_query("silver motorbike with trousers", VEHICLE)
    assert parsed.slots == slot_sets({"type": "motorcycle", "color": "silver"})
    assert parsed.unmatched == ["trousers"]


def test_empty_text() -> None:
    parsed = parse_query("   ", PERSON)
    assert parsed.slots == {} and parsed.unmatched == [] and "no attribute understood" in parsed.note


def test_colour_names_map_to_the_schema_colours() -> None:
    assert parse_query("a teal jacket", PERSON).slots == {"upper_color": ("blue", "green")}
    assert parse_query("navy trousers", PERSON).slots == {"lower_color": ("blue",)}
    # The vehicle schema's own colours: silver is one of them.
    assert parse_query("a gunmetal van", VEHICLE).slots["color"][0] in ("grey", "silver")


def test_garments_imply_what_they_must_and_the_user_overrides() -> None:
    assert parse_query("tank top", PERSON).slots == {"sleeve": ("short",)}
    assert parse_query("long-sleeved polo", PERSON).slots == {"sleeve": ("long",)}
    parsed = parse_query("red swim shorts", PERSON)
    assert parsed.slots == {"lower_color": ("red",), "lower_length": ("short",)} and parsed.note == ""


def test_modifier_alone_is_a_documented_set() -> None:
    assert parse_query("dark trousers", PERSON).slots == {"lower_color": ("black", "blue", "brown", "grey")}
    assert parse_query("dark grey trousers", PERSON).slots == {"lower_color": ("grey",)}


def test_typos_one_letter_off_are_corrected_but_short_words_are_not() -> None:
    assert parse_query("blak jaket", PERSON).slots == {"upper_color": ("black",)}
    assert parse_query("a tin shirt", PERSON).unmatched == ["tin"]
