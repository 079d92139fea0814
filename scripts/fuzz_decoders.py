"""Coverage-guided fuzzing (atheris, libFuzzer) of the frame decoder, text codec and burst parser, for a
bounded time, starting from valid frames and bursts.

    pip install atheris      # 3.0.0 has wheels for CPython 3.11 on x86_64 Linux
    python scripts/fuzz_decoders.py --seconds 120 [--corpus DIR]

An input's first byte picks the target: 0 a frame as it is, 1 a frame whose CRC is made to hold (so the
parser behind it is reached), 2 a text frame likewise, 3 a burst (a 16-byte header, then the payload). Every
input must end in records or an InvalidInput (DecodeError, CrcError, AuthError): any other exception is a
crash, and libFuzzer writes the input to ./crash-<sha1> and exits non-zero. Not part of the default test run
(it needs atheris and minutes); tests/unit/test_fuzz_decoders.py is the quick version.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

atheris: Any = importlib.import_module("atheris")

# The physical layer is imported first and so stays uninstrumented: its numba kernels cannot compile
# instrumented bytecode (the LDPC decoder and demapper are fuzzed only as black boxes).
importlib.import_module("semcom.phy")
with atheris.instrument_imports(include=["semcom"]):
    from semcom.burst import build_burst, open_burst
    from semcom.codec import decode_records, decode_text_entries, encode_records, encode_text_entries
    from semcom.errors import InvalidInput
    from semcom.pb.v1 import common_pb2, link_pb2
    from semcom.phy.mcs import Mcs
    from semcom.record import Record
    from semcom.schema import SchemaRegistry

REGISTRY = SchemaRegistry.builtin()
SCHEMA = REGISTRY.get("person/1")
HEADER = struct.Struct("<BBHHHH6x")  # modulation, coding, info_bytes, coded_bits/8, pilots, payload dtype


def _crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def _burst(data: bytes) -> None:
    if len(data) < HEADER.size:
        return
    modulation, coding, info_bytes, coded, pilots, dtype = HEADER.unpack_from(data)
    raw = data[HEADER.size :]
    complex_payload = dtype % 2 == 1
    if complex_payload:
        raw = raw[: len(raw) // 8 * 8]
    header = link_pb2.BurstHeader(
        stream_id="fuzz",
        sequence=1,
        modulation=modulation % 6,
        coding=coding % 3,
        info_bits=8 * info_bytes,
        coded_bits=8 * coded,
        pilot_symbols=pilots % 256,
    )
    payload = common_pb2.Tensor(
        dtype=common_pb2.DTYPE_COMPLEX64 if complex_payload else common_pb2.DTYPE_UINT8,
        shape=[len(raw) // 8 if complex_payload else len(raw)],
        data=raw,
    )
    received = open_burst(link_pb2.Burst(header=header, payload=payload), max_iter=5)
    decode_records(received.frame, REGISTRY, stream_id="fuzz")


def one_input(data: bytes) -> None:
    if not data:
        return
    kind, rest = data[0] % 4, data[1:]
    with contextlib.suppress(InvalidInput):  # the answer to a bad frame or burst
        if kind == 0:
            decode_records(rest, REGISTRY, stream_id="fuzz")
        elif kind == 1 and len(rest) > 4:
            decode_records(_crc(rest[:-4]), REGISTRY, stream_id="fuzz")
        elif kind == 2 and len(rest) > 4:
            decode_text_entries(_crc(rest[:-4]), REGISTRY, stream_id="fuzz")
        elif kind == 3:
            _burst(rest)


def seeds() -> list[bytes]:
    """Valid inputs of every kind: frames of 1, 3 and 8 records, a text frame, bursts at two MCS."""
    records = [
        Record("person/1", "fuzz", i, i + 1, 1.7e9 + i, 2, {"gender": "male", "upper_color": "red"})
        for i in range(8)
    ]
    frames = [encode_records(records[:n], SCHEMA) for n in (1, 3, 8)]
    out = [b"\x00" + f for f in frames] + [b"\x01" + f for f in frames]
    out.append(b"\x02" + encode_text_entries(records[:3], SCHEMA))
    for mcs in (None, Mcs("qpsk", "none")):
        burst = build_burst(
            frames[1],
            stream_id="fuzz",
            sequence=1,
            schema_id="person/1",
            kind=link_pb2.PAYLOAD_KIND_RECORDS,
            record_count=3,
            mcs=mcs,
        )
        h = burst.header
        complex_payload = mcs is not None
        head = HEADER.pack(
            h.modulation,
            h.coding,
            h.info_bits // 8,
            h.coded_bits // 8,
            h.pilot_symbols,
            1 if complex_payload else 0,
        )
        out.append(b"\x03" + head + burst.payload.data)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="total fuzzing time")
    parser.add_argument("--corpus", type=Path, help="folder of inputs to start from and to add new ones to")
    args, rest = parser.parse_known_args(argv)
    np.seterr(all="ignore")  # absurd symbols overflow on purpose; the property is the exception type
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="fuzz-decoders-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    fuzzer_args = [sys.argv[0], f"-max_total_time={args.seconds}", "-rss_limit_mb=4096", *rest, str(corpus)]
    atheris.Setup(fuzzer_args, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
