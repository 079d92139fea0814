"""The link's receiving state and rxd's BurstReceiver: verdicts, the duplicate filter, acknowledgements."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import pytest

from rxd.receiver import BurstReceiver
from rxd.retrieval.engine import RetrievalEngine
from semcom.burst import build_burst
from semcom.codec import Sealing, SiteKey, encode_records
from semcom.errors import BackendFailed
from semcom.link.messages import AckStatus, Feedback
from semcom.link.receiver import BurstArrival, Decoded, LinkReceiver
from semcom.pb.v1 import link_pb2
from semcom.record import Record
from tests.fixtures.link_sim import SCHEMAS, person


def arrival(sequence: int, stream_id: str = "cam", records: int = 2, dropped: bool = False) -> BurstArrival:
    return BurstArrival(stream_id, sequence, records, info_bits=80, payload_bytes=10, dropped=dropped)


def decoded(frame: bytes, records: int = 2, snr_db: float = math.nan) -> Decoded:
    return Decoded.of(frame, records, snr_db=snr_db, pre_fec_ber=0.01, channel_symbols=40)


def test_bad_header_and_dropped_burst_are_answered_without_decoding() -> None:
    rx = LinkReceiver()
    bad = rx.arrive(arrival(0))
    assert bad is not None and bad.status is AckStatus.REJECTED and "sequence > 0" in bad.detail
    lost = rx.arrive(arrival(1, dropped=True))
    assert lost is not None and (lost.status, lost.sequence, lost.bursts_failed) == (AckStatus.LOST, 1, 2)
    assert rx.arrive(arrival(2)) is None
    s = rx.streams["cam"]
    assert (s.bursts_failed, s.records_failed, s.payload_bytes) == (2, 4, 30)


def test_a_stream_id_outside_the_rules_is_refused_and_counted_under_no_stream() -> None:
    rx = LinkReceiver()
    for bad in ("", "..", "../clips", "<img src=x onerror=alert(1)>", "x" * 65):
        answer = rx.arrive(arrival(1, stream_id=bad))
        assert answer is not None and answer.status is AckStatus.REJECTED and "stream_id" in answer.detail
    assert rx.rejected_ids == 5 and dict(rx.streams) == {}  # nothing grows with made-up ids
    assert rx.arrive(arrival(1, stream_id="cam-1.a_b")) is None


def test_a_duplicate_is_acknowledged_again_but_counted_once() -> None:
    rx = LinkReceiver()
    first = rx.accept(arrival(1), decoded(b"frame-1", snr_db=12.0))
    assert rx.is_duplicate(arrival(1), decoded(b"frame-1"))
    again = rx.accept(arrival(1), decoded(b"frame-1", snr_db=11.0))
    for fb in (first, again):
        assert (fb.status, fb.sequence, fb.records_accepted, fb.bursts_ok) == (AckStatus.OK, 1, 2, 1)
    s = rx.streams["cam"]
    assert (s.bursts_ok, s.records_indexed) == (1, 2)
    # The link's own counts (bits and symbols on the air, SNR) include the retransmission.
    assert (s.info_bits, s.channel_symbols, s.snr_db) == (160, 80, 11.0)


def test_a_restarted_transmitter_reusing_sequence_numbers_is_not_a_duplicate() -> None:
    rx = LinkReceiver()
    rx.accept(arrival(1), decoded(b"before the restart"))
    assert not rx.is_duplicate(arrival(1), decoded(b"after the restart"))
    assert not rx.is_duplicate(arrival(1, stream_id="other"), decoded(b"before the restart"))


def test_the_dedup_window_remembers_the_last_bursts_of_each_stream() -> None:
    rx = LinkReceiver(dedup_window=4)
    frames = {seq: f"frame-{seq}".encode() for seq in range(1, 7)}
    for seq in range(1, 7):
        rx.accept(arrival(seq), decoded(frames[seq]))
    remembered = [seq for seq in frames if rx.is_duplicate(arrival(seq), decoded(frames[seq]))]
    assert remembered == [3, 4, 5, 6]
    rx.accept(arrival(1, stream_id="b"), decoded(frames[1]))
    assert rx.is_duplicate(arrival(6), decoded(frames[6]))  # another stream does not push "cam" out


def test_a_failed_burst_is_counted_and_carries_no_snr() -> None:
    rx = LinkReceiver()
    rx.accept(arrival(1), decoded(b"ok", snr_db=9.0))
    fb = rx.fail(arrival(2, records=3), AckStatus.CRC_FAILED, "crc")
    assert (fb.status, fb.detail, fb.bursts_ok, fb.bursts_failed) == (AckStatus.CRC_FAILED, "crc", 1, 1)
    assert math.isnan(fb.snr_db) and rx.streams["cam"].records_failed == 3


def test_feedback_round_trips_through_protobuf_with_nan_kept() -> None:
    fb = Feedback("cam", 7, AckStatus.CRC_FAILED, "crc", 0, math.nan, 0.25, 3, 4, "person/1")
    msg = fb.to_pb()
    assert msg.status == link_pb2.ACK_STATUS_CRC_FAILED and msg.task.schema_id == "person/1"
    back = Feedback.from_pb(msg)
    assert math.isnan(back.snr_db) and back.bit_error_rate == 0.25
    assert (back.stream_id, back.sequence, back.status, back.bursts_failed) == (
        "cam",
        7,
        AckStatus.CRC_FAILED,
        4,
    )
    # A message with no quality (the task requirement alone) has no estimate either.
    task = Feedback.from_pb(link_pb2.Feedback(task=link_pb2.TaskRequirement(schema_id="vehicle/1")))
    assert math.isnan(task.snr_db) and task.task_schema_id == "vehicle/1" and task.status is None


class FakeEngine:
    """Stands in for the retrieval engine: remembers what it was asked to index."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[Record]] = []
        self.fail = fail

    def ingest(self, records: list[Record]) -> int:
        if self.fail:
            raise BackendFailed("the describer is down")
        self.batches.append(records)
        return 0


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def burst(sequence: int, records: list[Record]) -> link_pb2.Burst:
    frame = encode_records(records, SCHEMAS.get("person/1"))
    return build_burst(
        frame,
        stream_id=records[0].stream_id,
        sequence=sequence,
        schema_id="person/1",
        kind=link_pb2.PAYLOAD_KIND_RECORDS,
        record_count=len(records),
        mcs=None,
    )


