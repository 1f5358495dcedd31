"""The trainer against independent references: 1 device vs 8, shard_map BatchNorm groups, closed forms, resume.

Unit tests use a ResNet-8-sized CIFAR net (one block per stage, widths 4/8/8) on 8×8 inputs; the conftest gives
8 CPU devices. Float32 tolerances: results computed with different reduction orders (8 devices vs 1, shard_map vs
vmap, accumulated vs whole batch) agree to rtol 1e-5 / atol 1e-6; closed forms evaluated in float32 to 1e-6.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import fusionjax
from train import cli, data, optim
from train import train as trainer

REPO = Path(__file__).resolve().parent.parent
SYNTHETIC = data.DatasetInfo(name="synthetic", num_classes=10, image_shape=(8, 8, 1), num_train=256, num_eval=64)
TINY_MODEL = dict(stage_sizes=(1, 1, 1), stage_widths=(4, 8, 8), stem_width=4, in_channels=1)
RTOL, ATOL = 1e-5, 1e-6


def tiny_config(**changes) -> ml_collections.ConfigDict:
    config = cli.load_config("digits")
    config.model_overrides.update(TINY_MODEL)
    config.batch_size = 32
    config.num_train_steps = 10
    config.warmup_epochs = 0.0
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def variables():
    """The tiny model's initial variables, on the host; initializing once saves a compile per test."""
    setup = trainer.make_setup(tiny_config(), trainer.make_mesh(jax.devices()[:1]), SYNTHETIC)
    return jax.device_get(trainer.init_state(setup).variables())


def random_batch(seed: int, size: int = 32) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(size, 8, 8, 1)).astype(np.float32),
            "label": rng.integers(0, 10, size).astype(np.int32)}


def run_steps(setup, state, batches) -> list:
    """The state (on the host) after each batch."""
    step, history = trainer.make_train_step(setup), []
    for batch in batches:
        state, _ = step(state, trainer.global_batch(batch, setup.mesh))
        history.append(jax.device_get(state))
    return history


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
    jax.tree_util.tree_map(lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=atol), actual, expected)


def test_step_on_8_devices_equals_1_device_replicated_and_fsdp_with_ema(variables):
    assert jax.device_count() == 8
    batches = [random_batch(0), random_batch(1)]
    decay = 0.5
    one = trainer.make_setup(tiny_config(ema_decay=decay), trainer.make_mesh(jax.devices()[:1]), SYNTHETIC)
    initial = jax.device_get(trainer.init_state(one, variables))
    history = run_steps(one, trainer.init_state(one, variables), batches)
    expected = history[-1]

    # EMA, closed form: ema_0 = initial, ema_i = decay·ema_(i-1) + (1-decay)·value_i, for params and batch_stats.
    ema = initial.variables()
    for state in history:
        ema = jax.tree_util.tree_map(lambda e, v: decay * e + (1 - decay) * v, ema, state.variables())
    assert_trees_close(expected.ema, ema, rtol=1e-6)

    for fsdp in (False, True):
        eight = trainer.make_setup(tiny_config(ema_decay=decay, fsdp=fsdp), trainer.make_mesh(), SYNTHETIC)
        shardings = trainer.state_shardings(initial, eight.mesh, fsdp)
        state = jax.device_put(initial, shardings)
        specs = {s.spec for s in jax.tree_util.tree_leaves(shardings)}
        if fsdp:  # e.g. a (3, 3, 8, 8) kernel on its output axis, a (8, 10) fc kernel on its input axis
            assert {P(None, None, None, "data"), P("data")} <= specs
        else:
            assert specs == {P()}
        actual = run_steps(eight, state, batches)[-1]
        assert int(actual.step) == 2
        assert_trees_close(actual.params, expected.params)
        assert_trees_close(actual.batch_stats, expected.batch_stats)
        assert_trees_close(actual.opt_state, expected.opt_state)
        assert_trees_close(actual.ema, expected.ema)


