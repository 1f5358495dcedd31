"""Nothing lost, nothing poisoned: the faults careless users and real machines cause, each made as it happens
(real kills, truncated files, an empty step directory, a second process, a torn line) and what must survive it.
docs/reliability.md."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fusionjax.export import cli as export_cli
from fusionjax.train import cli, errors, metrics as metrics_lib, trainer, workdir as workdir_lib

SCRIPTS = Path(sys.executable).parent  # where pip put the console scripts of this environment
TINY_MODEL = dict(stage_sizes=(1, 1, 1), stage_widths=(4, 8, 8), stem_width=4, in_channels=1)
STEPS = 6
TINY_CONFIG_FILE = """
from fusionjax.configs import digits


def get_config():
    config = digits.get_config()
    config.model_overrides.update(stage_sizes=(1, 1, 1), stage_widths=(4, 8, 8), stem_width=4)
    config.batch_size = 32
    config.warmup_epochs = 0.0
    config.eval_every_epochs = 100.0  # evaluates at the last step only
    config.progress_bar = False
    return config
"""


def tiny_config(**changes):
    config = cli.load_config("digits")
    config.model_overrides.update(TINY_MODEL)
    config.update(batch_size=32, num_train_steps=STEPS, warmup_epochs=0.0, checkpoint_every_steps=2,
                  log_every_steps=2, eval_every_epochs=100.0, progress_bar=False)
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A workdir with checkpoints 2, 4 and 6 of a finished run, and its final state on the host."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    return workdir, jax.device_get(trainer.train_and_evaluate(tiny_config(), workdir))


@pytest.fixture
def run_copy(finished_run, tmp_path):
    workdir, final = finished_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    return copy, final


def saved_arrays(workdir: Path, step: int) -> dict:
    """A checkpoint's arrays as NumPy arrays, read by Orbax's plain checkpointer: no fusionjax code involved."""
    path = workdir / workdir_lib.CHECKPOINT_DIR / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    saved = checkpointer.metadata(path).item_metadata.tree
    return checkpointer.restore(path, restore_args=jax.tree_util.tree_map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved))


def step_dirs(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / workdir_lib.CHECKPOINT_DIR).iterdir() if p.name.isdigit())


def truncate_arrays(step_dir: Path) -> None:
    """Cut every array data file of a checkpoint to 10 bytes, as a full disk or a dying machine leaves them."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        os.truncate(path, 10)


def run_command(*arguments, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / arguments[0]), *map(str, arguments[1:])], capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors_printed = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors_printed) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors_printed[0], errors_printed[0]


# ----------------------------------------------------------------------------------------------------------------
# Non-finite values: never saved, never evaluated or exported.


def test_infinite_batch_statistics_stop_the_run_before_any_is_saved(tmp_path):
    """At learning rate 1e6 BatchNorm's running variances overflow at step 4 while the training loss stays finite:
    the run stops there, naming the part of the state, and every kept checkpoint holds finite values only."""
    config = tiny_config(num_train_steps=12, learning_rate=1e6, warmup_epochs=0.2, checkpoint_every_steps=2,
                         log_every_steps=4)
    with pytest.raises(errors.TrainingDivergedError, match=r"The train state holds NaN/Inf from step 4 on \(at "
                       r"step 4: \d+ in batch_stats; first batch_stats.*; stopped, and the last good checkpoint, "
                       r"step 2, is kept"):
        trainer.train_and_evaluate(config, tmp_path)
    assert step_dirs(tmp_path) == [2]
    for leaf in jax.tree_util.tree_leaves(saved_arrays(tmp_path, 2)):
        assert np.isfinite(np.asarray(leaf)).all()
    assert not (tmp_path / metrics_lib.METRICS_FILE).exists()  # step 4's log line was refused too


