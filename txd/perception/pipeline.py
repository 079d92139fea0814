"""The perception stage: frames at the analysis rate -> detect -> track -> keyframes, with stage timing."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from semcom.registry import Registry
from txd.perception.appearance import AppearanceConfig, Embedder, MobileNetV2Config
from txd.perception.detect import (
    DETECTORS,
    Detection,
    Detector,
    DetectorConfig,
    DetectorFactory,
    SsdLiteConfig,
)
from txd.perception.foreground import ForegroundConfig, ForegroundModel
from txd.perception.keyframes import Keyframe, KeyframeConfig, KeyframeSelector
from txd.perception.site_colour import SiteBalance, SiteBalanceConfig
from txd.perception.track import Tracker, TrackerConfig, TrackState
from txd.timing import StageTimes


class PerceptionConfig(Frozen):
    """Everything between decoded frames and keyframes."""

    detector: DetectorConfig = Field(SsdLiteConfig(), description="person detector, selected by `kind`")
    appearance: AppearanceConfig | None = Field(
        MobileNetV2Config(),
        description="appearance embedder for tracking; null tracks by motion and IoU only",
    )
    tracker: TrackerConfig = Field(TrackerConfig(), description="track life cycle and matching")
    keyframes: KeyframeConfig = Field(KeyframeConfig(), description="keyframe scoring and emission")
    foreground: ForegroundConfig = Field(
        ForegroundConfig(), description="person masks by background subtraction (static cameras)"
    )
    site_balance: SiteBalanceConfig = Field(
        SiteBalanceConfig(), description="per-site colour calibration: white balance estimated online"
    )
    analysis_fps: float | None = Field(
        None,
        gt=0,
        description="frames analysed per second of video at most, on a fixed grid of 1/fps seconds "
        "(the decoder samples them); null analyses every frame",
    )

    def models(self, detectors: Registry[DetectorFactory] = DETECTORS) -> PerceptionModels:
        """Load the detector and the appearance embedder: once per daemon, shared by every stream."""
        embedder = self.appearance.build() if self.appearance is not None else None
        return PerceptionModels(self.detector.build(detectors), embedder)

    def build(self, detectors: Registry[DetectorFactory] = DETECTORS) -> PerceptionPipeline:
        """One stream's pipeline with models of its own (tools and tests; txd shares its models)."""
        return self.pipeline(self.models(detectors))

    def pipeline(self, models: PerceptionModels, times: StageTimes | None = None) -> PerceptionPipeline:
        """A stream's tracking state on shared models; `times` receives the stage timings."""
        return PerceptionPipeline(
            models.detector,
            Tracker(self.tracker, models.embedder),
            KeyframeSelector(self.keyframes),
            times=times,
            foreground=ForegroundModel(self.foreground) if self.foreground.enabled else None,
            balance=SiteBalance(self.site_balance) if self.site_balance.enabled else None,
        )


@dataclass
class PerceptionModels:
    """The models perception loads: the detector and the appearance embedder (None: motion and IoU only)."""

    detector: Detector
    embedder: Embedder | None

    async def aclose(self) -> None:
        await self.detector.aclose()
        if self.embedder is not None:
            await self.embedder.aclose()


class PerceptionPipeline:
    """One stream's perception: detector, tracker and keyframe selector on each frame it is given.

    Frames arrive already at the analysis rate (txd's decoder samples them). Detection and appearance
    embedding hold no stream state, so txd runs them for several streams in one model call and hands the
    results to `advance`; `process` does all of it for a single caller.
    """

    def __init__(
        self,
        detector: Detector,
        tracker: Tracker,
        keyframes: KeyframeSelector,
        *,
        times: StageTimes | None = None,
        foreground: ForegroundModel | None = None,
        balance: SiteBalance | None = None,
    ) -> None:
        self.detector = detector
        self.tracker = tracker
        self.keyframes = keyframes
        self.foreground = foreground
        self.balance = balance
        self.times = times if times is not None else StageTimes()
        self.last_detections: list[Detection] = []
        self.last_tracks: list[TrackState] = []

    def process(self, frame_bgr: NDArray[np.uint8], frame_index: int, time_s: float) -> list[Keyframe]:
        """Detect, track and choose keyframes in one frame; returns the keyframes that became due."""
        start = time.perf_counter()
        detections = self.detector.detect(frame_bgr)
        self.times.add("detect", time.perf_counter() - start)
        return self.advance(frame_bgr, frame_index, time_s, detections)

    def advance(
        self,
        frame_bgr: NDArray[np.uint8],
        frame_index: int,
        time_s: float,
        detections: list[Detection],
        features: NDArray[np.float32] | None = None,
    ) -> list[Keyframe]:
        """Track one frame's detections (with their appearance rows, when already embedded) and choose
        keyframes; returns the keyframes that became due."""
        start = time.perf_counter()
        self.times.frames_analysed += 1
        self.times.detections += len(detections)
        self.last_detections = detections
        self.last_tracks = self.tracker.update(frame_bgr, detections, features)
        tracked = time.perf_counter()
        masker = gains = None
        if self.foreground is not None:
            model, found = self.foreground, self.foreground.apply(frame_bgr)
            masker = functools.partial(model.box_mask, found) if found is not None else None
        if self.balance is not None:
            gains = self.balance.update(frame_bgr)
        coloured = time.perf_counter()
        out = self.keyframes.observe(
            frame_bgr, frame_index, time_s, self.last_tracks, masker=masker, gains=gains
        )
        self.times.add("track", tracked - start)
        self.times.add("colour", coloured - tracked)
        self.times.add("keyframes", time.perf_counter() - coloured)
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
