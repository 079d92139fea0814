"""Frames <-> Link bursts: the physical layer turns a codec frame into IQ symbols, and back."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from semcom import phy
from semcom.errors import DecodeError, InvalidInput
from semcom.pb.v1 import common_pb2, link_pb2
from semcom.phy.learned import LearnedModel, ModelMismatch, learned_name
from semcom.phy.learned_link import HEADER_MCS, receive_learned, transmit_learned
from semcom.phy.mcs import Mcs
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry

_MODULATIONS: dict[str, int] = {
    "bpsk": link_pb2.MODULATION_BPSK,
    "qpsk": link_pb2.MODULATION_QPSK,
    "qam16": link_pb2.MODULATION_QAM16,
    "qam64": link_pb2.MODULATION_QAM64,
}
_CODINGS: dict[str, int] = {"none": link_pb2.CODING_NONE, "ldpc_r12": link_pb2.CODING_LDPC_R12}
_MODULATION_NAMES = {v: k for k, v in _MODULATIONS.items()}
_CODING_NAMES = {v: k for k, v in _CODINGS.items()}

BYTES_MODE = "bytes"


def parse_mcs(text: str) -> Mcs | None:
    """ "qam16/ldpc_r12" -> Mcs; "bytes" -> None (the frame travels as bytes with no physical layer)."""
    if text == BYTES_MODE:
        return None
    modulation, _, coding = text.partition("/")
    if modulation not in _MODULATIONS or (coding or "none") not in _CODINGS:
        raise InvalidInput(
            f"unknown modulation/coding {text!r}; use '{BYTES_MODE}' or MODULATION/CODING with modulation in "
            f"{sorted(_MODULATIONS)} and coding in {sorted(_CODINGS)}"
        )
    return Mcs(modulation=modulation, coding=coding or "none")  # type: ignore[arg-type]


@dataclass(frozen=True)
class LinkPhy:
    """What a link's `mcs` setting names: a digital MCS (None: bytes), or a learned model (its name or
    JSON path) whose bursts carry a digital header on `mcs`."""

    mcs: Mcs | None
    learned: str | None = None


def parse_phy(text: str) -> LinkPhy:
    """ "qpsk/ldpc_r12", "bytes", or "learned/<model>" (header on qpsk/ldpc_r12); InvalidInput otherwise.
    The model itself is loaded (and checked against a schema) by semcom.phy.learned.load_model."""
    name = learned_name(text)
    if name is None:
        return LinkPhy(parse_mcs(text))
    return LinkPhy(HEADER_MCS, name)


def mcs_name(mcs: Mcs | None) -> str:
    return BYTES_MODE if mcs is None else f"{mcs.modulation}/{mcs.coding}"


def build_burst(
    frame: bytes,
    *,
    stream_id: str,
    sequence: int,
    schema_id: str,
    kind: int,
    record_count: int,
    mcs: Mcs | None,
    pilot_count: int = 16,
    attempt: int = 0,
) -> link_pb2.Burst:
    """Encode one frame for the air (or as plain bytes when `mcs` is None)."""
    header = link_pb2.BurstHeader(
        stream_id=stream_id,
        sequence=sequence,
        schema_id=schema_id,
        kind=kind,  # type: ignore[arg-type]
        record_count=record_count,
        info_bits=8 * len(frame),
        tx_time_s=time.time(),
        attempt=attempt,
    )
    if mcs is None:
        header.modulation = link_pb2.MODULATION_NONE
        header.coding = link_pb2.CODING_NONE
        header.coded_bits = 8 * len(frame)
        payload = common_pb2.Tensor(dtype=common_pb2.DTYPE_UINT8, shape=[len(frame)], data=frame)
        return link_pb2.Burst(header=header, payload=payload)
    tx = phy.transmit(frame, mcs, pilot_count=pilot_count)
    header.modulation = _MODULATIONS[mcs.modulation]  # type: ignore[assignment]
    header.coding = _CODINGS[mcs.coding]  # type: ignore[assignment]
    header.coded_bits = tx.coded_bits
    header.pilot_symbols = tx.pilot_symbols
    symbols = np.ascontiguousarray(tx.symbols, dtype=np.complex64)
    payload = common_pb2.Tensor(
        dtype=common_pb2.DTYPE_COMPLEX64, shape=[symbols.size], data=symbols.tobytes()
    )
    return link_pb2.Burst(header=header, payload=payload)


def burst_mcs(header: link_pb2.BurstHeader) -> Mcs | None:
    """The header's modulation and coding (None for a bytes payload); DecodeError when unknown."""
    if header.modulation == link_pb2.MODULATION_NONE:
        return None
    modulation = _MODULATION_NAMES.get(header.modulation)
    coding = _CODING_NAMES.get(header.coding)
    if modulation is None or coding is None:
        raise DecodeError(
            f"unsupported modulation/coding {header.modulation}/{header.coding} in burst header"
        )
    return Mcs(modulation=modulation, coding=coding)  # type: ignore[arg-type]


def payload_symbols(payload: common_pb2.Tensor) -> np.ndarray:
    """A COMPLEX64 tensor as a 1-D array; DecodeError when its bytes and shape disagree."""
    if payload.dtype != common_pb2.DTYPE_COMPLEX64:
        raise DecodeError(f"payload dtype {payload.dtype} is not COMPLEX64")
    n = math.prod(payload.shape) if payload.shape else 0
    if len(payload.data) != 8 * n:
        raise DecodeError(
            f"payload holds {len(payload.data)} bytes; shape {list(payload.shape)} needs {8 * n}"
        )
    symbols = np.frombuffer(payload.data, dtype=np.complex64)
    if not np.isfinite(symbols).all():
        raise DecodeError("payload holds non-finite symbols (NaN or infinity)")
    return symbols


