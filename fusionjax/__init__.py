"""fusionjax: residual (add) and dense (concat) feature fusion for JAX/Flax.

Importing fusionjax loads JAX and Flax only; torch, torchvision and TensorFlow load lazily where used.
"""

from fusionjax import blocks, fusion, layers
from fusionjax.models import ModelSpec, UnknownModelError, create_model, get_model_spec, list_models

__version__ = "0.1.0"

__all__ = [
    "ModelSpec", "UnknownModelError", "blocks", "create_model", "fusion", "get_model_spec", "layers", "list_models",
    "load_pretrained",
]


def __getattr__(name: str):
    # Loaded on first use so that `import fusionjax` does not pull in the converter's dependencies.
    if name == "load_pretrained":
        from fusionjax.convert import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'fusionjax' has no attribute {name!r}")
