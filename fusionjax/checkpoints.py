"""What reading a run's Orbax checkpoints shares between the library (``fusionjax.sources``) and the trainer: which
step directories are committed checkpoints, and whether the arrays read hold NaN/Inf (docs/reliability.md)."""

import contextlib
import logging
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

READ_ONLY_NOTICE = "Given directory is read only"  # Orbax's warning as each read-only CheckpointManager opens
# Files every committed step directory holds; Orbax renames a step into place whole, so only what an interrupted
# deletion left (or an empty directory) lacks one.
COMMITTED_FILES = ("_CHECKPOINT_METADATA", "state/_METADATA")


@contextlib.contextmanager
def without_read_only_notice():
    """Drop Orbax's read-only warning meanwhile: reading is all that evaluating, exporting or predicting asks of a
    run's checkpoints, so the warning tells the user nothing. Every other message passes."""
    logger = logging.getLogger("absl")  # Orbax logs through absl.logging

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(READ_ONLY_NOTICE)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def remnants(directory: Path) -> list[Path]:
    """The step directories in a run's ``checkpoints/`` that are no committed checkpoint, by step."""
    steps = sorted((int(p.name), p) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []
    return [path for _, path in steps if not all((path / name).is_file() for name in COMMITTED_FILES)]


def unreadable_reason(error: BaseException) -> str:
    """The first line of what made a checkpoint unreadable: the innermost cause (Orbax wraps what tensorstore
    reports of a truncated file in a bare ``Exception``).

    A failed read leaves tensorstore's other reads completing into Orbax's closed event loop, each printing a
    traceback of "Event loop is closed" later; after the one error the caller reports, those say nothing.
    """
    while error.__cause__ is not None:
        error = error.__cause__
    if not getattr(sys.unraisablehook, "drops_closed_loop_callbacks", False):
        sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def _drop_closed_loop_callbacks(previous):
    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_closed_loop_callbacks = True
    return hook


def all_finite(tree) -> jax.Array:
    """True when every floating-point value in ``tree`` is finite: one reduction, fused into the program tracing it."""
    flags = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(flags).all() if flags else jnp.array(True)


def describe_nonfinite(tree) -> str:
    """Where ``tree`` (host or device arrays, sharded or not) holds NaN/Inf: the count in each top-level part
    (``params``, ``batch_stats``, ...) and the first array holding one."""
    counts = jax.jit(lambda t: jax.tree_util.tree_map(
        lambda x: (~jnp.isfinite(x)).sum() if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.int32(0), t))(tree)
    found = [(path, int(n)) for path, n in jax.tree_util.tree_flatten_with_path(jax.device_get(counts))[0] if n]
    if not found:
        return "none"
    parts: dict[str, int] = {}
    for path, n in found:
        part = jax.tree_util.keystr(path[:1]).strip(".[]'")
        parts[part] = parts.get(part, 0) + n
    return (", ".join(f"{n} in {part}" for part, n in parts.items())
            + f"; first {jax.tree_util.keystr(found[0][0]).lstrip('.')}")
