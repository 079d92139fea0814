"""The bit-packed record frame: a few dozen bits per record, a small header, an AEAD tag or none, a CRC-32."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from semcom.codec.bits import BitReader, BitWriter
from semcom.codec.seal import TAG_BYTES, VERSION_AUTH, VERSION_SEALED, AuthError, SiteKey, open_sealed
from semcom.errors import CrcError, DecodeError, InvalidInput
from semcom.record import UNKNOWN, Record
from semcom.schema import Schema, SchemaRegistry

FRAME_VERSION = 1
MAX_RECORDS = 255
VERSION_BITS = 8
CODE_BITS = 8
COUNT_BITS = 8
# Whole seconds since the Unix epoch: enough until 2106.
BASE_TIME_BITS = 32
# record_id is a uint64 in the proto, but 2^40 ids last 348 years at 100 records/s, while 2^32 would run
# out after 1.4 years at that rate; 40 bits also keeps the header a whole 12 bytes.
RECORD_ID_BITS = 40
HEADER_BITS = VERSION_BITS + CODE_BITS + COUNT_BITS + BASE_TIME_BITS + RECORD_ID_BITS
CRC_BITS = 32
MIN_FRAME_BYTES = (HEADER_BITS + CRC_BITS) // 8


def frame_bits(n_records: int, schema: Schema, *, tag_bits: int = 0) -> int:
    """Exact size in bits of a frame of `n_records` records: header, records, padding to a byte, the AEAD
    tag (`tag_bits`, 0 for an unsealed frame), CRC."""
    if not 0 <= n_records <= MAX_RECORDS:
        raise InvalidInput(f"a frame holds 0..{MAX_RECORDS} records, not {n_records}")
    if (tag_bits and tag_bits // 8 not in TAG_BYTES) or tag_bits % 8:
        raise InvalidInput(f"tag_bits must be 0 or one of {[8 * t for t in TAG_BYTES]}, got {tag_bits}")
    body = HEADER_BITS + n_records * schema.record_bits
    return body + (-body % 8) + tag_bits + CRC_BITS


@dataclass(frozen=True)
class SealCheck:
    """How a receiver opens one burst's frame: the sending site's key (None: it holds none, and takes only
    unsealed frames), the nonce's parts from the burst header, and the shortest tag it accepts."""

    key: SiteKey | None
    epoch: int = 0
    sequence: int = 0
    min_tag_bytes: int = 16


def check_time_s(record: Record) -> None:
    """Times are seconds since the Unix epoch that fit the frame's uint32 base."""
    t = record.time_s
    if not (math.isfinite(t) and 0 <= t < 1 << BASE_TIME_BITS):
        raise InvalidInput(f"record {record.record_id}: time_s {t!r} is not in 0..2^{BASE_TIME_BITS} s")


def _ticks(time_s: float, base_s: int, resolution: Fraction) -> int:
    # Round to the nearest tick (half to even) so that decoded times are within resolution/2.
    return round((Fraction(time_s) - base_s) / resolution)


def _check_batch(records: Sequence[Record], schema: Schema) -> None:
    if len(records) > MAX_RECORDS:
        raise InvalidInput(
            f"{len(records)} records do not fit one frame (at most {MAX_RECORDS}); use pack_frames"
        )
    first = records[0]
    for i, rec in enumerate(records):
        if rec.schema_id != schema.id:
            raise InvalidInput(
                f"record {rec.record_id} has schema {rec.schema_id!r}; every record of this frame must be "
                f"{schema.id!r}"
            )
        if rec.stream_id != first.stream_id:
            raise InvalidInput(
                f"record {rec.record_id} is from stream {rec.stream_id!r}, record {first.record_id} from "
                f"{first.stream_id!r}; one frame carries one stream"
            )
        if rec.record_id != first.record_id + i:
            raise InvalidInput(
                f"record ids must be consecutive within a frame: expected {first.record_id + i}, "
                f"got {rec.record_id} at position {i}"
            )
        schema.validate(rec)
        check_time_s(rec)
    last_id = first.record_id + len(records) - 1
    if last_id >> RECORD_ID_BITS:
        raise InvalidInput(f"record_id {last_id} does not fit {RECORD_ID_BITS} bits")


def _offsets(records: Sequence[Record], schema: Schema) -> tuple[int, list[int]]:
    base = math.floor(min(r.time_s for r in records))
    offsets = [_ticks(r.time_s, base, schema.time_resolution) for r in records]
    if max(offsets) > schema.max_time_offset:
        span = max(r.time_s for r in records) - base
        raise InvalidInput(
            f"records span {span:.3f} s from the frame's base second; a {schema.id} frame carries at most "
            f"{schema.max_span_s} s ({schema.time_bits} bits of {schema.time_resolution_s} s); "
            "split them with pack_frames"
        )
    return base, offsets


