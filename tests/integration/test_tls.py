"""The whole chain under mutual TLS with bearer tokens: records flow, and a call without a client
certificate, without a token or with too small a scope is refused; HTTPS the same."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc import aio

from channel_sim.app import ChannelSim
from channel_sim.config import ChannelSimConfig
from rxd.app import Rxd
from rxd.config import RxdConfig
from semcom.auth import bearer_interceptors, hash_token
from semcom.config import ClientTlsConfig
from semcom.launch import free_port
from semcom.pb.v1 import (
    channel_pb2,
    channel_pb2_grpc,
    common_pb2,
    receiver_pb2,
    receiver_pb2_grpc,
    transmitter_pb2,
    transmitter_pb2_grpc,
)
from semcom.record import Record
from semcom.tls import CertFiles, make_certs, open_channel
from tests.conftest import shared_embedder
from tests.fixtures.waiting import eventually
from txd.app import Txd
from txd.config import TxdConfig

READ, ADMIN = "read-token-for-tests-0123456789", "admin-token-for-tests-0123456789"
TOKENS = [
    {"name": "viewer", "scope": "read", "sha256": hash_token(READ)},
    {"name": "operator", "scope": "admin", "sha256": hash_token(ADMIN)},
]


@dataclass
class TlsChain:
    txd: Txd
    channel: ChannelSim
    rxd: Rxd
    certs: CertFiles

    def client_tls(self, *, with_cert: bool = True) -> ClientTlsConfig:
        c = self.certs
        if not with_cert:
            return ClientTlsConfig(enabled=True, ca=c.ca)
        return ClientTlsConfig(enabled=True, ca=c.ca, cert=c.client_cert, key=c.client_key)

    def channel_to(self, port: int, token: str = "", *, with_cert: bool = True) -> aio.Channel:
        tls = self.client_tls(with_cert=with_cert)
        return open_channel(f"127.0.0.1:{port}", tls, interceptors=bearer_interceptors(token))


def _mtls(c: CertFiles) -> dict[str, str]:
    return {"cert": str(c.server_cert), "key": str(c.server_key), "client_ca": str(c.ca)}


def _client(c: CertFiles) -> dict[str, Any]:
    return {"enabled": True, "ca": str(c.ca), "cert": str(c.client_cert), "key": str(c.client_key)}


@pytest_asyncio.fixture
async def tls_chain(tmp_path: Path) -> AsyncIterator[TlsChain]:
    certs = make_certs(tmp_path / "certs")
    txd_port = free_port()
    rxd = Rxd(
        RxdConfig.model_validate(
            {
                "server": {"listen": "127.0.0.1:0", "tls": _mtls(certs)},
                "metrics": {"enabled": False},
                "index": {"path": str(tmp_path / "index.db")},
                "http": {
                    "listen": "127.0.0.1:0",
                    "tls": {"cert": str(certs.server_cert), "key": str(certs.server_key)},
                },
                "transmitter": {
                    "address": f"127.0.0.1:{txd_port}",
                    "tls": _client(certs),
                    "auth": {"token": ADMIN},
                },
                "auth": {"tokens": TOKENS},
            }
        ),
        embedder=shared_embedder(),
    )
    channel = ChannelSim(
        ChannelSimConfig.model_validate(
            {
                "server": {"listen": "127.0.0.1:0", "tls": _mtls(certs), "reflection": False},
                "metrics": {"enabled": False},
                "upstream": {"address": f"127.0.0.1:{rxd.port}", "tls": _client(certs)},
                "auth": {"tokens": TOKENS},
            }
        )
    )
    txd = Txd(
        TxdConfig.model_validate(
            {
                "server": {"listen": f"127.0.0.1:{txd_port}", "tls": _mtls(certs)},
                "metrics": {"enabled": False},
                "link": {
                    "upstream": f"127.0.0.1:{channel.port}",
                    "tls": _client(certs),
                    "batch_delay_s": 0.01,
                    "mcs": "bytes",
                },
                "clips": {"dir": str(tmp_path / "clips")},
                "auth": {"tokens": TOKENS},
            }
        )
    )
    for daemon in (rxd, channel, txd):
        await daemon.start()
    yield TlsChain(txd, channel, rxd, certs)
    await txd.stop(1.0)
    await channel.stop(1.0)
    await rxd.stop(1.0)


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    return info.value.code()


@pytest.mark.asyncio
async def test_records_flow_over_mtls_and_calls_need_tokens(tls_chain: TlsChain) -> None:
    chain = tls_chain
    rec = Record(
        schema_id="person/1",
        stream_id="gate",
        track_id=1,
        record_id=0,
        time_s=1.7e9,
        location_id=1,
        fields={"gender": "female", "upper_color": "red"},
    )
    announce = transmitter_pb2.AnnounceRequest(record=rec.to_pb())
    async with chain.channel_to(chain.txd.port, ADMIN) as tx, chain.channel_to(chain.rxd.port, READ) as rx:
        reply = await transmitter_pb2_grpc.TransmitterStub(tx).Announce(announce, timeout=10)
        assert reply.record_id == 1
        stub = receiver_pb2_grpc.ReceiverStub(rx)
        query = receiver_pb2.QueryRequest(text="a woman in red", top_k=5)
        await eventually(lambda: chain.rxd.engine.count() >= 1, timeout_s=30)
        hits = (await stub.Query(query, timeout=10)).hits
        assert hits[0].record.stream_id == "gate"
        # A read token may query but not fetch clips (admin).
        clip = common_pb2.FetchClipRequest(stream_id="gate", t0_s=1.7e9 - 1, t1_s=1.7e9 + 1)
        code = await _code(anext(aiter(stub.FetchClip(clip, timeout=10))))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # An admin token may: rxd asks txd over the backward channel (mTLS, rxd's own admin token), and
        # txd answers NOT_FOUND (an announced record has no video), not UNAUTHENTICATED or UNAVAILABLE.
        async with chain.channel_to(chain.rxd.port, ADMIN) as rx_admin:
            admin_stub = receiver_pb2_grpc.ReceiverStub(rx_admin)
            code = await _code(anext(aiter(admin_stub.FetchClip(clip, timeout=10))))
            assert code == grpc.StatusCode.NOT_FOUND
        # txd's Status needs read; a read token may not announce.
        tx_read = transmitter_pb2_grpc.TransmitterStub(chain.channel_to(chain.txd.port, READ))
        assert (await tx_read.Status(transmitter_pb2.StatusRequest(), timeout=10)).records_acked >= 1
        code = await _code(tx_read.Announce(announce, timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.asyncio
async def test_calls_without_certificate_or_token_are_refused(tls_chain: TlsChain) -> None:
    chain = tls_chain
    query = receiver_pb2.QueryRequest(text="a man", top_k=1)
    # No token: UNAUTHENTICATED, on each daemon.
    async with chain.channel_to(chain.rxd.port) as rx:
        code = await _code(receiver_pb2_grpc.ReceiverStub(rx).Query(query, timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Health stays open to supervisors (with a certificate, without a token).
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = await health_pb2_grpc.HealthStub(rx).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    async with chain.channel_to(chain.channel.port) as ch:
        admin = channel_pb2_grpc.ChannelAdminStub(ch)
        code = await _code(admin.SetChain(channel_pb2.ChannelChain(), timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    async with chain.channel_to(chain.channel.port, READ) as ch:
        admin = channel_pb2_grpc.ChannelAdminStub(ch)
        code = await _code(admin.SetChain(channel_pb2.ChannelChain(), timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    # A valid token but no client certificate: the TLS handshake fails (mTLS), nothing is called.
    async with chain.channel_to(chain.rxd.port, ADMIN, with_cert=False) as rx:
        code = await _code(receiver_pb2_grpc.ReceiverStub(rx).Query(query, timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
    # Plaintext to a TLS port fails the same way.
    async with aio.insecure_channel(f"127.0.0.1:{chain.rxd.port}") as rx:
        code = await _code(receiver_pb2_grpc.ReceiverStub(rx).Query(query, timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.asyncio
async def test_reflection_can_be_switched_off(tls_chain: TlsChain) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")
    for port, served in ((tls_chain.rxd.port, True), (tls_chain.channel.port, False)):
        async with tls_chain.channel_to(port, READ) as ch:
            call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([request]))
            if served:
                answer = await anext(aiter(call))
                names = {s.name for s in answer.list_services_response.service}
                assert "semcom.v1.Receiver" in names
            else:
                assert await _code(anext(aiter(call))) == grpc.StatusCode.UNIMPLEMENTED


def _https(url: str, ca: Path, token: str = "") -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.asyncio
async def test_https_api_needs_a_token_with_the_path_scope(tls_chain: TlsChain) -> None:
    assert tls_chain.rxd.http is not None
    base = f"https://localhost:{tls_chain.rxd.http.port}"
    ca = tls_chain.certs.ca
    status, body = await asyncio.to_thread(_https, f"{base}/api/stats", ca)
    assert status == 401 and body["code"] == "UNAUTHENTICATED"
    status, body = await asyncio.to_thread(_https, f"{base}/api/stats", ca, "not-a-token")
    assert status == 401
    status, body = await asyncio.to_thread(_https, f"{base}/api/stats", ca, READ)
    assert status == 200 and "records_indexed" in body
    clip = f"{base}/api/clip?stream_id=gate&t0_s=0&t1_s=1"
    status, body = await asyncio.to_thread(_https, clip, ca, READ)
    assert status == 403 and body["code"] == "PERMISSION_DENIED"
    # Plain HTTP to the HTTPS port gets no answer it could read as HTTP.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        await asyncio.to_thread(
            urllib.request.urlopen, f"http://127.0.0.1:{tls_chain.rxd.http.port}/api/stats", None, 5
        )


def _https_raw(port: int, ca: Path, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    import http.client

    conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=str(ca)))
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_a_browser_logs_in_once_and_keeps_the_token_in_a_strict_cookie(tls_chain: TlsChain) -> None:
    assert tls_chain.rxd.http is not None
    port, ca = tls_chain.rxd.http.port, tls_chain.certs.ca
    status, headers = await asyncio.to_thread(_https_raw, port, ca, "/?token=wrong", {})
    assert status == 401 and "set-cookie" not in headers
    status, headers = await asyncio.to_thread(_https_raw, port, ca, f"/?token={READ}", {})
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    status, _ = await asyncio.to_thread(_https_raw, port, ca, "/api/stats", jar)
    assert status == 200
    status, _ = await asyncio.to_thread(_https_raw, port, ca, "/api/clip?stream_id=gate&t0_s=0&t1_s=1", jar)
    assert status == 403
