"""Retrieval check on PETA labels: for every query, all exact matches rank before any other record.

PETA -> person/1: the first colour of a multi-colour cell; an empty cell is unknown; sleeve "none"
(sleeveless) and lower length "mid" (capri) have no value in the schema and become unknown.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.embed import TextEncoder
from rxd.retrieval.engine import MAX_TOP_K, Query, RetrievalEngine
from rxd.retrieval.parse import slot_sets
from rxd.retrieval.store import RecordStore
from semcom.data import data_dir
from semcom.record import UNKNOWN, Record
from semcom.schema import SchemaRegistry
from tests.fixtures.records import BagOfWordsEncoder

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
SEED = 2412
N_RECORDS = 3000
N_COMBOS = 40
MARGIN = 50
LABELS = data_dir() / "peta" / "peta_labels.csv"

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not LABELS.is_file(), reason=f"PETA labels not found at {LABELS} (set SEMCOM_DATA_DIR)"
    ),
]


def peta_fields(row: dict[str, str]) -> dict[str, str]:
    def first(cell: str) -> str:
        return cell.split("|")[0] if cell else UNKNOWN

    def one_of(cell: str, allowed: tuple[str, ...]) -> str:
        return cell if cell in allowed else UNKNOWN

    return {
        "gender": one_of(row["gender"], ("male", "female")),
        "upper_color": first(row["upper_colors"]),
        "sleeve": one_of(row["sleeve"], ("long", "short")),
        "lower_color": first(row["lower_colors"]),
        "lower_length": one_of(row["lower_length"], ("long", "short")),
        "shoe_color": first(row["footwear_colors"]),
    }


def peta_records(path: Path, n: int, seed: int) -> list[Record]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    subsets = sorted({r["subset"] for r in rows})
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [
        Record(
            schema_id=PERSON.id,
            stream_id=rows[i]["subset"],
            track_id=i % 4096,
            record_id=i,
            time_s=float(i),
            location_id=subsets.index(rows[i]["subset"]),
            fields=peta_fields(rows[i]),
        )
        for i in picked
    ]


def query_text(slots: dict[str, str], rng: random.Random) -> str:
    """A natural-language query for `slots`, with synonyms drawn at random (seeded)."""

    def colour(name: str) -> str:
        value = slots.get(name, "")
        return "gray" if value == "grey" and rng.random() < 0.5 else value

    gender = slots.get("gender")
    subject = {"male": ["man", "guy", "gentleman", "male"], "female": ["woman", "lady", "girl", "female"]}
    parts: list[str] = []
    if "upper_color" in slots or "sleeve" in slots:
        noun = rng.choice(["shirt", "top", "jumper", "sweater", "jacket", "t-shirt"])
        sleeve = slots.get("sleeve")
        if sleeve and rng.random() < 0.5:
            parts.append(" ".join(w for w in (colour("upper_color"), f"{sleeve}-sleeved", noun) if w))
        else:
            tail = f" with {sleeve} sleeves" if sleeve else ""
            parts.append(" ".join(w for w in (colour("upper_color"), noun) if w) + tail)
    if "lower_color" in slots or "lower_length" in slots:
        length = slots.get("lower_length")
        words = [length or "", colour("lower_color"), rng.choice(["pants", "trousers", "jeans"])]
        if length == "short" and rng.random() < 0.5:
            words = [colour("lower_color"), "shorts"]
        parts.append(" ".join(w for w in words if w))
    if "shoe_color" in slots:
        parts.append(f"{colour('shoe_color')} {rng.choice(['shoes', 'sneakers', 'trainers', 'boots'])}")
    who = rng.choice(subject[gender]) if gender else "person"
    if not parts:
        return f"a {who}"
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"a {who} wearing {listed}"


def single_slots() -> Iterator[dict[str, str]]:
    for spec in PERSON.fields:
        for value in spec.values[1:]:
            yield {spec.name: value}


def combo_slots(records: Sequence[Record], n: int, seed: int) -> list[dict[str, str]]:
    """Slots of 2..6 known fields of randomly chosen records (so each has at least one exact match)."""
    rng = random.Random(seed)
    out: list[dict[str, str]] = []
    while len(out) < n:
        known = {k: v for k, v in rng.choice(records).fields.items() if v != UNKNOWN}
        if len(known) >= 2:
            names = rng.sample(sorted(known), rng.randint(2, len(known)))
            out.append({k: known[k] for k in PERSON.field_names if k in names})
    return out


@dataclass
class Check:
    engine: RetrievalEngine
    records: list[Record]

    def __post_init__(self) -> None:
        self.ids = np.array([r.record_id for r in self.records])
        self.columns = {name: np.array([r.fields[name] for r in self.records]) for name in PERSON.field_names}

    def run(self, slots: dict[str, str], text: str = "") -> list[str]:
        """Problems with one query (an empty list when the ranking holds)."""
        hit = np.logical_and.reduce([self.columns[k] == v for k, v in slots.items()])
        exact = set(self.ids[hit].tolist())
        top_k = min(MAX_TOP_K, len(exact) + MARGIN)
        query = Query(text=text, filters={} if text else slots, schema_id=PERSON.id, top_k=top_k)
        result = self.engine.query(query)
        where = f"{text!r}" if text else f"filters {slots}"
        if result.slots != slot_sets(slots):
            return [f"{where}: parsed {result.slots}, expected {slots}"]
        ids = [h.record.record_id for h in result.hits]
        head, tail = ids[: len(exact)], ids[len(exact) :]
        problems = []
        if len(ids) != min(top_k, len(self.records)):
            problems.append(f"{where}: {len(ids)} hits for top_k {top_k}")
        if not set(head) <= exact:
            problems.append(f"{where}: a non-match ranks among the first {len(exact)} (exact matches)")
        if len(exact) <= top_k and (set(head) != exact or set(tail) & exact):
            problems.append(f"{where}: exact matches missing from the head")
        contradicted = [bool(h.contradicted_slots) for h in result.hits]
        if contradicted != sorted(contradicted):
            problems.append(f"{where}: a contradicting record ranks before a non-contradicting one")
        for h in result.hits:
            truth = tuple(k for k in slots if h.record.fields[k] == slots[k])
            if h.matched_slots != truth:
                problems.append(
                    f"{where}: record {h.record.record_id} matched {h.matched_slots}, truth {truth}"
                )
                break
        return problems


def _encoder(kind: str) -> TextEncoder:
    if kind == "minilm":
        from tests.unit.test_retrieval_embed import minilm

        return minilm()
    return BagOfWordsEncoder()


@pytest.fixture(
    scope="module",
    params=[
        # Searches by description groups; test_retrieval_store checks they equal a full scan.
        pytest.param(("bag-of-words", 0), id="bag-of-words"),
        pytest.param(("minilm", 0), id="minilm-grouped", marks=pytest.mark.slow),
    ],
)
def check(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Check]:
    """An index of the PETA sample, grouped by description from the first search (regroup_after=0)."""
    kind, regroup_after = request.param
    if kind == "minilm":
        pytest.importorskip("sentence_transformers")
    records = peta_records(LABELS, N_RECORDS, SEED)
    path = tmp_path_factory.mktemp("peta") / "index.db"
    store = RecordStore(path, REGISTRY, regroup_after=regroup_after)
    engine = RetrievalEngine(REGISTRY, store, TemplateDescriber(), _encoder(kind))
    for i in range(0, len(records), 250):  # bursts, as the receiver delivers them
        engine.ingest(records[i : i + 250])
    assert store.count() == N_RECORDS
    yield Check(engine, records)
    store.close()


def test_single_attribute_queries(check: Check) -> None:
    rng = random.Random(SEED)
    problems: list[str] = []
    for slots in single_slots():
        problems += check.run(slots)
        problems += check.run(slots, query_text(slots, rng))
    assert not problems, "\n".join(problems[:20])


def test_multi_attribute_queries(check: Check) -> None:
    rng = random.Random(SEED + 1)
    problems: list[str] = []
    for slots in combo_slots(check.records, N_COMBOS, SEED):
        problems += check.run(slots)
        problems += check.run(slots, query_text(slots, rng))
    assert not problems, "\n".join(problems[:20])


def test_paper_query(check: Check) -> None:
    slots = {
        "gender": "male",
        "upper_color": "white",
        "sleeve": "long",
        "lower_color": "black",
        "shoe_color": "black",
    }
    assert not check.run(slots, "the man wearing a white long-sleeved shirt, black pants and black shoes")
