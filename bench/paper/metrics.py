"""Retrieval through rxd's engine and the metrics: precision (the paper's accuracy), recall, F1, spread."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rxd.retrieval.describe import Describer
from rxd.retrieval.embed import TextEncoder
from rxd.retrieval.engine import Query, RetrievalEngine
from rxd.retrieval.parse import QueryParser
from rxd.retrieval.store import RecordStore
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry

from .labels import relevant
from .queries import PaperQuery
from .schemes import CropDataset, VideoDataset


class MemoEncoder:
    """The functional head's encoder with every text's vector remembered: each (scheme, SNR) point indexes
    into a fresh engine, and re-embedding the same descriptions for each would dominate the run."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self._memo: dict[str, NDArray[np.float32]] = {}
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with self._lock:
            new = [t for t in dict.fromkeys(texts) if t not in self._memo]
            if new:
                self._memo.update(zip(new, self.inner.encode(new), strict=True))
            if not texts:
                return np.zeros((0, self.inner.dim), dtype=np.float32)
            return np.stack([self._memo[t] for t in texts]).astype(np.float32)


@dataclass(frozen=True)
class Receiver:
    """rxd's models as its config builds them: generating agent, functional head, query parser."""

    describer: Describer
    encoder: TextEncoder
    parser: QueryParser


@dataclass(frozen=True)
class QueryScore:
    """One query at one (scheme, SNR, seed): what came back and how right it was."""

    query_id: str
    retrieved: int
    correct: int
    relevant: int
    found: int
    precision: float
    recall: float
    f1: float
    parsed: dict[str, str]


def score(
    records: Sequence[Record],
    queries: Sequence[PaperQuery],
    dataset: VideoDataset | CropDataset,
    *,
    registry: SchemaRegistry,
    schema: Schema,
    receiver: Receiver,
    top_k: int,
    match: str = "exact",
) -> list[QueryScore]:
    """Index `records` in a fresh in-memory engine and run every query's text through its parser + ranking.

    Retrieved: among the top_k, the hits of the exact tier (every parsed slot matches), or with `match`
    "compatible" every hit with no parsed slot contradicted (unknown fields allowed). Precision: share of
    retrieved records showing a target that satisfies the query (0 when nothing is retrieved). Recall:
    share of the satisfying targets with at least one retrieved record, over min(satisfying targets, top_k).
    F1: their harmonic mean (0 when both are 0).
    """
    store = RecordStore(":memory:", registry)
    engine = RetrievalEngine(registry, store, receiver.describer, receiver.encoder, parser=receiver.parser)
    try:
        if records:
            engine.ingest(records)
        return [_score_one(engine, q, dataset, schema, top_k, match) for q in queries]
    finally:
        store.close()


def _score_one(
    engine: RetrievalEngine,
    query: PaperQuery,
    dataset: VideoDataset | CropDataset,
    schema: Schema,
    top_k: int,
    match: str,
) -> QueryScore:
    result = engine.query(Query(text=query.text, schema_id=schema.id, top_k=top_k))
    wanted = relevant(dataset.targets, query.slots)
    if not result.slots:
        retrieved = []
    elif match == "exact":
        retrieved = [h for h in result.hits if len(h.matched_slots) == len(result.slots)]
    else:
        retrieved = [h for h in result.hits if h.matched_slots and not h.contradicted_slots]
    shown = [dataset.target_of(h.record) for h in retrieved]
    correct = sum(1 for t in shown if t is not None and t in wanted)
    found = len({t for t in shown if t is not None and t in wanted})
    precision = correct / len(retrieved) if retrieved else 0.0
    recall = found / min(len(wanted), top_k) if wanted else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return QueryScore(
        query.query_id, len(retrieved), correct, len(wanted), found, precision, recall, f1, dict(result.slots)
    )


@dataclass(frozen=True)
class Summary:
    """Mean of a metric over queries (and seeds), with its standard error."""

    mean: float
    sem: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "sem": self.sem, "n": self.n}


METRICS = ("precision", "recall", "f1")


def summarise(scores: Sequence[QueryScore]) -> dict[str, Summary]:
    """Per metric: the mean over the given query scores and its standard error (std / sqrt(n), ddof=1)."""
    out = {}
    for metric in METRICS:
        values = np.array([getattr(s, metric) for s in scores], dtype=np.float64)
        values = values[~np.isnan(values)]
        n = int(values.size)
        mean = float(values.mean()) if n else math.nan
        sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        out[metric] = Summary(mean, sem, n)
    return out


def across_snr(per_snr: Mapping[float, Mapping[str, Summary]]) -> dict[str, dict[str, float]]:
    """Per metric: mean over the SNR points and robustness = population std (ddof=0) across them."""
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        means = np.array([s[metric].mean for s in per_snr.values()], dtype=np.float64)
        out[metric] = {"mean": float(np.nanmean(means)), "std": float(np.nanstd(means))}
    return out


def scores_to_dicts(scores: Sequence[QueryScore]) -> list[dict[str, Any]]:
    return [s.__dict__ for s in scores]
