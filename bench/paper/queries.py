"""The query set, generated from the labels: single attributes, full combinations, paper-style phrasings."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from semcom.errors import InvalidInput
from semcom.record import UNKNOWN
from semcom.schema import Schema

from .labels import Target

_SUBJECT = {"male": "man", "female": "woman"}
_UPPER_NOUNS = ("shirt", "top", "jacket")
_LOWER_NOUNS = ("pants", "trousers")
_SHOE_NOUNS = ("shoes", "sneakers")


@dataclass(frozen=True)
class PaperQuery:
    """One query: the slots it is about (ground truth for relevance) and how a user would type it."""

    query_id: str
    kind: str  # "single" (one attribute) or "combination" (a labelled target's known attributes)
    slots: dict[str, str]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def phrase(slots: Mapping[str, str], rng: random.Random) -> str:
    """A sentence in the paper's style: "the man wearing a white long-sleeved shirt, black pants and black
    shoes"; garment nouns vary (seeded) among words the receiver's parser knows."""
    who = _SUBJECT.get(slots.get("gender", ""), "person")
    parts: list[str] = []
    if "upper_color" in slots or "sleeve" in slots:
        sleeve = f"{slots['sleeve']}-sleeved" if "sleeve" in slots else ""
        words = [slots.get("upper_color", ""), sleeve, rng.choice(_UPPER_NOUNS)]
        parts.append(_with_article(" ".join(w for w in words if w)))
    if "lower_color" in slots or "lower_length" in slots:
        words = [slots.get("lower_length", ""), slots.get("lower_color", ""), rng.choice(_LOWER_NOUNS)]
        parts.append(" ".join(w for w in words if w))
    if "shoe_color" in slots:
        parts.append(f"{slots['shoe_color']} {rng.choice(_SHOE_NOUNS)}")
    if not parts:
        return f"the {who}"
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"the {who} wearing {listed}"


def _with_article(noun_phrase: str) -> str:
    return f"{'an' if noun_phrase[0] in 'aeiou' else 'a'} {noun_phrase}"


def generate_queries(
    targets: Sequence[Target],
    schema: Schema,
    *,
    max_combinations: int,
    seed: int,
    observed: Collection[int] | None = None,
    max_pairs: int = 0,
) -> list[PaperQuery]:
    """Every attribute value that some target carries as its main (first listed) value; then, when
    `max_pairs` > 0, two-attribute queries: the pairs of main values some target carries (distinct, a seeded
    sample of at most `max_pairs`); then the full known-attribute combination of each target (main values;
    distinct, at least two attributes, a seeded sample of at most `max_combinations`).

    `observed` (indices into `targets`) limits the queries to targets the input shows: on video, the people
    that perception keyframed in the source, which is the same for every scheme. A query is still scored
    against every target that satisfies it (any listed value counts), so people never keyframed count
    against recall. Each query gets a natural-language phrasing; the receiver parses that text, as a user's
    query would be.
    """
    rng = random.Random(seed)
    order = {name: i for i, name in enumerate(schema.field_names)}
    about = [t for i, t in enumerate(targets) if observed is None or i in observed]
    singles: list[dict[str, str]] = []
    for spec in schema.fields:
        present = {values[0] for t in about if (values := t.labels.get(spec.name, ()))}
        singles += [{spec.name: value} for value in spec.values[1:] if value in present]
    combos: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for target in about:
        known = {name: values[0] for name, values in target.labels.items() if values}
        if len(known) >= 2:
            slots = dict(sorted(known.items(), key=lambda kv: order[kv[0]]))
            combos.setdefault(tuple(slots.items()), slots)
    pairs: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for slots in combos.values() if max_pairs else ():
        for a, b in itertools.combinations(slots.items(), 2):
            pairs.setdefault((a, b), dict((a, b)))
    pair_list = _sample(list(pairs.values()), max_pairs, rng)
    picked = _sample(list(combos.values()), max_combinations, rng)
    queries = [PaperQuery(f"s{i:02d}", "single", s, phrase(s, rng)) for i, s in enumerate(singles)]
    queries += [PaperQuery(f"p{i:03d}", "pair", s, phrase(s, rng)) for i, s in enumerate(pair_list)]
    queries += [PaperQuery(f"c{i:03d}", "combination", s, phrase(s, rng)) for i, s in enumerate(picked)]
    return queries


def _sample(items: list[dict[str, str]], most: int, rng: random.Random) -> list[dict[str, str]]:
    """At most `most` of `items`, a seeded sample in their order."""
    if len(items) <= most:
        return items
    return [items[i] for i in sorted(rng.sample(range(len(items)), most))]


def load_queries(path: Path, schema: Schema) -> list[PaperQuery]:
    """A saved query set: a JSON list of {query_id, kind, slots, text} (the "queries" of a results.json, or
    that whole file); InvalidInput names the entry and the problem."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InvalidInput(f"cannot read queries {path}: {err}") from err
    items = doc.get("queries") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise InvalidInput(f"{path}: expected a non-empty JSON list of queries (or an object with 'queries')")
    queries = []
    for i, item in enumerate(items):
        where = f"{path} query {i}"
        if not isinstance(item, dict) or not isinstance(item.get("slots"), dict) or not item.get("slots"):
            raise InvalidInput(f"{where}: needs 'slots', a non-empty object of field: value")
        try:
            slots = {k: v for k, v in schema.normalise(item["slots"]).items() if v != UNKNOWN}
        except (InvalidInput, AttributeError) as err:
            raise InvalidInput(f"{where}: {err}") from err
        text = item.get("text") or phrase(slots, random.Random(i))
        queries.append(
            PaperQuery(str(item.get("query_id", f"q{i:03d}")), str(item.get("kind", "given")), slots, text)
        )
    return queries
