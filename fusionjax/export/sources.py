"""What ``fusionjax-export`` reads: a training workdir (``fusionjax-train``) or a converted checkpoint
(``fusionjax-convert``), loaded by ``fusionjax.sources``, plus a workdir's own images for int8 calibration and
evaluation.

The data pipeline is imported here, on use only: the export library itself never needs it.
"""

import dataclasses
from typing import Callable

import numpy as np

from fusionjax import sources
from fusionjax.export.errors import ExportError, NoCheckpointError


@dataclasses.dataclass(frozen=True)
class Source:
    model: object
    variables: dict
    architecture: str
    image_shape: tuple[int, int, int]  # (height, width, channels) the model was trained or converted at
    normalization: dict | None  # {"channel_order", "pixel_max", "mean", "std"}: image / pixel_max, then (x − mean) / std
    eval_resize: dict | None  # how the weights' evaluation sized an image (fusionjax.cards's format)
    classes: list[str]  # class names in label order (a class's index where the source names none)
    origin: dict  # kind, path, step, sha256
    calibration_images: Callable[[int], np.ndarray] | None  # n -> n preprocessed training images (NHWC)
    evaluation_batches: Callable[[], object] | None  # -> iterable of {"image", "label", "mask"} on the eval split


def load(directory: str, checkpoint: str = "latest") -> Source:
    """The model in ``directory``: a workdir at ``checkpoint`` (latest, best or a step), or a converted checkpoint."""
    spec = directory if checkpoint == "latest" else f"{directory}@{checkpoint}"
    try:
        weights = sources.load(spec)
    except sources.SourceError as error:
        raise NoCheckpointError(str(error)) from None
    if weights.kind not in ("workdir", "converted"):
        raise ExportError(f"{directory} holds {weights.kind} weights, not a training workdir or a converted "
                          "checkpoint; export a fusionjax-train --workdir or a fusionjax-convert --out.")
    calibration_images, evaluation_batches = _workdir_images(weights) if weights.kind == "workdir" else (None, None)
    return Source(
        model=weights.model(), variables=weights.variables, architecture=weights.arch, image_shape=weights.image_shape,
        normalization=weights.normalization, eval_resize=weights.eval_resize,
        classes=[weights.class_name(label) for label in range(weights.num_classes)], origin=weights.origin,
        calibration_images=calibration_images, evaluation_batches=evaluation_batches)


def _workdir_images(weights: sources.Source):
    """The run's training images for calibration, and its evaluation batches: its data as the run described it
    (``dataset.json``: the normalization it trained with), opened only when first used."""
    import json
    from pathlib import Path

    import ml_collections

    from fusionjax.train import data
    from fusionjax.train.errors import UserError

    path = Path(weights.origin["path"])
    config = ml_collections.ConfigDict(json.loads((path / sources.WORKDIR_CONFIG).read_text()))

    def described(split: str):
        try:
            description = data.describe(config, workdir=path)
        except UserError as error:
            raise ExportError(str(error)) from None
        # eval_batches makes one ordered, unaugmented pass over a description's eval split.
        return description if split == "eval" else dataclasses.replace(description, eval=description.train)

    def calibration_images(count: int) -> np.ndarray:
        batch = next(iter(data.eval_batches(described("train"), global_batch_size=count)))
        return batch["image"][batch["mask"] > 0]

    return calibration_images, lambda: data.eval_batches(described("eval"), global_batch_size=config.eval_batch_size)
