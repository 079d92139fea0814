"""A learned-mode burst: the exact parts of a frame stay digital (LDPC + QAM), its fields go learned.

The split of a codec frame (semcom.codec.frame) of n records of schema S:

- Digital header frame: the frame's own header (version, schema code, count, base time, first record id:
  96 bits), then per record its track id, location id and time offset (36 bits for person/1), zero padding
  to a byte and a CRC-32 of it all. It goes through `phy.transmit` with `header_mcs` (qpsk/ldpc_r12 by
  default) after the burst's pilots; its CRC decides whether the burst is delivered, as for a digital burst.
- Learned part: per record, the field values through the model's encoder (learned.py), S_total symbols per
  record, record after record, right after the header's symbols.

Burst = [pilots][header data symbols][n x S_total learned symbols]. The receiver decodes the header with
the digital phy, whose estimate of the gain h and N0 (re-made over every header symbol once the LDPC
decodes) equalises the learned symbols. `join_frame` puts the decoded field values back into a codec frame
that `decode_records` reads, so rxd keeps one record parser; the probabilities give each field's confidence.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from semcom.codec.bits import BitReader, BitWriter
from semcom.codec.frame import (
    BASE_TIME_BITS,
    CODE_BITS,
    COUNT_BITS,
    CRC_BITS,
    FRAME_VERSION,
    HEADER_BITS,
    RECORD_ID_BITS,
    VERSION_BITS,
    decode_records,
    frame_bits,
)
from semcom.errors import CrcError, DecodeError, InvalidInput
from semcom.phy.chain import RxResult, burst_symbols, receive, transmit
from semcom.phy.learned import FloatArray, LearnedModel
from semcom.phy.mcs import Mcs
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry

HEADER_MCS = Mcs("qpsk", "ldpc_r12")


def record_header_bits(schema: Schema) -> int:
    """Bits per record that stay digital: track id, location id, time offset."""
    return schema.track_bits + schema.location_bits + schema.time_bits


def header_frame_bits(n_records: int, schema: Schema) -> int:
    """Exact bits of the digital header frame of `n_records` records (padding and CRC included)."""
    body = HEADER_BITS + n_records * record_header_bits(schema)
    return body + (-body % 8) + CRC_BITS


def _crc_ok(frame: bytes) -> bytes:
    """The frame's body; CrcError when its CRC-32 does not match, DecodeError when it is too short."""
    if len(frame) < (HEADER_BITS + CRC_BITS) // 8:
        raise DecodeError(f"truncated frame: {len(frame)} bytes")
    body, sent = frame[:-4], int.from_bytes(frame[-4:], "big")
    if zlib.crc32(body) != sent:
        raise CrcError(
            f"header CRC mismatch: frame carries 0x{sent:08x}, its bytes give 0x{zlib.crc32(body):08x}"
        )
    return body


def _copy_frame_header(reader: BitReader, writer: BitWriter, schema: Schema) -> int:
    """Copy version .. first record id; returns the record count. DecodeError on a foreign frame."""
    version, code, count = reader.read(VERSION_BITS), reader.read(CODE_BITS), reader.read(COUNT_BITS)
    if version != FRAME_VERSION or code != schema.code:
        raise DecodeError(
            f"frame version {version} / schema code {code} is not {FRAME_VERSION} / {schema.code}"
        )
    for value, bits in ((version, VERSION_BITS), (code, CODE_BITS), (count, COUNT_BITS)):
        writer.write(value, bits)
    for bits in (BASE_TIME_BITS, RECORD_ID_BITS):
        writer.write(reader.read(bits), bits)
    return count


