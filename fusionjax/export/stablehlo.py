"""StableHLO through ``jax.export``: one serialized artifact that a process with only jax installed reloads and runs.

The parameters are constants inside the artifact, the batch dimension is symbolic unless fixed, and one artifact
can hold the program for several platforms (``platforms=("cpu", "cuda", "tpu")``): the layer ops stay in the
default ``'auto'`` kernel mode, so each platform compiles its own branch (``fusionjax.kernels``). To run it::

    from jax import export
    exported = export.deserialize(open("model.stablehlo", "rb").read())
    logits = exported.call(images)  # images float32, shaped and laid out as the card says
"""

import os
from pathlib import Path
from typing import Callable, Sequence

import jax
from jax import export as jax_export

from fusionjax.export import artifact
from fusionjax.export.errors import ExportError

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def to_stablehlo(model, variables, input_shape: Sequence[int], *, batch: int | None = None, nchw: bool = False,
                 platforms: Sequence[str] = ("cpu",), **apply_kwargs) -> jax_export.Exported:
    """``model.apply(variables, images, **apply_kwargs)`` exported for ``platforms``.

    ``input_shape`` is one image's (height, width, channels); ``batch=None`` makes the batch dimension symbolic;
    ``nchw=True`` takes (N, C, H, W) images. The model's own ``dtype`` (e.g. bfloat16) is what the artifact
    computes in; its input stays float32.
    """
    spec = artifact.input_spec(input_shape, batch, nchw=nchw)
    forward = artifact.image_function(model, variables, nchw=nchw, **apply_kwargs)
    artifact.check_takes(forward, spec, type(model).__name__)
    return export_function(forward, spec, platforms)


def export_function(fn: Callable, spec: jax.ShapeDtypeStruct, platforms: Sequence[str] = ("cpu",)) -> jax_export.Exported:
    """Any ``images -> outputs`` function (an int8 one from ``quantize.int8_apply``, say) exported for ``platforms``."""
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ExportError(f"platforms must be some of {', '.join(PLATFORMS)}; got {list(platforms)}.")
    return jax_export.export(jax.jit(fn), platforms=tuple(platforms))(spec)


def load_stablehlo(source: str | os.PathLike | bytes) -> jax_export.Exported:
    """An artifact from its file or its bytes; ``.call(images)`` runs it."""
    payload = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    return jax_export.deserialize(bytearray(payload))
