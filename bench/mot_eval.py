"""MOT accuracy of txd's detector + tracker on MOT15 footage (MOTA, IDF1, ID switches, fps per stage)."""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import motmetrics as mm
import numpy as np
from numpy.typing import NDArray

from txd.perception.appearance import AppearanceConfig, Embedder, HistogramConfig, MobileNetV2Config
from txd.perception.detect import Detector, SsdLiteConfig, iou_matrix
from txd.perception.track import Tracker, TrackerConfig
from txd.video import iter_frames

REPO_ROOT = Path(__file__).resolve().parents[1]
# motmetrics' convention: a hypothesis further than this (1 - IoU) from an object cannot match it.
MAX_IOU_DISTANCE = 0.5


@dataclass(frozen=True)
class MotSequence:
    """A video and its MOT15 ground truth; video frame index (0-based) = gt frame - 1 for both."""

    video: str
    gt: str


SEQUENCES = {
    "pets09": MotSequence("videos/pets09_s2l1_vtest.avi", "gt/PETS09-S2L1/gt.txt"),
    "tud-stadtmitte": MotSequence("videos/tud_stadtmitte.mp4", "gt/TUD-Stadtmitte/gt.txt"),
}


@dataclass
class Result:
    name: str
    frames: int
    mota: float
    motp_iou: float
    idf1: float
    precision: float
    recall: float
    id_switches: int
    gt_ids: int
    decode_s: float
    detect_s: float
    track_s: float
    embed_s: float


def data_root() -> Path:
    return Path(os.environ.get("SEMCOM_DATA_DIR") or REPO_ROOT.parent / "shared" / "data").resolve()


def load_gt(path: Path) -> dict[int, tuple[NDArray[np.int64], NDArray[np.float64]]]:
    """gt frame -> (ids, boxes as x1, y1, x2, y2); rows with confidence 0 are ignore regions in MOT."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    rows = rows[rows[:, 6] != 0]
    out = {}
    for frame in np.unique(rows[:, 0]).astype(int):
        sel = rows[rows[:, 0] == frame]
        boxes = sel[:, 2:6].copy()
        boxes[:, 2:] += boxes[:, :2]
        out[int(frame)] = (sel[:, 1].astype(np.int64), boxes)
    return out


def build(args: argparse.Namespace) -> tuple[Detector, Tracker, _TimedEmbedder | None]:
    """The detector and tracker the command line asks for; the embedder is wrapped to time it."""
    detector = SsdLiteConfig(
        score_threshold=args.score_threshold,
        tile_columns=args.tile_columns,
        tile_overlap=args.tile_overlap,
        input_size=args.input_size,
    ).build()
    appearance: AppearanceConfig | None = {
        "mobilenetv2": MobileNetV2Config(),
        "histogram": HistogramConfig(),
        "none": None,
    }[args.embedder]
    timed = _TimedEmbedder(appearance.build()) if appearance is not None else None
    tracker = Tracker(
        TrackerConfig(
            max_age=args.max_age,
            n_init=args.n_init,
            max_cosine_distance=args.max_cosine_distance,
            max_iou_distance=args.max_iou_distance,
            motion_weight=args.motion_weight,
        ),
        timed,
    )
    return detector, tracker, timed


def evaluate(name: str, args: argparse.Namespace) -> Result:
    seq = SEQUENCES[name]
    root = data_root()
    gt = load_gt(root / seq.gt)
    detector, tracker, timed = build(args)
    acc = mm.MOTAccumulator(auto_id=True)
    frames = 0
    decode_s = detect_s = track_s = 0.0
    started = time.perf_counter()
    # The decoder samples the analysis rate as txd's does (a fixed grid of 1/fps seconds).
    video = iter_frames(root / seq.video, fps=args.analysis_fps)
    for frame in itertools.takewhile(lambda f: args.max_frames is None or f.index < args.max_frames, video):
        decoded = time.perf_counter()
        decode_s += decoded - started
        frames += 1
        detections = detector.detect(frame.image)
        detected = time.perf_counter()
        tracks = [t for t in tracker.update(frame.image, detections) if t.confirmed]
        track_s += time.perf_counter() - detected
        detect_s += detected - decoded
        gt_ids, gt_boxes = gt.get(frame.index + 1, (np.zeros(0, np.int64), np.zeros((0, 4))))
        hyp_boxes = np.array([t.box for t in tracks], dtype=np.float64).reshape(-1, 4)
        acc.update(gt_ids.tolist(), [t.track_id for t in tracks], _distances(gt_boxes, hyp_boxes))
        started = time.perf_counter()
    embed_s = timed.seconds if timed is not None else 0.0
    return _summarise(name, acc, frames, decode_s, detect_s, track_s, embed_s)


def _distances(gt_boxes: NDArray[np.float64], hyp_boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    if len(gt_boxes) == 0 or len(hyp_boxes) == 0:
        return np.zeros((len(gt_boxes), len(hyp_boxes)))
    dist = 1.0 - iou_matrix(gt_boxes, hyp_boxes)
    return np.where(dist > MAX_IOU_DISTANCE, np.nan, dist)


def _summarise(
    name: str,
    acc: mm.MOTAccumulator,
    frames: int,
    decode_s: float,
    detect_s: float,
    track_s: float,
    embed_s: float,
) -> Result:
    metrics = ["mota", "motp", "idf1", "precision", "recall", "num_switches", "num_unique_objects"]
    row = mm.metrics.create().compute(acc, metrics=metrics, name=name).iloc[0]
    return Result(
        name=name,
        frames=frames,
        mota=float(row["mota"]),
        motp_iou=1.0 - float(row["motp"]),
        idf1=float(row["idf1"]),
        precision=float(row["precision"]),
        recall=float(row["recall"]),
        id_switches=int(row["num_switches"]),
        gt_ids=int(row["num_unique_objects"]),
        decode_s=decode_s,
        detect_s=detect_s,
        track_s=track_s,
        embed_s=embed_s,
    )


class _TimedEmbedder:
    """Wraps an embedder to count the seconds it takes inside the tracker."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0

    def embed(
        self, frame_bgr: NDArray[np.uint8], boxes: Sequence[tuple[float, float, float, float]]
    ) -> NDArray[np.float32]:
        start = time.perf_counter()
        try:
            return self.inner.embed(frame_bgr, boxes)
        finally:
            self.seconds += time.perf_counter() - start

    def embed_many(
        self, items: Sequence[tuple[NDArray[np.uint8], Sequence[tuple[float, float, float, float]]]]
    ) -> list[NDArray[np.float32]]:
        return [self.embed(frame, boxes) for frame, boxes in items]

    async def aclose(self) -> None:
        await self.inner.aclose()


