"""Regenerate semcom/pb/v1 from proto/semcom/v1 (python, grpc and typed stubs); --check fails on drift."""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "semcom" / "pb" / "v1"
# protoc names modules after the proto package (semcom.v1); the stubs live one level down, in semcom.pb.v1.
IMPORT_FIX = re.compile(r"^(from|import) semcom\.v1\b", re.MULTILINE)


def generate(dest: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "semcom" / "v1").glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        well_known = Path(protoc.__file__).parent / "_proto"
        bindir = Path(sys.executable).parent
        args = [
            "protoc",
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        dest.mkdir(parents=True, exist_ok=True)
        for src in sorted((Path(tmp) / "semcom" / "v1").iterdir()):
            text = IMPORT_FIX.sub(r"\1 semcom.pb.v1", src.read_text())
            (dest / src.name).write_text(text)
        (dest / "__init__.py").write_text(
            '"""Generated protobuf and gRPC stubs for semcom.v1 (do not edit)."""\n'
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs differ")
    args = parser.parse_args()
    if not args.check:
        if OUT_DIR.exists():
            shutil.rmtree(OUT_DIR)
        generate(OUT_DIR)
        print(f"wrote {OUT_DIR.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "v1"
        generate(fresh)
        cmp = filecmp.dircmp(fresh, OUT_DIR)
        drift = cmp.left_only + cmp.right_only + cmp.diff_files
        drift = [name for name in drift if name != "__pycache__"]
        if drift:
            print(f"generated stubs are stale ({', '.join(sorted(drift))}): run python scripts/gen_proto.py")
            return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
