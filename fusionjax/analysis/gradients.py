"""The loss gradient's size per weight layer: how far the training signal reaches into a deep network."""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from fusionjax.analysis.costs import layer_costs


@dataclasses.dataclass(frozen=True)
class LayerGradient:
    """L2 norms of one weight layer's kernel and of the loss gradient with respect to it."""

    path: str
    kind: str  # 'conv' or 'dense'
    grad_norm: float
    weight_norm: float


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels, computed in float32."""
    log_probabilities = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probabilities, jnp.asarray(labels)[:, None], axis=-1))


def layer_gradient_norms(model: nn.Module, variables: dict, inputs: jax.Array, labels: jax.Array, *,
                         train: bool = True, loss: Callable = cross_entropy, jit: bool = True) -> list[LayerGradient]:
    """‖∂loss/∂kernel‖₂ of every convolution and dense layer of ``model``, first layer first.

    The loss is ``loss(model.apply(variables, inputs, train=train), labels)``; with ``train=True`` BatchNorm
    normalizes with the batch's statistics (what a training step differentiates), and models without a
    ``batch_stats`` collection work too. ``jit=False`` runs op by op: when many networks share layer shapes (one
    family at several depths), each op's compiled kernel is reused and no whole network is compiled.
    """
    params = variables["params"]
    others = {name: value for name, value in variables.items() if name != "params"}

    def loss_of(params: Any) -> jax.Array:
        mutable = ["batch_stats"] if train and "batch_stats" in others else False
        out = model.apply({"params": params, **others}, inputs, train=train, mutable=mutable)
        logits = out[0] if mutable else out
        return loss(logits, labels)

    grad = jax.grad(loss_of)
    grads = (jax.jit(grad) if jit else grad)(params)
    flat_grads = traverse_util.flatten_dict(grads, sep="/")
    flat_params = traverse_util.flatten_dict(params, sep="/")
    weight_layers = [c for c in layer_costs(model, inputs, train=False) if c.kind in ("conv", "dense")]
    return [
        LayerGradient(c.path, c.kind, float(jnp.linalg.norm(flat_grads[f"{c.path}/kernel"])),
                      float(jnp.linalg.norm(flat_params[f"{c.path}/kernel"])))
        for c in weight_layers
    ]
