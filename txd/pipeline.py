"""One stream through the transmitter: decode at the analysis rate, perceive, understand, publish records."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from semcom.schema import Schema
from txd.perception.keyframes import Keyframe
from txd.understanding.base import Understander, Understanding
from txd.video import DecodeProgress, VideoFrame, iter_frames

log = logging.getLogger(__name__)


class Perception(Protocol):
    """Frames in, keyframes of tracked people out (txd.perception.pipeline.PerceptionPipeline)."""

    def process(self, frame_bgr: NDArray[np.uint8], frame_index: int, time_s: float) -> list[Keyframe]: ...
    def flush(self) -> list[Keyframe]: ...


# What the pipeline hands on: track id, seconds from the stream start, and what was understood.
Publish = Callable[[int, float, Understanding], None]


@dataclass
class StageTimes:
    """Wall seconds spent per stage and how many items each handled, for progress and benchmarks."""

    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("decode", "perceive", "understand"), 0.0)
    )
    frames_analysed: int = 0
    keyframes: int = 0
    records: int = 0


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
    model slows decoding (backpressure) instead of piling up frames in memory."""

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
    ) -> None:
        self.perception = perception
        self.understander = understander
        self.schema = schema
        self.publish = publish
        self.executor = executor
        self.analysis_fps = analysis_fps
        self.queue_frames = queue_frames
        self.run_state = StreamRun()
        self._last: dict[int, dict[str, str]] = {}

    async def run(self, source: str | Path, container: str = "") -> StreamRun:
        loop = asyncio.get_running_loop()
        frames: asyncio.Queue[VideoFrame | BaseException | None] = asyncio.Queue(self.queue_frames)
        stop = threading.Event()
        # The decoder gets a thread of its own: it blocks while the queue is full, and must not hold a worker
        # of the model executor while doing so.
        decoder = asyncio.ensure_future(
            asyncio.to_thread(self._decode, source, container, frames, loop, stop)
        )
        try:
            while (item := await frames.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                t0 = time.perf_counter()
                keyframes = await loop.run_in_executor(
                    self.executor, self.perception.process, item.image, item.index, item.time_s
                )
                self.run_state.times.seconds["perceive"] += time.perf_counter() - t0
                self.run_state.times.frames_analysed += 1
                await self._understand(keyframes)
            await self._understand(self.perception.flush())
        finally:
            stop.set()
            while not frames.empty():  # unblock a decoder waiting to put, so that it sees `stop`
                frames.get_nowait()
            await decoder
        return self.run_state

    def _decode(
        self,
        source: str | Path,
        container: str,
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

        try:
            t0 = time.perf_counter()
            progress = self.run_state.decode
            for frame in iter_frames(source, container=container, fps=self.analysis_fps, progress=progress):
                self.run_state.times.seconds["decode"] += time.perf_counter() - t0
                if stop.is_set():
                    return
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
        self.run_state.times.seconds["understand"] += time.perf_counter() - t0
        self.run_state.times.keyframes += len(keyframes)
        for kf, result in zip(keyframes, results, strict=True):
            # A track is described again only when what is understood about it changes.
            if self._last.get(kf.track_id) == result.fields:
                continue
            self._last[kf.track_id] = dict(result.fields)
            self.publish(kf.track_id, kf.time_s, result)
            self.run_state.times.records += 1
