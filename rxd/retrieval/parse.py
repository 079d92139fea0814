"""The embedded query parser: free text to slot sets, with a garment lexicon, colour naming and binding."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from semcom.registry import Registry
from semcom.schema import Schema

from .garments import WEARING
from .vocab import Lexicon, Unit, lexicon

# Field name -> the values a query accepts for it (OR), in the field's vocabulary order.
SlotSets = dict[str, tuple[str, ...]]

_TOKEN = re.compile(r"[a-z]+|[,;:.!?()]")
_BOUNDARIES = frozenset({",", ";", ".", "!", "?", "(", ")", "and", "with", "plus", "but", "while", "or"})
# Boundaries that join two colours before one garment ("black and white trainers", "red, blue or green").
_JOINERS = frozenset({",", "and", "or"})
# After a garment noun these words make the next value describe that garment: "a shirt that is white".
_BACKWARD = frozenset({"that", "which", "is", "are", "was", "were", "in", ":", "coloured", "colored"})
_STOPWORD_TEXT = """
    a an the of who whose be has have having person persons people someone somebody anyone anybody
    pedestrian pedestrians individual find show me search look looking for any some color colour
    colors colours colored coloured at walking standing their his her he she they it its both pair also
    please where there seen one ones just only very maybe probably perhaps possibly either like
    over under underneath beneath on top shade tone kind sort type style without wearing wears wear
    worn wore dressed clad sporting
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_FUNCTION_WORDS = _STOPWORDS | _BOUNDARIES | _BACKWARD | WEARING


@dataclass(frozen=True)
class ParsedQuery:
    """Slot sets understood in a query, content words that were not, and a note for the user ("" if clear).

    A slot lists the values the query accepts for a field ("red or blue top" -> upper_color: blue, red).
    `source` names the parser whose slots these are ("embedded", or "llm" for a model's answer).
    """

    slots: SlotSets
    unmatched: list[str] = field(default_factory=list)
    note: str = ""
    source: str = "embedded"


def slot_sets(slots: Mapping[str, str | Sequence[str]]) -> SlotSets:
    """Slots as sets: a single value becomes a one-value set (for callers that give one value a field)."""
    return {k: (v,) if isinstance(v, str) else tuple(v) for k, v in slots.items()}


