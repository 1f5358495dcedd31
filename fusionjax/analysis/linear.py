"""The linear algebra of fusion: add as a tied concat, and what a linear map can recover from each merge."""

import jax
import jax.numpy as jnp
import numpy as np


def concat_kernel_for_add(kernel: jax.Array, num_inputs: int = 2) -> jax.Array:
    """The kernel W' for which a layer on ``concat(x₁…x_k)`` computes the same layer with ``kernel`` on
    ``add(x₁…x_k)``: ``kernel`` repeated along its input-channel axis (HWIO's I, a dense kernel's first axis).

    Linearity gives W·(x₁+…+x_k) = [W … W]·[x₁; …; x_k]: add is concat whose next layer ties the weights of
    its inputs, so concat can learn anything add can, at k times the parameters of that layer.
    """
    if num_inputs < 1:
        raise ValueError(f"concat_kernel_for_add: num_inputs must be at least 1, got {num_inputs}.")
    return jnp.concatenate([kernel] * num_inputs, axis=-2)


def linear_reconstruction_error(features: jax.Array, targets: jax.Array) -> float:
    """The fraction of ``targets``' variance that the best affine map of ``features`` leaves unexplained (1 − R²).

    Both are channels-last arrays whose leading axes (batch, positions) are the samples: each position's
    targets are predicted from the same position's features by one least-squares fit, ``[features, 1]·M``,
    over all samples. 0 means the targets are recoverable exactly; recovering two independent inputs of equal
    variance from their sum leaves 0.5.
    """
    x = jnp.asarray(features, jnp.float32).reshape(-1, features.shape[-1])
    y = jnp.asarray(targets, jnp.float32).reshape(-1, targets.shape[-1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_reconstruction_error: {x.shape[0]} feature rows but {y.shape[0]} target rows.")
    # Centring solves for the intercept; unit-variance columns keep float32's SVD from discarding a feature for
    # its scale (the default cut-off is eps·rows of the largest singular value); constant features carry nothing.
    x, y = x - jnp.mean(x, axis=0), y - jnp.mean(y, axis=0)
    scale = jnp.std(x, axis=0)
    informative = np.flatnonzero(np.asarray(scale) > 0)
    x = x[:, informative] / scale[informative]
    solution, *_ = jnp.linalg.lstsq(x, y, rcond=1e-6)
    return float(jnp.sum(jnp.square(y - x @ solution)) / jnp.sum(jnp.square(y)))
