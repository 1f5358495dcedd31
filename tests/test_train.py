"""The trainer and its command lines against independent references: 1 device vs 8, shard_map BatchNorm groups,
NumPy closed forms (schedules, label smoothing, BatchNorm statistics, EMA), an uninterrupted run for resume.

Unit tests use a ResNet-8-sized CIFAR net (one block per stage, widths 4/8/8) on 8×8 inputs; the conftest gives
8 CPU devices. Float32 tolerances: results computed with different reduction orders (8 devices vs 1, shard_map vs
vmap, accumulated vs whole batch, float32 vs a float64 NumPy reference) agree to rtol 1e-5 / atol 1e-6; closed
forms evaluated in float32 to 1e-6.
"""

import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import fusionjax
from fusionjax.configs import common
from fusionjax.train import cli, data, errors, mixup, optim, trainer, workdir as workdir_lib

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(sys.executable).parent  # where pip put the console scripts of this environment
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
        mixed, mixed_targets = jax.jit(mixup.mix_batch, static_argnums=(3, 4))(
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

    # BatchNorm running statistics move at every micro-step, each from its own micro-batch, as in a PyTorch
    # accumulation loop. Reference for the stem's BN: its input, the 3×3 convolution (zero padding 1, no bias) of
    # each half, computed here in NumPy; the running average 0.9·old + 0.1·batch statistic with the biased batch
    # variance (fusionjax's BatchNorm keeps Flax's convention there), from mean 0 and variance 1.
    kernel = np.asarray(variables["params"]["conv1"]["kernel"], np.float64)  # HWIO, 3×3×1×4

    def stem_statistics(images):
        padded = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = sum(np.einsum("nhwc,co->nhwo", padded[:, dy:dy + 8, dx:dx + 8], kernel[dy, dx])
                  for dy in range(3) for dx in range(3))
        return out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))

    running = {"mean": np.zeros(4), "var": np.ones(4)}
    for half, state in zip(halves, (after_first, after_both)):
        mean, var = stem_statistics(half["image"])
        running = {"mean": 0.9 * running["mean"] + 0.1 * mean, "var": 0.9 * running["var"] + 0.1 * var}
        assert_trees_close(state.batch_stats["bn1"], running)
    whole_mean, _ = stem_statistics(batch["image"])
    one_update = 0.1 * whole_mean  # what one update from the whole batch would leave
    assert np.abs(after_both.batch_stats["bn1"]["mean"] - one_update).max() > 100 * ATOL


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


def test_label_smoothing_loss_is_the_smoothed_cross_entropy(variables):
    """The logged loss with ``label_smoothing`` ε equals, in NumPy, −mean Σ_c t_c log softmax(z)_c with targets
    t = (1 − ε)·one_hot + ε/K, from the logits of the same training-mode forward."""
    smoothing, batch = 0.1, random_batch(6)
    setup = trainer.make_setup(tiny_config(label_smoothing=smoothing), trainer.make_mesh(jax.devices()[:1]),
                               SYNTHETIC)
    _, step_metrics = trainer.make_train_step(setup)(trainer.init_state(setup, variables),
                                                     trainer.global_batch(batch, setup.mesh))
    logits, _ = setup.model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
    logits = np.asarray(logits, np.float64)
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    targets = (1 - smoothing) * np.eye(10)[batch["label"]] + smoothing / 10
    expected = -(targets * log_softmax).sum(1).mean()
    unsmoothed = -log_softmax[np.arange(32), batch["label"]].mean()
    assert float(step_metrics["loss"]) == pytest.approx(expected, rel=1e-6)
    assert abs(expected - unsmoothed) > 1e-3  # the smoothing changes the loss by far more than the tolerance


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


@pytest.mark.parametrize("bad_step, found_at", [(7, "the log step 10"), (11, "the checkpoint step 12")])
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, bad_step,
                                                                          found_at):
    """The batch of ``bad_step`` is NaN, so that step's loss is: the run stops at the next log or checkpoint step
    (logs every 5 steps, checkpoints every 6), names ``bad_step``, and keeps step 6's checkpoint and the metrics
    logged before ``bad_step``, nothing after."""
    real_train_batches = data.train_batches

    def poisoned(config, **kwargs):
        for step, batch in enumerate(real_train_batches(config, **kwargs), kwargs["start_step"] + 1):
            # uint8 pixels hold no NaN: a float32 batch of NaN, which the step normalizes to NaN.
            yield {**batch, "image": np.full(batch["image"].shape, np.nan, np.float32)} if step == bad_step else batch

    monkeypatch.setattr(data, "train_batches", poisoned)
    config = tiny_config(num_train_steps=20, log_every_steps=5, checkpoint_every_steps=6, eval_every_epochs=100.0,
                         progress_bar=False)
    with pytest.raises(errors.TrainingDivergedError, match=rf"Training loss is nan at step {bad_step}; stopped, and "
                       r"the last good checkpoint, step 6, is kept"):
        trainer.train_and_evaluate(config, tmp_path)
    manager = workdir_lib.checkpoint_manager(tmp_path, config, read_only=True)
    assert list(manager.all_steps()) == [6], found_at
    restored = workdir_lib.restore_checkpoint(manager, 6, trainer.abstract_state(trainer.make_setup(config)))
    assert int(restored.step) == 6
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(jax.device_get(restored)))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [step for step in (5, 10) if step < bad_step]


