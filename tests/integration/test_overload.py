"""rxd under a query that will not finish: indexing goes on (queries have threads of their own), the query
ends at its time budget (DEADLINE_EXCEEDED), and queries beyond query.max_pending are refused at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc import aio
from numpy.typing import NDArray

from rxd.app import Rxd
from rxd.config import RxdConfig
from semcom.launch import free_port
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc
from tests.conftest import shared_embedder
from tests.fixtures.link import PEOPLE, announce_all
from tests.fixtures.waiting import eventually
from txd.app import Txd
from txd.config import TxdConfig

STUCK = "a person who is stuck"


class GatedEncoder:
    """The real embedder, except that a text containing STUCK waits until `gate` opens."""

    def __init__(self) -> None:
        self.inner = shared_embedder()
        self.gate = threading.Event()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if any(STUCK in t for t in texts):
            self.gate.wait(30)
        return self.inner.encode(texts)


@dataclass
class Pair:
    rxd: Rxd
    txd: Txd
    encoder: GatedEncoder


@pytest_asyncio.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    encoder = GatedEncoder()
    txd_port = free_port()
    rxd = Rxd(
        RxdConfig.model_validate(
            {
                "server": {"listen": "127.0.0.1:0"},
                "metrics": {"enabled": False},
                "http": {"enabled": False},
                "index": {"path": str(tmp_path / "index.db")},
                "transmitter": {"address": f"127.0.0.1:{txd_port}"},
                "query": {"timeout_s": 0.5, "workers": 1, "max_pending": 1},
            }
        ),
        embedder=encoder,
    )
    txd = Txd(
        TxdConfig.model_validate(
            {
                "server": {"listen": f"127.0.0.1:{txd_port}"},
                "metrics": {"enabled": False},
                "link": {"upstream": f"127.0.0.1:{rxd.port}", "mcs": "bytes", "batch_delay_s": 0.01},
                "clips": {"dir": str(tmp_path / "clips")},
            }
        )
    )
    await rxd.start()
    await txd.start()
    yield Pair(rxd, txd, encoder)
    encoder.gate.set()
    await txd.stop(1.0)
    await rxd.stop(1.0)


@pytest.mark.asyncio
async def test_a_stuck_query_neither_blocks_indexing_nor_its_caller(pair: Pair) -> None:
    address = f"127.0.0.1:{pair.rxd.port}"
    async with aio.insecure_channel(address) as ch:
        stub = receiver_pb2_grpc.ReceiverStub(ch)
        stuck = asyncio.ensure_future(stub.Query(receiver_pb2.QueryRequest(text=STUCK), timeout=10))
        await eventually(lambda: pair.rxd.core.queries_pending == 1)
        # The one allowed query is in hand: another is refused at once, not queued.
        with pytest.raises(aio.AioRpcError) as refused:
            await stub.Query(receiver_pb2.QueryRequest(text="a woman in red"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Records still flow in and are indexed while the query thread is held.
        await announce_all(f"127.0.0.1:{pair.txd.port}", "busy", PEOPLE)
        await eventually(lambda: pair.rxd.engine.count() == len(PEOPLE), timeout_s=20)
        assert not pair.encoder.gate.is_set() and not stuck.done()
        # The stuck query's caller hears at its budget (0.5 s), long before the thread would finish.
        with pytest.raises(aio.AioRpcError) as late:
            await stuck
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "query.timeout_s" in (late.value.details() or "")
        # Its thread still works on it, so it still holds its place: the backlog stays bounded.
        with pytest.raises(aio.AioRpcError) as still:
            await stub.Query(receiver_pb2.QueryRequest(text="a woman in red"), timeout=10)
        assert still.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        stats = pair.rxd.core.stats()
        assert stats["queries_refused"] == 2 and stats["queries_timed_out"] == 1
        # Once the thread is free again, queries are answered as before.
        pair.encoder.gate.set()
        await eventually(lambda: pair.rxd.core.queries_pending == 0)
        reply = await stub.Query(receiver_pb2.QueryRequest(text="a woman in a red top"), timeout=10)
        assert reply.hits
