"""The user's own images in torchvision's ImageFolder layout: ``--config.dataset=folder:PATH``.

``PATH/train/<class>/…`` with ``PATH/val/<class>/…`` (or ``validation/``, or any subfolder ``config.eval_split``
names), or one folder ``PATH/<class>/…`` that ``config.eval_split`` (a fraction: ``0.2`` or ``20%``) splits,
stratified by class with the fixed ``SPLIT_SEED``. Classes, files and their order are torchvision's: class folders
sorted by name, files found by a sorted ``os.walk`` and kept where the extension is one of ``IMG_EXTENSIONS``.

At start-up every file's header is read (format and size), so an unreadable file is named before anything
compiles; with ``config.skip_bad_images`` every image is decoded whole instead, and the bad ones are left out and
listed. Images are converted to the model's channels as torchvision's loader does (``PIL.Image.convert``);
JPEGs are decoded at the reduced scale their crop allows (``decode``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fusionjax.train.data.decode import PIL_ERRORS as _PIL_ERRORS, JpegFile, open_image
from fusionjax.train.errors import ConfigError, DataError, DataNotFoundError

# torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively as torchvision matches them.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
EVAL_FOLDERS = ("val", "validation")  # looked for, in this order, when config.eval_split is unset
SPLIT_SEED = 0  # a fraction split is the same for every config.seed, so runs with different seeds compare
_CHECK_THREADS = 8  # header reads wait on the disk, not the GIL
PIL_MODES = {1: "L", 3: "RGB"}
# The bands of PIL's gray modes ("1", "L", "LA", "I", "I;16", "F"), alpha aside; a palette ("P") may hold colours.
_GRAY_BANDS = ({"1"}, {"L"}, {"I"}, {"F"})


@dataclasses.dataclass(frozen=True)
class FileList:
    """A split's image files (relative to the data set's folder) and their labels, in torchvision's order."""

    name: str
    files: tuple[str, ...]
    labels: tuple[int, ...]


def find_classes(directory: Path) -> list[str]:
    """torchvision's ``find_classes``: the names of the subfolders, sorted (hidden ones included, as there)."""
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def _image_files(directory: Path) -> list[str]:
    """torchvision's ``make_dataset`` walk of one class folder: sorted, recursive, following links."""
    return [os.path.join(root, name) for root, _, names in sorted(os.walk(directory, followlinks=True))
            for name in sorted(names) if name.lower().endswith(IMG_EXTENSIONS)]


def parse_fraction(split: str) -> float | None:
    """``'0.2'`` or ``'20%'`` → 0.2; None where ``split`` names a folder."""
    match = re.fullmatch(r"\s*(\d*\.?\d+)\s*(%?)\s*", str(split))
    if not match:
        return None
    fraction = float(match[1]) / (100 if match[2] else 1)
    if not 0 < fraction < 1:
        raise ConfigError(f"config.eval_split={split!r} must be a fraction in (0, 1) such as 0.2, or a percentage "
                          "such as 20%, of the training images to hold out.")
    return fraction


def scan(root: Path, folder: str, classes: list[str] | None = None) -> FileList:
    """The images under ``root/folder`` (``folder`` '' for ``root`` itself), labelled by ``classes`` (default: the
    folder's own classes)."""
    directory = root / folder
    if not directory.is_dir():
        raise ConfigError(f"{directory} does not exist: set config.train_split and config.eval_split to subfolders of "
                          f"{root} (or config.eval_split to a fraction such as 0.2).")
    found = find_classes(directory)
    if not found:
        raise DataNotFoundError(f"{directory} has no class folders: put each class's images in "
                                f"{directory}/<class name>/ (torchvision's ImageFolder layout).")
    classes = found if classes is None else classes
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{directory} has class folders that the training images lack: {', '.join(unknown)}; the "
                        f"classes are those of {root / 'train'}: {', '.join(classes)}. Add training images for "
                        "them or remove those folders.")
    files, labels = [], []
    for name in found:
        class_files = _image_files(directory / name)
        if not class_files:
            raise DataError(f"The class folder {directory / name} holds no image files ({', '.join(IMG_EXTENSIONS)}"
                            "); add images or remove the folder.")
        files += [os.path.relpath(path, root) for path in class_files]
        labels += [classes.index(name)] * len(class_files)
    return FileList(folder or "all", tuple(files), tuple(labels))


def split_off(files: FileList, fraction: float, name: str) -> tuple[FileList, FileList]:
    """(kept, held out): ``fraction`` of each class's images (rounded, at least one kept for training), drawn with
    ``SPLIT_SEED``; both keep torchvision's order."""
    labels = np.asarray(files.labels)
    held_out = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(int(np.floor(fraction * len(members) + 0.5)), len(members) - 1)  # halves round up
        held_out[np.random.default_rng((SPLIT_SEED, int(label))).permutation(members)[:count]] = True

    def subset(mask, split_name):
        return FileList(split_name, tuple(np.asarray(files.files)[mask].tolist()), tuple(labels[mask].tolist()))

    return subset(~held_out, files.name), subset(held_out, name)


