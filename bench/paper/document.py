"""The JSON document of a run (results.json): every metric per scheme and SNR point, the input, the timing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from semcom.record import Record

from .datasets import BoxVideoDataset, CropDataset
from .links import Tally
from .metrics import ANSWERED, METRICS, RANKED, across_snr, mean_pr_curve, summarise, summarise_few
from .schemes import EPOCH_S
from .state import PointResult, RunState, by_scheme, environment

# The paper's reported figures (section IV), for the side-by-side columns.
PAPER = {"semantic_accuracy": 93.03, "traditional_accuracy": 39.39, "semantic_bits": 36e3, "mpeg_bits": 219e6}
CLIFF_DB = 9.0


KINDS = ("single", "pair", "combination")


def _by_kind(state: RunState, per_snr: dict[float, list[PointResult]]) -> dict[str, dict[str, float]]:
    """Per kind of query (one attribute, two, a target's whole combination): every metric's mean over the
    SNR points (the ranked ones over the queries with at least `min_positives` satisfying targets)."""
    kind = {q.query_id: q.kind for q in state.queries}
    n = state.config.min_positives
    out: dict[str, dict[str, float]] = {}
    for k in KINDS:
        per = {
            snr: summarise([s for p in pts for s in p.scores if kind[s.query_id] == k], n)
            for snr, pts in per_snr.items()
        }
        if any(v["precision"].n for v in per.values()):
            overall = across_snr(per)
            out[k] = {m: overall[m]["mean"] for m in (*METRICS, ANSWERED, *RANKED)}
    return out


def _tally(points: list[PointResult]) -> Tally:
    """Bits of one point (the first seed's: without ARQ every draw sends the same bursts)."""
    return points[0].received.tally


def results(state: RunState) -> dict[str, Any]:
    """The JSON document of a run."""
    cfg = state.config
    schemes: dict[str, Any] = {}
    n = cfg.min_positives
    for name, per_snr in by_scheme(state).items():
        summaries = {snr: summarise([s for p in pts for s in p.scores], n) for snr, pts in per_snr.items()}
        few = {snr: summarise_few([s for p in pts for s in p.scores], n) for snr, pts in per_snr.items()}
        first = next(iter(per_snr.values()))
        schemes[name] = {
            "overall": across_snr(summaries),
            "overall_few_positives": across_snr(few),
            "by_kind": _by_kind(state, per_snr),
            "bits": _tally(first).to_dict(cfg.symbol_rate),
            "records_sent": first[0].received.records_sent,
            "sent": [_record(r) for r in first[0].received.sent],
            "per_snr": [
                {
                    "snr_db": snr,
                    **{m: summaries[snr][m].to_dict() for m in (*METRICS, ANSWERED, *RANKED)},
                    "few_positives": {m: few[snr][m].to_dict() for m in (*METRICS, ANSWERED, *RANKED)},
                    "pr_curve": mean_pr_curve([s for p in pts for s in p.scores], n),
                    "bits": _tally(pts).to_dict(cfg.symbol_rate),
                    "records_received": [len(p.received.records) for p in pts],
                    "records_showing_nobody": [_nobody(p) for p in pts],
                    "notes": [p.received.note for p in pts],
                    "wall_s": sum(p.wall_s for p in pts),
                    "per_query": [
                        [{k: v for k, v in s.__dict__.items() if k != "pr"} for s in p.scores] for p in pts
                    ],
                }
                for snr, pts in per_snr.items()
            ],
        }
    out = {
        "config": cfg.model_dump(mode="json"),
        "command": state.command,
        "sample": state.sample,
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
    if isinstance(state.dataset, CropDataset):
        out["attribute_accuracy"] = attribute_accuracy(state)
    return out


def _below_above(per_snr: dict[float, list[PointResult]], min_positives: int) -> dict[str, float]:
    """One records scheme's channel symbols per record sent, and its mean precision and mAP (queries with
    at least `min_positives` positives, as in `overall`) below the digital link's cliff (9 dB) and from it."""
    first = next(iter(per_snr.values()))[0].received
    out = {"symbols_per_record": first.tally.channel_symbols / max(first.records_sent, 1)}
    for part, below in (("below_9db", True), ("from_9db", False)):
        rows = [
            summarise([s for p in pts for s in p.scores], min_positives)
            for snr, pts in per_snr.items()
            if (snr < CLIFF_DB) == below
        ]
        for metric in ("precision", "average_precision"):
            values = [r[metric].mean for r in rows if not math.isnan(r[metric].mean)]
            out[f"{metric}_{part}"] = float(np.mean(values)) if values else math.nan
    return out


def _nobody(point: PointResult) -> int:
    """Received records whose keyframe shows no labelled target."""
    return sum(1 for r in point.received.records if point.received.shows.get(r.record_id) is None)


def attribute_accuracy(state: RunState) -> dict[str, dict[str, float]]:
    """Per field, the understanding the semantic scheme sent against the crops' labels: plain accuracy and
    balanced accuracy (mean recall over the classes present, by first listed value), "unknown" counted as
    wrong, over the crops labelled for that field."""
    sent = next((p.received for p in state.points if p.scheme == "semantic"), None)
    if sent is None:
        return {}
    targets = state.dataset.targets
    out: dict[str, dict[str, float]] = {}
    for name in state.schema.field_names:
        rows = [
            (targets[t].labels[name], r.fields.get(name))
            for r in sent.sent
            if (t := sent.shows.get(r.record_id)) is not None and targets[t].labels.get(name)
        ]
        if not rows:
            continue
        hits: dict[str, list[bool]] = {}
        for labels, value in rows:
            hits.setdefault(labels[0], []).append(value in labels)
        correct = [ok for per in hits.values() for ok in per]
        out[name] = {
            "n": len(rows),
            "accuracy": float(np.mean(correct)),
            "balanced_accuracy": float(np.mean([np.mean(per) for per in hits.values()])),
            "unknown": float(np.mean([value in (None, "unknown") for _, value in rows])),
        }
    if out:
        out["mean"] = {k: float(np.mean([v[k] for v in out.values()])) for k in next(iter(out.values()))}
    return out


DEFINITIONS = {
    "retrieved": "among the engine's top_k hits for the query's text, those of the exact tier (every "
    "parsed slot matches; with --match compatible: no parsed slot contradicted)",
    "precision": "share of retrieved records whose keyframe shows a target satisfying the query (the "
    "paper's retrieval accuracy); 0 when nothing is retrieved",
    "recall": "share of the satisfying targets (persons / crops) with at least one retrieved record, over "
    "min(satisfying targets, top_k)",
    "f1": "harmonic mean of precision and recall per query",
    "shows": "video with time ranges: the person whose range (widened by tolerance_s) holds the keyframe "
    "time; video with gt boxes: the identity whose box in the keyframe's frame (interpolated between "
    "annotated frames) has IoU >= iou with the keyframe's box, the best one; crops: the crop itself",
    "partial_gt": "records showing no labelled target are left out of precision and ranking instead of "
    "counted wrong (records_showing_nobody says how many there were)",
    "precision_answered": "precision averaged over the queries that retrieved at least one record (the "
    "paper's precision counts an empty answer as 0)",
    "precision_at_k": "share of the first k hits of the engine's ranked list (all hits, not only the exact "
    "tier) that show a satisfying target; a list shorter than k counts the missing ranks as misses",
    "average_precision": "mean over the records in the index that show a satisfying target of the "
    "precision at their rank (0 for one not in the list); 0 when no such record reached the index",
    "positives": "satisfying targets in the ground truth; ranked metrics in `overall` average the queries "
    "with at least min_positives of them, the others are in `overall_few_positives`",
    "pr_curve": "11-point interpolated precision at record recall 0, 0.1, ..., 1, mean over queries",
    "robustness": "population standard deviation across the SNR points of the mean precision",
    "error_bars": "one standard error of the mean over queries x seeds",
    "info_bits": "frame bits handed to the physical layer (codec headers and CRC included)",
    "channel_bits": "coded bits on the air: symbols x bits per symbol, pilots included (the learned "
    "mode's field symbols are analog and carry none: they count in channel_symbols and learned_symbols)",
    "symbols_per_record": "channel symbols (pilots, headers and field symbols) / records sent",
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
        out["crops_eligible"] = ds.crops.eligible
        out["crops"] = [t["key"] for t in targets]
        out["subsets"] = {s: ds.crops.subsets.count(s) for s in sorted(set(ds.crops.subsets))}
    else:
        out["persons"] = targets
    if isinstance(ds, BoxVideoDataset):
        out["fps"] = ds.fps
        out["gt_frame_offset"] = ds.frame_offset
        out["iou"] = ds.iou_min
        out["partial_gt"] = ds.partial
    return out


def targets_check(state: RunState) -> dict[str, Any]:
    """The issue's targets, reported against (not enforced): accuracy, spread, overhead, cliff."""
    by = by_scheme(state)
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
    if "semantic" in by and "semantic-learned" in by:
        out["learned_vs_digital"] = {
            name: _below_above(by[name], state.config.min_positives)
            for name in ("semantic", "semantic-learned")
        }
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
