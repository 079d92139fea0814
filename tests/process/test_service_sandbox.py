"""The systemd units' sandbox without systemd: every daemon on a read-only system, writing only where its unit
lets it (StateDirectory, CacheDirectory), with the unit's environment and working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from semcom import client
from semcom.launch import DaemonProcess, wait_serving
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2_grpc
from tests.unit.test_deploy_files import DEPLOY, unit_entries

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


def unit_environment(name: str, state_root: Path, cache_root: Path) -> dict[str, str]:
    """The Environment= assignments of deploy/systemd/semcom-<name>.service, specifiers resolved."""
    env: dict[str, str] = {}
    for key, value in unit_entries(DEPLOY / "systemd" / f"semcom-{name}.service")["Service"]:
        if key == "Environment":
            for item in value.split():
                var, _, setting = item.partition("=")
                env[var] = setting.replace("%S", str(state_root)).replace("%C", str(cache_root))
    return env


def start(name: str, root: Path, args: list[str]) -> DaemonProcess:
    """Start `name` as its unit would, inside the sandbox; return once it serves."""
    state, cache = root / "state", root / "cache"
    own_state, own_cache = state / f"semcom-{name}", cache / f"semcom-{name}"  # what systemd creates
    own_state.mkdir(parents=True)
    own_cache.mkdir(parents=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",  # a dynamic user has no home
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
        **unit_environment(name, state, cache),
        "STATE": str(own_state),
        "CACHE": str(own_cache),
    }
    port_file = own_state / "port"
    config = DEPLOY / "configs" / f"{name}.toml"  # what /etc/semcom/<name>.toml starts from
    daemon_cmd = [str(Path(sys.executable).parent / name), "--config", str(config), *args]
    daemon_cmd += ["--port-file", str(port_file)]
    log_path = root / f"{name}.log"
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
    wait_serving(daemon.address, 60)
    return daemon


@pytest.fixture
def sandbox_root(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("emulating the units' sandbox needs root and util-linux's unshare (mount namespaces)")
    if not (Path(sys.executable).parent / "rxd").exists():
        pytest.skip(f"the daemons' console scripts are not beside {sys.executable}")
    yield tmp_path


def test_daemons_run_in_their_units_sandbox(sandbox_root: Path) -> None:
    root = sandbox_root
    loopback = ["--set", "server.listen=127.0.0.1:0", "--set", "metrics.listen=127.0.0.1:0"]
    daemons: list[DaemonProcess] = []
    try:
        rxd = start("rxd", root, [*loopback, "--set", "http.listen=127.0.0.1:0"])
        daemons.append(rxd)
        chain = json.dumps([{"kind": "awgn", "snr_db": 15.0}])
        daemons.append(start("channel-sim", root, [*loopback, "--upstream", rxd.address, "--chain", chain]))
        txd = start(
            "txd", root, [*loopback, "--upstream", daemons[1].address, "--set", "link.batch_delay_s=0.05"]
        )
        daemons.append(txd)
        tx = transmitter_pb2_grpc.TransmitterStub(client.open_channel(txd.address))
        for track in range(3):
            client.announce(tx, stream_id="cam-s", fields={"upper_color": "red"}, track_id=track)
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(rxd.address))
        deadline = time.monotonic() + 60
        while rx.Stats(receiver_pb2.StatsRequest(), timeout=10).records_indexed < 3:
            assert time.monotonic() < deadline, txd.log_tail() + rxd.log_tail()
            time.sleep(0.1)
        hits = client.query(rx, filters={"upper_color": "red"}, top_k=10).hits
        assert sorted(h.record.track_id for h in hits) == [0, 1, 2]
        codes = {d.name: d.stop() for d in reversed(daemons)}
        daemons.clear()
        assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}
    finally:
        for d in reversed(daemons):
            d.stop()
    # Relative paths of the configs landed in the state directories; numba's kernels in the cache ones.
    assert (root / "state" / "semcom-rxd" / "var" / "rxd" / "index.db").is_file()
    assert (root / "state" / "semcom-txd" / "var" / "txd" / "clips").is_dir()
    assert any((root / "cache" / "semcom-rxd" / "numba").iterdir())
    for name in ("rxd", "txd", "channel-sim"):
        log = (root / f"{name}.log").read_text()
        assert "Read-only file system" not in log and "Traceback" not in log, log
