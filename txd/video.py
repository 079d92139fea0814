"""Video probing and decoding with PyAV; every decoder failure becomes a clear InvalidInput."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput


@dataclass(frozen=True)
class VideoInfo:
    """What decoding a whole video found."""

    frames: int
    duration_s: float
    width: int
    height: int
    codec: str
    container: str


def decode_info(path: Path, container: str = "") -> VideoInfo:
    """Decode every frame of the first video stream and count them (PyAV releases the GIL while decoding)."""
    try:
        with av.open(str(path), format=container or None) as box:
            if not box.streams.video:
                raise InvalidInput(f"{box.format.name} container holds no video stream")
            stream = box.streams.video[0]
            stream.thread_type = "AUTO"
            frames = 0
            first = last = None
            for frame in box.decode(stream):
                frames += 1
                if frame.time is not None:
                    first = frame.time if first is None else first
                    last = frame.time
            if frames == 0:
                raise InvalidInput("the video stream decoded to no frames (truncated or empty)")
            rate = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
            span = (last - first) if first is not None and last is not None else 0.0
            duration = span + (1.0 / rate if rate else 0.0)
            return VideoInfo(
                frames=frames,
                duration_s=duration,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                codec=stream.codec_context.name,
                container=box.format.name,
            )
    except av.FFmpegError as err:
        raise InvalidInput(f"cannot decode the video: {err}") from err


def probe(path: Path, container: str = "") -> VideoInfo:
    """The container's and first video stream's description from the header alone (frames and duration 0)."""
    try:
        with av.open(str(path), format=container or None) as box:
            if not box.streams.video:
                raise InvalidInput(f"{box.format.name} container holds no video stream")
            ctx = box.streams.video[0].codec_context
            return VideoInfo(0, 0.0, ctx.width, ctx.height, ctx.name, box.format.name)
    except av.FFmpegError as err:
        raise InvalidInput(f"cannot decode the video: {err}") from err


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: index in decode order, presentation time in seconds from the start, BGR pixels."""

    index: int
    time_s: float
    image: NDArray[np.uint8]


@dataclass
class DecodeProgress:
    """Counters a decoding loop updates as it goes (read from other threads for progress reports)."""

    frames_decoded: int = 0
    frames_total: int = 0
    duration_s: float = 0.0


class RateGrid:
    """Chooses at most `fps` frames per second of video on a fixed grid of 1/fps seconds from 0, so the rate
    does not drift with the frames' own spacing; `fps` None takes every frame."""

    def __init__(self, fps: float | None) -> None:
        self.fps = fps
        self.next_t = 0.0

    def take(self, t: float) -> bool:
        """Whether the frame at `t` seconds (from the stream's first frame) is due; advances the grid."""
        if self.fps is None:
            return True
        if t < self.next_t - 1e-6:
            return False
        while self.next_t <= t + 1e-6:
            self.next_t += 1.0 / self.fps
        return True


class PacketSink(Protocol):
    """Receives the compressed packets of the decoded stream as they are demuxed (e.g. to record them)."""

    def open(self, stream: av.video.stream.VideoStream) -> None:
        """Called once, before the first packet, with the stream the packets belong to."""

    def write(self, packet: av.Packet[av.video.stream.VideoStream]) -> None:
        """One packet, after it was decoded; the sink may change it (it is not used afterwards)."""


def iter_frames(
    source: str | Path,
    *,
    container: str = "",
    fps: float | None = None,
    progress: DecodeProgress | None = None,
    options: Mapping[str, str] | None = None,
    timeout_s: float | tuple[float, float] = 30.0,
    sink: PacketSink | None = None,
) -> Iterator[VideoFrame]:
    """Decode the first video stream of a file or URL (rtsp://, http://...), yielding at most `fps` frames per
    second of video, evenly spaced; every decoder failure, also one mid-stream, becomes InvalidInput.

    `options` are FFmpeg open options, `timeout_s` the open (and read) timeout, and `sink` gets every packet
    of the stream as it was demuxed, so that one read of a live source serves both analysis and recording.
    """
    progress = progress if progress is not None else DecodeProgress()
    opened = False
    try:
        with av.open(
            str(source), format=container or None, options=dict(options or {}), timeout=timeout_s
        ) as box:
            opened = True
            if not box.streams.video:
                raise InvalidInput(f"{box.format.name} container holds no video stream")
            stream = box.streams.video[0]
            stream.thread_type = "AUTO"
            if sink is not None:
                sink.open(stream)
            yield from _decode(box, stream, fps, progress, sink)
    except av.FFmpegError as err:
        # PyAV's timeout interrupts FFmpeg, which then reports only that it was asked to stop.
        reason = (
            "timed out waiting for data" if isinstance(err, av.error.ExitError) else err.strerror or str(err)
        )
        if not opened and "://" in str(source):
            raise InvalidInput(f"cannot open the stream: {reason}") from err
        at = f" after {progress.frames_decoded} frames" if progress.frames_decoded else ""
        raise InvalidInput(f"cannot decode the video{at}: {reason}") from err
    if progress.frames_decoded == 0:
        raise InvalidInput("the video stream decoded to no frames (truncated or empty)")


def _decode(
    box: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    fps: float | None,
    progress: DecodeProgress,
    sink: PacketSink | None,
) -> Iterator[VideoFrame]:
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    progress.frames_total = int(stream.frames or 0)
    first: float | None = None
    grid = RateGrid(fps)
    for packet in box.demux(stream):
        frames = packet.decode()
        if sink is not None and packet.size:  # the empty packet at the end only flushes the decoder
            sink.write(packet)
        for frame in frames:
            t = float(frame.time) if frame.time is not None else progress.frames_decoded / rate
            first = t if first is None else first
            index = progress.frames_decoded
            progress.frames_decoded += 1
            progress.duration_s = t - first + 1.0 / rate
            if grid.take(t - first):
                image: NDArray[np.uint8] = frame.to_ndarray(format="bgr24")  # type: ignore[assignment]
                yield VideoFrame(index, t - first, image)