@dataclass(frozen=True)
class ReceivedFrame:
    """A frame recovered from a burst, with what the receiver measured on the way."""

    frame: bytes
    snr_db: float
    pre_fec_ber: float
    blocks_failed: int
    channel_symbols: int


def open_burst(burst: link_pb2.Burst, *, max_iter: int = 20) -> ReceivedFrame:
    """Demodulate and decode a burst's payload back into frame bytes (the frame's CRC is checked later)."""
    header = burst.header
    mcs = burst_mcs(header)
    if mcs is None:
        if burst.payload.dtype != common_pb2.DTYPE_UINT8:
            raise DecodeError(f"payload dtype {burst.payload.dtype} is not UINT8 for a bytes burst")
        return ReceivedFrame(bytes(burst.payload.data), math.nan, math.nan, 0, 0)
    symbols = payload_symbols(burst.payload)
    if header.info_bits == 0 or header.info_bits % 8:
        raise DecodeError(f"info_bits {header.info_bits} is not a positive whole number of bytes")
    try:
        rx = phy.receive(
            symbols,
            mcs,
            info_bits=header.info_bits,
            coded_bits=header.coded_bits,
            pilot_count=header.pilot_symbols,
            max_iter=max_iter,
        )
    except (ValueError, ArithmeticError) as err:
        # Symbols no channel produces (huge pilots overflow the noise estimate, say): a bad burst, not a
        # receiver failure; found by tests/unit/test_fuzz_decoders.py.
        raise DecodeError(f"burst cannot be demodulated: {err}") from err
    return ReceivedFrame(rx.frame, rx.snr_db, rx.pre_fec_ber, rx.blocks_failed, symbols.size)


def build_learned_burst(
    frame: bytes,
    model: LearnedModel,
    schema: Schema,
    *,
    stream_id: str,
    sequence: int,
    record_count: int,
    header_mcs: Mcs = HEADER_MCS,
    pilot_count: int = 16,
    attempt: int = 0,
) -> link_pb2.Burst:
    """An unsealed codec frame as a learned-mode burst: its header digital on `header_mcs`, its field values
    through the model; the header names the model and its weights' digest."""
    tx = transmit_learned(frame, model, schema, header_mcs=header_mcs, pilot_count=pilot_count)
    if tx.record_count != record_count:
        raise InvalidInput(f"frame holds {tx.record_count} records, the burst says {record_count}")
    header = link_pb2.BurstHeader(
        stream_id=stream_id,
        sequence=sequence,
        schema_id=schema.id,
        kind=link_pb2.PAYLOAD_KIND_RECORDS,
        modulation=_MODULATIONS[header_mcs.modulation],  # type: ignore[arg-type]
        coding=_CODINGS[header_mcs.coding],  # type: ignore[arg-type]
        info_bits=tx.header_info_bits,
        coded_bits=tx.header_coded_bits,
        pilot_symbols=tx.pilot_symbols,
        record_count=record_count,
        tx_time_s=time.time(),
        attempt=attempt,
        learned_model=model.name,
        learned_digest=model.digest,
    )
    payload = common_pb2.Tensor(
        dtype=common_pb2.DTYPE_COMPLEX64, shape=[tx.symbols.size], data=tx.symbols.tobytes()
    )
    return link_pb2.Burst(header=header, payload=payload)


@dataclass(frozen=True)
class LearnedFrame:
    """A learned burst opened: `received.frame` is the digital header frame (its CRC held: the burst is
    delivered, and the same header is the same burst), `records` carry each field's confidence."""

    received: ReceivedFrame
    records: list[Record]
    model: str


def open_learned_burst(
    burst: link_pb2.Burst,
    models: Mapping[str, LearnedModel],
    registry: SchemaRegistry,
    *,
    max_iter: int = 20,
) -> LearnedFrame:
    """Decode a learned burst with the model its header names. ModelMismatch when no model of that name
    is held here or its weights differ; CrcError when the header frame was lost; DecodeError when the
    header's numbers do not fit the payload."""
    h = burst.header
    model = models.get(h.learned_model)
    if model is None:
        raise ModelMismatch(
            f"burst was made with learned phy model {h.learned_model[:64]!r}; this receiver holds "
            f"{', '.join(sorted(models)) or 'none'}"
        )
    model.check_digest(h.learned_digest[:64])
    if h.schema_id != model.schema_id:
        raise DecodeError(
            f"burst of schema {h.schema_id[:64]!r} names model {model.name!r} of {model.schema_id}"
        )
    schema = registry.get(model.schema_id)
    mcs = burst_mcs(h)
    if mcs is None:
        raise DecodeError("a learned burst needs a digital header (modulation and coding), not bytes")
    symbols = payload_symbols(burst.payload)
    try:
        rx = receive_learned(
            symbols,
            model,
            schema,
            header_info_bits=h.info_bits,
            header_coded_bits=h.coded_bits,
            pilot_count=h.pilot_symbols,
            record_count=h.record_count,
            header_mcs=mcs,
            max_iter=max_iter,
        )
    except (ValueError, ArithmeticError) as err:
        raise DecodeError(f"burst cannot be demodulated: {err}") from err
    records = rx.records(h.stream_id)  # CrcError when the header's CRC fails
    header = rx.header
    received = ReceivedFrame(
        rx.header_frame, header.snr_db, header.pre_fec_ber, header.blocks_failed, symbols.size
    )
    return LearnedFrame(received, records, model.name)
