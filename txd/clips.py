"""The clip store: each stream's original video kept on site, cut into playable MP4 clips on demand."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path

import av

from semcom.errors import InvalidInput, NotFound
from txd.config import ClipStoreConfig

log = logging.getLogger(__name__)

# H.264 is copied as it is; anything else (MPEG-4 Part 2, msmpeg4 in AVI...) is transcoded to H.264, the one
# codec every browser and player decodes in MP4.
MP4_REMUX_CODECS = frozenset({"h264"})
CHUNK_BYTES = 64 * 1024
_EXTENSIONS = {
    "avi": ".avi",
    "matroska": ".mkv",
    "matroska,webm": ".mkv",
    "mpegts": ".ts",
    "mov,mp4,m4a,3gp,3g2,mj2": ".mp4",
}


@dataclass(frozen=True)
class Segment:
    """One stored piece of a stream: the original container bytes and where it sits in time."""

    stream_id: str
    path: str
    start_time_s: float
    duration_s: float
    size_bytes: int
    codec: str
    stored_at_s: float

    @property
    def end_time_s(self) -> float:
        return self.start_time_s + self.duration_s


class ClipStore:
    """Segments on disk under `root/<stream_id>/`, each with a JSON sidecar; retention by size and age."""

    def __init__(self, cfg: ClipStoreConfig) -> None:
        self.cfg = cfg
        self.root = cfg.dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(exist_ok=True)
        # Pulled sources add segments from their decoder threads while the services read them.
        self._lock = threading.Lock()
        self._segments: list[Segment] = sorted(self._scan(), key=lambda s: s.stored_at_s)
        self._recorders: set[SegmentRecorder] = set()

    def _scan(self) -> Iterator[Segment]:
        for meta in self.root.glob("*/*.json"):
            try:
                seg = Segment(**json.loads(meta.read_text()))
            except (OSError, ValueError, TypeError) as err:
                log.warning("ignoring unreadable clip sidecar %s: %s", meta, err)
                continue
            if Path(seg.path).is_file():
                yield seg
        for video in self.root.glob("*/*.mkv"):
            if not video.with_suffix(".json").exists() and (recovered := _recover(video)) is not None:
                yield recovered

    def incoming_path(self, stream_id: str) -> Path:
        return self.incoming / f"{_safe(stream_id)}.{time.time_ns()}"

    def segment_path(self, stream_id: str, start_time_s: float, ext: str) -> Path:
        """A new, reserved file name for a segment of `stream_id` starting at `start_time_s`."""
        folder = self.root / _safe(stream_id)
        folder.mkdir(exist_ok=True)
        with self._lock:
            dest = folder / f"{int(start_time_s * 1000)}{ext}"
            n = 1
            while dest.exists() or dest.with_suffix(".json").exists():
                dest = folder / f"{int(start_time_s * 1000)}-{n}{ext}"
                n += 1
            dest.touch()
        return dest

    def register(self, seg: Segment) -> Segment:
        """Store a segment whose file is in place: write its sidecar, then apply retention (thread-safe)."""
        Path(seg.path).with_suffix(".json").write_text(json.dumps(asdict(seg)))
        with self._lock:
            self._segments.append(seg)
        self.enforce_retention()
        return seg

    def add(
        self,
        stream_id: str,
        spooled: Path,
        *,
        start_time_s: float,
        duration_s: float,
        codec: str,
        container: str,
    ) -> Segment:
        """Move a fully received video into the store and apply retention (thread-safe)."""
        dest = self.segment_path(stream_id, start_time_s, _EXTENSIONS.get(container, ".bin"))
        shutil.move(str(spooled), dest)
        return self.register(
            Segment(
                stream_id=stream_id,
                path=str(dest),
                start_time_s=start_time_s,
                duration_s=duration_s,
                size_bytes=dest.stat().st_size,
                codec=codec,
                stored_at_s=time.time(),
            )
        )

    def enforce_retention(self, now_s: float | None = None) -> list[Segment]:
        """Drop the oldest segments beyond max_bytes, and any older than max_age_s."""
        now_s = time.time() if now_s is None else now_s
        dropped: list[Segment] = []
        with self._lock:
            while self._segments and (
                sum(s.size_bytes for s in self._segments) > self.cfg.max_bytes
                or now_s - self._segments[0].stored_at_s > self.cfg.max_age_s
            ):
                dropped.append(self._segments.pop(0))
        for seg in dropped:
            Path(seg.path).unlink(missing_ok=True)
            Path(seg.path).with_suffix(".json").unlink(missing_ok=True)
            log.info("clip store dropped stream_id=%s segment %s", seg.stream_id, Path(seg.path).name)
        return dropped

    @property
    def segments(self) -> list[Segment]:
        """The stored (closed) segments, oldest first."""
        with self._lock:
            return list(self._segments)

    def recording(self, recorder: SegmentRecorder, active: bool) -> None:
        """A recorder starts (or stops) writing: while it writes, its open segment can be cut from too."""
        with self._lock:
            if active:
                self._recorders.add(recorder)
            else:
                self._recorders.discard(recorder)

    def live_segments(self) -> list[Segment]:
        """The segments being written now, as far as they reach on disk."""
        with self._lock:
            recorders = list(self._recorders)
        return [seg for r in recorders if (seg := r.open_segment) is not None]

    def _current(self) -> list[Segment]:
        """Stored and live segments. Live ones are read first: one that closes meanwhile is then seen in
        both lists (kept once, as stored), never in neither."""
        live = self.live_segments()
        stored = self.segments
        paths = {seg.path for seg in stored}
        return stored + [seg for seg in live if seg.path not in paths]

    def find(self, stream_id: str, t0_s: float, t1_s: float) -> Segment:
        """The segment of `stream_id` (stored, or being recorded) that overlaps [t0_s, t1_s] the most."""
        return self._best(self._current(), stream_id, t0_s, t1_s)

    def _best(self, segments: Sequence[Segment], stream_id: str, t0_s: float, t1_s: float) -> Segment:
        if not t1_s > t0_s:
            raise InvalidInput(f"clip range must have t1_s > t0_s, got {t0_s}..{t1_s}")
        if t1_s - t0_s > self.cfg.max_clip_s:
            raise InvalidInput(
                f"clip of {t1_s - t0_s:.1f} s exceeds clips.max_clip_s ({self.cfg.max_clip_s} s)"
            )
        best, overlap = None, 0.0
        for seg in segments:
            if seg.stream_id == stream_id:
                o = min(t1_s, seg.end_time_s) - max(t0_s, seg.start_time_s)
                if o > overlap:
                    best, overlap = seg, o
        if best is None:
            known = sorted({s.stream_id for s in segments})
            raise NotFound(
                f"no stored video of stream {stream_id!r} covers {t0_s:.1f}..{t1_s:.1f}"
                + (f" (streams stored: {', '.join(known)})" if known else " (the store is empty)")
            )
        return best

    def find_span(self, stream_id: str, t0_s: float, t1_s: float) -> list[Segment]:
        """The stored segments of `stream_id` that overlap [t0_s, t1_s], in time order: the one overlapping
        the most and those of the same codec beside it (a pulled source is stored in rolling segments, the
        newest of which may still be being written)."""
        segments = self._current()
        best = self._best(segments, stream_id, t0_s, t1_s)
        span = [
            seg
            for seg in segments
            if seg.stream_id == stream_id
            and seg.codec == best.codec
            and min(t1_s, seg.end_time_s) > max(t0_s, seg.start_time_s)
        ]
        return sorted(span, key=lambda seg: seg.start_time_s)

    def extract(self, segments: Segment | Sequence[Segment], t0_s: float, t1_s: float, out: Path) -> Path:
        """Write [t0_s, t1_s] of one segment, or of consecutive segments of one stream joined in time order,
        to `out` as MP4 (blocking; run it on an executor). A join stops where the picture size changes."""
        segs = [segments] if isinstance(segments, Segment) else sorted(segments, key=lambda s: s.start_time_s)
        if not segs:
            raise InvalidInput("no segments to cut a clip from")
        parts = [
            _Part(
                Path(seg.path),
                start_s=max(0.0, t0_s - seg.start_time_s),
                stop_s=min(seg.duration_s, t1_s - seg.start_time_s),
                offset_s=seg.start_time_s,
            )
            for seg in segs
        ]
        try:
            if all(seg.codec in MP4_REMUX_CODECS for seg in segs):
                _remux(parts, out)
            else:
                _transcode(parts, out)
        except av.FFmpegError as err:
            names = ", ".join(Path(seg.path).name for seg in segs)
            raise InvalidInput(f"cannot cut the clip from {names}: {err.strerror or err}") from err
        return out


class SegmentRecorder:
    """Writes a stream's packets, as they are demuxed, into rolling Matroska segments without re-encoding.

    A segment starts at a keyframe and closes at the first keyframe after `segment_s` seconds; it is then
    registered in the store with its start time, so retention applies to it. Matroska carries every codec
    FFmpeg demuxes. The open segment is written in its final place and flushed cluster by cluster (a
    cluster a second at most), so FetchClip can cut the newest seconds of a live stream from it too. A
    recording failure (a full disk, say) is logged and stops the recording, never the analysis.
    """

    def __init__(self, store: ClipStore, stream_id: str, *, start_time_s: float, segment_s: float) -> None:
        self.store = store
        self.stream_id = stream_id
        self.start_time_s = start_time_s
        self.segment_s = segment_s
        self.segments: list[Segment] = []
        self.bytes_written = 0
        self.error = ""
        self._ist: av.video.stream.VideoStream | None = None
        self._tb = Fraction(1, 90000)
        self._origin: int | None = None  # pts of the first recorded keyframe, in the stream's time base
        self._out: av.container.OutputContainer | None = None
        self._ost: av.video.stream.VideoStream | None = None
        self._path: Path | None = None  # the open segment's file
        self._live: Segment | None = None  # the open segment as far as it is written
        self._seg_first = 0  # the open segment's first keyframe's pts, in the stream's time base
        self._seg_end = 0  # the open segment's end (last pts + duration), in the stream's time base
        self._last_dts: int | None = None

    def open(self, stream: av.video.stream.VideoStream) -> None:
        self._ist = stream
        self._tb = stream.time_base or Fraction(1, 90000)
        self.store.recording(self, active=True)

    @property
    def open_segment(self) -> Segment | None:
        """The segment being written, as far as it reaches (read from any thread)."""
        return self._live

    def write(self, packet: av.Packet[av.video.stream.VideoStream]) -> None:
        if self.error or self._ist is None:
            return
        try:
            self._write(packet)
        except (av.FFmpegError, OSError) as err:
            self.error = f"recording stopped: {err}"
            log.error("stream_id=%s %s", self.stream_id, self.error)
            self._abandon()

    def _write(self, packet: av.Packet[av.video.stream.VideoStream]) -> None:
        dts = packet.dts if packet.dts is not None else packet.pts
        if dts is None or (self._last_dts is not None and dts <= self._last_dts):
            return  # cannot be placed in time, or goes back in time: the muxer would refuse it
        pts = packet.pts if packet.pts is not None else dts
        if self._origin is None:
            if not packet.is_keyframe:
                return  # a live stream joined mid-GOP: start at the first picture that decodes
            self._origin = pts
        if (
            self._out is not None
            and packet.is_keyframe
            and (pts - self._seg_first) * self._tb >= self.segment_s
        ):
            self._close_segment()
        if self._out is None:
            self._open_segment(pts)
        assert self._out is not None and self._ost is not None
        rate = self._ist.average_rate if self._ist is not None else None
        step = packet.duration or (round(1 / (rate * self._tb)) if rate else 1)
        self._seg_end = max(self._seg_end, pts + step)
        self._last_dts = dts
        # The segment's first keyframe shows at 0 s of its file; Matroska keeps presentation times only.
        packet.pts = pts - self._seg_first
        packet.dts = dts - self._seg_first
        packet.stream = self._ost
        size = packet.size
        self._out.mux(packet)
        self.bytes_written += size
        assert self._live is not None
        self._live = replace(
            self._live,
            duration_s=float((self._seg_end - self._seg_first) * self._tb),
            size_bytes=self._live.size_bytes + size,
        )

    def _open_segment(self, first: int) -> None:
        assert self._ist is not None and self._origin is not None
        start = self.start_time_s + float((first - self._origin) * self._tb)
        self._path = self.store.segment_path(self.stream_id, start, ".mkv")
        # Each packet is flushed to the file, and a cluster (what a reader of the growing file can use)
        # closes after a second at most.
        self._out = av.open(str(self._path), "w", format="matroska", options=_GROWING_MKV)
        self._ost = self._out.add_stream_from_template(self._ist)
        self._seg_first = self._seg_end = first
        self._live = Segment(
            stream_id=self.stream_id,
            path=str(self._path),
            start_time_s=start,
            duration_s=0.0,
            size_bytes=0,
            codec=self._ist.codec_context.name,
            stored_at_s=time.time(),
        )

    def _close_segment(self) -> None:
        if self._out is None or self._live is None or self._path is None:
            return
        self._out.close()
        seg = replace(self._live, size_bytes=self._path.stat().st_size, stored_at_s=time.time())
        self._out = self._path = None
        self.store.register(seg)
        self._live = None
        self.segments.append(seg)
        log.debug("stream_id=%s segment %.1f s stored", self.stream_id, seg.duration_s)

    def _abandon(self) -> None:
        self._live = None
        if self._out is not None:
            with contextlib.suppress(av.FFmpegError, OSError):  # the file goes anyway
                self._out.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._out = self._path = None
        self.store.recording(self, active=False)

    def close(self) -> None:
        """Close and store the open segment (the end of the stream, or of this connection)."""
        if self.error:
            return
        try:
            self._close_segment()
        except (av.FFmpegError, OSError) as err:
            self.error = f"recording stopped: {err}"
            log.error("stream_id=%s %s", self.stream_id, self.error)
            self._abandon()
        finally:
            self.store.recording(self, active=False)


_GROWING_MKV = {"flush_packets": "1", "cluster_time_limit": "1000"}


def _recover(video: Path) -> Segment | None:
    """A segment left open by a crash (a file with no sidecar): store what of it can be read, else drop it.
    Its name is its start time in milliseconds; its duration is read from its packets."""
    try:
        start_s = int(video.stem.split("-", 1)[0]) / 1000
        with av.open(str(video)) as box:
            stream = box.streams.video[0]
            tb = stream.time_base or Fraction(1, 90000)
            ends = [(p.pts + (p.duration or 0)) * tb for p in box.demux(stream) if p.pts is not None]
            codec = stream.codec_context.name
    except (av.FFmpegError, OSError, ValueError, IndexError) as err:
        log.warning("dropping unreadable unfinished segment %s: %s", video, err)
        video.unlink(missing_ok=True)
        return None
    if not ends:
        video.unlink(missing_ok=True)
        return None
    seg = Segment(
        stream_id=video.parent.name,
        path=str(video),
        start_time_s=start_s,
        duration_s=float(max(ends)),
        size_bytes=video.stat().st_size,
        codec=codec,
        stored_at_s=video.stat().st_mtime,
    )
    video.with_suffix(".json").write_text(json.dumps(asdict(seg)))
    log.warning("recovered unfinished segment %s (%.1f s)", video, seg.duration_s)
    return seg


def read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk


def _safe(stream_id: str) -> str:
    """A single path component for `stream_id` whatever it holds: ids are checked at every entry
    (semcom.ids), and this is the last line of defence, so "..", "." and "/" can never leave the store."""
    name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in stream_id[:64])
    return name if name and not name.startswith(".") else "_" + name


@dataclass(frozen=True)
class _Part:
    """The piece of one stored file a clip takes: seconds from the file's start, and its absolute start."""

    path: Path
    start_s: float
    stop_s: float
    offset_s: float