def test_bn_groups_match_a_shard_map_reference_with_per_device_statistics(variables):
    lr = 0.05
    config = tiny_config(bn_groups=8, momentum=0.0, weight_decay=0.0, schedule="constant", learning_rate=lr)
    setup = trainer.make_setup(config, trainer.make_mesh(), SYNTHETIC)
    initial = jax.device_get(trainer.init_state(setup, variables))
    batch = random_batch(2)
    grouped = run_steps(setup, trainer.init_state(setup, variables), [batch])[-1]

    mesh, model = setup.mesh, setup.model

    def per_device(params, batch_stats, images, labels):  # pmap-style: local statistics, averaged gradients
        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, images, train=True,
                                          mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates["batch_stats"]

        grads, stats = jax.grad(loss_fn, has_aux=True)(params)
        return jax.lax.pmean(grads, "data"), jax.lax.pmean(stats, "data")

    # check_vma=False: jax.grad returns each device's own gradient (with the check on, the gradient of a
    # replicated input comes back already summed over devices), and pmean averages them as pmap code does.
    reference = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")),
                                      out_specs=(P(), P()), check_vma=False))
    grads, stats = jax.device_get(reference(initial.params, initial.batch_stats, batch["image"], batch["label"]))
    expected_params = jax.tree_util.tree_map(lambda p, g: p - lr * g, initial.params, grads)
    assert_trees_close(grouped.params, expected_params)
    assert_trees_close(grouped.batch_stats, stats)

    global_bn = trainer.make_setup(tiny_config(momentum=0.0, weight_decay=0.0, schedule="constant", learning_rate=lr),
                                   trainer.make_mesh(), SYNTHETIC)
    whole = run_steps(global_bn, trainer.init_state(global_bn, variables), [batch])[-1]
    differences = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), whole.params, grouped.params)
    assert max(jax.tree_util.tree_leaves(differences)) > 100 * ATOL  # the groups do change the step


@pytest.mark.parametrize("name, decayed, kept", [
    # ResNet-20: 19 convs + fc kernel decay; 19 BNs × (scale, bias) + fc bias do not.
    ("resnet20", 19 + 1, 19 * 2 + 1),
    # ResNet-50: 1 + 16×3 + 4 projection convs + fc kernel; BNs after each conv × 2 + fc bias.
    ("resnet50", 53 + 1, 53 * 2 + 1),
    # DenseNet-121: conv0 + 58 layers × 2 + 3 transitions + classifier; norm0 + 58×2 + 3 + norm5, × 2 + bias.
    ("densenet121", 120 + 1, 121 * 2 + 1),
])
def test_weight_decay_mask_excludes_exactly_norm_parameters_and_biases(name, decayed, kept):
    model = fusionjax.create_model(name)
    size = fusionjax.get_model_spec(name).min_input_size
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]
    flags = jax.tree_util.tree_leaves_with_path(optim.weight_decay_mask(params))
    assert sum(f for _, f in flags) == decayed
    assert sum(not f for _, f in flags) == kept
    for path, flag in flags:
        leaf = jax.tree_util.keystr(path)
        assert flag == leaf.endswith("['kernel']"), leaf


@pytest.mark.parametrize("optimizer", optim.OPTIMIZERS)
def test_every_optimizer_decays_only_kernels(optimizer):
    setup = trainer.make_setup(tiny_config(optimizer=optimizer, weight_decay=0.1, momentum=0.0, schedule="constant",
                                           learning_rate=1.0),
                               trainer.make_mesh(jax.devices()[:1]), SYNTHETIC)
    shapes = jax.eval_shape(setup.model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    rng = np.random.default_rng(0)  # nonzero everywhere, so that any decay of any leaf would show
    params = jax.tree_util.tree_map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = jax.jit(setup.tx.update)(zero_grads, setup.tx.init(params), params)
    for (path, update), param in zip(jax.tree_util.tree_leaves_with_path(updates), jax.tree_util.tree_leaves(params)):
        name = jax.tree_util.keystr(path)
        if param.ndim == 1:
            assert not np.any(update), name
        elif optimizer in ("sgd", "adamw"):  # decoupled or L2: the update is exactly -lr·wd·p
            np.testing.assert_allclose(update, -0.1 * param, rtol=1e-6, err_msg=name)
        else:  # LARS/LAMB rescale the decay by the trust ratio ‖p‖ / ‖wd·p‖ = 1 / wd
            np.testing.assert_allclose(update, -param * (1e-3 if optimizer == "lars" else 1.0), rtol=1e-5,
                                       err_msg=name)


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.4, 0.0), (0.0, 1.0)])
def test_mixup_and_cutmix_mix_labels_in_the_proportion_they_mix_pixels(mixup_alpha, cutmix_alpha):
    size = 6
    images = jnp.broadcast_to(jnp.arange(size, dtype=jnp.float32)[:, None, None, None], (size, 8, 8, 1))
    targets = jax.nn.one_hot(jnp.arange(size), size)
    for seed in range(4):
        mixed, mixed_targets = jax.jit(trainer.mix_batch, static_argnums=(3, 4))(
            images, targets, jax.random.key(seed), mixup_alpha, cutmix_alpha)
        mixed, mixed_targets = np.asarray(mixed), np.asarray(mixed_targets)
        for i in range(size):
            partner = size - 1 - i  # the reversed batch
            if i == partner:
                continue
            own = mixed_targets[i, i]
            assert own + mixed_targets[i, partner] == pytest.approx(1.0, abs=1e-6)
            if mixup_alpha:
                np.testing.assert_allclose(mixed[i], own * i + (1 - own) * partner, rtol=1e-5, atol=1e-5)
            else:
                assert np.mean(mixed[i] == i) == pytest.approx(own, abs=1e-6)


