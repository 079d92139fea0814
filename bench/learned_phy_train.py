"""Train the learned channel adaptation (semcom/phy/learned.py) end to end through a simulated channel.

Seeded, CPU, about 20 s per model; a rerun writes the same weights (only `training.seconds` differs):

    python -m bench.learned_phy_train --symbols 1 --name person-s1
    python -m bench.learned_phy_train --symbols 2 --name person-s2
    python -m bench.learned_phy_train --card   # rewrites semcom/phy/weights/MODEL_CARD.md from the files

Per field, an encoder matrix E_f (values x 2 S_f reals) whose rows, scaled to energy S_f, are the
codewords, and a decoder (W_f, a_f) whose logits are snr_eff (y @ W_f) + a_f. Each step draws
a value per field from the training prior (PETA's per-field label frequencies mixed with uniform, so that
rare values and "unknown" still get codewords far from the others), an Es/N0 uniform in dB over
[--snr-db-min, --snr-db-max], with probability --fading a Rayleigh power gain |h|^2 ~ Exp(1) on top
(the receiver equalises with its estimate of h, so fading shows as a lower effective SNR), adds complex
Gaussian noise, and minimises the cross-entropy of every field's decoded value.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from semcom.data import data_dir
from semcom.phy.learned import MODEL_FORMAT, LearnedModel
from semcom.phy.mcs import Mcs
from semcom.schema import Schema, SchemaRegistry

WEIGHTS = Path(__file__).resolve().parent.parent / "semcom" / "phy" / "weights"
# schema field -> PETA label column (as txd.understanding.train_attributes.PETA_COLUMNS; not imported
# from there so that this script does not pull in the transmitter's model code).
PETA_COLUMNS = {
    "gender": "gender",
    "upper_color": "upper_colors",
    "sleeve": "sleeve",
    "lower_color": "lower_colors",
    "lower_length": "lower_length",
    "shoe_color": "footwear_colors",
}
EVAL_SNRS_DB = (3.0, 6.0, 9.0, 15.0, 30.0)


def peta_indices(path: Path, schema: Schema) -> NDArray[np.int64]:
    """(rows, fields) value index per PETA row: the first listed value in the vocabulary, else unknown."""
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            record = []
            for spec in schema.fields:
                cell = row.get(PETA_COLUMNS.get(spec.name, ""), "") or ""
                values = [v for v in cell.split("|") if v in spec.values[1:]]
                record.append(spec.index(values[0]) if values else 0)
            out.append(record)
    return np.array(out, dtype=np.int64).reshape(-1, len(schema.fields))


def training_prior(schema: Schema, labels: Path | None, uniform_mix: float) -> list[NDArray[np.float64]]:
    """Per field, (1 - uniform_mix) x PETA's label frequencies + uniform_mix x uniform (all uniform when
    there are no labels)."""
    rows = peta_indices(labels, schema) if labels is not None else None
    prior = []
    for j, spec in enumerate(schema.fields):
        count = len(spec.values)
        uniform = np.full(count, 1.0 / count)
        if rows is None:
            prior.append(uniform)
            continue
        freq = np.bincount(rows[:, j], minlength=count) / rows.shape[0]
        prior.append((1 - uniform_mix) * freq + uniform_mix * uniform)
    return prior


def train(
    schema: Schema, symbols: list[int], prior: list[NDArray[np.float64]], args: argparse.Namespace
) -> tuple[dict[str, Any], list[float]]:
    """The trained model's fields (as in the model file) and the loss curve (mean of every 100 steps)."""
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    encoders: list[torch.nn.Parameter] = []
    # Decoder weight = exp(gain) * W with W starting at zero: the best W is about 2 C^T (the matched
    # filter), and logits scaled by SNRs up to 1e3 make a free W from a random start creep there over
    # thousands of steps (leaving the decoder under-confident); the log gain gets the scale in ~300.
    decoders: list[tuple[torch.nn.Parameter, torch.nn.Parameter, torch.nn.Parameter]] = []
    for spec, s, p in zip(schema.fields, symbols, prior, strict=True):
        count = len(spec.values)
        encoders.append(torch.nn.Parameter(torch.randn(count, 2 * s, generator=gen)))
        weight, gain = torch.nn.Parameter(torch.zeros(2 * s, count)), torch.nn.Parameter(torch.zeros(()))
        prior_logit = torch.nn.Parameter(torch.log(torch.tensor(p, dtype=torch.float32)))
        decoders.append((weight, gain, prior_logit))
    params = encoders + [p for d in decoders for p in d]
    optimiser = torch.optim.Adam(params, lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=args.steps)
    priors = [torch.tensor(p, dtype=torch.float32) for p in prior]
    losses: list[float] = []
    window = 0.0
    for step in range(args.steps):
        snr = _draw_snr(args, gen)
        loss = torch.zeros(())
        for enc, (w, g, a), weights, s in zip(encoders, decoders, priors, symbols, strict=True):
            values = torch.multinomial(weights, args.batch, replacement=True, generator=gen)
            code = enc * math.sqrt(s) / enc.norm(dim=1, keepdim=True)
            noise = torch.randn(args.batch, 2 * s, generator=gen) * torch.sqrt(0.5 / snr)[:, None]
            logits = snr[:, None] * ((code[values] + noise) @ (w * g.exp())) + a
            loss = loss + torch.nn.functional.cross_entropy(logits, values)
        loss = loss / len(encoders)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        window += float(loss.detach())
        if (step + 1) % 100 == 0:
            losses.append(window / 100)
            window = 0.0
    return {"fields": _export(schema, symbols, encoders, decoders)}, losses


