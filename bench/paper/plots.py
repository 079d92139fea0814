"""The run's figures: accuracy vs SNR (Fig. 7), overhead (Table II), precision-recall per scheme."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import RECALL_LEVELS, summarise
from .state import RunState, by_scheme


def plot_accuracy(state: RunState, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = by_scheme(state)
    names = list(by)
    snrs = list(state.config.snr_db)
    x = np.arange(len(snrs))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(10, 4.8), layout="constrained")
    for i, n in enumerate(names):
        stats = [summarise([s for p in by[n][snr] for s in p.scores])["precision"] for snr in snrs]
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            [100 * s.mean for s in stats],
            width,
            yerr=[100 * s.sem for s in stats],
            capsize=2,
            label=n,
        )
    ax.set_xticks(x, [f"{s:g}" for s in snrs])
    ax.set_xlabel("SNR (Es/N0, dB)")
    ax.set_ylabel("retrieval accuracy (precision, %)")
    ax.set_ylim(0, 105)
    ax.set_title(
        f"Retrieval accuracy vs SNR ({state.dataset.kind}, {len(state.queries)} queries)\n{state.sample}",
        fontsize=9,
    )
    fig.legend(loc="outside lower center", ncol=len(names), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_overhead(state: RunState, doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["schemes"])
    info = [doc["schemes"][n]["bits"]["info_bits"] for n in names]
    channel = [doc["schemes"][n]["bits"]["channel_bits"] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, info, 0.4, label="information bits")
    ax.bar(x + 0.2, channel, 0.4, label="channel bits")
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    ax.set_ylabel("bits transmitted")
    ax.set_title(f"Overhead per scheme (log scale)\n{state.sample}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pr(doc: dict[str, Any], path: Path) -> None:
    """One panel per scheme: the mean 11-point interpolated precision-recall curve at each SNR point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["schemes"])
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.6 * len(names), 3.6), sharey=True, squeeze=False, layout="constrained"
    )
    cmap = matplotlib.colormaps["viridis"]
    for ax, name in zip(axes[0], names, strict=True):
        points = doc["schemes"][name]["per_snr"]
        for i, point in enumerate(points):
            curve = [math.nan if v is None else v for v in point["pr_curve"]]
            ax.plot(
                RECALL_LEVELS,
                [100 * v for v in curve],
                color=cmap(i / max(len(points) - 1, 1)),
                label=f"{point['snr_db']:g} dB",
            )
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("recall (records)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("interpolated precision (%)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Precision-recall per scheme ({doc['sample']})", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
