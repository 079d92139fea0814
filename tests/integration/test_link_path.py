"""Records announced at txd travel txd -> channel-sim -> rxd over Link and come back from Receiver.Query."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import av
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from semcom.link.messages import AckStatus, Feedback
from semcom.pb.v1 import (
    channel_pb2,
    channel_pb2_grpc,
    common_pb2,
    link_pb2,
    link_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    transmitter_pb2,
    transmitter_pb2_grpc,
)
from semcom.record import Record
from semcom.schema import SchemaRegistry
from tests.conftest import Chain, start_chain, stop_chain
from tests.fixtures.link import PEOPLE, announce_all, query, wait_indexed
from txd.config import LinkConfig
from txd.link import LinkSender


@pytest.mark.asyncio
@pytest.mark.parametrize("mcs", ["bytes", "qpsk/ldpc_r12", "qam16/ldpc_r12", "qam64/none"])
async def test_announced_records_are_found_by_exact_filter(tmp_path: Path, mcs: str) -> None:
    chain = await start_chain(tmp_path, mcs=mcs)
    try:
        ids = await announce_all(chain.txd_address, "cam-a", PEOPLE)
        assert ids == [1, 2, 3]
        stats = await wait_indexed(chain.rxd_address, 3)
        assert stats.records_indexed == 3 and stats.records_failed == 0
        reply = await query(chain.rxd_address, upper_color="white", lower_color="black")
        exact = sorted(h.record.record_id for h in reply.hits if not h.contradicted_slots)
        assert exact == [1, 3]
        # Exact matches rank first; the record that contradicts a slot comes last and says which one.
        assert [h.record.record_id for h in reply.hits][-1] == 2
        assert list(reply.hits[-1].contradicted_slots) == ["upper_color", "lower_color"]
        hit = next(h for h in reply.hits if h.record.record_id == 1)
        fields = {f.name: f.value for f in hit.record.fields}
        assert fields == PEOPLE[0]
        assert hit.record.location_id == 3 and hit.record.track_id == 1
        assert hit.record.time_s == pytest.approx(1_700_000_000.0, abs=0.05)
        assert sorted(hit.matched_slots) == ["lower_color", "upper_color"]
        # Fields the announcement left out arrive as an explicit "unknown", not as a guess.
        second = (await query(chain.rxd_address, gender="female")).hits[0]
        assert {f.name: f.value for f in second.record.fields}["shoe_color"] == "unknown"
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_bits_are_counted_from_the_wire(chain: Chain) -> None:
    await announce_all(chain.txd_address, "cam-b", PEOPLE)
    rx_stats = await wait_indexed(chain.rxd_address, 3)
    async with aio.insecure_channel(chain.txd_address) as ch:
        status = await transmitter_pb2_grpc.TransmitterStub(ch).Status(
            transmitter_pb2.StatusRequest(), timeout=5
        )
    assert status.records_acked == 3 and status.records_queued == 0
    assert status.task_schema_id == "person/1" and status.link_up
    (stream,) = rx_stats.streams
    assert stream.info_bits == status.info_bits_sent > 0
    # qpsk: 2 bits/symbol, rate-1/2 code: at least info_bits symbols carry the data, plus pilots.
    assert stream.channel_symbols == status.channel_symbols_sent >= status.info_bits_sent
    assert stream.payload_bytes == 8 * stream.channel_symbols
    async with aio.insecure_channel(chain.channel_address) as ch:
        cstats = await channel_pb2_grpc.ChannelAdminStub(ch).GetStats(
            channel_pb2.GetStatsRequest(), timeout=5
        )
    assert cstats.bursts_forwarded == status.bursts_sent
    assert cstats.symbols_forwarded == stream.channel_symbols


@pytest.mark.asyncio
async def test_health_reflection_and_metrics(chain: Chain) -> None:
    for address, service in [
        (chain.txd_address, "semcom.v1.Transmitter"),
        (chain.rxd_address, "semcom.v1.Receiver"),
        (chain.channel_address, "semcom.v1.ChannelAdmin"),
    ]:
        async with aio.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            responses = refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = [s.name async for r in responses for s in r.list_services_response.service]
            assert service in names and "grpc.health.v1.Health" in names
    await announce_all(chain.txd_address, "cam-m", PEOPLE[:1])
    await wait_indexed(chain.rxd_address, 1)
    metrics = chain.rxd.metrics
    assert metrics is not None
    url = f"http://127.0.0.1:{metrics.port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    assert b'semcom_rxd_records_total{outcome="indexed"}' in body


@pytest.mark.asyncio
async def test_get_record_and_not_found(chain: Chain) -> None:
    await announce_all(chain.txd_address, "cam-g", PEOPLE[:1])
    await wait_indexed(chain.rxd_address, 1)
    async with aio.insecure_channel(chain.rxd_address) as ch:
        stub = receiver_pb2_grpc.ReceiverStub(ch)
        hit = await stub.GetRecord(receiver_pb2.GetRecordRequest(stream_id="cam-g", record_id=1), timeout=5)
        assert hit.record.stream_id == "cam-g"
        with pytest.raises(aio.AioRpcError) as info:
            await stub.GetRecord(receiver_pb2.GetRecordRequest(stream_id="cam-g", record_id=99), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "99" in (info.value.details() or "")


@pytest.mark.asyncio
async def test_chain_is_replaced_at_run_time(chain: Chain) -> None:
    async with aio.insecure_channel(chain.channel_address) as ch:
        admin = channel_pb2_grpc.ChannelAdminStub(ch)
        new = channel_pb2.ChannelChain(
            models=[channel_pb2.ChannelModelSpec(kind="awgn", params_json='{"snr_db": 20}')], seed=3
        )
        got = await admin.SetChain(new, timeout=5)
        assert [m.kind for m in got.models] == ["awgn"] and got.seed == 3
        with pytest.raises(aio.AioRpcError) as info:
            bad = channel_pb2.ChannelChain(models=[channel_pb2.ChannelModelSpec(kind="teleport")])
            await admin.SetChain(bad, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "teleport" in (info.value.details() or "")
        assert [m.kind for m in (await admin.GetChain(channel_pb2.GetChainRequest(), timeout=5)).models] == [
            "awgn"
        ]
    await announce_all(chain.txd_address, "cam-c", PEOPLE)
    stats = await wait_indexed(chain.rxd_address, 3)
    assert stats.records_indexed == 3
    (stream,) = stats.streams
    assert 17.0 < stream.snr_db < 23.0  # the receiver's pilot-based estimate of the 20 dB set at run time


@pytest.mark.asyncio
async def test_ingest_decodes_real_video(chain: Chain, shared_data: Path) -> None:
    video = shared_data / "videos" / "tud_campus.mp4"

    async def parts() -> AsyncIterator[transmitter_pb2.IngestRequest]:
        yield transmitter_pb2.IngestRequest(
            header=transmitter_pb2.IngestHeader(stream_id="tud", location_id=2, container="mp4")
        )
        data = video.read_bytes()
        for i in range(0, len(data), 65536):
            yield transmitter_pb2.IngestRequest(chunk=data[i : i + 65536])

    async with aio.insecure_channel(chain.txd_address) as ch:
        stub = transmitter_pb2_grpc.TransmitterStub(ch)
        reply = await stub.Ingest(parts(), timeout=60)
        assert reply.frames_decoded == 71
        assert reply.duration_s == pytest.approx(71 / 25, abs=0.05)
        status = await stub.Status(transmitter_pb2.StatusRequest(), timeout=5)
    (stream,) = [s for s in status.streams if s.stream_id == "tud"]
    assert stream.state == "done" and stream.frames_decoded == 71 and stream.location_id == 2
    assert stream.bytes_received == video.stat().st_size


@pytest.mark.asyncio
async def test_clip_fetched_through_the_backward_channel(
    chain: Chain, shared_data: Path, tmp_path: Path
) -> None:
    video = shared_data / "videos" / "tud_campus.mp4"
    start = 1_700_000_000.0

    async def parts() -> AsyncIterator[transmitter_pb2.IngestRequest]:
        yield transmitter_pb2.IngestRequest(
            header=transmitter_pb2.IngestHeader(stream_id="tud", start_time_s=start)
        )
        yield transmitter_pb2.IngestRequest(chunk=video.read_bytes())

    async with aio.insecure_channel(chain.txd_address) as ch:
        reply = await transmitter_pb2_grpc.TransmitterStub(ch).Ingest(parts(), timeout=60)
    await wait_indexed(chain.rxd_address, reply.records_sent)
    async with aio.insecure_channel(chain.rxd_address) as ch:
        stub = receiver_pb2_grpc.ReceiverStub(ch)
        before = await stub.Stats(receiver_pb2.StatsRequest(), timeout=5)
        request = common_pb2.FetchClipRequest(stream_id="tud", t0_s=start + 0.5, t1_s=start + 1.5)
        chunks = [c async for c in stub.FetchClip(request, timeout=60)]
        assert chunks[0].container == "mp4" and chunks[0].total_bytes == sum(len(c.data) for c in chunks)
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(b"".join(c.data for c in chunks))
        stats = await stub.Stats(receiver_pb2.StatsRequest(), timeout=5)
        assert stats.clip_bytes_fetched == clip.stat().st_size  # counted apart from the semantic link
        # The clip's bytes do not touch the semantic link's counters.
        assert [(x.info_bits, x.payload_bytes) for x in stats.streams] == [
            (x.info_bits, x.payload_bytes) for x in before.streams
        ]
        with pytest.raises(aio.AioRpcError) as info:
            missing = common_pb2.FetchClipRequest(stream_id="nope", t0_s=start, t1_s=start + 1)
            async for _ in stub.FetchClip(missing, timeout=10):
                pass
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in (info.value.details() or "")
    with av.open(str(clip)) as box:
        assert sum(1 for _ in box.decode(video=0)) >= 25


class BreakingLink(link_pb2_grpc.LinkServicer):
    """A Link peer that breaks its first call at the first burst (unanswered), then acks everything."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[tuple[int, int, int]] = []  # (call, sequence, attempt)
        self.broke = asyncio.Event()

    async def Transmit(
        self, request_iterator: AsyncIterator[link_pb2.Burst], context: aio.ServicerContext[object, object]
    ) -> AsyncIterator[link_pb2.Feedback]:
        self.calls += 1
        call = self.calls
        yield link_pb2.Feedback(task=link_pb2.TaskRequirement(schema_id="person/1"))
        async for burst in request_iterator:
            h = burst.header
            self.seen.append((call, h.sequence, h.attempt))
            if call == 1:
                self.broke.set()
                await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")
            fb = Feedback(h.stream_id, h.sequence, AckStatus.OK, records_accepted=h.record_count)
            yield fb.to_pb()


