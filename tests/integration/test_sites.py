"""Sites at the receiver with real servers: the Link's site handshake, clips and keyframes over the backhaul
txd opened (no transmitter.address), a fetch for a site that is not connected, counters after a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc import aio

from rxd.app import Rxd
from rxd.config import RxdConfig
from semcom.burst import build_burst, parse_mcs
from semcom.codec.frame import encode_records
from semcom.config import load_config
from semcom.link.site import SITE_METADATA_KEY, backhaul_proof
from semcom.pb.v1 import (
    channel_pb2,
    channel_pb2_grpc,
    common_pb2,
    link_pb2,
    link_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    sites_pb2,
    sites_pb2_grpc,
)
from semcom.schema import SchemaRegistry
from tests.conftest import Chain, shared_embedder, start_chain, stop_chain
from tests.fixtures.link import PEOPLE, announce_all, wait_indexed
from tests.fixtures.records import person
from tests.fixtures.txd import START, BrightnessUnderstander, ingest
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.slow


async def _sites(address: str) -> dict[str, sites_pb2.SiteInfo]:
    async with aio.insecure_channel(address) as ch:
        reply = await sites_pb2_grpc.SitesStub(ch).List(sites_pb2.ListSitesRequest(), timeout=5)
    return {s.site_id: s for s in reply.sites}


async def _get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        return resp.status, await resp.read()


async def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as resp:
        return resp.status, await resp.json()


def _site_chain_rxd(chain: Chain) -> str:
    assert chain.rxd.http is not None
    return f"http://127.0.0.1:{chain.rxd.http.port}"


async def _start(tmp: Path, site_id: str) -> Chain:
    """The in-process chain, with rxd given no transmitter.address and txd a site id."""
    chain = await start_chain(
        tmp,
        understander=BrightnessUnderstander(),
        txd_set=[f"link.site_id={site_id}"],
        rxd_set=["transmitter.address="],
    )
    await eventually(lambda: chain.rxd.backhaul.connected(site_id), timeout_s=20)
    return chain


@pytest.mark.asyncio
async def test_clip_and_keyframe_come_back_over_the_backhaul(tmp_path: Path, shared_data: Path) -> None:
    chain = await _start(tmp_path, "site-a")
    try:
        assert chain.rxd.core.transmitter is None  # no route from rxd to txd is configured
        reply = await ingest(chain.txd_address, shared_data / "videos" / "tud_campus.mp4", "cam-a")
        assert reply.records_sent >= 1
        await wait_indexed(chain.rxd_address, reply.records_sent)
        status, body = await _get(f"{_site_chain_rxd(chain)}/api/keyframe?stream_id=cam-a&record_id=1")
        assert status == 200 and body[:2] == b"\xff\xd8"  # a JPEG
        async with aio.insecure_channel(chain.rxd_address) as ch:
            request = common_pb2.FetchClipRequest(stream_id="cam-a", t0_s=START, t1_s=START + 3)
            data = b"".join([c.data async for c in receiver_pb2_grpc.ReceiverStub(ch).FetchClip(request)])
        assert data[4:8] == b"ftyp"  # an MP4
        stats = chain.rxd.core.stats()
        assert stats["clip_bytes_fetched"] == len(data) and stats["keyframe_bytes_fetched"] == len(body)
        # channel-sim passed the answers through, unimpaired, as backward-channel bytes.
        async with aio.insecure_channel(chain.channel_address) as ch:
            ch_stats = await channel_pb2_grpc.ChannelAdminStub(ch).GetStats(channel_pb2.GetStatsRequest())
        assert ch_stats.backhaul_bytes > len(data) + len(body) and ch_stats.backhaul_requests == 2
        site = (await _sites(chain.rxd_address))["site-a"]
        assert site.link_up and site.backhaul_up and list(site.stream_ids) == ["cam-a"]
        assert site.records_indexed == reply.records_sent and site.info_bits > 0 and site.last_record_at_s > 0
        # The page's link state: the site with txd's own view, asked over the backhaul.
        status, raw = await _get(f"{_site_chain_rxd(chain)}/api/link")
        (doc,) = json.loads(raw)["sites"]
        assert doc["site_id"] == "site-a" and doc["reachable"] and doc["mcs"] == "qpsk/ldpc_r12"
        # A stream no site sent: a clear 404.
        status, raw = await _get(f"{_site_chain_rxd(chain)}/api/clip?stream_id=nope&t0_s=1&t1_s=2")
        assert status == 404 and "no site has sent stream 'nope'" in json.loads(raw)["error"]
        # The site went away: its streams' fetches fail UNAVAILABLE, saying which site, and rxd serves on.
        await chain.txd.stop(1.0)
        await eventually(lambda: not chain.rxd.backhaul.connected("site-a"), timeout_s=20)
        status, raw = await _get(f"{_site_chain_rxd(chain)}/api/keyframe?stream_id=cam-a&record_id=2")
        assert status == 503 and "site 'site-a'" in json.loads(raw)["error"], raw
        async with aio.insecure_channel(chain.rxd_address) as ch:
            with pytest.raises(aio.AioRpcError) as err:
                async for _ in receiver_pb2_grpc.ReceiverStub(ch).FetchClip(request, timeout=10):
                    pass
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "no backhaul open" in str(
            err.value.details()
        )
    finally:
        await stop_chain(chain)


async def _bursts(*bursts: link_pb2.Burst) -> AsyncIterator[link_pb2.Burst]:
    for b in bursts:
        yield b


def _burst(stream_id: str, site_id: str, sequence: int = 1) -> link_pb2.Burst:
    schema = SchemaRegistry.builtin().get("person/1")
    frame = encode_records([person(sequence, stream_id, 1.7e9, upper_color="red")], schema)
    burst = build_burst(
        frame,
        stream_id=stream_id,
        sequence=sequence,
        schema_id="person/1",
        kind=link_pb2.PAYLOAD_KIND_RECORDS,
        record_count=1,
        mcs=parse_mcs("bytes"),
        pilot_count=16,
    )
    burst.header.site_id = site_id
    return burst


async def _transmit(address: str, site_id: str | None, *bursts: link_pb2.Burst) -> list[link_pb2.Feedback]:
    metadata = () if site_id is None else ((SITE_METADATA_KEY, site_id),)
    async with aio.insecure_channel(address) as ch:
        call = link_pb2_grpc.LinkStub(ch).Transmit(_bursts(*bursts), metadata=metadata, timeout=20)
        return [fb async for fb in call if fb.sequence]


@pytest.mark.asyncio
async def test_site_handshake_is_checked_and_streams_are_unique_across_sites(tmp_path: Path) -> None:
    rxd = Rxd(_rxd_config(tmp_path), embedder=shared_embedder())
    await rxd.start()
    address = f"127.0.0.1:{rxd.port}"
    try:
        for bad in ("../etc", "", "a b", "x" * 65):
            if not bad:
                continue
            with pytest.raises(aio.AioRpcError) as err:
                await _transmit(address, bad, _burst("cam-1", bad))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "site_id" in str(err.value.details()) and "not valid" in str(err.value.details())
        (fb,) = await _transmit(address, "site-a", _burst("cam-1", "site-a"))
        assert fb.status == link_pb2.ACK_STATUS_OK
        # A burst naming another site than the call's handshake; a stream another site owns.
        (fb,) = await _transmit(address, "site-b", _burst("cam-2", "site-a"))
        assert fb.status == link_pb2.ACK_STATUS_REJECTED and "opened by site 'site-b'" in fb.detail
        (fb,) = await _transmit(address, "site-b", _burst("cam-1", "site-b", 2))
        assert fb.status == link_pb2.ACK_STATUS_REJECTED and "belongs to site 'site-a'" in fb.detail
        sites = await _sites(address)
        assert sites["site-a"].records_indexed == 1 and list(sites["site-a"].stream_ids) == ["cam-1"]
        assert sites["site-b"].bursts_failed == 2 and not sites["site-b"].stream_ids
        # A backhaul that does not say which site it serves is refused.
        async with aio.insecure_channel(address) as ch:

            async def hello(site_id: str) -> AsyncIterator[sites_pb2.SiteAnswer]:
                yield sites_pb2.SiteAnswer(hello=sites_pb2.SiteHello(site_id=site_id))

            with pytest.raises(aio.AioRpcError) as err:
                async for _ in sites_pb2_grpc.BackhaulStub(ch).Open(hello(""), timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await rxd.stop(1.0)
    # The counts and the stream's owner are read back from the index after a restart.
    again = Rxd(_rxd_config(tmp_path), embedder=shared_embedder())
    await again.start()
    try:
        sites = await _sites(f"127.0.0.1:{again.port}")
        assert not sites["site-a"].link_up and sites["site-a"].records_indexed == 1
        assert sites["site-b"].bursts_failed == 2 and list(sites["site-a"].stream_ids) == ["cam-1"]
        (fb,) = await _transmit(f"127.0.0.1:{again.port}", "site-b", _burst("cam-1", "site-b", 3))
        assert fb.status == link_pb2.ACK_STATUS_REJECTED and "belongs to site 'site-a'" in fb.detail
    finally:
        await again.stop(1.0)


@pytest.mark.asyncio
async def test_streams_the_index_tail_cannot_follow_are_listed_from_the_link() -> None:
    # An index in memory, like one in PostgreSQL, gives no per-stream totals to the page's live view.
    overrides = ["server.listen=127.0.0.1:0", "metrics.enabled=false", "http.listen=127.0.0.1:0"]
    cfg = load_config(RxdConfig, overrides=[*overrides, "index.path=:memory:"])
    rxd = Rxd(cfg, embedder=shared_embedder())
    await rxd.start()
    try:
        (fb,) = await _transmit(f"127.0.0.1:{rxd.port}", "site-a", _burst("cam-1", "site-a"))
        assert fb.status == link_pb2.ACK_STATUS_OK
        assert rxd.http is not None
        status, raw = await _get(f"http://127.0.0.1:{rxd.http.port}/api/stats")
        stats = json.loads(raw)
        assert status == 200 and not stats["live"]
        (stream,) = stats["streams"]
        assert (stream["stream_id"], stream["records"], stream["location_ids"]) == ("cam-1", None, [])
        assert (stream["link"]["bursts_ok"], stream["link"]["records_indexed"]) == (1, 1)
    finally:
        await rxd.stop(1.0)


def _rxd_config(tmp: Path) -> RxdConfig:
    return load_config(
        RxdConfig,
        overrides=[
            "server.listen=127.0.0.1:0",
            "metrics.enabled=false",
            "http.enabled=false",
            f"index.path={tmp / 'index.db'}",
        ],
    )


@pytest.mark.asyncio
async def test_site_filter_narrows_a_query_to_one_sites_streams(tmp_path: Path) -> None:
    chain = await _start(tmp_path, "site-f")
    try:
        await announce_all(chain.txd_address, "cam-f1", PEOPLE[:2])
        await announce_all(chain.txd_address, "cam-f2", PEOPLE[:2])
        await wait_indexed(chain.rxd_address, 4)
        # A record of a stream of no site: announced straight into rxd's index.
        chain.rxd.engine.ingest([person(1, "cam-other", 1.7e9, upper_color="red")])
        url = f"{_site_chain_rxd(chain)}/api/query"
        status, reply = await _post(url, {"text": "a person", "site_id": "site-f", "top_k": 10})
        assert status == 200, reply
        hits = reply["hits"]
        assert isinstance(hits, list) and len(hits) == 4
        assert {h["record"]["stream_id"] for h in hits} == {"cam-f1", "cam-f2"}
        status, reply = await _post(url, {"text": "a person", "site_id": "site-f", "top_k": 3})
        assert status == 200 and isinstance(reply["hits"], list) and len(reply["hits"]) == 3
        status, reply = await _post(url, {"text": "a person", "site_id": "elsewhere"})
        assert status == 200 and reply["hits"] == [] and "elsewhere" in str(reply["note"])
        status, reply = await _post(url, {"text": "a person", "site_id": "../x"})
        assert status == 400 and "site_id" in str(reply["error"])
        status, raw = await _get(f"{_site_chain_rxd(chain)}/api/stats")
        assert json.loads(raw)["site_streams"] == {"site-f": ["cam-f1", "cam-f2"]}
        async with aio.insecure_channel(chain.rxd_address) as ch:  # the same filter over gRPC
            request = receiver_pb2.QueryRequest(text="a person", site_id="site-f", top_k=10)
            grpc_reply = await receiver_pb2_grpc.ReceiverStub(ch).Query(request, timeout=10)
        assert sorted(h.record.stream_id for h in grpc_reply.hits) == ["cam-f1"] * 2 + ["cam-f2"] * 2
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_with_site_keys_a_site_proves_its_key_before_it_serves_fetches(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "site-k.key").write_bytes(bytes(range(32)))
    (keys / "wrong.key").write_bytes(bytes(range(1, 33)))
    site_keys = json.dumps({"site-k": str(keys / "site-k.key"), "site-w": str(keys / "site-k.key")})
    chain = await start_chain(
        tmp_path,
        txd_set=["link.site_id=site-k", f"link.key_file={keys / 'site-k.key'}"],
        rxd_set=["transmitter.address=", f"link.site_keys={site_keys}"],
    )
    try:
        # The real txd answers the challenge with its key: its backhaul opens, and serves a status request.
        await eventually(lambda: chain.rxd.backhaul.connected("site-k"), timeout_s=20)
        status = await chain.rxd.backhaul.status("site-k", 10.0)
        assert status.site_id == "site-k"

        async def opened(site_id: str, key: bytes | None) -> grpc.StatusCode:
            """Open a backhaul as `site_id`, answering the challenge under `key`; the status it ends with."""
            out: asyncio.Queue[sites_pb2.SiteAnswer] = asyncio.Queue()
            out.put_nowait(sites_pb2.SiteAnswer(hello=sites_pb2.SiteHello(site_id=site_id)))

            async def answers() -> AsyncIterator[sites_pb2.SiteAnswer]:
                while True:
                    yield await out.get()

            async with aio.insecure_channel(chain.channel_address) as ch:
                call = sites_pb2_grpc.BackhaulStub(ch).Open(answers(), timeout=10)
                try:
                    async for request in call:
                        if request.WhichOneof("kind") == "challenge" and key is not None:
                            proof = backhaul_proof(key, site_id, request.challenge)
                            out.put_nowait(sites_pb2.SiteAnswer(proof=proof))
                except aio.AioRpcError as err:
                    return err.code()
            return grpc.StatusCode.OK

        wrong = (keys / "wrong.key").read_bytes()
        assert await opened("site-w", wrong) == grpc.StatusCode.UNAUTHENTICATED
        assert await opened("site-x", wrong) == grpc.StatusCode.UNAUTHENTICATED  # no key here at all
        assert not chain.rxd.backhaul.connected("site-w") and chain.rxd.backhaul.connected("site-k")
        # A link opened by a site that holds no key here is refused at the handshake.
        with pytest.raises(aio.AioRpcError) as err:
            await _transmit(chain.rxd_address, "site-x", _burst("cam-x", "site-x"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "holds no key" in str(
            err.value.details()
        )
    finally:
        await stop_chain(chain)
