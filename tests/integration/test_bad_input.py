"""Bad input gets a clear gRPC status and message; the daemons stay up and lose nothing already accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from grpc import aio

from semcom.pb.v1 import (
    common_pb2,
    link_pb2,
    link_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    transmitter_pb2,
    transmitter_pb2_grpc,
)
from semcom.record import Record
from tests.conftest import Chain
from tests.fixtures.link import PEOPLE, announce_all, query, wait_indexed


async def announce_error(address: str, rec: Record) -> aio.AioRpcError:
    async with aio.insecure_channel(address) as ch:
        stub = transmitter_pb2_grpc.TransmitterStub(ch)
        with pytest.raises(aio.AioRpcError) as info:
            await stub.Announce(transmitter_pb2.AnnounceRequest(record=rec.to_pb()), timeout=5)
    return info.value


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("rec", "needle"),
    [
        (Record("animal/1", "s", 1, 0, 1.0, 0, {}), "unknown schema 'animal/1'"),
        (Record("person/1", "s", 1, 0, 1.0, 0, {"upper_color": "mauve"}), "mauve"),
        (Record("person/1", "s", 1, 0, 1.0, 0, {"hat": "red"}), "hat"),
        (Record("person/1", "", 1, 0, 1.0, 0, {}), "stream_id"),
        (Record("person/1", "s", 1, 0, 1.0, 999, {}), "location"),
    ],
)
async def test_announce_rejects_bad_records(chain: Chain, rec: Record, needle: str) -> None:
    err = await announce_error(chain.txd_address, rec)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (err.details() or "")
    # The daemon is still up and a good record goes through.
    await announce_all(chain.txd_address, "after", PEOPLE[:1])
    assert (await wait_indexed(chain.rxd_address, 1)).records_indexed == 1


async def _ingest(address: str, parts: list[transmitter_pb2.IngestRequest]) -> aio.AioRpcError:
    async def gen() -> AsyncIterator[transmitter_pb2.IngestRequest]:
        for p in parts:
            yield p

    async with aio.insecure_channel(address) as ch:
        with pytest.raises(aio.AioRpcError) as info:
            await transmitter_pb2_grpc.TransmitterStub(ch).Ingest(gen(), timeout=30)
    return info.value


@pytest.mark.asyncio
async def test_ingest_garbage_no_header_and_empty(chain: Chain) -> None:
    header = transmitter_pb2.IngestRequest(header=transmitter_pb2.IngestHeader(stream_id="junk"))
    err = await _ingest(
        chain.txd_address, [header, transmitter_pb2.IngestRequest(chunk=b"\x00garbage" * 500)]
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode the video" in (err.details() or "")
    err = await _ingest(chain.txd_address, [transmitter_pb2.IngestRequest(chunk=b"abc")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "header" in (err.details() or "")
    err = await _ingest(
        chain.txd_address, [transmitter_pb2.IngestRequest(header=transmitter_pb2.IngestHeader())]
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "no video bytes" in (err.details() or "")
    async with aio.insecure_channel(chain.txd_address) as ch:
        status = await transmitter_pb2_grpc.TransmitterStub(ch).Status(
            transmitter_pb2.StatusRequest(), timeout=5
        )
    junk = next(s for s in status.streams if s.stream_id == "junk")
    assert junk.state == "failed" and "cannot decode" in junk.error


@pytest.mark.asyncio
async def test_malformed_bursts_are_rejected_and_counted(chain: Chain) -> None:
    """Bursts sent straight to rxd's Link: each bad one gets a REJECTED/CRC_FAILED feedback, never a crash."""
    good = np.zeros(10, dtype=np.complex64).tobytes()

    def burst(seq: int, **kw: object) -> link_pb2.Burst:
        header = link_pb2.BurstHeader(
            stream_id="evil",
            sequence=seq,
            schema_id="person/1",
            kind=link_pb2.PAYLOAD_KIND_RECORDS,
            modulation=link_pb2.MODULATION_QPSK,
            coding=link_pb2.CODING_LDPC_R12,
            info_bits=64,
            coded_bits=128,
            pilot_symbols=16,
            record_count=1,
        )
        payload = common_pb2.Tensor(dtype=common_pb2.DTYPE_COMPLEX64, shape=[10], data=good)
        b = link_pb2.Burst(header=header, payload=payload)
        for k, v in kw.items():
            if k == "data":
                b.payload.data = v  # type: ignore[assignment]
            elif k == "dtype":
                b.payload.dtype = v  # type: ignore[assignment]
            else:
                setattr(b.header, k, v)
        return b

    bursts = [
        burst(1, data=good[:-3]),  # bytes do not match the shape
        burst(2),  # too few symbols for the header's numbers (truncated)
        burst(3, dtype=common_pb2.DTYPE_FLOAT32),  # wrong dtype
        burst(4, modulation=77),  # unknown modulation
        burst(0),  # no sequence number
        link_pb2.Burst(
            header=link_pb2.BurstHeader(
                stream_id="evil", sequence=5, modulation=link_pb2.MODULATION_NONE, record_count=2
            ),
            payload=common_pb2.Tensor(dtype=common_pb2.DTYPE_UINT8, shape=[12], data=b"\x01" * 12),
        ),  # bytes that are no frame
    ]

    async def gen() -> AsyncIterator[link_pb2.Burst]:
        for b in bursts:
            yield b

    async with aio.insecure_channel(chain.rxd_address) as ch:
        replies = [fb async for fb in link_pb2_grpc.LinkStub(ch).Transmit(gen(), timeout=20)]
    acks = [fb for fb in replies if fb.sequence or fb.detail]
    assert len(acks) == len(bursts)
    assert all(fb.status in (link_pb2.ACK_STATUS_REJECTED, link_pb2.ACK_STATUS_CRC_FAILED) for fb in acks)
    assert all(fb.detail for fb in acks)
    assert "shape" in acks[0].detail
    async with aio.insecure_channel(chain.rxd_address) as ch:
        stats = await receiver_pb2_grpc.ReceiverStub(ch).Stats(receiver_pb2.StatsRequest(), timeout=5)
    evil = next(s for s in stats.streams if s.stream_id == "evil")
    assert evil.bursts_failed == len(bursts) and evil.records_indexed == 0
    assert evil.records_failed == 7  # 1 + 1 + 1 + 1 + 1 + 2 records the headers claimed
    # The link still works for well-formed traffic.
    await announce_all(chain.txd_address, "fine", PEOPLE)
    await wait_indexed(chain.rxd_address, 7 + 3)
    hits = (await query(chain.rxd_address, gender="male")).hits
    assert len([h for h in hits if not h.contradicted_slots]) == 2


@pytest.mark.asyncio
async def test_query_errors_are_clear(chain: Chain) -> None:
    async with aio.insecure_channel(chain.rxd_address) as ch:
        stub = receiver_pb2_grpc.ReceiverStub(ch)
        cases = [
            (receiver_pb2.QueryRequest(), "empty query"),
            (receiver_pb2.QueryRequest(filters=[receiver_pb2.FieldFilter(name="hat", value="red")]), "hat"),
            (
                receiver_pb2.QueryRequest(filters=[receiver_pb2.FieldFilter(name="gender", value="robot")]),
                "robot",
            ),
            (
                receiver_pb2.QueryRequest(
                    filters=[receiver_pb2.FieldFilter(name="gender", value="male")], top_k=10**6
                ),
                "top_k",
            ),
            (receiver_pb2.QueryRequest(schema_id="animal/1"), "animal/1"),
        ]
        for request, needle in cases:
            with pytest.raises(aio.AioRpcError) as info:
                await stub.Query(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, needle
            assert needle in (info.value.details() or ""), info.value.details()
