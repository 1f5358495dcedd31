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
from fusionjax.models.registry import ModelSpec, get_model_spec, list_models

TABLES = {"torchvision": torchvision.KEY_TABLE, "timm": timm.KEY_TABLE, "keras": keras.KEY_TABLE}
SOURCES = tuple(TABLES)
IMAGENET_CLASSES = 1000


def normalization(source: str, spec: ModelSpec) -> dict:
    """What ``source``'s weights for ``spec`` expect as input (written into every converted checkpoint's card):
    the registry's record of them (``ModelSpec.weights``)."""
    return spec.weights_from(source).normalization


def class_names(source: str, spec: ModelSpec, num_classes: int) -> list[str] | None:
    """ImageNet's class names in label order, for the cards of ``source``'s 1000-class weights, where the library
    ships them offline: torchvision's weights enum ``meta["categories"]``, timm's ``ImageNetInfo``. None for Keras
    (it downloads them), another classifier (its classes are the user's) or a library that is not installed."""
    if source == "keras" or num_classes != IMAGENET_CLASSES:
        return None
    try:
        if source == "torchvision":
            from fusionjax.torch_compat import import_torchvision

            weights = import_torchvision().models.get_model_weights(spec.torchvision).DEFAULT
            return list(weights.meta["categories"])
        from fusionjax.convert.timm_architecture import import_timm

        info = import_timm().data.ImageNetInfo()
        return [info.index_to_description(label) for label in range(num_classes)]
    except ImportError:
        return None


def convertible(source: str) -> dict[str, str]:
    """``{library's model name: zoo name}`` for every zoo architecture identical to one of ``source``'s."""
    specs = (get_model_spec(name) for name in list_models())
    return {weights.name: spec.name for spec in specs for weights in spec.weights if weights.library == source}


def find_spec(source: str, name: str) -> ModelSpec:
    """The zoo entry for ``name``: ``source``'s own model name (any case: Keras's ``ResNet50`` or ``resnet50``;
    timm's with or without a weights tag: ``resnet50.a1_in1k``) or the zoo's name of an architecture that
    ``source`` has; for any other timm ResNet or DenseNet, an unregistered entry read from timm's configuration
    (``fusionjax.convert.timm_architecture.spec_from_configuration``)."""
    if source not in TABLES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}.")
    if source == "timm":
        name = name.split(".", 1)[0]  # timm names weights "architecture.tag": resnet50.a1_in1k is resnet50
    names = convertible(source)
    by_case = {library_name.casefold(): zoo for library_name, zoo in names.items()}
    zoo_name = by_case.get(name.casefold()) or (name if name in names.values() else None)
    if zoo_name is None and source == "timm":  # any other timm ResNet or DenseNet: read from timm's configuration
        from fusionjax.convert.timm_architecture import spec_from_configuration

        if (spec := spec_from_configuration(name)) is not None:
            return spec
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
    """``model``, or ``spec``'s model with ``num_classes`` (default: the architecture's); ``spec`` need not be
    registered (a timm model read from its configuration)."""
    return spec.build(num_classes=spec.num_classes if num_classes is None else num_classes) if model is None else model


def model_for_variables(spec: ModelSpec, variables: Mapping) -> nn.Module:
    """``spec``'s model with the classifier size of ``variables``."""
    return model_for(spec, num_classes=mapping.variables_classes(variables, spec.head))


def to_variables(source: str, name: str, state_dict: Mapping[str, np.ndarray], *, strict: bool,
                 model: nn.Module | None) -> dict:
    """``{'params', 'batch_stats'}`` from ``source``'s weights ``{key: array}`` (see ``from_torchvision``)."""
    spec = find_spec(source, name)
    table = TABLES[source]
    if model is None:  # the classifier's size is the checkpoint's
        model = model_for(spec, num_classes=mapping.checkpoint_classes(table, state_dict, spec.head))
    loaded, report = mapping.state_dict_to_variables(table, state_dict, model, spec.head, arch=spec.name,
                                                     reference=reference(source, spec))
    if report:
        if strict:
            if report.classes:
                registered = spec.name in list_models()
                build = "fusionjax.create_model" if registered else "fusionjax.convert.timm.model_for_timm"
                fix = (f"Pass model={build}({spec.name!r}, num_classes={report.classes[0]}), or no "
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
