"""Input pipelines for training and evaluation, built on grain with NumPy/PIL transforms (no TensorFlow).

Every training batch is a pure function of ``(seed, step)``: the example order is a per-epoch permutation seeded by
``(seed, epoch)``, and the augmentation's random numbers for the whole global batch come from a generator seeded by
``(seed, step)``. Resuming at ``start_step`` therefore reproduces an uninterrupted run exactly, and a batch does not
depend on how many hosts read it: host ``i`` of ``n`` reads and augments rows ``[i*B/n, (i+1)*B/n)`` of it.
grain maps step numbers to batches (one batched array_record read per batch), with reader threads and, with
``config.input_workers > 0``, worker processes; the order of batches never depends on either.

Data sets:
  * ``digits``: scikit-learn's 8x8 handwritten digits (ships with scikit-learn, offline), split 1437/360 with a
    stratified split fixed by ``DIGITS_SPLIT_SEED``; pixel values 0..16.
  * ``cifar10``, ``cifar100``, ``imagenette``, ``imagenet2012``: tensorflow-datasets data prepared in
    ``array_record`` format, read with ``tfds.data_source``. CIFAR and Imagenette are prepared offline from the
    original archives in ``manual_dir`` (``train/datasets/``); nothing here ever downloads.

Augmentations (``config.augment``): ``cifar`` = zero-pad 4, random 32x32 crop, horizontal flip (He et al., 2016);
``inception`` = torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bilinear) + flip; ``none``. Eval
images are used as they are (digits, CIFAR) or resized (shorter side to image_size / 0.875, bilinear, antialiased)
and center-cropped, exactly as torchvision's Resize + CenterCrop on PIL images.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TEST = 360

# torchvision's ImageNet eval recipe: resize the shorter side to 256 for a 224 crop.
EVAL_CROP_FRACTION = 0.875
CIFAR_PADDING = 4  # zero padding, as in He et al. (2016) and the Wide ResNet / DenseNet papers
INCEPTION_SCALE = (0.08, 1.0)
INCEPTION_RATIO = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # H, W, C after preprocessing
    num_train: int
    num_eval: int


@dataclasses.dataclass(frozen=True)
class _DatasetSpec:
    num_classes: int
    channels: int
    native_size: int | None  # fixed image size of the data set; None when images vary in size
    pixel_max: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augments: tuple[str, ...]  # augmentations that make sense for this data set


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

_SPECS = {
    # Mean/std of the 1437 training images of the fixed split, in units of pixel/16.
    "digits": _DatasetSpec(10, 1, 8, 16.0, (0.3054,), (0.3761,), ("none",)),
    # Per-channel mean and pixel standard deviation of the 50,000 training images.
    "cifar10": _DatasetSpec(10, 3, 32, 255.0, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), ("none", "cifar")),
    "cifar100": _DatasetSpec(100, 3, 32, 255.0, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), ("none", "cifar")),
    "imagenette": _DatasetSpec(10, 3, None, 255.0, _IMAGENET_MEAN, _IMAGENET_STD, ("none", "inception")),
    "imagenet2012": _DatasetSpec(1000, 3, None, 255.0, _IMAGENET_MEAN, _IMAGENET_STD, ("none", "inception")),
}

DATASETS = tuple(_SPECS)


class UnknownDatasetError(ValueError):
    """config.dataset names no data set this pipeline knows."""


class DataNotFoundError(FileNotFoundError):
    """The data set is neither prepared in data_dir nor preparable offline from manual_dir."""


def _config_get(config, key: str, default: Any = None) -> Any:
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


def _spec(config) -> tuple[str, _DatasetSpec]:
    name = _config_get(config, "dataset")
    if name not in _SPECS:
        raise UnknownDatasetError(
            f"Unknown dataset {name!r}; config.dataset must be one of {', '.join(DATASETS)}.")
    return name, _SPECS[name]


def _image_size(config, name: str, spec: _DatasetSpec) -> int:
    size = _config_get(config, "image_size", spec.native_size or 224)
    if spec.native_size is not None and size != spec.native_size:
        raise ValueError(
            f"config.image_size={size} but {name} images are {spec.native_size}x{spec.native_size} and are used at "
            f"that size; set config.image_size={spec.native_size}.")
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"config.image_size must be a positive int, got {size!r}.")
    return size


def _augment(config, name: str, spec: _DatasetSpec) -> str:
    augment = _config_get(config, "augment", "none")
    if augment not in spec.augments:
        raise ValueError(
            f"config.augment={augment!r} does not apply to {name}; use one of {', '.join(spec.augments)}.")
    return augment


# ----------------------------------------------------------------------------------------------------------------
# Sources: random access to images (HWC, uint8 or digits' 0..16) and integer labels, a batch of indices at a time.


class _ArraySource:
    """An in-memory split."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        return list(self.images[indices]), self.labels[indices]


