"""`semcom demo --screenshot PATH`: the whole demo on loopback, then a PNG of the page answering a query."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from semcom.demo import CHROMIUM

pytestmark = pytest.mark.slow


def test_demo_writes_a_screenshot_of_the_populated_page(shared_data: Path, tmp_path: Path) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: run ./scripts/setup.sh --test (installs Debian's chromium)")
    out = tmp_path / "page.png"
    semcom = Path(sys.executable).with_name("semcom")
    args = ["--video", str(shared_data / "videos" / "tud_campus.mp4"), "--workdir", str(tmp_path / "demo")]
    done = subprocess.run(
        [str(semcom), "demo", *args, "--http-port", "0", "--screenshot", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"written to {out}" in done.stdout
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk: the window the page was shown in
    assert (width, height) == (1280, 860) and len(png) > 20_000
