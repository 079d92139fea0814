"""Per-site colour calibration: a camera's white balance estimated online from its own frames (gray world)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from txd.perception.detect import check_frame

Gains = tuple[float, float, float]  # per channel, B, G, R


class SiteBalanceConfig(Frozen):
    """Gray-world white balance per stream: the camera's cast is the average colour of everything it has
    seen (the scene, mostly static, averages to grey), so every view is divided by it before its colours are
    read. Per-crop balance inside the attribute model cannot see this: a crop is mostly one person."""

    enabled: bool = Field(
        False,
        description="correct each view by its stream's estimated white balance; off: with track fusion it "
        "did not help on PETS09 (`python -m bench.perception_ablation`, see README)",
    )
    minkowski_p: float = Field(
        6.0,
        ge=1,
        le=16,
        description="the channel statistic is the Minkowski p-mean (1: gray world; 6: shades of grey, "
        "weighting bright surfaces; 6 chosen on PETS09)",
    )
    window_frames: int = Field(
        50,
        ge=1,
        le=100_000,
        description="analysed frames the estimate averages over (exponential: each frame weighs 1/this once "
        "the window is full; the first frames are averaged plainly)",
    )
    stride_px: int = Field(4, ge=1, le=64, description="every this-many-th pixel in each direction is read")
    min_gain: float = Field(0.6, gt=0, le=1, description="a channel is never scaled below this")
    max_gain: float = Field(1.7, ge=1, le=8, description="a channel is never scaled above this")


class SiteBalance:
    """One stream's running white-balance estimate; `update` with each analysed frame, read `gains`.

    Pixels near black or clipped carry no cast and are left out. I/O free."""

    def __init__(self, config: SiteBalanceConfig) -> None:
        self.config = config
        self.frames = 0
        self._stat = np.zeros(3, np.float64)  # running p-mean statistic per channel, raised to p

    def update(self, frame_bgr: NDArray[np.uint8]) -> Gains:
        """Fold one frame into the estimate and return the gains to apply to views of this stream now."""
        check_frame(frame_bgr)
        cfg = self.config
        step = cfg.stride_px
        sample = frame_bgr[::step, ::step].reshape(-1, 3)
        lum = sample.sum(axis=1, dtype=np.int32)
        keep = (lum > 3 * 20) & (lum < 3 * 235)
        if int(keep.sum()) < 16:  # a dark or blown-out frame: nothing to learn from it
            return self.gains
        pix = sample[keep].astype(np.float32) * np.float32(1 / 255)
        stat = np.power(pix, np.float32(cfg.minkowski_p)).mean(axis=0, dtype=np.float64)
        self.frames += 1
        weight = 1.0 / min(self.frames, cfg.window_frames)
        self._stat += weight * (stat - self._stat)
        return self.gains

    @property
    def gains(self) -> Gains:
        """Per-channel (B, G, R) gains that map the estimated cast to grey; 1, 1, 1 before any frame."""
        if self.frames == 0:
            return (1.0, 1.0, 1.0)
        return gray_world_gains(self._stat, self.config)


def gray_world_gains(stat: NDArray[np.float64], config: SiteBalanceConfig) -> Gains:
    """Gains from per-channel Minkowski statistics (means of values**p, values in 0..1), clamped."""
    means = np.power(np.maximum(stat, 1e-12), 1.0 / config.minkowski_p)
    gains = np.clip(means.mean() / np.maximum(means, 1e-6), config.min_gain, config.max_gain)
    return (float(gains[0]), float(gains[1]), float(gains[2]))


def apply_gains(crop_bgr: NDArray[np.uint8], gains: Gains | None) -> NDArray[np.uint8]:
    """The crop with each channel scaled by its gain (saturating at 255); the crop itself when None."""
    if gains is None or gains == (1.0, 1.0, 1.0):
        return crop_bgr
    scaled = crop_bgr.astype(np.float32) * np.asarray(gains, np.float32)
    return np.asarray(np.clip(scaled + 0.5, 0, 255), np.uint8)
