"""A run's workdir: the config it was started with (``config.json``), its lock and its Orbax checkpoints.

A workdir belongs to one config and one live run: a rerun with the same config resumes, one with another config is
refused (only ``BOOKKEEPING_KEYS`` may change), and so is any run while another holds the lock. Checkpoints hold the
whole train state, the data position included, and restore onto any device count. Only committed checkpoints count:
what a killed save or deletion leaves is removed when the next run starts, a checkpoint that cannot be read or holds
NaN/Inf is refused (a resumed run moves it aside and resumes from the one before). docs/reliability.md.
"""

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fusionjax.checkpoints import (all_finite, describe_nonfinite, remnants, unreadable_reason,
                                   without_read_only_notice)
from fusionjax.train.errors import (CheckpointError, ConfigError, RunNotFoundError, WorkdirConflictError,
                                    WorkdirInUseError, warn)
from fusionjax.train.metrics import METRICS_FILE

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "run.lock"
# Orbax renames a dropped checkpoint into this subdirectory of checkpoints/ (one atomic step) and the trainer deletes
# it from there, so a kill during a deletion never leaves a half-deleted step among the kept ones.
DELETING_DIR = "deleting"
CORRUPT_DIR = "corrupt_checkpoints"  # where a resumed run moves the checkpoints it could not restore
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
                                           save_interval_steps=0 if read_only else 1, create=not read_only,
                                           todelete_subdir=None if read_only else DELETING_DIR)
    with without_read_only_notice():
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
    """Save ``state`` (asynchronously) under its step, with the evaluation metrics that rank it, and delete the
    checkpoints Orbax has dropped since the last save.

    The caller has checked ``state`` with ``all_finite``: a checkpoint never holds NaN/Inf.
    """
    manager.save(int(state.step), args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)),
                 metrics=eval_metrics or {}, force=True)
    delete_dropped(Path(manager.directory))


def finish_saving(manager: ocp.CheckpointManager) -> None:
    """Wait for the saves in flight, then delete what the last of them made Orbax drop."""
    manager.wait_until_finished()
    delete_dropped(Path(manager.directory))


def delete_dropped(directory: Path) -> None:
    """Delete the checkpoints Orbax renamed into ``DELETING_DIR`` (process 0; each is whole or already gone)."""
    deleting = directory / DELETING_DIR
    if jax.process_index() == 0 and deleting.is_dir():
        for path in list(deleting.iterdir()):
            shutil.rmtree(path, ignore_errors=True)


def remove_remnants(workdir: Path) -> None:
    """Delete what interrupted saves and deletions left in ``workdir``'s checkpoints, naming it (process 0, under
    the workdir's lock; Orbax removes its own temporary directories)."""
    directory = Path(workdir) / CHECKPOINT_DIR
    if jax.process_index() != 0:
        return
    left = remnants(directory)
    if left:
        warn(f"removing {', '.join(map(str, left))}: step directories that an interrupted checkpoint save or "
             "deletion left incomplete, no checkpoints.")
        for path in left:
            shutil.rmtree(path)
    delete_dropped(directory)


def kept_steps(manager: ocp.CheckpointManager) -> list[int]:
    """The committed checkpoints' steps, ascending; remnants of an interrupted save or deletion are skipped with a
    warning naming them (the next run started in the workdir removes them)."""
    left = remnants(Path(manager.directory))
    if left:
        warn(f"ignoring {', '.join(map(str, left))}: incomplete step directories, no checkpoints.")
    return _committed(manager, left)


def _committed(manager: ocp.CheckpointManager, left: list[Path]) -> list[int]:
    skipped = {int(p.name) for p in left}
    return [s for s in manager.all_steps() if s not in skipped]


