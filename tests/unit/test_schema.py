"""Task schemas: the builtin JSON files, validation, JSON round trips and the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from semcom.codec import decode_records, decode_text_entries, encode_records, encode_text_entries
from semcom.errors import InvalidInput
from semcom.record import UNKNOWN, Record
from semcom.schema import FieldSpec, Schema, SchemaRegistry, load_schema_file

PETA_COLOURS = (
    "black",
    "blue",
    "brown",
    "green",
    "grey",
    "orange",
    "pink",
    "purple",
    "red",
    "white",
    "yellow",
)
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "semcom" / "schemas"


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.builtin()


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "bicycle",
        "version": 1,
        "code": 3,
        "description": "a bicycle and its rider's helmet",
        "time_resolution_s": 0.5,
        "time_bits": 10,
        "track_bits": 6,
        "location_bits": 4,
        "fields": [
            {
                "name": "frame_color",
                "label": "frame color",
                "phrase": "{value} bicycle",
                "values": ["red", "black"],
            },
            {"name": "helmet", "values": ["yes", "no"]},
        ],
    }
    doc.update(overrides)
    return doc


def _person(**fields: str) -> Record:
    return Record(
        "person/1", "cam-1", track_id=1, record_id=1, time_s=1_800_000_000.0, location_id=3, fields=fields
    )


def test_builtin_schemas(registry: SchemaRegistry) -> None:
    assert registry.ids() == ["person/1", "person/2", "vehicle/1"]
    person, vehicle = registry.get("person/1"), registry.get("vehicle/1")
    assert (person.name, person.version, person.code) == ("person", 1, 1)
    assert (vehicle.name, vehicle.version, vehicle.code) == ("vehicle", 1, 2)
    assert person.field_names == (
        "gender",
        "upper_color",
        "sleeve",
        "lower_color",
        "lower_length",
        "shoe_color",
    )
    assert person.field("gender").values == (UNKNOWN, "male", "female")
    for name in ("upper_color", "lower_color", "shoe_color"):
        assert person.field(name).values == (UNKNOWN, *PETA_COLOURS)
    assert [f.bits for f in person.fields] == [2, 4, 2, 4, 2, 4]
    assert person.field("upper_color").label == "shirt color"
    assert person.field("upper_color").render("white") == "white shirt"
    assert vehicle.field("type").values == (UNKNOWN, "car", "van", "truck", "bus", "motorcycle", "bicycle")
    assert [f.bits for f in vehicle.fields] == [3, 4]
    assert registry.by_code(1) is person
    assert registry.latest("vehicle") is vehicle


def test_record_bits(registry: SchemaRegistry) -> None:
    person = registry.get("person/1")
    # 18 attribute bits + 12 track + 8 location + 16 time (0.1 s ticks, 109 min per frame).
    assert (person.attribute_bits, person.record_bits) == (18, 54)
    assert (person.track_bits, person.location_bits, person.time_bits) == (12, 8, 16)
    assert person.max_span_s == 6553.5
    assert registry.get("vehicle/1").record_bits == 7 + 36


def test_index_errors_name_field_and_vocabulary(registry: SchemaRegistry) -> None:
    spec = registry.get("person/1").field("sleeve")
    assert spec.index("unknown") == 0
    assert spec.index("short") == 2
    with pytest.raises(
        InvalidInput, match=r"field 'sleeve': 'medium' is not .* allowed: unknown, long, short"
    ):
        spec.index("medium")


def test_validate(registry: SchemaRegistry) -> None:
    person = registry.get("person/1")
    person.validate(_person(gender="female"))  # missing fields mean unknown
    person.validate(_person(**{f: UNKNOWN for f in person.field_names}))
    with pytest.raises(InvalidInput, match="has schema 'vehicle/1', expected 'person/1'"):
        person.validate(Record("vehicle/1", "cam-1", 1, 1, 0.0, 0, {}))
    with pytest.raises(InvalidInput, match="no field 'hat'; fields: gender, upper_color"):
        person.validate(_person(hat="red"))
    with pytest.raises(
        InvalidInput, match="'upper_color': 'teal' is not in its vocabulary; allowed: unknown, black"
    ):
        person.validate(_person(upper_color="teal"))
    with pytest.raises(InvalidInput, match=r"location_id 256 outside 0\.\.255"):
        person.validate(Record("person/1", "cam-1", 1, 1, 0.0, 256, {}))


def test_normalise(registry: SchemaRegistry) -> None:
    person = registry.get("person/1")
    out = person.normalise({"shoe_color": " Black", "gender": "male"})
    assert list(out) == list(person.field_names)
    assert out == {
        "gender": "male",
        "upper_color": UNKNOWN,
        "sleeve": UNKNOWN,
        "lower_color": UNKNOWN,
        "lower_length": UNKNOWN,
        "shoe_color": "black",
    }
    with pytest.raises(InvalidInput, match="allowed"):
        person.normalise({"gender": "robot"})


@pytest.mark.parametrize("schema_id", ["person/1", "vehicle/1"])
def test_json_round_trip(registry: SchemaRegistry, schema_id: str) -> None:
    schema = registry.get(schema_id)
    assert Schema.from_json(schema.to_json()) == schema
    on_disk = json.loads((SCHEMA_DIR / f"{schema.name}.json").read_text())
    assert schema.to_dict() == on_disk


def test_new_schema_from_a_json_dir_needs_no_code(tmp_path: Path) -> None:
    (tmp_path / "bicycle.json").write_text(json.dumps(_doc()))
    registry = SchemaRegistry.from_dirs([tmp_path])
    assert registry.ids() == ["bicycle/1", "person/1", "person/2", "vehicle/1"]
    bicycle = registry.get("bicycle/1")
    assert bicycle.field("helmet").label == "helmet"  # default label from the name
    assert bicycle.record_bits == 2 + 2 + 6 + 4 + 10
    records = [
        Record("bicycle/1", "cam-9", 70, 5, 1000.0, 15, {"frame_color": "red"}),
        Record("bicycle/1", "cam-9", 3, 6, 1500.4, 0, {"frame_color": "black", "helmet": "no"}),
    ]
    decoded = decode_records(encode_records(records, bicycle), registry, stream_id="cam-9")
    assert [(r.track_id, r.time_s, r.location_id) for r in decoded] == [(70 % 64, 1000.0, 15), (3, 1500.5, 0)]
    assert decoded[1].fields == {"frame_color": "black", "helmet": "no"}
    text = decode_text_entries(encode_text_entries(records, bicycle), registry, stream_id="cam-9")
    assert [r.fields for r in text] == [r.fields for r in decoded]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"fields": [{"name": "helmet", "values": ["unknown", "yes"]}]}, "'unknown' is implicit"),
        ({"fields": [{"name": "helmet", "values": ["yes", "no", "yes"]}]}, "duplicate values yes"),
        ({"fields": [{"name": "helmet", "values": []}]}, "at least one more"),
        ({"fields": [{"name": "helmet", "values": ["Yes"]}]}, "lower case"),
        ({"fields": [{"name": "helmet", "values": ["yes, no"]}]}, "without commas"),
        ({"fields": [{"name": "helmet", "phrase": "helmet", "values": ["yes"]}]}, "must contain '{value}'"),
        (
            {"fields": [{"name": "a", "values": ["x"]}, {"name": "a", "values": ["y"]}]},
            "duplicate field names",
        ),
        ({"fields": []}, "at least one field"),
        ({"code": 0}, "code must be 1..255"),
        ({"code": 256}, "code must be 1..255"),
        ({"time_bits": 0}, "time_bits must be 1..32"),
        ({"time_resolution_s": 0}, "time_resolution_s must be > 0"),
        ({"name": "Bicycle"}, "schema name 'Bicycle'"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"version": "1"}, "version: Input should be a valid integer"),
    ],
)
def test_bad_schema_json_is_rejected(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_doc(**overrides)))
    with pytest.raises(InvalidInput, match=str(path)) as info:
        load_schema_file(path)
    assert message in str(info.value)


def test_missing_key_and_bad_json(tmp_path: Path) -> None:
    doc = _doc()
    del doc["time_bits"]
    with pytest.raises(InvalidInput, match="time_bits: Field required"):
        Schema.from_dict(doc)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        Schema.from_json("{")
    with pytest.raises(InvalidInput, match="expected a JSON object, got list"):
        Schema.from_json("[]")
    with pytest.raises(InvalidInput, match="cannot read schema file"):
        load_schema_file(tmp_path / "missing.json")


def test_field_spec_checks_its_own_invariants() -> None:
    with pytest.raises(InvalidInput, match="must start with 'unknown'"):
        FieldSpec("hat", "", ("red", "blue"), "hat", "{value} hat")
    assert FieldSpec("hat", "", (UNKNOWN, "red"), "hat", "{value} hat").bits == 1


def test_registry_errors(registry: SchemaRegistry, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"^unknown schema 'x'; known: person/1, person/2, vehicle/1$"):
        registry.get("x")
    known = r"1 \(person/1\), 2 \(vehicle/1\), 17 \(person/2\)"
    with pytest.raises(InvalidInput, match=rf"unknown schema code 9; known: {known}"):
        registry.by_code(9)
    with pytest.raises(InvalidInput, match="unknown schema name 'boat'; known: person, vehicle"):
        registry.latest("boat")
    person = registry.get("person/1")
    with pytest.raises(InvalidInput, match="duplicate schema id 'person/1'"):
        SchemaRegistry([person, person])
    clash = Schema.from_dict(_doc(code=1))
    with pytest.raises(InvalidInput, match="schemas 'person/1' and 'bicycle/1' share code 1"):
        SchemaRegistry([person, clash])
    with pytest.raises(InvalidInput, match="does not exist"):
        SchemaRegistry.from_dirs([tmp_path / "nope"])
    (tmp_path / "again.json").write_text(person.to_json())
    with pytest.raises(InvalidInput, match="duplicate schema id 'person/1'"):
        SchemaRegistry.from_dirs([tmp_path])
    only = SchemaRegistry.from_dirs([tmp_path], include_builtin=False)
    assert only.ids() == ["person/1"] and "person/1" in only and len(only) == 1
