"""The receiver's HTTP/JSON API and web page, served on the daemon's event loop beside gRPC."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from importlib import resources
from typing import Any

from aiohttp import web

from rxd.core import ClipWindow, ReceiverCore
from rxd.retrieval.engine import Hit
from semcom.config import split_hostport
from semcom.errors import InvalidInput, SemcomError

log = logging.getLogger(__name__)

_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}
MAX_BODY_BYTES = 64 * 1024


def hit_json(hit: Hit, clip: ClipWindow) -> dict[str, Any]:
    rec = hit.record
    return {
        "record": {
            "schema_id": rec.schema_id,
            "stream_id": rec.stream_id,
            "record_id": rec.record_id,
            "track_id": rec.track_id,
            "time_s": rec.time_s,
            "location_id": rec.location_id,
            "fields": rec.fields,
        },
        "description": hit.description,
        "score": hit.score,
        "matched_slots": list(hit.matched_slots),
        "unknown_slots": list(hit.unknown_slots),
        "contradicted_slots": list(hit.contradicted_slots),
        "clip": asdict(clip),
    }


def _is_values(value: object) -> bool:
    """A filter's values: one string ("red", or "red|blue") or a list of strings."""
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _error(err: SemcomError) -> web.Response:
    status = _HTTP_STATUS.get(err.code.name, 500)
    return web.json_response({"error": str(err), "code": err.code.name}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except SemcomError as err:
        return _error(err)


class HttpApi:
    """GET / (the page), POST|GET /api/query, GET /api/stats, GET /api/clip."""

    def __init__(self, core: ReceiverCore, listen: str) -> None:
        self.core = core
        self.listen = listen
        self.app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
        self.app.add_routes(
            [
                web.get("/", self.page),
                web.get("/api/query", self.query_get),
                web.post("/api/query", self.query_post),
                web.get("/api/stats", self.stats),
                web.get("/api/clip", self.clip),
            ]
        )
        self._runner = web.AppRunner(self.app, access_log=None)
        self.port = 0

    async def start(self) -> int:
        await self._runner.setup()
        host, port = split_hostport(self.listen)
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server's sockets
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files("rxd").joinpath("web/index.html").read_text()
        return web.Response(text=html, content_type="text/html")

    async def query_get(self, request: web.Request) -> web.Response:
        q = request.query
        body = {"text": q.get("q", ""), "top_k": q.get("top_k", 0)}
        return await self._query(body)

    async def query_post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InvalidInput(f"request body is not JSON: {err}") from err
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        return await self._query(body)

    async def _query(self, body: Mapping[str, Any]) -> web.Response:
        allowed = {"text", "filters", "top_k", "stream_id", "location_ids", "t0_s", "t1_s", "schema_id"}
        extra = set(body) - allowed
        if extra:
            raise InvalidInput(f"unknown query keys {sorted(extra)}; allowed: {sorted(allowed)}")
        filters = body.get("filters") or {}
        if not isinstance(filters, dict) or not all(_is_values(v) for v in filters.values()):
            raise InvalidInput(
                '"filters" must map field names to a value or a list of values, e.g. '
                '{"upper_color": ["red", "blue"], "gender": "male"}'
            )
        try:
            q = self.core.query_from(
                str(body.get("text", "")),
                filters,
                top_k=int(body.get("top_k") or 0),
                stream_id=str(body.get("stream_id", "")),
                location_ids=[int(x) for x in body.get("location_ids") or []],
                t0_s=float(body.get("t0_s") or 0.0),
                t1_s=float(body.get("t1_s") or 0.0),
                schema_id=str(body.get("schema_id", "")),
            )
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"bad query value: {err}") from err
        result = await self.core.query(q)
        return web.json_response(
            {
                "hits": [
                    hit_json(h, self.core.clip_window(h.record.stream_id, h.record.time_s))
                    for h in result.hits
                ],
                "slots": {name: list(values) for name, values in result.slots.items()},
                "note": result.note,
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.core.stats())

    async def clip(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            stream_id, t0_s, t1_s = q["stream_id"], float(q["t0_s"]), float(q["t1_s"])
        except (KeyError, ValueError) as err:
            raise InvalidInput("clip needs stream_id, t0_s and t1_s") from err
        chunks = self.core.fetch_clip(stream_id, t0_s, t1_s)
        first = await anext(chunks)  # errors surface here, before any byte of the response is sent
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response
