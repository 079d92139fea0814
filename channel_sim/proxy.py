"""The Link proxy: forwards each burst upstream through the channel chain, and feedback back untouched."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from grpc import aio
from prometheus_client import Counter

from channel_sim.config import ChannelConfig
from channel_sim.models import ChannelBurst, ChannelChain
from channel_sim.models.chain import StreamChannel
from semcom.burst import burst_mcs, payload_symbols
from semcom.errors import DecodeError
from semcom.link.site import SITE_METADATA_KEY
from semcom.pb.v1 import link_pb2, link_pb2_grpc, sites_pb2, sites_pb2_grpc
from semcom.phy.modem import BITS_PER_SYMBOL

log = logging.getLogger(__name__)

BURSTS = Counter("semcom_channel_bursts_total", "Bursts seen by the channel, by outcome", ["outcome"])
AIRTIME = Counter("semcom_channel_airtime_seconds_total", "Simulated airtime of forwarded bursts")
SYMBOLS = Counter("semcom_channel_symbols_total", "Symbols through the channel, by outcome", ["outcome"])
BACKHAUL_BYTES = Counter(
    "semcom_channel_backhaul_bytes_total",
    "Bytes of the sites' backhaul answers (clips, keyframes) passed through",
)


def _site_handshake(context: aio.ServicerContext[object, object]) -> tuple[tuple[str, str], ...]:
    """The site id txd announced, passed on as it came: rxd, not the channel, judges it."""
    return tuple(
        (k, v)
        for k, v in context.invocation_metadata() or ()
        if k == SITE_METADATA_KEY and isinstance(v, str)
    )


@dataclass
class ChannelStats:
    bursts_forwarded: int = 0
    bursts_dropped: int = 0
    symbols_forwarded: int = 0
    symbols_erased: int = 0
    airtime_s: float = 0.0
    feedback_forwarded: int = 0
    backhaul_bytes: int = 0  # answers of the sites (clips, keyframes, status), passed through unimpaired
    backhaul_requests: int = 0


class ChannelState:
    """The current chain and the per-stream model instances built from it (rebuilt when the chain changes)."""

    def __init__(self, cfg: ChannelConfig) -> None:
        self.cfg = cfg
        self.chain = ChannelChain(cfg.models, cfg.seed)
        self._streams: dict[str, StreamChannel] = {}
        self._retired: list[StreamChannel] = []  # streams of replaced chains, closed at shutdown
        self.stats = ChannelStats()
        self._air_free_at = 0.0  # monotonic time at which the air carries no burst any more

    def air_wait(self, airtime_s: float, now: float | None = None) -> float:
        """Seconds until a burst of `airtime_s` handed over `now` has left the air: it waits for the bursts
        before it (one at a time, whatever their stream), then takes its own airtime."""
        now = time.monotonic() if now is None else now
        start = max(now, self._air_free_at)
        self._air_free_at = start + airtime_s
        return self._air_free_at - now

    def replace(self, chain: ChannelChain) -> None:
        self.chain = chain
        self._retired += self._streams.values()
        self._streams.clear()
        log.info("channel chain now %s (seed %d)", chain.describe(), chain.seed)

    async def aclose(self) -> None:
        """Close every stream's models, those of replaced chains included."""
        channels, self._retired = [*self._retired, *self._streams.values()], []
        self._streams.clear()
        for channel in channels:
            await channel.aclose()

    def for_stream(self, stream_id: str) -> StreamChannel:
        if stream_id not in self._streams:
            self._streams[stream_id] = self.chain.for_stream(stream_id)
        return self._streams[stream_id]