def _same_picture(a: av.video.stream.VideoStream, b: av.video.stream.VideoStream) -> bool:
    return (a.codec_context.width, a.codec_context.height) == (b.codec_context.width, b.codec_context.height)


def _remux(parts: Sequence[_Part], dst: Path) -> None:
    """Copy the compressed packets of the range into MP4, re-timed so the parts follow each other."""
    with av.open(str(dst), "w", format="mp4") as out:
        template: av.video.stream.VideoStream | None = None
        ost: av.video.stream.VideoStream | None = None
        origin: Fraction | None = None  # absolute time of the first packet written
        last_dts: Fraction | None = None  # seconds from the origin
        for part in parts:
            with av.open(str(part.path)) as inp:
                ist = inp.streams.video[0]
                if template is None or ost is None:
                    template, ost = ist, out.add_stream_from_template(ist)
                elif not _same_picture(template, ist):
                    log.info("clip ends at %s: the picture size changes there", part.path.name)
                    return
                tb = ist.time_base or Fraction(1, 90000)
                if part.start_s > 0:
                    # Seek to the keyframe at or before the start: a clip must begin with a decodable frame.
                    inp.seek(int(part.start_s / tb), stream=ist, backward=True, any_frame=False)
                prev_dts: int | None = None
                for pkt in inp.demux(ist):
                    if pkt.pts is None:
                        continue
                    if pkt.pts * tb > part.stop_s:
                        break
                    if pkt.dts is None:
                        # Matroska stores presentation times only; its demuxer leaves a part's first dts out.
                        step = pkt.duration or 1
                        pkt.dts = min(pkt.pts, prev_dts + step if prev_dts is not None else pkt.pts - step)
                    prev_dts = pkt.dts
                    if origin is None:
                        origin = Fraction(part.offset_s) + pkt.dts * tb
                    shift = round((Fraction(part.offset_s) - origin) / tb)
                    pkt.pts += shift
                    pkt.dts += shift
                    if last_dts is not None and pkt.dts * tb <= last_dts:
                        continue  # overlaps the previous part; the muxer needs increasing timestamps
                    last_dts = pkt.dts * tb
                    pkt.stream = ost
                    out.mux(pkt)


