"""Confidence on the wire: person/2's 2-bit quantiser in the bit and text codecs, its cost in the frame-size
formula, person/1 frames unchanged byte for byte, and bad confidence codes refused with a DecodeError."""

from __future__ import annotations

import math

import pytest

from semcom.codec import (
    decode_records,
    decode_text_entries,
    encode_records,
    encode_text_entries,
    frame_bits,
)
from semcom.codec.bits import BitReader, BitWriter
from semcom.codec.frame import HEADER_BITS
from semcom.errors import DecodeError, InvalidInput
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry

REGISTRY = SchemaRegistry.builtin()
FULL = {
    "gender": "female",
    "upper_color": "red",
    "sleeve": "short",
    "lower_color": "blue",
    "lower_length": "long",
    "shoe_color": "white",
}
# Encoded by the codecs as they were before confidence existed (commit 069a051), for the records of
# `_records("person/1")`: a schema without a quantiser must keep these frames bit for bit.
PERSON1_FRAME = "0101026b49d2000000000028007030003a62680200c002100000671ba39e"
PERSON1_TEXT = (
    "810123343020747261636b20372c20323032372d30312d31352030383a30303a30302e332c20736974652d332c2066656d61"
    "6c652c207265642c2073686f72742c20626c75652c206c6f6e672c2077686974650a23343120747261636b20382c20323032"
    "372d30312d31352030383a30303a30302e382c20736974652d332c206d616c652c20756e6b6e6f776e2c20756e6b6e6f776e"
    "2c20756e6b6e6f776e2c20756e6b6e6f776e2c20756e6b6e6f776ea13a5a04"
)


def _records(schema_id: str) -> list[Record]:
    return [
        Record(
            schema_id,
            "cam-1",
            track_id=7 + i,
            record_id=40 + i,
            time_s=1_800_000_000.3 + i * 0.5,
            location_id=3,
            fields=FULL if i == 0 else {"gender": "male"},
            confidence={"gender": 0.9, "upper_color": 0.4},
        )
        for i in range(2)
    ]


def test_person1_frames_are_unchanged_byte_for_byte() -> None:
    person1 = REGISTRY.get("person/1")
    assert person1.record_bits == 54 and person1.confidence_bits == 0
    assert encode_records(_records("person/1"), person1).hex() == PERSON1_FRAME
    assert encode_text_entries(_records("person/1"), person1).hex() == PERSON1_TEXT
    decoded = decode_records(bytes.fromhex(PERSON1_FRAME), REGISTRY, stream_id="cam-1")
    assert all(r.confidence == {} for r in decoded)


def test_person2_costs_two_bits_a_field_and_the_formula_counts_them() -> None:
    person2 = REGISTRY.get("person/2")
    assert person2.record_bits == 54 + 6 * 2 and person2.confidence_bits == 12
    frame = encode_records(_records("person/2"), person2)
    assert len(frame) * 8 == frame_bits(2, person2)
    assert frame_bits(2, person2) == math.ceil((HEADER_BITS + 2 * 66) / 8) * 8 + 32


def test_levels_are_bins_over_one_over_k_to_one() -> None:
    gender, colour = REGISTRY.get("person/2").field("gender"), REGISTRY.get("person/2").field("upper_color")
    assert [round(gender.confidence_value(c) or 0, 4) for c in (1, 2, 3)] == [0.5833, 0.75, 0.9167]
    assert [round(colour.confidence_value(c) or 0, 4) for c in (1, 2, 3)] == [0.2424, 0.5455, 0.8485]
    assert gender.confidence_value(0) is None and gender.confidence_code(None) == 0
    assert gender.confidence_code(0.1) == 1 and gender.confidence_code(1.0) == 3
    assert colour.confidence_code(0.5) == 2
    with pytest.raises(InvalidInput, match="not a probability"):
        gender.confidence_code(float("nan"))


