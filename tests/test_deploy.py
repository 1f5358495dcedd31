"""fusionjax.deploy: the folded model computes what the unfolded one does, with fewer ops; micro-batched
evaluation computes what one call on the whole batch does.

References: the unfolded model in eval mode (the spec: outputs within 1e-5 relative), PyTorch's own
``torch.nn.utils.fusion.fuse_conv_bn_weights`` for the folded kernels and biases, and closed-form counts of the
BatchNorms each architecture has after a convolution. Variables are random (not ``model.init``'s, whose
BatchNorms are the identity), so a fold that ignored a statistic would show.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import fusionjax
from fusionjax.deploy import fold_batchnorm, folding_plan, micro_batched
from fusionjax.layers import GroupNorm

# max |folded − unfolded| ≤ RTOL · max |unfolded| over the logits: float32 rounding of a reassociated product.
RTOL = 1e-5


def random_variables(model: nn.Module, size: int, seed: int = 0) -> dict:
    """Variables of ``model`` for a size×size input, drawn so activations stay O(1) and every BN does something."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    rng = np.random.default_rng(seed)

    def draw(path: tuple[str, ...], leaf) -> np.ndarray:
        shape, name = leaf.shape, path[-1]
        if name == "kernel":
            values = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name in ("scale", "var"):
            values = rng.uniform(0.5, 2.0, shape)
        else:  # bias, mean
            values = rng.normal(0.0, 0.2, shape)
        return jnp.asarray(values, jnp.float32)

    return {
        collection: traverse_util.unflatten_dict(
            {path: draw(path, leaf) for path, leaf in traverse_util.flatten_dict(tree).items()}
        )
        for collection, tree in shapes.items()
    }


def assert_fold_exact(model: nn.Module, size: int, batch: int = 2):
    """Fold random variables, check the logits; return the folded model, its variables and the folding plan."""
    variables = random_variables(model, size)
    folded_model, folded_variables = fold_batchnorm(model, variables)
    x = jax.random.normal(jax.random.key(1), (batch, size, size, 3))

    @jax.jit  # one program for both: one compile per model
    def both(variables, folded_variables, x):
        return model.apply(variables, x, train=False), folded_model.apply(folded_variables, x)

    expected, actual = map(np.asarray, both(variables, folded_variables, x))
    assert np.abs(expected).max() > 1e-3, "degenerate logits would make the comparison vacuous"
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL * np.abs(expected).max())
    assert set(folded_variables) == {"params"}
    return folded_model, folded_variables, folding_plan(model, variables)


