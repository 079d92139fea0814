"""Person masks (background subtraction), per-site white balance and colour naming: the I/O-free cores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from semcom.colour import srgb_to_lab
from semcom.errors import InvalidInput
from txd.perception.detect import Detection
from txd.perception.foreground import ForegroundConfig, ForegroundModel, box_mask
from txd.perception.keyframes import KeyframeConfig, KeyframeSelector, understanding_inputs
from txd.perception.pipeline import PerceptionConfig, PerceptionModels
from txd.perception.site_colour import SiteBalance, SiteBalanceConfig, apply_gains, gray_world_gains
from txd.perception.track import TrackState
from txd.understanding.colour_names import combine, lookup_table, name_pixels, naming_shares

pytest.importorskip("cv2")
COLOURS = ("black", "blue", "brown", "green", "grey", "orange", "pink", "purple", "red", "white", "yellow")
# A person-sized block that walks in after the background model has warmed up.
PERSON = (40, 20, 70, 100)  # x1, y1, x2, y2 at full size


def _scene(rng: np.random.Generator, size: tuple[int, int] = (120, 160)) -> NDArray[np.uint8]:
    """A static textured background (seeded) with a little sensor noise per frame."""
    base = np.asarray(np.random.default_rng(7).integers(60, 200, (*size, 3)), np.uint8)
    noise = rng.integers(-3, 4, base.shape)
    return np.asarray(np.clip(base.astype(np.int16) + noise, 0, 255), np.uint8)


def _with_person(frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
    out = frame.copy()
    x1, y1, x2, y2 = PERSON
    out[y1:y2, x1:x2] = (20, 30, 200)  # a red coat
    return out


@pytest.mark.parametrize("method", ["mog2", "knn"])
def test_a_person_on_a_learnt_background_is_masked(method: str) -> None:
    rng = np.random.default_rng(1)
    threshold = 16.0 if method == "mog2" else 400.0
    cfg = ForegroundConfig(enabled=True, method=method, threshold=threshold, warmup_frames=5, scale=1.0)
    model = ForegroundModel(cfg)
    for i in range(30):
        found = model.apply(_scene(rng))
        assert (found is None) == (i < 5)  # no mask while the model warms up
    fg = model.apply(_with_person(_scene(rng)))
    assert fg is not None
    wide = (20.0, 10.0, 90.0, 110.0)  # a detector box with background around the person
    crop_shape = (100, 70, 3)
    mask = model.box_mask(fg, wide, crop_shape)
    assert mask is not None and mask.shape == (100, 70)
    inside = mask[10:90, 20:50]  # the person's pixels within the box
    assert inside.mean() > 0.9
    outside = np.concatenate([mask[:, :15].ravel(), mask[:, 55:].ravel()])
    assert outside.mean() < 0.05


def test_a_mask_that_covers_nothing_is_no_mask() -> None:
    empty = np.zeros((60, 80), bool)
    assert box_mask(empty, (10.0, 10.0, 50.0, 50.0), (40, 40, 3), (120, 160, 3), 0.15) is None
    assert box_mask(None, (10.0, 10.0, 50.0, 50.0), (40, 40, 3), (120, 160, 3), 0.0) is None
    # outside the frame, and a zero-size crop: no mask rather than an error
    assert (
        box_mask(np.ones((60, 80), bool), (500.0, 500.0, 600.0, 600.0), (4, 4, 3), (120, 160, 3), 0) is None
    )
    assert box_mask(np.ones((60, 80), bool), (10.0, 10.0, 50.0, 50.0), (0, 40, 3), (120, 160, 3), 0) is None
    # a box mostly of background: below min_coverage it is dropped, above it is kept
    part = np.zeros((120, 160), bool)
    part[10:50, 10:20] = True  # a quarter of the box below
    assert box_mask(part, (10.0, 10.0, 50.0, 50.0), (40, 40, 3), (120, 160, 3), 0.3) is None
    kept = box_mask(part, (10.0, 10.0, 50.0, 50.0), (40, 40, 3), (120, 160, 3), 0.2)
    assert kept is not None and kept.mean() == pytest.approx(0.25)


def test_a_stream_keeps_its_frame_size() -> None:
    model = ForegroundModel(ForegroundConfig(enabled=True))
    model.apply(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(InvalidInput, match="frame size changed"):
        model.apply(np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(InvalidInput, match="BGR frame"):
        model.apply(np.zeros((40, 40), np.uint8))


def test_gray_world_removes_a_camera_cast() -> None:
    rng = np.random.default_rng(3)
    cast = np.array([0.8, 1.0, 1.25])  # B, G, R: a warm camera
    balance = SiteBalance(SiteBalanceConfig(enabled=True, window_frames=10))
    assert balance.gains == (1.0, 1.0, 1.0)  # nothing seen yet
    for _ in range(20):
        grey = rng.integers(40, 180, (60, 80, 1)).repeat(3, axis=2)
        balance.update(np.asarray(np.clip(grey * cast, 0, 255), np.uint8))
    gains = np.array(balance.gains)
    # the corrected cast is neutral within 2 % (seed 3; the only error is rounding to uint8)
    assert (cast * gains / (cast * gains).mean()) == pytest.approx(np.ones(3), rel=0.02)
    crop = np.asarray(np.full((10, 10, 3), 100) * cast, np.uint8)
    balanced = apply_gains(crop, balance.gains).reshape(-1, 3).mean(axis=0)
    assert balanced.max() - balanced.min() <= 2


def test_white_balance_is_clamped_and_ignores_frames_with_nothing_to_learn() -> None:
    cfg = SiteBalanceConfig(enabled=True, min_gain=0.8, max_gain=1.25)
    green = np.zeros((40, 40, 3), np.uint8)
    green[..., 1] = 200
    green[..., 0] = green[..., 2] = 30
    balance = SiteBalance(cfg)
    gains = balance.update(green)
    assert min(gains) >= 0.8 and max(gains) <= 1.25
    dark = SiteBalance(cfg)
    assert dark.update(np.zeros((40, 40, 3), np.uint8)) == (1.0, 1.0, 1.0) and dark.frames == 0
    assert gray_world_gains(np.array([0.25, 0.25, 0.25]), cfg) == pytest.approx((1.0, 1.0, 1.0))
    with pytest.raises(ValidationError, match="max_gain"):
        SiteBalanceConfig(max_gain=0.95)  # a gain range must hold 1: no correction at all
    with pytest.raises(ValidationError, match="minkowski_p"):
        SiteBalanceConfig(minkowski_p=0.5)


def test_gains_saturate_and_none_is_the_crop_itself() -> None:
    crop = np.full((4, 4, 3), 200, np.uint8)
    assert apply_gains(crop, None) is crop and apply_gains(crop, (1.0, 1.0, 1.0)) is crop
    assert apply_gains(crop, (1.5, 1.0, 0.5))[0, 0].tolist() == [255, 200, 100]


def test_cielab_of_known_colours() -> None:
    lab = srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert lab[1] == pytest.approx([0.0, 0.0, 0.0], abs=0.01)
    assert lab[2] == pytest.approx([53.24, 80.09, 67.20], abs=0.05)  # the sRGB red of every reference table


def test_pixels_are_named_by_the_nearest_survey_colour() -> None:
    bgr = {
        "black": (5, 5, 5),
        "white": (255, 255, 255),  # "pale grey" (#fdfdfe) is white to the eye: not an example of grey
        "grey": (128, 128, 128),
        "red": (30, 30, 210),
        "blue": (200, 60, 20),
        "green": (40, 160, 40),
        "yellow": (20, 230, 240),
        "brown": (30, 60, 110),
        "navy is blue": (90, 20, 10),
    }
    names = name_pixels(np.array(list(bgr.values()), np.uint8), COLOURS)
    assert [COLOURS[i] for i in names] == [k.split()[-1] for k in bgr]
    assert lookup_table(COLOURS).shape == (32, 32, 32)


def test_naming_shares_and_pooling() -> None:
    assert naming_shares(np.zeros((0, 3), np.uint8), COLOURS) is None
    pixels = np.array([(30, 30, 210)] * 3 + [(5, 5, 5)], np.uint8)
    shares = naming_shares(pixels, COLOURS)
    assert shares is not None and shares.sum() == pytest.approx(1.0)
    assert shares[COLOURS.index("red")] == pytest.approx(0.75)
    flat = np.full((2, len(COLOURS)), 1 / len(COLOURS))
    assert combine(flat, shares, 0.0) == pytest.approx(flat)  # weight 0: the model alone
    pooled = combine(flat, np.stack([shares, shares]), 1.0)
    assert pooled.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert int(np.argmax(pooled[0])) == COLOURS.index("red")
    # smoothing: a colour the pixels never show is lowered, never ruled out
    assert pooled[0, COLOURS.index("blue")] > 0


def _track(box: tuple[float, float, float, float]) -> TrackState:
    return TrackState(track_id=1, box=box, confirmed=True, hits=5, time_since_update=0)


def test_kept_views_carry_their_mask_and_gains_to_understanding() -> None:
    frame = np.asarray(np.random.default_rng(5).integers(0, 255, (200, 200, 3)), np.uint8)
    selector = KeyframeSelector(KeyframeConfig(settle_frames=1, min_height_px=10))
    seen: list[tuple[tuple[float, ...], tuple[int, ...]]] = []

    def masker(box: tuple[float, float, float, float], shape: tuple[int, ...]) -> NDArray[np.bool_]:
        seen.append((box, shape))
        return np.ones(shape[:2], bool)

    gains = (1.2, 1.0, 0.8)
    out = []
    for i in range(4):
        out += selector.observe(
            frame, i, i / 5, [_track((50.0, 20.0, 100.0, 150.0))], masker=masker, gains=gains
        )
    out += selector.flush()
    assert out and seen
    view = out[0]
    assert view.mask is not None and view.mask.shape == view.crop.shape[:2] and view.gains == gains
    crops, masks = understanding_inputs(view.all_views)
    assert masks[0] is view.all_views[0].mask
    assert np.array_equal(crops[0], apply_gains(view.all_views[0].crop, gains))


class _NoPeople:
    """A detector that finds nobody (the pipeline's colour stages run on every frame regardless)."""

    def detect(self, frame_bgr: NDArray[np.uint8]) -> list[Detection]:
        return []

    def detect_many(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        return [[] for _ in frames]

    async def aclose(self) -> None:
        return None


def test_pipeline_runs_masks_and_balance_only_when_enabled() -> None:
    # the defaults chosen on PETS09 (README): both off
    assert not PerceptionConfig().foreground.enabled and not PerceptionConfig().site_balance.enabled
    on = PerceptionConfig.model_validate({"foreground": {"enabled": True}, "site_balance": {"enabled": True}})
    off = PerceptionConfig()
    frame = np.full((48, 64, 3), 120, np.uint8)
    for cfg, enabled in ((on, True), (off, False)):
        pipeline = cfg.pipeline(PerceptionModels(_NoPeople(), None))
        assert (pipeline.foreground is not None, pipeline.balance is not None) == (enabled, enabled)
        for i in range(3):
            pipeline.process(frame, i, i / 5)
        if enabled:
            assert pipeline.foreground is not None and pipeline.foreground.frames == 3
            assert pipeline.balance is not None and pipeline.balance.frames == 3
            assert pipeline.times.seconds["colour"] > 0
    with pytest.raises(ValidationError):
        PerceptionConfig.model_validate({"foreground": {"method": "gmg"}})
