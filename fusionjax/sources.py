"""Where weights come from, read one way for ``init_from``, ``fusionjax-eval``, ``fusionjax-export`` and
``fusionjax-predict``: ``load(spec)`` returns a ``Source`` (architecture, class names, normalization, input shape,
variables) from

- a training workdir ``DIR`` (its latest checkpoint), ``DIR@latest``, ``DIR@best`` (the kept checkpoint with the
  highest evaluation top-1) or ``DIR@STEP``: ``config.json``, the data card ``dataset.json`` and the ``params`` and
  ``batch_stats`` of an Orbax checkpoint, read here without the trainer;
- a ``fusionjax-convert`` directory (``card.json`` beside ``variables/``);
- ``torchvision:NAME[:WEIGHTS]``: torchvision's ImageNet weights through ``fusionjax.pretrained``;
- an exported artifact ``FILE`` with its card ``FILE.card.json`` (StableHLO or ONNX): no variables, run as a file.

Every mistake raises ``SourceError`` naming the problem and the fix in one line.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import flax.linen as nn

from fusionjax import cards
from fusionjax.checkpoints import (all_finite, describe_nonfinite, remnants, unreadable_reason,
                                   without_read_only_notice)

TORCHVISION_PREFIX = "torchvision:"
WORKDIR_CONFIG = "config.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_ITEM = "state"  # the train state's item in each step of a workdir's CheckpointManager
KINDS = ("converted", "workdir", "torchvision", "onnx", "stablehlo")
SPEC_FORMS = ("a training workdir DIR[@latest|@best|@STEP] (config.json), a fusionjax-convert directory (card.json), "
              "torchvision:NAME[:WEIGHTS], or an exported FILE with its FILE.card.json")


class SourceError(ValueError):
    """A source spec names nothing loadable; the message says what it is missing and what to pass instead."""


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # one of KINDS
    arch: str  # zoo name (a workdir: its config.model)
    model_options: dict  # create_model options besides num_classes and dtype (a workdir: config.model_overrides)
    num_classes: int
    classes: list[str] | None  # class names in label order, where known
    normalization: dict | None  # cards' format: x / pixel_max, then (x - mean) / std per channel
    image_shape: tuple[int, int, int] | None  # (H, W, C) the weights were trained or converted at
    eval_resize: dict | None  # how their evaluation sized an image (fusionjax.cards's format), where recorded
    head: str  # top-level params key of the classifier
    variables: dict | None  # {"params", "batch_stats"}; None for exported artifacts
    origin: dict  # kind, path, step, sha256 ...; an artifact's also its card

    def model(self, **options) -> nn.Module:
        """``create_model(arch, num_classes=..., **model_options, **options)``: e.g. ``dtype=jnp.bfloat16``."""
        from fusionjax.models.registry import create_model

        return create_model(self.arch, num_classes=self.num_classes, **{**self.model_options, **options})

    def class_name(self, label: int) -> str:
        """The name of class ``label``: its card's name, else the index itself."""
        return self.classes[label] if self.classes else str(label)


def load(spec: str | os.PathLike) -> Source:
    """The weights ``spec`` names (see the module's docstring); ``SourceError`` when it names none."""
    spec = str(spec)
    if spec.startswith(TORCHVISION_PREFIX):
        return _from_torchvision(spec)
    path, selector = Path(spec), None
    if not path.exists() and "@" in spec:
        directory, _, selector = spec.rpartition("@")
        path = Path(directory)
    if not path.exists():
        raise SourceError(f"{path} does not exist; pass {SPEC_FORMS}.")
    if (path / WORKDIR_CONFIG).is_file():
        return _from_workdir(path, selector or "latest")
    if selector is not None:
        raise SourceError(f"{spec}: @{selector} picks a checkpoint of a training workdir, and {path} is none (it has "
                          f"no {WORKDIR_CONFIG}); leave @{selector} out.")
    if (path / cards.CONVERTED_CARD).is_file():
        return _from_converted(path)
    if path.is_file() and cards.export_card_path(path).is_file():
        return _from_artifact(path)
    raise SourceError(f"{path} is not a source of weights: pass {SPEC_FORMS}.")


