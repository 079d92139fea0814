"""The paper's text-entry format, one "[time], [location], [gender], [shirt color], ..." line per record."""

from __future__ import annotations

import calendar
import re
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction

from semcom.codec.frame import CRC_BITS, check_time_s
from semcom.errors import CrcError, DecodeError, InvalidInput
from semcom.record import UNKNOWN, Record
from semcom.schema import FieldSpec, Schema, SchemaRegistry

# High bit set, so that a text frame handed to the bit decoder fails on its version byte at once.
TEXT_FRAME_VERSION = 0x81
_CRC_BYTES = CRC_BITS // 8
_MIN_TEXT_FRAME_BYTES = 2 + _CRC_BYTES
_SEP = ", "
_HEAD = re.compile(r"#(\d+) track (\d+)")
_SITE = re.compile(r"site-(\d+)")
_TIME = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(\d+))?")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# A field with a confidence quantiser is written "white (p=0.85)": the level's probability, two decimals.
_CONFIDENT = re.compile(r"(.+) \(p=(\d\.\d\d)\)")


def _decimals(schema: Schema) -> int:
    """Digits after the seconds' point needed to show the schema's time resolution (0.1 s -> 1)."""
    resolution = schema.time_resolution
    # time_resolution is a short decimal by construction (parsed from the float's repr), so this ends.
    return next(d for d in range(32) if (resolution * 10**d).denominator == 1)


def _format_time(time_s: float, decimals: int) -> str:
    ticks = round(Fraction(time_s) * 10**decimals)
    seconds, fraction = divmod(ticks, 10**decimals)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime(_TIME_FORMAT)
    return f"{stamp}.{fraction:0{decimals}d}" if decimals else stamp


def _parse_time(text: str, decimals: int) -> float:
    match = _TIME.fullmatch(text)
    if match is None or len(match[2] or "") != decimals:
        raise DecodeError(f"time {text!r} is not 'YYYY-MM-DD HH:MM:SS' with {decimals} decimals")
    try:
        stamp = datetime.strptime(match[1], _TIME_FORMAT)
    except ValueError as err:
        raise DecodeError(f"time {text!r}: {err}") from err
    seconds = calendar.timegm(stamp.timetuple())
    return float(seconds + Fraction(int(match[2] or "0"), 10**decimals))


def _location_ids(location_names: Mapping[int, str] | None) -> dict[str, int]:
    """Reverse map of the location names, checked to be unambiguous in the text format."""
    ids: dict[str, int] = {}
    for loc, name in (location_names or {}).items():
        if not name or name != name.strip() or any(c in name for c in ",\n\r"):
            raise InvalidInput(
                f"location name {name!r} must be non-empty, without commas, line breaks or outer spaces"
            )
        site = _SITE.fullmatch(name)
        if site is not None and int(site[1]) != loc:
            raise InvalidInput(
                f"location name {name!r} for id {loc} reads as another location's default name"
            )
        if name in ids:
            raise InvalidInput(f"location name {name!r} is used for both {ids[name]} and {loc}")
        ids[name] = loc
    return ids


def format_entry(record: Record, schema: Schema, *, location_names: Mapping[int, str] | None = None) -> str:
    """One record as the paper's line: "#12 track 7, 2026-11-22 07:15:31.4, site-3, male, white, ..."."""
    schema.validate(record)
    check_time_s(record)
    names = location_names or {}
    parts = [
        f"#{record.record_id} track {record.track_id}",
        _format_time(record.time_s, _decimals(schema)),
        names.get(record.location_id, f"site-{record.location_id}"),
    ]
    for spec in schema.fields:
        value = record.fields.get(spec.name, UNKNOWN)
        code = spec.confidence_code(record.confidence.get(spec.name)) if value != UNKNOWN else 0
        stated = spec.confidence_value(code)
        parts.append(value if stated is None else f"{value} (p={stated:.2f})")
    return _SEP.join(parts)


