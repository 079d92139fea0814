"""The perception stage: decoded frames -> detect -> track -> keyframes, with per-stage timing."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from semcom.errors import InvalidInput
from semcom.registry import Registry
from txd.perception.appearance import AppearanceConfig, MobileNetV2Config
from txd.perception.detect import (
    DETECTORS,
    Detection,
    Detector,
    DetectorConfig,
    DetectorFactory,
    SsdLiteConfig,
)
from txd.perception.keyframes import Keyframe, KeyframeConfig, KeyframeSelector
from txd.perception.track import Tracker, TrackerConfig, TrackState


class PerceptionConfig(Frozen):
    """Everything between decoded frames and keyframes."""

    detector: DetectorConfig = Field(SsdLiteConfig(), description="person detector, selected by `kind`")
    appearance: AppearanceConfig | None = Field(
        MobileNetV2Config(),
        description="appearance embedder for tracking; null tracks by motion and IoU only",
    )
    tracker: TrackerConfig = Field(TrackerConfig(), description="track life cycle and matching")
    keyframes: KeyframeConfig = Field(KeyframeConfig(), description="keyframe scoring and emission")
    analysis_fps: float | None = Field(
        None, gt=0, description="frames analysed per second of video at most; null analyses every frame"
    )

    def build(self, detectors: Registry[DetectorFactory] = DETECTORS) -> PerceptionPipeline:
        embedder = self.appearance.build() if self.appearance is not None else None
        return PerceptionPipeline(
            self.detector.build(detectors),
            Tracker(self.tracker, embedder),
            KeyframeSelector(self.keyframes),
            analysis_fps=self.analysis_fps,
        )


class FrameSampler:
    """Chooses frames so that at most `fps` per second of video are analysed, evenly spaced."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and fps <= 0:
            raise InvalidInput(f"analysis fps must be positive, got {fps}")
        self.period_s = 1.0 / fps if fps else 0.0
        self._due_s: float | None = None

    def take(self, time_s: float) -> bool:
        if self.period_s == 0.0:
            return True
        # Half a millisecond of slack: container timestamps are rounded to their time base.
        if self._due_s is not None and time_s < self._due_s - 5e-4:
            return False
        due = (self._due_s if self._due_s is not None else time_s) + self.period_s
        self._due_s = due if due > time_s else time_s + self.period_s
        return True


@dataclass
class StageTimes:
    """Wall time spent per stage and the frames it covers."""

    frames_seen: int = 0
    frames_analysed: int = 0
    detections: int = 0
    keyframes: int = 0
    detect_s: float = 0.0
    track_s: float = 0.0
    keyframe_s: float = 0.0

    def fps(self, seconds: float) -> float:
        return self.frames_analysed / seconds if seconds > 0 else float("inf")

    def summary(self) -> str:
        total = self.detect_s + self.track_s + self.keyframe_s
        return (
            f"{self.frames_analysed}/{self.frames_seen} frames analysed, {self.detections} detections, "
            f"{self.keyframes} keyframes; fps detect {self.fps(self.detect_s):.1f}, "
            f"track {self.fps(self.track_s):.1f}, keyframes {self.fps(self.keyframe_s):.1f}, "
            f"all {self.fps(total):.2f}"
        )


class PerceptionPipeline:
    """Runs detector, tracker and keyframe selector on each analysed frame of one stream."""

    def __init__(
        self,
        detector: Detector,
        tracker: Tracker,
        keyframes: KeyframeSelector,
        *,
        analysis_fps: float | None = None,
    ) -> None:
        self.detector = detector
        self.tracker = tracker
        self.keyframes = keyframes
        self.sampler = FrameSampler(analysis_fps)
        self.times = StageTimes()
        self.last_detections: list[Detection] = []
        self.last_tracks: list[TrackState] = []

    def process(self, frame_bgr: NDArray[np.uint8], frame_index: int, time_s: float) -> list[Keyframe]:
        """Analyse one frame (unless the analysis rate skips it); returns the keyframes that became due."""
        detections = self.detect(frame_bgr, time_s)
        if detections is None:
            return []
        return self.advance(frame_bgr, frame_index, time_s, detections)

    def detect(self, frame_bgr: NDArray[np.uint8], time_s: float) -> list[Detection] | None:
        """The first half of `process`: the people in a frame, or None when the analysis rate skips it.

        It holds no tracking state, so a caller may detect frame n + 1 while `advance` tracks frame n
        (one detection at a time: the detector is not reentrant).
        """
        self.times.frames_seen += 1
        if not self.sampler.take(time_s):
            return None
        self.times.frames_analysed += 1
        start = time.perf_counter()
        detections = self.detector.detect(frame_bgr)
        self.times.detect_s += time.perf_counter() - start
        self.times.detections += len(detections)
        return detections

    def advance(
        self, frame_bgr: NDArray[np.uint8], frame_index: int, time_s: float, detections: list[Detection]
    ) -> list[Keyframe]:
        """The second half of `process`: track the frame's detections; returns keyframes that became due."""
        start = time.perf_counter()
        self.last_detections = detections
        self.last_tracks = self.tracker.update(frame_bgr, detections)
        tracked = time.perf_counter()
        out = self.keyframes.observe(frame_bgr, frame_index, time_s, self.last_tracks)
        self.times.track_s += tracked - start
        self.times.keyframe_s += time.perf_counter() - tracked
        self.times.keyframes += len(out)
        return out

    def request(self, track_id: int) -> Keyframe | None:
        """The current best keyframe of a track, for a re-send when its attributes change."""
        return self.keyframes.request(track_id)

    def flush(self) -> list[Keyframe]:
        """Best keyframes of tracks still open at the end of the stream that were never sent."""
        out = self.keyframes.flush()
        self.times.keyframes += len(out)
        return out
