"""Figures for the report: matplotlib (Agg, imported on first use), one PNG per call of ``save``."""

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def subplots(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6):
    """A figure of ``nrows × ncols`` panels (``axes`` always a flat list)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, list(axes.ravel())


QUICK_MARK = "QUICK RUN (toy sizes): not evidence"


def save(fig, path: Path, quick: bool = False) -> str:
    """Write ``fig`` as a PNG at ``path``, close it, and return the file name. A ``quick`` run's figure carries
    ``QUICK_MARK`` across its top, so that no copy of it passes for the full run's."""
    import matplotlib.pyplot as plt

    if quick:
        fig.suptitle(QUICK_MARK, color="red", fontsize=11, fontweight="bold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def log_axis_with_zero(ax, floor: float, axis: str = "y") -> None:
    """A logarithmic axis that still shows zeros: symlog, linear below ``floor`` (stated on the axis label), so
    that a training loss or error that reaches 0 stays on the plot instead of falling off a log scale. Every
    quantity plotted this way (losses, errors, norms) is never negative, so the axis starts at 0 rather than
    mirroring an empty negative half. Call it after the data and the axis label: the label gains the floor."""
    set_scale, label = (ax.set_yscale, ax.get_ylabel) if axis == "y" else (ax.set_xscale, ax.get_xlabel)
    get_lim, set_lim = (ax.get_ylim, ax.set_ylim) if axis == "y" else (ax.get_xlim, ax.set_xlim)
    set_scale("symlog", linthresh=floor, linscale=0.5)
    set_lim(0, get_lim()[1])
    text = f"{label()} (linear below {floor:g})"
    (ax.set_ylabel if axis == "y" else ax.set_xlabel)(text)


def log_axis_ticks(ax, ticks, labels=None, axis: str = "x") -> None:
    """A logarithmic axis labelled at ``ticks`` only, as plain numbers: matplotlib's automatic minor labels
    (2×10¹, 4×10¹…) crowd between them over a range of less than a decade."""
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    get_lim, set_lim = (ax.get_xlim, ax.set_xlim) if axis == "x" else (ax.get_ylim, ax.set_ylim)
    low, high = get_lim()
    labels = labels or [f"{t:g}" for t in ticks]
    inside = [(t, label) for t, label in zip(ticks, labels) if low <= t <= high]  # ticks would widen the axis
    (ax.set_xticks if axis == "x" else ax.set_yticks)([t for t, _ in inside], [label for _, label in inside])
    set_lim(low, high)
    ax.minorticks_off()


def legend_outside(ax, **options: Any) -> None:
    """The legend to the right of the axes, where it cannot hide data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=options.pop("fontsize", 8),
              **options)


def band(ax, x: Sequence[float], per_seed: Sequence[Sequence[float]], label: str, **style: Any) -> None:
    """The mean over seeds as a line, their min–max as a shaded band of the same colour."""
    values = np.asarray(per_seed, np.float64)
    (line,) = ax.plot(x, values.mean(axis=0), label=f"{label} (n={len(values)})", **style)
    if len(values) > 1:
        ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)


def points_with_range(ax, x: Sequence[float], per_seed: Sequence[Sequence[float]], label: str, **style: Any) -> None:
    """Per x, the mean over seeds as a marker on a line and the min–max as an error bar."""
    values = np.asarray(per_seed, np.float64)  # (x, seeds)
    mean = values.mean(axis=1)
    errors = np.stack([mean - values.min(axis=1), values.max(axis=1) - mean])
    ax.errorbar(x, mean, yerr=errors, marker="o", capsize=3, label=f"{label} (n={values.shape[1]})", **style)
