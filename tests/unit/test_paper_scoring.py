"""The paper bench's scorer: box-level ground truth matched by IoU, partial gt, ranked metrics, and the
refusal of in-sample crop runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.paper.boxes import GroundTruth, iou, load_identity_attributes, load_mot_gt
from bench.paper.cli import main
from bench.paper.datasets import BoxVideoDataset
from bench.paper.labels import Target, load_crop_set
from bench.paper.metrics import Receiver, ranked_metrics, score, summarise, summarise_few
from bench.paper.queries import PaperQuery
from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.parse import EmbeddedParser
from semcom.errors import InvalidInput
from semcom.schema import SchemaRegistry
from tests.fixtures.records import BagOfWordsEncoder, person

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
FPS = 10.0


def gt_file(tmp_path: Path, rows: list[tuple[int, int, float, float, float, float]]) -> Path:
    path = tmp_path / "gt.txt"
    path.write_text("".join(f"{f},{i},{x},{y},{w},{h},1,-1,-1,-1\n" for f, i, x, y, w, h in rows))
    return path


def crossing(tmp_path: Path) -> GroundTruth:
    """Two people 40x100 px crossing: id 1 walks right, id 2 left, 10 px per frame; they meet at frame 6."""
    rows = []
    for f in range(1, 12):
        rows.append((f, 1, 0.0 + 10 * (f - 1), 50.0, 40.0, 100.0))
        rows.append((f, 2, 100.0 - 10 * (f - 1), 50.0, 40.0, 100.0))
    return load_mot_gt(gt_file(tmp_path, rows))


def dataset(gt: GroundTruth, *, partial: bool = False) -> BoxVideoDataset:
    targets = tuple(Target(k, {"upper_color": (c,)}) for k, c in (("1", "red"), ("2", "blue")))
    return BoxVideoDataset(Path("v.mp4"), gt, targets, FPS, 1, 0.5, partial, None)


def at(frame: int) -> float:
    """The video time of gt frame `frame` (video index 0 is gt frame 1)."""
    return (frame - 1) / FPS


def test_iou_of_boxes() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0


def test_two_people_crossing_are_told_apart_by_their_boxes(tmp_path: Path) -> None:
    ds = dataset(crossing(tmp_path))
    # Frame 2: id 1 at x 10..50, id 2 at x 90..130. Frame 10: they have swapped sides.
    assert ds.keyframe_target(at(2), (10, 50, 50, 150)) == 0
    assert ds.keyframe_target(at(2), (90, 50, 130, 150)) == 1
    assert ds.keyframe_target(at(10), (90, 50, 130, 150)) == 0
    assert ds.keyframe_target(at(10), (10, 50, 50, 150)) == 1
    # Frame 6, both at x 50..90: a box there shows one of them; frame 5 (x 40..80 and 60..100) the nearer.
    assert ds.keyframe_target(at(5), (42, 50, 82, 150)) == 0
    assert ds.keyframe_target(at(5), (58, 50, 98, 150)) == 1


def test_a_record_between_two_boxes_shows_nobody(tmp_path: Path) -> None:
    ds = dataset(crossing(tmp_path))
    # Frame 1: id 1 at x 0..40, id 2 at x 100..140; a box at 50..90 overlaps neither.
    assert ds.keyframe_target(at(1), (50, 50, 90, 150)) is None
    # Half-way between them vertically misaligned: IoU with id 1 is 1/3 < 0.5.
    assert ds.keyframe_target(at(1), (20, 50, 60, 150)) is None
    # After the last annotated frame nobody is there.
    assert ds.keyframe_target(at(12), (0, 50, 40, 150)) is None


def test_sparse_gt_is_interpolated_between_annotated_frames(tmp_path: Path) -> None:
    gt = load_mot_gt(gt_file(tmp_path, [(1, 7, 0, 0, 40, 100), (11, 7, 100, 0, 40, 100)]))
    assert gt.tracks["7"].box_at(6) == pytest.approx((50, 0, 90, 100))
    assert gt.match(6, (50, 0, 90, 100), 0.5) == "7"
    assert gt.match(6, (0, 0, 40, 100), 0.5) is None  # where it was at frame 1: gone by frame 6
    assert gt.match(12, (100, 0, 140, 100), 0.5) is None  # past its last annotated frame


def test_bad_gt_and_attribute_rows_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="line 1"):
        load_mot_gt(_text(tmp_path / "bad.txt", "1,1,x,0,10,10\n"))
    gt = load_mot_gt(gt_file(tmp_path, [(1, 1, 0, 0, 10, 10), (1, 2, 20, 0, 10, 10)]))
    with pytest.raises(InvalidInput, match="identity 9 is not in"):
        load_identity_attributes(_text(tmp_path / "a.csv", "id,gender\n9,male\n"), PERSON, gt)
    targets = load_identity_attributes(
        _text(tmp_path / "b.csv", "id,gender,note\n2,male|female,x\n"), PERSON, gt
    )
    assert [t.key for t in targets] == ["1", "2"]
    assert targets[0].labels == {} and targets[1].labels["gender"] == ("male", "female")


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def receiver() -> Receiver:
    return Receiver(TemplateDescriber(), BagOfWordsEncoder(), EmbeddedParser())


def test_partial_gt_leaves_records_that_show_nobody_out_of_precision() -> None:
    targets = [Target("1", {"upper_color": ("red",)}), Target("2", {"upper_color": ("blue",)})]
    records = [
        person(1, upper_color="red"),  # shows identity 1: right
        person(2, upper_color="red"),  # shows nobody (an unlabelled person, or a false detection)
        person(3, upper_color="red"),  # shows identity 2: wrong
    ]
    shows = {1: 0, 2: None, 3: 1}
    query = [PaperQuery("q", "single", {"upper_color": "red"}, "the person wearing a red shirt")]
    kwargs = {"registry": REGISTRY, "schema": PERSON, "receiver": receiver(), "top_k": 10}
    full = score(records, shows, query, targets, **kwargs)[0]  # type: ignore[arg-type]
    partial = score(records, shows, query, targets, partial=True, **kwargs)[0]  # type: ignore[arg-type]
    assert (full.retrieved, full.correct, full.unmatched) == (3, 1, 0)
    assert full.precision == pytest.approx(1 / 3)
    assert (partial.retrieved, partial.correct, partial.unmatched) == (2, 1, 1)
    assert partial.precision == pytest.approx(1 / 2)
    assert full.recall == partial.recall == 1.0
    assert partial.relevant_records == 1 and partial.precision_at_1 in (0.0, 1.0)


def test_ranked_metrics_match_hand_computed_values() -> None:
    # Ranked list: relevant at ranks 1, 3, 6; four relevant records indexed; three positives in the gt.
    m = ranked_metrics([True, False, True, False, False, True], total_relevant=4, positives=3)
    assert m["precision_at_1"] == 1.0
    assert m["precision_at_5"] == pytest.approx(2 / 5)
    assert m["precision_at_10"] == pytest.approx(3 / 10)  # a list shorter than 10: the rest are misses
    assert m["average_precision"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 4)
    # Interpolated precision: recall 0.25 reached at rank 1 (P 1), 0.5 at rank 3 (P 2/3), 0.75 at 6 (P 0.5).
    expected = [1.0, 1.0, 1.0, 2 / 3, 2 / 3, 2 / 3, 0.5, 0.5, 0.0, 0.0, 0.0]
    assert m["pr"] == pytest.approx(expected)
    lost = ranked_metrics([False, False], total_relevant=0, positives=2)  # the system lost every positive
    assert lost["average_precision"] == 0.0 and lost["precision_at_1"] == 0.0
    none = ranked_metrics([False], total_relevant=0, positives=0)  # the query has no positive at all
    assert math.isnan(none["average_precision"]) and math.isnan(none["precision_at_10"])


def test_queries_with_few_positives_are_summarised_apart() -> None:
    from bench.paper.metrics import QueryScore

    def qs(relevant: int, p10: float) -> QueryScore:
        return QueryScore("q", 1, 1, relevant, 1, 1.0, 1.0, 1.0, {}, precision_at_10=p10)

    scores = [qs(10, 0.8), qs(6, 0.6), qs(2, 0.2)]
    main_, few = summarise(scores, min_positives=5), summarise_few(scores, min_positives=5)
    assert main_["precision_at_10"].mean == pytest.approx(0.7) and main_["precision_at_10"].n == 2
    assert few["precision_at_10"].mean == pytest.approx(0.2) and few["precision_at_10"].n == 1
    assert main_["precision"].n == 3  # the paper's metrics keep every query


def peta_like(tmp_path: Path) -> Path:
    """A tiny crop set in the PETA layout: 3 subsets x 4 crops of flat colour."""
    import cv2

    root = tmp_path / "peta"
    (root / "images").mkdir(parents=True)
    lines = [
        "image,subset,person_id,gender,upper_colors,sleeve,lower_colors,lower_types,lower_length,"
        "footwear_colors,footwear_types"
    ]
    for s, subset in enumerate(("CUHK", "MIT", "PRID")):
        for i in range(4):
            name = f"images/{subset}_{i}.jpg"
            cv2.imwrite(str(root / name), np.full((64, 32, 3), 40 * s + 10 * i, np.uint8))
            lines.append(f"{name},{subset},{i},male,red,long,blue,,long,black,")
    (root / "peta_labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_a_crop_run_without_fold_models_is_refused_unless_in_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = peta_like(tmp_path)
    argv = ["--crops", str(root), "--fold-models", str(tmp_path / "none"), "--schemes", "semantic"]
    argv += ["--snr-db", "30", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "in-sample" in err and "python -m bench.attributes_loso --work" in err and "--in-sample" in err
    assert not (tmp_path / "out").exists()
    # Labels alone never touch the model: no folds needed.
    from bench.paper.config import PaperConfig
    from bench.paper.run import _folds

    cfg = PaperConfig(crops=root, fold_models=tmp_path / "none", schemes=("oracle",))
    assert _folds(cfg, "attributes", given=False) == (
        None,
        "labels only (no scheme runs the attribute model)",
    )
    cfg = PaperConfig(crops=root, fold_models=tmp_path / "none", schemes=("semantic",), in_sample=True)
    assert _folds(cfg, "attributes", given=False)[1].startswith("IN-SAMPLE")


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_fold_models_pick_the_subsets_they_can_score(tmp_path: Path) -> None:
    from bench.paper.folds import find_fold_models
    from txd.understanding.attributes import HEADS

    root = peta_like(tmp_path)
    folds_dir = tmp_path / "folds"
    folds_dir.mkdir()
    rng = np.random.default_rng(0)
    for subset in ("MIT", "PRID"):
        (folds_dir / f"{subset}.pt").write_bytes(b"weights")
        arrays: dict[str, Any] = {}
        for head, classes in HEADS.items():
            arrays[f"logit_{head}"] = rng.normal(size=(20, len(classes))).astype(np.float32)
            arrays[f"prior_{head}"] = np.zeros(len(classes), np.float32)
            arrays[f"target_{head}"] = np.eye(len(classes), dtype=np.float32)[
                rng.integers(len(classes), size=20)
            ]
        np.savez(folds_dir / f"{subset}.predictions.npz", **arrays)
    (folds_dir / "CUHK.pt").write_bytes(b"still training: no predictions yet")
    folds = find_fold_models(folds_dir)
    assert sorted(folds.weights) == ["MIT", "PRID"] and "CUHK" in folds.missing
    assert set(folds.settings["MIT"]) == set(HEADS)
    crops = load_crop_set(root, PERSON, max_crops=100, seed=0, subsets=set(folds.weights))
    assert len(crops.targets) == 8 and set(crops.subsets) == {"MIT", "PRID"} and crops.eligible == 8
    assert "out of sample" in folds.describe() and "CUHK" in folds.describe()
