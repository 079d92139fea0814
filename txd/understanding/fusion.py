"""Fusing what was understood of one track from several of its crops into one belief per field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from semcom.schema import Schema
from txd.understanding.base import UNKNOWN, Understanding

# "product": the normalised product of the views' distributions, as if the views were independent
# evidence: views that agree sharpen the belief (two views at 0.7 give 0.84). "log_mean": the normalised
# geometric mean (the mean of their log probabilities): agreeing views keep their confidence, one
# confident outlier does not win alone. "mean": the arithmetic mean. "best": the single most confident
# view. Chosen on PETA's leave-one-subset-out predictions with `python -m bench.fusion_rule` (identities
# seen in several crops; see its docstring).
FusionRule = Literal["product", "log_mean", "mean", "best"]
FUSION_RULES: tuple[FusionRule, ...] = ("product", "log_mean", "mean", "best")


def fuse_rows(rows: NDArray[np.floating], rule: FusionRule) -> NDArray[np.float64]:
    """One distribution from the (views x classes) rows of per-view distributions."""
    p = np.clip(np.asarray(rows, dtype=np.float64), 1e-12, None)
    p = p / p.sum(axis=1, keepdims=True)
    if rule in ("product", "log_mean"):
        z = np.log(p).sum(axis=0) if rule == "product" else np.log(p).mean(axis=0)
        e = np.exp(z - z.max())
        fused: NDArray[np.float64] = e / e.sum()
    elif rule == "mean":
        fused = p.mean(axis=0)
    else:
        fused = p[int(np.argmax(p.max(axis=1)))]
    return fused


def fuse_with_evidence(
    probs: NDArray[np.floating], evidence: NDArray[np.floating], rule: FusionRule
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fuse (views x classes) answer distributions and the evidence abstention looks at, alike; "best"
    takes both from the one view whose evidence is the most confident."""
    if rule == "best":
        view = int(np.argmax(np.asarray(evidence).max(axis=1)))
        return fuse_rows(probs[view : view + 1], "mean"), fuse_rows(evidence[view : view + 1], "mean")
    return fuse_rows(probs, rule), fuse_rows(evidence, rule)


def vote(views: Sequence[Understanding], schema: Schema) -> Understanding:
    """Fusion for backends that give a value and a confidence but no distribution (a VLM): per field, the
    value with the largest summed confidence; its confidence is that sum over the views that answered."""
    fields: dict[str, str] = {}
    confidence: dict[str, float] = {}
    for spec in schema.fields:
        weight: dict[str, float] = {}
        for view in views:
            value = view.fields.get(spec.name, UNKNOWN)
            if value != UNKNOWN:
                weight[value] = weight.get(value, 0.0) + view.confidence.get(spec.name, 1.0)
        if not weight:
            fields[spec.name] = UNKNOWN
            confidence[spec.name] = 0.0
            continue
        value = max(weight, key=lambda v: weight[v])
        fields[spec.name] = value
        confidence[spec.name] = round(weight[value] / len(views), 4)
    return Understanding(fields=fields, confidence=confidence)
