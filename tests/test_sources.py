"""``fusionjax.sources.load`` against the arrays that were written: a training workdir (latest, best, a step), a
converted directory, torchvision's weights from the cache, and each mistake's one-line error.

The workdir is the digits job's tiny model (one block per stage, widths 4/8/8) trained for 4 steps, evaluated at
steps 2 and 4, plus a step 6 saved by the trainer's own checkpoint functions with known parameters and a low top-1,
so that the latest is not the best.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fusionjax
from fusionjax import cards, sources
from test_train import TINY_MODEL, tiny_config

# The digits data set's input statistics (configs/digits.py's data: units of pixel/16) and ImageNet's (torchvision).
DIGITS_NORMALIZATION = {"channel_order": "grayscale", "pixel_max": 16.0, "mean": [0.3054], "std": [0.3761]}
IMAGENET_NORMALIZATION = {"channel_order": "RGB", "pixel_max": 255.0, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225]}


def assert_variables_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(workdir, {step: variables written})``: steps 2 and 4 from the trainer, 6 written here."""
    from fusionjax.train import trainer, workdir as workdir_lib

    config = tiny_config(num_train_steps=4, eval_every_epochs=2 / 44, checkpoint_every_steps=1000,
                         keep_checkpoints=5, progress_bar=False)
    path = tmp_path_factory.mktemp("digits")
    state = trainer.train_and_evaluate(config, path)
    manager = workdir_lib.checkpoint_manager(path, config)
    shifted = state.replace(step=jnp.asarray(6, state.step.dtype), params=jax.tree.map(lambda x: x + 1, state.params))
    workdir_lib.save_checkpoint(manager, shifted, {"top1": 0.0})
    manager.wait_until_finished()
    manager.close()
    return path, {4: jax.device_get(state.variables()), 6: jax.device_get(shifted.variables())}


def test_a_workdir_reads_its_latest_best_and_any_kept_step(trained):
    path, written = trained
    latest = sources.load(path)
    assert latest.kind == "workdir" and latest.origin["step"] == 6
    assert_variables_equal(latest.variables, written[6])
    assert_variables_equal(sources.load(f"{path}@latest").variables, written[6])
    assert_variables_equal(sources.load(f"{path}@4").variables, written[4])

    evals = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    top1 = {record["step"]: record["top1"] for record in evals if record["split"] == "eval"}
    assert sorted(top1) == [2, 4]
    assert sources.load(f"{path}@best").origin["step"] == max(top1, key=lambda step: (top1[step], step))

    assert latest.arch == "resnet20" and latest.head == "fc" and latest.num_classes == 10
    assert latest.model_options == TINY_MODEL
    assert latest.classes == [str(digit) for digit in range(10)]
    assert latest.normalization == DIGITS_NORMALIZATION and latest.image_shape == (8, 8, 1)
    assert latest.eval_resize == {"method": cards.RESIZE}  # digits are evaluated as they are
    images = np.random.default_rng(0).standard_normal((2, 8, 8, 1), np.float32)
    reference = fusionjax.create_model("resnet20", num_classes=10, **TINY_MODEL)
    np.testing.assert_array_equal(latest.model().apply(latest.variables, images),
                                  reference.apply(written[6], images))


def test_workdir_mistakes_are_one_line_errors_naming_the_fix(trained, tmp_path):
    path, _ = trained
    with pytest.raises(sources.SourceError, match=r"no checkpoint at step 7; kept steps: \[2, 4, 6\]"):
        sources.load(f"{path}@7")
    with pytest.raises(sources.SourceError, match="after @ comes latest, best or a step number"):
        sources.load(f"{path}@newest")

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(path / "config.json", fresh / "config.json")
    shutil.copy(path / cards.WORKDIR_CARD, fresh / cards.WORKDIR_CARD)
    with pytest.raises(sources.SourceError, match="no checkpoints yet"):
        sources.load(fresh)

    shutil.copytree(path / "checkpoints", fresh / "checkpoints")
    (fresh / cards.WORKDIR_CARD).write_bytes((path / cards.WORKDIR_CARD).read_bytes()[:40])  # a write cut short
    with pytest.raises(sources.SourceError, match=f"{cards.WORKDIR_CARD} is not valid JSON"):
        sources.load(fresh)
    (fresh / cards.WORKDIR_CARD).unlink()
    with pytest.raises(sources.SourceError, match="run its fusionjax-train command again"):
        sources.load(fresh)

    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.load(tmp_path / "missing")
    with pytest.raises(sources.SourceError, match="is not a source of weights"):
        sources.load(tmp_path)
    with pytest.raises(sources.SourceError, match="leave @best out"):
        sources.load(f"{tmp_path}@best")


