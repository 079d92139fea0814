"""Two hosts for real: rxd and txd in separate network namespaces joined by a veth pair, talking over IP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import grpc
import pytest

from semcom.auth import hash_token, new_token
from semcom.tls import make_certs

pytestmark = [pytest.mark.slow, pytest.mark.data]

# RFC 2544's benchmarking range: never routed, so these addresses are nobody else's. Each namespace is new,
# so fixed ports inside them cannot collide with anything on the machine.
OPS_IP, CAM_IP = "198.18.0.1", "198.18.0.2"
RXD_ADDR, TXD_ADDR = f"{OPS_IP}:50053", f"{CAM_IP}:50051"
CHANNEL_ADDR = "127.0.0.1:50052"  # the camera site's own loopback: channel-sim sits beside txd
REPO = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


@dataclass
class Hosts:
    """Two network namespaces: the operations centre (rxd) and a camera site (txd, channel-sim)."""

    ops: str
    cam: str
    ops_if: str
    workdir: Path

    def run(self, ns: str, *args: str, timeout_s: float = 120.0) -> dict[str, object]:
        """Run one client step of this module in `ns` (see `main`), with the client certificate and the
        token of the deployment; its JSON answer."""
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.process.test_two_hosts", *args]
        env = {**os.environ, "SEMCOM_TEST_SECRETS": str(self.workdir / "secrets")}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, env=env)
        assert out.returncode == 0, f"{args[0]} in {ns} failed:\n{out.stdout}\n{out.stderr}"
        answer: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
        return answer

    def rx_bytes(self) -> int:
        """Bytes the operations centre received on its end of the veth pair."""
        out = subprocess.run(
            ["ip", "-n", self.ops, "-j", "-s", "link", "show", "dev", self.ops_if],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return int(json.loads(out.stdout)[0]["stats64"]["rx"]["bytes"])


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "`ip` is missing: install Debian's iproute2 (scripts/setup.sh --test does)"
    return None


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    """Create the namespaces, a veth pair with one address at each end; delete them whatever happens."""
    reason = _netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    tag = f"{os.getpid() % 100000}"
    ops, cam = f"semcom-ops-{tag}", f"semcom-cam-{tag}"
    ops_if, cam_if = f"so{tag}", f"sc{tag}"  # interface names: at most 15 characters
    try:
        _ip("netns", "add", ops)
    except RuntimeError as err:
        pytest.skip(f"cannot create a network namespace here: {err}")
    try:
        _ip("netns", "add", cam)
        _ip("link", "add", ops_if, "netns", ops, "type", "veth", "peer", "name", cam_if, "netns", cam)
        for ns, dev, addr in ((ops, ops_if, OPS_IP), (cam, cam_if, CAM_IP)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield Hosts(ops, cam, ops_if, tmp_path)
    finally:
        for ns in (cam, ops):  # deleting a namespace deletes its end of the veth pair, and so the pair
            with contextlib.suppress(RuntimeError):
                _ip("netns", "delete", ns)


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ip netns exec` execs the daemon: the signal is its own
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _make_secrets(folder: Path) -> None:
    """As an operator makes them (deploy/README.md): certificates for both hosts' addresses, the camera
    site's key, one admin token accepted by both daemons."""
    make_certs(folder / "tls", [OPS_IP, CAM_IP])
    (folder / "site-1.key").write_bytes(os.urandom(32))
    token = new_token()
    (folder / "token").write_text(token)
    entry = f'name = "ops"\nscope = "admin"\nsha256 = "{hash_token(token)}"'
    (folder / "tokens.toml").write_text(f"[[tokens]]\n{entry}\n")


