"""XLA:CPU kernels: the same values and gradients as ``fusionjax.layers``' plain ops, in forms XLA:CPU runs faster.

Each kernel takes the op's plain definition (options bound) first, then the op's arrays and options, and falls
back to it where its formulation does not pay. Why each one exists, with the measurements: docs/cpu-performance.md.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

KERNELS: dict[str, Callable] = {}


def _kernel(function: Callable) -> Callable:
    KERNELS[function.__name__] = function
    return function


# ---------------------------------------------------------------------------------------------------------------
# Convolutions


@_kernel
def conv2d(plain, x, kernel, *, strides: int, padding: int, groups: int):
    """1×1 convolutions as 2-D matrix products; stride-1 image stems (≤ 3 channels, ≤ 3×3) as multiply-adds."""
    k, in_features = kernel.shape[0], x.shape[-1]
    if k == 1 and padding == 0 and groups == 1:
        if strides > 1:
            x = x[:, ::strides, ::strides, :]
        # 2-D, so that the weight gradient x2dᵀ·dy2d needs no transposed copy of either operand.
        rows = x.shape[:-1]
        return jnp.dot(x.reshape(-1, in_features), kernel[0, 0]).reshape(*rows, kernel.shape[-1])
    if groups == 1 and strides == 1 and k <= 3 and in_features <= 3:
        return _image_stem(plain, padding, x, kernel)
    return plain(x, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _image_stem(plain, padding, x, kernel):
    """k·k·C multiply-adds of shifted views, summed in float32: one element-wise pass over the image."""
    k, in_features = kernel.shape[0], kernel.shape[2]
    h_out, w_out = x.shape[1] + 2 * padding - k + 1, x.shape[2] + 2 * padding - k + 1
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))).astype(jnp.float32)
    kernel32 = kernel.astype(jnp.float32)
    terms = (padded[:, i : i + h_out, j : j + w_out, c : c + 1] * kernel32[i, j, c]
             for i in range(k) for j in range(k) for c in range(in_features))
    return functools.reduce(jnp.add, terms).astype(x.dtype)


def _image_stem_forward(plain, padding, x, kernel):
    return _image_stem(plain, padding, x, kernel), (x, kernel)


def _image_stem_backward(plain, padding, residuals, cotangent):
    # The convolution's own gradients: differentiated as written, the sum would reduce over the batch once per tap.
    return jax.vjp(plain, *residuals)[1](cotangent)


_image_stem.defvjp(_image_stem_forward, _image_stem_backward)


# ---------------------------------------------------------------------------------------------------------------
# BatchNorm in training


@_kernel
def batch_norm_train(plain, x, scale, bias, *, epsilon: float):
    """Statistics and both backward sums each in one pass over the data (variadic reduces), the cuDNN backward."""
    del plain
    return _batch_norm(epsilon, x, scale, bias)


def _batch_sums(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Σa, Σb) over every axis but the last, in two stages (each example's positions, then the batch)."""
    zero = jnp.zeros((), a.dtype)

    def add(p, q):
        return p[0] + q[0], p[1] + q[1]

    if a.ndim > 2:
        a, b = lax.reduce((a, b), (zero, zero), add, tuple(range(1, a.ndim - 1)))
    return lax.reduce((a, b), (zero, zero), add, (0,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _batch_norm(epsilon, x, scale, bias):
    return _batch_norm_forward(epsilon, x, scale, bias)[0]


def _batch_norm_forward(epsilon, x, scale, bias):
    x32 = x.astype(jnp.float32)
    count = x.size // x.shape[-1]
    centre = tuple(size // 2 for size in x.shape[1:-1])  # the plain op's shift: see layers.batch_norm_train
    shift = jnp.mean(x32[(slice(None), *centre)], axis=0)
    shifted = x32 - shift
    shifted_total, shifted_squares = _batch_sums(shifted, jnp.square(shifted))
    shifted_mean = shifted_total / count
    mean = shift + shifted_mean
    var = jnp.maximum(shifted_squares / count - jnp.square(shifted_mean), 0.0)
    inv = lax.rsqrt(var + epsilon)
    return ((x32 - mean) * (inv * scale) + bias, mean, var), (x, mean, inv, scale)


def _batch_norm_backward(epsilon, residuals, cotangents):
    # dx = γ·inv/n · (n·dy − Σdy − x̂·Σ(dy·x̂)); the last term carries gradients that reach the statistics directly.
    x, mean, inv, scale = residuals
    dy, dmean, dvar = cotangents
    count = x.size // x.shape[-1]
    centered = x.astype(jnp.float32) - mean
    x_hat = centered * inv
    sum_dy, sum_dy_x_hat = _batch_sums(dy, dy * x_hat)
    dx = (scale * inv / count) * (count * dy - sum_dy - x_hat * sum_dy_x_hat) + (dmean + 2 * dvar * centered) / count
    return dx.astype(x.dtype), sum_dy_x_hat, sum_dy


_batch_norm.defvjp(_batch_norm_forward, _batch_norm_backward)


# ---------------------------------------------------------------------------------------------------------------
# Max pooling


@_kernel
def max_pool(plain, x, *, window: int, strides: int, padding: int):
    """Differentiated by a JVP that gathers each window's first maximum: no ``select_and_scatter``."""
    # The input stored once: the cotangent leaving (a sum over window cells) is then not recomputed per cell.
    return _max_pool(plain, window, strides, padding, reused(None, x, train=True))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _max_pool(plain, window, strides, padding, x):
    return plain(x)


def _window_cells(a, fill, window, strides, padding, out_shape):
    """Each cell of every pooling window, row-major, as an array shaped like the pooled output."""
    a = jnp.pad(a, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=fill)
    out_h, out_w = out_shape[1:3]
    for i in range(window):
        for j in range(window):
            stop = (a.shape[0], i + (out_h - 1) * strides + 1, j + (out_w - 1) * strides + 1, a.shape[3])
            yield lax.slice(a, (0, i, j, 0), stop, (1, strides, strides, 1))


@_max_pool.defjvp
def _max_pool_jvp(plain, window, strides, padding, primals, tangents):
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


# ---------------------------------------------------------------------------------------------------------------
# Values read by several layers


@_kernel
def reused(plain, x, *, train: bool):
    """``x`` computed once and read from memory by every reader: XLA:CPU otherwise fuses a cheap element-wise
    producer (a residual stream, a dense layer's output) into each of them, recomputing it there.

    XLA does not duplicate a division, and ones behind an optimization barrier cannot be folded: ``x / 1 == x``
    for every float, gradient included. A training step needs only a scalar one; an evaluation forward would turn
    a scalar divisor into a duplicated multiplication, so there the ones are shaped like ``x`` (never stored).
    """
    del plain
    ones = jnp.ones((), x.dtype) if train else jnp.ones_like(x)
    return x / lax.optimization_barrier(ones)