# (model, overrides, input size, BNs folded, BNs kept) — counts in closed form from the architecture.
CASES = {
    # stem bn1 + 9 blocks × 2; option-A shortcuts have no BN
    "resnet20": ("resnet20", {}, 32, 1 + 9 * 2, 0),
    # stem + 8 blocks × 2 + 3 downsample_bn
    "resnet18": ("resnet18", {}, 32, 1 + 8 * 2 + 3, 0),
    # stem + 16 bottlenecks × 3 + 4 downsample_bn (stage 1 projects 64 → 256 too)
    "resnet50": ("resnet50", {}, 32, 1 + 16 * 3 + 4, 0),
    # grouped 3×3 convs: one bottleneck per stage keeps the compile short, every kind of BN is still there
    "resnext50_32x4d": ("resnext50_32x4d", {"stage_sizes": (1, 1, 1, 1)}, 32, 1 + 4 * 3 + 4, 0),
    # norm0 + each layer's norm2 fold; each layer's norm1, 3 transition norms and norm5 stay
    "densenet121_small": ("densenet121", {"block_config": (2, 2, 2, 2)}, 32, 1 + 8, 8 + 3 + 1),
    "densenet121_small_memory_efficient": (
        "densenet121", {"block_config": (2, 2, 2, 2), "memory_efficient": True}, 32, 1 + 8, 8 + 3 + 1,
    ),
    # pre-activation: bn2 of each block folds; bn1 (reads the residual sum) and final_bn stay
    "preact_resnet18_small": ("preact_resnet18", {"stage_sizes": (1, 1, 1, 1)}, 32, 4, 4 + 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_folded_model_equals_unfolded(case):
    name, overrides, size, n_folded, n_kept = CASES[case]
    model = fusionjax.create_model(name, **overrides)
    _, folded_variables, plan = assert_fold_exact(model, size)
    assert (len(plan.folds), len(plan.kept)) == (n_folded, n_kept)
    params = traverse_util.flatten_dict(folded_variables["params"], sep="/")
    for bn, conv in plan.folds.items():
        assert f"{conv}/bias" in params and not any(k.startswith(bn + "/") for k in params)
    for bn in plan.kept:
        assert {f"{bn}/scale", f"{bn}/bias"} <= set(params)


@pytest.mark.parametrize(
    "name, n_folded, n_kept",
    [("densenet121", 1 + 58, 58 + 3 + 1), ("preact_resnet50", 16 * 2, 16 + 1), ("se_resnet50", 1 + 16 * 3 + 4, 0)],
)
def test_plan_of_full_models(name, n_folded, n_kept):
    """Shapes-only tracing: the whole architectures pair up as documented in fusionjax.deploy.folding."""
    model = fusionjax.create_model(name)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    plan = folding_plan(model, shapes)
    assert (len(plan.folds), len(plan.kept)) == (n_folded, n_kept)
    if name == "densenet121":
        assert plan.folds["denseblock1/denselayer1/norm2"] == "denseblock1/denselayer1/conv1"
        assert plan.folds["norm0"] == "conv0"
        assert {"norm5", "transition1/norm", "denseblock4/denselayer16/norm1"} <= set(plan.kept)


def test_folded_weights_match_pytorch_fusion():
    """The folded kernel and bias are what torch.nn.utils.fusion computes from the same conv and BN."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    model = fusionjax.create_model("resnet18")
    variables = random_variables(model, 32)
    _, folded = fold_batchnorm(model, variables)
    for conv, bn in [("conv1", "bn1"), ("layer2_0/downsample_conv", "layer2_0/downsample_bn")]:
        p = traverse_util.flatten_dict(variables["params"], sep="/")
        s = traverse_util.flatten_dict(variables["batch_stats"], sep="/")
        t = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
        weight, bias = fuse_conv_bn_weights(
            t(p[f"{conv}/kernel"]).permute(3, 2, 0, 1), None, t(s[f"{bn}/mean"]), t(s[f"{bn}/var"]), 1e-5,
            t(p[f"{bn}/scale"]), t(p[f"{bn}/bias"]),
        )
        f = traverse_util.flatten_dict(folded["params"], sep="/")
        np.testing.assert_allclose(f[f"{conv}/kernel"], weight.detach().permute(2, 3, 1, 0).numpy(), rtol=1e-6,
                                   atol=1e-7)
        np.testing.assert_allclose(f[f"{conv}/bias"], bias.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_bad_inputs_raise_clear_errors():
    model = fusionjax.create_model("resnet20", norm=functools.partial(GroupNorm, num_groups=8))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    with pytest.raises(ValueError, match="folds BatchNorm only"):
        fold_batchnorm(model, shapes)

    model = fusionjax.create_model("resnet20")
    variables = random_variables(model, 32)
    with pytest.raises(ValueError, match="'params' and 'batch_stats'"):
        fold_batchnorm(model, {"params": variables["params"]})
    with pytest.raises(TypeError, match="injectable `conv` and `norm`"):
        fold_batchnorm(nn.Dense(3), variables)

    folded_model, folded_variables = fold_batchnorm(model, variables)
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="inference only"):
        jax.eval_shape(functools.partial(folded_model.apply, train=True), folded_variables, x)


@pytest.mark.parametrize("batch, micro_batch", [(10, 4), (12, 4), (3, 4), (5, 4)])
def test_micro_batched_numpy_reference(batch, micro_batch):
    """Slices in order, the shorter last slice, a batch smaller than one slice and a pytree output, against NumPy."""
    x = np.random.default_rng(0).standard_normal((batch, 3, 2)).astype(np.float32)
    weights = np.arange(6, dtype=np.float32).reshape(3, 2)

    def fn(w, x):
        return {"weighted": (x * w).sum(axis=(1, 2)), "doubled": 2 * x}

    out = jax.jit(micro_batched(fn, micro_batch))(jnp.asarray(weights), jnp.asarray(x))
    np.testing.assert_allclose(out["weighted"], (x * weights).sum(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_array_equal(out["doubled"], 2 * x)


def test_micro_batched_model_equals_whole_batch():
    """ResNet-20's evaluation forward (folded too) in slices of 4 over 10 images equals one call on all 10."""
    model = fusionjax.create_model("resnet20")
    variables = random_variables(model, 32)
    folded_model, folded_variables = fold_batchnorm(model, variables)
    x = jax.random.normal(jax.random.key(1), (10, 32, 32, 3))

    def forward(v, x):
        return model.apply(v, x, train=False)

    @jax.jit
    def all_three(variables, folded_variables, x):
        return (forward(variables, x), micro_batched(forward, 4)(variables, x),
                micro_batched(folded_model.apply, 4)(folded_variables, x))

    whole, sliced, folded_sliced = map(np.asarray, all_three(variables, folded_variables, x))
    assert sliced.shape == (10, 10)
    np.testing.assert_allclose(sliced, whole, rtol=0, atol=RTOL * np.abs(whole).max())
    np.testing.assert_allclose(folded_sliced, whole, rtol=0, atol=RTOL * np.abs(whole).max())


@pytest.mark.parametrize("micro_batch", [0, -2, 2.5, True])
def test_micro_batched_rejects_bad_sizes(micro_batch):
    with pytest.raises(ValueError, match="micro_batch must be a positive int"):
        micro_batched(lambda v, x: x, micro_batch)


def test_micro_batched_rejects_a_scalar():
    with pytest.raises(ValueError, match="leading batch axis"):
        micro_batched(lambda v, x: x, 2)(None, jnp.float32(1.0))
