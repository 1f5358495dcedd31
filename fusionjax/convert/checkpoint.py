"""Converted checkpoints on disk: an Orbax checkpoint of the variables and a ``card.json`` describing them.

A directory appears complete or not at all: everything is written into a hidden sibling and renamed at the end,
so a failed conversion leaves nothing behind and never touches what was there before.
"""

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Mapping

import flax.linen as nn

from fusionjax.convert import mapping

CARD = "card.json"
VARIABLES = "variables"


def write_converted(
    out: str | os.PathLike, arch: str, variables: Mapping, card: Mapping, *, force: bool = False
) -> Path:
    """Write ``variables`` (Orbax, ``StandardCheckpointer``) and ``card`` into ``out``, all or nothing.

    An existing non-empty ``out`` is refused unless ``force``; then it is replaced only once the new one is
    complete.
    """
    import orbax.checkpoint as ocp

    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out, or pass --force to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    previous = out.parent / f".{out.name}.previous-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(staging / VARIABLES, dict(variables))
        checkpointer.wait_until_finished()
        checkpointer.close()
        (staging / CARD).write_text(json.dumps({"arch": arch, **card}, indent=2) + "\n")
        if out.is_dir() and any(out.iterdir()):
            out.rename(previous)
        elif out.is_dir():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if previous.exists() and not out.exists():
            previous.rename(out)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return out


def read_card(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CARD
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a converted checkpoint: it has no {CARD}. Write one with "
            "`fusionjax-convert [--from SOURCE] ARCH FILE --out DIR`."
        )
    return json.loads(path.read_text())


def load_pretrained(directory: str | os.PathLike, *, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """``(model, variables)`` from a directory written by ``fusionjax-convert`` (or the pretrained cache).

    ``model`` defaults to ``create_model(card['arch'], num_classes=card['num_classes'])``; pass one to load the
    same variables into, e.g., a bfloat16 model.
    """
    import orbax.checkpoint as ocp

    from fusionjax.models.registry import create_model

    card = read_card(directory)
    if model is None:
        model = create_model(card["arch"], num_classes=card["num_classes"])
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(Path(directory).absolute() / VARIABLES)
    mapping.check_variables(card["arch"], variables, model)
    return model, {collection: variables[collection] for collection in ("params", "batch_stats")}
