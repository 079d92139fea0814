"""The embedded query parser: free text to schema slots, with synonyms and colour-to-garment binding."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from semcom.schema import Schema

_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*|[,;:.!?]")
# Hyphenated words understood whole; any other hyphenated word splits ("long-sleeved" -> long, sleeved).
_COMPOUNDS = frozenset({"t-shirt", "tee-shirt", "hot-pants", "polo-shirt", "sweat-shirt"})

# Words rewritten to the schema's own words before matching. A rewrite is used only when the schema
# knows its target, so "trousers" means nothing to the vehicle schema and is reported as not understood.
_UPPER = (
    "top",
    "tops",
    "t-shirt",
    "tee-shirt",
    "tshirt",
    "tee",
    "jumper",
    "sweater",
    "jacket",
    "coat",
    "blouse",
    "hoodie",
    "sweatshirt",
    "sweat-shirt",
    "cardigan",
    "polo",
    "polo-shirt",
    "shirts",
)
_LOWER = ("trousers", "trouser", "jeans", "pant", "skirt", "skirts", "slacks", "chinos", "leggings")
_SHOES = ("shoe", "sneakers", "sneaker", "trainers", "trainer", "boots", "boot", "sandals", "footwear")
_MALE = ("man", "men", "gentleman", "gentlemen", "boy", "boys", "guy", "guys", "males")
_FEMALE = ("woman", "women", "lady", "ladies", "girl", "girls", "females")
_REWRITES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_UPPER, ("shirt",)),
    **dict.fromkeys(_LOWER, ("pants",)),
    **dict.fromkeys(_SHOES, ("shoes",)),
    **dict.fromkeys(_MALE, ("male",)),
    **dict.fromkeys(_FEMALE, ("female",)),
    # Shorts are short lower garments by definition; skirts and trousers carry no length.
    "shorts": ("short", "pants"),
    "hot-pants": ("short", "pants"),
    "sleeve": ("sleeves",),
    "sleeved": ("sleeves",),
    "gray": ("grey",),
    "navy": ("blue",),
    "violet": ("purple",),
    "motorbike": ("motorcycle",),
    "bike": ("bicycle",),
    "lorry": ("truck",),
    "automobile": ("car",),
}
# Words that carry no attribute but are not a failure to understand either.
_STOPWORD_TEXT = """
    a an the and or with without wearing wears wear worn wore dressed in on of that who which whose
    is are was were be has have having person persons people someone somebody anyone anybody
    pedestrian individual find show me search look looking for all any some clothes clothing outfit
    color colour colored coloured at walking standing their his her he she they it its both pair
    also plus dark light bright pale very please where there seen one ones just only while but
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_BOUNDARIES = frozenset({",", ";", ".", "!", "?", "and", "with", "plus", "but", "while", "or"})
# After a garment noun these words make the next value describe that garment: "a shirt that is white".
_BACKWARD = frozenset({"that", "which", "is", "are", "was", "were", "in", ":", "coloured", "colored"})


@dataclass(frozen=True)
class ParsedQuery:
    """Slots understood in a query, content words that were not, and a note for the user ("" if all clear).

    `source` names the parser whose slots these are ("embedded", or "llm" for a model's answer).
    """

    slots: dict[str, str]
    unmatched: list[str] = field(default_factory=list)
    note: str = ""
    source: str = "embedded"


def attribute_help(schema: Schema) -> str:
    """The attributes a query can name, with their values (for a user whose query was not understood)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for spec in schema.fields:
        groups.setdefault(spec.values[1:], []).append(spec.label)
    return "; ".join(f"{', '.join(labels)} ({', '.join(values)})" for values, labels in groups.items())


@dataclass
class _Lexicon:
    """What the schema's own words mean: value word -> fields, phrase noun -> fields."""

    values: dict[str, list[str]]
    nouns: dict[str, list[str]]

    @classmethod
    def of(cls, schema: Schema) -> _Lexicon:
        values: dict[str, list[str]] = {}
        nouns: dict[str, list[str]] = {}
        for spec in schema.fields:
            for value in spec.values[1:]:
                values.setdefault(value, []).append(spec.name)
            words = spec.phrase.replace("{value}", "").split()
            if words:
                nouns.setdefault(words[-1], []).append(spec.name)
        return cls(values, nouns)

    def knows(self, word: str) -> bool:
        return word in self.values or word in self.nouns

    def resolve(self, word: str) -> tuple[str, ...] | None:
        """The schema words `word` stands for, or None when it is not understood."""
        # Singular and plural forms of the known words: "shoe", "sleeve", "blacks" (rare but harmless).
        alternatives = [word[:-1], word[:-2]] if word.endswith("s") else [word + "s"]
        for cand in (word, *alternatives):
            target = _REWRITES.get(cand, (cand,))
            if all(self.knows(t) for t in target):
                return target
        return None


