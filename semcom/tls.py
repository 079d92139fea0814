"""TLS for every port: server credentials, client channels (mTLS optional) and the certificates for them."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from semcom.config import ClientTlsConfig, ServerTlsConfig
from semcom.errors import InvalidInput


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as err:
        raise InvalidInput(f"{what} {path}: cannot read ({err.strerror})") from err


def server_credentials(cfg: ServerTlsConfig) -> grpc.ServerCredentials:
    """The gRPC server credentials of `cfg` (which must have a certificate); mTLS when client_ca is set."""
    key, cert = _read(cfg.key, "tls.key"), _read(cfg.cert, "tls.cert")
    assert key is not None and cert is not None, "server_credentials needs cfg.enabled"
    ca = _read(cfg.client_ca, "tls.client_ca")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def add_port(server: aio.Server, listen: str, cfg: ServerTlsConfig) -> int:
    """Bind `listen` with TLS when `cfg` has a certificate, else plaintext; returns the bound port."""
    if cfg.enabled:
        return server.add_secure_port(listen, server_credentials(cfg))
    return server.add_insecure_port(listen)


def channel_credentials(cfg: ClientTlsConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(cfg.ca, "tls.ca"),
        private_key=_read(cfg.key, "tls.key"),
        certificate_chain=_read(cfg.cert, "tls.cert"),
    )


def _options(cfg: ClientTlsConfig | None, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    out = list(options)
    if cfg is not None and cfg.enabled and cfg.server_name:
        out.append(("grpc.ssl_target_name_override", cfg.server_name))
    return out


def open_channel(
    address: str,
    tls: ClientTlsConfig | None = None,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[aio.ClientInterceptor] = (),
) -> aio.Channel:
    """An asyncio channel to `address`: TLS (with a client certificate for mTLS) when `tls.enabled`."""
    opts = _options(tls, options)
    extra = list(interceptors) or None
    if tls is not None and tls.enabled:
        return aio.secure_channel(address, channel_credentials(tls), options=opts, interceptors=extra)
    return aio.insecure_channel(address, options=opts, interceptors=extra)


def open_sync_channel(
    address: str, tls: ClientTlsConfig | None = None, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """The blocking counterpart of open_channel (CLI, benches, process tests)."""
    opts = _options(tls, options)
    if tls is not None and tls.enabled:
        return grpc.secure_channel(address, channel_credentials(tls), options=opts)
    return grpc.insecure_channel(address, options=opts)


def server_ssl_context(cfg: ServerTlsConfig) -> ssl.SSLContext | None:
    """An ssl context for an HTTP server (TLS 1.2+; client certificates required with client_ca)."""
    if not cfg.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cfg.cert), str(cfg.key))
        if cfg.client_ca is not None:
            ctx.load_verify_locations(str(cfg.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as err:
        raise InvalidInput(f"http tls: cannot load {cfg.cert} / {cfg.key}: {err}") from err
    return ctx


# -- certificates -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    """What `make_certs` wrote: the CA, one server certificate for every daemon, one client certificate."""

    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(
    out: Path,
    hosts: Sequence[str] = (),
    *,
    days: int = 825,
    client_name: str = "semcom-client",
) -> CertFiles:
    """A private CA, a server certificate valid for localhost, 127.0.0.1, ::1 and `hosts`, and a client
    certificate, all ECDSA P-256, written to `out` (keys mode 0600). Rotation: run it again into a new
    folder, deploy the new CA beside the old one, then the new certificates, then drop the old CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "semcom CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, usage: Any, sans: list[x509.GeneralName]) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    names = ["localhost", "127.0.0.1", "::1", *hosts]
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(names):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_key, server_cert = leaf("semcom server", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client_key, client_cert = leaf(client_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = CertFiles(
        ca=out / "ca.pem",
        ca_key=out / "ca-key.pem",
        server_cert=out / "server.pem",
        server_key=out / "server-key.pem",
        client_cert=out / "client.pem",
        client_key=out / "client-key.pem",
    )
    certs = ((files.ca, ca_cert), (files.server_cert, server_cert), (files.client_cert, client_cert))
    for path, cert in certs:
        path.write_bytes(cert.public_bytes(_pem()))
    keys = ((files.ca_key, ca_key), (files.server_key, server_key), (files.client_key, client_key))
    for path, key in keys:
        _write_key(path, key)
    return files


def _pem() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)
