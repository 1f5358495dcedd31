"""torchvision weights in and out: ``from_torchvision``, ``to_torchvision``, and torchvision's own model for a
state_dict (the reference of ``compare`` and ``fusionjax-convert --verify``)."""

import re
from typing import Any, Mapping

import flax.linen as nn
import numpy as np

from fusionjax.convert import frameworks
from fusionjax.convert.torch_files import load_state_dict

# torchvision.models.densenet._load_state_dict renames checkpoints' legacy keys with this pattern before loading.
_LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def from_torchvision(arch: str, source: Any, *, strict: bool = True, model: nn.Module | None = None) -> dict:
    """The variables ``{'params', 'batch_stats'}`` (float32 NumPy arrays) of ``fusionjax.create_model(arch)``.

    ``source`` is a torchvision state_dict (torch tensors or NumPy arrays), or the path of a ``.pth``/``.pt``
    file (read with ``torch.load(weights_only=True)``: pickled code is refused, never run) or of a
    ``.safetensors`` file (read without torch). DenseNet's legacy key names (``norm.1``, ``conv.1``…) load too.
    The classifier takes the checkpoint's number of classes; ``model`` is the fusionjax model to fill when it is
    not ``create_model(arch, num_classes=that)``.

    ``strict=True`` raises one ``ConversionError`` naming every missing, unexpected and wrongly shaped key.
    ``strict=False`` loads the keys that fit, keeps the rest as freshly initialized (seed 0), and warns with a
    ``ConversionWarning`` whose ``.report`` (a ``ConversionReport``) lists what did not load.
    """
    return frameworks.to_variables("torchvision", arch, load_state_dict(source), strict=strict, model=model)


def to_torchvision(arch: str, variables: Mapping, *, model: nn.Module | None = None) -> dict:
    """torchvision's state_dict (torch tensors) for ``variables``; ``torchvision.models.get_model(arch,
    num_classes=N)`` loads it with ``load_state_dict(strict=True)``, N being the variables' number of classes.
    ``num_batches_tracked`` has no JAX counterpart and is written as 0.
    """
    import torch

    state_dict = frameworks.from_variables("torchvision", arch, variables, model=model)
    return {key: torch.from_numpy(value) for key, value in state_dict.items()}


def torchvision_model(arch: str, state_dict: Any, num_classes: int | None = None):
    """torchvision's ``arch`` holding ``state_dict`` (mapping or path), loaded strictly, in eval mode.
    ``num_classes`` defaults to the state_dict's."""
    import torch

    from fusionjax.torch_compat import import_torchvision

    spec = frameworks.find_spec("torchvision", arch)
    state = {_LEGACY_DENSENET.sub(r"\1\2", key): torch.from_numpy(np.array(value))
             for key, value in load_state_dict(state_dict).items()}
    weights = spec.weights_from("torchvision")
    head = state.get(f"{weights.head}.bias")
    classes = num_classes or (weights.num_classes if head is None else head.shape[0])
    torch_model = import_torchvision().models.get_model(spec.torchvision, weights=None, num_classes=classes)
    torch_model.load_state_dict(state, strict=True)
    return torch_model.eval()
