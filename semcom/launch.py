"""Spawns the three daemons as separate processes on loopback and waits until each reports SERVING."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass
class DaemonProcess:
    """One spawned daemon: its process, its gRPC port and where its log goes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait for the drain; returns the exit code (killed after timeout_s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    """A port free now on 127.0.0.1 (for the one address needed before its server starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(address: str, timeout_s: float) -> None:
    """Poll gRPC health until SERVING; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not SERVING after {timeout_s:.0f} s")
            time.sleep(0.1)


def spawn(
    name: str,
    args: Sequence[str],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> DaemonProcess:
    """Start `python -m <name>` with args; return once its port is known and health says SERVING.

    The daemon runs in `workdir`; relative paths in `args` are relative to it, not to the caller's cwd.
    """
    workdir = workdir.resolve()
    module = name.replace("-", "_")
    port_file = workdir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log_path = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", module, "--port-file", str(port_file), *args]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=workdir
        )
    deadline = time.monotonic() + timeout_s
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{name} did not start within {timeout_s:.0f} s:\n{log_path.read_text()}")
        time.sleep(0.05)
    daemon = DaemonProcess(name, proc, int(port_file.read_text()), log_path)
    wait_serving(daemon.address, max(1.0, deadline - time.monotonic()))
    return daemon


@dataclass
class Stack:
    """txd -> channel-sim -> rxd, each its own process on 127.0.0.1."""

    txd: DaemonProcess
    channel: DaemonProcess
    rxd: DaemonProcess
    workdir: Path
    exit_codes: dict[str, int] = field(default_factory=dict)

    def stop(self) -> dict[str, int]:
        """Drain in data-flow order: the sender first, so everything it accepted reaches the index."""
        for daemon in (self.txd, self.channel, self.rxd):
            self.exit_codes[daemon.name] = daemon.stop()
        return self.exit_codes


@contextlib.contextmanager
def loopback_stack(
    workdir: Path,
    *,
    chain: Sequence[dict[str, object]] = (),
    mcs: str = "qpsk/ldpc_r12",
    seed: int = 0,
    txd_args: Sequence[str] = (),
    rxd_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Start the three daemons wired together; stop them (SIGTERM) on exit."""
    workdir = workdir.resolve()  # the daemons run inside it: the paths handed to them must be absolute
    workdir.mkdir(parents=True, exist_ok=True)
    txd_port = free_port()
    started: list[DaemonProcess] = []
    try:
        rxd = spawn(
            "rxd",
            [
                "--listen",
                "127.0.0.1:0",
                "--index",
                str(workdir / "index.db"),
                "--transmitter",
                f"127.0.0.1:{txd_port}",
                # Any free port for the page unless the caller names one (a later --set wins).
                "--set",
                "http.listen=127.0.0.1:0",
                *rxd_args,
            ],
            workdir,
            env=env,
        )
        started.append(rxd)
        channel = spawn(
            "channel-sim",
            [
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                rxd.address,
                "--chain",
                json.dumps(list(chain)),
                "--seed",
                str(seed),
            ],
            workdir,
            env=env,
        )
        started.append(channel)
        txd = spawn(
            "txd",
            [
                "--listen",
                f"127.0.0.1:{txd_port}",
                "--upstream",
                channel.address,
                "--mcs",
                mcs,
                "--set",
                f"clips.dir={workdir / 'clips'}",
                *txd_args,
            ],
            workdir,
            env=env,
        )
        started.append(txd)
    except BaseException:
        for d in reversed(started):
            d.stop()
        raise
    stack = Stack(txd, channel, rxd, workdir)
    try:
        yield stack
    finally:
        if not stack.exit_codes:
            stack.stop()
