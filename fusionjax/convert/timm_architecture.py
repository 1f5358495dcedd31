"""timm's ResNets and DenseNets the registry does not list, as zoo architectures: the architecture is read from
timm's model itself (built on the meta device: no weights, no download) as a JSON-able description
(``architecture(name)``), which ``model_from_architecture`` builds without timm and converted cards carry. Whatever
the zoo cannot express (a selective-kernel block, BlurPool, an activation other than ReLU…) is a ``ConversionError``
that names it. ``fusionjax.convert.frameworks.find_spec`` falls back on ``spec_from_configuration``.
"""

import functools
import math
from typing import Mapping

import flax.linen as nn

from fusionjax.blocks import BasicBlock, Bottleneck
from fusionjax.convert import mapping
from fusionjax.convert.errors import ConversionError
from fusionjax.convert.tables.timm import KEY_TABLE
from fusionjax.models.densenet import DenseNet
from fusionjax.models.registry import ModelSpec, PretrainedWeights
from fusionjax.models.resnet import ResNet


def import_timm():
    """``timm``, imported after torchvision's op schemas are in place (timm imports torchvision)."""
    from fusionjax.torch_compat import import_torchvision

    import_torchvision()
    try:
        import timm
    except ImportError:
        raise ImportError("Running timm's models needs timm: pip install 'fusionjax[timm]'") from None
    return timm


_MODELS = {"ResNet": ResNet, "DenseNet": DenseNet}
_BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
# timm's layers that have a zoo counterpart where they appear in timm's ResNets and DenseNets (checked below)
_EXPRESSED = {
    "ResNet", "BasicBlock", "Bottleneck", "DenseNet", "DenseBlock", "DenseLayer", "DenseTransition", "Sequential",
    "Conv2d", "Conv1d", "BatchNorm2d", "BatchNormAct2d", "ReLU", "MaxPool2d", "AvgPool2d", "Identity", "SEModule",
    "EcaModule", "Sigmoid", "SelectAdaptivePool2d", "AdaptiveAvgPool2d", "Flatten", "Linear", "Dropout",
}
_NAMED = {  # timm's layers the zoo lacks → how the error names them
    "SelectiveKernel": "a selective-kernel convolution (SKNet)",
    "BlurPool2d": "anti-aliased downsampling (BlurPool2d)",
    "DropBlock2d": "DropBlock (drop_block_rate)",
    "AvgPool2dSame": "dilated stages (output_stride < 32)",
    "GroupNorm": "GroupNorm in place of BatchNorm",
    "GroupNorm1": "GroupNorm in place of BatchNorm",
}


def _unsupported(name: str, feature: str) -> ConversionError:
    return ConversionError(f"timm {name} uses {feature}, which the zoo's ResNet and DenseNet do not express; its "
                           "weights do not convert. timm's ResNets and DenseNets with ReLU, BatchNorm, SE or ECA "
                           "gates, deep or tiered stems and average-pool shortcuts do.")


def _check_layers(name: str, torch_model) -> None:
    """Every layer of ``torch_model`` has a zoo counterpart; else the first that does not is named."""
    for path, module in torch_model.named_modules():
        kind = type(module).__name__
        if kind in ("Conv2d", "Conv1d") and any(d != 1 for d in module.dilation):
            raise _unsupported(name, f"dilated convolutions ({path}; output_stride < 32)")
        if kind == "BatchNormAct2d" and type(module.act).__name__ != "ReLU":
            raise _unsupported(name, f"the activation {type(module.act).__name__} (the zoo's timm models use ReLU)")
        if kind in ("BatchNorm2d", "BatchNormAct2d") and module.eps != 1e-5:
            raise _unsupported(name, f"BatchNorm with epsilon {module.eps:g} ({path}; the zoo's is 1e-5)")
        if kind == "SelectAdaptivePool2d" and module.pool_type != "avg":
            raise _unsupported(name, f"global pooling {module.pool_type!r} (the zoo averages)")
        if kind in _EXPRESSED:
            continue
        if path.endswith(".se"):
            feature = f"the attention layer {kind} (the zoo has SE, timm's SEModule, and ECA, EcaModule)"
        elif kind.startswith("SelectiveKernel"):
            feature = _NAMED["SelectiveKernel"]
        elif kind in _NAMED:
            feature = _NAMED[kind]
        elif "activation" in type(module).__module__:
            feature = f"the activation {kind} (the zoo's timm models use ReLU)"
        else:
            feature = f"the layer {kind} ({path})"
        raise _unsupported(name, feature)


