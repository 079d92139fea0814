"""The transmitter's side of the Link: moves bursts and feedback between gRPC and the sending state."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from grpc import aio
from prometheus_client import Counter, Gauge

from semcom.burst import build_burst, build_learned_burst, mcs_name, parse_phy
from semcom.codec.seal import Sealing, SiteKey, read_key
from semcom.errors import InvalidInput
from semcom.link.durable import SqliteOutbox
from semcom.link.messages import Feedback
from semcom.link.outbox import Mark, MemoryOutbox, Outbox
from semcom.link.sender import LinkStats, OutBurst, SenderConfig, SendState
from semcom.link.site import site_metadata
from semcom.pb.v1 import link_pb2, link_pb2_grpc
from semcom.phy.learned import LEARNED_PREFIX, load_model_any
from semcom.record import Record
from semcom.schema import SchemaRegistry
from semcom.server import channel_options
from semcom.tls import open_channel
from txd.config import LinkConfig

__all__ = ["LinkSender", "LinkStats", "sender_config"]

log = logging.getLogger(__name__)

BURSTS = Counter("semcom_txd_bursts_total", "Bursts sent, by outcome", ["outcome"])
RECORDS = Counter("semcom_txd_records_total", "Records, by outcome", ["outcome"])
LINK_BITS = Counter("semcom_link_bits_total", "Bits put on the link by txd", ["kind"])
QUEUED = Gauge("semcom_txd_records_queued", "Records waiting for an acknowledgement")


class _Prometheus:
    def burst(self, outcome: str) -> None:
        BURSTS.labels(outcome).inc()

    def records(self, outcome: str, count: int) -> None:
        RECORDS.labels(outcome).inc(count)

    def queued(self, count: int) -> None:
        QUEUED.set(count)


def sender_config(cfg: LinkConfig) -> SenderConfig:
    return SenderConfig(
        window=cfg.window,
        max_attempts=cfg.max_attempts,
        max_records_per_burst=cfg.max_records_per_burst,
        max_queued_records=cfg.max_queued_records,
        batch_delay_s=cfg.batch_delay_s,
        reconnect_s=cfg.reconnect_s,
        reconnect_max_s=cfg.reconnect_max_s,
        ack_timeout_s=cfg.ack_timeout_s,
        retry_later_s=cfg.retry_later_s,
        adaptive_mcs=cfg.adaptive_mcs,
        mcs_margin_db=cfg.mcs_margin_db,
    )


def open_outbox(cfg: LinkConfig, state_dir: Path | None) -> Outbox:
    """The outbox `cfg` names: SQLite at link.outbox_path (default `state_dir`/outbox.db), or in memory
    (':memory:', or no path and no `state_dir`: a LinkSender built outside txd, as in tests)."""
    path = cfg.outbox_path or (state_dir / "outbox.db" if state_dir is not None else None)
    if path is None or str(path) == ":memory:":
        return MemoryOutbox()
    return SqliteOutbox(path)


def sealing(cfg: LinkConfig) -> Sealing | None:
    """How frames are sealed: under the key in link.key_file, or not at all (keyless mode)."""
    if cfg.key_file is None:
        return None
    return Sealing(SiteKey(read_key(cfg.key_file)), tag_bytes=cfg.tag_bits // 8, encrypt=cfg.encrypt)


class LinkSender:
    """Owns the one long-lived Link.Transmit stream to the upstream peer; the sending state decides what
    goes on it and when."""

    def __init__(
        self,
        cfg: LinkConfig,
        schemas: SchemaRegistry,
        *,
        schema_id: str,
        max_message_bytes: int,
        on_task: Callable[[link_pb2.TaskRequirement], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        state_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = open_outbox(cfg, state_dir)
        phy = parse_phy(cfg.mcs)
        # Learned mode: frames of the model's schema go out as learned bursts, their headers on the state's
        # (digital) MCS; frames of another schema (a task the receiver asked for later) go out digitally.
        self.learned = load_model_any(phy.learned, schemas) if phy.learned is not None else None
        if self.learned is not None and cfg.key_file is not None:
            raise InvalidInput(f"link.mcs {cfg.mcs!r} cannot seal its field values: unset link.key_file")
        self._digital_schemas: set[str] = set()
        self.state = SendState(
            sender_config(cfg),
            schemas,
            schema_id=schema_id,
            mcs=phy.mcs,
            outbox=self.outbox,
            metrics=_Prometheus(),
            rng=random.Random(),
            sealing=sealing(cfg),
        )
        self._on_task = on_task
        self._clock = clock
        self._channel = open_channel(
            cfg.upstream,
            cfg.tls,
            options=[
                *channel_options(max_message_bytes),
                # Reconnect promptly after an outage instead of gRPC's default backoff of up to 120 s.
                ("grpc.initial_reconnect_backoff_ms", int(cfg.reconnect_s * 1000)),
                ("grpc.max_reconnect_backoff_ms", int(cfg.reconnect_max_s * 1000)),
                # HTTP/2 pings find a dead or frozen peer even while no burst waits for an answer.
                ("grpc.keepalive_time_ms", int(cfg.keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
                # What grpcio 1.85 enforces: without it an unanswered keepalive ping waited ~30 s or more.
                ("grpc.http2.ping_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        self._stub = link_pb2_grpc.LinkStub(self._channel)
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._session_id = 0

    @property
    def stats(self) -> LinkStats:
        return self.state.stats

    @property
    def channel(self) -> aio.Channel:
        """The channel to the upstream peer, which the backhaul shares (one channel per peer)."""
        return self._channel

    @property
    def mcs(self) -> str:
        if self.learned is not None:
            return f"{LEARNED_PREFIX}{self.learned.name}"  # headers on mcs_name(self.state.mcs)
        return mcs_name(self.state.mcs)

    # -- called by the services ---------------------------------------------------------------------------
    def next_record_id(self, stream_id: str) -> int:
        """The id the stream's next record takes; never one given before, not even before a restart."""
        return self.outbox.next_record_id(stream_id)

    def emitted(self, upload_key: str) -> list[int]:
        """Ids of the records an earlier analysis of this upload emitted, in order (see Outbox.emitted)."""
        return self.outbox.emitted(upload_key)

    def upload_start_s(self, upload_key: str, start_time_s: float) -> float:
        """The start time this upload was first analysed with."""
        return self.outbox.upload_start_s(upload_key, start_time_s)

    def forget_upload(self, upload_key: str) -> None:
        """The upload completed: the same video uploaded again is analysed and sent as a new one."""
        self.outbox.forget_upload(upload_key)

    def submit(self, record: Record, mark: Mark | None = None) -> None:
        """Queue one record for the link; Overloaded when too many are already waiting. `mark`: which
        record of which upload it is, kept with it (see Outbox.emitted)."""
        self.state.submit(record, self._clock(), mark)
        self._wake.set()

    async def room(self) -> None:
        """Wait until the queue takes another record: backpressure for the pipelines txd runs itself, which
        slow down (files) or skip frames (live sources) instead of failing while the link is backed up."""
        async with self._changed:
            await self._changed.wait_for(self.state.has_room)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every queued record is acknowledged (or lost); False on timeout."""
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: self.stats.records_queued == 0)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self._channel.close(None)
        close = getattr(self.outbox, "close", None)
        if close is not None:
            close()

    # -- background work ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Keep the link up until cancelled; each session sends what the state hands out."""
        while True:
            self._session_id += 1
            try:
                await self._session(self._session_id)
            except aio.AioRpcError as err:
                log.warning("link to %s broke: %s %s", self.cfg.upstream, err.code().name, err.details())
            # The broken call's request generator may still be parked in _bursts: from now on it takes
            # nothing (a burst written into a finished call is gone until the next break).
            self._session_id += 1
            self.state.on_disconnect(self._clock())
            self._wake.set()  # ... and returns instead of waiting
            await asyncio.sleep(max(0.0, self.state.reconnect_due_s - self._clock()))

    async def _session(self, session_id: int) -> None:
        call = self._stub.Transmit(
            self._bursts(session_id, lambda: call.cancel()),
            wait_for_ready=True,
            metadata=site_metadata(self.cfg.site_id),  # the handshake: rxd checks it before any burst
        )
        try:
            await self._read(call)
        except asyncio.CancelledError:
            if not self.state.peer_silent or not call.cancelled():
                raise  # the task itself is being cancelled
            log.warning("link to %s: the receiver is silent; reconnecting", self.cfg.upstream)

    async def _read(self, call: aio.StreamStreamCall[link_pb2.Burst, link_pb2.Feedback]) -> None:
        async for msg in call:
            was_up = self.stats.link_up
            self.state.on_feedback(Feedback.from_pb(msg), self._clock())
            if not was_up:
                log.info("link to %s up", self.cfg.upstream)
            if msg.HasField("task") and msg.task.schema_id and self._on_task is not None:
                self._on_task(msg.task)
            self._wake.set()  # a settled burst may let the next one into the window
            async with self._changed:
                self._changed.notify_all()

    async def _bursts(self, session_id: int, hang_up: Callable[[], object]) -> AsyncIterator[link_pb2.Burst]:
        # Bursts are taken only for the session that is current: one broken before may still be parked here.
        while session_id == self._session_id:
            self._wake.clear()
            out = self.state.next_burst(self._clock())
            if self.state.peer_silent:
                hang_up()  # a frozen peer keeps the connection open: only breaking it gets a fresh one
                return
            if out is not None:
                yield self._to_pb(out)
                continue
            due_s = self.state.next_wake_s()
            timeout_s = None if due_s is None else max(0.0, due_s - self._clock())
            try:
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _to_pb(self, out: OutBurst) -> link_pb2.Burst:
        burst = self._learned_burst(out) if self.learned is not None else None
        burst = burst or build_burst(
            out.frame,
            stream_id=out.stream_id,
            sequence=out.sequence,
            schema_id=out.schema_id,
            kind=link_pb2.PAYLOAD_KIND_RECORDS,
            record_count=out.record_count,
            mcs=out.mcs,
            pilot_count=self.cfg.pilot_symbols,
            attempt=out.attempt,
        )
        h = burst.header
        h.site_id = self.cfg.site_id
        h.epoch = out.epoch
        # The payload holds every symbol on the air, pilots included.
        symbols = 0 if h.modulation == link_pb2.MODULATION_NONE else burst.payload.shape[0]
        self.stats.channel_symbols_sent += symbols
        LINK_BITS.labels("info").inc(h.info_bits)
        LINK_BITS.labels("coded").inc(h.coded_bits)
        log.debug(
            "burst stream_id=%s sequence=%d records=%d attempt=%d",
            h.stream_id,
            h.sequence,
            h.record_count,
            h.attempt,
        )
        return burst

    def _learned_burst(self, out: OutBurst) -> link_pb2.Burst | None:
        """The learned-mode burst of `out`, or None where it goes out digitally (another schema)."""
        model = self.learned
        assert model is not None
        if out.schema_id != model.schema_id or out.mcs is None:
            if out.schema_id not in self._digital_schemas:
                self._digital_schemas.add(out.schema_id)
                log.warning(
                    "learned model %s is for %s: %s frames go out digitally", model.name, model.schema_id,
                    out.schema_id,
                )  # fmt: skip
            return None
        burst = build_learned_burst(
            out.frame,
            model,
            self.state.schemas.get(out.schema_id),
            stream_id=out.stream_id,
            sequence=out.sequence,
            record_count=out.record_count,
            header_mcs=out.mcs,
            pilot_count=self.cfg.pilot_symbols,
            attempt=out.attempt,
        )
        # Information bits are those the digital phy carries (the header frame's), as rxd counts them.
        self.stats.info_bits_sent += burst.header.info_bits - 8 * len(out.frame)
        return burst
