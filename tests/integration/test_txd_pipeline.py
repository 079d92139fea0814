"""Real video through txd's pipeline (PyAV decode, SSDLite detector, tracker, keyframes) to rxd's index.

The understanding backend here is `BrightnessUnderstander`, a deterministic stand-in (tests/fixtures/txd.py),
so that the test checks the plumbing (one record per track, times, locations, the link) independently of the
attribute model, which has tests of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc import aio

from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2, transmitter_pb2_grpc
from tests.conftest import start_chain, stop_chain
from tests.fixtures.link import wait_indexed
from tests.fixtures.txd import START, BrightnessUnderstander, ingest
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.mark.asyncio
async def test_people_in_real_video_become_records(tmp_path: Path, shared_data: Path) -> None:
    understander = BrightnessUnderstander()
    chain = await start_chain(tmp_path, understander=understander, txd_set=["perception.analysis_fps=10"])
    try:
        reply = await ingest(chain.txd_address, shared_data / "videos" / "tud_campus.mp4", "campus")
        assert reply.frames_decoded == 71 and reply.frames_analysed == 29  # 2.84 s at 10 analysed frames/s
        assert reply.keyframes == understander.crops > 0
        assert reply.records_sent >= 3  # TUD-Campus shows several people walking past
        stats = await wait_indexed(chain.rxd_address, reply.records_sent)
        assert stats.records_indexed == reply.records_sent and stats.records_failed == 0
        async with aio.insecure_channel(chain.rxd_address) as ch:
            stub = receiver_pb2_grpc.ReceiverStub(ch)
            records = {
                i: (
                    await stub.GetRecord(
                        receiver_pb2.GetRecordRequest(stream_id="campus", record_id=i), timeout=5
                    )
                ).record
                for i in range(1, reply.records_sent + 1)
            }
        assert len(records) == reply.records_sent
        assert len({r.track_id for r in records.values()}) >= 3
        assert all(r.location_id == 9 and START <= r.time_s <= START + 2.9 for r in records.values())
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_bad_videos_fail_clearly_and_others_go_on(tmp_path: Path, shared_data: Path) -> None:
    chain = await start_chain(tmp_path, understander=BrightnessUnderstander())
    try:
        video = shared_data / "videos" / "tud_campus.mp4"
        wav = tmp_path / "tone.wav"
        _write_wav(wav)
        results = await asyncio.gather(
            ingest(chain.txd_address, video, "cut", cut=video.stat().st_size // 2),  # moov atom lost
            ingest(chain.txd_address, wav, "audio"),  # a container with no video stream
            ingest(chain.txd_address, video, "good"),  # unaffected by the two failures beside it
            return_exceptions=True,
        )
        cut, audio, good = results
        assert isinstance(cut, aio.AioRpcError) and cut.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot decode" in (cut.details() or "")
        assert isinstance(audio, aio.AioRpcError) and "no video stream" in (audio.details() or "")
        assert isinstance(good, transmitter_pb2.IngestReply) and good.frames_decoded == 71
        async with aio.insecure_channel(chain.txd_address) as ch:
            status = await transmitter_pb2_grpc.TransmitterStub(ch).Status(
                transmitter_pb2.StatusRequest(), timeout=5
            )
        states = {s.stream_id: s.state for s in status.streams}
        assert states == {"cut": "failed", "audio": "failed", "good": "done"}
        assert not any(chain.txd.clips.incoming.iterdir())  # nothing of the failed uploads is left behind
    finally:
        await stop_chain(chain)


@pytest.mark.asyncio
async def test_upload_cancelled_mid_file_leaves_daemon_up(tmp_path: Path, shared_data: Path) -> None:
    chain = await start_chain(tmp_path, understander=BrightnessUnderstander())
    try:
        stalled = asyncio.Event()

        async def parts() -> AsyncIterator[transmitter_pb2.IngestRequest]:
            yield transmitter_pb2.IngestRequest(header=transmitter_pb2.IngestHeader(stream_id="gone"))
            yield transmitter_pb2.IngestRequest(chunk=b"\x00" * 1000)
            stalled.set()
            await asyncio.sleep(3600)  # the client goes away before finishing

        async with aio.insecure_channel(chain.txd_address) as ch:
            call = transmitter_pb2_grpc.TransmitterStub(ch).Ingest(parts(), timeout=300)
            await stalled.wait()
            streams = chain.txd.core.streams
            await eventually(lambda: "gone" in streams and streams["gone"].bytes_received == 1000)
            call.cancel()
        reply = await ingest(chain.txd_address, shared_data / "videos" / "tud_campus.mp4", "after")
        assert reply.frames_decoded == 71
        await eventually(lambda: not any(chain.txd.clips.incoming.iterdir()))
    finally:
        await stop_chain(chain)


def _write_wav(path: Path) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(np.arange(8000) * 0.1) * 3000).astype(np.int16).tobytes())
