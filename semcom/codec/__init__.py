"""Understanding-embedding codecs: the bit-packed record frame and the paper's text-entry format."""

from semcom.codec.bits import BitReader, BitWriter
from semcom.codec.frame import (
    FRAME_VERSION,
    MAX_RECORDS,
    SealCheck,
    decode_records,
    encode_records,
    frame_bits,
    pack_frames,
    split_frames,
)
from semcom.codec.seal import AuthError, Sealing, SiteKey, read_key
from semcom.codec.text import TEXT_FRAME_VERSION, decode_text_entries, encode_text_entries, format_entry

__all__ = [
    "FRAME_VERSION",
    "MAX_RECORDS",
    "TEXT_FRAME_VERSION",
    "AuthError",
    "BitReader",
    "BitWriter",
    "SealCheck",
    "Sealing",
    "SiteKey",
    "decode_records",
    "decode_text_entries",
    "encode_records",
    "encode_text_entries",
    "format_entry",
    "frame_bits",
    "pack_frames",
    "read_key",
    "split_frames",
]