def _schedule(**changes):
    config = tiny_config(learning_rate=0.4, lr_reference_batch=64, batch_size=128, **changes)  # peak 0.8
    return optim.learning_rate_schedule(config, updates_per_epoch=10, total_updates=100)


def test_schedules_match_closed_forms():
    peak = 0.8
    cosine = _schedule(schedule="cosine", warmup_epochs=2.0)
    for t in (0, 5, 20, 21, 60, 99, 100):
        expected = peak * t / 20 if t < 20 else peak * 0.5 * (1 + math.cos(math.pi * (t - 20) / 80))
        assert float(cosine(t)) == pytest.approx(expected, rel=1e-6, abs=1e-7), t
    piecewise = _schedule(schedule="piecewise", piecewise_epochs=(5, 8))
    for t, divisions in ((0, 0), (49, 0), (50, 1), (79, 1), (80, 2), (99, 2)):
        assert float(piecewise(t)) == pytest.approx(peak * 0.1**divisions, rel=1e-6), t
    sgdr = _schedule(schedule="sgdr", sgdr_first_epochs=2.0, sgdr_period_mult=2.0)  # cycles of 20, 40, 80 updates
    for t in (0, 10, 19, 20, 40, 59, 60, 99):
        start, length = (0, 20) if t < 20 else (20, 40) if t < 60 else (60, 80)
        expected = peak * 0.5 * (1 + math.cos(math.pi * (t - start) / length))
        assert float(sgdr(t)) == pytest.approx(expected, rel=1e-5, abs=1e-7), t
    linear = _schedule(schedule="linear", end_lr_factor=0.25)
    for t in (0, 50, 100):
        assert float(linear(t)) == pytest.approx(peak + (0.25 * peak - peak) * t / 100, rel=1e-6), t
    with pytest.raises(ValueError, match="warmup_epochs"):
        _schedule(schedule="cosine", warmup_epochs=10.0)


def test_gradient_accumulation_equals_the_big_batch_step(variables):
    # BatchNorm normalizes each micro-batch alone, so the big-batch reference normalizes the same halves:
    # bn_groups=2 on the 32-example batch. Both then average the gradient over all 32 examples.
    batch = random_batch(3)
    accumulated = trainer.make_setup(tiny_config(grad_accum_steps=2, nesterov=True), trainer.make_mesh(), SYNTHETIC)
    big = trainer.make_setup(tiny_config(bn_groups=2, nesterov=True), trainer.make_mesh(), SYNTHETIC)
    initial = jax.device_get(trainer.init_state(big, variables))
    halves = [{k: v[:16] for k, v in batch.items()}, {k: v[16:] for k, v in batch.items()}]
    after_first, after_both = run_steps(accumulated, trainer.init_state(accumulated, variables), halves)
    assert_trees_close(after_first.params, initial.params, rtol=0, atol=0)  # no update after one micro-step
    expected = run_steps(big, trainer.init_state(big, variables), [batch])[-1]
    assert_trees_close(after_both.params, expected.params)


