"""A schema's query vocabulary: words and phrases to units (values, garments), with typo correction."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from semcom.schema import Schema

from .colours import MODIFIERS, colour_table, colour_vocabulary, name_colour
from .garments import CATEGORIES, FEMALE, GENDER_SUFFIXES, MALE, MATERIALS, NOT_GENDER, WEARING

# Synonyms of schema values the lexicon does not cover (vehicle words); used when the schema has the target.
_SYNONYMS = {"motorbike": "motorcycle", "bike": "bicycle", "lorry": "truck", "automobile": "car"}
_MAX_PHRASE = 4
_FUZZY_MIN_LEN = 4  # shorter words are too close to each other to correct ("tan", "man")
_FUZZY_COLOUR_MIN_LEN = 5


@dataclass(frozen=True)
class Unit:
    """One understood piece of a query: a value set, a garment (schema nouns + implied values), or a word
    the parser reads itself (punctuation, function words), or an unknown content word."""

    kind: str  # "value" | "noun" | "word" | "unknown"
    word: str
    values: tuple[str, ...] = ()
    nouns: tuple[str, ...] = ()
    implied: tuple[tuple[str, str], ...] = ()
    colour: tuple[str, ...] = field(default=(), compare=False)  # the colour phrase, for a modifier before it


def _one_edit(a: str, b: str) -> bool:
    """True when `a` and `b` differ by at most one insertion, deletion, substitution or adjacent swap."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


