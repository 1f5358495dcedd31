"""What every exported artifact shares: the input it takes, the parity check, the card beside it, the atomic write.

An artifact ``FILE`` is written with its card ``FILE.card.json`` (architecture, input shape and layout,
normalization, classes, source checkpoint hash, versions) into hidden temporary files that are renamed into place
only once both are complete: a failed export leaves nothing behind and never replaces what was there.
"""

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from fusionjax.cards import export_card_path as card_path
from fusionjax.export import program
from fusionjax.export.errors import ExportError, ImageSizeError, VerificationError

FLOAT32_TOLERANCE = 1e-5  # max |artifact − model| / max |model|: float32 reorderings stay near 1e-6
BATCH_AXIS_NAME = "batch"


def input_spec(input_shape: Sequence[int], batch: int | None, *, nchw: bool = False) -> jax.ShapeDtypeStruct:
    """The float32 input of one batch of images ``input_shape`` (H, W, C); ``batch=None`` is a dynamic batch."""
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ImageSizeError(f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}.")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch must be a positive int, or None for a dynamic batch; got {batch!r}.")
    (size,) = jax_export.symbolic_shape(BATCH_AXIS_NAME) if batch is None else (batch,)
    height, width, channels = input_shape
    shape = (size, channels, height, width) if nchw else (size, height, width, channels)
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def image_function(model, variables, *, nchw: bool = False, **apply_kwargs) -> Callable:
    """``images -> model.apply(variables, images, **apply_kwargs)``, images NCHW when ``nchw``."""

    def forward(images):
        if nchw:
            images = jnp.transpose(images, (0, 2, 3, 1))
        return model.apply(variables, images, **apply_kwargs)

    return forward


def check_takes(fn: Callable, spec: jax.ShapeDtypeStruct, what: str) -> None:
    """Raise ImageSizeError unless ``fn`` accepts ``spec`` and no layer's output is empty."""
    try:
        closed = program.trace(fn, jax.ShapeDtypeStruct((1, *spec.shape[1:]), spec.dtype))
    except (ValueError, TypeError) as error:
        raise ImageSizeError(f"{what} cannot take input of shape {tuple(spec.shape)}: {error}") from None
    empty = program.empty_shapes(closed)
    if empty:
        raise ImageSizeError(f"{what}: images of shape {tuple(spec.shape[1:])} are too small, a layer's output "
                             f"would be empty ({empty[0]}). Use larger images.")


def sample_images(spec: jax.ShapeDtypeStruct, batch: int, seed: int = 0) -> np.ndarray:
    """Normal(0, 1) images in the artifact's input layout: the scale of normalized inputs."""
    return np.random.default_rng(seed).standard_normal((batch, *spec.shape[1:]), np.float32)


def relative_error(actual, expected) -> float:
    """max |actual − expected| / max |expected| over every output."""
    actual, expected = jax.tree.leaves(actual), jax.tree.leaves(expected)
    worst = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64))))
                for a, e in zip(actual, expected, strict=True))
    scale = max(float(np.max(np.abs(np.asarray(e, np.float64)))) for e in expected)
    return worst / max(scale, np.finfo(np.float32).tiny)


def check_parity(run: Callable, reference: Callable, spec: jax.ShapeDtypeStruct, what: str,
                 tolerance: float = FLOAT32_TOLERANCE) -> dict[str, Any]:
    """Compare ``run`` (the artifact) with ``reference`` (the model) on random images at two batch sizes (one the
    fixed batch, if any); raise VerificationError above ``tolerance``. Returns the card's ``verification``."""
    batches = [spec.shape[0]] if isinstance(spec.shape[0], int) else [1, 3]
    errors = {}
    for seed, batch in enumerate(batches):
        images = sample_images(spec, batch, seed)
        errors[batch] = relative_error(run(images), reference(images))
    worst = max(errors.values())
    if not worst <= tolerance:
        raise VerificationError(
            f"{what} differs from the model by {worst:.2e} (max |Δ| / max |model|) on random images, above the "
            f"tolerance {tolerance:.0e}; nothing was written. Please report it with the model's name."
        )
    return {"inputs": "normal(0, 1)", "batch_sizes": batches, "relative_error": worst, "tolerance": tolerance}


def make_card(*, artifact_format: str, architecture: str | None, spec: jax.ShapeDtypeStruct, nchw: bool,
              normalization: dict | None = None, eval_resize: dict | None = None,
              classes: Sequence[str] | None = None, source: dict | None = None, **details) -> dict[str, Any]:
    """The card: what a consumer needs to feed the artifact and to know where it came from."""
    import fusionjax

    batch = spec.shape[0] if isinstance(spec.shape[0], int) else None
    return {
        "format": artifact_format,
        "architecture": architecture,
        "input": {"shape": [batch, *spec.shape[1:]], "layout": "NCHW" if nchw else "NHWC", "dtype": "float32",
                  "batch": "dynamic" if batch is None else batch},
        "normalization": normalization,
        "eval_resize": eval_resize,  # how the weights' evaluation sized an image (fusionjax.cards)
        "classes": None if classes is None else list(classes),  # names in label order
        "source": source,
        **details,
        "fusionjax_version": fusionjax.__version__,
        "jax_version": jax.__version__,
    }


def write_artifact(out: str | os.PathLike, payload: bytes, card: dict, *, force: bool = False) -> Path:
    """Write ``payload`` to ``out`` and ``card`` beside it, both complete or neither; refuse to replace an existing
    file unless ``force``."""
    out = Path(out).absolute()
    card_out = card_path(out)
    for path in (out, card_out):
        if path.exists() and (not force or path.is_dir()):
            hint = "it is a directory" if path.is_dir() else "pass --force (force=True) to replace it"
            raise FileExistsError(f"{path} exists; choose another --out, or {hint}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    card_existed = card_out.exists()
    tag = uuid.uuid4().hex[:8]
    staged = [(out.parent / f".{out.name}.partial-{tag}", out, payload),
              (out.parent / f".{card_out.name}.partial-{tag}", card_out, (json.dumps(card, indent=2) + "\n").encode())]
    try:
        for temporary, _, data in staged:
            with open(temporary, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(staged[1][0], card_out)  # the card first: an artifact on disk always has its card
        try:
            os.replace(staged[0][0], out)
        except BaseException:
            if not card_existed:
                card_out.unlink(missing_ok=True)
            raise
    except BaseException:
        for temporary, _, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    return out
