"""Micro-batched evaluation: a forward pass run over slices of its batch, so each layer's activations stay in cache.

Where this pays, and by how much: ``docs/cpu-performance.md``.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def micro_batched(fn: Callable, micro_batch: int) -> Callable:
    """``fn(variables, x)`` run over ``x`` in slices of ``micro_batch`` examples, one after another.

    The returned function takes and returns what ``fn`` does, outputs (any pytree of arrays with the batch first)
    concatenated in order. Every layer then reads and writes activations a few megabytes in size, which can stay
    in the CPU's caches. A batch that ``micro_batch`` does not divide ends with one shorter slice (compiled as a
    second, smaller program inside the same jit).

    ``fn`` must compute each example independently of the others: an evaluation-mode forward
    (``model.apply(v, x, train=False)``, or a folded model's), not a training-mode one, whose BatchNorm statistics
    would then come from each slice alone. Results equal ``fn(variables, x)`` to float32 rounding (the
    convolution kernels block their sums by batch size, so the last bits can differ).
    """
    if isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1:
        raise ValueError(f"micro_batched: micro_batch must be a positive int, got {micro_batch!r}.")

    @functools.wraps(fn)
    def run(variables, x):
        if jnp.ndim(x) == 0:
            raise ValueError("micro_batched: x must have a leading batch axis, got a scalar.")
        batch = x.shape[0]
        if batch <= micro_batch:
            return fn(variables, x)
        whole = batch - batch % micro_batch
        slices = x[:whole].reshape(whole // micro_batch, micro_batch, *x.shape[1:])
        head = jax.tree.map(lambda y: y.reshape(whole, *y.shape[2:]),
                            lax.map(lambda part: fn(variables, part), slices))
        if whole == batch:
            return head
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), head, fn(variables, x[whole:]))

    return run