@pytest.mark.asyncio
async def test_burst_receiver_indexes_a_retransmission_once(executor: ThreadPoolExecutor) -> None:
    engine = FakeEngine()
    receiver = BurstReceiver(SCHEMAS, cast(RetrievalEngine, engine), executor)
    records = [person("cam", 1), person("cam", 2)]
    first = await receiver.handle(burst(1, records))
    again = await receiver.handle(burst(1, records))
    assert [fb.status for fb in (first, again)] == [link_pb2.ACK_STATUS_OK] * 2
    assert first.records_accepted == again.records_accepted == 2
    assert engine.batches == [records]
    assert receiver.streams["cam"].records_indexed == 2


@pytest.mark.asyncio
async def test_burst_receiver_answers_corruption_and_engine_failure(executor: ThreadPoolExecutor) -> None:
    receiver = BurstReceiver(SCHEMAS, cast(RetrievalEngine, FakeEngine()), executor)
    bad = burst(1, [person("cam", 1)])
    data = bytearray(bad.payload.data)
    data[-1] ^= 0xFF  # the CRC's last byte
    bad.payload.data = bytes(data)
    fb = await receiver.handle(bad)
    assert fb.status == link_pb2.ACK_STATUS_CRC_FAILED and math.isnan(fb.quality.snr_db)
    failing = BurstReceiver(SCHEMAS, cast(RetrievalEngine, FakeEngine(fail=True)), executor)
    fb = await failing.handle(burst(1, [person("cam", 1)]))
    # A backend failure is not the records' fault: txd keeps them and sends them again.
    assert fb.status == link_pb2.ACK_STATUS_UNAVAILABLE and "describer is down" in fb.detail
    # Not remembered as accepted: the next try is indexed.
    assert failing.streams["cam"].bursts_ok == 0 and failing.streams["cam"].records_failed == 1


KEY = SiteKey(bytes(range(32)))


def sealed_burst(
    sequence: int, records: list[Record], *, site_id: str = "site-a", epoch: int = 1
) -> link_pb2.Burst:
    b = burst(sequence, records)
    b.payload.data = Sealing(KEY, tag_bytes=8).seal(
        b.payload.data, stream_id=records[0].stream_id, epoch=epoch, sequence=sequence
    )
    b.header.site_id, b.header.epoch = site_id, epoch
    return b


@pytest.mark.asyncio
async def test_burst_receiver_with_keys_takes_only_sealed_frames_of_known_sites(
    executor: ThreadPoolExecutor,
) -> None:
    engine = FakeEngine()
    receiver = BurstReceiver(
        SCHEMAS, cast(RetrievalEngine, engine), executor, keys={"site-a": KEY}, min_tag_bytes=8
    )
    good = await receiver.handle(sealed_burst(1, [person("cam", 1)]))
    assert good.status == link_pb2.ACK_STATUS_OK and engine.batches == [[person("cam", 1)]]
    forged = sealed_burst(2, [person("cam", 2)])
    data = bytearray(forged.payload.data[:-4])
    data[12] ^= 0x10  # one payload bit, the CRC made to fit again
    forged.payload.data = bytes(data) + zlib.crc32(data).to_bytes(4, "big")
    unknown = sealed_burst(3, [person("cam", 3)], site_id="site-b")
    plain = burst(4, [person("cam", 4)])
    plain.header.site_id = "site-a"
    replayed = sealed_burst(1, [person("cam", 1)], epoch=1)
    replayed.header.sequence = 5  # a captured frame under another sequence: another nonce
    answers = [await receiver.handle(b) for b in (forged, unknown, plain, replayed)]
    assert [fb.status for fb in answers] == [link_pb2.ACK_STATUS_UNAUTHENTICATED] * 4
    assert "no key for site 'site-b'" in answers[1].detail
    assert engine.batches == [[person("cam", 1)]]  # nothing forged reached the index
    stats = receiver.streams["cam"]
    assert (stats.bursts_ok, stats.bursts_unauthenticated, stats.records_failed) == (1, 4, 4)
