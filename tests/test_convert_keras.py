"""fusionjax.convert against Keras 3 itself (JAX backend, no TensorFlow): keras.applications ResNet v1, ResNet v2
and DenseNet, exact to float32 at every stage.

Keras's models are built with ``weights=None`` and random BatchNorm statistics; the reference is their own forward
at the layers listed in ``TAPS`` (read off keras/src/applications, not from the converter), their own parameter
counts and their own weight files.
"""

import functools
import json
import os
import subprocess
import sys
import zipfile

os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras's first import

import jax
import numpy as np
import pytest

import fusionjax
from fusionjax import convert
from fusionjax.convert import ConversionError, from_keras
from fusionjax.convert.keras import import_keras
from fusionjax.layers import BatchNorm
from test_convert_common import LOGITS_ATOL, RTOL, STAGES, assert_stages_agree, fusionjax_stages, images

keras = import_keras()
# Keras 3.15's own saving code converts Variables with np.array, which NumPy 2 warns about (thousands of times)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
SMALL, SMALL_ODD = (64, 64), (65, 79)  # 65×79: odd at every stride-2 layer


def _resnet_taps(sizes, v2=False):
    # v2 strides in the last block of stages 2–4's predecessors: a stage's map is its last block at that resolution
    blocks = [n - 1 if v2 and i < 3 else n for i, n in enumerate(sizes)]
    return ["pool1_pool", *(f"conv{i + 2}_block{n}_out" for i, n in enumerate(blocks))]


TAPS = {  # the Keras layers whose outputs are stem, stage1–4; then "avg_pool" and "predictions"
    "ResNet50": _resnet_taps((3, 4, 6, 3)), "ResNet101": _resnet_taps((3, 4, 23, 3)),
    "ResNet152": _resnet_taps((3, 8, 36, 3)),
    "ResNet50V2": _resnet_taps((3, 4, 6, 3), v2=True), "ResNet101V2": _resnet_taps((3, 4, 23, 3), v2=True),
    "ResNet152V2": _resnet_taps((3, 8, 36, 3), v2=True),
    **{f"DenseNet{depth}": ["pool1", *(f"conv{i + 2}_block{n}_concat" for i, n in enumerate(config))]
       for depth, config in {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}.items()},
}
# Each family's 50-layer (121-layer) member at both sizes; the deeper ones, which repeat the same blocks, at one.
PARITY = {name: (SMALL, SMALL_ODD) if name in ("ResNet50", "ResNet50V2", "DenseNet121") else (SMALL_ODD,)
          for name in TAPS}


@functools.cache
def random_keras(name: str):
    """keras.applications.<name>(weights=None) with random conv/dense biases (Keras starts them at zero) and
    BatchNorm statistics: moving_variance ~ 1e-5·U(0.5, 1.5), gamma ~ 3e-3·U(0.5, 1.5), beta and moving_mean ~
    N(0, 0.1). Variances that small make Keras's epsilon (1.001e-5, not PyTorch's 1e-5) move every BatchNorm's
    output by ~2.5e-4 relative, far outside RTOL, so a wrong epsilon fails; gamma keeps the outputs O(1). The
    classifier is rescaled so that the logits are O(10), as in test_convert's ``randomized``."""
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    # Variable.assign, not set_weights: get_weights trips NumPy 2's copy-keyword DeprecationWarning in Keras 3.15
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(3e-3 * rng.uniform(0.5, 1.5, shape))
            layer.beta.assign(rng.normal(0, 0.1, shape))
            layer.moving_mean.assign(rng.normal(0, 0.1, shape))
            layer.moving_variance.assign(1e-5 * rng.uniform(0.5, 1.5, shape))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))
    head = model.get_layer("predictions")
    scale = 5.0 / np.max(np.abs(keras_stages(model, name, images(SMALL_ODD, seed=1))["logits"]))
    for variable in (head.kernel, head.bias):
        variable.assign(variable.value * scale)
    return model


