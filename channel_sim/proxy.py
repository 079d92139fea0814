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
from semcom.pb.v1 import link_pb2, link_pb2_grpc
from semcom.phy.modem import BITS_PER_SYMBOL

log = logging.getLogger(__name__)

BURSTS = Counter("semcom_channel_bursts_total", "Bursts seen by the channel, by outcome", ["outcome"])
AIRTIME = Counter("semcom_channel_airtime_seconds_total", "Simulated airtime of forwarded bursts")
SYMBOLS = Counter("semcom_channel_symbols_total", "Symbols through the channel, by outcome", ["outcome"])


@dataclass
class ChannelStats:
    bursts_forwarded: int = 0
    bursts_dropped: int = 0
    symbols_forwarded: int = 0
    symbols_erased: int = 0
    airtime_s: float = 0.0
    feedback_forwarded: int = 0


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
        call = self.upstream.Transmit(self._impaired(request_iterator), wait_for_ready=True)
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
