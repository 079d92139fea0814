"""The link's protocol state with no I/O: the sending side (outbox, window, resend) and the receiving side."""

from semcom.link.messages import AckStatus, Feedback
from semcom.link.outbox import MemoryOutbox, Outbox, RecordKey
from semcom.link.receiver import BurstArrival, Decoded, LinkReceiver, StreamStats
from semcom.link.sender import LinkStats, OutBurst, SenderConfig, SenderMetrics, SendState

__all__ = [
    "AckStatus",
    "BurstArrival",
    "Decoded",
    "Feedback",
    "LinkReceiver",
    "LinkStats",
    "MemoryOutbox",
    "OutBurst",
    "Outbox",
    "RecordKey",
    "SendState",
    "SenderConfig",
    "SenderMetrics",
    "StreamStats",
]
