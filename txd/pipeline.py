"""One stream through the transmitter: decode at the analysis rate, perceive, understand, publish records."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from semcom.schema import Schema
from txd.perception.detect import Detection
from txd.perception.keyframes import Keyframe
from txd.understanding.base import Understander, Understanding
from txd.video import DecodeProgress, PacketSink, VideoFrame, iter_frames

log = logging.getLogger(__name__)


class Perception(Protocol):
    """Frames in, keyframes of tracked people out (txd.perception.pipeline.PerceptionPipeline).

    `detect` (None: frame skipped) then `advance` make one `process`; split, so that detection of the next
    frame overlaps tracking of this one."""

    def detect(self, frame_bgr: NDArray[np.uint8], time_s: float) -> list[Detection] | None: ...
    def advance(
        self, frame_bgr: NDArray[np.uint8], frame_index: int, time_s: float, detections: list[Detection]
    ) -> list[Keyframe]: ...
    def flush(self) -> list[Keyframe]: ...


# What the pipeline hands on: track id, seconds from the stream start, and what was understood. Awaited, so
# that whoever takes the records can hold the pipeline back.
Publish = Callable[[int, float, Understanding], Awaitable[None]]


@dataclass
class StageTimes:
    """Wall seconds spent per stage and how many items each handled, for progress and benchmarks.

    `publish` is the time spent handing records on (queueing them for the link in txd); whoever frames the
    records adds a `codec` entry.
    """

    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("decode", "perceive", "understand", "publish"), 0.0)
    )
    frames_analysed: int = 0
    frames_dropped: int = 0  # decoded frames due for analysis but skipped because analysis lagged (live)
    keyframes: int = 0
    records: int = 0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


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


class StreamPipeline:
    """Runs one video through perception and understanding; frames pass through a bounded queue, so a slow
    model slows decoding (backpressure) instead of piling up frames in memory. For a live source
    (`drop_when_behind`), decoding keeps the source's pace instead and frames that find the queue full are
    skipped: a camera cannot be paused, and its recording must not fall behind."""

    def __init__(
        self,
        perception: Perception,
        understander: Understander,
        schema: Schema,
        publish: Publish,
        executor: Executor,
        *,
        analysis_fps: float | None,
        queue_frames: int = 8,
        drop_when_behind: bool = False,
    ) -> None:
        self.perception = perception
        self.understander = understander
        self.schema = schema
        self.publish = publish
        self.executor = executor
        self.analysis_fps = analysis_fps
        self.queue_frames = queue_frames
        self.drop_when_behind = drop_when_behind
        self.run_state = StreamRun()
        self._last: dict[int, dict[str, str]] = {}

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
        detecting: tuple[VideoFrame, asyncio.Future[list[Detection] | None]] | None = None
        try:
            while True:
                item = await frames.get()
                if isinstance(item, BaseException):
                    raise item
                t0 = time.perf_counter()
                previous, found = (detecting[0], await detecting[1]) if detecting else (None, None)
                detecting = None
                if item is not None:
                    detect = self.perception.detect
                    detecting = (item, loop.run_in_executor(self.executor, detect, item.image, item.time_s))
                if previous is not None and found is not None:
                    keyframes = await loop.run_in_executor(
                        self.executor,
                        self.perception.advance,
                        previous.image,
                        previous.index,
                        previous.time_s,
                        found,
                    )
                    self.run_state.times.frames_analysed += 1
                    if keyframes:
                        if understanding is not None:
                            await understanding
                        understanding = asyncio.ensure_future(self._understand(keyframes))
                self.run_state.times.add("perceive", time.perf_counter() - t0)
                if item is None:
                    break
            if understanding is not None:
                await understanding
            await self._understand(self.perception.flush())
        finally:
            if detecting is not None:
                await asyncio.gather(detecting[1], return_exceptions=True)
            if understanding is not None:
                understanding.cancel()  # a no-op when it finished; gather retrieves its outcome either way
                await asyncio.gather(understanding, return_exceptions=True)
            stop.set()
            while not frames.empty():  # unblock a decoder waiting to put, so that it sees `stop`
                frames.get_nowait()
            await decoder
        return self.run_state

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
                self.run_state.times.frames_dropped += 1
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
                self.run_state.times.add("decode", time.perf_counter() - t0)
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
        if not keyframes:
            return
        t0 = time.perf_counter()
        results = await self.understander.understand([k.crop for k in keyframes], self.schema)
        self.run_state.times.add("understand", time.perf_counter() - t0)
        self.run_state.times.keyframes += len(keyframes)
        t0 = time.perf_counter()
        for kf, result in zip(keyframes, results, strict=True):
            # A track is described again only when what is understood about it changes.
            if self._last.get(kf.track_id) == result.fields:
                continue
            self._last[kf.track_id] = dict(result.fields)
            await self.publish(kf.track_id, kf.time_s, result)
            self.run_state.times.records += 1
        self.run_state.times.add("publish", time.perf_counter() - t0)


@dataclass(frozen=True)
class _Source:
    """What the decoder thread opens."""

    source: str | Path
    container: str
    options: dict[str, str]
    timeout_s: float | tuple[float, float]
    sink: PacketSink | None