def _sealed(writer: BitWriter) -> bytes:
    body = writer.to_bytes()
    return body + zlib.crc32(body).to_bytes(CRC_BITS // 8, "big")


def split_frame(frame: bytes, schema: Schema) -> tuple[bytes, NDArray[np.int64]]:
    """A codec frame -> (digital header frame, (n, fields) value indices)."""
    body = _crc_ok(frame)
    reader, writer = BitReader(body), BitWriter()
    count = _copy_frame_header(reader, writer, schema)
    if len(frame) * 8 != frame_bits(count, schema):
        raise DecodeError(f"frame of {len(frame)} bytes does not hold {count} {schema.id} records")
    indices = np.zeros((count, len(schema.fields)), dtype=np.int64)
    for i in range(count):
        for bits in (schema.track_bits, schema.location_bits, schema.time_bits):
            writer.write(reader.read(bits), bits)
        for j, spec in enumerate(schema.fields):
            indices[i, j] = reader.read(spec.bits)
    return _sealed(writer), indices


def join_frame(header_frame: bytes, indices: NDArray[np.integer[Any]], schema: Schema) -> bytes:
    """A header frame and (n, fields) value indices -> the codec frame (`decode_records` reads it).

    CrcError when the header frame's CRC fails: the burst is then not delivered.
    """
    body = _crc_ok(header_frame)
    reader, writer = BitReader(body), BitWriter()
    count = _copy_frame_header(reader, writer, schema)
    if len(header_frame) * 8 != header_frame_bits(count, schema):
        raise DecodeError(f"header frame of {len(header_frame)} bytes does not hold {count} records")
    idx = np.asarray(indices)
    if idx.shape != (count, len(schema.fields)):
        raise DecodeError(f"{count} records need ({count}, {len(schema.fields)}) indices, got {idx.shape}")
    for i in range(count):
        for bits in (schema.track_bits, schema.location_bits, schema.time_bits):
            writer.write(reader.read(bits), bits)
        for j, spec in enumerate(schema.fields):
            writer.write(int(idx[i, j]), spec.bits)
    return _sealed(writer)


@dataclass(frozen=True)
class LearnedTxBurst:
    """A learned-mode burst: pilots, the digital header's symbols, then the learned symbols."""

    symbols: NDArray[np.complex64]
    header_info_bits: int  # BurstHeader.info_bits
    header_coded_bits: int  # BurstHeader.coded_bits
    pilot_symbols: int
    record_count: int
    learned_symbols: int


@dataclass(frozen=True)
class LearnedRxResult:
    """What the receiver made of a learned burst; `frame()` checks the header CRC."""

    header_frame: bytes
    probs: list[FloatArray]  # per field, (n, V_f) posterior probabilities
    header: RxResult  # the digital part's decoding (SNR, gain, failed LDPC blocks)
    schema: Schema

    def indices(self) -> NDArray[np.int64]:
        """(n, fields) most probable value per field."""
        if not self.probs:
            return np.zeros((0, 0), dtype=np.int64)
        return np.stack([p.argmax(axis=1) for p in self.probs], axis=1).astype(np.int64)

    def confidence(self) -> FloatArray:
        """(n, fields) probability of the chosen value: the receiver's confidence per field."""
        return np.stack([p.max(axis=1) for p in self.probs], axis=1)

    def frame(self) -> bytes:
        """The codec frame with the most probable field values; CrcError when the header was lost."""
        return join_frame(self.header_frame, self.indices(), self.schema)

    def records(self, stream_id: str) -> list[Record]:
        """The burst's records, each known field's confidence set from the decoder (an unknown value
        states none, as in the codec's person/2 records); CrcError when the header was lost."""
        records = decode_records(self.frame(), SchemaRegistry([self.schema]), stream_id=stream_id)
        confidence = self.confidence()
        names = self.schema.field_names
        return [
            replace(
                r,
                confidence={n: float(c) for n, c, i in zip(names, row, picks, strict=True) if i > 0},
            )
            for r, row, picks in zip(records, confidence, self.indices(), strict=True)
        ]


def learned_burst_symbols(
    n_records: int,
    schema: Schema,
    model: LearnedModel,
    *,
    header_mcs: Mcs = HEADER_MCS,
    pilot_count: int = 16,
) -> int:
    """Total channel symbols of a learned burst of `n_records` records (pilots included)."""
    digital = burst_symbols(header_frame_bits(n_records, schema), header_mcs, pilot_count)
    return digital + n_records * model.symbols_per_record


def transmit_learned(
    frame: bytes,
    model: LearnedModel,
    schema: Schema,
    *,
    header_mcs: Mcs = HEADER_MCS,
    pilot_count: int = 16,
    field_probs: Sequence[NDArray[np.floating[Any]]] | None = None,
) -> LearnedTxBurst:
    """Split a codec frame, send its header digitally and its fields through the model's encoder.

    `field_probs` (per field (n, V_f)) sends calibrated distributions instead of the frame's hard values.
    """
    if model.schema_id != schema.id:
        raise InvalidInput(f"learned model {model.name!r} is for {model.schema_id}, the frame is {schema.id}")
    if pilot_count < 2:
        raise InvalidInput(f"a learned burst needs >= 2 pilots to equalise its symbols, got {pilot_count}")
    header_frame, indices = split_frame(frame, schema)
    tx = transmit(header_frame, header_mcs, pilot_count=pilot_count)
    if field_probs is None:
        learned = model.encode_indices(indices)
    else:
        learned = model.encode_fields(field_probs)
        if learned.shape[0] != indices.shape[0]:
            raise InvalidInput(f"field_probs hold {learned.shape[0]} records, the frame {indices.shape[0]}")
    symbols = np.concatenate([tx.symbols, learned.reshape(-1)]).astype(np.complex64)
    return LearnedTxBurst(symbols, tx.info_bits, tx.coded_bits, pilot_count, indices.shape[0], learned.size)


def receive_learned(
    symbols: NDArray[np.complex64],
    model: LearnedModel,
    schema: Schema,
    *,
    header_info_bits: int,
    header_coded_bits: int,
    pilot_count: int,
    record_count: int,
    header_mcs: Mcs = HEADER_MCS,
    max_iter: int = 20,
) -> LearnedRxResult:
    """Decode the header digitally, then the learned symbols with its channel estimate.

    DecodeError when the burst's length does not match its header numbers (as `phy.receive`).
    """
    y = np.asarray(symbols, dtype=np.complex64).reshape(-1)
    if pilot_count < 2:
        raise DecodeError(f"a learned burst carries >= 2 pilots, the header says {pilot_count}")
    if header_info_bits != header_frame_bits(record_count, schema):
        raise DecodeError(
            f"header of {header_info_bits} bits does not match {record_count} {schema.id} records "
            f"({header_frame_bits(record_count, schema)})"
        )
    digital = burst_symbols(header_info_bits, header_mcs, pilot_count)
    expected = digital + record_count * model.symbols_per_record
    if y.size != expected:
        raise DecodeError(f"learned burst of {y.size} symbols; {record_count} records need {expected}")
    header = receive(
        y[:digital],
        header_mcs,
        info_bits=header_info_bits,
        coded_bits=header_coded_bits,
        pilot_count=pilot_count,
        max_iter=max_iter,
    )
    learned = y[digital:].reshape(record_count, model.symbols_per_record)
    probs = model.decode_fields(learned, noise_var=header.noise_var, gain=header.gain)
    return LearnedRxResult(header.frame, probs, header, schema)
