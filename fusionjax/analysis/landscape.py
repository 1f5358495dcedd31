"""Loss landscapes along filter-normalized random directions (Li et al. 2018, "Visualizing the Loss Landscape of
Neural Nets", §4).

A random direction is scaled filter by filter to the norm of the weights it perturbs, so that a step of 1 moves
every filter by its own size whatever its scale: without this, networks whose weights differ in scale (BatchNorm
makes them scale-invariant) could not be compared. As in the paper, biases and norm parameters (every 1-D
parameter) are not perturbed.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def filter_normalized_direction(key: jax.Array, params: Any) -> Any:
    """A Gaussian direction shaped like ``params``, each filter rescaled to the norm of the same filter in ``params``.

    A filter is one output channel of a kernel: the last axis of a convolution's HWIO kernel or of a dense
    layer's (in, out) kernel. 1-D parameters get a zero direction.
    """
    leaves, treedef = jax.tree.flatten(params)
    directions = []
    for leaf_key, weights in zip(jax.random.split(key, len(leaves)), leaves):
        if weights.ndim <= 1:
            directions.append(jnp.zeros_like(weights))
            continue
        axes = tuple(range(weights.ndim - 1))
        direction = jax.random.normal(leaf_key, weights.shape, jnp.float32)
        weight_norms = jnp.sqrt(jnp.sum(jnp.square(weights.astype(jnp.float32)), axis=axes, keepdims=True))
        direction_norms = jnp.sqrt(jnp.sum(jnp.square(direction), axis=axes, keepdims=True))
        directions.append((direction * (weight_norms / direction_norms)).astype(weights.dtype))
    return jax.tree.unflatten(treedef, directions)


def loss_landscape(loss_fn: Callable[[Any], jax.Array], params: Any, directions: Sequence[Any],
                   coordinates: Sequence[Sequence[float]]) -> np.ndarray:
    """``loss_fn(params + Σᵢ cᵢ·directions[i])`` at every point of the grid ``coordinates`` spans.

    One direction and one list of steps give a curve, two give a surface (``result[i, j]`` at
    ``coordinates[0][i]``, ``coordinates[1][j]``). ``loss_fn`` is compiled once; it may return any array (a loss,
    or a loss and an accuracy), which adds trailing axes to the result.
    """
    if len(directions) != len(coordinates):
        raise ValueError(f"loss_landscape: {len(directions)} directions but {len(coordinates)} coordinate lists.")

    @jax.jit
    def at(steps: jax.Array) -> jax.Array:
        moved = jax.tree.map(lambda p, *ds: p + sum(s * d for s, d in zip(steps, ds)).astype(p.dtype),
                             params, *directions)
        return loss_fn(moved)

    grid = np.meshgrid(*[np.asarray(c, np.float32) for c in coordinates], indexing="ij")
    values = [np.asarray(at(jnp.asarray(point))) for point in zip(*(g.ravel() for g in grid))]
    return np.stack(values).reshape(*grid[0].shape, *values[0].shape)
