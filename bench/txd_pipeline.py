"""The transmitter pipeline in-process on one or several streams: rate per stage, real-time factor, memory.

Runs what txd runs (txd.analysis.StreamAnalysis on one SharedModels: the configured perception and
understanding, the embedded CPU models by default, the daemon's two-worker executor): PyAV decode at the
analysis rate -> detect -> embed -> track -> keyframes -> understanding, then frames each stream's records
with the codec as the link does (records submitted within one `link.batch_delay_s` share a burst, at most
`link.max_records_per_burst`) and maps each frame to channel symbols with the configured MCS.

`--streams N` runs N copies of the video at once on the same models, as N uploads or cameras would; each
stream's real-time factor (video seconds per wall second) must stay >= 1.0 to keep up with a live camera at
this analysis rate. Several counts (`--streams 1 2 4`) run one process each, so that each peak memory is its
own, and end with a table of the memory each extra stream costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from semcom.burst import build_burst, parse_mcs
from semcom.codec import encode_records, split_frames
from semcom.config import ConfigError, load_config
from semcom.data import demo_video
from semcom.pb.v1 import link_pb2
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry
from txd.analysis import SharedModels, StreamAnalysis, StreamRun, StreamSpec
from txd.config import TxdConfig
from txd.timing import StageTimes
from txd.understanding.base import UNDERSTANDERS


@dataclass
class Result:
    """One stream's pass over the video and what each stage cost."""

    stream_id: str
    run: StreamRun
    wall_s: float = 0.0
    records: list[Record] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    channel_symbols: int = 0

    @property
    def times(self) -> StageTimes:
        return self.run.times

    @property
    def realtime_factor(self) -> float:
        return self.run.decode.duration_s / self.wall_s if self.wall_s > 0 else 0.0


async def run_streams(video: str | Path, cfg: TxdConfig, streams: int) -> tuple[list[Result], SharedModels]:
    """Analyse `streams` copies of the video at once on one set of models, as txd does."""
    if cfg.perception is None:
        raise SystemExit("perception is disabled (perception = null): nothing to benchmark")
    perception = cfg.perception
    schema = SchemaRegistry.builtin().get(cfg.site.schema_id)
    understander = UNDERSTANDERS.load(cfg.understanding.kind)(cfg.understanding)
    start_time_s = float(int(time.time()))
    # The daemon's executor: two workers shared by the models of every stream.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="txd") as executor:
        models = SharedModels(perception.models(), understander, executor)
        results: list[Result] = []
        analyses: list[StreamAnalysis] = []
        for k in range(streams):
            spec = StreamSpec(f"bench-{k + 1}", cfg.site.location_id, start_time_s)
            records: list[Record] = []

            async def submit(rec: Record, records: list[Record] = records) -> Record:
                # Numbered as txd's core numbers them: consecutive per stream, which the codec relies on.
                rec = replace(rec, record_id=len(records) + 1, fields=schema.normalise(rec.fields))
                records.append(rec)
                return rec

            analysis = StreamAnalysis(models, perception, schema, spec, submit, executor)
            analyses.append(analysis)
            results.append(Result(spec.stream_id, analysis.run_state, records=records))

        async def one(analysis: StreamAnalysis, result: Result) -> None:
            started = time.perf_counter()
            await analysis.run(video)
            result.wall_s = time.perf_counter() - started

        await asyncio.gather(*(one(a, r) for a, r in zip(analyses, results, strict=True)))
        await models.aclose()
    for result in results:
        frame_records(result, schema, cfg)
    return results, models


