"""Learned channel adaptation against the digital link: field errors and symbols per record vs Es/N0.

    python -m bench.learned_phy [--frames 100] [--records-per-frame 8] [--channels awgn,rayleigh]

Every scheme sends the same frames of person/1 records through the same channel_sim models (a fresh
`ChannelChain` per scheme, channel seed and stream id shared, so every scheme meets the same Rayleigh
gains). Records: rows drawn (seeded) from PETA's labels (the first listed value of each field, unknown when
none is in the vocabulary), or uniform over each vocabulary with --records uniform or without the data.

Schemes: "digital:<mcs>" (the 54-bit codec frame through LDPC + QAM, as txd sends it today) and
"learned:<model>@<header mcs>" (learned_link.py: header digital, fields through the model).
A burst whose CRC fails (the digital frame's, or the learned header's) loses all its records: every field
of a lost record counts as an error. Columns: bursts lost; field error rate over all sent fields; the same
over delivered records; records with all fields right; the learned decoder's mean confidence in its
chosen values (delivered records), against which "field err | delivered" checks its calibration.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.learned_phy_train import peta_indices
from channel_sim.models import AwgnConfig, ChannelBurst, ChannelChain, RayleighConfig
from semcom.codec import decode_records, encode_records, frame_bits
from semcom.data import data_dir
from semcom.errors import DecodeError
from semcom.phy import Mcs, burst_symbols, receive, transmit
from semcom.phy.learned import LearnedModel, load_model
from semcom.phy.learned_link import learned_burst_symbols, receive_learned, transmit_learned
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry

DEFAULT_SCHEMES = (
    "digital:qpsk/ldpc_r12,digital:qam16/ldpc_r12,learned:person-s1@qpsk/ldpc_r12,"
    "learned:person-s2@qpsk/ldpc_r12,learned:person-s3@qpsk/ldpc_r12,learned:person-s2@qam16/ldpc_r12"
)
SNRS_DB = tuple(range(3, 31, 3))
PILOTS = 16


@dataclass
class Tally:
    """Counts for one scheme at one SNR."""

    bursts: int = 0
    lost: int = 0
    records: int = 0
    symbols: int = 0
    field_errors: int = 0
    fields: int = 0
    delivered_errors: int = 0
    delivered_fields: int = 0
    exact: int = 0
    confidence: list[float] = field(default_factory=list)
    pre_fec_ber: list[float] = field(default_factory=list)

    def row(self) -> tuple[float, ...]:
        conf = float(np.mean(self.confidence)) if self.confidence else math.nan
        return (
            self.lost / self.bursts,
            self.field_errors / self.fields,
            self.delivered_errors / max(self.delivered_fields, 1),
            self.exact / self.records,
            conf,
            float(np.nanmean(self.pre_fec_ber)) if self.pre_fec_ber else math.nan,
        )


def make_frames(
    schema: Schema, rows: NDArray[np.int64], frames: int, per_frame: int, seed: int
) -> list[bytes]:
    """`frames` codec frames of `per_frame` records each, field values from `rows` drawn with `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(frames):
        picks = rows[rng.integers(0, rows.shape[0], per_frame)]
        records = [
            Record(
                schema_id=schema.id,
                stream_id="bench",
                track_id=int(rng.integers(0, 1 << schema.track_bits)),
                record_id=f * per_frame + i,
                time_s=1.7e9 + f + i * 0.1,
                location_id=int(rng.integers(0, 1 << schema.location_bits)),
                fields={spec.name: spec.values[v] for spec, v in zip(schema.fields, pick, strict=True)},
            )
            for i, pick in enumerate(picks)
        ]
        out.append(encode_records(records, schema))
    return out


def _indices(records: Sequence[Record], schema: Schema) -> NDArray[np.int64]:
    return np.array([[spec.index(r.fields[spec.name]) for spec in schema.fields] for r in records])


def run_scheme(
    scheme: str, frames: list[bytes], schema: Schema, channel: str, snr_db: float, seed: int
) -> Tally:
    """Send every frame through the channel with `scheme` and count what came back."""
    registry = SchemaRegistry([schema])
    kind, _, spec = scheme.partition(":")
    configs = [RayleighConfig()] if channel == "rayleigh" else []
    stream = ChannelChain([*configs, AwgnConfig(snr_db=snr_db)], seed).for_stream("bench-learned-phy")
    model: LearnedModel | None = None
    if kind == "learned":
        name, _, header = spec.partition("@")
        model, mcs = load_model(name, schema), Mcs.parse(header or "qpsk/ldpc_r12")
    else:
        mcs = Mcs.parse(spec)
    tally = Tally()
    for frame in frames:
        sent = decode_records(frame, registry, stream_id="bench")
        truth = _indices(sent, schema)
        if model is None:
            tx = transmit(frame, mcs, pilot_count=PILOTS)
            y = stream.apply(ChannelBurst(tx.symbols, tx.symbols.size)).symbols
            assert y is not None
            rx = receive(y, mcs, info_bits=tx.info_bits, coded_bits=tx.coded_bits, pilot_count=PILOTS)
            got, conf, ber = rx.frame, None, rx.pre_fec_ber
        else:
            ltx = transmit_learned(frame, model, schema, header_mcs=mcs, pilot_count=PILOTS)
            y = stream.apply(ChannelBurst(ltx.symbols, ltx.symbols.size)).symbols
            assert y is not None
            lrx = receive_learned(
                y, model, schema, header_info_bits=ltx.header_info_bits,
                header_coded_bits=ltx.header_coded_bits, pilot_count=PILOTS,
                record_count=ltx.record_count, header_mcs=mcs,
            )  # fmt: skip
            conf, ber = lrx.confidence(), lrx.header.pre_fec_ber
            try:
                got = lrx.frame()
            except DecodeError:
                got = b""
        tally.pre_fec_ber.append(ber)
        _count(tally, got, conf, truth, registry, len(y))
    return tally


def _count(
    tally: Tally, got: bytes, conf: NDArray[np.float64] | None, truth: NDArray[np.int64],
    registry: SchemaRegistry, symbols: int,
) -> None:  # fmt: skip
    n, fields = truth.shape
    tally.bursts += 1
    tally.records += n
    tally.symbols += symbols
    tally.fields += n * fields
    try:
        received = decode_records(got, registry, stream_id="bench")
    except DecodeError:
        tally.lost += 1
        tally.field_errors += n * fields
        return
    wrong = _indices(received, next(iter(registry))) != truth
    tally.field_errors += int(wrong.sum())
    tally.delivered_errors += int(wrong.sum())
    tally.delivered_fields += n * fields
    tally.exact += int((~wrong.any(axis=1)).sum())
    if conf is not None:
        tally.confidence.extend(conf.reshape(-1).tolist())


def short(scheme: str) -> str:
    """A column label: "digital:qam16/ldpc_r12" -> "qam16/ldpc"; "learned:person-s2@qpsk/..." -> "s2@qpsk"."""
    kind, _, spec = scheme.partition(":")
    if kind == "learned":
        name, _, header = spec.partition("@")
        return f"{name.rsplit('-', 1)[-1]}@{(header or 'qpsk').split('/')[0]}"
    return spec.replace("ldpc_r12", "ldpc")


def marginal_symbols(scheme: str, schema: Schema, n: int = 8) -> float:
    """Channel symbols one more record adds to a burst (pilots and frame header amortised away)."""
    kind, _, spec = scheme.partition(":")
    if kind == "learned":
        name, _, header = spec.partition("@")
        model, mcs = load_model(name, schema), Mcs.parse(header or "qpsk/ldpc_r12")
        cost = [learned_burst_symbols(k, schema, model, header_mcs=mcs) for k in (n, 2 * n)]
    else:
        cost = [burst_symbols(frame_bits(k, schema), Mcs.parse(spec), PILOTS) for k in (n, 2 * n)]
    return (cost[1] - cost[0]) / n


def report(channel: str, schemes: list[str], results: dict[tuple[str, float], Tally], schema: Schema) -> None:
    """One table per metric: SNR down, schemes across."""
    first = results[(schemes[0], SNRS_DB[0])]
    print(
        f"\n== {channel}: {first.bursts} bursts of {first.records // first.bursts} records per scheme and SNR"
    )
    labels = [short(s) for s in schemes]
    width = max(12, *(len(label) + 2 for label in labels))
    print(f"{'':<24}" + "".join(f"{label:>{width}}" for label in labels))
    costs = [results[(s, SNRS_DB[0])].symbols / results[(s, SNRS_DB[0])].records for s in schemes]
    print(f"{'symbols/record (burst)':<24}" + "".join(f"{c:>{width}.2f}" for c in costs))
    names = (
        "bursts lost %",
        "field err %",
        "field err | delivered %",
        "records exact %",
        "mean confidence",
        "pre-FEC BER % (digital)",
    )
    marginal = [marginal_symbols(s, schema) for s in schemes]
    print(f"{'symbols/extra record':<24}" + "".join(f"{m:>{width}.2f}" for m in marginal))
    for metric, name in enumerate(names):
        print(f"\n{name:<24}" + "".join(f"{label:>{width}}" for label in labels))
        for snr in SNRS_DB:
            cells = []
            for s in schemes:
                value = results[(s, snr)].row()[metric]
                cells.append("-" if math.isnan(value) else f"{value * (1 if metric == 4 else 100):.3f}")
            print(f"{snr:>5} dB".ljust(24) + "".join(f"{c:>{width}}" for c in cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.learned_phy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--schemes", default=DEFAULT_SCHEMES, help="comma-separated (see the docstring)")
    parser.add_argument("--channels", default="awgn,rayleigh")
    parser.add_argument("--frames", type=int, default=100, help="bursts per scheme and SNR")
    parser.add_argument("--records-per-frame", type=int, default=8)
    parser.add_argument("--records", choices=("peta", "uniform"), default="peta")
    parser.add_argument("--labels", type=Path, default=data_dir() / "peta" / "peta_labels.csv")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    schema = SchemaRegistry.builtin().get("person/1")
    if args.records == "peta" and args.labels.is_file():
        rows, source = peta_indices(args.labels, schema), f"PETA label rows ({args.labels})"
    else:
        rng = np.random.default_rng(args.seed)
        rows = np.stack([rng.integers(0, len(f.values), 100000) for f in schema.fields], axis=1)
        source = "uniform over each vocabulary"
    frames = make_frames(schema, rows, args.frames, args.records_per_frame, args.seed)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    print(f"records: {source}; channel seed {args.seed}; {PILOTS} pilots per burst; Es/N0 per symbol")
    print("schemes: " + ", ".join(f"{short(s)} = {s}" for s in schemes))
    for channel in args.channels.split(","):
        results = {
            (s, float(snr)): run_scheme(s, frames, schema, channel, float(snr), args.seed)
            for s in schemes
            for snr in SNRS_DB
        }
        report(channel, schemes, results, schema)


if __name__ == "__main__":
    main()
