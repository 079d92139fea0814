"""Sources txd pulls itself (a file, HTTP, RTSP): real video through the embedded models to a real rxd, clips
fetched back through the backward channel, and failing sources that leave the rest of the daemon working."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import av
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from grpc import aio

from semcom.launch import free_port
from semcom.pb.v1 import (
    common_pb2,
    receiver_pb2,
    receiver_pb2_grpc,
    transmitter_pb2,
    transmitter_pb2_grpc,
)
from tests.conftest import start_chain, stop_chain
from tests.fixtures.link import wait_indexed
from tests.fixtures.txd import BrightnessUnderstander, ingest
from tests.fixtures.video import cut_video

pytestmark = [pytest.mark.slow, pytest.mark.data]


def sources_setting(*sources: Mapping[str, object]) -> str:
    return "sources=" + json.dumps(list(sources))


async def status(address: str) -> transmitter_pb2.TransmitterStatus:
    async with aio.insecure_channel(address) as ch:
        return await transmitter_pb2_grpc.TransmitterStub(ch).Status(
            transmitter_pb2.StatusRequest(), timeout=5
        )


async def wait_streams(
    address: str, done: Callable[[dict[str, transmitter_pb2.StreamStatus]], bool], timeout_s: float = 120.0
) -> dict[str, transmitter_pb2.StreamStatus]:
    """Poll Status until `done` holds for the streams by id."""
    async with asyncio.timeout(timeout_s):
        while True:
            streams = {s.stream_id: s for s in (await status(address)).streams}
            if done(streams):
                return streams
            await asyncio.sleep(0.05)


async def wait_delivered(address: str, timeout_s: float = 60.0) -> dict[str, int]:
    """Records sent per stream, once every record txd published has been acknowledged."""
    async with asyncio.timeout(timeout_s):
        while True:
            st = await status(address)
            if st.records_queued == 0:
                return {s.stream_id: s.records_sent for s in st.streams}
            await asyncio.sleep(0.05)


async def records_of(address: str, stream_id: str, n: int) -> list[common_pb2.Record]:
    async with aio.insecure_channel(address) as ch:
        stub = receiver_pb2_grpc.ReceiverStub(ch)
        return [
            (
                await stub.GetRecord(
                    receiver_pb2.GetRecordRequest(stream_id=stream_id, record_id=i), timeout=5
                )
            ).record
            for i in range(1, n + 1)
        ]


@pytest_asyncio.fixture
async def http_videos(tmp_path: Path, shared_data: Path) -> AsyncIterator[str]:
    """A local HTTP server with the first 3 s of TUD-Stadtmitte at /stadtmitte.mp4 (range requests work)."""
    folder = tmp_path / "www"
    folder.mkdir()
    # The MP4 index first, so that the file streams over HTTP.
    await asyncio.to_thread(
        cut_video,
        shared_data / "videos" / "tud_stadtmitte.mp4",
        folder / "stadtmitte.mp4",
        3.0,
        {"movflags": "faststart"},
    )
    app = web.Application()
    app.router.add_static("/", folder)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never answers (a hung camera); yields the port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def fetch_clip(address: str, stream_id: str, t0_s: float, t1_s: float, out: Path) -> Path:
    """FetchClip through rxd's backward channel, as a user at the receiver asks for it."""
    async with aio.insecure_channel(address) as ch:
        request = common_pb2.FetchClipRequest(stream_id=stream_id, t0_s=t0_s, t1_s=t1_s)
        chunks = [c async for c in receiver_pb2_grpc.ReceiverStub(ch).FetchClip(request, timeout=120)]
    assert chunks and chunks[0].container == "mp4"
    await asyncio.to_thread(out.write_bytes, b"".join(c.data for c in chunks))
    return out


def decoded_times(clip: Path) -> list[float]:
    with av.open(str(clip)) as box:
        assert box.format.name.startswith("mov,mp4")
        return [float(f.time) for f in box.decode(video=0) if f.time is not None]


