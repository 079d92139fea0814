"""Site ownership and counters in a real PostgreSQL index: two replicas add up and agree on owners; the
link's per-stream counts survive a reopen and add up too."""

from __future__ import annotations

import math
from collections import defaultdict

import psycopg
import pytest

from rxd.site_store import PgSiteStore
from rxd.sites import SiteBook
from semcom.link.receiver import StreamStats
from tests.fixtures.postgres import pg_dsn, pg_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow


def test_two_replicas_add_counts_and_agree_on_stream_owners(pg_dsn: str) -> None:  # noqa: F811
    one = SiteBook(PgSiteStore(pg_dsn, connect_timeout_s=5), clock=lambda: 100.0)
    two = SiteBook(PgSiteStore(pg_dsn, connect_timeout_s=5), clock=lambda: 200.0)
    one.count("a", "cam-1", ok=True, new=True, records=3, info_bits=120, payload_bytes=40)
    two.count("a", "cam-1", ok=True, new=True, records=1, info_bits=40, payload_bytes=20)
    two.count("a", "cam-1", ok=False, new=False, records=2, info_bits=80, payload_bytes=20)
    one.flush()
    # Replica two saw cam-1 from another site before it heard of replica one's claim: the database's
    # owner wins, and replica two learns it at its flush.
    two.owners.clear()
    two.count("b", "cam-1", ok=True, new=True, records=1, info_bits=40, payload_bytes=20)
    two.flush()
    assert two.site_of("cam-1") == "a"
    one.close()
    two.close()
    reread = SiteBook(PgSiteStore(pg_dsn, connect_timeout_s=5))
    a = reread.sites["a"].counters
    assert (a.bursts_ok, a.bursts_failed, a.records_indexed, a.records_failed) == (2, 1, 4, 2)
    assert a.info_bits == 160 and a.payload_bytes == 80
    assert (a.last_record_at_s, a.last_seen_s) == (200.0, 200.0)
    assert reread.streams_of("a") == ["cam-1"] and reread.streams_of("b") == []
    reread.close()


def test_counts_wait_out_a_lost_connection(pg_dsn: str) -> None:  # noqa: F811
    book = SiteBook(PgSiteStore(pg_dsn, connect_timeout_s=5))
    book.count("a", "cam-1", ok=True, new=True, records=2, info_bits=80, payload_bytes=30)
    with psycopg.connect(pg_dsn, autocommit=True) as admin:  # the database drops rxd's connection
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with pytest.raises(psycopg.OperationalError):
        book.flush()
    book.flush()  # a fresh connection; nothing counted was lost
    book.close()
    reread = SiteBook(PgSiteStore(pg_dsn, connect_timeout_s=5))
    assert reread.sites["a"].counters.records_indexed == 2 and reread.site_of("cam-1") == "a"
    reread.close()


def test_the_links_stream_counts_survive_a_reopen_and_replicas_add_up(pg_dsn: str) -> None:  # noqa: F811
    def opened() -> tuple[SiteBook, defaultdict[str, StreamStats]]:
        book = SiteBook(PgSiteStore(pg_dsn, connect_timeout_s=5))
        live: defaultdict[str, StreamStats] = defaultdict(StreamStats)
        book.follow_streams(live)
        return book, live

    one, live_one = opened()
    two, live_two = opened()
    live_one["cam-1"].bursts_ok, live_one["cam-1"].records_indexed, live_one["cam-1"].snr_db = 2, 5, 6.5
    live_one["cam-1"].airtime_s, live_one["cam-1"].records_conflicting = 0.5, 1
    live_two["cam-1"].bursts_ok, live_two["cam-1"].bursts_failed, live_two["cam-1"].records_failed = 1, 1, 2
    live_two["cam-2"].bursts_unauthenticated, live_two["cam-2"].bursts_failed = 3, 3
    for book in (one, two):
        book.take_streams()
        book.close()
    again, served = opened()
    cam1, cam2 = served["cam-1"], served["cam-2"]
    assert (cam1.bursts_ok, cam1.bursts_failed, cam1.records_indexed, cam1.records_failed) == (3, 1, 5, 2)
    assert cam1.records_conflicting == 1 and cam1.airtime_s == 0.5 and cam1.snr_db == 6.5
    assert (cam2.bursts_unauthenticated, cam2.bursts_failed) == (3, 3) and math.isnan(cam2.snr_db)
    again.close()