def _export(schema: Schema, symbols: list[int], encoders: list[Any], decoders: list[Any]) -> list[Any]:
    """The trained parameters as the model file's "fields" list (codewords already scaled to energy S)."""
    fields = []
    for spec, s, enc, (w, g, a) in zip(schema.fields, symbols, encoders, decoders, strict=True):
        code = (enc * math.sqrt(s) / enc.norm(dim=1, keepdim=True)).detach().double().numpy()
        pairs = np.stack([code[:, :s], code[:, s:]], axis=-1)  # (V, S, re/im)
        fields.append(
            {
                "name": spec.name,
                "values": list(spec.values),
                "symbols": s,
                "codebook": pairs.tolist(),
                "weight": (w * g.exp()).detach().double().numpy().tolist(),
                "prior_logit": a.detach().double().numpy().tolist(),
            }
        )
    return fields


def _draw_snr(args: argparse.Namespace, gen: Any) -> Any:
    """Linear effective Es/N0 per sample: uniform in dB, times an Exp(1) power gain for faded samples."""
    import torch

    snr_db = args.snr_db_min + (args.snr_db_max - args.snr_db_min) * torch.rand(args.batch, generator=gen)
    snr = 10.0 ** (snr_db / 10.0)
    if args.fading > 0:
        faded = torch.rand(args.batch, generator=gen) < args.fading
        power = -torch.log(torch.rand(args.batch, generator=gen).clamp_min(1e-12))
        snr = torch.where(faded, snr * power, snr)
    return snr.clamp(1e-3, 1e5)


def evaluate(
    model: LearnedModel, prior: list[NDArray[np.float64]], seed: int, n: int = 20000
) -> dict[str, Any]:
    """Per SNR of EVAL_SNRS_DB on AWGN (numpy inference, the daemons' code path): the field error rate
    per field, and over all fields the mean confidence (probability of the chosen value) and accuracy,
    which a calibrated decoder keeps equal."""
    rng = np.random.default_rng(seed + 1)
    out: dict[str, Any] = {}
    indices = np.stack([rng.choice(len(p), n, p=p) for p in prior], axis=1)
    x = model.encode_indices(indices)
    for snr_db in EVAL_SNRS_DB:
        n0 = 10 ** (-snr_db / 10)
        noise = rng.standard_normal((*x.shape, 2)) @ np.array([1, 1j]) * math.sqrt(n0 / 2)
        probs = model.decode_fields(x + noise, noise_var=n0)
        errors = [float(np.mean(p.argmax(axis=1) != indices[:, j])) for j, p in enumerate(probs)]
        out[f"{snr_db:g}"] = {f.name: round(e, 5) for f, e in zip(model.fields, errors, strict=True)}
        out[f"{snr_db:g}"] |= {
            "mean confidence": round(float(np.mean([p.max(axis=1).mean() for p in probs])), 5),
            "accuracy": round(1 - float(np.mean(errors)), 5),
        }
    return out


def _split_lines(schema_id: str = "person/1") -> list[str]:
    """The digital/learned split of one record and its costs, from the schema and the MCS table."""
    schema = SchemaRegistry.builtin().get(schema_id)
    header = schema.track_bits + schema.location_bits + schema.time_bits
    qpsk, qam16 = Mcs("qpsk", "ldpc_r12"), Mcs("qam16", "ldpc_r12")
    return [
        f"## Split and cost per {schema_id} record",
        "",
        f"- whole record, digital: {schema.record_bits} bits (header {header} + fields "
        f"{schema.attribute_bits}) -> {schema.record_bits / qpsk.efficiency:g} symbols on {qpsk},"
        f" {schema.record_bits / qam16.efficiency:g} on {qam16}",
        f"- learned mode: the header's {header} bits (track {schema.track_bits}, location"
        f" {schema.location_bits}, time {schema.time_bits}) stay digital -> {header / qpsk.efficiency:g}"
        f" symbols on {qpsk} ({header / qam16.efficiency:g} on {qam16}); the {schema.attribute_bits}"
        " field bits become S_total learned symbols (below)",
        "- per burst, both modes also send 16 pilots and the frame header (96 bits: version, schema code,"
        " count, base time, first record id) + CRC-32 + padding to a byte, LDPC-coded like the records'"
        " header bits; the learned burst's CRC covers the header only",
        "",
    ]


