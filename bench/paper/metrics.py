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

from .labels import Target, relevant
from .queries import PaperQuery


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
    """One query at one (scheme, SNR, seed): what came back and how right it was.

    `relevant` counts the satisfying targets in the ground truth (the query's positives), `relevant_records`
    the indexed records showing one; `unmatched` the retrieved records left out of precision because they
    show no labelled target (partial ground truth only). `pr` is the 11-point interpolated precision at
    record recall 0, 0.1, ..., 1 over the ranked hits.
    """

    query_id: str
    retrieved: int
    correct: int
    relevant: int
    found: int
    precision: float
    recall: float
    f1: float
    parsed: dict[str, tuple[str, ...]]
    unmatched: int = 0
    relevant_records: int = 0
    precision_answered: float = math.nan  # precision where something was retrieved, else NaN
    precision_at_1: float = math.nan
    precision_at_5: float = math.nan
    precision_at_10: float = math.nan
    average_precision: float = math.nan
    pr: tuple[float, ...] = ()


RECALL_LEVELS = tuple(i / 10 for i in range(11))


def ranked_metrics(hits: Sequence[bool], total_relevant: int, positives: int) -> dict[str, Any]:
    """Precision@1/5/10 (a short list counts as misses), average precision over the relevant records in
    the collection (one never ranked adds 0) and the 11-point interpolated precision-recall curve of one
    ranked list; every value is NaN when the ground truth has no positive for the query, 0 when it has some
    but no relevant record reached the index."""
    if positives == 0:
        nan = math.nan
        return {
            "precision_at_1": nan,
            "precision_at_5": nan,
            "precision_at_10": nan,
            "average_precision": nan,
            "pr": tuple(nan for _ in RECALL_LEVELS),
        }
    rel = np.asarray(hits, dtype=bool)
    cum = np.cumsum(rel)
    ranks = np.arange(1, len(rel) + 1)
    at = {f"precision_at_{k}": float(cum[:k][-1] / k) if len(rel) else 0.0 for k in (1, 5, 10)}
    if total_relevant == 0 or not rel.any():
        return {**at, "average_precision": 0.0, "pr": tuple(0.0 for _ in RECALL_LEVELS)}
    precision = cum / ranks
    ap = float(precision[rel].sum() / total_relevant)
    recall = cum / total_relevant
    curve = tuple(
        float(precision[recall >= level].max()) if (recall >= level).any() else 0.0 for level in RECALL_LEVELS
    )
    return {**at, "average_precision": ap, "pr": curve}


def score(
    records: Sequence[Record],
    shows: Mapping[int, int | None],
    queries: Sequence[PaperQuery],
    targets: Sequence[Target],
    *,
    registry: SchemaRegistry,
    schema: Schema,
    receiver: Receiver,
    top_k: int,
    match: str = "exact",
    partial: bool = False,
) -> list[QueryScore]:
    """Index `records` in a fresh in-memory engine and run every query's text through its parser + ranking.

    `shows` maps a record id to the target its keyframe shows (None: no labelled target). Retrieved: among
    the top_k, the hits of the exact tier (every parsed slot matches), or with `match` "compatible" every
    hit with no parsed slot contradicted (unknown fields allowed). A retrieved record is correct when the
    target it shows satisfies the query; one showing no target is wrong, or with `partial` left out.
    Precision: share of retrieved records that are correct (0 when nothing is retrieved). Recall: share of
    the satisfying targets with at least one correct retrieved record, over min(satisfying targets, top_k).
    F1: their harmonic mean (0 when both are 0). Ranked metrics: over every hit in the engine's order.
    """
    store = RecordStore(":memory:", registry)
    engine = RetrievalEngine(registry, store, receiver.describer, receiver.encoder, parser=receiver.parser)
    try:
        if records:
            engine.ingest(records)
        shown = {r.record_id: shows.get(r.record_id) for r in records}
        return [_score_one(engine, q, shown, targets, schema, top_k, match, partial) for q in queries]
    finally:
        store.close()


