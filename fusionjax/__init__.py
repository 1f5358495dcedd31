"""fusionjax: residual (add) and dense (concat) feature fusion for JAX/Flax.

Importing fusionjax loads JAX and Flax only; the converter (and torch, timm, Keras) and the exporters load on first
use: ``fusionjax.pretrained``, ``fusionjax.load_pretrained``. On import it makes the one process-wide XLA:CPU
choice its CPU kernels are tuned for, if JAX has not started yet (``fusionjax.kernels.cpu_flags``).
"""

from fusionjax.kernels import cpu_flags as _cpu_flags

# XLA:CPU's convolution kernels are chosen once per process, when JAX starts: before that, if it has not yet.
_cpu_flags.prefer_eigen_convolutions()

from fusionjax import blocks, fusion, kernels, layers  # noqa: E402
from fusionjax.models import ModelSpec, UnknownModelError, create_model, get_model_spec, list_models  # noqa: E402

__version__ = "0.1.0"

_LAZY = {"pretrained": "fusionjax.convert", "load_pretrained": "fusionjax.convert"}

__all__ = [
    "ModelSpec", "UnknownModelError", "blocks", "create_model", "fusion", "get_model_spec", "kernels", "layers",
    "list_models", *_LAZY,
]


def __getattr__(name: str):
    # Loaded on first use, so that `import fusionjax` never imports the converter or its dependencies.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fusionjax' has no attribute {name!r}")
