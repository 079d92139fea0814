"""rxd's HTTP API under arbitrary requests: every one is answered with a status, and every error is JSON
with an "error" and a "code" (413 for a big body, 414 for a long URL, 400 for numbers that do not parse)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxd.app import Rxd
from rxd.config import RxdConfig
from tests.conftest import shared_embedder

PATHS = [
    "/",
    "/api/query",
    "/api/stats",
    "/api/clip",
    "/api/keyframe",
    "/api/schema",
    "/api/link",
    "/static/app.js",
]
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
QUERY_KEYS = st.sampled_from(
    ["q", "top_k", "stream_id", "t0_s", "t1_s", "record_id", "schema_id", "token", "x"]
)


@pytest.fixture(scope="module")
def http_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One rxd for the module, on a loop of its own thread, so hypothesis drives it with plain requests."""
    tmp: Path = tmp_path_factory.mktemp("fuzz-http")
    cfg = RxdConfig.model_validate(
        {
            "server": {"listen": "127.0.0.1:0"},
            "metrics": {"enabled": False},
            "index": {"path": str(tmp / "index.db")},
            "http": {"listen": "127.0.0.1:0", "max_url_chars": 2048},
            "transmitter": {"address": "127.0.0.1:9", "timeout_s": 1.0},
        }
    )
    ready: list[int] = []
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        rxd = Rxd(cfg, embedder=shared_embedder())
        await rxd.start()
        assert rxd.http is not None
        ready.append(rxd.http.port)
        started.set()
        await asyncio.to_thread(stop.wait)
        await rxd.stop(1.0)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(60), "rxd did not start"
    yield ready[0]
    stop.set()
    thread.join(30)


def request(port: int, method: str, target: str, body: bytes | None = None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, target, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    finally:
        conn.close()


def assert_answered(status: int, kind: str, body: bytes) -> dict[str, Any] | None:
    assert 200 <= status <= 599
    if status < 400:
        return None
    assert kind.startswith("application/json"), (status, kind, body[:200])
    doc = json.loads(body)
    assert isinstance(doc, dict) and doc.get("error") and doc.get("code"), doc
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.one_of(st.sampled_from(PATHS), st.text(max_size=40).map(lambda t: "/" + urllib.parse.quote(t))),
    params=st.lists(st.tuples(QUERY_KEYS, st.text(max_size=30)), max_size=4),
    body=st.one_of(st.none(), st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode())),
)
def test_every_request_is_answered_and_errors_are_json(
    http_port: int, method: str, path: str, params: list[tuple[str, str]], body: bytes | None
) -> None:
    target = path + ("?" + urllib.parse.urlencode(params) if params else "")
    status, kind, payload = request(http_port, method, target, body)
    assert_answered(status, kind, payload)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(JSON)
def test_any_json_query_body_is_answered(http_port: int, doc: object) -> None:
    status, kind, payload = request(http_port, "POST", "/api/query", json.dumps(doc).encode())
    assert status in (200, 400, 404, 429, 504), payload[:200]
    assert_answered(status, kind, payload)


@pytest.mark.parametrize(
    ("method", "target", "body", "status"),
    [
        ("POST", "/api/query", b'{"text": "a man", "top_k": 1e400}', 400),
        ("GET", "/api/query?q=man&top_k=1e400", None, 400),
        ("GET", "/api/query?q=man&top_k=abc", None, 400),
        ("GET", "/api/clip?stream_id=cam&t0_s=nan&t1_s=1", None, 400),
        ("GET", "/api/clip?stream_id=..&t0_s=0&t1_s=1", None, 400),
        ("GET", "/api/keyframe?stream_id=cam&record_id=1e400", None, 400),
        ("POST", "/api/query", b"{not json", 400),
        ("POST", "/api/query", json.dumps({"text": "x" * 600}).encode(), 400),
        ("POST", "/api/query", b"x" * (70 * 1024), 413),
        ("GET", "/api/query?q=" + "a" * 3000, None, 414),
        ("DELETE", "/api/query", None, 405),
        ("GET", "/api/nothing", None, 404),
    ],
)
def test_bad_requests_get_their_status_in_json(
    http_port: int, method: str, target: str, body: bytes | None, status: int
) -> None:
    got, kind, payload = request(http_port, method, target, body)
    assert got == status, payload[:300]
    assert_answered(got, kind, payload)
