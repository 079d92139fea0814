"""Turns incoming bursts into indexed records: demodulate, check CRC and AEAD tag, decode, index, ack."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path

from prometheus_client import Counter, Gauge

from rxd.retrieval.engine import RetrievalEngine
from semcom.burst import ReceivedFrame, open_burst, open_learned_burst
from semcom.codec import AuthError, SealCheck, SiteKey, decode_records, read_key
from semcom.errors import CrcError, DecodeError, InvalidInput, SemcomError
from semcom.link.messages import AckStatus
from semcom.link.receiver import BurstArrival, Decoded, LinkReceiver, StreamStats
from semcom.pb.v1 import link_pb2
from semcom.phy.learned import LearnedModel, ModelMismatch, load_model_any
from semcom.record import Record
from semcom.schema import SchemaRegistry

__all__ = ["BurstReceiver", "StreamStats", "learned_models", "site_keys"]

log = logging.getLogger(__name__)

BURSTS = Counter("semcom_rxd_bursts_total", "Bursts received, by outcome", ["outcome"])
RECORDS = Counter("semcom_rxd_records_total", "Records, by outcome", ["outcome"])
LINK_BITS = Counter("semcom_rxd_link_bits_total", "Bits received on the link", ["kind"])
SNR = Gauge("semcom_rxd_snr_db", "Last SNR estimate (Es/N0, dB)")


def _crc_holds(frame: bytes) -> bool:
    return len(frame) > 4 and zlib.crc32(frame[:-4]) == int.from_bytes(frame[-4:], "big")


def site_keys(files: Mapping[str, Path]) -> dict[str, SiteKey]:
    """The key of each site rxd takes frames from, read from its key file."""
    return {site: SiteKey(read_key(path)) for site, path in files.items()}


def learned_models(names: Sequence[str], schemas: SchemaRegistry) -> dict[str, LearnedModel]:
    """The learned phy models rxd decodes learned bursts with, by the name their bursts carry; a model of
    a schema this receiver does not hold is left out (its bursts are refused and counted)."""
    out: dict[str, LearnedModel] = {}
    for name in names:
        try:
            model = load_model_any(name, schemas)
        except InvalidInput as err:
            log.warning("learned phy model %s not loaded: %s", name, err)
            continue
        out[model.name] = model
    return out


class BurstReceiver:
    """Receives one burst at a time per stream; CPU-heavy decoding and indexing run on the executor."""

    def __init__(
        self,
        schemas: SchemaRegistry,
        engine: RetrievalEngine,
        executor: Executor,
        *,
        ldpc_iterations: int = 20,
        keys: Mapping[str, SiteKey] | None = None,
        min_tag_bytes: int = 16,
        learned: Mapping[str, LearnedModel] | None = None,
    ) -> None:
        self.schemas = schemas
        # Models for bursts sent in the learned mode, by name (a burst's name is looked up, never opened).
        self.learned = dict(learned or {})
        # Empty: keyless mode, unsealed frames only. Else only sealed frames of these sites are taken.
        self.keys = dict(keys or {})
        self.min_tag_bytes = min_tag_bytes
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
        h = burst.header
        if self.keys and h.site_id not in self.keys:
            return self._fail(arrival, AckStatus.UNAUTHENTICATED, f"no key for site {h.site_id[:64]!r} here")
        seal = SealCheck(self.keys[h.site_id], h.epoch, h.sequence, self.min_tag_bytes) if self.keys else None
        loop = asyncio.get_running_loop()
        async with self._locks[arrival.stream_id]:
            try:
                received, records = await loop.run_in_executor(self.executor, self._decode, burst, seal)
            except AuthError as err:
                return self._fail(arrival, AckStatus.UNAUTHENTICATED, str(err))
            except ModelMismatch as err:  # sending again cannot help: the two sides hold other models
                self.state.streams[arrival.stream_id].bursts_model_refused += 1
                return self._fail(arrival, AckStatus.REJECTED, str(err))
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
            conflicts = 0
            if not duplicate:
                try:
                    conflicts = await loop.run_in_executor(self.executor, self._index, records)
                except InvalidInput as err:  # the records themselves are wrong: sending again cannot help
                    return self._fail(arrival, AckStatus.REJECTED, str(err))
                except SemcomError as err:  # a backend failed: the records are good, kept by txd for later
                    return self._fail(arrival, AckStatus.UNAVAILABLE, str(err))
            if conflicts:
                self.state.streams[arrival.stream_id].records_conflicting += conflicts
                RECORDS.labels("conflicting").inc(conflicts)
                log.error(
                    "stream_id=%s sequence=%d: %d records refused: other records hold their ids",
                    arrival.stream_id,
                    arrival.sequence,
                    conflicts,
                )
            fb = self.state.accept(arrival, decoded)
        if fb.snr_db == fb.snr_db:
            SNR.set(fb.snr_db)
        LINK_BITS.labels("info").inc(arrival.info_bits)
        if not duplicate:
            if h.learned_model:
                self.state.streams[arrival.stream_id].bursts_learned += 1
            BURSTS.labels("ok").inc()
            RECORDS.labels("indexed").inc(len(records))
            log.debug(
                "indexed stream_id=%s sequence=%d records=%d",
                arrival.stream_id,
                arrival.sequence,
                len(records),
            )
        return fb.to_pb()

    def _decode(self, burst: link_pb2.Burst, seal: SealCheck | None) -> tuple[ReceivedFrame, list[Record]]:
        if burst.header.learned_model:
            return self._decode_learned(burst, seal)
        received = open_burst(burst, max_iter=self.ldpc_iterations)
        try:
            records = decode_records(
                received.frame, self.schemas, stream_id=burst.header.stream_id, seal=seal
            )
        except DecodeError as err:
            # Over a noisy link a frame that failed FEC, or whose CRC does not hold, is corruption, whatever
            # the parser tripped on first (a version byte hit by noise): the sender may send it again. A tag
            # that fails on a frame whose CRC held is a forgery (or the wrong key), not noise.
            if isinstance(err, CrcError | AuthError):
                raise
            if received.blocks_failed:
                raise CrcError(f"{err} ({received.blocks_failed} LDPC blocks failed)") from err
            if not _crc_holds(received.frame):
                raise CrcError(f"{err} (and the frame's CRC does not hold)") from err
            raise
        if len(records) != burst.header.record_count:
            raise DecodeError(f"frame holds {len(records)} records, header says {burst.header.record_count}")
        return received, records

    def _decode_learned(
        self, burst: link_pb2.Burst, seal: SealCheck | None
    ) -> tuple[ReceivedFrame, list[Record]]:
        """A learned burst: delivered when its digital header's CRC holds; its field values arrive with the
        decoder's confidence. The header frame identifies it (retransmissions repeat it; their noisy field
        values need not agree)."""
        if seal is not None:
            raise AuthError(
                "learned bursts carry field values that no AEAD tag covers; this receiver holds site keys "
                "and takes sealed frames only"
            )
        opened = open_learned_burst(burst, self.learned, self.schemas, max_iter=self.ldpc_iterations)
        if len(opened.records) != burst.header.record_count:
            raise DecodeError(
                f"frame holds {len(opened.records)} records, header says {burst.header.record_count}"
            )
        return opened.received, opened.records

    def _index(self, records: list[Record]) -> int:
        # Described, embedded and committed (synchronous=FULL) before the acknowledgement goes out.
        return self.engine.ingest(records)

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
