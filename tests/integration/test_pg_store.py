"""The PostgreSQL index on a real server: SQLite's answers, replicas on one database, and its failures."""

from __future__ import annotations

import dataclasses
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import yaml
from pydantic import ValidationError

from rxd.config import IndexConfig, RxdConfig
from rxd.receiver import BurstReceiver
from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.engine import Query, QueryResult, RetrievalEngine
from rxd.retrieval.index import open_index
from rxd.retrieval.pg_schema import SCHEMA_VERSION, IndexUnavailable, SchemaMismatch
from rxd.retrieval.pg_store import PgStore
from rxd.retrieval.store import RecordStore
from semcom.config import load_config
from semcom.errors import BackendFailed, SemcomError
from semcom.pb.v1 import link_pb2
from semcom.record import Record
from semcom.schema import SchemaRegistry
from tests.fixtures.link_sim import person as link_person
from tests.fixtures.postgres import PgServer, pg_dsn, pg_server  # noqa: F401  (fixtures)
from tests.fixtures.records import BagOfWordsEncoder, person
from tests.unit.test_deploy_manifests import interpolate
from tests.unit.test_link_receiver import burst

REGISTRY = SchemaRegistry.builtin()
PERSON, PERSON2 = REGISTRY.get("person/1"), REGISTRY.get("person/2")


def _engine(store: RecordStore | PgStore) -> RetrievalEngine:
    return RetrievalEngine(REGISTRY, store, TemplateDescriber(), BagOfWordsEncoder())


def _people(n: int, seed: int) -> list[Record]:
    """person/1 records and person/2 ones with stated confidences (few values: many ties)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        schema = rng.choice([PERSON, PERSON2])
        fields = {f.name: rng.choice(f.values[:4]) for f in schema.fields}
        conf = {k: rng.choice([0.25, 0.5, 0.75, 1.0]) for k in fields if rng.random() < 0.7}
        stream = f"cam{rng.randrange(3)}"
        time_s = float(rng.randrange(500))
        out.append(
            Record(
                schema.id,
                stream,
                i % 4096,
                i,
                time_s,
                rng.randrange(8),
                fields,
                conf if schema is PERSON2 else {},
            )
        )
    return out


def _key(result: QueryResult) -> list[tuple[str, int, float]]:
    return [(h.record.stream_id, h.record.record_id, h.probability) for h in result.hits]


def _random_query(rng: random.Random) -> Query:
    schema = rng.choice([PERSON, PERSON2])
    fields = rng.sample(schema.field_names, rng.randint(0, 3))
    return Query(
        filters={f: rng.choice(schema.field(f).values[1:4]) for f in fields} if fields else {},
        text="" if fields else "a person",
        schema_id=schema.id,
        stream_id=rng.choice(["", "", "cam1", "cam9"]),
        location_ids=tuple(rng.sample(range(10), rng.randint(0, 3))),
        t0_s=rng.choice([0.0, 100.0, 350.0]),
        t1_s=rng.choice([0.0, 400.0]),
        top_k=rng.choice([1, 5, 50, 400]),
        min_probability=rng.choice([0.0, 0.0, 0.3]),
    )


def test_postgres_answers_as_sqlite_does(pg_dsn: str, tmp_path: Path) -> None:  # noqa: F811
    """The store contract, by comparison: 60 seeded random queries (filters, streams, places, times, top_k,
    min_probability, person/1 and person/2 with confidences) before and after retransmissions."""
    records = _people(1500, seed=5)
    sqlite, pg = RecordStore(tmp_path / "index.db", REGISTRY), PgStore(pg_dsn, REGISTRY, refresh_s=0.0)
    engines = [_engine(sqlite), _engine(pg)]
    rng = random.Random(6)
    for step in range(60):
        if step in (0, 30):
            more = records[:1000] if step == 0 else records[1000:]
            changed = [
                dataclasses.replace(r, time_s=r.time_s + 1000.0) for r in rng.sample(records[:1000], 40)
            ]
            conflicts = [e.ingest(more + (changed if step else [])) for e in engines]
            assert conflicts[0] == conflicts[1] == (40 if step else 0)
        query = _random_query(rng)
        lite, post = (e.query(query) for e in engines)
        assert _key(post) == _key(lite), query
        assert [h.slot_scores for h in post.hits] == [h.slot_scores for h in lite.hits]
    assert pg.count() == sqlite.count() == 1500 and pg.conflicts == sqlite.conflicts == 40
    assert pg.description_count() == sqlite.description_count()
    for rec in rng.sample(records, 20):
        got_pg, got_lite = pg.get(rec.stream_id, rec.record_id), sqlite.get(rec.stream_id, rec.record_id)
        assert got_pg is not None and got_lite is not None and got_pg.record == got_lite.record == rec
    pg.close()
    sqlite.close()


def test_reopen_restores_without_re_embedding(pg_dsn: str) -> None:  # noqa: F811
    records = _people(300, seed=1)
    store = PgStore(pg_dsn, REGISTRY)
    _engine(store).ingest(records)
    before = _engine(store).query(Query(text="a man in a white shirt", schema_id=PERSON.id, top_k=20))
    store.close()
    encoder = BagOfWordsEncoder()
    again = PgStore(pg_dsn, REGISTRY)
    engine = RetrievalEngine(REGISTRY, again, TemplateDescriber(), encoder)
    assert again.count() == 300
    assert engine.ingest(records) == 0 and encoder.calls == 0 and again.count() == 300
    assert _key(engine.query(Query(text="a man in a white shirt", schema_id=PERSON.id, top_k=20))) == _key(
        before
    )
    again.close()


def test_two_replicas_share_one_index(pg_dsn: str) -> None:  # noqa: F811
    """Each replica indexes half the bursts (descriptions met by both get one id); both answer alike, and a
    record one indexes is found by the other's next query (refresh_s = 0; the default delay is 1 s)."""
    a, b = PgStore(pg_dsn, REGISTRY, refresh_s=0.0), PgStore(pg_dsn, REGISTRY, refresh_s=0.0)
    ea, eb = _engine(a), _engine(b)
    records = _people(1200, seed=9)
    for i in range(0, 1200, 100):
        (ea if i % 200 else eb).ingest(records[i : i + 100])
    assert (
        eb.ingest(records[:50]) == 0 and ea.ingest(records[100:150]) == 0
    )  # retransmissions across replicas
    (n_desc,) = psycopg.connect(pg_dsn).execute("SELECT count(*) FROM descriptions").fetchone() or (0,)
    assert a.description_count() == b.description_count() == n_desc
    rng = random.Random(3)
    for _ in range(30):
        query = _random_query(rng)
        assert _key(ea.query(query)) == _key(eb.query(query)), query
    fresh = person(5000, gender="female", upper_color="green", sleeve="short")
    ea.ingest([fresh])
    hits = eb.query(
        Query(filters={"upper_color": "green", "sleeve": "short"}, schema_id=PERSON.id, top_k=1)
    ).hits
    assert hits and (hits[0].record.stream_id, hits[0].record.record_id) == ("cam1", fresh.record_id)
    assert a.count() == b.count() == 1201
    slow = PgStore(pg_dsn, REGISTRY, refresh_s=3600.0)  # sees what was there when it opened, then polls
    ea.ingest([person(5001, gender="female", upper_color="green", sleeve="short")])
    assert slow.count() == 1201 and b.count() == 1202
    for store in (a, b, slow):
        store.close()


