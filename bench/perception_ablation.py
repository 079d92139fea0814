"""Each perception change alone and together, through the paper bench (`semcom bench paper`).

Runs the paper bench's `semantic` scheme on the shared videos (PETS09-S2L1, TUD-Stadtmitte and TUD-Campus
scored by their boxes, the intel video by its time ranges) once per txd configuration:

- `one-crop`: the best view of each track only (perception.keyframes.views_per_track = 1), nothing else;
- `fusion`: txd's track fusion (3 views per track, rule "best");
- `mask`: person masks from background subtraction feed the colour evidence (perception.foreground);
- `naming`: colour names (nearest xkcd survey colour in CIELAB) pooled with the colour heads;
- `balance`: per-site white balance (gray world over the stream's frames, perception.site_balance);
- `all`: the four together;
- `helped-alone`: the three changes that each helped alone on the tuning input (fusion, naming, balance);
- `ranked`, `fusion-ranked`, `all-ranked`: one crop, fusion, and all four, with each field's confidence on
  the wire (schema person/2) and rxd's answers ranked by it; the others send person/1 (hard answers);

and, with `--tune`, a small grid of each change's setting on the tuning input only (PETS09 by default), so
that a setting is chosen on one video and reported on the others. Every run writes its txd TOML, its
results.json/.md beside it, and the script ends with two tables (semantic scheme: the exact set's precision,
its precision where answered and its recall; P@1/5/10 and average precision of the ranked answers, and P@10
of the one- and of the two-attribute queries apart; the mean balanced accuracy of the sent records' fields
against the identity each one shows, over all fields and over the colour fields; per input and their mean).
The queries: every value, up to 40 pairs of values and up to 40 whole outfits the keyframed people carry.

Perception (detection, appearance) is shared between the runs of one input by frame content: every
configuration sees the same tracks and the same queries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from semcom.data import data_dir

INPUTS = ("pets09", "tud-stadtmitte", "tud-campus", "intel")
METRICS = (
    "precision",
    "precision_answered",
    "recall",
    "precision_at_1",
    "precision_at_5",
    "precision_at_10",
    "average_precision",
    "precision_at_10_single",
    "precision_at_10_pair",
    "field_balanced_accuracy",
    "colour_balanced_accuracy",
)
# The compact table: exact-set precision and its recall, the ranked metrics, P@10 by query kind.
COMPACT = ("precision", "recall", "precision_at_10_single", "precision_at_10_pair", "average_precision")
PAIRS = 40  # two-attribute queries per input at most (a seeded sample of the pairs the people carry)
COLOUR_FIELDS = ("upper_color", "lower_color", "shoe_color")
OFF: dict[str, Any] = {"enabled": False}
# The settings each change is switched on with (the `all` row uses each one's); --tune varies them.
NAMING_WEIGHT = 1.0
MASK: dict[str, Any] = {"enabled": True}
BALANCE: dict[str, Any] = {"enabled": True, "minkowski_p": 6.0}


def configs(naming_weight: float, mask: Mapping[str, Any], balance: Mapping[str, Any]) -> dict[str, Any]:
    """Name -> txd overrides {views, foreground, site_balance, naming_weight, mask_min_share}."""
    off: dict[str, Any] = {"views": 1, "foreground": OFF, "site_balance": OFF, "naming_weight": 0.0}
    return {
        "one-crop": off,
        "fusion": {**off, "views": 3},
        "mask": {**off, "foreground": dict(mask)},
        "naming": {**off, "naming_weight": naming_weight},
        "balance": {**off, "site_balance": dict(balance)},
        # the three changes that each helped alone on the tuning input (PETS09), masks left out
        "helped-alone": {**off, "views": 3, "site_balance": dict(balance), "naming_weight": naming_weight},
        "all": {
            "views": 3,
            "foreground": dict(mask),
            "site_balance": dict(balance),
            "naming_weight": naming_weight,
        },
        # confidence on the wire (person/2: 2 bits a field) and answers ranked by it
        "ranked": {**off, "schema": "person/2"},
        "fusion-ranked": {**off, "views": 3, "schema": "person/2"},
        "all-ranked": {
            "views": 3,
            "foreground": dict(mask),
            "site_balance": dict(balance),
            "naming_weight": naming_weight,
            "schema": "person/2",
        },
    }


def tuning_grid() -> dict[str, Any]:
    """Each change alone at a few settings (chosen on the tuning input only)."""
    off: dict[str, Any] = {"views": 1, "foreground": OFF, "site_balance": OFF, "naming_weight": 0.0}
    grid: dict[str, Any] = {"one-crop": off}
    for w in (0.5, 1.0, 2.0):
        grid[f"naming-w{w:g}"] = {**off, "naming_weight": w}
    for share in (0.1, 0.3, 0.5):
        grid[f"mask-share{share:g}"] = {**off, "foreground": {"enabled": True}, "mask_min_share": share}
    grid["mask-pixels"] = {**off, "foreground": {"enabled": True}, "mask_pixels": True}
    grid["mask-naming-w1"] = {**off, "foreground": {"enabled": True}, "naming_weight": 1.0}
    grid["mask-knn"] = {**off, "foreground": {"enabled": True, "method": "knn", "threshold": 400.0}}
    for p in (1.0, 6.0):
        grid[f"balance-p{p:g}"] = {**off, "site_balance": {"enabled": True, "minkowski_p": p}}
    # pairs of the changes that helped alone, at their chosen settings: which combination txd ships
    naming, balance = {"naming_weight": NAMING_WEIGHT}, {"site_balance": dict(BALANCE)}
    grid["fusion-naming"] = {**off, "views": 3, **naming}
    grid["fusion-balance"] = {**off, "views": 3, **balance}
    grid["naming-balance"] = {**off, **naming, **balance}
    return grid


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def txd_toml(overrides: Mapping[str, Any]) -> str:
    """The txd config of one run: txd's defaults but for the overridden perception and understanding."""
    lines = [f"[site]\nschema_id = {json.dumps(overrides.get('schema', 'person/1'))}", ""]
    lines += ["[perception]", "analysis_fps = 5.0", "", "[perception.keyframes]"]
    lines += [f"views_per_track = {int(overrides['views'])}", ""]
    for table in ("foreground", "site_balance"):
        lines.append(f"[perception.{table}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in overrides[table].items()]
        lines.append("")
    lines += ["[understanding]", 'kind = "attributes"']
    lines.append(f"colour_naming_weight = {float(overrides['naming_weight'])!r}")
    if "mask_min_share" in overrides:
        lines.append(f"mask_min_share = {float(overrides['mask_min_share'])!r}")
    if "mask_pixels" in overrides:
        lines.append(f"mask_pixels = {_toml_value(bool(overrides['mask_pixels']))}")
    return "\n".join([*lines, ""])


def _field_accuracy(per_field: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean balanced accuracy of the sent records against their matched identity's labels: over every
    field, and over the colour fields ("unknown" counted wrong; bench.paper.document.attribute_accuracy)."""
    colours = [per_field[f]["balanced_accuracy"] for f in COLOUR_FIELDS if f in per_field]
    return {
        "field_balanced_accuracy": per_field.get("mean", {}).get("balanced_accuracy", math.nan),
        "colour_balanced_accuracy": sum(colours) / len(colours) if colours else math.nan,
    }


def _fmt(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def table(rows: Mapping[str, Mapping[str, Mapping[str, float]]], inputs: Sequence[str]) -> str:
    """Markdown: one row per (configuration, input) and the mean over inputs per configuration."""
    head = "| configuration | input | " + " | ".join(METRICS) + " |"
    lines = [head, "|---" * (len(METRICS) + 2) + "|"]
    for name, per_input in rows.items():
        for inp in inputs:
            if inp in per_input:
                cells = " | ".join(_fmt(per_input[inp].get(m)) for m in METRICS)
                lines.append(f"| {name} | {inp} | {cells} |")
        have = [per_input[i] for i in inputs if i in per_input]
        if len(have) > 1:
            means = " | ".join(_fmt(_mean([h.get(m) for h in have])) for m in METRICS)
            lines.append(f"| {name} | **mean** | {means} |")
    return "\n".join([*lines, ""])


def compact(rows: Mapping[str, Mapping[str, Mapping[str, float]]], inputs: Sequence[str], tuning: str) -> str:
    """Markdown: one row per configuration; per input "exact-set precision / its recall / P@10 of
    one-attribute queries / P@10 of two-attribute queries / AP (colour balanced accuracy)", then the mean over
    the inputs other than `tuning` (the held-out report; a metric no input has is '-')."""
    held = [i for i in inputs if i != tuning]
    cols = [f"{i} (tuning)" if i == tuning else i for i in inputs] + [f"mean of {', '.join(held)}"]
    lines = ["| configuration | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def cell(values: Mapping[str, float]) -> str:
        return " / ".join(_fmt(values.get(m)) for m in COMPACT) + f" ({_fmt(values.get(METRICS[-1]))})"

    for name, per_input in rows.items():
        cells = [cell(per_input[i]) if i in per_input else "-" for i in inputs]
        have = [per_input[i] for i in held if i in per_input]
        mean = {m: _mean([h.get(m) for h in have]) for m in METRICS} if len(have) == len(held) else {}
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cell(mean) if mean else '-'} |")
    return "\n".join([*lines, ""])


def _mean(values: Sequence[float | None]) -> float:
    have = [v for v in values if v is not None and not math.isnan(v)]
    return sum(have) / len(have) if have else math.nan


# Configurations renamed since a run's JSON was written.
_RENAMED = {"chosen": "helped-alone"}


def report_main(paths: Sequence[Path], tuning: str) -> int:
    """Merge the rows of several runs' ablation.json (later files win) into the compact table."""
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for path in paths:
        for name, per_input in json.loads(path.read_text(encoding="utf-8"))["rows"].items():
            rows.setdefault(_RENAMED.get(name, name), {}).update(per_input)
    inputs = [i for i in INPUTS if any(i in r for r in rows.values())]
    print(compact(rows, inputs, tuning))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from bench.paper.cli import run_one
    from bench.paper.document import attribute_accuracy, results
    from bench.paper.report import write_report
    from bench.paper.suite import SuiteOptions, conditions, input_configs, summarise_input

    p = argparse.ArgumentParser(prog="python -m bench.perception_ablation", description=__doc__)
    p.add_argument("--data", type=Path, default=data_dir(), help="the shared data folder")
    p.add_argument("--out", type=Path, default=Path("var/bench/ablation"), help="one folder per run")
    p.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=INPUTS, help="videos to run")
    p.add_argument(
        "--configs",
        nargs="+",
        help="configurations to run, from either list (default: all seven, or the grid)",
    )
    p.add_argument("--tune", action="store_true", help="run the tuning grid instead (on --inputs)")
    p.add_argument("--naming-weight", type=float, default=NAMING_WEIGHT, help="colour naming weight")
    p.add_argument("--mask", default=json.dumps(MASK), help="perception.foreground overrides (JSON)")
    p.add_argument("--mask-min-share", type=float, help="understanding.mask_min_share (default txd's)")
    p.add_argument("--balance", default=json.dumps(BALANCE), help="perception.site_balance overrides (JSON)")
    p.add_argument("--snr-db", type=float, default=12.0, help="Es/N0 of the semantic link")
    p.add_argument("--report", type=Path, nargs="+", help="only print the compact table of these JSON files")
    p.add_argument(
        "--tuning-input", default="pets09", choices=INPUTS, help="the input settings were chosen on"
    )
    args = p.parse_args(argv)
    if args.report:
        return report_main(args.report, args.tuning_input)
    main_rows = configs(args.naming_weight, json.loads(args.mask), json.loads(args.balance))
    chosen = tuning_grid() if args.tune else main_rows
    if args.configs:  # any configuration by name, from either list
        chosen = {**tuning_grid(), **main_rows}
    if args.mask_min_share is not None:
        for name, over in chosen.items():
            if over["foreground"].get("enabled"):
                chosen[name] = {**over, "mask_min_share": args.mask_min_share}
    if args.configs:
        if unknown := [c for c in args.configs if c not in chosen]:
            print(
                f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(chosen)}", file=sys.stderr
            )
            return 2
        chosen = {c: chosen[c] for c in args.configs}
    env = conditions()
    print(f"conditions: {json.dumps(env)}", flush=True)
    started = time.perf_counter()
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for inp in args.inputs:
        for name, over in chosen.items():
            run_dir = args.out / name / inp
            run_dir.mkdir(parents=True, exist_ok=True)
            toml = run_dir / "txd.toml"
            toml.write_text(txd_toml(over), encoding="utf-8")
            common = {
                "schemes": ("semantic",),
                "snr_db": (args.snr_db,),
                "txd_config": toml,
                "max_pairs": PAIRS,
            }
            opts = SuiteOptions(args.data, args.out / name, (inp,), common, 2000, Path("var/attributes_loso"))
            cfg = input_configs(opts)[inp]
            t0 = time.perf_counter()
            state = run_one(cfg, progress=False, argv=["(ablation)", name, inp])
            write_report(state)
            doc = results(state)
            row = dict(summarise_input(doc)["schemes"]["semantic"])
            kinds = doc["schemes"]["semantic"]["by_kind"]
            for kind in ("single", "pair"):
                row[f"precision_at_10_{kind}"] = kinds.get(kind, {}).get("precision_at_10", math.nan)
            row.update(_field_accuracy(attribute_accuracy(state)))
            rows.setdefault(name, {})[inp] = {m: row[m] for m in METRICS}
            print(
                f"{name:<16}{inp:<16}"
                + " ".join(f"{m} {_fmt(row[m])}" for m in METRICS)
                + f"  ({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    md = table(rows, args.inputs) + "\n" + compact(rows, args.inputs, args.tuning_input)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "tune" if args.tune else "ablation"
    (args.out / f"{suffix}.md").write_text(md, encoding="utf-8")
    doc = {"conditions": env, "rows": rows, "configs": chosen, "wall_s": time.perf_counter() - started}
    (args.out / f"{suffix}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    print(md)
    print(f"wall {time.perf_counter() - started:.0f} s, load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
