"""Person detection: the SSDLite backend on a real PETS09 frame and a blank one; registry and config union."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import TypeAdapter

from semcom.errors import BackendDead, InvalidInput
from semcom.registry import Registry
from txd.perception.detect import (
    DETECTORS,
    Detection,
    DetectorConfig,
    DetectorFactory,
    SsdLiteConfig,
    YoloConfig,
    iou_matrix,
    tile_windows,
)

pytest.importorskip("cv2", reason="opencv-python-headless is not installed")
# Frame 41 of PETS09-S2L1 (1-based, as in gt.txt): six people; frame 1 has only three, one half hidden.
PETS_FRAME = 41


@pytest.fixture(scope="module")
def detector() -> SsdLiteConfig:
    return SsdLiteConfig()


@pytest.fixture(scope="module")
def pets_frame(shared_data: Path) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    from txd.video import iter_frames

    video = shared_data / "videos" / "pets09_s2l1_vtest.avi"
    frame = next(f for f in iter_frames(video) if f.index == PETS_FRAME - 1)
    rows = np.loadtxt(shared_data / "gt" / "PETS09-S2L1" / "gt.txt", delimiter=",", ndmin=2)
    boxes = rows[rows[:, 0] == PETS_FRAME][:, 2:6].copy()
    boxes[:, 2:] += boxes[:, :2]
    return frame.image, boxes


@pytest.mark.data
def test_finds_people_on_a_pets_frame(
    detector: SsdLiteConfig, pets_frame: tuple[NDArray[np.uint8], NDArray[np.float64]]
) -> None:
    image, gt = pets_frame
    found = detector.build().detect(image)
    assert len(found) >= 3
    heights = [d.box[3] - d.box[1] for d in found]
    assert all(40 <= h <= 200 for h in heights), heights  # people are 60-120 px tall in this camera
    assert all(0 < d.score <= 1 for d in found)
    boxes = np.array([d.box for d in found])
    matched = (iou_matrix(boxes, gt).max(axis=1) > 0.5).sum()
    assert matched >= len(found) / 2, (matched, len(found))


@pytest.mark.data
def test_frames_of_several_streams_in_one_call_give_each_frame_its_own_people(
    detector: SsdLiteConfig, pets_frame: tuple[NDArray[np.uint8], NDArray[np.float64]]
) -> None:
    image, _ = pets_frame
    det = detector.build()
    alone = det.detect(image)
    smaller = np.ascontiguousarray(image[100:500, 50:690])  # another camera: another size
    batched = det.detect_many([image, np.zeros((480, 640, 3), np.uint8), smaller, image])
    assert len(batched) == 4 and batched[1] == []
    for got, want in ((batched[0], alone), (batched[3], alone), (batched[2], det.detect(smaller))):
        assert len(got) == len(want) >= 1
        # One batched forward pass gives the same boxes as one frame at a time, within float rounding.
        assert np.allclose([d.box for d in got], [d.box for d in want], atol=0.5)
    assert det.detect_many([]) == []


def test_nothing_on_blank_frames(detector: SsdLiteConfig) -> None:
    det = detector.build()
    assert det.detect(np.zeros((576, 768, 3), np.uint8)) == []
    assert det.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_rejects_bad_frames(detector: SsdLiteConfig) -> None:
    det = detector.build()
    bad_frames: list[NDArray[Any]] = [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 5, 3), np.uint8),
    ]
    for bad in bad_frames:
        with pytest.raises(InvalidInput, match="BGR frame"):
            det.detect(bad)


def test_missing_model_file_is_backend_dead(tmp_path: Path) -> None:
    with pytest.raises(BackendDead, match="missing"):
        SsdLiteConfig(model_path=tmp_path / "nope.pb").build()


def test_tiles_cover_the_width_with_overlap() -> None:
    assert tile_windows(768, 1, 0.3) == [(0, 768)]
    spans = tile_windows(768, 2, 0.05)
    assert spans[0][0] == 0 and spans[-1][1] == 768
    assert spans[0][1] - spans[1][0] == round(0.05 * 768)
    three = tile_windows(1000, 3, 0.1)
    assert [b - a for a, b in three] == [400, 400, 400]


def test_config_union_selects_backend_by_kind() -> None:
    adapter: TypeAdapter[DetectorConfig] = TypeAdapter(DetectorConfig)
    assert isinstance(adapter.validate_python({"kind": "ssdlite", "score_threshold": 0.4}), SsdLiteConfig)
    yolo = adapter.validate_python({"kind": "yolo", "model": "yolov8s.pt", "device": "cuda:0"})
    assert isinstance(yolo, YoloConfig) and yolo.device == "cuda:0"
    with pytest.raises(ValueError, match="extra"):
        adapter.validate_python({"kind": "ssdlite", "bogus": 1})


def test_registry_names_and_a_registered_backend() -> None:
    assert {"ssdlite", "yolo"} <= set(DETECTORS.names())

    class Fixed:
        def __init__(self, config: object) -> None:
            self.config = config

        def detect(self, frame_bgr: NDArray[np.uint8]) -> list[Detection]:
            return [Detection((1.0, 2.0, 3.0, 4.0), 0.9)]

        def detect_many(self, frames_bgr: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
            return [self.detect(frame) for frame in frames_bgr]

        async def aclose(self) -> None:
            return None

    registry: Registry[DetectorFactory] = Registry("detector")
    registry.register("ssdlite", Fixed)
    built = SsdLiteConfig().build(registry)
    assert built.detect(np.zeros((4, 4, 3), np.uint8)) == [Detection((1.0, 2.0, 3.0, 4.0), 0.9)]


def test_yolo_without_ultralytics_is_a_clear_error() -> None:
    if importlib.util.find_spec("ultralytics") is not None:
        pytest.skip("ultralytics is installed; the yolo backend is exercised where its weights exist")
    with pytest.raises(BackendDead, match="ultralytics"):
        YoloConfig().build()


def test_importing_perception_loads_no_heavy_module() -> None:
    code = (
        "import sys, txd.config, txd.perception.pipeline, txd.perception.detect;"
        "print(sorted(m for m in ('cv2', 'torch', 'tensorflow', 'ultralytics') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
