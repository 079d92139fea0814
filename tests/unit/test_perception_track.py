"""The DeepSORT-style tracker on synthetic scenes: ids survive occlusion and crossings, tracks age out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from txd.perception.appearance import HistogramConfig
from txd.perception.detect import Box, Detection
from txd.perception.track import KalmanFilter, Tracker, TrackerConfig, to_box, to_xyah

pytest.importorskip("cv2", reason="opencv-python-headless is not installed")

WIDTH, HEIGHT = 640, 360
# Two "people" as (upper, lower) BGR clothing colours: red over blue, green over yellow.
LOOKS = {"a": ((30, 30, 200), (200, 60, 30)), "b": ((40, 180, 40), (30, 200, 220))}


def person_box(x: float, y: float, w: float = 40, h: float = 100) -> Box:
    return (x, y, x + w, y + h)


def draw(people: Sequence[tuple[str, Box]], rng: np.random.Generator) -> NDArray[np.uint8]:
    """A grey noisy background with each person painted as two coloured halves, in the order given."""
    frame = rng.integers(100, 130, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    for look, (x1, y1, x2, y2) in people:
        upper, lower = LOOKS[look]
        mid = int((y1 + y2) / 2)
        frame[int(y1) : mid, int(x1) : int(x2)] = upper
        frame[mid : int(y2), int(x1) : int(x2)] = lower
    return frame


def tracker(**overrides: int | float) -> Tracker:
    return Tracker(TrackerConfig(**overrides), HistogramConfig().build())


def ids_by_look(states: Sequence[object], boxes: dict[str, Box]) -> dict[str, int]:
    """Which track id sits on which person (the track whose box is the person's box)."""
    out = {}
    for state in states:
        for look, box in boxes.items():
            if np.allclose(state.box, box):  # type: ignore[attr-defined]
                out[look] = state.track_id  # type: ignore[attr-defined]
    return out


def test_ids_survive_a_short_occlusion() -> None:
    rng = np.random.default_rng(1)
    trk = tracker(n_init=2, max_age=10)
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    for t in range(30):
        boxes = {"a": person_box(50 + 6 * t, 100), "b": person_box(500 - 5 * t, 200)}
        hidden = 12 <= t < 16  # "a" walks behind a pillar for four frames: no detection
        shown = {k: v for k, v in boxes.items() if not (hidden and k == "a")}
        frame = draw(list(shown.items()), rng)
        states = trk.update(frame, [Detection(b, 0.9) for b in shown.values()])
        if hidden:
            assert [s for s in trk.tracks if s.time_since_update > 0], "the hidden track must coast"
        for look, tid in ids_by_look([s for s in states if s.confirmed], shown).items():
            seen[look].add(tid)
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1
    assert seen["a"] != seen["b"]


def test_crossing_people_with_different_looks_keep_ids() -> None:
    rng = np.random.default_rng(2)
    trk = tracker(n_init=2)
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    for t in range(40):
        # They walk towards each other on nearly the same line and overlap for about ten frames.
        boxes = {"a": person_box(100 + 10 * t, 120), "b": person_box(500 - 10 * t, 128)}
        order = list(boxes.items()) if t % 2 else list(reversed(boxes.items()))
        states = trk.update(draw(order, rng), [Detection(b, 0.9) for b in boxes.values()])
        for look, tid in ids_by_look([s for s in states if s.confirmed], boxes).items():
            seen[look].add(tid)
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1
    assert seen["a"] != seen["b"]


def test_tracks_confirm_after_n_hits_and_die_after_max_age() -> None:
    rng = np.random.default_rng(3)
    trk = tracker(n_init=3, max_age=5)
    for t in range(3):
        box = person_box(100 + 4 * t, 100)
        (state,) = trk.update(draw([("a", box)], rng), [Detection(box, 0.9)])
        assert state.confirmed == (t == 2)
        assert state.hits == t + 1 and state.time_since_update == 0
    empty = draw([], rng)
    for missed in range(1, 6):
        assert trk.update(empty, []) == []
        (coasting,) = trk.tracks
        assert coasting.time_since_update == missed
    trk.update(empty, [])
    assert trk.tracks == []


def test_an_unconfirmed_track_dies_at_its_first_miss() -> None:
    rng = np.random.default_rng(4)
    trk = tracker(n_init=3)
    box = person_box(10, 10)
    trk.update(draw([("b", box)], rng), [Detection(box, 0.8)])
    trk.update(draw([], rng), [])
    assert trk.tracks == []


def test_motion_only_tracking_without_embedder() -> None:
    trk = Tracker(TrackerConfig(n_init=1), None)
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    ids = {trk.update(frame, [Detection(person_box(20 + 3 * t, 50), 0.9)])[0].track_id for t in range(10)}
    assert len(ids) == 1


def test_bad_frame_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        tracker().update(np.zeros((5, 5), np.uint8), [])


def test_kalman_filter_learns_constant_velocity() -> None:
    kf = KalmanFilter(1 / 20, 1 / 160)
    mean, cov = kf.initiate(to_xyah(person_box(0, 0)))
    for t in range(1, 20):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, to_xyah(person_box(5 * t, 2 * t)))
    predicted, _ = kf.predict(mean, cov)
    assert to_box(predicted) == pytest.approx(person_box(100, 40), abs=1.0)
    near = kf.gating_distance(predicted, cov, np.array([to_xyah(person_box(100, 40))]))
    far = kf.gating_distance(predicted, cov, np.array([to_xyah(person_box(300, 40))]))
    assert near[0] < TrackerConfig().gating_threshold < far[0]
