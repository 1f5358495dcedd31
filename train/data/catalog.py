"""The data sets the pipeline knows, and the config fields that choose among them."""

from __future__ import annotations

import dataclasses
from typing import Any

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
    pixel_max: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augments: tuple[str, ...]  # augmentations that make sense for this data set
    eval_split: str


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

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


def dataset_spec(config) -> tuple[str, DatasetSpec]:
    name = config_value(config, "dataset")
    if name not in SPECS:
        raise UnknownDatasetError(f"Unknown dataset {name!r}; config.dataset must be one of {', '.join(DATASETS)}.")
    return name, SPECS[name]


def image_size(config, name: str, spec: DatasetSpec) -> int:
    size = config_value(config, "image_size", spec.native_size or 224)
    if spec.native_size is not None and size != spec.native_size:
        raise ConfigError(
            f"config.image_size={size} but {name} images are {spec.native_size}x{spec.native_size} and are used at "
            f"that size; set config.image_size={spec.native_size}.")
    if not isinstance(size, int) or size <= 0:
        raise ConfigError(f"config.image_size must be a positive int, got {size!r}.")
    return size


def augmentation(config, name: str, spec: DatasetSpec) -> str:
    augment = config_value(config, "augment", "none")
    if augment not in spec.augments:
        raise ConfigError(
            f"config.augment={augment!r} does not apply to {name}; use one of {', '.join(spec.augments)}.")
    return augment


def train_split(config) -> str:
    return config_value(config, "train_split", "train")


def eval_split(config, spec: DatasetSpec) -> str:
    return config_value(config, "eval_split", spec.eval_split)


def input_workers(config) -> int:
    workers = config_value(config, "input_workers", 0)
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"config.input_workers must be an int >= 0 (0 reads in-process), got {workers!r}.")
    return workers
