"""The embedded parser on 200 phrasings written from what a person means: >= 95 % parsed exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from rxd.retrieval.parse import parse_query
from semcom.schema import SchemaRegistry

PERSON = SchemaRegistry.builtin().get("person/1")
DATA = Path(__file__).parent / "data" / "query_phrasings.txt"
TARGET = 0.95


@dataclass(frozen=True)
class Phrasing:
    text: str
    slots: dict[str, tuple[str, ...]]
    note: bool  # the parser must say something (a contradiction, an untied colour)


def load(path: Path = DATA) -> list[Phrasing]:
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, _, expected = line.partition(" => ")
        words = expected.split()
        slots = {}
        for item in words:
            if "=" in item:
                name, _, values = item.partition("=")
                slots[name] = tuple(sorted(values.split("|")))
        out.append(Phrasing(text.strip(), slots, "!note" in words))
    return out


PHRASINGS = load()


def exact(p: Phrasing) -> bool:
    parsed = parse_query(p.text, PERSON)
    got = {k: tuple(sorted(v)) for k, v in parsed.slots.items()}
    return got == p.slots and (bool(parsed.note) or not p.note)


def test_the_set_is_large_and_valid() -> None:
    assert len(PHRASINGS) >= 150
    for p in PHRASINGS:
        for name, values in p.slots.items():
            for value in values:
                PERSON.field(name).index(value)


def test_share_parsed_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    misses = [p for p in PHRASINGS if not exact(p)]
    share = 1 - len(misses) / len(PHRASINGS)
    with capsys.disabled():
        print(
            f"\nquery phrasings parsed exactly: {len(PHRASINGS) - len(misses)}/{len(PHRASINGS)} = {share:.1%}"
        )
        for p in misses:
            parsed = parse_query(p.text, PERSON)
            print(f"  {p.text!r}: got {parsed.slots} note={parsed.note!r}; expected {p.slots}")
    assert share >= TARGET


def test_contradictions_are_noted_not_chosen() -> None:
    parsed = parse_query("short long sleeves", PERSON)
    assert parsed.slots == {"sleeve": ("long", "short")}
    assert "sleeve length: both 'short' and 'long' given" in parsed.note


HELD_OUT = load(Path(__file__).parent / "data" / "query_phrasings_heldout.txt")


def test_share_parsed_exactly_on_held_out_phrasings(capsys: pytest.CaptureFixture[str]) -> None:
    """The out-of-sample figure: phrasings never used to choose the parser's thresholds. The floor is below
    the target so that the figure is reported, and a real regression still fails."""
    assert len(HELD_OUT) >= 50
    misses = [p for p in HELD_OUT if not exact(p)]
    share = 1 - len(misses) / len(HELD_OUT)
    with capsys.disabled():
        print(
            f"\nheld-out phrasings parsed exactly: {len(HELD_OUT) - len(misses)}/{len(HELD_OUT)} "
            f"= {share:.1%}"
        )
        for p in misses:
            parsed = parse_query(p.text, PERSON)
            print(f"  {p.text!r}: got {parsed.slots} note={parsed.note!r}; expected {p.slots}")
    assert share >= 0.90
