"""The command line of `semcom bench paper` (a plugin of the `semcom` command, entry point group
`semcom.bench`) and `python -m bench.paper`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from semcom.config import ConfigError
from semcom.errors import InvalidInput

from .config import PAPER_SNR_DB, PaperConfig
from .report import print_summary, write_report
from .run import run_paper
from .state import RunState


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command line of `semcom bench paper` / `python -m bench.paper`."""
    d = PaperConfig.model_fields
    src = p.add_argument_group("input (a labelled video, or a labelled crop set)")
    src.add_argument("--video", type=Path, help="video file (with --labels, or --gt and --attributes)")
    src.add_argument("--labels", type=Path, help=d["labels"].description)
    src.add_argument("--gt", type=Path, help=d["gt"].description)
    src.add_argument("--attributes", type=Path, help=d["attributes"].description)
    src.add_argument("--partial-gt", action="store_true", default=None, help=d["partial_gt"].description)
    src.add_argument("--iou", type=float, help=f"{d['iou'].description} (default 0.5)")
    src.add_argument("--gt-frame-offset", type=int, help=d["gt_frame_offset"].description)
    src.add_argument("--crops", type=Path, help=d["crops"].description)
    src.add_argument("--fold-models", type=Path, help=d["fold_models"].description)
    src.add_argument("--in-sample", action="store_true", default=None, help=d["in_sample"].description)
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
    run.add_argument("--max-pairs", type=int, default=0, help=d["max_pairs"].description)
    run.add_argument("--min-positives", type=int, help=f"{d['min_positives'].description} (default 5)")
    run.add_argument("--analysis-fps", type=float, help=d["analysis_fps"].description)
    link = p.add_argument_group("links")
    link.add_argument("--semantic-mcs", help=d["semantic_mcs"].description)
    link.add_argument("--learned-model", help=f"{d['learned_model'].description} (default person-s2)")
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
    """`semcom bench paper ...`: one run, or with --suite the whole evaluation."""
    from . import __doc__ as doc

    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--suite" in args_list:
        from .suite import suite_main

        return suite_main([a for a in args_list if a != "--suite"])
    parser = argparse.ArgumentParser(
        prog="semcom bench paper", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--suite", action="store_true", help="the whole evaluation: see bench/paper/suite.py")
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        state = run_one(cfg, progress=not args.no_progress, argv=args_list)
    except (InvalidInput, ConfigError, FileNotFoundError) as err:
        print(f"semcom bench paper: {err}", file=sys.stderr)
        return 2
    paths = write_report(state)
    print_summary(state)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def run_one(cfg: PaperConfig, *, progress: bool, argv: Sequence[str]) -> RunState:
    """One benchmark run with torch on one thread, its command line recorded."""
    import torch

    torch.set_num_threads(1)
    return run_paper(cfg, progress=progress, command=" ".join(["semcom bench paper", *argv]))
