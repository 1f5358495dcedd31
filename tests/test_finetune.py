"""Fine-tuning against independent references: torchvision's module structure for the freeze groups, the source
model's own forward pass for loaded weights, plain gradient descent for the head's learning rate, and evaluation
mode for frozen BatchNorm statistics, an uninterrupted command-line run for a resumed one.

Unit tests use the CIFAR ResNet of tests/test_train.py (one block per stage, widths 4/8/8) on 8×8 inputs.
"""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fusionjax
from fusionjax.convert import write_converted
from fusionjax.train import cli, data, finetune, trainer
from test_train import TINY_MODEL, tiny_config

SYNTHETIC = data.DatasetInfo(name="synthetic", num_classes=10, image_shape=(8, 8, 1), num_train=256, num_eval=64)


def one_device_setup(config, info=SYNTHETIC):
    return trainer.make_setup(config, trainer.make_mesh(jax.devices()[:1]), info)


def random_batch(seed: int, shape=(8, 8, 1), classes: int = 10, size: int = 32) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(size, *shape)).astype(np.float32),
            "label": rng.integers(0, classes, size).astype(np.int32)}


def train(setup, state, steps: int):
    step = trainer.make_train_step(setup)
    for i in range(steps):
        state, metrics = step(state, trainer.global_batch(random_batch(i), setup.mesh))
    return jax.device_get(state), jax.device_get(metrics)


