"""The systemd units' sandbox without systemd: every daemon on a read-only system, writing only where its unit
lets it (StateDirectory, CacheDirectory), with the unit's environment, working directory and, secured, the
credentials its secure.conf drop-in loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semcom import client
from semcom.auth import hash_token, new_token
from semcom.config import ClientTlsConfig
from semcom.launch import DaemonProcess
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2_grpc
from semcom.tls import make_certs
from tests.unit.test_deploy_files import DEPLOY, drop_ins, unit_entries, unit_environment

pytestmark = pytest.mark.slow

# ProtectSystem=strict, emulated: a private mount namespace where / is read-only and only the unit's state
# and cache directories are bind-mounted writable. Then the daemon, exec'd with the unit's environment.
SANDBOX = """set -e
mount --bind "$STATE" "$STATE"
mount --bind "$CACHE" "$CACHE"
mount -o remount,bind,ro /
if touch /.semcom-sandbox-probe 2>/dev/null; then echo "/ is still writable" >&2; exit 3; fi
cd "$STATE"
exec "$@"
"""


@dataclass
class Sandbox:
    """Where the emulated units keep their directories; secured: the files /etc/semcom would hold."""

    root: Path
    secure: bool
    files: dict[str, Path] = field(default_factory=dict)  # LoadCredential source -> the file made here
    token: str = ""
    tls: ClientTlsConfig | None = None

    @classmethod
    def make(cls, root: Path, secure: bool) -> Sandbox:
        box = cls(root, secure)
        if secure:  # as deploy/README.md makes them: semcom certs, a site key, one admin token
            certs = make_certs(root / "etc" / "tls")
            key, tokens, token_file = (
                root / "etc" / "site.key",
                root / "etc" / "tokens.toml",
                root / "etc" / "t",
            )
            key.write_bytes(os.urandom(32))
            box.token = new_token()
            tokens.write_text(
                f'[[tokens]]\nname = "ops"\nscope = "admin"\nsha256 = "{hash_token(box.token)}"\n'
            )
            token_file.write_text(box.token)
            box.files = {
                "/etc/semcom/tls/ca.pem": certs.ca,
                "/etc/semcom/tls/server.pem": certs.server_cert,
                "/etc/semcom/tls/server-key.pem": certs.server_key,
                "/etc/semcom/tls/client.pem": certs.client_cert,
                "/etc/semcom/tls/client-key.pem": certs.client_key,
                "/etc/semcom/keys/site-1.key": key,
                "/etc/semcom/tokens.toml": tokens,
                "/etc/semcom/rxd-to-txd.token": token_file,
            }
            box.tls = ClientTlsConfig(enabled=True, ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
        return box

    def channel(self, address: str) -> grpc.Channel:
        return client.open_channel(address, tls=self.tls, token=self.token)

    def environment(self, name: str) -> dict[str, str]:
        """The unit's (and, secured, its drop-in's) environment, with LoadCredential emulated: the files it
        names copied into a credentials directory, which %d then names."""
        unit = DEPLOY / "systemd" / f"semcom-{name}.service"
        credentials = self.root / "credentials" / unit.name
        credentials.mkdir(parents=True)
        files = [unit]
        if self.secure:
            files += drop_ins(unit)
            for key, value in unit_entries(drop_ins(unit)[0])["Service"]:
                if key == "LoadCredential":
                    cred, _, source = value.partition(":")
                    shutil.copy(self.files[source], credentials / cred)
        specifiers = {"%d": str(credentials), "%S": str(self.root / "state"), "%C": str(self.root / "cache")}
        return unit_environment(files, specifiers)

    def wait_serving(self, address: str, log_path: Path) -> None:
        deadline = time.monotonic() + 60
        stub = health_pb2_grpc.HealthStub(self.channel(address))
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)


def start(box: Sandbox, name: str, args: list[str]) -> DaemonProcess:
    """Start `name` as its unit would, inside the sandbox; return once it serves."""
    own_state, own_cache = box.root / "state" / f"semcom-{name}", box.root / "cache" / f"semcom-{name}"
    own_state.mkdir(parents=True)  # what systemd creates for StateDirectory= and CacheDirectory=
    own_cache.mkdir(parents=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",  # a dynamic user has no home
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
        **box.environment(name),
        "STATE": str(own_state),
        "CACHE": str(own_cache),
    }
    port_file = own_state / "port"
    config = DEPLOY / "configs" / f"{name}.toml"  # what /etc/semcom/<name>.toml starts from
    daemon_cmd = [str(Path(sys.executable).parent / name), "--config", str(config), *args]
    daemon_cmd += ["--port-file", str(port_file)]
    log_path = box.root / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox", *daemon_cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 120
    while not port_file.exists() or not port_file.read_text().strip():
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    daemon = DaemonProcess(name, proc, int(port_file.read_text()), log_path)
    box.wait_serving(daemon.address, log_path)
    return daemon


@pytest.fixture
def sandbox_root(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("emulating the units' sandbox needs root and util-linux's unshare (mount namespaces)")
    if not (Path(sys.executable).parent / "rxd").exists():
        pytest.skip(f"the daemons' console scripts are not beside {sys.executable}")
    yield tmp_path


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_daemons_run_in_their_units_sandbox(sandbox_root: Path, secure: bool) -> None:
    box = Sandbox.make(sandbox_root, secure)
    loopback = ["--set", "server.listen=127.0.0.1:0", "--set", "metrics.listen=127.0.0.1:0"]
    daemons: list[DaemonProcess] = []
    try:
        rxd = start(box, "rxd", [*loopback, "--set", "http.listen=127.0.0.1:0"])
        daemons.append(rxd)
        chain = json.dumps([{"kind": "awgn", "snr_db": 15.0}])
        daemons.append(start(box, "channel-sim", [*loopback, "--upstream", rxd.address, "--chain", chain]))
        upstream = ["--upstream", daemons[1].address, "--set", "link.batch_delay_s=0.05"]
        txd = start(box, "txd", [*loopback, *upstream])
        daemons.append(txd)
        tx = transmitter_pb2_grpc.TransmitterStub(box.channel(txd.address))
        for track in range(3):
            client.announce(tx, stream_id="cam-s", fields={"upper_color": "red"}, track_id=track)
        rx = receiver_pb2_grpc.ReceiverStub(box.channel(rxd.address))
        deadline = time.monotonic() + 60
        while rx.Stats(receiver_pb2.StatsRequest(), timeout=10).records_indexed < 3:
            assert time.monotonic() < deadline, txd.log_tail() + rxd.log_tail()
            time.sleep(0.1)
        hits = client.query(rx, filters={"upper_color": "red"}, top_k=10).hits
        assert sorted(h.record.track_id for h in hits) == [0, 1, 2]
        if secure:  # a client without a certificate and token is turned away
            with pytest.raises(grpc.RpcError):
                plain = receiver_pb2_grpc.ReceiverStub(client.open_channel(rxd.address))
                plain.Stats(receiver_pb2.StatsRequest(), timeout=5)
        codes = {d.name: d.stop() for d in reversed(daemons)}
        daemons.clear()
        assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}
    finally:
        for d in reversed(daemons):
            d.stop()
    # Relative paths of the configs landed in the state directories; numba's kernels in the cache ones.
    root = box.root
    assert (root / "state" / "semcom-rxd" / "var" / "rxd" / "index.db").is_file()
    assert (root / "state" / "semcom-txd" / "var" / "txd" / "clips").is_dir()
    assert any((root / "cache" / "semcom-rxd" / "numba").iterdir())
    for name in ("rxd", "txd", "channel-sim"):
        log = (root / f"{name}.log").read_text()
        assert "Read-only file system" not in log and "Traceback" not in log, log