def test_gradient_clipping_scales_the_step_to_the_global_norm_limit(variables):
    lr, batch = 0.5, random_batch(5)
    plain = dict(momentum=0.0, weight_decay=0.0, schedule="constant", learning_rate=lr)
    setup = trainer.make_setup(tiny_config(**plain), trainer.make_mesh(jax.devices()[:1]), SYNTHETIC)

    def loss_fn(params):  # the loss written out here, not taken from the trainer
        logits, _ = setup.model.apply({"params": params, "batch_stats": variables["batch_stats"]}, batch["image"],
                                      train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    grads = jax.device_get(jax.jit(jax.grad(loss_fn))(variables["params"]))
    norm = math.sqrt(sum(float(np.sum(np.square(g))) for g in jax.tree_util.tree_leaves(grads)))
    for limit in (norm / 4, norm * 4):  # clipped, and a limit above the norm that leaves the step alone
        config = tiny_config(grad_clip_norm=limit, **plain)
        clipped = trainer.make_setup(config, trainer.make_mesh(), SYNTHETIC)
        after = run_steps(clipped, trainer.init_state(clipped, variables), [batch])[-1]
        scale = min(1.0, limit / norm)
        expected = jax.tree_util.tree_map(lambda p, g: p - lr * scale * g, variables["params"], grads)
        assert_trees_close(after.params, expected)


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_params_state_and_statistics(variables):
    setup = trainer.make_setup(tiny_config(dtype="bfloat16", ema_decay=0.9), trainer.make_mesh(), SYNTHETIC)
    state = trainer.init_state(setup, variables)
    step = trainer.make_train_step(setup)
    batch = trainer.global_batch(random_batch(4), setup.mesh)
    convolutions = [line for line in str(jax.make_jaxpr(step)(state, batch)).splitlines() if "conv_general" in line]
    assert convolutions and all("bf16[" in line for line in convolutions)
    state, step_metrics = step(state, batch)
    floats = jax.tree_util.tree_leaves((state.params, state.batch_stats, state.opt_state, state.ema))
    floats = [x for x in floats if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}
    assert step_metrics["loss"].dtype == jnp.float32 and np.isfinite(step_metrics["loss"])


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(learning_rate=1e30, num_train_steps=40, checkpoint_every_steps=1, log_every_steps=100,
                         eval_every_epochs=100.0, progress_bar=False)
    with pytest.raises(trainer.TrainingDivergedError, match=r"at step \d+") as error:
        trainer.train_and_evaluate(config, tmp_path)
    bad_step = int(re.search(r"at step (\d+)", str(error.value)).group(1))
    manager = trainer.checkpoint_manager(tmp_path, config, read_only=True)
    last = manager.latest_step()
    assert last is not None and last < bad_step and f"step {last}," in str(error.value)

    # Replay from the kept checkpoint: every loss before bad_step is finite, the one at bad_step is not.
    setup = trainer.make_setup(config)
    state = trainer.restore_checkpoint(manager, last, trainer.abstract_state(setup))
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(jax.device_get(state.params)))
    step = trainer.make_train_step(setup)
    batches = data.train_batches(config, seed=config.seed, global_batch_size=32, start_step=last)
    for number in range(last + 1, bad_step + 1):
        state, step_metrics = step(state, trainer.global_batch(next(batches), setup.mesh))
        assert np.isfinite(step_metrics["loss"]) == (number < bad_step), number


def test_a_workdir_of_another_config_is_refused_and_left_untouched(tmp_path):
    trainer.claim_workdir(tmp_path, tiny_config())
    stored = (tmp_path / trainer.CONFIG_FILE).read_bytes()
    trainer.claim_workdir(tmp_path, tiny_config(log_every_steps=7))  # bookkeeping may change on resume
    with pytest.raises(trainer.WorkdirConflictError, match=r"model: 'resnet20' in the workdir, 'resnet32' now"):
        trainer.claim_workdir(tmp_path, tiny_config(model="resnet32"))
    assert (tmp_path / trainer.CONFIG_FILE).read_bytes() == stored
    foreign = tmp_path / "foreign"
    (foreign / trainer.CHECKPOINT_DIR).mkdir(parents=True)
    with pytest.raises(trainer.WorkdirConflictError, match="no config.json"):
        trainer.claim_workdir(foreign, tiny_config())
    assert not (foreign / trainer.CONFIG_FILE).exists()


