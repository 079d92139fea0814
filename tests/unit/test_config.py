"""Config precedence (TOML < environment < CLI), key-path errors, and the shipped example configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from channel_sim.config import ChannelSimConfig
from rxd.config import RxdConfig
from semcom.config import ConfigError, load_config
from txd.config import TxdConfig

ROOT = Path(__file__).resolve().parents[2]


def test_precedence_file_then_env_then_cli(tmp_path: Path) -> None:
    path = tmp_path / "txd.toml"
    path.write_text('[link]\nupstream = "10.0.0.1:1"\nmcs = "bpsk/none"\nwindow = 3\n')
    env = {"SEMCOM_TXD__LINK__MCS": "qam16/ldpc_r12", "SEMCOM_TXD__LINK__WINDOW": "5", "OTHER": "x"}
    cfg = load_config(TxdConfig, path=path, environ=env, env_prefix="SEMCOM_TXD", overrides=["link.window=9"])
    assert cfg.link.upstream == "10.0.0.1:1"  # file
    assert cfg.link.mcs == "qam16/ldpc_r12"  # env beats file
    assert cfg.link.window == 9  # CLI beats env


def test_errors_name_the_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(TxdConfig, overrides=["link.window=0", "link.mcs=qam1024/turbo", "nosuch.key=1"])
    text = "\n".join(info.value.errors)
    assert "link.window" in text
    assert "link.mcs" in text and "qam1024/turbo" in text
    assert "nosuch" in text


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\nlisten=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(RxdConfig, path=path)


@pytest.mark.parametrize(
    ("name", "model"),
    [("txd.toml", TxdConfig), ("rxd.toml", RxdConfig), ("channel-sim.toml", ChannelSimConfig)],
)
def test_example_configs_validate(name: str, model: type) -> None:
    load_config(model, path=ROOT / "deploy" / "configs" / name)


@pytest.mark.parametrize("daemon", ["txd", "rxd", "channel_sim"])
def test_check_config_cli(tmp_path: Path, daemon: str) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", daemon, "--check-config", "--set", "server.grace_s=3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"grace_s": 3' in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", daemon, "--check-config", "--set", "server.grace_s=-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "server.grace_s" in bad.stderr
