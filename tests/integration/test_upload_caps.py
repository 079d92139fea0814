"""txd's Ingest caps: one upload too many or too many spooled bytes is RESOURCE_EXHAUSTED, and a stream id
that could name a path ('..') is refused before anything is spooled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc import aio

from semcom.pb.v1 import transmitter_pb2, transmitter_pb2_grpc
from semcom.record import Record
from tests.fixtures.waiting import eventually
from txd.app import Txd
from txd.config import TxdConfig


@pytest_asyncio.fixture
async def txd(tmp_path: Path) -> AsyncIterator[Txd]:
    daemon = Txd(
        TxdConfig.model_validate(
            {
                "server": {"listen": "127.0.0.1:0"},
                "metrics": {"enabled": False},
                "link": {"upstream": "127.0.0.1:9", "flush_timeout_s": 0.2},
                "clips": {"dir": str(tmp_path / "clips")},
                "ingest": {"max_uploads": 1, "max_spool_bytes": 100_000},
                "perception": None,
            }
        )
    )
    await daemon.start()
    yield daemon
    await daemon.stop(0.5)


def _header(stream_id: str) -> transmitter_pb2.IngestRequest:
    return transmitter_pb2.IngestRequest(header=transmitter_pb2.IngestHeader(stream_id=stream_id))


async def _parts(
    stream_id: str, chunks: int, release: asyncio.Event | None = None
) -> AsyncIterator[transmitter_pb2.IngestRequest]:
    yield _header(stream_id)
    for _ in range(chunks):
        yield transmitter_pb2.IngestRequest(chunk=b"\0" * 30_000)
    if release is not None:
        await release.wait()  # the uploader is slow: the call stays open


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


@pytest.mark.asyncio
async def test_one_upload_too_many_and_too_many_bytes_are_refused(txd: Txd) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{txd.port}") as ch:
        stub = transmitter_pb2_grpc.TransmitterStub(ch)
        release = asyncio.Event()
        slow = asyncio.ensure_future(stub.Ingest(_parts("slow", 1, release), timeout=30))
        await eventually(lambda: txd.core._uploads == 1 and txd.core.streams["slow"].bytes_received > 0)
        code = await _code(stub.Ingest(_parts("second", 1), timeout=30))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "second" not in txd.core.streams  # refused before it was opened
        release.set()
        await _code(slow)  # 30 kB of zeros is no video: INVALID_ARGUMENT, the slot is free again
        assert txd.core._uploads == 0
        # 4 x 30 kB > max_spool_bytes: refused while spooling, the spool file removed, the stream failed.
        code = await _code(stub.Ingest(_parts("big", 4), timeout=30))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert txd.core.streams["big"].state == "failed"
        assert not list(txd.clips.incoming.iterdir())


@pytest.mark.asyncio
async def test_stream_ids_that_could_name_a_path_are_refused(txd: Txd) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{txd.port}") as ch:
        stub = transmitter_pb2_grpc.TransmitterStub(ch)
        for bad in ("..", "../etc", "a/b", "<img src=x onerror=alert(1)>", "x" * 65):
            code = await _code(stub.Ingest(_parts(bad, 1), timeout=30))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, bad
            rec = Record("person/1", bad, 1, 0, 1.7e9, 1, {"gender": "male"})
            request = transmitter_pb2.AnnounceRequest(record=rec.to_pb())
            assert await _code(stub.Announce(request, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
        assert not list(txd.clips.incoming.iterdir())
        assert sorted(p.name for p in txd.clips.root.iterdir() if not p.name.startswith(".")) == []