def test_help_lists_the_shipped_configs():
    result = subprocess.run([sys.executable, "-m", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert "--workdir" in result.stdout, result.stderr  # absl exits with status 1 after --help
    for name in ("digits", "cifar10_resnet20", "imagenet_resnet50", "imagenet_densenet121"):
        assert name in result.stdout


def test_an_incomplete_multi_process_launch_is_refused_naming_the_missing_flags(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train", "--config", str(REPO / "configs" / "digits.py"),
                             "--workdir", str(tmp_path / "run"), "--coordinator_address", "localhost:1234"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--coordinator_address, --num_processes and --process_id go together" in result.stderr
    assert not (tmp_path / "run").exists()


def test_cpu_devices_splits_the_host_before_jax_starts(tmp_path):
    """``--cpu_devices 3`` overrides the XLA_FLAGS device count (8 here): the digits batch of 64 no longer divides."""
    result = subprocess.run([sys.executable, "-m", "train", "--config", str(REPO / "configs" / "digits.py"),
                             "--workdir", str(tmp_path / "run"), "--cpu_devices", "3"],
                            env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "config.batch_size / grad_accum_steps = 64 must be divisible by the 3 devices; pick a multiple of 3." \
        in result.stderr
    assert not (tmp_path / "run").exists()


RESUME_CONFIG = """
from configs import digits


def get_config():
    config = digits.get_config()
    config.model_overrides.update(stage_sizes=(1, 1, 1), stage_widths=(4, 8, 8), stem_width=4, drop_path=0.1)
    config.batch_size = 32  # 44 steps per epoch
    config.num_train_steps = 120
    config.checkpoint_every_steps = 20
    config.eval_every_epochs = 1.0
    config.ema_decay = 0.9
    config.mixup_alpha = 0.2  # resumed runs must replay the on-device random numbers too
    config.progress_bar = False
    return config
"""


def _subprocess_env() -> dict:
    """The test process's devices (8) and compilation cache, for the training subprocesses."""
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _saved_steps(workdir: Path) -> list[int]:
    directory = workdir / trainer.CHECKPOINT_DIR
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def _start_and_signal(command, workdir: Path, after_step: int, signum: int) -> subprocess.CompletedProcess:
    """Start a training run; send ``signum`` as soon as a checkpoint past ``after_step`` is complete."""
    process = subprocess.Popen(command, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.monotonic() + 300
    while not any(s > after_step for s in _saved_steps(workdir)):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0]
    return subprocess.CompletedProcess(command, process.returncode, output)


def test_sigterm_and_sigkill_then_resume_end_with_the_uninterrupted_parameters(tmp_path):
    config_path = tmp_path / "tiny_digits.py"
    config_path.write_text(RESUME_CONFIG)
    workdir = tmp_path / "interrupted"
    command = [sys.executable, "-m", "train", "--config", str(config_path), "--workdir", str(workdir)]

    terminated = _start_and_signal(command, workdir, 0, signal.SIGTERM)
    assert terminated.returncode == 0, terminated.stdout
    stopped_at = int(re.search(r"SIGTERM: saved step (\d+)", terminated.stdout).group(1))
    assert stopped_at in _saved_steps(workdir) and stopped_at < 120

    killed = _start_and_signal(command, workdir, stopped_at, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert 120 not in _saved_steps(workdir)
    resumed_from = max(_saved_steps(workdir))

    finished = subprocess.run(command, env=_subprocess_env(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert f"resuming from step {resumed_from}" in finished.stdout

    # The uninterrupted run, in this process (same 8 devices, same compiled program).
    config = cli.load_config(str(config_path))
    expected = jax.device_get(trainer.train_and_evaluate(config, tmp_path / "uninterrupted"))

    # Same program, same inputs, same random numbers: the parameters agree bit for bit (XLA:CPU is deterministic
    # for a fixed program and device count), and so do BN statistics, optimizer state and EMA.
    manager = trainer.checkpoint_manager(workdir, config, read_only=True)
    assert manager.latest_step() == 120
    for devices, fsdp in ((jax.devices(), False), (jax.devices()[:1], False), (jax.devices()[:2], True)):
        restore_config = config.copy_and_resolve_references()
        restore_config.fsdp = fsdp
        setup = trainer.make_setup(restore_config, trainer.make_mesh(devices))
        restored = trainer.restore_checkpoint(manager, 120, trainer.abstract_state(setup))
        assert {d for x in jax.tree_util.tree_leaves(restored) for d in x.devices()} == set(devices)
        jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(restored), expected)

    evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "eval" and "ema_top1" in r for r in evals)


@pytest.mark.slow
def test_digits_main_job_reaches_97_percent_and_reports_where_its_outputs_went(tmp_path):
    """The README's main job as a user runs it (one CPU device), then fusionjax-eval and fusionjax-plot."""
    workdir = tmp_path / "digits"
    env = {**_subprocess_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "train", "--config", str(REPO / "configs" / "digits.py"),
                             "--workdir", str(workdir)], env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["split"] == "eval"][-1]
    assert final["top1"] >= 0.97, (final, seconds)
    for line, path in (("Checkpoints:", workdir / "checkpoints"), ("Plot:", workdir / "curves.png"),
                       ("Metrics:", workdir / "metrics.jsonl")):
        assert f"{line} {path}" in result.stdout and path.exists()
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert "%|" in result.stderr  # the tqdm progress bar

    # fusionjax-eval restores the 1-device checkpoint onto this process's 8 devices and reproduces the accuracy
    # (logits differ in the last bits between 1 and 8 devices; no test image sits on such a tie).
    evaluated = trainer.evaluate_workdir(workdir)
    assert evaluated["step"] == final["step"] and evaluated["top1"] == pytest.approx(final["top1"], abs=1e-9)
    # On another device count that divides neither batch, after a batch size that it divides.
    eval_command = [sys.executable, "-c", "from train.cli import eval_main; eval_main()", "--workdir", str(workdir),
                    "--cpu_devices", "7"]
    refused = subprocess.run(eval_command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "eval_batch_size = 360 must be divisible by the 7 devices; pick a multiple of 7 (fusionjax-eval " \
        "--batch_size)" in refused.stderr
    on_7_devices = subprocess.run([*eval_command, "--batch_size", "63"], env=env, capture_output=True, text=True,
                                  timeout=120)
    assert on_7_devices.returncode == 0, on_7_devices.stderr
    assert f"step {final['step']}: top-1 {final['top1']:.4f}" in on_7_devices.stdout
    (workdir / "curves.png").unlink()
    plot = subprocess.run([sys.executable, "-c", "from train.cli import plot_main; plot_main()", str(workdir)],
                          capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    assert (workdir / "curves.png").stat().st_size > 10_000


def test_eval_of_a_converted_checkpoint_matches_numpy_top_k(tmp_path):
    from fusionjax.convert import write_converted
    from test_data import write_cifar_archive  # the CIFAR-10 archive format, written as the data tests write it

    (tmp_path / "manual").mkdir()
    written_images, labels = write_cifar_archive(tmp_path / "manual", "cifar10", "binary", num_train=10,
                                                 num_test=13)["test"]
    model = fusionjax.create_model("resnet20")
    variables = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))
    write_converted(tmp_path / "converted", "resnet20", variables, {"num_classes": 10})

    config = cli.load_config("common")
    config.update(dataset="cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"),
                  eval_split="test", eval_batch_size=8)  # two batches, the second padded with 3 blank images
    result = trainer.evaluate_converted(tmp_path / "converted", config)

    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])  # CIFAR-10 train set
    images = ((written_images / 255.0 - mean) / std).astype(np.float32)
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, images))
    ranks = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    assert result["top1"] == pytest.approx(np.mean(ranks < 1), abs=1e-9)
    assert result["top5"] == pytest.approx(np.mean(ranks < 5), abs=1e-9)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_of_4_devices_train_like_one_process_of_8(tmp_path):
    """A multi-host launch on localhost: ``jax.distributed`` with gloo collectives, each process reading only its
    rows of every batch, one shared workdir. It must end where one process on 8 devices ends."""
    config_path = tmp_path / "tiny_digits.py"
    config_path.write_text(RESUME_CONFIG.replace("config.num_train_steps = 120", "config.num_train_steps = 50"))
    workdir = tmp_path / "two_processes"
    address = f"localhost:{_free_port()}"
    env = {**_subprocess_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    logs = [tmp_path / f"process{index}.log" for index in range(2)]
    processes = []
    for index, log in enumerate(logs):  # output to files: a full pipe would block a process while this one polls
        with log.open("w") as output:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "train", "--config", str(config_path), "--workdir", str(workdir),
                 "--coordinator_address", address, "--num_processes", "2", "--process_id", str(index)],
                env=env, stdout=output, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 600
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in processes):  # one failed: the other would wait for it forever
            break
        time.sleep(0.2)
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()
    outputs = [log.read_text() for log in logs]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    assert "on 8 device(s)" in outputs[0] and "Final evaluation" in outputs[0]
    assert "Final evaluation" not in outputs[1]  # process 0 reports, writes metrics and plots

    config = cli.load_config(str(config_path))
    expected = jax.device_get(trainer.train_and_evaluate(config, tmp_path / "one_process"))
    manager = trainer.checkpoint_manager(workdir, config, read_only=True)
    setup = trainer.make_setup(config)
    restored = jax.device_get(trainer.restore_checkpoint(manager, 50, trainer.abstract_state(setup)))
    # The same program on the same 8 devices; the all-reduces run over gloo instead of in one process, so the
    # sums may be ordered differently: float32 tolerance, not bit equality.
    assert int(restored.step) == 50
    assert_trees_close(restored.params, expected.params)
    assert_trees_close(restored.batch_stats, expected.batch_stats)
    assert_trees_close(restored.ema, expected.ema)

    def evaluations(directory):
        records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["top1"], r["ema_top1"]) for r in records if r["split"] == "eval"]

    assert evaluations(workdir) == pytest.approx(evaluations(tmp_path / "one_process"), abs=1e-6)


