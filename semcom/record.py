"""The understanding embedding as a plain dataclass: one record per keyframe of one tracked object."""

from __future__ import annotations

from dataclasses import dataclass, field

from semcom.pb.v1 import common_pb2

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Record:
    """What txd understood about one object at one keyframe.

    `fields` maps each schema field name to a word of its closed vocabulary (or "unknown");
    `confidence` optionally maps field names to 0..1 (not carried by the bit codec).
    """

    schema_id: str
    stream_id: str
    track_id: int
    record_id: int
    time_s: float
    location_id: int
    fields: dict[str, str]
    confidence: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_pb(cls, msg: common_pb2.Record) -> Record:
        return cls(
            schema_id=msg.schema_id,
            stream_id=msg.stream_id,
            track_id=msg.track_id,
            record_id=msg.record_id,
            time_s=msg.time_s,
            location_id=msg.location_id,
            fields={f.name: f.value for f in msg.fields},
            confidence={f.name: f.confidence for f in msg.fields if f.confidence > 0},
        )

    def to_pb(self) -> common_pb2.Record:
        return common_pb2.Record(
            schema_id=self.schema_id,
            stream_id=self.stream_id,
            track_id=self.track_id,
            record_id=self.record_id,
            time_s=self.time_s,
            location_id=self.location_id,
            fields=[
                common_pb2.FieldValue(name=k, value=v, confidence=self.confidence.get(k, 0.0))
                for k, v in self.fields.items()
            ],
        )
