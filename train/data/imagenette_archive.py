"""Offline, TensorFlow-free preparation of Imagenette from fast.ai's ``imagenette2.tgz`` in ``manual_dir``.

The stock builder downloads the archive and lists it with ``tf.io.gfile``. This one keeps its name, version, config
(``full-size-v2``) and features, and reads the archive (or its extracted folder) the user already has. JPEG bytes
pass through unchanged, as in the stock builder, so tfds needs no TensorFlow to write them; the prepared
``array_record`` files land in ``data_dir/imagenette/full-size-v2/1.0.0``.
"""

from __future__ import annotations

import inspect
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.datasets.imagenette.imagenette_dataset_builder import Builder as _StockImagenette

FOLDER = "imagenette2"  # the default (full-size-v2) config's archive folder
ARCHIVE_NAMES = (f"{FOLDER}.tgz", FOLDER)
_SPLIT_FOLDERS = {tfds.Split.TRAIN: "train", tfds.Split.VALIDATION: "val"}


def find_archive(manual_dir: str | Path) -> Path | None:
    for name in ARCHIVE_NAMES:
        if (Path(manual_dir) / name).exists():
            return Path(manual_dir) / name
    return None


def _examples_from_folder(split_dir: Path) -> Iterator[tuple[str, dict]]:
    for path in sorted(split_dir.glob("*/*.JPEG")):
        yield path.name, {"image": path.read_bytes(), "label": path.parent.name}


def _examples_from_tar(archive: Path, split_folder: str) -> Iterator[tuple[str, dict]]:
    with tarfile.open(archive) as tar:  # sequential: random access into a .tgz re-decompresses from the start
        for member in tar:
            parts = PurePosixPath(member.name).parts
            # imagenette2/<split>/<wordnet id>/<file>.JPEG
            if member.isfile() and len(parts) == 4 and parts[1] == split_folder and parts[3].endswith(".JPEG"):
                yield parts[3], {"image": tar.extractfile(member).read(), "label": parts[2]}


class ImagenetteArchive(_StockImagenette, skip_registration=True):
    name = "imagenette"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put {ARCHIVE_NAMES[0]} (https://s3.amazonaws.com/fast-ai-imageclas/{ARCHIVE_NAMES[0]}) or its extracted "
        f"{FOLDER}/ folder in manual_dir.")

    # tfds reads a builder's README and citation from its module's folder: here, the stock builder's.
    pkg_dir_path = epath.Path(inspect.getfile(_StockImagenette)).parent

    # See cifar_archive.Cifar10Archive.code_path: tfds cannot locate a builder mapped from another folder.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _split_generators(self, dl_manager):
        if self.builder_config.dirname != FOLDER:
            raise ValueError(f"Only the default {FOLDER} (full-size-v2) config is prepared from manual_dir.")
        archive = find_archive(dl_manager.manual_dir)
        if archive is None:
            raise FileNotFoundError(f"No Imagenette archive in {dl_manager.manual_dir}. "
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        if archive.is_dir():
            return {split: _examples_from_folder(archive / folder) for split, folder in _SPLIT_FOLDERS.items()}
        return {split: _examples_from_tar(archive, folder) for split, folder in _SPLIT_FOLDERS.items()}


def prepare(*, data_dir: str | None, manual_dir: str) -> None:
    """Writes ``data_dir/imagenette/full-size-v2/1.0.0`` in array_record format from ``manual_dir``."""
    builder = ImagenetteArchive(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
