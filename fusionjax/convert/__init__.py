"""Weights from torchvision, timm and Keras in, exact outputs out.

- ``from_torchvision(arch, source)`` / ``to_torchvision``, ``from_timm(name, source)`` / ``to_timm``,
  ``from_keras(name, source)``: a state_dict, checkpoint file or Keras model → the fusionjax variables
  ``{'params', 'batch_stats'}`` of the identical zoo architecture (``convertible(source)`` lists them).
- ``compare(arch, reference, variables, images, source=...)``: both frameworks side by side, error per stage.
- ``fusionjax-convert [--from SOURCE] ARCH FILE --out DIR [--verify]`` (``main``) writes an Orbax checkpoint and a
  ``card.json``; ``load_pretrained(DIR)`` reads it back; ``pretrained(arch)`` returns ``(model, variables)`` with
  torchvision's ImageNet weights, cached under ``$FUSIONJAX_CACHE`` (offline or without torch:
  ``PretrainedUnavailableError``, whose message names the fix).

torch, torchvision, timm and Keras are imported only inside the functions that need them. docs/converting.md.
"""

from fusionjax.convert.checkpoint import load_pretrained, write_converted
from fusionjax.convert.cli import main
from fusionjax.convert.crosscheck import Comparison, StageError, compare
from fusionjax.convert.errors import ConversionError, ConversionWarning
from fusionjax.convert.frameworks import SOURCES, TABLES, convertible
from fusionjax.convert.hub import (
    PretrainedUnavailableError, cache_dir, pretrained, pretrained_variables, torchvision_weights,
)
from fusionjax.convert.keras import from_keras, keras_application
from fusionjax.convert.report import ConversionReport
from fusionjax.convert.timm import from_timm, timm_model, to_timm
from fusionjax.convert.torchvision import from_torchvision, to_torchvision, torchvision_model

__all__ = [
    "SOURCES", "TABLES", "Comparison", "ConversionError", "ConversionReport", "ConversionWarning",
    "PretrainedUnavailableError", "StageError",
    "cache_dir", "compare", "convertible", "from_keras", "from_timm", "from_torchvision", "keras_application",
    "load_pretrained", "main", "pretrained", "pretrained_variables", "timm_model", "to_timm", "to_torchvision",
    "torchvision_model", "torchvision_weights", "write_converted",
]
