"""One ResNet class for every residual family in the zoo: the family is data (block, stage sizes, widths, stem).

ImageNet ResNet/ResNeXt/Wide ResNet as torchvision builds them, SE-ResNet, pre-activation ResNet (v2), timm's
ResNet-D variants, Keras's ResNet v1 and v2, and the CIFAR networks of He et al. 2016 §4.2, Zagoruyko & Komodakis
2016 and Xie et al. 2017.
"""

import functools
from typing import Literal, Sequence, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp

from fusionjax import arguments
from fusionjax.blocks import Bottleneck, ResidualBlock, Shortcut
from fusionjax.layers import ModuleDef, max_pool, reused
from fusionjax.models.base import ImageClassifier, check_image_batch

Stem = Literal["imagenet", "cifar", "deep"]
DownsampleBlock = Literal["first", "last"]


def _block_class(block: ModuleDef) -> type[ResidualBlock]:
    return block.func if isinstance(block, functools.partial) else block


class ResNet(ImageClassifier):
    """Stem → stages of residual blocks (by default, the first block of stages 2+ strides by 2) → pool → linear.

    ``stem='imagenet'`` is a 7×7/2 conv and a 3×3/2 max pool (input /4); ``stem='deep'`` three 3×3 convs
    (``stem_width``/2, ``stem_width``/2, ``stem_width``; the first strides by 2) and the max pool (ResNet-C/D,
    He et al. 2019; timm's ``stem_type='deep'``), the first two of widths ``deep_stem_widths`` when given (timm's
    ``'deep_tiered'`` stem: 24, 32); ``stem='cifar'`` a 3×3/1 conv. With pre-activation blocks the
    stem has no norm and a final norm→act follows the last stage. The max pool pads with −inf (PyTorch);
    ``stem_pool_pad_value=0.0`` pads with zeros as Keras's ``ZeroPadding2D`` does, which differs where the stem's
    output is negative (pre-activation nets).
    ``downsample_block='first'`` strides in the first block of stages 2+ (torchvision); ``'last'`` in the last
    block of every stage but the last (Keras's and TF-slim's ResNet v2), and a stage's feature is then the last
    map at its resolution, so ``features`` keep the strides /4, /8, /16, /32.
    ``__call__(x, train, features=True)`` returns a dict of the stem's, every stage's, the pooled and the
    logits' outputs, for backbones (FPN) and for layer-by-layer comparisons.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    block: ModuleDef = Bottleneck
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stem: Stem = "imagenet"
    stem_width: int = 64
    deep_stem_widths: Sequence[int] | None = None
    stem_pool_pad_value: float = float("-inf")
    shortcut: Shortcut = "projection"
    downsample_block: DownsampleBlock = "first"

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        arguments.positive_ints(owner, "stage_sizes", self.stage_sizes)
        arguments.positive_ints(owner, "stage_widths", self.stage_widths)
        if len(self.stage_sizes) != len(self.stage_widths):
            raise arguments.ModelArgumentError(
                f"{owner}: stage_sizes {tuple(self.stage_sizes)} and stage_widths {tuple(self.stage_widths)} must "
                "name the same number of stages.")
        arguments.one_of(owner, "stem", self.stem, get_args(Stem))
        arguments.positive_int(owner, "stem_width", self.stem_width)
        if self.stem == "deep" and self.deep_stem_widths is None and self.stem_width < 2:
            raise arguments.ModelArgumentError(f"{owner}: stem='deep' halves stem_width in its first two convs; "
                                               f"stem_width must be ≥ 2, got {self.stem_width}.")
        if self.deep_stem_widths is not None:
            arguments.positive_ints(owner, "deep_stem_widths", self.deep_stem_widths)
            if len(self.deep_stem_widths) != 2:
                raise arguments.ModelArgumentError(f"{owner}: deep_stem_widths are the widths of the deep stem's "
                                                   f"first two convs, got {tuple(self.deep_stem_widths)}.")
        arguments.one_of(owner, "shortcut", self.shortcut, get_args(Shortcut))
        arguments.one_of(owner, "downsample_block", self.downsample_block, get_args(DownsampleBlock))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features: bool = False):
        check_image_batch(x, self.in_channels, type(self).__name__)
        conv, norm = self._parts()
        preactivated = _block_class(self.block).preactivated
        outputs = {}
        if self.stem == "imagenet":
            x = conv(self.stem_width, 7, strides=2, name="conv1")(x)
        elif self.stem == "deep":
            first, second = self.deep_stem_widths or (self.stem_width // 2,) * 2
            x = self.act(norm(name="stem_bn1")(conv(first, 3, strides=2, name="stem_conv1")(x), train))
            x = self.act(norm(name="stem_bn2")(conv(second, 3, name="stem_conv2")(x), train))
            x = conv(self.stem_width, 3, name="stem_conv3")(x)
        else:  # cifar
            x = conv(self.stem_width, 3, name="conv1")(x)
        if not preactivated:
            x = self.act(norm(name="bn1")(x, train))
        if self.stem == "cifar":
            x = reused(x, train=train)  # read by both paths of block 1
        elif self.stem_pool_pad_value == float("-inf"):
            x = max_pool(x)
        else:
            pad = jnp.asarray(self.stem_pool_pad_value, x.dtype)
            x = max_pool(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad), padding=0)
        outputs["stem"] = x

        block = functools.partial(self.block, shortcut=self.shortcut, zero_init_last=self.zero_init_last,
                                  conv=conv, norm=norm, act=self.act)
        rates = iter(self._drop_path_rates(sum(self.stage_sizes)))
        last_stage = len(self.stage_sizes) - 1
        for stage, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths, strict=True)):
            for j in range(size):
                if self.downsample_block == "first":
                    strides = 2 if stage > 0 and j == 0 else 1
                else:  # last
                    strides = 2 if stage < last_stage and j == size - 1 else 1
                if strides == 2 and self.downsample_block == "last":
                    outputs[f"stage{stage + 1}"] = x  # the last map at this stage's resolution
                x = block(width, strides=strides, drop_path=next(rates), name=f"layer{stage + 1}_{j}")(x, train)
            outputs.setdefault(f"stage{stage + 1}", x)
        if preactivated:
            x = self.act(norm(name="final_bn")(x, train))
        return self._head(x, outputs, features, name="fc")
