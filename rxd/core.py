"""The receiver's core, shared by its gRPC and HTTP faces: retrieval engine, link stats, clip fetches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

import grpc
from grpc import aio

from rxd.backhaul import Backhaul
from rxd.config import RxdConfig
from rxd.receiver import BurstReceiver
from rxd.retrieval.engine import Hit, Query, QueryResult, RetrievalEngine
from rxd.retrieval.parse import ParsedQuery
from rxd.retrieval.store import StoredRecord
from rxd.sites import SiteBook, SiteCounters, SiteView
from semcom.errors import (
    InvalidInput,
    NotFound,
    NotImplementedYet,
    Overloaded,
    PeerUnavailable,
    SemcomError,
    TimedOut,
)
from semcom.ids import check_site_id, check_stream_id
from semcom.pb.v1 import common_pb2, transmitter_pb2, transmitter_pb2_grpc

log = logging.getLogger(__name__)

_STATUS_ERRORS: dict[grpc.StatusCode, type[SemcomError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNIMPLEMENTED: NotImplementedYet,
}


@dataclass(frozen=True)
class ClipWindow:
    """Where a record's clip starts and ends relative to the record's time."""

    stream_id: str
    t0_s: float
    t1_s: float


@dataclass(frozen=True)
class KeyframeImage:
    """A record's keyframe thumbnail, as txd encoded it."""

    content_type: str
    width: int
    height: int
    data: bytes


class KeyframeCache:
    """Thumbnails already fetched, least recently used dropped first beyond `max_bytes`: a page that shows
    the same hits again costs the backward channel nothing."""

    def __init__(self, max_bytes: int = 16 * 1024**2) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[str, int], KeyframeImage] = OrderedDict()

    def get(self, key: tuple[str, int]) -> KeyframeImage | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[str, int], image: KeyframeImage) -> None:
        old = self._items.pop(key, None)
        self.bytes += len(image.data) - (len(old.data) if old else 0)
        self._items[key] = image
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= len(dropped.data)


