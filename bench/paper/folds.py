"""Out-of-sample attribute models for a crop set: each subset is understood by the leave-one-subset-out
model that did not train on it, with prior weights and thresholds chosen on the other folds only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.attributes_loso import Fold, Setting, choose
from txd.understanding.attributes import HEADS, AttributesConfig, AttributeUnderstander
from txd.understanding.train_attributes import SUBSETS

# The abstention cap the shipped settings were chosen with (bench.attributes_loso --max-abstain).
MAX_ABSTAIN = 0.2
TRAIN_COMMAND = "python -m bench.attributes_loso --work {root}"


@dataclass(frozen=True)
class FoldModels:
    """The trained folds found in `root`: per held-out subset its weights and answer settings."""

    root: Path
    weights: dict[str, Path]
    settings: dict[str, dict[str, Setting]]
    missing: tuple[str, ...]  # subsets without a trained fold: their crops cannot be scored out of sample

    def understander(self, subset: str, base: AttributesConfig) -> AttributeUnderstander:
        """The fold model that did not train on `subset`, with `base`'s threads and batch size."""
        settings = self.settings[subset]
        config = base.model_copy(
            update={
                "weights": self.weights[subset],
                "prior_weights": {h: s.prior_weight for h, s in settings.items()},
                "abstain_thresholds": {h: s.threshold for h, s in settings.items()},
            }
        )
        return AttributeUnderstander(config)

    def describe(self) -> str:
        chosen = (
            "prior weights and thresholds chosen on the other folds' held-out predictions"
            if len(self.weights) > 1
            else "the shipped prior weights and thresholds (chosen on all eight folds' held-out predictions, "
            "this subset's included: no other fold to choose them on)"
        )
        left = (
            f"; no fold model for {', '.join(self.missing)}: their crops are left out" if self.missing else ""
        )
        return (
            f"out of sample: each crop scored by the fold model of {self.root} that did not train on its "
            f"subset ({', '.join(self.weights)}), {chosen}{left}"
        )


def find_fold_models(root: Path) -> FoldModels:
    """Every fold of `root` whose weights and held-out predictions are both written (a fold still being
    trained has neither or only its weights)."""
    done = [s for s in SUBSETS if (root / f"{s}.pt").is_file() and (root / f"{s}.predictions.npz").is_file()]
    folds = {s: Fold.load(root / f"{s}.predictions.npz") for s in done}
    settings: dict[str, dict[str, Setting]] = {}
    for subset in done:
        others = [f for name, f in folds.items() if name != subset]
        if others:
            settings[subset] = {h: choose(others, h, MAX_ABSTAIN) for h in HEADS}
        else:
            base = AttributesConfig()
            settings[subset] = {h: Setting(base.prior_weights[h], base.abstain_thresholds[h]) for h in HEADS}
    missing = tuple(s for s in SUBSETS if s not in done)
    return FoldModels(root, {s: root / f"{s}.pt" for s in done}, settings, missing)