def head_of(arch: str) -> str:
    """The top-level params key of ``arch``'s classifier; ``SourceError`` when the zoo has no ``arch``."""
    from fusionjax.models.registry import UnknownModelError, get_model_spec

    try:
        return get_model_spec(arch).head
    except UnknownModelError:
        raise SourceError(f"The weights are a {arch!r}, an architecture this fusionjax's zoo does not have "
                          "(fusionjax.list_models() names those it has); use the fusionjax that made them.") from None


def _read_card(path: Path) -> dict:
    try:
        return cards.read_json(path)
    except (FileNotFoundError, ValueError) as error:
        raise SourceError(str(error)) from None


# ----------------------------------------------------------------------------------------------------------------
# Training workdirs.


def _from_workdir(path: Path, selector: str) -> Source:
    config = _read_card(path / WORKDIR_CONFIG)
    head = head_of(config["model"])
    step, variables = _restore_workdir_checkpoint(path, selector)
    if not (path / cards.WORKDIR_CARD).is_file():
        raise SourceError(f"{path} has no {cards.WORKDIR_CARD} (the data card fusionjax-train writes as a run starts): "
                          "run its fusionjax-train command again to write it (a finished run trains no further).")
    card = _read_card(path / cards.WORKDIR_CARD)
    overrides = {key: tuple(value) if isinstance(value, list) else value  # JSON turned the config's tuples into lists
                 for key, value in config.get("model_overrides", {}).items()}
    return Source(
        kind="workdir", arch=config["model"], model_options=overrides, num_classes=card["num_classes"],
        classes=list(card["classes"]), normalization=card["normalization"], image_shape=tuple(card["image_shape"]),
        eval_resize=card.get("eval_resize"), head=head, variables=variables,
        origin={"kind": "workdir", "path": str(path.absolute()), "dataset": card["dataset"], "step": step,
                "sha256": cards.tree_sha256(path / CHECKPOINT_DIR / str(step))},
    )