def test_retention_drops_old_partitions(pg_dsn: str) -> None:  # noqa: F811
    now = [1000.0]
    store = PgStore(
        pg_dsn, REGISTRY, partition_s=100.0, retention_days=300.0 / 86_400.0, clock=lambda: now[0]
    )
    engine = _engine(store)
    engine.ingest([person(i, time_s=float(t)) for i, t in enumerate([650, 720, 810, 950, 990])])
    assert store.count() == 5
    now[0] = 1100.0  # cutoff 800: the partitions [600, 700) and [700, 800) go
    assert store.apply_retention() == 2 and store.count() == 3
    hits = engine.query(Query(text="a person", schema_id=PERSON.id, top_k=10)).hits
    assert sorted(h.record.record_id for h in hits) == [2, 3, 4]
    store.close()


def test_wrong_dsn_is_a_clear_error(pg_server: PgServer) -> None:  # noqa: F811
    with pytest.raises(IndexUnavailable, match="cannot connect to the index database") as err:
        PgStore(
            f"host=127.0.0.1 port={pg_server.port} user=postgres password=hunter2 dbname=nowhere", REGISTRY
        )
    assert "nowhere" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(IndexUnavailable, match="not valid"):
        PgStore("host=127.0.0.1 port", REGISTRY)
    with pytest.raises(ValidationError, match=r"needs index\.dsn or index\.dsn_file"):
        RxdConfig.model_validate({"index": {"kind": "postgres"}})
    cfg = IndexConfig.model_validate({"kind": "postgres", "dsn": "host=127.0.0.1 port=1 dbname=x"})
    with pytest.raises(IndexUnavailable, match="port=1"):
        open_index(cfg, REGISTRY)


