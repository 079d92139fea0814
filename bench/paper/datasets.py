"""Ground truth as the bench scores it: which labelled target a keyframe (or a crop) shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from txd.perception.detect import Box

from .boxes import GroundTruth
from .labels import CropSet, Target, VideoLabels


class Dataset(Protocol):
    """Labelled targets, and whether records that show no target are left out of precision."""

    kind: str
    partial: bool

    @property
    def targets(self) -> tuple[Target, ...]: ...


@dataclass
class VideoDataset:
    """A labelled video with one person in view at a time: a keyframe shows the person whose (widened)
    time range holds its time."""

    video: Path
    labels: VideoLabels
    tolerance_s: float
    clip_s: float | None
    kind: str = "video"
    partial: bool = False

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.labels.targets

    def keyframe_target(self, time_s: float, box: Box) -> int | None:
        return self.labels.target_at(time_s, self.tolerance_s)


@dataclass
class BoxVideoDataset:
    """A video with MOTChallenge boxes: a keyframe shows the identity whose box in the keyframe's frame
    overlaps the keyframe's box by at least `iou_min` (the best such one).

    `partial`: the gt covers only some people, so a keyframe matching nobody is left out of precision
    instead of counted wrong.
    """

    video: Path
    gt: GroundTruth
    identities: tuple[Target, ...]
    fps: float  # the video's frame rate: frame index = round(time_s * fps)
    frame_offset: int  # gt frame number of the video's first frame (MOTChallenge: 1)
    iou_min: float
    partial: bool
    clip_s: float | None
    kind: str = "video-boxes"
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {t.key: i for i, t in enumerate(self.identities)}

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.identities

    def gt_frame(self, time_s: float) -> int:
        return round(time_s * self.fps) + self.frame_offset

    def keyframe_target(self, time_s: float, box: Box) -> int | None:
        key = self.gt.match(self.gt_frame(time_s), box, self.iou_min)
        return None if key is None else self._index[key]


@dataclass
class CropDataset:
    """A labelled crop set: crop i is target i."""

    crops: CropSet
    kind: str = "crops"
    partial: bool = False

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.crops.targets


AnyVideo = VideoDataset | BoxVideoDataset
AnyDataset = VideoDataset | BoxVideoDataset | CropDataset
