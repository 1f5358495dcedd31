"""Layers shared by the fusion primitives, blocks and models.

Every layer keeps float32 parameters and computes in ``dtype``. Norm layers take ``train`` as their second
argument, so blocks can swap BatchNorm for GroupNorm (or any module with that signature) through one ``norm``
attribute, the way the Flax ImageNet example swaps them through ``ModuleDef`` partials.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

ModuleDef = Any
Dtype = Any

# torchvision initializes convolutions with kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class Conv2d(nn.Module):
    """A 2-D convolution padded as PyTorch pads it.

    ``padding`` defaults to ``kernel_size // 2`` on every side (what torchvision's models use), never 'SAME':
    with a stride of 2, 'SAME' pads asymmetrically and gives other numbers than PyTorch. A 1×1 convolution runs
    as a matrix product over channels (after a strided slice when ``strides > 1``), which XLA:CPU runs 2.5–3×
    faster than ``lax.conv`` with the same result (see ``../shared/notes``). A stride-1 convolution of at most 3×3
    over at most 3 input channels (an image stem) runs as element-wise multiply-adds (``_image_stem_conv``).
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

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f"Conv2d: {in_features} input and {self.features} output channels must both be divisible by "
                f"groups={self.groups}."
            )
        k, s = self.kernel_size, self.strides
        pad = k // 2 if self.padding is None else self.padding
        kernel = self.param("kernel", self.kernel_init, (k, k, in_features // self.groups, self.features), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if k == 1 and pad == 0 and self.groups == 1:
            if s > 1:
                x = x[:, ::s, ::s, :]
            # As a 2-D product, autodiff's weight gradient is x2dᵀ·dy2d, which XLA:CPU runs in place; on the 4-D
            # arrays XLA first copies one operand into (channels, N·H·W) (a quarter of a ResNet-50 step).
            rows = x.shape[:-1]
            y = jnp.dot(x.reshape(-1, in_features), kernel[0, 0]).reshape(*rows, self.features)
        elif self.groups == 1 and s == 1 and k <= 3 and in_features <= 3:
            y = _image_stem_conv(x, kernel, pad)
        else:
            y = _conv(x, kernel, s, pad, self.groups)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)
        return y


def _conv(x: jax.Array, kernel: jax.Array, strides: int, pad: int, groups: int = 1) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, window_strides=(strides, strides), padding=((pad, pad), (pad, pad)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _image_stem_conv(x: jax.Array, kernel: jax.Array, pad: int) -> jax.Array:
    """A stride-1 convolution over ≤ 3 input channels (an RGB or grey image stem) as k·k·C multiply-adds of shifted
    views, summed in float32.

    XLA:CPU's convolution kernels are slow over so few channels (5× oneDNN's for ResNet-20's stem); the sum is one
    element-wise loop that reads the image once and writes the output once: ResNet-20's stem forward 1.4 ms against
    5.1 ms as a product over im2col patches and 5.6–8.3 ms as ``lax.conv`` (benchmarks/RESULTS.md, attempt 30).
    Differentiated as written, it would reduce over the whole batch once per tap (110 ms), so the gradients are
    the convolution's own. Not for ImageNet's 7×7/2 stems: 147 terms per output measured 131 ms against ``lax.conv``'s
    57 ms for ResNet-50's at batch 16.
    """
    k, in_features = kernel.shape[0], kernel.shape[2]
    h_out, w_out = x.shape[1] + 2 * pad - k + 1, x.shape[2] + 2 * pad - k + 1
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))).astype(jnp.float32)
    kernel32 = kernel.astype(jnp.float32)
    terms = (padded[:, i : i + h_out, j : j + w_out, c : c + 1] * kernel32[i, j, c]
             for i in range(k) for j in range(k) for c in range(in_features))
    return functools.reduce(jnp.add, terms).astype(x.dtype)


def _image_stem_conv_forward(x, kernel, pad):
    return _image_stem_conv(x, kernel, pad), (x, kernel)


