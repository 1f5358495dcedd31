"""Offline, TensorFlow-free preparation of CIFAR-10/100 from the original archives in ``manual_dir``.

tfds's stock CIFAR builders download the archive and read it with ``tf.io.gfile``, so they need the network and
TensorFlow. These builders subclass them, keep their name, version and features, and only replace where the
bytes come from: an archive the user already has (``cifar-10-binary.tar.gz`` or ``cifar-10-python.tar.gz``, and
the CIFAR-100 equivalents) or its extracted folder. Images are handed to tfds as PIL images, which tfds encodes
with PIL instead of TensorFlow. The prepared ``array_record`` files land where the stock builder would put them
(``data_dir/cifar10/3.0.2``), so ``tfds.data_source('cifar10', ...)`` reads them exactly like data prepared by the
stock builder.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from tensorflow_datasets.image_classification.cifar import Cifar10, Cifar100

from fusionjax.train.errors import DataError

_IMAGE_BYTES = 32 * 32 * 3


@dataclasses.dataclass(frozen=True)
class _ArchiveLayout:
    """Where one archive format keeps its splits and class names, and how its records are laid out."""

    archive: str  # file name as distributed at https://www.cs.toronto.edu/~kriz/cifar.html
    folder: str  # top-level folder inside the archive
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_files: tuple[str, ...]  # class names
    pickled: bool


ARCHIVES = {
    "cifar10": (
        _ArchiveLayout("cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                       tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",),
                       ("batches.meta.txt",), pickled=False),
        _ArchiveLayout("cifar-10-python.tar.gz", "cifar-10-batches-py",
                       tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), ("batches.meta",), pickled=True),
    ),
    "cifar100": (
        _ArchiveLayout("cifar-100-binary.tar.gz", "cifar-100-binary", ("train.bin",), ("test.bin",),
                       ("coarse_label_names.txt", "fine_label_names.txt"), pickled=False),
        _ArchiveLayout("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",), ("meta",), pickled=True),
    ),
}


def find_archive(name: str, manual_dir: str | Path) -> tuple[_ArchiveLayout, Path] | None:
    """The first archive (or extracted folder) of data set ``name`` present in ``manual_dir``."""
    for layout in ARCHIVES[name]:
        for candidate in (Path(manual_dir) / layout.archive, Path(manual_dir) / layout.folder):
            if candidate.exists():
                return layout, candidate
    return None


def _read_members(path: Path, layout: _ArchiveLayout) -> dict[str, bytes]:
    wanted = {*layout.train_files, *layout.test_files, *layout.meta_files}
    if path.is_dir():
        members = {name: (path / name).read_bytes() for name in wanted if (path / name).exists()}
    else:
        members = {}
        with tarfile.open(path) as archive:  # one sequential pass: random access into a .tar.gz re-decompresses
            for member in archive:
                name = Path(member.name).name
                if member.isfile() and name in wanted and Path(member.name).parent.name == layout.folder:
                    members[name] = archive.extractfile(member).read()
    missing = sorted(wanted - members.keys())
    if missing:
        raise DataError(f"{path} is not a complete {layout.archive}: {', '.join(missing)} missing under "
                         f"{layout.folder}/. Re-download it from https://www.cs.toronto.edu/~kriz/cifar.html.")
    return members


def _decode_binary(data: bytes, label_keys: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Records of one byte per label (in ``label_keys`` order), then a 3x32x32 (CHW) image."""
    record_bytes = len(label_keys) + _IMAGE_BYTES
    if len(data) % record_bytes:
        raise DataError(f"CIFAR binary batch of {len(data)} bytes is not a whole number of {record_bytes}-byte "
                         "records; the archive is corrupt.")
    records = np.frombuffer(data, np.uint8).reshape(-1, record_bytes)
    images = records[:, len(label_keys):].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, {key: records[:, i].astype(np.int64) for i, key in enumerate(label_keys)}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and NumPy arrays only: a pickle naming any other class or function (which
    unpickling would call) is refused, so an archive from elsewhere cannot run code."""

    _ALLOWED = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise DataError(f"The CIFAR archive's pickled batch refers to {module}.{name}, which CIFAR batches never "
                            "hold; refusing to unpickle it. Use the archive from https://www.cs.toronto.edu/~kriz/"
                            "cifar.html, or its binary version.")
        return super().find_class(module, name)


def _decode_pickle(data: bytes, label_keys: dict[str, bytes]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    batch = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, {key: np.asarray(batch[pickled], np.int64) for key, pickled in label_keys.items()}


class _ArchiveMixin:
    """Replaces the stock builders' download with reading an archive from ``manual_dir``."""

    _BINARY_LABELS: tuple[str, ...]  # feature keys in the order the binary records store their label bytes
    _PICKLE_LABELS: dict[str, bytes]  # feature key -> key in the pickled batches
    _PICKLE_NAMES: dict[str, bytes]  # feature key -> key of its class names in the pickled meta file
    _TEXT_NAMES: dict[str, str]  # feature key -> text file of its class names in the binary format

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the original CIFAR archive (e.g. cifar-10-binary.tar.gz or cifar-10-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html), or its extracted folder, in manual_dir.")

    # tfds derives a builder's code path from its top-level package's folder, which is wrong where this package is
    # installed from train/ (an editable install maps fusionjax.train there); this module is that path.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _split_generators(self, dl_manager):
        found = find_archive(self.name, dl_manager.manual_dir)
        if found is None:
            raise FileNotFoundError(f"No {self.name} archive in {dl_manager.manual_dir}. "
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        layout, path = found
        members = _read_members(path, layout)
        self._set_label_names(members, layout)

        def decode(files):
            parts = [_decode_pickle(members[f], self._PICKLE_LABELS) if layout.pickled
                     else _decode_binary(members[f], self._BINARY_LABELS) for f in files]
            images = np.concatenate([images for images, _ in parts])
            labels = {key: np.concatenate([labels[key] for _, labels in parts]) for key in parts[0][1]}
            return images, labels

        return {tfds.Split.TRAIN: self._examples("train_", *decode(layout.train_files)),
                tfds.Split.TEST: self._examples("test_", *decode(layout.test_files))}

    def _examples(self, prefix: str, images: np.ndarray,
                  labels: dict[str, np.ndarray]) -> Iterator[tuple[int, dict]]:
        for index, image in enumerate(images):
            # Keys and ids as in the stock builder, so the prepared files match it example for example.
            yield index, {"id": f"{prefix}{index:05d}", "image": Image.fromarray(image),
                          **{key: int(values[index]) for key, values in labels.items()}}

    def _set_label_names(self, members: dict[str, bytes], layout: _ArchiveLayout) -> None:
        if layout.pickled:
            table = _ArrayUnpickler(io.BytesIO(members[layout.meta_files[0]]), encoding="bytes").load()
            names = {key: [n.decode() for n in table[pickled]] for key, pickled in self._PICKLE_NAMES.items()}
        else:
            names = {key: [n for n in members[file].decode().split("\n") if n.strip()]
                     for key, file in self._TEXT_NAMES.items()}
        for key, value in names.items():
            self.info.features[key].names = value


class Cifar10Archive(_ArchiveMixin, Cifar10, skip_registration=True):
    name = "cifar10"
    _BINARY_LABELS = ("label",)
    _PICKLE_LABELS = {"label": b"labels"}
    _PICKLE_NAMES = {"label": b"label_names"}
    _TEXT_NAMES = {"label": "batches.meta.txt"}


class Cifar100Archive(_ArchiveMixin, Cifar100, skip_registration=True):
    name = "cifar100"
    _BINARY_LABELS = ("coarse_label", "label")
    _PICKLE_LABELS = {"coarse_label": b"coarse_labels", "label": b"fine_labels"}
    _PICKLE_NAMES = {"coarse_label": b"coarse_label_names", "label": b"fine_label_names"}
    _TEXT_NAMES = {"coarse_label": "coarse_label_names.txt", "label": "fine_label_names.txt"}


BUILDERS = {"cifar10": Cifar10Archive, "cifar100": Cifar100Archive}


def prepare(name: str, *, data_dir: str | None, manual_dir: str) -> None:
    """Writes ``data_dir/<name>/3.0.2`` in array_record format from the archive in ``manual_dir``."""
    builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
