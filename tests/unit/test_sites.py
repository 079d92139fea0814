"""Sites without servers: the handshake's checks, stream ownership, counters (per site and the link's per
stream) that survive a reopen, and fetch routing over the backhaul (a site not connected, a failure the
site reports, a connection lost)."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from pathlib import Path

import grpc
import pytest

from rxd.backhaul import Backhaul
from rxd.site_store import SqliteSiteStore
from rxd.sites import SiteBook, SiteCounters
from semcom.errors import InvalidInput, NotFound, PeerUnavailable, SiteNotConnected
from semcom.link.receiver import StreamStats
from semcom.link.site import (
    SITE_METADATA_KEY,
    backhaul_proof,
    check_burst_site,
    site_from_metadata,
    site_metadata,
)
from semcom.pb.v1 import sites_pb2, transmitter_pb2


def test_handshake_metadata_round_trip_and_bad_ids() -> None:
    assert site_from_metadata(site_metadata("site-7")) == "site-7"
    assert (
        site_metadata("") == () and site_from_metadata(None) == "" and site_from_metadata([("x", "y")]) == ""
    )
    for bad in ("../x", "a/b", " a", "é", "x" * 65, "a..b"):
        with pytest.raises(InvalidInput, match=r"site_id .* is not valid"):
            site_from_metadata([(SITE_METADATA_KEY, bad)])
    with pytest.raises(InvalidInput, match="given 2 times"):
        site_from_metadata([(SITE_METADATA_KEY, "a"), (SITE_METADATA_KEY, "b")])
    with pytest.raises(InvalidInput, match="must be text"):
        site_from_metadata([(SITE_METADATA_KEY, b"a")])
    assert InvalidInput.code == grpc.StatusCode.INVALID_ARGUMENT
    # A call that named a site takes only that site's bursts; an unnamed one (older txd) any one site's.
    assert check_burst_site("a", "a") is None and check_burst_site("", "b") is None
    assert "opened by site 'a'" in str(check_burst_site("a", "b"))


def _count(book: SiteBook, site: str, stream: str, *, ok: bool = True, records: int = 2) -> None:
    book.count(site, stream, ok=ok, new=ok, records=records, info_bits=100, payload_bytes=30)


def test_streams_are_owned_by_the_first_site_and_counts_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    clock = iter(float(t) for t in range(1000, 2000))
    book = SiteBook(SqliteSiteStore(path), clock=lambda: next(clock))
    _count(book, "a", "cam-1")
    _count(book, "a", "cam-1", ok=False, records=3)
    _count(book, "b", "cam-2")
    with pytest.raises(InvalidInput, match="'cam-1' belongs to site 'a', not 'b'"):
        book.check("b", "cam-1")
    book.check("a", "cam-1")
    book.check("b", "cam-new")  # nobody owns it yet
    # A failed burst claims nothing: a burst that did not open (a forgery, noise) proves no site.
    _count(book, "b", "cam-3", ok=False)
    assert book.site_of("cam-3") is None
    book.link_opened("a")
    book.close()

    again = SiteBook(SqliteSiteStore(path))
    views = {v.site_id: v for v in again.snapshot()}
    a = views["a"].counters
    assert (a.bursts_ok, a.bursts_failed, a.records_indexed, a.records_failed) == (1, 1, 2, 3)
    assert a.info_bits == 100 and a.payload_bytes == 60 and a.last_record_at_s == 1000.0
    assert a.last_seen_s == 1001.0
    assert not views["a"].link_up and views["a"].streams == ("cam-1",) and views["b"].streams == ("cam-2",)
    with pytest.raises(InvalidInput, match="belongs to site 'a'"):
        again.check("b", "cam-1")
    # Increments, not totals: a second writer (a replica) adds to what the first wrote.
    _count(again, "a", "cam-1")
    other = SiteBook(SqliteSiteStore(path))
    _count(other, "a", "cam-1")
    again.close()
    other.close()
    assert SiteBook(SqliteSiteStore(path)).sites["a"].counters.bursts_ok == 3


def _burst(stats: StreamStats, *, records: int = 2, snr_db: float = math.nan) -> None:
    """What the link counts for one burst accepted (semcom.link.receiver)."""
    stats.bursts_ok += 1
    stats.records_indexed += records
    stats.info_bits += 100
    stats.channel_symbols += 64
    stats.payload_bytes += 30
    stats.airtime_s += 0.25
    if not math.isnan(snr_db):
        stats.snr_db = snr_db


def _link(book: SiteBook) -> defaultdict[str, StreamStats]:
    live: defaultdict[str, StreamStats] = defaultdict(StreamStats)
    book.follow_streams(live)
    return live


def test_the_links_stream_counts_survive_a_reopen_and_replicas_add_up(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    book = SiteBook(SqliteSiteStore(path))
    live = _link(book)
    _burst(live["cam-1"], snr_db=7.5)
    live["cam-1"].bursts_failed += 1
    live["cam-1"].records_failed += 3
    live["cam-1"].bursts_unauthenticated += 1
    book.take_streams()
    book.flush()
    _burst(live["cam-1"])  # no SNR measured: the last one stays
    live["cam-1"].records_conflicting += 1
    _burst(live["cam-2"], records=1, snr_db=-2.0)
    live["cam-2"].bursts_learned += 1
    live["cam-2"].bursts_model_refused += 1
    book.take_streams()
    book.close()

    again = SiteBook(SqliteSiteStore(path))
    served = _link(again)  # the link counts on from the stored counts
    one, two = served["cam-1"], served["cam-2"]
    assert (one.bursts_ok, one.bursts_failed, one.records_indexed, one.records_failed) == (2, 1, 4, 3)
    assert (one.records_conflicting, one.bursts_unauthenticated, one.bursts_learned) == (1, 1, 0)
    assert (one.info_bits, one.channel_symbols, one.payload_bytes) == (200, 128, 60)
    assert one.airtime_s == pytest.approx(0.5) and one.snr_db == 7.5
    assert (two.bursts_ok, two.records_indexed, two.bursts_learned, two.bursts_model_refused) == (1, 1, 1, 1)
    assert two.snr_db == -2.0
    # Increments, not totals: this process and a replica that loaded the same counts each add theirs.
    replica = SiteBook(SqliteSiteStore(path))
    other = _link(replica)
    _burst(served["cam-1"], snr_db=9.0)
    _burst(other["cam-1"], records=5)
    for b in (again, replica):
        b.take_streams()
        b.take_streams()  # nothing new: nothing taken twice
        b.close()
    final = SiteBook(SqliteSiteStore(path)).stored_streams["cam-1"]
    assert (final.bursts_ok, final.records_indexed, final.info_bits, final.snr_db) == (4, 11, 400, 9.0)
    # A stream with no SNR ever measured keeps NaN (stored as NULL), not 0 dB.
    fresh = SiteBook(SqliteSiteStore(tmp_path / "other.db"))
    _burst(_link(fresh)["cam-3"])
    fresh.take_streams()
    fresh.close()
    assert math.isnan(SiteBook(SqliteSiteStore(tmp_path / "other.db")).stored_streams["cam-3"].snr_db)


class _FailingStore(SqliteSiteStore):
    fail = True

    def save(
        self, deltas: dict[str, SiteCounters], claims: dict[str, str], streams: dict[str, StreamStats]
    ) -> dict[str, str]:
        if self.fail:
            raise OSError("disk full")
        return super().save(deltas, claims, streams)


def test_a_failed_write_keeps_the_counts_for_the_next(tmp_path: Path) -> None:
    store = _FailingStore(tmp_path / "index.db")
    book = SiteBook(store)
    live = _link(book)
    _count(book, "a", "cam-1")
    _burst(live["cam-1"], snr_db=3.0)
    book.take_streams()
    with pytest.raises(OSError):
        book.flush()
    _count(book, "a", "cam-1")
    _burst(live["cam-1"])  # taken after the failed write: its SNR must not undo the one kept
    book.take_streams()
    store.fail = False
    book.close()
    reopened = SiteBook(SqliteSiteStore(tmp_path / "index.db"))
    assert reopened.sites["a"].counters.bursts_ok == 2 and reopened.site_of("cam-1") == "a"
    stream = reopened.stored_streams["cam-1"]
    assert (stream.bursts_ok, stream.records_indexed, stream.snr_db) == (2, 4, 3.0)


def test_routing_by_stream() -> None:
    book = SiteBook()
    backhaul = Backhaul(book)
    _count(book, "a", "cam-1")
    with pytest.raises(NotFound, match="no site has sent stream 'cam-9'"):
        backhaul.route("cam-9", fallback=False)
    with pytest.raises(SiteNotConnected, match="site 'a', which has no backhaul open") as err:
        backhaul.route("cam-1", fallback=False)
    assert isinstance(err.value, PeerUnavailable) and err.value.code == grpc.StatusCode.UNAVAILABLE
    assert backhaul.route("cam-1", fallback=True) is None  # transmitter.address serves it
    conn = backhaul.attach("a")
    assert backhaul.route("cam-1", fallback=False) == "a" and book.snapshot()[0].backhaul
    # The site reconnects before rxd saw the old connection die: the newest one serves, the old is closed.
    newer = backhaul.attach("a")
    assert conn.closed and backhaul.route("cam-1", fallback=True) == "a"
    backhaul.detach(conn)  # the old connection's end changes nothing
    assert backhaul.connected("a")
    backhaul.detach(newer)
    assert not backhaul.connected("a") and not book.snapshot()[0].backhaul


@pytest.mark.asyncio
async def test_answers_failures_and_a_lost_connection() -> None:
    backhaul = Backhaul(SiteBook())
    with pytest.raises(SiteNotConnected, match="site 'z' has no backhaul open"):
        await backhaul.status("z", 1.0)
    conn = backhaul.attach("a")

    async def site(answers: list[sites_pb2.SiteAnswer]) -> sites_pb2.SiteRequest:
        """The site's side: take one request and answer it."""
        request = await conn.requests.get()
        assert request is not None
        for a in answers:
            a.request_id = request.request_id
            conn.deliver(a)
        return request

    image = transmitter_pb2.KeyframeImage(content_type="image/jpeg", data=b"\xff\xd8jpeg")
    answering = asyncio.create_task(site([sites_pb2.SiteAnswer(keyframe=image, last=True)]))
    got = await backhaul.fetch_keyframe("a", transmitter_pb2.FetchKeyframeRequest(stream_id="c"), 5.0)
    assert got.data == image.data and (await answering).WhichOneof("kind") == "keyframe"

    failure = sites_pb2.SiteFailure(code="NOT_FOUND", message="no keyframe for record 9")
    answering = asyncio.create_task(site([sites_pb2.SiteAnswer(failure=failure)]))
    with pytest.raises(NotFound, match="no keyframe for record 9"):
        await backhaul.fetch_keyframe("a", transmitter_pb2.FetchKeyframeRequest(stream_id="c"), 5.0)
    await answering

    # No answer in time: UNAVAILABLE naming the site; the connection stays usable.
    with pytest.raises(PeerUnavailable, match=r"did not answer within 0\.05 s"):
        await backhaul.status("a", 0.05)
    await conn.requests.get()  # the request that went unanswered

    pending = asyncio.create_task(backhaul.status("a", 5.0))
    await asyncio.sleep(0)
    conn.close()
    with pytest.raises(SiteNotConnected, match="closed during the request"):
        await pending


def test_backhaul_proof_binds_key_site_and_challenge() -> None:
    key, other = bytes(32), bytes([1]) * 32
    proof = backhaul_proof(key, "site-a", b"c" * 16)
    assert len(proof) == 32 and proof == backhaul_proof(key, "site-a", b"c" * 16)
    assert proof != backhaul_proof(other, "site-a", b"c" * 16)
    assert proof != backhaul_proof(key, "site-b", b"c" * 16)
    assert proof != backhaul_proof(key, "site-a", b"d" * 16)
