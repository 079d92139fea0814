"""The transmitter's side of the Link: frames queued records into bursts, sends them, resends until acked."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from grpc import aio
from prometheus_client import Counter, Gauge

from semcom.burst import build_burst, mcs_name, parse_mcs
from semcom.codec import encode_records, split_frames
from semcom.errors import Overloaded
from semcom.pb.v1 import link_pb2, link_pb2_grpc
from semcom.phy.mcs import Mcs, select_mcs
from semcom.record import Record
from semcom.schema import SchemaRegistry
from semcom.server import channel_options
from txd.config import LinkConfig

log = logging.getLogger(__name__)

BURSTS = Counter("semcom_txd_bursts_total", "Bursts sent, by outcome", ["outcome"])
RECORDS = Counter("semcom_txd_records_total", "Records, by outcome", ["outcome"])
LINK_BITS = Counter("semcom_link_bits_total", "Bits put on the link by txd", ["kind"])
QUEUED = Gauge("semcom_txd_records_queued", "Records waiting for an acknowledgement")


@dataclass
class _Pending:
    """A framed burst waiting for its acknowledgement."""

    stream_id: str
    sequence: int
    schema_id: str
    frame: bytes
    record_count: int
    attempt: int = 0


@dataclass
class LinkStats:
    records_queued: int = 0
    records_acked: int = 0
    records_lost: int = 0
    bursts_sent: int = 0
    info_bits_sent: int = 0
    channel_symbols_sent: int = 0
    last_snr_db: float = math.nan
    link_up: bool = False
    task_schema_id: str = ""
    per_stream_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class LinkSender:
    """Owns the one long-lived Link.Transmit stream to the upstream peer and every unacknowledged burst."""

    def __init__(
        self,
        cfg: LinkConfig,
        schemas: SchemaRegistry,
        *,
        schema_id: str,
        max_message_bytes: int,
        on_task: Callable[[link_pb2.TaskRequirement], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.schemas = schemas
        self.stats = LinkStats(task_schema_id=schema_id)
        self._mcs: Mcs | None = parse_mcs(cfg.mcs)
        self._on_task = on_task
        self._channel = aio.insecure_channel(
            cfg.upstream,
            options=[
                *channel_options(max_message_bytes),
                # Reconnect promptly after an outage instead of gRPC's default backoff of up to 120 s.
                ("grpc.initial_reconnect_backoff_ms", int(cfg.reconnect_s * 1000)),
                ("grpc.max_reconnect_backoff_ms", int(cfg.reconnect_max_s * 1000)),
            ],
        )
        self._stub = link_pb2_grpc.LinkStub(self._channel)
        self._records: dict[str, list[Record]] = defaultdict(list)
        self._unacked: dict[tuple[str, int], _Pending] = {}
        self._resend: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._sequence: dict[str, int] = defaultdict(int)
        self._window = asyncio.Semaphore(cfg.window)
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._closing = False

    # -- called by the services ---------------------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue one record for the link; Overloaded when too many are already waiting."""
        if self.stats.records_queued >= self.cfg.max_queued_records:
            raise Overloaded(f"{self.stats.records_queued} records already queued for the link; retry later")
        self._records[record.stream_id].append(record)
        self.stats.records_queued += 1
        QUEUED.set(self.stats.records_queued)
        # The framer waits batch_delay_s after this wake-up, so records arriving meanwhile share the burst.
        self._wake.set()

    async def room(self) -> None:
        """Wait until the queue takes another record: backpressure for the pipelines txd runs itself, which
        slow down (files) or skip frames (live sources) instead of failing while the link is backed up."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.stats.records_queued < self.cfg.max_queued_records)

    @property
    def mcs(self) -> str:
        return mcs_name(self._mcs)

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
        self._closing = True
        await self._channel.close(None)

    # -- background work ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Frame records and keep the link up until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._framer())
            tg.create_task(self._connection())

    async def _framer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.cfg.batch_delay_s and not self._closing:
                await asyncio.sleep(self.cfg.batch_delay_s)
            for stream_id in list(self._records):
                records = self._records.pop(stream_id)
                for start in range(0, len(records), self.cfg.max_records_per_burst):
                    await self._frame(stream_id, records[start : start + self.cfg.max_records_per_burst])

    async def _frame(self, stream_id: str, records: list[Record]) -> None:
        # One frame holds one schema: split where the schema changes, then where the codec needs a new frame.
        runs: list[list[Record]] = []
        for rec in records:
            if runs and runs[-1][-1].schema_id == rec.schema_id:
                runs[-1].append(rec)
            else:
                runs.append([rec])
        for run in runs:
            schema = self.schemas.get(run[0].schema_id)
            for chunk in split_frames(run, schema, max_records=self.cfg.max_records_per_burst):
                await self._window.acquire()
                self._sequence[stream_id] += 1
                seq = self._sequence[stream_id]
                frame = encode_records(chunk, schema)
                self._unacked[(stream_id, seq)] = _Pending(stream_id, seq, schema.id, frame, len(chunk))
                self._resend.put_nowait((stream_id, seq))

    async def _connection(self) -> None:
        while True:
            try:
                await self._session()
            except aio.AioRpcError as err:
                log.warning("link to %s broke: %s %s", self.cfg.upstream, err.code().name, err.details())
            self.stats.link_up = False
            # Everything still unacknowledged goes out again on the next session, in sequence order.
            self._requeue_all()
            await asyncio.sleep(self.cfg.reconnect_s)

    def _requeue_all(self) -> None:
        # A fresh queue per session: a previous session's request generator may still be parked on the old
        # one, and must not take bursts meant for the new stream.
        self._resend = asyncio.Queue()
        for key in sorted(self._unacked):
            self._resend.put_nowait(key)

    async def _bursts(self, queue: asyncio.Queue[tuple[str, int]]) -> AsyncIterator[link_pb2.Burst]:
        while True:
            key = await queue.get()
            pending = self._unacked.get(key)
            if pending is None:
                continue
            burst = build_burst(
                pending.frame,
                stream_id=pending.stream_id,
                sequence=pending.sequence,
                schema_id=pending.schema_id,
                kind=link_pb2.PAYLOAD_KIND_RECORDS,
                record_count=pending.record_count,
                mcs=self._mcs,
                pilot_count=self.cfg.pilot_symbols,
                attempt=pending.attempt,
            )
            self._count_sent(burst)
            yield burst

    def _count_sent(self, burst: link_pb2.Burst) -> None:
        h = burst.header
        # The payload holds every symbol on the air, pilots included.
        symbols = 0 if h.modulation == link_pb2.MODULATION_NONE else burst.payload.shape[0]
        self.stats.bursts_sent += 1
        self.stats.info_bits_sent += h.info_bits
        self.stats.channel_symbols_sent += symbols
        self.stats.per_stream_sent[h.stream_id] += h.record_count
        BURSTS.labels("sent").inc()
        LINK_BITS.labels("info").inc(h.info_bits)
        LINK_BITS.labels("coded").inc(h.coded_bits)
        log.debug(
            "burst stream_id=%s sequence=%d records=%d attempt=%d",
            h.stream_id,
            h.sequence,
            h.record_count,
            h.attempt,
        )

    async def _session(self) -> None:
        call = self._stub.Transmit(self._bursts(self._resend), wait_for_ready=True)
        async for fb in call:
            if not self.stats.link_up:
                self.stats.link_up = True
                log.info("link to %s up", self.cfg.upstream)
            await self._on_feedback(fb)

    async def _on_feedback(self, fb: link_pb2.Feedback) -> None:
        if fb.HasField("task") and fb.task.schema_id:
            self.stats.task_schema_id = fb.task.schema_id
            if self._on_task is not None:
                self._on_task(fb.task)
        if fb.HasField("quality") and fb.quality.snr_db == fb.quality.snr_db:
            self.stats.last_snr_db = fb.quality.snr_db
            if self.cfg.adaptive_mcs and self._mcs is not None:
                self._mcs = select_mcs(fb.quality.snr_db, margin_db=self.cfg.mcs_margin_db)
        pending = self._unacked.get((fb.stream_id, fb.sequence))
        if fb.sequence == 0 or pending is None:
            return
        if fb.status == link_pb2.ACK_STATUS_OK:
            self._settle(pending, "acked")
        elif fb.status == link_pb2.ACK_STATUS_REJECTED:
            log.error("receiver rejected stream_id=%s sequence=%d: %s", fb.stream_id, fb.sequence, fb.detail)
            self._settle(pending, "rejected")
        elif pending.attempt + 1 < self.cfg.max_attempts:
            pending.attempt += 1
            BURSTS.labels("retransmitted").inc()
            self._resend.put_nowait((pending.stream_id, pending.sequence))
            return
        else:
            log.warning(
                "stream_id=%s sequence=%d lost after %d attempts (%s)",
                fb.stream_id,
                fb.sequence,
                pending.attempt + 1,
                link_pb2.AckStatus.Name(fb.status),
            )
            self._settle(pending, "lost")
        async with self._changed:
            self._changed.notify_all()

    def _settle(self, pending: _Pending, outcome: str) -> None:
        del self._unacked[(pending.stream_id, pending.sequence)]
        self._window.release()
        self.stats.records_queued -= pending.record_count
        if outcome == "acked":
            self.stats.records_acked += pending.record_count
        else:
            self.stats.records_lost += pending.record_count
        QUEUED.set(self.stats.records_queued)
        RECORDS.labels(outcome).inc(pending.record_count)
        BURSTS.labels(outcome).inc()