def write_card(folder: Path) -> Path:
    """MODEL_CARD.md describing every model file in `folder` from the numbers stored in it."""
    lines = [
        "# Learned channel adaptation models",
        "",
        "Written by `python -m bench.learned_phy_train --card` from the model files; the code is",
        "semcom/phy/learned.py (inference, numpy) and bench/learned_phy_train.py (training, torch, CPU).",
        "Encoder: per field a codebook of unit-energy-per-symbol codewords (a constant-energy code, so",
        "the average power constraint mean |x|^2 = 1 holds for every record); decoder: one linear layer",
        "(no bias) whose logits the effective SNR |h|^2/N0 scales, plus prior logits. Header fields",
        "(stream, record id, time, track, location) stay digital (semcom/phy/learned_link.py).",
        "",
        *_split_lines(),
    ]
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        t = doc["training"]
        columns = [*(f["name"] for f in doc["fields"]), "mean confidence", "accuracy"]
        per_field = ", ".join(f"{f['name']} {f['symbols']}" for f in doc["fields"])
        lines += [
            f"## {doc['name']} ({doc['schema_id']})",
            "",
            f"- symbols per record: {sum(f['symbols'] for f in doc['fields'])} ({per_field})",
            f"- training: {t['steps']} steps of {t['batch']} draws per field, Adam lr {t['lr']} (cosine),"
            f" seed {t['seed']}, {t['seconds']:.0f} s on one CPU thread",
            f"- training SNR: Es/N0 uniform in [{t['snr_db_min']:g}, {t['snr_db_max']:g}] dB; Rayleigh"
            f" power gain on {t['fading']:.0%} of draws",
            f"- training values: {t['prior']}",
            f"- loss (mean cross-entropy per field): first 100 steps {t['loss'][0]:.4f},"
            f" last 100 steps {t['loss'][-1]:.4f}",
            "- field error rate on AWGN per field (20,000 draws from the training prior), and over all"
            " fields the decoder's mean confidence against its accuracy:",
            "",
            "| Es/N0 dB | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for snr, errors in t["eval"].items():
            lines.append(f"| {snr} | " + " | ".join(f"{errors[c]:.4f}" for c in columns) + " |")
        lines.append("")
    card = folder / "MODEL_CARD.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schema", default="person/1")
    parser.add_argument(
        "--symbols", default="2", help="complex symbols per field: one number, or one per field"
    )
    parser.add_argument("--name", default=None, help="model name (default <schema name>-s<symbols>)")
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--snr-db-min", type=float, default=-2.0)
    parser.add_argument("--snr-db-max", type=float, default=32.0)
    parser.add_argument("--fading", type=float, default=0.5, help="fraction of draws with Rayleigh fading")
    parser.add_argument("--uniform-mix", type=float, default=0.5)
    parser.add_argument("--labels", type=Path, default=data_dir() / "peta" / "peta_labels.csv")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--card", action="store_true", help="only rewrite MODEL_CARD.md in --out")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.card:
        print(write_card(args.out))
        return
    schema = SchemaRegistry.builtin().get(args.schema)
    spec = [int(s) for s in args.symbols.split(",")]
    symbols = spec * len(schema.fields) if len(spec) == 1 else spec
    if len(symbols) != len(schema.fields) or min(symbols) < 1:
        parser.error(f"--symbols needs one positive count or {len(schema.fields)} of them")
    labels = args.labels if args.labels.is_file() else None
    prior = training_prior(schema, labels, args.uniform_mix)
    start = time.process_time()
    doc, losses = train(schema, symbols, prior, args)
    name = args.name or f"{schema.name}-s{args.symbols.replace(',', '')}"
    source = "uniform over each vocabulary (no labels found)"
    if labels is not None:
        source = f"PETA label frequencies ({labels.name}) per field, mixed {args.uniform_mix:g} with uniform"
    doc |= {"format": MODEL_FORMAT, "name": name, "schema_id": schema.id}
    doc["training"] = {
        "steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
        "snr_db_min": args.snr_db_min, "snr_db_max": args.snr_db_max, "fading": args.fading,
        "prior": source,
        "seconds": time.process_time() - start, "loss": [round(x, 5) for x in losses],
    }  # fmt: skip
    model = LearnedModel.from_dict(doc, schema, source=name)
    doc["training"]["eval"] = evaluate(model, prior, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}.json"
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{path}: {model.symbols_per_record} symbols/record, loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    for snr, errors in doc["training"]["eval"].items():
        print(f"  {snr:>4} dB field errors: {errors}")


if __name__ == "__main__":
    main()
