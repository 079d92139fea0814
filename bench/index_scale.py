"""Index scale benchmark: the same queries on SQLite and PostgreSQL at 1M and 10M records, per backend."""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.rxd_bench import Vocabulary, rss_mib
from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.engine import IndexStore, Query, RetrievalEngine
from semcom.record import UNKNOWN, Record
from semcom.schema import Schema, SchemaRegistry

CHUNK = 100_000  # records per ingest call in the bulk load
STREAMS = 100  # cameras
LOCATIONS = 256
SPAN_S = 30 * 86_400.0  # a month of records, in daily partitions on PostgreSQL
POOL = 200_000  # field draws the records' values are picked from (its distinct values: the descriptions)


class HashEncoder:
    """A deterministic 384-d stand-in for the sentence model (hashed words, unit norm): this measures the
    index, not the model (whose share of a query bench.rxd_bench reports)."""

    dim = 384

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
        return np.asarray(
            out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9), dtype=np.float32
        )


def make_chunk(
    schema: Schema, pool: Sequence[dict[str, str]], start: int, n: int, rng: np.random.Generator
) -> list[Record]:
    picked = rng.integers(0, len(pool), n).tolist()
    streams = rng.integers(0, STREAMS, n).tolist()
    times = rng.uniform(0.0, SPAN_S, n).tolist()
    locs = rng.integers(0, LOCATIONS, n).tolist()
    return [
        Record(
            schema.id, f"cam{streams[i]}", (start + i) % 4096, start + i, times[i], locs[i], pool[picked[i]]
        )
        for i in range(n)
    ]


def make_queries(schema: Schema, n: int, seed: int) -> list[Query]:
    """Half text, a quarter filters, a quarter text with a camera and a 6-hour window (and places)."""
    rng = random.Random(seed)
    vocab = Vocabulary(schema, random.Random(seed + 1))
    nouns = {"upper_color": "shirt", "lower_color": "trousers", "shoe_color": "shoes"}
    out: list[Query] = []
    while len(out) < n:
        fields = {k: v for k, v in vocab.fields().items() if v != UNKNOWN}
        slots = {k: fields[k] for k in rng.sample(sorted(fields), min(len(fields), rng.randint(1, 4)))}
        who = {"male": "man", "female": "woman"}.get(slots.get("gender", ""), "person")
        said = [f"{v} {nouns[k]}" for k, v in slots.items() if k in nouns]
        text = f"a {who} wearing {' and '.join(said)}" if said else f"a {who} walking"
        kind = len(out) % 4
        q = Query(filters=slots, schema_id=schema.id) if kind == 1 else Query(text=text, schema_id=schema.id)
        if kind == 3:
            t0 = rng.uniform(0, SPAN_S - 6 * 3600.0)
            locs = tuple(rng.sample(range(LOCATIONS), 8)) if rng.random() < 0.5 else ()
            q = replace(
                q, t0_s=t0, t1_s=t0 + 6 * 3600.0, stream_id=f"cam{rng.randrange(STREAMS)}", location_ids=locs
            )
        out.append(q)
    return out


def load(engine: RetrievalEngine, schema: Schema, size: int, seed: int) -> float:
    """Bulk-load `size` records through the engine (descriptions through its memory); returns records/s."""
    vocab = Vocabulary(schema, random.Random(seed))
    pool = [vocab.fields() for _ in range(POOL)]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for start in range(0, size, CHUNK):
        engine.ingest(make_chunk(schema, pool, start, min(CHUNK, size - start), rng))
        if start and start % 1_000_000 == 0:
            print(f"    {start} records, {start / (time.perf_counter() - t0):.0f} records/s", flush=True)
    return size / (time.perf_counter() - t0)