def _digits_split(split: str) -> _ArraySource:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]  # values 0..16
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, digits.target, test_size=DIGITS_NUM_TEST, stratify=digits.target, random_state=DIGITS_SPLIT_SEED)
    splits = {"train": (train_images, train_labels), "test": (test_images, test_labels)}
    if split not in splits:
        raise ValueError(f"digits has splits 'train' and 'test', not {split!r}.")
    return _ArraySource(*splits[split])


class _TfdsSource:
    """A split of prepared tfds data, read with ``tfds.data_source`` (array_record, no TensorFlow)."""

    def __init__(self, data_source):
        self._data_source = data_source

    def __len__(self) -> int:
        return len(self._data_source)

    def read(self, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        records = self._data_source.__getitems__([int(i) for i in indices])  # one batched array_record read
        images = []
        for record in records:
            image = np.asarray(record["image"])
            if image.ndim == 2:
                image = image[..., None]
            if image.shape[-1] == 1:  # a few ImageNet JPEGs are grayscale
                image = np.repeat(image, 3, axis=-1)
            images.append(image)
        return images, np.asarray([record["label"] for record in records])

    def to_memory(self, chunk: int = 1024) -> _ArraySource:
        """The whole split decoded into one array, read a chunk of records at a time."""
        # Threads do not help here: decoding tfds records is mostly Python, serialized by the GIL (measured).
        parts = [self.read(np.arange(start, min(start + chunk, len(self)))) for start in range(0, len(self), chunk)]
        return _ArraySource(np.stack([image for images, _ in parts for image in images]),
                            np.concatenate([labels for _, labels in parts]))


def _load_split(config, split: str, *, for_training: bool = False):
    name, spec = _spec(config)
    if name == "digits":
        return _digits_split(split)
    from train.datasets import tfds_source

    source = _TfdsSource(tfds_source.load_split(
        name, split, data_dir=_config_get(config, "data_dir"), manual_dir=_config_get(config, "manual_dir")))
    # CIFAR's 32x32 training images (150 MB for 50,000) are decoded once and kept in memory: PNG decoding and
    # record parsing then cost seconds per run instead of most of every epoch's input time. One eval pass reads
    # each image once anyway, so it streams.
    return source.to_memory() if for_training and spec.native_size is not None else source


# ----------------------------------------------------------------------------------------------------------------
# Augmentations (NumPy / PIL on the host). The random draws for a step are made for the whole global batch from
# one generator seeded by (seed, step), so every host draws the same numbers and takes its own rows: a batch does
# not depend on the number of hosts. Draws do not depend on image sizes, which are known only after reading.


def _pad_crop_flip(images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pads NHWC ``images`` by ``padding``, crops each back at ``offsets`` [N, 2] and mirrors where ``flips``."""
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.empty_like(images)
    # A loop of slice copies is about 4x faster than one fancy-indexed gather here.
    for i, ((top, left), flip) in enumerate(zip(offsets.tolist(), flips.tolist())):
        crop = padded[i, top:top + height, left:left + width]
        out[i] = crop[:, ::-1] if flip else crop
    return out


def _inception_boxes(sizes: np.ndarray, draws: dict[str, np.ndarray]) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params for each (height, width) in ``sizes``: [N, 4] top, left, h, w.

    ``draws`` holds uniforms: ``area`` and ``log_ratio`` [N, 10] (the 10 attempts), ``position`` [N, 2].
    """
    heights, widths = sizes[:, :1].astype(np.float64), sizes[:, 1:].astype(np.float64)
    target_area = heights * widths * draws["area"]
    aspect = np.exp(draws["log_ratio"])
    crop_w = np.rint(np.sqrt(target_area * aspect))
    crop_h = np.rint(np.sqrt(target_area / aspect))
    fits = (crop_w > 0) & (crop_w <= widths) & (crop_h > 0) & (crop_h <= heights)
    attempt = fits.argmax(axis=1)[:, None]  # the first attempt that fits, as in torchvision's loop
    crop_h = np.take_along_axis(crop_h, attempt, 1)[:, 0]
    crop_w = np.take_along_axis(crop_w, attempt, 1)[:, 0]
    # No attempt fits: the largest central crop with the aspect ratio clamped into range.
    in_ratio = widths[:, 0] / heights[:, 0]
    fallback_w = np.where(in_ratio < INCEPTION_RATIO[0], widths[:, 0],
                          np.where(in_ratio > INCEPTION_RATIO[1], np.rint(heights[:, 0] * INCEPTION_RATIO[1]),
                                   widths[:, 0]))
    fallback_h = np.where(in_ratio < INCEPTION_RATIO[0], np.rint(widths[:, 0] / INCEPTION_RATIO[0]), heights[:, 0])
    found = fits.any(axis=1)
    crop_h, crop_w = np.where(found, crop_h, fallback_h), np.where(found, crop_w, fallback_w)
    top = np.where(found, np.floor(draws["position"][:, 0] * (heights[:, 0] - crop_h + 1)),
                   (heights[:, 0] - crop_h) // 2)
    left = np.where(found, np.floor(draws["position"][:, 1] * (widths[:, 0] - crop_w + 1)),
                    (widths[:, 0] - crop_w) // 2)
    return np.stack([top, left, crop_h, crop_w], axis=1).astype(np.int64)


def _resize(image: np.ndarray, size: tuple[int, int], box: np.ndarray | None = None) -> np.ndarray:
    """Bilinear resize (antialiased when shrinking, like torchvision on PIL images) of ``box`` = (top, left, h, w)."""
    from PIL import Image

    pil_box = None if box is None else (int(box[1]), int(box[0]), int(box[1] + box[3]), int(box[0] + box[2]))
    resized = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).resize(
        (size[1], size[0]), Image.BILINEAR, box=pil_box)
    out = np.asarray(resized)
    return out[..., None] if out.ndim == 2 else out


def _resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's Resize(int(size / 0.875)) + CenterCrop(size)."""
    height, width = image.shape[:2]
    short = int(size / EVAL_CROP_FRACTION)
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    resized = _resize(image, (new_h, new_w))
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return resized[top:top + size, left:left + size]


@dataclasses.dataclass(frozen=True)
class _Transform:
    """Turns a host's raw images into a normalized float32 NHWC batch."""

    augment: str  # 'none' | 'cifar' | 'inception'
    image_size: int
    fixed_size: bool  # images already have the output size (digits, CIFAR)
    pixel_max: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def draw(self, rng: np.random.Generator, global_batch_size: int) -> dict[str, np.ndarray]:
        """This step's random numbers for every row of the global batch."""
        if self.augment == "cifar":
            return {"offsets": rng.integers(0, 2 * CIFAR_PADDING + 1, (global_batch_size, 2)),
                    "flips": rng.random(global_batch_size) < 0.5}
        if self.augment == "inception":
            return {"area": rng.uniform(*INCEPTION_SCALE, (global_batch_size, 10)),
                    "log_ratio": rng.uniform(*np.log(INCEPTION_RATIO), (global_batch_size, 10)),
                    "position": rng.random((global_batch_size, 2)),
                    "flips": rng.random(global_batch_size) < 0.5}
        return {}

    def train(self, images: list[np.ndarray], draws: dict[str, np.ndarray]) -> np.ndarray:
        if self.augment == "cifar":
            return self.normalize(_pad_crop_flip(np.stack(images), draws["offsets"], draws["flips"], CIFAR_PADDING))
        if self.augment == "inception":
            boxes = _inception_boxes(np.asarray([image.shape[:2] for image in images]), draws)
            crops = np.stack([_resize(image, (self.image_size, self.image_size), box)
                              for image, box in zip(images, boxes)])
            return self.normalize(np.where(draws["flips"][:, None, None, None], crops[:, :, ::-1], crops))
        return self.eval(images)

    def eval(self, images: list[np.ndarray]) -> np.ndarray:
        if not self.fixed_size:
            images = [_resize_center_crop(image, self.image_size) for image in images]
        return self.normalize(np.stack(images))

    def normalize(self, images: np.ndarray) -> np.ndarray:
        std = np.asarray(self.std, np.float32)
        out = images.astype(np.float32)
        out *= np.float32(1 / self.pixel_max) / std  # in place: half the time of out-of-place arithmetic
        out -= np.asarray(self.mean, np.float32) / std
        return out


# ----------------------------------------------------------------------------------------------------------------
# Batches: grain maps a step number to this host's share of that step's global batch.


@dataclasses.dataclass(frozen=True)
class _Sharding:
    global_batch_size: int
    process_index: int
    process_count: int

    def __post_init__(self):
        if self.process_count < 1 or not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"process_index={self.process_index} must lie in [0, process_count={self.process_count}).")
        if self.global_batch_size < 1 or self.global_batch_size % self.process_count:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} must be a positive multiple of "
                f"process_count={self.process_count}: every host reads an equal share of each batch.")

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    @property
    def rows(self) -> slice:
        """This host's rows of the global batch."""
        return slice(self.process_index * self.local_batch_size, (self.process_index + 1) * self.local_batch_size)


