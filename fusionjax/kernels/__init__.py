"""Per-platform kernels: a layer op's plain definition everywhere, a faster formulation where one compiler needs it.

``fusionjax.layers`` defines each op once, as plain JAX (``@platform_op``); that is what GPUs and TPUs run. Where
XLA:CPU's own kernels are slow, ``xla_cpu.KERNELS`` holds a formulation with the same value and gradient. A call
of the op stages both with ``jax.lax.platform_dependent``, and lowering for one platform keeps only that
platform's branch: a program exported for ``cuda`` or ``tpu`` contains none of the CPU code, and one exported for
several platforms picks per platform when it is compiled. Why each CPU kernel exists: ``docs/cpu-performance.md``.

``use(mode)`` is the one switch: a JAX config state (``jax.config.update("fusionjax_kernels", mode)`` sets it for
the process, the environment variable ``FUSIONJAX_KERNELS`` at start), part of jit's cache key, so a function
traced in one mode is traced again in another:

- ``'auto'`` (default): per platform, as above.
- ``'reference'``: the plain definitions on every platform. ONNX export traces this way (a converter sees no
  platform conditional), and the tests check the CPU kernels against it on a CPU.
- ``'xla_cpu'``: the CPU kernels on every platform, to measure what they would cost on a GPU.
"""

import functools
import inspect
from typing import Callable, ContextManager

from jax import lax
from jax._src import config as jax_config  # JAX's own config states: the only way into jit's cache key

from fusionjax.kernels import xla_cpu

MODES = ("auto", "reference", "xla_cpu")
_MODE = jax_config.enum_state(
    "fusionjax_kernels", MODES, "auto", "fusionjax's layer ops: per platform ('auto'), the plain definitions "
    "everywhere ('reference') or the XLA:CPU kernels everywhere ('xla_cpu').",
    include_in_jit_key=True, include_in_trace_context=True)


def use(mode: str) -> ContextManager[None]:
    """Trace the layer ops inside the ``with`` block in ``mode`` (one of ``MODES``)."""
    if mode not in MODES:
        raise ValueError(f"kernels.use: mode must be one of {', '.join(MODES)}, got {mode!r}.")
    return _MODE(mode)


def current_mode() -> str:
    return _MODE.value


def platform_op(reference: Callable) -> Callable:
    """Make ``reference`` (a plain op: arrays positionally, static options by keyword) dispatch per platform to
    the XLA:CPU kernel of the same name, if there is one. ``op.reference`` is the plain definition."""
    cpu_kernel = xla_cpu.KERNELS.get(reference.__name__)
    defaults = {name: parameter.default for name, parameter in inspect.signature(reference).parameters.items()
                if parameter.kind is parameter.KEYWORD_ONLY and parameter.default is not parameter.empty}

    @functools.wraps(reference)
    def op(*arrays, **options):
        options = {**defaults, **options}
        plain = functools.partial(reference, **options)
        mode = _MODE.value
        if cpu_kernel is None or mode == "reference":
            return plain(*arrays)
        cpu = functools.partial(cpu_kernel, plain, **options)
        if mode == "xla_cpu":
            return cpu(*arrays)
        return lax.platform_dependent(*arrays, cpu=cpu, default=plain)

    op.reference = reference
    return op


__all__ = ["MODES", "current_mode", "platform_op", "use"]
