"""Fusion primitives against NumPy, ASFF and FPN against a PyTorch reference, and the add/concat identity."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionjax import fusion
from fusionjax.layers import Conv2d


def _rand(key, shape):
    return jax.random.normal(jax.random.key(key), shape, jnp.float32)


def test_add_and_concat_match_numpy():
    a, b, c = _rand(0, (2, 5, 6, 3)), _rand(1, (2, 5, 6, 3)), _rand(2, (2, 5, 6, 4))
    np.testing.assert_array_equal(fusion.add(a, b, a), np.asarray(a) + np.asarray(b) + np.asarray(a))
    np.testing.assert_array_equal(fusion.concat(a, c), np.concatenate([a, c], axis=-1))
    np.testing.assert_array_equal(fusion.concat(a, b, axis=1), np.concatenate([a, b], axis=1))


def test_add_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"identical shapes.*\(2, 5, 6, 3\), \(2, 5, 6, 4\)"):
        fusion.add(_rand(0, (2, 5, 6, 3)), _rand(1, (2, 5, 6, 4)))
    with pytest.raises(ValueError, match="at least two"):
        fusion.add(_rand(0, (1, 2, 2, 1)))


def test_concat_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"all other axes equal.*\(2, 5, 6, 3\), \(2, 4, 6, 3\)"):
        fusion.concat(_rand(0, (2, 5, 6, 3)), _rand(1, (2, 4, 6, 3)))
    with pytest.raises(ValueError, match="same rank"):
        fusion.concat(_rand(0, (2, 5, 6, 3)), _rand(1, (5, 6, 3)))


@pytest.mark.parametrize("kernel_size,strides", [(1, 1), (3, 1), (3, 2)])
def test_conv_of_add_equals_conv_of_concat_with_repeated_kernel(kernel_size, strides):
    """The seeds' identity: W * (a + b) = [W, W] * concat(a, b) — concat with tied weights is add."""
    a, b = _rand(0, (2, 9, 9, 5)), _rand(1, (2, 9, 9, 5))
    conv = Conv2d(7, kernel_size, strides=strides, use_bias=True)
    variables = conv.init(jax.random.key(2), a)
    kernel = variables["params"]["kernel"]
    tied = {"params": {"kernel": jnp.concatenate([kernel, kernel], axis=2), "bias": variables["params"]["bias"]}}
    conv_wide = Conv2d(7, kernel_size, strides=strides, use_bias=True)
    via_add = conv.apply(variables, fusion.add(a, b))
    via_concat = conv_wide.apply(tied, fusion.concat(a, b))
    np.testing.assert_allclose(via_add, via_concat, rtol=1e-5, atol=1e-5)


def test_fpn_concat_with_stacked_identity_merge_equals_add():
    """FPNBlock(mode='concat') whose 1×1 merge is [I; I] computes FPNBlock(mode='add')."""
    top, lateral = _rand(0, (1, 4, 4, 8)), _rand(1, (1, 8, 8, 6))
    added = fusion.FPNBlock(8, mode="add")
    stacked = fusion.FPNBlock(8, mode="concat")
    v_add = added.init(jax.random.key(0), top, lateral)
    v_cat = stacked.init(jax.random.key(0), top, lateral)
    eye = jnp.eye(8)[None, None]
    v_cat = {"params": {"lateral": v_add["params"]["lateral"],
                        "merge": {"kernel": jnp.concatenate([eye, eye], axis=2), "bias": jnp.zeros(8)}}}
    out_add = added.apply(v_add, top, lateral)
    np.testing.assert_allclose(stacked.apply(v_cat, top, lateral), out_add, rtol=1e-6, atol=1e-6)
    # add mode: nearest-neighbour upsampled top (NumPy's repeat) plus the 1×1 lateral projection (NumPy einsum).
    lat = v_add["params"]["lateral"]
    expected = np.repeat(np.repeat(top, 2, 1), 2, 2) + np.einsum("nhwc,cd->nhwd", lateral, lat["kernel"][0, 0]) + lat["bias"]
    np.testing.assert_allclose(out_add, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fpn_returns_one_map_per_level():
    levels = [_rand(0, (1, 16, 16, 4)), _rand(1, (1, 8, 8, 8)), _rand(2, (1, 4, 4, 16))]
    for mode in ("add", "concat"):
        fpn = fusion.FPN(features=12, mode=mode)
        out = fpn.apply(fpn.init(jax.random.key(0), levels), levels)
        assert [o.shape for o in out] == [(1, 16, 16, 12), (1, 8, 8, 12), (1, 4, 4, 12)]


@pytest.mark.parametrize("level", [0, 1, 2])
def test_asff_shapes_and_weights(level):
    levels = [_rand(0, (2, 16, 16, 8)), _rand(1, (2, 8, 8, 16)), _rand(2, (2, 4, 4, 32))]
    asff = fusion.ASFF(level=level)
    variables = asff.init(jax.random.key(0), levels)
    out, state = asff.apply(variables, levels, mutable=["intermediates"])
    chex.assert_shape(out, levels[level].shape)
    (weights,) = state["intermediates"]["fusion_weights"]
    chex.assert_shape(weights, levels[level].shape[:3] + (3,))
    np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, rtol=1e-6)
    assert np.all(np.asarray(weights) > 0)

    # With the weight logits zeroed the fusion is a plain average: each level weighs exactly 1/3.
    params = jax.tree_util.tree_map(lambda p: p, variables["params"])
    params["weight_logits"] = jax.tree_util.tree_map(jnp.zeros_like, params["weight_logits"])
    _, state = asff.apply({**variables, "params": params}, levels, mutable=["intermediates"])
    np.testing.assert_allclose(state["intermediates"]["fusion_weights"][0], 1 / 3, rtol=1e-6)


