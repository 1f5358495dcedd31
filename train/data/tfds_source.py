"""Opens a split of prepared tfds data with ``tfds.data_source``; prepares CIFAR and Imagenette from ``manual_dir``.

Nothing here downloads: a stock builder's download step, offline, retries for minutes, so data that is neither
prepared nor preparable from ``manual_dir`` fails at once with instructions.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from fusionjax.train.data import cifar_archive, imagenette_archive
from fusionjax.train.errors import ConfigError, DataNotFoundError

_HOW_TO_PREPARE = {
    "imagenet2012": ("Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into a "
                     "folder M, then in an environment with TensorFlow (pip install tensorflow) run once:\n"
                     "  tfds build imagenet2012 --file_format=array_record --data_dir={data_dir} --manual_dir=M\n"
                     "and point config.data_dir at {data_dir}."),
}


def _default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _diagnose(name: str, data_dir: str | None, manual_dir: str | None) -> None:
    """Prepares ``name`` from ``manual_dir`` if possible; otherwise raises a DataNotFoundError saying what to do."""
    builder = tfds.builder(name, data_dir=data_dir)
    shown_dir = data_dir or _default_data_dir()
    if builder.is_prepared():
        if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
            raise DataNotFoundError(
                f"{name} is prepared at {builder.data_dir} as {builder.info.file_format.value}, but reading it "
                "without TensorFlow needs array_record files. Prepare it again with --file_format=array_record "
                f"(e.g. `tfds build {name} --file_format=array_record --data_dir={shown_dir}`) into another "
                "data_dir, or move the old version away first.")
        return  # prepared correctly: the original error is not about missing data
    offline = _offline_preparation(name, manual_dir)
    if offline is not None:
        archives, found, prepare = offline
        if found:
            prepare(data_dir=data_dir)
            return
        raise DataNotFoundError(
            f"{name} is not prepared under {shown_dir} (looked for {builder.data_dir}). Put {archives} in a "
            f"directory and set config.manual_dir to it (currently {manual_dir!r}); it is then prepared offline "
            "into config.data_dir on first use.")
    raise DataNotFoundError(
        f"{name} is not prepared under {shown_dir} (looked for {builder.data_dir}) and fusionjax does not download "
        "it. " + _HOW_TO_PREPARE[name].format(data_dir=shown_dir))


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


def load_split(name: str, split: str, *, data_dir: str | None, manual_dir: str | None):
    """A random-access ``tfds.data_source`` over ``split`` of the array_record data prepared for ``name``."""
    try:
        return _open(name, split, data_dir)
    except (NotImplementedError, AssertionError, FileNotFoundError):  # tfds's ways of saying "not prepared (so)"
        pass
    # Outside the except block: tfds's message for missing data is misleading, and _diagnose's errors replace it.
    _diagnose(name, data_dir, manual_dir)
    return _open(name, split, data_dir)


def _open(name: str, split: str, data_dir: str | None):
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except ValueError as error:  # tfds: a split the data set lacks, or a malformed slice of one
        raise ConfigError(f"{error} Set config.train_split and config.eval_split to splits of {name} (tfds slices "
                          "such as 'train[:90%]' work too).") from error
