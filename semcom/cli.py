"""semcom: the umbrella command line (demo, clients for the three daemons, schemas)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format

from semcom import client
from semcom.pb.v1 import (
    channel_pb2,
    channel_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    transmitter_pb2,
    transmitter_pb2_grpc,
)
from semcom.registry import Registry
from semcom.schema import SchemaRegistry


def _pairs(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _print_pb(msg: object) -> None:
    print(json_format.MessageToJson(msg, preserving_proto_field_name=True))  # type: ignore[arg-type]


def cmd_ingest(args: argparse.Namespace) -> int:
    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(args.txd))
    reply = client.ingest_with_progress(
        stub, Path(args.video), stream_id=args.stream_id, location_id=args.location_id
    )
    _print_pb(reply)
    return 0


def cmd_announce(args: argparse.Namespace) -> int:
    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(args.txd))
    reply = client.announce(
        stub,
        stream_id=args.stream_id,
        fields=_pairs(args.field),
        schema_id=args.schema,
        track_id=args.track_id,
        location_id=args.location_id,
    )
    _print_pb(reply)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    stub = receiver_pb2_grpc.ReceiverStub(client.open_channel(args.rxd))
    filters: dict[str, list[str]] = {}
    for item in args.filter:
        name, sep, values = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        filters.setdefault(name.strip(), []).extend(v.strip() for v in values.split("|") if v.strip())
    reply = client.query(stub, text=args.text, filters=filters, top_k=args.top_k)
    if reply.parsed_slots:
        print("slots: " + ", ".join(f"{s.name}={'|'.join(s.values) or s.value}" for s in reply.parsed_slots))
    if reply.note:
        print(f"note: {reply.note}")
    for hit in reply.hits:
        print(client.format_hit(hit))
    print(f"{len(reply.hits)} hits")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.txd:
        tx = transmitter_pb2_grpc.TransmitterStub(client.open_channel(args.txd))
        _print_pb(tx.Status(transmitter_pb2.StatusRequest(), timeout=10))
    if args.rxd:
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(args.rxd))
        _print_pb(rx.Stats(receiver_pb2.StatsRequest(), timeout=10))
    if args.channel:
        ch = channel_pb2_grpc.ChannelAdminStub(client.open_channel(args.channel))
        _print_pb(ch.GetChain(channel_pb2.GetChainRequest(), timeout=10))
        _print_pb(ch.GetStats(channel_pb2.GetStatsRequest(), timeout=10))
    return 0


def cmd_chain(args: argparse.Namespace) -> int:
    stub = channel_pb2_grpc.ChannelAdminStub(client.open_channel(args.channel))
    models = json.loads(args.models)
    chain = channel_pb2.ChannelChain(
        models=[
            channel_pb2.ChannelModelSpec(
                kind=m["kind"], params_json=json.dumps({k: v for k, v in m.items() if k != "kind"})
            )
            for m in models
        ],
        seed=args.seed,
    )
    _print_pb(stub.SetChain(chain, timeout=10))
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    registry = SchemaRegistry.builtin()
    print(json.dumps([json.loads(registry.get(i).to_json()) for i in registry.ids()], indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from semcom.demo import run_demo

    return run_demo(args)


# Benchmarks are plugins: a package declares `name = "module:main"` in this entry-point group (`bench` does
# for `paper`), with main(argv) -> exit status; the core never imports them, and loads one only when asked.
BENCH_ENTRY_POINTS = "semcom.bench"


def _benchmarks() -> Registry[Callable[[Sequence[str]], int]]:
    return Registry("benchmark", entry_point_group=BENCH_ENTRY_POINTS)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark plugin named on the command line with the rest of the arguments."""
    return int(_benchmarks().load(args.benchmark)(args.bench_args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semcom", description="Generative semantic communication for video retrieval: demo and clients."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="start txd, channel-sim and rxd on loopback, stream a video, query it")
    p.add_argument("--video", help="video file (default: the PETS 2009 sample, fetched and cached once)")
    p.add_argument("--snr-db", type=float, default=12.0, help="AWGN SNR (Es/N0 per symbol) of the channel")
    p.add_argument("--mcs", default="qpsk/ldpc_r12", help="modulation/coding of the link")
    p.add_argument(
        "--workdir", type=Path, default=Path("var/demo"), help="logs, index and clip store go here"
    )
    p.add_argument("--keep-running", action="store_true", help="leave the daemons running until Ctrl-C")
    p.add_argument("--http-port", type=int, default=8080, help="port of rxd's web page on 127.0.0.1")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", help="stream a video file into txd")
    p.add_argument("video")
    p.add_argument("--txd", default="127.0.0.1:50051")
    p.add_argument("--stream-id", default="")
    p.add_argument("--location-id", type=int, default=0)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("announce", help="send one record to txd, as an external perception system would")
    p.add_argument("--txd", default="127.0.0.1:50051")
    p.add_argument("--stream-id", required=True)
    p.add_argument("--schema", default="", help="schema id (default: the receiver's task schema)")
    p.add_argument("--track-id", type=int, default=0)
    p.add_argument("--location-id", type=int, default=0)
    p.add_argument("--field", action="append", default=[], metavar="NAME=VALUE")
    p.set_defaults(func=cmd_announce)

    p = sub.add_parser("query", help="query rxd")
    p.add_argument("text", nargs="?", default="")
    p.add_argument("--rxd", default="127.0.0.1:50053")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="NAME=VALUE[|VALUE...]",
        help="field filter; several values are alternatives (upper_color=red|blue); repeatable",
    )
    p.add_argument("--top-k", type=int, default=0)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("status", help="print the status of running daemons")
    p.add_argument("--txd")
    p.add_argument("--rxd")
    p.add_argument("--channel")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("chain", help="replace channel-sim's chain at run time")
    p.add_argument("models", help='JSON list, e.g. \'[{"kind": "awgn", "snr_db": 6}]\'')
    p.add_argument("--channel", default="127.0.0.1:50052")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser("schemas", help="print the built-in task schemas as JSON")
    p.set_defaults(func=cmd_schemas)

    p = sub.add_parser(
        "bench", help="benchmarks: `semcom bench paper --help` reproduces the paper's case study"
    )
    bench = p.add_subparsers(dest="benchmark", required=True)
    for name in _benchmarks().names():
        b = bench.add_parser(
            name,
            add_help=False,
            help=f"`semcom bench {name} --help` lists its options",
            description=f"Options follow the benchmark's own parser: semcom bench {name} --help",
        )
        b.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = rest  # the benchmark's own parser reads (and checks) its options
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.func(args))
    except grpc.RpcError as err:
        code = err.code() if isinstance(err, grpc.Call) else None
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        print(f"semcom {args.command}: {code.name if code else 'error'}: {details}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
