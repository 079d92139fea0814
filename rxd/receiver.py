"""Turns incoming bursts into indexed records: demodulate, decode, check CRC, index, acknowledge."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from concurrent.futures import Executor

from prometheus_client import Counter, Gauge

from rxd.retrieval.engine import RetrievalEngine
from semcom.burst import ReceivedFrame, open_burst
from semcom.codec import decode_records
from semcom.errors import CrcError, DecodeError, SemcomError
from semcom.link.messages import AckStatus
from semcom.link.receiver import BurstArrival, Decoded, LinkReceiver, StreamStats
from semcom.pb.v1 import link_pb2
from semcom.record import Record
from semcom.schema import SchemaRegistry

__all__ = ["BurstReceiver", "StreamStats"]

log = logging.getLogger(__name__)

BURSTS = Counter("semcom_rxd_bursts_total", "Bursts received, by outcome", ["outcome"])
RECORDS = Counter("semcom_rxd_records_total", "Records, by outcome", ["outcome"])
LINK_BITS = Counter("semcom_rxd_link_bits_total", "Bits received on the link", ["kind"])
SNR = Gauge("semcom_rxd_snr_db", "Last SNR estimate (Es/N0, dB)")


class BurstReceiver:
    """Receives one burst at a time per stream; CPU-heavy decoding and indexing run on the executor."""

    def __init__(
        self,
        schemas: SchemaRegistry,
        engine: RetrievalEngine,
        executor: Executor,
        *,
        ldpc_iterations: int = 20,
    ) -> None:
        self.schemas = schemas
        self.engine = engine
        self.executor = executor
        self.ldpc_iterations = ldpc_iterations
        self.state = LinkReceiver()
        # Two connections can carry the same stream for a moment (a transmitter that reconnected while its
        # old call is still being answered): the duplicate check and the indexing must not interleave.
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @property
    def streams(self) -> dict[str, StreamStats]:
        return self.state.streams

    async def handle(self, burst: link_pb2.Burst) -> link_pb2.Feedback:
        arrival = BurstArrival.from_pb(burst)
        answer = self.state.arrive(arrival)
        if answer is not None:
            self._count_failed(arrival, answer.status, answer.detail)
            return answer.to_pb()
        loop = asyncio.get_running_loop()
        async with self._locks[arrival.stream_id]:
            try:
                received, records = await loop.run_in_executor(self.executor, self._decode, burst)
            except CrcError as err:
                return self._fail(arrival, AckStatus.CRC_FAILED, str(err))
            except SemcomError as err:
                return self._fail(arrival, AckStatus.REJECTED, str(err))
            decoded = Decoded.of(
                received.frame,
                len(records),
                snr_db=received.snr_db,
                pre_fec_ber=received.pre_fec_ber,
                channel_symbols=received.channel_symbols,
            )
            # A retransmission of a burst already indexed (its ack was lost): acknowledge again, index once.
            duplicate = self.state.is_duplicate(arrival, decoded)
            if not duplicate:
                try:
                    await loop.run_in_executor(self.executor, self._index, records)
                except SemcomError as err:
                    return self._fail(arrival, AckStatus.REJECTED, str(err))
            fb = self.state.accept(arrival, decoded)
        if fb.snr_db == fb.snr_db:
            SNR.set(fb.snr_db)
        LINK_BITS.labels("info").inc(arrival.info_bits)
        if not duplicate:
            BURSTS.labels("ok").inc()
            RECORDS.labels("indexed").inc(len(records))
            log.debug(
                "indexed stream_id=%s sequence=%d records=%d",
                arrival.stream_id,
                arrival.sequence,
                len(records),
            )
        return fb.to_pb()

    def _decode(self, burst: link_pb2.Burst) -> tuple[ReceivedFrame, list[Record]]:
        received = open_burst(burst, max_iter=self.ldpc_iterations)
        try:
            records = decode_records(received.frame, self.schemas, stream_id=burst.header.stream_id)
        except DecodeError as err:
            # Over a noisy link a frame that failed FEC is corruption, whatever the parser tripped on first.
            if received.blocks_failed and not isinstance(err, CrcError):
                raise CrcError(f"{err} ({received.blocks_failed} LDPC blocks failed)") from err
            raise
        if len(records) != burst.header.record_count:
            raise DecodeError(f"frame holds {len(records)} records, header says {burst.header.record_count}")
        return received, records

    def _index(self, records: list[Record]) -> None:
        self.engine.ingest(records)  # described, embedded and committed before the acknowledgement goes out

    def _fail(self, arrival: BurstArrival, status: AckStatus, detail: str) -> link_pb2.Feedback:
        self._count_failed(arrival, status, detail)
        return self.state.fail(arrival, status, detail).to_pb()

    def _count_failed(self, arrival: BurstArrival, status: AckStatus | None, detail: str) -> None:
        outcome = status.value if status is not None else "unspecified"
        BURSTS.labels(outcome).inc()
        RECORDS.labels("failed").inc(arrival.record_count)
        log.warning(
            "burst stream_id=%s sequence=%d failed (%s): %s",
            arrival.stream_id,
            arrival.sequence,
            outcome,
            detail,
        )