def test_asff_rejects_bad_pyramids():
    with pytest.raises(ValueError, match="2 or 3 levels"):
        fusion.ASFF(level=0).init(jax.random.key(0), [_rand(0, (1, 8, 8, 4))])
    with pytest.raises(ValueError, match="must halve in size"):
        fusion.ASFF(level=0).init(jax.random.key(0), [_rand(0, (1, 8, 8, 4)), _rand(1, (1, 3, 3, 4))])


# ---------------------------------------------------------------------------------------------------------------
# ASFF and FPN, number for number, against the same computation written in PyTorch's functional API


def _randomized(variables, seed=0):
    """Random parameters and BatchNorm statistics (so no norm is the identity), as float32 NumPy."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return (rng.normal(size=leaf.shape) * (0.3 if name == "kernel" else 0.1)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, variables)


class _TorchRef:
    """fusionjax's layers in torch's functional API: NCHW tensors, parameters read from fusionjax's variables."""

    def __init__(self, variables):
        import torch

        self.torch, self.params, self.stats = torch, variables["params"], variables.get("batch_stats", {})

    def tensor(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)))

    def conv(self, x, name, strides=1):
        p = self.params[name]
        kernel = self.tensor(np.asarray(p["kernel"]).transpose(3, 2, 0, 1))
        bias = self.tensor(p["bias"]) if "bias" in p else None
        return self.torch.nn.functional.conv2d(x, kernel, bias, stride=strides, padding=kernel.shape[-1] // 2)

    def norm(self, x, name):
        p, s = self.params[name], self.stats[name]
        return self.torch.nn.functional.batch_norm(x, self.tensor(s["mean"]), self.tensor(s["var"]),
                                                   self.tensor(p["scale"]), self.tensor(p["bias"]), eps=1e-5)

    def resize(self, x, size):
        return self.torch.nn.functional.interpolate(x, size=size, mode="nearest-exact")


def _nchw(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _torch_asff(variables, levels, level):
    ref, relu = _TorchRef(variables), __import__("torch").relu
    xs = [_nchw(x) for x in levels]
    target = xs[level]
    aligned = []
    for source, x in enumerate(xs):
        for step in range(level - source):  # finer: strided 3×3 convs down
            x = relu(ref.norm(ref.conv(x, f"down{source}_{step}", strides=2), f"down{source}_{step}_norm"))
        if source > level:  # coarser: 1×1 to the target's channels, then nearest up
            if x.shape[1] != target.shape[1]:
                x = relu(ref.norm(ref.conv(x, f"lateral{source}"), f"lateral{source}_norm"))
            x = ref.resize(x, target.shape[2:])
        aligned.append(x)
    compressed = [relu(ref.conv(x, f"weight{i}")) for i, x in enumerate(aligned)]
    weights = ref.torch.softmax(ref.conv(ref.torch.cat(compressed, dim=1), "weight_logits"), dim=1)
    fused = sum(x * weights[:, i : i + 1] for i, x in enumerate(aligned))
    return relu(ref.norm(ref.conv(fused, "out"), "out_norm")).numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("sizes", [(16, 8, 4), (13, 7, 4)], ids=["even", "odd"])
def test_asff_matches_a_torch_reference(level, sizes):
    """Every path of ASFF (strided convs down, 1×1 lateral + nearest up, per-position softmax weights, output
    conv and norm) against the same computation in torch, random weights and BatchNorm statistics, evaluation."""
    channels = (8, 16, 32)
    levels = [_rand(i, (2, size, size, c)) for i, (size, c) in enumerate(zip(sizes, channels))]
    asff = fusion.ASFF(level=level)
    variables = _randomized(asff.init(jax.random.key(0), levels))
    out = jax.jit(asff.apply)(variables, levels)
    np.testing.assert_allclose(out, _torch_asff(variables, levels, level), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["add", "concat"])
def test_fpn_matches_a_torch_reference(mode):
    """The top-down pathway (1×1 laterals, nearest upsampling, add or concat→1×1, 3×3 smoothing) against torch."""
    levels = [_rand(0, (2, 16, 16, 4)), _rand(1, (2, 8, 8, 8)), _rand(2, (2, 4, 4, 16))]
    fpn = fusion.FPN(features=12, mode=mode)
    variables = _randomized(fpn.init(jax.random.key(0), levels))
    out = jax.jit(fpn.apply)(variables, levels)

    ref = _TorchRef(variables)
    xs = [_nchw(x) for x in levels]
    top = ref.conv(xs[-1], "top_lateral")
    merged = [top]
    for i in range(len(xs) - 2, -1, -1):
        block = _TorchRef({"params": variables["params"][f"merge{i}"]})
        lateral = block.conv(xs[i], "lateral")
        up = ref.resize(top, lateral.shape[2:])
        top = up + lateral if mode == "add" else block.conv(ref.torch.cat([up, lateral], dim=1), "merge")
        merged.insert(0, top)
    expected = [ref.conv(x, f"smooth{i}").numpy().transpose(0, 2, 3, 1) for i, x in enumerate(merged)]
    for got, want in zip(out, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