@flax.struct.dataclass
class StepAndParams:  # what save_checkpoint needs of a train state
    step: jax.Array
    params: dict


def test_a_single_process_checkpoint_saves_its_arrays_without_compiling_anything(tmp_path):
    """Orbax's default replica-parallel writing slices every replicated array per device, an op lowered and
    compiled per shape (seconds on a model's first save); one process writes each array whole (docs/training.md).
    The shapes are this test's own, so no earlier compile can be reused."""
    replicated = jax.sharding.NamedSharding(jax.make_mesh((jax.device_count(),), ("data",)), P())
    state = StepAndParams(jnp.int32(3), {f"w{i}": jax.device_put(np.full((40 + i, 7), i, np.float32), replicated)
                                         for i in range(5)})
    lowered = []
    listener = lambda event, *args, **kwargs: lowered.append(event) if "jaxpr_to_mlir_module" in event else None
    manager = workdir_lib.checkpoint_manager(tmp_path, tiny_config())
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        workdir_lib.save_checkpoint(manager, state, None)
        manager.wait_until_finished()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert lowered == []
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = workdir_lib.restore_checkpoint(manager, 3, target)
    for ours, saved in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert ours.sharding == saved.sharding and np.array_equal(ours, saved)


def test_a_workdir_of_another_config_is_refused_and_left_untouched(tmp_path):
    workdir_lib.claim_workdir(tmp_path, tiny_config())
    stored = (tmp_path / workdir_lib.CONFIG_FILE).read_bytes()
    workdir_lib.claim_workdir(tmp_path, tiny_config(log_every_steps=7))  # bookkeeping may change on resume
    with pytest.raises(errors.WorkdirConflictError, match=r"model: 'resnet20' in the workdir, 'resnet32' now"):
        workdir_lib.claim_workdir(tmp_path, tiny_config(model="resnet32"))
    assert (tmp_path / workdir_lib.CONFIG_FILE).read_bytes() == stored
    foreign = tmp_path / "foreign"
    (foreign / workdir_lib.CHECKPOINT_DIR).mkdir(parents=True)
    with pytest.raises(errors.WorkdirConflictError, match="no config.json"):
        workdir_lib.claim_workdir(foreign, tiny_config())
    assert not (foreign / workdir_lib.CONFIG_FILE).exists()