@pytest.mark.asyncio
async def test_link_sender_resends_across_a_broken_call() -> None:
    peer = BreakingLink()
    server = aio.server()
    link_pb2_grpc.add_LinkServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    cfg = LinkConfig(upstream=address, mcs="bytes", batch_delay_s=0, max_records_per_burst=1, reconnect_s=0.3)
    tasks: list[str] = []
    link = LinkSender(
        cfg,
        SchemaRegistry.builtin(),
        schema_id="person/1",
        max_message_bytes=1 << 20,
        on_task=lambda t: tasks.append(t.schema_id),
    )
    runner = asyncio.create_task(link.run())
    people = [Record("person/1", "cam-x", i, i, 1_700_000_000.0 + i, 1, {}) for i in range(1, 5)]
    try:
        link.submit(people[0])
        link.submit(people[1])
        await peer.broke.wait()
        # Submitted around the break: whether the broken call took them or not, the next call carries them.
        link.submit(people[2])
        link.submit(people[3])
        assert await link.flush(10.0)
        assert (link.stats.records_acked, link.stats.records_lost, link.stats.link_up) == (4, 0, True)
        assert peer.calls == 2 and tasks == ["person/1", "person/1"]
        # Every sequence was answered once, on the second call, in order; a reconnect is not an attempt.
        second = [(seq, attempt) for call, seq, attempt in peer.seen if call == 2]
        assert second == [(1, 0), (2, 0), (3, 0), (4, 0)]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await link.close()
        await server.stop(None)
