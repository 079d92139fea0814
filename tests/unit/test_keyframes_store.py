"""txd's keyframe thumbnails: scaled and encoded as configured, kept within their bounds, NotFound after."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from semcom.errors import InvalidInput, NotFound
from txd.config import ThumbnailConfig
from txd.keyframes_store import KeyframeStore, encode_thumbnail


def _crop(h: int = 240, w: int = 100, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    crop = np.zeros((h, w, 3), dtype=np.uint8)
    crop[: h // 2] = (0, 0, 200)  # red top (BGR)
    crop[h // 2 :] = rng.integers(0, 60, size=(h - h // 2, w, 3), dtype=np.uint8)
    return crop


def test_thumbnail_is_scaled_and_decodes_to_the_crop() -> None:
    thumb = encode_thumbnail(_crop(), ThumbnailConfig(max_side_px=120, quality=80), now_s=0.0)
    assert thumb.content_type == "image/jpeg" and (thumb.width, thumb.height) == (50, 120)
    image = cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (120, 50, 3)
    # The red top survives scaling and JPEG: mean of the top quarter within 25 levels of (0, 0, 200).
    top = image[:30].reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(top - np.array([0, 0, 200])) < 25), top


def test_small_crop_is_not_enlarged_and_webp_works() -> None:
    thumb = encode_thumbnail(_crop(40, 20), ThumbnailConfig(format="webp", max_side_px=160), now_s=0.0)
    assert thumb.content_type == "image/webp" and (thumb.width, thumb.height) == (20, 40)
    assert thumb.data[:4] == b"RIFF" and thumb.data[8:12] == b"WEBP"


def test_quality_trades_bytes() -> None:
    low = encode_thumbnail(_crop(), ThumbnailConfig(quality=10), now_s=0.0)
    high = encode_thumbnail(_crop(), ThumbnailConfig(quality=95), now_s=0.0)
    assert len(low.data) < len(high.data)


def test_bad_crop_is_refused() -> None:
    with pytest.raises(InvalidInput, match="H x W x 3"):
        encode_thumbnail(np.zeros((0, 10, 3), np.uint8), ThumbnailConfig(), now_s=0.0)


def test_store_drops_oldest_beyond_its_bounds() -> None:
    store = KeyframeStore(ThumbnailConfig(max_items=2))
    for record_id in (1, 2, 3):
        store.keep("cam", record_id, _crop())
    assert len(store) == 2
    with pytest.raises(NotFound, match="record 1 of stream 'cam'"):
        store.get("cam", 1)
    assert store.get("cam", 3).data[:2] == b"\xff\xd8"  # a JPEG
    one = len(store.get("cam", 3).data)
    by_bytes = KeyframeStore(ThumbnailConfig(max_bytes=one * 2 + one // 2))
    for record_id in (1, 2, 3):
        by_bytes.keep("cam", record_id, _crop())
    assert len(by_bytes) == 2 and by_bytes.bytes <= one * 2 + one // 2


def test_store_drops_thumbnails_past_their_age_and_when_disabled_keeps_none() -> None:
    store = KeyframeStore(ThumbnailConfig(max_age_s=1e-9))
    store.keep("cam", 1, _crop())
    with pytest.raises(NotFound):
        store.get("cam", 1)
    off = KeyframeStore(ThumbnailConfig(enabled=False))
    assert off.keep("cam", 1, _crop()) is None and len(off) == 0
