"""Images/s of the training input pipeline (``fusionjax.train.data``) on this machine, printed as a table.

    python -m benchmarks.input_pipeline [--batches 20] [--workers 0 1 2] [--tf-data]

Runs the code path real data takes: digits from scikit-learn; CIFAR-10 and Imagenette prepared offline from
synthetic archives in the original formats (random pixels; ImageNet-sized 500x375 JPEGs), then read through
``tfds.data_source`` and grain with the standard augmentations. Numbers are host-side only (no model).

``--tf-data`` (needs TensorFlow, which fusionjax does not install: ``pip install tensorflow-cpu`` in a separate
environment) adds the tf.data pipeline the Flax ImageNet example uses for the same training augmentations, for the
choice between the two. tfds cannot read array_record files with tf.data (``as_dataset`` raises
NotImplementedError), so tf.data gets the same images from memory: CIFAR's decoded arrays (grain's CIFAR path
holds them in memory too) and Imagenette's JPEG bytes (decoded and cropped with ``decode_and_crop_jpeg``).
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image

from fusionjax.train import data
from fusionjax.train.data import catalog


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def write_cifar10(manual_dir: Path, num_train: int) -> dict[str, np.ndarray]:
    """Writes the binary archive; returns its training images (NHWC uint8) and labels."""
    rng = np.random.default_rng(0)
    folder = "cifar-10-batches-bin"

    def records(count):
        labels = rng.integers(0, 10, (count, 1), dtype=np.uint8)
        return np.hstack([labels, rng.integers(0, 256, (count, 3072), dtype=np.uint8)]).tobytes()

    members = {f"{folder}/data_batch_{i}.bin": records(num_train // 5) for i in range(1, 6)}
    members[f"{folder}/test_batch.bin"] = records(100)
    members[f"{folder}/batches.meta.txt"] = "".join(f"class{i}\n" for i in range(10)).encode()
    _write_tar(manual_dir / "cifar-10-binary.tar.gz", members)
    rows = np.frombuffer(b"".join(members[f"{folder}/data_batch_{i}.bin"] for i in range(1, 6)), np.uint8)
    rows = rows.reshape(-1, 3073)
    return {"image": rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), "label": rows[:, 0].astype(np.int64)}


def write_imagenette(manual_dir: Path, per_class: int) -> dict[str, list]:
    """Smooth random 500x375 JPEGs (ImageNet's typical size), so decoding costs what real photos cost.

    Returns the training JPEGs' bytes and labels."""
    rng = np.random.default_rng(0)
    from tensorflow_datasets.core import utils

    wnids = utils.tfds_path("image_classification/imagenette_labels.txt").read_text().split()
    members, train = {}, {"image": [], "label": []}
    for split in ("train", "val"):
        for label, wnid in enumerate(wnids):
            for i in range(per_class):
                coarse = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(coarse).resize((500, 375), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
                members[f"imagenette2/{split}/{wnid}/{wnid}_{i}.JPEG"] = buffer.getvalue()
                if split == "train":
                    train["image"].append(buffer.getvalue())
                    train["label"].append(label)
    _write_tar(manual_dir / "imagenette2.tgz", members)
    return train


def tf_data_batches(arrays: dict, augment: str, image_size: int, batch: int, mean, std):
    """The tf.data training pipeline for ``augment``, as the Flax ImageNet example writes it: shuffle, parallel
    map (AUTOTUNE), batch, prefetch; NumPy batches out."""
    import tensorflow as tf

    mean, std = tf.constant(mean, tf.float32) * 255, tf.constant(std, tf.float32) * 255

    def cifar(image, label):
        padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
        image = tf.image.random_flip_left_right(tf.image.random_crop(padded, [32, 32, 3]))
        return {"image": (tf.cast(image, tf.float32) - mean) / std, "label": label}

    def inception(jpeg, label):
        shape = tf.io.extract_jpeg_shape(jpeg)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape, tf.zeros([0, 0, 4]), min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
        image = tf.image.random_flip_left_right(tf.image.resize(image, [image_size, image_size], "bilinear"))
        return {"image": (image - mean) / std, "label": label}

    dataset = tf.data.Dataset.from_tensor_slices((arrays["image"], arrays["label"])).repeat()
    dataset = dataset.shuffle(10_000).map(cifar if augment == "cifar" else inception,
                                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def measure(make_iterator, batches: int) -> tuple[float, float]:
    """(seconds to the first batch, images/s over up to ``batches`` more batches)."""
    start = time.perf_counter()
    iterator = make_iterator()
    next(iterator)
    first = time.perf_counter()
    images = 0
    for _, batch in zip(range(batches), iterator):
        images += len(batch["label"])
    return first - start, images / (time.perf_counter() - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per row")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="config.input_workers values")
    parser.add_argument("--tf-data", action="store_true", help="add tf.data's images/s (needs TensorFlow)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "manual").mkdir()
        in_memory = {"cifar10": write_cifar10(root / "manual", num_train=5000),
                     "imagenette": write_imagenette(root / "manual", per_class=20)}
        common = dict(data_dir=str(root / "data"), manual_dir=str(root / "manual"), train_split="train")
        for name in ("digits", "cifar10", "imagenette"):  # prepares the archives: a one-time cost, not timed
            data.dataset_info(ml_collections.ConfigDict({**common, "dataset": name}))
        cases = [
            ("digits", "train", dict(dataset="digits", augment="none", image_size=8), 128),
            ("cifar10", "train", dict(dataset="cifar10", augment="cifar", image_size=32), 128),
            ("imagenette", "train", dict(dataset="imagenette", augment="inception", image_size=224), 64),
            ("imagenette", "eval", dict(dataset="imagenette", augment="none", image_size=224,
                                        eval_split="validation"), 32),
        ]
        print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; images/s after the first batch "
              f"(up to {args.batches} batches; eval: one pass over 200 images); start-up = seconds to the first "
              "batch with workers=0 (CIFAR decodes its 5,000 training images into memory then)")
        print(f"{'data set':<12}{'pipeline':<10}{'augment':<11}{'batch':>6}{'start-up':>10}" +
              "".join(f"{f'workers={w}':>12}" for w in args.workers) + ("     tf.data" if args.tf_data else ""))
        for name, kind, overrides, batch in cases:
            results = []
            for workers in args.workers:
                config = ml_collections.ConfigDict({**common, **overrides, "input_workers": workers})
                if kind == "train":
                    def make_iterator():
                        return data.train_batches(config, seed=0, global_batch_size=batch)
                else:
                    def make_iterator():
                        return data.eval_batches(config, global_batch_size=batch)
                results.append(measure(make_iterator, args.batches))
            row = "".join(f"{rate:>12.0f}" for _, rate in results)
            if args.tf_data:
                if kind == "train" and name in in_memory:
                    spec = catalog.SPECS[name]
                    _, rate = measure(lambda: tf_data_batches(in_memory[name], overrides["augment"],
                                                              overrides["image_size"], batch, spec.mean, spec.std),
                                      args.batches)
                    row += f"{rate:>12.0f}"
                else:
                    row += f"{'–':>12}"
            print(f"{name:<12}{kind:<10}{overrides['augment']:<11}{batch:>6}{results[0][0]:>10.2f}{row}")


if __name__ == "__main__":
    main()
