"""Cards: the JSON files that say what a set of weights is and what input it expects.

Three places hold one:
- a ``fusionjax-convert`` directory: ``card.json`` beside ``variables/`` (``CONVERTED_CARD``);
- a ``fusionjax-train`` workdir: ``dataset.json`` beside ``config.json`` (``WORKDIR_CARD``): the data the run
  trained on, resolved once: class names in label order, images per class and split, the input normalization;
- an exported artifact ``FILE``: ``FILE.card.json`` (``EXPORT_CARD_SUFFIX``).

Every card's ``normalization`` has one format: ``{"channel_order": "RGB" | "BGR" | "grayscale", "pixel_max",
"mean", "std"}``, meaning ``x / pixel_max`` then ``(x - mean) / std`` per channel, channels in ``channel_order``.
Cards are written whole or not at all (a temporary file renamed into place).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

CONVERTED_CARD = "card.json"
WORKDIR_CARD = "dataset.json"
EXPORT_CARD_SUFFIX = ".card.json"
NORMALIZATION_KEYS = ("channel_order", "pixel_max", "mean", "std")


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
