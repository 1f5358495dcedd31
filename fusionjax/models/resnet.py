"""One ResNet class for every residual family in the zoo: the family is data (block, stage sizes, widths, stem).

ImageNet ResNet/ResNeXt/Wide ResNet as torchvision builds them, SE-ResNet, pre-activation ResNet (v2), and the
CIFAR networks of He et al. 2016 §4.2, Zagoruyko & Komodakis 2016 and Xie et al. 2017.
"""

import functools
from typing import Literal, Sequence

import flax.linen as nn
import jax

from fusionjax.blocks import Bottleneck, ResidualBlock
from fusionjax.layers import ModuleDef, max_pool, reused
from fusionjax.models.base import ImageClassifier, check_image_batch


def _block_class(block: ModuleDef) -> type[ResidualBlock]:
    return block.func if isinstance(block, functools.partial) else block


class ResNet(ImageClassifier):
    """Stem → stages of residual blocks (the first block of stages 2+ strides by 2) → global pool → linear.

    ``stem='imagenet'`` is a 7×7/2 conv and a 3×3/2 max pool (input /4); ``stem='cifar'`` a 3×3/1 conv.
    With pre-activation blocks the stem has no norm and a final norm→act follows the last stage.
    ``__call__(x, train, features=True)`` returns a dict of the stem's, every stage's, the pooled and the
    logits' outputs, for backbones (FPN) and for layer-by-layer comparisons.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    block: ModuleDef = Bottleneck
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stem: Literal["imagenet", "cifar"] = "imagenet"
    stem_width: int = 64
    shortcut: Literal["projection", "zero_pad"] = "projection"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features: bool = False):
        check_image_batch(x, self.in_channels, type(self).__name__)
        conv, norm = self._parts()
        preactivated = _block_class(self.block).preactivated
        outputs = {}
        if self.stem == "imagenet":
            x = conv(self.stem_width, 7, strides=2, name="conv1")(x)
        elif self.stem == "cifar":
            x = conv(self.stem_width, 3, name="conv1")(x)
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}.")
        if not preactivated:
            x = self.act(norm(name="bn1")(x, train))
        x = max_pool(x) if self.stem == "imagenet" else reused(x, train=train)  # read by both paths of block 1
        outputs["stem"] = x

        block = functools.partial(self.block, shortcut=self.shortcut, zero_init_last=self.zero_init_last,
                                  conv=conv, norm=norm, act=self.act)
        rates = iter(self._drop_path_rates(sum(self.stage_sizes)))
        for stage, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths, strict=True)):
            for j in range(size):
                strides = 2 if stage > 0 and j == 0 else 1
                x = block(width, strides=strides, drop_path=next(rates), name=f"layer{stage + 1}_{j}")(x, train)
            outputs[f"stage{stage + 1}"] = x
        if preactivated:
            x = self.act(norm(name="final_bn")(x, train))
        return self._head(x, outputs, features, name="fc")