def poison_newest(workdir: Path) -> int:
    """Save, as an earlier fusionjax did, a checkpoint 8 whose BatchNorm running variances are +inf."""
    config = workdir_lib.load_workdir_config(workdir)
    setup = trainer.make_setup(config)
    manager = workdir_lib.checkpoint_manager(workdir, config)
    state = workdir_lib.restore_checkpoint(manager, STEPS, trainer.abstract_state(setup))
    batch_stats = jax.tree_util.tree_map_with_path(
        lambda path, x: x + np.inf if jax.tree_util.keystr(path).endswith("['var']") else x, state.batch_stats)
    workdir_lib.save_checkpoint(manager, state.replace(step=state.step + 2, batch_stats=batch_stats), None)
    manager.wait_until_finished()
    manager.close()
    assert np.isinf(np.asarray(saved_arrays(workdir, STEPS + 2)["batch_stats"]["bn1"]["var"])).all()
    return STEPS + 2


def test_eval_and_export_refuse_a_checkpoint_holding_inf(run_copy, tmp_path):
    workdir, _ = run_copy
    step = poison_newest(workdir)
    with pytest.raises(errors.CheckpointError, match=rf"checkpoints/{step} holds NaN/Inf values \(\d+ in "
                       r"batch_stats; .*Use another kept step \(4, 6\)"):  # keep_checkpoints=3 dropped 2
        trainer.evaluate_workdir(workdir)
    assert_one_line_error(run_command("fusionjax-eval", "--workdir", workdir), f"{step} holds NaN/Inf values")
    out = tmp_path / "model.onnx"
    assert export_cli.main([str(workdir), "--format", "onnx", "--out", str(out)]) == 1
    assert not out.exists()
    assert trainer.evaluate_workdir(workdir, "6")["step"] == 6  # the finite one before it still evaluates


# ----------------------------------------------------------------------------------------------------------------
# Remnants and corrupt checkpoints.


def rmtree_order(path: Path):
    """The files shutil.rmtree (Orbax's deletion) unlinks, in its order: each directory's entries as scandir lists
    them, subdirectories depth first."""
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            yield from rmtree_order(Path(entry.path))
        else:
            yield Path(entry.path)


def half_delete(step_dir: Path) -> None:
    """Delete a checkpoint's files as Orbax's deletion does, killed right after its metadata file went: the state
    a kill leaves (a remnant without metadata, with part of its data)."""
    for path in rmtree_order(step_dir):
        path.unlink()
        if path.name == "_CHECKPOINT_METADATA":
            return


def test_remnants_of_interrupted_deletions_are_never_listed_and_the_next_run_removes_them(run_copy, capfd):
    """A half-deleted step 16 and an empty step 9 (a kill during Orbax's deletion): eval skips them naming them, a
    step number asks for kept ones only, and the next run started in the workdir removes them."""
    workdir, final = run_copy
    checkpoints = workdir / workdir_lib.CHECKPOINT_DIR
    shutil.copytree(checkpoints / "4", checkpoints / "16")
    half_delete(checkpoints / "16")
    assert any((checkpoints / "16").rglob("*"))
    (checkpoints / "9").mkdir()
    config = workdir_lib.load_workdir_config(workdir)
    manager = workdir_lib.checkpoint_manager(workdir, config, read_only=True)
    assert workdir_lib.find_checkpoint(manager, "latest") == STEPS
    assert f"ignoring {checkpoints / '9'}, {checkpoints / '16'}: incomplete step" in capfd.readouterr().err
    with pytest.raises(errors.RunNotFoundError, match=r"No checkpoint '16' .*kept steps: \[2, 4, 6\]"):
        workdir_lib.find_checkpoint(manager, "16")
    assert trainer.evaluate_workdir(workdir)["step"] == STEPS

    state = trainer.train_and_evaluate(tiny_config(), workdir)  # resumes at its last step
    assert f"removing {checkpoints / '9'}, {checkpoints / '16'}" in capfd.readouterr().err
    assert step_dirs(workdir) == [2, 4, 6]
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state), final)