def run_queries(
    engine: RetrievalEngine, queries: Sequence[Query]
) -> tuple[list[float], list[float], list[float]]:
    """(all, hard-filtered) latencies in ms, end to end through the engine, and each query's CPU time in
    this thread (the database server's work is not in it): on a shared machine, what the query itself costs
    apart from waiting for a core."""
    times, filtered, cpu = [], [], []
    for q in queries:
        t0, c0 = time.perf_counter(), time.thread_time()
        engine.query(q)
        ms = (time.perf_counter() - t0) * 1e3
        cpu.append((time.thread_time() - c0) * 1e3)
        times.append(ms)
        if q.stream_id:
            filtered.append(ms)
    return times, filtered, cpu


def bench_backend(
    name: str,
    opener: Callable[[], IndexStore],
    size: int,
    queries: Sequence[Query],
    seed: int,
    on_disk: Callable[[], int],
) -> None:
    registry = SchemaRegistry.builtin()
    schema = registry.get("person/1")
    store = opener()
    engine = RetrievalEngine(registry, store, TemplateDescriber(), HashEncoder())
    rate = load(engine, schema, size, seed)
    store.close()
    t0 = time.perf_counter()
    store = opener()
    open_s = time.perf_counter() - t0
    engine = RetrievalEngine(registry, store, TemplateDescriber(), HashEncoder())
    run_queries(engine, make_queries(schema, 20, seed + 99))  # warm-up: caches, grouping
    times, filtered, cpu = run_queries(engine, queries)
    p50, p99 = np.percentile(times, [50, 99])
    f50, f99 = np.percentile(filtered, [50, 99])
    c50, c99 = np.percentile(cpu, [50, 99])
    disk = on_disk()
    print(
        f"{name:8s} {size:>10d} records: ingest {rate:,.0f} records/s; open {open_s:.2f} s; "
        f"query p50 {p50:.1f} / p99 {p99:.1f} ms ({len(times)}), "
        f"camera + 6 h window p50 {f50:.1f} / p99 {f99:.1f} ms; "
        f"CPU in this thread p50 {c50:.1f} / p99 {c99:.1f} ms; "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"process RSS {rss_mib()[0]:.0f} MiB after open and queries (the bench's own included); "
        f"{disk / size:.0f} bytes/record on disk "
        f"({store.description_count()} descriptions)",
        flush=True,
    )
    if name == "postgres":
        # What grows with the records is on the server's disk; a replica holds the descriptions only (at most
        # 46,656 for person/1), and a query reads top_k rows per description it visits.
        print(
            f"  projection to 100M records: {disk / size * 1e8 / 2**30:.0f} GiB on disk, a bulk load of "
            f"{1e8 / rate / 3600:.1f} h at this rate, open and query times about these (descriptions "
            "saturate; one more B-tree level)",
            flush=True,
        )
    store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument(
        "--dsn", default="", help="an empty PostgreSQL database (default: a throwaway cluster)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None, help="where index files go (default: a temp dir)")
    args = parser.parse_args(argv)
    schema = SchemaRegistry.builtin().get("person/1")
    queries = make_queries(schema, args.queries, args.seed)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in args.sizes:
            for backend in args.backends:
                if backend == "sqlite":
                    path = Path(tmp) / f"index-{size}.db"
                    opener, on_disk = partial(_sqlite, path), partial(_file_bytes, path)
                    bench_backend(backend, opener, size, queries, args.seed, on_disk)
                    path.unlink()
                else:
                    _postgres(size, queries, args, Path(tmp))


def _sqlite(path: Path) -> IndexStore:
    from rxd.retrieval.store import RecordStore

    return RecordStore(path, SchemaRegistry.builtin())


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _postgres(size: int, queries: Sequence[Query], args: argparse.Namespace, tmp: Path) -> None:
    import psycopg

    from bench.pg_cluster import Cluster
    from rxd.retrieval.pg_store import PgStore

    with Cluster.maybe(args.dsn, tmp) as dsn:
        registry = SchemaRegistry.builtin()

        def db_bytes() -> int:
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                return int(row[0]) if row else 0

        bench_backend("postgres", lambda: PgStore(dsn, registry), size, queries, args.seed, db_bytes)


if __name__ == "__main__":
    main()