@pytest.mark.parametrize("codec", ["bits", "text"])
def test_person2_round_trip_carries_quantised_confidence(codec: str) -> None:
    person2 = REGISTRY.get("person/2")
    records = _records("person/2")
    if codec == "bits":
        decoded = decode_records(encode_records(records, person2), REGISTRY, stream_id="cam-1")
    else:
        decoded = decode_text_entries(encode_text_entries(records, person2), REGISTRY, stream_id="cam-1")
    gender, colour = person2.field("gender"), person2.field("upper_color")
    assert decoded[0].fields == FULL
    assert decoded[0].confidence == {
        "gender": gender.confidence_value(3),
        "upper_color": colour.confidence_value(2),
    }
    # The second record's colour is unknown: its confidence is not carried.
    assert decoded[1].confidence == {"gender": gender.confidence_value(3)}


def test_text_entry_shows_confidence_beside_the_value() -> None:
    person2 = REGISTRY.get("person/2")
    frame = encode_text_entries(_records("person/2")[:1], person2)
    line = frame[2:-4].decode()
    assert line.endswith("female (p=0.92), red (p=0.55), short, blue, long, white")


def _frame_with_code(schema: Schema, field_index: int, value_index: int, code: int) -> bytes:
    """A one-record person/2 frame whose field `field_index` has the given value index and confidence code."""
    import zlib

    good = encode_records(_records("person/2")[:1], schema)
    reader, writer = BitReader(good[:-4]), BitWriter()
    writer.write(reader.read(HEADER_BITS), HEADER_BITS)
    head = schema.track_bits + schema.location_bits + schema.time_bits
    writer.write(reader.read(head), head)
    for i, spec in enumerate(schema.fields):
        idx, conf = reader.read(spec.bits), reader.read(spec.confidence_bits)
        if i == field_index:
            idx, conf = value_index, code
        writer.write(idx, spec.bits)
        writer.write(conf, spec.confidence_bits)
    body = writer.to_bytes()
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_confidence_on_an_unknown_field_is_a_decode_error() -> None:
    person2 = REGISTRY.get("person/2")
    with pytest.raises(DecodeError, match="'upper_color' is unknown but carries confidence code 3"):
        decode_records(_frame_with_code(person2, 1, 0, 3), REGISTRY, stream_id="cam-1")
    # The same code on a known value is a stated confidence, and code 0 states none.
    (ok,) = decode_records(_frame_with_code(person2, 1, 2, 0), REGISTRY, stream_id="cam-1")
    assert "upper_color" not in ok.confidence


@pytest.mark.parametrize(
    ("entry", "message"),
    [("unknown (p=0.55)", "unknown but states confidence"), ("red (p=1.50)", "not a probability")],
)
def test_bad_text_confidence_is_a_decode_error(entry: str, message: str) -> None:
    import zlib

    person2 = REGISTRY.get("person/2")
    frame = encode_text_entries(_records("person/2")[:1], person2)
    body = frame[:-4].replace(b"red (p=0.55)", entry.encode())
    with pytest.raises(DecodeError, match=message):
        decode_text_entries(body + zlib.crc32(body).to_bytes(4, "big"), REGISTRY, stream_id="cam-1")


def test_record_with_nan_confidence_is_refused_before_encoding() -> None:
    person2 = REGISTRY.get("person/2")
    bad = Record("person/2", "cam-1", 1, 1, 1_800_000_000.0, 3, dict(FULL), {"gender": float("nan")})
    with pytest.raises(InvalidInput, match="not a probability"):
        encode_records([bad], person2)


def test_schema_json_declares_confidence_bits_per_schema_or_field() -> None:
    doc = REGISTRY.get("person/2").to_dict()
    assert all(f["confidence_bits"] == 2 for f in doc["fields"])
    assert Schema.from_dict(doc) == REGISTRY.get("person/2")
    assert "confidence_bits" not in str(REGISTRY.get("person/1").to_dict())
    doc["fields"][0]["confidence_bits"] = 5
    with pytest.raises(InvalidInput, match=r"confidence_bits must be 0\.\.4"):
        Schema.from_dict(doc)
