"""Task schemas: named, versioned lists of fields with closed vocabularies, loaded from JSON data files."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from semcom.errors import InvalidInput
from semcom.record import UNKNOWN, Record

_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Every width must fit the codec's fixed-width fields; 32 bits covers any sane id or time span.
_MAX_WIDTH_BITS = 32
# A confidence quantiser of more bits would outgrow what a per-field probability is worth on the wire.
MAX_CONFIDENCE_BITS = 4
# Values and labels appear between ", " separators in the text-entry format, one entry per line.
_FORBIDDEN_IN_TEXT = (",", "\n", "\r")


def _check_text(what: str, text: str) -> None:
    if not text or text != text.strip() or any(c in text for c in _FORBIDDEN_IN_TEXT):
        raise InvalidInput(f"{what} {text!r} must be non-empty, without commas, line breaks or outer spaces")


@dataclass(frozen=True)
class FieldSpec:
    """One attribute of a schema: a closed vocabulary whose index 0 is always "unknown".

    `label` names the field in the paper's text-entry format ("shirt color"); `phrase` is a template with
    one "{value}" that a description generator fills in ("{value} shirt" -> "white shirt").

    `confidence_bits` (0: none) quantises the probability that the sent value is right. Code 0 means "not
    stated" (and is the only code an unknown value may carry); codes 1..2^b-1 are equal-width bins over
    [1/k, 1], k the number of known values (a top probability is never below 1/k), read back as the bin's
    middle. With 2 bits and 11 colours: 0.24, 0.55, 0.85; with 2 bits and 2 values: 0.58, 0.75, 0.92.
    """

    name: str
    description: str
    values: tuple[str, ...]
    label: str
    phrase: str
    confidence_bits: int = 0

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise InvalidInput(f"field name {self.name!r} must match {_NAME.pattern}")
        if len(self.values) < 2 or self.values[0] != UNKNOWN:
            raise InvalidInput(
                f"field {self.name!r}: values must start with {UNKNOWN!r} and list at least one more"
            )
        if UNKNOWN in self.values[1:]:
            raise InvalidInput(f"field {self.name!r}: {UNKNOWN!r} is implicit at index 0; do not list it")
        if len(set(self.values)) != len(self.values):
            dups = sorted({v for v in self.values if self.values.count(v) > 1})
            raise InvalidInput(f"field {self.name!r}: duplicate values {', '.join(dups)}")
        if len(self.values) > 1 << _MAX_WIDTH_BITS:
            raise InvalidInput(f"field {self.name!r}: more than 2^{_MAX_WIDTH_BITS} values")
        for value in self.values:
            _check_text(f"field {self.name!r}: value", value)
            if value != value.lower():
                raise InvalidInput(f"field {self.name!r}: value {value!r} must be lower case")
        _check_text(f"field {self.name!r}: label", self.label)
        if not 0 <= self.confidence_bits <= MAX_CONFIDENCE_BITS:
            raise InvalidInput(
                f"field {self.name!r}: confidence_bits must be 0..{MAX_CONFIDENCE_BITS}, "
                f"got {self.confidence_bits}"
            )
        rest = self.phrase.replace("{value}", "")
        if self.phrase.count("{value}") != 1 or "{" in rest or "}" in rest:
            raise InvalidInput(f"field {self.name!r}: phrase {self.phrase!r} must contain '{{value}}' once")

    @property
    def bits(self) -> int:
        """Fixed width of this field's index on the wire: ceil(log2(len(values)))."""
        return (len(self.values) - 1).bit_length()

    @property
    def confidence_levels(self) -> int:
        """Stated confidence levels (codes 1..levels); 0 when the field carries no confidence."""
        return (1 << self.confidence_bits) - 1

    def _confidence_range(self) -> tuple[float, float]:
        low = 1.0 / (len(self.values) - 1)
        return low, (1.0 - low) / self.confidence_levels

    def confidence_code(self, confidence: float | None) -> int:
        """The wire code of a probability (0: none stated, or a field without a quantiser)."""
        if not self.confidence_levels or confidence is None:
            return 0
        if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
            raise InvalidInput(f"field {self.name!r}: confidence {confidence!r} is not a probability")
        low, width = self._confidence_range()
        return min(max(int((confidence - low) / width), 0), self.confidence_levels - 1) + 1

    def confidence_value(self, code: int) -> float | None:
        """The probability a wire code stands for (None for 0); InvalidInput for a code out of range."""
        if not 0 <= code <= self.confidence_levels:
            raise InvalidInput(
                f"field {self.name!r}: confidence code {code} is outside 0..{self.confidence_levels}"
            )
        if code == 0:
            return None
        low, width = self._confidence_range()
        return low + (code - 0.5) * width

    @cached_property
    def _indices(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.values)}

    def index(self, value: str) -> int:
        """The wire index of `value`; InvalidInput naming the field and its vocabulary otherwise."""
        idx = self._indices.get(value)
        if idx is None:
            raise InvalidInput(
                f"field {self.name!r}: {value!r} is not in its vocabulary; allowed: {', '.join(self.values)}"
            )
        return idx

    def render(self, value: str) -> str:
        """The phrase for `value` ("white shirt"); callers usually skip fields whose value is unknown."""
        self.index(value)
        return self.phrase.replace("{value}", value)