def _secured(folder: Path, server: bool, client: str) -> list[str]:
    """--set flags for mTLS on the daemon's own port and on its connection `client` (a config section)."""
    tls = folder / "tls"
    flags = [f"{client}.tls.enabled=true", f"{client}.tls.ca={tls / 'ca.pem'}"]
    flags += [f"{client}.tls.cert={tls / 'client.pem'}", f"{client}.tls.key={tls / 'client-key.pem'}"]
    if server:
        flags += [f"server.tls.cert={tls / 'server.pem'}", f"server.tls.key={tls / 'server-key.pem'}"]
        flags += [f"server.tls.client_ca={tls / 'ca.pem'}"]
    return [arg for flag in flags for arg in ("--set", flag)]


def _spawn(hosts: Hosts, ns: str, name: str, address: str, args: list[str]) -> Daemon:
    """Start `name` in `ns`; return once health says SERVING on `address` (asked from inside `ns`)."""
    log_path = hosts.workdir / f"{name}.log"
    module = name.replace("-", "_")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=hosts.workdir,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    daemon = Daemon(name, proc, log_path)
    try:
        hosts.run(ns, "wait", address)
    except BaseException:
        daemon.stop()
        raise AssertionError(f"{name} did not start:\n{daemon.log_tail()}") from None
    return daemon


def test_txd_and_rxd_on_two_hosts(hosts: Hosts, shared_data: Path) -> None:
    """A real video ingested at the camera site reaches the operations centre over the veth pair through
    channel-sim; a query there finds its people and their clip comes back over the same network. Secured
    as deploy/README.md sets a deployment up: mTLS on every connection, frames sealed under the site's key,
    tokens on the calls that need them."""
    work = hosts.workdir
    secrets = work / "secrets"
    _make_secrets(secrets)
    rxd_args = ["--listen", RXD_ADDR, "--transmitter", TXD_ADDR, "--index", str(work / "index.db")]
    rxd_args += _secured(secrets, server=True, client="transmitter")
    rxd_args += ["--set", f"transmitter.auth.token_file={secrets / 'token'}"]
    rxd_args += ["--set", f"auth.tokens_file={secrets / 'tokens.toml'}"]
    rxd_args += ["--set", "link.site_keys=" + json.dumps({"site-1": str(secrets / "site-1.key")})]
    chain = json.dumps([{"kind": "awgn", "snr_db": 15.0}])
    channel_args = ["--listen", CHANNEL_ADDR, "--upstream", RXD_ADDR, "--chain", chain, "--seed", "1"]
    channel_args += _secured(secrets, server=True, client="upstream")
    txd_args = ["--listen", TXD_ADDR, "--upstream", CHANNEL_ADDR, "--mcs", "qpsk/ldpc_r12"]
    txd_args += ["--set", "link.batch_delay_s=0.05", "--set", f"clips.dir={work / 'clips'}"]
    txd_args += _secured(secrets, server=True, client="link")
    txd_args += ["--set", "link.site_id=site-1", "--set", f"link.key_file={secrets / 'site-1.key'}"]
    txd_args += ["--set", f"auth.tokens_file={secrets / 'tokens.toml'}"]
    daemons: list[Daemon] = []
    try:
        daemons.append(_spawn(hosts, hosts.ops, "rxd", RXD_ADDR, rxd_args))
        daemons.append(_spawn(hosts, hosts.cam, "channel-sim", CHANNEL_ADDR, channel_args))
        daemons.append(_spawn(hosts, hosts.cam, "txd", TXD_ADDR, txd_args))
        rx_before = hosts.rx_bytes()
        video = shared_data / "videos" / "tud_campus.mp4"
        sent = hosts.run(hosts.cam, "ingest", TXD_ADDR, str(video))
        assert isinstance(sent["records"], int) and sent["records"] > 0, sent
        clip = work / "clip.mp4"
        seen = hosts.run(hosts.ops, "query", RXD_ADDR, str(sent["records"]), str(clip))
        assert seen["indexed"] == sent["records"] and seen["failed"] == 0, seen
        assert seen["streams"] == ["campus"] and seen["hits"] == sent["records"], seen
        assert seen["plaintext_refused"] is True
        # The clip travelled from the camera site's clip store to the operations centre: its bytes (and
        # every record) crossed the veth pair, not a loopback.
        assert isinstance(seen["clip_bytes"], int) and hosts.rx_bytes() - rx_before > seen["clip_bytes"]
        with av.open(str(clip)) as box:
            times = [float(f.time) for f in box.decode(video=0) if f.time is not None]
        assert len(times) >= 10 and times == sorted(times)
        codes = {d.name: d.stop() for d in reversed(daemons)}  # txd first: it delivers all it accepted
        daemons.clear()
        assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}
    finally:
        for d in reversed(daemons):
            d.stop()


