"""Frame sealing: ChaCha20-Poly1305 under a per-site key, the frame header as associated data.

A sealed frame is `header (12 bytes) | records | tag | CRC-32`. Version byte 2 authenticates the whole body
(records in clear), version 3 also encrypts the records; the header is associated data either way. The key
of one stream is HKDF-SHA256(site key, stream id), and the 96-bit nonce is (epoch: 32 bits, burst sequence:
64 bits): a burst keeps its sequence and its frame across retransmissions, and a durable outbox never gives
two lifetimes the same epoch, so no (key, nonce) pair seals two different frames. The tag may be cut to
4, 8 or 12 bytes; a forger then succeeds with probability about 2^-tag_bits per attempt (Poly1305's own
bound, 8*ceil(L/16)/2^106, is negligible beside it), and every failed attempt is counted by the receiver.
"""

from __future__ import annotations

import hmac
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from semcom.errors import DecodeError, InvalidInput

KEY_BYTES = 32
TAG_BYTES = (4, 8, 12, 16)
HEADER_BYTES = 12
VERSION_AUTH = 2  # body authenticated, records in clear
VERSION_SEALED = 3  # records encrypted too


class AuthError(DecodeError):
    """A sealed frame's tag does not match: forged, altered, or sealed under another key."""


def read_key(path: Path | str) -> bytes:
    """A site key: a file of exactly 32 random bytes (`head -c 32 /dev/urandom > site.key`)."""
    data = Path(path).read_bytes()
    if len(data) != KEY_BYTES:
        raise InvalidInput(f"key file {path} holds {len(data)} bytes; a site key is {KEY_BYTES} random bytes")
    return data


def nonce(epoch: int, sequence: int) -> bytes:
    if not (0 < epoch < 1 << 32 and 0 < sequence < 1 << 64):
        raise InvalidInput(f"a frame nonce needs epoch 1..2^32-1 and sequence 1..2^64-1: {epoch}, {sequence}")
    return epoch.to_bytes(4, "big") + sequence.to_bytes(8, "big")


@dataclass
class SiteKey:
    """One site's key and the stream keys derived from it."""

    key: bytes
    _streams: dict[str, ChaCha20Poly1305] = field(default_factory=dict, repr=False)
    _raw: dict[str, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise InvalidInput(f"a site key is {KEY_BYTES} bytes, got {len(self.key)}")

    def stream_key(self, stream_id: str) -> bytes:
        raw = self._raw.get(stream_id)
        if raw is None:
            hkdf = HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=b"semcom frame v1 " + stream_id.encode())
            raw = self._raw[stream_id] = hkdf.derive(self.key)
            self._streams[stream_id] = ChaCha20Poly1305(raw)
        return raw

    def aead(self, stream_id: str) -> ChaCha20Poly1305:
        self.stream_key(stream_id)
        return self._streams[stream_id]


def seal(
    frame: bytes, key: SiteKey, *, stream_id: str, epoch: int, sequence: int, tag_bytes: int, encrypt: bool
) -> bytes:
    """An unsealed (version 1) frame -> its sealed form, CRC-32 recomputed over the sealed bytes."""
    if tag_bytes not in TAG_BYTES:
        raise InvalidInput(f"tag_bytes must be one of {TAG_BYTES}, got {tag_bytes}")
    body = bytearray(frame[:-4])
    body[0] = VERSION_SEALED if encrypt else VERSION_AUTH
    header, records = bytes(body[:HEADER_BYTES]), bytes(body[HEADER_BYTES:])
    aead = key.aead(stream_id)
    n = nonce(epoch, sequence)
    if encrypt:
        out = aead.encrypt(n, records, header)
        sealed = header + out[: len(records)] + out[len(records) :][:tag_bytes]
    else:
        sealed = bytes(body) + aead.encrypt(n, b"", bytes(body))[:tag_bytes]
    return sealed + _crc(sealed)


def open_sealed(
    sealed: bytes, body_bytes: int, key: SiteKey, *, stream_id: str, epoch: int, sequence: int
) -> bytes:
    """A sealed frame (CRC already checked) -> the version 1 frame it sealed; AuthError on a bad tag.

    `body_bytes`: header and records without tag or CRC, as the header's schema and count give it."""
    tag = sealed[body_bytes:-4]
    header, records = sealed[:HEADER_BYTES], sealed[HEADER_BYTES:body_bytes]
    aead = key.aead(stream_id)
    try:
        n = nonce(epoch, sequence)
    except InvalidInput as err:  # no sender seals under these: the header was forged or altered
        raise AuthError(str(err)) from err
    if sealed[0] == VERSION_SEALED:
        clear = _chacha20(key.stream_key(stream_id), n, records)
        expected = aead.encrypt(n, clear, header)[len(records) :]
    else:
        clear = records
        expected = aead.encrypt(n, b"", sealed[:body_bytes])
    if not hmac.compare_digest(expected[: len(tag)], tag):
        raise AuthError(
            f"frame tag does not match for stream {stream_id!r} (epoch {epoch}, sequence {sequence})"
        )
    body = bytes([1]) + header[1:] + clear
    return body + _crc(body)


def _chacha20(key: bytes, n: bytes, data: bytes) -> bytes:
    # ChaCha20-Poly1305 encrypts with block counter 1 (block 0 makes the Poly1305 key): RFC 8439, 2.8.
    cipher = Cipher(algorithms.ChaCha20(key, (1).to_bytes(4, "little") + n), mode=None)
    return cipher.encryptor().update(data)


def _crc(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


@dataclass(frozen=True)
class Sealing:
    """What a sender seals its frames with: the site key, the tag length, whether records are encrypted."""

    key: SiteKey
    tag_bytes: int = 16
    encrypt: bool = True

    def seal(self, frame: bytes, *, stream_id: str, epoch: int, sequence: int) -> bytes:
        return seal(
            frame,
            self.key,
            stream_id=stream_id,
            epoch=epoch,
            sequence=sequence,
            tag_bytes=self.tag_bytes,
            encrypt=self.encrypt,
        )
