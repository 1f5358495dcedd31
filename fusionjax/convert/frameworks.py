"""The sources weights come from (torchvision, timm, Keras): which zoo architecture a library's model name is, its
key table, and the two conversions every source shares (its weights → variables, variables → its weights).
"""

import warnings
from typing import Mapping

import flax.linen as nn
import numpy as np

from fusionjax.convert import mapping
from fusionjax.convert.errors import ConversionError, ConversionWarning
from fusionjax.convert.tables import keras, timm, torchvision
from fusionjax.models.registry import ModelSpec, create_model, get_model_spec, list_models

TABLES = {"torchvision": torchvision.KEY_TABLE, "timm": timm.KEY_TABLE, "keras": keras.KEY_TABLE}
SOURCES = tuple(TABLES)

# The input each source's pretrained weights expect: channels in `channel_order`, x / pixel_max, then
# (x − mean) / std per channel. torchvision's and timm's weights for these architectures use ImageNet's statistics;
# Keras's applications their preprocess_input mode (keras.applications.imagenet_utils): 'caffe' for ResNet v1
# (BGR, the mean pixel subtracted, no scaling), 'tf' for ResNet v2 (x / 127.5 − 1), 'torch' for DenseNet.
IMAGENET = {"channel_order": "RGB", "pixel_max": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
_KERAS_MODES = {
    "caffe": {"channel_order": "BGR", "pixel_max": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]},
    "tf": {"channel_order": "RGB", "pixel_max": 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    "torch": IMAGENET,
}


def normalization(source: str, spec: ModelSpec) -> dict:
    """What ``source``'s weights for ``spec`` expect as input (written into every converted checkpoint's card)."""
    if source != "keras":
        return IMAGENET
    name = spec.keras.casefold()
    return _KERAS_MODES["torch" if name.startswith("densenet") else "tf" if name.endswith("v2") else "caffe"]


def convertible(source: str) -> dict[str, str]:
    """``{library's model name: zoo name}`` for every zoo architecture identical to one of ``source``'s."""
    specs = (get_model_spec(name) for name in list_models())
    return {getattr(spec, source): spec.name for spec in specs if getattr(spec, source)}


def find_spec(source: str, name: str) -> ModelSpec:
    """The zoo entry for ``name``: ``source``'s own model name (any case: Keras's ``ResNet50`` or ``resnet50``;
    timm's with or without a weights tag: ``resnet50.a1_in1k``) or the zoo's name of an architecture that
    ``source`` has."""
    if source not in TABLES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}.")
    if source == "timm":
        name = name.split(".", 1)[0]  # timm names weights "architecture.tag": resnet50.a1_in1k is resnet50
    names = convertible(source)
    by_case = {library_name.casefold(): zoo for library_name, zoo in names.items()}
    zoo_name = by_case.get(name.casefold()) or (name if name in names.values() else None)
    if zoo_name is None:
        raise ConversionError(
            f"{name!r} has no {source} counterpart in the zoo, so {source} weights do not convert to it. "
            f"{source} architectures that convert: {', '.join(sorted(names))}."
        )
    return get_model_spec(zoo_name)


def reference(source: str, spec: ModelSpec) -> str:
    """How messages name the source model: ``'timm seresnet50'``."""
    return f"{source} {getattr(spec, source)}"


def model_for(spec: ModelSpec, model: nn.Module | None = None, num_classes: int | None = None) -> nn.Module:
    """``model``, or ``create_model(spec.name, num_classes=num_classes)`` (default: the architecture's)."""
    return create_model(spec.name, num_classes=num_classes) if model is None else model


def model_for_variables(spec: ModelSpec, variables: Mapping) -> nn.Module:
    """``create_model(spec.name)`` with the classifier size of ``variables``."""
    return model_for(spec, num_classes=mapping.variables_classes(variables, create_model(spec.name)))


def to_variables(source: str, name: str, state_dict: Mapping[str, np.ndarray], *, strict: bool,
                 model: nn.Module | None) -> dict:
    """``{'params', 'batch_stats'}`` from ``source``'s weights ``{key: array}`` (see ``from_torchvision``)."""
    spec = find_spec(source, name)
    table = TABLES[source]
    if model is None:  # the classifier's size is the checkpoint's
        model = model_for(spec, num_classes=mapping.checkpoint_classes(table, state_dict, create_model(spec.name)))
    loaded, report = mapping.state_dict_to_variables(table, state_dict, model, arch=spec.name,
                                                     reference=reference(source, spec))
    if report:
        if strict:
            if report.classes:
                fix = (f"Pass model=fusionjax.create_model({spec.name!r}, num_classes={report.classes[0]}), or no "
                       "model to take the checkpoint's classifier, or strict=False to keep the model's as initialized.")
            else:
                fix = "Pass strict=False to load the keys that fit and keep the rest as initialized."
            raise ConversionError(f"{report}\n  {fix}", report)
        warnings.warn(ConversionWarning(report), stacklevel=3)
        loaded = {**mapping.initialized(model), **loaded}
    return mapping.unflatten(loaded)


def from_variables(source: str, name: str, variables: Mapping, *, model: nn.Module | None) -> dict[str, np.ndarray]:
    """``source``'s weights ``{key: NumPy array}`` for ``variables``; the classifier's size is the variables'."""
    spec = find_spec(source, name)
    model = model or model_for_variables(spec, variables)
    return mapping.variables_to_state_dict(TABLES[source], variables, model, arch=spec.name)
