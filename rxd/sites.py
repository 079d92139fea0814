"""The camera sites feeding this receiver: which site owns each stream, link state and counts per site.

Stream ids are unique across sites: the first site whose burst for a stream is accepted owns it, and a burst
of that stream from any other site is refused (REJECTED, saying which site owns it). That keeps every record
key (stream_id, record_id) and every clip route (stream -> site -> its backhaul) unambiguous. Ownership and
the counters are kept in the index database (rxd.site_store), so they survive a restart; counters are
written as increments, so replicas sharing one PostgreSQL index add up instead of overwriting each other.
The link's per-stream counts (semcom.link.receiver.StreamStats) are kept the same way: loaded at start, the
link counts on from them, and what it counted since the last flush is written as increments.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

from semcom.errors import InvalidInput
from semcom.link.receiver import StreamStats

log = logging.getLogger(__name__)


@dataclass
class SiteCounters:
    """What a site's bursts did here, since the index was created."""

    bursts_ok: int = 0
    bursts_failed: int = 0  # lost by the channel, failed FEC/CRC/tag or refused (txd sends most again)
    records_indexed: int = 0
    records_failed: int = 0  # records in failed bursts
    info_bits: int = 0  # frame bits of the bursts accepted (retransmissions included)
    payload_bytes: int = 0  # Burst payload bytes as received
    last_record_at_s: float = 0.0  # Unix time at which its last record was indexed here (0: never)
    last_seen_s: float = 0.0  # Unix time of its last burst

    def add(self, other: SiteCounters) -> None:
        """Add `other`'s counts; the times take the later one."""
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(a, b) if f.name.startswith("last_") else a + b)


COUNTER_NAMES = tuple(f.name for f in fields(SiteCounters))
# The link's per-stream counts: every one is added up, except the SNR, which is the last estimate.
STREAM_COUNTER_NAMES = tuple(f.name for f in fields(StreamStats))
LAST_VALUE = "snr_db"


def stream_increment(now: StreamStats, then: StreamStats) -> StreamStats | None:
    """What a stream counted from `then` to `now`, None when nothing; its SNR is `now`'s if it changed
    (NaN: keep the stored one)."""
    out, changed = StreamStats(), False
    for name in STREAM_COUNTER_NAMES:
        a, b = getattr(now, name), getattr(then, name)
        if name == LAST_VALUE:
            if not math.isnan(a) and (math.isnan(b) or a != b):
                out.snr_db, changed = a, True
        elif a != b:
            setattr(out, name, a - b)
            changed = True
    return out if changed else None


def add_stream(into: StreamStats, delta: StreamStats) -> None:
    """Add `delta`'s counts to `into`; a measured SNR in `delta` replaces `into`'s."""
    for name in STREAM_COUNTER_NAMES:
        value = getattr(delta, name)
        if name == LAST_VALUE:
            if not math.isnan(value):
                into.snr_db = value
        else:
            setattr(into, name, getattr(into, name) + value)


class SiteStore(Protocol):
    """Where ownership and counters persist: the index database (rxd.site_store)."""

    def load(self) -> tuple[dict[str, SiteCounters], dict[str, str]]:
        """Every site's counters and every stream's site."""

    def load_streams(self) -> dict[str, StreamStats]:
        """Every stream's link counts."""

    def save(
        self,
        deltas: dict[str, SiteCounters],
        claims: dict[str, str],
        streams: dict[str, StreamStats],
    ) -> dict[str, str]:
        """Add `deltas` to the stored site counters and `streams` to the stored stream counts, and record
        `claims` (stream -> site) not yet held; returns the owner the store holds for each claimed stream
        (another replica may have claimed it first)."""

    def close(self) -> None: ...


@dataclass
class SiteState:
    site_id: str
    counters: SiteCounters = field(default_factory=SiteCounters)
    links: int = 0  # Link.Transmit calls open now
    backhaul: bool = False  # a backhaul connection is open now


@dataclass(frozen=True)
class SiteView:
    """A site at one moment, for `semcom status` and the page."""

    site_id: str
    link_up: bool
    backhaul: bool
    streams: tuple[str, ...]
    counters: SiteCounters

    def to_json(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "link_up": self.link_up,
            "backhaul": self.backhaul,
            "streams": list(self.streams),
            **asdict(self.counters),
        }


