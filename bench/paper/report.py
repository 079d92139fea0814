"""The run directory: results.json, results.md (Fig. 7 data, Table II), accuracy_vs_snr.png, overhead.png."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from semcom.record import Record

from .links import Tally
from .metrics import METRICS, Summary, across_snr, summarise
from .run import PointResult, RunState, environment
from .schemes import EPOCH_S, CropDataset

# The paper's reported figures (section IV), for the side-by-side columns.
PAPER = {"semantic_accuracy": 93.03, "traditional_accuracy": 39.39, "semantic_bits": 36e3, "mpeg_bits": 219e6}
CLIFF_DB = 9.0


def _by_scheme(state: RunState) -> dict[str, dict[float, list[PointResult]]]:
    out: dict[str, dict[float, list[PointResult]]] = defaultdict(lambda: defaultdict(list))
    for p in state.points:
        out[p.scheme][p.snr_db].append(p)
    return out


KINDS = ("single", "combination")


def _by_kind(state: RunState, per_snr: dict[float, list[PointResult]]) -> dict[str, dict[str, float]]:
    """Mean over SNR points of the mean precision and recall of each kind of query."""
    kind = {q.query_id: q.kind for q in state.queries}
    out: dict[str, dict[str, float]] = {}
    for k in KINDS:
        per = {
            snr: summarise([s for p in pts for s in p.scores if kind[s.query_id] == k])
            for snr, pts in per_snr.items()
        }
        if any(v["precision"].n for v in per.values()):
            overall = across_snr(per)
            out[k] = {m: overall[m]["mean"] for m in METRICS}
    return out


def _tally(points: list[PointResult]) -> Tally:
    """Bits of one point (the first seed's: without ARQ every draw sends the same bursts)."""
    return points[0].received.tally


def results(state: RunState) -> dict[str, Any]:
    """The JSON document of a run."""
    cfg = state.config
    schemes: dict[str, Any] = {}
    for name, per_snr in _by_scheme(state).items():
        summaries = {snr: summarise([s for p in pts for s in p.scores]) for snr, pts in per_snr.items()}
        first = next(iter(per_snr.values()))
        schemes[name] = {
            "overall": across_snr(summaries),
            "by_kind": _by_kind(state, per_snr),
            "bits": _tally(first).to_dict(cfg.symbol_rate),
            "records_sent": first[0].received.records_sent,
            "sent": [_record(r) for r in first[0].received.sent],
            "per_snr": [
                {
                    "snr_db": snr,
                    **{m: summaries[snr][m].to_dict() for m in METRICS},
                    "bits": _tally(pts).to_dict(cfg.symbol_rate),
                    "records_received": [p.received.records.__len__() for p in pts],
                    "notes": [p.received.note for p in pts],
                    "wall_s": sum(p.wall_s for p in pts),
                    "per_query": [[s.__dict__ for s in p.scores] for p in pts],
                }
                for snr, pts in per_snr.items()
            ],
        }
    return {
        "config": cfg.model_dump(mode="json"),
        "command": state.command,
        "input": _input(state),
        "queries": [q.to_dict() for q in state.queries],
        "schemes": schemes,
        "targets": targets_check(state),
        "timing": {"wall_s": state.wall_s, "prepare_s": state.prepare_s, "load_avg": list(state.load)},
        "environment": environment(),
        "paper": PAPER,
        "definitions": DEFINITIONS,
        **state.extra,
    }


DEFINITIONS = {
    "retrieved": "among the engine's top_k hits for the query's text, those of the exact tier (every "
    "parsed slot matches; with --match compatible: no parsed slot contradicted)",
    "precision": "share of retrieved records whose keyframe shows a target satisfying the query (the "
    "paper's retrieval accuracy); 0 when nothing is retrieved",
    "recall": "share of the satisfying targets (persons / crops) with at least one retrieved record, over "
    "min(satisfying targets, top_k)",
    "f1": "harmonic mean of precision and recall per query",
    "robustness": "population standard deviation across the SNR points of the mean precision",
    "error_bars": "one standard error of the mean over queries x seeds",
    "info_bits": "frame bits handed to the physical layer (codec headers and CRC included)",
    "channel_bits": "coded bits on the air: symbols x bits per symbol, pilots included",
    "airtime_s": "channel symbols / symbol_rate",
}


def _record(r: Record) -> dict[str, Any]:
    return {
        "record_id": r.record_id,
        "track_id": r.track_id,
        "time_s": round(r.time_s - EPOCH_S, 3),
        **r.fields,
    }


def _input(state: RunState) -> dict[str, Any]:
    ds = state.dataset
    targets = [
        {
            "key": t.key,
            "start_s": t.start_s,
            "end_s": t.end_s,
            "labels": {k: list(v) for k, v in t.labels.items()},
        }
        for t in ds.targets
    ]
    out: dict[str, Any] = {"kind": ds.kind, "targets": len(targets)}
    if isinstance(ds, CropDataset):
        out["crops_total"] = ds.crops.total
        out["crops"] = [t["key"] for t in targets]
    else:
        out["persons"] = targets
    return out


def targets_check(state: RunState) -> dict[str, Any]:
    """The issue's targets, reported against (not enforced): accuracy, spread, overhead, cliff."""
    by = _by_scheme(state)
    out: dict[str, Any] = {}
    if "semantic" in by:
        overall = across_snr(
            {snr: summarise([s for p in pts for s in p.scores]) for snr, pts in by["semantic"].items()}
        )
        out["semantic_mean_precision"] = overall["precision"]["mean"]
        out["semantic_precision_std"] = overall["precision"]["std"]
        out["semantic_accuracy_met"] = (
            overall["precision"]["mean"] >= 0.93 and overall["precision"]["std"] <= 0.02
        )
    if "semantic" in by and "semantic-text" in by:
        bits = _tally(next(iter(by["semantic"].values()))).info_bits
        text = _tally(next(iter(by["semantic-text"].values()))).info_bits
        out["semantic_over_text_info_bits"] = bits / text if text else math.nan
        out["overhead_met"] = bool(text) and bits <= text / 6
    if "traditional" in by:
        below = [
            summarise([s for p in pts for s in p.scores])["precision"].mean
            for snr, pts in by["traditional"].items()
            if snr < CLIFF_DB
        ]
        above = [
            summarise([s for p in pts for s in p.scores])["precision"].mean
            for snr, pts in by["traditional"].items()
            if snr >= CLIFF_DB
        ]
        out["traditional_precision_below_9db"] = float(np.mean(below)) if below else math.nan
        out["traditional_precision_from_9db"] = float(np.mean(above)) if above else math.nan
    return out


def _pct(s: Summary) -> str:
    return "n/a" if math.isnan(s.mean) else f"{100 * s.mean:.1f} ± {100 * s.sem:.1f}"


def _bits(n: float) -> str:
    for unit, scale in (("Gbit", 1e9), ("Mbit", 1e6), ("kbit", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} bit"


def markdown(state: RunState, doc: dict[str, Any]) -> str:
    """results.md: the run's settings, Fig. 7's data per metric, means and spreads, Table II, targets."""
    lines = _header(state, doc)
    for metric, title in (
        ("precision", "Retrieval accuracy (precision, %) vs SNR (Fig. 7)"),
        ("recall", "Recall (%) vs SNR"),
        ("f1", "F1 (%) vs SNR"),
    ):
        lines += _per_snr(state, metric, title)
    lines += _overall(state, doc) + _overhead(state, doc) + _targets(doc)
    lines += ["", "## Definitions", ""] + [f"- {k}: {v}" for k, v in DEFINITIONS.items()] + [""]
    return "\n".join(lines)


def _header(state: RunState, doc: dict[str, Any]) -> list[str]:
    cfg = state.config
    lines = [
        "# Paper case study: retrieval accuracy and overhead",
        "",
        f"- command: `{state.command}`",
        f"- input: {cfg.describe_input()} ({doc['input']['targets']} labelled targets, "
        f"{len(state.queries)} queries)",
        f"- channel: {json.dumps(list(cfg.channel))}, SNR {', '.join(f'{s:g}' for s in cfg.snr_db)} dB, "
        f"{cfg.seeds} draw(s) per point, seed {cfg.seed}; retrieved = {cfg.match} matches in the top "
        f"{cfg.top_k}",
    ]
    lines += [f"- {name} link: {text}" for name, text in doc.get("links", {}).items()]
    if "h264" in doc:
        lines.append(f"- traditional source: {_payload(doc)}")
    if "perception" in doc:
        p = doc["perception"]
        lines.append(
            f"- perception: {p['frames_analysed']} frames analysed over all videos, {p['detector_calls']} "
            "detector calls (identical frames share one)"
        )
    lines += [
        f"- wall time {state.wall_s:.0f} s; load average at the end "
        f"{', '.join(f'{x:.2f}' for x in state.load)}; "
        f"finished {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC",
        "",
    ]
    return lines


def _per_snr(state: RunState, metric: str, title: str) -> list[str]:
    by = _by_scheme(state)
    names = list(by)
    lines = [f"## {title}", "", "| SNR dB | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for snr in state.config.snr_db:
        row = [_pct(summarise([s for p in by[n][snr] for s in p.scores])[metric]) for n in names]
        lines.append(f"| {snr:g} | " + " | ".join(row) + " |")
    return [*lines, ""]


def _overall(state: RunState, doc: dict[str, Any]) -> list[str]:
    lines = ["## Mean over SNR and robustness (std across SNR points, % points)", ""]
    lines += ["| scheme | precision | std | recall | std | F1 | std |", "|---|---|---|---|---|---|---|"]
    for n, scheme in doc["schemes"].items():
        o = scheme["overall"]
        cells = " | ".join(f"{100 * o[m]['mean']:.1f} | {100 * o[m]['std']:.1f}" for m in METRICS)
        lines.append(f"| {n} | {cells} |")
    lines += ["", "Mean precision / recall over SNR by query kind (%):", ""]
    lines += ["| scheme | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for n, scheme in doc["schemes"].items():
        kinds = scheme["by_kind"]
        lines.append(
            f"| {n} | "
            + " | ".join(
                f"{100 * kinds[k]['precision']:.1f} / {100 * kinds[k]['recall']:.1f}" if k in kinds else "-"
                for k in KINDS
            )
            + " |"
        )
    return [*lines, ""]


def _overhead(state: RunState, doc: dict[str, Any]) -> list[str]:
    lines = [f"## Overhead (Table II; airtime at {state.config.symbol_rate:g} symbols/s)", ""]
    lines += [
        "| scheme | payload | bursts | info bits | channel bits | airtime s |",
        "|---|---|---|---|---|---|",
    ]
    for n, scheme in doc["schemes"].items():
        b = scheme["bits"]
        what = _payload(doc) if n.startswith("traditional") else f"{scheme['records_sent']} records"
        lines.append(
            f"| {n} | {what} | {b['bursts']} | {_bits(b['info_bits'])} | {_bits(b['channel_bits'])} "
            f"| {b['airtime_s']:.3f} |"
        )
    return lines


def _targets(doc: dict[str, Any]) -> list[str]:
    t = doc["targets"]
    lines = ["", "## Against the paper's targets", ""]
    if "semantic_mean_precision" in t:
        lines.append(
            f"- semantic mean accuracy {100 * t['semantic_mean_precision']:.1f} % (target >= 93 %), std "
            f"{100 * t['semantic_precision_std']:.1f} points (target <= 2): "
            f"{'met' if t['semantic_accuracy_met'] else 'not met'}; paper 93.03 %"
        )
    if "semantic_over_text_info_bits" in t:
        lines.append(
            f"- semantic / text-entry information bits = {t['semantic_over_text_info_bits']:.3f} "
            f"(target <= 1/6 = 0.167): {'met' if t['overhead_met'] else 'not met'}"
        )
    if "traditional_precision_below_9db" in t:
        lines.append(
            f"- traditional precision below 9 dB {100 * t['traditional_precision_below_9db']:.1f} %, from "
            f"9 dB {100 * t['traditional_precision_from_9db']:.1f} % (paper: fails below 9 dB, 39.39 % mean)"
        )
    return lines


def _payload(doc: dict[str, Any]) -> str:
    h = doc.get("h264")
    if h:
        return (
            f"H.264 {h['bitrate_kbps']} kbit/s, {h['frames']} frames at {h['fps']:g} fps, IDR every "
            f"{h['gop_frames']} frames, MPEG-TS"
        )
    return f"{len(doc['input'].get('crops', []))} JPEG crops"


def plot_accuracy(state: RunState, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = _by_scheme(state)
    names = list(by)
    snrs = list(state.config.snr_db)
    x = np.arange(len(snrs))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(10, 4.8), layout="constrained")
    for i, n in enumerate(names):
        stats = [summarise([s for p in by[n][snr] for s in p.scores])["precision"] for snr in snrs]
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            [100 * s.mean for s in stats],
            width,
            yerr=[100 * s.sem for s in stats],
            capsize=2,
            label=n,
        )
    ax.set_xticks(x, [f"{s:g}" for s in snrs])
    ax.set_xlabel("SNR (Es/N0, dB)")
    ax.set_ylabel("retrieval accuracy (precision, %)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Retrieval accuracy vs SNR ({state.dataset.kind}, {len(state.queries)} queries)")
    fig.legend(loc="outside lower center", ncol=len(names), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_overhead(state: RunState, doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["schemes"])
    info = [doc["schemes"][n]["bits"]["info_bits"] for n in names]
    channel = [doc["schemes"][n]["bits"]["channel_bits"] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, info, 0.4, label="information bits")
    ax.bar(x + 0.2, channel, 0.4, label="channel bits")
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    ax.set_ylabel("bits transmitted")
    ax.set_title("Overhead per scheme (log scale)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(state: RunState) -> list[Path]:
    """results.json, results.md, accuracy_vs_snr.png and overhead.png in the run directory."""
    out = state.config.out
    out.mkdir(parents=True, exist_ok=True)
    doc = results(state)
    paths = [out / "results.json", out / "results.md", out / "accuracy_vs_snr.png", out / "overhead.png"]
    paths[0].write_text(json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(state, doc), encoding="utf-8")
    plot_accuracy(state, paths[2])
    plot_overhead(state, doc, paths[3])
    return paths


def _clean(value: Any) -> Any:
    """JSON-ready: NaN becomes null, paths become strings, tuples become lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def print_summary(state: RunState) -> None:
    doc = results(state)
    print(
        f"{'scheme':<20} {'precision':>16} {'recall':>16} {'F1':>16} {'info bits':>12} {'channel bits':>13}"
    )
    for n, s in doc["schemes"].items():
        o = s["overall"]
        cells = [f"{100 * o[m]['mean']:6.1f} ± {100 * o[m]['std']:4.1f} sd" for m in METRICS]
        bits = s["bits"]
        print(
            f"{n:<20} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {bits['info_bits']:>12} "
            f"{bits['channel_bits']:>13}"
        )
    print(f"wall {state.wall_s:.0f} s, load average {', '.join(f'{x:.2f}' for x in state.load)}")