@pytest.mark.asyncio
async def test_file_source_reaches_rxd_and_clips_come_back(tmp_path: Path, shared_data: Path) -> None:
    """TUD-Campus (2.84 s, 25 fps) pulled as a file source through the embedded detector, tracker and
    attribute model; its recording in 1 s segments serves a clip that spans two of them."""
    source = {"stream_id": "campus", "url": str(shared_data / "videos" / "tud_campus.mp4"), "location_id": 5}
    chain = await start_chain(tmp_path, txd_set=[sources_setting(source), "clips.segment_s=1.0"])
    try:
        streams = await wait_streams(chain.txd_address, lambda s: s["campus"].state in ("done", "failed"))
        campus = streams["campus"]
        assert campus.state == "done", campus.error
        assert campus.frames_decoded == 71 and campus.frames_analysed == 15  # 2.84 s at 5 frames/s
        assert campus.keyframes > 0 and campus.bytes_received > 0
        sent = (await wait_delivered(chain.txd_address))["campus"]
        stats = await wait_indexed(chain.rxd_address, sent)
        assert stats.records_failed == 0 and sent > 0
        records = await records_of(chain.rxd_address, "campus", sent)
        assert len({r.track_id for r in records}) >= 2  # several people walk past
        # The attribute model read something of them (a field is "unknown" where it abstains).
        assert any(f.value != "unknown" for r in records for f in r.fields)
        segments = [s for s in chain.txd.clips.segments if s.stream_id == "campus"]
        assert len(segments) >= 2 and all(s.path.endswith(".mkv") for s in segments)
        start = min(s.start_time_s for s in segments)
        # Record times travel in 0.1 s steps (person/1), so within 0.05 s of the video's span.
        assert all(start - 0.05 <= r.time_s <= start + 2.9 and r.location_id == 5 for r in records)
        # The range crosses the first segment boundary (segments end at a keyframe, every 0.48 s here).
        t0, t1 = start + 0.5, start + 2.0
        assert any(s.start_time_s < t0 < s.end_time_s < t1 for s in segments)
        times = decoded_times(await fetch_clip(chain.rxd_address, "campus", t0, t1, tmp_path / "clip.mp4"))
        # MPEG-4 Part 2 is transcoded, cut at frames: 1.5 s at 25 fps, give or take a frame at each end.
        assert 36 <= len(times) <= 39
        assert times == sorted(times) and times[-1] - times[0] == pytest.approx(1.5, abs=0.1)
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_http_source_records_arrive(tmp_path: Path, http_videos: str) -> None:
    source = {"stream_id": "street", "url": f"{http_videos}/stadtmitte.mp4"}
    chain = await start_chain(
        tmp_path, understander=BrightnessUnderstander(), txd_set=[sources_setting(source)]
    )
    try:
        streams = await wait_streams(chain.txd_address, lambda s: s["street"].state in ("done", "failed"))
        street = streams["street"]
        assert street.state == "done", street.error
        assert street.frames_decoded == 75 and street.frames_analysed == 15  # 3 s at 25 fps, 5 analysed/s
        sent = (await wait_delivered(chain.txd_address))["street"]
        assert sent > 0 and (await wait_indexed(chain.rxd_address, sent)).records_failed == 0
        records = await records_of(chain.rxd_address, "street", sent)
        assert {r.stream_id for r in records} == {"street"}
        assert all(r.fields for r in records)
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_backed_up_link_slows_a_file_source_down(tmp_path: Path, shared_data: Path) -> None:
    """With room for one record on the link, a pulled file waits for each acknowledgement instead of failing
    (Announce refuses in that state; a source txd pulls itself is held back): every record arrives."""
    source = {"stream_id": "campus", "url": str(shared_data / "videos" / "tud_campus.mp4")}
    chain = await start_chain(
        tmp_path,
        understander=BrightnessUnderstander(),
        txd_set=[sources_setting(source), "link.max_queued_records=1", "link.batch_delay_s=0.05"],
    )
    try:
        streams = await wait_streams(chain.txd_address, lambda s: s["campus"].state in ("done", "failed"))
        assert streams["campus"].state == "done", streams["campus"].error
        assert streams["campus"].frames_analysed == 15
        sent = (await wait_delivered(chain.txd_address))["campus"]
        assert sent > 1  # more than the queue holds at once
        assert chain.txd.link.stats.bursts_sent >= sent  # one record per burst: each waited for the last
        stats = await wait_indexed(chain.rxd_address, sent)
        assert stats.records_failed == 0
        assert [r.record_id for r in await records_of(chain.rxd_address, "campus", sent)] == list(
            range(1, sent + 1)
        )
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_failing_sources_are_reported_and_the_rest_goes_on(
    tmp_path: Path,
    shared_data: Path,
    http_videos: str,
    silent_server: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = free_port()  # nothing listens there: connections are refused
    silent = f"127.0.0.1:{silent_server}"
    sources: list[Mapping[str, object]] = [
        {"stream_id": "refused", "url": f"http://127.0.0.1:{closed}/cam.mp4", "retry_s": 0.2},
        {"stream_id": "missing", "url": f"{http_videos}/no-such-video.mp4", "retry_s": 0.2},
        {"stream_id": "camera", "url": f"rtsp://admin:secret@127.0.0.1:{closed}/live", "retry_s": 0.2},
        {"stream_id": "nofile", "url": str(tmp_path / "no-such-file.mp4")},
        {"stream_id": "hung", "url": f"http://{silent}/cam.mp4", "open_timeout_s": 1, "read_timeout_s": 1},
        {"stream_id": "hungcam", "url": f"rtsp://{silent}/live", "open_timeout_s": 1, "read_timeout_s": 1},
        {"stream_id": "good", "url": f"{http_videos}/stadtmitte.mp4"},
    ]
    caplog.set_level(logging.WARNING, logger="txd.sources")
    chain = await start_chain(
        tmp_path, understander=BrightnessUnderstander(), txd_set=[sources_setting(*sources)]
    )
    try:
        # Ingest works meanwhile, and a source's id is not available to it.
        reply = await ingest(chain.txd_address, shared_data / "videos" / "tud_campus.mp4", "uploaded")
        assert reply.frames_decoded == 71 and reply.records_sent > 0
        with pytest.raises(aio.AioRpcError) as info:
            await ingest(chain.txd_address, shared_data / "videos" / "tud_campus.mp4", "good")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "source txd pulls itself" in (info.value.details() or "")

        def settled(s: dict[str, transmitter_pb2.StreamStatus]) -> bool:
            return (
                s["good"].state == "done"
                and s["nofile"].state == "failed"
                and all(s[k].state == "retrying" for k in ("refused", "missing", "camera", "hung", "hungcam"))
            )

        streams = await wait_streams(chain.txd_address, settled)
        assert "refused" in streams["refused"].error.lower()
        assert "404" in streams["missing"].error or "not found" in streams["missing"].error.lower()
        assert "refused" in streams["camera"].error.lower()
        assert "secret" not in streams["camera"].error and "admin:***@" in streams["camera"].error
        assert "no such file" in streams["nofile"].error.lower()
        # A peer that accepts and then says nothing fails after the open timeout instead of hanging.
        assert "timed out" in streams["hung"].error
        assert "cannot open the stream" in streams["hungcam"].error
        assert streams["good"].frames_decoded == 75
        # Retried with backoff: a failing network source comes back to "retrying" after each attempt.
        await wait_streams(chain.txd_address, lambda s: chain.txd.sources.pullers[0].passes >= 4)
        logged = [r.getMessage() for r in caplog.records if r.name == "txd.sources"]
        pauses = [m.rsplit("retrying in ", 1)[1] for m in logged if "'refused'" in m and "retrying in" in m]
        assert pauses[:3] == ["0.2 s", "0.4 s", "0.8 s"]  # doubling from retry_s
        assert any("'nofile'" in m and "no such file" in m.lower() for m in logged)
        assert not any("secret" in m for m in logged)
        sent = await wait_delivered(chain.txd_address)
        assert sent["good"] > 0 and sent["uploaded"] == reply.records_sent
        assert {k for k, n in sent.items() if n} == {"good", "uploaded"}
        stats = await wait_indexed(chain.rxd_address, sent["good"] + sent["uploaded"])
        assert stats.records_failed == 0
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_stopping_txd_keeps_what_a_source_recorded(tmp_path: Path, shared_data: Path) -> None:
    """PETS09 (79.5 s, a keyframe every 25 s) is still being pulled: a clip of the seconds recorded so far
    comes from the open segment. Then txd stops: the stop is prompt and the open segment is stored, so
    those seconds can still be cut into a clip."""
    source = {"stream_id": "pets", "url": str(shared_data / "videos" / "pets09_s2l1_vtest.avi")}
    chain = await start_chain(
        tmp_path, understander=BrightnessUnderstander(), txd_set=[sources_setting(source)]
    )
    try:
        await wait_streams(chain.txd_address, lambda s: s["pets"].frames_analysed >= 10)
        assert chain.txd.clips.segments == []  # the first segment is still open
        (live,) = chain.txd.clips.live_segments()
        assert live.duration_s >= 2.0
        t0 = live.start_time_s + 0.5
        clip = await fetch_clip(chain.rxd_address, "pets", t0, t0 + 1.0, tmp_path / "live.mp4")
        assert 9 <= len(decoded_times(clip)) <= 11
    finally:
        async with asyncio.timeout(20):
            await stop_chain(chain)
    (segment,) = chain.txd.clips.segments
    assert segment.stream_id == "pets" and segment.codec == "msmpeg4" and segment.duration_s >= 2.0
    clip = chain.txd.clips.extract(
        [segment], segment.start_time_s, segment.start_time_s + 1.0, tmp_path / "clip.mp4"
    )
    assert 9 <= len(decoded_times(clip)) <= 11  # 1 s at 10 frames/s, transcoded to H.264


@pytest.mark.asyncio
async def test_a_live_source_skips_frames_instead_of_falling_behind(
    tmp_path: Path, shared_data: Path
) -> None:
    """A file read as if it were live is decoded at full speed, far faster than perception runs: frames
    due for analysis that find the queue full are skipped and counted, and decoding never waits."""
    source = {
        "stream_id": "cam",
        "url": str(shared_data / "videos" / "tud_stadtmitte.mp4"),
        "live": True,
        "retry_s": 60,  # after the end, hold off reconnecting while the test looks at the first pass
    }
    chain = await start_chain(
        tmp_path, understander=BrightnessUnderstander(), txd_set=[sources_setting(source)]
    )
    try:
        streams = await wait_streams(chain.txd_address, lambda s: s["cam"].state == "retrying")
        assert streams["cam"].error == "the live stream ended"
        run = chain.txd.core.streams["cam"].run
        assert run is not None and run.decode.frames_decoded == 179
        # 7.16 s at 5 frames/s: 36 frames were due; those that found the queue (8 frames) full were skipped.
        assert run.times.frames_analysed + run.times.frames_dropped == 36
        assert run.times.frames_dropped > 0 and run.times.frames_analysed >= 8
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_without_perception_a_source_is_only_recorded(tmp_path: Path, shared_data: Path) -> None:
    source = {"stream_id": "plain", "url": f"file://{shared_data / 'videos' / 'tud_campus.mp4'}"}
    chain = await start_chain(tmp_path, txd_set=[sources_setting(source), "perception=null"])
    try:
        streams = await wait_streams(chain.txd_address, lambda s: s["plain"].state in ("done", "failed"))
        plain = streams["plain"]
        assert plain.state == "done" and plain.frames_decoded == 71 and plain.frames_analysed == 0
        assert (await wait_delivered(chain.txd_address)).get(
            "plain", 0
        ) == 0  # nothing understood, nothing sent
        (segment,) = chain.txd.clips.segments  # 2.84 s: one segment of the default 60 s
        assert segment.duration_s == pytest.approx(2.84, abs=0.01)
        # Every packet pulled is stored (plus under 1 % of Matroska framing).
        assert plain.bytes_received <= segment.size_bytes < 1.01 * plain.bytes_received
    finally:
        await stop_chain(chain)