class _TrainBatch:
    """Step -> this host's rows of the step's global batch: a per-epoch permutation, then augmentation."""

    def __init__(self, source, transform: _Transform, sharding: _Sharding, seed: int, steps_per_epoch: int):
        self.source, self.transform, self.sharding = source, transform, sharding
        self.seed, self.steps_per_epoch = seed, steps_per_epoch
        self._epoch_and_order: tuple[int, np.ndarray | None] = (-1, None)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        # One attribute holds (epoch, order) so that grain's reader threads, which may straddle an epoch boundary,
        # never pair one epoch's number with another's order.
        cached_epoch, order = self._epoch_and_order
        if cached_epoch != epoch:
            order = np.random.default_rng((self.seed, 0, epoch)).permutation(len(self.source))
            self._epoch_and_order = (epoch, order)
        return order

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        batch = self.sharding.global_batch_size
        indices = self._epoch_order(epoch)[step_in_epoch * batch:(step_in_epoch + 1) * batch][self.sharding.rows]
        draws = self.transform.draw(np.random.default_rng((self.seed, 1, step)), batch)
        images, labels = self.source.read(indices)
        return {"image": self.transform.train(images, {k: v[self.sharding.rows] for k, v in draws.items()}),
                "label": labels.astype(np.int32)}