def run_command(*arguments, cwd=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    """A console script of this environment (``fusionjax-train`` ...), as a user runs it."""
    return subprocess.run([str(SCRIPTS / arguments[0]), *map(str, arguments[1:])], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_shipped_configs():
    result = subprocess.run([sys.executable, "-m", "fusionjax.train", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert "--workdir" in result.stdout, result.stderr  # absl exits with status 1 after --help
    for name in ("digits", "cifar10_resnet20", "imagenet_resnet50", "imagenet_densenet121"):
        assert name in result.stdout
    assert "Traceback" not in result.stderr


def test_user_errors_print_one_error_line_naming_the_fix(tmp_path):
    """A mistyped --config.KEY lists the config's fields, an unknown config name the shipped ones, a bad value the
    allowed ones: ``error: …`` on stderr, exit status 1, no traceback, no workdir created."""
    workdir = tmp_path / "run"
    typo = run_command("fusionjax-train", "--config", "digits", "--workdir", workdir, "--config.learning_rat=0.2")
    config = cli.load_config("digits")
    fields = ["learning_rate", "model_overrides.in_channels", "grad_accum_steps", *config.keys()]
    assert typo.stderr.startswith("error: --config.learning_rat (did you mean learning_rate?): no such config "
                                  "field."), typo.stderr
    assert all(field in typo.stderr for field in fields)
    unknown = run_command("fusionjax-train", "--config", "digitz", "--workdir", workdir)
    assert unknown.stderr.startswith("error: --config digitz: no such file, and no shipped config of that name.")
    assert all(name in unknown.stderr for name in cli.shipped_configs())
    bad_value = run_command("fusionjax-train", "--config", "digits", "--workdir", workdir, "--config.dtype=float16")
    assert "error: config.dtype='float16' is not one of float32, bfloat16." in bad_value.stderr
    no_run = run_command("fusionjax-eval", "--workdir", tmp_path)
    assert f"error: {tmp_path} is not a source of weights: pass a training workdir" in no_run.stderr
    for result in (typo, unknown, bad_value, no_run):
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert not workdir.exists()


def test_model_overrides_accept_any_create_model_option_and_refuse_others():
    """``--config.model_overrides.KEY`` may add a field the config lacks (``model_overrides`` is open); the model
    then refuses what it does not take, naming what it does."""
    config = cli.load_config("digits")
    cli.check_overrides(config, ["model_overrides.drop_path", "learning_rate"])  # accepted
    config.model_overrides.drop_path = 0.1
    assert trainer.build_model(config, 10).drop_path == 0.1
    config.model_overrides.drop_pat = 0.1
    with pytest.raises(errors.ConfigError, match=r"config.model_overrides: resnet20: unknown option\(s\) "
                                                 r"\['drop_pat'\]; ResNet takes .*'drop_path'"):
        trainer.build_model(config, 10)


RESUME_CONFIG = """
from fusionjax.configs import digits


def get_config():
    config = digits.get_config()
    config.model_overrides.update(stage_sizes=(1, 1, 1), stage_widths=(4, 8, 8), stem_width=4)
    config.batch_size = 32  # 44 steps per epoch
    config.num_train_steps = 120
    config.checkpoint_every_steps = 20
    config.eval_every_epochs = 1.0
    config.ema_decay = 0.9
    config.mixup_alpha = 0.2  # resumed runs must replay the on-device random numbers too
    config.progress_bar = False
    return config
"""
# Given on the command line: an override the config file lacks, which the resumed runs must repeat.
DROP_PATH = "--config.model_overrides.drop_path=0.1"


def _saved_steps(workdir: Path) -> list[int]:
    directory = workdir / workdir_lib.CHECKPOINT_DIR
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def _start_and_signal(command, workdir: Path, after_step: int, signum: int) -> subprocess.CompletedProcess:
    """Start a training run; send ``signum`` as soon as a checkpoint past ``after_step`` is complete."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not any(s > after_step for s in _saved_steps(workdir)):
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0]
    return subprocess.CompletedProcess(command, process.returncode, output)


@pytest.mark.slow
def test_sigterm_and_sigkill_then_resume_end_with_the_uninterrupted_parameters(tmp_path):
    """SIGTERM saves the step it stopped at and exits 0; the rerun resumes from exactly that step; SIGKILL loses
    what followed the last checkpoint; the final rerun ends bit-identical to a run never interrupted."""
    config_path = tmp_path / "tiny_digits.py"
    config_path.write_text(RESUME_CONFIG)
    workdir = tmp_path / "interrupted"
    command = [sys.executable, "-m", "fusionjax.train", "--config", str(config_path), "--workdir", str(workdir),
               DROP_PATH]

    terminated = _start_and_signal(command, workdir, 0, signal.SIGTERM)
    assert terminated.returncode == 0, terminated.stdout
    stopped_at = int(re.search(r"SIGTERM: saved step (\d+)", terminated.stdout).group(1))
    assert stopped_at == max(_saved_steps(workdir)) and stopped_at < 120

    killed = _start_and_signal(command, workdir, stopped_at, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert f"resuming from step {stopped_at};" in killed.stdout
    assert 120 not in _saved_steps(workdir)
    resumed_from = max(_saved_steps(workdir))

    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert f"resuming from step {resumed_from};" in finished.stdout

    # The uninterrupted run, in this process (same 8 devices, same compiled program).
    config = cli.load_config(str(config_path))
    config.model_overrides.drop_path = 0.1
    expected = jax.device_get(trainer.train_and_evaluate(config, tmp_path / "uninterrupted"))

    # Same program, same inputs, same random numbers: the parameters agree bit for bit (XLA:CPU is deterministic
    # for a fixed program and device count), and so do BN statistics, optimizer state and EMA.
    manager = workdir_lib.checkpoint_manager(workdir, config, read_only=True)
    assert manager.latest_step() == 120
    for devices, fsdp in ((jax.devices(), False), (jax.devices()[:1], False), (jax.devices()[:2], True)):
        restore_config = config.copy_and_resolve_references()
        restore_config.fsdp = fsdp
        setup = trainer.make_setup(restore_config, trainer.make_mesh(devices))
        restored = workdir_lib.restore_checkpoint(manager, 120, trainer.abstract_state(setup))
        assert {d for x in jax.tree_util.tree_leaves(restored) for d in x.devices()} == set(devices)
        jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(restored), expected)

    evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "eval" and "ema_top1" in r for r in evals)


@pytest.mark.slow
def test_digits_main_job_reaches_97_percent_and_reports_where_its_outputs_went(tmp_path):
    """The README's main job as a user runs it (one CPU device), then fusionjax-eval and fusionjax-plot."""
    workdir = tmp_path / "digits"
    one_device = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    result = run_command("fusionjax-train", "--config", "configs/digits.py", "--workdir", workdir, cwd=REPO,
                         env=one_device, timeout=600)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["split"] == "eval"][-1]
    assert final["step"] == 264 and final["top1"] >= 0.97, final
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
    refused = run_command("fusionjax-eval", "--workdir", workdir, "--cpu_devices", "7", env=one_device)
    assert refused.returncode == 1
    assert "eval_batch_size = 360 must be divisible by the 7 devices; pick a multiple of 7 (fusionjax-eval " \
        "--batch_size)" in refused.stderr
    on_7_devices = run_command("fusionjax-eval", "--workdir", workdir, "--cpu_devices", "7", "--batch_size", "63",
                               env=one_device)
    assert on_7_devices.returncode == 0, on_7_devices.stderr
    assert f"step {final['step']}: top-1 {final['top1']:.4f}" in on_7_devices.stdout
    (workdir / "curves.png").unlink()
    plot = run_command("fusionjax-plot", workdir)
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

    config = common.get_config()
    config.update(dataset="cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"),
                  eval_split="test", eval_batch_size=8)  # two batches, the second padded with 3 blank images
    result = trainer.evaluate_converted(tmp_path / "converted", config)

    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])  # CIFAR-10 train set
    images = ((written_images / 255.0 - mean) / std).astype(np.float32)
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, images))
    ranks = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(axis=1)
    assert result["top1"] == pytest.approx(np.mean(ranks < 1), abs=1e-9)
    assert result["top5"] == pytest.approx(np.mean(ranks < 5), abs=1e-9)


