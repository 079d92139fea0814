"""The receiving end of the backhaul: each site's txd opens one, and rxd sends it clip, keyframe and status
requests over it, so the operations centre reaches no camera. Answers come back on the same stream."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import AsyncIterator, Mapping

import grpc
from grpc import aio

from rxd.sites import SiteBook, SiteView
from semcom.codec import SiteKey
from semcom.errors import (
    InvalidInput,
    NotFound,
    NotImplementedYet,
    PeerUnavailable,
    SemcomError,
    SiteNotConnected,
    Unauthenticated,
)
from semcom.ids import check_site_id
from semcom.link.site import backhaul_proof
from semcom.pb.v1 import common_pb2, sites_pb2, sites_pb2_grpc, transmitter_pb2

log = logging.getLogger(__name__)

Context = aio.ServicerContext[object, object]
PROOF_TIMEOUT_S = 10.0  # how long a site may take to answer the backhaul's key challenge
READER_WAIT_S = 1.0  # how long a closing backhaul waits for its reader task to end

_FAILURES: dict[str, type[SemcomError]] = {
    grpc.StatusCode.INVALID_ARGUMENT.name: InvalidInput,
    grpc.StatusCode.NOT_FOUND.name: NotFound,
    grpc.StatusCode.UNIMPLEMENTED.name: NotImplementedYet,
    grpc.StatusCode.UNAVAILABLE.name: PeerUnavailable,
}


class SiteConnection:
    """One open backhaul: requests waiting to go out, and the answers of each request in flight."""

    def __init__(self, site_id: str) -> None:
        self.site_id = site_id
        self.requests: asyncio.Queue[sites_pb2.SiteRequest | None] = asyncio.Queue()
        self._answers: dict[int, asyncio.Queue[sites_pb2.SiteAnswer | None]] = {}
        self._next_id = 0
        self.closed = False

    def ask(self, request: sites_pb2.SiteRequest) -> tuple[int, asyncio.Queue[sites_pb2.SiteAnswer | None]]:
        self._next_id += 1
        request.request_id = self._next_id
        answers: asyncio.Queue[sites_pb2.SiteAnswer | None] = asyncio.Queue()
        self._answers[self._next_id] = answers
        self.requests.put_nowait(request)
        return self._next_id, answers

    def done(self, request_id: int) -> None:
        self._answers.pop(request_id, None)

    def deliver(self, answer: sites_pb2.SiteAnswer) -> None:
        """Hand an answer to its request; one for a request given up on (timed out) is dropped."""
        answers = self._answers.get(answer.request_id)
        if answers is not None:
            answers.put_nowait(answer)

    def close(self) -> None:
        """The connection ended: every request in flight hears so, and the sending side stops (once)."""
        if self.closed:
            return
        self.closed = True
        for answers in self._answers.values():
            answers.put_nowait(None)
        self.requests.put_nowait(None)


class Backhaul:
    """The open backhaul of each site, and requests routed over them (each within `timeout_s`)."""

    def __init__(self, sites: SiteBook) -> None:
        self.sites = sites
        self._open: dict[str, SiteConnection] = {}

    def connected(self, site_id: str) -> bool:
        return site_id in self._open

    def route(self, stream_id: str, *, fallback: bool) -> str | None:
        """The site whose backhaul serves `stream_id`, or None to ask the `fallback` (transmitter.address).

        Without a fallback: NotFound when no site has sent the stream, SiteNotConnected when its site has
        no backhaul open now."""
        site = self.sites.site_of(stream_id)
        if site is not None and self.connected(site):
            return site
        if fallback:
            return None
        if site is None:
            raise NotFound(f"no site has sent stream {stream_id!r} to this receiver")
        raise SiteNotConnected(
            f"stream {stream_id!r} comes from site {site or '(unnamed)'!r}, which has no backhaul open now "
            "(its txd is down or cut off, or runs without link.site_id) and transmitter.address is not set"
        )

    def attach(self, site_id: str) -> SiteConnection:
        """A new backhaul for `site_id`; one the site opened before is closed (txd reconnected before rxd
        noticed the old connection had died: the newest is the live one)."""
        old = self._open.pop(site_id, None)
        if old is not None:
            log.info("site %r opened a new backhaul; closing the older one", site_id)
            old.close()
        conn = self._open[site_id] = SiteConnection(site_id)
        self.sites.set_backhaul(site_id, True)
        log.info("backhaul of site %r up", site_id)
        return conn

    def detach(self, conn: SiteConnection) -> None:
        conn.close()
        if self._open.get(conn.site_id) is conn:
            del self._open[conn.site_id]
            self.sites.set_backhaul(conn.site_id, False)
            log.info("backhaul of site %r down", conn.site_id)

    async def _answers(
        self, site_id: str, request: sites_pb2.SiteRequest, timeout_s: float
    ) -> AsyncIterator[sites_pb2.SiteAnswer]:
        conn = self._open.get(site_id)
        if conn is None:
            raise SiteNotConnected(f"site {site_id!r} has no backhaul open (its txd is down or unreachable)")
        request_id, answers = conn.ask(request)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    answer = await answers.get()
                    if answer is None:
                        raise SiteNotConnected(f"the backhaul of site {site_id!r} closed during the request")
                    if answer.WhichOneof("kind") == "failure":
                        f = answer.failure
                        raise _FAILURES.get(f.code, SemcomError)(f.message or f.code)
                    if answer.WhichOneof("kind") is not None:
                        yield answer
                    if answer.last:
                        return
        except TimeoutError as err:
            raise PeerUnavailable(f"site {site_id!r} did not answer within {timeout_s:g} s") from err
        finally:
            conn.done(request_id)

    async def fetch_clip(
        self, site_id: str, request: common_pb2.FetchClipRequest, timeout_s: float
    ) -> AsyncIterator[common_pb2.ClipChunk]:
        async for answer in self._answers(site_id, sites_pb2.SiteRequest(clip=request), timeout_s):
            yield answer.clip

    async def fetch_keyframe(
        self, site_id: str, request: transmitter_pb2.FetchKeyframeRequest, timeout_s: float
    ) -> transmitter_pb2.KeyframeImage:
        async for answer in self._answers(site_id, sites_pb2.SiteRequest(keyframe=request), timeout_s):
            if answer.HasField("keyframe"):
                return answer.keyframe
        raise NotFound(f"site {site_id!r} sent no keyframe")

    async def status(self, site_id: str, timeout_s: float) -> transmitter_pb2.TransmitterStatus:
        request = sites_pb2.SiteRequest(status=transmitter_pb2.StatusRequest())
        async for answer in self._answers(site_id, request, timeout_s):
            if answer.HasField("status"):
                return answer.status
        raise PeerUnavailable(f"site {site_id!r} sent no status")


class BackhaulService(sites_pb2_grpc.BackhaulServicer):
    """txd's hello first (the site id, checked), then its answers in, rxd's requests out."""

    def __init__(self, backhaul: Backhaul, keys: Mapping[str, SiteKey] | None = None) -> None:
        self.backhaul = backhaul
        # As for the link's frames: with keys, a site proves it holds its key before it serves any fetch.
        self.keys = dict(keys or {})

    async def Open(
        self, request_iterator: AsyncIterator[sites_pb2.SiteAnswer], context: Context
    ) -> AsyncIterator[sites_pb2.SiteRequest]:
        answers = aiter(request_iterator)
        first = await anext(answers, None)
        if first is None or first.WhichOneof("kind") != "hello":
            raise InvalidInput("the backhaul's first message must be the site's hello")
        site_id = check_site_id(first.hello.site_id)  # "" too: clips are routed by site, and "" names none
        if self.keys:
            if site_id not in self.keys:
                raise Unauthenticated(f"site {site_id!r} holds no key here (link.site_keys)")
            challenge = os.urandom(16)
            yield sites_pb2.SiteRequest(request_id=0, challenge=challenge)
            try:
                async with asyncio.timeout(PROOF_TIMEOUT_S):
                    reply = await anext(answers, None)
            except TimeoutError as err:
                raise Unauthenticated(f"site {site_id!r} sent no proof within {PROOF_TIMEOUT_S:g} s") from err
            expected = backhaul_proof(self.keys[site_id].key, site_id, challenge)
            if reply is None or not hmac.compare_digest(reply.proof, expected):
                raise Unauthenticated(f"site {site_id!r} did not prove it holds its key (a wrong key file?)")
        conn = self.backhaul.attach(site_id)

        # However the call ends (the site hung up, a proxy cancelled it, the server stops), the site's
        # fetches hear so at once and the backhaul counts down: not only when this handler is cancelled.
        def ended(_: Context) -> None:
            conn.close()

        context.add_done_callback(ended)  # type: ignore[arg-type]  # the stubs want a class; any callable works
        reader = asyncio.create_task(self._read(answers, conn), name=f"rxd-backhaul-{site_id}")
        try:
            while (request := await conn.requests.get()) is not None:
                yield request
        finally:
            self.backhaul.detach(conn)  # first: nothing below may keep the site counted as connected
            reader.cancel()
            # A read of a call the peer cancelled may not end at once: wait a moment, never forever.
            await asyncio.wait({reader}, timeout=READER_WAIT_S)

    async def _read(self, answers: AsyncIterator[sites_pb2.SiteAnswer], conn: SiteConnection) -> None:
        try:
            async for answer in answers:
                conn.deliver(answer)
        except aio.AioRpcError as err:
            log.info("backhaul of site %r broke: %s", conn.site_id, err.code().name)
        finally:
            conn.close()


class SitesService(sites_pb2_grpc.SitesServicer):
    def __init__(self, sites: SiteBook) -> None:
        self.sites = sites

    async def List(self, request: sites_pb2.ListSitesRequest, context: Context) -> sites_pb2.ListSitesReply:
        return sites_pb2.ListSitesReply(sites=[site_info(s) for s in self.sites.snapshot()])


def site_info(s: SiteView) -> sites_pb2.SiteInfo:
    c = s.counters
    return sites_pb2.SiteInfo(
        site_id=s.site_id,
        link_up=s.link_up,
        backhaul_up=s.backhaul,
        stream_ids=s.streams,
        bursts_ok=c.bursts_ok,
        bursts_failed=c.bursts_failed,
        records_indexed=c.records_indexed,
        records_failed=c.records_failed,
        info_bits=c.info_bits,
        payload_bytes=c.payload_bytes,
        last_record_at_s=c.last_record_at_s,
        last_seen_s=c.last_seen_s,
    )