class _AbandonedReads(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" reports of Orbax's other reads of an unreadable
    checkpoint: they fail as the first did, which ``CheckpointError`` already names in one line. Installed once on
    the asyncio logger; ``paths`` grows with each unreadable checkpoint met."""

    def __init__(self):
        super().__init__()
        self.paths: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(path in message for path in self.paths)


_ABANDONED_READS = _AbandonedReads()
logging.getLogger("asyncio").addFilter(_ABANDONED_READS)


def _restore(manager: ocp.CheckpointManager, step: int, target):
    path = Path(manager.directory) / str(step)
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args)))["state"]
    except Exception as error:  # Orbax raises a bare Exception for what tensorstore reports of a truncated file
        _ABANDONED_READS.paths.add(str(path))
        raise CheckpointError(f"The checkpoint {path} cannot be read ({unreadable_reason(error)}).") from None
    if not jax.jit(all_finite)(restored):
        raise CheckpointError(f"The checkpoint {path} holds NaN/Inf values ({describe_nonfinite(restored)}).")
    return restored


def restore_checkpoint(manager: ocp.CheckpointManager, step: int, target):
    """Restore ``step`` onto the shardings in ``target`` (``trainer.abstract_state``), whatever device count saved
    it; ``CheckpointError`` when its files cannot be read or it holds NaN/Inf."""
    try:
        return _restore(manager, step, target)
    except CheckpointError as error:
        others = [s for s in _committed(manager, remnants(Path(manager.directory))) if s != step]
        raise CheckpointError(f"{error} Use another kept step ({', '.join(map(str, others)) or 'none'}), or "
                              "delete it.") from None


def restore_latest(manager: ocp.CheckpointManager, target):
    """The newest checkpoint that restores, or None when there is none: a resumed run's state.

    Newer checkpoints that cannot be restored are moved to ``CORRUPT_DIR`` with a warning naming them; when none
    restores, ``CheckpointError`` names the newest and nothing is moved.
    """
    failed: list[tuple[int, CheckpointError]] = []
    for step in reversed(manager.all_steps()):
        try:
            state = _restore(manager, step, target)
        except CheckpointError as error:
            failed.append((step, error))
            continue
        for bad_step, error in failed:
            _move_aside(manager, bad_step, error, step)
        return state
    if failed:
        raise CheckpointError(f"{failed[0][1]} No kept checkpoint restores: delete {manager.directory} to start "
                              "the run again from step 0, or use a new --workdir.")
    return None


def _move_aside(manager: ocp.CheckpointManager, step: int, error: CheckpointError, resumed: int) -> None:
    directory = Path(manager.directory)
    destination = directory.parent / CORRUPT_DIR / str(step)
    if jax.process_index() == 0:
        destination.parent.mkdir(exist_ok=True)
        shutil.rmtree(destination, ignore_errors=True)  # the same step, moved aside by an earlier resume
        (directory / str(step)).rename(destination)
        warn(f"{error} Moved it to {destination}; resuming from step {resumed}.")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("fusionjax: unrestorable checkpoint moved aside")
    manager.reload()


def find_checkpoint(manager: ocp.CheckpointManager, checkpoint: str) -> int:
    """The step that ``checkpoint`` names: ``'latest'``, ``'best'`` (highest evaluation top-1, the later one of a
    tie) or a step number; only committed checkpoints count."""
    kept = kept_steps(manager)
    if checkpoint == "latest":
        step = kept[-1] if kept else None
    elif checkpoint == "best":
        scored = [(manager.metrics(s)["top1"], s) for s in kept if "top1" in (manager.metrics(s) or {})]
        step = max(scored)[1] if scored else None
    elif checkpoint.isdigit():
        step = int(checkpoint)
    else:
        raise ConfigError(f"--checkpoint must be 'latest', 'best' or a step number, got {checkpoint!r}.")
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


def check_workdir(workdir: Path, config) -> None:
    """Refuse, before anything is read or compiled, a workdir that holds a run of another config (``claim_workdir``
    checks again under its lock)."""
    conflict = _workdir_conflict(workdir, config)
    if conflict:
        raise WorkdirConflictError(conflict)


def claim_workdir(workdir: Path, config):
    """Lock ``workdir`` for this run and store the config in it; refuse a workdir that holds a run of another config
    or that a live run holds. Returns the lock (a context manager; closing it, or exiting, releases it).

    A resumed run may differ only in ``BOOKKEEPING_KEYS``; the stored config.json is never rewritten. Every host
    decides on the workdir as it was before any host wrote to it, so all of them refuse or none does; process 0
    holds the lock for all of them.
    """
    conflict, error_class, lock = _workdir_conflict(workdir, config), WorkdirConflictError, None
    if jax.process_index() == 0 and not conflict:
        lock, holder = _lock(workdir)
        if lock is None:
            conflict, error_class = (f"{workdir} is in use by another run ({holder}); it is left untouched. Wait for "
                                     "that run to end, stop it, or use another --workdir."), WorkdirInUseError
        else:
            conflict = _workdir_conflict(workdir, config)  # a run of another config may have started meanwhile
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        if multihost_utils.broadcast_one_to_all(np.int32(conflict is not None)) and not conflict:
            conflict = f"{workdir}: process 0 refused it (its error says why)."
    if conflict:
        if lock is not None:
            lock.close()
        raise error_class(conflict)
    path = workdir / CONFIG_FILE
    if jax.process_index() == 0 and not path.exists():
        partial = path.with_suffix(".json.partial")  # renamed into place whole: never a half-written config
        partial.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
        partial.replace(path)
    return lock if lock is not None else contextlib.nullcontext()


def _lock(workdir: Path):
    """``(lock file, None)`` with an exclusive ``flock`` held on ``workdir/LOCK_FILE``, or ``(None, holder)`` when
    another process holds it. The kernel releases the lock when its holder exits, however it dies, so a killed run
    leaves nothing to clean up; the file only names the holder."""
    workdir.mkdir(parents=True, exist_ok=True)
    lock = open(workdir / LOCK_FILE, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "a process that has not yet written its pid"
        lock.close()
        return None, holder
    # Rewritten in place: a new file (an atomic rename) would be a new, unlocked inode.
    lock.truncate(0)
    lock.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    lock.flush()
    return lock, None


def load_workdir_config(workdir: Path) -> ml_collections.ConfigDict:
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise RunNotFoundError(f"{path} does not exist: pass the --workdir of a fusionjax-train run.")
    return ml_collections.ConfigDict(json.loads(path.read_text()))
