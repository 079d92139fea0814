"""Recording a pulled stream into rolling segments, and clips cut across segment boundaries."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import av
import pytest

from tests.fixtures.video import cut_video
from txd.clips import ClipStore, SegmentRecorder
from txd.config import ClipStoreConfig
from txd.video import DecodeProgress, iter_frames

T0 = 1_700_000_000.0


def _store(tmp_path: Path, **kw: float) -> ClipStore:
    return ClipStore(ClipStoreConfig(dir=tmp_path / "clips", **kw))


def _record(store: ClipStore, video: Path, stream_id: str, segment_s: float) -> tuple[SegmentRecorder, int]:
    """Decode the whole video, as a pulled source does, with a recorder on its packets."""
    recorder = SegmentRecorder(store, stream_id, start_time_s=T0, segment_s=segment_s)
    progress = DecodeProgress()
    for _ in iter_frames(video, fps=1.0, sink=recorder, progress=progress):
        pass
    recorder.close()
    return recorder, progress.frames_decoded


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as box:
        return [bytes(p) for p in box.demux(video=0) if p.size]


def test_segments_cover_the_stream_end_to_end(tmp_path: Path, shared_data: Path) -> None:
    store = _store(tmp_path)
    video = shared_data / "videos" / "tud_stadtmitte.mp4"  # 7.16 s, 25 fps, a keyframe every 0.48 s
    recorder, frames = _record(store, video, "street", segment_s=2.0)
    segs = recorder.segments
    assert frames == 179 and store.segments == segs
    # Each segment closes at the first keyframe after 2 s: 2.4 s, 2.4 s and the 2.36 s that are left.
    assert [round(s.duration_s, 2) for s in segs] == [2.4, 2.4, 2.36]
    assert segs[0].start_time_s == T0
    assert all(a.end_time_s == pytest.approx(b.start_time_s, abs=1e-6) for a, b in itertools.pairwise(segs))
    assert all(s.codec == "mpeg4" and s.path.endswith(".mkv") for s in segs)
    # Every packet is kept once: the segments hold exactly the original compressed packets.
    assert [p for s in segs for p in _packets(Path(s.path))] == _packets(video)
    span = store.find_span("street", T0 + 1.0, T0 + 4.0)
    assert span == segs[:2]
    clip = store.extract(span, T0 + 1.0, T0 + 4.0, tmp_path / "clip.mp4")
    with av.open(str(clip)) as box:
        times = [float(f.time) for f in box.decode(video=0) if f.time is not None]
    # Transcoded (MPEG-4 Part 2 is no MP4 browser codec), cut at frames: 3 s at 25 fps, +-1 frame per end.
    assert 74 <= len(times) <= 77 and times == sorted(times)
    assert times[-1] - times[0] == pytest.approx(3.0, abs=0.1)


def test_h264_clip_across_segments_is_remuxed(tmp_path: Path, shared_data: Path) -> None:
    source = tmp_path / "h264.mp4"
    # 10 fps H.264 with B-frames and a keyframe every second.
    cut_video(shared_data / "videos" / "intel_one_by_one_person_detection.mp4", source, 6.0)
    store = _store(tmp_path)
    recorder, frames = _record(store, source, "hall", segment_s=2.0)
    assert frames == 60
    assert [round(s.start_time_s - T0, 2) for s in recorder.segments] == [0.0, 2.0, 4.0]
    span = store.find_span("hall", T0 + 1.5, T0 + 4.5)
    assert len(span) == 3
    clip = store.extract(span, T0 + 1.5, T0 + 4.5, tmp_path / "clip.mp4")
    original = set(_packets(source))
    copied = _packets(clip)
    # The same compressed packets, not re-encoded: from the keyframe at 1 s to the frame at 4.5 s.
    assert all(p in original for p in copied) and 35 <= len(copied) <= 36
    with av.open(str(clip)) as box:
        codec = box.streams.video[0].codec_context.name
        decoded = list(box.decode(video=0))
    assert codec == "h264" and len(decoded) == len(copied)
    assert decoded[0].key_frame
    # The segments join without a gap or an overlap: one frame every 0.1 s throughout.
    steps = {round(float(b.time - a.time), 3) for a, b in itertools.pairwise(decoded)}
    assert steps == {0.1}


def test_a_stream_joined_mid_gop_is_recorded_from_its_first_keyframe(
    tmp_path: Path, shared_data: Path
) -> None:
    source = tmp_path / "h264.mp4"
    cut_video(shared_data / "videos" / "intel_one_by_one_person_detection.mp4", source, 3.0)
    store = _store(tmp_path)
    recorder = SegmentRecorder(store, "late", start_time_s=T0, segment_s=60.0)
    with av.open(str(source)) as box:
        recorder.open(box.streams.video[0])
        packets = [p for p in box.demux(video=0) if p.size]
        keyframe = next(i for i, p in enumerate(packets) if i > 3 and p.is_keyframe)
        expected = [bytes(p) for p in packets[keyframe:]]
        for p in packets[3:]:  # the first keyframe is missed, as when a camera is joined mid-GOP
            recorder.write(p)
    recorder.close()
    (seg,) = recorder.segments
    assert _packets(Path(seg.path)) == expected
    assert seg.start_time_s == T0 and seg.duration_s == pytest.approx(2.0, abs=0.05)


def test_retention_applies_to_segments_while_recording(tmp_path: Path, shared_data: Path) -> None:
    video = shared_data / "videos" / "tud_stadtmitte.mp4"
    store = _store(tmp_path, max_bytes=video.stat().st_size // 2)
    recorder, _ = _record(store, video, "street", segment_s=1.0)
    kept = store.segments
    assert len(recorder.segments) == 5  # 1.44 s each (keyframes every 0.48 s)
    assert 0 < len(kept) < len(recorder.segments)
    assert kept == recorder.segments[-len(kept) :]  # the oldest went first
    assert sum(s.size_bytes for s in kept) <= store.cfg.max_bytes
    assert sorted(p.name for p in (tmp_path / "clips" / "street").glob("*.mkv")) == sorted(
        Path(s.path).name for s in kept
    )


def test_a_recording_failure_stops_the_recording_not_the_decoding(tmp_path: Path, shared_data: Path) -> None:
    store = _store(tmp_path)
    (store.root / "cam").write_bytes(b"")  # a file where the stream's folder goes: segments cannot be written
    recorder, frames = _record(store, shared_data / "videos" / "tud_campus.mp4", "cam", segment_s=1.0)
    assert frames == 71
    assert recorder.error.startswith("recording stopped") and recorder.segments == []


def _record_part(store: ClipStore, video: Path, stream_id: str, seconds: float) -> SegmentRecorder:
    """Feed the first `seconds` of `video` to a recorder and leave its segment open, as a live source does."""
    recorder = SegmentRecorder(store, stream_id, start_time_s=T0, segment_s=60.0)
    with av.open(str(video)) as box:
        stream = box.streams.video[0]
        recorder.open(stream)
        for p in box.demux(stream):
            if p.size and p.pts is not None and p.pts * (stream.time_base or 1) < seconds:
                recorder.write(p)
    return recorder


def test_the_segment_being_recorded_can_be_cut(tmp_path: Path, shared_data: Path) -> None:
    """The newest seconds of a live stream are in a segment that is still open: clips come from it too."""
    store = _store(tmp_path)
    video = shared_data / "videos" / "tud_stadtmitte.mp4"  # 25 fps, a keyframe every 0.48 s
    recorder = _record_part(store, video, "street", 5.0)
    assert store.segments == []
    (live,) = store.live_segments()
    assert live.start_time_s == T0 and live.duration_s == pytest.approx(5.0, abs=0.05)
    assert store.find_span("street", T0 + 3.0, T0 + 4.5) == [live]
    clip = store.extract([live], T0 + 3.0, T0 + 4.5, tmp_path / "live.mp4")
    with av.open(str(clip)) as box:
        times = [float(f.time) for f in box.decode(video=0) if f.time is not None]
    assert 36 <= len(times) <= 39  # 1.5 s at 25 fps, +-1 frame per end
    recorder.close()
    (stored,) = store.segments
    assert store.live_segments() == [] and stored.path == live.path
    assert store.find_span("street", T0 + 3.0, T0 + 4.5) == [stored]


def test_a_segment_left_open_by_a_crash_is_recovered(tmp_path: Path, shared_data: Path) -> None:
    """After a crash the open segment has no sidecar: the next start stores what of it can be read and
    drops what cannot."""
    video = shared_data / "videos" / "tud_stadtmitte.mp4"
    recorder = _record_part(_store(tmp_path / "before"), video, "street", 4.0)
    (live,) = recorder.store.live_segments()
    folder = tmp_path / "clips" / "street"
    folder.mkdir(parents=True)
    shutil.copy(live.path, folder / Path(live.path).name)  # the file as the crash left it
    (folder / f"{int(T0 * 1000) + 9000}.mkv").write_bytes(b"\x1a\x45\xdf\xa3 cut short")
    store = _store(tmp_path)
    (seg,) = store.segments
    assert seg.stream_id == "street" and seg.start_time_s == T0 and seg.codec == "mpeg4"
    assert 3.0 <= seg.duration_s <= 4.05  # up to the last cluster flushed
    assert sorted(p.name for p in folder.iterdir()) == sorted([Path(seg.path).name, f"{int(T0 * 1000)}.json"])
    assert _store(tmp_path).segments == [seg]  # stored now: the next start reads its sidecar
    recorder.close()
