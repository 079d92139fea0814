"""The generating agent's template backend and the description memory that spares repeated inference."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from semcom.record import UNKNOWN
from semcom.schema import FieldSpec, Schema

# Adjectives of size come before colour in English ("long black pants", not "black long pants").
_SIZE_WORDS = frozenset({"long", "short", "mid", "big", "small", "large", "tall", "wide", "narrow"})
# Nouns that are a part of the garment named just before them: "a white shirt with long sleeves".
_PART_NOUNS = frozenset({"sleeves", "collar", "hood", "sleeve"})
# How the subject relates to its other attributes; schemas not listed use "with".
DEFAULT_VERBS: Mapping[str, str] = {"person": "wearing"}

DescriptionKey = tuple[str, tuple[str, ...]]


class Describer(Protocol):
    """Turns one record's field values into a sentence (template here; an LLM backend implements it too)."""

    def describe(self, schema: Schema, fields: Mapping[str, str]) -> str: ...


@dataclass(frozen=True)
class _Group:
    """Fields whose phrases share one noun ("{value} pants": lower colour and lower length)."""

    noun: str
    specs: tuple[FieldSpec, ...]

    @property
    def is_part(self) -> bool:
        return self.noun in _PART_NOUNS


def _noun(spec: FieldSpec) -> str:
    return spec.phrase.replace("{value}", "").strip()


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


class TemplateDescriber:
    """A deterministic sentence built from the schema's phrases, with no model; unknown fields are left out.

    The first field whose phrase is a bare "{value}" names the subject ("male", "car"; the schema's name when
    unknown); other bare fields are adjectives of it ("red car"). Fields sharing a noun merge into one
    phrase ("long black pants"); part nouns attach to the garment before them ("a shirt with long sleeves").
    """

    def __init__(self, verbs: Mapping[str, str] = DEFAULT_VERBS) -> None:
        self._verbs = dict(verbs)

    def describe(self, schema: Schema, fields: Mapping[str, str]) -> str:
        values = schema.normalise(fields)
        bare = [s for s in schema.fields if _noun(s) == ""]
        head = bare[0] if bare else None
        adjectives = [values[s.name] for s in bare[1:] if values[s.name] != UNKNOWN]
        noun = values[head.name] if head is not None and values[head.name] != UNKNOWN else schema.name
        subject = " ".join([*adjectives, noun])
        items = self._items(_groups(schema), values)
        sentence = f"{_article(subject).capitalize()} {subject}"
        if items:
            sentence += f" {self._verbs.get(schema.name, 'with')} {_join(items)}"
        return sentence + "."

    @staticmethod
    def _items(groups: Sequence[_Group], values: Mapping[str, str]) -> list[str]:
        items: list[str] = []
        for i, group in enumerate(groups):
            text = _render(group, values)
            if group.is_part:
                continue
            nxt = groups[i + 1] if i + 1 < len(groups) else None
            part = _render(nxt, values) if nxt is not None and nxt.is_part else ""
            if part:
                # A part implies its garment even when the garment's own fields are unknown.
                text = f"{text or _render(group, values, bare=True)} with {part}"
            if text:
                items.append(text)
        return items


def _groups(schema: Schema) -> list[_Group]:
    order: dict[str, list[FieldSpec]] = {}
    for spec in schema.fields:
        noun = _noun(spec)
        if noun:
            order.setdefault(noun, []).append(spec)
    return [_Group(noun, tuple(specs)) for noun, specs in order.items()]


def _render(group: _Group, values: Mapping[str, str], *, bare: bool = False) -> str:
    known = [(s, values[s.name]) for s in group.specs if values[s.name] != UNKNOWN]
    if not known and not bare:
        return ""
    adjective_form = all(s.phrase.startswith("{value} ") for s in group.specs)
    if not adjective_form:
        return ", ".join(s.render(v) for s, v in known)
    words = [v for _, v in known if v in _SIZE_WORDS] + [v for _, v in known if v not in _SIZE_WORDS]
    phrase = " ".join([*words, group.noun])
    plural = group.noun.endswith("s") and not group.noun.endswith("ss")
    return phrase if plural else f"{_article(phrase)} {phrase}"


class DescriptionMemory:
    """Descriptions keyed by (schema id, field values in schema order): a repeated entry needs no inference.

    Ids are dense from 0 in order of first sight; `remember` restores entries kept by the store so that a
    restarted receiver neither re-describes nor re-embeds what it has seen. Safe to share between threads.
    """

    def __init__(self, describer: Describer) -> None:
        self._describer = describer
        self._by_key: dict[DescriptionKey, tuple[int, str]] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(schema: Schema, fields: Mapping[str, str]) -> DescriptionKey:
        return schema.id, tuple(schema.normalise(fields).values())

    def get(self, schema: Schema, fields: Mapping[str, str]) -> tuple[int, str]:
        """(description id, text); describes the entry only the first time it is seen."""
        key = self.key(schema, fields)
        with self._lock:
            found = self._by_key.get(key)
            if found is not None:
                self.hits += 1
                return found
        # Describing may be slow (an LLM backend): do it outside the lock; a racing twin keeps the first.
        text = self._describer.describe(schema, dict(zip(schema.field_names, key[1], strict=True)))
        with self._lock:
            found = self._by_key.get(key)
            if found is not None:
                self.hits += 1
                return found
            self.misses += 1
            entry = (self._next_id, text)
            self._by_key[key] = entry
            self._next_id += 1
            return entry

    def peek(self, schema: Schema, fields: Mapping[str, str]) -> tuple[int, str] | None:
        """The entry if already known, without describing and without counting a hit or miss."""
        with self._lock:
            return self._by_key.get(self.key(schema, fields))

    def remember(self, schema_id: str, values: Sequence[str], desc_id: int, text: str) -> None:
        """Restore one entry (from the store); later ids continue after the largest one seen."""
        with self._lock:
            self._by_key[(schema_id, tuple(values))] = (desc_id, text)
            self._next_id = max(self._next_id, desc_id + 1)

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def hit_rate(self) -> float:
        """Share of lookups answered from memory (0.0 before the first lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