def flat(tree) -> dict:
    return {finetune.path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("name, groups", [
    # torchvision's module trees: ResNet conv1, bn1, layer1..4 (blocks layerN.i), fc; DenseNet features.conv0,
    # norm0, denseblockN, transitionN (after block N), norm5, classifier.
    ("resnet18", {"stem": ["conv1", "bn1"], "stage1": ["layer1_0", "layer1_1"], "stage4": ["layer4_0", "layer4_1"],
                  "head": ["fc"]}),
    ("densenet121", {"stem": ["conv0", "norm0"], "stage1": ["denseblock1", "transition1"],
                     "stage3": ["denseblock3", "transition3"], "stage4": ["denseblock4"], None: ["norm5"],
                     "head": ["classifier"]}),
    ("resnet26d", {"stem": ["stem_conv1", "stem_bn1", "stem_conv2", "stem_bn2", "stem_conv3", "bn1"],
                   "stage2": ["layer2_0", "layer2_1"], "head": ["fc"]}),
])
def test_groups_are_torchvision_and_timm_module_groups(name, groups):
    layout = finetune.ModelLayout.of(fusionjax.create_model(name), (64, 64, 3))
    for group, modules in groups.items():
        assert [m for m in layout.modules if layout.groups[m] == group] == modules
    assert layout.head == groups["head"][0] == fusionjax.models.registry.get_model_spec(name).head


def test_freeze_patterns_name_groups_modules_globs_and_refuse_what_matches_nothing():
    layout = finetune.ModelLayout.of(fusionjax.create_model("resnet20", **TINY_MODEL), (8, 8, 1))
    assert layout.modules == ("conv1", "bn1", "layer1_0", "layer2_0", "layer3_0", "fc")
    every = set(layout.paths)
    assert layout.frozen_paths("backbone") == {p for p in every if not p.startswith("fc/")}
    stem_stage1 = {p for p in every if p.split("/")[0] in ("conv1", "bn1", "layer1_0")}
    assert layout.frozen_paths("stem, stage1") == stem_stage1
    assert layout.frozen_paths("conv1,bn1,layer1_*") == stem_stage1
    assert layout.frozen_paths("*/bn1/*") == {p for p in every if "/bn1/" in p}
    assert layout.frozen_paths("") == frozenset()
    with pytest.raises(finetune.FreezeError, match=r"'stage4' matches no parameter.*conv1, bn1, layer1_0, "
                                                   r"layer2_0, layer3_0, fc"):
        layout.frozen_paths("stem,stage4")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_frozen_parameters_stay_bitwise_unchanged_under_weight_decay_and_momentum(optimizer):
    config = tiny_config(freeze="stem,stage1", optimizer=optimizer, weight_decay=0.1, decay_norm_and_bias=True,
                         learning_rate=0.05, grad_clip_norm=1.0)
    setup = one_device_setup(config)
    initial = jax.device_get(trainer.init_state(setup))
    final, _ = train(setup, trainer.init_state(setup), 3)
    before, after = flat(initial.params), flat(final.params)
    frozen = {p for p in before if p.split("/")[0] in ("conv1", "bn1", "layer1_0")}
    assert frozen and all(np.array_equal(before[p], after[p]) for p in frozen)
    assert all(not np.array_equal(before[p], after[p]) for p in set(before) - frozen)
    # The optimizer keeps no state for frozen parameters (as torch's optimizers skip requires_grad=False ones).
    state_sizes = sum(x.size for x in jax.tree_util.tree_leaves(final.opt_state) if np.ndim(x))
    trained = sum(before[p].size for p in set(before) - frozen)
    assert state_sizes == trained * (1 if optimizer == "sgd" else 2)


def test_head_learning_rate_multiplier_is_plain_gradient_descent_with_a_head_rate():
    lr, multiplier = 0.1, 10.0
    config = tiny_config(momentum=0.0, weight_decay=0.0, learning_rate=lr, schedule="constant",
                         head_lr_multiplier=multiplier)
    setup = one_device_setup(config)
    state = jax.device_get(trainer.init_state(setup))
    batch = random_batch(0)

    def loss(params):  # the train step's loss, written out: cross-entropy of the train-mode logits
        logits, _ = setup.model.apply({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                                      train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    grads = flat(jax.jit(jax.grad(loss))(state.params))
    final, _ = train(setup, trainer.init_state(setup, state.variables()), 1)
    before, after = flat(state.params), flat(final.params)
    for path, grad in grads.items():
        rate = lr * multiplier if path.startswith("fc/") else lr
        np.testing.assert_allclose(after[path], before[path] - rate * grad, rtol=1e-5, atol=1e-6, err_msg=path)


def test_frozen_batch_statistics_normalize_with_and_keep_their_running_values():
    config = tiny_config(freeze="backbone", freeze_batch_stats=True, learning_rate=0.0, label_smoothing=0.0)
    setup = one_device_setup(config)
    state = jax.device_get(trainer.init_state(setup))
    # Running statistics away from their (0, 1) start, so that evaluation mode differs from batch statistics.
    rng = np.random.default_rng(0)
    stats = jax.tree_util.tree_map(lambda s: (rng.uniform(0.5, 2.0, s.shape)).astype(np.float32),
                                   state.batch_stats)
    variables = {"params": state.params, "batch_stats": stats}
    final, metrics = train(setup, trainer.init_state(setup, variables), 1)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(final.batch_stats),
                                                     jax.tree_util.tree_leaves(stats)))
    # Every norm is frozen, so the training forward is the evaluation forward (timm's FrozenBatchNorm2d).
    batch = random_batch(0)
    logits = jax.jit(setup.model.apply)(variables, batch["image"])
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)

    # Without freeze_batch_stats the frozen layers' statistics follow the batches, as in torch's train mode.
    moving = one_device_setup(tiny_config(freeze="backbone", learning_rate=0.0))
    final, _ = train(moving, trainer.init_state(moving, variables), 1)
    assert not any(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(final.batch_stats),
                                                         jax.tree_util.tree_leaves(stats)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A converted CIFAR ResNet-20 (3 channels, 7 classes) with random weights and BatchNorm statistics."""
    model = fusionjax.create_model("resnet20", num_classes=7)
    variables = jax.device_get(jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 32, 32, 3))))
    rng = np.random.default_rng(1)
    variables["batch_stats"] = jax.tree_util.tree_map(
        lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), variables["batch_stats"])
    card = {"num_classes": 7, "classes": [f"c{i}" for i in range(7)],
            "normalization": {"channel_order": "RGB", "pixel_max": 255.0, "mean": [0.5, 0.4, 0.3],
                              "std": [0.2, 0.25, 0.3]}}
    return write_converted(tmp_path_factory.mktemp("source") / "resnet20", "resnet20", variables, card), variables


def test_init_from_loads_every_layer_and_starts_a_fresh_head_where_the_classes_differ(converted, capsys):
    directory, saved = converted
    config = cli.load_config("finetune")
    config.update(init_from=str(directory), image_size=8, fsdp=True)  # the fresh head sharded over 8 devices
    source = finetune.prepare(config, directory.parent / "run")
    assert (config.model, source.num_classes) == ("resnet20", 7)
    info = data.DatasetInfo(name="synthetic", num_classes=10, image_shape=(8, 8, 3), num_train=256, num_eval=64)
    setup = trainer.make_setup(config, trainer.make_mesh(), info)
    fresh = trainer.init_state(setup).variables()
    state = trainer.init_state(setup, finetune.initial_variables(source, fresh))
    fresh, state = jax.device_get((fresh, state))
    assert "re-initialized fc/bias, fc/kernel" in capsys.readouterr().out

    images = random_batch(0, shape=(8, 8, 3))["image"]
    reference = jax.jit(functools.partial(fusionjax.create_model("resnet20", num_classes=7).apply, features=True))(
        saved, images)
    ours = jax.jit(functools.partial(setup.model.apply, features=True))(state.variables(), images)
    np.testing.assert_allclose(ours["pooled"], reference["pooled"], rtol=1e-6, atol=1e-7)
    loaded, original = flat(state.variables()), flat(saved)
    assert all(np.array_equal(loaded[p], original[p]) for p in original if not p.startswith("params/fc/"))
    np.testing.assert_array_equal(state.params["fc"]["kernel"], fresh["params"]["fc"]["kernel"])
    assert state.params["fc"]["kernel"].shape == (64, 10)


def test_init_from_refuses_another_model_and_a_missing_source(converted, tmp_path):
    directory, _ = converted
    config = cli.load_config("finetune")
    config.update(init_from=str(directory), model="resnet56")
    with pytest.raises(finetune.InitFromError, match="config.model='resnet56'.*holds a resnet20; leave config.model "
                                                     "unset"):
        finetune.prepare(config, tmp_path)
    config.update(init_from=str(tmp_path / "nothing"), model=None)
    with pytest.raises(finetune.InitFromError, match="config.init_from: .*nothing does not exist"):
        finetune.prepare(config, tmp_path)
    with pytest.raises(finetune.InitFromError, match="config.model is unset"):
        finetune.prepare(cli.load_config("finetune"), tmp_path)


def write_image_folder(root, classes: int = 3, per_class: int = 8, size: int = 8):
    """``root/c<k>/<i>.png``: RGB images whose brightness tells the class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(classes):
        (root / f"c{label}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.uniform(0, 80, (size, size, 3)) + 80 * label
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"c{label}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_the_finetune_command_starts_from_the_source_and_resumes_from_its_own_checkpoint(converted, tmp_path,
                                                                                        capsys):
    """``fusionjax-train --config finetune --config.init_from=DIR --config.dataset=folder:PATH`` as a user runs it;
    then, its last checkpoint and the source deleted, the same run resumed from step 2 ends with the same weights."""
    import shutil
    import subprocess
    import sys

    from fusionjax import sources

    source = shutil.copytree(converted[0], tmp_path / "source")
    run = tmp_path / "run"
    changes = dict(init_from=str(source), dataset=f"folder:{write_image_folder(tmp_path / 'images')}",
                   eval_split="0.25", image_size=8, batch_size=8, eval_batch_size=8, num_train_steps=4,
                   warmup_epochs=0.0, eval_every_epochs=10.0, checkpoint_every_steps=2, input_workers=0,
                   progress_bar=False, freeze="stem")
    command = [str(Path(sys.executable).parent / "fusionjax-train"), "--config", "finetune", f"--workdir={run}",
               *(f"--config.{key}={value}" for key, value in changes.items())]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "re-initialized fc/bias, fc/kernel" in finished.stdout
    uninterrupted = sources.load(f"{run}@4").variables
    shutil.rmtree(run / "checkpoints" / "4")  # as if stopped after the checkpoint of step 2
    shutil.rmtree(source)
    config = cli.load_config("finetune")
    config.update(**changes)
    resumed = jax.device_get(trainer.train_and_evaluate(config, run))
    assert "resuming from step 2" in capsys.readouterr().out
    for ours, expected in zip(jax.tree_util.tree_leaves(resumed.variables()), jax.tree_util.tree_leaves(uninterrupted)):
        np.testing.assert_array_equal(ours, expected)
