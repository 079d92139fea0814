"""Sites without servers: the handshake's checks, stream ownership, counters that survive a reopen, and
fetch routing over the backhaul (a site not connected, a failure the site reports, a connection lost)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from rxd.backhaul import Backhaul
from rxd.site_store import SqliteSiteStore
from rxd.sites import SiteBook, SiteCounters
from semcom.errors import InvalidInput, NotFound, PeerUnavailable, SiteNotConnected
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


class _FailingStore(SqliteSiteStore):
    fail = True

    def save(self, deltas: dict[str, SiteCounters], claims: dict[str, str]) -> dict[str, str]:
        if self.fail:
            raise OSError("disk full")
        return super().save(deltas, claims)


def test_a_failed_write_keeps_the_counts_for_the_next(tmp_path: Path) -> None:
    store = _FailingStore(tmp_path / "index.db")
    book = SiteBook(store)
    _count(book, "a", "cam-1")
    with pytest.raises(OSError):
        book.flush()
    _count(book, "a", "cam-1")
    store.fail = False
    book.close()
    reopened = SiteBook(SqliteSiteStore(tmp_path / "index.db"))
    assert reopened.sites["a"].counters.bursts_ok == 2 and reopened.site_of("cam-1") == "a"


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
