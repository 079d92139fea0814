"""The Transmitter gRPC service: converts protobuf at the edge and hands plain values to the pipeline."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path

from grpc import aio

from semcom.codec.frame import check_time_s
from semcom.errors import InvalidInput
from semcom.pb.v1 import common_pb2, transmitter_pb2, transmitter_pb2_grpc
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry
from txd.clips import ClipStore, read_chunks
from txd.config import TxdConfig
from txd.link import LinkSender
from txd.pipeline import StreamPipeline, StreamRun
from txd.understanding.base import Understander, Understanding
from txd.video import PacketSink, VideoInfo, decode_info, probe

log = logging.getLogger(__name__)

Context = aio.ServicerContext[object, object]


@dataclass
class StreamState:
    """One stream as Status reports it. `state`: "receiving" (video coming in), "done", "failed"; a pulled
    source also "connecting" and "retrying" (waiting to reconnect after `error`)."""

    stream_id: str
    location_id: int
    state: str = "receiving"
    bytes_received: int = 0
    frames_decoded: int = 0
    duration_s: float = 0.0
    error: str = ""
    run: StreamRun | None = None  # live analysis counters while the stream is being analysed


class TransmitterService(transmitter_pb2_grpc.TransmitterServicer):
    def __init__(
        self,
        cfg: TxdConfig,
        link: LinkSender,
        schemas: SchemaRegistry,
        clips: ClipStore,
        executor: Executor,
        understander: Understander | None = None,
    ) -> None:
        self.cfg = cfg
        self.clips = clips
        self.understander = understander
        self.link = link
        self.schemas = schemas
        self.executor = executor
        self.streams: dict[str, StreamState] = {}
        self._next_record_id: dict[str, int] = defaultdict(lambda: 1)
        self._source_ids = frozenset(source.stream_id for source in cfg.sources)

    # -- Announce -----------------------------------------------------------------------------------------
    async def Announce(
        self, request: transmitter_pb2.AnnounceRequest, context: Context
    ) -> transmitter_pb2.AnnounceReply:
        if not request.HasField("record"):
            raise InvalidInput("AnnounceRequest.record is missing")
        rec = Record.from_pb(request.record)
        if not rec.stream_id:
            raise InvalidInput("record.stream_id is empty")
        schema = self.schemas.get(rec.schema_id or self.link.stats.task_schema_id)
        published = self.publish(rec, schema)
        log.info(
            "announced stream_id=%s record_id=%d track_id=%d",
            rec.stream_id,
            published.record_id,
            rec.track_id,
        )
        return transmitter_pb2.AnnounceReply(record_id=published.record_id, info_bits=schema.record_bits)

    def publish(self, rec: Record, schema: Schema) -> Record:
        """Validate a record, give it the stream's next id and queue it for the link."""
        # Ids are assigned here so that each stream's records are consecutive, which the codec relies on.
        record_id = self._next_record_id[rec.stream_id]
        rec = Record(
            schema_id=schema.id,
            stream_id=rec.stream_id,
            track_id=rec.track_id,
            record_id=record_id,
            time_s=rec.time_s or time.time(),
            location_id=rec.location_id,
            fields=schema.normalise(rec.fields),
            confidence=rec.confidence,
        )
        schema.validate(rec)
        check_time_s(rec)
        self.link.submit(rec)
        self._next_record_id[rec.stream_id] = record_id + 1
        return rec

    # -- Ingest -------------------------------------------------------------------------------------------
    async def Ingest(
        self, request_iterator: AsyncIterator[transmitter_pb2.IngestRequest], context: Context
    ) -> transmitter_pb2.IngestReply:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput("the first IngestRequest must carry the header")
        header = first.header
        stream_id = header.stream_id or uuid.uuid4().hex[:12]
        if stream_id in self._source_ids:
            raise InvalidInput(f"stream {stream_id!r} is a source txd pulls itself; ingest under another id")
        if stream_id in self.streams and self.streams[stream_id].state == "receiving":
            raise InvalidInput(f"stream {stream_id!r} is already being ingested")
        state = StreamState(stream_id, header.location_id or self.cfg.site.location_id)
        self.streams[stream_id] = state
        spool = self.clips.incoming_path(stream_id)
        start_time_s = header.start_time_s or time.time()
        try:
            await self._receive(request_iterator, spool, state)
            loop = asyncio.get_running_loop()
            if not self.analyses:
                info = await loop.run_in_executor(self.executor, decode_info, spool, header.container)
            else:
                head = await loop.run_in_executor(self.executor, probe, spool, header.container)
                run = await self.analyse(spool, state, start_time_s, container=header.container)
                info = replace(head, frames=run.decode.frames_decoded, duration_s=run.decode.duration_s)
            self.clips.add(
                stream_id,
                spool,
                start_time_s=start_time_s,
                duration_s=info.duration_s,
                codec=info.codec,
                container=info.container,
            )
        except Exception as err:
            state.state, state.error = "failed", str(err)
            log.warning("ingest failed stream_id=%s: %s", stream_id, err)
            raise
        finally:
            spool.unlink(missing_ok=True)  # gone already when the clip store took it
        self._finish(state, info)
        times = state.run.times if state.run is not None else None
        return transmitter_pb2.IngestReply(
            stream_id=stream_id,
            bytes_received=state.bytes_received,
            frames_decoded=state.frames_decoded,
            duration_s=state.duration_s,
            records_sent=times.records if times else 0,
            frames_analysed=times.frames_analysed if times else 0,
            keyframes=times.keyframes if times else 0,
        )

    @property
    def analyses(self) -> bool:
        """Whether video is analysed (perception and understanding configured), or only decoded and stored."""
        return self.cfg.perception is not None and self.understander is not None

    async def analyse(
        self,
        source: str | Path,
        state: StreamState,
        start_time_s: float,
        *,
        container: str = "",
        options: Mapping[str, str] | None = None,
        timeout_s: float | tuple[float, float] = 30.0,
        sink: PacketSink | None = None,
        live: bool = False,
    ) -> StreamRun:
        """Run perception and understanding over a video file or URL; records go to the link as they come,
        timed `start_time_s` + seconds from the video's first frame. `sink` gets the demuxed packets; a
        `live` source skips frames when analysis lags instead of slowing the source down."""
        assert self.cfg.perception is not None and self.understander is not None
        schema = self.schemas.get(self.link.stats.task_schema_id)

        async def publish(track_id: int, time_s: float, seen: Understanding) -> None:
            await self.link.room()
            rec = Record(
                schema_id=schema.id,
                stream_id=state.stream_id,
                track_id=track_id,
                record_id=0,
                time_s=start_time_s + time_s,
                location_id=state.location_id,
                fields=seen.fields,
                confidence=seen.confidence,
            )
            self.publish(rec, schema)

        pipeline = StreamPipeline(
            # The decoder samples the analysis rate, so perception itself analyses every frame it is given.
            self.cfg.perception.model_copy(update={"analysis_fps": None}).build(),
            self.understander,
            schema,
            publish,
            self.executor,
            analysis_fps=self.cfg.perception.analysis_fps,
            drop_when_behind=live,
        )
        state.run = pipeline.run_state
        await pipeline.run(source, container, options=options, timeout_s=timeout_s, sink=sink)
        t = pipeline.run_state.times
        log.info(
            "analysed stream_id=%s frames=%d keyframes=%d records=%d dropped=%d (decode %.1f s, "
            "perceive %.1f s, understand %.1f s)",
            state.stream_id,
            t.frames_analysed,
            t.keyframes,
            t.records,
            t.frames_dropped,
            t.seconds["decode"],
            t.seconds["perceive"],
            t.seconds["understand"],
        )
        return pipeline.run_state

    async def _receive(
        self, parts: AsyncIterator[transmitter_pb2.IngestRequest], spool: Path, state: StreamState
    ) -> None:
        spool.parent.mkdir(parents=True, exist_ok=True)
        with spool.open("wb") as out:
            async for part in parts:
                if part.WhichOneof("part") != "chunk":
                    raise InvalidInput("only the first IngestRequest may carry a header")
                state.bytes_received += len(part.chunk)
                if state.bytes_received > self.cfg.ingest.max_stream_bytes:
                    raise InvalidInput(
                        f"stream exceeds ingest.max_stream_bytes ({self.cfg.ingest.max_stream_bytes} bytes)"
                    )
                out.write(part.chunk)
        if state.bytes_received == 0:
            raise InvalidInput("the stream carried no video bytes")

    def _finish(self, state: StreamState, info: VideoInfo) -> None:
        state.state = "done"
        state.frames_decoded = info.frames
        state.duration_s = info.duration_s
        log.info(
            "ingested stream_id=%s %s/%s %dx%d frames=%d duration_s=%.1f",
            state.stream_id,
            info.container,
            info.codec,
            info.width,
            info.height,
            info.frames,
            info.duration_s,
        )

    # -- FetchClip, Status --------------------------------------------------------------------------------
    async def FetchClip(
        self, request: common_pb2.FetchClipRequest, context: Context
    ) -> AsyncIterator[common_pb2.ClipChunk]:
        segments = self.clips.find_span(request.stream_id, request.t0_s, request.t1_s)
        with tempfile.TemporaryDirectory(dir=self.clips.incoming) as tmp:
            out = Path(tmp) / "clip.mp4"
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self.clips.extract, segments, request.t0_s, request.t1_s, out
            )
            size = out.stat().st_size
            log.info(
                "clip stream_id=%s %.1f..%.1f: %d bytes", request.stream_id, request.t0_s, request.t1_s, size
            )
            first = True
            for data in read_chunks(out):
                if first:
                    yield common_pb2.ClipChunk(
                        container="mp4", t0_s=request.t0_s, t1_s=request.t1_s, total_bytes=size, data=data
                    )
                    first = False
                else:
                    yield common_pb2.ClipChunk(data=data)

    async def Status(
        self, request: transmitter_pb2.StatusRequest, context: Context
    ) -> transmitter_pb2.TransmitterStatus:
        stats = self.link.stats
        return transmitter_pb2.TransmitterStatus(
            streams=[
                transmitter_pb2.StreamStatus(
                    stream_id=s.stream_id,
                    location_id=s.location_id,
                    state=s.state,
                    bytes_received=s.bytes_received,
                    frames_decoded=s.run.decode.frames_decoded if s.run else s.frames_decoded,
                    duration_s=s.duration_s or (s.run.decode.duration_s if s.run else 0.0),
                    records_sent=stats.per_stream_sent.get(s.stream_id, 0),
                    error=s.error,
                    frames_total=s.run.decode.frames_total if s.run else 0,
                    frames_analysed=s.run.times.frames_analysed if s.run else 0,
                    keyframes=s.run.times.keyframes if s.run else 0,
                    decode_fps=s.run.fps if s.run else 0.0,
                )
                for s in self.streams.values()
            ],
            records_queued=stats.records_queued,
            records_acked=stats.records_acked,
            bursts_sent=stats.bursts_sent,
            info_bits_sent=stats.info_bits_sent,
            channel_symbols_sent=stats.channel_symbols_sent,
            task_schema_id=stats.task_schema_id,
            link_up=stats.link_up,
            mcs=self.link.mcs,
            records_lost=stats.records_lost,
            last_snr_db=stats.last_snr_db,
        )
