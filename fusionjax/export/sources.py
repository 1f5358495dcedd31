"""What ``fusionjax-export`` reads: a training workdir (``fusionjax-train``) or a converted checkpoint
(``fusionjax-convert``), as a model, its variables, and what the card says about them.

The trainer and its data pipeline are imported here, on use only: the export library itself never needs them.
"""

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from fusionjax.export import artifact
from fusionjax.export.errors import ExportError, NoCheckpointError

WORKDIR_CONFIG = "config.json"
CONVERTED_CARD = "card.json"


@dataclasses.dataclass(frozen=True)
class Source:
    model: object
    variables: dict
    architecture: str
    image_shape: tuple[int, int, int]  # (height, width, channels) the model was trained or converted at
    normalization: dict | None  # {"channel_order", "pixel_max", "mean", "std"}: image / pixel_max, then (x − mean) / std
    classes: list[str] | int
    origin: dict  # path, checkpoint, sha256
    calibration_images: Callable[[int], np.ndarray] | None  # n -> n preprocessed training images (NHWC)
    evaluation_batches: Callable[[], object] | None  # -> iterable of {"image", "label", "mask"} on the eval split


def load(directory: str, checkpoint: str = "latest") -> Source:
    """The model in ``directory``: a workdir (``config.json``) at ``checkpoint``, or a converted checkpoint."""
    path = Path(directory)
    if (path / WORKDIR_CONFIG).is_file():
        return _from_workdir(path, checkpoint)
    if (path / CONVERTED_CARD).is_file():
        if checkpoint != "latest":
            raise ExportError(f"{path} is a converted checkpoint: it holds one set of weights, so --checkpoint "
                              f"{checkpoint} does not apply. Leave --checkpoint out.")
        return _from_converted(path)
    raise NoCheckpointError(
        f"{path} is neither a training workdir (no {WORKDIR_CONFIG}) nor a converted checkpoint (no "
        f"{CONVERTED_CARD}). Pass the --workdir of a fusionjax-train run or the --out of fusionjax-convert."
    )


def _from_workdir(path: Path, checkpoint: str) -> Source:
    from fusionjax.train import trainer, workdir
    from fusionjax.train.data import catalog, eval_batches
    from fusionjax.train.errors import RunNotFoundError, UserError

    try:
        config = workdir.load_workdir_config(path)
        setup = trainer.make_setup(config, training=False)
        if not (path / workdir.CHECKPOINT_DIR).is_dir():
            raise RunNotFoundError(f"{path} has no checkpoints yet ({workdir.CHECKPOINT_DIR}/ is missing).")
        manager = workdir.checkpoint_manager(path, config, read_only=True)
        try:
            step = workdir.find_checkpoint(manager, checkpoint)
            state = workdir.restore_checkpoint(manager, step, trainer.abstract_state(setup))
        finally:
            manager.close()
    except RunNotFoundError as error:
        raise NoCheckpointError(f"{error} Train first (fusionjax-train --workdir {path}), or pick a kept step "
                                "with --checkpoint.") from None
    except UserError as error:
        raise ExportError(str(error)) from None
    _, spec = catalog.dataset_spec(config)

    def data_config(split: str):
        config_for_split = config.copy_and_resolve_references()
        config_for_split.eval_split = split
        return config_for_split

    def calibration_images(count: int) -> np.ndarray:
        batch = next(iter(eval_batches(data_config(catalog.train_split(config)), global_batch_size=count)))
        return batch["image"][batch["mask"] > 0]

    return Source(
        model=setup.model, variables=state.variables(), architecture=config.model,
        image_shape=tuple(setup.info.image_shape),
        normalization={"channel_order": "RGB" if setup.info.image_shape[-1] == 3 else "grayscale",
                       "pixel_max": spec.pixel_max, "mean": list(spec.mean),
                       "std": list(spec.std)},
        classes=setup.info.num_classes,
        origin={"kind": "fusionjax-train workdir", "path": str(path.absolute()), "dataset": config.dataset,
                "step": int(step), "sha256": artifact.tree_sha256(path / workdir.CHECKPOINT_DIR / str(step))},
        calibration_images=calibration_images,
        evaluation_batches=lambda: eval_batches(data_config(catalog.eval_split(config, spec)),
                                                global_batch_size=config.eval_batch_size),
    )


def _from_converted(path: Path) -> Source:
    import fusionjax
    from fusionjax.models.registry import get_model_spec

    card = json.loads((path / CONVERTED_CARD).read_text())
    model, variables = fusionjax.load_pretrained(path)
    size = get_model_spec(card["arch"]).input_size
    return Source(
        model=model, variables=variables, architecture=card["arch"],
        image_shape=(size, size, model.in_channels), normalization=card.get("normalization") or _imagenet(card),
        classes=card.get("num_classes", model.num_classes),
        origin={"kind": "fusionjax-convert checkpoint", "path": str(path.absolute()),
                "converted_from": card.get("source"), "source_sha256": card.get("sha256"),
                "sha256": artifact.tree_sha256(path)},
        calibration_images=None, evaluation_batches=None,
    )


def _imagenet(card: dict) -> dict | None:
    """Cards written before converted checkpoints recorded their normalization: torchvision's pretrained weights
    (their card names the weights enum) expect ImageNet's."""
    from fusionjax.convert.frameworks import IMAGENET

    return IMAGENET if card.get("weights") else None
