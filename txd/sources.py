"""Sources txd pulls itself (files, HTTP, RTSP): one task each, analysed and recorded like ingested video."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import av

from semcom.errors import SemcomError
from txd.analysis import StreamRun
from txd.clips import ClipStore, SegmentRecorder
from txd.config import SourceConfig
from txd.core import StreamState, TransmitterCore
from txd.video import iter_frames

log = logging.getLogger(__name__)


class _Tap:
    """The packet sink of one connection: counts the bytes for Status and hands packets to the recorder."""

    def __init__(self, state: StreamState, recorder: SegmentRecorder | None) -> None:
        self.state = state
        self.recorder = recorder

    def open(self, stream: av.video.stream.VideoStream) -> None:
        self.state.state, self.state.error = "receiving", ""
        if self.recorder is not None:
            self.recorder.open(stream)

    def write(self, packet: av.Packet[av.video.stream.VideoStream]) -> None:
        self.state.bytes_received += packet.size
        if self.recorder is not None:
            self.recorder.write(packet)


class SourcePuller:
    """Pulls one configured source until it ends (or for ever, if live or looped).

    Each pass (connection) times its records and clip segments from the wall clock when it started plus the
    video's own presentation time, so a file's records span its length from the moment it was opened and a
    live camera's follow the wall clock. A file that cannot be read fails for good; a network source is
    retried with a doubling pause (retry_s .. retry_max_s), and a live one is reconnected when it ends.
    Failures stay in this task: other sources and Ingest go on.
    """

    def __init__(self, cfg: SourceConfig, core: TransmitterCore, clips: ClipStore) -> None:
        self.cfg = cfg
        self.core = core
        self.clips = clips
        self.state = core.open_stream(cfg.stream_id, cfg.location_id, state="connecting")
        self.passes = 0

    @property
    def label(self) -> str:
        return f"source {self.cfg.stream_id!r} ({self.cfg.display_url})"

    async def run(self) -> None:
        """Pull passes until the source is done or failed; only cancellation ends it early."""
        delay = self.cfg.retry_s
        while True:
            self.passes += 1
            try:
                run = await self._pass(time.time())
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if not isinstance(err, SemcomError):
                    log.exception("%s: unexpected failure", self.label)
                if not self._retry_after(err, delay):
                    return
                await asyncio.sleep(delay)
                progressed = self.state.run is not None and self.state.run.decode.frames_decoded > 0
                delay = self.cfg.retry_s if progressed else min(2 * delay, self.cfg.retry_max_s)
                continue
            delay = self.cfg.retry_s
            self.state.frames_decoded = run.decode.frames_decoded
            self.state.duration_s = run.decode.duration_s
            if self.cfg.loop:
                log.info("%s: ended, starting again (loop)", self.label)
                continue
            if self.cfg.is_live:
                self.state.state, self.state.error = "retrying", "the live stream ended"
                log.warning("%s: the live stream ended; reconnecting in %.1f s", self.label, delay)
                await asyncio.sleep(delay)
                continue
            self.state.state = "done"
            log.info(
                "%s: done, %d frames, %.1f s", self.label, run.decode.frames_decoded, run.decode.duration_s
            )
            return

    def _retry_after(self, err: Exception, delay: float) -> bool:
        """Record a failed pass; True when the source is tried again after `delay`."""
        self.state.error = f"{self.label}: {self._redact(str(err))}"
        if self.cfg.kind == "file":
            self.state.state = "failed"
            log.error("%s", self.state.error)
            return False
        self.state.state = "retrying"
        log.error("%s; retrying in %.1f s", self.state.error, delay)
        return True

    def _redact(self, text: str) -> str:
        return text.replace(self.cfg.url, self.cfg.display_url)

    async def _pass(self, start_time_s: float) -> StreamRun:
        """One connection: decode, analyse and record until the video ends; raises when it cannot be read."""
        self.state.state = "connecting"
        resume = None
        video = Path(self.cfg.target)
        file = self.cfg.kind == "file" and not (self.cfg.loop or self.cfg.is_live)
        if file and await asyncio.to_thread(video.is_file):
            # Analysed again after a restart, a file sends only the records it had not sent before.
            start_time_s, resume = await self.core.resume_point(self.cfg.stream_id, video, start_time_s)
        recorder = (
            SegmentRecorder(
                self.clips,
                self.cfg.stream_id,
                start_time_s=start_time_s,
                segment_s=self.clips.cfg.segment_s,
            )
            if self.cfg.record
            else None
        )
        tap = _Tap(self.state, recorder)
        network = self.cfg.kind != "file"
        timeout_s = (self.cfg.open_timeout_s, self.cfg.read_timeout_s) if network else 30.0
        try:
            if self.core.analyses:
                return await self.core.analyse(
                    self.cfg.target,
                    self.state,
                    start_time_s,
                    container=self.cfg.container,
                    options=self.cfg.ffmpeg_options(),
                    timeout_s=timeout_s,
                    sink=tap,
                    live=self.cfg.is_live,
                    resume=resume,
                )
            return await self._record_only(tap, timeout_s)
        finally:
            if recorder is not None:
                # Runs also when the daemon stops: the seconds recorded so far are kept.
                await asyncio.to_thread(recorder.close)

    async def _record_only(self, tap: _Tap, timeout_s: float | tuple[float, float]) -> StreamRun:
        """Without analysis: read the source to its end so that it is recorded (and counted)."""
        run = StreamRun()
        self.state.run = run
        stop = threading.Event()

        def drain() -> None:
            for _ in iter_frames(
                self.cfg.target,
                container=self.cfg.container,
                fps=1.0,  # frames are decoded anyway; only these few are converted to pixels
                progress=run.decode,
                options=self.cfg.ffmpeg_options(),
                timeout_s=timeout_s,
                sink=tap,
            ):
                if stop.is_set():
                    return

        task = asyncio.ensure_future(asyncio.to_thread(drain))
        try:
            await asyncio.shield(task)
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
        return run


class SourcePool:
    """Every configured source, each pulled by a task of its own in one TaskGroup."""

    def __init__(self, sources: Sequence[SourceConfig], core: TransmitterCore, clips: ClipStore) -> None:
        self.pullers = [SourcePuller(cfg, core, clips) for cfg in sources]

    async def run(self) -> None:
        """Until every source is done or failed, or until cancelled (the daemon stops)."""
        if not self.pullers:
            return
        log.info("pulling %d source(s): %s", len(self.pullers), ", ".join(p.label for p in self.pullers))
        async with asyncio.TaskGroup() as tg:
            for puller in self.pullers:
                tg.create_task(puller.run(), name=f"txd-source-{puller.cfg.stream_id}")
