"""Video probing and decoding with PyAV; every decoder failure becomes a clear InvalidInput."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

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
