"""The attribute model with person masks and colour naming: masked colour regions, fallbacks, bad masks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from semcom.schema import Schema, SchemaRegistry
from txd.understanding.attributes import (
    COLOURS,
    INPUT_H,
    INPUT_W,
    REGIONS,
    AttributesConfig,
    AttributeUnderstander,
    prepare,
    region_pixels,
)
from txd.understanding.base import check_masks

pytest.importorskip("cv2")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def schema() -> Schema:
    return SchemaRegistry.builtin().get("person/1")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def model() -> AsyncIterator[AttributeUnderstander]:
    understander = AttributeUnderstander(AttributesConfig(threads=1))
    yield understander
    await understander.aclose()


def _person_on_grass() -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """A 200 x 100 crop: a red-coated, black-trousered person in the middle third, green grass around."""
    crop = np.zeros((200, 100, 3), np.uint8)
    crop[:] = (40, 160, 40)
    mask = np.zeros((200, 100), bool)
    mask[10:, 35:65] = True
    crop[10:100, 35:65] = (30, 30, 210)
    crop[100:, 35:65] = (15, 15, 15)
    return crop, mask


def test_a_mask_reads_the_person_and_an_empty_one_falls_back() -> None:
    crop, mask = _person_on_grass()
    _, hist_masked, names_masked = prepare(crop, mask, 0.2)
    _, hist_plain, names_plain = prepare(crop)
    upper, lower = list(REGIONS).index("upper_color"), list(REGIONS).index("lower_color")
    # unmasked, the central columns are mostly grass; masked, the coat and the trousers
    assert COLOURS[int(np.argmax(names_plain[upper]))] == "green"
    assert COLOURS[int(np.argmax(names_masked[upper]))] == "red"
    assert COLOURS[int(np.argmax(names_masked[lower]))] == "black"
    assert not np.array_equal(hist_masked, hist_plain)
    # a mask that covers nothing (or too little of a region) reads the regions as without a mask
    _, hist_empty, names_empty = prepare(crop, np.zeros((200, 100), bool), 0.2)
    assert np.array_equal(hist_empty, hist_plain) and np.array_equal(names_empty, names_plain)
    _, hist_strict, _ = prepare(crop, mask, 0.9)  # the person is a third of each region: below 0.9
    assert np.array_equal(hist_strict, hist_plain)


def test_region_pixels_without_mask_are_the_central_columns() -> None:
    img = np.arange(INPUT_H * INPUT_W * 3, dtype=np.uint32).reshape(INPUT_H, INPUT_W, 3).astype(np.uint8)
    parts = region_pixels(img, None, 0.0)
    assert len(parts) == len(REGIONS) and all(p.ndim == 2 and p.shape[1] == 3 for p in parts)
    assert parts[0].shape[0] == (int(INPUT_H * 0.50) - int(INPUT_H * 0.12)) * (
        int(INPUT_W * 0.8) - int(INPUT_W * 0.2)
    )


def test_bad_masks_are_invalid_input() -> None:
    crop, _ = _person_on_grass()
    with pytest.raises(InvalidInput, match="height x width"):
        prepare(crop, np.ones((10, 10), bool))
    with pytest.raises(InvalidInput, match="1 masks for 2 crops"):
        check_masks([None], 2)
    with pytest.raises(InvalidInput, match="2-D"):
        check_masks([np.ones((4, 4, 3), bool)], 1)
    assert check_masks(None, 2) == [None, None]


@pytest.mark.asyncio(loop_scope="module")
async def test_an_empty_mask_gives_the_unmasked_answer(model: AttributeUnderstander, schema: Schema) -> None:
    crop, mask = _person_on_grass()
    plain = await model.understand([crop], schema)
    empty = await model.understand([crop], schema, [np.zeros(mask.shape, bool)])
    assert empty[0].fields == plain[0].fields and empty[0].probabilities == plain[0].probabilities
    masked = await model.understand([crop, crop], schema, [mask, None])
    assert masked[1].fields == plain[0].fields
    assert masked[0].probabilities["upper_color"] != plain[0].probabilities["upper_color"]
    with pytest.raises(InvalidInput, match="masks for"):
        await model.understand([crop], schema, [mask, mask])


@pytest.mark.asyncio(loop_scope="module")
async def test_colour_naming_moves_colour_heads_only(schema: Schema) -> None:
    crop, mask = _person_on_grass()
    base = AttributeUnderstander(AttributesConfig(threads=1, colour_naming_weight=0.0))
    named = AttributeUnderstander(AttributesConfig(threads=1, colour_naming_weight=2.0))
    try:
        (b,) = await base.understand([crop], schema, [mask])
        (n,) = await named.understand([crop], schema, [mask])
    finally:
        await base.aclose()
        await named.aclose()
    for head in ("gender", "sleeve", "lower_length"):
        assert n.probabilities[head] == b.probabilities[head]
    red = COLOURS.index("red")
    # the Understanding keeps the model's own distribution and the names apart (pooled when deciding)
    assert n.probabilities["upper_color"] == b.probabilities["upper_color"]
    assert int(np.argmax(n.names["upper_color"])) == red and n.names == b.names
    assert n.confidence["upper_color"] > b.confidence["upper_color"]
    # the blocking calls need no worker thread (closed above)
    pooled, _ = named.predict_with_evidence([crop], [mask])
    heads, _ = base.predict_with_evidence([crop], [mask])
    assert pooled["upper_color"][0, red] > heads["upper_color"][0, red]
    assert pooled["upper_color"][0].sum() == pytest.approx(1.0, abs=1e-3)
    assert np.array_equal(pooled["gender"], heads["gender"])


def test_mask_pixels_blank_the_background_for_the_network_only() -> None:
    crop, mask = _person_on_grass()
    chw, hist, names = prepare(crop, mask, 0.2, fill_background=True)
    plain_chw, plain_hist, plain_names = prepare(crop, mask, 0.2)
    # column 0 of the 80-pixel-wide input is grass: blanked to the network's mean input (0 normalised)
    assert np.all(chw[:, :, 0] == 0) and not np.all(plain_chw[:, :, 0] == 0)
    assert np.array_equal(chw[:, 100, 40], plain_chw[:, 100, 40])  # the person's pixels are untouched
    assert np.array_equal(hist, plain_hist) and np.array_equal(names, plain_names)
    empty_chw, _, _ = prepare(crop, np.zeros(mask.shape, bool), 0.2, fill_background=True)
    assert np.array_equal(empty_chw, prepare(crop)[0])  # a mask that covers nothing blanks nothing


def test_colour_names_are_pooled_after_the_views_are_fused(schema: Schema) -> None:
    from txd.understanding.attributes import DEFAULT_THRESHOLDS, decide, fuse_views

    k = len(COLOURS)
    red, black = COLOURS.index("red"), COLOURS.index("black")
    # two views: the model leans black on the first (the more confident one), the pixels say red on both
    probs = {h: np.full((2, k), 1 / k, np.float32) for h in ("upper_color", "lower_color", "shoe_color")}
    probs["upper_color"][0] = 0.4 / (k - 1)
    probs["upper_color"][0, black] = 0.6
    names = {"upper_color": np.zeros((2, k), np.float32)}
    names["upper_color"][:, red] = 1.0
    views = decide(probs, DEFAULT_THRESHOLDS, schema, probs, names, 1.0)
    assert views[0].names["upper_color"][red] == 1.0 and views[0].probabilities["upper_color"][black] == 0.6
    plain = fuse_views(views, DEFAULT_THRESHOLDS, schema, "best", 0.0)
    pooled = fuse_views(views, DEFAULT_THRESHOLDS, schema, "best", 1.0)
    assert plain.fields["upper_color"] == "black"
    # "best" still takes the first view (its model evidence is the most confident); the names move it
    assert pooled.probabilities["upper_color"] == views[0].probabilities["upper_color"]
    assert pooled.confidence["upper_color"] != plain.confidence["upper_color"]
    assert pooled.fields["upper_color"] in ("red", "unknown") and pooled.names["upper_color"][red] == 1.0
