"""A 9.6 kbit/s link really is slow (channel-sim paces bursts by their airtime), txd pushes back on its
callers when its queue is full, and every record accepted still arrives once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc import aio

from semcom.pb.v1 import transmitter_pb2, transmitter_pb2_grpc
from semcom.record import Record
from tests.conftest import start_chain, stop_chain
from tests.fixtures.link import wait_indexed

RATE_BPS = 9600.0
RECORDS = 60
COLOURS = ["red", "blue", "white", "black", "green", "grey"]


async def _announce_with_retry(address: str, n: int) -> tuple[list[int], int]:
    """Announce n records, retrying each one txd refuses (RESOURCE_EXHAUSTED) as a well-behaved caller
    does; returns the ids given and how many refusals were met."""
    refused = 0
    ids: list[int] = []
    async with aio.insecure_channel(address) as ch:
        stub = transmitter_pb2_grpc.TransmitterStub(ch)
        for i in range(n):
            fields = {"gender": "male" if i % 2 else "female", "upper_color": COLOURS[i % len(COLOURS)]}
            rec = Record("person/1", "slow-link", i + 1, 0, 1_700_000_000.0 + i, 2, fields)
            request = transmitter_pb2.AnnounceRequest(record=rec.to_pb())
            while True:
                try:
                    reply = await stub.Announce(request, timeout=10)
                except aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
                    refused += 1
                    await asyncio.sleep(0.05)  # the caller's backoff, not a synchronisation
                    continue
                ids.append(reply.record_id)
                break
    return ids, refused


@pytest.mark.asyncio
@pytest.mark.slow
async def test_slow_link_pushes_back_and_loses_nothing(tmp_path: Path) -> None:
    chain = await start_chain(
        tmp_path,
        mcs="qpsk/ldpc_r12",
        models=[{"kind": "rate_limit", "bps": RATE_BPS}],
        txd_set=["link.max_queued_records=8", "link.max_records_per_burst=4", "link.window=2"],
    )
    try:
        t0 = time.monotonic()
        ids, refused = await _announce_with_retry(chain.txd_address, RECORDS)
        stats = await wait_indexed(chain.rxd_address, RECORDS, timeout_s=120)
        wall_s = time.monotonic() - t0
        (stream,) = stats.streams
        print(
            f"{RECORDS} records over {RATE_BPS:.0f} bit/s: {refused} refusals, "
            f"airtime {stream.airtime_s:.2f} s, wall {wall_s:.2f} s, {stats.records_indexed} indexed, "
            f"{chain.txd.link.stats.records_lost} lost"
        )
        # Backpressure: the queue of 8 filled and callers were told to retry...
        assert refused > 0
        # ...and nothing was lost or numbered twice: every record indexed once, ids 1..N.
        assert sorted(ids) == list(range(1, RECORDS + 1))
        assert stats.records_indexed == RECORDS and stats.records_failed == 0
        tx = chain.txd.link.stats
        assert tx.records_lost == 0 and tx.records_acked == RECORDS
        # Paced: the bursts took at least their airtime (channel bits / 9600 bit/s), one after another.
        assert stream.airtime_s == pytest.approx(2 * stream.channel_symbols / RATE_BPS)
        assert wall_s >= 0.95 * stream.airtime_s > 1.0
    finally:
        await stop_chain(chain)