def _restore_workdir_checkpoint(path: Path, selector: str) -> tuple[int, dict]:
    """``(step, {"params", "batch_stats"})`` of the checkpoint ``selector`` names, as host NumPy arrays."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    if not (path / CHECKPOINT_DIR).is_dir():
        raise SourceError(f"{path} has no checkpoints yet ({CHECKPOINT_DIR}/ is missing): train it first "
                          f"(fusionjax-train --workdir {path}).")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    with without_read_only_notice(), ocp.CheckpointManager(
            path.absolute() / CHECKPOINT_DIR, options=options,
            item_handlers={CHECKPOINT_ITEM: ocp.PyTreeCheckpointHandler()}) as manager:
        step = _pick_step(path, manager, selector)
        saved = manager.item_metadata(step)[CHECKPOINT_ITEM]
        wanted = {collection: saved[collection] for collection in ("params", "batch_stats")}
        # Host arrays: the checkpoint restores onto any device count, and only params and batch_stats are read.
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        try:
            restored = dict(manager.restore(step, args=ocp.args.Composite(**{CHECKPOINT_ITEM: ocp.args.PyTreeRestore(
                item=wanted, restore_args=restore_args, partial_restore=True)}))[CHECKPOINT_ITEM])
        except Exception as error:  # Orbax raises a bare Exception for what tensorstore reports of a truncated file
            raise SourceError(f"The checkpoint {path / CHECKPOINT_DIR / str(step)} cannot be read "
                              f"({unreadable_reason(error)}); use another step (DIR@STEP).") from None
    if not all_finite(restored):
        raise SourceError(f"The checkpoint {path / CHECKPOINT_DIR / str(step)} holds NaN/Inf values "
                          f"({describe_nonfinite(restored)}): refused; use another step (DIR@STEP).")
    return step, restored


def _pick_step(path: Path, manager, selector: str) -> int:
    # Orbax lists every numbered directory; one that an interrupted deletion left is no checkpoint.
    left = {int(p.name) for p in remnants(path / CHECKPOINT_DIR)}
    kept = sorted(s for s in manager.all_steps() if s not in left)
    if not kept:
        raise SourceError(f"{path} has no checkpoints yet: train it first (fusionjax-train --workdir {path}).")
    if selector == "latest":
        return kept[-1]
    if selector == "best":
        scored = [((manager.metrics(s) or {}).get("top1"), s) for s in kept]
        scored = [(top1, s) for top1, s in scored if top1 is not None]
        if not scored:
            raise SourceError(f"{path}@best: no kept checkpoint was evaluated yet (kept steps: {kept}); use "
                              f"{path}@latest or {path}@STEP.")
        return max(scored)[1]  # the later of a tie
    if not selector.isdigit():
        raise SourceError(f"{path}@{selector}: after @ comes latest, best or a step number; kept steps: {kept}.")
    if int(selector) not in kept:
        raise SourceError(f"{path} has no checkpoint at step {selector}; kept steps: {kept}. Use {path}@STEP with "
                          "one of them, @latest or @best.")
    return int(selector)


# ----------------------------------------------------------------------------------------------------------------
# Converted directories and torchvision's weights.


def _from_converted(path: Path) -> Source:
    from fusionjax.convert import ConversionError, load_pretrained
    from fusionjax.models.registry import get_model_spec

    card = _read_card(path / cards.CONVERTED_CARD)
    if "architecture" in card:  # a timm model outside the zoo, built from the card's description
        raise SourceError(f"{path} holds timm's {card['arch']}, which is not in the zoo: load it in Python with "
                          f"fusionjax.convert.load_pretrained({str(path)!r}).")
    head = head_of(card["arch"])
    try:
        model, variables = load_pretrained(path)
    except ConversionError as error:  # the saved variables do not fit the architecture the card names
        raise SourceError(f"{path}: {error}") from None
    size = get_model_spec(card["arch"]).input_size
    return Source(
        kind="converted", arch=card["arch"], model_options={}, num_classes=model.num_classes,
        classes=card.get("classes"), normalization=card.get("normalization"),
        image_shape=(size, size, model.in_channels), eval_resize=card.get("eval_resize"), head=head,
        variables=variables,
        origin={"kind": "converted", "path": str(path.absolute()), "converted_from": card.get("source"),
                "source_sha256": card.get("sha256"), "sha256": cards.tree_sha256(path)},
    )


def _from_torchvision(spec: str) -> Source:
    from fusionjax.convert import frameworks, hub

    name, _, weights = spec[len(TORCHVISION_PREFIX):].partition(":")
    try:
        model_spec = frameworks.find_spec("torchvision", name)
        model, variables = hub.pretrained(model_spec.name, weights or None)
        entry = hub.torchvision_weights(model_spec.name, weights or None)
    except ValueError as error:  # an unknown architecture or weights, a failed download or hash check
        raise SourceError(f"{spec}: {error}") from None
    described = model_spec.weights_from("torchvision")
    return Source(
        kind="torchvision", arch=model_spec.name, model_options={}, num_classes=model.num_classes,
        classes=list(entry.meta["categories"]), normalization=described.normalization,
        image_shape=(described.input_size, described.input_size, model.in_channels),
        eval_resize=hub.eval_resize(entry), head=model_spec.head,
        variables=variables,
        origin={"kind": "torchvision", "weights": str(entry), "url": entry.url},
    )


# ----------------------------------------------------------------------------------------------------------------
# Exported artifacts.


def _from_artifact(path: Path) -> Source:
    card = _read_card(cards.export_card_path(path))
    kind, layout = card.get("format"), card.get("input", {}).get("layout")
    if kind not in ("onnx", "stablehlo") or layout not in ("NHWC", "NCHW"):
        raise SourceError(f"{cards.export_card_path(path)} is not a fusionjax-export card (format {kind!r}, layout "
                          f"{layout!r}); export the model again with fusionjax-export.")
    shape = card["input"]["shape"][1:]
    height, width, channels = (shape[1], shape[2], shape[0]) if layout == "NCHW" else shape
    classes = card.get("classes")
    names = list(classes) if isinstance(classes, list) else None
    return Source(
        kind=kind, arch=card["architecture"], model_options={},
        num_classes=len(names) if names else int(classes), classes=names,
        normalization=card.get("normalization"), image_shape=(height, width, channels),
        eval_resize=card.get("eval_resize"), head=head_of(card["architecture"]), variables=None,
        origin={"kind": kind, "path": str(path.absolute()), "sha256": cards.tree_sha256(path), "card": card},
    )

