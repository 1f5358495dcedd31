"""A run's workdir: the config it was started with (``config.json``) and its Orbax checkpoints.

A workdir belongs to one config: a rerun with the same config resumes, one with another config is refused (only
``BOOKKEEPING_KEYS`` may change). Checkpoints hold the whole train state, the data position included, and restore
onto any device count.
"""

import json
import math
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fusionjax.train.errors import ConfigError, RunNotFoundError, WorkdirConflictError
from fusionjax.train.metrics import METRICS_FILE

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# Config keys a resumed run may change: they steer bookkeeping, not the numbers a run computes.
BOOKKEEPING_KEYS = frozenset({
    "log_every_steps", "eval_every_epochs", "checkpoint_every_steps", "keep_checkpoints", "progress_bar",
    "input_workers", "data_dir", "manual_dir", "eval_batch_size", "eval_split",
})


def _checkpoint_score(metrics: dict) -> float:
    """Evaluation top-1; checkpoints saved between evaluations carry empty metrics and never rank best."""
    return metrics.get("top1", -math.inf)


def checkpoint_manager(workdir: Path, config, read_only: bool = False) -> ocp.CheckpointManager:
    """Async Orbax manager keeping the last ``config.keep_checkpoints`` and the best by evaluation top-1."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints),
        ocp.checkpoint_managers.BestN(get_metric_fn=_checkpoint_score, n=1),
    ])
    # best_fn makes Orbax store each checkpoint's metrics (the preservation policy alone does not).
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=_checkpoint_score, best_mode="max",
                                           enable_async_checkpointing=True,
                                           cleanup_tmp_directories=not read_only, read_only=read_only,
                                           save_interval_steps=0 if read_only else 1, create=not read_only)
    return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINT_DIR, options=options,
                                 item_handlers={"state": _state_handler()})


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """Orbax's PyTree handler, writing arrays replica-parallel only where several processes share the writing.

    Replica-parallel saving slices every replicated array once per device, an eager op per shape, so that hosts
    write disjoint parts; in one process it only blocks the first save for seconds (docs/training.md).
    """
    scalar = ocp.type_handlers.ScalarHandler()
    arrays = ocp.type_handlers.ArrayHandler(use_replica_parallel=None if jax.process_count() > 1 else False)
    return ocp.PyTreeCheckpointHandler(type_handler_registry=ocp.type_handlers.create_type_handler_registry(
        (int, scalar), (float, scalar), (np.number, scalar), (np.ndarray, ocp.type_handlers.NumpyHandler()),
        (jax.Array, arrays)))


def save_checkpoint(manager: ocp.CheckpointManager, state, eval_metrics: dict | None) -> None:
    """Save ``state`` (asynchronously) under its step, with the evaluation metrics that rank it."""
    manager.save(int(state.step), args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)),
                 metrics=eval_metrics or {}, force=True)


def restore_checkpoint(manager: ocp.CheckpointManager, step: int, target):
    """Restore ``step`` onto the shardings in ``target`` (``trainer.abstract_state``), whatever device count saved
    it."""
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args)))
    return restored["state"]


def best_step(manager: ocp.CheckpointManager) -> int | None:
    """The kept step with the highest evaluation top-1 (the later one of a tie)."""
    scored = [(manager.metrics(s)["top1"], s) for s in manager.all_steps() if "top1" in (manager.metrics(s) or {})]
    return max(scored)[1] if scored else None


def find_checkpoint(manager: ocp.CheckpointManager, checkpoint: str) -> int:
    """The step that ``checkpoint`` names: ``'latest'``, ``'best'`` (highest evaluation top-1) or a step number."""
    if checkpoint == "latest":
        step = manager.latest_step()
    elif checkpoint == "best":
        step = best_step(manager)
    elif checkpoint.isdigit():
        step = int(checkpoint)
    else:
        raise ConfigError(f"--checkpoint must be 'latest', 'best' or a step number, got {checkpoint!r}.")
    kept = list(manager.all_steps())
    if step is None or step not in kept:
        raise RunNotFoundError(f"No checkpoint {checkpoint!r} in {manager.directory}; kept steps: {kept}.")
    return step


def _flat_config(config) -> dict[str, Any]:
    def flatten(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(flatten(json.loads(config.to_json_best_effort())))


def _workdir_conflict(workdir: Path, config) -> str | None:
    """Why ``workdir`` cannot hold a run of ``config``, or None (new, or a run of this config to resume)."""
    path = workdir / CONFIG_FILE
    if path.exists():
        stored = _flat_config(ml_collections.ConfigDict(json.loads(path.read_text())))
        current = _flat_config(config)
        differences = [f"  {key}: {stored.get(key, '<unset>')!r} in the workdir, {current.get(key, '<unset>')!r} now"
                       for key in sorted(set(stored) | set(current))
                       if key not in BOOKKEEPING_KEYS and stored.get(key, "<unset>") != current.get(key, "<unset>")]
        if differences:
            return (f"{workdir} holds a run of another config, left untouched. It differs in:\n"
                    + "\n".join(differences) + f"\nUse a new --workdir, or the config in {path} to resume that run.")
    elif (workdir / CHECKPOINT_DIR).exists() or (workdir / METRICS_FILE).exists():
        return (f"{workdir} has checkpoints or metrics but no {CONFIG_FILE}, so it is not known to be a run of this "
                "config; it is left untouched. Use a new --workdir.")
    return None


def claim_workdir(workdir: Path, config) -> None:
    """Store the config in ``workdir``; refuse a workdir that holds a run of another config.

    A resumed run may differ only in ``BOOKKEEPING_KEYS``; the stored config.json is never rewritten. Every host
    decides on the workdir as it was before any host wrote to it, so all of them refuse or none does.
    """
    conflict = _workdir_conflict(workdir, config)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("fusionjax: workdir checked")
    if conflict:
        raise WorkdirConflictError(conflict)
    path = workdir / CONFIG_FILE
    if jax.process_index() == 0 and not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")  # renamed into place whole: never a half-written config
        partial.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
        partial.replace(path)


def load_workdir_config(workdir: Path) -> ml_collections.ConfigDict:
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise RunNotFoundError(f"{path} does not exist: pass the --workdir of a fusionjax-train run.")
    return ml_collections.ConfigDict(json.loads(path.read_text()))
