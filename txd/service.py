"""The Transmitter gRPC service: converts protobuf at the edge and calls the transmitter core."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from grpc import aio

from semcom.errors import InvalidInput
from semcom.pb.v1 import common_pb2, transmitter_pb2, transmitter_pb2_grpc
from semcom.record import Record
from txd.clips import read_chunks
from txd.core import StreamState, TransmitterCore, Upload

log = logging.getLogger(__name__)

Context = aio.ServicerContext[object, object]


class TransmitterService(transmitter_pb2_grpc.TransmitterServicer):
    def __init__(self, core: TransmitterCore) -> None:
        self.core = core

    async def Announce(
        self, request: transmitter_pb2.AnnounceRequest, context: Context
    ) -> transmitter_pb2.AnnounceReply:
        if not request.HasField("record"):
            raise InvalidInput("AnnounceRequest.record is missing")
        rec = Record.from_pb(request.record)
        if not rec.stream_id:
            raise InvalidInput("record.stream_id is empty")
        submitted = await self.core.submit(rec, wait=False)
        log.info(
            "announced stream_id=%s record_id=%d track_id=%d",
            submitted.stream_id,
            submitted.record_id,
            submitted.track_id,
        )
        schema = self.core.schemas.get(submitted.schema_id)
        return transmitter_pb2.AnnounceReply(record_id=submitted.record_id, info_bits=schema.record_bits)

    async def Ingest(
        self, request_iterator: AsyncIterator[transmitter_pb2.IngestRequest], context: Context
    ) -> transmitter_pb2.IngestReply:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput("the first IngestRequest must carry the header")
        header = first.header
        upload = Upload(header.stream_id, header.location_id, header.start_time_s, header.container)
        done = await self.core.ingest(upload, _chunks(request_iterator))
        return transmitter_pb2.IngestReply(
            stream_id=done.stream_id,
            bytes_received=done.bytes_received,
            frames_decoded=done.frames_decoded,
            duration_s=done.duration_s,
            records_sent=done.records_sent,
            frames_analysed=done.frames_analysed,
            keyframes=done.keyframes,
        )

    async def FetchClip(
        self, request: common_pb2.FetchClipRequest, context: Context
    ) -> AsyncIterator[common_pb2.ClipChunk]:
        async with self.core.clip(request.stream_id, request.t0_s, request.t1_s) as path:
            size = path.stat().st_size
            first = True
            for data in read_chunks(path):
                if first:
                    yield common_pb2.ClipChunk(
                        container="mp4", t0_s=request.t0_s, t1_s=request.t1_s, total_bytes=size, data=data
                    )
                    first = False
                else:
                    yield common_pb2.ClipChunk(data=data)

    async def FetchKeyframe(
        self, request: transmitter_pb2.FetchKeyframeRequest, context: Context
    ) -> transmitter_pb2.KeyframeImage:
        thumb = self.core.keyframe(request.stream_id, request.record_id)
        return transmitter_pb2.KeyframeImage(
            stream_id=request.stream_id,
            record_id=request.record_id,
            content_type=thumb.content_type,
            width=thumb.width,
            height=thumb.height,
            data=thumb.data,
        )

    async def Status(
        self, request: transmitter_pb2.StatusRequest, context: Context
    ) -> transmitter_pb2.TransmitterStatus:
        return transmitter_status(self.core)


def transmitter_status(core: TransmitterCore) -> transmitter_pb2.TransmitterStatus:
    """The link and streams of this txd, as Status answers and as the backhaul reports them to rxd."""
    stats = core.link_stats
    return transmitter_pb2.TransmitterStatus(
        streams=[_stream_status(s, stats.per_stream_sent.get(s.stream_id, 0)) for s in core.streams.values()],
        records_queued=stats.records_queued,
        records_acked=stats.records_acked,
        bursts_sent=stats.bursts_sent,
        info_bits_sent=stats.info_bits_sent,
        channel_symbols_sent=stats.channel_symbols_sent,
        task_schema_id=stats.task_schema_id,
        link_up=stats.link_up,
        mcs=core.link.mcs,
        records_lost=stats.records_lost,
        last_snr_db=stats.last_snr_db,
        site_id=core.link.cfg.site_id,
    )


async def _chunks(parts: AsyncIterator[transmitter_pb2.IngestRequest]) -> AsyncIterator[bytes]:
    async for part in parts:
        if part.WhichOneof("part") != "chunk":
            raise InvalidInput("only the first IngestRequest may carry a header")
        yield part.chunk


def _stream_status(s: StreamState, records_sent: int) -> transmitter_pb2.StreamStatus:
    run = s.run
    return transmitter_pb2.StreamStatus(
        stream_id=s.stream_id,
        location_id=s.location_id,
        state=s.state,
        bytes_received=s.bytes_received,
        frames_decoded=run.decode.frames_decoded if run else s.frames_decoded,
        duration_s=s.duration_s or (run.decode.duration_s if run else 0.0),
        records_sent=records_sent,
        error=s.error,
        frames_total=run.decode.frames_total if run else 0,
        frames_analysed=run.times.frames_analysed if run else 0,
        keyframes=run.times.views_understood if run else 0,
        decode_fps=run.fps if run else 0.0,
    )
