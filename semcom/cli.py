"""semcom: the umbrella command line (demo, clients for the three daemons, schemas)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format

from semcom import client
from semcom.config import ClientTlsConfig
from semcom.pb.v1 import (
    channel_pb2,
    channel_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    sites_pb2,
    sites_pb2_grpc,
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


def _channel(args: argparse.Namespace, address: str) -> grpc.Channel:
    """A channel to `address` with the TLS files and token the command line (or SEMCOM_TOKEN) names."""
    tls = ClientTlsConfig(
        enabled=bool(args.tls or args.ca or args.cert),
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        server_name=args.server_name,
    )
    token = args.token_file.read_text().strip() if args.token_file else os.environ.get("SEMCOM_TOKEN", "")
    return client.open_channel(address, tls=tls, token=token)


def _connection_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (TLS and tokens)")
    g.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's CAs")
    g.add_argument("--ca", type=Path, help="PEM CA the daemons' certificates chain to (implies --tls)")
    g.add_argument("--cert", type=Path, help="PEM client certificate, for daemons that require mTLS")
    g.add_argument("--key", type=Path, help="PEM private key of --cert")
    g.add_argument("--server-name", default="", help="name expected in the daemon's certificate")
    g.add_argument(
        "--token-file", type=Path, help="file holding a bearer token (default: $SEMCOM_TOKEN, if set)"
    )
    return p


def cmd_certs(args: argparse.Namespace) -> int:
    from semcom.tls import make_certs

    files = make_certs(args.out, args.host, days=args.days)
    for name, path in vars(files).items():
        print(f"{name:12s} {path}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """A new token: its [[auth.tokens]] table (the hash only) on stdout; the token itself into --out (mode
    0600) or on stderr, for its holder."""
    from semcom.auth import hash_token, new_token
    from semcom.ids import is_valid_id

    if not is_valid_id(args.name):
        raise SystemExit(f"--name {args.name!r}: letters, digits, '.', '_', '-' (semcom.ids.ID_PATTERN)")
    token = new_token()
    if args.out is not None:
        args.out.touch(mode=0o600)
        args.out.write_text(token + "\n")
    else:
        print(f"token (give it to {args.name}; it is stored nowhere): {token}", file=sys.stderr)
    print(f'[[auth.tokens]]\nname = "{args.name}"\nscope = "{args.scope}"\nsha256 = "{hash_token(token)}"')
    return 0


def _print_pb(msg: object) -> None:
    print(json_format.MessageToJson(msg, preserving_proto_field_name=True))  # type: ignore[arg-type]


def cmd_ingest(args: argparse.Namespace) -> int:
    stub = transmitter_pb2_grpc.TransmitterStub(_channel(args, args.txd))
    reply = client.ingest_with_progress(
        stub, Path(args.video), stream_id=args.stream_id, location_id=args.location_id
    )
    _print_pb(reply)
    return 0


def cmd_announce(args: argparse.Namespace) -> int:
    stub = transmitter_pb2_grpc.TransmitterStub(_channel(args, args.txd))
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
    stub = receiver_pb2_grpc.ReceiverStub(_channel(args, args.rxd))
    filters: dict[str, list[str]] = {}
    for item in args.filter:
        name, sep, values = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        filters.setdefault(name.strip(), []).extend(v.strip() for v in values.split("|") if v.strip())
    reply = client.query(
        stub,
        text=args.text,
        filters=filters,
        top_k=args.top_k,
        min_probability=args.min_probability,
        schema_id=args.schema_id,
        site_id=args.site,
    )
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
        tx = transmitter_pb2_grpc.TransmitterStub(_channel(args, args.txd))
        _print_pb(tx.Status(transmitter_pb2.StatusRequest(), timeout=10))
    if args.rxd:
        channel = _channel(args, args.rxd)
        rx = receiver_pb2_grpc.ReceiverStub(channel)
        _print_pb(rx.Stats(receiver_pb2.StatsRequest(), timeout=10))
        sites = sites_pb2_grpc.SitesStub(channel).List(sites_pb2.ListSitesRequest(), timeout=10)
        for site in sites.sites:
            print(client.format_site(site))
    if args.channel:
        ch = channel_pb2_grpc.ChannelAdminStub(_channel(args, args.channel))
        _print_pb(ch.GetChain(channel_pb2.GetChainRequest(), timeout=10))
        _print_pb(ch.GetStats(channel_pb2.GetStatsRequest(), timeout=10))
    return 0


def cmd_chain(args: argparse.Namespace) -> int:
    stub = channel_pb2_grpc.ChannelAdminStub(_channel(args, args.channel))
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
    p.add_argument("--screenshot", type=Path, help="save a PNG of the web page answering a query here")
    p.set_defaults(func=cmd_demo)

    conn = _connection_flags()
    p = sub.add_parser(
        "certs", help="make a CA, a server and a client certificate for TLS and mTLS between the daemons"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for ca.pem, server.pem, client.pem, keys")
    p.add_argument(
        "--host", action="append", default=[], help="name or IP the server certificate is also valid for"
    )
    p.add_argument("--days", type=int, default=825, help="validity in days")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("token", help="make a bearer token and print its [[auth.tokens]] table (hash only)")
    p.add_argument("--name", required=True, help="who holds it (shown in logs)")
    p.add_argument("--scope", choices=["read", "admin"], default="read")
    p.add_argument("--out", type=Path, help="write the token to this file (mode 0600) instead of stderr")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("ingest", help="stream a video file into txd", parents=[conn])
    p.add_argument("video")
    p.add_argument("--txd", default="127.0.0.1:50051")
    p.add_argument("--stream-id", default="")
    p.add_argument("--location-id", type=int, default=0)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "announce", help="send one record to txd, as an external perception system would", parents=[conn]
    )
    p.add_argument("--txd", default="127.0.0.1:50051")
    p.add_argument("--stream-id", required=True)
    p.add_argument("--schema", default="", help="schema id (default: the receiver's task schema)")
    p.add_argument("--track-id", type=int, default=0)
    p.add_argument("--location-id", type=int, default=0)
    p.add_argument("--field", action="append", default=[], metavar="NAME=VALUE")
    p.set_defaults(func=cmd_announce)

    p = sub.add_parser("query", help="query rxd", parents=[conn])
    p.add_argument("text", nargs="?", default="")
    p.add_argument("--rxd", default="127.0.0.1:50053")
    p.add_argument("--site", default="", help="only the streams of this camera site (its link.site_id)")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="NAME=VALUE[|VALUE...]",
        help="field filter; several values are alternatives (upper_color=red|blue); repeatable",
    )
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument(
        "--min-probability",
        type=float,
        default=0.0,
        metavar="P",
        help="leave out hits less likely than P (0..1) to satisfy every slot: precision for recall",
    )
    p.add_argument("--schema-id", default="", help="schema to search (default: rxd's task schema)")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("status", help="print the status of running daemons", parents=[conn])
    p.add_argument("--txd")
    p.add_argument("--rxd")
    p.add_argument("--channel")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("chain", help="replace channel-sim's chain at run time", parents=[conn])
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
