"""ONNX and StableHLO export: every layer kind and every zoo family against the JAX model it came from.

The reference is the model run by JAX in this process on the same inputs; an artifact agrees when
max |artifact − model| / max |model| ≤ 1e-5 (float32: the exporters only reorder float32 sums, which moves results
by 1e-7 to 1e-6 relative, so 1e-5 leaves room for deeper nets while catching any wrong layer, which errs by ≥ 1e-2).
Models are the zoo's architectures at a fraction of their depth and width, so the suite stays within CI's budget.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

import fusionjax
from fusionjax import blocks, fusion, layers
from fusionjax.deploy import fold_batchnorm
from fusionjax.export import artifact, load_stablehlo, to_stablehlo
from fusionjax.export import onnx as onnx_export

TOLERANCE = artifact.FLOAT32_TOLERANCE


def init(model, shape, seed=0):
    """Variables for ``model`` on images ``shape``, drawn with NumPy (no XLA compilation): He-scaled kernels, and
    BatchNorm statistics and affine parameters away from 0/1, so that a dropped or misplaced BatchNorm shows."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
        if name == "var":
            return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        return ((name == "scale") + rng.normal(0, 0.2, leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def images_for(shape, batch, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, *shape), np.float32)


def reference(model, variables, x, **apply_kwargs):
    return jax.jit(functools.partial(model.apply, **apply_kwargs))(variables, x)


def assert_onnx_matches(model, variables, shape, *, expected=None, **apply_kwargs):
    """Export with a dynamic batch (onnx.checker runs inside to_onnx) and run in onnxruntime at batch 3 and 1
    against the model at batch 3; returns the ModelProto."""
    proto = onnx_export.to_onnx(model, variables, shape, **apply_kwargs)
    run = onnx_export.runner(proto)
    x = images_for(shape, 3)
    expected = reference(model, variables, x, **apply_kwargs) if expected is None else expected
    for batch in (3, 1):
        error = artifact.relative_error(run(x[:batch]), jax.tree.map(lambda e: e[:batch], expected))
        assert error <= TOLERANCE, f"batch {batch}: relative error {error:.2e}"
    return proto


def ops(proto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


# ---------------------------------------------------------------------------------------------------------------
# One test per layer kind


class Single(nn.Module):
    """One layer (or a tiny combination) applied to an NHWC image."""

    make: callable

    @nn.compact
    def __call__(self, x):
        return self.make(x)


def _two_branches(merge):
    def make(x):
        a = layers.Conv2d(6, 3, name="a")(x)
        b = layers.Conv2d(6, 1, name="b")(x)
        return merge(a, b)
    return make


LAYERS = {
    "conv_padded": lambda x: layers.Conv2d(8, 3, name="conv")(x),
    "conv_strided_7x7": lambda x: layers.Conv2d(8, 7, strides=2, name="conv")(x),
    "conv_grouped": lambda x: layers.Conv2d(8, 3, groups=4, name="conv")(layers.Conv2d(8, 1, name="widen")(x)),
    "conv_1x1_bias": lambda x: layers.Conv2d(8, 1, use_bias=True, name="conv")(x),
    "batchnorm_eval": lambda x: layers.BatchNorm(name="bn")(layers.Conv2d(8, 3, name="conv")(x), False),
    "relu": lambda x: nn.relu(layers.Conv2d(8, 3, name="conv")(x)),
    "max_pool_padded": lambda x: layers.max_pool(layers.Conv2d(8, 3, name="conv")(x) - 10.0),
    "avg_pool": lambda x: layers.avg_pool(layers.Conv2d(8, 3, name="conv")(x)),
    "global_pool": lambda x: layers.global_avg_pool(layers.Conv2d(8, 3, name="conv")(x)),
    "add": _two_branches(fusion.add),
    "concat": _two_branches(fusion.concat),
    "dense": lambda x: nn.Dense(5, name="fc")(layers.global_avg_pool(x)),
    "squeeze_excite_gate": lambda x: blocks.SqueezeExcite(reduction=4, name="se")(layers.Conv2d(16, 3, name="c")(x)),
    "nearest_resize": lambda x: fusion.FPNBlock(8, name="up")(layers.Conv2d(8, 3, strides=2, name="down")(x), x),
}
EXPECTED_OPS = {  # the ONNX node each layer must become (its exact form, where that matters)
    "conv_padded": "Conv", "conv_strided_7x7": "Conv", "conv_grouped": "Conv", "conv_1x1_bias": "Conv",
    "relu": "Relu", "max_pool_padded": "MaxPool", "avg_pool": "AveragePool", "global_pool": "GlobalAveragePool",
    "add": "Add", "concat": "Concat", "dense": "Gemm", "squeeze_excite_gate": "Sigmoid", "nearest_resize": "Gather",
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_exports_exactly(kind):
    model = Single(LAYERS[kind])
    shape = (12, 12, 3)
    proto = assert_onnx_matches(model, init(model, shape), shape)
    if kind in EXPECTED_OPS:
        assert EXPECTED_OPS[kind] in ops(proto)


def test_conv_attributes_are_pytorchs():
    """Strides, symmetric padding and groups reach ONNX's Conv as written (no 'SAME' padding, no split groups)."""
    model = Single(lambda x: layers.Conv2d(8, 7, strides=2, groups=2, name="conv")(x))
    shape = (15, 15, 4)
    proto = assert_onnx_matches(model, init(model, shape), shape)
    (conv,) = [n for n in proto.graph.node if n.op_type == "Conv"]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    assert attributes["strides"] == [2, 2] and attributes["pads"] == [3, 3, 3, 3] and attributes["group"] == 2


def test_max_pool_pads_in_the_pool_not_with_minus_infinity():
    """All-negative inputs: a zero-padded pool would return 0 at the borders; MaxPool's pads ignore the padding.
    No Pad node (whose −∞ fill breaks int8 calibration) is written."""
    model = Single(lambda x: layers.max_pool(-jnp.abs(x) - 1.0))
    proto = assert_onnx_matches(model, {}, (9, 9, 2))
    (pool,) = [n for n in proto.graph.node if n.op_type == "MaxPool"]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}["pads"] == [1, 1, 1, 1]
    assert "Pad" not in ops(proto)


def test_folded_batchnorm_becomes_conv_bias():
    """After fold_batchnorm every BatchNorm of a post-activation ResNet is inside a Conv: no Sub/Mul left."""
    model = fusionjax.create_model("resnet20", stage_sizes=(1, 1, 1))
    variables = init(model, (16, 16, 3))
    folded_model, folded = fold_batchnorm(model, variables)
    proto = assert_onnx_matches(folded_model, folded, (16, 16, 3))
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs and all(len(n.input) == 3 for n in convs)
    assert "Sub" not in ops(proto) and "Mul" not in ops(proto)
    x = images_for((16, 16, 3), 3)
    assert artifact.relative_error(onnx_export.runner(proto)(x), reference(model, variables, x)) <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# Every zoo family, both formats


FAMILIES = {  # name: (registry name, overrides, image shape)
    "resnet_basic": ("resnet18", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(8, 16, 16, 16), stem_width=8), 32),
    "resnet_bottleneck": ("resnet50", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(8, 8, 16, 16), stem_width=8), 32),
    "resnet_preactivation": ("preact_resnet50", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(8, 8, 8, 8),
                                                     stem_width=8), 32),
    "resnet_d": ("resnet50d", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(8, 8, 16, 16)), 32),
    "eca_resnet": ("ecaresnet50d", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(8, 8, 16, 16)), 32),
    "keras_resnet_v2": ("keras_resnet50v2", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(8, 8, 16, 16)), 32),
    "se_resnet": ("se_resnet50", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(8, 8, 16, 16), stem_width=8), 32),
    "resnext": ("resnext50_32x4d", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(16, 16, 16, 16), stem_width=8), 32),
    "wide_resnet": ("wide_resnet50_2", dict(stage_sizes=(1, 1, 1, 1), stage_widths=(4, 4, 8, 8), stem_width=8), 32),
    "densenet": ("densenet121", dict(block_config=(1, 2, 1, 1), growth_rate=8, num_init_features=16), 32),
    "densenet_no_bottleneck": ("densenet_bc_100_12", dict(block_config=(2, 2, 2), bn_size=None, compression=1.0), 16),
    "densenet_bc_cifar": ("densenet_bc_100_12", dict(block_config=(2, 2, 2)), 16),
    "cifar_resnet_zero_pad": ("resnet20", dict(stage_sizes=(1, 1, 1)), 16),
    "cifar_plain": ("plain20", dict(stage_sizes=(1, 1, 1)), 16),
    "cifar_wrn": ("wrn28_10", dict(stage_sizes=(1, 1, 1), stage_widths=(16, 32, 32)), 16),
    "cifar_resnext": ("resnext29_8x64d", dict(stage_sizes=(1, 1, 1), stage_widths=(8, 8, 8), stem_width=16), 16),
    "cifar_preact_bottleneck": ("preact_resnet164", dict(stage_sizes=(1, 1, 1)), 16),
}