def encode_records(records: Sequence[Record], schema: Schema) -> bytes:
    """Pack records of one schema and one stream, with consecutive record ids, into one frame.

    Layout, MSB first: version (8) | schema code (8) | count (8) | base time s (32) | first record_id (40) |
    per record: track id | location id | time offset in resolution ticks from base | one index per field,
    each followed by its confidence code where the schema declares one (FieldSpec.confidence_bits) |
    zero padding to a byte | CRC-32 of all preceding bytes (32, big-endian).
    Track ids are sent modulo 2^track_bits: they are local to a stream and only need to tell apart the
    tracks alive at one time, which stays unambiguous while fewer than 2^track_bits (4096) overlap; the
    receiver sees the id modulo 2^track_bits.
    """
    base, first_id = 0, 0
    offsets: list[int] = []
    if records:
        _check_batch(records, schema)
        base, offsets = _offsets(records, schema)
        first_id = records[0].record_id
    writer = BitWriter()
    writer.write(FRAME_VERSION, VERSION_BITS)
    writer.write(schema.code, CODE_BITS)
    writer.write(len(records), COUNT_BITS)
    writer.write(base, BASE_TIME_BITS)
    writer.write(first_id, RECORD_ID_BITS)
    track_mask = (1 << schema.track_bits) - 1
    for rec, offset in zip(records, offsets, strict=True):
        writer.write(rec.track_id & track_mask, schema.track_bits)
        writer.write(rec.location_id, schema.location_bits)
        writer.write(offset, schema.time_bits)
        for spec in schema.fields:
            index = spec.index(rec.fields.get(spec.name, UNKNOWN))
            writer.write(index, spec.bits)
            if spec.confidence_bits:
                # An unknown value states no confidence: code 0, which the decoder insists on.
                stated = rec.confidence.get(spec.name) if index else None
                writer.write(spec.confidence_code(stated), spec.confidence_bits)
    body = writer.to_bytes()
    return body + zlib.crc32(body).to_bytes(CRC_BITS // 8, "big")


def split_frames(
    records: Sequence[Record], schema: Schema, *, max_records: int = MAX_RECORDS
) -> list[list[Record]]:
    """Group a stream's records, in order, into the fewest runs that each fit one frame.

    A new run starts wherever the next record cannot join the current one: the run is full, its
    record_id does not follow the previous one, or its time would overflow the frame's time span.
    """
    if not 1 <= max_records <= MAX_RECORDS:
        raise InvalidInput(f"max_records must be 1..{MAX_RECORDS}, got {max_records}")
    chunks: list[list[Record]] = []
    low = high = 0.0
    for rec in records:
        check_time_s(rec)
        if records[0].stream_id != rec.stream_id:
            raise InvalidInput(
                f"record {rec.record_id} is from stream {rec.stream_id!r}, not {records[0].stream_id!r}; "
                "pack each stream separately"
            )
        cur = chunks[-1] if chunks else None
        if cur is not None and len(cur) < max_records and rec.record_id == cur[-1].record_id + 1:
            new_low, new_high = min(low, rec.time_s), max(high, rec.time_s)
            if _ticks(new_high, math.floor(new_low), schema.time_resolution) <= schema.max_time_offset:
                cur.append(rec)
                low, high = new_low, new_high
                continue
        chunks.append([rec])
        low = high = rec.time_s
    return chunks


def pack_frames(records: Sequence[Record], schema: Schema, *, max_records: int = MAX_RECORDS) -> list[bytes]:
    """Encode a stream's records into as few frames as fit, in order (see split_frames)."""
    return [encode_records(chunk, schema) for chunk in split_frames(records, schema, max_records=max_records)]


def decode_records(
    frame: bytes, registry: SchemaRegistry, *, stream_id: str, seal: SealCheck | None = None
) -> list[Record]:
    """Unpack one frame; every malformed frame raises a DecodeError (CrcError when only the CRC disagrees,
    AuthError when a sealed frame's tag does not, or an unsealed one comes where a key is held)."""
    if not frame:
        raise DecodeError(f"truncated frame: got 0 bytes, a frame is at least {MIN_FRAME_BYTES} bytes")
    if frame[0] not in (FRAME_VERSION, VERSION_AUTH, VERSION_SEALED):
        raise DecodeError(
            f"unsupported frame version {frame[0]}; this build reads versions "
            f"{FRAME_VERSION}, {VERSION_AUTH} and {VERSION_SEALED}"
        )
    if len(frame) < MIN_FRAME_BYTES:
        raise DecodeError(
            f"truncated frame: got {len(frame)} bytes, a frame is at least {MIN_FRAME_BYTES} bytes"
        )
    try:
        schema = registry.by_code(frame[1])
    except InvalidInput as err:
        raise DecodeError(f"frame names {err}") from err
    count = frame[2]
    if frame[0] != FRAME_VERSION or (seal is not None and seal.key is not None):
        frame = _open(frame, schema, count, stream_id, seal)
    expected = frame_bits(count, schema) // 8
    if len(frame) < expected:
        raise DecodeError(
            f"truncated frame: {count} {schema.id} records need {expected} bytes, got {len(frame)}"
        )
    if len(frame) > expected:
        raise DecodeError(
            f"trailing garbage: {count} {schema.id} records need {expected} bytes, got {len(frame)} "
            f"({len(frame) - expected} extra)"
        )
    body, sent_crc = frame[:-4], int.from_bytes(frame[-4:], "big")
    crc = zlib.crc32(body)
    if crc != sent_crc:
        raise CrcError(f"CRC mismatch: frame carries 0x{sent_crc:08x}, its bytes give 0x{crc:08x}")
    return _parse(BitReader(body), schema, count, stream_id)


def _open(frame: bytes, schema: Schema, count: int, stream_id: str, seal: SealCheck | None) -> bytes:
    """A sealed frame checked and turned back into the unsealed frame it carries."""
    if seal is None or seal.key is None:
        # AuthError, not a plain DecodeError: the sender keeps the frame (a key may yet be configured here).
        raise AuthError(f"frame version {frame[0]} is sealed, and this receiver holds no key for its site")
    crc, sent_crc = zlib.crc32(frame[:-4]), int.from_bytes(frame[-4:], "big")
    if crc != sent_crc:  # first: a frame the channel damaged is noise, whatever else is wrong with it
        raise CrcError(f"CRC mismatch: frame carries 0x{sent_crc:08x}, its bytes give 0x{crc:08x}")
    if frame[0] == FRAME_VERSION:
        raise AuthError("unsealed frame from a site whose key this receiver holds")
    body = (frame_bits(count, schema) - CRC_BITS) // 8
    tag = len(frame) - body - CRC_BITS // 8
    if tag not in TAG_BYTES:
        raise DecodeError(
            f"sealed frame of {len(frame)} bytes carries no valid tag ({tag} bytes after {body})"
        )
    if tag < seal.min_tag_bytes:
        raise AuthError(
            f"tag of {8 * tag} bits is shorter than the {8 * seal.min_tag_bytes} this receiver takes"
        )
    return open_sealed(frame, body, seal.key, stream_id=stream_id, epoch=seal.epoch, sequence=seal.sequence)


def _parse(reader: BitReader, schema: Schema, count: int, stream_id: str) -> list[Record]:
    reader.read(VERSION_BITS + CODE_BITS + COUNT_BITS)
    base = reader.read(BASE_TIME_BITS)
    first_id = reader.read(RECORD_ID_BITS)
    records = []
    for i in range(count):
        track_id = reader.read(schema.track_bits)
        location_id = reader.read(schema.location_bits)
        offset = reader.read(schema.time_bits)
        fields: dict[str, str] = {}
        confidence: dict[str, float] = {}
        for spec in schema.fields:
            index = reader.read(spec.bits)
            if index >= len(spec.values):
                raise DecodeError(
                    f"record {i}: field {spec.name!r} index {index} is outside its {len(spec.values)}-word "
                    "vocabulary"
                )
            fields[spec.name] = spec.values[index]
            code = reader.read(spec.confidence_bits)
            if code and not index:
                raise DecodeError(
                    f"record {i}: field {spec.name!r} is unknown but carries confidence code {code}, not 0"
                )
            stated = spec.confidence_value(code)
            if stated is not None:
                confidence[spec.name] = stated
        records.append(
            Record(
                schema_id=schema.id,
                stream_id=stream_id,
                track_id=track_id,
                record_id=first_id + i,
                time_s=float(base + offset * schema.time_resolution),
                location_id=location_id,
                fields=fields,
                confidence=confidence,
            )
        )
    if reader.read(reader.remaining):
        raise DecodeError("nonzero padding bits after the last record")
    return records
