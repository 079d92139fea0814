"""The link's receiving side as a state object: burst verdicts in, acknowledgements out, no I/O.

The owner opens each burst (demodulation, FEC, the frame's CRC) and indexes its records; this object
decides what happens around that: bursts with a bad header or dropped by the channel are answered without
decoding, a burst whose frame was already accepted is acknowledged again but not indexed again, and every
answer carries the stream's counts. A burst is the same burst when its sequence number and its frame's
digest agree, so a transmitter that restarted and numbers its bursts from 1 again is not taken for a
retransmission. The last `dedup_window` accepted bursts of each stream are remembered; a retransmission
only ever repeats a burst of the sender's window, which is far smaller.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass

from semcom.errors import InvalidInput
from semcom.ids import check_stream_id
from semcom.link.messages import AckStatus, Feedback
from semcom.pb.v1 import link_pb2

DEDUP_WINDOW = 8192


@dataclass(frozen=True)
class BurstArrival:
    """What a burst's header and channel trace say before it is decoded."""

    stream_id: str
    sequence: int
    record_count: int
    info_bits: int
    payload_bytes: int
    airtime_s: float = 0.0
    dropped: bool = False

    @classmethod
    def from_pb(cls, burst: link_pb2.Burst) -> BurstArrival:
        h = burst.header
        return cls(
            stream_id=h.stream_id,
            sequence=h.sequence,
            record_count=h.record_count,
            info_bits=h.info_bits,
            payload_bytes=len(burst.payload.data),
            airtime_s=burst.trace.airtime_s,
            dropped=burst.trace.dropped,
        )


@dataclass(frozen=True)
class Decoded:
    """What opening a burst measured: the frame's digest and record count, the channel's SNR and BER."""

    frame_digest: bytes
    record_count: int
    snr_db: float = math.nan
    pre_fec_ber: float = math.nan
    channel_symbols: int = 0

    @classmethod
    def of(
        cls,
        frame: bytes,
        record_count: int,
        *,
        snr_db: float = math.nan,
        pre_fec_ber: float = math.nan,
        channel_symbols: int = 0,
    ) -> Decoded:
        digest = hashlib.blake2b(frame, digest_size=16).digest()
        return cls(digest, record_count, snr_db, pre_fec_ber, channel_symbols)


@dataclass
class StreamStats:
    bursts_ok: int = 0
    bursts_failed: int = 0
    records_indexed: int = 0
    records_failed: int = 0
    records_conflicting: int = 0  # refused: the index holds a different record under the same id
    bursts_unauthenticated: int = 0  # forged, altered, from a site without a key here, or unsealed
    bursts_learned: int = 0  # accepted bursts sent in the learned mode (semcom.phy.learned_link)
    bursts_model_refused: int = 0  # learned bursts naming a model not held here, or other weights
    info_bits: int = 0
    channel_symbols: int = 0
    payload_bytes: int = 0
    snr_db: float = math.nan
    airtime_s: float = 0.0


class LinkReceiver:
    """Per-stream duplicate filter, acknowledgements and counts for every burst that arrives."""

    def __init__(self, *, dedup_window: int = DEDUP_WINDOW) -> None:
        self.dedup_window = dedup_window
        self.streams: dict[str, StreamStats] = defaultdict(StreamStats)
        self.rejected_ids = 0  # bursts refused for a stream id outside the id rules (counted nowhere else)
        self._accepted: dict[str, OrderedDict[tuple[int, bytes], None]] = defaultdict(OrderedDict)

    def arrive(self, burst: BurstArrival) -> Feedback | None:
        """Count a burst in; its answer when it needs no decoding (bad header, dropped), else None.

        A stream id that breaks the id rules (semcom.ids) is refused before anything is counted under it:
        the per-stream counts must not grow with every id a sender makes up, nor carry one to the page."""
        try:
            check_stream_id(burst.stream_id)
        except InvalidInput as err:
            self.rejected_ids += 1
            return self._answer(burst, StreamStats(), AckStatus.REJECTED, str(err), 0, math.nan, math.nan)
        stats = self.streams[burst.stream_id]
        stats.payload_bytes += burst.payload_bytes
        stats.airtime_s += burst.airtime_s
        if burst.sequence == 0:
            return self.fail(burst, AckStatus.REJECTED, "header needs stream_id and sequence > 0")
        if burst.dropped:
            return self.fail(burst, AckStatus.LOST, "the channel dropped the burst")
        return None

    def is_duplicate(self, burst: BurstArrival, decoded: Decoded) -> bool:
        """Whether this frame was already accepted under this sequence number (index it only if not)."""
        return (burst.sequence, decoded.frame_digest) in self._accepted[burst.stream_id]

    def accept(self, burst: BurstArrival, decoded: Decoded) -> Feedback:
        """The burst decoded (and, unless a duplicate, its records were indexed): count it, acknowledge it."""
        stats = self.streams[burst.stream_id]
        if not math.isnan(decoded.snr_db):
            stats.snr_db = decoded.snr_db
        stats.info_bits += burst.info_bits
        stats.channel_symbols += decoded.channel_symbols
        seen = self._accepted[burst.stream_id]
        key = (burst.sequence, decoded.frame_digest)
        if key not in seen:
            seen[key] = None
            if len(seen) > self.dedup_window:
                seen.popitem(last=False)
            stats.bursts_ok += 1
            stats.records_indexed += decoded.record_count
        return self._answer(
            burst, stats, AckStatus.OK, "", decoded.record_count, decoded.snr_db, decoded.pre_fec_ber
        )

    def fail(self, burst: BurstArrival, status: AckStatus, detail: str) -> Feedback:
        """The burst could not be used: count its records failed and say why."""
        stats = self.streams[burst.stream_id]
        stats.bursts_failed += 1
        stats.bursts_unauthenticated += status is AckStatus.UNAUTHENTICATED
        stats.records_failed += burst.record_count
        return self._answer(burst, stats, status, detail, 0, math.nan, math.nan)

    def _answer(
        self,
        burst: BurstArrival,
        stats: StreamStats,
        status: AckStatus,
        detail: str,
        records: int,
        snr_db: float,
        ber: float,
    ) -> Feedback:
        return Feedback(
            stream_id=burst.stream_id,
            sequence=burst.sequence,
            status=status,
            detail=detail,
            records_accepted=records,
            snr_db=snr_db,
            bit_error_rate=ber,
            bursts_ok=stats.bursts_ok,
            bursts_failed=stats.bursts_failed,
        )
