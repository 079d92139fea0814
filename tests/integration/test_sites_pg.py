"""Site ownership and counters in a real PostgreSQL index: two replicas add up and agree on owners."""

from __future__ import annotations

import psycopg
import pytest

from rxd.site_store import PgSiteStore
from rxd.sites import SiteBook
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
