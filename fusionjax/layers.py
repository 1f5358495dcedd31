"""Layers shared by the fusion primitives, blocks and models: each op said once, as plain JAX.

Every layer keeps float32 parameters and computes in ``dtype``. Norm layers take ``train`` as their second
argument, so blocks can swap BatchNorm for GroupNorm (or any module with that signature) through one ``norm``
partial, the way the Flax ImageNet example swaps them through ``ModuleDef`` partials.

The ops marked ``@platform_op`` (convolution, training-mode BatchNorm, max pooling, ``reused``) run as written on
GPU and TPU; on XLA:CPU they dispatch to ``fusionjax.kernels.xla_cpu`` (same values and gradients), chosen when the
program is lowered. See ``fusionjax.kernels``.
"""

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fusionjax import arguments
from fusionjax.kernels import platform_op

ModuleDef = Any
Dtype = Any


def variance_scaling(scale: float, mode: str, distribution: str) -> Callable:
    """``jax.nn.initializers.variance_scaling(scale, mode, distribution)`` for kernels laid out (..., in, out), with
    the same values: jax's own initializer draws them as a matrix with the same fan and they are reshaped, because
    jax's random bits depend on an element's row-major index only, and XLA:CPU compiles a 2-D draw about 3×
    faster than a 4-D one (a model's ``init`` draws one per kernel). docs/cpu-performance.md#initialization."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"variance_scaling: mode must be 'fan_in' or 'fan_out' (one fan, which a matrix of the "
                         f"kernel's size can keep), got {mode!r}; use jax.nn.initializers.variance_scaling for it.")
    draw = jax.nn.initializers.variance_scaling(scale, mode, distribution)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        if len(shape) <= 2:
            return draw(key, shape, dtype)
        # (fan-in, out) or (in, fan-out): a matrix whose rows or columns are the kernel's fan
        receptive_field = math.prod(shape[:-2])
        matrix = ((receptive_field * shape[-2], shape[-1]) if mode == "fan_in"
                  else (shape[-2], receptive_field * shape[-1]))
        return draw(key, matrix, dtype).reshape(shape)

    return init


# torchvision initializes convolutions with kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_kernel_init = variance_scaling(2.0, "fan_out", "normal")


@platform_op
def conv2d(x: jax.Array, kernel: jax.Array, *, strides: int, padding: int, groups: int) -> jax.Array:
    """NHWC × HWIO convolution with the same zero padding on every side, as PyTorch pads."""
    return lax.conv_general_dilated(x, kernel, window_strides=(strides, strides),
                                    padding=((padding, padding), (padding, padding)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


class Conv2d(nn.Module):
    """A 2-D convolution padded as PyTorch pads it.

    ``padding`` defaults to ``kernel_size // 2`` on every side (what torchvision's models use), never 'SAME':
    with a stride of 2, 'SAME' pads asymmetrically and gives other numbers than PyTorch.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    padding: int | None = None
    groups: int = 1
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Callable = conv_kernel_init
    bias_init: Callable = nn.initializers.zeros

    def __post_init__(self):
        super().__post_init__()
        for name in ("features", "kernel_size", "strides", "groups"):
            arguments.positive_int(type(self).__name__, name, getattr(self, name))
        if self.padding is not None and (not isinstance(self.padding, int) or self.padding < 0):
            raise arguments.ModelArgumentError(
                f"{type(self).__name__}: padding must be None or an integer ≥ 0, got {self.padding!r}.")

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f"Conv2d: {in_features} input and {self.features} output channels must both be divisible by "
                f"groups={self.groups}."
            )
        k = self.kernel_size
        shape = (k, k, in_features // self.groups, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32).astype(self.dtype)
        y = conv2d(x.astype(self.dtype), kernel, strides=self.strides,
                   padding=k // 2 if self.padding is None else self.padding, groups=self.groups)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)
        return y


@platform_op
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, *, epsilon: float):
    """Training-mode BatchNorm over every axis but the last: ``(y, mean, var)`` in float32, var biased (Flax's).

    The statistics are one pass over ``x − s``, with ``s`` the batch's mean at the central position: E[x²] − E[x]²
    about zero (Flax's fast variance) loses log10(mean²/var) of float32's digits to cancellation on any platform,
    about a value near the mean almost none, as exact as the two-pass variance with one read of ``x`` fewer
    (docs/numerics.md). ``s`` is a constant of the formula (the variance does not depend on it), so no gradient
    flows through it.
    """
    x32 = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    centre = tuple(size // 2 for size in x.shape[1:-1])  # a slice of positions, never of the (sharded) batch
    shift = lax.stop_gradient(jnp.mean(x32[(slice(None), *centre)], axis=0))
    shifted = x32 - shift
    shifted_mean = jnp.mean(shifted, axis=axes)
    mean = shift + shifted_mean
    var = jnp.maximum(jnp.mean(jnp.square(shifted), axis=axes) - jnp.square(shifted_mean), 0.0)
    return (x32 - mean) * (lax.rsqrt(var + epsilon) * scale) + bias, mean, var


class BatchNorm(nn.BatchNorm):
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5) and a ``train`` argument.

    Batch statistics are reduced in float32 whatever ``dtype`` is (``batch_norm_train``); the running statistics
    stay float32. Options ``batch_norm_train`` does not cover (``axis_name``, ``axis`` other than -1, no scale or
    bias, ``use_fast_variance=False``) go through Flax's implementation.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        covered = (self.axis in (-1, x.ndim - 1) and self.axis_name is None and self.use_scale and self.use_bias
                   and self.use_fast_variance and self.force_float32_reductions)
        if not train or not covered:
            return super().__call__(x, use_running_average=not train)
        features = (x.shape[-1],)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)
        y, mean, var = batch_norm_train(x, scale, bias, epsilon=self.epsilon)
        if not self.is_initializing():
            running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
            running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
        return y.astype(self.dtype or jnp.result_type(x, scale))