def random_variables(model, seed: int, size: int) -> dict:
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def test_a_converted_directory_reads_its_card_and_variables(tmp_path):
    from fusionjax.convert import write_converted

    model = fusionjax.create_model("resnet20")
    variables = random_variables(model, 0, 32)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    normalization = {"channel_order": "RGB", "pixel_max": 255.0, "mean": [0.4914, 0.4822, 0.4465],
                     "std": [0.2470, 0.2435, 0.2616]}
    write_converted(tmp_path / "converted", "resnet20", variables,
                    {"num_classes": 10, "normalization": normalization, "eval_resize": {"method": cards.RESIZE},
                     "classes": names})

    source = sources.load(tmp_path / "converted")
    assert source.kind == "converted" and source.arch == "resnet20" and source.head == "fc"
    assert_variables_equal(source.variables, variables)
    assert source.classes == names and source.normalization == normalization
    assert source.num_classes == 10 and source.image_shape == (32, 32, 3)
    assert source.eval_resize == {"method": cards.RESIZE}
    with pytest.raises(sources.SourceError, match="leave @best out"):
        sources.load(f"{tmp_path / 'converted'}@best")

    (tmp_path / "timm").mkdir()  # a timm model outside the zoo: its card describes the architecture
    cards.write_json(tmp_path / "timm" / cards.CONVERTED_CARD, {"arch": "seresnet18", "architecture": {}})
    with pytest.raises(sources.SourceError, match=r"timm's seresnet18, which is not in the zoo: load it in Python "
                                                  r"with fusionjax.convert.load_pretrained\("):
        sources.load(tmp_path / "timm")


def test_torchvision_weights_come_from_the_cache_with_imagenet_names(tmp_path, monkeypatch, no_network):
    """Offline, the converted weights in $FUSIONJAX_CACHE load; the names are torchvision's ImageNet categories."""
    from fusionjax.convert import hub, write_converted
    from fusionjax.torch_compat import import_torchvision

    monkeypatch.setenv("FUSIONJAX_CACHE", str(tmp_path))
    with pytest.raises(sources.SourceError, match="Could not download"):  # nothing cached yet, and offline
        sources.load("torchvision:resnet18")

    entry = import_torchvision().models.ResNet18_Weights.DEFAULT
    model = fusionjax.create_model("resnet18")
    variables = random_variables(model, 1, 32)
    cached = tmp_path / "converted" / f"resnet18.{entry.url.rsplit('/', 1)[1].removesuffix('.pth')}"
    write_converted(cached, "resnet18", variables, {"num_classes": 1000, "normalization": IMAGENET_NORMALIZATION})
    assert hub.cache_dir() == tmp_path

    source = sources.load("torchvision:resnet18")
    assert source.kind == "torchvision" and source.arch == "resnet18" and source.head == "fc"
    assert_variables_equal(source.variables, variables)
    assert source.classes == entry.meta["categories"] and source.normalization == IMAGENET_NORMALIZATION
    assert source.image_shape == (224, 224, 3)
    evaluation = entry.transforms()  # torchvision's: the shorter side to 256, then the centre 224
    assert cards.shorter_side(224, source.eval_resize) == evaluation.resize_size[0] == 256
    with pytest.raises(sources.SourceError, match="has no torchvision weights 'IMAGENET9K'"):
        sources.load("torchvision:resnet18:IMAGENET9K")


def test_eval_per_class_prints_each_class_top1_by_name(trained):
    """``fusionjax-eval --per_class``: each class's top-1 against NumPy's, over the digits test split's images."""
    from fusionjax.train import cli, data, workdir as workdir_lib

    path, written = trained
    config = workdir_lib.load_workdir_config(path)
    (batch,) = data.eval_batches(data.describe(config, workdir=path), global_batch_size=360)
    model = fusionjax.create_model("resnet20", num_classes=10, **TINY_MODEL)
    correct = np.asarray(model.apply(written[6], batch["image"], train=False)).argmax(1) == batch["label"]

    printed = cli._evaluate(cli.parse_eval(["fusionjax-eval", "--workdir", str(path), "--per_class"]))
    lines = printed.splitlines()
    assert lines[0].startswith(f"{path} step 6: top-1 {correct.mean():.4f}")
    assert len(lines) == 11
    for digit, line in enumerate(lines[1:]):
        in_class = batch["label"] == digit
        assert line.split() == [str(digit), "top-1", f"{correct[in_class].mean():.4f}", "of", str(in_class.sum())]
