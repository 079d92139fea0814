"""The transmitter pipeline in-process on a video: frames/s per stage, real-time factor and peak memory.

Runs what txd runs for a stream (txd.pipeline.StreamPipeline with the configured perception and understanding,
the embedded CPU models by default): PyAV decode at the analysis rate -> detect -> track -> keyframes ->
attribute understanding, then frames the records with the codec as the link does (records published within
one `link.batch_delay_s` share a burst, at most `link.max_records_per_burst`) and maps each frame to channel
symbols with the configured MCS. The real-time factor is video seconds per wall second: >= 1.0 keeps up with
a live camera at this analysis rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from semcom.burst import build_burst, parse_mcs
from semcom.codec import encode_records, split_frames
from semcom.config import ConfigError, load_config
from semcom.data import demo_video
from semcom.pb.v1 import link_pb2
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry
from txd.app import UNDERSTANDERS
from txd.config import TxdConfig
from txd.perception.pipeline import PerceptionPipeline
from txd.pipeline import StageTimes, StreamPipeline, StreamRun
from txd.understanding.base import Understanding


@dataclass
class Result:
    """One pass over a video and what each stage cost."""

    video: str
    run: StreamRun
    perception: PerceptionPipeline
    wall_s: float
    records: list[Record] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    channel_symbols: int = 0
    peak_rss_mib: float = 0.0
    peak_python_mib: float | None = None

    @property
    def times(self) -> StageTimes:
        return self.run.times


def run_pipeline(video: str | Path, cfg: TxdConfig) -> Result:
    """Decode, perceive and understand the whole video as txd does, then frame the records."""
    if cfg.perception is None:
        raise SystemExit("perception is disabled (perception = null): nothing to benchmark")
    schema = SchemaRegistry.builtin().get(cfg.site.schema_id)
    perception = cfg.perception.model_copy(update={"analysis_fps": None}).build()
    understander = UNDERSTANDERS.load(cfg.understanding.kind)(cfg.understanding)
    start_time_s = float(int(time.time()))
    records: list[Record] = []

    async def publish(track_id: int, time_s: float, seen: Understanding) -> None:
        records.append(
            Record(
                schema_id=schema.id,
                stream_id="bench",
                track_id=track_id,
                record_id=len(records) + 1,
                time_s=start_time_s + time_s,
                location_id=cfg.site.location_id,
                fields=schema.normalise(seen.fields),
                confidence=seen.confidence,
            )
        )

    # The daemon's executor: two workers shared by the models of every stream.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="txd") as executor:
        pipeline = StreamPipeline(
            perception,
            understander,
            schema,
            publish,
            executor,
            analysis_fps=cfg.perception.analysis_fps,
        )
        started = time.perf_counter()
        run = asyncio.run(pipeline.run(video))
        wall_s = time.perf_counter() - started
    result = Result(str(video), run, perception, wall_s, records)
    frame_records(result, schema, cfg)
    return result


def frame_records(result: Result, schema: Schema, cfg: TxdConfig) -> None:
    """Pack the records into frames as LinkSender does and map them to symbols; times go to `codec`/`phy`."""
    started = time.perf_counter()
    batches: dict[int, list[Record]] = {}
    window = cfg.link.batch_delay_s or 1e-9
    for rec in result.records:
        batches.setdefault(int((rec.time_s - result.records[0].time_s) / window), []).append(rec)
    limit = cfg.link.max_records_per_burst
    for batch in batches.values():
        for start in range(0, len(batch), limit):
            for chunk in split_frames(batch[start : start + limit], schema, max_records=limit):
                result.frames.append(encode_records(chunk, schema))
    result.times.add("codec", time.perf_counter() - started)
    mcs = parse_mcs(cfg.link.mcs)

    def burst(seq: int, frame: bytes) -> link_pb2.Burst:
        return build_burst(
            frame,
            stream_id="bench",
            sequence=seq,
            schema_id=schema.id,
            kind=link_pb2.PAYLOAD_KIND_RECORDS,
            record_count=0,
            mcs=mcs,
            pilot_count=cfg.link.pilot_symbols,
        )

    burst(0, encode_records([], schema))  # numba compiles the LDPC encoder on first use: not timed
    started = time.perf_counter()
    for seq, frame in enumerate(result.frames, 1):
        result.channel_symbols += burst(seq, frame).payload.shape[0] if mcs is not None else 0
    result.times.add("phy", time.perf_counter() - started)


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f}/s" if seconds > 0 else "       -  "


def report(r: Result, cfg: TxdConfig) -> None:
    t, p, d = r.times, r.perception.times, r.run.decode
    video_s = d.duration_s
    print(
        f"{r.video}: {video_s:.1f} s of video, {d.frames_decoded} frames decoded, "
        f"{t.frames_analysed} analysed"
    )
    print(f"  analysis rate {cfg.perception.analysis_fps if cfg.perception else None} frames/s, ", end="")
    print(f"detector {type(r.perception.detector).__name__}, understanding {cfg.understanding.kind}")
    rows = [
        ("decode", d.frames_decoded, t.seconds["decode"], "frames decoded (PyAV, BGR for analysed ones)"),
        ("detect", t.frames_analysed, p.detect_s, f"analysed frames; {p.detections} detections"),
        ("track", t.frames_analysed, p.track_s, "analysed frames"),
        ("keyframes", t.frames_analysed, p.keyframe_s, f"analysed frames; {t.keyframes} keyframes"),
        ("understand", t.keyframes, t.seconds["understand"], "crops"),
        ("codec", len(r.records), t.seconds["codec"], f"records into {len(r.frames)} frames"),
        ("phy", len(r.frames), t.seconds["phy"], f"frames into bursts ({cfg.link.mcs})"),
    ]
    print(f"  {'stage':<11}{'seconds':>9}{'rate':>12}  per")
    for name, n, seconds, what in rows:
        print(f"  {name:<11}{seconds:9.2f}{_rate(n, seconds)}  {what}")
    understand_fps = _rate(t.frames_analysed, t.seconds["understand"]).strip()
    print(f"  understand per analysed frame: {understand_fps}")
    analysed_s = p.detect_s + p.track_s + p.keyframe_s + t.seconds["understand"]
    print(f"  analysis (detect+track+keyframes+understand): {_rate(t.frames_analysed, analysed_s).strip()}")
    bits = sum(8 * len(f) for f in r.frames)
    per_record = bits / len(r.records) if r.records else 0.0
    print(
        f"  records {len(r.records)}, tracks {len({rec.track_id for rec in r.records})}, "
        f"frames {len(r.frames)}, {bits} bits ({per_record:.1f} bits/record incl. framing), "
        f"{r.channel_symbols} channel symbols"
    )
    print(f"  wall {r.wall_s:.1f} s, real-time factor {video_s / r.wall_s:.2f}x (video s / wall s)")
    peak = f"  peak memory: ru_maxrss {r.peak_rss_mib:.0f} MiB"
    if r.peak_python_mib is not None:
        peak += f", tracemalloc (Python heap) {r.peak_python_mib:.0f} MiB"
    print(peak)
    load1, load5, _ = os.getloadavg()
    print(f"  load average during the run: {load1:.2f} (1 min), {load5:.2f} (5 min) on {os.cpu_count()} CPUs")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.txd_pipeline", description=__doc__)
    p.add_argument("--video", default=None, help="file or URL; default: the PETS09 demo video")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a txd setting, e.g. perception.analysis_fps=10 (default: the embedded defaults)",
    )
    p.add_argument("--tracemalloc", action="store_true", help="also trace the Python heap's peak (slower)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(TxdConfig, overrides=args.set)
    except ConfigError as err:
        raise SystemExit(str(err)) from err
    if args.tracemalloc:
        tracemalloc.start()
    result = run_pipeline(args.video or demo_video(), cfg)
    if args.tracemalloc:
        result.peak_python_mib = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    result.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report(result, cfg)


if __name__ == "__main__":
    main()