class SiteBook:
    """Sites, stream ownership and counts (thread-safe: counted on the event loop, saved from a thread)."""

    def __init__(self, store: SiteStore | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self.sites: dict[str, SiteState] = {}
        self.owners: dict[str, str] = {}
        self.stored_streams: dict[str, StreamStats] = {}  # the link's counts per stream, as loaded
        self._deltas: dict[str, SiteCounters] = {}
        self._claims: dict[str, str] = {}
        self._live: Mapping[str, StreamStats] = {}  # the link's counts, counted on from the loaded ones
        self._taken: dict[str, StreamStats] = {}  # `_live` as it was at the last take_streams
        self._stream_deltas: dict[str, StreamStats] = {}
        if store is not None:
            counters, owners = store.load()
            self.sites = {sid: SiteState(sid, c) for sid, c in counters.items()}
            self.owners = dict(owners)
            self.stored_streams = store.load_streams()

    def _site(self, site_id: str) -> SiteState:
        return self.sites.setdefault(site_id, SiteState(site_id))

    def site_of(self, stream_id: str) -> str | None:
        """The site that owns `stream_id`, None when no site sent it yet."""
        return self.owners.get(stream_id)

    def streams_of(self, site_id: str) -> list[str]:
        return sorted(s for s, owner in self.owners.items() if owner == site_id)

    def check(self, site_id: str, stream_id: str) -> None:
        """InvalidInput when another site owns `stream_id`."""
        owner = self.owners.get(stream_id)
        if owner is not None and owner != site_id:
            raise InvalidInput(
                f"stream_id {stream_id!r} belongs to site {owner or '(unnamed)'!r}, not "
                f"{site_id or '(unnamed)'!r}: stream ids must be unique across sites"
            )

    def link_opened(self, site_id: str) -> None:
        with self._lock:
            self._site(site_id).links += 1

    def link_closed(self, site_id: str) -> None:
        with self._lock:
            site = self._site(site_id)
            site.links = max(0, site.links - 1)

    def set_backhaul(self, site_id: str, up: bool) -> None:
        with self._lock:
            self._site(site_id).backhaul = up

    def count(
        self,
        site_id: str,
        stream_id: str,
        *,
        ok: bool,
        new: bool,
        records: int,
        info_bits: int,
        payload_bytes: int,
    ) -> None:
        """One burst of `stream_id` from `site_id`: accepted (`ok`; `new` unless a retransmission of one
        already indexed) or failed. An accepted burst makes the site the stream's owner."""
        now = self.clock()
        delta = SiteCounters(info_bits=info_bits if ok else 0, payload_bytes=payload_bytes, last_seen_s=now)
        if ok and new:
            delta.bursts_ok, delta.records_indexed = 1, records
            if records:
                delta.last_record_at_s = now
        elif not ok:
            delta.bursts_failed, delta.records_failed = 1, records
        with self._lock:
            self._site(site_id).counters.add(delta)
            self._deltas.setdefault(site_id, SiteCounters()).add(delta)
            if ok and stream_id not in self.owners:
                self.owners[stream_id] = site_id
                self._claims[stream_id] = site_id
                log.info("site %r now owns stream_id=%s", site_id or "(unnamed)", stream_id)

    def follow_streams(self, streams: MutableMapping[str, StreamStats]) -> None:
        """Keep the link's per-stream counts (BurstReceiver.streams): each stored stream's counts are put
        in first, so that the link counts on from them and serves true totals after a restart; what it
        counts from now on is written as increments (take_streams, then flush)."""
        for stream_id, stored in self.stored_streams.items():
            streams[stream_id] = replace(stored)
        self._live = streams
        self._taken = {sid: replace(s) for sid, s in streams.items()}

    def take_streams(self) -> None:
        """Set aside what the link counted per stream since the last take, for the next flush. Call it
        on the event loop, where the link counts (a thread could read a burst half counted)."""
        taken = []
        for stream_id, now in list(self._live.items()):
            delta = stream_increment(now, self._taken.get(stream_id, StreamStats()))
            if delta is not None:
                taken.append((stream_id, delta))
                self._taken[stream_id] = replace(now)
        if taken:
            with self._lock:
                for stream_id, delta in taken:
                    add_stream(self._stream_deltas.setdefault(stream_id, StreamStats()), delta)

    def flush(self) -> None:
        """Write the increments and claims since the last flush (blocking: run it in a thread)."""
        with self._lock:
            deltas, claims, streams = self._deltas, self._claims, self._stream_deltas
            self._deltas, self._claims, self._stream_deltas = {}, {}, {}
        if self.store is None or not (deltas or claims or streams):
            return
        try:
            held = self.store.save(deltas, claims, streams)
        except Exception:
            with self._lock:  # kept for the next flush: nothing counted is lost to a failed write
                for sid, d in deltas.items():
                    self._deltas.setdefault(sid, SiteCounters()).add(d)
                self._claims = {**claims, **self._claims}
                for stream_id, sd in streams.items():
                    # The later increment on top of the earlier one: a newer SNR stays the last value.
                    newer = self._stream_deltas.get(stream_id)
                    merged = replace(sd)
                    if newer is not None:
                        add_stream(merged, newer)
                    self._stream_deltas[stream_id] = merged
            raise
        with self._lock:
            for stream_id, owner in held.items():
                if self.owners.get(stream_id) != owner:
                    log.warning("stream_id=%s: another replica gave it to site %r first", stream_id, owner)
                    self.owners[stream_id] = owner

    def snapshot(self) -> list[SiteView]:
        """Each site, by id: link and backhaul state, counters and streams."""
        with self._lock:
            return [
                SiteView(
                    s.site_id, s.links > 0, s.backhaul, tuple(self.streams_of(s.site_id)), replace(s.counters)
                )
                for _, s in sorted(self.sites.items())
            ]

    def close(self) -> None:
        """Write what is left, then close the store."""
        self.flush()
        if self.store is not None:
            self.store.close()
