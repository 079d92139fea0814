"""The clip store: each stream's original video kept on site, cut into playable MP4 clips on demand."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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
_EXTENSIONS = {"avi": ".avi", "matroska,webm": ".mkv", "mpegts": ".ts", "mov,mp4,m4a,3gp,3g2,mj2": ".mp4"}


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
        self._segments: list[Segment] = sorted(self._scan(), key=lambda s: s.stored_at_s)

    def _scan(self) -> Iterator[Segment]:
        for meta in self.root.glob("*/*.json"):
            try:
                seg = Segment(**json.loads(meta.read_text()))
            except (OSError, ValueError, TypeError) as err:
                log.warning("ignoring unreadable clip sidecar %s: %s", meta, err)
                continue
            if Path(seg.path).is_file():
                yield seg

    def incoming_path(self, stream_id: str) -> Path:
        return self.incoming / f"{stream_id}.{time.time_ns()}"

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
        """Move a fully received video into the store and apply retention."""
        folder = self.root / _safe(stream_id)
        folder.mkdir(exist_ok=True)
        dest = folder / f"{int(start_time_s * 1000)}{_EXTENSIONS.get(container, '.bin')}"
        shutil.move(str(spooled), dest)
        seg = Segment(
            stream_id=stream_id,
            path=str(dest),
            start_time_s=start_time_s,
            duration_s=duration_s,
            size_bytes=dest.stat().st_size,
            codec=codec,
            stored_at_s=time.time(),
        )
        dest.with_suffix(".json").write_text(json.dumps(asdict(seg)))
        self._segments.append(seg)
        self.enforce_retention()
        return seg

    def enforce_retention(self, now_s: float | None = None) -> list[Segment]:
        """Drop the oldest segments beyond max_bytes, and any older than max_age_s."""
        now_s = time.time() if now_s is None else now_s
        dropped: list[Segment] = []
        while self._segments and (
            sum(s.size_bytes for s in self._segments) > self.cfg.max_bytes
            or now_s - self._segments[0].stored_at_s > self.cfg.max_age_s
        ):
            seg = self._segments.pop(0)
            Path(seg.path).unlink(missing_ok=True)
            Path(seg.path).with_suffix(".json").unlink(missing_ok=True)
            dropped.append(seg)
            log.info("clip store dropped stream_id=%s segment %s", seg.stream_id, Path(seg.path).name)
        return dropped

    @property
    def segments(self) -> list[Segment]:
        return list(self._segments)

    def find(self, stream_id: str, t0_s: float, t1_s: float) -> Segment:
        """The stored segment of `stream_id` that overlaps [t0_s, t1_s] the most."""
        if not t1_s > t0_s:
            raise InvalidInput(f"clip range must have t1_s > t0_s, got {t0_s}..{t1_s}")
        if t1_s - t0_s > self.cfg.max_clip_s:
            raise InvalidInput(
                f"clip of {t1_s - t0_s:.1f} s exceeds clips.max_clip_s ({self.cfg.max_clip_s} s)"
            )
        best, overlap = None, 0.0
        for seg in self._segments:
            if seg.stream_id == stream_id:
                o = min(t1_s, seg.end_time_s) - max(t0_s, seg.start_time_s)
                if o > overlap:
                    best, overlap = seg, o
        if best is None:
            known = sorted({s.stream_id for s in self._segments})
            raise NotFound(
                f"no stored video of stream {stream_id!r} covers {t0_s:.1f}..{t1_s:.1f}"
                + (f" (streams stored: {', '.join(known)})" if known else " (the store is empty)")
            )
        return best

    def extract(self, seg: Segment, t0_s: float, t1_s: float, out: Path) -> Path:
        """Write [t0_s, t1_s] of the segment to `out` as MP4 (blocking; run it on an executor)."""
        start = max(0.0, t0_s - seg.start_time_s)
        stop = min(seg.duration_s, t1_s - seg.start_time_s)
        try:
            if seg.codec in MP4_REMUX_CODECS:
                _remux(Path(seg.path), out, start, stop)
            else:
                _transcode(Path(seg.path), out, start, stop)
        except av.FFmpegError as err:
            raise InvalidInput(f"cannot cut the clip from {Path(seg.path).name}: {err}") from err
        return out


def read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk


def _safe(stream_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stream_id) or "_"


def _remux(src: Path, dst: Path, start_s: float, stop_s: float) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        tb = ist.time_base or Fraction(1, 90000)
        # Seek to the keyframe at or before the start: a clip must begin with a decodable frame.
        inp.seek(int(start_s / tb), stream=ist, backward=True, any_frame=False)
        first: int | None = None
        for pkt in inp.demux(ist):
            if pkt.pts is None or pkt.dts is None:
                continue
            if pkt.pts * tb > stop_s:
                break
            first = pkt.dts if first is None else first
            pkt.pts -= first
            pkt.dts -= first
            pkt.stream = ost
            out.mux(pkt)


def _transcode(src: Path, dst: Path, start_s: float, stop_s: float) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        ist = inp.streams.video[0]
        rate = ist.average_rate or ist.guessed_rate or Fraction(25)
        ost = out.add_stream("libx264", rate=rate)
        ost.width = ist.codec_context.width
        ost.height = ist.codec_context.height
        ost.pix_fmt = "yuv420p"
        ost.options = {"preset": "veryfast", "crf": "23"}
        if start_s > 0 and ist.time_base:
            inp.seek(int(start_s / ist.time_base), stream=ist, backward=True, any_frame=False)
        n = 0
        for frame in inp.decode(ist):
            if frame.time is None or frame.time < start_s:
                continue
            if frame.time > stop_s:
                break
            frame.pts = n
            frame.time_base = Fraction(1) / rate
            n += 1
            out.mux(ost.encode(frame))
        out.mux(ost.encode(None))