def encode_text_entries(
    records: Sequence[Record], schema: Schema, *, location_names: Mapping[int, str] | None = None
) -> bytes:
    """Records of one schema and stream as a text frame: version | schema code | UTF-8 lines | CRC-32."""
    _location_ids(location_names)
    for rec in records:
        if rec.stream_id != records[0].stream_id:
            raise InvalidInput(
                f"record {rec.record_id} is from stream {rec.stream_id!r}, not {records[0].stream_id!r}; "
                "one frame carries one stream"
            )
    lines = "\n".join(format_entry(r, schema, location_names=location_names) for r in records)
    body = bytes([TEXT_FRAME_VERSION, schema.code]) + lines.encode("utf-8")
    return body + zlib.crc32(body).to_bytes(_CRC_BYTES, "big")


def decode_text_entries(
    frame: bytes,
    registry: SchemaRegistry,
    *,
    stream_id: str,
    location_names: Mapping[int, str] | None = None,
) -> list[Record]:
    """Parse a text frame back into records; `location_names` must match the ones it was encoded with."""
    if len(frame) < _MIN_TEXT_FRAME_BYTES:
        raise DecodeError(
            f"truncated text frame: got {len(frame)} bytes, at least {_MIN_TEXT_FRAME_BYTES} needed"
        )
    if frame[0] != TEXT_FRAME_VERSION:
        raise DecodeError(f"unsupported text frame version {frame[0]}; this build reads {TEXT_FRAME_VERSION}")
    body, sent_crc = frame[:-_CRC_BYTES], int.from_bytes(frame[-_CRC_BYTES:], "big")
    crc = zlib.crc32(body)
    if crc != sent_crc:
        raise CrcError(f"CRC mismatch: text frame carries 0x{sent_crc:08x}, its bytes give 0x{crc:08x}")
    try:
        schema = registry.by_code(body[1])
        text = body[2:].decode("utf-8")
    except (InvalidInput, UnicodeDecodeError) as err:
        raise DecodeError(f"text frame: {err}") from err
    location_ids = _location_ids(location_names)
    records = []
    for number, line in enumerate(text.split("\n") if text else [], start=1):
        try:
            records.append(_parse_entry(line, schema, location_ids, stream_id))
        except DecodeError as err:
            raise DecodeError(f"text frame line {number}: {err}") from err
    return records


def _parse_entry(line: str, schema: Schema, location_ids: Mapping[str, int], stream_id: str) -> Record:
    parts = line.split(_SEP)
    if len(parts) != 3 + len(schema.fields):
        labels = ", ".join(f.label for f in schema.fields)
        raise DecodeError(
            f"expected {3 + len(schema.fields)} entries '#id track t, time, location, {labels}', "
            f"got {len(parts)}"
        )
    head = _HEAD.fullmatch(parts[0])
    if head is None:
        raise DecodeError(f"{parts[0]!r} is not '#<record id> track <track id>'")
    location_id = location_ids.get(parts[2])
    if location_id is None:
        site = _SITE.fullmatch(parts[2])
        if site is None:
            raise DecodeError(f"unknown location {parts[2]!r}")
        location_id = int(site[1])
    if location_id > schema.max_location_id:
        raise DecodeError(f"location id {location_id} is outside 0..{schema.max_location_id}")
    fields: dict[str, str] = {}
    confidence: dict[str, float] = {}
    for spec, entry in zip(schema.fields, parts[3:], strict=True):
        value, stated = _value_confidence(spec, entry)
        fields[spec.name] = value
        if stated is not None:
            confidence[spec.name] = stated
    return Record(
        schema_id=schema.id,
        stream_id=stream_id,
        track_id=int(head[2]),
        record_id=int(head[1]),
        time_s=_parse_time(parts[1], _decimals(schema)),
        location_id=location_id,
        fields=fields,
        confidence=confidence,
    )


def _value_confidence(spec: FieldSpec, entry: str) -> tuple[str, float | None]:
    """One field's entry ("white" or "white (p=0.85)") as its value and stated confidence level."""
    match = _CONFIDENT.fullmatch(entry) if spec.confidence_bits else None
    value = entry if match is None else match[1]
    try:
        spec.index(value)
        if match is None:
            return value, None
        if value == UNKNOWN:
            raise InvalidInput(f"field {spec.name!r} is unknown but states confidence {match[2]}")
        return value, spec.confidence_value(spec.confidence_code(float(match[2])))
    except InvalidInput as err:
        raise DecodeError(str(err)) from err
