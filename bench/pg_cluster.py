"""A throwaway PostgreSQL cluster for benchmarks (Debian's postgresql package), on a loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from semcom.launch import free_port


def _run(bin_dir: Path, *args: str) -> None:
    cmd = [str(bin_dir / args[0]), *args[1:]]
    if os.geteuid() == 0:  # initdb refuses root: the package's postgres user runs the cluster
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")


class Cluster:
    @staticmethod
    @contextmanager
    def maybe(dsn: str, tmp: Path) -> Iterator[str]:
        """`dsn` as given, or a fresh cluster's database for the duration (removed after)."""
        if dsn:
            yield dsn
            return
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not found:
            raise SystemExit("no PostgreSQL server under /usr/lib/postgresql: install Debian's postgresql")
        bin_dir = found[-1].parent
        root = tmp / f"pg-{free_port()}"
        root.mkdir()
        if os.geteuid() == 0:
            shutil.chown(tmp, "postgres", "postgres")
            shutil.chown(root, "postgres", "postgres")
        port = free_port()
        data = str(root / "data")
        _run(bin_dir, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
        # Durable as a deployment would run it (fsync on); bigger buffers and WAL than the defaults, as a
        # server sized for an index of 10^7..10^9 records would have.
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c shared_buffers=1GB "
            "-c max_wal_size=8GB -c maintenance_work_mem=256MB -c effective_cache_size=4GB"
        )
        _run(bin_dir, "pg_ctl", "-D", data, "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        finally:
            _run(bin_dir, "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
            shutil.rmtree(root, ignore_errors=True)
