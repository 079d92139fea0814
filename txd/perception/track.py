"""DeepSORT-style tracker: Kalman box state, appearance matching gated by Mahalanobis, IoU rescue."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from numpy.typing import NDArray
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from semcom.config import Frozen
from txd.perception.appearance import Embedder
from txd.perception.detect import Box, Detection, check_frame, iou_matrix

FloatArray = NDArray[np.float64]
# 0.95 quantile of the chi-square distribution with 4 degrees of freedom (x, y, aspect, height).
CHI2_95_4DOF = 9.4877
_INFEASIBLE = 1e5


class TrackerConfig(Frozen):
    """Track life cycle and matching thresholds."""

    n_init: int = Field(3, ge=1, description="consecutive hits before a track is confirmed")
    max_age: int = Field(30, ge=1, description="analysed frames a confirmed track survives without a hit")
    max_cosine_distance: float = Field(
        0.3, ge=0, le=2, description="largest appearance (cosine) distance accepted for a match"
    )
    max_iou_distance: float = Field(0.7, ge=0, le=1, description="largest 1 - IoU accepted by IoU matching")
    gating_threshold: float = Field(
        CHI2_95_4DOF, gt=0, description="largest squared Mahalanobis distance accepted (chi2 4 dof)"
    )
    motion_weight: float = Field(
        0.3, ge=0, le=1, description="share of the gated Mahalanobis distance in the appearance-stage cost"
    )
    nn_budget: int = Field(100, ge=1, description="appearance samples kept per track")
    std_weight_position: float = Field(1 / 20, gt=0, description="position noise relative to box height")
    std_weight_velocity: float = Field(1 / 160, gt=0, description="velocity noise relative to box height")


@dataclass(frozen=True)
class TrackState:
    """A track as seen after one frame: box as (x1, y1, x2, y2) pixels."""

    track_id: int
    box: Box
    confirmed: bool
    hits: int
    time_since_update: int


class KalmanFilter:
    """Constant-velocity filter on (cx, cy, aspect w/h, height) and their rates, one step per frame."""

    def __init__(self, std_weight_position: float, std_weight_velocity: float) -> None:
        self._motion = np.eye(8)
        self._motion[:4, 4:] = np.eye(4)
        self._observe = np.eye(4, 8)
        self._pos = std_weight_position
        self._vel = std_weight_velocity

    def initiate(self, measurement: FloatArray) -> tuple[FloatArray, FloatArray]:
        mean = np.concatenate([measurement, np.zeros(4)])
        h = measurement[3]
        std = [2 * self._pos * h, 2 * self._pos * h, 1e-2, 2 * self._pos * h]
        std += [10 * self._vel * h, 10 * self._vel * h, 1e-5, 10 * self._vel * h]
        return mean, np.diag(np.square(std))

    def predict(self, mean: FloatArray, cov: FloatArray) -> tuple[FloatArray, FloatArray]:
        h = mean[3]
        std = [self._pos * h, self._pos * h, 1e-2, self._pos * h]
        std += [self._vel * h, self._vel * h, 1e-5, self._vel * h]
        mean = self._motion @ mean
        cov = self._motion @ cov @ self._motion.T + np.diag(np.square(std))
        return mean, cov

    def project(self, mean: FloatArray, cov: FloatArray) -> tuple[FloatArray, FloatArray]:
        h = mean[3]
        noise = np.diag(np.square([self._pos * h, self._pos * h, 1e-1, self._pos * h]))
        return self._observe @ mean, self._observe @ cov @ self._observe.T + noise

    def update(
        self, mean: FloatArray, cov: FloatArray, measurement: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        projected, projected_cov = self.project(mean, cov)
        factor = scipy.linalg.cho_factor(projected_cov, lower=True, check_finite=False)
        gain = scipy.linalg.cho_solve(factor, (cov @ self._observe.T).T, check_finite=False).T
        mean = mean + (measurement - projected) @ gain.T
        cov = cov - gain @ projected_cov @ gain.T
        return mean, cov

    def gating_distance(self, mean: FloatArray, cov: FloatArray, measurements: FloatArray) -> FloatArray:
        """Squared Mahalanobis distance of each (n, 4) measurement from the projected state."""
        projected, projected_cov = self.project(mean, cov)
        d = measurements - projected
        # d^T S^-1 d through numpy's 4x4 solve: scipy's solve_triangular costs ~1 ms a call here, and the
        # tracker gates every confirmed track against every frame's detections.
        solved = np.linalg.solve(projected_cov, d.T)
        return np.asarray(np.sum(d.T * solved, axis=0), dtype=np.float64)


def to_xyah(box: Box) -> FloatArray:
    x1, y1, x2, y2 = box
    w, h = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
    return np.array([x1 + w / 2, y1 + h / 2, w / h, h])


def to_box(state: FloatArray) -> Box:
    cx, cy, a, h = (float(v) for v in state[:4])
    w = a * h
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@dataclass
class _Track:
    track_id: int
    mean: FloatArray
    cov: FloatArray
    features: deque[NDArray[np.float32]]
    hits: int = 1
    time_since_update: int = 0
    confirmed: bool = False
    deleted: bool = False
    box: Box = field(default=(0.0, 0.0, 0.0, 0.0))

    def state(self) -> TrackState:
        return TrackState(self.track_id, self.box, self.confirmed, self.hits, self.time_since_update)


class Tracker:
    """Associates each frame's detections with tracks; ids are never reused."""

    def __init__(self, config: TrackerConfig, embedder: Embedder | None = None) -> None:
        self.config = config
        self.embedder = embedder
        self.kf = KalmanFilter(config.std_weight_position, config.std_weight_velocity)
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[TrackState]:
        """Every live track, updated this frame or coasting."""
        return [t.state() for t in self._tracks]

    def update(
        self,
        frame_bgr: NDArray[np.uint8],
        detections: Sequence[Detection],
        features: NDArray[np.float32] | None = None,
    ) -> list[TrackState]:
        """Predict, associate, update; returns the tracks that got a detection in this frame.

        `features` are the detections' appearance rows when the caller embedded them already (txd embeds the
        frames of several streams in one call); otherwise the tracker's own embedder, if any, is asked."""
        check_frame(frame_bgr)
        for track in self._tracks:
            track.mean, track.cov = self.kf.predict(track.mean, track.cov)
            track.time_since_update += 1
        boxes = [d.box for d in detections]
        if features is None and self.embedder is not None and boxes:
            features = self.embedder.embed(frame_bgr, boxes)
        if features is not None and len(features) != len(boxes):
            raise ValueError(f"{len(features)} appearance rows for {len(boxes)} detections")
        if not boxes:
            features = None
        measurements = np.array([to_xyah(b) for b in boxes]).reshape(-1, 4)
        matches, unmatched_tracks, unmatched_dets = self._associate(measurements, features)
        for ti, di in matches:
            self._hit(
                self._tracks[ti], measurements[di], boxes[di], None if features is None else features[di]
            )
        for ti in unmatched_tracks:
            track = self._tracks[ti]
            if not track.confirmed or track.time_since_update > self.config.max_age:
                track.deleted = True
        for di in unmatched_dets:
            self._start(measurements[di], boxes[di], None if features is None else features[di])
        self._tracks = [t for t in self._tracks if not t.deleted]
        return [t.state() for t in self._tracks if t.time_since_update == 0]

    def _hit(self, track: _Track, z: FloatArray, box: Box, feature: NDArray[np.float32] | None) -> None:
        track.mean, track.cov = self.kf.update(track.mean, track.cov, z)
        track.hits += 1
        track.time_since_update = 0
        track.box = box
        if feature is not None:
            track.features.append(feature)
        if not track.confirmed and track.hits >= self.config.n_init:
            track.confirmed = True

    def _start(self, z: FloatArray, box: Box, feature: NDArray[np.float32] | None) -> None:
        mean, cov = self.kf.initiate(z)
        track = _Track(self._next_id, mean, cov, deque(maxlen=self.config.nn_budget), box=box)
        track.confirmed = self.config.n_init <= 1
        if feature is not None:
            track.features.append(feature)
        self._next_id += 1
        self._tracks.append(track)

    def _associate(
        self, measurements: FloatArray, features: NDArray[np.float32] | None
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Appearance cascade for confirmed tracks (most recently seen first), then IoU for the rest."""
        detections = list(range(len(measurements)))
        confirmed = [i for i, t in enumerate(self._tracks) if t.confirmed]
        matches: list[tuple[int, int]] = []
        if features is not None:
            for level in range(1, self.config.max_age + 1):
                if not detections:
                    break
                tracks = [i for i in confirmed if self._tracks[i].time_since_update == level]
                if tracks:
                    cost = self._appearance_cost(tracks, detections, measurements, features)
                    found, detections = _assign(cost, tracks, detections, self.config.max_cosine_distance)
                    matches += found
        matched = {ti for ti, _ in matches}
        # IoU rescue: tentative tracks, and confirmed ones missed by appearance but seen last frame.
        candidates = [
            i
            for i, t in enumerate(self._tracks)
            if i not in matched and (not t.confirmed or features is None or t.time_since_update == 1)
        ]
        if candidates and detections:
            cost = self._iou_cost(candidates, detections, measurements)
            found, detections = _assign(cost, candidates, detections, self.config.max_iou_distance)
            matches += found
        matched = {ti for ti, _ in matches}
        unmatched_tracks = [i for i in range(len(self._tracks)) if i not in matched]
        return matches, unmatched_tracks, detections

    def _appearance_cost(
        self,
        tracks: list[int],
        detections: list[int],
        measurements: FloatArray,
        features: NDArray[np.float32],
    ) -> FloatArray:
        det_features = features[detections]
        cost = np.empty((len(tracks), len(detections)))
        for row, ti in enumerate(tracks):
            track = self._tracks[ti]
            gallery = np.stack(track.features) if track.features else np.zeros((1, features.shape[1]))
            appearance = (1.0 - gallery @ det_features.T).min(axis=0)
            gate = self.kf.gating_distance(track.mean, track.cov, measurements[detections])
            # Blending in motion breaks ties between similar-looking people who stand within the same gate.
            motion = gate / self.config.gating_threshold
            weight = self.config.motion_weight
            cost[row] = (1.0 - weight) * appearance + weight * motion * self.config.max_cosine_distance
            cost[row, appearance > self.config.max_cosine_distance] = _INFEASIBLE
            cost[row, gate > self.config.gating_threshold] = _INFEASIBLE
        return cost

    def _iou_cost(self, tracks: list[int], detections: list[int], measurements: FloatArray) -> FloatArray:
        predicted = np.array([to_box(self._tracks[i].mean) for i in tracks])
        observed = np.array([to_box(measurements[j]) for j in detections])
        return 1.0 - iou_matrix(predicted, observed)


def _assign(
    cost: FloatArray, rows: list[int], cols: list[int], max_cost: float
) -> tuple[list[tuple[int, int]], list[int]]:
    """Hungarian assignment keeping pairs at or under max_cost; returns matches and the unmatched cols."""
    clipped = np.minimum(cost, max_cost + 1e-5)
    row_idx, col_idx = linear_sum_assignment(clipped)
    matches = [(rows[r], cols[c]) for r, c in zip(row_idx, col_idx, strict=True) if cost[r, c] <= max_cost]
    taken = {c for _, c in matches}
    return matches, [c for c in cols if c not in taken]
