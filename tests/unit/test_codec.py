"""The bit-packed record frame: round trips, exact sizes, and every encode and decode error."""

from __future__ import annotations

import dataclasses
import math
import random
import zlib
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semcom.codec import (
    FRAME_VERSION,
    BitReader,
    BitWriter,
    decode_records,
    encode_records,
    encode_text_entries,
    frame_bits,
    pack_frames,
)
from semcom.codec.frame import SealCheck
from semcom.codec.seal import AuthError, Sealing, SiteKey
from semcom.errors import CrcError, DecodeError, InvalidInput
from semcom.record import UNKNOWN, Record
from semcom.schema import Schema, SchemaRegistry

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
VEHICLE = REGISTRY.get("vehicle/1")
T0 = 1_795_331_731.4  # 2026-11-22 07:15:31.4 UTC


@st.composite
def batches(
    draw: st.DrawFn, schema: Schema, max_size: int = 12, partial_fields: bool = False
) -> list[Record]:
    """A valid frame's worth of records: consecutive ids, one stream, times within the frame's span."""
    n = draw(st.integers(0, max_size))
    stream_id = draw(st.text(min_size=1, max_size=6))
    first_id = draw(st.integers(0, 2**40 - 1 - n))
    start = draw(st.floats(0, 2**32 - 7000))
    records = []
    for i in range(n):
        fields = {f.name: draw(st.sampled_from(f.values)) for f in schema.fields}
        if partial_fields:
            keep = draw(st.sets(st.sampled_from(schema.field_names)))
            fields = {k: v for k, v in fields.items() if k in keep}
        records.append(
            Record(
                schema_id=schema.id,
                stream_id=stream_id,
                track_id=draw(st.integers(0, (1 << schema.track_bits) - 1)),
                record_id=first_id + i,
                time_s=start + draw(st.floats(0, 6000)),
                location_id=draw(st.integers(0, schema.max_location_id)),
                fields=fields,
            )
        )
    return records


