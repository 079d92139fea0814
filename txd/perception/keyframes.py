"""Per-track keyframe choice: the largest, sharpest views not cut by the frame edge, sent once settled."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from semcom.errors import InvalidInput
from txd.perception.detect import Box, check_frame
from txd.perception.track import TrackState

log = logging.getLogger(__name__)


class KeyframeConfig(Frozen):
    """How views of a track are scored and when the best one is emitted."""

    reference_height_px: float = Field(
        200.0, gt=0, description="box height at which the size term saturates (a clearly readable person)"
    )
    sharpness_half_point: float = Field(
        100.0, gt=0, description="variance of the Laplacian (at sharpness_height_px) scoring 0.5"
    )
    sharpness_height_px: int = Field(
        128, ge=16, description="crops are resized to this height before measuring sharpness"
    )
    edge_margin_px: float = Field(2.0, ge=0, description="a box this close to the frame border counts as cut")
    cut_penalty: float = Field(0.2, ge=0, le=1, description="quality factor of a view cut by the frame edge")
    min_height_px: float = Field(24.0, ge=1, description="views shorter than this are never keyframes")
    settle_frames: int = Field(
        5,
        ge=1,
        description="analysed frames without a better view before a confirmed track's keyframe is sent",
    )
    improvement: float = Field(
        1.05, ge=1, description="a view must beat the best by this factor to count as better"
    )
    expire_frames: int = Field(
        60, ge=1, description="analysed frames after its last view that a track's state is dropped"
    )
    views_per_track: int = Field(
        3,
        ge=1,
        le=16,
        description="best views kept per track and understood together (fused); 1 understands the best only",
    )
    view_gap_frames: int = Field(
        5, ge=1, description="analysed frames at least between two kept views of a track, so that they differ"
    )


@dataclass(frozen=True)
class Keyframe:
    """The chosen view of one track: the crop (BGR, a copy) and where and when it was taken.

    `views` are the track's kept views, best first (this one among them), understood together; `final`
    marks the track's last emission (it ended, or the stream did). `mask` (the crop's height x width, True
    on the person) comes from the stream's background model, `gains` (B, G, R) from its white-balance
    estimate, when those are on; see `understanding_inputs`."""

    track_id: int
    frame_index: int
    time_s: float
    box: Box
    crop: NDArray[np.uint8]
    quality: float
    views: tuple[Keyframe, ...] = ()
    final: bool = False
    mask: NDArray[np.bool_] | None = None
    gains: tuple[float, float, float] | None = None

    @property
    def all_views(self) -> tuple[Keyframe, ...]:
        return self.views or (self,)


@dataclass
class _TrackViews:
    best: Keyframe
    confirmed: bool
    last_seen: int
    since_better: int = 0
    emitted: bool = False
    # Up to views_per_track views with the analysed-frame count they were seen at, spaced view_gap_frames.
    kept: list[tuple[int, Keyframe]] = field(default_factory=list)
    sent_views: int = 0  # how many views the last emission carried

    def emission(self, limit: int, *, final: bool) -> Keyframe:
        kept = sorted((k for _, k in self.kept), key=lambda k: -k.quality)
        views = tuple(kept) if limit > 1 and kept else (self.best,)
        self.emitted, self.sent_views = True, len(views)
        return dataclasses.replace(self.best, views=views, final=final)

    def replaced_by(self, seen_at: int, quality: float, limit: int, gap: int) -> list[int] | None:
        """Indices of kept views a new view (seen at `seen_at`, of `quality`) would replace; None when it
        is not kept. Kept views stay `gap` analysed frames apart: a view close to kept ones replaces them
        only when it beats them all; otherwise it fills a free place or replaces the worst view."""
        near = [i for i, (at, _) in enumerate(self.kept) if abs(at - seen_at) < gap]
        if near:
            return near if all(quality > self.kept[i][1].quality for i in near) else None
        if len(self.kept) < limit:
            return []
        worst = min(range(len(self.kept)), key=lambda i: self.kept[i][1].quality)
        return [worst] if quality > self.kept[worst][1].quality else None

    def keep(self, seen_at: int, view: Keyframe, replaced: list[int]) -> None:
        self.kept = [k for i, k in enumerate(self.kept) if i not in replaced] + [(seen_at, view)]


# Given a view's box and the shape of its crop: the person mask at the crop's size, or None.
Masker = Callable[[Box, tuple[int, ...]], NDArray[np.bool_] | None]


def understanding_inputs(
    views: Sequence[Keyframe],
) -> tuple[list[NDArray[np.uint8]], list[NDArray[np.bool_] | None]]:
    """What the understander reads of each view: its crop under the stream's white balance, and its mask."""
    from txd.perception.site_colour import apply_gains

    return [apply_gains(v.crop, v.gains) for v in views], [v.mask for v in views]


def crop_box(frame_bgr: NDArray[np.uint8], box: Box) -> NDArray[np.uint8]:
    """The pixels of the frame inside the box (clipped to the frame), as a view; zero-size is an error."""
    x1, y1, x2, y2 = box
    if not all(np.isfinite(v) for v in box):
        raise InvalidInput(f"box {box} has non-finite coordinates")
    height, width = frame_bgr.shape[:2]
    left, top = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    right, bottom = min(int(np.ceil(x2)), width), min(int(np.ceil(y2)), height)
    if right <= left or bottom <= top:
        raise InvalidInput(f"box {box} leaves a zero-size crop of the {width}x{height} frame")
    return frame_bgr[top:bottom, left:right]


