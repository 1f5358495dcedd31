"""Fusion primitives against NumPy, and the add/concat identity of the seeds."""

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