class Lexicon:
    """What the words of queries mean for one schema; built once per schema and shared (read-only)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.values: dict[str, list[str]] = {}  # schema value -> fields that have it
        self.nouns: dict[str, list[str]] = {}  # schema garment word -> fields its phrase names
        for spec in schema.fields:
            for value in spec.values[1:]:
                self.values.setdefault(value, []).append(spec.name)
            words = spec.phrase.replace("{value}", "").split()
            if words:
                self.nouns.setdefault(words[-1], []).append(spec.name)
        self._vocab = {spec.name: frozenset(spec.values[1:]) for spec in schema.fields}
        colours = [c for spec in schema.fields for c in colour_vocabulary(spec.values[1:])]
        self.colours = tuple(dict.fromkeys(colours))
        self.wearing = WEARING
        self.single: dict[str, list[Unit]] = {}
        self.phrases: dict[tuple[str, ...], list[Unit]] = {}
        self._add_colours()
        self._add_words()
        outfit = self.single.get("outfit")
        self.outfit = outfit[0] if outfit else None
        self._fuzzy = self._fuzzy_index()

    # -- building -----------------------------------------------------------------------------------------

    def _put(self, words: Sequence[str], units: list[Unit]) -> None:
        key = tuple(words)
        if len(key) == 1:
            self.single[key[0]] = units
        else:
            self.phrases[key] = units

    def _add_colours(self) -> None:
        if not self.colours:
            return
        for words in colour_table():
            values = name_colour(words, self.colours)
            if values and len(words) <= _MAX_PHRASE:
                self._put(words, [Unit("value", " ".join(words), values, colour=words)])

    def _add_words(self) -> None:
        for cat in CATEGORIES.values():
            if not all(n in self.nouns for n in cat.nouns):
                continue
            implied = tuple((v, n) for v, n in cat.implied if n in self.nouns and v in self.values)
            for entry in cat.words:
                self._put(
                    entry.replace("-", " ").split(), [Unit("noun", entry, nouns=cat.nouns, implied=implied)]
                )
        if "sleeves" in self.nouns and "short" in self.values:
            self._put(
                ["sleeveless"],
                [Unit("value", "sleeveless", ("short",)), Unit("noun", "sleeveless", nouns=("sleeves",))],
            )
        for words, value in ((MALE, "male"), (FEMALE, "female")):
            if value in self.values:
                for word in words:
                    self._put([word], [Unit("value", word, (value,))])
        for word, target in _SYNONYMS.items():
            if target in self.values:
                self._put([word], [Unit("value", word, (target,))])
        for value in self.values:
            colour = (value,) if value in self.colours else ()
            self._put([value], [Unit("value", value, (value,), colour=colour)])
        for noun in self.nouns:
            self.single.setdefault(noun, [Unit("noun", noun, nouns=(noun,))])

    def _fuzzy_index(self) -> dict[str, list[str]]:
        table = colour_table()
        index: dict[str, list[str]] = {}
        for word in sorted(self.single):
            colour_name = (word,) in table and word not in self.values
            shortest = _FUZZY_COLOUR_MIN_LEN if colour_name else _FUZZY_MIN_LEN
            if len(word) < shortest or word in MODIFIERS:
                continue
            for key in {word} | _deletes(word):
                index.setdefault(key, []).append(word)
        return index

    # -- reading ------------------------------------------------------------------------------------------

    def fields_of(self, values: Sequence[str]) -> list[str]:
        """Fields whose vocabulary holds every one of `values`."""
        return [name for name, vocab in self._vocab.items() if all(v in vocab for v in values)]

    def fields_of_any(self, values: Sequence[str]) -> list[str]:
        return [name for name, vocab in self._vocab.items() if any(v in vocab for v in values)]

    def fields_for(self, noun: str, values: Sequence[str]) -> list[str]:
        """Fields that garment word `noun` names and whose vocabulary holds every one of `values`."""
        return [f for f in self.nouns.get(noun, ()) if all(v in self._vocab[f] for v in values)]

    def units(self, tokens: Sequence[str], function_words: frozenset[str]) -> list[Unit]:
        """The units of a tokenised query; `function_words` are passed through as "word" units."""
        out: list[Unit] = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok in MODIFIERS and self.colours:
                size, found = self._match(tokens, i + 1)
                if found and found[0].colour:
                    words = (tok, *found[0].colour)
                    values = name_colour(words, self.colours) or found[0].values
                    out.append(Unit("value", " ".join(words), values, colour=words))
                    i += 1 + size
                    continue
            size, found = self._match(tokens, i)
            nxt = tokens[i + size] if i + size < len(tokens) else ""
            if found and found[0].colour and found[0].word not in self.values and nxt in self.colours:
                # A colour word before a basic colour names that colour: "jet black", "snow white".
                words = (*found[0].colour, nxt)
                out.append(
                    Unit("value", " ".join(words), name_colour(words, self.colours) or (nxt,), colour=words)
                )
                i += size + 1
                continue
            if found:
                out += found
                i += size
                continue
            if tok in MODIFIERS and self.colours:
                out.append(Unit("value", tok, name_colour((tok,), self.colours) or ()))
            elif tok in function_words:
                out.append(Unit("word", tok))
            else:
                out += self._resolve(tok)
            i += 1
        return [u for u in out if u.kind != "value" or u.values]

    def _match(self, tokens: Sequence[str], i: int) -> tuple[int, list[Unit]]:
        for size in range(min(_MAX_PHRASE, len(tokens) - i), 1, -1):
            found = self.phrases.get(tuple(tokens[i : i + size]))
            if found:
                return size, found
        if i < len(tokens) and tokens[i] in self.single:
            return 1, self.single[tokens[i]]
        return 0, []

    def _resolve(self, word: str) -> list[Unit]:
        """Units for a word with no entry: another number, "-ish", a compound of a gender word, a typo."""
        if not word.isalpha() or len(word) < 3:
            return [Unit("word", word)]
        if word in MATERIALS:
            return [Unit("unknown", word)]
        variants = [word[:-1], word[:-2]] if word.endswith("s") else [word + "s"]
        for cand in variants:
            if cand in self.single:
                return self.single[cand]
        if self.colours:
            values = name_colour((word,), self.colours)
            if values:
                return [Unit("value", word, values, colour=(word,))]
        for suffix, value in GENDER_SUFFIXES.items():
            if (
                word.endswith(suffix)
                and len(word) >= len(suffix) + 3
                and word not in NOT_GENDER
                and value in self.values
            ):
                return [Unit("value", word, (value,))]
        if len(word) >= _FUZZY_MIN_LEN:
            cands = set(self._fuzzy.get(word, ())).union(*(self._fuzzy.get(d, ()) for d in _deletes(word)))
            for cand in sorted(cands):
                if _one_edit(word, cand):
                    return [
                        Unit(u.kind, word, u.values, u.nouns, u.implied, u.colour) for u in self.single[cand]
                    ]
        return [Unit("unknown", word)]


_LOCK = threading.Lock()
_LEXICONS: dict[str, Lexicon] = {}


def lexicon(schema: Schema) -> Lexicon:
    """The lexicon of `schema`, built on first use (a few hundred milliseconds) and kept."""
    found = _LEXICONS.get(schema.id)
    if found is not None and found.schema == schema:
        return found
    with _LOCK:
        found = _LEXICONS.get(schema.id)
        if found is None or found.schema != schema:
            found = _LEXICONS[schema.id] = Lexicon(schema)
        return found
