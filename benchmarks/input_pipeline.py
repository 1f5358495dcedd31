"""Images/s per core of fusionjax's folder pipeline against torchvision's DataLoader (and tf.data), same JPEGs.

    python -m benchmarks.input_pipeline [--folder PATH] [--workers 1 2] [--json] [--record]

Times, in one run, on the same files, with the same number of worker processes pinned to as many cores:

- fusionjax: ``fusionjax.train.data.train_batches`` of a ``folder:PATH`` config, as a user's run reads it, with
  ``augment=inception`` (torchvision's RandomResizedCrop(224) and a flip) and ``augment=none`` (the evaluation
  transform: Resize(256) + CenterCrop(224)); ``config.input_workers`` = N;
- torchvision: ``ImageFolder`` + ``DataLoader(num_workers=N)`` with RandomResizedCrop(224), RandomHorizontalFlip,
  ToTensor, Normalize (train) and Resize(256), CenterCrop(224), ToTensor, Normalize (eval);
- tf.data, where TensorFlow is installed: the Flax ImageNet example's ``decode_and_crop_jpeg`` pipelines, N threads;
- Pillow and simplejpeg: the full-size decode of the same files, one process on one core (what a pipeline that
  decodes whole images with that decoder cannot beat; fusionjax decodes JPEGs with simplejpeg, torchvision with
  Pillow).

Rates are images/s after warm-up batches (workers started, buffers drained), divided by the cores the run was
pinned to (N, or 1 for N = 0). The pipelines alternate within each round; the best and the median round are
reported. Every pipeline reads the training split (both transforms), with replacement, so none runs dry.

Without ``--folder`` the folder is made first: JPEGs (quality 90) of ImageNet's sizes (median about 400x350,
varied aspect ratios) cropped and resized from the photographs that ship with scikit-image (where installed),
scikit-learn and matplotlib, in class folders ``train/<class>`` and ``val/<class>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image, features

from benchmarks import records
from benchmarks.harness import load_average, pin_to_cores

IMAGE_SIZE = 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRANSFORMS = ("train", "eval")
# ImageNet's training images: median near 400x350 (most are 500x375 or 375x500, many smaller), aspect 3:4 to 2:1.
MEDIAN_AREA, AREA_SIGMA = 400 * 350, 0.5  # log-normal area, in pixels
ASPECTS = (4 / 3, 4 / 3, 4 / 3, 3 / 2, 1.0, 3 / 4, 2 / 3, 16 / 9)  # width / height, landscape mostly
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
                  "immunohistochemistry", "retina")


def photographs() -> tuple[list[np.ndarray], list[str]]:
    """The real photographs the installed libraries ship (RGB uint8), and where they came from."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    photos, sources = list(load_sample_images().images), ["scikit-learn china.jpg, flower.jpg"]
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as hopper:
        photos.append(np.asarray(hopper.convert("RGB")))
    sources.append("matplotlib grace_hopper.jpg")
    try:
        import skimage.data
    except ImportError:
        sources.append("scikit-image not installed")
    else:
        found = [name for name in SKIMAGE_PHOTOS if hasattr(skimage.data, name)]
        photos += [np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB")) for name in found]
        sources.append("scikit-image " + ", ".join(found))
    return photos, sources


def write_folder(root: Path, classes: int, per_class: int, seed: int = 0) -> list[str]:
    """``root/train/<class>/*.jpg`` (``per_class`` each) and ``root/val/<class>/*.jpg`` (a fifth as many), cut
    from the photographs at ImageNet's sizes; returns the photographs' sources."""
    photos, sources = photographs()
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(1, per_class // 5))):
        for label in range(classes):
            folder = root / split / f"class_{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                photo = photos[rng.integers(len(photos))]
                area = MEDIAN_AREA * np.exp(rng.normal(0, AREA_SIGMA))
                aspect = ASPECTS[rng.integers(len(ASPECTS))]
                width, height = max(64, round(np.sqrt(area * aspect))), max(64, round(np.sqrt(area / aspect)))
                # The largest window of the output's aspect, shrunk at random, anywhere in the photo.
                photo_h, photo_w = photo.shape[:2]
                window_w = min(photo_w, photo_h * aspect) * rng.uniform(0.6, 1.0)
                window_h = window_w / aspect
                left, top = rng.uniform(0, photo_w - window_w), rng.uniform(0, photo_h - window_h)
                Image.fromarray(photo).resize((width, height), Image.BICUBIC, box=(
                    left, top, left + window_w, top + window_h)).save(folder / f"{i:05d}.jpg", quality=90)
    return sources


def folder_config(folder: Path, transform: str, workers: int) -> ml_collections.ConfigDict:
    """What ``--config.dataset=folder:PATH`` sets, reading the training split with either transform."""
    split = "train" if (folder / "train").is_dir() else "."
    return ml_collections.ConfigDict(dict(
        dataset=f"folder:{folder}", data_dir=None, train_split=split, eval_split=None if split == "train" else split,
        image_size=IMAGE_SIZE, augment="inception" if transform == "train" else "none", input_workers=workers,
        skip_bad_images=False, model_overrides=ml_collections.ConfigDict()))


def fusionjax_batches(folder: Path, transform: str, workers: int, batch: int):
    from fusionjax.train import data

    description = data.describe(folder_config(folder, transform, workers), log=None)
    # uint8 pixels, as the trainer reads them: its jitted step normalizes on the device.
    return data.train_batches(description, seed=0, global_batch_size=batch, normalized=False)


def train_files(folder: Path) -> list[str]:
    from fusionjax.train import data

    description = data.describe(folder_config(folder, "eval", 0), log=None)
    source = description.train.source
    return [str(source.root / name) for name in source.files.files]


def torchvision_batches(folder: Path, transform: str, workers: int, batch: int):
    import torch

    from fusionjax.torch_compat import import_torchvision

    torchvision = import_torchvision()
    transforms = torchvision.transforms
    steps = ([transforms.RandomResizedCrop(IMAGE_SIZE), transforms.RandomHorizontalFlip()] if transform == "train"
             else [transforms.Resize(int(IMAGE_SIZE / 0.875)), transforms.CenterCrop(IMAGE_SIZE)])
    dataset = torchvision.datasets.ImageFolder(
        str(folder / "train" if (folder / "train").is_dir() else folder),
        transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(MEAN, STD)]))
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10 ** 9)
    return iter(torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                            drop_last=True))


