"""The link's sending side as a state object: records in, bursts out, feedback in; time is passed in, no I/O.

Like aioquic's QuicConnection, the owner feeds it events with the current time `now_s` (any monotonic clock,
in seconds) and asks it what to send and when to wake; the gRPC code around it only moves messages.

A record accepted by `submit` waits up to `batch_delay_s` for others to share a burst, is framed once per
stream and schema (semcom.codec.split_frames), and its burst takes a sequence number (per stream, from 1)
when it enters the window of `window` unsettled bursts. A burst is settled by an OK (acked), by REJECTED
(given up at once), or after `max_attempts` transmissions answered by CRC_FAILED/LOST or unanswered for
`ack_timeout_s`: then, with `retry_later_s` set, it stays in the outbox and in the window and goes out
again `retry_later_s` later with fresh attempts (never dropped), else its records count lost. A broken
connection sends everything unsettled again, in sequence order, without counting an attempt; reconnections
back off from `reconnect_s` up to `reconnect_max_s`. A burst unanswered for `ack_timeout_s` with no word at
all from the receiver since it went out means the peer is silent: the link counts down (`peer_silent`)
and the owner breaks the connection. With a `Sealing`, each burst's frame is sealed once, when it takes its
sequence number, under the nonce (outbox epoch, sequence).
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Protocol

from semcom.codec import encode_records, split_frames
from semcom.codec.frame import check_time_s
from semcom.codec.seal import Sealing
from semcom.errors import InvalidInput, Overloaded
from semcom.link.messages import AckStatus, Feedback
from semcom.link.outbox import Mark, MemoryOutbox, Outbox, RecordKey, record_key
from semcom.phy.mcs import Mcs, select_mcs
from semcom.record import Record
from semcom.schema import SchemaRegistry

log = logging.getLogger(__name__)

BurstKey = tuple[str, int]
"""A burst's identity on the link: (stream_id, sequence)."""


@dataclass(frozen=True)
class SenderConfig:
    """The sending side's limits and timers (txd's LinkConfig carries the same names)."""

    window: int = 64
    max_attempts: int = 4
    max_records_per_burst: int = 32
    max_queued_records: int = 10_000
    batch_delay_s: float = 1.0
    reconnect_s: float = 0.5
    reconnect_max_s: float = 5.0
    # None: a burst waits for its answer as long as the connection lasts (a broken one resends it anyway).
    ack_timeout_s: float | None = None
    # None: a burst whose attempts ran out is given up (its records count lost); else it is tried again then.
    retry_later_s: float | None = None
    adaptive_mcs: bool = False
    mcs_margin_db: float = 1.0


@dataclass(frozen=True)
class OutBurst:
    """One transmission of a framed burst: what the physical layer and the header need."""

    stream_id: str
    sequence: int
    schema_id: str
    frame: bytes
    record_count: int
    attempt: int  # 0 for the first transmission
    mcs: Mcs | None  # None: the frame travels as bytes
    epoch: int = 0  # the sender's lifetime (outbox epoch): with the sequence, the frame's nonce


@dataclass
class LinkStats:
    records_queued: int = 0
    records_acked: int = 0
    records_lost: int = 0
    records_deferred: int = 0  # records whose burst ran out of attempts and waits to be tried again
    bursts_sent: int = 0
    info_bits_sent: int = 0
    channel_symbols_sent: int = 0  # counted by the owner, which knows the physical layer
    last_snr_db: float = math.nan
    link_up: bool = False
    task_schema_id: str = ""
    per_stream_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class SenderMetrics(Protocol):
    """Where outcomes are counted besides LinkStats (Prometheus in txd); the default counts nothing."""

    def burst(self, outcome: str) -> None:
        """One burst `outcome`: sent, retransmitted, acked, rejected or lost."""

    def records(self, outcome: str, count: int) -> None:
        """`count` records settled as acked, rejected or lost."""

    def queued(self, count: int) -> None:
        """Records now accepted and not yet settled."""