class _EvalBatch:
    """Batch number -> this host's rows of it, in split order; rows past the split's end are zero with mask 0."""

    def __init__(self, source, transform: _Transform, sharding: _Sharding, image_shape: tuple[int, int, int]):
        self.source, self.transform, self.sharding, self.image_shape = source, transform, sharding, image_shape

    def __call__(self, batch_number: int) -> dict[str, np.ndarray]:
        rows = self.sharding.rows
        positions = batch_number * self.sharding.global_batch_size + np.arange(rows.start, rows.stop)
        real = positions[positions < len(self.source)]
        image = np.zeros((len(positions), *self.image_shape), np.float32)
        label = np.zeros(len(positions), np.int32)
        if len(real):
            images, labels = self.source.read(real)
            image[:len(real)], label[:len(real)] = self.transform.eval(images), labels
        return {"image": image, "label": label, "mask": (positions < len(self.source)).astype(np.float32)}


# ----------------------------------------------------------------------------------------------------------------
# Public interface.


def dataset_info(config) -> DatasetInfo:
    """Shapes, class count and split sizes; reads the prepared data's metadata (or loads digits)."""
    name, spec = _spec(config)
    size = _image_size(config, name, spec)
    _augment(config, name, spec)
    return DatasetInfo(
        name=name, num_classes=spec.num_classes, image_shape=(size, size, spec.channels),
        num_train=len(_load_split(config, _config_get(config, "train_split", "train"))),
        num_eval=len(_load_split(config, _eval_split(config, name))))


