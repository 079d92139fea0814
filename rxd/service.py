"""The Link and Receiver gRPC services of rxd: protobuf at the edge, plain values inside."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from grpc import aio

from rxd.config import RxdConfig
from rxd.index import IndexedRecord, RecordFilter, RecordIndex
from rxd.receiver import BurstReceiver
from semcom.errors import InvalidInput, NotFound, NotImplementedYet
from semcom.pb.v1 import (
    common_pb2,
    link_pb2,
    link_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    transmitter_pb2_grpc,
)
from semcom.schema import SchemaRegistry

log = logging.getLogger(__name__)

Context = aio.ServicerContext[object, object]


class LinkService(link_pb2_grpc.LinkServicer):
    """The receiving end of the semantic link: one Feedback per Burst, plus the task requirement first."""

    def __init__(self, receiver: BurstReceiver, task_schema_id: str) -> None:
        self.receiver = receiver
        self.task_schema_id = task_schema_id

    async def Transmit(
        self, request_iterator: AsyncIterator[link_pb2.Burst], context: Context
    ) -> AsyncIterator[link_pb2.Feedback]:
        yield link_pb2.Feedback(task=link_pb2.TaskRequirement(schema_id=self.task_schema_id))
        async for burst in request_iterator:
            yield await self.receiver.handle(burst)


class ReceiverService(receiver_pb2_grpc.ReceiverServicer):
    def __init__(
        self,
        cfg: RxdConfig,
        schemas: SchemaRegistry,
        index: RecordIndex,
        receiver: BurstReceiver,
        transmitter: transmitter_pb2_grpc.TransmitterAsyncStub,
    ) -> None:
        self.cfg = cfg
        self.schemas = schemas
        self.index = index
        self.receiver = receiver
        self.transmitter = transmitter
        self.clip_bytes = 0

    async def Query(self, request: receiver_pb2.QueryRequest, context: Context) -> receiver_pb2.QueryReply:
        schema = self.schemas.get(request.schema_id or self.cfg.task.schema_id)
        if request.top_k > self.cfg.query.max_top_k:
            raise InvalidInput(f"top_k {request.top_k} exceeds the limit of {self.cfg.query.max_top_k}")
        if request.text.strip():
            raise NotImplementedYet(
                "free-text queries need the query parser; send exact field filters instead"
            )
        if not request.filters:
            raise InvalidInput(
                f"empty query: give text or field filters (fields: {', '.join(schema.field_names)})"
            )
        slots: dict[str, str] = {}
        for f in request.filters:
            spec = schema.field(f.name)
            spec.index(f.value)
            slots[f.name] = f.value
        flt = RecordFilter(
            schema_id=schema.id,
            fields=slots,
            stream_id=request.stream_id,
            location_ids=list(request.location_ids),
            t0_s=request.time_range.t0_s,
            t1_s=request.time_range.t1_s,
        )
        found = self.index.search(flt, request.top_k or self.cfg.query.default_top_k)
        return receiver_pb2.QueryReply(
            hits=[_hit(it, 1.0, sorted(slots)) for it in found],
            parsed_slots=[receiver_pb2.FieldFilter(name=k, value=v) for k, v in slots.items()],
        )

    async def GetRecord(self, request: receiver_pb2.GetRecordRequest, context: Context) -> receiver_pb2.Hit:
        found = self.index.get(request.stream_id, request.record_id)
        if found is None:
            raise NotFound(f"no record {request.record_id} in stream {request.stream_id!r}")
        return _hit(found, 0.0, [])

    async def Stats(self, request: receiver_pb2.StatsRequest, context: Context) -> receiver_pb2.ReceiverStats:
        streams = [
            receiver_pb2.StreamStats(
                stream_id=sid,
                bursts_ok=s.bursts_ok,
                bursts_failed=s.bursts_failed,
                records_indexed=s.records_indexed,
                records_failed=s.records_failed,
                info_bits=s.info_bits,
                channel_symbols=s.channel_symbols,
                payload_bytes=s.payload_bytes,
                snr_db=s.snr_db,
                airtime_s=s.airtime_s,
            )
            for sid, s in sorted(self.receiver.streams.items())
        ]
        return receiver_pb2.ReceiverStats(
            records_indexed=sum(s.records_indexed for s in streams),
            records_failed=sum(s.records_failed for s in streams),
            bursts_ok=sum(s.bursts_ok for s in streams),
            bursts_failed=sum(s.bursts_failed for s in streams),
            clip_bytes_fetched=self.clip_bytes,
            streams=streams,
        )

    async def FetchClip(
        self, request: common_pb2.FetchClipRequest, context: Context
    ) -> AsyncIterator[common_pb2.ClipChunk]:
        call = self.transmitter.FetchClip(request, timeout=self.cfg.transmitter.timeout_s)
        try:
            async for chunk in call:
                self.clip_bytes += len(chunk.data)
                yield chunk
        except aio.AioRpcError as err:
            # The transmitter's status (NOT_FOUND, UNIMPLEMENTED...) is the answer; UNAVAILABLE: no link.
            detail = err.details() or ""
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                detail = f"transmitter at {self.cfg.transmitter.address} unreachable: {detail}"
            await context.abort(err.code(), detail)


def _hit(item: IndexedRecord, score: float, matched: list[str]) -> receiver_pb2.Hit:
    rec = item.record
    return receiver_pb2.Hit(
        record=rec.to_pb(),
        description=item.description,
        score=score,
        matched_slots=matched,
        clip=common_pb2.ClipRef(stream_id=rec.stream_id, t0_s=rec.time_s - 2.0, t1_s=rec.time_s + 2.0),
    )
