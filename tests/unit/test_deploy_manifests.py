"""deploy/compose and deploy/kubernetes: schema-valid, and each daemon in them gets a config it accepts."""

from __future__ import annotations

import json
import re
import runpy
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from rxd.config import RxdConfig
from semcom.config import load_config, split_hostport
from tests.unit.test_deploy_files import DAEMONS, DEPLOY, MARGIN_S, check, drain_s, tool

COMPOSE = sorted((DEPLOY / "compose").glob("*.yaml"))
MANIFESTS = sorted((DEPLOY / "kubernetes").rglob("*.yaml"))
# What a user exports before `docker compose up` (deploy/README.md).
COMPOSE_ENV = {"TXD_ADDRESS": "camera.example.com:50051", "RXD_ADDRESS": "ops.example.com:50053"}


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ${VAR}, ${VAR:-default} (nested), ${VAR:?error}."""
    out: list[str] = []
    i = 0
    while (start := text.find("${", i)) >= 0:
        out.append(text[i:start])
        depth, j = 1, start + 2
        while depth:
            depth += 1 if text.startswith("${", j) else -1 if text[j] == "}" else 0
            j += 2 if text.startswith("${", j) else 1
        match = re.fullmatch(r"(\w+)(?::?([-?])(.*))?", text[start + 2 : j - 1], re.S)
        assert match is not None, text[start:j]
        name, op, rest = match.groups()
        value = env.get(name) or ""
        if not value and op == "?":
            raise KeyError(f"{name}: {rest}")
        out.append(value or (interpolate(rest, env) if op == "-" else ""))
        i = j
    return "".join([*out, text[i:]])


def daemon_config(args: list[str], env: Mapping[str, str], files: Mapping[str, str]) -> BaseModel:
    """Load the config a container's command line gets: --config from `files` (path -> TOML), env, --set."""
    model, prefix = DAEMONS[args[0]]
    path, overrides = None, []
    for flag, value in zip(args[1::2], args[2::2], strict=True):
        if flag == "--config":
            path = Path(files[value])
        else:
            assert flag == "--set", args
            overrides.append(value)
    return load_config(model, path=path, environ=env, env_prefix=prefix, overrides=overrides)


def assert_drains_in_time(name: str, cfg: Any, stop_s: float) -> None:
    needed = cfg.server.grace_s + (cfg.link.flush_timeout_s if name == "txd" else 0.0)
    assert stop_s >= needed + MARGIN_S and needed >= drain_s(name) - 1e-9, (name, stop_s, needed)


# Compose


@pytest.mark.parametrize("path", COMPOSE, ids=[p.stem for p in COMPOSE])
def test_compose_file_matches_the_compose_schema(path: Path) -> None:
    """check-jsonschema ships the Compose Specification's schema (vendor.compose-spec): no network needed."""
    checker = tool("check-jsonschema", "pip install check-jsonschema (the [dev] extra)")
    messages = check([checker, "--builtin-schema", "vendor.compose-spec", str(path)])
    assert messages.endswith("ok -- validation done"), f"check-jsonschema {path.name}:\n{messages}"


def test_compose_schema_rejects_a_misspelt_key(tmp_path: Path) -> None:
    checker = tool("check-jsonschema", "pip install check-jsonschema (the [dev] extra)")
    broken = tmp_path / "ops-centre.yaml"
    broken.write_text(
        (DEPLOY / "compose" / "ops-centre.yaml").read_text().replace("healthcheck:", "helthcheck:")
    )
    messages = check([checker, "--builtin-schema", "vendor.compose-spec", str(broken)])
    assert "'helthcheck' was unexpected" in messages, messages


