"""Turns incoming bursts into indexed records: demodulate, decode, check CRC, index, acknowledge."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from concurrent.futures import Executor
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from rxd.retrieval.engine import RetrievalEngine
from semcom.burst import ReceivedFrame, open_burst
from semcom.codec import decode_records
from semcom.errors import CrcError, DecodeError, SemcomError
from semcom.pb.v1 import link_pb2
from semcom.record import Record
from semcom.schema import SchemaRegistry

log = logging.getLogger(__name__)

BURSTS = Counter("semcom_rxd_bursts_total", "Bursts received, by outcome", ["outcome"])
RECORDS = Counter("semcom_rxd_records_total", "Records, by outcome", ["outcome"])
LINK_BITS = Counter("semcom_rxd_link_bits_total", "Bits received on the link", ["kind"])
SNR = Gauge("semcom_rxd_snr_db", "Last SNR estimate (Es/N0, dB)")

_DEDUP_WINDOW = 8192


@dataclass
class StreamStats:
    bursts_ok: int = 0
    bursts_failed: int = 0
    records_indexed: int = 0
    records_failed: int = 0
    info_bits: int = 0
    channel_symbols: int = 0
    payload_bytes: int = 0
    snr_db: float = math.nan
    airtime_s: float = 0.0
    accepted: set[int] = field(default_factory=set)


class BurstReceiver:
    """Receives one burst at a time per stream; CPU-heavy decoding runs on the executor."""

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
        self.streams: dict[str, StreamStats] = defaultdict(StreamStats)

    async def handle(self, burst: link_pb2.Burst) -> link_pb2.Feedback:
        h = burst.header
        stats = self.streams[h.stream_id]
        stats.payload_bytes += len(burst.payload.data)
        stats.airtime_s += burst.trace.airtime_s
        fb = link_pb2.Feedback(stream_id=h.stream_id, sequence=h.sequence)
        if not h.stream_id or h.sequence == 0:
            return self._fail(
                fb, stats, h, link_pb2.ACK_STATUS_REJECTED, "header needs stream_id and sequence > 0"
            )
        if burst.trace.dropped:
            return self._fail(fb, stats, h, link_pb2.ACK_STATUS_LOST, "the channel dropped the burst")
        loop = asyncio.get_running_loop()
        try:
            received, records = await loop.run_in_executor(self.executor, self._decode, burst)
        except CrcError as err:
            return self._fail(fb, stats, h, link_pb2.ACK_STATUS_CRC_FAILED, str(err))
        except SemcomError as err:
            return self._fail(fb, stats, h, link_pb2.ACK_STATUS_REJECTED, str(err))
        if received.snr_db == received.snr_db:
            stats.snr_db = received.snr_db
            SNR.set(received.snr_db)
            fb.quality.snr_db = received.snr_db
        fb.quality.bit_error_rate = received.pre_fec_ber
        stats.info_bits += h.info_bits
        stats.channel_symbols += received.channel_symbols
        LINK_BITS.labels("info").inc(h.info_bits)
        fb.status = link_pb2.ACK_STATUS_OK
        fb.records_accepted = len(records)
        if h.sequence in stats.accepted:
            return fb  # a retransmission of a burst already indexed (its ack was lost): ack again, count once
        stats.accepted.add(h.sequence)
        if len(stats.accepted) > _DEDUP_WINDOW:
            # Retransmissions only repeat bursts inside the sender's window, so old sequences can go.
            stats.accepted = {seq for seq in stats.accepted if seq > h.sequence - _DEDUP_WINDOW // 2}
        stats.bursts_ok += 1
        stats.records_indexed += len(records)
        BURSTS.labels("ok").inc()
        RECORDS.labels("indexed").inc(len(records))
        fb.quality.bursts_ok = stats.bursts_ok
        fb.quality.bursts_failed = stats.bursts_failed
        log.debug("indexed stream_id=%s sequence=%d records=%d", h.stream_id, h.sequence, len(records))
        return fb

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
        self.engine.ingest(records)  # described, embedded and committed before the acknowledgement goes out
        return received, records

    def _fail(
        self,
        fb: link_pb2.Feedback,
        stats: StreamStats,
        h: link_pb2.BurstHeader,
        status: link_pb2.AckStatus.ValueType,
        detail: str,
    ) -> link_pb2.Feedback:
        stats.bursts_failed += 1
        stats.records_failed += h.record_count
        outcome = link_pb2.AckStatus.Name(status).removeprefix("ACK_STATUS_").lower()
        BURSTS.labels(outcome).inc()
        RECORDS.labels("failed").inc(h.record_count)
        log.warning(
            "burst stream_id=%s sequence=%d failed (%s): %s", h.stream_id, h.sequence, outcome, detail
        )
        fb.status = status
        fb.detail = detail
        fb.quality.bursts_ok = stats.bursts_ok
        fb.quality.bursts_failed = stats.bursts_failed
        return fb