def tf_data_batches(files: list[str], transform: str, workers: int, batch: int):
    """The Flax ImageNet example's input: ``decode_and_crop_jpeg`` of a sampled box (train) or of the central
    224/256 (eval), resized to 224, on ``workers`` threads (at least one)."""
    import tensorflow as tf

    mean, std = tf.constant(MEAN) * 255, tf.constant(STD) * 255

    def train(path):
        jpeg = tf.io.read_file(path)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.io.extract_jpeg_shape(jpeg), tf.zeros([0, 0, 4]), min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        image = tf.io.decode_and_crop_jpeg(jpeg, tf.stack([begin[0], begin[1], size[0], size[1]]), channels=3)
        image = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], "bilinear", antialias=True)
        return (tf.image.random_flip_left_right(image) - mean) / std

    def evaluate(path):
        jpeg = tf.io.read_file(path)
        shape = tf.io.extract_jpeg_shape(jpeg)
        side = tf.cast(0.875 * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
        window = tf.stack([(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, side, side])
        image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
        image = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], "bilinear", antialias=True)
        return (image - mean) / std

    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, workers)
    dataset = tf.data.Dataset.from_tensor_slices(files).repeat().shuffle(len(files))
    dataset = dataset.map(train if transform == "train" else evaluate, num_parallel_calls=max(1, workers))
    return iter(dataset.batch(batch, drop_remainder=True).prefetch(2).with_options(options).as_numpy_iterator())


def measure(make_batches, batch: int, warmup: int, batches: int) -> tuple[float, str]:
    """(images/s over ``batches`` batches after ``warmup`` ones, the batches' dtype)."""
    iterator = make_batches()
    for _ in range(warmup):
        first = next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    rate = batch * batches / (time.perf_counter() - start)
    image = first["image"] if isinstance(first, dict) else first[0] if isinstance(first, (list, tuple)) else first
    del iterator  # stops the worker processes before the next pipeline starts
    return rate, str(getattr(image, "dtype", "?"))


