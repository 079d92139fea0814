"""Person masks on a static camera: per-stream background subtraction (OpenCV MOG2 or KNN), cut per box."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from semcom.errors import InvalidInput
from txd.perception.detect import Box, check_frame

Mask = NDArray[np.bool_]
# MOG2 and KNN mark shadows 127 and foreground 255 in their output; only the latter is the person.
_FOREGROUND = 255


class ForegroundConfig(Frozen):
    """Background subtraction per stream: which person pixels of a box feed the colour evidence.

    The model learns the background from the analysed frames (5 a second in txd), so `history_frames` and
    `warmup_frames` count analysed frames. While it warms up, and for a box whose mask covers less than
    `min_coverage` of it (a person standing still for long fades into the background), views carry no mask
    and the understander reads the whole box as before."""

    enabled: bool = Field(
        False,
        description="compute a foreground mask per kept view (colour evidence from the person only); off: "
        "on PETS09 it did not help the embedded model (`python -m bench.perception_ablation`, see README)",
    )
    method: Literal["mog2", "knn"] = Field("mog2", description="OpenCV background subtractor")
    history_frames: int = Field(
        100, ge=2, le=10_000, description="analysed frames the background model remembers"
    )
    threshold: float = Field(
        16.0,
        gt=0,
        description="distance for a pixel to count as foreground: MOG2's squared Mahalanobis distance "
        "(varThreshold, OpenCV's default 16), KNN's squared distance (dist2Threshold, default 400)",
    )
    warmup_frames: int = Field(
        10,
        ge=0,
        description="analysed frames before any mask is used (the background model is still forming)",
    )
    scale: float = Field(
        0.5, gt=0, le=1, description="frames are shrunk by this factor before subtraction (speed)"
    )
    close_px: int = Field(
        3,
        ge=0,
        le=31,
        description="side of the square (at the shrunk size) the mask is closed with: fills small holes "
        "where a garment matches the background; 0: none",
    )
    min_coverage: float = Field(
        0.15,
        ge=0,
        le=1,
        description="a view's mask is dropped (the whole box is read) when less than this share of the box "
        "is foreground",
    )


class ForegroundModel:
    """One stream's background model; `apply` each analysed frame in order, then cut masks with `box_mask`.

    I/O free: OpenCV's subtractor holds the only state besides the frame count."""

    def __init__(self, config: ForegroundConfig) -> None:
        import cv2

        self.config = config
        self.frames = 0
        self._shape: tuple[int, ...] | None = None
        self._subtractor: Any
        if config.method == "mog2":
            self._subtractor = cv2.createBackgroundSubtractorMOG2(
                history=config.history_frames, varThreshold=config.threshold, detectShadows=True
            )
        else:
            self._subtractor = cv2.createBackgroundSubtractorKNN(
                history=config.history_frames, dist2Threshold=config.threshold, detectShadows=True
            )
        self._kernel = np.ones((config.close_px, config.close_px), np.uint8) if config.close_px > 1 else None

    @property
    def warm(self) -> bool:
        """Whether enough frames were seen for masks to be used."""
        return self.frames > self.config.warmup_frames

    def apply(self, frame_bgr: NDArray[np.uint8]) -> NDArray[np.bool_] | None:
        """Learn from this frame and return its foreground (at the shrunk size), or None while warming up.
        A frame of another size than the first is an InvalidInput (a stream keeps its size)."""
        import cv2

        check_frame(frame_bgr)
        if self._shape is None:
            self._shape = frame_bgr.shape
        elif frame_bgr.shape != self._shape:
            raise InvalidInput(f"frame size changed from {self._shape} to {frame_bgr.shape} within a stream")
        scale = self.config.scale
        small: NDArray[np.uint8] = frame_bgr
        if scale < 1:
            size = (max(1, round(frame_bgr.shape[1] * scale)), max(1, round(frame_bgr.shape[0] * scale)))
            small = np.asarray(cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA), np.uint8)
        raw = self._subtractor.apply(small)
        self.frames += 1
        if not self.warm:
            return None
        fg = np.asarray(raw == _FOREGROUND, np.uint8)
        if self._kernel is not None:
            fg = np.asarray(cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._kernel), np.uint8)
        return np.asarray(fg, bool)

    def box_mask(
        self, foreground: NDArray[np.bool_] | None, box: Box, crop_shape: tuple[int, ...]
    ) -> Mask | None:
        """The mask of one box, at the size of its crop (`crop_shape`, as crop_box cut it), or None when
        there is no foreground yet or it covers less than `min_coverage` of the box."""
        return box_mask(foreground, box, crop_shape, self._shape, self.config.min_coverage)


def box_mask(
    foreground: NDArray[np.bool_] | None,
    box: Box,
    crop_shape: tuple[int, ...],
    frame_shape: tuple[int, ...] | None,
    min_coverage: float,
) -> Mask | None:
    """Cut the box out of a (possibly shrunk) foreground of a `frame_shape` frame and resize it to the
    crop's height x width; None when there is no foreground, the box misses it, or less than `min_coverage`
    of the crop is foreground."""
    import cv2

    if foreground is None or frame_shape is None or foreground.size == 0:
        return None
    height, width = frame_shape[:2]
    fy, fx = foreground.shape[0] / height, foreground.shape[1] / width
    x1, y1, x2, y2 = box
    left, top = max(int(np.floor(max(x1, 0.0) * fx)), 0), max(int(np.floor(max(y1, 0.0) * fy)), 0)
    right = min(int(np.ceil(min(x2, width) * fx)), foreground.shape[1])
    bottom = min(int(np.ceil(min(y2, height) * fy)), foreground.shape[0])
    if right <= left or bottom <= top or crop_shape[0] < 1 or crop_shape[1] < 1:
        return None
    part = np.asarray(foreground[top:bottom, left:right], np.uint8)
    resized = cv2.resize(part, (crop_shape[1], crop_shape[0]), interpolation=cv2.INTER_NEAREST)
    mask = np.asarray(resized > 0, bool)
    if float(mask.mean()) < min_coverage or not mask.any():
        return None
    return mask
