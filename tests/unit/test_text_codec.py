"""The paper's text-entry format: exact lines, round trips carrying the same information, and errors."""

from __future__ import annotations

import dataclasses
import math
import zlib
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semcom.codec import (
    TEXT_FRAME_VERSION,
    decode_records,
    decode_text_entries,
    encode_records,
    encode_text_entries,
    format_entry,
)
from semcom.errors import CrcError, DecodeError, InvalidInput
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
VEHICLE = REGISTRY.get("vehicle/1")
T0 = 1_795_331_731.4  # 2026-11-22 07:15:31.4 UTC
OUTFIT = {
    "gender": "male",
    "upper_color": "white",
    "sleeve": "long",
    "lower_color": "black",
    "lower_length": "long",
    "shoe_color": "black",
}


def person(record_id: int = 12, time_s: float = T0, **kw: object) -> Record:
    base = Record(
        "person/1", "cam-1", track_id=7, record_id=record_id, time_s=time_s, location_id=3, fields=OUTFIT
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


@st.composite
def batches(draw: st.DrawFn, schema: Schema) -> list[Record]:
    n = draw(st.integers(0, 10))
    first_id = draw(st.integers(0, 2**40 - 1 - n))
    start = draw(st.floats(0, 2**32 - 7000))
    return [
        Record(
            schema_id=schema.id,
            stream_id="cam",
            track_id=draw(st.integers(0, (1 << schema.track_bits) - 1)),
            record_id=first_id + i,
            time_s=start + draw(st.floats(0, 6000)),
            location_id=draw(st.integers(0, schema.max_location_id)),
            fields={f.name: draw(st.sampled_from(f.values)) for f in schema.fields},
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("schema", [PERSON, VEHICLE], ids=lambda s: s.id)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_carries_what_the_bit_frame_carries(schema: Schema, data: st.DataObject) -> None:
    records = data.draw(batches(schema))
    frame = encode_text_entries(records, schema)
    assert encode_text_entries(list(records), schema) == frame  # deterministic
    decoded = decode_text_entries(frame, REGISTRY, stream_id="rx")
    half = schema.time_resolution / 2
    for orig, got in zip(records, decoded, strict=True):
        assert abs(Fraction(got.time_s) - Fraction(orig.time_s)) <= half + Fraction(math.ulp(orig.time_s))
        assert got == dataclasses.replace(orig, stream_id="rx", time_s=got.time_s)
    # Both formats round to the same 0.1 s grid, so they decode to identical records.
    assert decode_records(encode_records(records, schema), REGISTRY, stream_id="rx") == decoded


def test_the_papers_line_format() -> None:
    assert (
        format_entry(person(), PERSON)
        == "#12 track 7, 2026-11-22 07:15:31.4, site-3, male, white, long, black, long, black"
    )
    line = format_entry(
        person(fields={"gender": "female"}, location_id=4), PERSON, location_names={4: "north gate"}
    )
    unknowns = ", ".join(["unknown"] * 5)
    assert line == f"#12 track 7, 2026-11-22 07:15:31.4, north gate, female, {unknowns}"
    vehicle = Record("vehicle/1", "cam-1", 3, 9, 0.04, 0, {"type": "bus", "color": "red"})
    assert format_entry(vehicle, VEHICLE) == "#9 track 3, 1970-01-01 00:00:00.0, site-0, bus, red"


def test_frame_layout() -> None:
    frame = encode_text_entries([person(12), person(13, T0 + 1.23)], PERSON)
    body = frame[:-4]
    assert body[:2] == bytes([TEXT_FRAME_VERSION, PERSON.code])
    assert body[2:].decode().split("\n")[1].startswith("#13 track 7, 2026-11-22 07:15:32.6, ")
    assert frame[-4:] == zlib.crc32(body).to_bytes(4, "big")
    assert decode_text_entries(encode_text_entries([], PERSON), REGISTRY, stream_id="s") == []


def test_location_names_round_trip() -> None:
    names = {3: "north gate", 5: "lobby"}
    records = [person(1), person(2, location_id=5), person(3, location_id=9)]
    frame = encode_text_entries(records, PERSON, location_names=names)
    assert b"north gate" in frame and b"site-9" in frame
    decoded = decode_text_entries(frame, REGISTRY, stream_id="s", location_names=names)
    assert [r.location_id for r in decoded] == [3, 5, 9]
    with pytest.raises(DecodeError, match="line 1: unknown location 'north gate'"):
        decode_text_entries(frame, REGISTRY, stream_id="s")
    with pytest.raises(InvalidInput, match="without commas"):
        encode_text_entries(records, PERSON, location_names={3: "gate, north"})
    with pytest.raises(InvalidInput, match="used for both 3 and 5"):
        encode_text_entries(records, PERSON, location_names={3: "gate", 5: "gate"})
    with pytest.raises(InvalidInput, match="reads as another location's default name"):
        encode_text_entries(records, PERSON, location_names={3: "site-4"})


def test_every_bit_flip_is_detected() -> None:
    frame = encode_text_entries([person(1), person(2)], PERSON)
    for bit in range(len(frame) * 8):
        flipped = bytearray(frame)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(DecodeError):
            decode_text_entries(bytes(flipped), REGISTRY, stream_id="s")


def test_decode_errors() -> None:
    frame = encode_text_entries([person()], PERSON)
    head = bytes([TEXT_FRAME_VERSION, PERSON.code])
    with pytest.raises(DecodeError, match="truncated text frame: got 5 bytes, at least 6 needed"):
        decode_text_entries(frame[:5], REGISTRY, stream_id="s")
    with pytest.raises(CrcError, match="CRC mismatch"):
        decode_text_entries(frame[:-5] + frame[-4:], REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="unsupported text frame version 1"):
        decode_text_entries(encode_records([person()], PERSON), REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="unknown schema code 7"):
        decode_text_entries(with_crc(bytes([TEXT_FRAME_VERSION, 7])), REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="utf-8"):
        decode_text_entries(with_crc(head + b"\xff"), REGISTRY, stream_id="s")
    outfit = "male, white, long, black, long, black"
    bad_lines = {
        "#1 track 2, 2026-11-22 07:15:31.4, site-3, male": "expected 9 entries",
        f"#x track 2, 2026-11-22 07:15:31.4, site-3, {outfit}": "not '#<record id>",
        f"#1 track 2, 2026-11-22 07:15:31, site-3, {outfit}": "with 1 decimals",
        f"#1 track 2, 2026-13-22 07:15:31.4, site-3, {outfit}": "does not match",
        f"#1 track 2, 2026-11-22 07:15:31.4, site-300, {outfit}": r"outside 0\.\.255",
        "#1 track 2, 2026-11-22 07:15:31.4, site-3, robot, white, long, black, long, black": "'robot' is not",
    }
    for line, message in bad_lines.items():
        with pytest.raises(DecodeError, match=f"line 1: .*{message}"):
            decode_text_entries(with_crc(head + line.encode()), REGISTRY, stream_id="s")


def test_encode_errors() -> None:
    with pytest.raises(InvalidInput, match="one frame carries one stream"):
        encode_text_entries([person(1), person(2, stream_id="cam-2")], PERSON)
    with pytest.raises(InvalidInput, match="expected 'person/1'"):
        encode_text_entries([Record("vehicle/1", "cam-1", 1, 1, T0, 0, {})], PERSON)
    with pytest.raises(InvalidInput, match="'sleeve': 'medium' is not in its vocabulary"):
        encode_text_entries([person(fields={"sleeve": "medium"})], PERSON)
    with pytest.raises(InvalidInput, match="time_s"):
        encode_text_entries([person(time_s=math.nan)], PERSON)
