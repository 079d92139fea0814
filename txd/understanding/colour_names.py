"""Colour naming of garment pixels: nearest example in CIELAB among the xkcd survey's colour names.

The xkcd colour survey (Munroe 2010, 222,500 respondents naming random RGB colours; the 949 most agreed
names ship with matplotlib as `matplotlib.colors.XKCD_COLORS`) is a model of how people name colours.
Every survey name whose last word is one basic colour of the vocabulary, and no other ("sky blue",
"bottle green", "charcoal grey"), is an example of that colour, unless it is within FOCAL_MARGIN_DE of
another colour's own name ("pale grey" looks white); a pixel is named by its nearest example in
CIELAB (D65, Euclidean distance, CIE76). A region's naming is the share of its pixels each basic colour
takes. The lookup is tabulated once over 32 levels per channel, so naming costs one table read a pixel.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from semcom.colour import srgb_to_lab

_LEVELS = 32  # per channel in the lookup table (8-bit values >> 3)
_GREY_SPELLINGS = {"gray": "grey"}
# CIE76 distance under which an example counts as the same colour as another colour's own name (a just
# noticeable difference is about 2.3; 5 is a difference seen only side by side).
FOCAL_MARGIN_DE = 5.0


def survey_examples(vocabulary: Sequence[str]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(L*a*b* of each xkcd name that is an example of one vocabulary colour, that colour's index)."""
    from matplotlib import colors as mcolors

    labs: list[tuple[float, float, float]] = []
    cats: list[int] = []
    for key, hexcode in mcolors.XKCD_COLORS.items():
        words = [_GREY_SPELLINGS.get(w, w) for w in key.removeprefix("xkcd:").replace("-", " ").split()]
        if "/" in key or not words or words[-1] not in vocabulary:
            continue
        if any(w in vocabulary for w in words[:-1]):  # "blue green", "greenish blue": not one colour
            continue
        labs.append(tuple(mcolors.to_rgb(hexcode)))  # type: ignore[arg-type]
        cats.append(vocabulary.index(words[-1]))
    missing = [v for i, v in enumerate(vocabulary) if i not in cats]
    focal = [f"xkcd:{v}" for v in vocabulary]
    missing += [v for v, key in zip(vocabulary, focal, strict=True) if key not in mcolors.XKCD_COLORS]
    if missing:
        raise ValueError(f"the xkcd table has no example of {', '.join(missing)}")
    lab, cat = srgb_to_lab(np.array(labs)), np.array(cats, np.int64)
    # An example indistinguishable from another colour's own name ("pale grey" is #fdfdfe, white to the eye)
    # is no evidence of its colour: drop it.
    focal_lab = srgb_to_lab(np.array([mcolors.to_rgb(mcolors.XKCD_COLORS[k]) for k in focal]))
    dist = np.sqrt(((lab[:, None, :] - focal_lab[None, :, :]) ** 2).sum(-1))
    dist[np.arange(len(cat)), cat] = np.inf
    keep = dist.min(axis=1) >= FOCAL_MARGIN_DE
    return lab[keep], cat[keep]


@functools.cache
def lookup_table(vocabulary: tuple[str, ...]) -> NDArray[np.uint8]:
    """(32, 32, 32) index into `vocabulary` of the colour each quantised (B, G, R) value is named."""
    examples, cats = survey_examples(vocabulary)
    centres = (np.arange(_LEVELS) + 0.5) / _LEVELS
    b, g, r = np.meshgrid(centres, centres, centres, indexing="ij")
    lab = srgb_to_lab(np.stack([r, g, b], -1).reshape(-1, 3))
    out = np.empty(len(lab), np.uint8)
    for start in range(0, len(lab), 4096):
        part = lab[start : start + 4096]
        dist = ((part[:, None, :] - examples[None, :, :]) ** 2).sum(-1)
        out[start : start + 4096] = cats[np.argmin(dist, axis=1)]
    return out.reshape(_LEVELS, _LEVELS, _LEVELS)


def name_pixels(pixels_bgr: NDArray[np.uint8], vocabulary: tuple[str, ...]) -> NDArray[np.int64]:
    """The vocabulary index each BGR pixel (any shape ending in 3) is named, flattened."""
    table = lookup_table(vocabulary)
    q = np.asarray(pixels_bgr, np.uint8).reshape(-1, 3) >> 3
    return np.asarray(table[q[:, 0], q[:, 1], q[:, 2]], np.int64)


def naming_shares(pixels_bgr: NDArray[np.uint8], vocabulary: tuple[str, ...]) -> NDArray[np.float32] | None:
    """Share of the pixels named each vocabulary colour (sums to 1), or None when there are no pixels."""
    names = name_pixels(pixels_bgr, vocabulary)
    if names.size == 0:
        return None
    counts = np.bincount(names, minlength=len(vocabulary)).astype(np.float32)
    out: NDArray[np.float32] = counts / float(names.size)
    return out


def combine(
    probs: NDArray[np.floating], shares: NDArray[np.floating], weight: float, smoothing: float = 0.05
) -> NDArray[np.float64]:
    """Rows of a model's colour distribution times the naming shares (smoothed: no colour is ruled out by
    the pixels alone) to the power `weight`, renormalised: a log-linear pool of the two opinions."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, None)
    q = (np.asarray(shares, np.float64) + smoothing) / (1.0 + smoothing * p.shape[-1])
    z = np.log(p) + weight * np.log(q)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return out