def compose_services(path: Path, env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The services of a compose file after substitution, and its config targets mapped to files."""
    doc = yaml.safe_load(interpolate(path.read_text(), env))
    sources = {name: str(path.parent / c["file"]) for name, c in doc.get("configs", {}).items()}
    files = {f"/etc/semcom/{p.name}": str(p) for p in (DEPLOY / "configs").glob("*.toml")}  # in the image
    for service in doc["services"].values():
        files.update({c["target"]: sources[c["source"]] for c in service.get("configs", [])})
    return doc["services"], files


@pytest.mark.parametrize(
    ("path", "env"),
    [
        (DEPLOY / "compose" / "ops-centre.yaml", COMPOSE_ENV),
        (
            DEPLOY / "compose" / "ops-centre.yaml",
            {"RXD_ADDRESS": COMPOSE_ENV["RXD_ADDRESS"]},
        ),  # no camera route
        (DEPLOY / "compose" / "ops-centre.yaml", {**COMPOSE_ENV, "RXD_CONFIG": "./rxd-llm.toml"}),
        (DEPLOY / "compose" / "camera-site.yaml", COMPOSE_ENV),
        (DEPLOY / "compose" / "camera-site.yaml", {**COMPOSE_ENV, "TXD_UPSTREAM": "channel-sim:50052"}),
    ],
    ids=[
        "ops-centre",
        "ops-centre-backhauls-only",
        "ops-centre-llm",
        "camera-site",
        "camera-site-channel-sim",
    ],
)
def test_compose_daemons_accept_their_config(path: Path, env: dict[str, str]) -> None:
    services, files = compose_services(path, env)
    daemons = {name: s for name, s in services.items() if s.get("command", [""])[0] in DAEMONS}
    assert daemons, path
    for name, service in daemons.items():
        args = service["command"]
        cfg: Any = daemon_config(args, {k: str(v) for k, v in service["environment"].items()}, files)
        _, port = split_hostport(cfg.server.listen)
        probe = service["healthcheck"]["test"]
        assert probe[:3] == ["CMD", "semcom-health", f"127.0.0.1:{port}"], name
        # The port asks for client certificates, so the probe shows one; every secret file named is mounted.
        assert cfg.server.tls.client_ca is not None and "--cert" in probe, name
        named = set(re.findall(r"/run/secrets/([\w.-]+)", json.dumps([service["environment"], probe])))
        assert named <= set(service["secrets"]), (name, named - set(service["secrets"]))
        assert_drains_in_time(args[0], cfg, float(service["stop_grace_period"].removesuffix("s")))
    if path.stem == "ops-centre":
        rxd: Any = daemon_config(services["rxd"]["command"], services["rxd"]["environment"], files)
        assert rxd.transmitter.address == env.get("TXD_ADDRESS", "")  # optional: clips over backhauls
        assert rxd.generate.kind == ("llm" if "RXD_CONFIG" in env else "template")
        if "RXD_CONFIG" in env:
            assert rxd.generate.server.base_url == "http://vllm:8002/v1"
            assert "--port=8002" in services["vllm"]["command"]


def test_compose_sites_seal_with_a_key_the_ops_centre_holds() -> None:
    ops, _ = compose_services(DEPLOY / "compose" / "ops-centre.yaml", COMPOSE_ENV)
    site, _ = compose_services(DEPLOY / "compose" / "camera-site.yaml", COMPOSE_ENV)
    site_keys = json.loads(ops["rxd"]["environment"]["SEMCOM_RXD__LINK__SITE_KEYS"])
    assert site["txd"]["environment"]["SEMCOM_TXD__LINK__SITE_ID"] in site_keys


def test_compose_refuses_to_start_without_the_peer_address() -> None:
    with pytest.raises(KeyError, match="RXD_ADDRESS"):
        compose_services(DEPLOY / "compose" / "camera-site.yaml", {})


# Kubernetes


def test_manifests_pass_kubernetes_validate() -> None:
    """kubernetes-validate carries the API's schemas: --strict also rejects fields the API does not have."""
    validate = tool("kubernetes-validate", "pip install kubernetes-validate (the [dev] extra)")
    messages = check([validate, "--strict", "--quiet", *map(str, MANIFESTS)])
    assert messages == "", f"kubernetes-validate:\n{messages}"


def test_kubernetes_validate_rejects_a_broken_manifest(tmp_path: Path) -> None:
    validate = tool("kubernetes-validate", "pip install kubernetes-validate (the [dev] extra)")
    broken = tmp_path / "rxd.yaml"
    text = (DEPLOY / "kubernetes" / "ops-centre" / "rxd.yaml").read_text()
    broken.write_text(text.replace("GracePeriodSeconds: 30", "GracePeriodSeconds: half"))
    messages = check([validate, "--strict", "--quiet", str(broken)])
    assert "'half' is not of type 'integer'" in messages and "semcom-rxd" in messages, messages


def kubernetes_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = [doc for p in MANIFESTS for doc in yaml.safe_load_all(p.read_text()) if doc]
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def pod_env(container: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(objects[("Secret", source["secretRef"]["name"])]["stringData"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            secret = objects.get(("Secret", ref["name"]))
            assert secret is not None or ref.get("optional"), ref
            env[var["name"]] = secret["stringData"][ref["key"]] if secret else ""
    return env


def test_kubernetes_daemons_accept_their_config_and_probe_their_port(tmp_path: Path) -> None:
    objects = kubernetes_objects()
    daemons = 0
    for (kind, name), deployment in objects.items():
        pod = deployment["spec"]["template"]["spec"] if kind == "Deployment" else {"containers": []}
        for container in pod["containers"]:
            if container.get("args", [""])[0] not in DAEMONS:
                continue
            daemons += 1
            # The ConfigMap mounted at /etc/semcom, as files; each config in it must be one the daemon takes.
            config_map = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
            (tmp_path / name).mkdir()
            files = {}
            for key, text in objects[("ConfigMap", config_map)]["data"].items():
                (tmp_path / name / key).write_text(text)
                files[f"/etc/semcom/{key}"] = str(tmp_path / name / key)
            env = pod_env(container, objects)
            for target in files:
                daemon_config([*container["args"][:2], target], env, files)
            cfg: Any = daemon_config(container["args"], env, files)
            _, port = split_hostport(cfg.server.listen)
            # The port asks for client certificates, which the kubelet's grpc probe cannot show: each probe
            # runs semcom-health with the client certificate.
            assert cfg.server.tls.client_ca is not None, name
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                command = container[probe]["exec"]["command"]
                assert command[:2] == ["semcom-health", f"127.0.0.1:{port}"] and "--cert" in command, probe
                assert container[probe]["timeoutSeconds"] >= 5, (name, probe)  # a Python process starts
            # Every secret file the daemon is told about lies under a mounted volume.
            mounts = [m["mountPath"] for m in container["volumeMounts"]]
            named = re.findall(r"(/run/secrets/[\w./-]+)", json.dumps([container["env"], container[probe]]))
            assert named and all(any(f.startswith(m + "/") for m in mounts) for f in named), named
            assert_drains_in_time(container["args"][0], cfg, pod["terminationGracePeriodSeconds"])
    assert daemons == 2  # rxd at the operations centre, txd at the camera site


def test_config_maps_hold_the_deploy_configs() -> None:
    """The ConfigMaps carry deploy/configs' files under their names (after a change,
    `python deploy/kubernetes/sync_configs.py` copies them in; the test above loads each in its daemon),
    and the camera site's Secret carries its sources as JSON."""
    objects = kubernetes_objects()
    assert set(objects[("ConfigMap", "semcom-rxd-config")]["data"]) == {"rxd.toml", "rxd-llm.toml"}
    assert set(objects[("ConfigMap", "semcom-txd-site-1-config")]["data"]) == {"txd.toml"}
    sources = json.loads(objects[("Secret", "semcom-txd-site-1")]["stringData"]["SEMCOM_TXD__SOURCES"])
    assert sources and all("url" in s for s in sources)


def test_kubernetes_site_seals_with_a_key_the_ops_centre_holds() -> None:
    objects = kubernetes_objects()
    rxd = objects[("Deployment", "semcom-rxd")]["spec"]["template"]["spec"]["containers"][0]
    txd = objects[("Deployment", "semcom-txd-site-1")]["spec"]["template"]["spec"]["containers"][0]
    site_keys = json.loads(pod_env(rxd, objects)["SEMCOM_RXD__LINK__SITE_KEYS"])
    assert pod_env(txd, objects)["SEMCOM_TXD__LINK__SITE_ID"] in site_keys


def test_sync_configs_copies_a_config_into_its_config_map(tmp_path: Path) -> None:
    sync = runpy.run_path(str(DEPLOY / "kubernetes" / "sync_configs.py"))
    manifest = (DEPLOY / "kubernetes" / "ops-centre" / "rxd.yaml").read_text()
    stale = manifest.replace("  rxd.toml: |\n", "  rxd.toml: |\n    # an old line\n", 1)
    text = sync["synced"](stale)
    data = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap")["data"]
    assert data["rxd.toml"] == (DEPLOY / "configs" / "rxd.toml").read_text()
    assert sync["synced"](text) == text


def test_vllm_service_is_the_one_rxd_llm_asks() -> None:
    objects = kubernetes_objects()
    service = objects[("Service", "vllm")]
    container = objects[("Deployment", "vllm")]["spec"]["template"]["spec"]["containers"][0]
    llm: Any = load_config(RxdConfig, path=DEPLOY / "compose" / "rxd-llm.toml")
    assert llm.generate.server.base_url == f"http://vllm:{service['spec']['ports'][0]['port']}/v1"
    assert f"--port={service['spec']['ports'][0]['port']}" in container["args"]
    assert shlex.join(container["command"]) == "vllm serve"
    assert "nvidia.com/gpu" in container["resources"]["limits"]
