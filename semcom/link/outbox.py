"""Where the sender keeps records from acceptance until their burst is acknowledged or given up."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import Protocol

from semcom.record import Record

RecordKey = tuple[str, int]
"""A record's identity on the link: (stream_id, record_id)."""

Mark = tuple[str, int]
"""(upload key, n): the record is the n-th (from 0) that the analysis of that upload emitted."""


def record_key(record: Record) -> RecordKey:
    return (record.stream_id, record.record_id)


class Outbox(Protocol):
    """The records a sender has accepted and not yet settled.

    A record is *waiting* from `add` until `take` hands it to the framer, then *in flight* until `settle`.
    A durable outbox writes in `add` before returning (so an accepted record survives a restart), deletes
    in `settle`, and after a restart offers every unsettled record as waiting again.

    `epoch` numbers the sender's lifetimes (a durable outbox counts its openings, so no two runs share one:
    frame nonces are built from it); `next_record_id` is the id a stream's next record takes, which never
    goes back, not even across a restart.
    """

    @property
    def epoch(self) -> int:
        """This lifetime's number: 0 for an outbox in memory, 1, 2, ... for each opening of a durable one."""

    def next_record_id(self, stream_id: str) -> int:
        """The id the stream's next record takes: one past the highest ever added (1 for a new stream)."""

    def add(self, record: Record, mark: Mark | None = None) -> None:
        """Accept one record; it is waiting from now on. `mark`, kept with it in one step, says which
        record of which upload it is (see `emitted`)."""

    def emitted(self, upload_key: str) -> list[int]:
        """The ids of the records accepted with a mark of this upload, in order: what a repeated
        analysis of the same upload has sent already (and must not send again)."""

    def upload_start_s(self, upload_key: str, start_time_s: float) -> float:
        """The start time the upload was first analysed with (recorded now when it is new)."""

    def forget_upload(self, upload_key: str) -> None:
        """The upload completed: the same bytes uploaded again later are a new upload."""

    def waiting_streams(self) -> list[str]:
        """Streams with waiting records, in the order their first waiting record arrived."""

    def take(self, stream_id: str) -> list[Record]:
        """The stream's waiting records, oldest first; they are in flight from now on."""

    def settle(self, keys: Iterable[RecordKey]) -> None:
        """Forget records that were acknowledged or given up."""

    def __len__(self) -> int:
        """Records accepted and not yet settled (waiting or in flight)."""


class RecordQueue:
    """The waiting and in-flight bookkeeping every outbox shares: `take` moves a stream's waiting records in
    flight, `_release` settles keys that are in flight and returns those it settled."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[str, list[Record]] = OrderedDict()
        # A multiset: nothing here relies on callers never reusing a record id.
        self._in_flight: Counter[RecordKey] = Counter()
        self._count = 0

    def _enqueue(self, record: Record) -> None:
        self._waiting.setdefault(record.stream_id, []).append(record)
        self._count += 1

    def waiting_streams(self) -> list[str]:
        return list(self._waiting)

    def take(self, stream_id: str) -> list[Record]:
        records = self._waiting.pop(stream_id, [])
        self._in_flight.update(record_key(r) for r in records)
        return records

    def _release(self, keys: Iterable[RecordKey]) -> list[RecordKey]:
        settled = []
        for key in keys:
            held = self._in_flight.get(key, 0)
            if held == 0:
                continue
            if held == 1:
                del self._in_flight[key]
            else:
                self._in_flight[key] = held - 1
            self._count -= 1
            settled.append(key)
        return settled

    def __len__(self) -> int:
        return self._count


class MemoryOutbox(RecordQueue):
    """An outbox in memory: what a restart loses, the durable outbox will keep."""

    def __init__(self) -> None:
        super().__init__()
        self._next_ids: dict[str, int] = {}
        self._emitted: dict[str, list[int]] = {}
        self._starts: dict[str, float] = {}

    @property
    def epoch(self) -> int:
        return 0

    def next_record_id(self, stream_id: str) -> int:
        return self._next_ids.get(stream_id, 1)

    def emitted(self, upload_key: str) -> list[int]:
        return list(self._emitted.get(upload_key, []))

    def upload_start_s(self, upload_key: str, start_time_s: float) -> float:
        return self._starts.setdefault(upload_key, start_time_s)

    def forget_upload(self, upload_key: str) -> None:
        self._starts.pop(upload_key, None)
        self._emitted.pop(upload_key, None)

    def add(self, record: Record, mark: Mark | None = None) -> None:
        if mark is not None:
            self._emitted.setdefault(mark[0], []).append(record.record_id)
        sid = record.stream_id
        self._next_ids[sid] = max(self._next_ids.get(sid, 1), record.record_id + 1)
        self._enqueue(record)

    def settle(self, keys: Iterable[RecordKey]) -> None:
        self._release(keys)