class _Parser:
    """One pass over the tokens: values wait for the garment noun that follows them (or precedes them)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.lex = _Lexicon.of(schema)
        self.slots: dict[str, str] = {}
        self.unmatched: list[str] = []
        self.problems: list[str] = []
        self.pending: list[tuple[str, str]] = []  # (value, the word the user typed)
        self.clause_nouns: list[str] = []
        self.backward = False
        self.after_noun = False

    def feed(self, word: str) -> None:
        if word in _BOUNDARIES:
            self._close_clause()
            return
        if word in _BACKWARD and (self.after_noun or self.backward):
            self.backward = True
            return
        self.after_noun = False
        resolved = self.lex.resolve(word)
        if resolved is None:
            if word not in _STOPWORDS and word not in _BACKWARD and word.isalpha():
                self.unmatched.append(word)
            return
        for target in resolved:
            if target in self.lex.nouns:
                self._noun(target)
            else:
                self._value(target, word)

    def _noun(self, noun: str) -> None:
        self.pending = [(v, w) for v, w in self.pending if not self._bind(v, w, noun)]
        self.clause_nouns.append(noun)
        self.after_noun = True
        self.backward = False

    def _value(self, value: str, word: str) -> None:
        fields = self.lex.values[value]
        if len(fields) == 1:
            self._set(fields[0], value, word)
        elif not (self.backward and self.clause_nouns and self._bind(value, word, self.clause_nouns[-1])):
            self.pending.append((value, word))
        self.backward = False

    def _bind(self, value: str, word: str, noun: str) -> bool:
        fields = [f for f in self.lex.values[value] if f in self.lex.nouns[noun]]
        if len(fields) != 1:
            return False
        self._set(fields[0], value, word)
        return True

    def _set(self, name: str, value: str, word: str) -> None:
        old = self.slots.get(name)
        if old is None:
            self.slots[name] = value
        elif old != value:
            label = self.schema.field(name).label
            self.problems.append(f"{label}: both {old!r} and {value!r} given, kept {old!r}")

    def _close_clause(self) -> None:
        # A value left over at the end of a clause describes the last garment of that clause: "pants black".
        for noun in reversed(self.clause_nouns):
            self.pending = [(v, w) for v, w in self.pending if not self._bind(v, w, noun)]
        self.clause_nouns = []
        self.backward = self.after_noun = False

    def finish(self) -> ParsedQuery:
        self._close_clause()
        for value, word in self.pending:
            labels = " or ".join(self.schema.field(f).label for f in self.lex.values[value])
            self.problems.append(f"{word!r} was not tied to a garment (it could be {labels})")
        unmatched = list(dict.fromkeys(self.unmatched))
        notes: list[str] = []
        if not self.slots:
            notes.append("no attribute understood")
        if unmatched:
            notes.append(f"not understood: {', '.join(unmatched)}")
        notes += self.problems
        if not self.slots:
            notes.append(f"ask about {attribute_help(self.schema)}")
        order = {name: i for i, name in enumerate(self.schema.field_names)}
        slots = dict(sorted(self.slots.items(), key=lambda kv: order[kv[0]]))
        return ParsedQuery(slots, unmatched, "; ".join(notes))


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower().replace("\u2019", "'").replace("'s", "")):
        if "-" in tok and tok not in _COMPOUNDS:
            out += tok.split("-")
        else:
            out.append(tok)
    return out


def parse_query(text: str, schema: Schema) -> ParsedQuery:
    """Slots for `text` under `schema`: "white long-sleeved shirt, black pants" -> upper_color=white, ...

    Colour and length words bind to the garment that follows them ("black shoes") or, after "that is" /
    "in" / a colon or at the end of a clause, to the garment before them ("shirt that is white",
    "pants black"). "t-shirt" names the upper garment only: it implies no sleeve length, since long-sleeved
    t-shirts exist and a guessed slot would push exact matches of what the user did say down the ranking.
    Words that name no attribute are listed in `unmatched`; the note says what was not understood and,
    when nothing was, which attributes exist.
    """
    parser = _Parser(schema)
    for word in _tokens(text):
        parser.feed(word)
    return parser.finish()


class QueryParser(Protocol):
    """Turns a query's free text into schema slots; the retrieval engine calls it once per query with text.

    `parse` never returns "unknown" as a slot value and must not fail for any text: a backend that cannot
    answer falls back to the embedded parser. `aparse` is the same for callers on an event loop (a model
    request then holds no worker thread). `stats` gives counters for logs and metrics.
    """

    def parse(self, text: str, schema: Schema) -> ParsedQuery: ...
    async def aparse(self, text: str, schema: Schema) -> ParsedQuery: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class EmbeddedParser:
    """The embedded parser as a QueryParser: no model, microseconds per query, nothing to count or close."""

    def parse(self, text: str, schema: Schema) -> ParsedQuery:
        return parse_query(text, schema)

    async def aparse(self, text: str, schema: Schema) -> ParsedQuery:
        return parse_query(text, schema)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None