@pytest.fixture(scope="module")
def ascent_run(tmp_path_factory):
    """40 steps of the tiny model on digits, evaluated every 10, with a learning rate falling linearly from 0.1 to
    −0.1: 20 steps of descent, then 20 of gradient ascent, so that the best evaluation is not the last. One
    checkpoint is kept beside the best, and an EMA of decay 0.8."""
    config = tiny_config(num_train_steps=40, schedule="linear", end_lr_factor=-1.0, eval_every_epochs=10 / 44,
                         keep_checkpoints=1, checkpoint_every_steps=1000, ema_decay=0.8, progress_bar=False)
    workdir = tmp_path_factory.mktemp("ascent")
    trainer.train_and_evaluate(config, workdir)
    evals = {r["step"]: r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "eval"}
    return config, workdir, evals


def ema_reference(config, steps: int) -> dict:
    """The EMA after ``steps``, in float64 NumPy from every step's variables: ema_0 = the initial variables,
    ema_t = d·ema_(t−1) + (1 − d)·variables_t. Replays the run's steps (same program, batches and keys)."""
    setup, description = trainer.make_setup(config), data.describe(config, log=None)
    state, step = trainer.init_state(setup), trainer.make_train_step(setup, description.transform)
    as_float64 = functools.partial(jax.tree_util.tree_map, lambda x: np.asarray(x, np.float64))
    ema = as_float64(jax.device_get(state.variables()))
    batches = data.train_batches(description, seed=config.seed, global_batch_size=config.batch_size,
                                 normalized=False)
    for _ in range(steps):
        state, _ = step(state, trainer.global_batch(next(batches), setup.mesh))
        ema = jax.tree_util.tree_map(lambda e, v: config.ema_decay * e + (1 - config.ema_decay) * v, ema,
                                     as_float64(jax.device_get(state.variables())))
    return ema


