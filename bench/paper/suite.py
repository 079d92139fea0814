"""`semcom bench paper --suite`: the whole evaluation (the intel video, the three MOT sequences scored by
boxes, PETA crops out of sample) in one report, with the machine's conditions printed first."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcom.config import ConfigError
from semcom.data import data_dir
from semcom.errors import InvalidInput

from .config import PaperConfig
from .document import results
from .metrics import ANSWERED, RANKED
from .report import write_report
from .state import environment

MOT_SEQUENCES = {
    "pets09": ("pets09_s2l1_vtest.avi", "PETS09-S2L1"),
    "tud-stadtmitte": (
        "tud_stadtmitte.mp4",
        "TUD-Stadtmitte",
    ),
    "tud-campus": ("tud_campus.mp4", "TUD-Campus"),
}
INPUTS = ("intel", *MOT_SEQUENCES, "peta")
COLUMNS = ("precision", ANSWERED, "recall", "f1", *RANKED)


@dataclass(frozen=True)
class SuiteOptions:
    data: Path
    out: Path
    only: tuple[str, ...]
    common: dict[str, Any]
    max_crops: int
    fold_models: Path


def input_configs(opts: SuiteOptions) -> dict[str, PaperConfig]:
    """One benchmark config per input of the suite (InvalidInput/ValidationError surface per input)."""
    d, out, common = opts.data, opts.out, opts.common
    configs: dict[str, PaperConfig] = {}
    for name in opts.only:
        if name == "intel":
            configs[name] = PaperConfig(
                video=d / "videos" / "intel_one_by_one_person_detection.mp4",
                labels=d / "gt" / "intel_one_by_one" / "provisional_labels.csv",
                out=out / name,
                **common,
            )
        elif name in MOT_SEQUENCES:
            video, seq = MOT_SEQUENCES[name]
            configs[name] = PaperConfig(
                video=d / "videos" / video,
                gt=d / "gt" / seq / "gt.txt",
                attributes=d / "gt" / seq / "attributes.csv",
                out=out / name,
                **common,
            )
        else:
            configs[name] = PaperConfig(
                crops=d / "peta",
                max_crops=opts.max_crops,
                fold_models=opts.fold_models,
                out=out / name,
                **common,
            )
    return configs


def conditions() -> dict[str, Any]:
    """The machine and software the suite runs on, at this moment."""
    env = environment()
    env["started_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    return env


def _print_conditions(env: dict[str, Any]) -> None:
    print(
        f"suite on {env['cpus']} CPUs ({env['machine']}), load average "
        f"{', '.join(f'{x:.2f}' for x in env['load_avg'])}, commit {env['commit']}, python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; started {env['started_utc']} UTC",
        flush=True,
    )


def summarise_input(doc: dict[str, Any]) -> dict[str, Any]:
    """Per scheme: every metric's mean over SNR, and the information bits."""
    return {
        "sample": doc["sample"],
        "targets": doc["input"]["targets"],
        "queries": len(doc["queries"]),
        "schemes": {
            name: {
                **{m: scheme["overall"][m]["mean"] for m in COLUMNS},
                "info_bits": scheme["bits"]["info_bits"],
                "symbols_per_record": scheme["bits"]["channel_symbols"] / max(scheme["records_sent"], 1),
            }
            for name, scheme in doc["schemes"].items()
        },
    }


def _pct(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def suite_markdown(env: dict[str, Any], rows: dict[str, Any], wall_s: float) -> str:
    """suite.md: the conditions, a table per input, and the summary over inputs."""
    lines = ["# Paper bench suite", "", f"- conditions at the start: {json.dumps(env)}"]
    lines += [f"- wall time {wall_s:.0f} s; load average at the end {os.getloadavg()}", ""]
    head = "| scheme | " + " | ".join(COLUMNS) + " | info bits | symbols/record |"
    sep = "|---" * (len(COLUMNS) + 3) + "|"
    schemes: list[str] = []
    for name, row in rows.items():
        lines += [f"## {name}", ""]
        if "error" in row:
            lines += [f"not run: {row['error']}", ""]
            continue
        lines += [f"{row['targets']} targets, {row['queries']} queries; {row['sample']}", "", head, sep]
        for scheme, m in row["schemes"].items():
            schemes += [] if scheme in schemes else [scheme]
            cells = " | ".join(_pct(m[c]) for c in COLUMNS)
            per = m.get("symbols_per_record", math.nan)
            lines.append(f"| {scheme} | {cells} | {m['info_bits']:.0f} | {per:.1f} |")
        lines.append("")
    lines += ["## Summary: mean over the inputs that ran (each input weighted equally)", "", head, sep]
    for scheme in schemes:
        have = [r["schemes"][scheme] for r in rows.values() if scheme in r.get("schemes", {})]
        summary: list[str] = []
        for c in COLUMNS:
            vals = [v[c] for v in have if v[c] is not None and not math.isnan(v[c])]
            summary.append(_pct(sum(vals) / len(vals)) if vals else "-")
        lines.append(f"| {scheme} | {' | '.join(summary)} | - | - |")
    return "\n".join([*lines, ""])


def suite_main(argv: Sequence[str]) -> int:
    """Run every input of the suite with the same options and write suite.md / suite.json."""
    from .cli import run_one

    p = argparse.ArgumentParser(prog="semcom bench paper --suite", description=__doc__)
    p.add_argument("--data", type=Path, default=data_dir(), help="the shared data folder")
    p.add_argument("--out", type=Path, default=Path("var/bench/suite"), help="one run directory per input")
    p.add_argument("--only", default=",".join(INPUTS), help=f"comma-separated subset of {', '.join(INPUTS)}")
    p.add_argument("--snr-db", help="comma-separated Es/N0 points (default: the paper's 3..30 dB)")
    p.add_argument("--schemes", help="comma-separated schemes (default: the benchmark's)")
    p.add_argument("--max-crops", type=int, default=2000, help="PETA crops sampled (seeded)")
    p.add_argument("--fold-models", type=Path, default=Path("var/attributes_loso"), help="PETA fold models")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    if unknown := [s for s in only if s not in INPUTS]:
        print(f"semcom bench paper --suite: unknown input(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    common: dict[str, Any] = {}
    if args.snr_db:
        common["snr_db"] = tuple(float(s) for s in args.snr_db.split(","))
    if args.schemes:
        common["schemes"] = tuple(s.strip() for s in args.schemes.split(","))
    env = conditions()
    _print_conditions(env)
    started = time.perf_counter()
    opts = SuiteOptions(args.data, args.out, only, common, args.max_crops, args.fold_models)
    rows: dict[str, Any] = {}
    for name, cfg in input_configs(opts).items():
        t0 = time.perf_counter()
        print(f"== {name}: {cfg.describe_input()}", flush=True)
        try:
            state = run_one(cfg, progress=not args.no_progress, argv=["--suite", "--only", name])
        except (InvalidInput, ConfigError, FileNotFoundError) as err:
            rows[name] = {"error": str(err)}
            print(f"   not run: {err}", flush=True)
            continue
        write_report(state)
        rows[name] = summarise_input(results(state))
        rows[name]["wall_s"] = time.perf_counter() - t0
        print(f"   {rows[name]['wall_s']:.0f} s, {state.sample}", flush=True)
    wall_s = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    md = suite_markdown(env, rows, wall_s)
    (args.out / "suite.md").write_text(md, encoding="utf-8")
    doc = {"conditions": env, "inputs": rows, "wall_s": wall_s, "load_avg_end": list(os.getloadavg())}
    (args.out / "suite.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    print(md)
    return 0 if all("error" not in r for r in rows.values()) else 1
