"""Receiver retrieval benchmark: ingest rate with the real embedder, query latency and memory at scale."""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.embed import Embedder, TextEncoder
from rxd.retrieval.engine import Query, RetrievalEngine
from rxd.retrieval.parse import parse_query
from rxd.retrieval.store import RecordStore
from semcom.record import UNKNOWN, Record
from semcom.schema import Schema, SchemaRegistry

UNKNOWN_RATE = 0.1  # share of fields the understanding agent could not read
BURST = 50  # records per burst, roughly what one frame of a busy stream carries
BULK_CHUNK = 100_000
STREAMS = 4
LOCATIONS = 16
SPAN_S = 86_400.0


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        status = Path("/proc/self/status").read_text()
        current = (
            next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
        )
    except (OSError, StopIteration):
        current = float("nan")
    return current, peak


class Vocabulary:
    """Skewed, seeded draws of field values: a few colours dominate, as in real footage (PETA: black)."""

    def __init__(self, schema: Schema, rng: random.Random) -> None:
        self.schema = schema
        self.rng = rng
        self.weights: dict[str, tuple[list[str], list[float]]] = {}
        for spec in schema.fields:
            values = list(spec.values[1:])
            rng.shuffle(values)
            self.weights[spec.name] = (values, [1.0 / (i + 1) ** 1.5 for i in range(len(values))])

    def fields(self) -> dict[str, str]:
        out = {}
        for name, (values, weights) in self.weights.items():
            known = self.rng.random() >= UNKNOWN_RATE
            out[name] = self.rng.choices(values, weights)[0] if known else UNKNOWN
        return out


def make_records(schema: Schema, fields: Sequence[dict[str, str]], start_id: int, seed: int) -> list[Record]:
    """One record per entry of `fields`, spread over a day, `STREAMS` streams and `LOCATIONS` locations."""
    rng = np.random.default_rng(seed)
    n = len(fields)
    streams = [f"cam{i}" for i in range(STREAMS)]
    columns = zip(
        rng.integers(0, STREAMS, n).tolist(),
        rng.integers(0, 4096, n).tolist(),
        rng.uniform(0.0, SPAN_S, n).tolist(),
        rng.integers(0, LOCATIONS, n).tolist(),
        fields,
        strict=True,
    )
    return [
        Record(schema.id, streams[s], track, start_id + i, time_s, loc, f)
        for i, (s, track, time_s, loc, f) in enumerate(columns)
    ]


def bench_ingest(schema: Schema, embedder: TextEncoder, n: int, folder: Path, seed: int) -> RetrievalEngine:
    """Real-flow ingest in bursts: describe (through the memory), embed new descriptions, store."""
    vocab = Vocabulary(schema, random.Random(seed))
    records = make_records(schema, [vocab.fields() for _ in range(n)], 0, seed)
    engine = RetrievalEngine(
        SchemaRegistry.builtin(),
        RecordStore(folder / "ingest.db", SchemaRegistry.builtin()),
        TemplateDescriber(),
        embedder,
    )
    t0 = time.perf_counter()
    for i in range(0, n, BURST):
        engine.ingest(records[i : i + BURST])
    wall = time.perf_counter() - t0
    s = engine.stats()
    print(
        f"ingest: {n} records in {wall:.1f} s = {n / wall:.0f} records/s (bursts of {BURST}, real embedder)"
    )
    print(
        f"  describe+memory {s['describe_s']:.2f} s ({n / max(s['describe_s'], 1e-9):.0f} rec/s), "
        f"embed {s['embed_s']:.2f} s ({s['embedded_texts']} new descriptions, "
        f"{s['embedded_texts'] / max(s['embed_s'], 1e-9):.0f} texts/s), "
        f"store {s['store_s']:.2f} s ({n / max(s['store_s'], 1e-9):.0f} rec/s)"
    )
    print(f"  memory hit rate {s['memory_hit_rate']:.3f}, {s['descriptions']} distinct descriptions")
    return engine


def build_index(
    schema: Schema, source: RetrievalEngine, embedder: TextEncoder, size: int, path: Path, seed: int
) -> RetrievalEngine:
    """A store of `size` records whose fields come from the ingest run's pool (their embeddings reused)."""
    registry = SchemaRegistry.builtin()
    store = RecordStore(path, registry)
    entries = source.store.descriptions()
    vectors = np.stack([v for e in entries if (v := source.store.description_vector(e.desc_id)) is not None])
    store.add_descriptions(entries, vectors)
    engine = RetrievalEngine(registry, store, TemplateDescriber(), embedder)
    pool = [dict(zip(schema.field_names, e.values, strict=True)) for e in entries if e.schema_id == schema.id]
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    for start in range(0, size, BULK_CHUNK):
        picked = rng.integers(0, len(pool), min(BULK_CHUNK, size - start)).tolist()
        engine.ingest(make_records(schema, [pool[i] for i in picked], start, seed + start))
    wall = time.perf_counter() - t0
    print(f"  bulk load {size} records: {wall:.1f} s ({size / wall:.0f} records/s, no inference)")
    store.close()
    t0 = time.perf_counter()
    store = RecordStore(path, registry)
    print(
        f"  reopen: {time.perf_counter() - t0:.2f} s for {store.count()} records "
        f"and {store.description_count()} descriptions, nothing re-embedded"
    )
    return RetrievalEngine(registry, store, TemplateDescriber(), embedder)


