"""DenseNet (Huang et al. 2017): torchvision's ImageNet DenseNet-121/161/169/201 and the CIFAR DenseNet-BC."""

from typing import Literal, Sequence, get_args

import flax.linen as nn
import jax

from fusionjax import arguments
from fusionjax.blocks import DenseBlock, Transition
from fusionjax.layers import max_pool
from fusionjax.models.base import ImageClassifier, check_image_batch

Stem = Literal["imagenet", "cifar", "deep"]


class DenseNet(ImageClassifier):
    """Stem → dense blocks joined by transitions (compression θ) → norm→act → global pool → linear.

    ``stem='imagenet'``: 7×7/2 conv, norm, act, 3×3/2 max pool (torchvision's ``features.conv0…pool0``);
    ``stem='deep'``: three 3×3 convs (the first strides by 2; widths ``deep_stem_widths``, default
    ``num_init_features``/2 each, then ``num_init_features``), each followed by norm and act, then the max pool
    (timm's ``stem_type='deep'``; ``conv0``, ``stem_conv1``, ``stem_conv2`` and their norms);
    ``stem='cifar'``: one 3×3 conv to ``num_init_features`` (2·k for DenseNet-BC), as in the paper's CIFAR nets.
    ``memory_efficient`` rematerializes each layer's concat→BN→ReLU→1×1 conv in the backward pass.
    ``features=True`` returns the stem's, each dense block's, the pooled and the logits' outputs as a dict.
    """

    block_config: Sequence[int] = (6, 12, 24, 16)
    growth_rate: int = 32
    num_init_features: int = 64
    bn_size: int | None = 4
    compression: float = 0.5
    drop_rate: float = 0.0
    memory_efficient: bool = False
    stem: Stem = "imagenet"
    deep_stem_widths: Sequence[int] | None = None

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        arguments.positive_ints(owner, "block_config", self.block_config)
        arguments.positive_int(owner, "growth_rate", self.growth_rate)
        arguments.positive_int(owner, "num_init_features", self.num_init_features)
        arguments.optional_positive_int(owner, "bn_size", self.bn_size)
        arguments.fraction(owner, "compression", self.compression)
        arguments.rate(owner, "drop_rate", self.drop_rate)
        arguments.one_of(owner, "stem", self.stem, get_args(Stem))
        if self.deep_stem_widths is not None:
            arguments.positive_ints(owner, "deep_stem_widths", self.deep_stem_widths)
            if len(self.deep_stem_widths) != 2:
                raise arguments.ModelArgumentError(f"{owner}: deep_stem_widths are the widths of the deep stem's "
                                                   f"first two convs, got {tuple(self.deep_stem_widths)}.")
        elif self.stem == "deep" and self.num_init_features < 2:
            raise arguments.ModelArgumentError(f"{owner}: stem='deep' halves num_init_features in its first two convs; "
                                               f"num_init_features must be ≥ 2, got {self.num_init_features}.")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features: bool = False):
        check_image_batch(x, self.in_channels, type(self).__name__)
        conv, norm = self._parts()
        outputs = {}
        if self.stem == "imagenet":
            x = conv(self.num_init_features, 7, strides=2, name="conv0")(x)
            x = max_pool(self.act(norm(name="norm0")(x, train)))
        elif self.stem == "deep":
            widths = (*(self.deep_stem_widths or (self.num_init_features // 2,) * 2), self.num_init_features)
            names = ("conv0", "norm0"), ("stem_conv1", "stem_norm1"), ("stem_conv2", "stem_norm2")
            for i, (width, (conv_name, norm_name)) in enumerate(zip(widths, names)):
                x = self.act(norm(name=norm_name)(conv(width, 3, strides=2 if i == 0 else 1, name=conv_name)(x), train))
            x = max_pool(x)
        else:  # cifar
            x = conv(self.num_init_features, 3, name="conv0")(x)
        outputs["stem"] = x

        rates = self._drop_path_rates(sum(self.block_config))
        first = 0
        for i, size in enumerate(self.block_config):
            x = DenseBlock(
                num_layers=size, growth_rate=self.growth_rate, bn_size=self.bn_size, drop_rate=self.drop_rate,
                memory_efficient=self.memory_efficient, drop_path=tuple(rates[first : first + size]),
                zero_init_last=self.zero_init_last, conv=conv, norm=norm, act=self.act, name=f"denseblock{i + 1}",
            )(x, train)
            first += size
            outputs[f"stage{i + 1}"] = x
            if i != len(self.block_config) - 1:
                transition = Transition(self.compression, conv=conv, norm=norm, act=self.act, name=f"transition{i + 1}")
                x = transition(x, train)
        x = self.act(norm(name="norm5")(x, train))
        return self._head(x, outputs, features, name="classifier")