def check_images(root: Path, files: FileList,
                 decode: bool) -> tuple[FileList, list[str], set[tuple[int, int]], bool]:
    """Reads every image's header (``decode``: the whole image). Returns the readable files, the unreadable ones'
    paths, the (height, width) sizes seen, and whether every readable image is grayscale."""
    from PIL import Image

    def check(relative: str):
        try:
            with Image.open(root / relative) as image:
                if decode:
                    image.load()
                return image.size[::-1], set(image.getbands()) - {"A"} in _GRAY_BANDS
        except _PIL_ERRORS:
            return None

    with ThreadPoolExecutor(_CHECK_THREADS) as pool:
        found = list(pool.map(check, files.files))
    good = [i for i, result in enumerate(found) if result is not None]
    bad = [str(root / files.files[i]) for i, result in enumerate(found) if result is None]
    kept = FileList(files.name, tuple(files.files[i] for i in good), tuple(files.labels[i] for i in good))
    return kept, bad, {found[i][0] for i in good}, all(found[i][1] for i in good)


class FolderSource:
    """Random access to a split's image files, decoded with PIL and converted to ``channels``."""

    def __init__(self, root: Path, files: FileList, channels: int):
        self.root, self.files, self.mode = Path(root), files, PIL_MODES[channels]
        self.labels = np.asarray(files.labels, np.int64)

    def __len__(self) -> int:
        return len(self.files.files)

    def read(self, indices: np.ndarray) -> tuple[list[np.ndarray | JpegFile], np.ndarray]:
        """The images' pixels, JPEGs left to the transform to decode at the scale their crop needs."""
        return [open_image(self.root / self.files.files[i], self.mode) for i in indices], self.labels[indices]


@dataclasses.dataclass(frozen=True)
class Folder:
    """A folder data set resolved: its classes and both splits' readable files, and what was found unreadable."""

    root: Path
    classes: tuple[str, ...]
    train: FileList
    eval: FileList
    skipped: tuple[str, ...]
    sizes: frozenset[tuple[int, int]]  # the (height, width) of the images
    grayscale: bool  # every image is grayscale


def resolve(path: str, train_split: str, eval_split: str | None, *, stored: dict | None = None,
            skip_bad_images: bool = False) -> Folder:
    """Finds the classes and the two splits of ``folder:path`` (or takes ``stored`` file lists: a run's own) and
    checks every image."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"folder:{path}: no such directory. Point --config.dataset=folder:PATH at a folder "
                                "of class folders (PATH/<class>/...) or of train/ and val/ class folders.")
    if stored is not None:
        classes = list(stored["classes"])
        train, held_out = (FileList(stored[role]["name"], tuple(stored[role]["files"]), tuple(stored[role]["labels"]))
                           for role in ("train", "eval"))
        evaluated = {held_out.name: held_out, train.name: train}.get(eval_split or held_out.name)
        if evaluated is None and eval_split and parse_fraction(eval_split) is None:
            evaluated = dataclasses.replace(scan(root, eval_split, classes), name=eval_split)
        if evaluated is None:  # another fraction would take other images out of the run's training split
            raise ConfigError(f"This run of folder:{path} holds out {held_out.name} of its images for evaluation, "
                              f"not {eval_split}; leave config.eval_split at {held_out.name}, or name a folder.")
        return _checked(root, classes, train, evaluated, skip_bad_images)
    split_folders = (root / train_split).is_dir()
    classes = find_classes(root / train_split if split_folders else root)
    train = scan(root, train_split if split_folders else "", classes)
    train = dataclasses.replace(train, name=train_split)
    fraction = parse_fraction(eval_split) if eval_split else None
    if fraction is not None:
        train, held_out = split_off(train, fraction, eval_split)
    elif eval_split == train_split:
        held_out = train
    elif split_folders:
        eval_folder = eval_split or next((name for name in EVAL_FOLDERS if (root / name).is_dir()), None)
        if eval_folder is None or not (root / eval_folder).is_dir():
            missing = f"no {root / eval_split}" if eval_split else f"no {' or '.join(EVAL_FOLDERS)} folder"
            raise ConfigError(f"folder:{path} has {train_split}/ but {missing}: add one with the same class folders, "
                              "or set --config.eval_split to a subfolder, or to a fraction of the training images "
                              "to hold out (--config.eval_split=0.2).")
        held_out = scan(root, eval_folder, classes)
    else:
        raise ConfigError(f"folder:{path} holds class folders but no {train_split}/ folder: set "
                          "--config.eval_split=0.2 (or 20%) to hold out that fraction of each class for evaluation, "
                          "or split the images into train/ and val/ class folders.")
    return _checked(root, classes, train, held_out, skip_bad_images)


def _checked(root: Path, classes: list[str], train: FileList, held_out: FileList, skip_bad_images: bool) -> Folder:
    checked = {name: check_images(root, files, decode=skip_bad_images) for name, files in
               (("train", train), ("eval", held_out))}
    bad = sorted({path for _, paths, _, _ in checked.values() for path in paths})
    if bad and not skip_bad_images:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise DataError(f"{len(bad)} image file(s) cannot be read: {shown}. Replace or delete them, or set "
                        "--config.skip_bad_images=True to leave them out (they are then listed in the workdir's "
                        "dataset.json).")
    (train, _, train_sizes, train_gray), (held_out, _, eval_sizes, eval_gray) = checked["train"], checked["eval"]
    for files in (train, held_out):
        if not files.files:
            raise DataError(f"The {files.name!r} split of {root} holds no readable images.")
    return Folder(root, tuple(classes), train, held_out, tuple(bad), frozenset(train_sizes | eval_sizes),
                  train_gray and eval_gray)