class PyramidClassifier(nn.Module):
    """A user's model: a CIFAR ResNet backbone's three stages fused by ASFF and an FPN, then a linear head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        backbone = fusionjax.get_model_spec("resnet20").build(stage_sizes=(1, 1, 1), num_classes=10, name="backbone")
        stages = backbone(x, train, features=True)
        levels = [stages[f"stage{i}"] for i in (1, 2, 3)]
        fused = fusion.ASFF(level=1, compress_channels=4, name="asff")(levels, train)
        pyramid = fusion.FPN(features=8, mode="concat", name="fpn")(levels)
        pooled = [layers.global_avg_pool(p) for p in (fused, *pyramid)]
        return nn.Dense(10, name="head")(jnp.concatenate(pooled, axis=-1))


def family(name):
    if name == "asff_fpn_user_model":
        return PyramidClassifier(), (16, 16, 3)
    arch, overrides, size = FAMILIES[name]
    return fusionjax.create_model(arch, **overrides), (size, size, 3)


ALL_FAMILIES = sorted(FAMILIES) + ["asff_fpn_user_model"]


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_family_round_trips(name):
    """ONNX in onnxruntime at two batch sizes; StableHLO serialized, deserialized and run; both against the model."""
    model, shape = family(name)
    variables = init(model, shape)
    x = images_for(shape, 3)
    expected = reference(model, variables, x)
    assert_onnx_matches(model, variables, shape, expected=expected)
    restored = load_stablehlo(to_stablehlo(model, variables, shape).serialize())
    assert artifact.relative_error(restored.call(x), expected) <= TOLERANCE


def test_stablehlo_batch_is_dynamic():
    model, shape = family("cifar_resnet_zero_pad")
    variables = init(model, shape)
    exported = to_stablehlo(model, variables, shape)
    assert not isinstance(exported.in_avals[0].shape[0], int)
    restored = load_stablehlo(exported.serialize())
    for batch in (1, 5):
        x = images_for(shape, batch)
        assert artifact.relative_error(restored.call(x), reference(model, variables, x)) <= TOLERANCE


@pytest.mark.parametrize("export", ["onnx", "stablehlo"])
def test_nchw_input(export):
    model, shape = family("resnet_basic")
    variables = init(model, shape)
    x = images_for(shape, 2)
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if export == "onnx":
        proto = onnx_export.to_onnx(model, variables, shape, nchw=True)
        dims = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch", 3, 32, 32]
        actual = onnx_export.runner(proto)(nchw)
    else:
        actual = load_stablehlo(to_stablehlo(model, variables, shape, nchw=True).serialize()).call(nchw)
    assert artifact.relative_error(actual, reference(model, variables, x)) <= TOLERANCE


def test_fixed_batch():
    model, shape = family("cifar_resnet_zero_pad")
    variables = init(model, shape)
    proto = onnx_export.to_onnx(model, variables, shape, batch=4)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [4, 16, 16, 3]
    x = images_for(shape, 4)
    assert artifact.relative_error(onnx_export.runner(proto)(x), reference(model, variables, x)) <= TOLERANCE
    exported = to_stablehlo(model, variables, shape, batch=4)
    assert exported.in_avals[0].shape == (4, 16, 16, 3)


def test_several_outputs_keep_their_order():
    model, shape = family("resnet_basic")
    variables = init(model, shape)
    proto = onnx_export.to_onnx(model, variables, shape, features=True)
    expected = jax.tree.leaves(reference(model, variables, images_for(shape, 2), features=True))
    actual = onnx_export.runner(proto)(images_for(shape, 2))
    assert [o.name for o in proto.graph.output] == [f"output_{i}" for i in range(len(expected))]
    assert artifact.relative_error(actual, expected) <= TOLERANCE


def test_bfloat16_stablehlo_matches_the_bfloat16_model():
    """The artifact computes what the bfloat16 model computes in this process (the same program, compiled twice)."""
    model, shape = family("cifar_resnet_zero_pad")
    variables = init(model, shape)
    model = model.clone(dtype=jnp.bfloat16)
    x = images_for(shape, 2)
    actual = load_stablehlo(to_stablehlo(model, variables, shape).serialize()).call(x)
    assert actual.dtype == jnp.float32
    assert artifact.relative_error(actual, jax.jit(functools.partial(model.apply, variables))(x)) <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# Refusals


def test_image_too_small_is_a_named_error():
    model = fusionjax.create_model("densenet_bc_100_12", block_config=(1, 1, 1))
    variables = init(model, (16, 16, 3))
    with pytest.raises(fusionjax.export.ImageSizeError, match="too small"):
        onnx_export.to_onnx(model, variables, (2, 2, 3))
    with pytest.raises(fusionjax.export.ImageSizeError, match="NHWC"):
        to_stablehlo(model, variables, (16, 16, 1))


def test_unsupported_operation_is_named():
    model = Single(lambda x: jnp.cumsum(x, axis=1))
    with pytest.raises(fusionjax.export.UnsupportedOperationError, match="cumsum"):
        onnx_export.to_onnx(model, {}, (4, 4, 1))
