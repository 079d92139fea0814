"""Confidence end to end: person/2 records announced at txd cross the link with their 2-bit confidences,
and rxd ranks them by the probability of satisfying the query, dropping the unlikely on request."""

from __future__ import annotations

import asyncio

import pytest
from grpc import aio

from semcom import client
from semcom.pb.v1 import receiver_pb2_grpc, transmitter_pb2, transmitter_pb2_grpc
from semcom.record import Record
from semcom.schema import SchemaRegistry
from tests.conftest import Chain
from tests.fixtures.link import wait_indexed

PEOPLE = [
    ({"gender": "female", "upper_color": "red"}, {"gender": 0.95, "upper_color": 0.3}),
    ({"gender": "female", "upper_color": "red"}, {"gender": 0.95, "upper_color": 0.95}),
    ({"gender": "male", "upper_color": "blue"}, {"gender": 0.6, "upper_color": 0.6}),
]


@pytest.mark.asyncio
async def test_person2_confidence_crosses_the_link_and_ranks_hits(chain: Chain) -> None:
    async with aio.insecure_channel(chain.txd_address) as ch:
        stub = transmitter_pb2_grpc.TransmitterStub(ch)
        for i, (fields, conf) in enumerate(PEOPLE):
            rec = Record("person/2", "conf", i + 1, 0, 1_700_000_000.0 + i, 3, fields, conf)
            reply = await stub.Announce(transmitter_pb2.AnnounceRequest(record=rec.to_pb()), timeout=5)
            assert reply.info_bits == 66
    await wait_indexed(chain.rxd_address, len(PEOPLE))
    colour = SchemaRegistry.builtin().get("person/2").field("upper_color")
    with client.open_channel(chain.rxd_address) as channel:
        rxd = receiver_pb2_grpc.ReceiverStub(channel)
        filters = {"upper_color": "red"}
        # rxd's task schema is still person/1: a query names person/2 to search its records.
        answer = await asyncio.to_thread(
            lambda: client.query(rxd, filters=filters, top_k=5, schema_id="person/2")
        )
        assert answer.hits, answer
        first = answer.hits[0]
        assert first.record.schema_id == "person/2"
        sent = {f.name: f.confidence for f in first.record.fields}
        # The index keeps 4 decimals of what the frame carried.
        assert sent["upper_color"] == pytest.approx(colour.confidence_value(3), abs=1e-4)
        assert first.probability == pytest.approx(colour.confidence_value(3), abs=1e-4)
        probs = [h.probability for h in answer.hits]
        assert probs == sorted(probs, reverse=True) and len(probs) == 3
        sure = await asyncio.to_thread(
            lambda: client.query(rxd, filters=filters, top_k=5, schema_id="person/2", min_probability=0.5)
        )
        assert [h.probability for h in sure.hits] == probs[:1]