def test_a_truncated_newest_checkpoint_is_moved_aside_and_the_run_resumes_bit_identical(run_copy, capfd):
    workdir, final = run_copy
    truncate_arrays(workdir / workdir_lib.CHECKPOINT_DIR / str(STEPS))
    with pytest.raises(errors.CheckpointError, match=r"checkpoints/6 cannot be read \(ValueError: OUT_OF_RANGE"):
        trainer.evaluate_workdir(workdir)
    result = run_command("fusionjax-eval", "--workdir", workdir, "--checkpoint", STEPS)
    assert_one_line_error(result, "checkpoints/6 cannot be read", "Use another kept step (2, 4), or delete it.")

    state = trainer.train_and_evaluate(tiny_config(), workdir)
    moved = workdir / workdir_lib.CORRUPT_DIR / str(STEPS)
    warning = capfd.readouterr().err
    assert "checkpoints/6 cannot be read" in warning and f"Moved it to {moved}; resuming from step 4." in warning
    assert moved.is_dir() and step_dirs(workdir) == [2, 4, 6]
    # Steps 5 and 6 again, from the same data position and random keys: the same values to the bit.
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state), final)


def test_no_restorable_checkpoint_is_one_error_naming_it_and_nothing_is_moved(run_copy):
    workdir, _ = run_copy
    for step in step_dirs(workdir):
        truncate_arrays(workdir / workdir_lib.CHECKPOINT_DIR / str(step))
    with pytest.raises(errors.CheckpointError, match=r"checkpoints/6 cannot be read .* No kept checkpoint restores: "
                       r"delete .*checkpoints to start the run again from step 0"):
        trainer.train_and_evaluate(tiny_config(), workdir)
    assert step_dirs(workdir) == [2, 4, 6] and not (workdir / workdir_lib.CORRUPT_DIR).exists()


