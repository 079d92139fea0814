"""rxd's HTTP/JSON API: the same queries as gRPC, clear JSON errors, clips over the backward channel."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import Chain
from tests.fixtures.link import PEOPLE, announce_all, wait_indexed


def _call(url: str, body: object | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            payload = resp.read()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(payload) if "json" in kind else payload
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def call(url: str, body: object | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    return await asyncio.to_thread(_call, url, body, raw)


def base(chain: Chain) -> str:
    assert chain.rxd.http is not None
    return f"http://127.0.0.1:{chain.rxd.http.port}"


@pytest.mark.asyncio
async def test_text_query_over_http(chain: Chain) -> None:
    await announce_all(chain.txd_address, "web", PEOPLE)
    await wait_indexed(chain.rxd_address, 3)
    status, reply = await call(
        f"{base(chain)}/api/query", {"text": "a man in a white shirt and black trousers", "top_k": 5}
    )
    assert status == 200, reply
    assert reply["slots"] == {"gender": ["male"], "upper_color": ["white"], "lower_color": ["black"]}
    first = reply["hits"][:2]
    assert sorted(h["record"]["record_id"] for h in first) == [1, 3]
    assert all(set(h["matched_slots"]) == {"gender", "upper_color", "lower_color"} for h in first)
    assert first[0]["description"] and first[0]["clip"]["stream_id"] == "web"
    # person/1 carries no confidence: a record matching every slot is taken at its word.
    assert first[0]["probability"] == 1.0 and first[0]["record"]["confidence"] == {}
    assert [s["name"] for s in first[0]["slot_scores"]] == ["gender", "upper_color", "lower_color"]
    assert first[0]["slot_scores"][0] == {
        "name": "gender",
        "value": "male",
        "confidence": None,
        "probability": 1.0,
    }
    # A filter may list values (OR): as a JSON list, or joined by "|".
    for colours in (["white", "red"], "red|white"):
        body = {"text": "a man", "filters": {"upper_color": colours}, "top_k": 5}
        status, reply = await call(f"{base(chain)}/api/query", body)
        assert status == 200 and reply["slots"]["upper_color"] == ["red", "white"], reply
    # The same over gRPC: a FieldFilter lists values, and parsed slots carry them in `values` and `value`.
    from semcom import client
    from semcom.pb.v1 import receiver_pb2_grpc

    with client.open_channel(chain.rxd_address) as channel:
        stub = receiver_pb2_grpc.ReceiverStub(channel)
        for filters in ({"upper_color": ["white", "red"]}, {"upper_color": "red|white"}):
            answer = await asyncio.to_thread(client.query, stub, text="a man", filters=filters, top_k=5)
            slots = {s.name: (list(s.values), s.value) for s in answer.parsed_slots}
            assert slots == {"gender": (["male"], "male"), "upper_color": (["red", "white"], "red|white")}
            assert {h.record.record_id for h in answer.hits[:2]} == {1, 3}
            assert answer.hits[0].probability == 1.0
            assert [s.name for s in answer.hits[0].slot_scores] == ["gender", "upper_color"]
        sure = await asyncio.to_thread(
            client.query, stub, text="a man", filters={"upper_color": "white"}, min_probability=0.99
        )
        assert {h.record.record_id for h in sure.hits} == {1, 3}, sure
        # "unknown" is a filter value like the others (a field the camera could not read); others are refused.
        unseen = await asyncio.to_thread(client.query, stub, filters={"lower_length": "unknown"})
        assert [(s.name, list(s.values)) for s in unseen.parsed_slots] == [("lower_length", ["unknown"])]
        with pytest.raises(grpc.RpcError) as refused:
            await asyncio.to_thread(client.query, stub, filters={"lower_length": "unseen"})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "allowed: unknown, long, short" in str(refused.value.details())
    status, reply = await call(f"{base(chain)}/api/query", {"filters": {"lower_length": "unknown"}})
    assert status == 200 and reply["slots"] == {"lower_length": ["unknown"]}, reply
    status, page = await call(f"{base(chain)}/")
    assert status == 200 and b'<form id="search"' in page
    status, stats = await call(f"{base(chain)}/api/stats")
    assert status == 200 and stats["records_indexed"] == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({}, 400, "empty query"),
        ({"text": "", "filters": {"hat": "red"}}, 400, "hat"),
        ({"text": "x", "top_k": 100000}, 400, "top_k"),
        ({"text": "x", "colour": "red"}, 400, "unknown query keys"),
        ({"text": "x", "filters": ["red"]}, 400, "filters"),
        ({"text": "x", "filters": {"upper_color": [1]}}, 400, "filters"),
        ({"text": "x", "filters": {"upper_color": []}}, 400, "one or more values"),
        ({"text": "x", "filters": {"upper_color": "red|mauve"}}, 400, "mauve"),
        ({"text": "x", "filters": {"sleeve": "unseen"}}, 400, "allowed: unknown, long, short"),
        ({"text": "x", "top_k": "many"}, 400, "bad query value"),
        ({"text": "x", "min_probability": 1.5}, 400, "min_probability must be 0..1"),
        ({"text": "x", "min_probability": "high"}, 400, "bad query value"),
    ],
)
async def test_http_errors_are_json(chain: Chain, body: dict[str, object], status: int, needle: str) -> None:
    got, reply = await call(f"{base(chain)}/api/query", body)
    assert got == status and needle in reply["error"], reply


@pytest.mark.asyncio
async def test_http_rejects_garbage_and_oversized_bodies(chain: Chain) -> None:
    got, reply = await call(f"{base(chain)}/api/query", raw=b"{not json")
    assert got == 400 and "not JSON" in reply["error"]
    got, _ = await asyncio.to_thread(_oversized, f"{base(chain)}/api/query")
    assert got == 413
    got, reply = await call(f"{base(chain)}/api/clip?stream_id=x")
    assert got == 400 and "t0_s" in reply["error"]


def _oversized(url: str) -> tuple[int, object]:
    request = urllib.request.Request(url, data=b"x" * (1 << 20), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, None
    except urllib.error.HTTPError as err:
        return err.code, None


@pytest.mark.asyncio
async def test_clip_over_http(chain: Chain, shared_data: Path) -> None:
    from semcom import client
    from semcom.pb.v1 import transmitter_pb2_grpc

    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(chain.txd_address))
    video = shared_data / "videos" / "tud_campus.mp4"
    await asyncio.to_thread(client.ingest_file, stub, video, stream_id="tud")
    got, reply = await call(f"{base(chain)}/api/clip?stream_id=nope&t0_s=1&t1_s=2")
    assert got == 404 and "nope" in reply["error"]
    import time

    now = time.time()
    got, data = await call(f"{base(chain)}/api/clip?stream_id=tud&t0_s={now - 60}&t1_s={now + 60}")
    assert got == 200 and data[4:8] == b"ftyp"  # an MP4 file


@pytest.mark.asyncio
async def test_unreachable_transmitter_fails_the_fetch_and_rxd_keeps_serving(tmp_path: Path) -> None:
    import grpc
    from grpc import aio

    from rxd.app import Rxd
    from rxd.config import RxdConfig
    from semcom.config import load_config
    from semcom.launch import free_port
    from semcom.pb.v1 import common_pb2, receiver_pb2_grpc
    from tests.fixtures.records import BagOfWordsEncoder

    cfg = load_config(
        RxdConfig,
        overrides=[
            "server.listen=127.0.0.1:0",
            "metrics.enabled=false",
            "http.listen=127.0.0.1:0",
            f"index.path={tmp_path / 'index.db'}",
            f"transmitter.address=127.0.0.1:{free_port()}",
            "transmitter.timeout_s=5",
        ],
    )
    rxd = Rxd(cfg, embedder=BagOfWordsEncoder())
    await rxd.start()
    try:
        assert rxd.http is not None
        url = f"http://127.0.0.1:{rxd.http.port}/api/clip?stream_id=cam&t0_s=1&t1_s=2"
        got, reply = await call(url)
        assert got == 503 and "unreachable" in reply["error"]
        async with aio.insecure_channel(f"127.0.0.1:{rxd.port}") as channel:
            stub = receiver_pb2_grpc.ReceiverStub(channel)
            with pytest.raises(aio.AioRpcError) as err:
                async for _ in stub.FetchClip(common_pb2.FetchClipRequest(stream_id="cam", t0_s=1, t1_s=2)):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A peer that cannot be reached is not a dead backend: rxd does not drain.
        assert not rxd.grpc.dead.done()
    finally:
        await rxd.stop(0.5)
