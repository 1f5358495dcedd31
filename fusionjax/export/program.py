"""A model's forward pass as one flat sequence of JAX primitives: what the ONNX writer and the int8 interpreter walk.

``trace`` records ``fn`` with ``jax.make_jaxpr`` in the layers' ``'reference'`` mode (the plain op definitions: no
platform conditional, no custom gradient, no optimization barrier; see ``fusionjax.kernels``). ``run`` evaluates the
recorded program, handing every first-order primitive to a callback and inlining the calls that wrap others
(``jit``, ``custom_jvp_call``…), so a callback sees the same flat sequence whatever nesting the model used.
"""

from typing import Any, Callable, Sequence

import jax
import jax.extend.core as jex
import numpy as np

from fusionjax import kernels
from fusionjax.export.errors import UnsupportedOperationError

# Primitives that only wrap a sub-program: the parameter holding it. Their derivative rules do not matter here.
_WRAPPERS = {
    "jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr", "checkpoint": "jaxpr",
}
# Primitives whose outputs are their inputs as values (they steer differentiation or scheduling only).
IDENTITIES = frozenset({"stop_gradient", "optimization_barrier", "copy", "copy_p"})


def trace(fn: Callable, *example: Any, return_shape: bool = False):
    """``fn``'s program for arguments shaped like ``example`` (arrays or ``jax.ShapeDtypeStruct``, symbolic
    dimensions allowed), traced with the plain op definitions; with ``return_shape``, also its outputs' shapes."""
    with kernels.use("reference"):
        return jax.make_jaxpr(fn, return_shape=return_shape)(*example)


Callback = Callable[[jex.JaxprEqn, list], Sequence]


def run(closed: jex.ClosedJaxpr, args: Sequence, apply: Callback) -> list:
    """Evaluate ``closed`` on ``args`` (one value per flattened input, of whatever kind ``apply`` understands).

    ``apply(eqn, inputs)`` returns the list of outputs of one first-order equation. Literals and closed-over
    constants reach it as NumPy arrays.
    """
    return _run(closed.jaxpr, [np.asarray(c) for c in closed.consts], list(args), apply)


def _run(jaxpr: jex.Jaxpr, consts: list, args: list, apply: Callback) -> list:
    env: dict = {}

    def read(var):
        if isinstance(var, jex.Literal):
            return np.asarray(var.val, dtype=var.aval.dtype)
        return env[var]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _WRAPPERS:
            inner = eqn.params[_WRAPPERS[name]]
            if isinstance(inner, jex.ClosedJaxpr):
                inner_consts = [np.asarray(c) for c in inner.consts]
                inner = inner.jaxpr
            else:
                inner_consts = []
            outputs = _run(inner, inner_consts, inputs, apply)
        elif name in IDENTITIES:
            outputs = inputs
        elif name in ("cond", "platform_index"):
            raise UnsupportedOperationError(
                f"{name}: the program branches (lax.cond or lax.platform_dependent). Trace the model inside "
                "`with fusionjax.kernels.use('reference'):` and keep Python control flow static."
            )
        else:
            outputs = apply(eqn, inputs)
        for var, value in zip(eqn.outvars, outputs, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def bind(eqn: jex.JaxprEqn, inputs: Sequence) -> list:
    """``eqn``'s primitive applied to concrete or traced arrays, as a list of outputs."""
    out = eqn.primitive.bind(*inputs, **eqn.params)
    return list(out) if eqn.primitive.multiple_results else [out]


def is_static(dim: Any) -> bool:
    """Whether a dimension is a known integer (not a symbolic batch size)."""
    return isinstance(dim, (int, np.integer))


def empty_shapes(closed: jex.ClosedJaxpr) -> list[tuple]:
    """The shapes of every value in the program that has no elements (a pooling window larger than its input)."""
    found = []

    def scan(jaxpr):
        for eqn in jaxpr.eqns:
            found.extend(tuple(v.aval.shape) for v in eqn.outvars if 0 in getattr(v.aval, "shape", ()))
            for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
                inner = eqn.params.get(name)
                if inner is not None:
                    scan(getattr(inner, "jaxpr", inner))

    scan(closed.jaxpr)
    return found