class ReceiverCore:
    """Queries run on `executor` (query threads of their own, never the worker that indexes bursts), at
    most query.max_pending at once, each within query.timeout_s."""

    def __init__(
        self,
        cfg: RxdConfig,
        engine: RetrievalEngine,
        receiver: BurstReceiver,
        executor: Executor,
        transmitter: transmitter_pb2_grpc.TransmitterAsyncStub | None,
        backhaul: Backhaul | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.receiver = receiver
        self.executor = executor
        # transmitter.address's txd (None when not set): asked for streams of sites without a backhaul.
        self.transmitter = transmitter
        self.backhaul = backhaul or Backhaul(SiteBook())
        self.sites = self.backhaul.sites
        self.clip_bytes = 0
        self.queries_pending = 0
        self.queries_refused = 0
        self.queries_timed_out = 0
        self.keyframe_bytes = 0
        self.keyframes = KeyframeCache()

    def query_from(
        self,
        text: str,
        filters: Mapping[str, str | Sequence[str]],
        *,
        top_k: int = 0,
        stream_id: str = "",
        location_ids: Sequence[int] = (),
        t0_s: float = 0.0,
        t1_s: float = 0.0,
        schema_id: str = "",
    ) -> Query:
        """A query from outside, checked: bounded text, a valid stream id, finite times."""
        limit = self.cfg.query.max_text_chars
        if len(text) > limit:
            raise InvalidInput(f"query text has {len(text)} characters; query.max_text_chars is {limit}")
        if stream_id:
            check_stream_id(stream_id)
        if not (math.isfinite(t0_s) and math.isfinite(t1_s)):
            raise InvalidInput("t0_s and t1_s must be finite numbers")
        return Query(
            text=text,
            filters=dict(filters),
            schema_id=schema_id or self.cfg.task.schema_id,
            stream_id=stream_id,
            location_ids=tuple(location_ids),
            t0_s=t0_s,
            t1_s=t1_s,
            top_k=top_k or self.cfg.query.default_top_k,
        )

    async def query(self, q: Query) -> QueryResult:
        """Run `q` within the time budget; RESOURCE_EXHAUSTED when too many queries are in hand already.

        A query is in hand from its admission until its ranking thread is done, even when its caller was
        answered DEADLINE_EXCEEDED before: the bound holds the threads' backlog, not only the callers."""
        limit = self.cfg.query.max_pending
        if self.queries_pending >= limit:
            self.queries_refused += 1
            raise Overloaded(f"{limit} queries in progress (query.max_pending); retry shortly")
        self.queries_pending += 1
        handed = [False]  # set once a thread owns the query (and frees its place when done)
        try:
            return await asyncio.wait_for(self._query(q, handed), self.cfg.query.timeout_s)
        except TimeoutError as err:
            # The caller hears at once; the thread finishes its ranking and then frees the place.
            self.queries_timed_out += 1
            raise TimedOut(f"query took longer than query.timeout_s ({self.cfg.query.timeout_s} s)") from err
        finally:
            if not handed[0]:
                self.queries_pending -= 1

    async def query_site(self, q: Query, site_id: str) -> QueryResult:
        """`q` over the streams of one site (stream ids are unique across sites): one query per stream,
        merged in the engine's order (probability, tier, matched slots, similarity, most recent)."""
        check_site_id(site_id)
        streams = self.sites.streams_of(site_id)
        if q.stream_id:
            streams = [q.stream_id] if q.stream_id in streams else []
        if not streams:
            parsed = await self.query(replace(q, top_k=1))  # the query is still checked and parsed
            return QueryResult([], parsed.slots, f"site {site_id!r} has sent no stream matching the filters")
        results = [await self.query(replace(q, stream_id=s)) for s in streams]
        hits = sorted((h for r in results for h in r.hits), key=_hit_order)[: q.top_k]
        return QueryResult(hits, results[0].slots, results[0].note)

    async def _query(self, q: Query, handed: list[bool]) -> QueryResult:
        """The engine checks `q`; the text is parsed here first, so a model parser is awaited on the loop."""
        text = q.text.strip()
        # Parsed here: a model parser's request holds no worker that ingest needs.
        parsed = await self.engine.parser.aparse(text, self.engine.schemas.get(q.schema_id)) if text else None
        loop = asyncio.get_running_loop()
        handed[0] = True  # no await between this and the hand-over
        return await loop.run_in_executor(self.executor, self._ranked, loop, q, parsed)

    def _ranked(self, loop: asyncio.AbstractEventLoop, q: Query, parsed: ParsedQuery | None) -> QueryResult:
        try:
            return self.engine.query(q, parsed)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the daemon is stopping
                loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self.queries_pending -= 1

    async def get(self, stream_id: str, record_id: int) -> StoredRecord:
        check_stream_id(stream_id)
        found = await asyncio.get_running_loop().run_in_executor(
            self.executor, self.engine.get, stream_id, record_id
        )
        if found is None:
            raise NotFound(f"no record {record_id} in stream {stream_id!r}")
        return found

    def clip_window(self, stream_id: str, time_s: float) -> ClipWindow:
        return ClipWindow(
            stream_id, time_s - self.cfg.query.clip_before_s, time_s + self.cfg.query.clip_after_s
        )

    def stats(self) -> dict[str, Any]:
        """Records indexed come from the index, burst and loss counts from the sites' counters kept beside
        it (both true across restarts); backward-channel bytes (clips, keyframes) from this process."""
        sites = [v.counters for v in self.sites.snapshot()]
        return {
            "records_indexed": self.engine.count(),
            "records_failed": sum(c.records_failed for c in sites),
            "bursts_ok": sum(c.bursts_ok for c in sites),
            "bursts_failed": sum(c.bursts_failed for c in sites),
            "clip_bytes_fetched": self.clip_bytes,
            "queries_pending": self.queries_pending,
            "queries_refused": self.queries_refused,
            "queries_timed_out": self.queries_timed_out,
            "keyframe_bytes_fetched": self.keyframe_bytes,
            "index": self.engine.stats(),
        }

    def route(self, stream_id: str) -> str | None:
        """The site whose backhaul serves `stream_id`'s fetches, or None for transmitter.address's txd."""
        return self.backhaul.route(stream_id, fallback=self.transmitter is not None)

    async def site_status(self, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        """Every site: rxd's link state and counts (kept in the index), and txd's own state (MCS, the SNR it
        was told, records lost, the video its streams carried) asked over its backhaul, or over
        transmitter.address for a site without one."""
        sites = {v.site_id: v.to_json() for v in self.sites.snapshot()}
        for site_id, doc in sites.items():
            doc["reachable"] = False
            if self.backhaul.connected(site_id):
                try:
                    doc.update(_txd_json(await self.backhaul.status(site_id, timeout_s)), reachable=True)
                except SemcomError as err:
                    doc["error"] = str(err)
            else:
                doc["error"] = "no backhaul open"
        if self.transmitter is not None:
            address = self.cfg.transmitter.address
            try:
                st = await self.transmitter.Status(transmitter_pb2.StatusRequest(), timeout=timeout_s)
            except aio.AioRpcError as err:
                doc = sites.setdefault("", _empty_site(""))
                if not doc["reachable"]:
                    doc.update(address=address, error=err.code().name)
            else:
                doc = sites.setdefault(st.site_id, _empty_site(st.site_id))
                if not doc["reachable"]:
                    doc.update(_txd_json(st), address=address, reachable=True, error="")
                    doc["link_up"] = doc["link_up"] or st.link_up
        return [doc for _, doc in sorted(sites.items())]

    async def fetch_keyframe(self, stream_id: str, record_id: int) -> KeyframeImage:
        """A record's keyframe thumbnail from its site over the backhaul (or transmitter.address), cached
        here; its bytes are counted apart from the semantic link, as clips are."""
        check_stream_id(stream_id)
        key = (stream_id, record_id)
        cached = self.keyframes.get(key)
        if cached is not None:
            return cached
        request = transmitter_pb2.FetchKeyframeRequest(stream_id=stream_id, record_id=record_id)
        site = self.route(stream_id)
        timeout_s = self.cfg.transmitter.timeout_s
        if site is not None:
            reply = await self.backhaul.fetch_keyframe(site, request, timeout_s)
        else:
            assert self.transmitter is not None  # route() said so
            try:
                reply = await self.transmitter.FetchKeyframe(request, timeout=timeout_s)
            except aio.AioRpcError as err:
                raise _peer_error(self.cfg.transmitter.address, err) from err
        self.keyframe_bytes += len(reply.data)
        image = KeyframeImage(reply.content_type, reply.width, reply.height, reply.data)
        self.keyframes.put(key, image)
        return image

    async def fetch_clip(self, stream_id: str, t0_s: float, t1_s: float) -> AsyncIterator[bytes]:
        """The clip's MP4 bytes from its site, counted apart from the semantic link."""
        async for chunk in self.fetch_clip_chunks(
            common_pb2.FetchClipRequest(stream_id=stream_id, t0_s=t0_s, t1_s=t1_s)
        ):
            yield chunk.data

    async def fetch_clip_chunks(
        self, request: common_pb2.FetchClipRequest
    ) -> AsyncIterator[common_pb2.ClipChunk]:
        check_stream_id(request.stream_id)
        if not (math.isfinite(request.t0_s) and math.isfinite(request.t1_s)):
            raise InvalidInput("t0_s and t1_s must be finite numbers")
        site = self.route(request.stream_id)
        timeout_s = self.cfg.transmitter.timeout_s
        if site is not None:
            async for chunk in self.backhaul.fetch_clip(site, request, timeout_s):
                self.clip_bytes += len(chunk.data)
                yield chunk
            return
        assert self.transmitter is not None  # route() said so
        call = self.transmitter.FetchClip(request, timeout=timeout_s)
        try:
            async for chunk in call:
                self.clip_bytes += len(chunk.data)
                yield chunk
        except aio.AioRpcError as err:
            raise _peer_error(self.cfg.transmitter.address, err) from err


def _hit_order(hit: Hit) -> tuple[float, int, int, float, float]:
    """The engine's order of hits (see RetrievalEngine): the likeliest first, then all slots matched before
    some unknown before some contradicted, more slots matched, more similar, more recent."""
    tier = 2 if hit.contradicted_slots else 1 if hit.unknown_slots else 0
    return (-hit.probability, tier, -len(hit.matched_slots), -hit.score, -hit.record.time_s)


def _empty_site(site_id: str) -> dict[str, Any]:
    """A site rxd has no bursts from yet, known only from transmitter.address."""
    doc = SiteView(site_id, False, False, (), SiteCounters()).to_json()
    return {**doc, "reachable": False}


def _txd_json(st: transmitter_pb2.TransmitterStatus) -> dict[str, Any]:
    """What txd says of its side of the link."""
    return {
        "txd_link_up": st.link_up,
        "mcs": st.mcs,
        "snr_db": st.last_snr_db if math.isfinite(st.last_snr_db) else None,  # JSON has no NaN
        "records_lost": st.records_lost,
        "records_acked": st.records_acked,
        "records_queued": st.records_queued,
        "info_bits_sent": st.info_bits_sent,
        "video_bytes": sum(x.bytes_received for x in st.streams),
        "video_duration_s": sum(x.duration_s for x in st.streams),
    }


def _peer_error(address: str, err: aio.AioRpcError) -> SemcomError:
    """The transmitter's status is the answer; UNAVAILABLE means the backward channel is down, which fails
    this fetch only: rxd's own backends are alive, so it must not drain (not BackendDead)."""
    if err.code() == grpc.StatusCode.UNAVAILABLE:
        return PeerUnavailable(f"transmitter at {address} unreachable: {err.details()}")
    return _STATUS_ERRORS.get(err.code(), SemcomError)(err.details() or err.code().name)