def _transcode(parts: Sequence[_Part], dst: Path) -> None:
    """Decode the range and encode it as H.264, frames timed by their place in the stream."""
    with av.open(str(dst), "w", format="mp4") as out:
        ost: av.video.stream.VideoStream | None = None
        origin: float | None = None
        rate = Fraction(25)
        last = -1
        for part in parts:
            with av.open(str(part.path)) as inp:
                ist = inp.streams.video[0]
                if ost is None:
                    rate = ist.average_rate or ist.guessed_rate or Fraction(25)
                    ost = out.add_stream("libx264", rate=rate)
                    ost.width = ist.codec_context.width
                    ost.height = ist.codec_context.height
                    ost.pix_fmt = "yuv420p"
                    ost.options = {"preset": "veryfast", "crf": "23"}
                elif (ost.width, ost.height) != (ist.codec_context.width, ist.codec_context.height):
                    log.info("clip ends at %s: the picture size changes there", part.path.name)
                    break
                if part.start_s > 0 and ist.time_base:
                    inp.seek(int(part.start_s / ist.time_base), stream=ist, backward=True, any_frame=False)
                for frame in inp.decode(ist):
                    if frame.time is None or frame.time < part.start_s:
                        continue
                    if frame.time > part.stop_s:
                        break
                    at = part.offset_s + frame.time
                    origin = at if origin is None else origin
                    # Frames keep their place in time, and never share or go back on the last one's tick.
                    pts = max(last + 1, round((at - origin) * rate))
                    frame.pts, last = pts, pts
                    frame.time_base = Fraction(1) / rate
                    out.mux(ost.encode(frame))
        if ost is not None:
            out.mux(ost.encode(None))
