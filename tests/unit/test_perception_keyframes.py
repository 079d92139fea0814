"""Keyframe choice: large, sharp, uncut views win; emission on settle, on request and at the end."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from txd.perception.detect import Box
from txd.perception.keyframes import KeyframeConfig, KeyframeSelector, crop_box, sharpness, view_quality
from txd.perception.track import TrackState

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")

HEIGHT, WIDTH = 480, 640


def textured_frame(seed: int) -> NDArray[np.uint8]:
    """Seeded random texture: sharp detail everywhere, like clothing seen by a good camera."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(HEIGHT // 4, WIDTH // 4, 3), dtype=np.uint8)
    frame: NDArray[np.uint8] = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
    return frame


def blurred(frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
    out: NDArray[np.uint8] = cv2.GaussianBlur(frame, (0, 0), 4.0)
    return out


def state(box: Box, track_id: int = 1, confirmed: bool = True) -> TrackState:
    return TrackState(track_id=track_id, box=box, confirmed=confirmed, hits=5, time_since_update=0)


CENTRE: Box = (250.0, 100.0, 330.0, 300.0)
SMALL: Box = (250.0, 100.0, 280.0, 160.0)
AT_EDGE: Box = (0.0, 100.0, 80.0, 300.0)


def test_quality_prefers_large_sharp_uncut_views() -> None:
    cfg = KeyframeConfig()
    frame = textured_frame(1)
    best = view_quality(frame, CENTRE, cfg)
    assert best > 2 * view_quality(blurred(frame), CENTRE, cfg)
    assert best > 2 * view_quality(frame, SMALL, cfg)
    assert best > 2 * view_quality(frame, AT_EDGE, cfg)
    assert sharpness(crop_box(frame, CENTRE)) > 5 * sharpness(crop_box(blurred(frame), CENTRE))


def test_selector_sends_the_best_view_once_it_settles() -> None:
    sel = KeyframeSelector(KeyframeConfig(settle_frames=3, views_per_track=1))
    sharp = textured_frame(2)
    views = [(blurred(sharp), CENTRE), (sharp, AT_EDGE), (sharp, CENTRE), (blurred(sharp), CENTRE)]
    sent = []
    for index, (frame, box) in enumerate(views + [(blurred(sharp), CENTRE)] * 3):
        sent += sel.observe(frame, index, index / 10, [state(box)])
    assert len(sent) == 1
    (kf,) = sent
    assert kf.frame_index == 2 and kf.box == CENTRE and kf.time_s == pytest.approx(0.2)
    assert kf.crop.shape == (200, 80, 3) and kf.crop.dtype == np.uint8
    assert np.array_equal(kf.crop, crop_box(sharp, CENTRE))
    assert kf.all_views == (kf.views[0],) and kf.views[0].frame_index == 2 and not kf.final
    best = sel.request(1)  # a re-send gets the best view so far
    assert best is not None and best.frame_index == 2
    (last,) = sel.flush()  # the stream ended: the track's final emission, the same best view
    assert last.final and last.frame_index == 2 and sel.request(1) is None


def test_several_views_spread_over_the_track_are_kept_best_first() -> None:
    cfg = KeyframeConfig(settle_frames=100, views_per_track=3, view_gap_frames=2)
    sel = KeyframeSelector(cfg)
    sharp, soft = textured_frame(7), blurred(textured_frame(7))
    # Frames 0..7: sharp views at 0, 1 (too close to 0), 4 and 6; soft ones between.
    frames = [sharp, sharp, soft, soft, sharp, soft, sharp, soft]
    for index, frame in enumerate(frames):
        assert sel.observe(frame, index, index / 10, [state(CENTRE)]) == []
    (kf,) = sel.flush()
    indices = [v.frame_index for v in kf.views]
    assert len(indices) == 3 and set(indices) <= {0, 1, 4, 6}
    assert all(abs(a - b) >= 2 for a in indices for b in indices if a != b)  # spread over the track
    qualities = [v.quality for v in kf.views]
    assert qualities == sorted(qualities, reverse=True)  # best first
    assert all(v.quality > view_quality(soft, CENTRE, cfg) for v in kf.views)  # the soft ones lost


def test_a_settled_track_is_emitted_again_at_its_end_with_the_views_seen_since() -> None:
    sel = KeyframeSelector(
        KeyframeConfig(settle_frames=2, views_per_track=4, view_gap_frames=1, expire_frames=2)
    )
    sharp = textured_frame(8)
    sent = []
    for index in range(6):
        sent += sel.observe(sharp if index < 4 else blurred(sharp), index, index / 10, [state(CENTRE)])
    sent += [kf for index in range(6, 9) for kf in sel.observe(sharp, index, index / 10, [])]
    assert [kf.final for kf in sent] == [False, True]
    first, last = sent
    assert len(last.views) > len(first.views)  # the views kept after the first emission go out at the end


def test_unconfirmed_tracks_wait_and_flush_sends_what_was_never_sent() -> None:
    sel = KeyframeSelector(KeyframeConfig(settle_frames=1))
    frame = textured_frame(3)
    for index in range(4):
        assert sel.observe(frame, index, 0.0, [state(CENTRE, track_id=7, confirmed=False)]) == []
    assert sel.flush() == []  # never confirmed: never a keyframe
    sel = KeyframeSelector(KeyframeConfig(settle_frames=5))
    sel.observe(frame, 0, 0.0, [state(CENTRE, track_id=8, confirmed=False)])
    sel.observe(frame, 1, 0.1, [state(CENTRE, track_id=8, confirmed=True)])
    (kf,) = sel.flush()
    assert kf.track_id == 8
    assert sel.request(8) is None


def test_track_gone_for_long_sends_its_keyframe() -> None:
    sel = KeyframeSelector(KeyframeConfig(settle_frames=100, expire_frames=3))
    frame = textured_frame(4)
    sel.observe(frame, 0, 0.0, [state(CENTRE)])
    out = [sel.observe(frame, i, i / 10, []) for i in range(1, 4)]
    assert [len(o) for o in out] == [0, 0, 1]
    assert out[-1][0].frame_index == 0


def test_zero_size_crops_are_rejected() -> None:
    frame = textured_frame(5)
    with pytest.raises(InvalidInput, match="zero-size"):
        crop_box(frame, (10.0, 10.0, 10.0, 50.0))
    with pytest.raises(InvalidInput, match="zero-size"):
        crop_box(frame, (700.0, 10.0, 720.0, 50.0))  # entirely right of a 640-px frame
    with pytest.raises(InvalidInput, match="non-finite"):
        crop_box(frame, (float("nan"), 10.0, 20.0, 50.0))
    with pytest.raises(InvalidInput, match="zero-size box"):
        KeyframeSelector(KeyframeConfig()).observe(frame, 0, 0.0, [state((5.0, 5.0, 5.0, 40.0))])


def test_boxes_outside_the_frame_are_skipped() -> None:
    sel = KeyframeSelector(KeyframeConfig(settle_frames=1))
    frame = textured_frame(6)
    for index in range(3):
        assert sel.observe(frame, index, 0.0, [state((700.0, 10.0, 750.0, 100.0))]) == []
    assert sel.request(1) is None
