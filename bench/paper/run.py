"""Runs the case study: prepare each scheme once, then every (scheme, SNR, seed) point, then the report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from semcom.burst import parse_mcs
from semcom.config import ConfigError, load_config
from semcom.errors import InvalidInput
from semcom.schema import Schema, SchemaRegistry
from txd.understanding.base import Understander

from .config import PAPER_SNR_DB, PaperConfig
from .labels import load_crop_set, load_video_labels
from .links import Air, LinkSettings, channel_models
from .metrics import MemoEncoder, QueryScore, Receiver, score
from .queries import PaperQuery, generate_queries, load_queries
from .schemes import (
    CropDataset,
    Received,
    Scheme,
    TraditionalSettings,
    VideoDataset,
    Workbench,
    build_scheme,
    check_dataset,
)

log = logging.getLogger(__name__)


@dataclass
class PointResult:
    """One (scheme, SNR, seed) point."""

    scheme: str
    snr_db: float
    seed_index: int
    received: Received
    scores: list[QueryScore]
    wall_s: float


@dataclass
class RunState:
    """Everything a report needs."""

    config: PaperConfig
    schema: Schema
    dataset: VideoDataset | CropDataset
    queries: list[PaperQuery]
    points: list[PointResult] = field(default_factory=list)
    prepare_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _dataset(cfg: PaperConfig, schema: Schema) -> VideoDataset | CropDataset:
    if cfg.crops is not None:
        return CropDataset(load_crop_set(cfg.crops, schema, max_crops=cfg.max_crops, seed=cfg.seed))
    assert cfg.video is not None and cfg.labels is not None
    if not cfg.video.is_file():
        raise InvalidInput(f"video {cfg.video} does not exist")
    labels = load_video_labels(cfg.labels, schema)
    if cfg.clip_s is not None:
        kept = tuple(t for t in labels.targets if t.start_s < cfg.clip_s)
        labels = type(labels)(labels.path, kept, labels.fields)
    dataset = VideoDataset(cfg.video, labels, cfg.tolerance_s, cfg.clip_s)
    check_dataset(dataset)
    return dataset


def _point_seed(seed: int, snr_index: int, repeat: int) -> int:
    """An independent, reproducible channel seed per (run seed, SNR point, repeat)."""
    return int(np.random.SeedSequence([seed, snr_index, repeat]).generate_state(1)[0])


def build(
    cfg: PaperConfig, understander: Callable[[], Understander] | None = None
) -> tuple[Workbench, list[PaperQuery], Receiver]:
    """Load configs, data and queries; build the workbench and the receiver's models.

    `understander` replaces the backend txd's config names (a test or an experiment with another model).
    """
    from rxd.app import build_describer, build_query_parser
    from rxd.config import RxdConfig
    from rxd.retrieval.embed import Embedder
    from txd.app import UNDERSTANDERS
    from txd.config import TxdConfig
    from txd.perception.pipeline import PerceptionConfig

    txd_cfg = load_config(TxdConfig, path=cfg.txd_config) if cfg.txd_config else TxdConfig()
    rxd_cfg = load_config(RxdConfig, path=cfg.rxd_config) if cfg.rxd_config else RxdConfig()
    for snr in cfg.snr_db:
        channel_models(cfg.channel, snr)
    registry = SchemaRegistry.builtin()
    schema = registry.get(txd_cfg.site.schema_id)
    dataset = _dataset(cfg, schema)
    if cfg.queries is not None:
        queries = load_queries(cfg.queries, schema)
    else:
        queries = generate_queries(
            dataset.targets, schema, max_combinations=cfg.max_combinations, seed=cfg.seed
        )
    semantic_mcs = parse_mcs(cfg.semantic_mcs or txd_cfg.link.mcs)
    traditional_mcs = parse_mcs(cfg.traditional_mcs)
    if semantic_mcs is None or traditional_mcs is None:
        raise InvalidInput("both links need a physical layer: txd's link.mcs is 'bytes'; pass --semantic-mcs")
    perception = txd_cfg.perception or PerceptionConfig()
    bench = Workbench(
        dataset=dataset,
        schema=schema,
        registry=registry,
        link=LinkSettings(
            semantic_mcs,
            txd_cfg.link.pilot_symbols,
            txd_cfg.link.max_records_per_burst,
            rxd_cfg.link.ldpc_iterations,
        ),
        traditional=TraditionalSettings(
            traditional_mcs,
            txd_cfg.link.pilot_symbols,
            cfg.burst_bytes,
            cfg.video_bitrate_kbps,
            cfg.gop_s,
            cfg.x264_preset,
            cfg.sampling,
            cfg.probe_bursts,
        ),
        perception=perception,
        make_understander=understander
        or (lambda: UNDERSTANDERS.load(txd_cfg.understanding.kind)(txd_cfg.understanding)),
        analysis_fps=cfg.analysis_fps or perception.analysis_fps,
    )
    receiver = Receiver(
        describer=build_describer(rxd_cfg.generate),
        encoder=MemoEncoder(
            Embedder(rxd_cfg.embedder.model_path, batch_size=rxd_cfg.embedder.batch_size, threads=1)
        ),
        parser=build_query_parser(rxd_cfg.query.parser),
    )
    return bench, queries, receiver


def run_paper(
    cfg: PaperConfig,
    *,
    progress: bool = True,
    command: str = "",
    understander: Callable[[], Understander] | None = None,
) -> RunState:
    """The whole benchmark; returns the state the report is written from."""
    started = time.perf_counter()
    bench, queries, receiver = build(cfg, understander)
    try:
        return _run(cfg, bench, queries, receiver, progress=progress, command=command, started=started)
    finally:
        receiver.parser.close()


def _run(
    cfg: PaperConfig,
    bench: Workbench,
    queries: list[PaperQuery],
    receiver: Receiver,
    *,
    progress: bool,
    command: str,
    started: float,
) -> RunState:
    state = RunState(cfg, bench.schema, bench.dataset, queries, command=command)
    schemes: list[Scheme] = [build_scheme(name) for name in cfg.schemes]
    for scheme in tqdm(schemes, desc="prepare", unit="scheme", disable=not progress):
        t0 = time.perf_counter()
        scheme.prepare(bench)
        state.prepare_s[scheme.name] = time.perf_counter() - t0
    grid = [(s, i, snr, r) for s in schemes for i, snr in enumerate(cfg.snr_db) for r in range(cfg.seeds)]
    bar = tqdm(grid, desc="points", unit="point", disable=not progress)
    for scheme, index, snr, repeat in bar:
        bar.set_postfix_str(f"{scheme.name} {snr:g} dB")
        t0 = time.perf_counter()
        air = Air(
            channel_models(cfg.channel, snr),
            _point_seed(cfg.seed, index, repeat),
            ldpc_iterations=bench.link.ldpc_iterations,
        )
        received = scheme.run(bench, air)
        scores = score(
            received.records,
            queries,
            bench.dataset,
            registry=bench.registry,
            schema=bench.schema,
            receiver=receiver,
            top_k=cfg.top_k,
            match=cfg.match,
        )
        state.points.append(PointResult(scheme.name, snr, repeat, received, scores, time.perf_counter() - t0))
    link, trad = bench.link, bench.traditional
    state.extra["links"] = {
        "semantic": f"{link.mcs}, {link.pilot_symbols} pilots, at most {link.max_records_per_burst} records "
        f"per frame, {link.ldpc_iterations} LDPC iterations, no retransmission",
        "traditional": f"{trad.mcs}, {trad.pilot_symbols} pilots, {trad.burst_bytes} bytes per burst, "
        f"{link.ldpc_iterations} LDPC iterations, no retransmission, sampling {trad.sampling} "
        f"({trad.probe_bursts} probe bursts)",
    }
    state.wall_s = time.perf_counter() - started
    state.load = os.getloadavg()
    if "perceiver" in bench.__dict__:  # cached_property: present once perception ran
        perceiver = bench.perceiver
        state.extra["perception"] = {
            "frames_analysed": perceiver.frames_analysed,
            "detector_calls": perceiver.detector.calls,
        }
    if "encoded_video" in bench.__dict__:
        enc = bench.encoded_video
        state.extra["h264"] = {
            "frames": enc.frames,
            "fps": enc.fps,
            "duration_s": enc.duration_s,
            "ts_bytes": len(enc.data),
            "bitrate_kbps": enc.bitrate_kbps,
            "gop_frames": enc.gop_frames,
        }
    return state


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command line of `semcom bench paper` / `python -m bench.paper`."""
    d = PaperConfig.model_fields
    src = p.add_argument_group("input (a labelled video, or a labelled crop set)")
    src.add_argument("--video", type=Path, help=d["video"].description)
    src.add_argument("--labels", type=Path, help=d["labels"].description)
    src.add_argument("--crops", type=Path, help=d["crops"].description)
    src.add_argument("--clip-s", type=float, help=d["clip_s"].description)
    src.add_argument("--max-crops", type=int, default=2000, help=d["max_crops"].description)
    src.add_argument("--tolerance-s", type=float, default=1.0, help=d["tolerance_s"].description)
    run = p.add_argument_group("schemes, channel, queries")
    run.add_argument("--schemes", default=",".join(d["schemes"].default), help="comma-separated")
    run.add_argument(
        "--snr-db", default=",".join(f"{s:g}" for s in PAPER_SNR_DB), help="comma-separated Es/N0 points, dB"
    )
    run.add_argument("--channel", default='[{"kind": "awgn"}]', help="JSON list of channel-sim models")
    run.add_argument("--seeds", type=int, default=1, help=d["seeds"].description)
    run.add_argument("--seed", type=int, default=0, help=d["seed"].description)
    run.add_argument("--top-k", type=int, default=1000, help=d["top_k"].description)
    run.add_argument("--match", choices=["exact", "compatible"], default="exact", help=d["match"].description)
    run.add_argument("--queries", type=Path, help=d["queries"].description)
    run.add_argument("--max-combinations", type=int, default=40, help=d["max_combinations"].description)
    run.add_argument("--analysis-fps", type=float, help=d["analysis_fps"].description)
    link = p.add_argument_group("links")
    link.add_argument("--semantic-mcs", help=d["semantic_mcs"].description)
    link.add_argument("--traditional-mcs", default="qam16/ldpc_r12", help=d["traditional_mcs"].description)
    link.add_argument("--burst-bytes", type=int, default=12032, help=d["burst_bytes"].description)
    link.add_argument(
        "--sampling", choices=["auto", "full", "sampled"], default="auto", help=d["sampling"].description
    )
    link.add_argument("--probe-bursts", type=int, default=32, help=d["probe_bursts"].description)
    link.add_argument("--video-bitrate-kbps", type=int, default=500, help=d["video_bitrate_kbps"].description)
    link.add_argument("--gop-s", type=float, default=2.0, help=d["gop_s"].description)
    link.add_argument("--x264-preset", default="veryfast", help=d["x264_preset"].description)
    link.add_argument("--symbol-rate", type=float, default=1e6, help=d["symbol_rate"].description)
    cfgs = p.add_argument_group("daemon configs and output")
    cfgs.add_argument("--txd-config", type=Path, help=d["txd_config"].description)
    cfgs.add_argument("--rxd-config", type=Path, help=d["rxd_config"].description)
    cfgs.add_argument("--out", type=Path, default=Path("var/bench/paper"), help=d["out"].description)
    cfgs.add_argument("--no-progress", action="store_true", help="no progress bar")


