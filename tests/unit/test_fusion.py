"""Fusing several views of a track: the rules in closed form, the vote, and the attribute model's decision."""

from __future__ import annotations

import numpy as np
import pytest

from semcom.schema import Schema, SchemaRegistry
from txd.understanding.attributes import DEFAULT_THRESHOLDS, HEADS, decide, fuse_views
from txd.understanding.base import UNKNOWN, Understanding
from txd.understanding.fusion import fuse_rows, vote


@pytest.fixture(scope="module")
def schema() -> Schema:
    return SchemaRegistry.builtin().get("person/1")


def test_rules_in_closed_form() -> None:
    rows = np.array([[0.9, 0.1], [0.6, 0.4]])
    # Geometric mean: sqrt(0.54) : sqrt(0.04), normalised.
    g = np.sqrt([0.54, 0.04])
    assert fuse_rows(rows, "log_mean") == pytest.approx(g / g.sum(), abs=1e-12)
    assert fuse_rows(rows, "mean") == pytest.approx([0.75, 0.25], abs=1e-12)
    assert fuse_rows(rows, "best") == pytest.approx([0.9, 0.1], abs=1e-12)
    assert fuse_rows(rows, "product") == pytest.approx([0.54 / 0.58, 0.04 / 0.58], abs=1e-12)
    # Views that agree sharpen the belief under the product only.
    agree = np.array([[0.7, 0.3], [0.7, 0.3]])
    assert fuse_rows(agree, "mean")[0] == pytest.approx(0.7)
    assert fuse_rows(agree, "log_mean")[0] == pytest.approx(0.7)
    assert fuse_rows(agree, "product")[0] == pytest.approx(0.49 / 0.58)
    # A zero never vetoes a class outright (rows are clipped at 1e-12 before the logarithm).
    assert np.isfinite(fuse_rows(np.array([[1.0, 0.0], [0.0, 1.0]]), "log_mean")).all()


def test_vote_weighs_confidences_and_ignores_unknown(schema: Schema) -> None:
    views = [
        Understanding({"gender": "male", "upper_color": "red"}, {"gender": 0.6, "upper_color": 0.5}),
        Understanding({"gender": "female", "upper_color": UNKNOWN}, {"gender": 0.9, "upper_color": 0.0}),
        Understanding({"gender": "male", "upper_color": "red"}, {"gender": 0.6, "upper_color": 0.7}),
    ]
    fused = vote(views, schema)
    assert fused.fields["gender"] == "male" and fused.confidence["gender"] == pytest.approx(0.4)
    assert fused.fields["upper_color"] == "red" and fused.confidence["upper_color"] == pytest.approx(0.4)
    assert fused.fields["shoe_color"] == UNKNOWN and fused.confidence["shoe_color"] == 0.0


def _view(schema: Schema, upper: list[float]) -> Understanding:
    """One crop's understanding with a given upper-colour distribution and flat other heads."""
    probs = {h: np.full((1, len(v)), 1.0 / len(v), np.float32) for h, v in HEADS.items()}
    probs["upper_color"] = np.array([upper], np.float32)
    (out,) = decide(probs, DEFAULT_THRESHOLDS, schema, probs)
    return out


def test_views_fused_before_the_decision_can_answer_where_each_abstained(schema: Schema) -> None:
    n = len(HEADS["upper_color"])
    red = HEADS["upper_color"].index("red")
    leaning = [0.6 / (n - 1)] * n
    leaning[red] = 0.4  # red leads, but below the 0.5 abstention threshold on its own
    one = _view(schema, leaning)
    assert one.fields["upper_color"] == UNKNOWN and one.probabilities["upper_color"][red] < 0.5
    fused = fuse_views([one, one, one], DEFAULT_THRESHOLDS, schema, "product")
    assert fused.fields["upper_color"] == "red"  # three agreeing views pass the threshold together
    assert fuse_views([one, one, one], DEFAULT_THRESHOLDS, schema, "mean").fields["upper_color"] == UNKNOWN
    assert fused.fields["gender"] == UNKNOWN  # flat everywhere else: still nothing to say


def test_views_without_distributions_are_voted(schema: Schema) -> None:
    plain = Understanding({"gender": "female"}, {"gender": 0.8})
    assert fuse_views([plain, plain], DEFAULT_THRESHOLDS, schema, "mean").fields["gender"] == "female"