@dataclass(frozen=True)
class Schema:
    """A task schema: what the transmitter reports about each object, and how wide each part is on the wire.

    `code` (1..255) identifies the schema in frames and must never change once records have been sent.
    Times are carried as offsets of `time_resolution_s` from a per-frame base in `time_bits`; track ids in
    `track_bits` (wrapped: they are local to a stream); location ids in `location_bits`.
    """

    name: str
    version: int
    code: int
    description: str
    fields: tuple[FieldSpec, ...]
    time_resolution_s: float
    time_bits: int
    track_bits: int
    location_bits: int

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise InvalidInput(f"schema name {self.name!r} must match {_NAME.pattern}")
        if self.version < 1:
            raise InvalidInput(f"schema {self.name!r}: version must be >= 1, got {self.version}")
        if not 1 <= self.code <= 255:
            raise InvalidInput(f"schema {self.id!r}: code must be 1..255, got {self.code}")
        if not self.fields:
            raise InvalidInput(f"schema {self.id!r}: needs at least one field")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise InvalidInput(f"schema {self.id!r}: duplicate field names in {', '.join(names)}")
        if not self.time_resolution_s > 0:
            raise InvalidInput(f"schema {self.id!r}: time_resolution_s must be > 0")
        widths = (
            ("time", self.time_bits, 1),
            ("track", self.track_bits, 0),
            ("location", self.location_bits, 0),
        )
        for what, bits, low in widths:
            if not low <= bits <= _MAX_WIDTH_BITS:
                raise InvalidInput(
                    f"schema {self.id!r}: {what}_bits must be {low}..{_MAX_WIDTH_BITS}, got {bits}"
                )

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def answer_keys(self) -> dict[str, str]:
        """JSON key per field for a language model's answer: its label ("shirt color", the words a prompt
        uses), or its name where labels clash."""
        labels = [f.label for f in self.fields]
        unique = len(set(labels)) == len(labels)
        return {f.name: f.label if unique else f.name for f in self.fields}

    @property
    def attribute_bits(self) -> int:
        """Bits of the field indices of one record, with their confidence codes where declared."""
        return sum(f.bits + f.confidence_bits for f in self.fields)

    @property
    def confidence_bits(self) -> int:
        """Bits of the confidence codes of one record (0: this schema carries no confidence)."""
        return sum(f.confidence_bits for f in self.fields)

    @property
    def record_bits(self) -> int:
        """Exact bits of one record in a frame: track id, location id, time offset and every field index
        (each followed by its confidence code where the field declares one)."""
        return self.track_bits + self.location_bits + self.time_bits + self.attribute_bits

    @property
    def max_location_id(self) -> int:
        return (1 << self.location_bits) - 1

    @property
    def max_time_offset(self) -> int:
        return (1 << self.time_bits) - 1

    @cached_property
    def time_resolution(self) -> Fraction:
        """The resolution as an exact decimal fraction, so that 0.1 s ticks add up without float drift."""
        return Fraction(str(self.time_resolution_s))

    @property
    def max_span_s(self) -> float:
        """Longest time span (from the frame's whole-second base) one frame can carry."""
        return float(self.max_time_offset * self.time_resolution)

    @cached_property
    def _by_name(self) -> dict[str, FieldSpec]:
        return {f.name: f for f in self.fields}

    def field(self, name: str) -> FieldSpec:
        spec = self._by_name.get(name)
        if spec is None:
            raise InvalidInput(
                f"schema {self.id!r} has no field {name!r}; fields: {', '.join(self.field_names)}"
            )
        return spec

    def validate(self, record: Record) -> None:
        """Raise InvalidInput unless `record` fits this schema; a missing field means unknown."""
        if record.schema_id != self.id:
            raise InvalidInput(
                f"record {record.record_id} has schema {record.schema_id!r}, expected {self.id!r}"
            )
        for name, value in record.fields.items():
            self.field(name).index(value)
        for name, confidence in record.confidence.items():
            self.field(name)
            if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
                raise InvalidInput(
                    f"record {record.record_id}: confidence {confidence!r} of {name!r} is not a probability"
                )
        if not 0 <= record.location_id <= self.max_location_id:
            raise InvalidInput(
                f"record {record.record_id}: location_id {record.location_id} outside "
                f"0..{self.max_location_id} ({self.location_bits} bits in {self.id})"
            )
        if record.track_id < 0 or record.record_id < 0:
            raise InvalidInput(f"record {record.record_id}: track_id and record_id must be >= 0")

    def normalise(self, fields: Mapping[str, str]) -> dict[str, str]:
        """Every field in schema order; missing ones become "unknown", values are trimmed and lower-cased."""
        out = dict.fromkeys(self.field_names, UNKNOWN)
        for name, value in fields.items():
            clean = value.strip().lower()
            self.field(name).index(clean)
            out[name] = clean
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this schema (the implicit "unknown" left out)."""
        return {
            "name": self.name,
            "version": self.version,
            "code": self.code,
            "description": self.description,
            "time_resolution_s": self.time_resolution_s,
            "time_bits": self.time_bits,
            "track_bits": self.track_bits,
            "location_bits": self.location_bits,
            "fields": [
                {
                    "name": f.name,
                    "description": f.description,
                    "label": f.label,
                    "phrase": f.phrase,
                    "values": list(f.values[1:]),
                }
                | ({"confidence_bits": f.confidence_bits} if f.confidence_bits else {})
                for f in self.fields
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str = "schema") -> Schema:
        """Build a schema from its JSON document; InvalidInput names `source` and the offending key."""
        try:
            parsed = _SchemaDoc.model_validate(doc)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise InvalidInput(f"{source}: {problems}") from err
        try:
            return cls(
                name=parsed.name,
                version=parsed.version,
                code=parsed.code,
                description=parsed.description,
                fields=tuple(
                    FieldSpec(
                        name=f.name,
                        description=f.description,
                        values=(UNKNOWN, *f.values),
                        label=f.label if f.label is not None else f.name.replace("_", " "),
                        phrase=f.phrase,
                        confidence_bits=(
                            f.confidence_bits if f.confidence_bits is not None else parsed.confidence_bits
                        ),
                    )
                    for f in parsed.fields
                ),
                time_resolution_s=parsed.time_resolution_s,
                time_bits=parsed.time_bits,
                track_bits=parsed.track_bits,
                location_bits=parsed.location_bits,
            )
        except InvalidInput as err:
            raise InvalidInput(f"{source}: {err}") from err

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "schema") -> Schema:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidInput(f"{source}: not valid JSON: {err}") from err
        if not isinstance(doc, dict):
            raise InvalidInput(f"{source}: expected a JSON object, got {type(doc).__name__}")
        return cls.from_dict(doc, source=source)


class _FieldDoc(BaseModel):
    """Shape of one field in a schema JSON file; the invariants are checked by FieldSpec."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    description: str = ""
    label: str | None = None
    phrase: str = "{value}"
    values: list[str]
    confidence_bits: int | None = None  # None: the schema's


