"""From a trained model to a deployed artifact: StableHLO (``jax.export``) and ONNX, verified, optionally int8.

- ``to_stablehlo(model, variables, input_shape)``: a ``jax.export.Exported`` (dynamic batch, any platforms) that a
  process with only jax installed reloads (``load_stablehlo``) and runs.
- ``to_onnx(model, variables, input_shape)``: an ``onnx.ModelProto`` for onnxruntime and TensorRT, written by this
  package's own exact writer (``onnx_ops``); ``runner(proto)`` runs it in onnxruntime.
- ``int8_apply(module, variables, calibration_inputs)`` and ``quantize_onnx(proto, calibration_inputs)``:
  post-training int8 (weights per channel, activations per tensor) of the JAX model and of the ONNX file.
- ``fusionjax-export DIR --format stablehlo|onnx --out FILE`` (``export_directory``): a training workdir or a
  converted checkpoint, exported, verified and written with its card. docs/export.md.

onnx and onnxruntime (the ``export`` extra) load only when an ONNX function is first used.
"""

from fusionjax.export.cli import export_directory, main
from fusionjax.export.errors import (
    ExportError,
    ImageSizeError,
    NoCheckpointError,
    UnsupportedOperationError,
    VerificationError,
)
from fusionjax.export.quantize import int8_apply, quantize_onnx
from fusionjax.export.stablehlo import export_function, load_stablehlo, to_stablehlo

_ONNX = {"to_onnx": "fusionjax.export.onnx", "runner": "fusionjax.export.onnx"}

__all__ = ["ExportError", "ImageSizeError", "NoCheckpointError", "UnsupportedOperationError", "VerificationError",
           "export_directory", "export_function", "int8_apply", "load_stablehlo", "main", "quantize_onnx", "runner",
           "to_onnx", "to_stablehlo"]


def __getattr__(name: str):
    if name in _ONNX:
        import importlib

        return getattr(importlib.import_module(_ONNX[name]), name)
    raise AttributeError(f"module 'fusionjax.export' has no attribute {name!r}")
