"""Optional Ultralytics YOLO person detector (the paper's YOLOv8); needs `ultralytics` and a weights file."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from semcom.errors import BackendDead, BackendFailed
from txd.perception.detect import Detection, YoloConfig, check_frame


class YoloDetector:
    """Runs an Ultralytics YOLO model and keeps the person class only."""

    def __init__(self, config: YoloConfig) -> None:
        self.config = config
        try:
            # Imported by name: ultralytics is an optional, GPU-side dependency (it pulls in torchvision).
            ultralytics: Any = importlib.import_module("ultralytics")
        except ImportError as err:
            raise BackendDead("the yolo detector needs `pip install ultralytics` (and its weights)") from err
        try:
            self._model: Any = ultralytics.YOLO(config.model)
        except Exception as err:
            raise BackendDead(f"cannot load YOLO weights {config.model!r}: {err}") from err

    def detect_many(self, frames_bgr: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        return [self.detect(frame) for frame in frames_bgr]

    async def aclose(self) -> None:
        self._model = None

    def detect(self, frame_bgr: NDArray[np.uint8]) -> list[Detection]:
        check_frame(frame_bgr)
        try:
            results = self._model.predict(
                frame_bgr,  # ultralytics takes numpy frames as BGR, like OpenCV
                conf=self.config.score_threshold,
                iou=self.config.nms_threshold,
                imgsz=self.config.image_size,
                classes=[self.config.person_class],
                device=self.config.device,
                half=self.config.half,
                verbose=False,
            )
        except Exception as err:
            raise BackendFailed(f"YOLO inference failed: {err}") from err
        out: list[Detection] = []
        for result in results:
            boxes = np.asarray(result.boxes.xyxy.cpu().numpy(), dtype=np.float64).reshape(-1, 4)
            scores = np.asarray(result.boxes.conf.cpu().numpy(), dtype=np.float64).reshape(-1)
            out += [
                Detection(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), score=float(s))
                for b, s in zip(boxes, scores, strict=True)
            ]
        return out