def pillow_decode(path: str) -> None:
    """The whole file in RGB, as torchvision's loader decodes it."""
    with Image.open(path) as image:
        image.convert("RGB")


def simplejpeg_decode(path: str) -> None:
    """The whole JPEG in RGB: libjpeg-turbo through simplejpeg, as fusionjax decodes JPEGs (it asks for RGBX)."""
    import simplejpeg

    simplejpeg.decode_jpeg(Path(path).read_bytes(), "RGB")


def decode_rate(decode, files: list[str]) -> float:
    """Images/s of ``decode`` of every file, in this process."""
    start = time.perf_counter()
    for path in files:
        decode(path)
    return len(files) / (time.perf_counter() - start)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "numpy": np.__version__,
             "Pillow": f"{Image.__version__} (libjpeg-turbo {features.version('libjpeg_turbo') or 'no'})"}
    for name in ("simplejpeg", "grain", "torch", "torchvision", "tensorflow", "jax"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "?")
    return found


def run(folder: Path, workers: list[int], rounds: int, batch: int, warmup: int, batches: int) -> dict:
    try:
        import tensorflow  # noqa: F401
        has_tf = True
    except ImportError:
        has_tf = False
    files = train_files(folder)
    pipelines = {"fusionjax": lambda t, w: lambda: fusionjax_batches(folder, t, w, batch),
                 "torchvision": lambda t, w: lambda: torchvision_batches(folder, t, w, batch)}
    notes = []
    all_jpeg = all(path.lower().endswith((".jpg", ".jpeg")) for path in files)
    decoders = {"Pillow": pillow_decode, **({"simplejpeg": simplejpeg_decode} if all_jpeg else {})}
    if has_tf and all_jpeg:
        pipelines["tf.data"] = lambda t, w: lambda: tf_data_batches(files, t, w, batch)
    else:
        notes.append("tf.data: not run (" + ("TensorFlow not installed" if not has_tf else
                                             "decode_and_crop_jpeg reads JPEGs only, and the folder has others") + ")")
    variants = [(name, transform, count) for count in workers for transform in TRANSFORMS for name in pipelines]
    all_cores = sorted(os.sched_getaffinity(0))
    rates = {variant: [] for variant in variants}
    dtypes, decode_rates = {}, {decoder: [] for decoder in decoders}
    load_before = load_average()
    for round_number in range(rounds):
        shift = round_number % len(variants)  # each round starts with another pipeline
        for name, transform, count in variants[shift:] + variants[:shift]:
            pin_to_cores(set(all_cores[:max(1, count)]))
            rate, dtypes[name] = measure(pipelines[name](transform, count), batch, warmup, batches)
            rates[name, transform, count].append(rate / max(1, count))
        pin_to_cores({all_cores[0]})
        for decoder, decode in decoders.items():
            decode_rates[decoder].append(decode_rate(decode, files))
    pin_to_cores(set(all_cores))
    per_core = lambda pick: {
        name: {transform: {str(count): round(pick(rates[name, transform, count]), 1) for count in workers}
               for transform in TRANSFORMS} for name in pipelines}
    return {
        "images_per_s_per_core": per_core(statistics.median),
        "best_images_per_s_per_core": per_core(max),
        "full_decode_per_core": {decoder: {"median": round(statistics.median(rates), 1), "best": round(max(rates), 1)}
                                 for decoder, rates in decode_rates.items()},
        "rounds": {f"{name} {transform} workers={count}": [round(r, 1) for r in rates[name, transform, count]]
                   for name, transform, count in variants},
        "batch_dtypes": dtypes, "notes": notes, "images": len(files), "cores": os.cpu_count(),
        "load_average": {"before": load_before, "after": load_average()}, "versions": versions(),
        "command": records.command_line("benchmarks.input_pipeline", None),
    }