def _eval_split(config, name: str) -> str:
    default = "validation" if name in ("imagenette", "imagenet2012") else "test"
    return _config_get(config, "eval_split", default)


def _transform(config, name: str, spec: _DatasetSpec, augment: str) -> _Transform:
    return _Transform(augment, _image_size(config, name, spec), spec.native_size is not None, spec.pixel_max,
                      spec.mean, spec.std)


def _input_workers(config) -> int:
    workers = _config_get(config, "input_workers", 0)
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"config.input_workers must be an int >= 0 (0 reads in-process), got {workers!r}.")
    return workers


def _iterate(dataset: grain.MapDataset, workers: int) -> Iterator[dict]:
    # Threads overlap PIL decoding and array_record reads, which release the GIL; a few batches in flight suffice.
    iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=4, prefetch_buffer_size=4))
    if workers:
        from absl import flags

        # grain's worker start-up reads its absl flags; outside an absl app (a library call, a test) nothing has
        # parsed them, and their defaults are what we want.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(iter_dataset)


def train_batches(config, *, seed: int, global_batch_size: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Infinite training batches ``{'image': float32 [B/n, H, W, C], 'label': int32 [B/n]}`` from ``start_step``.

    Deterministic in ``(seed, step)``; reshuffles every epoch and drops each epoch's incomplete last batch.
    """
    name, spec = _spec(config)
    transform = _transform(config, name, spec, _augment(config, name, spec))
    workers = _input_workers(config)
    if seed < 0 or start_step < 0:
        raise ValueError(f"seed ({seed}) and start_step ({start_step}) must be >= 0.")
    sharding = _Sharding(global_batch_size, process_index, process_count)
    source = _load_split(config, _config_get(config, "train_split", "train"), for_training=True)
    steps_per_epoch = len(source) // global_batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"global_batch_size={global_batch_size} exceeds the {len(source)} training examples of {name}; "
            "use a smaller batch.")
    # Steps are unbounded in principle; sys.maxsize // 2 is a length grain can hold that no run reaches.
    steps = grain.MapDataset.range(start_step, sys.maxsize // 2)
    return _iterate(steps.map(_TrainBatch(source, transform, sharding, seed, steps_per_epoch)), workers)


def eval_batches(config, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
    """One ordered pass over ``config.eval_split``; the last batch is padded, and ``'mask'`` marks real examples."""
    name, spec = _spec(config)
    transform = _transform(config, name, spec, "none")
    workers = _input_workers(config)
    sharding = _Sharding(global_batch_size, process_index, process_count)
    source = _load_split(config, _eval_split(config, name))
    image_shape = (transform.image_size, transform.image_size, spec.channels)
    batches = grain.MapDataset.range(-(-len(source) // global_batch_size))
    return _iterate(batches.map(_EvalBatch(source, transform, sharding, image_shape)), workers)