class _NoMetrics:
    def burst(self, outcome: str) -> None:
        pass

    def records(self, outcome: str, count: int) -> None:
        pass

    def queued(self, count: int) -> None:
        pass


@dataclass
class _Framed:
    stream_id: str
    schema_id: str
    frame: bytes
    keys: tuple[RecordKey, ...]


@dataclass
class _Pending:
    """A burst in the window: framed, numbered (and sealed under that number), not yet settled."""

    framed: _Framed
    sequence: int
    frame: bytes
    attempt: int = 0
    queued: bool = True  # waiting in the send queue (first transmission or a resend)
    sent_s: float = math.nan  # when its latest transmission went out
    parked_until_s: float = math.nan  # out of attempts: tried again from then on


class SendState:
    """The sending side of one link connection's worth of state (it outlives reconnections)."""

    def __init__(
        self,
        cfg: SenderConfig,
        schemas: SchemaRegistry,
        *,
        schema_id: str,
        mcs: Mcs | None,
        outbox: Outbox | None = None,
        metrics: SenderMetrics | None = None,
        rng: random.Random | None = None,
        sealing: Sealing | None = None,
    ) -> None:
        self.cfg = cfg
        self.schemas = schemas
        self.mcs = mcs
        self.stats = LinkStats(task_schema_id=schema_id)
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        self.metrics: SenderMetrics = metrics if metrics is not None else _NoMetrics()
        if sealing is not None and self.outbox.epoch == 0:
            raise InvalidInput("sealed frames need a durable outbox: its epoch keeps nonces from repeating")
        self.sealing = sealing
        self._heard_s = -math.inf  # when the receiver last said anything
        self.peer_silent = False
        # Jitter keeps many sites that lost the same receiver from reconnecting in step.
        self._rng = rng if rng is not None else random.Random()
        # Records a durable outbox kept from the last run are framed at once.
        self._frame_due_s: float | None = -math.inf if self.outbox.waiting_streams() else None
        self.stats.records_queued = len(self.outbox)
        self._framed: deque[_Framed] = deque()
        self._window: dict[BurstKey, _Pending] = {}
        self._send: deque[BurstKey] = deque()
        self._sequence: dict[str, int] = defaultdict(int)
        self._failures = 0  # connections that broke since the link was last up
        self.reconnect_due_s = -math.inf

    # -- events in -----------------------------------------------------------------------------------------
    def submit(self, record: Record, now_s: float, mark: Mark | None = None) -> None:
        """Accept one record; Overloaded when `max_queued_records` are already waiting or in flight.
        `mark` goes to the outbox with the record (which record of which upload it is)."""
        if len(self.outbox) >= self.cfg.max_queued_records:
            raise Overloaded(f"{len(self.outbox)} records already queued for the link; retry later")
        # Checked here so that a record that cannot be framed is refused, not left to fail the framer.
        self.schemas.get(record.schema_id)
        check_time_s(record)
        self.outbox.add(record, mark)
        self._queued_changed()
        if self._frame_due_s is None:
            self._frame_due_s = now_s + self.cfg.batch_delay_s

    def on_feedback(self, fb: Feedback, now_s: float) -> None:
        """A message from the receiver: link quality, the task requirement, an acknowledgement."""
        self._link_up()
        self._heard_s = now_s
        self.peer_silent = False
        if fb.task_schema_id:
            self.stats.task_schema_id = fb.task_schema_id
        if not math.isnan(fb.snr_db):
            self.stats.last_snr_db = fb.snr_db
            if self.cfg.adaptive_mcs and self.mcs is not None:
                self.mcs = select_mcs(fb.snr_db, margin_db=self.cfg.mcs_margin_db)
        pending = self._window.get((fb.stream_id, fb.sequence))
        if fb.sequence == 0 or pending is None:
            return
        if fb.status is AckStatus.OK:
            self._settle(pending, "acked")
        elif fb.status is AckStatus.REJECTED:
            log.error("receiver rejected stream_id=%s sequence=%d: %s", fb.stream_id, fb.sequence, fb.detail)
            self._settle(pending, "rejected")
        elif not pending.queued and math.isnan(pending.parked_until_s):
            # (a resend already scheduled, after a timeout, answers this NACK too)
            self._retry(pending, fb.status.name if fb.status else "UNSPECIFIED", now_s)

    def on_disconnect(self, now_s: float) -> None:
        """The connection broke: everything unsettled goes out again, in sequence order, on the next one."""
        self.stats.link_up = False
        self.peer_silent = False  # a new connection is given its own ack_timeout_s
        self._send = deque(sorted(self._window))
        for pending in self._window.values():
            pending.queued = True
            self._unpark(pending)  # a new connection is a new chance
        self.reconnect_due_s = now_s + self.reconnect_delay_s(self._failures)
        self._failures += 1

    # -- questions -----------------------------------------------------------------------------------------
    def next_burst(self, now_s: float) -> OutBurst | None:
        """The next transmission due at `now_s`, or None (then ask next_wake_s)."""
        self._run_timers(now_s)
        self._admit()
        while self._send:
            key = self._send.popleft()
            pending = self._window.get(key)
            if pending is None or not pending.queued:
                continue
            pending.queued = False
            pending.sent_s = now_s
            return self._transmission(pending)
        return None

    def next_wake_s(self) -> float | None:
        """When a timer (batch delay, ack timeout) next falls due; None when none runs."""
        due = [self._frame_due_s] if self._frame_due_s is not None else []
        parked = [p.parked_until_s for p in self._window.values() if not math.isnan(p.parked_until_s)]
        due += parked
        if self.cfg.ack_timeout_s is not None:
            sent = [p.sent_s for p in self._window.values() if self._awaiting(p)]
            if sent:
                due.append(min(sent) + self.cfg.ack_timeout_s)
        return min(due, default=None)

    def reconnect_delay_s(self, failures: int) -> float:
        """The pause before reconnecting after `failures` earlier breaks with no feedback in between:
        `reconnect_s` the first time, then drawn between `reconnect_s` and a cap that doubles each time,
        up to `reconnect_max_s`."""
        low = self.cfg.reconnect_s
        if failures == 0:
            return low
        high = max(low, min(self.cfg.reconnect_max_s, low * 2.0 ** min(failures, 64)))
        return self._rng.uniform(low, high)

    def has_room(self) -> bool:
        return len(self.outbox) < self.cfg.max_queued_records

    @property
    def in_flight(self) -> int:
        """Bursts in the window: numbered and not yet settled (never more than `window`)."""
        return len(self._window)

    # -- inside --------------------------------------------------------------------------------------------
    def _run_timers(self, now_s: float) -> None:
        if self._frame_due_s is not None and now_s >= self._frame_due_s:
            self._frame_due_s = None
            self._frame_waiting()
        for pending in self._window.values():
            if pending.parked_until_s <= now_s:
                self._unpark(pending)
                pending.queued = True
                self._send.append((pending.framed.stream_id, pending.sequence))
        timeout_s = self.cfg.ack_timeout_s
        if timeout_s is not None:
            for pending in [p for p in self._window.values() if self._awaiting(p)]:
                if now_s >= pending.sent_s + timeout_s:
                    if self._heard_s < pending.sent_s and not self.peer_silent:
                        log.warning("no word from the receiver for %.1f s: the link counts down", timeout_s)
                        self.peer_silent = True
                        self.stats.link_up = False
                    self._retry(pending, "no answer", now_s)

    @staticmethod
    def _awaiting(pending: _Pending) -> bool:
        """Sent and waiting for its answer (neither queued to go out nor parked)."""
        return not pending.queued and math.isnan(pending.parked_until_s)

    def _frame_waiting(self) -> None:
        # Each stream's waiting records are cut once: where the schema changes, then where the codec needs
        # a new frame (full, a gap in record ids, or a time span the frame cannot hold).
        for stream_id in self.outbox.waiting_streams():
            runs: list[list[Record]] = []
            for rec in self.outbox.take(stream_id):
                if runs and runs[-1][-1].schema_id == rec.schema_id:
                    runs[-1].append(rec)
                else:
                    runs.append([rec])
            for run in runs:
                schema = self.schemas.get(run[0].schema_id)
                for chunk in split_frames(run, schema, max_records=self.cfg.max_records_per_burst):
                    keys = tuple(record_key(r) for r in chunk)
                    self._framed.append(_Framed(stream_id, schema.id, encode_records(chunk, schema), keys))

    def _admit(self) -> None:
        while self._framed and len(self._window) < self.cfg.window:
            framed = self._framed.popleft()
            self._sequence[framed.stream_id] += 1
            key = (framed.stream_id, self._sequence[framed.stream_id])
            frame = framed.frame
            if self.sealing is not None:
                frame = self.sealing.seal(
                    frame, stream_id=framed.stream_id, epoch=self.outbox.epoch, sequence=key[1]
                )
            self._window[key] = _Pending(framed, key[1], frame)
            self._send.append(key)

    def _transmission(self, pending: _Pending) -> OutBurst:
        framed = pending.framed
        count = len(framed.keys)
        self.stats.bursts_sent += 1
        self.stats.info_bits_sent += 8 * len(pending.frame)
        self.stats.per_stream_sent[framed.stream_id] += count
        self.metrics.burst("sent")
        return OutBurst(
            framed.stream_id,
            pending.sequence,
            framed.schema_id,
            pending.frame,
            count,
            pending.attempt,
            self.mcs,
            self.outbox.epoch,
        )

    def _retry(self, pending: _Pending, why: str, now_s: float) -> None:
        if pending.attempt + 1 < self.cfg.max_attempts:
            pending.attempt += 1
            pending.queued = True
            self._send.append((pending.framed.stream_id, pending.sequence))
            self.metrics.burst("retransmitted")
            return
        if self.cfg.retry_later_s is not None:
            log.warning(
                "stream_id=%s sequence=%d unanswered after %d attempts (%s): kept, tried again in %.0f s",
                pending.framed.stream_id,
                pending.sequence,
                pending.attempt + 1,
                why,
                self.cfg.retry_later_s,
            )
            pending.attempt = 0
            pending.parked_until_s = now_s + self.cfg.retry_later_s
            self.stats.records_deferred += len(pending.framed.keys)
            self.metrics.burst("deferred")
            return
        log.warning(
            "stream_id=%s sequence=%d lost after %d attempts (%s)",
            pending.framed.stream_id,
            pending.sequence,
            pending.attempt + 1,
            why,
        )
        self._settle(pending, "lost")

    def _unpark(self, pending: _Pending) -> None:
        if not math.isnan(pending.parked_until_s):
            pending.parked_until_s = math.nan
            self.stats.records_deferred -= len(pending.framed.keys)

    def _settle(self, pending: _Pending, outcome: str) -> None:
        self._unpark(pending)
        framed = pending.framed
        del self._window[(framed.stream_id, pending.sequence)]
        self.outbox.settle(framed.keys)
        count = len(framed.keys)
        if outcome == "acked":
            self.stats.records_acked += count
        else:
            self.stats.records_lost += count
        self.metrics.records(outcome, count)
        self.metrics.burst(outcome)
        self._queued_changed()

    def _queued_changed(self) -> None:
        self.stats.records_queued = len(self.outbox)
        self.metrics.queued(self.stats.records_queued)

    def _link_up(self) -> None:
        self.stats.link_up = True
        self._failures = 0
