"""Property-based fuzzing of what arrives from the link: the frame decoder, the burst parser and the text
codec answer every input with records or a DecodeError (or InvalidInput), never another exception, and in
bounded time (hypothesis' deadline)."""

from __future__ import annotations

import contextlib
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semcom.burst import build_burst, open_burst
from semcom.codec import decode_records, decode_text_entries, encode_records, encode_text_entries
from semcom.errors import InvalidInput
from semcom.pb.v1 import common_pb2, link_pb2
from semcom.phy.mcs import Mcs
from semcom.schema import SchemaRegistry
from tests.fixtures.records import person

# Overflow warnings from absurd symbols are expected: the property is that they end in a DecodeError.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
REGISTRY = SchemaRegistry.builtin()
SCHEMA = REGISTRY.get("person/1")
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def _valid_frame(n: int) -> bytes:
    return encode_records([person(i + 1, gender="male", upper_color="red") for i in range(n)], SCHEMA)


@FUZZ
@given(st.binary(max_size=600))
def test_frame_decoder_answers_any_bytes(frame: bytes) -> None:
    try:
        records = decode_records(frame, REGISTRY, stream_id="cam1")
    except InvalidInput:  # DecodeError, CrcError and AuthError are InvalidInput
        return
    assert len(records) == frame[2]


@FUZZ
@given(st.integers(1, 8), st.data())
def test_frame_decoder_answers_mutations_that_pass_the_crc(n: int, data: st.DataObject) -> None:
    """Flip bits and cut or grow a valid frame, then re-compute its CRC: the parser must still answer."""
    body = bytearray(_valid_frame(n)[:-4])
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(-4, 4))
    body = body[:cut] if cut < 0 else body + bytes(cut)
    try:
        records = decode_records(_with_crc(bytes(body)), REGISTRY, stream_id="cam1")
    except InvalidInput:
        return
    assert len(records) == body[2]
    for rec in records:
        SCHEMA.validate(rec)


def _burst(header: dict[str, object], dtype: int, shape: list[int], data: bytes) -> link_pb2.Burst:
    payload = common_pb2.Tensor(dtype=dtype, shape=shape, data=data)  # type: ignore[arg-type]
    return link_pb2.Burst(header=link_pb2.BurstHeader(**header), payload=payload)  # type: ignore[arg-type]


@FUZZ
@given(
    modulation=st.integers(0, 6),
    coding=st.integers(0, 3),
    info_bits=st.integers(0, 1 << 16),
    coded_bits=st.integers(0, 1 << 16),
    pilots=st.integers(0, 2048),
    dtype=st.integers(0, 8),
    shape=st.lists(st.integers(0, 1 << 12), max_size=3),
    data=st.binary(max_size=4096),
)
def test_burst_parser_answers_any_header_and_payload(
    modulation: int,
    coding: int,
    info_bits: int,
    coded_bits: int,
    pilots: int,
    dtype: int,
    shape: list[int],
    data: bytes,
) -> None:
    header = {
        "stream_id": "cam1",
        "sequence": 1,
        "modulation": modulation,
        "coding": coding,
        "info_bits": info_bits,
        "coded_bits": coded_bits,
        "pilot_symbols": pilots,
    }
    try:
        received = open_burst(_burst(header, dtype, shape, data), max_iter=5)
    except InvalidInput:
        return
    assert isinstance(received.frame, bytes)


@FUZZ
@given(st.sampled_from(["bpsk", "qpsk", "qam16"]), st.sampled_from(["none", "ldpc_r12"]), st.data())
def test_burst_parser_answers_corrupted_symbols(modulation: str, coding: str, data: st.DataObject) -> None:
    """A real burst with its symbols overwritten by arbitrary floats (NaN and inf included)."""
    burst = build_burst(
        _valid_frame(2),
        stream_id="cam1",
        sequence=1,
        schema_id="person/1",
        kind=link_pb2.PAYLOAD_KIND_RECORDS,
        record_count=2,
        mcs=Mcs(modulation, coding),  # type: ignore[arg-type]
    )
    raw = bytearray(burst.payload.data)
    floats = data.draw(st.lists(st.floats(width=32), min_size=1, max_size=16))
    at = data.draw(st.integers(0, max(0, len(raw) // 4 - len(floats))))
    for k, value in enumerate(floats):
        if 4 * (at + k) + 4 <= len(raw):
            raw[4 * (at + k) : 4 * (at + k) + 4] = struct.pack("<f", value)
    burst.payload.data = bytes(raw)
    try:
        received = open_burst(burst, max_iter=5)
    except InvalidInput:
        return
    with contextlib.suppress(InvalidInput):
        decode_records(received.frame, REGISTRY, stream_id="cam1")


@FUZZ
@given(st.binary(max_size=400))
def test_text_codec_answers_any_bytes(body: bytes) -> None:
    for frame in (body, _with_crc(body), _with_crc(bytes([2, 1]) + body)):
        with contextlib.suppress(InvalidInput):
            decode_text_entries(frame, REGISTRY, stream_id="cam1")


@FUZZ
@given(st.text(max_size=300))
def test_text_codec_answers_any_text_after_a_valid_head(text: str) -> None:
    good = encode_text_entries([person(1, gender="female")], SCHEMA)
    frame = _with_crc(good[:2] + text.encode("utf-8", "surrogatepass"))
    try:
        records = decode_text_entries(frame, REGISTRY, stream_id="cam1")
    except InvalidInput:
        return
    for rec in records:
        SCHEMA.validate(rec)
