"""Every registered model: shapes, parameter counts against torchvision and the papers, a jitted train step."""

import functools
import subprocess
import sys
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fusionjax
from fusionjax.layers import GroupNorm

ALL_MODELS = fusionjax.list_models()


def _n_params(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


@functools.cache
def _abstract(name: str, batch: int = 2):
    """Parameter shapes and feature shapes of a registered model, traced (not run) at its smallest input."""
    model = fusionjax.create_model(name)
    size = fusionjax.get_model_spec(name).min_input_size
    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    features = jax.eval_shape(functools.partial(model.apply, features=True), variables, x)
    return variables, features, size


# The two deepest DenseNet-BCs trace for seconds: the newest-jax run of .ci/run leaves them out.
DEEPEST = ("densenet_bc_190_40", "densenet_bc_250_24")
# One model per family and block kind: what the newest-jax run of .ci/run checks of the whole zoo.
ONE_PER_FAMILY = ("resnet20", "plain20", "resnet18", "resnet50", "resnext50_32x4d", "wrn28_10", "preact_resnet18",
                  "se_resnet50", "ecaresnet50d", "keras_resnet50v2", "densenet121", "densenet_bc_100_12")


def _slow_if_deepest(names, keep=None):
    fast = lambda n: n not in DEEPEST and (keep is None or n in keep)
    return [n if fast(n) else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _slow_if_deepest(ALL_MODELS, keep=ONE_PER_FAMILY))
def test_feature_shapes_and_dtypes(name):
    variables, features, size = _abstract(name)
    spec = fusionjax.get_model_spec(name)
    stages = sorted(k for k in features if k.startswith("stage"))
    imagenet = spec.input_size == 224
    assert len(stages) == (4 if imagenet else 3)
    # ImageNet nets: /4 after the stem, then /2 per stage after the first; CIFAR nets: /1, then /2 per stage.
    stem_stride = 4 if imagenet else 1
    assert features["stem"].shape[1:3] == (size // stem_stride,) * 2
    for i, stage in enumerate(stages):
        assert features[stage].shape[:3] == (2,) + (size // (stem_stride * 2**i),) * 2, stage
        assert features[stage].dtype == jnp.float32
    assert features["pooled"].shape == (2, features[stages[-1]].shape[-1])
    assert features["logits"].shape == (2, spec.num_classes) and features["logits"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if fusionjax.get_model_spec(n).torchvision])
def test_parameter_count_equals_torchvision(name):
    import torch
    from fusionjax.torch_compat import import_torchvision

    with torch.device("meta"):  # shapes only: no memory, no random init
        reference = getattr(import_torchvision().models, name)()
    variables, _, _ = _abstract(name)
    assert _n_params(variables["params"]) == sum(p.numel() for p in reference.parameters())
    running = sum(b.numel() for n, b in reference.named_buffers() if "running" in n)
    assert _n_params(variables["batch_stats"]) == running


# Parameter counts as the papers print them (millions, to their rounding); CIFAR-10 heads.
PAPER_COUNTS = {
    "resnet20": (0.27, 2), "resnet32": (0.46, 2), "resnet44": (0.66, 2), "resnet56": (0.85, 2),
    "resnet110": (1.7, 1),  # He et al. 2016, Table 6
    "preact_resnet164": (1.7, 1),  # He et al. 2016b, Table 2
    "wrn28_10": (36.5, 1),  # Zagoruyko & Komodakis 2016, Table 1
    "densenet_bc_100_12": (0.8, 1), "densenet_bc_250_24": (15.3, 1), "densenet_bc_190_40": (25.6, 1),  # Huang, Table 2
    "resnext29_8x64d": (34.4, 1),  # Xie et al. 2017, Table 7
}


@pytest.mark.parametrize("name", _slow_if_deepest(sorted(PAPER_COUNTS)))
def test_parameter_count_equals_paper(name):
    millions, digits = PAPER_COUNTS[name]
    variables, _, _ = _abstract(name)
    assert round(_n_params(variables["params"]) / 1e6, digits) == millions


def _cifar_resnet_count(depth: int, classes: int = 10) -> int:
    """He et al. 2016 §4.2 closed form: 3×3 stem to 16, three stages of n basic blocks (16, 32, 64 channels), BN
    γ/β after every conv, option-A shortcuts (no parameters), a linear head."""
    n, count, previous = (depth - 2) // 6, 9 * 3 * 16 + 2 * 16, 16
    for width in (16, 32, 64):
        for _ in range(n):
            count += 9 * previous * width + 2 * width + 9 * width * width + 2 * width
            previous = width
    return count + 64 * classes + classes


def _cifar_densenet_bc_count(torch, depth: int, k: int, classes: int = 10) -> int:
    """torchvision's DenseNet with the CIFAR DenseNet-BC configuration, counted by torch, with its ImageNet stem
    (7×7 conv and a BN) swapped for the paper's single 3×3 conv (Huang et al. 2017, §3 and Table 2)."""
    from fusionjax.torch_compat import import_torchvision

    n = (depth - 4) // 6
    with torch.device("meta"):
        reference = import_torchvision().models.DenseNet(growth_rate=k, block_config=(n, n, n),
                                                         num_init_features=2 * k, num_classes=classes)
    stem = 2 * k
    return sum(p.numel() for p in reference.parameters()) - (49 * 3 * stem + 2 * stem) + 9 * 3 * stem


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_counts_equal_the_closed_form(depth):
    assert _n_params(_abstract(f"resnet{depth}")[0]["params"]) == _cifar_resnet_count(depth)


@pytest.mark.parametrize("depth, k", [(100, 12), (250, 24), (190, 40)])
def test_densenet_bc_counts_equal_torchvision_with_the_cifar_stem(depth, k):
    """Exact, and within 1% of what the paper prints (0.8M, 15.3M, 25.6M): 0.769M, 15.32M and 25.62M."""
    import torch
    count = _n_params(_abstract(f"densenet_bc_{depth}_{k}")[0]["params"])
    assert count == _cifar_densenet_bc_count(torch, depth, k)
    printed = {100: 0.8e6, 250: 15.3e6, 190: 25.6e6}[depth]
    assert abs(count / printed - 1) < (0.04 if depth == 100 else 0.01)  # Table 2 rounds 0.769M up to 0.8M


def test_plain_nets_differ_from_resnets_only_by_shortcuts():
    # Option-A shortcuts have no parameters, so plain and residual nets of the same depth count the same.
    for depth in (20, 56):
        assert _n_params(_abstract(f"plain{depth}")[0]) == _n_params(_abstract(f"resnet{depth}")[0])


def test_se_resnet50_adds_closed_form_se_parameters():
    """SE adds two FCs per block: C→C/16 and C/16→C with biases (Hu et al. 2018)."""
    se_params = 0
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        c = 4 * width
        se_params += blocks * (c * (c // 16) + c // 16 + (c // 16) * c + c)
    assert _n_params(_abstract("se_resnet50")[0]["params"]) == _n_params(_abstract("resnet50")[0]["params"]) + se_params


# Every block kind and stem, at small inputs and (for the deep ones) fewer blocks per stage, to keep compile time
# within CI's budget: a jitted train step, every gradient finite, every BN statistic updated.
TRAIN_STEP_MODELS = [  # the compile-heavy ones are slow: the newest-jax run of .ci/run leaves them out
    pytest.param("resnet20", {"drop_path": 0.1}, 8, id="resnet20"),
    pytest.param("plain20", {}, 8, id="plain20"),
    pytest.param("preact_resnet18", {}, 32, id="preact_resnet18", marks=pytest.mark.slow),
    pytest.param("se_resnext50_32x4d", {"stage_sizes": (1, 1, 1, 1), "zero_init_last": True}, 32,
                 id="se_resnext50_32x4d", marks=pytest.mark.slow),
    pytest.param("wrn28_10", {"stage_sizes": (1, 1, 1), "stage_widths": (32, 64, 128)}, 8, id="wrn28_10",
                 marks=pytest.mark.slow),
    pytest.param("densenet121", {"block_config": (2, 2, 2, 2), "memory_efficient": True, "drop_path": 0.1}, 32,
                 id="densenet121", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,overrides,size", TRAIN_STEP_MODELS)
def test_jitted_train_step_finite_gradients_and_bn_updates(name, overrides, size):
    model = fusionjax.create_model(name, **overrides)
    x = jax.random.normal(jax.random.key(1), (4, size, size, 3))
    labels = jnp.arange(4) % model.num_classes
    variables = jax.jit(model.init)(jax.random.key(0), x)

    @jax.jit
    def step(params, batch_stats):
        def loss_fn(params):
            logits, state = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                        mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
            onehot = jax.nn.one_hot(labels, logits.shape[-1])
            return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1)), state["batch_stats"]
        return jax.grad(loss_fn, has_aux=True)(params)

    grads, new_stats = step(variables["params"], variables["batch_stats"])
    chex.assert_trees_all_equal_shapes(grads, variables["params"])
    chex.assert_tree_all_finite(grads)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads))
    for old, new in zip(jax.tree_util.tree_leaves(variables["batch_stats"]), jax.tree_util.tree_leaves(new_stats)):
        assert not np.allclose(old, new)  # every running mean and variance moved


def test_bfloat16_compute_keeps_float32_params_and_statistics():
    model = fusionjax.create_model("resnet20", dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    features, state = jax.jit(functools.partial(model.apply, train=True, features=True, mutable=["batch_stats"]))(
        variables, x)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
    assert all(s.dtype == jnp.float32 for s in jax.tree_util.tree_leaves(state["batch_stats"]))
    assert features["stage2"].dtype == jnp.bfloat16
    assert features["logits"].dtype == jnp.float32


def test_group_norm_model_has_no_batch_statistics():
    model = fusionjax.create_model("resnet20", norm=functools.partial(GroupNorm, num_groups=8))
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    assert "batch_stats" not in variables


def test_input_errors_name_the_fix():
    model = fusionjax.create_model("resnet18")
    with pytest.raises(ValueError, match=r"looks like NCHW.*transpose\(0, 2, 3, 1\)"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"4-D NHWC.*x\[None\]"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="in_channels=1"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 32, 32, 1)))
    gray = fusionjax.create_model("resnet18", in_channels=1)
    jax.eval_shape(gray.init, jax.random.key(0), jnp.zeros((2, 32, 32, 1)))


def test_unknown_names_list_close_matches():
    with pytest.raises(KeyError, match=r"Unknown model 'resnet5O'. Did you mean resnet56, resnet50.*Known models: densenet121"):
        fusionjax.create_model("resnet5O")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['growth_rate'\]; ResNet takes \[.*'drop_path'.*"
                                        r"'stage_sizes'.*'zero_init_last'\]"):
        fusionjax.create_model("resnet50", growth_rate=12)
    assert fusionjax.list_models("densenet1*") == ["densenet121", "densenet161", "densenet169"]


@pytest.mark.slow
def test_flax_nnx_users_can_wrap_any_model():
    model = fusionjax.create_model("resnet20")
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    wrapped = nnx.bridge.ToNNX(model, rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(wrapped, x)
    variables = {
        "params": nnx.to_pure_dict(nnx.state(wrapped, nnx.Param)),
        "batch_stats": nnx.to_pure_dict(nnx.state(wrapped, nnx.BatchStat)),
    }
    np.testing.assert_allclose(wrapped(x), jax.jit(model.apply)(variables, x), rtol=1e-6, atol=1e-6)
    before = variables["batch_stats"]["bn1"]["mean"]
    wrapped(x, train=True, mutable=["batch_stats"])
    assert not np.allclose(nnx.to_pure_dict(nnx.state(wrapped, nnx.BatchStat))["bn1"]["mean"], before)


HEAVY_OR_OPTIONAL = ("torch", "torchvision", "tensorflow", "tensorflow_datasets", "grain", "optax", "orbax",
                     "timm", "keras", "onnx", "onnxruntime", "jax2onnx", "qwix", "matplotlib", "sklearn", "mlxtend",
                     "fusionjax.convert", "fusionjax.export", "fusionjax.analysis", "fusionjax.claims",
                     "fusionjax.train", "fusionjax.deploy")


def test_import_stays_light():
    """``import fusionjax`` loads JAX and Flax: no converter, trainer, exporter or their dependencies."""
    code = f"import sys, fusionjax; print(sorted(m for m in {HEAVY_OR_OPTIONAL!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
