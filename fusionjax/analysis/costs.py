"""Parameters and multiply-adds per layer, from one abstract trace of a model: nothing is computed.

Multiply-adds (MACs) are counted for convolutions and dense layers only, every kernel tap at every output position
(padding included): the convention of the ResNet paper's "FLOPs" and of torchvision's "GFLOPS" column, which
are multiply-adds. XLA's own count (``xla_flops``) is a different quantity: two operations per multiply-add,
padded taps left out, element-wise work (norms, activations, additions) included.
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from fusionjax.layers import Conv2d


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One module that owns parameters: ``kind`` is 'conv', 'dense', 'norm' or the class name in lower case."""

    path: str
    kind: str
    params: int
    macs: int  # multiply-adds for the whole batch it was traced with (0 for layers other than conv and dense)
    output_shape: tuple[int, ...]


def _kind(module: nn.Module) -> str:
    if isinstance(module, (Conv2d, nn.Conv)):
        return "conv"
    if isinstance(module, nn.Dense):
        return "dense"
    if isinstance(module, (nn.BatchNorm, nn.GroupNorm, nn.LayerNorm)):
        return "norm"
    return type(module).__name__.lower()


def parameter_count(tree: Any) -> int:
    """Number of scalars in a pytree of arrays (e.g. ``variables['params']``)."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def layer_costs(model: nn.Module, *inputs: Any, **apply_kwargs) -> list[LayerCost]:
    """Every module of ``model`` that owns parameters, in the order the forward pass calls them.

    ``inputs`` are arrays or ``jax.ShapeDtypeStruct``s (only shapes matter); ``apply_kwargs`` go to the model's
    ``__call__`` (e.g. ``train=False``). ``sum(c.params for c in costs)`` is the model's parameter count and
    ``sum(c.macs for c in costs)`` its multiply-adds for that batch.
    """
    rows: dict[str, dict] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name != "__call__":
            return out
        own = {name: value for name, value in module.variables.get("params", {}).items()
               if not isinstance(value, Mapping)}
        if not own:
            return out
        path = "/".join(module.path)
        row = rows.setdefault(path, {"kind": _kind(module), "params": parameter_count(own), "macs": 0,
                                     "output_shape": tuple(getattr(out, "shape", ()))})
        if row["kind"] in ("conv", "dense") and "kernel" in own:
            kernel = own["kernel"]
            row["macs"] += int(np.prod(out.shape)) * int(np.prod(kernel.shape)) // kernel.shape[-1]
        return out

    init = functools.partial(model.init, **apply_kwargs)
    with nn.intercept_methods(interceptor):
        variables = jax.eval_shape(init, jax.random.key(0), *inputs)
    costs = [LayerCost(path, **row) for path, row in rows.items()]
    if sum(c.params for c in costs) != parameter_count(variables.get("params", {})):
        raise ValueError(
            f"layer_costs: the modules seen own {sum(c.params for c in costs)} parameters but the model has "
            f"{parameter_count(variables.get('params', {}))}: a module created parameters outside __call__."
        )
    return costs


def xla_flops(fn: Callable, *args: Any) -> float:
    """XLA's operation count for ``fn(*args)`` as compiled for the default device (``cost_analysis()['flops']``)."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # one entry per program in some jax releases
        analysis = analysis[0]
    return float(analysis["flops"])
