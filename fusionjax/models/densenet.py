"""DenseNet (Huang et al. 2017): torchvision's ImageNet DenseNet-121/161/169/201 and the CIFAR DenseNet-BC."""

from typing import Literal, Sequence

import flax.linen as nn
import jax

from fusionjax.blocks import DenseBlock, Transition
from fusionjax.layers import max_pool
from fusionjax.models.base import ImageClassifier, check_image_batch


class DenseNet(ImageClassifier):
    """Stem → dense blocks joined by transitions (compression θ) → norm→act → global pool → linear.

    ``stem='imagenet'``: 7×7/2 conv, norm, act, 3×3/2 max pool (torchvision's ``features.conv0…pool0``);
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
    stem: Literal["imagenet", "cifar"] = "imagenet"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features: bool = False):
        check_image_batch(x, self.in_channels, type(self).__name__)
        conv, norm = self._parts()
        outputs = {}
        if self.stem == "imagenet":
            x = conv(self.num_init_features, 7, strides=2, name="conv0")(x)
            x = max_pool(self.act(norm(name="norm0")(x, train)))
        elif self.stem == "cifar":
            x = conv(self.num_init_features, 3, name="conv0")(x)
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}.")
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
