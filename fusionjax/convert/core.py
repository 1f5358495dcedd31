"""``from_torchvision`` and ``to_torchvision``: checkpoints in, variables out, and back."""

import warnings
from typing import Any, Mapping

import flax.linen as nn

from fusionjax.convert import keys
from fusionjax.convert.keys import ConversionError, ConversionWarning
from fusionjax.convert.sources import load_state_dict


def from_torchvision(arch: str, source: Any, *, strict: bool = True, model: nn.Module | None = None) -> dict:
    """The variables ``{'params', 'batch_stats'}`` (float32 NumPy arrays) of ``fusionjax.create_model(arch)``.

    ``source`` is a torchvision state_dict (torch tensors or NumPy arrays), or the path of a ``.pth``/``.pt``
    file (read with ``torch.load(weights_only=True)``: pickled code is refused, never run) or of a
    ``.safetensors`` file (read without torch). DenseNet's legacy key names (``norm.1``, ``conv.1``…) load too.
    ``model`` is the fusionjax model to fill when it is not ``create_model(arch)``, e.g. for another
    ``num_classes``.

    ``strict=True`` raises one ``ConversionError`` naming every missing, unexpected and wrongly shaped key.
    ``strict=False`` loads the keys that fit, keeps the rest as freshly initialized (seed 0), and warns with a
    ``ConversionWarning`` whose ``.report`` (a ``ConversionReport``) lists what did not load.
    """
    model = keys.model_for(arch, model)
    state_dict = load_state_dict(source)
    loaded, report = keys.state_dict_to_variables(arch, state_dict, model)
    if report:
        if strict:
            raise ConversionError(f"{report}\n  Pass strict=False to load the keys that fit and keep the rest as "
                                  "initialized.")
        warnings.warn(ConversionWarning(report), stacklevel=2)
        loaded = {**keys.initialized(model), **loaded}
    return keys.unflatten(loaded)


def to_torchvision(arch: str, variables: Mapping, *, model: nn.Module | None = None) -> dict:
    """torchvision's state_dict (torch tensors) for ``variables``; ``torchvision.models.get_model(arch)`` loads it
    with ``load_state_dict(strict=True)``. ``num_batches_tracked`` has no JAX counterpart and is written as 0.
    """
    import torch

    model = keys.model_for(arch, model)
    return {key: torch.from_numpy(value) for key, value in keys.variables_to_state_dict(arch, variables, model).items()}