# Depth only, for the recipes whose full-depth train step takes a minute or more to compile on 2 cores (measured
# cold: DenseNets 190-240 s, PreAct-ResNet-164 150 s, WRN-28-10 and ResNet-50 70 s); widths, growth rates, blocks
# and everything else stay as shipped.
SHALLOW_FOR_CPU = {
    "cifar10_densenet_bc_100_12": {"block_config": (2, 2, 2)},
    "cifar100_densenet_bc_100_12": {"block_config": (2, 2, 2)},
    "imagenet_densenet121": {"block_config": (1, 1, 1, 1)},
    "cifar10_preact_resnet164": {"stage_sizes": (2, 2, 2)},
    "cifar10_wrn28_10": {"stage_sizes": (1, 1, 1)},
    "cifar100_wrn28_10": {"stage_sizes": (1, 1, 1)},
    "imagenet_resnet50": {"stage_sizes": (1, 1, 1, 1)},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in cli.shipped_configs() if name != "digits"])
def test_every_shipped_config_trains_on_tfds_mock_data(name, tmp_path, tfds_mock_data):
    """Each recipe as shipped (model, optimizer, schedule, augmentation, data set) through ``train_and_evaluate``,
    shrunk only where a CPU test must be: 2 steps of 8 examples, ImageNet-sized inputs at 64 px, no input worker
    processes, and the depths of ``SHALLOW_FOR_CPU``."""
    config = cli.load_config(name)
    config.model_overrides.update(SHALLOW_FOR_CPU.get(name, {}))
    config.update(data_dir=str(tmp_path / "data"), batch_size=8, eval_batch_size=8, num_train_steps=2,
                  warmup_epochs=min(config.warmup_epochs, 0.5), input_workers=0, progress_bar=False,
                  image_size=None if config.dataset.startswith("cifar") else 64)
    with tfds_mock_data(num_examples=16):
        state = trainer.train_and_evaluate(config, tmp_path / "run")
    assert int(state.step) == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert train_records and all(math.isfinite(r["loss"]) for r in train_records)
    assert evals and 0.0 <= evals[-1]["top1"] <= evals[-1]["top5"] <= 1.0
    assert trainer.checkpoint_manager(tmp_path / "run", config, read_only=True).latest_step() == 2


def test_command_lines_switch_cpu_convolutions_to_eigen_unless_xla_flags_chooses():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    cli.prefer_eigen_cpu_convolutions(environ)
    assert environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8 --xla_cpu_experimental_ynn_fusion_type="
    chosen = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}
    cli.prefer_eigen_cpu_convolutions(chosen)
    assert chosen["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
    empty = {}
    cli.prefer_eigen_cpu_convolutions(empty)
    # The flag must reach a jax process and switch YNNPACK off there (YNNPACK claims this convolution by default).
    probe = ("import jax, jax.numpy as jnp; x = jnp.ones((8, 16, 16, 64)); w = jnp.ones((3, 3, 64, 64)); "
             "print(jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
             "dimension_numbers=('NHWC', 'HWIO', 'NHWC'))).lower(x, w).compile().as_text())")
    for xla_flags, ynn in ((empty["XLA_FLAGS"], False), ("", True)):
        hlo = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "XLA_FLAGS": xla_flags},
                             capture_output=True, text=True, timeout=120).stdout
        assert "convolution" in hlo and ("__ynn_fusion" in hlo) == ynn, xla_flags
