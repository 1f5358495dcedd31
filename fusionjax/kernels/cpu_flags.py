"""The one process-wide XLA:CPU setting fusionjax's CPU speed depends on, made by ``import fusionjax``.

jaxlib sends CPU convolutions, weight gradients included, to YNNPACK, several times slower there than XLA's own
(Eigen) kernels for these models' training steps; ``--xla_cpu_experimental_ynn_fusion_type=`` keeps them in XLA.
XLA reads ``XLA_FLAGS`` once, when JAX starts its backend, and aborts on a flag it does not know, so the flag is
added only for jaxlib releases known to have it, only if JAX has not started yet, and never over a choice the user
made in ``XLA_FLAGS``. Where it comes too late, a warning says how to get it. docs/cpu-performance.md has the
measurements; ``FUSIONJAX_KEEP_XLA_FLAGS=1`` leaves ``XLA_FLAGS`` alone.
"""

import os
import warnings

FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
EIGEN_CONVOLUTIONS = f"--{FLAG_NAME}="
# jaxlib releases that have the flag and send convolutions to YNNPACK unless told otherwise (checked in the tests).
KNOWN_JAXLIB = ((0, 10), (0, 12))


class SlowCpuConvolutionsWarning(UserWarning):
    """fusionjax was imported after JAX started, so XLA:CPU keeps its slower convolution kernels."""


def _jaxlib_version() -> tuple[int, int]:
    import jaxlib

    return tuple(int(part) for part in jaxlib.__version__.split(".")[:2])


def _backend_started() -> bool:
    from jax._src import xla_bridge  # the only place that knows; public API has no such query

    return xla_bridge.backends_are_initialized()


def prefer_eigen_convolutions(environ=os.environ) -> str:
    """Add ``EIGEN_CONVOLUTIONS`` to ``environ['XLA_FLAGS']`` where that is safe and still takes effect.

    Returns what happened: ``'set'``; ``'user'`` (XLA_FLAGS names the flag, or FUSIONJAX_KEEP_XLA_FLAGS is set);
    ``'unknown jaxlib'`` (a release not known to have the flag); ``'too late'`` (JAX had started: warns once if
    it runs on CPU).
    """
    if FLAG_NAME in environ.get("XLA_FLAGS", "") or environ.get("FUSIONJAX_KEEP_XLA_FLAGS"):
        return "user"
    low, high = KNOWN_JAXLIB
    if not low <= _jaxlib_version() <= high:
        return "unknown jaxlib"
    if _backend_started():
        import jax

        if jax.default_backend() == "cpu":
            warnings.warn(
                "fusionjax was imported after JAX started, so XLA:CPU keeps sending convolutions to YNNPACK, "
                "which makes these models' training steps slower. Import fusionjax before running any JAX "
                f"computation, or start Python with XLA_FLAGS={EIGEN_CONVOLUTIONS} "
                "(docs/cpu-performance.md).", SlowCpuConvolutionsWarning, stacklevel=2)
        return "too late"
    environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {EIGEN_CONVOLUTIONS}".strip()
    return "set"