# ----------------------------------------------------------------------------------------------------------------
# metrics.jsonl and the workdir lock.


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(run_copy, capfd):
    workdir, _ = run_copy
    path = workdir / metrics_lib.METRICS_FILE
    lines = path.read_text().splitlines(keepends=True)
    os.truncate(path, len("".join(lines)) - len(lines[-1]) // 2)  # killed halfway through writing the last line
    expected = [json.loads(line) for line in lines[:-1]]
    assert {r["split"] for r in expected} == {"train"}

    assert metrics_lib.read_metrics(workdir) == {"train": {r.pop("step"): r for r in map(dict, expected)
                                                           if r.pop("split")}}
    assert "line 4: skipping a torn line" in capfd.readouterr().err
    plotted = run_command("fusionjax-plot", workdir)
    assert plotted.returncode == 0 and "skipping a torn line" in plotted.stderr, plotted.stderr

    writer = metrics_lib.MetricWriter(workdir)  # a resumed run appends after the torn line's removal
    writer.write(7, "train", {"loss": 0.5})
    writer.close()
    assert "dropping its torn last line" in capfd.readouterr().err
    assert [json.loads(line) for line in path.read_text().splitlines()] == [*expected, {"step": 7, "split": "train",
                                                                                       "loss": 0.5}]


HOLD_WORKDIR = """
import sys, time
from pathlib import Path
from fusionjax.train import cli, workdir
lock = workdir.claim_workdir(Path(sys.argv[1]), cli.load_config("digits"))
print("locked", flush=True)
time.sleep(600)
"""


def test_a_workdir_a_live_process_holds_is_refused_and_a_killed_holder_s_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WORKDIR, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        before = {p: p.read_bytes() for p in tmp_path.iterdir()}
        with pytest.raises(errors.WorkdirInUseError, match=rf"{tmp_path} is in use by another run \(pid "
                           rf"{holder.pid} on host .*\); it is left untouched"):
            workdir_lib.claim_workdir(tmp_path, cli.load_config("digits"))
        assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir_lib.claim_workdir(tmp_path, cli.load_config("digits")):  # the kernel released the dead one's lock
        assert (tmp_path / workdir_lib.LOCK_FILE).read_text() == f"pid {os.getpid()} on host {os.uname().nodename}\n"


# ----------------------------------------------------------------------------------------------------------------
# Real runs, killed at random points of their saves and deletions.


def kept_steps_all_restore(workdir: Path, config) -> list[int]:
    manager = workdir_lib.checkpoint_manager(workdir, config, read_only=True)
    kept = workdir_lib.kept_steps(manager)
    target = trainer.abstract_state(trainer.make_setup(config))
    for step in kept:
        assert int(workdir_lib.restore_checkpoint(manager, step, target).step) == step
    manager.close()
    return kept


@pytest.mark.slow
def test_sigkill_at_random_points_of_saves_and_deletions_then_resume_ends_bit_identical(tmp_path):
    """A checkpoint every step and one kept: every moment of the run is inside a save or a deletion. Each kill -9
    (and one SIGTERM) leaves only restorable checkpoints listed, and the final resumed run ends with the
    parameters, statistics, optimizer state and metrics of a run never interrupted."""
    config_path = tmp_path / "tiny_digits.py"
    config_path.write_text(TINY_CONFIG_FILE)
    overrides = ["--config.num_train_steps=40", "--config.checkpoint_every_steps=1", "--config.keep_checkpoints=1",
                 "--config.log_every_steps=1"]
    workdir = tmp_path / "killed"
    command = [str(SCRIPTS / "fusionjax-train"), "--config", str(config_path), "--workdir", str(workdir), *overrides]
    config = cli.load_config(str(config_path))
    config.update(num_train_steps=40, checkpoint_every_steps=1, keep_checkpoints=1, log_every_steps=1)
    rng = random.Random(0)
    for signum in (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = max(step_dirs(workdir), default=0) if (workdir / workdir_lib.CHECKPOINT_DIR).exists() else 0
        deadline = time.monotonic() + 300
        while not (workdir / workdir_lib.CHECKPOINT_DIR).exists() or max(step_dirs(workdir), default=0) <= first:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.5))
        process.send_signal(signum)
        output = process.communicate(timeout=120)[0]
        assert process.returncode in (0, -signum), output
        assert kept_steps_all_restore(workdir, config)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert kept_steps_all_restore(workdir, config) == [40]
    assert not any((workdir / workdir_lib.CHECKPOINT_DIR / workdir_lib.DELETING_DIR).glob("*"))

    expected = jax.device_get(trainer.train_and_evaluate(config, tmp_path / "uninterrupted"))
    restored = saved_arrays(workdir, 40)
    for name in ("params", "batch_stats", "opt_state"):  # Orbax reads tuples back as lists: compare the leaves
        ours, theirs = jax.tree_util.tree_leaves(restored[name]), jax.tree_util.tree_leaves(getattr(expected, name))
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
    final = [metrics_lib.read_metrics(w)["eval"][40] for w in (workdir, tmp_path / "uninterrupted")]
    assert final[0] == final[1]


@pytest.mark.slow
def test_a_second_fusionjax_train_in_a_live_run_s_workdir_is_refused_and_touches_nothing(tmp_path):
    config_path = tmp_path / "tiny_digits.py"
    config_path.write_text(TINY_CONFIG_FILE)
    workdir = tmp_path / "shared"
    command = [str(SCRIPTS / "fusionjax-train"), "--config", str(config_path), "--workdir", str(workdir),
               "--config.num_train_steps=30", "--config.checkpoint_every_steps=1"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (workdir / workdir_lib.CHECKPOINT_DIR).exists() or not step_dirs(workdir):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
        time.sleep(0.01)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert_one_line_error(second, f"{workdir} is in use by another run (pid {first.pid} on host")
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output
    records = [json.loads(line) for line in (workdir / metrics_lib.METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(10, 31, 10))