def _image_stem_conv_backward(pad, residuals, cotangent):
    x, kernel = residuals
    return jax.vjp(lambda x, kernel: _conv(x, kernel, 1, pad), x, kernel)[1](cotangent)


_image_stem_conv.defvjp(_image_stem_conv_forward, _image_stem_conv_backward)


def _batch_sums(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Σa, Σb) over every axis but the last, reading the data once per stage (a variadic reduce).

    Two stages, over each example's positions and then over the batch, keep float32 sums as accurate as XLA's tree
    reductions; XLA:CPU rewrites one large ``reduce`` per sum into ``reduce-window`` passes, several times slower.
    """
    zero = jnp.zeros((), a.dtype)

    def add(p, q):
        return p[0] + q[0], p[1] + q[1]

    if a.ndim > 2:
        a, b = lax.reduce((a, b), (zero, zero), add, tuple(range(1, a.ndim - 1)))
    return lax.reduce((a, b), (zero, zero), add, (0,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm(x, scale, bias, epsilon):
    """Training-mode BatchNorm over all axes but the last: ``(y, mean, var)`` in float32, var biased (Flax's)."""
    return _batch_norm_forward(x, scale, bias, epsilon)[0]


def _batch_norm_forward(x, scale, bias, epsilon):
    x32 = x.astype(jnp.float32)
    count = x.size // x.shape[-1]
    # One pass over x − shift, the shift near the mean: E[x²] − E[x]² about zero (Flax's fast variance) loses
    # log10(mean²/var) of float32's digits to cancellation, about a value near the mean almost none. The shift is the
    # batch's mean at the central position (the whole mean of (N, C) features): no slice of the batch axis, which
    # may be sharded.
    centre = tuple(size // 2 for size in x.shape[1:-1])
    shift = jnp.mean(x32[(slice(None), *centre)], axis=0)
    shifted = x32 - shift
    shifted_total, shifted_squares = _batch_sums(shifted, jnp.square(shifted))
    shifted_mean = shifted_total / count
    mean = shift + shifted_mean
    var = jnp.maximum(shifted_squares / count - jnp.square(shifted_mean), 0.0)
    inv = lax.rsqrt(var + epsilon)
    return ((x32 - mean) * (inv * scale) + bias, mean, var), (x, mean, inv, scale)


def _batch_norm_backward(epsilon, residuals, cotangents):
    # The cuDNN formula: dx = γ·inv/n · (n·dy − Σdy − x̂·Σ(dy·x̂)), both sums in one pass; the last two terms carry
    # gradients that reach the batch statistics directly (none in training, where they feed only running averages).
    x, mean, inv, scale = residuals
    dy, dmean, dvar = cotangents
    count = x.size // x.shape[-1]
    centered = x.astype(jnp.float32) - mean
    x_hat = centered * inv
    sum_dy, sum_dy_x_hat = _batch_sums(dy, dy * x_hat)
    dx = (scale * inv / count) * (count * dy - sum_dy - x_hat * sum_dy_x_hat) + (dmean + 2 * dvar * centered) / count
    return dx.astype(x.dtype), sum_dy_x_hat, sum_dy


_batch_norm.defvjp(_batch_norm_forward, _batch_norm_backward)


class BatchNorm(nn.BatchNorm):
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5) and a ``train`` argument.

    Batch statistics are reduced in float32 whatever ``dtype`` is; the running statistics stay float32. In training
    the statistics and the backward pass's two sums are each computed in one pass over the data (``_batch_norm``):
    the same function as Flax's BatchNorm, about 3× faster forward and backward on XLA:CPU
    (benchmarks/RESULTS.md), with the variance as exact as a two-pass one (sums about a value near the mean).
    Options that function does not cover (``axis_name``, ``axis`` other than -1, no scale or bias,
    ``use_fast_variance=False``) go through Flax's implementation.
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
        y, mean, var = _batch_norm(x, scale, bias, self.epsilon)
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

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def materialized(x: jax.Array, train: bool) -> jax.Array:
    """``x``, computed once and read from memory by all its consumers; the same numbers and the same gradient.

    XLA fuses cheap element-wise producers into each consumer, duplicating them. Down a residual stream
    (``relu(bn(conv(…)) + previous)`` block after block) that recomputes the whole stage inside every later block
    and inside every transposed copy that feeds a weight-gradient convolution, where the reads are strided:
    a quarter of a ResNet-20 training step on XLA:CPU (benchmarks/RESULTS.md). XLA does not duplicate a
    division, and dividing by ones it cannot constant-fold (they sit behind an optimization barrier) changes no
    value: ``x / 1 == x`` for every float, and the cotangent is divided by one as well.

    ``train`` says which program this is part of. In a training step a scalar one suffices; a divisor the size of
    ``x`` measured 1–6 % slower there and, differentiated, adds an array of ones to the saved residuals. In an
    evaluation forward XLA turns the division by a scalar into a multiplication by its reciprocal, which it does
    duplicate, so there the divisor is an array of ones the size of ``x`` (never stored: once the barrier is gone
    it is a broadcast constant).
    """
    ones = jnp.ones((), x.dtype) if train else jnp.ones_like(x)
    return x / lax.optimization_barrier(ones)


def max_pool(x: jax.Array, window: int = 3, strides: int = 2, padding: int = 1) -> jax.Array:
    """PyTorch's MaxPool2d on NHWC: symmetric padding with -inf, so padded cells never win.

    Its derivative is PyTorch's too: each output's gradient goes to the first maximum of its window in row-major
    order. Defined as a JVP that gathers the tangent at those cells, so forward mode works, and reverse mode
    transposes it into strided additions: 3–4× faster on XLA:CPU than the ``select_and_scatter`` that
    differentiating ``reduce_window`` gives (benchmarks/RESULTS.md).
    """
    # materialized: the gradient leaving (a sum over window cells) is stored once, not recomputed by each reader.
    # Storing the output too measured the same in the models and made the pool alone 3.7× slower (XLA then
    # recomputes the winning cells inside the backward's fusion). An evaluation forward stores the input without
    # help (XLA does not fuse the producer into the reduce-window), so the training form serves both.
    return _max_pool(materialized(x, train=True), window, strides, padding)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, strides, strides, 1), pads)


