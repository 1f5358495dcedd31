"""Metrics to TensorBoard event files and ``metrics.jsonl`` in the workdir, and PNG curves from that file."""

import json
import math
import os
import sys
from pathlib import Path

from fusionjax.train.errors import RunNotFoundError, warn

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "curves.png"


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch.

    tensorboardX imports torch, when installed, only to recognise torch tensors, which the trainer never logs;
    that import costs seconds at every run's start. Hiding torch for the import skips it.
    """
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which tensorboardX handles
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """Appends ``{"step", "split", **scalars}`` lines to ``metrics.jsonl`` and the same scalars to TensorBoard.

    A resumed run appends after the killed run's lines, first dropping the torn last line a kill during a write
    leaves; readers keep the last record of each (split, step). Only process 0 writes.
    """

    def __init__(self, workdir: Path, enabled: bool = True):
        self.path = Path(workdir) / METRICS_FILE
        self.enabled = enabled
        self._tensorboard = None
        if enabled:
            _drop_torn_line(self.path)
            self._tensorboard = _summary_writer_class()(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
        for name, value in scalars.items():
            self._tensorboard.add_scalar(f"{split}/{name}", value, int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _drop_torn_line(path: Path) -> None:
    """Cut a last line without its newline (a write the run's kill interrupted) off ``path``, with a warning."""
    if not path.exists():
        return
    text = path.read_bytes()
    kept = text.rfind(b"\n") + 1
    if kept < len(text):
        warn(f"{path}: dropping its torn last line {text[kept:][:80]!r}, left by a run killed while writing it.")
        os.truncate(path, kept)


def read_metrics(workdir: Path) -> dict[str, dict[int, dict[str, float]]]:
    """``{split: {step: scalars}}`` from ``metrics.jsonl``; a later line for the same (split, step) wins, and a torn
    line (a killed run's last) is skipped with a warning."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        raise RunNotFoundError(f"{path} does not exist: is {workdir} the --workdir of a fusionjax-train run?")
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step, split = record.pop("step"), record.pop("split")
        except (json.JSONDecodeError, AttributeError, KeyError):
            warn(f"{path}, line {number}: skipping a torn line {line[:80]!r}, left by a run killed while writing it.")
            continue
        runs.setdefault(split, {})[step] = record
    return runs


_PANELS = (  # (title, metric, log scale)
    ("loss", "loss", True),
    ("top-1 accuracy", "top1", False),
    ("learning rate", "learning_rate", False),
    ("images/s", "images_per_sec", True),
)


def plot_curves(workdir: Path) -> Path:
    """Write ``curves.png`` (loss, top-1, learning rate, throughput and input wait against step) into ``workdir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = read_metrics(workdir)
    figure, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (title, metric, log_scale) in zip(axes.flat, _PANELS):
        for split, records in sorted(runs.items()):
            points = sorted((s, r[metric]) for s, r in records.items() if metric in r and math.isfinite(r[metric]))
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=split)
        if metric == "images_per_sec":
            ax.set_title("images/s (solid); share of time waiting for input (dashed, right)")
            waits = sorted((s, r["input_wait"]) for s, r in runs.get("train", {}).items() if "input_wait" in r)
            if waits:
                wait_axis = ax.twinx()
                wait_axis.plot(*zip(*waits), linestyle="--", color="tab:red", label="input wait")
                wait_axis.set_ylim(0, 1)
                wait_axis.set_ylabel("input wait")
        else:
            ax.set_title(title)
        if log_scale and ax.lines:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    figure.suptitle(str(workdir))
    figure.tight_layout()
    path = Path(workdir) / PLOT_FILE
    partial = path.with_suffix(".png.partial")  # renamed into place whole: a reader never sees half a plot
    figure.savefig(partial, dpi=100, format="png")
    plt.close(figure)
    partial.replace(path)
    return path
