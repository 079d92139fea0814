"""Leave-one-subset-out evaluation of the CPU attribute model on PETA, beside majority-class baselines."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from semcom.data import data_dir
from txd.understanding.attributes import HEADS
from txd.understanding.train_attributes import SUBSETS, run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """One attribute on one held-out subset; `*_answered` skip abstentions, `*_all` count them as errors."""

    n: int
    abstain: float
    acc_answered: float
    acc_all: float
    bacc_answered: float
    bacc_all: float
    base_acc: float
    base_bacc: float


def balanced_accuracy(primary: NDArray[np.int64], correct: NDArray[np.bool_]) -> float:
    """Mean over the classes present (by first listed colour) of the share predicted correctly."""
    classes = np.unique(primary)
    if not len(classes):
        return float("nan")
    return float(np.mean([correct[primary == c].mean() for c in classes]))


def score(
    prob: NDArray[np.float32],
    target: NDArray[np.float32],
    threshold: float,
    evidence: NDArray[np.float32] | None = None,
) -> Scores | None:
    """A prediction counts as correct when it is any of the listed colours ("black|white": black or white);
    for per-class recall a multi-colour crop belongs to its first listed colour (PETA lists them in
    alphabetical order). Unlabelled crops (no colour, sleeve "none", length "mid") are left out. A crop is
    answered when the top of `evidence` (default: `prob`) reaches the threshold."""
    labelled = target.sum(axis=1) > 0
    prob, target = prob[labelled], target[labelled]
    evidence = prob if evidence is None else evidence[labelled]
    n = len(target)
    if n == 0:
        return None
    pred = prob.argmax(axis=1)
    answered = evidence.max(axis=1) >= threshold
    correct = target[np.arange(n), pred] > 0
    primary = target.argmax(axis=1)
    majority = int(np.bincount(primary, minlength=target.shape[1]).argmax())
    base_correct = target[:, majority] > 0
    return Scores(
        n=n,
        abstain=float(1.0 - answered.mean()),
        acc_answered=float(correct[answered].mean()) if answered.any() else float("nan"),
        acc_all=float((correct & answered).mean()),
        bacc_answered=balanced_accuracy(primary[answered], correct[answered]),
        bacc_all=balanced_accuracy(primary, correct & answered),
        base_acc=float(base_correct.mean()),
        base_bacc=balanced_accuracy(primary, base_correct),
    )


@dataclass(frozen=True)
class Fold:
    """One held-out subset's balanced logits, training log-priors and targets, per head."""

    logits: dict[str, NDArray[np.float32]]
    priors: dict[str, NDArray[np.float32]]
    targets: dict[str, NDArray[np.float32]]

    @classmethod
    def load(cls, path: Path) -> Fold:
        with np.load(path) as z:
            return cls(
                {h: z[f"logit_{h}"] for h in HEADS},
                {h: z[f"prior_{h}"] for h in HEADS},
                {h: z[f"target_{h}"] for h in HEADS},
            )

    def probs(self, head: str, prior_weight: float) -> NDArray[np.float32]:
        z = self.logits[head] + prior_weight * self.priors[head]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        out: NDArray[np.float32] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return out


@dataclass(frozen=True)
class Setting:
    """How one head answers: share of the log-prior added back, and the abstention threshold."""

    prior_weight: float
    threshold: float


PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def choose(folds: Sequence[Fold], head: str, max_abstain: float) -> Setting:
    """Settings from calibration folds only (subsets weighted equally). The prior weight maximises plain +
    balanced accuracy without abstention (both matter: plain accuracy is what a majority guess games,
    balanced accuracy what it cannot); the threshold then maximises balanced accuracy over the answered
    crops among the thresholds that abstain on at most `max_abstain` of them."""

    def mean(weight: float, threshold: float) -> tuple[float, float, float]:
        rows = [
            s
            for f in folds
            if (s := score(f.probs(head, weight), f.targets[head], threshold, f.probs(head, 0.0)))
        ]
        return (
            float(np.nanmean([r.acc_answered + r.bacc_answered for r in rows])),
            float(np.nanmean([r.bacc_answered for r in rows])),
            float(np.mean([r.abstain for r in rows])),
        )

    weight = max(PRIOR_WEIGHTS, key=lambda w: mean(w, 0.0)[0])
    k = len(HEADS[head])
    best, best_bacc = 0.0, -1.0
    for threshold in np.round(np.linspace(1.0 / k, 0.95, 64), 4):
        _, bacc, abstain = mean(weight, float(threshold))
        if abstain <= max_abstain and bacc > best_bacc:
            best, best_bacc = float(threshold), bacc
    return Setting(weight, best)


def evaluate(fold: Fold, settings: Mapping[str, Setting]) -> dict[str, Scores | None]:
    return {
        h: score(fold.probs(h, s.prior_weight), fold.targets[h], s.threshold, fold.probs(h, 0.0))
        for h, s in settings.items()
    }