def person(record_id: int = 1, time_s: float = T0, **kw: object) -> Record:
    fields = {"gender": "male", "upper_color": "white", "sleeve": "long"}
    base = Record(
        "person/1", "cam-1", track_id=7, record_id=record_id, time_s=time_s, location_id=3, fields=fields
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def assert_round_trip(records: list[Record], decoded: list[Record], schema: Schema, stream_id: str) -> None:
    assert len(decoded) == len(records)
    half = schema.time_resolution / 2
    for orig, got in zip(records, decoded, strict=True):
        assert abs(Fraction(got.time_s) - Fraction(orig.time_s)) <= half + Fraction(math.ulp(orig.time_s))
        want = dataclasses.replace(
            orig, stream_id=stream_id, time_s=got.time_s, fields=schema.normalise(orig.fields), confidence={}
        )
        assert got == want


SLOW_OK = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("schema", [PERSON, VEHICLE], ids=lambda s: s.id)
@SLOW_OK
@given(data=st.data())
def test_round_trip(schema: Schema, data: st.DataObject) -> None:
    records = data.draw(batches(schema))
    frame = encode_records(records, schema)
    assert len(frame) * 8 == frame_bits(len(records), schema)
    assert encode_records(list(records), schema) == frame  # deterministic
    assert_round_trip(records, decode_records(frame, REGISTRY, stream_id="rx"), schema, "rx")


@SLOW_OK
@given(records=batches(PERSON, partial_fields=True))
def test_missing_fields_decode_as_unknown(records: list[Record]) -> None:
    decoded = decode_records(encode_records(records, PERSON), REGISTRY, stream_id="s")
    assert_round_trip(records, decoded, PERSON, "s")


@SLOW_OK
@given(records=batches(VEHICLE, max_size=4), data=st.data())
def test_any_single_bit_flip_is_detected(records: list[Record], data: st.DataObject) -> None:
    frame = bytearray(encode_records(records, VEHICLE))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(DecodeError):
        decode_records(bytes(frame), REGISTRY, stream_id="s")


def test_every_bit_flip_of_a_frame_is_detected() -> None:
    frame = encode_records([person(1), person(2, T0 + 3.3), person(3, T0 + 9)], PERSON)
    for bit in range(len(frame) * 8):
        flipped = bytearray(frame)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(DecodeError):
            decode_records(bytes(flipped), REGISTRY, stream_id="s")


def test_exact_sizes() -> None:
    assert PERSON.record_bits == 54
    # Header: version 8 + code 8 + count 8 + base time 32 + first record_id 40 = 96 bits, then CRC 32.
    assert frame_bits(0, PERSON) == 128
    assert frame_bits(1, PERSON) == 96 + 54 + 2 + 32 == 184
    assert frame_bits(255, PERSON) == 96 + 255 * 54 + 6 + 32
    assert frame_bits(1, VEHICLE) == 96 + 43 + 5 + 32
    for n in (0, 1, 2, 7, 8, 100, 255):
        records = [person(i, T0 + i) for i in range(1, n + 1)]
        assert len(encode_records(records, PERSON)) * 8 == frame_bits(n, PERSON)
        assert frame_bits(n, PERSON) - n * PERSON.record_bits <= 128 + 7
    with pytest.raises(InvalidInput, match=r"0\.\.255 records"):
        frame_bits(256, PERSON)


def test_times_round_to_the_nearest_tick_and_ids_follow() -> None:
    records = [person(41, T0 + 0.04), person(42, T0 + 0.06), person(43, T0 + 6000.0)]
    decoded = decode_records(encode_records(records, PERSON), REGISTRY, stream_id="s")
    assert [r.time_s for r in decoded] == [T0, T0 + 0.1, 1_795_337_731.4]
    assert [r.record_id for r in decoded] == [41, 42, 43]
    assert decoded[0].fields["shoe_color"] == UNKNOWN


def test_track_ids_wrap_modulo_their_width() -> None:
    decoded = decode_records(encode_records([person(track_id=4096 + 5)], PERSON), REGISTRY, stream_id="s")
    assert decoded[0].track_id == 5


def test_decode_errors() -> None:
    frame = encode_records([person(1), person(2), person(3)], PERSON)
    assert len(frame) == 37
    with pytest.raises(DecodeError, match="truncated frame: 3 person/1 records need 37 bytes, got 36"):
        decode_records(frame[:-1], REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="truncated frame: got 5 bytes, a frame is at least 16 bytes"):
        decode_records(frame[:5], REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="got 0 bytes"):
        decode_records(b"", REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match=r"trailing garbage: .* need 37 bytes, got 38 \(1 extra\)"):
        decode_records(frame + b"\0", REGISTRY, stream_id="s")
    with pytest.raises(
        DecodeError, match="unsupported frame version 4; this build reads versions 1, 2 and 3"
    ):
        decode_records(bytes([4]) + frame[1:], REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="frame version 2 is sealed, and this receiver holds no key"):
        decode_records(bytes([2]) + frame[1:], REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="unsupported frame version 129"):
        decode_records(encode_text_entries([person()], PERSON), REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="unknown schema code 9; known: 1 \\(person/1\\)"):
        decode_records(frame[:1] + bytes([9]) + frame[2:], REGISTRY, stream_id="s")
    corrupt = bytearray(frame)
    corrupt[20] ^= 0x10
    with pytest.raises(CrcError, match=r"CRC mismatch: frame carries 0x[0-9a-f]{8}, its bytes give"):
        decode_records(bytes(corrupt), REGISTRY, stream_id="s")


def _hand_made_frame(gender_index: int, padding: int = 0) -> bytes:
    writer = BitWriter()
    for value, bits in (
        (FRAME_VERSION, 8),
        (PERSON.code, 8),
        (1, 8),
        (1000, 32),
        (1, 40),
        (7, 12),
        (3, 8),
        (0, 16),
    ):
        writer.write(value, bits)
    writer.write(gender_index, 2)
    writer.write(0, PERSON.attribute_bits - 2)
    writer.write(padding, 2)
    body = writer.to_bytes()
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_index_outside_vocabulary_and_nonzero_padding() -> None:
    assert decode_records(_hand_made_frame(2), REGISTRY, stream_id="s")[0].fields["gender"] == "female"
    with pytest.raises(
        DecodeError, match="record 0: field 'gender' index 3 is outside its 3-word vocabulary"
    ):
        decode_records(_hand_made_frame(3), REGISTRY, stream_id="s")
    with pytest.raises(DecodeError, match="nonzero padding"):
        decode_records(_hand_made_frame(1, padding=1), REGISTRY, stream_id="s")


def test_encode_errors() -> None:
    with pytest.raises(InvalidInput, match="consecutive within a frame: expected 2, got 3 at position 1"):
        encode_records([person(1), person(3)], PERSON)
    vehicle = Record("vehicle/1", "cam-1", 1, 2, T0, 0, {"type": "car"})
    with pytest.raises(InvalidInput, match="record 2 has schema 'vehicle/1'; every record of this frame"):
        encode_records([person(1), vehicle], PERSON)
    with pytest.raises(InvalidInput, match=r"from stream 'cam-2'.*one frame carries one stream"):
        encode_records([person(1), person(2, stream_id="cam-2")], PERSON)
    with pytest.raises(InvalidInput, match=r"location_id 256 outside 0\.\.255 \(8 bits in person/1\)"):
        encode_records([person(location_id=256)], PERSON)
    with pytest.raises(InvalidInput, match=r"span 6553\.600 s .* at most 6553\.5 s .* pack_frames"):
        encode_records([person(1, 1000.0), person(2, 1000.0 + 6553.6)], PERSON)
    encode_records([person(1, 1000.0), person(2, 1000.0 + 6553.5)], PERSON)  # the span's edge fits
    with pytest.raises(
        InvalidInput, match="'sleeve': 'medium' is not in its vocabulary; allowed: unknown, long"
    ):
        encode_records([person(fields={"sleeve": "medium"})], PERSON)
    with pytest.raises(InvalidInput, match="256 records do not fit one frame"):
        encode_records([person(i, T0) for i in range(256)], PERSON)
    for bad_time in (-1.0, math.nan, math.inf, 2.0**32):
        with pytest.raises(InvalidInput, match="time_s"):
            encode_records([person(time_s=bad_time)], PERSON)
    with pytest.raises(InvalidInput, match="does not fit 40 bits"):
        encode_records([person(2**40)], PERSON)


def test_pack_frames_splits_where_a_record_cannot_join() -> None:
    records = [person(i, T0 + i) for i in range(1, 601)]
    frames = pack_frames(records, PERSON)
    assert [f[2] for f in frames] == [255, 255, 90]
    decoded = [r for f in frames for r in decode_records(f, REGISTRY, stream_id="cam-1")]
    assert_round_trip(records, decoded, PERSON, "cam-1")
    assert len(pack_frames(records, PERSON, max_records=100)) == 6
    # An id gap and a time jump past the frame's span each start a new frame.
    split = [person(1), person(2), person(5, T0 + 5), person(6, T0 + 7000), person(7, T0 + 7001)]
    assert [f[2] for f in pack_frames(split, PERSON)] == [2, 1, 2]
    assert pack_frames([], PERSON) == []
    with pytest.raises(InvalidInput, match="pack each stream separately"):
        pack_frames([person(1), person(2, stream_id="x")], PERSON)
    with pytest.raises(InvalidInput, match="max_records"):
        pack_frames(records, PERSON, max_records=0)


def test_empty_frame_round_trips() -> None:
    frame = encode_records([], PERSON)
    assert len(frame) == 16
    assert decode_records(frame, REGISTRY, stream_id="s") == []


def test_bit_reader_and_writer() -> None:
    writer = BitWriter()
    writer.write(0b101, 3)
    writer.write(0xABC, 12)
    assert writer.bit_length == 15
    data = writer.to_bytes()
    assert data == bytes([0b10110101, 0b01111000])
    reader = BitReader(data)
    assert (reader.read(3), reader.read(12), reader.remaining) == (0b101, 0xABC, 1)
    with pytest.raises(DecodeError, match="need 2 bits at bit 15"):
        reader.read(2)
    with pytest.raises(ValueError, match="does not fit"):
        writer.write(4, 2)


# -- sealed frames ----------------------------------------------------------------------------------------

KEY = SiteKey(bytes(range(32)))


def sealed(records: list[Record], *, tag_bytes: int = 16, encrypt: bool = True, sequence: int = 7) -> bytes:
    frame = encode_records(records, PERSON)
    return Sealing(KEY, tag_bytes, encrypt).seal(frame, stream_id="s", epoch=3, sequence=sequence)


def check(sequence: int = 7, epoch: int = 3, key: SiteKey = KEY, min_tag_bytes: int = 4) -> SealCheck:
    return SealCheck(key, epoch, sequence, min_tag_bytes)


@pytest.mark.parametrize("encrypt", [True, False])
@pytest.mark.parametrize("tag_bytes", [4, 8, 12, 16])
def test_sealed_frames_round_trip_and_cost_exactly_their_tag(tag_bytes: int, encrypt: bool) -> None:
    records = [person(1), person(2, fields={"gender": "female"}), person(3)]
    frame = sealed(records, tag_bytes=tag_bytes, encrypt=encrypt)
    assert (
        8 * len(frame)
        == frame_bits(3, PERSON, tag_bits=8 * tag_bytes)
        == frame_bits(3, PERSON) + 8 * tag_bytes
    )
    assert decode_records(frame, REGISTRY, stream_id="s", seal=check()) == decode_records(
        encode_records(records, PERSON), REGISTRY, stream_id="s"
    )
    plain = encode_records(records, PERSON)
    assert (frame[12 : -4 - tag_bytes] == plain[12:-4]) is not encrypt  # records hidden only when encrypting


@pytest.mark.parametrize("encrypt", [True, False])
def test_every_single_flipped_bit_with_the_crc_recomputed_is_caught(encrypt: bool) -> None:
    frame = sealed([person(1), person(2)], tag_bytes=8, encrypt=encrypt)
    for bit in range(8 * (len(frame) - 4)):
        forged = bytearray(frame[:-4])
        forged[bit // 8] ^= 0x80 >> (bit % 8)
        forged += zlib.crc32(forged).to_bytes(4, "big")  # the CRC no longer tells anything
        with pytest.raises(DecodeError):
            decode_records(bytes(forged), REGISTRY, stream_id="s", seal=check())
    # A payload bit (inside the records, after the header) is caught by the tag itself.
    forged = bytearray(frame[:-4])
    forged[13] ^= 0x01
    forged += zlib.crc32(forged).to_bytes(4, "big")
    with pytest.raises(AuthError, match="tag does not match"):
        decode_records(bytes(forged), REGISTRY, stream_id="s", seal=check())


def test_a_frame_opens_only_under_its_key_stream_epoch_and_sequence() -> None:
    frame = sealed([person(1)])
    for bad in (check(sequence=8), check(epoch=4), check(epoch=0), check(key=SiteKey(bytes(32)))):
        with pytest.raises(AuthError):
            decode_records(frame, REGISTRY, stream_id="s", seal=bad)
    with pytest.raises(AuthError):
        decode_records(frame, REGISTRY, stream_id="other", seal=check())
    with pytest.raises(AuthError, match="holds no key"):
        decode_records(frame, REGISTRY, stream_id="s")
    with pytest.raises(AuthError, match="unsealed frame"):
        decode_records(encode_records([person(1)], PERSON), REGISTRY, stream_id="s", seal=check())
    short = sealed([person(1)], tag_bytes=4)
    with pytest.raises(AuthError, match="tag of 32 bits is shorter than the 128"):
        decode_records(short, REGISTRY, stream_id="s", seal=check(min_tag_bytes=16))
    damaged = bytearray(frame)
    damaged[14] ^= 1  # noise: the CRC catches it first, and the sender may send again
    with pytest.raises(CrcError):
        decode_records(bytes(damaged), REGISTRY, stream_id="s", seal=check())


def test_a_random_forged_tag_is_accepted_about_once_in_2_to_the_tag_bits() -> None:
    # 32-bit tags, 2000 forgeries with random tags: P(any accepted) = 2000 / 2^32 < 1e-6. Seeded.
    rng = random.Random(4)
    frame = sealed([person(1)], tag_bytes=4)
    accepted = 0
    for _ in range(2000):
        forged = frame[:-8] + rng.randbytes(4)
        forged += zlib.crc32(forged).to_bytes(4, "big")
        try:
            decode_records(forged, REGISTRY, stream_id="s", seal=check())
            accepted += 1
        except AuthError:
            pass
    assert accepted == 0