def frame_records(result: Result, schema: Schema, cfg: TxdConfig) -> None:
    """Pack the records into frames as the link does and map them to symbols; times go to `codec`/`phy`."""
    started = time.perf_counter()
    batches: dict[int, list[Record]] = {}
    window = cfg.link.batch_delay_s or 1e-9
    for rec in result.records:
        batches.setdefault(int((rec.time_s - result.records[0].time_s) / window), []).append(rec)
    for batch in batches.values():
        for chunk in split_frames(batch, schema, max_records=cfg.link.max_records_per_burst):
            result.frames.append(encode_records(chunk, schema))
    result.times.add("codec", time.perf_counter() - started)
    mcs = parse_mcs(cfg.link.mcs)

    def burst(seq: int, frame: bytes) -> link_pb2.Burst:
        return build_burst(
            frame,
            stream_id=result.stream_id,
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
    # A stage that did not run (the colour stage with masks and white balance off) shows no rate.
    return f"{n / seconds:8.1f}/s" if seconds >= 1e-3 else "       -  "


def report_stream(r: Result, cfg: TxdConfig) -> None:
    t, d = r.times, r.run.decode
    print(f"{r.stream_id}: {d.duration_s:.1f} s of video, ", end="")
    print(f"{d.frames_decoded} frames decoded, {t.frames_analysed} analysed")
    rows = [
        ("decode", d.frames_decoded, "frames decoded (PyAV, BGR for analysed ones)"),
        ("detect", t.frames_analysed, f"analysed frames; {t.detections} detections"),
        ("embed", t.frames_analysed, "analysed frames (appearance for tracking)"),
        ("track", t.frames_analysed, "analysed frames"),
        ("colour", t.frames_analysed, "analysed frames (person masks, site white balance)"),
        ("keyframes", t.frames_analysed, f"analysed frames; {t.keyframes} keyframes"),
        (
            "understand",
            t.views_understood,
            f"views understood (crops of {t.keyframes} emissions, fused per track)",
        ),
        ("submit", len(r.records), "records handed on"),
        ("codec", len(r.records), f"records into {len(r.frames)} frames"),
        ("phy", len(r.frames), f"frames into bursts ({cfg.link.mcs})"),
    ]
    print(f"  {'stage':<11}{'seconds':>9}{'rate':>12}  per")
    for name, n, what in rows:
        print(f"  {name:<11}{t.seconds[name]:9.2f}{_rate(n, t.seconds[name])}  {what}")
    per_frame_ms = 1000 * t.seconds["understand"] / max(t.frames_analysed, 1)
    print(f"  understanding cost per analysed frame: {per_frame_ms:.1f} ms")
    bits = sum(8 * len(f) for f in r.frames)
    per_record = bits / len(r.records) if r.records else 0.0
    print(
        f"  records {len(r.records)}, tracks {len({rec.track_id for rec in r.records})}, "
        f"frames {len(r.frames)}, {bits} bits ({per_record:.1f} bits/record incl. framing), "
        f"{r.channel_symbols} channel symbols"
    )
    print(f"  wall {r.wall_s:.1f} s, real-time factor {r.realtime_factor:.2f}x (video s / wall s)")


def report(results: Sequence[Result], models: SharedModels, cfg: TxdConfig) -> None:
    fps = cfg.perception.analysis_fps if cfg.perception else None
    detector = type(models.perception.detector).__name__
    print(f"{len(results)} stream(s), analysis rate {fps} frames/s each, detector {detector}, ", end="")
    print(f"understanding {cfg.understanding.kind}, models shared")
    for r in results:
        report_stream(r, cfg)
    d, e = models.detect.stats, models.embed.stats if models.embed is not None else None
    line = f"batching: detection {d.calls} frames in {d.batches} calls "
    line += f"(mean {d.mean_batch:.2f}, largest {d.largest})"
    if e is not None:
        line += f"; appearance {e.calls} frames in {e.batches} calls (mean {e.mean_batch:.2f})"
    print(line)
    factors = ", ".join(f"{r.realtime_factor:.2f}x" for r in results)
    print(f"real-time factor per stream: {factors} (lowest {min(r.realtime_factor for r in results):.2f}x)")
    print(f"peak memory: ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    load1, load5, _ = os.getloadavg()
    print(f"load average at the end: {load1:.2f} (1 min), {load5:.2f} (5 min) on {os.cpu_count()} CPUs")


def compare(counts: Sequence[int], argv: Sequence[str]) -> None:
    """Each count in a process of its own; then the memory each extra stream cost."""
    peaks: dict[int, float] = {}
    lowest: dict[int, float] = {}
    for n in counts:
        print(f"=== --streams {n}", flush=True)
        out = subprocess.run(
            [sys.executable, "-m", "bench.txd_pipeline", *argv, "--streams", str(n)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        print(out, flush=True)
        peaks[n] = float(re.search(r"ru_maxrss (\d+) MiB", out).group(1))  # type: ignore[union-attr]
        lowest[n] = float(re.search(r"lowest ([\d.]+)x", out).group(1))  # type: ignore[union-attr]
    base = min(counts)
    print(f"{'streams':>8}{'lowest real-time factor':>26}{'peak RSS MiB':>14}{'per extra stream':>18}")
    for n in counts:
        extra = (peaks[n] - peaks[base]) / (n - base) if n > base else float("nan")
        print(f"{n:>8}{lowest[n]:>25.2f}x{peaks[n]:>14.0f}{extra:>17.0f}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.txd_pipeline", description=__doc__)
    p.add_argument("--video", default=None, help="file or URL; default: the PETS09 demo video")
    p.add_argument(
        "--streams",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="streams analysed at once on shared models; several counts run one process each (default 1)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a txd setting, e.g. perception.analysis_fps=10 (default: the embedded defaults)",
    )
    args = p.parse_args(argv)
    if any(n < 1 for n in args.streams):
        p.error("--streams takes counts >= 1")
    if len(args.streams) > 1:
        child = (["--video", args.video] if args.video else []) + [f"--set={kv}" for kv in args.set]
        compare(sorted(set(args.streams)), child)
        return
    try:
        cfg = load_config(TxdConfig, overrides=args.set)
    except ConfigError as err:
        raise SystemExit(str(err)) from err
    results, models = asyncio.run(run_streams(args.video or demo_video(), cfg, args.streams[0]))
    report(results, models, cfg)


if __name__ == "__main__":
    main()
