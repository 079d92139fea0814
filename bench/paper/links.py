"""The wire: frames -> bursts (txd's phy) -> channel-sim's proxy -> rxd's burst decoding, bits counted."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from channel_sim.config import ChannelConfig
from channel_sim.models import ChannelChain
from channel_sim.proxy import ChannelState, LinkProxy
from semcom.burst import build_burst, build_learned_burst, burst_mcs, open_burst, open_learned_burst
from semcom.codec import (
    decode_records,
    decode_text_entries,
    encode_records,
    encode_text_entries,
    split_frames,
)
from semcom.errors import DecodeError, InvalidInput
from semcom.pb.v1 import link_pb2
from semcom.phy.chain import codeword_info_bits
from semcom.phy.learned import LearnedModel
from semcom.phy.mcs import Mcs
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry


@dataclass
class Tally:
    """What went on the air, counted from the bursts actually built (the same for every SNR: no ARQ)."""

    bursts: int = 0
    bursts_lost: int = 0
    info_bits: int = 0  # frame bits handed to the phy (headers and CRC of the codec included)
    channel_bits: int = 0  # coded bits on the air: symbols x bits per symbol, pilots included
    channel_symbols: int = 0
    learned_symbols: int = 0  # of channel_symbols, the learned mode's field symbols (analog: no bits)
    blocks: int = 0
    blocks_failed: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def airtime_s(self, symbol_rate: float) -> float:
        return self.channel_symbols / symbol_rate

    def to_dict(self, symbol_rate: float) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["airtime_s"] = self.airtime_s(symbol_rate)
        return out


def channel_models(spec: Sequence[Mapping[str, Any]], snr_db: float) -> list[dict[str, Any]]:
    """The chain with `snr_db` written into every `awgn` model; InvalidInput when there is none."""
    models = [dict(m) for m in spec]
    awgn = [m for m in models if m.get("kind") == "awgn"]
    if not awgn:
        raise InvalidInput(
            f"the channel {list(spec)} has no 'awgn' model, so the SNR sweep has nothing to set; "
            'add {"kind": "awgn"} (after any fading model)'
        )
    for m in awgn:
        m["snr_db"] = snr_db
    ChannelChain.from_dicts(models, 0)  # validates every model's options with a clear error
    return models


class Air:
    """One SNR point's channel: channel-sim's proxy (`LinkProxy.impair`) over a fresh seeded chain."""

    def __init__(self, models: Sequence[Mapping[str, Any]], seed: int, *, ldpc_iterations: int) -> None:
        config = ChannelConfig.model_validate({"models": list(models), "seed": seed})
        # The proxy's upstream is never used: `impair` is its whole per-burst path, without the sockets.
        self.proxy = LinkProxy(ChannelState(config), None, "")  # type: ignore[arg-type]
        self.ldpc_iterations = ldpc_iterations
        self.memoryless = all(m.get("kind") == "awgn" for m in models)
        # Random choices of the benchmark itself at this point (probe payloads, sampled outcomes).
        self.rng = np.random.default_rng([seed, 0x5A3])

    def carry(self, burst: link_pb2.Burst, tally: Tally) -> bytes | None:
        """Count the burst, impair it, decode it at the receiver; None when the channel dropped it."""
        if not self._impair(burst, tally):
            return None
        received = open_burst(burst, max_iter=self.ldpc_iterations)
        tally.blocks_failed += received.blocks_failed
        return received.frame

    def carry_learned(
        self,
        burst: link_pb2.Burst,
        tally: Tally,
        model: LearnedModel,
        registry: SchemaRegistry,
        *,
        learned_symbols: int,
    ) -> list[Record] | None:
        """A learned-mode burst counted, impaired and opened as rxd opens it (its records with each
        field's confidence); None when the channel dropped it or its header's CRC failed."""
        tally.learned_symbols += learned_symbols
        if not self._impair(burst, tally, analog_symbols=learned_symbols):
            return None
        try:
            opened = open_learned_burst(burst, {model.name: model}, registry, max_iter=self.ldpc_iterations)
        except DecodeError:  # the header's CRC failed (CrcError): rxd answers CRC_FAILED, indexes nothing
            tally.bursts_lost += 1
            return None
        tally.blocks_failed += opened.received.blocks_failed
        return opened.records

    def _impair(self, burst: link_pb2.Burst, tally: Tally, *, analog_symbols: int = 0) -> bool:
        """Count the burst (bits on the air: its digital symbols' only) and send it through channel-sim's
        proxy; False when the channel dropped it."""
        h = burst.header
        mcs = burst_mcs(h)
        tally.bursts += 1
        tally.info_bits += h.info_bits
        if mcs is None:
            tally.channel_bits += 8 * len(burst.payload.data)
        else:
            symbols = len(burst.payload.data) // 8  # complex64
            tally.channel_symbols += symbols
            tally.channel_bits += (symbols - analog_symbols) * mcs.bits_per_symbol
            tally.blocks += len(codeword_info_bits(h.info_bits)) if mcs.coding != "none" else 0
        self.proxy.impair(burst)
        if burst.trace.dropped:
            tally.bursts_lost += 1
            return False
        return True


@dataclass(frozen=True)
class LinkSettings:
    """txd's link options that shape the bursts (from its LinkConfig) and rxd's decoder effort."""

    mcs: Mcs
    pilot_symbols: int
    max_records_per_burst: int
    ldpc_iterations: int
    learned_model: str = "person-s2"  # the semantic-learned scheme's model (semcom/phy/weights/)


def send_records(
    records: Sequence[Record],
    schema: Schema,
    registry: SchemaRegistry,
    link: LinkSettings,
    air: Air,
    *,
    text: bool = False,
    stream_id: str = "bench",
) -> tuple[list[Record], Tally]:
    """Frame one stream's records as txd's link does (split_frames, at most max_records_per_burst each),
    send each frame once (no retransmission), and keep what rxd would index: frames whose CRC holds.

    `text` uses the paper's text-entry format (semcom.codec.text) instead of the bit-packed codec.
    """
    tally = Tally()
    received: list[Record] = []
    kind = link_pb2.PAYLOAD_KIND_TEXT_ENTRIES if text else link_pb2.PAYLOAD_KIND_RECORDS
    for sequence, chunk in enumerate(
        split_frames(records, schema, max_records=link.max_records_per_burst), 1
    ):
        frame = encode_text_entries(chunk, schema) if text else encode_records(chunk, schema)
        burst = build_burst(
            frame,
            stream_id=stream_id,
            sequence=sequence,
            schema_id=schema.id,
            kind=kind,
            record_count=len(chunk),
            mcs=link.mcs,
            pilot_count=link.pilot_symbols,
        )
        payload = air.carry(burst, tally)
        if payload is None:
            continue
        try:
            if text:
                got = decode_text_entries(payload, registry, stream_id=stream_id)
            else:
                got = decode_records(payload, registry, stream_id=stream_id)
        except DecodeError:
            tally.bursts_lost += 1  # rxd answers CRC_FAILED / REJECTED and indexes nothing
            continue
        received += got
    return received, tally


def send_learned_records(
    records: Sequence[Record],
    schema: Schema,
    registry: SchemaRegistry,
    link: LinkSettings,
    air: Air,
    model: LearnedModel,
    *,
    stream_id: str = "bench",
) -> tuple[list[Record], Tally]:
    """As `send_records`, in the learned mode txd sends with `link.mcs = "learned/<model>"`: each frame's
    header digital on `link.mcs`, its field values through the model; rxd keeps the records of every burst
    whose header CRC holds, each field the decoder's most probable value with its probability."""
    tally = Tally()
    received: list[Record] = []
    for sequence, chunk in enumerate(
        split_frames(records, schema, max_records=link.max_records_per_burst), 1
    ):
        burst = build_learned_burst(
            encode_records(chunk, schema),
            model,
            schema,
            stream_id=stream_id,
            sequence=sequence,
            record_count=len(chunk),
            header_mcs=link.mcs,
            pilot_count=link.pilot_symbols,
        )
        analog = len(chunk) * model.symbols_per_record
        got = air.carry_learned(burst, tally, model, registry, learned_symbols=analog)
        received += got or []
    return received, tally


def send_bytes(
    data: bytes, air: Air, *, mcs: Mcs, pilot_symbols: int, burst_bytes: int, stream_id: str = "video"
) -> tuple[bytes, Tally]:
    """A byte stream (MPEG-TS, concatenated JPEGs) cut into bursts of `burst_bytes`, sent once each; the
    receiver keeps whatever the LDPC decoder outputs, residual errors included (a video link without ARQ).
    A burst the channel dropped comes back as zeros of its length."""
    if burst_bytes < 1:
        raise InvalidInput(f"burst_bytes must be >= 1, got {burst_bytes}")
    tally = Tally()
    parts: list[bytes] = []
    for sequence, start in enumerate(range(0, len(data), burst_bytes), 1):
        chunk = data[start : start + burst_bytes]
        burst = build_burst(
            chunk,
            stream_id=stream_id,
            sequence=sequence,
            schema_id="",
            kind=link_pb2.PAYLOAD_KIND_UNSPECIFIED,
            record_count=0,
            mcs=mcs,
            pilot_count=pilot_symbols,
        )
        payload = air.carry(burst, tally)
        parts.append(payload if payload is not None else bytes(len(chunk)))
    return b"".join(parts), tally


def _segments(info_bits: int) -> list[tuple[int, int]]:
    """[start, end) of each LDPC codeword's information bits in a frame."""
    starts = np.concatenate([[0], np.cumsum(codeword_info_bits(info_bits))])
    return [(int(a), int(b)) for a, b in itertools.pairwise(starts)]


def send_bytes_sampled(
    data: bytes,
    air: Air,
    *,
    mcs: Mcs,
    pilot_symbols: int,
    burst_bytes: int,
    probe_bursts: int,
    rng: np.random.Generator,
    stream_id: str = "video",
) -> tuple[bytes, Tally]:
    """Like `send_bytes`, by block-error sampling: on a memoryless channel (AWGN) the codewords of full
    bursts fail independently, so `probe_bursts` bursts of random bytes go through the real chain and every
    codeword of the stream takes the outcome (its residual bit errors, or none) of a probe codeword at the
    same position, drawn at random. A shorter last burst goes through the chain itself. Bits are counted
    from a built burst of each size. Valid for channels without memory across bursts (not for fading
    blocks longer than a burst, or Gilbert-Elliott)."""
    if burst_bytes < 1 or probe_bursts < 1:
        raise InvalidInput(f"burst_bytes and probe_bursts must be >= 1, got {burst_bytes}, {probe_bursts}")
    full, tail = divmod(len(data), burst_bytes)
    tally = Tally()
    if full == 0:
        return send_bytes(data, air, mcs=mcs, pilot_symbols=pilot_symbols, burst_bytes=burst_bytes)
    segments = _segments(8 * burst_bytes)
    errors = np.zeros((probe_bursts, 8 * burst_bytes), dtype=np.uint8)
    for p in range(probe_bursts):
        sent = rng.integers(0, 256, burst_bytes, dtype=np.uint8).tobytes()
        got, _ = send_bytes(sent, air, mcs=mcs, pilot_symbols=pilot_symbols, burst_bytes=burst_bytes)
        errors[p] = np.unpackbits(np.frombuffer(sent, np.uint8) ^ np.frombuffer(got, np.uint8))
    failed = np.stack([errors[:, a:b].any(axis=1) for a, b in segments], axis=1)  # (probes, codewords)
    chosen = rng.integers(0, probe_bursts, (full, len(segments)))
    bits = np.unpackbits(np.frombuffer(data[: full * burst_bytes], np.uint8)).reshape(full, -1)
    hit = failed[chosen, np.arange(len(segments))]
    for burst in np.flatnonzero(hit.any(axis=1)):
        for j in np.flatnonzero(hit[burst]):
            a, b = segments[j]
            bits[burst, a:b] ^= errors[chosen[burst, j], a:b]
    one = _count(data[:burst_bytes], mcs, pilot_symbols)
    for name in ("info_bits", "channel_bits", "channel_symbols", "blocks"):
        setattr(tally, name, getattr(one, name) * full)
    tally.bursts = full
    tally.blocks_failed = int(hit.sum())
    out = np.packbits(bits.reshape(-1)).tobytes()
    if tail:
        got, last = send_bytes(
            data[full * burst_bytes :], air, mcs=mcs, pilot_symbols=pilot_symbols, burst_bytes=burst_bytes
        )
        tally.add(last)
        out += got
    return out, tally


def _count(chunk: bytes, mcs: Mcs, pilot_symbols: int) -> Tally:
    """Bits of one burst carrying `chunk`, counted from the built message."""
    burst = build_burst(
        chunk,
        stream_id="count",
        sequence=1,
        schema_id="",
        kind=0,
        record_count=0,
        mcs=mcs,
        pilot_count=pilot_symbols,
    )
    symbols = len(burst.payload.data) // 8
    return Tally(
        bursts=1,
        info_bits=burst.header.info_bits,
        channel_bits=symbols * mcs.bits_per_symbol,
        channel_symbols=symbols,
        blocks=len(codeword_info_bits(burst.header.info_bits)),
    )
