"""Cards: the JSON files that say what a set of weights is and what input it expects.

Three places hold one:
- a ``fusionjax-convert`` directory: ``card.json`` beside ``variables/`` (``CONVERTED_CARD``);
- a ``fusionjax-train`` workdir: ``dataset.json`` beside ``config.json`` (``WORKDIR_CARD``): the data the run
  trained on, resolved once: class names in label order, images per class and split, the input normalization;
- an exported artifact ``FILE``: ``FILE.card.json`` (``EXPORT_CARD_SUFFIX``).

Every card's ``normalization`` has one format: ``{"channel_order": "RGB" | "BGR" | "grayscale", "pixel_max",
"mean", "std"}``, meaning ``x / pixel_max`` then ``(x - mean) / std`` per channel, channels in ``channel_order``.
Its ``eval_resize`` says how the weights' own evaluation brought an image to the input's size × size:
``{"method": "resize_shorter_crop", "crop_fraction": f}`` resizes the shorter side to ``int(size / f)`` (bilinear,
antialiased) and takes the centre square, as torchvision's Resize + CenterCrop; ``{"method": "resize"}`` resizes
to size × size, which leaves a fixed-size data set's own images (digits, CIFAR) as they are.
Cards are written whole or not at all (a temporary file renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

CONVERTED_CARD = "card.json"
WORKDIR_CARD = "dataset.json"
EXPORT_CARD_SUFFIX = ".card.json"
NORMALIZATION_KEYS = ("channel_order", "pixel_max", "mean", "std")
RESIZE_SHORTER_CROP = "resize_shorter_crop"
RESIZE = "resize"


def write_json(path: str | os.PathLike, content: Mapping[str, Any]) -> Path:
    """Write ``content`` as JSON to ``path`` atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    partial = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with open(partial, "w") as file:
            file.write(json.dumps(content, indent=2) + "\n")
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def resize_shorter_crop(crop_fraction: float) -> dict:
    """The ``eval_resize`` of weights evaluated on the centre ``crop_fraction`` of the resized image."""
    return {"method": RESIZE_SHORTER_CROP, "crop_fraction": crop_fraction}


def shorter_side(size: int, eval_resize: dict) -> int:
    """The shorter side a ``resize_shorter_crop`` brings an image to before its centre ``size`` square."""
    # Rounded first: fractions such as 224 / 232 give 231.99999999999997, and the sizes are whole numbers.
    return int(round(size / eval_resize["crop_fraction"], 6))


def read_json(path: str | os.PathLike) -> dict:
    """A card's content; a missing or unreadable card raises ``FileNotFoundError`` / ``ValueError`` naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); it is damaged: restore or rewrite it.") from None


def export_card_path(artifact: str | os.PathLike) -> Path:
    """The card beside an exported artifact ``FILE``: ``FILE.card.json``."""
    return Path(str(artifact) + EXPORT_CARD_SUFFIX)


def tree_sha256(path: str | os.PathLike) -> str:
    """SHA-256 over a file, or over a directory's files (relative names and contents, in sorted order): the
    ``sha256`` a card records of the weights it describes."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