def _floats(text: str, what: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(float(p) for p in parts)
    except ValueError as err:
        raise InvalidInput(f"{what}: {err}") from err


def config_from_args(args: argparse.Namespace) -> PaperConfig:
    """The validated config; InvalidInput with every problem named by option."""
    try:
        channel = json.loads(args.channel)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"--channel is not JSON: {err}") from err
    if not isinstance(channel, list) or not all(isinstance(m, dict) for m in channel):
        raise InvalidInput('--channel must be a JSON list of models, e.g. [{"kind": "awgn"}]')
    fields: dict[str, Any] = {
        name: getattr(args, name)
        for name in PaperConfig.model_fields
        if name not in ("schemes", "snr_db", "channel") and getattr(args, name, None) is not None
    }
    fields["schemes"] = tuple(s.strip() for s in args.schemes.split(",") if s.strip())
    fields["snr_db"] = _floats(args.snr_db, "--snr-db")
    fields["channel"] = tuple(channel)
    try:
        return PaperConfig(**fields)
    except ValidationError as err:
        problems = "; ".join(
            f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" if e["loc"] else e["msg"]
            for e in err.errors()
        )
        raise InvalidInput(problems) from err


def main(argv: Sequence[str] | None = None) -> int:
    from . import __doc__ as doc
    from .report import print_summary, write_report

    parser = argparse.ArgumentParser(
        prog="semcom bench paper", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        import torch

        torch.set_num_threads(1)
        state = run_paper(
            cfg,
            progress=not args.no_progress,
            command=" ".join(["semcom bench paper", *(sys.argv[1:] if argv is None else argv)]),
        )
    except (InvalidInput, ConfigError, FileNotFoundError) as err:
        print(f"semcom bench paper: {err}", file=sys.stderr)
        return 2
    paths = write_report(state)
    print_summary(state)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