def goals(result: dict, workers: list[int]) -> list[str]:
    """The targets, as ratios within this run (medians)."""
    rates = result["images_per_s_per_core"]
    if "torchvision" not in rates:
        return []
    lines = []
    for count in map(str, workers):
        train = rates["fusionjax"]["train"][count] / rates["torchvision"]["train"][count]
        evaluation = rates["fusionjax"]["eval"][count] / rates["torchvision"]["eval"][count]
        lines.append(f"workers={count}: train {train:.2f}x torchvision (goal >= 2), "
                     f"{rates['fusionjax']['train'][count]:.0f} img/s/core (goal >= 600); "
                     f"eval {evaluation:.2f}x torchvision (goal >= 2)")
    if {"1", "2"} <= set(map(str, workers)):
        for transform in TRANSFORMS:
            scaling = 2 * rates["fusionjax"][transform]["2"] / rates["fusionjax"][transform]["1"]
            lines.append(f"fusionjax {transform}: 2 workers {scaling:.2f}x one (goal >= 1.7)")
    return lines


def markdown(result: dict, workers: list[int], folder_note: str) -> str:
    rows = ["| pipeline | transform | " + " | ".join(f"workers={w}: median (best)" for w in workers) + " |",
            "|---|---|" + "---|" * len(workers)]
    for name, by_transform in result["images_per_s_per_core"].items():
        for transform, by_workers in by_transform.items():
            best = result["best_images_per_s_per_core"][name][transform]
            rows.append(f"| {name} | {transform} | " + " | ".join(
                f"{by_workers[str(w)]:,.0f} ({best[str(w)]:,.0f})" for w in workers) + " |")
    for decoder, decode in result["full_decode_per_core"].items():
        rows.append(f"| {decoder} full-size decode, 1 process | – | {decode['median']:,.0f} ({decode['best']:,.0f}) |"
                    + " |" * (len(workers) - 1))
    return "\n".join([
        f"- command: `{result['command']}`",
        f"- machine: {records.cpu_name()}, {result['cores']} cores; load average (1, 5, 15 min) before "
        f"{result['load_average']['before']}, after {result['load_average']['after']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}",
        f"- folder: {folder_note}; {result['images']} training images, read with replacement",
        f"- batch dtypes: {', '.join(f'{k} {v}' for k, v in result['batch_dtypes'].items())}",
        *[f"- {note}" for note in result["notes"]],
        "", "Images/s per core (rate ÷ cores pinned), median (best) of the rounds:", "", *rows, "",
        *[f"- {line}" for line in goals(result, workers)],
        "", "Every round, images/s per core: " + "; ".join(f"{k}: {v}" for k, v in result["rounds"].items()),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a folder of class folders (or of train/<class>); default: "
                                                    "one made from sample photographs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker processes per pipeline, each count pinned to as many cores (0: in-process)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=4, help="batches before the timing starts")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per pipeline and round")
    parser.add_argument("--classes", type=int, default=10, help="made folder: class folders")
    parser.add_argument("--images-per-class", type=int, default=60, help="made folder: training images per class")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--record", action="store_true", help="also write the table to benchmarks/runs/")
    args = parser.parse_args(argv)
    if max(args.workers) > len(os.sched_getaffinity(0)):
        parser.error(f"--workers {max(args.workers)} exceeds the {len(os.sched_getaffinity(0))} cores available")
    started = records.now()
    with tempfile.TemporaryDirectory() as made:
        if args.folder is None:
            folder = Path(made)
            sources = write_folder(folder, args.classes, args.images_per_class)
            folder_note = (f"made: {args.classes} classes x {args.images_per_class} quality-90 JPEGs from "
                           f"{'; '.join(sources)}")
        else:
            folder, folder_note = args.folder, str(args.folder)
        result = run(folder, args.workers, args.rounds, args.batch_size, args.warmup, args.batches)
    result["command"] = records.command_line("benchmarks.input_pipeline", argv)
    text = markdown(result, args.workers, folder_note)
    if args.record:
        title = f"# {started:%Y-%m-%d %H:%M} UTC — input pipeline: fusionjax folder data against torchvision\n\n"
        path = records.save_record(records.RESULTS.parent / "runs", f"{started:%Y-%m-%d}_input-pipeline",
                                   title + text + "\n")
        print(f"record: {path}", file=sys.stderr)
    print(json.dumps(result) if args.json else text)


if __name__ == "__main__":
    main()
