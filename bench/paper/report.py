"""The run directory: results.json, results.md (Fig. 7 data, ranked metrics, Table II) and the plots."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .document import DEFINITIONS, KINDS, results
from .metrics import ANSWERED, METRICS, RANKED, Summary, summarise
from .plots import plot_accuracy, plot_overhead, plot_pr
from .state import RunState, by_scheme

_BY_KIND = ("precision", "recall", "precision_at_10", "average_precision")


def _pct_or_dash(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.1f}"


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
    lines += _overall(state, doc) + _ranked(state, doc) + _attributes(doc) + _overhead(state, doc)
    lines += _targets(doc)
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
        f"- sample: **{state.sample}**",
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
        if "targets_keyframed" in p:
            never = ", ".join(p["targets_never_keyframed"]) or "none"
            lines.append(
                f"- queries are about the {p['targets_keyframed']} labelled people perception keyframed; "
                f"never keyframed (they still count against recall): {never}"
            )
    lines += [
        f"- wall time {state.wall_s:.0f} s; load average at the end "
        f"{', '.join(f'{x:.2f}' for x in state.load)}; "
        f"finished {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC",
        "",
    ]
    return lines


def _per_snr(state: RunState, metric: str, title: str) -> list[str]:
    by = by_scheme(state)
    names = list(by)
    lines = [f"## {title}", "", "| SNR dB | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for snr in state.config.snr_db:
        row = [_pct(summarise([s for p in by[n][snr] for s in p.scores])[metric]) for n in names]
        lines.append(f"| {snr:g} | " + " | ".join(row) + " |")
    return [*lines, ""]


def _overall(state: RunState, doc: dict[str, Any]) -> list[str]:
    lines = ["## Mean over SNR and robustness (std across SNR points, % points)", ""]
    lines += [
        "| scheme | precision | std | recall | std | F1 | std | precision where answered |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, scheme in doc["schemes"].items():
        o = scheme["overall"]
        cells = " | ".join(f"{100 * o[m]['mean']:.1f} | {100 * o[m]['std']:.1f}" for m in METRICS)
        lines.append(f"| {n} | {cells} | {_cell(o, ANSWERED)} |")
    lines += ["", "Mean over SNR by query kind, precision / recall / P@10 / AP (%; '-': no such query):", ""]
    lines += ["| scheme | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for n, scheme in doc["schemes"].items():
        kinds = scheme["by_kind"]
        lines.append(
            f"| {n} | "
            + " | ".join(
                " / ".join(_pct_or_dash(kinds[k].get(m, math.nan)) for m in _BY_KIND) if k in kinds else "-"
                for k in KINDS
            )
            + " |"
        )
    return [*lines, ""]


def _cell(o: dict[str, dict[str, float]], metric: str) -> str:
    v = o.get(metric, {}).get("mean")
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _ranked(state: RunState, doc: dict[str, Any]) -> list[str]:
    n = state.config.min_positives
    head = "| scheme | P@1 | P@5 | P@10 | mAP | queries |"
    lines = [f"## Ranked retrieval, mean over SNR (%; queries with >= {n} positives)", "", head]
    lines.append("|---|---|---|---|---|---|")
    few = ["", f"Queries with fewer than {n} positives, apart:", "", head, "|---|---|---|---|---|---|"]
    for name, scheme in doc["schemes"].items():
        first = scheme["per_snr"][0]
        for rows, o, count in (
            (lines, scheme["overall"], first[RANKED[0]]["n"]),
            (few, scheme["overall_few_positives"], first["few_positives"][RANKED[0]]["n"]),
        ):
            rows.append(f"| {name} | {' | '.join(_cell(o, m) for m in RANKED)} | {count} |")
    nobody = {
        name: sum(sum(p["records_showing_nobody"]) for p in scheme["per_snr"])
        for name, scheme in doc["schemes"].items()
    }
    note = (
        "left out of precision and ranking (partial gt)"
        if state.dataset.partial
        else "counted wrong when retrieved"
    )
    tail = [
        "",
        "Received records showing no labelled target, summed over SNR points and draws ("
        + note
        + "): "
        + ", ".join(f"{k} {v}" for k, v in nobody.items()),
        "",
    ]
    return lines + few + tail


def _attributes(doc: dict[str, Any]) -> list[str]:
    acc = doc.get("attribute_accuracy")
    if not acc:
        return []
    lines = [f"## Attribute accuracy of the semantic scheme's records ({doc['sample']})", ""]
    lines += ["| field | crops | accuracy | balanced accuracy | unknown |", "|---|---|---|---|---|"]
    for name, a in acc.items():
        lines.append(
            f"| {name} | {a['n']:.0f} | {a['accuracy']:.3f} | {a['balanced_accuracy']:.3f} | "
            f"{a['unknown']:.2f} |"
        )
    return [*lines, ""]


def _overhead(state: RunState, doc: dict[str, Any]) -> list[str]:
    lines = [f"## Overhead (Table II; airtime at {state.config.symbol_rate:g} symbols/s)", ""]
    lines += [
        "| scheme | payload | bursts | info bits | channel bits | channel symbols | symbols/record "
        "| airtime s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, scheme in doc["schemes"].items():
        b = scheme["bits"]
        what = _payload(doc) if n.startswith("traditional") else f"{scheme['records_sent']} records"
        per = f"{b['channel_symbols'] / scheme['records_sent']:.1f}" if scheme["records_sent"] else "-"
        lines.append(
            f"| {n} | {what} | {b['bursts']} | {_bits(b['info_bits'])} | {_bits(b['channel_bits'])} "
            f"| {b['channel_symbols']} | {per} | {b['airtime_s']:.3f} |"
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
    for name, v in t.get("learned_vs_digital", {}).items():
        lines.append(
            f"- {name}: {v['symbols_per_record']:.1f} channel symbols per record; precision "
            f"{_pct_or_dash(v['precision_below_9db'])} % below 9 dB, "
            f"{_pct_or_dash(v['precision_from_9db'])} % from 9 dB; mAP "
            f"{_pct_or_dash(v['average_precision_below_9db'])} / "
            f"{_pct_or_dash(v['average_precision_from_9db'])} %"
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


def write_report(state: RunState) -> list[Path]:
    """results.json, results.md, accuracy_vs_snr.png and overhead.png in the run directory."""
    out = state.config.out
    out.mkdir(parents=True, exist_ok=True)
    doc = results(state)
    paths = [out / "results.json", out / "results.md", out / "accuracy_vs_snr.png", out / "overhead.png"]
    paths.append(out / "precision_recall.png")
    paths[0].write_text(json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(state, doc), encoding="utf-8")
    plot_accuracy(state, paths[2])
    plot_overhead(state, doc, paths[3])
    plot_pr(doc, paths[4])
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
    print(f"sample: {state.sample}")
    print(
        f"{'scheme':<20} {'precision':>16} {'recall':>16} {'F1':>16} {'mAP':>6} {'info bits':>12} "
        f"{'channel bits':>13}"
    )
    for n, s in doc["schemes"].items():
        o = s["overall"]
        cells = [f"{100 * o[m]['mean']:6.1f} ± {100 * o[m]['std']:4.1f} sd" for m in METRICS]
        bits = s["bits"]
        print(
            f"{n:<20} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {_cell(o, 'average_precision'):>6} "
            f"{bits['info_bits']:>12} {bits['channel_bits']:>13}"
        )
    print(f"wall {state.wall_s:.0f} s, load average {', '.join(f'{x:.2f}' for x in state.load)}")
