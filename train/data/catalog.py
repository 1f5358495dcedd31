"""The data sets the pipeline knows, and the config fields that choose among them: a built-in name (``SPECS``),
``folder:PATH`` (image files) or ``tfds:NAME[:VERSION]`` (any data set prepared in the tfds data dir)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fusionjax.models.registry import IMAGENET_NORMALIZATION
from fusionjax.train.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # H, W, C after preprocessing
    num_train: int
    num_eval: int


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    num_classes: int
    channels: int
    native_size: int | None  # fixed image size of the data set; None when images vary in size
    pixel_max: float  # the images' largest pixel value (digits: 16; the rest are 8-bit)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augments: tuple[str, ...]  # augmentations that make sense for this data set
    eval_split: str


_IMAGENET_MEAN = tuple(IMAGENET_NORMALIZATION["mean"])
_IMAGENET_STD = tuple(IMAGENET_NORMALIZATION["std"])

SPECS = {
    # Mean/std of the 1437 training images of the fixed split, in units of pixel/16.
    "digits": DatasetSpec(10, 1, 8, 16.0, (0.3054,), (0.3761,), ("none",), "test"),
    # Per-channel mean and pixel standard deviation of the 50,000 training images.
    "cifar10": DatasetSpec(10, 3, 32, 255.0, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), ("none", "cifar"),
                           "test"),
    "cifar100": DatasetSpec(100, 3, 32, 255.0, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            ("none", "cifar"), "test"),
    "imagenette": DatasetSpec(10, 3, None, 255.0, _IMAGENET_MEAN, _IMAGENET_STD, ("none", "inception"), "validation"),
    "imagenet2012": DatasetSpec(1000, 3, None, 255.0, _IMAGENET_MEAN, _IMAGENET_STD, ("none", "inception"),
                                "validation"),
}

DATASETS = tuple(SPECS)


class UnknownDatasetError(ConfigError):
    """config.dataset names no data set this pipeline knows."""


def config_value(config, key: str, default: Any = None) -> Any:
    """``config.key``, or ``default`` where the config lacks the field or leaves it None."""
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


FOLDER_PREFIX, TFDS_PREFIX = "folder:", "tfds:"


_FORMS = (f"{', '.join(DATASETS)}, folder:PATH (your image files, torchvision's ImageFolder layout) or "
          "tfds:NAME[:VERSION] (a prepared tfds data set)")


def parse_dataset(dataset: str | None) -> tuple[str, str, str | None]:
    """``config.dataset`` → (kind, name, version): ``('builtin', 'cifar10', None)``, ``('folder', PATH, None)`` or
    ``('tfds', NAME, VERSION or None)``."""
    if dataset is None:
        raise UnknownDatasetError(f"config.dataset is required: set --config.dataset to {_FORMS}.")
    dataset = str(dataset)
    if dataset.startswith(FOLDER_PREFIX) and dataset[len(FOLDER_PREFIX):]:
        return "folder", dataset[len(FOLDER_PREFIX):], None
    if dataset.startswith(TFDS_PREFIX) and dataset[len(TFDS_PREFIX):]:
        name, _, version = dataset[len(TFDS_PREFIX):].partition(":")
        return "tfds", name, version or None
    if dataset not in SPECS:
        raise UnknownDatasetError(f"Unknown dataset {dataset!r}; config.dataset must be one of {_FORMS}.")
    return "builtin", dataset, None


def dataset_spec(config) -> tuple[str, DatasetSpec]:
    """A built-in data set's name and spec."""
    kind, name, _ = parse_dataset(config_value(config, "dataset"))
    if kind != "builtin":
        raise UnknownDatasetError(f"config.dataset={name!r} is no built-in data set ({', '.join(DATASETS)}).")
    return name, SPECS[name]


DEFAULT_IMAGE_SIZE = 224


def image_size(config, name: str, native_size: int | None) -> int:
    size = config_value(config, "image_size", native_size or DEFAULT_IMAGE_SIZE)
    if native_size is not None and size != native_size:
        raise ConfigError(
            f"config.image_size={size} but {name} images are {native_size}x{native_size} and are used at "
            f"that size; set config.image_size={native_size}.")
    if not isinstance(size, int) or size <= 0:
        raise ConfigError(f"config.image_size must be a positive int, got {size!r}.")
    return size


def augmentation(config, name: str, augments: tuple[str, ...]) -> str:
    augment = config_value(config, "augment", "none")
    if augment not in augments:
        raise ConfigError(f"config.augment={augment!r} does not apply to {name}; use one of {', '.join(augments)}.")
    return augment


def train_split(config) -> str:
    return config_value(config, "train_split", "train")


def eval_split(config, spec: DatasetSpec) -> str:
    return config_value(config, "eval_split", spec.eval_split)


def input_workers(config) -> int | None:
    """``config.input_workers``; None (unset) lets the pipeline pick from the host's cores."""
    workers = config_value(config, "input_workers")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"config.input_workers must be an int >= 0 (0 reads in-process), or unset to pick from "
                          f"the host's cores; got {workers!r}.")
    return workers
