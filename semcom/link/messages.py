"""What the link's two sides tell each other about a burst, as plain data (protobuf only in converters)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from semcom.pb.v1 import link_pb2


class AckStatus(enum.Enum):
    """The receiver's verdict on one burst."""

    OK = "ok"
    CRC_FAILED = "crc_failed"  # decoded, but the frame's CRC did not match
    REJECTED = "rejected"  # malformed header or payload: sending it again will not help
    LOST = "lost"  # the channel dropped the burst
    UNAVAILABLE = "unavailable"  # rxd could not index it now (a backend failed): send it again later
    UNAUTHENTICATED = (
        "unauthenticated"  # the AEAD tag did not match, or the site holds no key at the receiver
    )


_TO_PB: dict[AckStatus, link_pb2.AckStatus.ValueType] = {
    AckStatus.OK: link_pb2.ACK_STATUS_OK,
    AckStatus.CRC_FAILED: link_pb2.ACK_STATUS_CRC_FAILED,
    AckStatus.REJECTED: link_pb2.ACK_STATUS_REJECTED,
    AckStatus.LOST: link_pb2.ACK_STATUS_LOST,
    AckStatus.UNAUTHENTICATED: link_pb2.ACK_STATUS_UNAUTHENTICATED,
    AckStatus.UNAVAILABLE: link_pb2.ACK_STATUS_UNAVAILABLE,
}
_FROM_PB = {v: k for k, v in _TO_PB.items()}


@dataclass(frozen=True)
class Feedback:
    """One message rx -> tx: an acknowledgement when `sequence` > 0, link quality, the task requirement.

    `snr_db` and `bit_error_rate` are NaN when the receiver has no estimate; `task_schema_id` is empty when
    the message does not (re)state the task.
    """

    stream_id: str = ""
    sequence: int = 0
    status: AckStatus | None = None
    detail: str = ""
    records_accepted: int = 0
    snr_db: float = math.nan
    bit_error_rate: float = math.nan
    bursts_ok: int = 0
    bursts_failed: int = 0
    task_schema_id: str = ""

    @classmethod
    def from_pb(cls, msg: link_pb2.Feedback) -> Feedback:
        quality = msg.HasField("quality")
        return cls(
            stream_id=msg.stream_id,
            sequence=msg.sequence,
            status=_FROM_PB.get(msg.status),
            detail=msg.detail,
            records_accepted=msg.records_accepted,
            snr_db=msg.quality.snr_db if quality else math.nan,
            bit_error_rate=msg.quality.bit_error_rate if quality else math.nan,
            bursts_ok=msg.quality.bursts_ok,
            bursts_failed=msg.quality.bursts_failed,
            task_schema_id=msg.task.schema_id if msg.HasField("task") else "",
        )

    def to_pb(self) -> link_pb2.Feedback:
        msg = link_pb2.Feedback(
            stream_id=self.stream_id,
            sequence=self.sequence,
            detail=self.detail,
            records_accepted=self.records_accepted,
            # Always written, NaN included: proto3 cannot tell an unset double from 0.0, a real estimate.
            quality=link_pb2.LinkQuality(
                snr_db=self.snr_db,
                bit_error_rate=self.bit_error_rate,
                bursts_ok=self.bursts_ok,
                bursts_failed=self.bursts_failed,
            ),
        )
        if self.status is not None:
            msg.status = _TO_PB[self.status]
        if self.task_schema_id:
            msg.task.schema_id = self.task_schema_id
        return msg