def _window_cells(a, fill, window, strides, padding, out_shape):
    """Each cell of every pooling window, row-major, as an array shaped like the pooled output."""
    a = jnp.pad(a, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=fill)
    out_h, out_w = out_shape[1:3]
    for i in range(window):
        for j in range(window):
            stop = (a.shape[0], i + (out_h - 1) * strides + 1, j + (out_w - 1) * strides + 1, a.shape[3])
            yield lax.slice(a, (0, i, j, 0), stop, (1, strides, strides, 1))


@_max_pool.defjvp
def _max_pool_jvp(window, strides, padding, primals, tangents):
    (x,), (dx,) = primals, tangents
    n, h, w, c = x.shape
    out_shape = (n, (h + 2 * padding - window) // strides + 1, (w + 2 * padding - window) // strides + 1, c)
    cells = _window_cells(x, -jnp.inf, window, strides, padding, out_shape)
    # PyTorch's scan: a cell wins if it is larger than the best so far (or NaN); int8 keeps the residual small.
    index_dtype = jnp.int8 if window * window <= 128 else jnp.int32
    y = next(cells)
    winner = jnp.zeros(out_shape, index_dtype)
    for index, cell in enumerate(cells, start=1):
        better = (cell > y) | jnp.isnan(cell)
        y, winner = jnp.where(better, cell, y), jnp.where(better, jnp.asarray(index, index_dtype), winner)
    zero = jnp.zeros((), dx.dtype)
    tangent_cells = _window_cells(dx, zero, window, strides, padding, out_shape)
    dy = sum(jnp.where(winner == index, cell, zero) for index, cell in enumerate(tangent_cells))
    return y, dy


def avg_pool(x: jax.Array, window: int = 2, strides: int = 2) -> jax.Array:
    """PyTorch's AvgPool2d without padding (DenseNet transitions)."""
    return nn.avg_pool(x, (window, window), (strides, strides))


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over height and width, accumulated in float32."""
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
