"""The receiver's core, shared by its gRPC and HTTP faces: retrieval engine, link stats, clip fetches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from rxd.config import RxdConfig
from rxd.receiver import BurstReceiver
from rxd.retrieval.engine import Query, QueryResult, RetrievalEngine
from rxd.retrieval.store import StoredRecord
from semcom.errors import InvalidInput, NotFound, NotImplementedYet, PeerUnavailable, SemcomError
from semcom.pb.v1 import common_pb2, transmitter_pb2_grpc

log = logging.getLogger(__name__)

_STATUS_ERRORS: dict[grpc.StatusCode, type[SemcomError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNIMPLEMENTED: NotImplementedYet,
}


@dataclass(frozen=True)
class ClipWindow:
    """Where a record's clip starts and ends relative to the record's time."""

    stream_id: str
    t0_s: float
    t1_s: float


class ReceiverCore:
    def __init__(
        self,
        cfg: RxdConfig,
        engine: RetrievalEngine,
        receiver: BurstReceiver,
        executor: Executor,
        transmitter: transmitter_pb2_grpc.TransmitterAsyncStub,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.receiver = receiver
        self.executor = executor
        self.transmitter = transmitter
        self.clip_bytes = 0

    def query_from(
        self,
        text: str,
        filters: Mapping[str, str | Sequence[str]],
        *,
        top_k: int = 0,
        stream_id: str = "",
        location_ids: Sequence[int] = (),
        t0_s: float = 0.0,
        t1_s: float = 0.0,
        schema_id: str = "",
    ) -> Query:
        return Query(
            text=text,
            filters=dict(filters),
            schema_id=schema_id or self.cfg.task.schema_id,
            stream_id=stream_id,
            location_ids=tuple(location_ids),
            t0_s=t0_s,
            t1_s=t1_s,
            top_k=top_k or self.cfg.query.default_top_k,
        )

    async def query(self, q: Query) -> QueryResult:
        """The engine checks `q`; the text is parsed here first, so a model parser is awaited on the loop."""
        text = q.text.strip()
        # Parsed here: a model parser's request holds no worker that ingest needs.
        parsed = await self.engine.parser.aparse(text, self.engine.schemas.get(q.schema_id)) if text else None
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.engine.query, q, parsed)

    async def get(self, stream_id: str, record_id: int) -> StoredRecord:
        found = await asyncio.get_running_loop().run_in_executor(
            self.executor, self.engine.get, stream_id, record_id
        )
        if found is None:
            raise NotFound(f"no record {record_id} in stream {stream_id!r}")
        return found

    def clip_window(self, stream_id: str, time_s: float) -> ClipWindow:
        return ClipWindow(
            stream_id, time_s - self.cfg.query.clip_before_s, time_s + self.cfg.query.clip_after_s
        )

    def stats(self) -> dict[str, Any]:
        streams = self.receiver.streams
        return {
            "records_indexed": sum(s.records_indexed for s in streams.values()),
            "records_failed": sum(s.records_failed for s in streams.values()),
            "bursts_ok": sum(s.bursts_ok for s in streams.values()),
            "bursts_failed": sum(s.bursts_failed for s in streams.values()),
            "clip_bytes_fetched": self.clip_bytes,
            "index": self.engine.stats(),
        }

    async def fetch_clip(self, stream_id: str, t0_s: float, t1_s: float) -> AsyncIterator[bytes]:
        """The clip's MP4 bytes from txd over the backward channel, counted apart from the semantic link."""
        async for chunk in self.fetch_clip_chunks(
            common_pb2.FetchClipRequest(stream_id=stream_id, t0_s=t0_s, t1_s=t1_s)
        ):
            yield chunk.data

    async def fetch_clip_chunks(
        self, request: common_pb2.FetchClipRequest
    ) -> AsyncIterator[common_pb2.ClipChunk]:
        call = self.transmitter.FetchClip(request, timeout=self.cfg.transmitter.timeout_s)
        try:
            async for chunk in call:
                self.clip_bytes += len(chunk.data)
                yield chunk
        except aio.AioRpcError as err:
            # The transmitter's status is the answer; UNAVAILABLE means the backward channel is down, which
            # fails this fetch only: rxd's own backends are alive, so it must not drain (not BackendDead).
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise PeerUnavailable(
                    f"transmitter at {self.cfg.transmitter.address} unreachable: {err.details()}"
                ) from err
            raise _STATUS_ERRORS.get(err.code(), SemcomError)(err.details() or err.code().name) from err