class _SchemaDoc(BaseModel):
    """Shape of a schema JSON file; the invariants are checked by Schema."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    version: int
    code: int
    description: str = ""
    time_resolution_s: float
    time_bits: int
    track_bits: int
    location_bits: int
    confidence_bits: int = 0  # every field's, unless the field says otherwise
    fields: list[_FieldDoc]


def load_schema_file(path: str | Path) -> Schema:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(f"cannot read schema file {path}: {err}") from err
    return Schema.from_json(text, source=str(path))


@functools.cache
def _builtin_schemas() -> tuple[Schema, ...]:
    folder = resources.files("semcom").joinpath("schemas")
    entries = sorted((e for e in folder.iterdir() if e.name.endswith(".json")), key=lambda e: e.name)
    return tuple(
        Schema.from_json(e.read_text(encoding="utf-8"), source=f"semcom/schemas/{e.name}") for e in entries
    )


class SchemaRegistry:
    """The schemas one daemon knows, by id ("person/1") and by the numeric code carried in frames."""

    def __init__(self, schemas: Iterable[Schema]) -> None:
        self._by_id: dict[str, Schema] = {}
        self._by_code: dict[int, Schema] = {}
        for schema in schemas:
            if schema.id in self._by_id:
                raise InvalidInput(f"duplicate schema id {schema.id!r}")
            other = self._by_code.get(schema.code)
            if other is not None:
                raise InvalidInput(f"schemas {other.id!r} and {schema.id!r} share code {schema.code}")
            self._by_id[schema.id] = schema
            self._by_code[schema.code] = schema

    @classmethod
    def builtin(cls) -> SchemaRegistry:
        """The schemas shipped in semcom/schemas/*.json."""
        return cls(_builtin_schemas())

    @classmethod
    def from_dirs(cls, dirs: Iterable[str | Path], *, include_builtin: bool = True) -> SchemaRegistry:
        """The builtin schemas plus every *.json file in `dirs` (a new schema needs no code, only a file)."""
        schemas = list(_builtin_schemas()) if include_builtin else []
        for folder in map(Path, dirs):
            if not folder.is_dir():
                raise InvalidInput(f"schema directory {folder} does not exist")
            schemas.extend(load_schema_file(p) for p in sorted(folder.glob("*.json")))
        return cls(schemas)

    def ids(self) -> list[str]:
        return sorted(self._by_id)

    def get(self, schema_id: str) -> Schema:
        schema = self._by_id.get(schema_id)
        if schema is None:
            raise InvalidInput(f"unknown schema {schema_id!r}; known: {', '.join(self.ids()) or 'none'}")
        return schema

    def by_code(self, code: int) -> Schema:
        schema = self._by_code.get(code)
        if schema is None:
            known = ", ".join(f"{c} ({s.id})" for c, s in sorted(self._by_code.items())) or "none"
            raise InvalidInput(f"unknown schema code {code}; known: {known}")
        return schema

    def latest(self, name: str) -> Schema:
        """The highest version of the schema called `name` ("person" -> person/1)."""
        matches = [s for s in self._by_id.values() if s.name == name]
        if not matches:
            names = ", ".join(sorted({s.name for s in self._by_id.values()})) or "none"
            raise InvalidInput(f"unknown schema name {name!r}; known: {names}")
        return max(matches, key=lambda s: s.version)

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._by_id

    def __iter__(self) -> Iterator[Schema]:
        return iter(self._by_id[i] for i in self.ids())

    def __len__(self) -> int:
        return len(self._by_id)