def make_queries(schema: Schema, n: int, seed: int) -> list[Query]:
    """Distinct queries (the query-vector cache never helps): half text, a quarter filters, a quarter both
    text and hard filters (time window, locations or stream)."""
    rng = random.Random(seed)
    vocab = Vocabulary(schema, random.Random(seed + 1))
    nouns = {"upper_color": "shirt", "lower_color": "trousers", "shoe_color": "shoes"}
    seen: set[str] = set()
    queries: list[Query] = []
    while len(queries) < n:
        fields = {k: v for k, v in vocab.fields().items() if v != UNKNOWN}
        slots = {k: fields[k] for k in rng.sample(sorted(fields), min(len(fields), rng.randint(1, 4)))}
        who = {"male": "man", "female": "woman"}.get(slots.get("gender", ""), "person")
        said = [f"{v} {nouns[k]}" for k, v in slots.items() if k in nouns]
        text = (
            f"a {who} wearing {' and '.join(said)}"
            if said
            else f"a {who} {rng.choice(['walking', 'standing'])}"
        )
        kind = len(queries) % 4
        if kind == 1 or text in seen:
            q = Query(filters=slots, schema_id=schema.id)
        else:
            seen.add(text)
            q = Query(text=text, schema_id=schema.id)
        if kind == 3:
            t0 = rng.uniform(0, SPAN_S / 2)
            q = replace(
                q,
                t0_s=t0,
                t1_s=t0 + 3600.0,
                location_ids=tuple(rng.sample(range(LOCATIONS), 4)),
                stream_id=rng.choice(["", "cam1"]),
            )
        queries.append(q)
    return queries


class TimedEncoder:
    """The embedder, timed: how much of a query's latency is the model's."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        t0 = time.perf_counter()
        try:
            return self.inner.encode(texts)
        finally:
            self.seconds += time.perf_counter() - t0


def _percentiles(label: str, values: Sequence[float]) -> str:
    p50, p99 = np.percentile(values, [50, 99]) if values else (float("nan"), float("nan"))
    return f"{label} ({len(values)}) p50 {p50:.1f} / p99 {p99:.1f}"


def bench_queries(engine: RetrievalEngine, timer: TimedEncoder, queries: Sequence[Query], show: bool) -> None:
    """Latency of engine.query (parse, query embedding, search, hits); the search alone excludes the model."""
    total: dict[str, list[float]] = {"text": [], "filters": []}
    search: list[float] = []
    for q in queries:
        model_s = timer.seconds
        t0 = time.perf_counter()
        engine.query(q)
        wall = time.perf_counter() - t0
        total["text" if q.text else "filters"].append(wall * 1e3)
        search.append((wall - (timer.seconds - model_s)) * 1e3)
    if not show:
        return
    current, peak = rss_mib()
    parts = [_percentiles("all", total["text"] + total["filters"])]
    parts += [_percentiles(kind, values) for kind, values in total.items()]
    print(f"  query latency ms (top_k=10): {'; '.join(parts)}")
    memory = f"RSS {current:.0f} MiB (peak {peak:.0f} MiB)"
    print(f"  {_percentiles('search without the model', search)} ms; {memory}")


PHRASINGS = Path(__file__).resolve().parents[1] / "tests" / "unit" / "data" / "query_phrasings.txt"


def bench_parser(schema: Schema, rounds: int) -> None:
    """Latency of the embedded parser per query, over the phrasings test set (after building its lexicon)."""
    texts = [line.partition(" => ")[0] for line in PHRASINGS.read_text().splitlines() if " => " in line]
    t0 = time.perf_counter()
    parse_query("warm-up", schema)
    build_s = time.perf_counter() - t0
    times = []
    for _ in range(rounds):
        for text in texts:
            t0 = time.perf_counter()
            parse_query(text, schema)
            times.append((time.perf_counter() - t0) * 1e6)
    p50, p99, top = np.percentile(times, [50, 99, 100])
    print(
        f"parser: lexicon built in {build_s:.2f} s; {len(times)} parses of {len(texts)} phrasings: "
        f"p50 {p50:.0f} us / p99 {p99:.0f} us / max {top:.0f} us"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest", type=int, default=10_000, help="records ingested with the real embedder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the embedder")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the index files go (default: a temp dir)"
    )
    parser.add_argument("--parser-rounds", type=int, default=20, help="passes over the phrasings set")
    parser.add_argument("--parser-only", action="store_true", help="measure the query parser and stop")
    args = parser.parse_args(argv)
    schema = SchemaRegistry.builtin().get("person/1")
    bench_parser(schema, args.parser_rounds)
    if args.parser_only:
        return
    model = Embedder(threads=args.threads)
    t0 = time.perf_counter()
    model.load()
    embedder = TimedEncoder(model)
    print(
        f"embedder: all-MiniLM-L6-v2 loaded in {time.perf_counter() - t0:.1f} s, {args.threads} thread(s); "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        source = bench_ingest(schema, embedder, args.ingest, Path(tmp), args.seed)
        queries = make_queries(schema, args.queries, args.seed)
        for size in args.sizes:
            print(f"size {size}:")
            engine = build_index(schema, source, embedder, size, Path(tmp) / f"index-{size}.db", args.seed)
            # Warm-up with other queries: the first search groups the records by description.
            bench_queries(engine, embedder, make_queries(schema, 5, args.seed + 1), show=False)
            bench_queries(engine, embedder, queries, show=True)
            engine.store.close()


if __name__ == "__main__":
    main()
