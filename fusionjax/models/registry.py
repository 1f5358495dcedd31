"""The model zoo: one table of names users already know, each an exact, documented architecture."""

import dataclasses
import difflib
import fnmatch
from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from fusionjax.blocks import BasicBlock, Bottleneck, PlainBlock, PreActBasicBlock, PreActBottleneck
from fusionjax.layers import BatchNorm, Conv2d
from fusionjax.models.densenet import DenseNet
from fusionjax.models.resnet import ResNet


# ImageNet's per-channel mean and std, the input every torchvision and timm ImageNet weights of the zoo expect
# (in the card format of fusionjax.cards: x / pixel_max, then (x - mean) / std).
IMAGENET_NORMALIZATION = {"channel_order": "RGB", "pixel_max": 255.0, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225]}
# keras.applications' preprocess_input modes (keras.applications.imagenet_utils): 'caffe' for ResNet v1 (BGR, the
# mean pixel subtracted, no scaling), 'tf' for ResNet v2 (x / 127.5 − 1), 'torch' for DenseNet.
KERAS_MODES = {
    "caffe": {"channel_order": "BGR", "pixel_max": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]},
    "tf": {"channel_order": "RGB", "pixel_max": 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    "torch": IMAGENET_NORMALIZATION,
}


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """A library's ImageNet weights for an architecture, as that library describes them.

    ``library`` is ``'torchvision'`` (its ``DEFAULT`` weights, which ``fusionjax.pretrained`` loads), ``'timm'``
    (its default pretrained config, ``timm.models.get_pretrained_cfg(name)``) or ``'keras'`` (the
    ``keras.applications`` function's ``weights='imagenet'``); ``name`` is the library's model name.
    ``normalization`` is the input the weights expect (card format, ``fusionjax.cards``); ``head`` the library's
    name of the classifier layer (``'fc'``, ``'classifier'``, Keras's ``'predictions'``). Evaluation resizes the
    image's shorter side to ``resize_size`` and takes the centre ``input_size`` square (torchvision's
    ``resize_size`` and ``crop_size``; timm's ``input_size / crop_pct``); Keras resizes to ``input_size``, no crop.
    """

    library: str
    name: str
    normalization: dict
    num_classes: int
    head: str
    input_size: int
    resize_size: int

    @property
    def eval_resize(self) -> dict:
        """That evaluation in the cards' ``eval_resize`` format (``fusionjax.cards``, which the zoo does not import),
        for converted cards."""
        if self.library == "keras":
            return {"method": "resize"}
        return {"method": "resize_shorter_crop", "crop_fraction": self.input_size / self.resize_size}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    ``weights`` are the pretrained weights of identical models in other libraries (they convert exactly);
    ``torchvision``, ``timm`` and ``keras`` read the library's model name from them (``keras``: the
    ``keras.applications`` function), or are None. ``head`` is the classifier's key in the model's params.
    ``min_input_size`` is the smallest square input that still leaves one cell after the last downsampling.
    """

    name: str
    build: Callable[..., nn.Module]
    num_classes: int
    input_size: int
    min_input_size: int
    source: str
    weights: tuple[PretrainedWeights, ...] = ()

    @property
    def head(self) -> str:
        return _HEADS[self.build.func]

    @property
    def torchvision(self) -> str | None:
        return self._library_name("torchvision")

    @property
    def timm(self) -> str | None:
        return self._library_name("timm")

    @property
    def keras(self) -> str | None:
        return self._library_name("keras")

    def weights_from(self, library: str) -> PretrainedWeights | None:
        """The ``library``'s weights for this architecture, or None."""
        return next((weights for weights in self.weights if weights.library == library), None)

    def _library_name(self, library: str) -> str | None:
        weights = self.weights_from(library)
        return weights and weights.name


_HEADS = {ResNet: "fc", DenseNet: "classifier"}  # the name each model class gives its classifier layer
_REGISTRY: dict[str, ModelSpec] = {}