def keras_stages(model, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """Keras's own outputs at ``TAPS[name]``, the global pool and the classifier (built without activation)."""
    tapped, forward = _tapped(model, name)
    trainable = [variable.value for variable in tapped.trainable_variables]
    statistics = [variable.value for variable in tapped.non_trainable_variables]
    return {stage: np.asarray(out, np.float64) for stage, out in zip(STAGES, forward(trainable, statistics, x))}


@functools.cache
def _tapped(model, name: str):
    """The tapped model and its forward, jitted once per model (the weights are arguments, so a rescaled head
    needs no new compile). stateless_call runs the graph at any image size; __call__ checks the 224×224 the
    application declares."""
    tapped = keras.Model(model.inputs, [model.get_layer(layer).output
                                        for layer in (*TAPS[name], "avg_pool", "predictions")])
    return tapped, jax.jit(lambda t, s, x: tapped.stateless_call(t, s, [x], training=False)[0])


def _count(model, trainable: bool) -> int:
    return sum(int(np.prod(w.shape)) for w in (model.trainable_weights if trainable else model.non_trainable_weights))


def _leaves(variables) -> dict:
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree.leaves_with_path(variables)}


# The newest-jax run (.ci/run) keeps ResNet50; the full run has every architecture.
FAST_TAPS = ("ResNet50",)


@pytest.mark.parametrize("name", [name if name in FAST_TAPS else pytest.param(name, marks=pytest.mark.slow)
                                  for name in TAPS])
def test_keras_parity_and_parameter_counts(name):
    keras_model = random_keras(name)
    variables = from_keras(name, keras_model)
    zoo = convert.frameworks.find_spec("keras", name).name
    assert zoo == f"keras_{name.lower()}"
    count = lambda tree: sum(int(np.prod(np.shape(leaf))) for leaf in _leaves(tree).values())
    assert count(variables["params"]) == _count(keras_model, trainable=True)
    assert count(variables["batch_stats"]) == _count(keras_model, trainable=False)  # moving mean and variance

    model = fusionjax.create_model(zoo)
    for size in PARITY[name]:
        x = images(size)
        assert_stages_agree(fusionjax_stages(model, variables, x), keras_stages(keras_model, name, x), f"{name} {size}")


def test_each_keras_switch_is_needed():
    """Parity above is not luck: with PyTorch's BatchNorm epsilon, or with −∞ padding before the stem's max pool
    (where ResNet v2's un-normalized stem output is negative), the numbers leave tolerance."""
    name = "ResNet50V2"
    keras_model = random_keras(name)
    variables = from_keras(name, keras_model)
    x = images(SMALL)
    reference = keras_stages(keras_model, name, x)
    rel = lambda ours, stage: np.max(np.abs(ours[stage] - reference[stage])) / np.max(np.abs(reference[stage]))
    torch_epsilon = fusionjax_stages(fusionjax.create_model("keras_resnet50v2", norm=BatchNorm), variables, x)
    assert rel(torch_epsilon, "stem") <= RTOL and rel(torch_epsilon, "stage1") > 10 * RTOL
    minus_inf = fusionjax_stages(fusionjax.create_model("keras_resnet50v2", stem_pool_pad_value=-np.inf), variables, x)
    assert rel(minus_inf, "stem") > 10 * RTOL


