"""Coverage-guided fuzzing (atheris, libFuzzer) of the frame decoder and the burst parser, for a bounded time.

    pip install atheris      # 3.0.0 has wheels for CPython 3.11 on x86_64 Linux
    python scripts/fuzz_decoders.py --seconds 120 [--corpus DIR]

Every input must end in records or an InvalidInput (DecodeError, CrcError, AuthError): any other exception
is a crash, and libFuzzer writes the input that caused it to ./crash-<sha1> and exits non-zero. Not part of
the default test run (it needs atheris and minutes); tests/unit/test_fuzz_decoders.py is the quick version.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import zlib
from typing import Any

import numpy as np

atheris: Any = importlib.import_module("atheris")

with atheris.instrument_imports(include=["semcom"]):
    from semcom.burst import open_burst
    from semcom.codec import decode_records, decode_text_entries
    from semcom.errors import InvalidInput
    from semcom.pb.v1 import common_pb2, link_pb2
    from semcom.schema import SchemaRegistry

REGISTRY = SchemaRegistry.builtin()


def _frame(fdp: Any) -> None:
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    if fdp.ConsumeBool() and len(data) > 4:  # half the inputs pass the CRC, to reach the parser behind it
        data = data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "big")
    decoder = decode_text_entries if fdp.ConsumeBool() else decode_records
    decoder(data, REGISTRY, stream_id="fuzz")


def _burst(fdp: Any) -> None:
    header = link_pb2.BurstHeader(
        stream_id="fuzz",
        sequence=1,
        modulation=fdp.ConsumeIntInRange(0, 5),
        coding=fdp.ConsumeIntInRange(0, 2),
        info_bits=fdp.ConsumeIntInRange(0, 8192),
        coded_bits=fdp.ConsumeIntInRange(0, 16384),
        pilot_symbols=fdp.ConsumeIntInRange(0, 64),
    )
    complex_payload = fdp.ConsumeBool()
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8192))
    if complex_payload:
        raw = raw[: len(raw) // 8 * 8]
        payload = common_pb2.Tensor(dtype=common_pb2.DTYPE_COMPLEX64, shape=[len(raw) // 8], data=raw)
    else:
        payload = common_pb2.Tensor(dtype=common_pb2.DTYPE_UINT8, shape=[len(raw)], data=raw)
    received = open_burst(link_pb2.Burst(header=header, payload=payload), max_iter=5)
    decode_records(received.frame, REGISTRY, stream_id="fuzz")


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = _burst if fdp.ConsumeBool() else _frame
    with contextlib.suppress(InvalidInput):  # the answer to a bad frame or burst
        target(fdp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="total fuzzing time")
    parser.add_argument("--corpus", help="folder of inputs to start from and to add new ones to")
    args, rest = parser.parse_known_args(argv)
    np.seterr(all="ignore")  # absurd symbols overflow on purpose; the property is the exception type
    fuzzer_args = [sys.argv[0], f"-max_total_time={args.seconds}", "-rss_limit_mb=4096", *rest]
    if args.corpus:
        fuzzer_args.append(args.corpus)
    atheris.Setup(fuzzer_args, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
