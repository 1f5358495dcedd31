"""The networks the claims need beyond the zoo's names, built from the zoo's own classes and blocks.

CIFAR-style ResNets and plain nets (He et al. 2016 §4.2: 6n+2 layers, widths 16/32/64, option-A shortcuts) at
any depth, with or without BatchNorm, post- or pre-activation, with another initialization, unrolled or scanned
(the identical blocks of a stage as one ``nn.scan``, which XLA compiles once instead of once per block); and
DenseNet-BC (Huang et al. 2017) at any depth and growth rate.
"""

import functools
from typing import Any, Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from fusionjax.blocks import BasicBlock, PlainBlock, PreActBasicBlock
from fusionjax.layers import BatchNorm, Conv2d, ModuleDef, conv_kernel_init, reused, variance_scaling
from fusionjax.models import DenseNet, ResNet, create_model, list_models
from fusionjax.models.base import check_image_batch

# He et al. 2015's initialization as torchvision applies it (fan-out), and the same with half its variance.
INITS = {
    "he": conv_kernel_init,
    "he/2": variance_scaling(1.0, "fan_out", "normal"),
}


class NoNorm(nn.Module):
    """No normalization, with a norm's ``(x, train)`` signature: for networks without BatchNorm.

    Where a block asks for a zero-initialized last norm (``zero_init_last`` passes ``scale_init``), a per-channel
    scale with that initializer stands in for BatchNorm's γ, so the branch still starts at zero (SkipInit, De &
    Smith 2020).
    """

    scale_init: Callable | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        if self.scale_init is None:
            return x
        return x * self.param("scale", self.scale_init, (x.shape[-1],), jnp.float32).astype(x.dtype)


def cifar_depth_blocks(depth: int) -> int:
    """Blocks per stage of a 6n+2-layer CIFAR network."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNets have 6n+2 layers (8, 14, 20, 56, 110, 200…), got {depth}.")
    return (depth - 2) // 6


class _Repeated(nn.Module):
    """One block as ``nn.scan``'s body: the residual stream is the carry."""

    block: ModuleDef
    train: bool

    @nn.compact
    def __call__(self, x: jax.Array, _) -> tuple[jax.Array, None]:
        return self.block(name="block")(x, self.train), None


class ScannedCifarResNet(ResNet):
    """A CIFAR ``ResNet`` whose blocks after each stage's first run as one ``nn.scan`` over their stacked weights.

    The same network as ``ResNet`` with ``stem='cifar'``: block ``layer{s}_0`` (the one that strides and widens) is
    unrolled, and blocks ``layer{s}_1…`` are ``layer{s}_rest/block``, each of their variables with a leading axis
    of ``stage_sizes[s] − 1``. XLA compiles the scanned block once per stage, so a 1202-layer net compiles about
    as fast as a 20-layer one.
    """

    def __post_init__(self):
        super().__post_init__()
        if self.stem != "cifar" or self.downsample_block != "first" or self.drop_path:
            raise ValueError("ScannedCifarResNet is the CIFAR layout: stem='cifar', downsample_block='first' and no "
                             "drop_path (its per-block rate would differ between the scanned blocks).")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features: bool = False):
        check_image_batch(x, self.in_channels, type(self).__name__)
        conv, norm = self._parts()
        preactivated = self.block.preactivated
        x = conv(self.stem_width, 3, name="conv1")(x)
        if not preactivated:
            x = self.act(norm(name="bn1")(x, train))
        outputs = {"stem": (x := reused(x, train=train))}
        block = functools.partial(self.block, shortcut=self.shortcut, zero_init_last=self.zero_init_last,
                                  conv=conv, norm=norm, act=self.act)
        for stage, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths, strict=True)):
            x = block(width, strides=2 if stage else 1, name=f"layer{stage + 1}_0")(x, train)
            if size > 1:
                stack = nn.scan(_Repeated, variable_axes={"params": 0, "batch_stats": 0},
                                split_rngs={"params": True}, length=size - 1)
                x, _ = stack(functools.partial(block, width), train, name=f"layer{stage + 1}_rest")(x, None)
            outputs[f"stage{stage + 1}"] = x
        if preactivated:
            x = self.act(norm(name="final_bn")(x, train))
        return self._head(x, outputs, features, name="fc")


def cifar_net(depth: int, *, kind: Literal["residual", "plain", "preact"] = "residual", batch_norm: bool = True,
              init: str = "he", zero_init_last: bool = False, in_channels: int = 1, num_classes: int = 10,
              scan: bool = False) -> ResNet:
    """A 6n+2-layer CIFAR network (``resnet20``… and ``plain20``… of the zoo are ``kind='residual'/'plain'``);
    ``scan=True`` builds it as ``ScannedCifarResNet``."""
    n = cifar_depth_blocks(depth)
    block = {"residual": BasicBlock, "plain": PlainBlock, "preact": PreActBasicBlock}[kind]
    network = ScannedCifarResNet if scan else ResNet
    return network(stage_sizes=(n, n, n), block=block, stage_widths=(16, 32, 64), stem="cifar", stem_width=16,
                   shortcut="zero_pad", num_classes=num_classes, in_channels=in_channels,
                   zero_init_last=zero_init_last, conv=functools.partial(Conv2d, kernel_init=INITS[init]),
                   norm=BatchNorm if batch_norm else NoNorm)


def densenet_bc(depth: int, growth_rate: int, *, in_channels: int = 1, num_classes: int = 10,
                memory_efficient: bool = False) -> DenseNet:
    """DenseNet-BC for small images: three dense blocks of (depth − 4)/6 bottleneck layers, compression 0.5
    (``densenet_bc_100_12`` of the zoo is ``densenet_bc(100, 12, in_channels=3)``)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"DenseNet-BC has 6n+4 layers (10, 16, 22, 40, 100, 250…), got {depth}.")
    n = (depth - 4) // 6
    return DenseNet(block_config=(n, n, n), growth_rate=growth_rate, num_init_features=2 * growth_rate, stem="cifar",
                    num_classes=num_classes, in_channels=in_channels, memory_efficient=memory_efficient)


def cifar_model(kind: Literal["residual", "plain", "preact"], depth: int) -> ResNet:
    """The zoo's ``resnet{depth}`` / ``plain{depth}`` for one-channel images where the zoo has the name, else the
    same architecture from ``cifar_net`` (other depths, pre-activation)."""
    name = {"residual": "resnet", "plain": "plain"}.get(kind, "") + str(depth)
    if kind != "preact" and name in list_models():
        return create_model(name, in_channels=1)
    return cifar_net(depth, kind=kind)
