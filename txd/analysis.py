"""One stream's analysis on the daemon's shared models: decode at the analysis rate, perceive, understand, and
submit a record per understood track."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from semcom.record import Record
from semcom.schema import Schema
from txd.batching import Batcher
from txd.perception.detect import Box, Detection
from txd.perception.keyframes import Keyframe, understanding_inputs
from txd.perception.pipeline import PerceptionConfig, PerceptionModels, PerceptionPipeline
from txd.timing import StageTimes
from txd.understanding.base import Understander, Understanding
from txd.video import DecodeProgress, PacketSink, VideoFrame, iter_frames

log = logging.getLogger(__name__)

# Takes a record (record_id 0: the taker numbers it), hands it to the link and returns it numbered; awaited,
# so that a backed-up link holds the analysis back.
Submit = Callable[[Record], Awaitable[Record]]

Crop = NDArray[np.uint8]
# Given each record as the link took it (numbered) and the keyframe crop it was understood from.
KeepKeyframe = Callable[[Record, Crop], object]


class SharedModels:
    """One instance of each model for all streams: detection and appearance embedding of frames from several
    streams run in one model call (see Batcher), understanding goes to the one understander."""

    def __init__(
        self,
        perception: PerceptionModels,
        understander: Understander,
        executor: Executor,
        *,
        max_batch: int = 8,
    ) -> None:
        self.perception = perception
        self.understander = understander
        self.detect: Batcher[Crop, list[Detection]] = Batcher(
            perception.detector.detect_many, executor, max_batch=max_batch
        )
        embedder = perception.embedder
        self.embed: Batcher[tuple[Crop, Sequence[Box]], NDArray[np.float32]] | None = (
            Batcher(embedder.embed_many, executor, max_batch=max_batch) if embedder is not None else None
        )

    async def aclose(self) -> None:
        """Close the understander, then the perception models."""
        await self.understander.aclose()
        await self.perception.aclose()


@dataclass(frozen=True)
class StreamSpec:
    """Whose records a stream's analysis makes: `start_time_s` is the wall time of the video's first frame."""

    stream_id: str
    location_id: int
    start_time_s: float


@dataclass
class StreamRun:
    """The live state of one stream's analysis."""

    decode: DecodeProgress = field(default_factory=DecodeProgress)
    times: StageTimes = field(default_factory=StageTimes)
    started_s: float = field(default_factory=time.monotonic)

    @property
    def fps(self) -> float:
        """Decoded frames per wall second so far."""
        return self.decode.frames_decoded / max(time.monotonic() - self.started_s, 1e-9)


@dataclass(frozen=True)
class _Source:
    """What the decoder thread opens."""

    source: str | Path
    container: str
    options: dict[str, str]
    timeout_s: float | tuple[float, float]
    sink: PacketSink | None


