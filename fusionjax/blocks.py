"""Residual (add) and dense (concat) blocks, Flax linen, NHWC.

Every block takes ``(x, train)`` and is built from three injectable parts, as in the Flax ImageNet example:
``conv`` and ``norm`` (module partials that carry the compute ``dtype`` and any shared options; a model binds them
once) and ``act``. Blocks also honour ``drop_path`` (stochastic depth on the branch) and ``zero_init_last`` (the
branch starts as zero, so the block starts as the identity or adds nothing). Submodule names follow torchvision's
(``conv1``, ``bn1``, ``downsample_conv``, ``norm1``…) so the converter's key table stays one line per layer kind.
"""

import math
from typing import Callable, ClassVar, Literal, Sequence, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fusionjax import arguments
from fusionjax.fusion import add, concat
from fusionjax.layers import (BatchNorm, Conv2d, DropPath, ModuleDef, avg_pool, avg_pool_ceil, global_avg_pool,
                              reused)

Shortcut = Literal["projection", "zero_pad", "avg_down", "subsample"]

def _zeros_if(flag: bool, init_name: str) -> dict:
    """``{init_name: zeros}`` when ``flag``: the keyword that makes a layer start at zero (``zero_init_last``)."""
    return {init_name: nn.initializers.zeros} if flag else {}


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features, through two 1×1
    convolutions with bias (timm's ``SEModule``). The first has C / ``reduction`` channels, rounded down (at least
    1), or with ``divisor`` rounded to the nearest multiple of it, at least ``divisor`` (timm's ``make_divisible``,
    which its ResNets' SE blocks use with 8)."""

    reduction: int = 16
    divisor: int | None = None
    conv: ModuleDef = Conv2d
    act: Callable = nn.relu

    def __post_init__(self):
        super().__post_init__()
        arguments.positive_int(type(self).__name__, "reduction", self.reduction)
        arguments.optional_positive_int(type(self).__name__, "divisor", self.divisor)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        if self.divisor is None:
            reduced = max(1, channels // self.reduction)
        else:
            step = self.divisor
            reduced = max(step, int(channels / self.reduction + step / 2) // step * step)
        gates = global_avg_pool(x)[:, None, None, :]
        gates = self.act(self.conv(reduced, 1, use_bias=True, name="fc1")(gates))
        gates = jax.nn.sigmoid(self.conv(channels, 1, use_bias=True, name="fc2")(gates))
        return x * gates.astype(x.dtype)


class EfficientChannelAttention(nn.Module):
    """ECA (Wang et al. 2020): channel gates from globally pooled features through one 1-D convolution across the
    channels, no reduction, its size k = the odd number nearest (log2 C + beta) / gamma, at least 3 (timm's
    ``EcaModule``). The gates are N·C values, computed in float32 whatever the model's dtype.
    """

    gamma: int = 2
    beta: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        t = int(abs(math.log(x.shape[-1], 2) + self.beta) / self.gamma)  # timm's formula, to the float
        k = max(t if t % 2 else t + 1, 3)
        # PyTorch's Conv1d default, U(±1/sqrt(fan_in))
        init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=(0, 1), out_axis=2)
        kernel = self.param("kernel", init, (k, 1, 1), jnp.float32)
        pooled = global_avg_pool(x).astype(jnp.float32)[..., None]  # (N, C, 1): the channels are the 1-D axis
        gates = lax.conv_general_dilated(pooled, kernel, (1,), [(k // 2, k // 2)],
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        return x * jax.nn.sigmoid(gates[..., 0])[:, None, None, :].astype(x.dtype)


class ResidualBlock(nn.Module):
    """Options and helpers shared by the residual blocks; use a subclass.

    ``shortcut`` says how the identity path changes shape when the branch does: ``'projection'`` (a strided
    1×1 conv, followed by a norm in post-activation blocks; torchvision's ``downsample``), ``'zero_pad'``
    (He et al. 2016's option A for CIFAR: subsample, pad the new channels with zeros, no parameters),
    ``'avg_down'`` (ResNet-D, He et al. 2019: a 2×2 average pool, ceil mode, then a 1×1 conv and a norm; timm's
    ``avg_down``; post-activation blocks) or ``'subsample'`` (strided subsampling where only the size changes,
    a 1×1 projection where the channels do; Keras's ResNet v2).
    ``se_reduction`` adds a squeeze-excite gate on the branch (SE-ResNet; ``se_divisor`` rounds its width as
    ``SqueezeExcite.divisor`` does), ``eca`` an ECA gate (ECA-Net).
    """

    features: int
    strides: int = 1
    shortcut: Shortcut = "projection"
    se_reduction: int | None = None
    se_divisor: int | None = None
    eca: bool = False
    drop_path: float = 0.0
    zero_init_last: bool = False
    conv: ModuleDef = Conv2d
    norm: ModuleDef = BatchNorm
    act: Callable = nn.relu

    expansion: ClassVar[int] = 1  # output channels = features * expansion
    preactivated: ClassVar[bool] = False  # True: the block starts with norm→act; the model adds a final norm

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        arguments.positive_int(owner, "features", self.features)
        arguments.positive_int(owner, "strides", self.strides)
        arguments.one_of(owner, "shortcut", self.shortcut, get_args(Shortcut))
        arguments.optional_positive_int(owner, "se_reduction", self.se_reduction)
        arguments.optional_positive_int(owner, "se_divisor", self.se_divisor)
        arguments.rate(owner, "drop_path", self.drop_path)

    @property
    def out_features(self) -> int:
        return self.features * self.expansion

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
        if self.shortcut == "subsample" and x.shape[-1] == out:
            return x[:, :: self.strides, :: self.strides, :]
        if self.shortcut == "avg_down":
            if not with_norm:
                raise ValueError("shortcut='avg_down' is for post-activation blocks; use 'projection'.")
            pooled = avg_pool_ceil(source, self.strides, self.strides) if self.strides > 1 else source
            return self.norm(name="avg_down_bn")(self.conv(out, 1, name="avg_down_conv")(pooled), train)
        if not with_norm:
            return self.conv(out, 1, strides=self.strides, name="shortcut_conv")(source)
        y = self.conv(out, 1, strides=self.strides, name="downsample_conv")(source)
        return self.norm(name="downsample_bn")(y, train)

    def _gate(self, branch: jax.Array) -> jax.Array:
        """The branch through its channel gate, if any. Blocks call it before their shortcut's layers, so that
        parameters come in timm's order (``se`` before ``downsample``)."""
        if self.se_reduction:
            branch = SqueezeExcite(self.se_reduction, self.se_divisor, conv=self.conv, act=self.act, name="se")(branch)
        if self.eca:
            branch = EfficientChannelAttention(name="eca")(branch)
        return branch

    def _merge(self, branch: jax.Array, shortcut: jax.Array, train: bool) -> jax.Array:
        """The block's output: shortcut + the gated branch, then ``act`` unless the block is pre-activated."""
        out = add(shortcut, DropPath(self.drop_path)(branch, train))
        return reused(out if self.preactivated else self.act(out), train=train)  # the residual stream


class BasicBlock(ResidualBlock):
    """Two 3×3 convs (ResNet-18/34, CIFAR ResNets): conv→BN→ReLU→conv→BN, add, ReLU."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self.conv(self.features, 3, strides=self.strides, name="conv1")(x)
        y = self.act(self.norm(name="bn1")(y, train))
        y = self.conv(self.features, 3, name="conv2")(y)
        y = self.norm(name="bn2", **_zeros_if(self.zero_init_last, "scale_init"))(y, train)
        return self._merge(self._gate(y), self._shortcut(x, x, train, with_norm=True), train)


def _bottleneck_width(block) -> int:
    """The inner width of a bottleneck: ``features · base_width / 64`` per group (ResNeXt's cardinality)."""
    return int(block.features * (block.base_width / 64.0)) * block.groups


def _check_bottleneck_width(block) -> None:
    owner = type(block).__name__
    arguments.positive_int(owner, "groups", block.groups)
    arguments.positive_int(owner, "base_width", block.base_width)
    if _bottleneck_width(block) < 1:
        raise arguments.ModelArgumentError(
            f"{owner}: features · base_width / 64 = {block.features} · {block.base_width} / 64 leaves no inner "
            "channels; raise features or base_width.")


class Bottleneck(ResidualBlock):
    """1×1 reduce → 3×3 (stride here, torchvision's "v1.5") → 1×1 expand ×4.

    ``groups`` and ``base_width`` give ResNeXt (e.g. 32 groups of width 4) and Wide ResNet (base_width 128).
    ``stride_in_1x1`` moves the stride to the first 1×1, as in He et al.'s original ResNet v1 and Keras's.
    """

    groups: int = 1
    base_width: int = 64
    stride_in_1x1: bool = False
    expansion: ClassVar[int] = 4

    def __post_init__(self):
        super().__post_init__()
        _check_bottleneck_width(self)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = _bottleneck_width(self)
        first, second = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
        y = self.act(self.norm(name="bn1")(self.conv(width, 1, strides=first, name="conv1")(x), train))
        y = self.conv(width, 3, strides=second, groups=self.groups, name="conv2")(y)
        y = self.act(self.norm(name="bn2")(y, train))
        y = self.conv(self.out_features, 1, name="conv3")(y)
        y = self.norm(name="bn3", **_zeros_if(self.zero_init_last, "scale_init"))(y, train)
        return self._merge(self._gate(y), self._shortcut(x, x, train, with_norm=True), train)


class PreActBasicBlock(ResidualBlock):
    """Pre-activation basic block (He et al. 2016b; Wide ResNet with ``dropout_rate``): BN→ReLU→conv twice.

    A projection shortcut reads the pre-activated input, as in the paper and Zagoruyko & Komodakis' code. A conv
    followed by a norm never takes a bias, whatever ``conv`` binds (Keras's ResNet v2 biases only the others).
    """

    dropout_rate: float = 0.0
    preactivated: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        arguments.rate(type(self).__name__, "dropout_rate", self.dropout_rate)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pre = self.act(self.norm(name="bn1")(x, train))
        shortcut = self._shortcut(x, pre, train, with_norm=False)
        y = self.conv(self.features, 3, strides=self.strides, use_bias=False, name="conv1")(pre)
        y = self.act(self.norm(name="bn2")(y, train))
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = self.conv(self.features, 3, name="conv2", **_zeros_if(self.zero_init_last, "kernel_init"))(y)
        return self._merge(self._gate(y), shortcut, train)


class PreActBottleneck(ResidualBlock):
    """Pre-activation bottleneck (He et al. 2016b, ResNet-164 and ResNet v2): (BN→ReLU→conv) ×3, 1×1-3×3-1×1.

    A conv followed by a norm never takes a bias, whatever ``conv`` binds (Keras's ResNet v2 biases only the
    others).
    """

    groups: int = 1
    base_width: int = 64
    expansion: ClassVar[int] = 4
    preactivated: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        _check_bottleneck_width(self)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        width = _bottleneck_width(self)
        pre = self.act(self.norm(name="bn1")(x, train))
        shortcut = self._shortcut(x, pre, train, with_norm=False)
        y = self.conv(width, 1, use_bias=False, name="conv1")(pre)
        y = self.act(self.norm(name="bn2")(y, train))
        y = self.conv(width, 3, strides=self.strides, groups=self.groups, use_bias=False, name="conv2")(y)
        y = self.act(self.norm(name="bn3")(y, train))
        y = self.conv(self.out_features, 1, name="conv3", **_zeros_if(self.zero_init_last, "kernel_init"))(y)
        return self._merge(self._gate(y), shortcut, train)


class PlainBlock(ResidualBlock):
    """BasicBlock without the shortcut: the "plain" network of He et al.'s degradation experiment (Fig. 6).

    With no identity path to fall back on, dropping or zeroing the branch would cut the network, so
    ``drop_path`` and ``zero_init_last`` are refused here.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.drop_path or self.zero_init_last or self.se_reduction or self.eca:
            raise ValueError("PlainBlock has no shortcut: drop_path, zero_init_last, se_reduction and eca need one.")
        y = self.act(self.norm(name="bn1")(self.conv(self.features, 3, strides=self.strides, name="conv1")(x), train))
        return self.act(self.norm(name="bn2")(self.conv(self.features, 3, name="conv2")(y), train))


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

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        arguments.positive_int(owner, "growth_rate", self.growth_rate)
        arguments.optional_positive_int(owner, "bn_size", self.bn_size)
        arguments.rate(owner, "drop_rate", self.drop_rate)
        arguments.rate(owner, "drop_path", self.drop_path)

    @nn.compact
    def __call__(self, inputs: jax.Array | Sequence[jax.Array], train: bool = False) -> jax.Array:
        features = [inputs] if isinstance(inputs, jax.Array) else list(inputs)
        last_init = _zeros_if(self.zero_init_last, "kernel_init")
        if self.bn_size is None:
            y = self.act(self.norm(name="norm1")(concat(*features), train))
            y = self.conv(self.growth_rate, 3, name="conv1", **last_init)(y)
        else:
            def bottleneck(module: "DenseLayer", features: list[jax.Array]) -> jax.Array:
                y = module.act(module.norm(name="norm1")(concat(*features), train))
                return module.conv(module.bn_size * module.growth_rate, 1, name="conv1")(y)

            if self.memory_efficient:
                bottleneck = nn.remat(bottleneck)
            y = self.act(self.norm(name="norm2")(bottleneck(self, features), train))
            y = self.conv(self.growth_rate, 3, name="conv2", **last_init)(y)
        y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
        return reused(DropPath(self.drop_path)(y, train), train=train)  # read by every later layer of the block


class DenseBlock(nn.Module):
    """``num_layers`` DenseLayers, each fed the concatenation of the block input and all earlier layers' outputs.

    Returns that concatenation with the last layer's maps. ``drop_path`` is one rate for every layer, or one rate
    per layer.
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

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        arguments.positive_int(owner, "num_layers", self.num_layers)
        if len(self._rates()) != self.num_layers:
            raise arguments.ModelArgumentError(
                f"{owner}: {len(self._rates())} drop_path rates for {self.num_layers} layers.")
        for rate in self._rates():
            arguments.rate(owner, "drop_path", rate)

    def _rates(self) -> Sequence[float]:
        return [self.drop_path] * self.num_layers if isinstance(self.drop_path, (int, float)) else self.drop_path

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        rates = self._rates()
        features = [x]
        for i, rate in enumerate(rates):
            layer = DenseLayer(
                growth_rate=self.growth_rate, bn_size=self.bn_size, drop_rate=self.drop_rate,
                memory_efficient=self.memory_efficient, drop_path=rate, zero_init_last=self.zero_init_last,
                conv=self.conv, norm=self.norm, act=self.act, name=f"denselayer{i + 1}",
            )
            features.append(layer(features, train))
        return concat(*features)


class Transition(nn.Module):
    """DenseNet's transition: BN→ReLU→1×1 conv to ⌊θ·C⌋ channels (compression θ)→2×2 average pool."""

    compression: float = 0.5
    conv: ModuleDef = Conv2d
    norm: ModuleDef = BatchNorm
    act: Callable = nn.relu

    def __post_init__(self):
        super().__post_init__()
        arguments.fraction(type(self).__name__, "compression", self.compression)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = self.act(self.norm(name="norm")(x, train))
        return avg_pool(self.conv(int(x.shape[-1] * self.compression), 1, name="conv")(y))


class HybridBlock(ResidualBlock):
    """Inner concat, outer add: a small dense block whose new maps, fused by a 1×1 conv, form a residual branch.

    The dense part reuses features inside the block (DenseNet), the shortcut keeps the gradient path short
    across blocks (ResNet), as in dual-path designs. ``features`` is the output width; the inner dense part
    has ``num_layers`` layers of ``growth_rate`` maps each.
    """

    growth_rate: int = 32
    num_layers: int = 2
    bn_size: int = 4

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        arguments.positive_int(owner, "growth_rate", self.growth_rate)
        arguments.positive_int(owner, "num_layers", self.num_layers)
        arguments.positive_int(owner, "bn_size", self.bn_size)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dense = DenseBlock(num_layers=self.num_layers, growth_rate=self.growth_rate, bn_size=self.bn_size,
                           conv=self.conv, norm=self.norm, act=self.act, name="dense")
        new_maps = dense(x, train)[..., x.shape[-1]:]
        y = self.conv(self.features, 1, strides=self.strides, name="fuse_conv")(new_maps)
        y = self.norm(name="fuse_bn", **_zeros_if(self.zero_init_last, "scale_init"))(y, train)
        return self._merge(self._gate(y), self._shortcut(x, x, train, with_norm=True), train)
