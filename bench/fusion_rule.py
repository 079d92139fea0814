"""Choose how txd fuses the crops of one track, on PETA's leave-one-subset-out predictions.

PETA shows most identities in several crops (other frames, often other cameras of the same subset): the
closest thing to a track's views that has labels. For each held-out subset whose fold model is trained
(`python -m bench.attributes_loso --work DIR`), every identity with at least `k` crops is understood from `k`
of them (seeded choice) by the fold model that never saw the subset, with the prior weights chosen on the
other folds, and the views are fused by each rule of txd.understanding.fusion. The score is the balanced
accuracy of the fused answer per attribute, abstaining as txd does (thresholds chosen on the other folds;
an abstention counts as wrong; the abstention rate is printed in brackets), averaged over attributes and
then over subsets; one crop per identity is the baseline. Videos are never used here, so the shared MOT
sequences stay a test of the choice.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.attributes_loso import Fold, Setting, score
from bench.paper.folds import find_fold_models
from semcom.data import data_dir
from txd.understanding.attributes import HEADS
from txd.understanding.fusion import FUSION_RULES, fuse_with_evidence


def identities(subset: str) -> list[str]:
    """The person id of each crop of `subset`, in the order of the fold's predictions (the CSV's)."""
    with (data_dir() / "peta" / "peta_labels.csv").open(newline="", encoding="utf-8") as f:
        return [row["person_id"] for row in csv.DictReader(f) if row["subset"] == subset]


def fused_scores(
    fold: Fold, people: Sequence[str], settings: dict[str, Setting], k: int, seed: int
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per rule ("single" for one crop), per head: (balanced accuracy with abstentions counted wrong,
    abstention rate) of the fused answers, abstaining as txd does (fused balanced evidence below the
    head's threshold, chosen on the other folds)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for row, person in enumerate(people):
        groups[person].append(row)
    rng = np.random.default_rng(seed)
    chosen = [list(rng.permutation(rows)[:k]) for rows in groups.values() if len(rows) >= k]
    out: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for head in HEADS:
        probs = fold.probs(head, settings[head].prior_weight)
        evidence = fold.probs(head, 0.0)
        targets = np.stack([fold.targets[head][rows[0]] for rows in chosen])
        answers = {
            "single": (_rows(probs, [r[:1] for r in chosen]), _rows(evidence, [r[:1] for r in chosen]))
        }
        for rule in FUSION_RULES:
            pairs = [fuse_with_evidence(probs[rows], evidence[rows], rule) for rows in chosen]
            answers[rule] = (
                np.stack([p for p, _ in pairs]).astype(np.float32),
                np.stack([e for _, e in pairs]).astype(np.float32),
            )
        for name, (fused, seen) in answers.items():
            result = score(fused, targets, settings[head].threshold, seen)
            out[name][head] = (result.bacc_all, result.abstain) if result is not None else (np.nan, np.nan)
    return out


def _rows(probs: NDArray[np.float32], chosen: Sequence[Sequence[int]]) -> NDArray[np.float32]:
    return np.stack([probs[rows[0]] for rows in chosen]).astype(np.float32)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fusion_rule", description=__doc__)
    p.add_argument("--work", type=Path, default=Path("var/attributes_loso"), help="trained folds")
    p.add_argument("--views", type=int, nargs="+", default=[2, 3], help="crops fused per identity")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    models = find_fold_models(args.work)
    if not models.weights:
        raise SystemExit(
            f"no trained fold in {args.work}: run python -m bench.attributes_loso --work {args.work}"
        )
    print(
        f"folds: {', '.join(models.weights)}"
        + (f"; missing {', '.join(models.missing)}" if models.missing else "")
    )
    for k in args.views:
        table: dict[str, list[NDArray[np.floating]]] = defaultdict(list)
        for subset in models.weights:
            fold = Fold.load(args.work / f"{subset}.predictions.npz")
            people = identities(subset)
            n = sum(1 for c in _counts(people).values() if c >= k)
            if n == 0:
                print(f"k={k} {subset:<12}    0 identities seen in {k} crops: left out")
                continue
            scores = fused_scores(fold, people, models.settings[subset], k, args.seed)
            means = {rule: np.nanmean(list(s.values()), axis=0) for rule, s in scores.items()}
            row = "  ".join(f"{rule} {m[0]:.3f} ({m[1]:.0%})" for rule, m in means.items())
            print(f"k={k} {subset:<12} {n:>4} identities: {row}")
            for rule, m in means.items():
                table[rule].append(m)
        summary = "  ".join(
            f"{rule} {np.mean(v, axis=0)[0]:.3f} ({np.mean(v, axis=0)[1]:.0%})" for rule, v in table.items()
        )
        print(f"k={k} mean over subsets: {summary}")


def _counts(people: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for person in people:
        counts[person] += 1
    return counts


if __name__ == "__main__":
    main()
