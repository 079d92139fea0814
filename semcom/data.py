"""Where test footage lives: the shared data folder (SEMCOM_DATA_DIR) and the cached default demo video."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

# PETS 2009 S2.L1 view 1, as shipped in Debian's opencv-doc package (research use; fetched, never bundled).
DEMO_VIDEO_NAME = "vtest.avi"
DEMO_VIDEO_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"
DEMO_VIDEO_MEMBER = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """SEMCOM_DATA_DIR, else ../shared/data beside the current directory."""
    env = os.environ if environ is None else environ
    return Path(env.get("SEMCOM_DATA_DIR", "../shared/data")).resolve()


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("SEMCOM_CACHE_DIR") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "semcom")
    return Path(base).expanduser()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def demo_video(environ: Mapping[str, str] | None = None) -> Path:
    """The PETS 2009 demo video: from the shared data folder, the cache, or fetched once from Debian."""
    shared = data_dir(environ) / "videos" / "pets09_s2l1_vtest.avi"
    if shared.is_file():
        return shared
    cached = cache_dir(environ) / DEMO_VIDEO_NAME
    if cached.is_file() and sha256(cached) == DEMO_VIDEO_SHA256:
        return cached
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FileNotFoundError(
            "the demo video is not cached and apt-get/dpkg-deb are missing: pass --video PATH or URL instead"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True, capture_output=True)
        (deb,) = Path(tmp).glob("opencv-doc_*.deb")
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
        out = subprocess.run(
            ["tar", "-xO", DEMO_VIDEO_MEMBER], input=tar, check=True, capture_output=True
        ).stdout
    partial = cached.with_suffix(".part")
    partial.write_bytes(out)
    if sha256(partial) != DEMO_VIDEO_SHA256:
        partial.unlink()
        raise RuntimeError("the fetched demo video does not match its known checksum")
    partial.replace(cached)
    return cached