@pytest.mark.slow
def test_eval_best_takes_the_highest_top1_checkpoint_and_ema_evaluates_the_average(ascent_run):
    """``fusionjax-eval --checkpoint best --ema``: the kept step whose recorded evaluation top-1 is highest (not the
    latest), and the EMA variables of that step, evaluated here independently (NumPy loss and top-1 of the model
    applied to the float64 EMA)."""
    config, workdir, evals = ascent_run
    assert sorted(evals) == [10, 20, 30, 40]
    best = max(evals, key=lambda step: (evals[step]["top1"], step))
    assert best != 40 and evals[best]["top1"] > evals[40]["top1"] + 0.05  # ascent made the last one worse
    manager = workdir_lib.checkpoint_manager(workdir, config, read_only=True)
    assert sorted(manager.all_steps()) == [best, 40]  # the latest, and the best although keep_checkpoints=1

    ema = ema_reference(config, best)
    restored = workdir_lib.restore_checkpoint(manager, best, trainer.abstract_state(trainer.make_setup(config)))
    assert_trees_close(jax.device_get(restored.ema), ema)  # float32 averaging of 20 steps against float64
    (test_batch,) = data.eval_batches(config, global_batch_size=360)
    logits = np.asarray(trainer.build_model(config, 10).apply(
        jax.tree_util.tree_map(lambda x: x.astype(np.float32), ema), test_batch["image"], train=False), np.float64)
    labels = test_batch["label"]
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    top1 = np.mean(logits.argmax(1) == labels)
    loss = -log_softmax[np.arange(len(labels)), labels].mean()
    assert evals[best]["ema_top1"] == pytest.approx(top1, abs=1e-9)
    assert evals[best]["ema_loss"] == pytest.approx(loss, rel=1e-5)

    result = run_command("fusionjax-eval", "--workdir", workdir, "--checkpoint", "best", "--ema")
    assert result.returncode == 0, result.stderr
    printed = re.search(r"step (\d+): top-1 ([\d.]+), top-5 [\d.]+, loss ([\d.]+)", result.stdout)
    assert int(printed[1]) == best
    assert float(printed[2]) == pytest.approx(top1, abs=0.5e-4)  # printed with 4 decimals
    assert float(printed[3]) == pytest.approx(loss, abs=0.5e-4 + 1e-5 * loss)


def test_every_package_folder_is_installed_under_fusionjax():
    """pyproject.toml lists the packages explicitly (train/ and configs/ map to fusionjax.train and
    fusionjax.configs, outside setuptools' discovery): every folder of Python files must be listed, and nothing
    installs as a top-level ``train`` or ``configs``."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools["package-dir"]

    def folder(package: str) -> Path:  # as setuptools resolves it: the longest mapped prefix, then the rest
        prefix = max((p for p in mapped if package == p or package.startswith(f"{p}.")), key=len, default=None)
        if prefix is None:
            return Path(*package.split("."))
        return Path(mapped[prefix], *package[len(prefix):].split(".")[1:])

    folders = {package: folder(package) for package in setuptools["packages"]}
    assert folders["fusionjax.train"] == Path("train") and folders["fusionjax.configs"] == Path("configs")
    assert all(package.split(".")[0] == "fusionjax" for package in folders)
    expected = {folder.relative_to(REPO) for root in ("fusionjax", "train", "configs")
                for folder in [REPO / root, *(REPO / root).rglob("*")]
                if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py"))}
    assert expected == set(folders.values())


# Depth only, for the recipes whose full-depth train step takes minutes to compile on a 2-core CPU; widths, growth
# rates, blocks and everything else stay as shipped.
SHALLOW_FOR_CPU = {
    "cifar10_densenet_bc_100_12": {"block_config": (2, 2, 2)},
    "imagenet_densenet121": {"block_config": (1, 1, 1, 1)},
    "cifar10_preact_resnet164": {"stage_sizes": (2, 2, 2)},
    "cifar10_resnet56": {"stage_sizes": (2, 2, 2)},
    "cifar10_plain56": {"stage_sizes": (2, 2, 2)},
    "cifar10_wrn28_10": {"stage_sizes": (1, 1, 1)},
    "imagenet_resnet50": {"stage_sizes": (1, 1, 1, 1)},
}


# Recipes that are another shipped recipe on another data set: they train as their twin does (test_data checks each
# data set's pipeline and class count), so the test below trains the twin only.
DATA_SET_TWINS = {"cifar100_wrn28_10": "cifar10_wrn28_10", "cifar100_densenet_bc_100_12": "cifar10_densenet_bc_100_12"}


def test_data_set_twins_differ_from_their_twin_in_the_data_set_only():
    for name, twin in DATA_SET_TWINS.items():
        config, twin_config = cli.load_config(name).to_dict(), cli.load_config(twin).to_dict()
        assert (config.pop("dataset"), twin_config.pop("dataset")) == ("cifar100", "cifar10"), name
        assert config == twin_config, name


# finetune starts from a source of weights: tests/test_finetune.py trains it from a converted checkpoint.
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in cli.shipped_configs()
                                  if n not in ("digits", "finetune") and n not in DATA_SET_TWINS])
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
    assert workdir_lib.checkpoint_manager(tmp_path / "run", config, read_only=True).latest_step() == 2
