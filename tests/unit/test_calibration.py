"""Calibrated confidence: temperatures keep every decision, lower ECE on a miscalibrated head, and NaN
probabilities from a model make a field abstain rather than crash."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.attributes_loso import Fold
from bench.calibration import ece, fit_temperature, softmax
from semcom.record import UNKNOWN
from semcom.schema import SchemaRegistry
from txd.understanding.attributes import DEFAULT_TEMPERATURES, DEFAULT_THRESHOLDS, HEADS, decide, fuse_views


def _overconfident_fold(seed: int, n: int = 4000) -> Fold:
    """Logits three times too sharp: the true class wins with softmax(z / 3), so T = 3 calibrates."""
    rng = np.random.default_rng(seed)
    logits, targets, priors = {}, {}, {}
    for head, vocab in HEADS.items():
        k = len(vocab)
        z = rng.normal(0.0, 1.5, size=(n, k))
        p = softmax(z, 1.0)
        truth = np.array([rng.choice(k, p=row) for row in p])
        logits[head] = (3.0 * z).astype(np.float32)
        targets[head] = np.eye(k, dtype=np.float32)[truth]
        priors[head] = np.zeros(k, dtype=np.float32)
    return Fold(logits, priors, targets)


def test_fitted_temperature_recovers_the_sharpening_and_lowers_ece() -> None:
    """Seeded synthetic folds (4000 crops): T within 10 % of 3, ECE on another fold at least halved."""
    train, test = _overconfident_fold(0), _overconfident_fold(1)
    t = fit_temperature([train], "gender")
    assert t == pytest.approx(3.0, rel=0.1)
    z, target = test.logits["gender"].astype(np.float64), test.targets["gender"].astype(np.float64)
    assert ece(z, target, t) < 0.5 * ece(z, target, 1.0)


def test_shipped_temperatures_cover_every_head_and_are_positive() -> None:
    assert set(DEFAULT_TEMPERATURES) == set(HEADS)
    assert all(0 < t < 10 for t in DEFAULT_TEMPERATURES.values())


def test_nan_probabilities_abstain_on_that_field_only() -> None:
    schema = SchemaRegistry.builtin().get("person/1")
    probs = {h: np.full((1, len(v)), 1.0 / len(v), np.float32) for h, v in HEADS.items()}
    probs["gender"] = np.array([[0.95, 0.05]], np.float32)
    probs["upper_color"] = np.full((1, 11), np.nan, np.float32)
    (out,) = decide(probs, DEFAULT_THRESHOLDS, schema, probs)
    assert out.fields["upper_color"] == UNKNOWN
    assert "upper_color" not in out.confidence
    assert out.fields["gender"] == "male"
    fused = fuse_views([out, out], DEFAULT_THRESHOLDS, schema, "product")
    assert fused.fields["upper_color"] == UNKNOWN and fused.fields["gender"] == "male"
    assert all(math.isfinite(c) for c in fused.confidence.values())
