"""timm's state_dict keys ↔ fusionjax variable paths (timm.models.resnet and .densenet, v1.0).

timm's ResNets and DenseNets name their layers as torchvision's do; its variants add a deep stem (``conv1`` becomes
a Sequential of three convs with BatchNorms between), the average-pool shortcut (``downsample`` becomes pool,
conv, BatchNorm: the conv is ``downsample.1``, a BatchNorm in the projection shortcut) and a channel gate named
``se`` (SE: two 1×1 convs with bias; ECA: one 1-D conv). Its DenseNets' deep stem adds ``features.conv1``/``conv2``
and their norms.
"""

import dataclasses

from fusionjax.convert.mapping import CONV, CONV1D, VECTOR, KeyRule
from fusionjax.convert.tables import torchvision
from fusionjax.convert.tables.torchvision import batchnorm


def _only(family: str, *rules: KeyRule) -> list[KeyRule]:
    """``rules`` for one family: both ResNet's and DenseNet's deep stems name a ``stem_conv1``."""
    return [dataclasses.replace(rule, family=family) for rule in rules]


_BLOCK = "layer{stage}.{block}"
_JAX_BLOCK = "layer{stage}_{block}"
KEY_TABLE: tuple[KeyRule, ...] = (
    *torchvision.KEY_TABLE,
    # deep stem (resnet*c/d/s): 3×3 conv, BN, ReLU, 3×3 conv, BN, ReLU, 3×3 conv; bn1 follows as usual
    *_only("resnet", KeyRule("conv1.0.weight", "params/stem_conv1/kernel", CONV), *batchnorm("conv1.1", "stem_bn1"),
           KeyRule("conv1.3.weight", "params/stem_conv2/kernel", CONV), *batchnorm("conv1.4", "stem_bn2"),
           KeyRule("conv1.6.weight", "params/stem_conv3/kernel", CONV)),
    # average-pool shortcut (resnet*d): AvgPool2d (no weights), 1×1 conv, BN
    KeyRule(_BLOCK + ".downsample.1.weight", f"params/{_JAX_BLOCK}/avg_down_conv/kernel", CONV),
    *batchnorm(_BLOCK + ".downsample.2", f"{_JAX_BLOCK}/avg_down_bn"),
    # channel gates
    KeyRule(_BLOCK + ".se.fc{n}.weight", f"params/{_JAX_BLOCK}/se/fc{{n}}/kernel", CONV),
    KeyRule(_BLOCK + ".se.fc{n}.bias", f"params/{_JAX_BLOCK}/se/fc{{n}}/bias", VECTOR),
    KeyRule(_BLOCK + ".se.conv.weight", f"params/{_JAX_BLOCK}/eca/kernel", CONV1D),
    # DenseNet's deep stem (densenet264d): torchvision's conv0/norm0, then features.conv1/conv2 and their norms
    # (features.norm0 and norm5 take torchvision's rules, which come first)
    *_only("densenet", KeyRule("features.conv{n}.weight", "params/stem_conv{n}/kernel", CONV),
           *batchnorm("features.norm{n}", "stem_norm{n}")),
)
