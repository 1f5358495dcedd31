"""One description of the data, resolved from the config once at the pipeline's edge: the source of each split,
the classes, the normalization, the transform. The trainer hands it to ``train_batches``, ``eval_batches`` and
``make_setup``, and stores it in the workdir (``dataset.json``, and for folder data the file lists of the split),
from which evaluating or resuming the run describes the same data again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fusionjax import cards
from fusionjax.models.registry import IMAGENET_NORMALIZATION
from fusionjax.train.data import catalog, folder as folder_lib
from fusionjax.train.data.sources import ArraySource, TfdsSource, digits_split
from fusionjax.train.data.transforms import EVAL_CROP_FRACTION, Transform
from fusionjax.train.errors import ConfigError, DataError

FOLDER_FILES = "dataset_files.json"  # a folder data set's two splits, file by file, beside dataset.json
IN_MEMORY_LIMIT_BYTES = 4 << 30  # fixed-size training images up to this size are decoded once into memory
EIGHT_BIT_MAX = 255.0  # cards' normalizations are written for 8-bit pixels, as are all data sets' but digits'
# ITU-R 601-2 luma, the weights of PIL's convert("L"): a gray image's statistics from RGB ones.
_LUMA = np.asarray([0.299, 0.587, 0.114])


@dataclasses.dataclass(frozen=True)
class Split:
    name: str  # config.train_split / config.eval_split as resolved ("train", "validation", "20%", ...)
    source: Any  # ArraySource | TfdsSource | folder.FolderSource
    per_class: dict[str, int] | None  # images per class, where known without reading every record


@dataclasses.dataclass(frozen=True)
class DataDescription:
    dataset: str  # config.dataset
    classes: tuple[str, ...]
    normalization: dict  # cards' format; the transform applies it
    transform: Transform  # training's (config.augment); evaluation's is ``eval_transform``
    train: Split
    eval: Split
    input_workers: int | None  # None: pipeline.auto_input_workers
    train_in_memory: bool  # decode the training split once into memory (fixed-size tfds data)
    grayscale: bool  # the data set's own images are grayscale (digits, 1-channel tfds data, a folder of gray images)
    skipped_images: tuple[str, ...] = ()
    folder_files: dict | None = None  # folder data: the splits' file lists, stored in the workdir

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.transform.image_size, self.transform.image_size, len(self.normalization["mean"])

    @property
    def eval_transform(self) -> Transform:
        return dataclasses.replace(self.transform, augment="none")

    @property
    def info(self) -> catalog.DatasetInfo:
        return catalog.DatasetInfo(self.dataset, self.num_classes, self.image_shape, len(self.train.source),
                                   len(self.eval.source))

    def card(self) -> dict:
        """The workdir's ``dataset.json``."""
        card = {"dataset": self.dataset, "classes": list(self.classes), "num_classes": self.num_classes,
                "image_shape": list(self.image_shape), "normalization": self.normalization,
                # What eval_transform does to an image: predicting on the weights later does the same.
                "eval_resize": ({"method": cards.RESIZE} if self.transform.fixed_size
                                else cards.resize_shorter_crop(EVAL_CROP_FRACTION)),
                "splits": {role: {"name": split.name, "count": len(split.source), "per_class": split.per_class}
                           for role, split in (("train", self.train), ("eval", self.eval))}}
        if self.skipped_images:
            card["skipped_images"] = list(self.skipped_images)
        return card

    def save(self, workdir: str | Path) -> None:
        """Writes ``dataset.json`` (and a folder data set's file lists) into ``workdir``: on one process only."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        if self.folder_files is not None:
            cards.write_json(workdir / FOLDER_FILES, self.folder_files)
        cards.write_json(workdir / cards.WORKDIR_CARD, self.card())


def describe(config, *, normalization: dict | None = None, channels: int | None = None,
             workdir: str | Path | None = None, log: Callable[[str], None] | None = print) -> DataDescription:
    """The data ``config`` names, opened and checked: every error about the data is raised here, before compiling.

    ``normalization`` (a card's) replaces the data set's own and ``channels`` the model's input channels, as
    fine-tuning from converted weights needs (digits' pixels are brought to 8 bits first: ``_pixel_divisor``). With
    ``workdir`` holding a run's ``dataset.json``, its normalization and (folder data) file lists are the run's, so
    that resuming or evaluating it sees the data it trained on. ``log`` gets one line when grayscale images are
    replicated into the 3 channels the model takes.
    """
    dataset = catalog.config_value(config, "dataset")
    kind, name, version = catalog.parse_dataset(dataset)
    stored = _read(Path(workdir) / cards.WORKDIR_CARD) if workdir is not None else None
    if stored is not None and stored.get("dataset") != dataset:  # not this run's card (the workdir check says why)
        stored = None
    if normalization is None and stored is not None:
        normalization = stored["normalization"]
    if normalization is not None:
        normalization = _checked_normalization(normalization, channels)
        channels = len(normalization["mean"])
    channels = channels or catalog.config_value(config.get("model_overrides") or {}, "in_channels")
    train_split = catalog.train_split(config)
    if kind == "folder":
        stored_files = _read(Path(workdir) / FOLDER_FILES) if stored is not None else None
        description = _describe_folder(config, name, train_split, channels or 3, normalization, stored_files)
    elif kind == "builtin":
        description = _describe_builtin(config, name, train_split, channels, normalization)
    else:
        description = _describe_tfds(config, name, version, train_split, channels, normalization)
    if log is not None and description.grayscale and description.image_shape[-1] == 3:
        log(f"{dataset} images are grayscale; replicated to the 3 channels "
            f"{catalog.config_value(config, 'model', 'the model')} takes.")
    return description


def _describe_builtin(config, name: str, train_split: str, channels: int | None,
                      normalization: dict | None) -> DataDescription:
    spec = catalog.SPECS[name]
    channels = channels or spec.channels
    normalization = normalization or _with_channels({
        "channel_order": "RGB" if spec.channels == 3 else "grayscale", "pixel_max": spec.pixel_max,
        "mean": list(spec.mean), "std": list(spec.std)}, channels)
    transform = _transform(catalog.augmentation(config, name, spec.augments),
                           catalog.image_size(config, name, spec.native_size), spec.native_size is not None,
                           normalization, spec.pixel_max)
    eval_split = catalog.eval_split(config, spec)
    if name == "digits":
        train, held_out = (_digits(split, channels) for split in (train_split, eval_split))
        return _description(config, name, tuple(str(i) for i in range(10)), normalization, transform, train, held_out,
                            False, grayscale=spec.channels == 1)
    from fusionjax.train.data import tfds_source  # tensorflow_datasets takes seconds to import: only when used

    builder = tfds_source.prepared_builder(name, data_dir=catalog.config_value(config, "data_dir"),
                                           manual_dir=catalog.config_value(config, "manual_dir"))
    return _tfds_description(config, builder, (train_split, eval_split), channels, normalization, transform,
                             grayscale=spec.channels == 1)


def _describe_tfds(config, name: str, version: str | None, train_split: str, channels: int | None,
                   normalization: dict | None) -> DataDescription:
    from fusionjax.train.data import tfds_source

    builder = tfds_source.builder_in_directory(name, version, data_dir=catalog.config_value(config, "data_dir"))
    features = builder.info.features
    if "image" not in features or "label" not in features or not hasattr(features["label"], "names"):
        raise DataError(f"tfds:{name} has features {', '.join(features)}; the trainer reads an 'image' and a class "
                        "'label' (a tfds.features.ClassLabel).")
    height, width, native_channels = features["image"].shape
    fixed = height is not None and height == width
    augment = catalog.augmentation(config, f"tfds:{name}", ("none", "cifar", "inception") if fixed
                                   else ("none", "inception"))
    channels = channels or native_channels or 3
    normalization = normalization or _with_channels(IMAGENET_NORMALIZATION, channels)
    transform = _transform(augment, catalog.image_size(config, f"tfds:{name}", height if fixed else None), fixed,
                           normalization, EIGHT_BIT_MAX)
    splits = list(builder.info.splits)
    eval_split = catalog.config_value(config, "eval_split",
                                      next((split for split in ("test", "validation") if split in splits), None))
    if eval_split is None:
        raise ConfigError(f"tfds:{name} has splits {', '.join(splits)} and none is called test or validation: set "
                          "--config.eval_split to one of them (or a slice such as 'train[90%:]').")
    return _tfds_description(config, builder, (train_split, eval_split), channels, normalization, transform,
                             grayscale=native_channels == 1)


def _tfds_description(config, builder, split_names: tuple[str, str], channels: int, normalization: dict,
                      transform: Transform, grayscale: bool) -> DataDescription:
    from fusionjax.train.data import tfds_source

    train, held_out = (Split(split, TfdsSource(tfds_source.open_split(builder, split), channels), None)
                       for split in split_names)
    size = transform.image_size
    in_memory = transform.fixed_size and len(train.source) * size * size * channels <= IN_MEMORY_LIMIT_BYTES
    return _description(config, catalog.config_value(config, "dataset"), builder.info.features["label"].names,
                        normalization, transform, train, held_out, in_memory, grayscale=grayscale)


def _describe_folder(config, path: str, train_split: str, channels: int, normalization: dict | None,
                     stored_files: dict | None) -> DataDescription:
    data = folder_lib.resolve(path, train_split, catalog.config_value(config, "eval_split"), stored=stored_files,
                              skip_bad_images=bool(catalog.config_value(config, "skip_bad_images", False)))
    size = catalog.image_size(config, f"folder:{path}", None)
    fixed = data.sizes == {(size, size)}  # every image already at the model's size: used as it is, like CIFAR
    augment = catalog.augmentation(config, f"folder:{path} ({'all' if fixed else 'not all'} images {size}x{size})",
                                   ("none", "cifar", "inception") if fixed else ("none", "inception"))
    normalization = normalization or _with_channels(IMAGENET_NORMALIZATION, channels)
    train, held_out = (Split(files.name, folder_lib.FolderSource(data.root, files, channels),
                             _per_class(data.classes, np.asarray(files.labels)))
                       for files in (data.train, data.eval))
    files = {"root": str(data.root.absolute()), "classes": list(data.classes),
             **{role: {"name": f.name, "files": list(f.files), "labels": list(f.labels)}
                for role, f in (("train", data.train), ("eval", data.eval))}}
    return _description(config, catalog.config_value(config, "dataset"), data.classes, normalization,
                        _transform(augment, size, fixed, normalization, EIGHT_BIT_MAX), train, held_out, False,
                        data.grayscale, data.skipped, files)


def _description(config, dataset, classes, normalization, transform, train, held_out, in_memory, grayscale,
                 skipped=(), folder_files=None) -> DataDescription:
    for split in (train, held_out):
        if not len(split.source):
            raise DataError(f"The {split.name!r} split of {dataset} holds no images.")
    return DataDescription(dataset, tuple(classes), normalization, transform, train, held_out,
                           catalog.input_workers(config), in_memory, grayscale, tuple(skipped), folder_files)


def _digits(split: str, channels: int) -> Split:
    source = digits_split(split)
    if channels == 3:
        source = ArraySource(np.repeat(source.images, 3, axis=-1), source.labels)
    return Split(split, source, _per_class([str(i) for i in range(10)], source.labels))


def _per_class(classes, labels: np.ndarray) -> dict[str, int]:
    return dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist()))


def _transform(augment: str, size: int, fixed: bool, normalization: dict, pixel_max: float) -> Transform:
    """The transform that applies ``normalization`` to pixels that run 0..``pixel_max``."""
    return Transform(augment, size, fixed, _pixel_divisor(normalization, pixel_max), tuple(normalization["mean"]),
                     tuple(normalization["std"]), normalization["channel_order"] == "BGR")


def _pixel_divisor(normalization: dict, pixel_max: float) -> float:
    """What pixels that run 0..``pixel_max`` are divided by. A normalization with that very pixel_max is written for
    them (digits' own, a digits run's card); any other (a card's) for 8-bit pixels, so they are scaled to 0..255
    first. In float, not rounded to 8-bit levels: digits have no 8-bit originals to round to, and a float scaling
    folds into this one divisor, so the normalization recorded (the card's) reproduces the run exactly."""
    divisor = float(normalization["pixel_max"])
    return divisor if divisor == pixel_max else divisor * pixel_max / EIGHT_BIT_MAX


def _with_channels(normalization: dict, channels: int) -> dict:
    """``normalization`` for ``channels`` channels: gray repeated into RGB has the gray statistics in each channel;
    RGB made gray (PIL's luma) gets the luma-weighted statistics."""
    mean, std = np.asarray(normalization["mean"]), np.asarray(normalization["std"])
    if len(mean) == channels:
        return dict(normalization)
    if channels == 3:
        return {**normalization, "channel_order": "RGB", "mean": [float(mean[0])] * 3, "std": [float(std[0])] * 3}
    return {**normalization, "channel_order": "grayscale", "mean": [round(float(_LUMA @ mean), 4)],
            "std": [round(float(_LUMA @ std), 4)]}


def _checked_normalization(normalization: dict, channels: int | None) -> dict:
    missing = [key for key in cards.NORMALIZATION_KEYS if key not in normalization]
    if missing:
        raise ConfigError(f"The normalization {normalization} lacks {', '.join(missing)}; a card's normalization has "
                          f"{', '.join(cards.NORMALIZATION_KEYS)}.")
    count = 1 if normalization["channel_order"] == "grayscale" else 3
    if len(normalization["mean"]) != count or len(normalization["std"]) != count or channels not in (None, count):
        raise ConfigError(f"The normalization {normalization} does not fit {channels or count} input channels.")
    return {key: normalization[key] for key in cards.NORMALIZATION_KEYS}


def _read(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return cards.read_json(path)
    except ValueError as error:
        raise DataError(str(error)) from None
