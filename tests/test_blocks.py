"""Blocks' options and structure (zero init, stochastic depth, option-A shortcuts, remat, the hybrid block),
against NumPy; block-by-block parity with torchvision is in test_blocks_torchvision.py."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from fusionjax import blocks, kernels


def _init(module, x):
    return jax.jit(module.init)(jax.random.key(0), x)


def _apply(module, variables, x, **kwargs):
    """Jitted apply (eager Flax compiles every op on its own: minutes instead of seconds on this CPU)."""
    return jax.jit(functools.partial(module.apply, **kwargs))(variables, x)


def _x(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def test_squeeze_excite_matches_numpy():
    x = _x((2, 4, 4, 32))
    se = blocks.SqueezeExcite(reduction=8)
    params = _init(se, x)["params"]
    pooled = np.asarray(x).mean(axis=(1, 2))
    hidden = np.maximum(pooled @ params["fc1"]["kernel"][0, 0] + params["fc1"]["bias"], 0)  # 1×1 convs (timm's SE)
    gates = 1 / (1 + np.exp(-(hidden @ params["fc2"]["kernel"][0, 0] + params["fc2"]["bias"])))
    np.testing.assert_allclose(_apply(se, {"params": params}, x), np.asarray(x) * gates[:, None, None, :], rtol=1e-5)


@pytest.mark.parametrize(
    "block,expected",
    [
        (blocks.BasicBlock(16, zero_init_last=True), lambda x: np.maximum(x, 0)),
        (blocks.Bottleneck(4, zero_init_last=True), lambda x: np.maximum(x, 0)),
        (blocks.PreActBasicBlock(16, zero_init_last=True), lambda x: x),
        (blocks.PreActBottleneck(4, zero_init_last=True), lambda x: x),
        (blocks.HybridBlock(16, growth_rate=4, zero_init_last=True), lambda x: np.maximum(x, 0)),
        (blocks.DenseLayer(4, zero_init_last=True), lambda x: np.zeros(x.shape[:3] + (4,), np.float32)),
    ],
    ids=["basic", "bottleneck", "preact_basic", "preact_bottleneck", "hybrid", "dense_layer"],
)
def test_zero_init_last_starts_as_identity(block, expected):
    x = _x((2, 5, 5, 16))
    out, _ = _apply(block, _init(block, x), x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, expected(np.asarray(x)), rtol=1e-6, atol=1e-6)


def test_drop_path_drops_whole_branches_per_example():
    x = _x((64, 4, 4, 8))
    rate = 0.5
    kept = blocks.PreActBasicBlock(8)
    variables = _init(kept, x)
    full, _ = _apply(kept, variables, x, train=True, mutable=["batch_stats"])
    branch = np.asarray(full) - np.asarray(x)  # pre-activation block: out = x + branch
    dropped = blocks.PreActBasicBlock(8, drop_path=rate)
    out, _ = _apply(dropped, variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    out = np.asarray(out)
    is_kept = np.array([np.allclose(o, xi + b / (1 - rate), atol=1e-5) for o, xi, b in zip(out, np.asarray(x), branch)])
    is_dropped = np.array([np.allclose(o, xi, atol=1e-6) for o, xi in zip(out, np.asarray(x))])
    assert np.all(is_kept ^ is_dropped)
    assert 16 <= is_dropped.sum() <= 48  # Binomial(64, 0.5): outside this range with probability < 1e-4
    np.testing.assert_allclose(_apply(dropped, variables, x), _apply(kept, variables, x))


def test_zero_pad_shortcut_is_option_a():
    """He et al.'s option A: subsample by the stride and zero-pad channels; no parameters."""
    x = _x((1, 6, 6, 4))
    block = blocks.BasicBlock(8, strides=2, shortcut="zero_pad", zero_init_last=True)
    variables = _init(block, x)
    assert "downsample_conv" not in variables["params"]
    out, _ = _apply(block, variables, x, train=True, mutable=["batch_stats"])
    expected = np.pad(np.asarray(x)[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2)))
    np.testing.assert_allclose(out, np.maximum(expected, 0), atol=1e-6)


def test_plain_block_refuses_options_that_need_a_shortcut():
    with pytest.raises(ValueError, match="no shortcut"):
        jax.eval_shape(blocks.PlainBlock(8, drop_path=0.1).init, jax.random.key(0), _x((1, 4, 4, 8)))


def _residual_bytes(fn, *args) -> int:
    """Bytes the backward pass keeps from the forward, not counting the function's own arguments."""
    return sum(a.size * a.dtype.itemsize for a, why in saved_residuals(fn, *args) if "from the argument" not in why)


@pytest.mark.slow
def test_memory_efficient_dense_block_same_numbers_fewer_saved_bytes():
    x = _x((2, 8, 8, 24))

    def loss(module, variables, params, x):
        out, _ = module.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out**2)

    # Same outputs and gradients (four layers suffice: remat changes no layer's arithmetic).
    plain, efficient = blocks.DenseBlock(4, 12), blocks.DenseBlock(4, 12, memory_efficient=True)
    variables = _init(plain, x)
    grads = [jax.jit(jax.grad(functools.partial(loss, m, variables), argnums=(0, 1)))(variables["params"], x)
             for m in (plain, efficient)]
    chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(_apply(plain, variables, x), _apply(efficient, variables, x))

    # What the backward pass keeps, traced (nothing compiles). 12 layers: what remat saves grows with the
    # concatenations, quadratically in depth, while both variants keep each layer's 4k-wide bottleneck output and
    # its activation; at 6 layers on 24 channels the two weigh alike.
    def saved(module):
        shapes = jax.eval_shape(module.init, jax.random.key(0), x)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        with kernels.use("reference"):
            return _residual_bytes(functools.partial(loss, module, zeros), zeros["params"], x)

    plain_saved = saved(blocks.DenseBlock(12, 12))
    efficient_saved = saved(blocks.DenseBlock(12, 12, memory_efficient=True))
    # Without remat each layer keeps its concatenated input and that input's normalized copy; with it, only the
    # narrow per-layer outputs (which the concatenation needs anyway) and the bottleneck.
    assert efficient_saved <= 0.5 * plain_saved, (efficient_saved, plain_saved)
    # Linear, not quadratic, growth: doubling the layers at most ~doubles what memory_efficient keeps.
    deeper_saved = saved(blocks.DenseBlock(24, 12, memory_efficient=True))
    assert deeper_saved <= 2.2 * efficient_saved, (deeper_saved, efficient_saved)


def test_hybrid_block_concats_inside_and_adds_outside():
    x = _x((2, 6, 6, 16))
    block = blocks.HybridBlock(16, growth_rate=4, num_layers=3)
    variables = jax.eval_shape(block.init, jax.random.key(0), x)
    assert variables["params"]["fuse_conv"]["kernel"].shape == (1, 1, 3 * 4, 16)  # the concat of 3 new maps
    assert "denselayer3" in variables["params"]["dense"] and "downsample_conv" not in variables["params"]
    strided = blocks.HybridBlock(32, strides=2, growth_rate=4)
    out = _apply(strided, _init(strided, x), x)
    chex.assert_shape(out, (2, 3, 3, 32))
