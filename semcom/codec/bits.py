"""MSB-first bit writer and reader for fixed-width unsigned fields packed with no gaps."""

from __future__ import annotations

from semcom.errors import DecodeError


class BitWriter:
    """Appends unsigned integers of given widths; `to_bytes` zero-pads the tail to a whole byte."""

    __slots__ = ("_acc", "_nbits")

    def __init__(self) -> None:
        # One Python int holds the whole bitstream: frames are at most a few kbit, so shifts stay cheap.
        self._acc = 0
        self._nbits = 0

    def write(self, value: int, nbits: int) -> None:
        """Append `value` in `nbits` bits; a value that does not fit is a caller bug (ValueError)."""
        if nbits < 0:
            raise ValueError(f"negative width {nbits}")
        if value < 0 or value >> nbits:
            raise ValueError(f"{value} does not fit in {nbits} unsigned bits")
        self._acc = (self._acc << nbits) | value
        self._nbits += nbits

    @property
    def bit_length(self) -> int:
        """Bits written so far, before padding."""
        return self._nbits

    def to_bytes(self) -> bytes:
        pad = -self._nbits % 8
        return (self._acc << pad).to_bytes((self._nbits + pad) // 8, "big")


class BitReader:
    """Reads unsigned integers of given widths, MSB first; reading past the end is a DecodeError."""

    __slots__ = ("_acc", "_pos", "_total")

    def __init__(self, data: bytes) -> None:
        self._acc = int.from_bytes(data, "big")
        self._total = len(data) * 8
        self._pos = 0

    def read(self, nbits: int) -> int:
        if nbits < 0:
            raise ValueError(f"negative width {nbits}")
        if self._pos + nbits > self._total:
            raise DecodeError(
                f"truncated: need {nbits} bits at bit {self._pos}, but the data holds {self._total} bits"
            )
        self._pos += nbits
        return (self._acc >> (self._total - self._pos)) & ((1 << nbits) - 1)

    @property
    def position(self) -> int:
        """Bits read so far."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bits not yet read."""
        return self._total - self._pos
