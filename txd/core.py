"""The transmitter's core, under its gRPC service and its pulled sources: streams, record ids, analysis on
the daemon's shared models, and submission of records to the link. No protobuf here."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path

from semcom.codec.frame import check_time_s
from semcom.errors import InvalidInput, Overloaded
from semcom.ids import check_stream_id
from semcom.link.outbox import Mark
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry
from txd.analysis import Crop, SharedModels, StreamAnalysis, StreamRun, StreamSpec
from txd.clips import ClipStore
from txd.config import TxdConfig
from txd.keyframes_store import KeyframeStore, Thumbnail
from txd.link import LinkSender, LinkStats
from txd.understanding.base import Understander
from txd.video import PacketSink, VideoInfo, decode_info, probe

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Upload:
    """What an uploader says about its video before the bytes: empty or zero values take the defaults (a new
    stream id, the site's location, the time the upload started)."""

    stream_id: str = ""
    location_id: int = 0
    start_time_s: float = 0.0
    container: str = ""


@dataclass(frozen=True)
class Ingested:
    """An upload once stored and analysed."""

    stream_id: str
    bytes_received: int
    frames_decoded: int
    duration_s: float
    records_sent: int
    frames_analysed: int
    keyframes: int


class TransmitterCore:
    """Owns the streams and their record ids; every record, announced or found by analysis, is validated,
    numbered and submitted to the link here. Models load once, at the first analysis, and serve every
    stream (see SharedModels)."""

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
        self.link = link
        self.schemas = schemas
        self.clips = clips
        self.executor = executor
        self.understander = understander
        self.streams: dict[str, StreamState] = {}
        self._drop_stale_spool()
        self._source_ids = frozenset(source.stream_id for source in cfg.sources)
        self._uploads = 0  # Ingest calls in progress (ingest.max_uploads)
        self._spooled: dict[str, int] = {}  # bytes each upload in progress holds on disk (max_spool_bytes)
        self._models: SharedModels | None = None
        self._loading = asyncio.Lock()
        self.keyframes = KeyframeStore(cfg.thumbnails)

    @property
    def analyses(self) -> bool:
        """Whether video is analysed (perception and understanding configured), or only decoded and stored."""
        return self.cfg.perception is not None and self.understander is not None

    @property
    def link_stats(self) -> LinkStats:
        return self.link.stats

    @property
    def task_schema(self) -> Schema:
        """The schema the receiver asked for (the site's default until it asks)."""
        return self.schemas.get(self.link.stats.task_schema_id)

    # -- records ------------------------------------------------------------------------------------------
    async def submit(self, rec: Record, *, wait: bool, mark: Mark | None = None) -> Record:
        """Validate a record, give it its stream's next id and submit it to the link; returns it numbered.

        `wait`: wait for room while the link is backed up (analysis), instead of raising Overloaded
        (Announce, whose caller retries). `mark`: which record of which upload it is, kept with it."""
        check_stream_id(rec.stream_id)
        schema = self.schemas.get(rec.schema_id or self.link.stats.task_schema_id)
        if wait:
            await self.link.room()
        # Ids are assigned here, with no await before the link takes the record, so that each stream's
        # records are consecutive, which the codec relies on. The link's outbox keeps the counter on disk
        # with the records, so a restarted txd never gives an id twice.
        record_id = self.link.next_record_id(rec.stream_id)
        rec = replace(
            rec,
            schema_id=schema.id,
            record_id=record_id,
            time_s=rec.time_s or time.time(),
            fields=schema.normalise(rec.fields),
        )
        schema.validate(rec)
        check_time_s(rec)
        self.link.submit(rec, mark)
        return rec

    def _drop_stale_spool(self) -> None:
        """Spool files of uploads a crash interrupted: their uploader saw the call fail and sends again."""
        for stale in self.clips.incoming.glob("*"):
            log.warning("removing the spool of an interrupted upload or clip: %s", stale.name)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    # -- streams ------------------------------------------------------------------------------------------
    def open_stream(
        self, stream_id: str, location_id: int | None, *, state: str = "receiving"
    ) -> StreamState:
        """Register a stream for Status; the site's location when `location_id` is None."""
        location = location_id if location_id is not None else self.cfg.site.location_id
        opened = StreamState(stream_id, location, state=state)
        self.streams[stream_id] = opened
        return opened

    async def ingest(self, upload: Upload, chunks: AsyncIterator[bytes]) -> Ingested:
        """Spool an uploaded video, analyse it (when configured) and keep it in the clip store."""
        stream_id = check_stream_id(upload.stream_id) if upload.stream_id else uuid.uuid4().hex[:12]
        if stream_id in self._source_ids:
            raise InvalidInput(f"stream {stream_id!r} is a source txd pulls itself; ingest under another id")
        if stream_id in self.streams and self.streams[stream_id].state == "receiving":
            raise InvalidInput(f"stream {stream_id!r} is already being ingested")
        if self._uploads >= self.cfg.ingest.max_uploads:
            raise Overloaded(f"{self._uploads} uploads in progress (ingest.max_uploads); retry later")
        self._uploads += 1
        self._spooled[stream_id] = 0
        state = self.open_stream(stream_id, upload.location_id or None)
        spool = self.clips.incoming_path(stream_id)
        start_time_s = upload.start_time_s or time.time()
        try:
            await self._spool(chunks, spool, state)
            start_time_s, resume = await self.resume_point(stream_id, spool, start_time_s)
            info = await self._ingest_file(spool, upload.container, state, start_time_s, resume)
            self.clips.add(
                stream_id,
                spool,
                start_time_s=start_time_s,
                duration_s=info.duration_s,
                codec=info.codec,
                container=info.container,
            )
            # Complete: its records are all in the outbox. Uploaded again, it is a new upload (as a user who
            # runs the same upload twice expects); only an upload a crash cut short is resumed.
            self.link.forget_upload(resume)
        except (Exception, asyncio.CancelledError) as err:
            # CancelledError too: an uploader that hangs up mid-stream must not leave the stream "receiving"
            # (its id refused as busy) until a restart; the stream id is free again at once.
            state.state = "failed"
            state.error = str(err) if not isinstance(err, asyncio.CancelledError) else "upload cancelled"
            log.warning("ingest failed stream_id=%s: %s", stream_id, state.error)
            raise
        finally:
            spool.unlink(missing_ok=True)  # gone already when the clip store took it
            self._uploads -= 1
            self._spooled.pop(stream_id, None)
        self._finish(state, info)
        times = state.run.times if state.run is not None else None
        return Ingested(
            stream_id=stream_id,
            bytes_received=state.bytes_received,
            frames_decoded=state.frames_decoded,
            duration_s=state.duration_s,
            records_sent=times.records if times else 0,
            frames_analysed=times.frames_analysed if times else 0,
            keyframes=times.views_understood if times else 0,
        )

    async def resume_point(self, stream_id: str, video: Path, start_time_s: float) -> tuple[float, str]:
        """An upload (or a file source) is known by its stream id and the SHA-256 of its bytes: analysed
        again before it completed (sent again after a crash cut it short; a file source after a restart)
        it keeps the start time it was first analysed with, and its analysis does not submit again the
        records it emitted before (see analyse)."""
        digest = await asyncio.get_running_loop().run_in_executor(self.executor, _sha256, video)
        key = f"{stream_id}/{digest}"
        return self.link.upload_start_s(key, start_time_s), key

    async def _ingest_file(
        self, spool: Path, container: str, state: StreamState, start_s: float, resume: str | None = None
    ) -> VideoInfo:
        loop = asyncio.get_running_loop()
        if not self.analyses:
            return await loop.run_in_executor(self.executor, decode_info, spool, container)
        head = await loop.run_in_executor(self.executor, probe, spool, container)
        run = await self.analyse(spool, state, start_s, container=container, resume=resume)
        return replace(head, frames=run.decode.frames_decoded, duration_s=run.decode.duration_s)

    async def _spool(self, chunks: AsyncIterator[bytes], spool: Path, state: StreamState) -> None:
        spool.parent.mkdir(parents=True, exist_ok=True)
        with spool.open("wb") as out:
            async for chunk in chunks:
                state.bytes_received += len(chunk)
                if state.bytes_received > self.cfg.ingest.max_stream_bytes:
                    raise InvalidInput(
                        f"stream exceeds ingest.max_stream_bytes ({self.cfg.ingest.max_stream_bytes} bytes)"
                    )
                self._spooled[state.stream_id] = state.bytes_received
                if sum(self._spooled.values()) > self.cfg.ingest.max_spool_bytes:
                    raise Overloaded(
                        f"uploads in progress would spool more than ingest.max_spool_bytes "
                        f"({self.cfg.ingest.max_spool_bytes} bytes); retry later"
                    )
                out.write(chunk)
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

    # -- analysis -----------------------------------------------------------------------------------------
    async def models(self) -> SharedModels:
        """The shared models, loaded by the first stream that needs them (off the event loop)."""
        async with self._loading:
            if self._models is None:
                assert self.cfg.perception is not None and self.understander is not None
                perception = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self.cfg.perception.models
                )
                self._models = SharedModels(perception, self.understander, self.executor)
                log.info("perception models loaded: %s", type(perception.detector).__name__)
            return self._models

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
        resume: str | None = None,
    ) -> StreamRun:
        """Run perception and understanding over a video file or URL; records are submitted as they come,
        timed `start_time_s` + seconds from the video's first frame. `sink` gets the demuxed packets; a
        `live` source skips frames when analysis lags instead of slowing the source down.

        `resume` names an upload (see resume_point): each record is submitted with its place in the
        analysis's output, in the same outbox transaction, and the records an earlier analysis of the same
        upload already submitted are not submitted again (analysis is deterministic for a file, so the
        n-th record is the same one), which makes an upload sent again after a crash exactly-once."""
        assert self.cfg.perception is not None
        spec = StreamSpec(state.stream_id, state.location_id, start_time_s)
        done = self.link.emitted(resume) if resume is not None else []
        emitted = 0
        if done:
            log.info("stream_id=%s: resuming an upload, %d records sent before", state.stream_id, len(done))

        async def submit(rec: Record) -> Record:
            nonlocal emitted
            n, emitted = emitted, emitted + 1
            if n < len(done):
                return replace(rec, record_id=done[n])  # in the outbox already, or delivered
            mark = (resume, n) if resume is not None else None
            return await self.submit(rec, wait=True, mark=mark)

        analysis = StreamAnalysis(
            await self.models(),
            self.cfg.perception,
            self.task_schema,
            spec,
            submit,
            self.executor,
            drop_when_behind=live,
            keep_keyframe=self._keep_keyframe,
        )
        state.run = analysis.run_state
        await analysis.run(source, container, options=options, timeout_s=timeout_s, sink=sink)
        log.info("analysed stream_id=%s: %s", state.stream_id, analysis.times.summary())
        return analysis.run_state

    def _keep_keyframe(self, rec: Record, crop: Crop) -> None:
        try:
            self.keyframes.keep(rec.stream_id, rec.record_id, crop)
        except InvalidInput as err:  # a thumbnail is a convenience: the record is already on the link
            log.warning("no thumbnail for stream_id=%s record_id=%d: %s", rec.stream_id, rec.record_id, err)

    def keyframe(self, stream_id: str, record_id: int) -> Thumbnail:
        """The thumbnail of a record this site's analysis made; NotFound for announced or dropped ones."""
        return self.keyframes.get(stream_id, record_id)

    # -- clips --------------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def clip(self, stream_id: str, t0_s: float, t1_s: float) -> AsyncIterator[Path]:
        """An MP4 of the stream between the two times, cut from the stored segments; deleted on exit."""
        segments = self.clips.find_span(stream_id, t0_s, t1_s)
        with tempfile.TemporaryDirectory(dir=self.clips.incoming) as tmp:
            out = Path(tmp) / "clip.mp4"
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self.clips.extract, segments, t0_s, t1_s, out
            )
            log.info("clip stream_id=%s %.1f..%.1f: %d bytes", stream_id, t0_s, t1_s, out.stat().st_size)
            yield out

    async def aclose(self) -> None:
        """Close the models (the understander, then perception's) once no stream runs any more."""
        if self._models is not None:
            await self._models.aclose()
        elif self.understander is not None:
            await self.understander.aclose()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
