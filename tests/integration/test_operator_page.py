"""What the operators' page stands on: keyframe thumbnails over the backward channel, counts read from the
index after a restart, records arriving live as server-sent events, and a page that loads nothing foreign."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from grpc import aio

from rxd.app import Rxd
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2
from tests.conftest import Chain, shared_embedder, start_chain, stop_chain
from tests.fixtures.link import PEOPLE, announce_all, wait_indexed
from tests.fixtures.txd import BrightnessUnderstander, ingest

pytestmark = pytest.mark.slow


def base(rxd: Rxd) -> str:
    assert rxd.http is not None
    return f"http://127.0.0.1:{rxd.http.port}"


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.asyncio
async def test_keyframe_thumbnail_over_the_backward_channel(tmp_path: Path, shared_data: Path) -> None:
    chain = await start_chain(tmp_path, understander=BrightnessUnderstander())
    try:
        reply = await ingest(chain.txd_address, shared_data / "videos" / "tud_campus.mp4", "cam-k")
        assert reply.records_sent >= 1
        await wait_indexed(chain.rxd_address, reply.records_sent)
        await announce_all(chain.txd_address, "cam-a", PEOPLE[:1])
        await wait_indexed(chain.rxd_address, reply.records_sent + 1)
        url = f"{base(chain.rxd)}/api/keyframe?stream_id=cam-k&record_id=1"
        status, headers, body = await get(url)
        assert status == 200 and headers["Content-Type"] == "image/jpeg", body[:200]
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and max(image.shape[:2]) <= 160  # thumbnails.max_side_px
        stats = json.loads((await get(f"{base(chain.rxd)}/api/stats"))[2])
        assert stats["keyframe_bytes_fetched"] == len(body)
        # Cached at rxd: showing it again costs the backward channel nothing.
        assert (await get(url))[2] == body
        async with aio.insecure_channel(chain.rxd_address) as ch:
            image_pb = await receiver_pb2_grpc.ReceiverStub(ch).FetchKeyframe(
                transmitter_pb2.FetchKeyframeRequest(stream_id="cam-k", record_id=1), timeout=10
            )
        assert image_pb.data == body and image_pb.content_type == "image/jpeg"
        stats = json.loads((await get(f"{base(chain.rxd)}/api/stats"))[2])
        assert stats["keyframe_bytes_fetched"] == len(body)
        # An announced record has no crop at txd: a clear 404, not a broken image.
        status, _, body = await get(f"{base(chain.rxd)}/api/keyframe?stream_id=cam-a&record_id=1")
        assert status == 404 and "no keyframe" in json.loads(body)["error"]
        status, _, body = await get(f"{base(chain.rxd)}/api/keyframe?stream_id=cam-k&record_id=x")
        assert status == 400 and "record_id" in json.loads(body)["error"]
    finally:
        await stop_chain(chain)


async def _grpc_streams(rxd: Rxd) -> dict[str, dict[str, Any]]:
    """Receiver.Stats's per-stream counts, as `semcom status` prints them."""
    async with aio.insecure_channel(f"127.0.0.1:{rxd.port}") as ch:
        reply = await receiver_pb2_grpc.ReceiverStub(ch).Stats(receiver_pb2.StatsRequest(), timeout=10)
    return {s.stream_id: {f.name: getattr(s, f.name) for f in s.DESCRIPTOR.fields} for s in reply.streams}