def _score_one(
    engine: RetrievalEngine,
    query: PaperQuery,
    shows: Mapping[int, int | None],
    targets: Sequence[Target],
    schema: Schema,
    top_k: int,
    match: str,
    partial: bool,
) -> QueryScore:
    result = engine.query(Query(text=query.text, schema_id=schema.id, top_k=top_k))
    wanted = relevant(targets, query.slots)
    if not result.slots:
        tier = []
    elif match == "exact":
        tier = [h for h in result.hits if len(h.matched_slots) == len(result.slots)]
    else:
        tier = [h for h in result.hits if h.matched_slots and not h.contradicted_slots]
    # Partial ground truth: a record showing no labelled target may show an unlabelled person; leave it out.
    retrieved = [h for h in tier if not (partial and shows.get(h.record.record_id) is None)]
    shown = [shows.get(h.record.record_id) for h in retrieved]
    correct = sum(1 for t in shown if t is not None and t in wanted)
    found = len({t for t in shown if t is not None and t in wanted})
    precision = correct / len(retrieved) if retrieved else 0.0
    recall = found / min(len(wanted), top_k) if wanted else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    ranked_shows = [shows.get(h.record.record_id) for h in result.hits]
    ranked_list = [t is not None and t in wanted for t in ranked_shows if not (partial and t is None)]
    total = sum(1 for t in shows.values() if t is not None and t in wanted)
    ranked = ranked_metrics(ranked_list, total, len(wanted))
    return QueryScore(
        query.query_id,
        len(retrieved),
        correct,
        len(wanted),
        found,
        precision,
        recall,
        f1,
        dict(result.slots),
        unmatched=len(tier) - len(retrieved),
        precision_answered=precision if retrieved else math.nan,
        relevant_records=total,
        **ranked,
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
# Precision over the queries that retrieved something: what was retrieved was right (the paper's precision
# counts an empty answer as 0, which mixes what perception missed into it).
ANSWERED = "precision_answered"
RANKED = ("precision_at_1", "precision_at_5", "precision_at_10", "average_precision")
ALL_METRICS = (*METRICS, ANSWERED, *RANKED)


def summarise(scores: Sequence[QueryScore], min_positives: int = 1) -> dict[str, Summary]:
    """Per metric: the mean over the given query scores and its standard error (std / sqrt(n), ddof=1).

    Precision, recall and F1 average every query; the ranked metrics only the queries with at least
    `min_positives` satisfying targets (fewer cap precision@k below 1: see `summarise_few`).
    """
    out = {m: _summary([getattr(s, m) for s in scores]) for m in (*METRICS, ANSWERED)}
    many = [s for s in scores if s.relevant >= min_positives]
    out.update({m: _summary([getattr(s, m) for s in many]) for m in RANKED})
    return out


def summarise_few(scores: Sequence[QueryScore], min_positives: int) -> dict[str, Summary]:
    """Every metric over the queries with fewer than `min_positives` satisfying targets, reported apart."""
    few = [s for s in scores if 0 < s.relevant < min_positives]
    return {m: _summary([getattr(s, m) for s in few]) for m in ALL_METRICS}


def _summary(raw: Sequence[float]) -> Summary:
    values = np.array(raw, dtype=np.float64)
    values = values[~np.isnan(values)]
    n = int(values.size)
    mean = float(values.mean()) if n else math.nan
    sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return Summary(mean, sem, n)


def across_snr(per_snr: Mapping[float, Mapping[str, Summary]]) -> dict[str, dict[str, float]]:
    """Per metric: mean over the SNR points and robustness = population std (ddof=0) across them."""
    out: dict[str, dict[str, float]] = {}
    metrics = next(iter(per_snr.values()), {})
    for metric in metrics:
        means = np.array([s[metric].mean for s in per_snr.values()], dtype=np.float64)
        if np.isnan(means).all():
            out[metric] = {"mean": math.nan, "std": math.nan}
        else:
            out[metric] = {"mean": float(np.nanmean(means)), "std": float(np.nanstd(means))}
    return out


def mean_pr_curve(scores: Sequence[QueryScore], min_positives: int = 1) -> list[float]:
    """The 11-point interpolated precision-recall curve averaged over the queries with enough positives."""
    curves = [s.pr for s in scores if s.relevant >= min_positives and s.pr and not math.isnan(s.pr[0])]
    if not curves:
        return [math.nan] * len(RECALL_LEVELS)
    return [float(v) for v in np.mean(np.array(curves, dtype=np.float64), axis=0)]


def scores_to_dicts(scores: Sequence[QueryScore]) -> list[dict[str, Any]]:
    return [s.__dict__ for s in scores]
