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
from collections.abc import Mapping, Sequence
from pathlib import Path

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


if __name__ == "__main__":
    main()
