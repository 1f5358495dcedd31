"""torchvision checkpoints in, exact outputs out.

- ``from_torchvision(arch, source)``: a torchvision state_dict, ``.pth``/``.pt`` or ``.safetensors`` file → the
  fusionjax variables ``{'params', 'batch_stats'}``; ``to_torchvision(arch, variables)`` goes back.
- ``compare(arch, torch_model, variables, images)``: both frameworks side by side, error per stage.
- ``fusionjax-convert ARCH CHECKPOINT --out DIR [--verify]`` (``main``) writes an Orbax checkpoint and a
  ``card.json``; ``load_pretrained(DIR)`` reads it back; ``pretrained(arch)`` returns
  ``(model, variables)`` with torchvision's ImageNet weights, cached under ``$FUSIONJAX_CACHE``.

torch and torchvision are imported only inside the functions that need them.
"""

from fusionjax.convert.checkpoint import load_pretrained, write_converted
from fusionjax.convert.cli import main
from fusionjax.convert.crosscheck import Comparison, StageError, compare, torchvision_model
from fusionjax.convert.core import from_torchvision, to_torchvision
from fusionjax.convert.keys import KEY_TABLE, ConversionError, ConversionReport, ConversionWarning
from fusionjax.convert.hub import cache_dir, pretrained, pretrained_variables, torchvision_weights

__all__ = [
    "KEY_TABLE", "Comparison", "ConversionError", "ConversionReport", "ConversionWarning", "StageError", "cache_dir",
    "compare", "from_torchvision", "load_pretrained", "main", "pretrained", "pretrained_variables", "to_torchvision",
    "torchvision_model", "torchvision_weights", "write_converted",
]
