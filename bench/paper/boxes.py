"""Box-level ground truth for crowded video: MOTChallenge gt.txt identities matched to keyframes by IoU."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from semcom.schema import Schema

from .labels import Target, parse_cell

# A box as (x1, y1, x2, y2) in pixels.
Xyxy = tuple[float, float, float, float]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when either is empty."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class GtTrack:
    """One ground-truth identity: its annotated frames (sorted) and boxes (n x 4, x1 y1 x2 y2)."""

    frames: NDArray[np.int64]
    boxes: NDArray[np.float64]

    def box_at(self, frame: int) -> Xyxy | None:
        """The box in `frame`: annotated, or linearly interpolated between the annotated frames around it;
        None outside the identity's first..last annotated frame."""
        if frame < self.frames[0] or frame > self.frames[-1]:
            return None
        i = int(np.searchsorted(self.frames, frame))
        if self.frames[i] == frame:
            box = self.boxes[i]
        else:
            f0, f1 = self.frames[i - 1], self.frames[i]
            w = (frame - f0) / (f1 - f0)
            box = (1 - w) * self.boxes[i - 1] + w * self.boxes[i]
        return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


@dataclass(frozen=True)
class GroundTruth:
    """Every identity of a MOTChallenge gt.txt, by id (as written in the file)."""

    path: Path
    tracks: Mapping[str, GtTrack]

    def match(self, frame: int, box: Sequence[float], iou_min: float) -> str | None:
        """The identity whose box in `frame` overlaps `box` most, if that IoU reaches `iou_min`."""
        best, best_iou = None, iou_min
        for key, track in self.tracks.items():
            gt = track.box_at(frame)
            if gt is not None and (overlap := iou(gt, box)) >= best_iou:
                best, best_iou = key, overlap
        return best


def load_mot_gt(path: Path) -> GroundTruth:
    """Read MOTChallenge `gt.txt` (frame, id, x, y, w, h, conf, ...; frames 1-based). Rows with conf 0 are
    the MOT16+ "ignore" marks and are skipped; InvalidInput names a bad row."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(f"cannot read ground truth {path}: {err.strerror or err}") from err
    rows: dict[str, list[tuple[int, float, float, float, float]]] = defaultdict(list)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            frame, key = int(float(parts[0])), str(int(float(parts[1])))
            x, y, w, h = (float(p) for p in parts[2:6])
            conf = float(parts[6]) if len(parts) > 6 else 1.0
        except (ValueError, IndexError) as err:
            raise InvalidInput(
                f"{path} line {number}: expected frame,id,x,y,w,h[,conf,...]: {line!r}"
            ) from err
        if w <= 0 or h <= 0:
            raise InvalidInput(f"{path} line {number}: box width and height must be positive")
        if conf != 0:
            rows[key].append((frame, x, y, x + w, y + h))
    if not rows:
        raise InvalidInput(f"{path}: no ground-truth boxes")
    tracks = {}
    for key, items in rows.items():
        items.sort()
        frames = np.array([r[0] for r in items], dtype=np.int64)
        if len(np.unique(frames)) != len(frames):
            raise InvalidInput(f"{path}: identity {key} has two boxes in one frame")
        tracks[key] = GtTrack(frames, np.array([r[1:] for r in items], dtype=np.float64))
    return GroundTruth(path, tracks)


def load_identity_attributes(path: Path, schema: Schema, gt: GroundTruth) -> tuple[Target, ...]:
    """One target per ground-truth identity, labelled from `attributes.csv` (`id` and schema fields; `a|b`
    for several values, empty = unknown; other columns ignored). An identity without a row is a target with
    no labels (it satisfies no query); a row naming an identity the gt lacks is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(f"cannot read attributes {path}: {err.strerror or err}") from err
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    columns = [c.strip() for c in reader.fieldnames or []]
    fields = tuple(name for name in schema.field_names if name in columns)
    if "id" not in columns or not fields:
        raise InvalidInput(
            f"{path}: expected an 'id' column and fields of {schema.id} ({', '.join(schema.field_names)}); "
            f"found {', '.join(columns) or 'none'}"
        )
    labelled: dict[str, dict[str, tuple[str, ...]]] = {}
    for number, row in enumerate(reader, start=1):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        where = f"{path} data row {number}"
        try:
            key = str(int(row["id"]))
        except ValueError as err:
            raise InvalidInput(f"{where}: id must be an integer, got {row['id']!r}") from err
        if key not in gt.tracks:
            raise InvalidInput(f"{where}: identity {key} is not in {gt.path}")
        labelled[key] = {name: parse_cell(schema, name, row.get(name, ""), where) for name in fields}
    keys = sorted(gt.tracks, key=int)
    return tuple(Target(key, labelled.get(key, {})) for key in keys)