class GroupNorm(nn.GroupNorm):
    """GroupNorm (32 groups, eps 1e-5 as in PyTorch) with the same ``(x, train)`` signature as ``BatchNorm``.

    The variance is two-pass, E[(x − E[x])²]: Flax's default one-pass E[x²] − E[x]² loses float32's digits to
    cancellation when the mean is far from zero (``use_fast_variance=True`` brings it back).
    """

    num_groups: int | None = 32
    epsilon: float = 1e-5
    use_fast_variance: bool = False

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # GroupNorm behaves the same in training and evaluation
        return super().__call__(x)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drops a whole residual branch per example while training.

    Needs a ``'dropout'`` RNG when ``train`` is true and ``rate > 0``; kept branches are scaled by 1/(1-rate).
    """

    rate: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        arguments.rate(type(self).__name__, "rate", self.rate)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


@platform_op
def reused(x: jax.Array, *, train: bool) -> jax.Array:
    """``x`` itself: marks a value that several later layers read (a residual stream, a dense layer's output).

    ``train`` says whether this is part of a training step or an evaluation forward. The identity everywhere but
    XLA:CPU, which would otherwise recompute such a value inside every reader (``kernels.xla_cpu.reused``).
    """
    del train
    return x


@platform_op
def max_pool(x: jax.Array, *, window: int = 3, strides: int = 2, padding: int = 1) -> jax.Array:
    """PyTorch's MaxPool2d on NHWC: symmetric padding with -inf, so padded cells never win."""
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, strides, strides, 1), pads)


def avg_pool(x: jax.Array, window: int = 2, strides: int = 2) -> jax.Array:
    """PyTorch's AvgPool2d without padding (DenseNet transitions)."""
    return nn.avg_pool(x, window_shape=(window, window), strides=(strides, strides))


def avg_pool_ceil(x: jax.Array, window: int = 2, strides: int = 2) -> jax.Array:
    """PyTorch's AvgPool2d(ceil_mode=True, count_include_pad=False): a window that hangs over the bottom or right
    edge averages only the cells it covers (timm's average-pool shortcut, ResNet-D)."""
    pads = [(0, -(-max(size - window, 0) // strides) * strides + window - size) for size in x.shape[1:3]]
    return nn.avg_pool(x, (window, window), (strides, strides), padding=pads, count_include_pad=False)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over height and width, accumulated in float32."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
