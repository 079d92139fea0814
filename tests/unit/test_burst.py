"""Frames <-> bursts: MCS names, the header build_burst writes, and open_burst's round trip and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semcom.burst import build_burst, burst_mcs, mcs_name, open_burst, parse_mcs, payload_symbols
from semcom.errors import DecodeError, InvalidInput
from semcom.pb.v1 import common_pb2, link_pb2
from semcom.phy.mcs import Mcs

FRAME = bytes(range(40))


def make(frame: bytes = FRAME, mcs: Mcs | None = None, **kw: int) -> link_pb2.Burst:
    return build_burst(
        frame,
        stream_id="cam",
        sequence=kw.get("sequence", 5),
        schema_id="person/1",
        kind=link_pb2.PAYLOAD_KIND_RECORDS,
        record_count=3,
        mcs=mcs,
        pilot_count=kw.get("pilot_count", 16),
        attempt=kw.get("attempt", 0),
    )


@pytest.mark.parametrize("text", ["bytes", "bpsk/none", "qpsk/ldpc_r12", "qam16/ldpc_r12", "qam64/none"])
def test_mcs_names_round_trip(text: str) -> None:
    assert mcs_name(parse_mcs(text)) == text


def test_a_bare_modulation_is_uncoded_and_unknown_names_are_refused() -> None:
    assert parse_mcs("qam16") == Mcs("qam16", "none")
    for bad in ("morse", "qpsk/turbo", "qam256/ldpc_r12"):
        with pytest.raises(InvalidInput, match="unknown modulation/coding"):
            parse_mcs(bad)


def test_a_bytes_burst_carries_the_frame_as_is() -> None:
    burst = make(attempt=2)
    h = burst.header
    assert (h.modulation, h.coding) == (link_pb2.MODULATION_NONE, link_pb2.CODING_NONE)
    assert h.info_bits == h.coded_bits == 8 * len(FRAME) and h.attempt == 2 and h.sequence == 5
    assert burst.payload.dtype == common_pb2.DTYPE_UINT8 and burst.payload.data == FRAME
    rx = open_burst(burst)
    assert rx.frame == FRAME and math.isnan(rx.snr_db) and rx.channel_symbols == 0


@pytest.mark.parametrize("text", ["qpsk/ldpc_r12", "qam16/ldpc_r12", "qam64/none"])
def test_a_clean_channel_returns_the_frame_with_a_high_snr_estimate(text: str) -> None:
    mcs = parse_mcs(text)
    assert mcs is not None
    burst = make(mcs=mcs, pilot_count=32)
    h = burst.header
    assert h.pilot_symbols == 32 and burst_mcs(h) == mcs
    symbols = payload_symbols(burst.payload)
    # Pilots first, then the coded bits: ceil(coded_bits / bits_per_symbol) data symbols.
    assert symbols.size == 32 + math.ceil(h.coded_bits / mcs.bits_per_symbol)
    assert np.mean(np.abs(symbols) ** 2) == pytest.approx(1.0, rel=0.25)  # unit average energy
    rx = open_burst(burst)
    assert rx.frame == FRAME and rx.blocks_failed == 0 and rx.channel_symbols == symbols.size
    assert rx.snr_db > 30.0  # noiseless: the pilot estimate is limited only by complex64 rounding


def test_malformed_payloads_are_decode_errors() -> None:
    burst = make(mcs=Mcs("qpsk", "none"))
    short = common_pb2.Tensor()
    short.CopyFrom(burst.payload)
    short.data = short.data[:-8]
    with pytest.raises(DecodeError, match="needs"):
        payload_symbols(short)
    wrong = make()
    wrong.header.modulation = link_pb2.MODULATION_QPSK
    with pytest.raises(DecodeError, match="not COMPLEX64"):
        open_burst(wrong)
    odd = make(mcs=Mcs("qpsk", "none"))
    odd.header.info_bits = 13
    with pytest.raises(DecodeError, match="whole number of bytes"):
        open_burst(odd)
    unknown = make()
    unknown.header.modulation = 99  # type: ignore[assignment]
    with pytest.raises(DecodeError, match="unsupported modulation"):
        burst_mcs(unknown.header)
    not_bytes = make()
    not_bytes.payload.dtype = common_pb2.DTYPE_COMPLEX64
    with pytest.raises(DecodeError, match="not UINT8"):
        open_burst(not_bytes)
