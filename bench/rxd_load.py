"""rxd under load, as deployed: 8 query clients while txd streams records in; query p50/p99 and the delay
from Announce to indexed, through the real daemons (separate processes, gRPC on loopback).

    python -m bench.rxd_load --records 100000 --clients 8 --seconds 30

The index is filled first (descriptions embedded once by the real all-MiniLM-L6-v2, records bulk-loaded),
then rxd and txd start as daemons; one thread announces records at --rate, --clients threads query with
distinct texts and filters, one thread watches rxd's count to time each record from Announce to indexed.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.rxd_bench import Vocabulary, bench_ingest, build_index, make_queries
from rxd.retrieval.embed import Embedder
from rxd.retrieval.engine import Query
from semcom import client
from semcom.launch import spawn
from semcom.pb.v1 import common_pb2, receiver_pb2, receiver_pb2_grpc, transmitter_pb2_grpc
from semcom.schema import SchemaRegistry

STREAM = "load-cam"


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    refused: int = 0
    timed_out: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _request(q: Query) -> receiver_pb2.QueryRequest:
    filters = [receiver_pb2.FieldFilter(name=k, value=str(v)) for k, v in q.filters.items()]
    return receiver_pb2.QueryRequest(
        text=q.text,
        filters=filters,
        top_k=10,
        stream_id=q.stream_id,
        location_ids=list(q.location_ids),
        time_range=common_pb2.TimeRange(t0_s=q.t0_s, t1_s=q.t1_s),
    )


def query_client(address: str, queries: Sequence[Query], stop: threading.Event, tally: Tally) -> None:
    stub = receiver_pb2_grpc.ReceiverStub(client.open_channel(address))
    i = 0
    while not stop.is_set():
        request = _request(queries[i % len(queries)])
        i += 1
        t0 = time.perf_counter()
        try:
            stub.Query(request, timeout=30)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            with tally.lock:
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    tally.refused += 1
                elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    tally.timed_out += 1
                else:
                    tally.failed += 1
            continue
        with tally.lock:
            tally.latencies_ms.append(1000 * (time.perf_counter() - t0))


def announcer(address: str, rate: float, stop: threading.Event, sent: list[float], seed: int) -> None:
    """Announce records at `rate` per second; sent[k] is when record k+1 was accepted."""
    schema = SchemaRegistry.builtin().get("person/1")
    vocab = Vocabulary(schema, random.Random(seed))
    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(address))
    next_at = time.perf_counter()
    while not stop.is_set():
        fields = {k: v for k, v in vocab.fields().items() if v != "unknown"}
        try:
            client.announce(stub, stream_id=STREAM, fields=fields, track_id=len(sent) + 1, location_id=1)
        except grpc.RpcError:
            continue  # RESOURCE_EXHAUSTED: txd's queue is full; the same caller tries again
        sent.append(time.perf_counter())
        next_at += 1.0 / rate
        stop.wait(max(0.0, next_at - time.perf_counter()))


def watcher(address: str, base: int, stop: threading.Event, indexed: list[float]) -> None:
    """indexed[k] is when rxd first counted base+k+1 records (records of one stream index in order)."""
    stub = receiver_pb2_grpc.ReceiverStub(client.open_channel(address))
    while not stop.is_set():
        count = stub.Stats(receiver_pb2.StatsRequest(), timeout=10).records_indexed - base
        now = time.perf_counter()
        while len(indexed) < count:
            indexed.append(now)
        stop.wait(0.01)


def _pct(values: Sequence[float]) -> str:
    if not values:
        return "none"
    p50, p99 = np.percentile(values, [50, 99])
    return f"p50 {p50:.1f} / p99 {p99:.1f} ms ({len(values)})"


def run(args: argparse.Namespace, tmp: Path) -> None:
    schema = SchemaRegistry.builtin().get("person/1")
    model = Embedder(threads=1)
    model.load()
    source = bench_ingest(schema, model, args.pool, tmp, args.seed)
    build_index(schema, source, model, args.records, tmp / "index.db", args.seed).store.close()
    rxd = spawn(
        "rxd",
        ["--listen", "127.0.0.1:0", "--index", str(tmp / "index.db"), "--set", "http.enabled=false",
         "--set", "metrics.enabled=false", "--set", f"query.workers={args.workers}",
         *(a for kv in args.rxd_set for a in ("--set", kv))],
        tmp,
        timeout_s=300,
    )  # fmt: skip
    txd = spawn(
        "txd",
        ["--listen", "127.0.0.1:0", "--upstream", rxd.address, "--mcs", "bytes",
         "--set", "metrics.enabled=false", "--set", f"clips.dir={tmp / 'clips'}",
         "--set", "link.batch_delay_s=0.05", "--set", "perception=null"],
        tmp,
    )  # fmt: skip
    try:
        stub = receiver_pb2_grpc.ReceiverStub(client.open_channel(rxd.address))
        base = stub.Stats(receiver_pb2.StatsRequest(), timeout=30).records_indexed
        queries = make_queries(schema, 2000, args.seed + 2)
        for q in make_queries(schema, 20, args.seed + 3):  # warm-up: groups built, models paged in
            stub.Query(_request(q), timeout=60)
        stop, tally = threading.Event(), Tally()
        sent: list[float] = []
        indexed: list[float] = []
        threads = [
            threading.Thread(target=announcer, args=(txd.address, args.rate, stop, sent, args.seed)),
            threading.Thread(target=watcher, args=(rxd.address, base, stop, indexed)),
            *(
                threading.Thread(
                    target=query_client, args=(rxd.address, queries[i :: args.clients], stop, tally)
                )
                for i in range(args.clients)
            ),
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)  # the measurement window
        stop.set()
        for t in threads:
            t.join(60)
        wall = time.perf_counter() - t0
        delays = [1000 * (i - s) for s, i in zip(sent, indexed, strict=False)]
        print(
            f"rxd under load: {base} records indexed before, {len(sent)} announced at {args.rate:.0f}/s "
            f"during {wall:.1f} s, {args.clients} query clients, query.workers={args.workers}"
            f"{''.join(', ' + kv for kv in args.rxd_set)}; "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
        )
        print(
            f"  query latency {_pct(tally.latencies_ms)}, {len(tally.latencies_ms) / wall:.1f} queries/s; "
            f"refused {tally.refused}, over budget {tally.timed_out}, failed {tally.failed}"
        )
        print(f"  announce -> indexed {_pct(delays)}; {len(indexed)} of {len(sent)} indexed in the window")
    finally:
        txd.stop()
        rxd.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000, help="records in the index before the load")
    parser.add_argument("--pool", type=int, default=3000, help="records embedded for real (description pool)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent query clients")
    parser.add_argument("--workers", type=int, default=8, help="rxd's query threads (query.workers)")
    parser.add_argument("--rate", type=float, default=20.0, help="records announced per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measurement")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rxd-set", action="append", default=[], metavar="KEY=VALUE", help="rxd config override (repeatable)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the index goes (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
