"""Video in and out of the traditional scheme (H.264 in MPEG-TS, robust decoding) and memoised perception."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from txd.perception.appearance import Embedder
from txd.perception.detect import Box, Detection, Detector
from txd.perception.keyframes import Keyframe
from txd.perception.pipeline import PerceptionConfig, PerceptionModels
from txd.video import RateGrid, VideoFrame, iter_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedVideo:
    """The sender's H.264 elementary stream muxed as MPEG-TS, and what the receiver needs to place frames."""

    data: bytes
    frames: int
    fps: float
    duration_s: float
    start_s: float  # presentation time of the first frame in the TS (the receiver knows the stream start)
    bitrate_kbps: int
    gop_frames: int


def encode_h264(
    source: Path, *, bitrate_kbps: int, gop_s: float, clip_s: float | None, preset: str = "veryfast"
) -> EncodedVideo:
    """Re-encode the video's first stream with libx264 at an average `bitrate_kbps` (one IDR every `gop_s`)
    into an MPEG-TS byte stream: 188-byte packets with their own sync, so a corrupted block costs the packets
    it touches, not the container."""
    out = io.BytesIO()
    frames = 0
    try:
        with av.open(str(source)) as box, av.open(out, "w", format="mpegts") as ts:
            if not box.streams.video:
                raise InvalidInput(f"{source}: no video stream")
            src = box.streams.video[0]
            rate = Fraction(src.average_rate or src.guessed_rate or 25).limit_denominator(1001)
            gop = max(1, round(float(rate) * gop_s))
            stream = ts.add_stream("libx264", rate=rate)
            stream.width = src.codec_context.width - src.codec_context.width % 2
            stream.height = src.codec_context.height - src.codec_context.height % 2
            stream.pix_fmt = "yuv420p"
            stream.bit_rate = bitrate_kbps * 1000
            stream.codec_context.gop_size = gop
            stream.codec_context.options = {"preset": preset, "threads": "1", "keyint_min": str(gop)}
            first: float | None = None
            for frame in box.decode(src):
                t = float(frame.time) if frame.time is not None else frames / float(rate)
                first = t if first is None else first
                if clip_s is not None and t - first >= clip_s:
                    break
                image = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
                image.pts = frames
                image.time_base = 1 / rate
                for packet in stream.encode(image):
                    ts.mux(packet)
                frames += 1
            for packet in stream.encode(None):
                ts.mux(packet)
    except av.FFmpegError as err:
        raise InvalidInput(f"cannot encode {source} as H.264: {err}") from err
    if frames == 0:
        raise InvalidInput(f"{source}: no frames to encode")
    data = out.getvalue()
    start_s = _first_time(data)
    return EncodedVideo(data, frames, float(rate), frames / float(rate), start_s, bitrate_kbps, gop)


def _first_time(data: bytes) -> float:
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as box:
        for frame in box.decode(box.streams.video[0]):
            return float(frame.time or 0.0)
    return 0.0


# What PyAV raises on corrupted input (its container layer can also trip over streams that vanish).
_CORRUPTION = (av.FFmpegError, ValueError, OSError, IndexError, EOFError)


def decode_robust(data: bytes, *, start_s: float, duration_s: float, fps: float) -> Iterator[VideoFrame]:
    """Decode whatever survives of an MPEG-TS H.264 stream, at most `fps` frames per second of video.

    Decoder errors are caught per packet and decoding goes on; a frame whose timestamp was lost or lies
    outside the sent span is skipped. Times are seconds from the sender's first frame. Frames are chosen on
    the same 1/fps grid as txd's decoder (RateGrid), so an intact stream yields exactly the frames the
    sender had.
    """
    try:
        box = av.open(io.BytesIO(data), mode="r", format="mpegts")
    except _CORRUPTION as err:
        log.debug("received stream does not open: %s", err)
        return
    with box:
        if not box.streams.video:
            return
        stream = box.streams.video[0]
        packets = box.demux()  # every stream: corrupted tables may announce streams that never come
        grid, index = RateGrid(fps), 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except _CORRUPTION as err:
                log.debug("demuxer gave up: %s", err)
                return
            if packet.stream_index != stream.index:
                continue
            try:
                decoded = stream.decode(packet)  # the stream found at the start, whatever came later
            except _CORRUPTION as err:
                log.debug("packet dropped: %s", err)
                continue
            for frame in decoded:
                index += 1
                if frame.time is None:
                    continue
                t = float(frame.time) - start_s
                if not -1e-6 <= t < duration_s + 1e-6 or not grid.take(t):
                    continue
                try:
                    image: NDArray[np.uint8] = frame.to_ndarray(format="bgr24")  # type: ignore[assignment]
                except _CORRUPTION as err:
                    log.debug("frame not convertible: %s", err)
                    continue
                yield VideoFrame(index - 1, t, image)


