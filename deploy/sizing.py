"""Sizing figures for deploy/README.md, measured end to end: link bits and symbols per person, index bytes."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.codec_bits import random_records
from semcom import client
from semcom.launch import loopback_stack
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2, transmitter_pb2_grpc
from semcom.schema import SchemaRegistry


def _wait(check: Callable[[], bool], what: str, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def measure(workdir: Path, n: int, mcs: str, sparse: bool, seed: int, sealed: bool) -> dict[str, float]:
    """Announce `n` random person/1 records through txd -> channel-sim -> rxd; what the link and index used.

    Busy: all at once, so bursts fill up (32 records at most). Sparse: one person at a time, each sent and
    acknowledged before the next, as at a quiet camera (each record pays a whole frame and codeword).
    Sealed: frames carry a 128-bit AEAD tag under a site key, as a secured deployment sends them."""
    records = random_records(SchemaRegistry.builtin().get("person/1"), n, seed)
    rxd_args = ["--set", "http.listen=127.0.0.1:0", "--set", "metrics.listen=127.0.0.1:0"]
    txd_args = ["--set", "link.batch_delay_s=0.2"]
    if sealed:
        workdir.mkdir(parents=True, exist_ok=True)
        key = workdir.resolve() / "site.key"
        key.write_bytes(os.urandom(32))
        txd_args += ["--set", "link.site_id=site-1", "--set", f"link.key_file={key}"]
        rxd_args += ["--set", "link.site_keys=" + json.dumps({"site-1": str(key)})]
    with loopback_stack(workdir, mcs=mcs, txd_args=txd_args, rxd_args=rxd_args) as stack:
        tx = transmitter_pb2_grpc.TransmitterStub(client.open_channel(stack.txd.address))
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(stack.rxd.address))

        def acked() -> int:
            return int(tx.Status(transmitter_pb2.StatusRequest(), timeout=30).records_acked)

        for i, rec in enumerate(records):
            client.announce(
                tx, stream_id="cam-1", fields=rec.fields, track_id=rec.track_id, location_id=1, timeout_s=60
            )
            if sparse:
                _wait(lambda: acked() > i, "acknowledgement")  # noqa: B023 - called before i changes
        _wait(lambda: acked() == n, "all records acknowledged")
        _wait(lambda: rx.Stats(receiver_pb2.StatsRequest(), timeout=30).records_indexed == n, "all indexed")
        status = tx.Status(transmitter_pb2.StatusRequest(), timeout=30)
        codes = stack.stop()
    if set(codes.values()) != {0}:
        raise RuntimeError(f"daemons exited with {codes}: see the logs in {workdir}")
    return {
        "records": n,
        "bursts": status.bursts_sent,
        "frame_bits_per_record": status.info_bits_sent / n,
        "symbols_per_record": status.channel_symbols_sent / n,
        **index_sizes(workdir / "index.db"),
    }


def index_sizes(path: Path) -> dict[str, float]:
    """Bytes of the SQLite index: per record (rows and their key index) and per distinct description
    (text and 384-d embedding, shared by every record with the same fields)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        pages = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        (records,) = db.execute("SELECT COUNT(*) FROM records").fetchone()
        (descriptions,) = db.execute("SELECT COUNT(*) FROM descriptions").fetchone()
    return {
        "file_bytes": path.stat().st_size,
        "descriptions": descriptions,
        "bytes_per_record": (pages["records"] + pages["sqlite_autoindex_records_1"]) / records,
        "bytes_per_description": (pages["descriptions"] + pages["sqlite_autoindex_descriptions_1"])
        / descriptions,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2000, help="records announced in the busy run")
    parser.add_argument("--sparse-records", type=int, default=50, help="records sent one at a time")
    parser.add_argument("--mcs", default="qpsk/ldpc_r12", help="modulation/coding of the link")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep logs and indexes here (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="semcom-sizing-") as tmp:
        work = args.workdir or Path(tmp)
        runs = {
            "busy": measure(work / "busy", args.records, args.mcs, False, args.seed, False),
            "sparse": measure(work / "sparse", args.sparse_records, args.mcs, True, args.seed, False),
            "busy, sealed": measure(work / "busy-sealed", args.records, args.mcs, False, args.seed, True),
            "sparse, sealed": measure(
                work / "sparse-sealed", args.sparse_records, args.mcs, True, args.seed, True
            ),
        }
    print(f"person/1 records over {args.mcs}, txd -> channel-sim (no impairment) -> rxd, SQLite index")
    for name, run in runs.items():
        print(
            f"{name:>14}: {run['records']:.0f} records in {run['bursts']:.0f} bursts: "
            f"{run['frame_bits_per_record']:.1f} frame bits and {run['symbols_per_record']:.1f} channel "
            "symbols per record"
        )
    busy = runs["busy"]
    print(
        f"         index: {busy['file_bytes']:.0f} bytes for {busy['records']:.0f} records and "
        f"{busy['descriptions']:.0f} distinct descriptions: {busy['bytes_per_record']:.0f} bytes per record "
        f"+ {busy['bytes_per_description']:.0f} bytes per distinct description"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