def test_an_older_rxd_refuses_a_newer_schema(pg_dsn: str) -> None:  # noqa: F811
    PgStore(pg_dsn, REGISTRY).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO semcom_schema VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaMismatch, match=f"schema version {SCHEMA_VERSION + 1}, newer than this rxd's"):
        PgStore(pg_dsn, REGISTRY)


def test_a_database_that_goes_away_loses_nothing(pg_server: PgServer, pg_dsn: str) -> None:  # noqa: F811
    """Down mid-stream: ingest fails with IndexUnavailable (not a SemcomError, so rxd acknowledges nothing:
    see rxd.receiver) and stores nothing; queries fail as BackendFailed; once it is back the same store
    connects again and the burst sent again is stored whole."""
    store = PgStore(pg_dsn, REGISTRY, refresh_s=0.0)
    engine = _engine(store)
    records = _people(200, seed=4)
    engine.ingest(records[:100])
    pg_server.stop()
    try:
        with pytest.raises(IndexUnavailable, match=r"went away|cannot connect") as err:
            engine.ingest(records[100:])
        assert not isinstance(err.value, SemcomError)
        with pytest.raises(BackendFailed):
            engine.query(Query(text="a person", schema_id=PERSON.id))
    finally:
        pg_server.start()
    assert engine.ingest(records[100:]) == 0  # what the transmitter sends again
    assert engine.ingest(records[150:]) == 0  # and a retransmission of a part of it: stored once
    assert store.count() == 200
    assert all(store.get(r.stream_id, r.record_id) is not None for r in records)
    store.close()


def test_compose_postgres_file_gives_rxd_the_database(pg_dsn: str, tmp_path: Path) -> None:  # noqa: F811
    """ops-centre.yaml + ops-centre.postgres.yaml: rxd's merged environment (the DSN where compose mounts
    the index_dsn secret) loads a config that opens the PostgreSQL index."""
    compose = Path(__file__).parents[2] / "deploy" / "compose"
    env_in = {"TXD_ADDRESS": "camera.example.com:50051"}
    base, over = (
        yaml.safe_load(interpolate((compose / name).read_text(), env_in))
        for name in ("ops-centre.yaml", "ops-centre.postgres.yaml")
    )
    rxd = over["services"]["rxd"]
    env = {**base["services"]["rxd"]["environment"], **rxd["environment"]}
    assert env["SEMCOM_RXD__INDEX__DSN_FILE"] == "/run/secrets/index_dsn" and rxd["secrets"] == ["index_dsn"]
    assert rxd["depends_on"]["postgres"]["condition"] == "service_healthy" and "index_dsn" in over["secrets"]
    (tmp_path / "index_dsn").write_text(pg_dsn + "\n")
    env["SEMCOM_RXD__INDEX__DSN_FILE"] = str(tmp_path / "index_dsn")
    cfg = load_config(
        RxdConfig, path=compose.parent / "configs" / "rxd.toml", environ=env, env_prefix="SEMCOM_RXD"
    )
    assert cfg.index.kind == "postgres" and cfg.index.retention_days == 0
    store = open_index(cfg.index, REGISTRY)
    assert isinstance(store, PgStore) and store.count() == 0
    store.close()


@pytest.mark.asyncio
async def test_rxd_acknowledges_nothing_while_the_database_is_away(
    pg_server: PgServer,  # noqa: F811
    pg_dsn: str,  # noqa: F811
) -> None:
    """Through rxd's BurstReceiver: a burst that arrives while the database is down gets no answer at all
    (the Link call fails, txd keeps it and sends it again); sent again once the database is back, it is
    acknowledged and indexed, and nothing is lost."""
    store = PgStore(pg_dsn, REGISTRY, refresh_s=0.0)
    with ThreadPoolExecutor(max_workers=1) as executor:
        receiver = BurstReceiver(REGISTRY, _engine(store), executor)
        first = [link_person("cam", i) for i in range(1, 4)]
        second = [link_person("cam", i) for i in range(4, 7)]
        assert (await receiver.handle(burst(1, first))).status == link_pb2.ACK_STATUS_OK
        pg_server.stop()
        try:
            with pytest.raises(IndexUnavailable):
                await receiver.handle(burst(2, second))
            assert receiver.streams["cam"].bursts_ok == 1
        finally:
            pg_server.start()
        again = await receiver.handle(burst(2, second))
        assert again.status == link_pb2.ACK_STATUS_OK and again.records_accepted == 3
    assert store.count() == 6
    assert [store.get("cam", r.record_id) is not None for r in first + second] == [True] * 6
    store.close()
