"""What the signal looks like on its way through a network: statistics of chosen modules' outputs."""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ActivationStats:
    """Statistics over every element of one module call's output (batch, positions and channels)."""

    path: str
    mean: float
    variance: float
    second_moment: float  # E[x²]: what He initialization keeps constant through ReLU layers


def activation_statistics(model: nn.Module, variables: dict, inputs: jax.Array, *,
                          select: Callable[[nn.Module], bool], **apply_kwargs) -> list[ActivationStats]:
    """One row per call of a module for which ``select(module)`` is true, in call order.

    Runs op by op (nothing is compiled as a whole), so the rows keep the order of the calls;
    ``apply_kwargs`` go to ``model.apply`` (e.g. ``train=False``).
    """
    rows: list[ActivationStats] = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and select(context.module) and isinstance(out, jax.Array):
            x = out.astype(jnp.float32)
            rows.append(ActivationStats("/".join(context.module.path), float(jnp.mean(x)), float(jnp.var(x)),
                                        float(jnp.mean(jnp.square(x)))))
        return out

    with nn.intercept_methods(interceptor):
        model.apply(variables, inputs, **apply_kwargs)
    return rows