_HEADER = (
    f"{'subset':<12} {'attribute':<13} {'n':>5} {'abst':>5} | {'acc':>5} {'acc*':>5} {'base':>5} | "
    f"{'bacc':>5} {'bacc*':>5} {'base':>5}"
)


def _row(subset: str, head: str, s: Scores) -> str:
    return (
        f"{subset:<12} {head:<13} {s.n:>5} {s.abstain:>5.2f} | {s.acc_answered:>5.3f} {s.acc_all:>5.3f} "
        f"{s.base_acc:>5.3f} | {s.bacc_answered:>5.3f} {s.bacc_all:>5.3f} {s.base_bacc:>5.3f}"
    )


def table(results: Mapping[str, Mapping[str, Scores | None]]) -> str:
    """Per subset and attribute, then the mean over subsets (each subset weighted equally)."""
    lines = [
        "acc/bacc: over answered crops; acc*/bacc*: abstentions counted as errors; base: majority class of "
        "the held-out subset; bacc = mean recall over the classes present (mA)",
        _HEADER,
    ]
    for subset, per_head in results.items():
        lines += [_row(subset, h, s) for h, s in per_head.items() if s is not None]
    lines.append("-" * len(_HEADER))
    means = []
    for head in HEADS:
        rows = [s for r in results.values() if (s := r[head]) is not None]
        if not rows:
            continue
        avg = {f: float(np.nanmean([getattr(r, f) for r in rows])) for f in Scores.__dataclass_fields__}
        mean = Scores(**{**avg, "n": sum(r.n for r in rows)})  # type: ignore[arg-type]
        means.append(mean)
        lines.append(_row("MEAN", head, mean))
    lines.append(
        f"{'MEAN':<12} {'all':<13} {'':>5} {np.mean([m.abstain for m in means]):>5.2f} | "
        f"{np.mean([m.acc_answered for m in means]):>5.3f} {np.mean([m.acc_all for m in means]):>5.3f} "
        f"{np.mean([m.base_acc for m in means]):>5.3f} | {np.mean([m.bacc_answered for m in means]):>5.3f} "
        f"{np.mean([m.bacc_all for m in means]):>5.3f} {np.mean([m.base_bacc for m in means]):>5.3f}"
    )
    return "\n".join(lines)


def cross_fitted(folds: Mapping[str, Fold], max_abstain: float) -> dict[str, dict[str, Scores | None]]:
    """Each held-out subset scored with settings chosen on the other folds' held-out predictions only: its
    own labels and predictions never pick its threshold."""
    results: dict[str, dict[str, Scores | None]] = {}
    for subset, fold in folds.items():
        others = [f for name, f in folds.items() if name != subset]
        results[subset] = evaluate(fold, {h: choose(others, h, max_abstain) for h in HEADS})
    return results


def speed(n: int = 200) -> float:
    """Crops per second through the shipped model's full inference path (one torch thread)."""
    import time

    import cv2

    from txd.understanding.attributes import AttributesConfig, AttributeUnderstander

    root = data_dir() / "peta"
    paths = sorted((root / "images").glob("*/*.jpg"))[:: max(1, 10_000 // n)][:n]
    crops = [np.asarray(cv2.imread(str(p), cv2.IMREAD_COLOR), np.uint8) for p in paths]
    model = AttributeUnderstander(AttributesConfig(threads=1))
    model.predict(crops[:8])  # load and warm up
    start = time.perf_counter()
    model.predict(crops)
    elapsed = time.perf_counter() - start
    asyncio.run(model.aclose())
    return len(crops) / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=data_dir() / "peta", help="PETA folder")
    parser.add_argument("--work", type=Path, default=Path("var/attributes_loso"), help="per-fold outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--retrain", action="store_true", help="train folds even when predictions exist")
    parser.add_argument("--subsets", nargs="*", default=list(SUBSETS), choices=SUBSETS)
    parser.add_argument(
        "--max-abstain", type=float, default=0.2, help="abstention cap when choosing thresholds"
    )
    parser.add_argument("--speed", action="store_true", help="only time 200 crops through the shipped model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.speed:
        print(f"shipped model, one thread: {speed():.1f} crops/s")
        return
    folds: dict[str, Fold] = {}
    for subset in args.subsets:
        weights = args.work / f"{subset}.pt"
        predictions = weights.with_suffix(".predictions.npz")
        if args.retrain or not predictions.is_file():
            log.info("training without %s", subset)
            run(
                args.data,
                weights,
                holdout=subset,
                seed=args.seed,
                epochs=args.epochs,
                cache_dir=Path("var/cache"),
            )
        folds[subset] = Fold.load(predictions)
    print(table(cross_fitted(folds, args.max_abstain)))
    shipped = {h: choose(list(folds.values()), h, args.max_abstain) for h in HEADS}
    print("settings for the model trained on all these subsets (chosen on all folds):")
    for head, setting in shipped.items():
        print(f"  {head:<13} prior weight {setting.prior_weight:.2f}  threshold {setting.threshold:.4f}")


if __name__ == "__main__":
    main()
