"""What a computation holds in memory: the arrays a backward pass keeps, and a compiled program's buffers."""

import dataclasses
from typing import Any, Callable

import jax

from fusionjax import kernels


def saved_residual_bytes(fn: Callable, *args: Any, kernels_mode: str = "reference") -> int:
    """Bytes of the distinct arrays ``jax.vjp(fn, *args)`` keeps from the forward pass for the backward pass.

    ``fn``'s own arguments (parameters, images) are left out, since they are kept anyway; constants too. This is
    what ``jax.ad_checkpoint.print_saved_residuals`` lists and what rematerialization (``jax.checkpoint``,
    ``flax.linen.remat``) changes. ``args`` may be ``jax.ShapeDtypeStruct``s: nothing runs. Per example: the
    difference between two batch sizes, divided by theirs.

    Traced in one ``kernels_mode`` (``fusionjax.kernels``): under ``'auto'`` a layer op stages both platforms'
    branches, and the residuals of both would be counted. ``'reference'``, the default, is what GPUs and TPUs
    keep; ``'xla_cpu'`` what XLA:CPU keeps.
    """
    with kernels.use(kernels_mode):
        closed, (primal_out, _) = jax.make_jaxpr(lambda *a: jax.vjp(fn, *a), return_shape=True)(*args)
    jaxpr = closed.jaxpr
    num_outputs = len(jax.tree.leaves(primal_out))
    inputs = set(jaxpr.invars) | set(jaxpr.constvars)
    saved = {v for v in jaxpr.outvars[num_outputs:] if not hasattr(v, "val") and v not in inputs}
    return sum(v.aval.size * v.aval.dtype.itemsize for v in saved)


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """A compiled program's buffers in bytes (``Compiled.memory_analysis()``)."""

    arguments: int
    outputs: int
    temporaries: int  # scratch: intermediate values, among them what the forward pass keeps for the backward pass
    aliased: int  # outputs that reuse an argument's buffer

    @property
    def peak(self) -> int:
        """Upper bound on what the program holds at once: arguments, outputs and scratch, shared buffers once."""
        return self.arguments + self.outputs + self.temporaries - self.aliased


def compiled_memory(compiled: jax.stages.Compiled) -> CompiledMemory:
    """Memory of a compiled program: ``compiled_memory(jax.jit(fn).lower(*args).compile())``, where ``args`` may be
    ``jax.ShapeDtypeStruct``s. The same ``compiled`` object then runs on real arrays (``compiled(*arrays)``)."""
    stats = compiled.memory_analysis()
    return CompiledMemory(stats.argument_size_in_bytes, stats.output_size_in_bytes, stats.temp_size_in_bytes,
                          stats.alias_size_in_bytes)
