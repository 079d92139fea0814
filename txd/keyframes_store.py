"""Keyframe thumbnails of the records txd's analysis made, kept in memory for FetchKeyframe."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput, NotFound
from txd.config import ThumbnailConfig

_CONTENT_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class Thumbnail:
    """One encoded keyframe crop."""

    content_type: str
    width: int
    height: int
    data: bytes
    stored_s: float


def encode_thumbnail(crop: NDArray[np.uint8], cfg: ThumbnailConfig, now_s: float) -> Thumbnail:
    """`crop` (BGR, H x W x 3) scaled so that its longer side is at most `cfg.max_side_px`, then encoded."""
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] == 0 or crop.shape[1] == 0:
        raise InvalidInput(f"a keyframe crop must be H x W x 3 with H, W > 0, got {crop.shape}")
    h, w = crop.shape[:2]
    scale = min(1.0, cfg.max_side_px / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        crop = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    if cfg.format == "webp":
        ok, buf = cv2.imencode(".webp", crop, [cv2.IMWRITE_WEBP_QUALITY, cfg.quality])
    else:
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, cfg.quality])
    if not ok:
        raise InvalidInput(f"could not encode a {cfg.format} thumbnail of shape {crop.shape}")
    out_h, out_w = crop.shape[:2]
    return Thumbnail(_CONTENT_TYPES[cfg.format], out_w, out_h, buf.tobytes(), now_s)


class KeyframeStore:
    """Thumbnails keyed by (stream_id, record_id), oldest dropped first once `max_bytes` or `max_items` is
    exceeded or once older than `max_age_s`. Thread-safe: records are kept from the event loop, read by
    FetchKeyframe."""

    def __init__(self, cfg: ThumbnailConfig) -> None:
        self.cfg = cfg
        self._items: OrderedDict[tuple[str, int], Thumbnail] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def keep(self, stream_id: str, record_id: int, crop: NDArray[np.uint8]) -> Thumbnail | None:
        """Encode and keep the crop of a numbered record; None when thumbnails are off."""
        if not self.cfg.enabled:
            return None
        now_s = time.time()
        thumb = encode_thumbnail(crop, self.cfg, now_s)
        with self._lock:
            old = self._items.pop((stream_id, record_id), None)
            if old is not None:
                self._bytes -= len(old.data)
            self._items[(stream_id, record_id)] = thumb
            self._bytes += len(thumb.data)
            self._evict(now_s)
        return thumb

    def get(self, stream_id: str, record_id: int) -> Thumbnail:
        """The record's thumbnail; NotFound when txd never had a crop for it (an announced record) or when
        retention dropped it."""
        with self._lock:
            self._evict(time.time())
            found = self._items.get((stream_id, record_id))
        if found is None:
            raise NotFound(
                f"no keyframe for record {record_id} of stream {stream_id!r} (announced records have none; "
                "old ones are dropped)"
            )
        return found

    def _evict(self, now_s: float) -> None:
        """Drop the oldest thumbnails while over a bound; called with the lock held."""
        while self._items:
            key, oldest = next(iter(self._items.items()))
            over = self._bytes > self.cfg.max_bytes or len(self._items) > self.cfg.max_items
            if not over and now_s - oldest.stored_s <= self.cfg.max_age_s:
                return
            del self._items[key]
            self._bytes -= len(oldest.data)
