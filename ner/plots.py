"""Plots logged as MLflow artifacts (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def per_label_f1(per_label: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """Bar chart of precision, recall and F1 for each label."""
    labels = sorted(per_label)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(labels) + 2), 3.2))
    width = 0.25
    for i, metric in enumerate(("precision", "recall", "f1")):
        xs = [j + (i - 1) * width for j in range(len(labels))]
        ax.bar(xs, [float(per_label[lab].get(metric, 0.0)) for lab in labels], width, label=metric)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve(
    points: Sequence[tuple[float, float]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str = "F1",
    series: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    bands: Mapping[str, Sequence[tuple[float, float, float]]] | None = None,
) -> Path:
    """Line plot of a score against steps (or labels); extra named series optional.

    ``bands`` maps a series name to ``(x, low, high)`` points, shaded around its line in the
    same colour (the spread over seeds, for instance).
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    all_series = dict(series or {})
    if points:
        all_series = {"score": points, **all_series}
    for name, pts in all_series.items():
        if pts:
            xs, ys = zip(*pts, strict=True)
            (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=name)
            band = (bands or {}).get(name)
            if band:
                bx, low, high = zip(*band, strict=True)
                ax.fill_between(bx, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if len(all_series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