@pytest.mark.asyncio
async def test_counts_come_from_the_index_after_a_restart(chain: Chain) -> None:
    await announce_all(chain.txd_address, "cam-r", PEOPLE)
    await wait_indexed(chain.rxd_address, 3)
    bursts = chain.rxd.core.stats()["bursts_ok"]
    before = await _grpc_streams(chain.rxd)
    await chain.rxd.stop(1.0)
    # The link's own counts at the stop (a burst answered after the call above is in them too).
    (link,) = [asdict(s) for s in chain.rxd.receiver.streams.values()]
    assert before["cam-r"]["records_indexed"] == link["records_indexed"] == 3 and link["info_bits"] > 0
    assert math.isfinite(link["snr_db"]) and link["channel_symbols"] > 0 and link["payload_bytes"] > 0
    again = Rxd(chain.rxd.cfg, embedder=shared_embedder())
    await again.start()
    try:
        status, _, body = await get(f"{base(again)}/api/stats")
        stats = json.loads(body)
        assert status == 200 and stats["records_indexed"] == 3 and stats["bursts_ok"] == bursts >= 1
        (stream,) = stats["streams"]
        assert (stream["stream_id"], stream["records"], stream["location_ids"]) == ("cam-r", 3, [3])
        # The per-stream link counts run on from the index, not from 0: the same over HTTP and gRPC.
        assert stream["link"] == link and stats["info_bits_received"] == link["info_bits"]
        after = (await _grpc_streams(again))["cam-r"]
        assert {k: after[k] for k in link} == link
        assert stats["semantic_bits_indexed"] == 3 * stats["record_bits"]
        status, _, body = await get(f"{base(again)}/api/schema")
        sleeve = next(f for f in json.loads(body)["fields"] if f["name"] == "sleeve")
        assert sleeve["values"][0] == "unknown" and sleeve["searchable"] == [*sleeve["values"][1:], "unknown"]
    finally:
        await again.stop(1.0)
        chain.rxd = again  # stopped; the fixture's stop of it again is a no-op


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} is not JSON: a browser's JSON.parse rejects it")


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """Server-sent events as (event, data), comments skipped."""
    event, data = "", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and event:
            yield event, json.loads(data, parse_constant=_no_constants)
            event, data = "", ""


@pytest.mark.asyncio
async def test_records_arrive_live_and_link_state_is_reported(chain: Chain) -> None:
    async with aiohttp.ClientSession() as s, s.get(f"{base(chain.rxd)}/api/events") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        stream = events(resp)
        kind, first = await anext(stream)
        assert kind == "stats" and first["records_indexed"] == 0
        (site,) = first["sites"]
        assert site["reachable"] and site["mcs"] == "qpsk/ldpc_r12"
        await announce_all(chain.txd_address, "cam-live", PEOPLE[1:2])
        async with asyncio.timeout(30):
            kind, record = await anext(stream)
            while kind != "record":
                kind, record = await anext(stream)
        assert (record["stream_id"], record["record_id"]) == ("cam-live", 1)
        assert record["fields"]["upper_color"] == "red" and "red" in record["description"]
    status, _, body = await get(f"{base(chain.rxd)}/api/link")
    link = json.loads(body)
    assert status == 200 and link["sites"][0]["link_up"] and link["sites"][0]["records_lost"] == 0
    assert link["streams"][0]["link"]["info_bits"] > 0 and link["info_bits_received"] > 0


@pytest.mark.asyncio
async def test_page_is_served_whole_with_a_content_security_policy(chain: Chain) -> None:
    status, headers, page = await get(f"{base(chain.rxd)}/")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    html = page.decode()
    # No inline script or style (the policy would block it), nothing from another origin.
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [] and "<style" not in html
    assert " style=" not in html and " onclick=" not in html
    for name, kind in (("app.js", "application/javascript"), ("app.css", "text/css")):
        status, headers, body = await get(f"{base(chain.rxd)}/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)
        assert body.decode() == resources.files("rxd").joinpath(f"web/{name}").read_text()
        assert not re.search(r"https?://", body.decode()), name
    assert not re.search(r"(src|href)=\"https?://", html)
    script = resources.files("rxd").joinpath("web/app.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    for path in ("/static/index.html", "/static/..%2Fhttp.py", "/static/app.py"):
        assert (await get(f"{base(chain.rxd)}{path}"))[0] == 404, path


@pytest.mark.asyncio
async def test_rxd_stops_promptly_while_a_page_listens(tmp_path: Path) -> None:
    chain = await start_chain(tmp_path)
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{base(chain.rxd)}/api/events") as resp:
            stream = events(resp)
            assert (await anext(stream))[0] == "stats"
            # An open page must not hold the drain: its stream ends and rxd stops well within the grace.
            async with asyncio.timeout(10):
                await chain.rxd.stop(1.0)
                assert [e async for e in stream] == []
    finally:
        await chain.txd.stop(1.0)
        await chain.channel.stop(1.0)
