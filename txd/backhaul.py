"""The camera site's end of the backhaul: txd opens it towards rxd (directly or through channel-sim) and
answers rxd's clip, keyframe and status requests on it, so the operations centre needs no route to txd."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from grpc import aio

from semcom.errors import SemcomError, Unauthenticated
from semcom.ids import check_site_id
from semcom.link.site import backhaul_proof
from semcom.pb.v1 import common_pb2, sites_pb2, sites_pb2_grpc, transmitter_pb2
from txd.clips import read_chunks
from txd.core import TransmitterCore

log = logging.getLogger(__name__)

# Answers waiting for the stream: bounded, so a clip is read from disk no faster than it leaves.
_QUEUED_ANSWERS = 16


class BackhaulClient:
    """Keeps one backhaul open on txd's link channel (reconnecting with backoff) and answers each request
    in a task of its own, so a slow clip never holds a thumbnail back."""

    def __init__(
        self,
        core: TransmitterCore,
        channel: aio.Channel,
        site_id: str,
        status: Callable[[], transmitter_pb2.TransmitterStatus],
        *,
        key: bytes | None = None,
        reconnect_s: float = 0.5,
        reconnect_max_s: float = 5.0,
    ) -> None:
        self.core = core
        self.site_id = check_site_id(site_id)
        self.status = status
        self.key = key  # the site key (link.key_file): proves to rxd that this txd speaks for the site
        self.reconnect_s = reconnect_s
        self.reconnect_max_s = reconnect_max_s
        self._stub = sites_pb2_grpc.BackhaulStub(channel)
        self.requests_answered = 0

    async def run(self) -> None:
        """Until cancelled: open the backhaul, answer on it, reopen it when it breaks."""
        pause_s = self.reconnect_s
        while True:
            try:
                await self._session()
                pause_s = self.reconnect_s
            except aio.AioRpcError as err:
                log.warning("backhaul broke: %s %s", err.code().name, err.details())
                if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED):
                    pause_s = self.reconnect_max_s  # refused: retrying at once cannot help
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, self.reconnect_max_s)

    async def _session(self) -> None:
        out: asyncio.Queue[sites_pb2.SiteAnswer] = asyncio.Queue(_QUEUED_ANSWERS)

        async def answers() -> AsyncIterator[sites_pb2.SiteAnswer]:
            yield sites_pb2.SiteAnswer(hello=sites_pb2.SiteHello(site_id=self.site_id))
            while True:
                yield await out.get()

        call = self._stub.Open(answers(), wait_for_ready=True)
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for request in call:
                task = asyncio.create_task(self._answer(request, out))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            call.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _answer(self, request: sites_pb2.SiteRequest, out: asyncio.Queue[sites_pb2.SiteAnswer]) -> None:
        rid = request.request_id
        try:
            kind = request.WhichOneof("kind")
            if kind == "clip":
                await self._clip(rid, request.clip, out)
            elif kind == "keyframe":
                thumb = self.core.keyframe(request.keyframe.stream_id, request.keyframe.record_id)
                image = transmitter_pb2.KeyframeImage(
                    stream_id=request.keyframe.stream_id,
                    record_id=request.keyframe.record_id,
                    content_type=thumb.content_type,
                    width=thumb.width,
                    height=thumb.height,
                    data=thumb.data,
                )
                await out.put(sites_pb2.SiteAnswer(request_id=rid, keyframe=image))
            elif kind == "status":
                await out.put(sites_pb2.SiteAnswer(request_id=rid, status=self.status()))
            elif kind == "challenge":
                if self.key is None:
                    raise Unauthenticated("rxd asks for the site key's proof, and link.key_file is not set")
                proof = backhaul_proof(self.key, self.site_id, request.challenge)
                await out.put(sites_pb2.SiteAnswer(request_id=rid, proof=proof))
            else:
                raise NotImplementedError(f"request kind {kind!r}")
        except SemcomError as err:
            await out.put(_failure(rid, err.code.name, str(err)))
        except NotImplementedError as err:
            await out.put(_failure(rid, grpc.StatusCode.UNIMPLEMENTED.name, f"this txd cannot answer {err}"))
        except Exception as err:  # reported to rxd: one failed request must not end the backhaul
            log.exception("backhaul request %d failed", rid)
            await out.put(_failure(rid, grpc.StatusCode.INTERNAL.name, f"{type(err).__name__}: {err}"))
        self.requests_answered += 1
        await out.put(sites_pb2.SiteAnswer(request_id=rid, last=True))

    async def _clip(
        self, rid: int, req: common_pb2.FetchClipRequest, out: asyncio.Queue[sites_pb2.SiteAnswer]
    ) -> None:
        async with self.core.clip(req.stream_id, req.t0_s, req.t1_s) as path:
            size = path.stat().st_size
            first = True
            for data in read_chunks(path):
                chunk = common_pb2.ClipChunk(data=data)
                if first:
                    chunk.container, chunk.t0_s, chunk.t1_s, chunk.total_bytes = (
                        "mp4",
                        req.t0_s,
                        req.t1_s,
                        size,
                    )
                    first = False
                await out.put(sites_pb2.SiteAnswer(request_id=rid, clip=chunk))


def _failure(rid: int, code: str, message: str) -> sites_pb2.SiteAnswer:
    return sites_pb2.SiteAnswer(request_id=rid, failure=sites_pb2.SiteFailure(code=code, message=message))
