"""txd alone on loopback: streams share one set of models, and a dead backend drains the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semcom.config import load_config
from tests.fixtures.txd import BrightnessUnderstander, ingest
from txd.app import Txd
from txd.config import TxdConfig

pytestmark = pytest.mark.slow


async def start_txd(tmp: Path, understander: BrightnessUnderstander, extra: Sequence[str] = ()) -> Txd:
    """A txd whose link points at a closed port: records queue, nothing is acknowledged."""
    cfg = load_config(
        TxdConfig,
        overrides=[
            "server.listen=127.0.0.1:0",
            "link.upstream=127.0.0.1:9",
            "link.flush_timeout_s=0.2",
            f"clips.dir={tmp / 'clips'}",
            "perception.analysis_fps=10",
            *extra,
        ],
    )
    txd = Txd(cfg, understander=understander)
    await txd.start()
    return txd


@pytest_asyncio.fixture
async def txd(tmp_path: Path) -> AsyncIterator[Txd]:
    daemon = await start_txd(tmp_path, BrightnessUnderstander())
    yield daemon
    await daemon.stop(1.0)


@pytest.mark.asyncio
async def test_uploads_at_once_share_one_set_of_models(txd: Txd, shared_data: Path) -> None:
    address = f"127.0.0.1:{txd.port}"
    video = shared_data / "videos" / "tud_campus.mp4"
    replies = await asyncio.gather(*(ingest(address, video, f"cam-{k}") for k in range(3)))
    models = await txd.core.models()
    assert models is await txd.core.models()  # loaded once, by whichever stream came first
    # Each stream keeps its own tracks: the same video gives the same analysis in every one.
    assert {(r.frames_analysed, r.keyframes, r.records_sent) for r in replies} == {
        (29, replies[0].keyframes, replies[0].records_sent)
    }
    assert replies[0].records_sent >= 3
    stats = models.detect.stats
    assert stats.calls == 3 * 29
    # One detection runs at a time; frames of the streams that wait meanwhile go into one call.
    assert stats.batches < stats.calls and stats.largest >= 2
    assert txd.link.stats.records_queued == sum(r.records_sent for r in replies)


@pytest.mark.asyncio
async def test_a_dead_backend_fails_the_call_and_drains_the_daemon(tmp_path: Path, shared_data: Path) -> None:
    missing = tmp_path / "no-such-graph.pb"
    txd = await start_txd(
        tmp_path,
        BrightnessUnderstander(),
        ["perception.detector.kind=ssdlite", f"perception.detector.model_path={missing}"],
    )
    address = f"127.0.0.1:{txd.port}"
    try:
        with pytest.raises(aio.AioRpcError) as err:
            await ingest(address, shared_data / "videos" / "tud_campus.mp4", "cam")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "SSDLite model file missing" in (err.value.details() or "")
        dead = await asyncio.wait_for(asyncio.shield(txd.grpc.dead), 5)
        assert str(missing) in str(dead)
        async with aio.insecure_channel(address) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert txd.core.streams["cam"].state == "failed"
    finally:
        await txd.stop(1.0)
