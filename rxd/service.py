"""The Link and Receiver gRPC services of rxd: protobuf at the edge, the receiver core inside."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace

from grpc import aio

from rxd.core import ReceiverCore
from rxd.receiver import BurstReceiver
from rxd.retrieval.engine import Hit
from rxd.sites import SiteBook
from semcom.errors import InvalidInput, Unauthenticated
from semcom.ids import is_valid_id, preview
from semcom.link.messages import AckStatus, Feedback
from semcom.link.site import check_burst_site, site_from_metadata
from semcom.pb.v1 import (
    common_pb2,
    link_pb2,
    link_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    transmitter_pb2,
)
from semcom.record import Record

log = logging.getLogger(__name__)

Context = aio.ServicerContext[object, object]


def filter_values(filters: Iterable[receiver_pb2.FieldFilter]) -> dict[str, list[str]]:
    """Each filter's values: `value` split at "|", then `values`; a field named twice gathers both."""
    out: dict[str, list[str]] = {}
    for f in filters:
        given = [*(f.value.split("|") if f.value else []), *f.values]
        out.setdefault(f.name, []).extend(v for v in given if v not in out.get(f.name, []))
    return out


class LinkService(link_pb2_grpc.LinkServicer):
    """The receiving end of the semantic link: the site handshake (call metadata, checked before anything
    else), the task requirement, then one Feedback per Burst, each counted under its site."""

    def __init__(self, receiver: BurstReceiver, task_schema_id: str, sites: SiteBook | None = None) -> None:
        self.receiver = receiver
        self.task_schema_id = task_schema_id
        self.sites = sites or SiteBook()

    async def Transmit(
        self, request_iterator: AsyncIterator[link_pb2.Burst], context: Context
    ) -> AsyncIterator[link_pb2.Feedback]:
        site_id = site_from_metadata(context.invocation_metadata())
        if site_id and self.receiver.keys and site_id not in self.receiver.keys:
            raise Unauthenticated(f"site {site_id!r} holds no key here (link.site_keys)")
        self.sites.link_opened(site_id)
        try:
            yield link_pb2.Feedback(task=link_pb2.TaskRequirement(schema_id=self.task_schema_id))
            async for burst in request_iterator:
                yield await self._handle(site_id, burst)
        finally:
            self.sites.link_closed(site_id)

    async def _handle(self, site_id: str, burst: link_pb2.Burst) -> link_pb2.Feedback:
        h = burst.header
        why = check_burst_site(site_id, h.site_id)
        if why is None and h.site_id and not is_valid_id(h.site_id):
            why = f"site_id {preview(h.site_id)} is not valid"
        if why is None:
            try:
                self.sites.check(h.site_id, h.stream_id)
            except InvalidInput as err:
                why = str(err)
        if why is not None:
            log.warning("burst stream_id=%.64r sequence=%d refused: %s", h.stream_id, h.sequence, why)
            self._count(site_id, burst, None)  # under the site that opened the call, never a made-up one
            return Feedback(
                stream_id=h.stream_id, sequence=h.sequence, status=AckStatus.REJECTED, detail=why
            ).to_pb()
        stream = self.receiver.streams.get(h.stream_id)
        before = stream.bursts_ok if stream is not None else 0
        fb = await self.receiver.handle(burst)
        self._count(h.site_id, burst, fb, new=fb.quality.bursts_ok > before)
        return fb

    def _count(
        self, site_id: str, burst: link_pb2.Burst, fb: link_pb2.Feedback | None, *, new: bool = False
    ) -> None:
        ok = fb is not None and fb.status == link_pb2.ACK_STATUS_OK
        h = burst.header
        self.sites.count(
            site_id,
            h.stream_id,
            ok=ok,
            new=new,
            records=fb.records_accepted if ok and fb is not None else h.record_count,
            info_bits=h.info_bits,
            payload_bytes=len(burst.payload.data),
        )


class ReceiverService(receiver_pb2_grpc.ReceiverServicer):
    def __init__(self, core: ReceiverCore) -> None:
        self.core = core

    async def Query(self, request: receiver_pb2.QueryRequest, context: Context) -> receiver_pb2.QueryReply:
        q = self.core.query_from(
            request.text,
            filter_values(request.filters),
            top_k=request.top_k,
            stream_id=request.stream_id,
            location_ids=list(request.location_ids),
            t0_s=request.time_range.t0_s,
            t1_s=request.time_range.t1_s,
            schema_id=request.schema_id,
        )
        q = replace(q, min_probability=request.min_probability)
        result = await (self.core.query_site(q, request.site_id) if request.site_id else self.core.query(q))
        return receiver_pb2.QueryReply(
            hits=[self._hit(h.record, h.description, h.score, h) for h in result.hits],
            parsed_slots=[
                receiver_pb2.FieldFilter(name=k, value="|".join(v), values=v) for k, v in result.slots.items()
            ],
            note=result.note,
        )

    async def GetRecord(self, request: receiver_pb2.GetRecordRequest, context: Context) -> receiver_pb2.Hit:
        found = await self.core.get(request.stream_id, request.record_id)
        return self._hit(found.record, found.description, 0.0, None)

    def _hit(self, rec: Record, description: str, score: float, hit: Hit | None) -> receiver_pb2.Hit:
        window = self.core.clip_window(rec.stream_id, rec.time_s)
        return receiver_pb2.Hit(
            record=rec.to_pb(),
            description=description,
            score=score,
            matched_slots=list(hit.matched_slots) if hit else [],
            unknown_slots=list(hit.unknown_slots) if hit else [],
            contradicted_slots=list(hit.contradicted_slots) if hit else [],
            probability=hit.probability if hit else 0.0,
            slot_scores=[
                receiver_pb2.SlotScore(
                    name=s.name, value=s.value, confidence=s.confidence or 0.0, probability=s.probability
                )
                for s in (hit.slot_scores if hit else ())
            ],
            clip=common_pb2.ClipRef(stream_id=window.stream_id, t0_s=window.t0_s, t1_s=window.t1_s),
        )

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
                bursts_learned=s.bursts_learned,
                bursts_model_refused=s.bursts_model_refused,
                records_conflicting=s.records_conflicting,
                bursts_unauthenticated=s.bursts_unauthenticated,
            )
            for sid, s in sorted(self.core.receiver.streams.items())
        ]
        totals = self.core.stats()
        return receiver_pb2.ReceiverStats(
            records_indexed=totals["records_indexed"],
            records_failed=totals["records_failed"],
            bursts_ok=totals["bursts_ok"],
            bursts_failed=totals["bursts_failed"],
            clip_bytes_fetched=self.core.clip_bytes,
            streams=streams,
            keyframe_bytes_fetched=self.core.keyframe_bytes,
        )

    async def FetchClip(
        self, request: common_pb2.FetchClipRequest, context: Context
    ) -> AsyncIterator[common_pb2.ClipChunk]:
        async for chunk in self.core.fetch_clip_chunks(request):
            yield chunk

    async def FetchKeyframe(
        self, request: transmitter_pb2.FetchKeyframeRequest, context: Context
    ) -> transmitter_pb2.KeyframeImage:
        image = await self.core.fetch_keyframe(request.stream_id, request.record_id)
        return transmitter_pb2.KeyframeImage(
            stream_id=request.stream_id,
            record_id=request.record_id,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            data=image.data,
        )