class StreamAnalysis:
    """Runs one video through perception and understanding. Frames pass through a bounded queue, so a slow
    model slows decoding (backpressure) instead of piling up frames in memory. For a live source
    (`drop_when_behind`), decoding keeps the source's pace instead and frames that find the queue full are
    skipped: a camera cannot be paused, and its recording must not fall behind."""

    def __init__(
        self,
        models: SharedModels,
        perception: PerceptionConfig,
        schema: Schema,
        spec: StreamSpec,
        submit: Submit,
        executor: Executor,
        *,
        queue_frames: int = 8,
        drop_when_behind: bool = False,
        keep_keyframe: KeepKeyframe | None = None,
    ) -> None:
        self.models = models
        self.schema = schema
        self.spec = spec
        self.submit = submit
        self.executor = executor
        self.analysis_fps = perception.analysis_fps
        self.queue_frames = queue_frames
        self.drop_when_behind = drop_when_behind
        self.keep_keyframe = keep_keyframe
        self.run_state = StreamRun()
        self.perception: PerceptionPipeline = perception.pipeline(models.perception, self.run_state.times)
        self._last: dict[int, dict[str, str]] = {}
        # What was understood of each kept view, by (track id, frame index), until its track's final emission.
        self._views: dict[tuple[int, int], Understanding] = {}

    @property
    def times(self) -> StageTimes:
        return self.run_state.times

    async def run(
        self,
        source: str | Path,
        container: str = "",
        *,
        options: Mapping[str, str] | None = None,
        timeout_s: float | tuple[float, float] = 30.0,
        sink: PacketSink | None = None,
    ) -> StreamRun:
        """Decode `source` (a file or URL; `options` and `timeout_s` as for iter_frames, `sink` gets every
        packet) and analyse it; returns when the video ends, raises InvalidInput when it cannot be read."""
        loop = asyncio.get_running_loop()
        frames: asyncio.Queue[VideoFrame | BaseException | None] = asyncio.Queue(self.queue_frames)
        stop = threading.Event()
        opened = _Source(source, container, dict(options or {}), timeout_s, sink)
        # The decoder gets a thread of its own: it blocks while the queue is full, and must not hold a worker
        # of the model executor while doing so.
        decoder = asyncio.ensure_future(asyncio.to_thread(self._decode, opened, frames, loop, stop))
        # Understanding a batch of keyframes overlaps perception of the next frames (another core, or a
        # VLM server's latency); one batch at a time keeps the records in order and the crops bounded.
        understanding: asyncio.Future[None] | None = None
        # Detection of frame n + 1 overlaps tracking of frame n: at most one detection in flight.
        detecting: tuple[VideoFrame, asyncio.Future[list[Detection]]] | None = None
        try:
            while True:
                item = await frames.get()
                if isinstance(item, BaseException):
                    raise item
                previous, found = (detecting[0], await detecting[1]) if detecting else (None, None)
                detecting = None
                if item is not None:
                    detecting = (item, asyncio.ensure_future(self._detect(item)))
                if previous is not None and found is not None:
                    keyframes = await self._track(previous, found)
                    if keyframes:
                        if understanding is not None:
                            await understanding
                        understanding = asyncio.ensure_future(self._understand(keyframes))
                if item is None:
                    break
            if understanding is not None:
                await understanding
            await self._understand(self.perception.flush())
        finally:
            if detecting is not None:
                detecting[1].cancel()
                await asyncio.gather(detecting[1], return_exceptions=True)
            if understanding is not None:
                understanding.cancel()  # a no-op when it finished; gather retrieves its outcome either way
                await asyncio.gather(understanding, return_exceptions=True)
            stop.set()
            while not frames.empty():  # unblock a decoder waiting to put, so that it sees `stop`
                frames.get_nowait()
            await decoder
        return self.run_state

    async def _detect(self, frame: VideoFrame) -> list[Detection]:
        t0 = time.perf_counter()
        found = await self.models.detect(frame.image)
        self.times.add("detect", time.perf_counter() - t0)
        return found

    async def _track(self, frame: VideoFrame, detections: list[Detection]) -> list[Keyframe]:
        features = None
        if self.models.embed is not None and detections:
            t0 = time.perf_counter()
            features = await self.models.embed((frame.image, [d.box for d in detections]))
            self.times.add("embed", time.perf_counter() - t0)
        return await asyncio.get_running_loop().run_in_executor(
            self.executor,
            self.perception.advance,
            frame.image,
            frame.index,
            frame.time_s,
            detections,
            features,
        )

    def _decode(
        self,
        src: _Source,
        frames: asyncio.Queue[VideoFrame | BaseException | None],
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
    ) -> None:
        """Runs on its own thread; `put` blocks while the queue is full, and gives up once `stop` is set."""

        def put(item: VideoFrame | BaseException | None) -> None:
            future = asyncio.run_coroutine_threadsafe(frames.put(item), loop)
            while not stop.is_set():
                try:
                    future.result(timeout=0.1)
                    return
                except TimeoutError:
                    continue
            future.cancel()

        def offer(frame: VideoFrame) -> None:
            if frames.full():  # read on the loop's thread, where the queue lives
                self.times.frames_dropped += 1
            else:
                frames.put_nowait(frame)

        try:
            t0 = time.perf_counter()
            for frame in iter_frames(
                src.source,
                container=src.container,
                fps=self.analysis_fps,
                progress=self.run_state.decode,
                options=src.options,
                timeout_s=src.timeout_s,
                sink=src.sink,
            ):
                self.times.add("decode", time.perf_counter() - t0)
                if stop.is_set():
                    return
                if self.drop_when_behind:
                    loop.call_soon_threadsafe(offer, frame)
                else:
                    put(frame)
                t0 = time.perf_counter()
        except Exception as err:  # handed to the event loop, which raises it in run()
            put(err)
            return
        put(None)

    async def _understand(self, keyframes: Sequence[Keyframe]) -> None:
        """Understand the views of these tracks not understood yet, fuse each track's views, and submit a
        record for each track whose fused answer differs from the one last sent (or was never sent)."""
        if not keyframes:
            return
        understander = self.models.understander
        fresh = [
            view
            for kf in keyframes
            for view in kf.all_views
            if (kf.track_id, view.frame_index) not in self._views
        ]
        t0 = time.perf_counter()
        if fresh:
            crops, masks = understanding_inputs(fresh)
            results = await understander.understand(crops, self.schema, masks)
            for view, seen in zip(fresh, results, strict=True):
                self._views[(view.track_id, view.frame_index)] = seen
        self.times.add("understand", time.perf_counter() - t0)
        self.times.views_understood += len(fresh)
        t0 = time.perf_counter()
        for kf in keyframes:
            views = [self._views[(kf.track_id, view.frame_index)] for view in kf.all_views]
            seen = understander.fuse(views, self.schema) if len(views) > 1 else views[0]
            if kf.final:  # the track ended: what was understood of it is not needed again
                for view in kf.all_views:
                    self._views.pop((kf.track_id, view.frame_index), None)
            # A track is described again only when what is understood about it changes.
            if self._last.get(kf.track_id) == seen.fields:
                continue
            self._last[kf.track_id] = dict(seen.fields)
            record = Record(
                schema_id=self.schema.id,
                stream_id=self.spec.stream_id,
                track_id=kf.track_id,
                record_id=0,
                time_s=self.spec.start_time_s + kf.time_s,
                location_id=self.spec.location_id,
                fields=seen.fields,
                confidence=seen.confidence,
            )
            numbered = await self.submit(record)
            if self.keep_keyframe is not None:
                self.keep_keyframe(numbered, kf.crop)
            self.times.records += 1
        self.times.add("submit", time.perf_counter() - t0)
