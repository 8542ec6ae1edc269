"""PNG plots of evaluations and sweeps (matplotlib's Agg canvas: no display, no global backend).

Every plot is written atomically and returns its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flows.fileio import atomic_path


def _save(fig: Figure, path: os.PathLike | str) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def plot_accuracy_vs_snr(snrs_db: Sequence[int], accuracy: Sequence[float], path, *,
                         title: str, overall: float | None = None) -> Path:
    """Accuracy (%) per SNR level, with the overall accuracy as a dashed line."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.plot(list(snrs_db), [100 * a for a in accuracy], marker="o", ms=3)
    if overall is not None:
        ax.axhline(100 * overall, ls="--", color="grey", label=f"overall {100 * overall:.2f} %")
        ax.legend(loc="lower right")
    ax.set(xlabel="SNR (dB)", ylabel="accuracy (%)", ylim=(0, 100), title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path, *,
                   title: str) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class); classes
    with no frame show an empty row."""
    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(class_names)
    size = max(4.0, 0.28 * n + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    return _save(fig, path)


def plot_accuracy_vs_bits(bits: Sequence[int], accuracy: Sequence[float], path, *,
                          title: str, score: Sequence[float] | None = None) -> Path:
    """Test accuracy (%) per weight/activation bit width; with `score`, against the challenge
    cost score instead (each point labelled with its bit width; lower score is cheaper)."""
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot()
    xs = list(bits) if score is None else list(score)
    ax.plot(xs, [100 * a for a in accuracy], marker="o")
    if score is None:
        ax.set(xlabel="weight and activation bits", ylabel="test accuracy (%)", title=title)
        ax.set_xticks(list(bits))
    else:
        ax.set(xlabel="cost score (8-bit VGG10 = 1)", ylabel="test accuracy (%)", title=title)
        for x, a, b in zip(xs, accuracy, bits):
            ax.annotate(f"{b} bit", (x, 100 * a), textcoords="offset points", xytext=(4, 4))
    ax.grid(alpha=0.3)
    return _save(fig, path)