# Client steps, run inside a namespace by `Hosts.run`: `python -m tests.process.test_two_hosts STEP ARGS`.
# Each prints one JSON line.


def _channel(address: str) -> grpc.Channel:
    """A client channel with the deployment's client certificate and token (SEMCOM_TEST_SECRETS)."""
    from semcom import client
    from semcom.config import ClientTlsConfig

    folder = Path(os.environ["SEMCOM_TEST_SECRETS"])
    tls = ClientTlsConfig(
        enabled=True,
        ca=folder / "tls" / "ca.pem",
        cert=folder / "tls" / "client.pem",
        key=folder / "tls" / "client-key.pem",
    )
    return client.open_channel(address, tls=tls, token=(folder / "token").read_text())


def _wait(address: str) -> dict[str, object]:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(_channel(address))
    deadline = time.monotonic() + 180
    while True:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return {"serving": address}
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"{address} not SERVING"
        time.sleep(0.1)


def _ingest(address: str, video: str) -> dict[str, object]:
    """Upload a video to txd and wait until every record it produced is acknowledged by the receiver."""
    from semcom import client
    from semcom.pb.v1 import transmitter_pb2, transmitter_pb2_grpc

    stub = transmitter_pb2_grpc.TransmitterStub(_channel(address))
    client.ingest_file(stub, Path(video), stream_id="campus", location_id=5, timeout_s=300)
    deadline = time.monotonic() + 120
    while True:
        status = stub.Status(transmitter_pb2.StatusRequest(), timeout=10)
        if status.records_queued == 0:
            break
        assert time.monotonic() < deadline, f"{status.records_queued} records still queued"
        time.sleep(0.1)
    return {"records": sum(s.records_sent for s in status.streams if s.stream_id == "campus")}


def _query(address: str, expected: str, clip_path: str) -> dict[str, object]:
    """Wait for the records, query them as a user would and fetch the first hit's clip."""
    from semcom import client
    from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc

    stub = receiver_pb2_grpc.ReceiverStub(_channel(address))
    deadline = time.monotonic() + 60
    while (stats := stub.Stats(receiver_pb2.StatsRequest(), timeout=10)).records_indexed < int(expected):
        assert time.monotonic() < deadline, f"{stats.records_indexed} of {expected} records indexed"
        time.sleep(0.1)
    reply = client.query(stub, text="a person", top_k=1000)
    clip_bytes = client.fetch_clip(stub, reply.hits[0].clip, Path(clip_path))
    try:  # a client with neither certificate nor token
        receiver_pb2_grpc.ReceiverStub(client.open_channel(address)).Stats(
            receiver_pb2.StatsRequest(), timeout=5
        )
        plaintext_refused = False
    except grpc.RpcError:
        plaintext_refused = True
    return {
        "indexed": stats.records_indexed,
        "failed": stats.records_failed,
        "hits": len(reply.hits),
        "streams": sorted({h.record.stream_id for h in reply.hits}),
        "clip_bytes": clip_bytes,
        "plaintext_refused": plaintext_refused,
    }


def main(argv: list[str]) -> int:
    steps: dict[str, Callable[..., dict[str, object]]] = {"wait": _wait, "ingest": _ingest, "query": _query}
    print(json.dumps(steps[argv[0]](*argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
