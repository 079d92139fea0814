"""The perception pipeline on real PETS09 footage, the decoder's frame sampling, and the timing counters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from txd.perception.appearance import HistogramConfig
from txd.perception.keyframes import Keyframe
from txd.perception.pipeline import PerceptionConfig
from txd.video import RateGrid


def test_rate_grid_spaces_frames_evenly() -> None:
    every = RateGrid(None)
    assert all(every.take(t / 25) for t in range(10))
    ten = RateGrid(10.0)
    taken = [i for i in range(250) if ten.take(i / 25)]  # ten seconds of 25 fps video
    assert len(taken) == 100
    assert max(np.diff(taken)) <= 3
    jittery = RateGrid(5.0)  # 7.3 frames/s with jitter: the grid, not the frames' spacing, sets the rate
    times = np.cumsum(np.random.default_rng(1).uniform(0.10, 0.17, 300))
    assert sum(jittery.take(float(t)) for t in times) == pytest.approx(5.0 * times[-1], abs=2)


def test_config_parses_nested_backends() -> None:
    cfg = PerceptionConfig.model_validate(
        {"detector": {"kind": "ssdlite", "tile_columns": 1}, "appearance": {"kind": "histogram"}}
    )
    assert isinstance(cfg.appearance, HistogramConfig)
    assert PerceptionConfig.model_validate({"appearance": None}).appearance is None


@pytest.mark.slow
@pytest.mark.data
def test_first_frames_of_pets09_give_keyframes_for_several_tracks(shared_data: Path) -> None:
    pytest.importorskip("cv2", reason="opencv-python-headless is not installed")
    pytest.importorskip("torch", reason="torch is not installed")
    from txd.video import iter_frames

    pipeline = PerceptionConfig().build()
    keyframes: list[Keyframe] = []
    video = shared_data / "videos" / "pets09_s2l1_vtest.avi"
    for frame in iter_frames(video):
        if frame.index >= 60:
            break
        shape = frame.image.shape
        keyframes += pipeline.process(frame.image, frame.index, frame.time_s)
    sent_before_end = len(keyframes)
    keyframes += pipeline.flush()

    tracks = {k.track_id for k in keyframes}
    assert len(tracks) >= 3, keyframes
    assert sent_before_end >= 1  # settled keyframes go out while the stream runs
    # Each track once when it settles and a final time when the stream ends (flush), never more.
    assert sent_before_end >= 1 and all(sum(k.track_id == t for k in keyframes) <= 2 for t in tracks)
    assert all(k.final for k in keyframes[sent_before_end:]) and not any(
        k.final for k in keyframes[:sent_before_end]
    )
    assert all(
        1 <= len(k.all_views) <= 3 and k.all_views[0].quality == max(v.quality for v in k.all_views)
        for k in keyframes
    )
    for kf in keyframes:
        x1, y1, x2, y2 = kf.box
        assert kf.crop.dtype == np.uint8 and kf.crop.ndim == 3 and kf.crop.shape[2] == 3
        expected_h = min(int(np.ceil(y2)), shape[0]) - max(int(np.floor(y1)), 0)
        expected_w = min(int(np.ceil(x2)), shape[1]) - max(int(np.floor(x1)), 0)
        assert kf.crop.shape[:2] == (expected_h, expected_w)
        assert 30 <= kf.crop.shape[0] <= 250
        assert 0 < kf.quality <= 1 and 0 <= kf.frame_index < 60
        assert kf.time_s == pytest.approx(kf.frame_index / 10, abs=0.01)  # the file's header says 10 fps
    times = pipeline.times
    assert times.frames_analysed == 60
    assert all(times.seconds[stage] > 0 for stage in ("detect", "track", "keyframes"))
    assert times.keyframes == len(keyframes) and times.detections >= 3 * 60
