"""The one place that makes torchvision importable next to a CPU build of torch.

torchvision 0.28.0, the only release for torch 2.13.0, is built against CUDA torch: on a CPU build of torch,
``import torchvision`` fails with "operator torchvision::nms does not exist" because its compiled ops do not
load. Its model definitions do not need those ops, only their schemas, which torchvision's Python code
registers fake kernels for at import time. Defining the two schemas first makes the import succeed; calling
``torchvision.ops.nms`` would still fail, and fusionjax never does.
"""

import importlib
import importlib.util
import sys
from pathlib import Path

_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the torch.library registration alive for the life of the process


def import_torchvision():
    """Import and return ``torchvision``; define its missing op schemas first if its compiled ops cannot load."""
    global _library
    if "torchvision" in sys.modules or _library is not None:
        return importlib.import_module("torchvision")
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise ImportError('torchvision is not installed: pip install "fusionjax[torch]"')
    extensions = list(Path(spec.origin).parent.glob("_C*.so")) + list(Path(spec.origin).parent.glob("_C*.pyd"))
    try:
        torch.ops.load_library(str(extensions[0]))  # a build that matches torch registers the real ops
        _library = False
    except (IndexError, OSError, RuntimeError):
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _OP_SCHEMAS.values():
            _library.define(schema)
    return importlib.import_module("torchvision")
