"""Converted checkpoints on disk: an Orbax checkpoint of the variables and a ``card.json`` describing them.

A directory appears complete or not at all: everything is written into a hidden sibling and renamed at the end,
so a failed conversion leaves nothing behind and never touches what was there before.
"""

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Mapping

import flax.linen as nn

from fusionjax import cards, writes
from fusionjax.convert import mapping

CARD = cards.CONVERTED_CARD
VARIABLES = "variables"
SHOWN_ENTRIES = 5  # a refusal names this many of what it found
STAGING_SETTLE_ROUNDS = 5  # removals 0.1 s apart after a failed write (_remove_staging)


def write_converted(
    out: str | os.PathLike, arch: str, variables: Mapping, card: Mapping, *, force: bool = False
) -> Path:
    """Write ``variables`` (Orbax, ``StandardCheckpointer``) and ``card`` into ``out``, all or nothing.

    An existing non-empty ``out`` is refused, and with ``force`` replaced only if it is an earlier output of this
    function (exactly ``card.json`` and ``variables/``), once the new one is complete: never a directory holding
    anything else. A failed write raises ``OSError`` naming ``out`` and the reason (``fusionjax.writes``).
    """
    import orbax.checkpoint as ocp

    out = Path(out).absolute()
    check_replaceable(out, force)
    writes.check_directory_path(out)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    previous = out.parent / f".{out.name}.previous-{uuid.uuid4().hex[:8]}"
    try:
        with writes.writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir()
            with ocp.StandardCheckpointer() as checkpointer:
                checkpointer.save(staging / VARIABLES, dict(variables))
                checkpointer.wait_until_finished()
            cards.write_json(staging / CARD, {"arch": arch, **card})
            if out.is_dir() and any(out.iterdir()):
                out.rename(previous)
            elif out.is_dir():
                out.rmdir()
            staging.rename(out)
    except BaseException:
        _remove_staging(staging)
        if previous.exists() and not out.exists():
            previous.rename(out)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return out


def _remove_staging(staging: Path) -> None:
    """Remove ``staging`` after a failure. TensorStore's writes that were pending when one failed still end over a
    moment, and may create their directories again after a first removal: remove until none comes back."""
    for _ in range(STAGING_SETTLE_ROUNDS):
        shutil.rmtree(staging, ignore_errors=True)
        time.sleep(0.1)
    shutil.rmtree(staging, ignore_errors=True)


def check_replaceable(out: str | os.PathLike, force: bool) -> None:
    """Refuse an ``out`` that is a file, or a non-empty directory other than an earlier output (with ``force``)."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another --out.")
    if not out.is_dir():
        return
    entries = sorted(out.iterdir())
    if not entries:
        return
    if _is_converted(out, entries):
        if not force:
            raise FileExistsError(f"{out} holds an earlier conversion ({CARD}, {VARIABLES}/); choose another "
                                  "--out, or pass --force to replace it.")
        return
    shown = [p.name + ("/" if p.is_dir() else "") for p in entries[:SHOWN_ENTRIES]]
    more = f" and {len(entries) - SHOWN_ENTRIES} more" if len(entries) > SHOWN_ENTRIES else ""
    found = ", ".join(shown) + more
    if not force:
        raise FileExistsError(f"{out} is not empty (it holds {found}); choose a new or empty --out.")
    raise FileExistsError(f"{out} holds {found}: --force replaces only an earlier conversion (exactly {CARD} and "
                          f"{VARIABLES}/), never a directory holding anything else. Choose a new or empty --out.")


def _is_converted(directory: Path, entries: list[Path]) -> bool:
    """What ``write_converted`` leaves: exactly the card file and the variables directory."""
    return ({p.name for p in entries} == {CARD, VARIABLES} and (directory / CARD).is_file()
            and (directory / VARIABLES).is_dir())


def read_card(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CARD
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a converted checkpoint: it has no {CARD}. Write one with "
            "`fusionjax-convert [--from SOURCE] ARCH FILE --out DIR`."
        )
    return cards.read_json(path)


def load_pretrained(directory: str | os.PathLike, *, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """``(model, variables)`` from a directory written by ``fusionjax-convert`` (or the pretrained cache).

    ``model`` defaults to ``create_model(card['arch'], num_classes=card['num_classes'])`` (a timm model the registry
    does not list: the card's ``architecture``, built without timm); pass one to load the same variables into,
    e.g., a bfloat16 model.
    """
    import orbax.checkpoint as ocp

    from fusionjax.models.registry import create_model

    card = read_card(directory)
    if model is None and "architecture" in card:  # a timm model the registry does not list
        from fusionjax.convert.timm_architecture import model_from_architecture

        model = model_from_architecture(card["architecture"], card["num_classes"])
    if model is None:
        model = create_model(card["arch"], num_classes=card["num_classes"])
    with ocp.StandardCheckpointer() as checkpointer:
        variables = checkpointer.restore(Path(directory).absolute() / VARIABLES)
    mapping.check_variables(card["arch"], variables, model)
    return model, {collection: variables[collection] for collection in ("params", "batch_stats")}
