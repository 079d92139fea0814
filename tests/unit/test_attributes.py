"""The shipped CPU attribute model: loads, answers in the schema's vocabulary, abstains, beats baselines."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from numpy.typing import NDArray

from bench.attributes_loso import balanced_accuracy
from semcom.data import data_dir
from semcom.errors import InvalidInput
from semcom.record import UNKNOWN
from semcom.schema import Schema, SchemaRegistry
from txd.understanding.attributes import (
    DEFAULT_WEIGHTS,
    AttributesConfig,
    AttributeUnderstander,
    load_net,
    log_priors,
    probabilities,
)
from txd.understanding.train_attributes import PETA_COLUMNS

cv2 = pytest.importorskip("cv2")
pytest.importorskip("torch")

SAMPLE = 240  # crops drawn with a fixed seed from all eight subsets
TOLERANCE = 0.05  # balanced accuracy must beat the majority baseline by at least this much
# PETA crops (path under images/) with their labelled lower-body length: two in shorts, two in trousers.
CLEAR_CROPS = [
    ("VIPeR/862_0_1.jpg", "short"),
    ("CUHK/3570.jpg", "short"),
    ("CUHK/1019.jpg", "long"),
    ("VIPeR/102_0_1.jpg", "long"),
]


@pytest.fixture(scope="module")
def schema() -> Schema:
    return SchemaRegistry.builtin().get("person/1")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def model() -> AsyncIterator[AttributeUnderstander]:
    understander = AttributeUnderstander(AttributesConfig(threads=1))
    yield understander
    await understander.aclose()


def test_shipped_weights_are_small() -> None:
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size < 20 * 1024 * 1024


@pytest.mark.asyncio(loop_scope="module")
async def test_outputs_stay_in_vocabulary(model: AttributeUnderstander, schema: Schema) -> None:
    rng = np.random.default_rng(0)
    crops = [
        rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in ((128, 64), (7, 300), (400, 90))
    ]
    results = await model.understand(crops, schema)
    assert len(results) == len(crops)
    for result in results:
        assert set(result.fields) == set(schema.field_names)
        for name, value in result.fields.items():
            schema.field(name).index(value)
            assert 0.0 <= result.confidence[name] <= 1.0


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "crop",
    [
        np.zeros((0, 40, 3), np.uint8),
        np.zeros((60, 0, 3), np.uint8),
        np.zeros((2, 2, 3), np.uint8),
        np.zeros((60, 30), np.uint8),
        np.zeros((60, 30, 3), np.float32),
    ],
    ids=["zero-height", "zero-width", "tiny", "grey-2d", "float"],
)
async def test_degenerate_crop_is_invalid_input(
    model: AttributeUnderstander, schema: Schema, crop: NDArray[np.uint8]
) -> None:
    with pytest.raises(InvalidInput, match="crop 1"):
        await model.understand([np.zeros((64, 32, 3), np.uint8) + 100, crop], schema)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("level", [0, 128, 255], ids=["black", "grey", "white"])
async def test_abstains_on_blank_crop(model: AttributeUnderstander, schema: Schema, level: int) -> None:
    """A crop with no person in it shows nothing to read: every field is unknown (the balanced posterior is
    flat), even where the class prior alone would name the frequent class. With colour naming on, the colour
    fields may name the crop's one colour (its pixels are that colour); the others stay unknown."""
    crop = np.full((160, 80, 3), level, np.uint8)
    (result,) = await model.understand([crop], schema)
    naming = AttributeUnderstander(AttributesConfig(threads=1, colour_naming_weight=1.0))
    try:
        (named,) = await naming.understand([crop], schema)
    finally:
        await naming.aclose()
    colour = {0: "black", 128: "grey", 255: "white"}[level]
    for name in schema.field_names:
        assert result.fields[name] == UNKNOWN, (name, result)
        assert named.fields[name] in ((UNKNOWN, colour) if name.endswith("_color") else (UNKNOWN,)), named


def test_prior_weight_moves_answers_towards_frequent_classes() -> None:
    """Adding the training log-prior (weight 1) raises the frequent class's probability over weight 0."""
    torch = pytest.importorskip("torch")
    net = load_net(DEFAULT_WEIGHTS, threads=1)
    frequent = int(log_priors(net)["lower_length"].argmax())
    logits = {"lower_length": torch.zeros(1, 2)}
    balanced = probabilities(net, logits, {"lower_length": 0.0})["lower_length"]
    plain = probabilities(net, logits, {"lower_length": 1.0})["lower_length"]
    assert balanced[0, frequent] == pytest.approx(0.5)
    assert plain[0, frequent] > 0.8


def _peta_crop(name: str) -> NDArray[np.uint8]:
    path = data_dir() / "peta" / "images" / name
    if not path.is_file():
        pytest.skip(f"PETA crop not found at {path} (set SEMCOM_DATA_DIR)")
    return np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR), np.uint8)


@pytest.mark.data
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "expected"), CLEAR_CROPS)
async def test_clearly_dressed_person_gets_right_lower_length(
    model: AttributeUnderstander, schema: Schema, name: str, expected: str
) -> None:
    """Labelled PETA crops of people in plainly visible trousers or shorts (seen in training)."""
    (result,) = await model.understand([_peta_crop(name)], schema)
    assert result.fields["lower_length"] == expected, result


def _sample(root: Path) -> list[dict[str, str]]:
    with (root / "peta_labels.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    picks = np.random.default_rng(1234).choice(len(rows), SAMPLE, replace=False)
    return [rows[i] for i in sorted(picks)]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_beats_majority_baseline_on_peta(model: AttributeUnderstander, schema: Schema) -> None:
    """In-sample smoke test of the shipped weights through the real inference path (the shipped model saw
    every subset; generalisation to unseen cameras is measured by bench.attributes_loso). Abstentions count
    as errors; a crop with several listed colours is right when the prediction is any of them."""
    root = data_dir() / "peta"
    if not (root / "peta_labels.csv").is_file():
        pytest.skip(f"PETA not found at {root} (set SEMCOM_DATA_DIR)")
    rows = _sample(root)
    crops = [np.asarray(cv2.imread(str(root / r["image"]), cv2.IMREAD_COLOR), np.uint8) for r in rows]
    results = await model.understand(crops, schema)
    for name, column in PETA_COLUMNS.items():
        vocab = schema.field(name).values
        truth = [[v for v in r[column].split("|") if v in vocab] for r in rows]
        keep = [i for i, t in enumerate(truth) if t]
        primary = np.array([vocab.index(truth[i][0]) for i in keep])
        correct = np.array([results[i].fields[name] in truth[i] for i in keep])
        majority = int(np.bincount(primary).argmax())
        baseline = np.array([vocab[majority] in truth[i] for i in keep])
        model_bacc = balanced_accuracy(primary, correct)
        base_bacc = balanced_accuracy(primary, baseline)
        assert model_bacc >= base_bacc + TOLERANCE, (name, model_bacc, base_bacc)