def sharpness(crop_bgr: NDArray[np.uint8], height_px: int = 128) -> float:
    """Variance of the Laplacian after resizing to a fixed height, so that crops of any size compare."""
    import cv2

    gray = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    width = max(1, round(gray.shape[1] * height_px / gray.shape[0]))
    gray = cv2.resize(gray, (width, height_px), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def is_cut(box: Box, frame_shape: tuple[int, ...], margin_px: float) -> bool:
    height, width = frame_shape[:2]
    x1, y1, x2, y2 = box
    return x1 <= margin_px or y1 <= margin_px or x2 >= width - margin_px or y2 >= height - margin_px


def view_quality(frame_bgr: NDArray[np.uint8], box: Box, config: KeyframeConfig) -> float:
    """Score in [0, 1]: size term x sharpness term x penalty when the frame edge cuts the person."""
    crop = crop_box(frame_bgr, box)
    height = crop.shape[0]
    if height < config.min_height_px:
        return 0.0
    size_term = min(height / config.reference_height_px, 1.0)
    sharp = sharpness(crop, config.sharpness_height_px)
    sharp_term = sharp / (sharp + config.sharpness_half_point)
    edge_term = config.cut_penalty if is_cut(box, frame_bgr.shape, config.edge_margin_px) else 1.0
    return float(size_term * sharp_term * edge_term)


class KeyframeSelector:
    """Keeps the best views of each track (up to `views_per_track`, spread over its life); emits them once a
    confirmed track's best view settles, and a final time when the track ends (expires) or the stream does,
    so that what is understood of it can be fused from every view kept."""

    def __init__(self, config: KeyframeConfig) -> None:
        self.config = config
        self._views: dict[int, _TrackViews] = {}
        self._frames = 0

    def observe(
        self,
        frame_bgr: NDArray[np.uint8],
        frame_index: int,
        time_s: float,
        tracks: Sequence[TrackState],
        *,
        masker: Masker | None = None,
        gains: tuple[float, float, float] | None = None,
    ) -> list[Keyframe]:
        """Score this frame's view of each track; returns keyframes that became due. Views kept from this
        frame carry the mask `masker` cuts for them and the stream's white-balance `gains`."""
        check_frame(frame_bgr)
        self._frames += 1
        due: list[Keyframe] = []
        for track in tracks:
            x1, y1, x2, y2 = track.box
            if not x2 > x1 or not y2 > y1:
                raise InvalidInput(f"track {track.track_id} has a zero-size box {track.box}")
            if not _overlaps(track.box, frame_bgr.shape):
                continue  # nothing of the person is inside the frame: no view to judge
            views = self._see(frame_bgr, frame_index, time_s, track, masker, gains)
            settled = views.since_better >= self.config.settle_frames and views.best.quality > 0
            if views.confirmed and not views.emitted and settled:
                due.append(views.emission(self.config.views_per_track, final=False))
        return due + self._expire()

    def request(self, track_id: int) -> Keyframe | None:
        """The best view so far of a track (for a re-send), or None when the track is unknown or expired."""
        views = self._views.get(track_id)
        return views.best if views is not None else None

    def flush(self) -> list[Keyframe]:
        """The final emission of every confirmed track still open (the stream ended); forgets every track."""
        limit = self.config.views_per_track
        out = [
            v.emission(limit, final=True) for v in self._views.values() if v.confirmed and v.best.quality > 0
        ]
        self._views.clear()
        return out

    def _see(
        self,
        frame_bgr: NDArray[np.uint8],
        frame_index: int,
        time_s: float,
        track: TrackState,
        masker: Masker | None,
        gains: tuple[float, float, float] | None,
    ) -> _TrackViews:
        cfg = self.config
        quality = view_quality(frame_bgr, track.box, cfg)
        views = self._views.get(track.track_id)
        better = views is None or quality > views.best.quality * cfg.improvement
        replaced = None
        if quality > 0 and cfg.views_per_track > 1:
            replaced = (
                []
                if views is None
                else views.replaced_by(self._frames, quality, cfg.views_per_track, cfg.view_gap_frames)
            )
        keyframe = None
        if better or replaced is not None:
            crop = crop_box(frame_bgr, track.box).copy()
            keyframe = Keyframe(
                track_id=track.track_id,
                frame_index=frame_index,
                time_s=time_s,
                box=track.box,
                crop=crop,
                quality=quality,
                mask=masker(track.box, crop.shape) if masker is not None else None,
                gains=gains,
            )
        if views is None:
            assert keyframe is not None
            views = self._views[track.track_id] = _TrackViews(keyframe, track.confirmed, self._frames)
        elif better and keyframe is not None:
            views.best, views.since_better = keyframe, 0
        else:
            views.since_better += 1
        if replaced is not None and keyframe is not None:
            views.keep(self._frames, keyframe, replaced)
        views.confirmed = views.confirmed or track.confirmed
        views.last_seen = self._frames
        return views

    def _expire(self) -> list[Keyframe]:
        """Drop tracks unseen for expire_frames; each confirmed one makes its final emission."""
        gone = [
            tid for tid, v in self._views.items() if self._frames - v.last_seen >= self.config.expire_frames
        ]
        out = []
        for tid in gone:
            views = self._views.pop(tid)
            if views.confirmed and views.best.quality > 0:
                out.append(views.emission(self.config.views_per_track, final=True))
            log.debug("track %d expired after %d frames unseen", tid, self.config.expire_frames)
        return out


def _overlaps(box: Box, frame_shape: tuple[int, ...]) -> bool:
    height, width = frame_shape[:2]
    return box[0] < width and box[1] < height and box[2] > 0 and box[3] > 0
