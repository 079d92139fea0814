"""The learned mode in the daemons' parts: txd's link.mcs = "learned/<model>" checked at config load, and
rxd's BurstReceiver accepting learned bursts (header CRC = delivered, field confidences kept) or refusing
them with a counted, logged reason."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from pydantic import ValidationError

from channel_sim.models import AwgnConfig, ChannelBurst, ChannelChain
from rxd.config import LinkRxConfig
from rxd.receiver import BurstReceiver, learned_models
from rxd.retrieval.engine import RetrievalEngine
from semcom.burst import build_learned_burst, parse_phy
from semcom.codec import SiteKey, encode_records
from semcom.errors import InvalidInput
from semcom.pb.v1 import link_pb2
from semcom.phy.learned import load_model
from semcom.phy.mcs import Mcs
from semcom.record import Record
from semcom.schema import SchemaRegistry
from txd.config import LinkConfig, TxdConfig

SCHEMAS = SchemaRegistry.builtin()
PERSON = SCHEMAS.get("person/1")
MODEL = load_model("person-s2", PERSON)


class FakeEngine:
    """Stands in for the retrieval engine: remembers what it was asked to index."""

    def __init__(self) -> None:
        self.batches: list[list[Record]] = []

    def ingest(self, records: list[Record]) -> int:
        self.batches.append(records)
        return 0


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def receiver(executor: ThreadPoolExecutor, **kwargs: object) -> tuple[BurstReceiver, FakeEngine]:
    engine = FakeEngine()
    models = learned_models(["person-s1", "person-s2"], SCHEMAS)
    rx = BurstReceiver(SCHEMAS, cast(RetrievalEngine, engine), executor, learned=models, **kwargs)  # type: ignore[arg-type]
    return rx, engine


def records(n: int) -> list[Record]:
    fields = PERSON.normalise({"gender": "female", "upper_color": "blue", "sleeve": "long"})
    return [Record(PERSON.id, "cam", 7, i, 1_767_225_600 + i, 3, fields) for i in range(1, n + 1)]


def learned(sequence: int, snr_db: float | None = None, seed: int = 0) -> link_pb2.Burst:
    sent = records(4)
    burst = build_learned_burst(
        encode_records(sent, PERSON), MODEL, PERSON, stream_id="cam", sequence=sequence, record_count=4
    )
    if snr_db is not None:  # through channel_sim's AWGN model, seeded
        symbols = np.frombuffer(burst.payload.data, np.complex64)
        out = (
            ChannelChain([AwgnConfig(snr_db=snr_db)], seed)
            .for_stream("cam")
            .apply(ChannelBurst(symbols, 2 * symbols.size))
        )
        assert out.symbols is not None
        burst.payload.data = np.ascontiguousarray(out.symbols, np.complex64).tobytes()
    return burst


def test_txd_config_takes_a_learned_mcs_and_names_what_is_wrong() -> None:
    assert parse_phy("learned/person-s2").learned == "person-s2"
    assert parse_phy("learned/person-s2").mcs == Mcs("qpsk", "ldpc_r12")
    assert LinkConfig(mcs="learned/person-s3").mcs == "learned/person-s3"
    for mcs, message in (
        ("learned/person-s9", "no learned phy model 'person-s9'; shipped: person-s1, person-s2, person-s3"),
        ("learned/", "name the model, e.g. learned/person-s1"),
        ("learned/missing.json", "cannot read learned phy model missing.json"),
    ):
        with pytest.raises(ValidationError, match=message):
            LinkConfig(mcs=mcs)
    with pytest.raises(ValidationError, match="trained for schema 'person/1', not 'person/2'"):
        TxdConfig.model_validate({"link": {"mcs": "learned/person-s2"}, "site": {"schema_id": "person/2"}})
    with pytest.raises(ValidationError, match="no AEAD tag covers"):
        LinkConfig(mcs="learned/person-s2", key_file=Path("site.key"), site_id="s")
    with pytest.raises(ValidationError, match="no learned phy model 'person-s9'"):
        LinkRxConfig(learned_models=("person-s9",))


@pytest.mark.asyncio
async def test_rxd_indexes_a_learned_burst_once_with_its_confidences(executor: ThreadPoolExecutor) -> None:
    """Seed 0 at 12 dB: every field decoded right; a retransmission (seed 1: other noise, so other
    confidences) is acknowledged and not indexed again, since the same header frame is the same burst."""
    rx, engine = receiver(executor)
    first = await rx.handle(learned(1, snr_db=12.0, seed=0))
    again = await rx.handle(learned(1, snr_db=12.0, seed=1))
    assert [fb.status for fb in (first, again)] == [link_pb2.ACK_STATUS_OK] * 2, (first, again)
    assert first.records_accepted == again.records_accepted == 4
    (batch,) = engine.batches
    assert [r.fields for r in batch] == [r.fields for r in records(4)]
    assert all(set(r.confidence) == {"gender", "upper_color", "sleeve"} for r in batch)
    assert 0.5 < min(c for r in batch for c in r.confidence.values()) <= 1.0
    stats = rx.streams["cam"]
    assert (stats.bursts_ok, stats.bursts_learned, stats.records_indexed) == (1, 1, 4)
    assert not math.isnan(first.quality.snr_db)


@pytest.mark.asyncio
async def test_rxd_refuses_learned_bursts_it_cannot_read(
    executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    rx, engine = receiver(executor)
    other = learned(1)
    other.header.learned_digest = load_model("person-s1", PERSON).digest  # other weights, same name
    unknown = learned(2)
    unknown.header.learned_model = "person-s3"  # not loaded here
    garbled = learned(3)
    symbols = np.frombuffer(garbled.payload.data, np.complex64).copy()
    symbols[16:200] *= -1  # the header's data symbols flipped: its CRC fails
    garbled.payload.data = symbols.tobytes()
    with caplog.at_level(logging.WARNING, logger="rxd.receiver"):
        answers = [await rx.handle(b) for b in (other, unknown, garbled)]
    assert [a.status for a in answers] == [
        link_pb2.ACK_STATUS_REJECTED,
        link_pb2.ACK_STATUS_REJECTED,
        link_pb2.ACK_STATUS_CRC_FAILED,
    ]
    assert "load the same model file on both sides" in answers[0].detail
    assert "holds person-s1, person-s2" in answers[1].detail
    assert "load the same model file" in caplog.text and "'person-s3'" in caplog.text
    stats = rx.streams["cam"]
    assert (stats.bursts_model_refused, stats.bursts_failed, stats.bursts_ok) == (2, 3, 0)
    assert engine.batches == []


@pytest.mark.asyncio
async def test_rxd_with_site_keys_refuses_learned_bursts(executor: ThreadPoolExecutor) -> None:
    rx, _ = receiver(executor, keys={"site-a": SiteKey(bytes(range(32)))})
    burst = learned(1)
    burst.header.site_id, burst.header.epoch = "site-a", 1
    fb = await rx.handle(burst)
    assert fb.status == link_pb2.ACK_STATUS_UNAUTHENTICATED and "no AEAD tag covers" in fb.detail


def test_a_model_for_a_schema_not_held_is_left_out() -> None:
    vehicles = SchemaRegistry([SCHEMAS.get("vehicle/1")])
    assert learned_models(["person-s2"], vehicles) == {}
    with pytest.raises(InvalidInput, match="not 'vehicle/1'"):
        load_model("person-s2", SCHEMAS.get("vehicle/1"))