def source_frames(path: Path, *, fps: float | None, clip_s: float | None) -> Iterator[VideoFrame]:
    """The original video through txd's decoder (txd.video.iter_frames), cut after `clip_s` seconds."""
    for frame in iter_frames(path, fps=fps):
        if clip_s is not None and frame.time_s >= clip_s:
            return
        yield frame


def content_digest(image: NDArray[np.uint8]) -> bytes:
    """A key for an image's pixels and shape (results remembered by content)."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
    digest.update(repr(image.shape).encode())
    return digest.digest()


class _MemoDetector:
    """The configured detector, with results remembered by frame content (detection is per frame)."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.memo: dict[bytes, list[Detection]] = {}
        self.calls = 0

    def detect(self, frame_bgr: NDArray[np.uint8]) -> list[Detection]:
        key = content_digest(frame_bgr)
        found = self.memo.get(key)
        if found is None:
            self.calls += 1
            found = self.memo[key] = self.inner.detect(frame_bgr)
        return list(found)

    def detect_many(self, frames_bgr: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        return [self.detect(frame) for frame in frames_bgr]

    async def aclose(self) -> None:
        await self.inner.aclose()


class _MemoEmbedder:
    """The tracker's appearance embedder, remembered by frame content and boxes."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.memo: dict[tuple[bytes, tuple[Box, ...]], NDArray[np.float32]] = {}

    def embed(self, frame_bgr: NDArray[np.uint8], boxes: Sequence[Box]) -> NDArray[np.float32]:
        key = (content_digest(frame_bgr), tuple(boxes))
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = self.inner.embed(frame_bgr, boxes)
        return found

    def embed_many(
        self, items: Sequence[tuple[NDArray[np.uint8], Sequence[Box]]]
    ) -> list[NDArray[np.float32]]:
        return [self.embed(frame, boxes) for frame, boxes in items]

    async def aclose(self) -> None:
        await self.inner.aclose()


_MODELS: dict[str, tuple[_MemoDetector, _MemoEmbedder | None]] = {}


class Perceiver:
    """txd's perception stage (detector, tracker, keyframe selector from a PerceptionConfig), run once per
    video with a fresh tracker; detector and embedder results are shared between videos by frame content,
    so a received video that is bit-identical to another in some stretch costs nothing there."""

    def __init__(self, config: PerceptionConfig) -> None:
        self.config = config
        # Runs in one process with the same models (an ablation) share their memos and the loaded models.
        appearance = config.appearance
        key = config.detector.model_dump_json() + (appearance.model_dump_json() if appearance else "")
        if key not in _MODELS:
            embedder = _MemoEmbedder(appearance.build()) if appearance is not None else None
            _MODELS[key] = (_MemoDetector(config.detector.build()), embedder)
        self.detector, self.embedder = _MODELS[key]
        self.detector.calls = 0  # this run's calls (frames already seen by an earlier run cost none)
        self.frames_analysed = 0

    def run(self, frames: Iterable[VideoFrame]) -> list[Keyframe]:
        """Keyframes of every track, in emission order (the frames are already at the analysis rate)."""
        pipeline = self.config.pipeline(PerceptionModels(self.detector, self.embedder))
        keyframes: list[Keyframe] = []
        for frame in frames:
            keyframes += pipeline.process(frame.image, frame.index, frame.time_s)
            self.frames_analysed += 1
        return keyframes + pipeline.flush()
