"""The generating agent's template backend and the description memory that spares repeated inference."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from semcom.errors import BackendDead, BackendFailed, InvalidInput
from semcom.record import UNKNOWN, Record
from semcom.registry import Registry
from semcom.schema import FieldSpec, Schema, SchemaRegistry

log = logging.getLogger(__name__)

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


class DescriberBackend(Describer, Protocol):
    """A generating backend the daemon builds from its config section and closes on shutdown."""

    async def aclose(self) -> None: ...


# Generating backends by config `kind`, each built from its config section; imported only when selected.
DESCRIBERS: Registry[Callable[[Any], DescriberBackend]] = Registry(
    "generating backend",
    {
        "template": "rxd.retrieval.describe:TemplateDescriber",
        "llm": "rxd.generate.llm:LlmDescriber",
        "transformers": "rxd.generate.local:TransformersDescriber",
    },
    entry_point_group="semcom.generate",
)


@dataclass(frozen=True)
class _Group:
    """Fields whose phrases share one noun ("{value} pants": lower colour and lower length)."""

    noun: str
    specs: tuple[FieldSpec, ...]

    @property
    def is_part(self) -> bool:
        return self.noun in _PART_NOUNS

    @property
    def adjective_form(self) -> bool:
        return all(s.phrase.startswith("{value} ") for s in self.specs)

    def render(self, values: Mapping[str, str], *, bare: bool = False) -> str:
        known = [(s, values[s.name]) for s in self.specs if values[s.name] != UNKNOWN]
        if not known and not bare:
            return ""
        if not self.adjective_form:
            return ", ".join(s.render(v) for s, v in known)
        words = [v for _, v in known if v in _SIZE_WORDS] + [v for _, v in known if v not in _SIZE_WORDS]
        phrase = " ".join([*words, self.noun])
        plural = self.noun.endswith("s") and not self.noun.endswith("ss")
        return phrase if plural else f"{_article(phrase)} {phrase}"


@dataclass(frozen=True)
class _Layout:
    """How one schema's fields become a sentence, worked out once per schema."""

    head: str | None  # the field naming the subject
    adjectives: tuple[str, ...]  # other bare fields, said before the subject
    groups: tuple[_Group, ...]

    @classmethod
    def of(cls, schema: Schema) -> _Layout:
        bare = [s.name for s in schema.fields if _noun(s) == ""]
        order: dict[str, list[FieldSpec]] = {}
        for spec in schema.fields:
            if _noun(spec):
                order.setdefault(_noun(spec), []).append(spec)
        groups = tuple(_Group(noun, tuple(specs)) for noun, specs in order.items())
        return cls(bare[0] if bare else None, tuple(bare[1:]), groups)


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

    def __init__(self, config: object = None, *, verbs: Mapping[str, str] = DEFAULT_VERBS) -> None:
        self._verbs = dict(verbs)
        self._layouts: dict[str, _Layout] = {}

    async def aclose(self) -> None:
        """Nothing to release: no model, no connection."""

    def describe(self, schema: Schema, fields: Mapping[str, str]) -> str:
        values = schema.normalise(fields)
        layout = self._layouts.get(schema.id)
        if layout is None:
            layout = self._layouts[schema.id] = _Layout.of(schema)
        adjectives = [values[name] for name in layout.adjectives if values[name] != UNKNOWN]
        head = values[layout.head] if layout.head is not None else UNKNOWN
        subject = " ".join([*adjectives, schema.name if head == UNKNOWN else head])
        items = self._items(layout.groups, values)
        sentence = f"{_article(subject).capitalize()} {subject}"
        if items:
            sentence += f" {self._verbs.get(schema.name, 'with')} {_join(items)}"
        return sentence + "."

    @staticmethod
    def _items(groups: Sequence[_Group], values: Mapping[str, str]) -> list[str]:
        items: list[str] = []
        for i, group in enumerate(groups):
            if group.is_part:
                continue
            text = group.render(values)
            nxt = groups[i + 1] if i + 1 < len(groups) else None
            part = nxt.render(values) if nxt is not None and nxt.is_part else ""
            if part:
                # A part implies its garment even when the garment's own fields are unknown.
                text = f"{text or group.render(values, bare=True)} with {part}"
            if text:
                items.append(text)
        return items


class RecordChecker:
    """Validates records and returns their field values in schema order, cached per distinct field mapping.

    Records repeat a few field combinations many times, so the schema's per-field checks run once per
    combination rather than once per record.
    """

    _MAX_ID = (1 << 63) - 1
    _MAX_CACHED = 1 << 16

    def __init__(self, schemas: SchemaRegistry) -> None:
        self._schemas = schemas
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Schema, tuple[str, ...]]] = {}

    def values(self, schema_id: str, fields: Mapping[str, str]) -> tuple[Schema, tuple[str, ...]]:
        """(schema, every field value in schema order, unknown where missing); InvalidInput if any is bad."""
        key = (schema_id, tuple(fields.items()))
        found = self._cache.get(key)
        if found is None:
            schema = self._schemas.get(schema_id)
            found = (schema, tuple(schema.normalise(fields).values()))
            if len(self._cache) >= self._MAX_CACHED:
                self._cache.clear()
            self._cache[key] = found
        return found

    def check(self, rec: Record) -> tuple[Schema, tuple[str, ...]]:
        """Everything `Schema.validate` checks, plus ids that fit SQLite and a finite time."""
        schema, values = self.values(rec.schema_id, rec.fields)
        ids_ok = 0 <= rec.record_id <= self._MAX_ID and 0 <= rec.track_id <= self._MAX_ID
        if not (ids_ok and math.isfinite(rec.time_s)):
            raise InvalidInput(f"record {rec.record_id}: ids must be 0..2^63-1 and time_s finite")
        if not 0 <= rec.location_id <= schema.max_location_id:
            schema.validate(rec)  # raises, naming the allowed range
        return schema, values


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

    def get(self, schema: Schema, fields: Mapping[str, str]) -> tuple[int, str]:
        """(description id, text); describes the entry only the first time it is seen."""
        return self.get_values(schema, tuple(schema.normalise(fields).values()))

    def get_values(self, schema: Schema, values: tuple[str, ...]) -> tuple[int, str]:
        """`get` for values already normalised, in schema order."""
        key = (schema.id, values)
        with self._lock:
            found = self._by_key.get(key)
            if found is not None:
                self.hits += 1
                return found
        # Describing may be slow (an LLM backend): do it outside the lock; a racing twin keeps the first.
        text = self._describer.describe(schema, dict(zip(schema.field_names, values, strict=True)))
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
            return self._by_key.get((schema.id, tuple(schema.normalise(fields).values())))

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


class FallbackDescriber:
    """A model-backed describer that falls back to the template when the model fails, so no record is lost."""

    def __init__(self, primary: Describer, fallback: Describer | None = None) -> None:
        self.primary = primary
        self.fallback = fallback or TemplateDescriber()
        self.fallbacks = 0

    async def aclose(self) -> None:
        """Close the primary backend (the fallback is the caller's, or the template with nothing to close)."""
        aclose = getattr(self.primary, "aclose", None)
        if aclose is not None:
            await aclose()

    def describe(self, schema: Schema, fields: Mapping[str, str]) -> str:
        try:
            return self.primary.describe(schema, fields)
        except (BackendFailed, BackendDead) as err:
            self.fallbacks += 1
            log.warning("generating backend failed (%s); using the template description", err)
            return self.fallback.describe(schema, fields)
