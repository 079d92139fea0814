"""Bits on the wire per record: the bit-packed frame against the paper's text-entry format, the cost of a
schema's confidence quantiser (person/2: 2 bits a field), and of sealing frames with an AEAD tag (32..128
bits per frame)."""

from __future__ import annotations

import argparse
import calendar
import random
from collections.abc import Sequence
from dataclasses import dataclass

from semcom.codec import (
    MAX_RECORDS,
    SealCheck,
    Sealing,
    SiteKey,
    decode_records,
    decode_text_entries,
    encode_text_entries,
    format_entry,
    frame_bits,
    pack_frames,
)
from semcom.record import UNKNOWN, Record
from semcom.schema import Schema, SchemaRegistry

START_S = calendar.timegm((2026, 11, 22, 7, 15, 0))
# Share of fields the understanding agent could not read; it changes the text size, not the bit size.
UNKNOWN_RATE = 0.1


@dataclass(frozen=True)
class Sizes:
    """Measured sizes of one batch of records in both formats."""

    schema_id: str
    records: int
    record_bits: int
    frames: int
    frame_bits: int
    text_bytes: int

    @property
    def overhead_bits(self) -> int:
        return self.frame_bits - self.records * self.record_bits

    @property
    def text_bits(self) -> int:
        return self.text_bytes * 8


def random_records(schema: Schema, n: int, seed: int) -> list[Record]:
    """`n` records of one stream in time order over ten minutes, seeded so runs are comparable."""
    rng = random.Random(f"{seed}/{schema.id}")
    times = sorted(START_S + rng.uniform(0, 600) for _ in range(n))
    records = []
    for i, time_s in enumerate(times):
        fields = {
            f.name: UNKNOWN if rng.random() < UNKNOWN_RATE else rng.choice(f.values[1:])
            for f in schema.fields
        }
        # Only schemas with a quantiser draw confidences, so person/1's records stay as they were.
        confidence = {f.name: rng.uniform(0.0, 1.0) for f in schema.fields if f.confidence_bits}
        records.append(
            Record(
                schema_id=schema.id,
                stream_id="cam-1",
                track_id=rng.randint(1, 300),
                record_id=i + 1,
                time_s=time_s,
                location_id=rng.randint(0, 15),
                fields=fields,
                confidence=confidence,
            )
        )
    return records


TAG_BITS = (0, 32, 64, 128)
KEY = SiteKey(bytes(32))  # any key: sealing changes the size, never with the key


def measure(schema: Schema, records: Sequence[Record], registry: SchemaRegistry, tag_bits: int = 0) -> Sizes:
    """Encode `records` both ways (frames sealed with a `tag_bits` tag unless 0), check both decode to the
    same records, and count the bytes."""
    frames = pack_frames(records, schema)
    checks: list[SealCheck | None] = [None] * len(frames)
    if tag_bits:
        sealing = Sealing(KEY, tag_bytes=tag_bits // 8)
        frames = [sealing.seal(f, stream_id="cam-1", epoch=1, sequence=i + 1) for i, f in enumerate(frames)]
        checks = [SealCheck(KEY, 1, i + 1, min_tag_bytes=4) for i in range(len(frames))]
    text = encode_text_entries(records, schema)
    decoded = [
        r
        for f, c in zip(frames, checks, strict=True)
        for r in decode_records(f, registry, stream_id="cam-1", seal=c)
    ]
    if decoded != decode_text_entries(text, registry, stream_id="cam-1"):
        raise AssertionError(f"{schema.id}: the two formats decoded to different records")
    return Sizes(
        schema_id=schema.id,
        records=len(records),
        record_bits=schema.record_bits,
        frames=len(frames),
        frame_bits=sum(len(f) * 8 for f in frames),
        text_bytes=len(text),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.codec_bits", description=__doc__)
    parser.add_argument("--records", type=int, default=100, help="records per schema (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random records (default 0)")
    args = parser.parse_args(argv)
    if args.records < 1:
        parser.error("--records must be >= 1")
    registry = SchemaRegistry.builtin()
    n = args.records
    print(f"{n} random records per schema (seed {args.seed}), {UNKNOWN_RATE:.0%} of fields unknown")
    header = ("schema", "info b/rec", "conf b/rec", "1-rec frame", "overhead", "frames", "N-rec bits",
              "wire b/rec", "text B", "text bits", "text b/rec", "text/bit")  # fmt: skip
    print("  ".join(f"{h:>11}" for h in header))
    for schema in registry:
        sizes = measure(schema, random_records(schema, n, args.seed), registry)
        row = (
            schema.id,
            schema.record_bits,
            schema.confidence_bits,
            frame_bits(1, schema),
            sizes.overhead_bits,
            sizes.frames,
            sizes.frame_bits,
            f"{sizes.frame_bits / n:.1f}",
            sizes.text_bytes,
            sizes.text_bits,
            f"{sizes.text_bits / n:.1f}",
            f"{sizes.text_bits / sizes.frame_bits:.2f}",
        )
        print("  ".join(f"{v:>11}" for v in row))
    print()
    print("sealed frames (ChaCha20-Poly1305, tag cut to the bits shown; a forgery passes with p ~ 2^-tag):")
    sealed_header = ("schema", "tag bits", "1-rec frame", "N-rec bits", "wire b/rec", "P(forgery)")
    print("  ".join(f"{h:>11}" for h in sealed_header))
    for schema in registry:
        records = random_records(schema, n, args.seed)
        for tag_bits in TAG_BITS:
            sizes = measure(schema, records, registry, tag_bits)
            one = measure(schema, records[:1], registry, tag_bits)
            if one.frame_bits != frame_bits(1, schema, tag_bits=tag_bits):
                raise AssertionError(f"{schema.id}: frame_bits disagrees with a sealed frame's measured size")
            forgery = f"2^-{tag_bits}" if tag_bits else "CRC only"
            row2 = (schema.id, tag_bits, frame_bits(1, schema, tag_bits=tag_bits), sizes.frame_bits,
                    f"{sizes.frame_bits / n:.1f}", forgery)  # fmt: skip
            print("  ".join(f"{v:>11}" for v in row2))
    for schema_id in ("person/1", "person/2"):
        example = random_records(registry.get(schema_id), 1, args.seed)[0]
        print(f"text entry ({schema_id}): {format_entry(example, registry.get(schema_id))!r}")
    print(
        "info b/rec: information bits of one record, conf b/rec of them its confidence codes; "
        "1-rec frame: bits of a frame holding one record; "
        f"overhead: header, padding and CRC bits of the N records' frames (<= {MAX_RECORDS} records each)"
    )


if __name__ == "__main__":
    main()
