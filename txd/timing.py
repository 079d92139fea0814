"""Wall seconds and item counts per stage of a stream's analysis: one record, filled in by every stage."""

from __future__ import annotations

from dataclasses import dataclass, field

# The stages in pipeline order. "colour" is the person masks and the white-balance estimate; "submit" is
# the time spent handing records to the link (waiting for room included); a benchmark that frames records
# itself adds "codec" and "phy".
STAGES = ("decode", "detect", "embed", "track", "colour", "keyframes", "understand", "submit")


@dataclass
class StageTimes:
    """What one stream's analysis spent, per stage, and how much it handled.

    Seconds are wall time measured around each stage's call; stages that overlap (detection of the next frame
    runs while this one is tracked) each count their own time, so the sum may exceed the elapsed time.
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames_analysed: int = 0
    frames_dropped: int = 0  # decoded frames due for analysis but skipped because analysis lagged (live)
    detections: int = 0
    keyframes: int = 0
    views_understood: int = 0  # crops the understander read: a track's several views, each once
    records: int = 0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def rate(self, stage: str, count: int) -> float:
        """Items per second of `stage`'s own time (inf when it took no time)."""
        seconds = self.seconds.get(stage, 0.0)
        return count / seconds if seconds > 0 else float("inf")

    def summary(self) -> str:
        n = self.frames_analysed
        return (
            f"{n} frames analysed, {self.detections} detections, {self.keyframes} keyframes, "
            f"{self.records} records; frames/s detect {self.rate('detect', n):.1f}, "
            f"track {self.rate('track', n):.1f}, keyframes {self.rate('keyframes', n):.1f}"
        )
