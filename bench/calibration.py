"""Temperature per attribute head, fitted on leave-one-subset-out predictions; ECE before and after, held out.

Each held-out subset is scored with temperatures fitted on the OTHER folds' held-out predictions only, so
its own labels never choose its temperature; the shipped temperatures are fitted on every fold present.
The probabilities calibrated are the ones txd decides and reports confidence from: softmax of the balanced
logits plus the shipped prior weight times the training log-prior, divided by the head's temperature.
A crop counts as correct when the top class is any of its listed labels; unlabelled crops are left out.

    python -m bench.calibration            # every var/attributes_loso/*.predictions.npz present
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.attributes_loso import Fold
from txd.understanding.attributes import DEFAULT_PRIOR_WEIGHTS, HEADS

ECE_BINS = 15
# Log-spaced grid, then a finer one around the best: the NLL is unimodal in T, and 3 decimals suffice.
_GRID = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))


def _labelled(fold: Fold, head: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(adjusted logits, multi-hot targets) of the labelled crops of one head."""
    target = fold.targets[head].astype(np.float64)
    keep = target.sum(axis=1) > 0
    z = fold.logits[head].astype(np.float64) + DEFAULT_PRIOR_WEIGHTS.get(head, 0.0) * fold.priors[head]
    return z[keep], target[keep]


