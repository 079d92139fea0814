"""What a run hands its report: the per-point results, the run's state and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from semcom.schema import Schema

from .config import PaperConfig
from .datasets import Dataset
from .metrics import QueryScore
from .queries import PaperQuery
from .schemes import Received


@dataclass
class PointResult:
    """One (scheme, SNR, seed) point."""

    scheme: str
    snr_db: float
    seed_index: int
    received: Received
    scores: list[QueryScore]
    wall_s: float


@dataclass
class RunState:
    """Everything a report needs."""

    config: PaperConfig
    schema: Schema
    dataset: Dataset
    queries: list[PaperQuery]
    points: list[PointResult] = field(default_factory=list)
    prepare_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    command: str = ""
    sample: str = ""  # how the attribute model relates to the scored input (out of sample, or why not)
    extra: dict[str, Any] = field(default_factory=dict)


def by_scheme(state: RunState) -> dict[str, dict[float, list[PointResult]]]:
    """The points grouped by scheme, then SNR (in run order)."""
    out: dict[str, dict[float, list[PointResult]]] = defaultdict(lambda: defaultdict(list))
    for p in state.points:
        out[p.scheme][p.snr_db].append(p)
    return out


_PACKAGES = ("semcom", "torch", "numpy", "onnxruntime", "opencv-python-headless", "av")


def environment() -> dict[str, Any]:
    """Python, CPU count, machine, load average, git commit and the versions of the packages that matter."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_avg": list(os.getloadavg()),
        "commit": git_commit(),
        "versions": versions,
    }


def git_commit() -> str:
    """The working tree's commit (with "+dirty" when tracked files differ), or "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
