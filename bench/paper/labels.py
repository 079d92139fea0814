"""Ground truth: a labelled video (person, time range, attributes) or a labelled crop set (PETA layout)."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from semcom.errors import InvalidInput
from semcom.record import UNKNOWN
from semcom.schema import Schema
from txd.understanding.train_attributes import PETA_COLUMNS

# A labelled value cell may list several values ("black|white": both are true of the target).
MULTI_SEP = "|"
VIDEO_COLUMNS = ("person", "start_s", "end_s")


@dataclass(frozen=True)
class Target:
    """One labelled thing a query can be about: a person in a time range, or one crop.

    `labels` maps a schema field to the values true of the target, the main one first (empty: unknown).
    """

    key: str
    labels: Mapping[str, tuple[str, ...]]
    start_s: float = 0.0
    end_s: float = 0.0
    image: Path | None = None

    def satisfies(self, slots: Mapping[str, str]) -> bool:
        """True when every slot's value is among the target's labels for that field."""
        return all(value in self.labels.get(name, ()) for name, value in slots.items())

    def record_fields(self, schema: Schema) -> dict[str, str]:
        """One value per field for an oracle record: the main labelled value, or unknown."""
        out = dict.fromkeys(schema.field_names, UNKNOWN)
        out.update({name: values[0] for name, values in self.labels.items() if values})
        return out


def parse_cell(schema: Schema, name: str, cell: str, where: str) -> tuple[str, ...]:
    """The values of one label cell, in order; InvalidInput names the cell and the vocabulary."""
    spec = schema.field(name)
    values = [v.strip().lower() for v in cell.split(MULTI_SEP) if v.strip()]
    values = [v for v in values if v != UNKNOWN]
    for value in values:
        if value not in spec.values:
            raise InvalidInput(
                f"{where}: {name} value {value!r} is not in the {schema.id} vocabulary "
                f"({', '.join(spec.values[1:])})"
            )
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True)
class VideoLabels:
    """Labelled people of one video: who is visible when, one person at a time."""

    path: Path
    targets: tuple[Target, ...]
    fields: tuple[str, ...]

    def target_at(self, time_s: float, tolerance_s: float) -> int | None:
        """Index of the target whose (widened) time range holds `time_s`; the nearest range wins."""
        inside = [
            i
            for i, t in enumerate(self.targets)
            if t.start_s - tolerance_s <= time_s <= t.end_s + tolerance_s
        ]
        if not inside:
            return None
        return min(
            inside, key=lambda i: max(self.targets[i].start_s - time_s, time_s - self.targets[i].end_s)
        )


def load_video_labels(path: Path, schema: Schema) -> VideoLabels:
    """Read the labelled-video CSV: `person,start_s,end_s,<schema field>...`; `#` lines are comments.

    Columns that are not schema fields (frame numbers, notes) are ignored; a field column may be absent
    (unknown for everyone), but at least one must be present. A cell may list values joined by `|`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(f"cannot read labels {path}: {err.strerror or err}") from err
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InvalidInput(f"{path}: no header row (columns {', '.join(VIDEO_COLUMNS)}, then schema fields)")
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in VIDEO_COLUMNS if c not in columns]
    fields = tuple(name for name in schema.field_names if name in columns)
    if missing or not fields:
        need = ", ".join(missing) if missing else f"any of the {schema.id} fields"
        raise InvalidInput(
            f"{path}: missing column(s) {need}; expected {', '.join(VIDEO_COLUMNS)} and fields of "
            f"{schema.id} "
            f"({', '.join(schema.field_names)}); found {', '.join(columns) or 'none'}"
        )
    targets = []
    for number, row in enumerate(reader, start=2):
        where = f"{path} data row {number - 1}"
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        try:
            start_s, end_s = float(row["start_s"]), float(row["end_s"])
        except ValueError as err:
            raise InvalidInput(f"{where}: start_s/end_s must be numbers: {err}") from err
        if not 0 <= start_s <= end_s:
            raise InvalidInput(f"{where}: time range {start_s}..{end_s} s is empty or negative")
        labels = {name: parse_cell(schema, name, row.get(name, ""), where) for name in fields}
        targets.append(Target(row["person"] or str(number - 1), labels, start_s=start_s, end_s=end_s))
    if not targets:
        raise InvalidInput(f"{path}: no labelled person rows")
    return VideoLabels(path=path, targets=tuple(targets), fields=fields)


@dataclass(frozen=True)
class CropSet:
    """A sample of labelled person crops (PETA layout): each crop is one keyframe."""

    root: Path
    targets: tuple[Target, ...]
    fields: tuple[str, ...]
    total: int
    subsets: tuple[str, ...] = ()  # the subset (camera set) of each target, "" when not given
    eligible: int = 0  # rows the sample was drawn from (those of the allowed subsets)


def load_crop_set(
    root: Path, schema: Schema, *, max_crops: int, seed: int, subsets: Collection[str] | None = None
) -> CropSet:
    """A seeded sample of `max_crops` rows of `<root>/peta_labels.csv` whose images exist, in file order;
    with `subsets`, drawn only from the rows of those subsets (the same sample as before when all are
    allowed)."""
    labels_path = root / "peta_labels.csv"
    if not labels_path.is_file():
        raise InvalidInput(f"crop set {root}: no peta_labels.csv (expected the PETA layout, see docs)")
    with labels_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("image", *PETA_COLUMNS.values()) if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{labels_path}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise InvalidInput(f"{labels_path}: no rows")
    if max_crops < 1:
        raise InvalidInput(f"max_crops must be >= 1, got {max_crops}")
    pool = [i for i, r in enumerate(rows) if subsets is None or r.get("subset", "") in subsets]
    if not pool:
        raise InvalidInput(f"{labels_path}: no rows of the subsets {', '.join(sorted(subsets or ()))}")
    picked = sorted(pool[j] for j in random.Random(seed).sample(range(len(pool)), min(max_crops, len(pool))))
    targets = []
    for i in picked:
        row = rows[i]
        labels = {
            name: tuple(v for v in row[column].split(MULTI_SEP) if v in schema.field(name).values[1:])
            for name, column in PETA_COLUMNS.items()
        }
        image = root / row["image"]
        if not image.is_file():
            raise InvalidInput(f"{labels_path} row {i + 1}: image {image} does not exist")
        targets.append(Target(row["image"], labels, image=image))
    return CropSet(
        root=root,
        targets=tuple(targets),
        fields=tuple(PETA_COLUMNS),
        total=len(rows),
        subsets=tuple(rows[i].get("subset", "") for i in picked),
        eligible=len(pool),
    )


def relevant(targets: Sequence[Target], slots: Mapping[str, str]) -> set[int]:
    """Indices of the targets that satisfy `slots`."""
    return {i for i, t in enumerate(targets) if t.satisfies(slots)}