def _fps(frames: int, seconds: float) -> str:
    return f"{frames / seconds:7.1f}" if seconds > 0 else "    inf"


def report(r: Result) -> None:
    print(
        f"{r.name}: {r.frames} frames, {r.gt_ids} gt ids | MOTA {r.mota:.3f}  IDF1 {r.idf1:.3f}  "
        f"precision {r.precision:.3f}  recall {r.recall:.3f}  ID switches {r.id_switches}  "
        f"mean IoU {r.motp_iou:.3f}"
    )
    print(
        f"  fps  decode {_fps(r.frames, r.decode_s)}  detect {_fps(r.frames, r.detect_s)}  "
        f"track {_fps(r.frames, r.track_s)} (appearance {_fps(r.frames, r.embed_s)})  "
        f"detect+track {_fps(r.frames, r.detect_s + r.track_s)}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    tracker, ssd = TrackerConfig(), SsdLiteConfig()
    p = argparse.ArgumentParser(prog="python -m bench.mot_eval", description=__doc__)
    p.add_argument("--video", choices=sorted(SEQUENCES), action="append", help="default: all")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many decoded frames")
    p.add_argument("--analysis-fps", type=float, default=None, help="analyse at most this many frames/s")
    p.add_argument("--score-threshold", type=float, default=ssd.score_threshold)
    p.add_argument("--tile-columns", type=int, default=ssd.tile_columns)
    p.add_argument("--tile-overlap", type=float, default=ssd.tile_overlap)
    p.add_argument("--input-size", type=int, default=ssd.input_size)
    p.add_argument("--embedder", choices=["mobilenetv2", "histogram", "none"], default="mobilenetv2")
    p.add_argument("--max-age", type=int, default=tracker.max_age)
    p.add_argument("--n-init", type=int, default=tracker.n_init)
    p.add_argument("--max-cosine-distance", type=float, default=tracker.max_cosine_distance)
    p.add_argument("--max-iou-distance", type=float, default=tracker.max_iou_distance)
    p.add_argument("--motion-weight", type=float, default=tracker.motion_weight)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    root = data_root()
    if not (root / "videos").is_dir():
        raise SystemExit(f"test data not found at {root} (set SEMCOM_DATA_DIR)")
    for name in args.video or sorted(SEQUENCES):
        report(evaluate(name, args))


if __name__ == "__main__":
    main()
