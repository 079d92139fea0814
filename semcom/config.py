"""Config loading shared by the daemons: TOML file < environment < CLI overrides, validated by pydantic."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

T = TypeVar("T", bound=BaseModel)


class Frozen(BaseModel):
    """Base of every config model: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerTlsConfig(Frozen):
    """TLS of a listening port: off without a certificate; with `client_ca`, clients must present a
    certificate that CA signed (mutual TLS). `semcom certs --out DIR` makes a CA and the certificates."""

    cert: Path | None = Field(None, description="PEM certificate chain of this server; null: plaintext")
    key: Path | None = Field(None, description="PEM private key of `cert`")
    client_ca: Path | None = Field(
        None, description="PEM CA bundle; set: every client must present a certificate it signed (mTLS)"
    )

    @model_validator(mode="after")
    def _pairs(self) -> ServerTlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        if self.client_ca is not None and self.cert is None:
            raise ValueError("client_ca (mTLS) needs cert and key")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert is not None


class ClientTlsConfig(Frozen):
    """TLS of a connection this daemon opens: the CA it trusts and, for mTLS, its own certificate."""

    enabled: bool = Field(False, description="connect with TLS (true whenever the peer's port has a cert)")
    ca: Path | None = Field(None, description="PEM CA bundle the peer's certificate chains to; null: system")
    cert: Path | None = Field(None, description="PEM client certificate, for a peer that requires mTLS")
    key: Path | None = Field(None, description="PEM private key of `cert`")
    server_name: str = Field(
        "", description="name expected in the peer's certificate when it differs from the address's host"
    )

    @model_validator(mode="after")
    def _pairs(self) -> ClientTlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class TokenEntry(Frozen):
    """One bearer token, stored as the SHA-256 of its text (`semcom token` makes both)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="who holds it, for logs")
    scope: Literal["read", "admin"] = Field(
        description="read: queries, records, stats; admin: also clips, ingest, announce and ChannelAdmin"
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token's text")


class AuthConfig(Frozen):
    """Bearer tokens on the gRPC services (metadata `authorization: Bearer ...`) and on rxd's HTTP API.
    No token configured: no check (a loopback-only deployment). The Link service is authenticated by mTLS
    and the frames' AEAD instead; health checks stay open to supervisors."""

    tokens: tuple[TokenEntry, ...] = Field((), description="accepted tokens with their scopes")
    tokens_file: Path | None = Field(
        None, description="a TOML file of more [[tokens]] tables (name, scope, sha256), read at start-up"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.tokens) or self.tokens_file is not None


class ClientAuthConfig(Frozen):
    """The bearer token this daemon presents to a peer that checks tokens."""

    token: SecretStr = Field(SecretStr(""), description="the token's text (never printed); empty: none")
    token_file: Path | None = Field(None, description="a file holding the token's text (wins over token)")


class ServerConfig(Frozen):
    """Where a daemon's gRPC server listens and how it drains."""

    listen: str = Field("127.0.0.1:0", description="host:port of the gRPC server; port 0 picks a free one")
    tls: ServerTlsConfig = Field(ServerTlsConfig(), description="TLS (and mTLS) of the gRPC port")
    reflection: bool = Field(True, description="serve gRPC reflection (service discovery for grpcurl)")
    grace_s: float = Field(10.0, gt=0, description="how long in-flight calls may run on after SIGTERM")
    max_message_bytes: int = Field(
        16 * 1024 * 1024, gt=1024, description="largest gRPC message accepted or sent, in bytes"
    )


class MetricsConfig(Frozen):
    """The Prometheus /metrics endpoint."""

    enabled: bool = Field(True, description="serve /metrics over HTTP")
    listen: str = Field("127.0.0.1:0", description="host:port of the metrics HTTP server; port 0 picks one")


class LoggingConfig(Frozen):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="minimum level logged")
    json_lines: bool = Field(False, description="one JSON object per line instead of plain text")


class ConfigError(Exception):
    """The configuration is invalid; `errors` lists "key.path: reason" lines."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(errors))
        self.errors = list(errors)


def split_hostport(address: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port") into its parts."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _parse_scalar(text: str) -> Any:
    """Environment and --set values: JSON when they parse (numbers, booleans, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set_path(tree: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError([f"{'.'.join(path)}: {key} is a value, not a section"])
        node = child
    node[path[-1]] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """`PREFIX__SECTION__KEY=value` variables as a nested dict (keys lower-cased)."""
    tree: dict[str, Any] = {}
    head = prefix + "__"
    for name, value in sorted(environ.items()):
        if name.startswith(head):
            path = [part.lower() for part in name[len(head) :].split("__") if part]
            if path:
                _set_path(tree, path, _parse_scalar(value))
    return tree


def cli_overrides(assignments: Sequence[str]) -> dict[str, Any]:
    """`section.key=value` strings (from repeated --set flags) as a nested dict."""
    tree: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError([f"--set {item!r}: expected section.key=value"])
        _set_path(tree, key.strip().split("."), _parse_scalar(value))
    return tree


def load_config(
    model: type[T],
    *,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    env_prefix: str = "",
    overrides: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> T:
    """Build `model` from a TOML file, then environment, then CLI overrides (each wins over the last)."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            tree = tomllib.loads(path.read_text())
        except OSError as err:
            raise ConfigError([f"{path}: cannot read ({err.strerror})"]) from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError([f"{path}: not valid TOML ({err})"]) from err
    if environ is not None and env_prefix:
        tree = _merge(tree, env_overrides(environ, env_prefix))
    tree = _merge(tree, cli_overrides(overrides))
    if extra:
        tree = _merge(tree, extra)
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(
            [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()]
        ) from err