class UnknownModelError(KeyError):
    """The name is not in the registry; the message lists close matches and every known name."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _register(name: str, build, *, source: str, cifar: bool = False, weights: tuple[PretrainedWeights, ...] = ()
              ) -> None:
    _REGISTRY[name] = ModelSpec(
        name=name,
        build=build,
        num_classes=10 if cifar else 1000,
        input_size=32 if cifar else 224,
        min_input_size=8 if cifar else 32,
        source=source,
        weights=weights,
    )


def _torchvision(name: str, head: str, resize: int) -> PretrainedWeights:
    return PretrainedWeights("torchvision", name, IMAGENET_NORMALIZATION, 1000, head, 224, resize)


def _timm(name: str, head: str, input_size: int, resize_size: int) -> PretrainedWeights:
    return PretrainedWeights("timm", name, IMAGENET_NORMALIZATION, 1000, head, input_size, resize_size)


def _keras(name: str, mode: str) -> PretrainedWeights:
    return PretrainedWeights("keras", name, KERAS_MODES[mode], 1000, "predictions", 224, 224)


# The evaluation sizes of each library's default ImageNet weights: torchvision's DEFAULT weights' resize before the
# 224 crop (IMAGENET1K_V2 weights are evaluated at 232), timm's default pretrained cfg's input_size and
# floor(input_size / crop_pct).
_TORCHVISION_RESIZE = {
    "resnet18": 256, "resnet34": 256, "resnet50": 232, "resnet101": 232, "resnet152": 232, "resnext50_32x4d": 232,
    "resnext101_32x8d": 232, "resnext101_64x4d": 232, "wide_resnet50_2": 232, "wide_resnet101_2": 232,
    "densenet121": 256, "densenet161": 256, "densenet169": 256, "densenet201": 256,
}
_TIMM_SIZES = {
    "resnet18": (224, 235), "resnet34": (224, 235), "resnet50": (224, 235), "resnet101": (224, 235),
    "resnet152": (224, 235), "resnext50_32x4d": (224, 235), "resnext101_32x8d": (224, 256),
    "resnext101_64x4d": (224, 235), "wide_resnet50_2": (224, 256), "wide_resnet101_2": (224, 256),
    "densenet121": (224, 256), "densenet161": (224, 256), "densenet169": (224, 256), "densenet201": (224, 256),
    "seresnet50": (224, 235), "seresnext50_32x4d": (224, 256), "resnet18d": (224, 256), "resnet26d": (224, 256),
    "resnet50d": (224, 256), "resnet101d": (256, 269), "ecaresnet50d": (224, 256),
}


def _torchvision_and_timm(name: str, head: str) -> tuple[PretrainedWeights, ...]:
    return _torchvision(name, head, _TORCHVISION_RESIZE[name]), _timm(name, head, *_TIMM_SIZES[name])


# ImageNet, exactly torchvision's (torchvision.models.resnet / densenet, v0.28).
_RESNET, _RESNEXT, _WIDE = (
    "He et al. 2016, Table 1; torchvision",
    "Xie et al. 2017, Table 1; torchvision",
    "Zagoruyko & Komodakis 2016 (bottleneck ×2 wide); torchvision",
)
_IMAGENET_RESNETS = {  # block, blocks per stage, source
    "resnet18": (BasicBlock, (2, 2, 2, 2), _RESNET),
    "resnet34": (BasicBlock, (3, 4, 6, 3), _RESNET),
    "resnet50": (Bottleneck, (3, 4, 6, 3), _RESNET),
    "resnet101": (Bottleneck, (3, 4, 23, 3), _RESNET),
    "resnet152": (Bottleneck, (3, 8, 36, 3), _RESNET),
    "resnext50_32x4d": (partial(Bottleneck, groups=32, base_width=4), (3, 4, 6, 3), _RESNEXT),
    "resnext101_32x8d": (partial(Bottleneck, groups=32, base_width=8), (3, 4, 23, 3), _RESNEXT),
    "resnext101_64x4d": (partial(Bottleneck, groups=64, base_width=4), (3, 4, 23, 3), _RESNEXT),
    "wide_resnet50_2": (partial(Bottleneck, base_width=128), (3, 4, 6, 3), _WIDE),
    "wide_resnet101_2": (partial(Bottleneck, base_width=128), (3, 4, 23, 3), _WIDE),
}
for _name, (_block, _sizes, _source) in _IMAGENET_RESNETS.items():
    _register(_name, partial(ResNet, stage_sizes=_sizes, block=_block), weights=_torchvision_and_timm(_name, "fc"),
              source=_source)

_IMAGENET_DENSENETS = {  # growth rate, block config, stem width
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}
for _name, (_k, _config, _stem) in _IMAGENET_DENSENETS.items():
    _register(
        _name, partial(DenseNet, growth_rate=_k, block_config=_config, num_init_features=_stem),
        weights=_torchvision_and_timm(_name, "classifier"), source="Huang et al. 2017, Table 1; torchvision",
    )

# Squeeze-and-excitation on torchvision's ResNet-50 / ResNeXt-50 (Hu et al. 2018, Table 1; reduction 16).
_register("se_resnet50", partial(ResNet, stage_sizes=(3, 4, 6, 3), block=partial(Bottleneck, se_reduction=16)),
          weights=(_timm("seresnet50", "fc", *_TIMM_SIZES["seresnet50"]),),
          source="Hu et al. 2018 (SENet), Table 1; timm")
_register("se_resnext50_32x4d",
          partial(ResNet, stage_sizes=(3, 4, 6, 3),
                  block=partial(Bottleneck, groups=32, base_width=4, se_reduction=16)),
          weights=(_timm("seresnext50_32x4d", "fc", *_TIMM_SIZES["seresnext50_32x4d"]),),
          source="Hu et al. 2018 (SENet), Table 1; timm")

# ResNet-D (He et al. 2019, "Bag of Tricks", §4.1), exactly timm's: deep 3×3 stem 32-32-64, average-pool shortcuts.
for _name, (_block, _sizes) in {
    "resnet18d": (BasicBlock, (2, 2, 2, 2)),
    "resnet26d": (Bottleneck, (2, 2, 2, 2)),
    "resnet50d": (Bottleneck, (3, 4, 6, 3)),
    "resnet101d": (Bottleneck, (3, 4, 23, 3)),
    "ecaresnet50d": (partial(Bottleneck, eca=True), (3, 4, 6, 3)),
}.items():
    _register(_name, partial(ResNet, stage_sizes=_sizes, block=_block, stem="deep", shortcut="avg_down"),
              weights=(_timm(_name, "fc", *_TIMM_SIZES[_name]),),
              source="He et al. 2019 (ResNet-D)" + ("; Wang et al. 2020 (ECA-Net)" if "eca" in _name else "")
              + "; timm")

# Keras applications (keras.applications, Keras 3): BatchNorm epsilon 1.001e-5 throughout.
_KERAS_NORM = partial(BatchNorm, epsilon=1.001e-5)
for _depth, _sizes in {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}.items():
    # v1: the stride on the first 1×1, every conv biased
    _register(f"keras_resnet{_depth}",
              partial(ResNet, stage_sizes=_sizes, block=partial(Bottleneck, stride_in_1x1=True),
                      conv=partial(Conv2d, use_bias=True), norm=_KERAS_NORM),
              weights=(_keras(f"ResNet{_depth}", "caffe"),), source="He et al. 2016 (ResNet v1); keras.applications")
    # v2: pre-activation, the stride in each stage's last block, subsampled identity shortcuts, zero-padded pool
    _register(f"keras_resnet{_depth}v2",
              partial(ResNet, stage_sizes=_sizes, block=PreActBottleneck, shortcut="subsample",
                      downsample_block="last", stem_pool_pad_value=0.0, conv=partial(Conv2d, use_bias=True),
                      norm=_KERAS_NORM),
              weights=(_keras(f"ResNet{_depth}V2", "tf"),), source="He et al. 2016b (ResNet v2); keras.applications")
for _depth, _config in {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}.items():
    _register(f"keras_densenet{_depth}", partial(DenseNet, block_config=_config, norm=_KERAS_NORM),
              weights=(_keras(f"DenseNet{_depth}", "torch"),), source="Huang et al. 2017, Table 1; keras.applications")

# Pre-activation ResNet v2 for ImageNet (He et al. 2016b), stem and stages as in ResNet v1.
for _name, (_block, _sizes) in {
    "preact_resnet18": (PreActBasicBlock, (2, 2, 2, 2)),
    "preact_resnet34": (PreActBasicBlock, (3, 4, 6, 3)),
    "preact_resnet50": (PreActBottleneck, (3, 4, 6, 3)),
    "preact_resnet101": (PreActBottleneck, (3, 4, 23, 3)),
    "preact_resnet152": (PreActBottleneck, (3, 8, 36, 3)),
}.items():
    _register(_name, partial(ResNet, stage_sizes=_sizes, block=_block),
              source="He et al. 2016b, 'Identity Mappings in Deep Residual Networks' (full pre-activation)")

# CIFAR (32×32), He et al. 2016 §4.2: 6n+2 layers, widths 16/32/64, option-A (zero-pad) shortcuts.
for _depth in (20, 32, 44, 56, 110):
    _n = (_depth - 2) // 6
    _cifar = dict(stage_sizes=(_n, _n, _n), stage_widths=(16, 32, 64), stem="cifar", stem_width=16,
                  shortcut="zero_pad", num_classes=10)
    _register(f"resnet{_depth}", partial(ResNet, block=BasicBlock, **_cifar), cifar=True,
              source="He et al. 2016, §4.2 and Table 6 (CIFAR-10, option A)")
    _register(f"plain{_depth}", partial(ResNet, block=PlainBlock, **_cifar), cifar=True,
              source="He et al. 2016, §4.2 and Fig. 6 (plain nets, degradation experiment)")

_register("preact_resnet164",
          partial(ResNet, block=PreActBottleneck, stage_sizes=(18, 18, 18), stage_widths=(16, 32, 64),
                  stem="cifar", stem_width=16, num_classes=10),
          cifar=True, source="He et al. 2016b, Table 2 (ResNet-164, pre-activation bottleneck, 1.7M params)")
_register("wrn28_10",
          partial(ResNet, block=partial(PreActBasicBlock, dropout_rate=0.0), stage_sizes=(4, 4, 4),
                  stage_widths=(160, 320, 640), stem="cifar", stem_width=16, num_classes=10),
          cifar=True, source="Zagoruyko & Komodakis 2016, WRN-28-10 (36.5M params; dropout_rate=0.3 in Table 6)")
_register("resnext29_8x64d",
          partial(ResNet, block=partial(Bottleneck, groups=8, base_width=64), stage_sizes=(3, 3, 3),
                  stage_widths=(64, 128, 256), stem="cifar", stem_width=64, num_classes=10),
          cifar=True, source="Xie et al. 2017, §5.3 and Table 7 (ResNeXt-29, 8×64d, 34.4M params)")
for _name, (_depth, _k) in {"densenet_bc_100_12": (100, 12), "densenet_bc_250_24": (250, 24),
                             "densenet_bc_190_40": (190, 40)}.items():
    _n = (_depth - 4) // 6  # BC: every layer is two convs, three blocks, plus stem, two transitions and the head
    _register(_name,
              partial(DenseNet, block_config=(_n, _n, _n), growth_rate=_k, num_init_features=2 * _k, stem="cifar",
                      num_classes=10),
              cifar=True, source="Huang et al. 2017, Table 2 (DenseNet-BC, k=%d, depth %d)" % (_k, _depth))


def list_models(pattern: str = "*") -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell-style filter such as ``'resnet*'``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; an unknown name raises ``UnknownModelError`` with close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"Unknown model {name!r}.{hint} Known models: {', '.join(list_models())}.") from None


def create_model(name: str, *, num_classes: int | None = None, dtype: Any = jnp.float32, **overrides) -> nn.Module:
    """Build a registered model: a Flax linen module, to initialize with ``model.init``.

    ``num_classes`` defaults to the data set the architecture was designed for (1000 or 10); ``dtype`` is the
    compute dtype (parameters stay float32); ``overrides`` set any other field of the model class, e.g.
    ``drop_path=0.1``, ``zero_init_last=True``, ``norm=fusionjax.layers.GroupNorm``, ``memory_efficient=True``.
    Pretrained weights: ``fusionjax.pretrained(name)``.
    """
    spec = get_model_spec(name)
    fields = {f.name for f in dataclasses.fields(spec.build.func)} - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; {spec.build.func.__name__} takes {sorted(fields)}.")
    return spec.build(num_classes=spec.num_classes if num_classes is None else num_classes, dtype=dtype, **overrides)
