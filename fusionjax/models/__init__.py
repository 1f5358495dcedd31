"""The model zoo: ResNet and DenseNet families and their registry."""

from fusionjax.models.densenet import DenseNet
from fusionjax.models.registry import (
    ModelSpec, PretrainedWeights, UnknownModelError, create_model, get_model_spec, list_models,
)
from fusionjax.models.resnet import ResNet

__all__ = [
    "DenseNet", "ModelSpec", "PretrainedWeights", "ResNet", "UnknownModelError", "create_model", "get_model_spec",
    "list_models",
]