class LinkProxy(link_pb2_grpc.LinkServicer):
    def __init__(
        self, state: ChannelState, upstream: link_pb2_grpc.LinkAsyncStub, upstream_address: str
    ) -> None:
        self.state = state
        self.upstream = upstream
        self.upstream_address = upstream_address

    async def Transmit(
        self, request_iterator: AsyncIterator[link_pb2.Burst], context: aio.ServicerContext[object, object]
    ) -> AsyncIterator[link_pb2.Feedback]:
        call = self.upstream.Transmit(
            self._impaired(request_iterator), wait_for_ready=True, metadata=_site_handshake(context)
        )
        try:
            async for fb in call:
                self.state.stats.feedback_forwarded += 1
                yield fb
        except aio.AioRpcError as err:
            log.warning("upstream %s: %s %s", self.upstream_address, err.code().name, err.details())
            await context.abort(err.code(), f"upstream {self.upstream_address}: {err.details()}")

    async def _impaired(self, bursts: AsyncIterator[link_pb2.Burst]) -> AsyncIterator[link_pb2.Burst]:
        async for burst in bursts:
            airtime_before_s = burst.trace.airtime_s
            delay_s = self.impair(burst)
            wait_s = 0.0
            if self.state.cfg.pace_airtime:
                wait_s += self.state.air_wait(burst.trace.airtime_s - airtime_before_s)
            if self.state.cfg.realtime and delay_s > 0:
                wait_s += delay_s
            if wait_s > 0:
                # Holding the burst here holds the sender's stream too (gRPC flow control, then txd's window).
                await asyncio.sleep(wait_s)
            yield burst

    def impair(self, burst: link_pb2.Burst) -> float:
        """Apply the stream's channel to the burst in place; returns the simulated delay in seconds."""
        h = burst.header
        try:
            mcs = burst_mcs(h)
            symbols = None if mcs is None else payload_symbols(burst.payload).copy()
        except DecodeError as err:
            # Not ours to judge: the receiver rejects it with a clear status and the sender counts it.
            log.warning(
                "forwarding malformed burst stream_id=%s sequence=%d as is: %s", h.stream_id, h.sequence, err
            )
            BURSTS.labels("malformed").inc()
            return 0.0
        if mcs is None or symbols is None:
            bits = 8 * len(burst.payload.data)
        else:
            bits = symbols.size * BITS_PER_SYMBOL[mcs.modulation]
        out = self.state.for_stream(h.stream_id).apply(ChannelBurst(symbols=symbols, payload_bits=bits))
        trace = burst.trace
        trace.airtime_s += out.airtime_s
        trace.delay_s += out.delay_s
        trace.erased_symbols += out.erased
        trace.chain = self.state.chain.describe()
        stats = self.state.stats
        stats.airtime_s += out.airtime_s
        AIRTIME.inc(out.airtime_s)
        if out.dropped:
            trace.dropped = True
            burst.payload.data = b""
            stats.bursts_dropped += 1
            BURSTS.labels("dropped").inc()
            return out.delay_s
        if out.symbols is not None:
            burst.payload.data = np.ascontiguousarray(out.symbols, dtype=np.complex64).tobytes()
            stats.symbols_forwarded += out.symbols.size
            stats.symbols_erased += out.erased
            SYMBOLS.labels("forwarded").inc(out.symbols.size)
            SYMBOLS.labels("erased").inc(out.erased)
        if self.state.cfg.trace_gains and out.gains is not None:
            gains = np.asarray(out.gains, dtype=np.complex64)
            trace.gains.extend(np.stack([gains.real, gains.imag], axis=-1).ravel().tolist())
        stats.bursts_forwarded += 1
        BURSTS.labels("forwarded").inc()
        return out.delay_s if math.isfinite(out.delay_s) else 0.0


class BackhaulProxy(sites_pb2_grpc.BackhaulServicer):
    """Passes the backhaul through untouched: clips and keyframes are ordinary traffic on the backward
    channel, not the semantic link, so the channel chain never impairs them; their bytes are counted."""

    def __init__(
        self, state: ChannelState, upstream: sites_pb2_grpc.BackhaulAsyncStub, upstream_address: str
    ) -> None:
        self.state = state
        self.upstream = upstream
        self.upstream_address = upstream_address

    async def Open(
        self,
        request_iterator: AsyncIterator[sites_pb2.SiteAnswer],
        context: aio.ServicerContext[object, object],
    ) -> AsyncIterator[sites_pb2.SiteRequest]:
        call = self.upstream.Open(self._counted(request_iterator), wait_for_ready=True)
        try:
            async for request in call:
                self.state.stats.backhaul_requests += 1
                yield request
        except aio.AioRpcError as err:
            await context.abort(err.code(), f"upstream {self.upstream_address}: {err.details()}")
        finally:
            call.cancel()  # the site hung up: so does the proxy, and rxd sees the backhaul down at once

    async def _counted(
        self, answers: AsyncIterator[sites_pb2.SiteAnswer]
    ) -> AsyncIterator[sites_pb2.SiteAnswer]:
        async for answer in answers:
            size = answer.ByteSize()
            self.state.stats.backhaul_bytes += size
            BACKHAUL_BYTES.inc(size)
            yield answer
