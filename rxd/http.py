"""The receiver's HTTP/JSON API and web page, served on the daemon's event loop beside gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, replace
from importlib import resources
from typing import Any

from aiohttp import web

from rxd.core import ClipWindow, ReceiverCore
from rxd.http_guard import HttpGuard
from rxd.live import EventHub, IndexTail
from rxd.retrieval.engine import Hit
from semcom.config import split_hostport
from semcom.errors import InvalidInput
from semcom.record import UNKNOWN

log = logging.getLogger(__name__)

# The page loads nothing from elsewhere and runs no inline script or style; clips play from blob: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page's files, by the name it asks for: a fixed list, so no request names a path.
STATIC = {"app.js": "application/javascript", "app.css": "text/css"}
FOLLOW_PERIOD_S = 0.5  # how often the live view looks for new records in the index
LINK_EVERY = 10  # live link state every this many index scans (5 s), asked of txd only while pages listen
HEARTBEAT_S = 15.0  # an SSE comment this often keeps idle connections open through proxies


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
            "confidence": rec.confidence,
        },
        "description": hit.description,
        "score": hit.score,
        "probability": hit.probability,
        "slot_scores": [asdict(s) for s in hit.slot_scores],
        "matched_slots": list(hit.matched_slots),
        "unknown_slots": list(hit.unknown_slots),
        "contradicted_slots": list(hit.contradicted_slots),
        "clip": asdict(clip),
    }


def _unfollowed(stream_id: str) -> dict[str, Any]:
    """A stream whose totals the index tail cannot give (records=None: see its link's records_indexed)."""
    return {
        "stream_id": stream_id,
        "records": None,
        "first_time_s": None,
        "last_time_s": None,
        "location_ids": [],
    }


def _finite(value: float) -> float | None:
    """JSON has no NaN: an SNR never estimated is null."""
    return value if math.isfinite(value) else None


def _is_values(value: object) -> bool:
    """A filter's values: one string ("red", or "red|blue") or a list of strings."""
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


class HttpApi:
    """GET / (the page) and /static/*, POST|GET /api/query, GET /api/schema, /api/stats, /api/link,
    /api/clip, /api/keyframe, /api/events (server-sent events: records as indexed, link state)."""

    def __init__(
        self, core: ReceiverCore, listen: str, *, max_listeners: int = 16, guard: HttpGuard | None = None
    ) -> None:
        self.core = core
        self.listen = listen
        # TLS, tokens, size limits and JSON errors: all in rxd.http_guard, in front of every handler.
        self.guard = guard or HttpGuard()
        self.app = web.Application(
            middlewares=self.guard.middlewares, client_max_size=self.guard.max_body_bytes
        )
        self.app.add_routes(
            [
                web.get("/", self.page),
                web.get("/static/{name}", self.static),
                web.get("/api/query", self.query_get),
                web.post("/api/query", self.query_post),
                web.get("/api/schema", self.schema),
                web.get("/api/stats", self.stats),
                web.get("/api/link", self.link),
                web.get("/api/clip", self.clip),
                web.get("/api/keyframe", self.keyframe),
                web.get("/api/events", self.events),
            ]
        )
        self._runner = self.guard.runner(self.app)
        self.port = 0
        self.tail = IndexTail.for_index(core.cfg.index.kind, core.cfg.index.path, core.engine.schemas)
        self.hub = EventHub(max_listeners=max_listeners)
        self._follow: asyncio.Task[None] | None = None

    async def start(self) -> int:
        await self._scan()  # the per-stream totals, counted from the index before the first page asks
        self._follow = asyncio.create_task(self._follow_index(), name="rxd-http-live")
        await self._runner.setup()
        host, port = split_hostport(self.listen)
        site = web.TCPSite(self._runner, host, port, ssl_context=self.guard.ssl_context)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server's sockets
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def stop(self) -> None:
        """Stop following the index, end the live streams (open pages would hold the server), then close."""
        if self._follow is not None:
            self._follow.cancel()
            await asyncio.gather(self._follow, return_exceptions=True)
        self.hub.close()
        await self._runner.cleanup()
        await asyncio.to_thread(self.tail.close)  # waits for a scan still running on its thread

    async def _scan(self) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.tail.scan)
        except (sqlite3.Error, ValueError) as err:  # the live view is lost, never the daemon
            log.warning("live view: reading the index %s failed: %s", self.tail.path, err)
            await asyncio.to_thread(self.tail.close)
            return []

    async def _follow_index(self) -> None:
        """Publish each record the index gains, and the link state every LINK_EVERY scans while pages
        listen. Polls the index (no hook into ingest): ingest never waits for the page."""
        scans = 0
        while True:
            await asyncio.sleep(FOLLOW_PERIOD_S)
            for record in await self._scan():
                self.hub.publish("record", record)
            scans += 1
            if self.hub.listeners and scans % LINK_EVERY == 0:
                self.hub.publish("stats", await self._stats_doc(with_link=True))

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files("rxd").joinpath("web/index.html").read_text()
        return web.Response(text=html, content_type="text/html", headers=SECURITY_HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = resources.files("rxd").joinpath(f"web/{name}").read_text()
        return web.Response(text=body, content_type=STATIC[name], headers=SECURITY_HEADERS)

    async def schema(self, request: web.Request) -> web.Response:
        """The task schema's fields and values (each with "unknown"), for the page's slot dropdowns."""
        schema = self.core.engine.schemas.get(request.query.get("schema_id") or self.core.cfg.task.schema_id)
        fields = [
            {
                "name": f.name,
                "label": f.label,
                "description": f.description,
                "values": list(f.values),
                # What a filter may ask for, "unknown" last: a person whose field the transmitter could
                # not read.
                "searchable": [*(v for v in f.values if v != UNKNOWN), UNKNOWN],
            }
            for f in schema.fields
        ]
        return web.json_response(
            {"schema_id": schema.id, "record_bits": schema.record_bits, "fields": fields}
        )

    async def query_get(self, request: web.Request) -> web.Response:
        q = request.query
        body = {
            "text": q.get("q", ""),
            "top_k": q.get("top_k", 0),
            "min_probability": q.get("min_probability", 0),
        }
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
        allowed = {
            *("text", "filters", "top_k", "stream_id", "location_ids", "t0_s", "t1_s", "schema_id"),
            *("min_probability", "site_id"),
        }
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
            q = replace(q, min_probability=float(body.get("min_probability") or 0.0))
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"bad query value: {err}") from err
        site_id = str(body.get("site_id") or "")
        result = await (self.core.query_site(q, site_id) if site_id else self.core.query(q))
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
        return web.json_response(await self._stats_doc(with_link=False))

    async def link(self, request: web.Request) -> web.Response:
        """The link per site: rxd's receiving side, and txd's sending side asked over the backward channel."""
        return web.json_response(await self._stats_doc(with_link=True))

    async def _stats_doc(self, *, with_link: bool) -> dict[str, Any]:
        """Counts from the index (true after a restart), per stream with its link counters; with
        `with_link`, txd's state too (one Status call, answered or reported unreachable)."""
        doc = self.core.stats()
        link = self.core.receiver.streams
        record_bits = self.core.engine.schemas.get(self.core.cfg.task.schema_id).record_bits
        streams = self.tail.totals()
        if not self.tail.enabled:  # no per-stream totals from the index (PostgreSQL): the link's streams
            streams = [_unfollowed(sid) for sid in sorted(link)]
        for totals in streams:
            rx = link.get(totals["stream_id"])
            # The same counts as Receiver.Stats gives per stream, kept in the index (true after a restart).
            totals["link"] = None if rx is None else {**asdict(rx), "snr_db": _finite(rx.snr_db)}
        doc["streams"] = streams
        doc["live"] = self.tail.enabled
        doc["record_bits"] = record_bits
        doc["semantic_bits_indexed"] = doc["records_indexed"] * record_bits
        doc["info_bits_received"] = sum(s.info_bits for s in link.values())
        # Each site's streams, for the page's site filter (from the index: known after a restart too).
        doc["site_streams"] = {v.site_id: list(v.streams) for v in self.core.sites.snapshot() if v.site_id}
        if with_link:
            doc["sites"] = await self.core.site_status()
        return doc

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

    async def keyframe(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            stream_id, record_id = q["stream_id"], int(q["record_id"])
        except (KeyError, ValueError) as err:
            raise InvalidInput("keyframe needs stream_id and an integer record_id") from err
        if record_id < 1:
            raise InvalidInput(f"record_id must be >= 1, got {record_id}")
        image = await self.core.fetch_keyframe(stream_id, record_id)
        headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return web.Response(body=image.data, content_type=image.content_type, headers=headers)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: "stats" first, then "record" per record indexed and "stats" every few seconds.
        A page beyond the listener limit gets 429; one dropped for falling behind sees its stream end, and
        its EventSource reconnects."""
        queue = self.hub.subscribe()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        try:
            await response.prepare(request)
            await _send(response, "stats", await self._stats_doc(with_link=True))
            while self.hub.live(queue):
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if item is None:
                    break
                await _send(response, *item)
        except ConnectionResetError:
            log.debug("live view: a listener went away")
            return response
        finally:
            self.hub.unsubscribe(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    # allow_nan=False: a browser's JSON.parse rejects NaN, so one must never be sent.
    await response.write(f"event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n".encode())
