"""timm weights in and out: ``from_timm``, ``to_timm``, and timm's own model for a state_dict (the reference of
``compare(..., source='timm')`` and ``fusionjax-convert --from timm --verify``).

A timm ResNet or DenseNet the registry does not list converts all the same, read from timm's configuration
(``fusionjax.convert.timm_architecture``).
"""

from typing import Any, Mapping

import flax.linen as nn

from fusionjax.convert import frameworks
from fusionjax.convert.timm_architecture import import_timm
from fusionjax.convert.torch_files import load_state_dict


def from_timm(name: str, source: Any, *, strict: bool = True, model: nn.Module | None = None) -> dict:
    """The variables ``{'params', 'batch_stats'}`` of the zoo's architecture identical to timm's ``name``
    (``'resnet50d'``, ``'seresnet50'`` → ``se_resnet50``, ``'densenet121'``…; ``convertible('timm')`` lists the
    registered ones, and any other timm ResNet or DenseNet the zoo expresses converts through its configuration,
    ``model_for_timm(name)`` being its model; a weights tag such as ``.a1_in1k`` may follow).
    ``source`` is a timm state_dict (``timm_model.state_dict()``) or a ``.pth``/``.pt``/``.safetensors`` file, read
    as ``from_torchvision`` reads it; ``strict`` and ``model`` as there.
    """
    return frameworks.to_variables("timm", name, load_state_dict(source), strict=strict, model=model)


def to_timm(name: str, variables: Mapping, *, model: nn.Module | None = None) -> dict:
    """timm's state_dict (torch tensors) for ``variables``: ``timm.create_model(name, num_classes=N)`` loads it
    with ``load_state_dict(strict=True)``. ``num_batches_tracked`` is written as 0."""
    import torch

    state_dict = frameworks.from_variables("timm", name, variables, model=model)
    return {key: torch.from_numpy(value) for key, value in state_dict.items()}


def model_for_timm(name: str, num_classes: int | None = None) -> nn.Module:
    """The zoo model identical to timm's ``name`` (registered or read from timm's configuration)."""
    return frameworks.model_for(frameworks.find_spec("timm", name), num_classes=num_classes)


def timm_model(name: str, state_dict: Any, num_classes: int | None = None):
    """timm's ``name`` (built with ``pretrained=False``) holding ``state_dict`` (mapping or path), loaded
    strictly, in eval mode. ``num_classes`` defaults to the state_dict's."""
    import numpy as np
    import torch

    spec = frameworks.find_spec("timm", name)
    state = {key: torch.from_numpy(np.array(value)) for key, value in load_state_dict(state_dict).items()}
    classes = next((state[key].shape[0] for key in ("fc.bias", "classifier.bias") if key in state), 1000)
    torch_model = import_timm().create_model(spec.timm, pretrained=False, num_classes=num_classes or classes)
    torch_model.load_state_dict(state, strict=True)
    return torch_model.eval()