def attribute_help(schema: Schema) -> str:
    """The attributes a query can name, with their values (for a user whose query was not understood)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for spec in schema.fields:
        groups.setdefault(spec.values[1:], []).append(spec.label)
    return "; ".join(f"{', '.join(labels)} ({', '.join(values)})" for values, labels in groups.items())


@dataclass(eq=False)
class _Value:
    """A value the user gave, still looking for its garment."""

    values: tuple[str, ...]
    word: str
    after_noun: bool
    wearing: bool


class _Parser:
    """One pass over the units: values wait for the garment that follows them (or, in places, precedes)."""

    def __init__(self, schema: Schema, lex: Lexicon) -> None:
        self.schema = schema
        self.lex = lex
        self.explicit: dict[str, set[str]] = {}
        self.implied: dict[str, set[str]] = {}
        self.unmatched: list[str] = []
        self.problems: list[str] = []
        self.untied: list[_Value] = []
        self.pending: list[_Value] = []
        self.clause_nouns: list[Unit] = []
        self.last_noun: Unit | None = None
        self.last_value: tuple[_Value, Unit | None] | None = None  # and the garment it went to
        self.backward = self.after_noun = self.joining = self.wearing = False

    def run(self, units: list[Unit]) -> None:
        for i, unit in enumerate(units):
            if unit.kind == "word":
                self._word(unit.word, units[i + 1 :])
            elif unit.kind == "unknown":
                self.unmatched.append(unit.word)
                self.after_noun = self.wearing = False
            elif unit.kind == "noun":
                self._noun(unit)
            else:
                self._value(_Value(unit.values, unit.word, self.after_noun, self.wearing))

    def _word(self, word: str, rest: list[Unit]) -> None:
        if word in _JOINERS and self._joins(word, rest):
            self.joining = True
        elif word in _BOUNDARIES:
            self._close_clause()
        elif word in _BACKWARD and (self.after_noun or self.backward):
            self.backward = True
        elif word in self.lex.wearing:
            self.wearing = True

    def _joins(self, word: str, rest: list[Unit]) -> bool:
        """Whether `word` joins the last value and the next one into one set ("red or blue")."""
        nxt = next((u for u in rest if u.kind != "word" or u.word not in _STOPWORDS), None)
        if self.last_value is None or nxt is None or nxt.kind != "value":
            return False
        value, garment = self.last_value
        # "shirt white and black trousers": a value after its garment ends with the clause, unless "or".
        return word == "or" or (garment is None and not value.after_noun and value in self.pending)

    def _value(self, value: _Value) -> None:
        self.wearing = False
        if self.joining and self.last_value is not None:
            self.joining = False
            self._join(value)
            return
        fields = self.lex.fields_of(value.values)
        if len(fields) == 1:
            self._set(fields[0], value, joined=False)
            self.last_value = (value, None)
        elif self.backward and self.clause_nouns and self._bind(value, self.clause_nouns[-1]):
            self.last_value = (value, self.clause_nouns[-1])
        else:
            self.pending.append(value)
            self.last_value = (value, None)
        self.backward = self.after_noun = False

    def _join(self, value: _Value) -> None:
        last, garment = self.last_value or (value, None)
        if garment is not None:
            self._bind(value, garment, joined=True)
        elif last in self.pending:
            last.values = tuple(dict.fromkeys(last.values + value.values))
            last.word = f"{last.word} or {value.word}"
        else:
            fields = self.lex.fields_of(value.values)
            if len(fields) == 1:
                self._set(fields[0], value, joined=True)

    def _noun(self, noun: Unit) -> None:
        self.wearing = False
        self.pending = [v for v in self.pending if not self._bind(v, noun)]
        for value, word in noun.implied:
            for name in self.lex.fields_for(word, (value,)):
                self.implied.setdefault(name, set()).add(value)
        self.clause_nouns.append(noun)
        self.last_noun = noun
        self.after_noun, self.backward = True, False

    def _bind(self, value: _Value, noun: Unit, *, joined: bool = False) -> bool:
        bound = False
        for word in noun.nouns:
            fields = self.lex.fields_for(word, value.values)
            if len(fields) == 1:
                self._set(fields[0], value, joined=joined)
                bound = True
        if bound:
            self.last_value = (value, noun)
        return bound

    def _set(self, name: str, value: _Value, *, joined: bool) -> None:
        old = self.explicit.get(name)
        if old is None:
            self.explicit[name] = set(value.values)
            return
        if not joined and not set(value.values) <= old:
            label = self.schema.field(name).label
            given = " or ".join(sorted(old))
            self.problems.append(f"{label}: both {given!r} and {value.word!r} given; either is accepted")
        old.update(value.values)

    def _close_clause(self) -> None:
        # A value left at the end of a clause describes the last garment of that clause ("pants black"),
        # or in a clause of values only, the garment of the clause before ("a polo shirt, navy").
        nouns = self.clause_nouns or ([self.last_noun] if self.last_noun is not None else [])
        for noun in reversed(nouns):
            self.pending = [v for v in self.pending if not self._bind(v, noun)]
        self.untied += self.pending
        self.pending, self.clause_nouns = [], []
        self.backward = self.after_noun = self.joining = self.wearing = False

    def finish(self) -> ParsedQuery:
        self._close_clause()
        for value in self.untied:
            # "a man wearing black": a colour worn with no garment named is the whole outfit's.
            if not (value.wearing and self.lex.outfit is not None and self._bind(value, self.lex.outfit)):
                labels = " or ".join(self.schema.field(f).label for f in self.lex.fields_of_any(value.values))
                self.problems.append(f"{value.word!r} was not tied to a garment (it could be {labels})")
        unmatched = list(dict.fromkeys(self.unmatched))
        notes: list[str] = []
        slots = self._slots()
        if not slots:
            notes.append("no attribute understood")
        if unmatched:
            notes.append(f"not understood: {', '.join(unmatched)}")
        notes += self.problems
        if not slots:
            notes.append(f"ask about {attribute_help(self.schema)}")
        return ParsedQuery(slots, unmatched, "; ".join(notes))

    def _slots(self) -> SlotSets:
        out: SlotSets = {}
        for spec in self.schema.fields:
            chosen = self.explicit.get(spec.name) or self.implied.get(spec.name)
            if chosen:
                out[spec.name] = tuple(v for v in spec.values if v in chosen)
        return out


def tokens(text: str) -> list[str]:
    """Lower-case words and punctuation; "w/" is "with", "/" is "or", "&" and "+" are "and"."""
    text = text.lower().replace("\u2019", "'").replace("'s ", " ").replace("'", "")
    text = text.replace("w/o ", " without ").replace("w/", " with ").replace("/", " or ")
    return _TOKEN.findall(text.replace("&", " and ").replace("+", " and ").replace("-", " "))


def parse_query(text: str, schema: Schema) -> ParsedQuery:
    """Slot sets for `text` under `schema`: "white long-sleeved shirt, black pants" -> upper_color=white, ...

    Words are read with the lexicon of garments, people and colours (`vocab`): a colour name the schema
    does not list is named by its nearest basic colours ("teal" -> blue, green), garments stand for the
    schema's garment words and imply what they must (shorts are short pants; a dress has one colour top and
    bottom), typos one letter off a known word are corrected. Values bind to the garment that follows them
    ("black shoes") or, after "that is" / "in" / a colon or at the end of a clause, to the one before them
    ("shirt that is white", "pants black"). "or" (and "and" between colours before one garment) lists
    several values; two values given apart for one field are both kept, with a note. Words that name no
    attribute are listed in `unmatched`; the note says what was not understood and, when nothing was,
    which attributes exist.
    """
    lex = lexicon(schema)
    parser = _Parser(schema, lex)
    parser.run(lex.units(tokens(text), _FUNCTION_WORDS))
    return parser.finish()


class QueryParser(Protocol):
    """Turns a query's free text into slot sets; the retrieval engine calls it once per query with text.

    `parse` never returns "unknown" as a slot value and must not fail for any text: a backend that cannot
    answer falls back to the embedded parser. `aparse` is the same for callers on an event loop (a model
    request then holds no worker thread). `stats` gives counters for logs and metrics; `close` releases
    connections for a synchronous owner, `aclose` for the daemon, which awaits it on shutdown.
    """

    def parse(self, text: str, schema: Schema) -> ParsedQuery: ...
    async def aparse(self, text: str, schema: Schema) -> ParsedQuery: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...


class EmbeddedParser:
    """The embedded parser as a QueryParser: no model, well under a millisecond a query, nothing to close."""

    def __init__(self, config: object = None) -> None:
        return None

    def parse(self, text: str, schema: Schema) -> ParsedQuery:
        return parse_query(text, schema)

    async def aparse(self, text: str, schema: Schema) -> ParsedQuery:
        return parse_query(text, schema)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


# Query parsers by config `kind`, each built from its config section; imported only when selected.
QUERY_PARSERS: Registry[Callable[[Any], QueryParser]] = Registry(
    "query parser",
    {"embedded": "rxd.retrieval.parse:EmbeddedParser", "llm": "rxd.retrieval.llm_parse:LlmQueryParser"},
    entry_point_group="semcom.query_parser",
)
