"""The live view's hub: bounded listeners, publishing that never waits, slow pages dropped, a clean close;
rxd's keyframe cache bounded by bytes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from rxd.core import KeyframeCache, KeyframeImage
from rxd.live import EventHub, IndexTail, StreamTotals
from semcom.errors import Overloaded
from semcom.schema import SchemaRegistry


@pytest.mark.asyncio
async def test_listeners_are_bounded() -> None:
    hub = EventHub(max_listeners=2)
    a, b = hub.subscribe(), hub.subscribe()
    with pytest.raises(Overloaded, match="2 listeners"):
        hub.subscribe()
    hub.unsubscribe(a)
    assert hub.subscribe() is not a and hub.listeners == 2 and b in hub._queues


@pytest.mark.asyncio
async def test_a_listener_that_falls_behind_is_dropped_and_the_others_keep_up() -> None:
    hub = EventHub(queue_events=3)
    slow, fast = hub.subscribe(), hub.subscribe()
    for i in range(3):
        hub.publish("record", i)
        assert (await fast.get()) == ("record", i)
    hub.publish("record", 3)  # slow's queue is full: it goes, publishing does not wait
    assert hub.listeners == 1 and (await fast.get()) == ("record", 3)
    # The dropped page still gets what it had queued, then its stream ends (its EventSource reconnects).
    assert hub.live(slow) and [slow.get_nowait() for _ in range(3)] == [("record", i) for i in range(3)]
    assert not hub.live(slow)


@pytest.mark.asyncio
async def test_close_ends_every_stream_even_a_full_one() -> None:
    hub = EventHub(queue_events=1)
    full, idle = hub.subscribe(), hub.subscribe()
    full.put_nowait(("record", 0))
    hub.close()
    assert hub.listeners == 0
    assert await asyncio.wait_for(full.get(), 1) is None and await asyncio.wait_for(idle.get(), 1) is None


def test_stream_totals_follow_new_rows() -> None:
    totals = StreamTotals("cam")
    for time_s, location_id in ((20.0, 3), (10.0, 1), (30.0, 3)):
        totals.add(time_s, location_id)
    assert (totals.records, totals.first_time_s, totals.last_time_s) == (3, 10.0, 30.0)
    assert totals.location_ids == (1, 3)


def test_keyframe_cache_keeps_recent_within_its_bytes() -> None:
    cache = KeyframeCache(max_bytes=250)
    for record_id in (1, 2, 3):
        cache.put(("cam", record_id), KeyframeImage("image/jpeg", 8, 8, bytes(100)))
    assert cache.get(("cam", 1)) is None and cache.bytes == 200
    assert cache.get(("cam", 2)) is not None  # now the most recent: 3 goes first
    cache.put(("cam", 4), KeyframeImage("image/jpeg", 8, 8, bytes(100)))
    assert cache.get(("cam", 3)) is None and cache.get(("cam", 2)) is not None


def test_closing_the_tail_waits_for_a_scan_still_running(tmp_path: Path) -> None:
    """rxd stopping cancels the task that awaits a scan, but the scan runs on: close must wait for it."""
    started, release = threading.Event(), threading.Event()
    closed = threading.Event()

    class SlowTail(IndexTail):
        def _scan(self) -> list[dict[str, Any]]:
            started.set()
            release.wait(10)
            return []

    tail = SlowTail(tmp_path / "index.db", SchemaRegistry.builtin())
    scanning = threading.Thread(target=tail.scan)
    scanning.start()
    assert started.wait(10)

    def close() -> None:
        tail.close()
        closed.set()

    closing = threading.Thread(target=close)
    closing.start()
    assert not closed.wait(0.2)  # held back while the scan runs
    release.set()
    scanning.join(10)
    closing.join(10)
    assert closed.is_set()
