"""The durable outbox: accepted records survive a reopen, ids and epochs never repeat, a full disk refuses."""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from semcom.codec.seal import Sealing, SiteKey
from semcom.errors import InvalidInput, Overloaded
from semcom.link.durable import SqliteOutbox
from semcom.link.messages import AckStatus, Feedback
from semcom.link.outbox import MemoryOutbox
from semcom.link.sender import SenderConfig, SendState
from semcom.record import Record
from tests.fixtures.link_sim import SCHEMAS, person


def ids(outbox: SqliteOutbox, stream_id: str) -> list[int]:
    return [r.record_id for r in outbox.take(stream_id)]


def test_unsettled_records_survive_a_reopen_and_settled_ones_do_not(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = SqliteOutbox(path)
    assert box.epoch == 1 and box.next_record_id("a") == 1
    for rec in [person("a", 1), person("b", 1), person("a", 2), person("a", 3)]:
        box.add(rec)
    assert ids(box, "a") == [1, 2, 3]
    box.settle([("a", 1), ("a", 3)])  # acknowledged
    assert len(box) == 2 and box.next_record_id("a") == 4
    box.close()  # ... or a SIGKILL: every add and settle was committed when it returned
    again = SqliteOutbox(path)
    assert again.epoch == 2 and len(again) == 2
    assert again.waiting_streams() == ["b", "a"]  # in the order they were accepted
    restored = again.take("a")
    assert restored == [person("a", 2)]  # the whole record, not only its key
    assert again.next_record_id("a") == 4 and again.next_record_id("b") == 2
    again.close()
    assert SqliteOutbox(path).epoch == 3


def test_an_id_never_comes_back_even_when_its_record_was_settled(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.db")
    box.add(person("a", 7))
    box.take("a")
    box.settle([("a", 7)])
    box.close()
    reopened = SqliteOutbox(tmp_path / "o.db")
    assert len(reopened) == 0 and reopened.next_record_id("a") == 8
    with pytest.raises(InvalidInput, match="already in the outbox"):
        reopened.add(person("b", 1))
        reopened.add(person("b", 1))


def test_memory_outbox_counts_ids_but_has_no_epoch() -> None:
    box = MemoryOutbox()
    box.add(person("a", 5))
    assert (box.epoch, box.next_record_id("a"), box.next_record_id("z")) == (0, 6, 1)


@pytest.fixture
def file_size_limit() -> Iterator[None]:
    """Writes past 256 KiB fail with EFBIG (SIGXFSZ ignored) in this process, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_full_disk_refuses_the_record_and_keeps_every_accepted_one(
    tmp_path: Path, file_size_limit: None
) -> None:
    box = SqliteOutbox(tmp_path / "o.db")
    accepted = []
    with pytest.raises(Overloaded, match="cannot store the record"):
        for i in range(1, 100_000):
            box.add(person("a", i))
            accepted.append(i)
    assert accepted and len(box) == len(accepted)
    box.close()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    again = SqliteOutbox(tmp_path / "o.db")
    assert ids(again, "a") == accepted  # nothing accepted is missing, nothing refused is there
    assert again.next_record_id("a") == accepted[-1] + 1


def test_a_sender_on_a_reopened_outbox_sends_the_leftovers_sealed_under_a_new_epoch(tmp_path: Path) -> None:
    key = SiteKey(bytes(range(32)))
    frames = []
    for _ in range(2):
        box = SqliteOutbox(tmp_path / "o.db")
        state = SendState(
            SenderConfig(batch_delay_s=0.0),
            SCHEMAS,
            schema_id="person/1",
            mcs=None,
            outbox=box,
            sealing=Sealing(key, tag_bytes=8),
        )
        if box.epoch == 1:
            state.submit(person("cam", 1), 0.0)
        burst = state.next_burst(0.0)
        assert burst is not None and state.next_burst(0.0) is None
        frames.append((burst.epoch, burst.sequence, burst.frame))
        if box.epoch == 2:
            state.on_feedback(Feedback("cam", 1, AckStatus.OK), 0.1)
            assert len(box) == 0
        box.close()  # the first time, a crash before the ack: the record stays
    (e1, s1, f1), (e2, s2, f2) = frames
    assert (e1, s1, e2, s2) == (1, 1, 2, 1)  # same sequence, new epoch: a fresh nonce
    assert f1 != f2 and len(f1) == len(f2)
    assert len(SqliteOutbox(tmp_path / "o.db")) == 0


def test_sealing_needs_a_durable_outbox() -> None:
    with pytest.raises(InvalidInput, match="durable outbox"):
        SendState(
            SenderConfig(),
            SCHEMAS,
            schema_id="person/1",
            mcs=None,
            sealing=Sealing(SiteKey(bytes(32))),
        )


def test_marks_of_an_upload_are_kept_with_their_records_across_a_reopen(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.db")
    assert box.upload_start_s("cam/abc", 100.0) == 100.0
    box.add(person("cam", 1), ("cam/abc", 0))
    box.add(person("cam", 2), ("cam/abc", 1))
    box.add(person("cam", 3))  # announced: no mark
    box.take("cam")
    box.settle([("cam", 1), ("cam", 2)])  # delivered: the marks stay, a repeated upload must skip them
    box.close()
    again = SqliteOutbox(tmp_path / "o.db")
    assert again.emitted("cam/abc") == [1, 2] and again.emitted("cam/other") == []
    assert again.upload_start_s("cam/abc", 999.0) == 100.0  # the first analysis's start time is kept
    again.forget_upload("cam/abc")  # completed: the same bytes again are a new upload
    assert again.emitted("cam/abc") == [] and again.upload_start_s("cam/abc", 999.0) == 999.0
    memory = MemoryOutbox()
    memory.add(person("cam", 5), ("k", 0))
    assert memory.emitted("k") == [5] and memory.upload_start_s("k", 1.0) == memory.upload_start_s("k", 2.0)


def test_a_reopened_outbox_keeps_each_fields_confidence(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.db")
    sent = Record("person/2", "cam", 3, 1, 1_700_000_000.0, 2, {"gender": "female"}, {"gender": 0.81})
    box.add(sent)
    box.close()
    (back,) = SqliteOutbox(tmp_path / "o.db").take("cam")
    assert back == sent  # confidence included: person/2 carries it on the wire
