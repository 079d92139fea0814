"""The link's sending state on a fake clock: batching, framing, the window, resends, reconnects, backoff."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable

import pytest

from semcom.errors import InvalidInput, Overloaded
from semcom.link.messages import AckStatus, Feedback
from semcom.link.outbox import Mark, MemoryOutbox, RecordKey
from semcom.link.sender import OutBurst, SenderConfig, SendState
from semcom.phy.mcs import Mcs
from semcom.record import Record
from tests.fixtures.link_sim import SCHEMAS, Fate, Loopback, person, random_fates


def sender(mcs: Mcs | None = None, seed: int = 0, **cfg: object) -> SendState:
    base: dict[str, object] = {"batch_delay_s": 0.0}
    return SendState(
        SenderConfig(**(base | cfg)),  # type: ignore[arg-type]
        SCHEMAS,
        schema_id="person/1",
        mcs=mcs,
        rng=random.Random(seed),
    )


def drain(state: SendState, now_s: float) -> list[OutBurst]:
    out = []
    while (burst := state.next_burst(now_s)) is not None:
        out.append(burst)
    return out


def ack(out: OutBurst, status: AckStatus = AckStatus.OK, **extra: object) -> Feedback:
    return Feedback(out.stream_id, out.sequence, status, **extra)  # type: ignore[arg-type]


def ids(records: list[Record]) -> list[int]:
    return [r.record_id for r in records]


def test_records_wait_batch_delay_then_share_one_burst() -> None:
    state = sender(batch_delay_s=1.0)
    state.submit(person("cam", 1), now_s=10.0)
    assert state.next_burst(10.5) is None and state.next_wake_s() == 11.0
    state.submit(person("cam", 2), now_s=10.9)  # joins the batch the first record opened
    (burst,) = drain(state, 11.0)
    assert (burst.stream_id, burst.sequence, burst.record_count, burst.attempt) == ("cam", 1, 2, 0)
    assert state.next_wake_s() is None  # nothing waits on a timer until the next record
    assert state.stats.records_queued == 2 and state.stats.bursts_sent == 1
    assert state.stats.info_bits_sent == 8 * len(burst.frame)


def test_records_are_cut_once_per_burst_limit_schema_and_id_gap() -> None:
    state = sender(max_records_per_burst=32)
    for i in range(1, 71):
        state.submit(person("cam", i), 0.0)
    assert [b.record_count for b in drain(state, 0.0)] == [32, 32, 6]
    # A new schema or a gap in record ids starts a new frame; streams are framed apart.
    state = sender()
    for rec in [person("a", 1), person("a", 2), person("a", 4), person("b", 1)]:
        state.submit(rec, 0.0)
    state.submit(person("a", 5, schema_id="vehicle/1"), 0.0)
    state.submit(person("a", 6, schema_id="vehicle/1"), 0.0)
    counts = [(b.stream_id, b.sequence, b.schema_id, b.record_count) for b in drain(state, 0.0)]
    assert counts == [
        ("a", 1, "person/1", 2),
        ("a", 2, "person/1", 1),
        ("a", 3, "vehicle/1", 2),
        ("b", 1, "person/1", 1),
    ]


def test_window_holds_bursts_back_until_acked() -> None:
    state = sender(window=2, max_records_per_burst=1)
    for i in range(1, 6):
        state.submit(person("cam", i), 0.0)
    first = drain(state, 0.0)
    assert [b.sequence for b in first] == [1, 2] and state.in_flight == 2
    state.on_feedback(ack(first[1]), 0.1)  # out of order: the second is acked first
    (third,) = drain(state, 0.1)
    assert third.sequence == 3 and state.in_flight == 2
    assert state.stats.records_acked == 1 and state.stats.records_queued == 4


def test_nack_resends_until_max_attempts_then_lost(caplog: pytest.LogCaptureFixture) -> None:
    state = sender(max_attempts=3)
    state.submit(person("cam", 1), 0.0)
    attempts = []
    for status in [AckStatus.CRC_FAILED, AckStatus.LOST, AckStatus.CRC_FAILED]:
        (burst,) = drain(state, 0.0)
        attempts.append((burst.sequence, burst.attempt))
        state.on_feedback(ack(burst, status), 0.0)
    assert attempts == [(1, 0), (1, 1), (1, 2)]
    assert drain(state, 0.0) == [] and state.in_flight == 0
    assert state.stats.records_lost == 1 and state.stats.records_queued == 0
    assert "stream_id=cam sequence=1 lost after 3 attempts (CRC_FAILED)" in caplog.text


def test_rejected_is_given_up_at_once_and_duplicate_acks_settle_once() -> None:
    state = sender(max_records_per_burst=1)
    state.submit(person("cam", 1), 0.0)
    state.submit(person("cam", 2), 0.0)
    one, two = drain(state, 0.0)
    state.on_feedback(ack(one, AckStatus.REJECTED, detail="bad"), 0.0)
    state.on_feedback(ack(two), 0.0)
    state.on_feedback(ack(two), 0.0)  # the receiver answered a retransmission too
    state.on_feedback(Feedback("cam", 99, AckStatus.OK), 0.0)  # nothing pending under that number
    assert (state.stats.records_lost, state.stats.records_acked, state.stats.records_queued) == (1, 1, 0)
    assert drain(state, 0.0) == []


def test_reconnect_resends_everything_unsettled_in_sequence_order_without_an_attempt() -> None:
    state = sender(window=8, max_records_per_burst=1, reconnect_s=0.5)
    for stream in ("b", "a"):
        for i in range(1, 4):
            state.submit(person(stream, i), 0.0)
    sent = drain(state, 0.0)
    state.on_feedback(ack(sent[1]), 0.0)  # b/2 is settled and must not come back
    state.on_disconnect(now_s=1.0)
    assert not state.stats.link_up and state.reconnect_due_s == 1.5
    again = drain(state, 1.5)
    assert [(b.stream_id, b.sequence, b.attempt) for b in again] == [
        ("a", 1, 0),
        ("a", 2, 0),
        ("a", 3, 0),
        ("b", 1, 0),
        ("b", 3, 0),
    ]
    assert [b.frame for b in again if b.stream_id == "b"] == [sent[0].frame, sent[2].frame]


def test_reconnect_backoff_grows_within_bounds_and_resets_when_the_link_is_up() -> None:
    state = sender(reconnect_s=0.5, reconnect_max_s=5.0, seed=11)
    delays = []
    for _ in range(12):
        state.on_disconnect(now_s=100.0)
        delays.append(state.reconnect_due_s - 100.0)
    assert delays[0] == 0.5
    for k, delay in enumerate(delays):
        assert 0.5 <= delay <= min(5.0, 0.5 * 2**k), (k, delay)
    assert max(delays) > 2.5  # seed 11: the cap is reached within 12 draws, so the jitter spans it
    state.on_feedback(Feedback(task_schema_id="person/1"), 101.0)
    state.on_disconnect(now_s=200.0)
    assert state.reconnect_due_s == 200.5 and state.stats.link_up is False


@pytest.mark.parametrize("seed", range(5))
def test_backoff_draws_stay_in_bounds(seed: int) -> None:
    state = sender(reconnect_s=0.2, reconnect_max_s=3.0, seed=seed)
    for failures in range(40):
        delay = state.reconnect_delay_s(failures)
        assert 0.2 <= delay <= min(3.0, 0.2 * 2**failures)


def test_ack_timeout_resends_an_unanswered_burst_then_gives_up() -> None:
    state = sender(ack_timeout_s=2.0, max_attempts=2)
    state.submit(person("cam", 1), 0.0)
    (first,) = drain(state, 0.0)
    assert state.next_wake_s() == 2.0 and drain(state, 1.9) == []
    (second,) = drain(state, 2.0)
    assert (second.sequence, second.attempt, second.frame) == (1, 1, first.frame)
    assert state.next_wake_s() == 4.0
    assert drain(state, 4.0) == [] and state.stats.records_lost == 1 and state.in_flight == 0
    # A late answer to the first try settles the burst like any acknowledgement.
    state = sender(ack_timeout_s=2.0)
    state.submit(person("cam", 1), 0.0)
    (first,) = drain(state, 0.0)
    drain(state, 2.0)
    state.on_feedback(ack(first), 2.5)
    assert (state.in_flight, state.stats.records_acked, state.next_wake_s()) == (0, 1, None)


def test_queue_bound_refuses_then_frees_room() -> None:
    state = sender(max_queued_records=2, max_records_per_burst=1)
    state.submit(person("cam", 1), 0.0)
    state.submit(person("cam", 2), 0.0)
    assert not state.has_room()
    with pytest.raises(Overloaded):
        state.submit(person("cam", 3), 0.0)
    first, _ = drain(state, 0.0)
    state.on_feedback(ack(first), 0.0)
    assert state.has_room()
    state.submit(person("cam", 3), 0.0)
    assert state.stats.records_queued == 2


def test_a_record_that_cannot_be_framed_is_refused_at_submit() -> None:
    state = sender()
    with pytest.raises(InvalidInput):
        state.submit(person("cam", 1, schema_id="teapot/9"), 0.0)
    with pytest.raises(InvalidInput):
        state.submit(person("cam", 1, time_s=math.inf), 0.0)
    assert state.stats.records_queued == 0


def test_feedback_sets_task_snr_and_adaptive_mcs() -> None:
    state = sender(mcs=Mcs("bpsk", "ldpc_r12"), adaptive_mcs=True)
    state.on_feedback(Feedback(task_schema_id="person/1", snr_db=30.0), 0.0)
    assert state.stats.link_up and state.stats.last_snr_db == 30.0
    assert state.mcs is not None and state.mcs.modulation == "qam64"
    state.on_feedback(Feedback("cam", 0, AckStatus.CRC_FAILED), 0.0)  # no estimate: nothing changes
    assert state.stats.last_snr_db == 30.0 and state.mcs.modulation == "qam64"
    fixed = sender(mcs=Mcs("bpsk", "ldpc_r12"))
    fixed.on_feedback(Feedback(snr_db=30.0), 0.0)
    assert fixed.mcs == Mcs("bpsk", "ldpc_r12")


def test_scripted_loss_reordering_and_duplicates_deliver_every_record_once() -> None:
    script: list[Fate] = ["drop", "late", "duplicate", "corrupt", "ok", "ack_lost", "late", "drop"]
    fates = iter(script)
    link = Loopback(sender(window=3, max_records_per_burst=2, max_attempts=4))
    link.fate = lambda out: next(fates, "ok")
    records = [person("cam", i) for i in range(1, 12)]
    for rec in records:
        link.submit(rec)
    link.run_until_idle()
    got = ids(link.delivered["cam"])
    assert sorted(got) == ids(records) and len(set(got)) == len(got)
    assert got != ids(records)  # the script did reorder: a window of 3 lets a resend land after later bursts
    assert link.sender.stats.records_acked == 11 and link.sender.stats.records_lost == 0
    assert link.max_open <= 3


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8])
def test_seeded_random_schedules_keep_the_invariants(seed: int) -> None:
    """Seeds 1..8; 3 streams, 150 records at random times, a hostile channel and reconnects."""
    rng = random.Random(seed)
    weights: dict[Fate, float] = {
        "drop": 0.15,
        "corrupt": 0.1,
        "duplicate": 0.1,
        "ack_lost": 0.05,
        "late": 0.1,
    }
    state = sender(window=4, max_records_per_burst=3, max_attempts=16, batch_delay_s=0.3, seed=seed)
    link = Loopback(state, fate=random_fates(rng, weights))
    submitted: list[Record] = []
    next_id: Counter[str] = Counter()
    for _ in range(150):
        stream = rng.choice(["a", "b", "c"])
        next_id[stream] += 1
        submitted.append(person(stream, next_id[stream]))
        link.submit(submitted[-1])
        link.advance(link.now_s + rng.expovariate(10.0))
        link.pump()
        if rng.random() < 0.03:
            link.reconnect()
    link.run_until_idle()
    # Every accepted record is indexed exactly once; a hostile channel never costs one (16 attempts).
    stats = state.stats
    assert (stats.records_acked, stats.records_lost, stats.records_queued) == (150, 0, 0)
    for stream in "abc":
        got = link.delivered[stream]
        want = [r for r in submitted if r.stream_id == stream]
        assert sorted(ids(got)) == ids(want) and len(set(ids(got))) == len(got)
    assert link.max_open == 4  # the window filled up, never over
    # First transmissions go out in sequence order per stream, and sequences are 1, 2, 3, ... with no gap.
    firsts = [b for b in link.sent if b.attempt == 0]
    for stream in "abc":
        seqs = [b.sequence for b in firsts if b.stream_id == stream]
        assert sorted(set(seqs)) == list(range(1, max(seqs) + 1))
    # The receiver counted each burst once however often it came.
    rx = link.receiver.streams
    assert sum(s.records_indexed for s in rx.values()) == 150


def test_window_of_one_delivers_in_order_under_loss() -> None:
    rng = random.Random(21)
    link = Loopback(
        sender(window=1, max_records_per_burst=2, max_attempts=16),
        fate=random_fates(rng, {"drop": 0.3, "corrupt": 0.1, "duplicate": 0.1, "ack_lost": 0.05}),
    )
    records = [person("cam", i) for i in range(1, 41)]
    for rec in records:
        link.submit(rec)
    link.run_until_idle()
    assert link.delivered["cam"] == records


class JournalOutbox(MemoryOutbox):
    """An outbox that writes down what the sender asks of it, as a durable one would act on it."""

    def __init__(self) -> None:
        super().__init__()
        self.journal: list[tuple[str, object]] = []

    def add(self, record: Record, mark: Mark | None = None) -> None:
        self.journal.append(("add", record.record_id))
        super().add(record, mark)

    def take(self, stream_id: str) -> list[Record]:
        records = super().take(stream_id)
        self.journal.append(("take", ids(records)))
        return records

    def settle(self, keys: Iterable[RecordKey]) -> None:
        keys = list(keys)
        self.journal.append(("settle", keys))
        super().settle(keys)


def test_the_sender_keeps_records_only_through_its_outbox() -> None:
    outbox = JournalOutbox()
    state = SendState(SenderConfig(batch_delay_s=0.0), SCHEMAS, schema_id="person/1", mcs=None, outbox=outbox)
    state.submit(person("cam", 1), 0.0)
    state.submit(person("cam", 2), 0.0)
    (burst,) = drain(state, 0.0)
    assert state.stats.records_queued == len(outbox) == 2  # in flight until settled
    state.on_feedback(ack(burst), 0.1)
    assert outbox.journal == [
        ("add", 1),
        ("add", 2),
        ("take", [1, 2]),
        ("settle", [("cam", 1), ("cam", 2)]),
    ]
    assert len(outbox) == 0 and state.stats.records_queued == 0


def test_memory_outbox_counts_waiting_and_in_flight_and_ignores_unknown_keys() -> None:
    outbox = MemoryOutbox()
    for rec in [person("a", 1), person("b", 1), person("a", 2)]:
        outbox.add(rec)
    assert outbox.waiting_streams() == ["a", "b"] and len(outbox) == 3
    assert ids(outbox.take("a")) == [1, 2] and outbox.waiting_streams() == ["b"] and len(outbox) == 3
    outbox.settle([("a", 1), ("a", 9), ("b", 1)])  # b/1 is still waiting, a/9 was never taken
    assert len(outbox) == 2 and outbox.take("zzz") == []


def test_a_burst_out_of_attempts_stays_queued_and_goes_out_again_later() -> None:
    state = sender(max_attempts=2, retry_later_s=30.0)
    state.submit(person("cam", 1), 0.0)
    for _ in range(2):
        (burst,) = drain(state, 0.0)
        state.on_feedback(ack(burst, AckStatus.CRC_FAILED), 0.0)
    assert drain(state, 29.9) == [] and state.next_wake_s() == 30.0
    assert (state.stats.records_lost, state.stats.records_deferred, state.stats.records_queued) == (0, 1, 1)
    (again,) = drain(state, 30.0)
    assert (again.sequence, again.attempt, again.frame) == (1, 0, burst.frame)  # same burst, fresh attempts
    state.on_feedback(ack(again), 30.1)
    assert (state.stats.records_acked, state.stats.records_deferred, len(state.outbox)) == (1, 0, 0)


def test_a_silent_receiver_takes_the_link_down_after_the_ack_timeout() -> None:
    state = sender(ack_timeout_s=2.0)
    state.on_feedback(Feedback(task_schema_id="person/1"), 0.0)
    assert state.stats.link_up and not state.peer_silent
    state.submit(person("cam", 1), 1.0)
    (first,) = drain(state, 1.0)
    state.submit(person("cam", 2), 1.5)
    assert state.next_wake_s() == 1.5
    drain(state, 1.5)
    state.on_feedback(ack(first), 2.0)  # heard after the second went out: still alive
    assert drain(state, 3.4) == [] and not state.peer_silent
    (resent,) = drain(state, 3.5)  # the second timed out, but the receiver spoke since it was sent
    assert resent.attempt == 1 and not state.peer_silent and state.stats.link_up
    assert drain(state, 5.5) != [] and state.peer_silent and not state.stats.link_up  # two s of silence
    state.on_disconnect(5.5)
    assert not state.peer_silent  # the next connection gets its own ack timeout