def _resnet(name: str, torch_model) -> dict:
    blocks = [list(stage) for key, stage in torch_model.named_children() if key.startswith("layer")]
    kinds = {type(block).__name__ for stage in blocks for block in stage}
    if len(kinds) != 1:
        raise _unsupported(name, f"blocks of several kinds ({', '.join(sorted(kinds))})")
    kind = kinds.pop()
    first = blocks[0][0]
    last_conv = "conv2" if kind == "BasicBlock" else "conv3"
    expansion = type(first).expansion
    widths = [getattr(stage[0], last_conv).out_channels // expansion for stage in blocks]
    for stage in blocks:
        for block in stage:
            if type(block.aa).__name__ != "Identity":
                raise _unsupported(name, f"anti-aliased downsampling ({type(block.aa).__name__}; aa_layer)")
            if block.conv1.out_channels != block.conv2.out_channels:
                raise _unsupported(name, "a reduced first convolution in its blocks (block_reduce_first)")
            if block.se is not None and type(block.se).__name__ == "SEModule" and (
                    block.se.add_maxpool or type(block.se.bn).__name__ != "Identity"):
                raise _unsupported(name, "an SE gate with max pooling or a norm (the zoo's SE has neither)")
    downsamples = [stage[0].downsample for stage in blocks if stage[0].downsample is not None]
    if any(down[-2].kernel_size != (1, 1) for down in downsamples):
        raise _unsupported(name, "shortcut convolutions larger than 1×1 (down_kernel_size)")
    avg_down = any(len(down) == 3 for down in downsamples)

    if type(torch_model.maxpool).__name__ != "MaxPool2d":
        feature = ("a strided convolution in place of the stem's max pool (replace_stem_pool)"
                   if type(torch_model.maxpool).__name__ == "Sequential" else
                   f"anti-aliased downsampling ({type(torch_model.maxpool).__name__} as the stem's pool; aa_layer)")
        raise _unsupported(name, feature)
    stem = torch_model.conv1
    options: dict = {"stage_sizes": [len(stage) for stage in blocks], "stage_widths": widths}
    if type(stem).__name__ == "Sequential":
        options.update(stem="deep", stem_width=stem[6].out_channels)
        if (stem[0].out_channels, stem[3].out_channels) != (stem[6].out_channels // 2,) * 2:
            options["deep_stem_widths"] = [stem[0].out_channels, stem[3].out_channels]
        in_channels = stem[0].in_channels
    else:
        options["stem_width"] = stem.out_channels
        in_channels = stem.in_channels
    if avg_down:
        options["shortcut"] = "avg_down"
    if in_channels != 3:
        options["in_channels"] = in_channels
    block: dict = {"type": kind}
    if kind == "Bottleneck":
        groups, base_width = first.conv2.groups, first.conv2.out_channels // first.conv2.groups * 64 // widths[0]
        if groups != 1:
            block["groups"] = groups
        if base_width != 64:  # Bottleneck's defaults are left out
            block["base_width"] = base_width
    gates = {type(b.se).__name__ for stage in blocks for b in stage}
    if gates == {"SEModule"}:
        se = blocks[-1][-1].se
        block.update(se_reduction=round(se.fc1.in_channels / se.fc1.out_channels), se_divisor=8)  # timm's SEModule
    elif gates == {"EcaModule"}:
        block["eca"] = True
    elif gates != {"NoneType"}:
        raise _unsupported(name, f"channel gates on some blocks only ({', '.join(sorted(gates))})")
    return {"model": "ResNet", "block": block, **options}


def _densenet(name: str, torch_model) -> dict:
    features = dict(torch_model.features.named_children())
    if type(features["pool0"]).__name__ != "MaxPool2d":
        raise _unsupported(name, "anti-aliased downsampling (aa_layer) in the stem")
    blocks = [module for key, module in features.items() if key.startswith("denseblock")]
    layer = next(iter(blocks[0].values()))
    growth = layer.conv2.out_channels
    options: dict = {"block_config": [len(block) for block in blocks], "growth_rate": growth,
                     "bn_size": layer.conv1.out_channels // growth}
    if "conv1" in features:  # timm's deep stem: conv0, conv1, conv2 with their norms
        options.update(stem="deep", num_init_features=features["conv2"].out_channels)
        inner = [features["conv0"].out_channels, features["conv1"].out_channels]
        if inner != [features["conv2"].out_channels // 2] * 2:
            options["deep_stem_widths"] = inner
    else:
        options["num_init_features"] = features["conv0"].out_channels
    if features["conv0"].in_channels != 3:
        options["in_channels"] = features["conv0"].in_channels
    return {"model": "DenseNet", **options}


def _build(architecture: Mapping):
    """``functools.partial`` of the zoo's model class for ``architecture`` (see ``architecture``)."""
    options = {key: tuple(value) if isinstance(value, list) else value
               for key, value in architecture.items() if key != "model"}
    if "block" in options:
        block = dict(options["block"])
        options["block"] = functools.partial(_BLOCKS[block.pop("type")], **block)
    return functools.partial(_MODELS[architecture["model"]], **options)


def model_from_architecture(architecture: Mapping, num_classes: int) -> nn.Module:
    """The zoo model an ``architecture(name)`` description (e.g. a converted card's ``architecture``) describes;
    needs no timm."""
    return _build(architecture)(num_classes=num_classes)


@functools.lru_cache(maxsize=64)
def _read(name: str):
    """``(architecture, timm's pretrained_cfg, classifier name, number of classes, [(key, shape)])`` of timm's
    ``name``, or None when timm has no such model."""
    import torch

    timm = import_timm()
    if not timm.is_model(name):
        return None
    with torch.device("meta"):  # structure and shapes only
        torch_model = timm.create_model(name, pretrained=False)
    family = type(torch_model).__name__
    if family not in _MODELS or type(torch_model).__module__ not in ("timm.models.resnet", "timm.models.densenet"):
        raise ConversionError(f"timm {name} is a {family} ({type(torch_model).__module__}); only timm's ResNets "
                              "(timm.models.resnet) and DenseNets (timm.models.densenet) convert to the zoo.")
    _check_layers(name, torch_model)
    described = _resnet(name, torch_model) if family == "ResNet" else _densenet(name, torch_model)
    config = dict(torch_model.pretrained_cfg)
    keys = [(key, tuple(value.shape)) for key, value in torch_model.state_dict().items()]
    return described, config, config["classifier"], torch_model.get_classifier().out_features, keys


def architecture(name: str) -> dict | None:
    """The zoo's description of timm's ``name`` (``resnet34d``, ``seresnext26t_32x4d``, ``densenet264d``…) read
    from timm's model: ``{'model': 'ResNet' | 'DenseNet', **options}`` with the ResNet's block as ``{'type':
    'BasicBlock' | 'Bottleneck', **options}``, JSON-able; None when timm has no model of that name."""
    read = _read(name.split(".", 1)[0])
    return None if read is None else read[0]


@functools.lru_cache(maxsize=64)  # one spec per name: its model, equal on every call, keeps the traced shapes cached
def spec_from_configuration(name: str) -> ModelSpec | None:
    """A ``ModelSpec`` (not registered) for timm's ``name`` read from its configuration, its weights' input from
    timm's ``pretrained_cfg``; None when timm has no model of that name. The zoo model's keys and shapes are
    checked against timm's, so a difference the reading missed is an error here, never a silent mismatch."""
    name = name.split(".", 1)[0]
    read = _read(name)
    if read is None:
        return None
    described, config, head, classes, timm_keys = read
    build = _build(described)
    model = build(num_classes=classes)
    expected = mapping.expected_variables(model)
    ours = [(key, () if rule.transform is mapping.COUNTER else rule.transform.source_shape(expected[path].shape))
            for rule, key, path in mapping.source_keys_in_order(KEY_TABLE, expected, mapping.family_of(model))]
    if ours != timm_keys:
        differences = [f"{a} ≠ {b}" for a, b in zip(ours, timm_keys) if a != b]
        raise ConversionError(
            f"timm {name}: the zoo's reading of its configuration, {described}, does not give its weights "
            f"(zoo ≠ timm): {'; '.join(differences[:3]) or f'{len(ours)} ≠ {len(timm_keys)} keys'}.")
    size = config["input_size"][-1]
    normalization = {"channel_order": "RGB", "pixel_max": 255.0, "mean": list(config["mean"]),
                     "std": list(config["std"])}
    weights = PretrainedWeights("timm", name, normalization, classes, head, size, math.floor(size / config["crop_pct"]))
    return ModelSpec(name=name, build=build, num_classes=classes, input_size=size, min_input_size=32,
                     source=f"timm {name}, read from its configuration", weights=(weights,))
