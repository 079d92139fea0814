"""The understanding agent's contract: keyframe crops in, one schema record's fields per crop out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from semcom.record import UNKNOWN
from semcom.registry import Registry
from semcom.schema import Schema


@dataclass(frozen=True)
class Understanding:
    """Field values for one crop ("unknown" where it does not show the attribute) and 0..1 confidences.

    A backend that has them also gives, per field, `probabilities` over the field's known values (schema
    order, "unknown" left out) and the `evidence` its abstention looked at; several views of one track are
    fused from these (and `names`, where the backend names colours from the pixels)."""

    fields: dict[str, str]
    confidence: dict[str, float] = field(default_factory=dict)
    probabilities: dict[str, tuple[float, ...]] = field(default_factory=dict)
    evidence: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # Per colour field, the share of the view's garment pixels named each value (colour naming), pooled
    # with `probabilities` and `evidence` when deciding (after fusing several views).
    names: dict[str, tuple[float, ...]] = field(default_factory=dict)


# A person mask of one crop (its height x width, True on the person), from background subtraction.
Mask = NDArray[np.bool_]


class Understander(Protocol):
    """A backend that reads attributes from person (or vehicle) crops; one instance serves every stream."""

    async def understand(
        self,
        crops: Sequence[NDArray[np.uint8]],
        schema: Schema,
        masks: Sequence[Mask | None] | None = None,
    ) -> list[Understanding]:
        """One Understanding per BGR uint8 crop, in order; `masks`, when given, one per crop (None: no
        mask), say which pixels are the person (a backend may ignore them)."""
        ...

    def fuse(self, views: Sequence[Understanding], schema: Schema) -> Understanding:
        """One Understanding of a track from those of several of its crops (txd.understanding.fusion)."""
        ...

    async def aclose(self) -> None:
        """Release the backend's threads and connections; it is not used afterwards."""
        ...


__all__ = ["UNDERSTANDERS", "UNKNOWN", "Mask", "Understander", "Understanding", "check_crop", "check_masks"]

# Backends by config `kind`, imported only when selected (torch for one, an HTTP client for the other).
UNDERSTANDERS: Registry[Callable[[Any], Understander]] = Registry(
    "understanding backend",
    {
        "attributes": "txd.understanding.attributes:AttributeUnderstander",
        "vlm": "txd.understanding.vlm:VlmUnderstander",
    },
    entry_point_group="semcom.understanding",
)


def check_crop(crop: NDArray[np.uint8], index: int = 0) -> None:
    """InvalidInput unless `crop` is a non-empty HxWx3 uint8 BGR image of at least 4x4 pixels."""
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8:
        raise InvalidInput(f"crop {index}: expected a uint8 numpy array, got {type(crop).__name__}")
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise InvalidInput(f"crop {index}: expected shape HxWx3 (BGR), got {crop.shape}")
    if crop.shape[0] < 4 or crop.shape[1] < 4:
        raise InvalidInput(f"crop {index}: {crop.shape[0]}x{crop.shape[1]} pixels is too small (min 4x4)")


def check_masks(masks: Sequence[Mask | None] | None, crops: int) -> list[Mask | None]:
    """One mask (or None) per crop: InvalidInput when the count differs or a mask is not a 2-D array; each
    mask's size against its crop is checked where it is used."""
    if masks is None:
        return [None] * crops
    if len(masks) != crops:
        raise InvalidInput(f"{len(masks)} masks for {crops} crops")
    for i, mask in enumerate(masks):
        if mask is not None and (not isinstance(mask, np.ndarray) or mask.ndim != 2):
            shape = getattr(mask, "shape", type(mask).__name__)
            raise InvalidInput(f"mask {i}: expected a 2-D array, got {shape}")
    return list(masks)