def _legacy_h5(model, path) -> None:
    """The Keras 2 weights format (that of keras.applications' ImageNet downloads), written by Keras's own code."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)


@pytest.mark.slow
def test_weight_files_load_as_the_live_model(tmp_path):
    name = "ResNet50V2"
    keras_model = random_keras(name)
    expected = _leaves(from_keras(name, keras_model))
    keras_model.save_weights(tmp_path / "model.weights.h5")
    keras_model.save(tmp_path / "model.keras")
    _legacy_h5(keras_model, tmp_path / "legacy.h5")
    (tmp_path / "misnamed.bin").write_bytes((tmp_path / "model.weights.h5").read_bytes())  # read by content
    with zipfile.ZipFile(tmp_path / "model.keras") as original, \
            zipfile.ZipFile(tmp_path / "hostile.keras", "w") as hostile:
        for item in original.namelist():  # a config that would fail (or run code) if it were ever deserialized
            hostile.writestr(item, "{not json: __import__('os').system('x')}" if item == "config.json"
                             else original.read(item))
    for file in ("model.weights.h5", "model.keras", "legacy.h5", "misnamed.bin", "hostile.keras"):
        got = _leaves(from_keras(name.lower(), tmp_path / file))  # Keras's model name works as well
        assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got), file


def test_bad_files_and_other_architectures_are_refused(tmp_path):
    keras_model = random_keras("ResNet50")
    keras_model.save_weights(tmp_path / "resnet50.weights.h5")
    with pytest.raises(ConversionError, match="does not hold the weights of keras.applications.ResNet101"):
        from_keras("ResNet101", tmp_path / "resnet50.weights.h5")

    headless = keras.applications.ResNet50(weights=None, include_top=False)
    for variable, value in zip(headless.weights, keras_model.weights[:-2], strict=True):
        variable.assign(value.value)
    headless.save_weights(tmp_path / "notop.weights.h5")
    # a file without the classifier (include_top=False) names what is missing; strict=False (test_convert's
    # test of it covers every source) would keep the classifier as initialized
    with pytest.raises(ConversionError, match=r"(?s)2 missing key\(s\) that keras_resnet50 needs: predictions/kernel "
                                              r"\(2048, 1000\); predictions/bias \(1000,\).*Pass strict=False"):
        from_keras("ResNet50", tmp_path / "notop.weights.h5")

    (tmp_path / "notes.h5").write_text("these are not weights\n")
    with pytest.raises(ConversionError, match="not a Keras weights file"):
        from_keras("ResNet50", tmp_path / "notes.h5")
    (tmp_path / "cut.weights.h5").write_bytes((tmp_path / "resnet50.weights.h5").read_bytes()[:4096])
    with pytest.raises(ConversionError, match="truncated or corrupt"):
        from_keras("ResNet50", tmp_path / "cut.weights.h5")
    with pytest.raises(ConversionError, match="'ResNet18' has no keras counterpart.*DenseNet121"):
        from_keras("ResNet18", tmp_path / "resnet50.weights.h5")


@pytest.mark.slow
def test_cli_converts_and_verifies_keras_weights(tmp_path, capsys):
    name = "ResNet50V2"
    random_keras(name).save_weights(tmp_path / "v2.weights.h5")
    out = tmp_path / "converted"
    assert convert.main(["--from", "keras", name, str(tmp_path / "v2.weights.h5"), "--out", str(out), "--verify"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["arch"] == "keras_resnet50v2" and card["from"] == "keras" and card["from_model"] == name
    stages = card["verification"]["stages"]
    assert card["verification"]["ok"] and list(stages) == STAGES
    assert max(s["rel"] for s in stages.values()) <= RTOL and stages["logits"]["max_abs"] <= LOGITS_ATOL
    assert "fusionjax vs keras" in capsys.readouterr().out
    _, variables = convert.load_pretrained(out)
    expected = _leaves(from_keras(name, random_keras(name)))
    assert all(np.array_equal(leaf, expected[path]) for path, leaf in _leaves(variables).items())


def test_the_converter_imports_no_source_library():
    code = ("import sys, fusionjax.convert as c; c.convertible('keras'); c.convertible('timm'); "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'keras', 'tensorflow', 'h5py') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name, application", [("ResNet50", "resnet"), ("ResNet50V2", "resnet_v2"),
                                               ("DenseNet121", "densenet")])
def test_card_normalization_is_kerass_own_preprocessing(name, application):
    """What a converted checkpoint's card says its input needs equals Keras's preprocess_input for that model."""
    import importlib

    from fusionjax.convert import frameworks

    preprocess = importlib.import_module(f"keras.applications.{application}").preprocess_input
    image = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    norm = frameworks.normalization("keras", frameworks.find_spec("keras", name))
    x = image[..., ::-1] if norm["channel_order"] == "BGR" else image
    ours = (x / norm["pixel_max"] - np.asarray(norm["mean"])) / np.asarray(norm["std"])
    np.testing.assert_allclose(ours, np.asarray(preprocess(image.copy())), rtol=1e-5, atol=1e-4)
