"""Opens prepared tfds data (array_record, read with ``as_data_source``); prepares CIFAR and Imagenette from
``manual_dir``; opens any other prepared data set (``tfds:NAME``) from its ``dataset_info.json``.

Nothing here downloads: a stock builder's download step, offline, retries for minutes, so data that is neither
prepared nor preparable from ``manual_dir`` fails at once with instructions.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging as absl_logging

from fusionjax.train.data import cifar_archive, imagenette_archive
from fusionjax.train.errors import ConfigError, DataNotFoundError

_HOW_TO_PREPARE = {
    "imagenet2012": ("Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into a "
                     "folder M, then run once, in an environment with TensorFlow (pip install tensorflow): "
                     "`tfds build imagenet2012 --file_format=array_record --data_dir={data_dir} --manual_dir=M`."),
}


def _default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _where(data_dir: str | None) -> str:
    """The data dir, and how it was chosen and is changed: one phrase for every error message."""
    if data_dir:
        return f"config.data_dir={data_dir}"
    return (f"{_default_data_dir()} (the default data dir: $TFDS_DATA_DIR, else ~/tensorflow_datasets; "
            "--config.data_dir=DIR picks another)")


def _check_format(builder, name: str, data_dir: str | None) -> None:
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise DataNotFoundError(
            f"{name} is prepared at {builder.data_dir} as {builder.info.file_format.value}, but reading it "
            "without TensorFlow needs array_record files. Prepare it again with --file_format=array_record (e.g. "
            f"`tfds build {builder.name} --file_format=array_record --data_dir={data_dir or _default_data_dir()}`) "
            "into another data_dir, or move the old version away first.")


def _prepare_or_explain(name: str, data_dir: str | None, manual_dir: str | None) -> None:
    """Prepares ``name`` from ``manual_dir`` if possible; otherwise raises a DataNotFoundError saying what to do."""
    offline = _offline_preparation(name, manual_dir)
    if offline is not None:
        archives, found, prepare = offline
        if found:
            prepare(data_dir=data_dir or _default_data_dir())
            return
        raise DataNotFoundError(
            f"{name} is not prepared in {_where(data_dir)}. Put {archives} in a folder M "
            f"and pass --config.manual_dir=M (currently {manual_dir!r}): it is prepared offline into the data dir "
            "on first use.")
    raise DataNotFoundError(
        f"{name} is not prepared in {_where(data_dir)}, and fusionjax does not download it. "
        + _HOW_TO_PREPARE[name].format(data_dir=data_dir or _default_data_dir()))


def _offline_preparation(name: str, manual_dir: str | None):
    """(what to put in manual_dir, whether it is there, how to prepare from it), or None if not preparable."""
    if name in cifar_archive.BUILDERS:
        archives = " or ".join(layout.archive for layout in cifar_archive.ARCHIVES[name])
        archives += " (from https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted folder"
        found = bool(manual_dir) and cifar_archive.find_archive(name, manual_dir) is not None
        return archives, found, lambda data_dir: cifar_archive.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
    if name == "imagenette":
        archives = (f"{imagenette_archive.ARCHIVE_NAMES[0]} (from https://s3.amazonaws.com/fast-ai-imageclas/) or "
                    f"its extracted {imagenette_archive.FOLDER}/ folder")
        found = bool(manual_dir) and imagenette_archive.find_archive(manual_dir) is not None
        return archives, found, lambda data_dir: imagenette_archive.prepare(data_dir=data_dir, manual_dir=manual_dir)
    return None


def prepared_builder(name: str, *, data_dir: str | None, manual_dir: str | None):
    """The tfds builder of the built-in data set ``name``, prepared (offline from ``manual_dir`` where it can be)."""
    # Whether it is prepared is asked first: opening unprepared data fails in ways that depend on the data dir and
    # on whether tfds could reach its servers (a KeyError about empty splits offline), none of which says what to
    # do. The default data dir is read now, not when tfds was imported: the environment may have changed since.
    root = data_dir or _default_data_dir()
    builder = tfds.builder(name, data_dir=root)
    if not _is_prepared(builder):
        _prepare_or_explain(name, data_dir, manual_dir)
        builder = tfds.builder(name, data_dir=root)
    _check_format(builder, name, data_dir)
    return builder


def _is_prepared(builder) -> bool:
    """``builder.is_prepared()`` without the warning tfds logs when it is not: the error that follows says more."""
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return builder.is_prepared()
    finally:
        absl_logging.set_verbosity(verbosity)


def builder_in_directory(name: str, version: str | None, *, data_dir: str | None):
    """The builder of any data set prepared under ``data_dir/name/version`` (``tfds:NAME[:VERSION]``), read from its
    ``dataset_info.json`` alone: the builder's code need not be installed."""
    folder = Path(data_dir or _default_data_dir()) / name
    prepared = sorted((path.parent for path in folder.glob("*/dataset_info.json")),
                      key=lambda path: tfds.core.Version(path.name) if tfds.core.Version.is_valid(path.name) else
                      tfds.core.Version("0.0.0"))
    how = (f"Prepare it once where the network is available (`tfds build {name} --file_format=array_record "
           f"--data_dir=DIR`) and copy DIR/{name} to {folder}, or pass --config.data_dir=DIR where it is.")
    if not prepared:
        raise DataNotFoundError(f"tfds:{name} is not prepared in {_where(data_dir)}: no {folder}/<version>/"
                                f"dataset_info.json. {how}")
    if version is not None:
        chosen = [path for path in prepared if path.name == version]
        if not chosen:
            raise DataNotFoundError(f"tfds:{name}:{version} is not prepared in {_where(data_dir)}; prepared versions: "
                                    f"{', '.join(path.name for path in prepared)}.")
        prepared = chosen
    builder = tfds.builder_from_directory(prepared[-1])
    _check_format(builder, f"tfds:{name}", data_dir)
    return builder


def open_split(builder, split: str):
    """A random-access ``tfds.data_source`` over ``split`` of the prepared array_record data of ``builder``."""
    try:
        return builder.as_data_source(split=split)
    except ValueError as error:  # tfds: a split the data set lacks, or a malformed slice of one
        raise ConfigError(f"{error} Set config.train_split and config.eval_split to splits of {builder.name} (tfds "
                          "slices such as 'train[:90%]' work too).") from error