def softmax(z: NDArray[np.float64], temperature: float) -> NDArray[np.float64]:
    s = z / temperature
    e = np.exp(s - s.max(axis=1, keepdims=True))
    out: NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def nll(z: NDArray[np.float64], target: NDArray[np.float64], temperature: float) -> float:
    """Mean negative log of the probability given to any of the crop's listed labels."""
    p = (softmax(z, temperature) * (target > 0)).sum(axis=1)
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def ece(z: NDArray[np.float64], target: NDArray[np.float64], temperature: float) -> float:
    """Expected calibration error of the top probability, in ECE_BINS equal-width bins."""
    p = softmax(z, temperature)
    conf = p.max(axis=1)
    correct = target[np.arange(len(p)), p.argmax(axis=1)] > 0
    bins = np.minimum((conf * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    total = 0.0
    for b in range(ECE_BINS):
        inside = bins == b
        if inside.any():
            total += inside.mean() * abs(conf[inside].mean() - correct[inside].mean())
    return float(total)


def fit_temperature(folds: Sequence[Fold], head: str) -> float:
    """The temperature minimising the pooled NLL of `folds` (subsets weighted by their crop counts)."""
    parts = [_labelled(f, head) for f in folds]
    z = np.concatenate([p[0] for p in parts])
    target = np.concatenate([p[1] for p in parts])
    coarse = min(_GRID, key=lambda t: nll(z, target, float(t)))
    fine = np.linspace(coarse / 1.06, coarse * 1.06, 41)
    return round(float(min(fine, key=lambda t: nll(z, target, float(t)))), 3)


def cross_fitted(folds: Mapping[str, Fold]) -> list[tuple[str, str, int, float, float, float]]:
    """(subset, head, crops, temperature, ECE at T=1, ECE at T) per held-out subset and head."""
    rows = []
    for subset, fold in folds.items():
        others = [f for name, f in folds.items() if name != subset]
        for head in HEADS:
            z, target = _labelled(fold, head)
            if not len(z):
                continue
            t = fit_temperature(others, head)
            rows.append((subset, head, len(z), t, ece(z, target, 1.0), ece(z, target, t)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("var/attributes_loso"), help="per-fold outputs")
    parser.add_argument("--seed", type=int, default=0, help="crop order and two-attribute query sample")
    parser.add_argument("--min-positives", type=int, default=5, help="relevant crops a query needs")
    parser.add_argument("--pairs", type=int, default=60, help="two-attribute queries per subset (sampled)")
    args = parser.parse_args(argv)
    folds = {p.name.split(".")[0]: Fold.load(p) for p in sorted(args.work.glob("*.predictions.npz"))}
    if len(folds) < 2:
        raise SystemExit(f"need at least two folds' predictions in {args.work}, found {sorted(folds)}")
    print(f"folds: {', '.join(folds)}; each subset's temperatures fitted on the other folds only")
    print(f"{'held out':<12} {'head':<13} {'crops':>6} {'T':>6} {'ECE T=1':>8} {'ECE T':>7}")
    rows = cross_fitted(folds)
    for subset, head, n, t, before, after in rows:
        print(f"{subset:<12} {head:<13} {n:>6} {t:>6.3f} {before:>8.4f} {after:>7.4f}")
    print(
        f"{'MEAN':<12} {'all':<13} {'':>6} {'':>6} {np.mean([r[4] for r in rows]):>8.4f} "
        f"{np.mean([r[5] for r in rows]):>7.4f}"
    )
    shipped = {h: fit_temperature(list(folds.values()), h) for h in HEADS}
    print("temperatures for the shipped model (fitted on all folds above):")
    print("  " + ", ".join(f'"{h}": {t}' for h, t in shipped.items()))
    print(
        "\nranked answers on the held-out crops through rxd's engine (one record per crop, temperatures"
        "\nfrom the other folds; exact: hits whose sent values match every slot; p>=.5: probability >= 0.5)"
    )
    print(f"{'held out':<12} {'system':<30} {'slots':>5} {'P@10':>6} {'AP':>6} {'exact P':>8} {'R':>6} "
          f"{'p>=.5 P':>8} {'R':>6}")  # fmt: skip
    for subset, label, slots, m in ranking_rows(folds, args.seed, args.min_positives, args.pairs):
        print(
            f"{subset:<12} {label:<30} {slots:>5} {m['p10']:>6.3f} {m['ap']:>6.3f} {m['exact_p']:>8.3f} "
            f"{m['exact_r']:>6.3f} {m['p50_p']:>8.3f} {m['p50_r']:>6.3f}"
        )


class _FlatEncoder:
    """Every description the same unit vector: filter-only queries then tie on similarity, and records of
    one tier order by recency, which the seeded shuffle of the crops makes random."""

    dim = 8

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out


def _records(fold: Fold, temps: Mapping[str, float], schema_id: str, seed: int) -> list[Any]:
    """One record per held-out crop: txd's decision (argmax, abstaining below the shipped threshold on
    the balanced posterior) with the calibrated top probability as its confidence."""
    from semcom.record import UNKNOWN, Record
    from txd.understanding.attributes import DEFAULT_THRESHOLDS

    n = len(next(iter(fold.logits.values())))
    fields: list[dict[str, str]] = [{} for _ in range(n)]
    conf: list[dict[str, float]] = [{} for _ in range(n)]
    for head, vocab in HEADS.items():
        z = fold.logits[head].astype(np.float64) + DEFAULT_PRIOR_WEIGHTS.get(head, 0.0) * fold.priors[head]
        p = softmax(z, temps.get(head, 1.0))
        answered = softmax(fold.logits[head].astype(np.float64), 1.0).max(axis=1) >= DEFAULT_THRESHOLDS[head]
        for i in range(n):
            fields[i][head] = vocab[int(p[i].argmax())] if answered[i] else UNKNOWN
            if answered[i]:
                conf[i][head] = float(p[i].max())
    order = np.random.default_rng(seed).permutation(n)
    return [
        Record(schema_id, "crops", int(i), k + 1, 1_800_000_000.0 + k, 0, fields[i], conf[i])
        for k, i in enumerate(order)
    ]


def _queries(fold: Fold, min_positives: int, max_pairs: int, seed: int) -> list[dict[str, str]]:
    """Single-attribute queries with enough positives, and a seeded sample of two-attribute ones."""
    singles = [
        {head: vocab[v]}
        for head, vocab in HEADS.items()
        for v in range(len(vocab))
        if (fold.targets[head][:, v] > 0).sum() >= min_positives
    ]
    pairs = [
        {**a, **b}
        for i, a in enumerate(singles)
        for b in singles[i + 1 :]
        if set(a) != set(b) and _relevant(fold, {**a, **b}).sum() >= min_positives
    ]
    rng = np.random.default_rng(seed)
    picked: Any = rng.choice(len(pairs), min(max_pairs, len(pairs)), replace=False) if pairs else []
    return singles + [pairs[int(i)] for i in picked]


def _relevant(fold: Fold, query: Mapping[str, str]) -> NDArray[np.bool_]:
    rel = np.ones(len(next(iter(fold.targets.values()))), dtype=np.bool_)
    for head, value in query.items():
        rel &= fold.targets[head][:, HEADS[head].index(value)] > 0
    return rel


def _labelled_for(fold: Fold, query: Mapping[str, str]) -> NDArray[np.bool_]:
    keep = np.ones(len(next(iter(fold.targets.values()))), dtype=np.bool_)
    for head in query:
        keep &= fold.targets[head].sum(axis=1) > 0
    return keep


def _system_records(records: list[Any], schema_id: str, mode: str) -> list[Any]:
    """Records as one system sends them: no confidence, the quantised level, or the full probability."""
    from semcom.schema import SchemaRegistry

    if mode == "hard":
        return [dataclasses.replace(r, confidence={}) for r in records]
    if mode == "full":
        return records
    schema = SchemaRegistry.builtin().get(schema_id)

    def level(name: str, c: float) -> float:
        spec = schema.field(name)
        return spec.confidence_value(spec.confidence_code(c)) or 0.0

    return [
        dataclasses.replace(r, confidence={k: level(k, c) for k, c in r.confidence.items()}) for r in records
    ]


def _score(hits: Sequence[Any], rel: NDArray[np.bool_], keep: NDArray[np.bool_]) -> dict[str, float]:
    """P@10, AP and the precision and recall of two answer sets of one query's ranked hits (crops without
    a label for a queried field are left out)."""
    ranked = [h for h in hits if keep[h.record.track_id]]
    flags = np.array([rel[h.record.track_id] for h in ranked], dtype=np.float64)
    total = float((rel & keep).sum())
    out = {"p10": float(flags[:10].mean()) if len(flags) else 0.0}
    precision_at = np.cumsum(flags) / np.arange(1, len(flags) + 1)
    out["ap"] = float((flags * precision_at).sum() / total) if total else 0.0
    exact = np.array([not h.unknown_slots and not h.contradicted_slots for h in ranked], dtype=np.bool_)
    sure = np.array([h.probability >= 0.5 for h in ranked], dtype=np.bool_)
    for key, chosen in (("exact", exact), ("p50", sure)):
        out[f"{key}_p"] = float(flags[chosen].mean()) if chosen.any() else float("nan")
        out[f"{key}_r"] = float(flags[chosen].sum() / total) if total else float("nan")
    return out


SYSTEMS = (
    ("hard answers, person/1", "person/1", "hard"),
    ("ranked, 2-bit conf, person/2", "person/2", "quantised"),
    ("ranked, unquantised conf", "person/1", "full"),
)


def ranking_rows(
    folds: Mapping[str, Fold], seed: int, min_positives: int, max_pairs: int
) -> list[tuple[str, str, int, dict[str, float]]]:
    """(subset, system, slots, mean metrics) per held-out subset and system (see `_score`)."""
    from rxd.retrieval.describe import TemplateDescriber
    from rxd.retrieval.engine import Query, RetrievalEngine
    from rxd.retrieval.store import RecordStore
    from semcom.schema import SchemaRegistry

    registry = SchemaRegistry.builtin()
    rows = []
    for subset, fold in folds.items():
        temps = {h: fit_temperature([f for name, f in folds.items() if name != subset], h) for h in HEADS}
        queries = _queries(fold, min_positives, max_pairs, seed)
        for label, schema_id, mode in SYSTEMS:
            engine = RetrievalEngine(
                registry, RecordStore(":memory:", registry), TemplateDescriber(), _FlatEncoder()
            )
            engine.ingest(_system_records(_records(fold, temps, schema_id, seed), schema_id, mode))
            for slots in (1, 2):
                scores = [
                    _score(
                        engine.query(Query(filters=dict(q), schema_id=schema_id, top_k=1000)).hits,
                        _relevant(fold, q),
                        _labelled_for(fold, q),
                    )
                    for q in queries
                    if len(q) == slots
                ]
                mean = {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
                rows.append((subset, label, slots, mean))
    return rows


if __name__ == "__main__":
    main()
