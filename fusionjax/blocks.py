"""Residual (add) and dense (concat) blocks, Flax linen, NHWC.

Every block takes ``(x, train)``, computes in ``dtype`` with float32 parameters, and honours ``drop_path``
(stochastic depth on its branch), ``zero_init_last`` (its branch starts as zero, so the block starts as the
identity or adds nothing), an injectable ``norm`` (``BatchNorm`` or ``GroupNorm``, see ``fusionjax.layers``),
``act`` and ``conv``. Submodule names follow torchvision's (``conv1``, ``bn1``, ``downsample_conv``, ``norm1``…)
so the converter's key table stays one line per layer kind.
"""

from typing import Callable, ClassVar, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fusionjax.fusion import add, concat
from fusionjax.layers import (
    BatchNorm, Conv2d, DropPath, Dtype, ModuleDef, avg_pool, global_avg_pool, materialized,
)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features."""

    reduction: int = 16
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        gates = global_avg_pool(x)
        gates = nn.relu(nn.Dense(max(1, channels // self.reduction), dtype=self.dtype, name="fc1")(gates))
        gates = jax.nn.sigmoid(nn.Dense(channels, dtype=self.dtype, name="fc2")(gates))
        return x * gates[:, None, None, :].astype(x.dtype)


class ResidualBlock(nn.Module):
    """Options and helpers shared by the residual blocks; use a subclass.

    ``shortcut`` says how the identity path changes shape when the branch does: ``'projection'`` (a strided
    1×1 conv, followed by a norm in post-activation blocks; torchvision's ``downsample``) or ``'zero_pad'``
    (He et al. 2016's option A for CIFAR: subsample, pad the new channels with zeros, no parameters).
    ``se_reduction`` adds a squeeze-excite gate on the branch (SE-ResNet).
    """

    features: int
    strides: int = 1
    shortcut: Literal["projection", "zero_pad"] = "projection"
    se_reduction: int | None = None
    drop_path: float = 0.0
    zero_init_last: bool = False
    conv: ModuleDef = Conv2d
    norm: ModuleDef = BatchNorm
    act: Callable = nn.relu
    dtype: Dtype = jnp.float32

    expansion: ClassVar[int] = 1  # output channels = features * expansion
    preactivated: ClassVar[bool] = False  # True: the block starts with norm→act; the model adds a final norm

    @property
    def out_features(self) -> int:
        return self.features * self.expansion

    def _conv(self, features: int, kernel_size: int, name: str, strides: int = 1, groups: int = 1, zero=False):
        kwargs = {"kernel_init": nn.initializers.zeros} if zero else {}
        return self.conv(features, kernel_size, strides=strides, groups=groups, dtype=self.dtype, name=name, **kwargs)

    def _norm(self, name: str, zero: bool = False):
        kwargs = {"scale_init": nn.initializers.zeros} if zero else {}
        return self.norm(dtype=self.dtype, name=name, **kwargs)

    def _shortcut(self, x: jax.Array, source: jax.Array, train: bool, with_norm: bool) -> jax.Array:
        """The identity path: ``x`` unchanged, or ``source`` projected / zero-padded to the branch's shape."""
        out = self.out_features
        if self.strides == 1 and x.shape[-1] == out:
            return x
        if self.shortcut == "zero_pad":
            if out < x.shape[-1]:
                raise ValueError(f"shortcut='zero_pad' cannot reduce {x.shape[-1]} channels to {out}; use 'projection'.")
            x = x[:, :: self.strides, :: self.strides, :]
            pad = out - x.shape[-1]
            return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
        if self.shortcut != "projection":
            raise ValueError(f"shortcut must be 'projection' or 'zero_pad', got {self.shortcut!r}.")
        if not with_norm:
            return self._conv(out, 1, "shortcut_conv", strides=self.strides)(source)
        y = self._conv(out, 1, "downsample_conv", strides=self.strides)(source)
        return self._norm("downsample_bn")(y, train)

    def _merge(self, branch: jax.Array, shortcut: jax.Array, train: bool) -> jax.Array:
        """The block's output: shortcut + branch, then ``act`` unless the block is pre-activated."""
        if self.se_reduction:
            branch = SqueezeExcite(self.se_reduction, self.dtype, name="se")(branch)
        out = add(shortcut, DropPath(self.drop_path)(branch, train))
        # The residual stream, stored once: else XLA:CPU recomputes it from the stage's first block in every reader.
        return materialized(out if self.preactivated else self.act(out), train)


class BasicBlock(ResidualBlock):
    """Two 3×3 convs (ResNet-18/34, CIFAR ResNets): conv→BN→ReLU→conv→BN, add, ReLU."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self._conv(self.features, 3, "conv1", strides=self.strides)(x)
        y = self.act(self._norm("bn1")(y, train))
        y = self._conv(self.features, 3, "conv2")(y)
        y = self._norm("bn2", zero=self.zero_init_last)(y, train)
        return self._merge(y, self._shortcut(x, x, train, with_norm=True), train)


class Bottleneck(ResidualBlock):
    """1×1 reduce → 3×3 (stride here, torchvision's "v1.5") → 1×1 expand ×4.

    ``groups`` and ``base_width`` give ResNeXt (e.g. 32 groups of width 4) and Wide ResNet (base_width 128).
    """

    groups: int = 1
    base_width: int = 64
    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = int(self.features * (self.base_width / 64.0)) * self.groups
        y = self.act(self._norm("bn1")(self._conv(width, 1, "conv1")(x), train))
        y = self._conv(width, 3, "conv2", strides=self.strides, groups=self.groups)(y)
        y = self.act(self._norm("bn2")(y, train))
        y = self._norm("bn3", zero=self.zero_init_last)(self._conv(self.out_features, 1, "conv3")(y), train)
        return self._merge(y, self._shortcut(x, x, train, with_norm=True), train)


class PreActBasicBlock(ResidualBlock):
    """Pre-activation basic block (He et al. 2016b; Wide ResNet with ``dropout_rate``): BN→ReLU→conv twice.

    A projection shortcut reads the pre-activated input, as in the paper and Zagoruyko & Komodakis' code.
    """

    dropout_rate: float = 0.0
    preactivated: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pre = self.act(self._norm("bn1")(x, train))
        shortcut = self._shortcut(x, pre, train, with_norm=False)
        y = self._conv(self.features, 3, "conv1", strides=self.strides)(pre)
        y = self.act(self._norm("bn2")(y, train))
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = self._conv(self.features, 3, "conv2", zero=self.zero_init_last)(y)
        return self._merge(y, shortcut, train)


class PreActBottleneck(ResidualBlock):
    """Pre-activation bottleneck (He et al. 2016b, ResNet-164 and ResNet v2): (BN→ReLU→conv) ×3, 1×1-3×3-1×1."""

    groups: int = 1
    base_width: int = 64
    expansion: ClassVar[int] = 4
    preactivated: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = int(self.features * (self.base_width / 64.0)) * self.groups
        pre = self.act(self._norm("bn1")(x, train))
        shortcut = self._shortcut(x, pre, train, with_norm=False)
        y = self._conv(width, 1, "conv1")(pre)
        y = self._conv(width, 3, "conv2", strides=self.strides, groups=self.groups)(self.act(self._norm("bn2")(y, train)))
        y = self._conv(self.out_features, 1, "conv3", zero=self.zero_init_last)(self.act(self._norm("bn3")(y, train)))
        return self._merge(y, shortcut, train)


class PlainBlock(ResidualBlock):
    """BasicBlock without the shortcut: the "plain" network of He et al.'s degradation experiment (Fig. 6).

    With no identity path to fall back on, dropping or zeroing the branch would cut the network, so
    ``drop_path`` and ``zero_init_last`` are refused here.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.drop_path or self.zero_init_last or self.se_reduction:
            raise ValueError("PlainBlock has no shortcut: drop_path, zero_init_last and se_reduction need one.")
        y = self.act(self._norm("bn1")(self._conv(self.features, 3, "conv1", strides=self.strides)(x), train))
        return self.act(self._norm("bn2")(self._conv(self.features, 3, "conv2")(y), train))


class DenseLayer(nn.Module):
    """DenseNet's layer (Huang et al. 2017): from the concatenation of all earlier maps, ``growth_rate`` new ones.

    With ``bn_size`` (DenseNet-B, the default): BN→ReLU→1×1 conv to ``bn_size·growth_rate``→BN→ReLU→3×3 conv to
    ``growth_rate``. With ``bn_size=None``: BN→ReLU→3×3 conv. ``memory_efficient=True`` rematerializes the
    concat→BN→ReLU→1×1 part in the backward pass (``flax.linen.remat``, i.e. ``jax.checkpoint``) instead of
    keeping its wide output, like torchvision's option of the same name: the same numbers, and the residuals kept
    for the backward pass grow linearly, not quadratically, with the number of layers.
    ``zero_init_last`` zero-initializes the last conv, so the layer starts by adding zero-valued features.
    """

    growth_rate: int
    bn_size: int | None = 4
    drop_rate: float = 0.0
    memory_efficient: bool = False
    drop_path: float = 0.0
    zero_init_last: bool = False
    conv: ModuleDef = Conv2d
    norm: ModuleDef = BatchNorm
    act: Callable = nn.relu
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array | Sequence[jax.Array], train: bool = False) -> jax.Array:
        features = [inputs] if isinstance(inputs, jax.Array) else list(inputs)
        last_init = {"kernel_init": nn.initializers.zeros} if self.zero_init_last else {}
        if self.bn_size is None:
            y = self.act(self.norm(dtype=self.dtype, name="norm1")(concat(*features), train))
            y = self.conv(self.growth_rate, 3, dtype=self.dtype, name="conv1", **last_init)(y)
        else:
            def bottleneck(module: "DenseLayer", features: list[jax.Array]) -> jax.Array:
                y = module.act(module.norm(dtype=module.dtype, name="norm1")(concat(*features), train))
                return module.conv(module.bn_size * module.growth_rate, 1, dtype=module.dtype, name="conv1")(y)

            if self.memory_efficient:
                bottleneck = nn.remat(bottleneck)
            y = bottleneck(self, features)
            y = self.act(self.norm(dtype=self.dtype, name="norm2")(y, train))
            y = self.conv(self.growth_rate, 3, dtype=self.dtype, name="conv2", **last_init)(y)
        y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
        # Every later layer adds to this feature's gradient; stored once, the sum is not recomputed by its readers.
        return materialized(DropPath(self.drop_path)(y, train), train)


class DenseBlock(nn.Module):
    """``num_layers`` DenseLayers, each fed the concatenation of the block input and all earlier layers' outputs.

    ``drop_path`` is one rate for every layer, or one rate per layer.
    """

    num_layers: int
    growth_rate: int
    bn_size: int | None = 4
    drop_rate: float = 0.0
    memory_efficient: bool = False
    drop_path: float | Sequence[float] = 0.0
    zero_init_last: bool = False
    conv: ModuleDef = Conv2d
    norm: ModuleDef = BatchNorm
    act: Callable = nn.relu
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        rates = [self.drop_path] * self.num_layers if isinstance(self.drop_path, (int, float)) else self.drop_path
        if len(rates) != self.num_layers:
            raise ValueError(f"DenseBlock: {len(rates)} drop_path rates for {self.num_layers} layers.")
        features = [x]
        for i, rate in enumerate(rates):
            layer = DenseLayer(
                self.growth_rate, self.bn_size, self.drop_rate, self.memory_efficient, rate, self.zero_init_last,
                self.conv, self.norm, self.act, self.dtype, name=f"denselayer{i + 1}",
            )
            features.append(layer(features, train))
        return concat(*features)


class Transition(nn.Module):
    """DenseNet's transition: BN→ReLU→1×1 conv to ⌊θ·C⌋ channels (compression θ)→2×2 average pool."""

    compression: float = 0.5
    conv: ModuleDef = Conv2d
    norm: ModuleDef = BatchNorm
    act: Callable = nn.relu
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self.act(self.norm(dtype=self.dtype, name="norm")(x, train))
        y = self.conv(int(x.shape[-1] * self.compression), 1, dtype=self.dtype, name="conv")(y)
        return avg_pool(y)


class HybridBlock(ResidualBlock):
    """Inner concat, outer add: a small dense block whose new maps, fused by a 1×1 conv, form a residual branch.

    The dense part reuses features inside the block (DenseNet), the shortcut keeps the gradient path short
    across blocks (ResNet), as in dual-path designs. ``features`` is the output width; the inner dense part
    has ``num_layers`` layers of ``growth_rate`` maps each.
    """

    growth_rate: int = 32
    num_layers: int = 2
    bn_size: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        features = [x]
        for i in range(self.num_layers):
            layer = DenseLayer(
                self.growth_rate, self.bn_size, conv=self.conv, norm=self.norm, act=self.act, dtype=self.dtype,
                name=f"denselayer{i + 1}",
            )
            features.append(layer(features, train))
        y = self._conv(self.features, 1, "fuse_conv", strides=self.strides)(concat(*features[1:]))
        y = self._norm("fuse_bn", zero=self.zero_init_last)(y, train)
        return self._merge(y, self._shortcut(x, x, train, with_norm=True), train)
