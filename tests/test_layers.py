"""Each layer op against PyTorch (or float64 NumPy), in both of its forms: the plain definition GPUs and TPUs run
(``kernels.use('reference')``) and what this CPU runs (``'auto'``, i.e. the XLA:CPU kernels)."""

import functools
import re

import chex
import jax
import numpy as np
import pytest

from fusionjax import create_model, kernels
from fusionjax.layers import (BatchNorm, Conv2d, GroupNorm, avg_pool, global_avg_pool, max_pool,
                              variance_scaling)


@pytest.fixture(scope="module")
def torch():
    import torch

    return torch


@pytest.fixture(params=["auto", "reference"])
def mode(request):
    """Runs the test with the XLA:CPU kernels (this machine's 'auto') and with the plain ops."""
    with kernels.use(request.param):
        yield request.param


def _nchw(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("kernel_size, in_features, padding, strides, groups", [
    (3, 3, 1, 1, 1),  # an RGB stem: element-wise multiply-adds on XLA:CPU
    (3, 1, 1, 1, 1),  # a grey stem
    (3, 3, 0, 1, 1),
    (3, 3, 1, 2, 1),  # strided, asymmetric in the odd input below
    (3, 4, 1, 1, 1),
    (1, 8, 0, 1, 1),  # 1×1: a matrix product on XLA:CPU
    (1, 8, 0, 2, 1),
    (3, 8, 1, 2, 4),  # grouped (ResNeXt)
    (7, 3, 3, 2, 1),  # ImageNet stem
])
def test_conv_matches_torch_autograd(torch, mode, kernel_size, in_features, padding, strides, groups):
    """Output and gradients (kernel and input) against torch's conv2d, to 1e-5 (float32 sums in another order)."""
    conv = Conv2d(8, kernel_size=kernel_size, strides=strides, padding=padding, groups=groups)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 7, in_features)).astype(np.float32)
    params = conv.init(jax.random.key(0), x)
    y, backward = jax.vjp(lambda p, x: conv.apply(p, x), params, x)
    cotangent = rng.normal(size=y.shape).astype(np.float32)
    d_params, dx = backward(cotangent)

    kernel = torch.from_numpy(np.asarray(params["params"]["kernel"]).transpose(3, 2, 0, 1).copy()).requires_grad_()
    x_torch = _nchw(x).requires_grad_()
    y_torch = torch.nn.functional.conv2d(x_torch, kernel, stride=strides, padding=padding, groups=groups)
    y_torch.backward(_nchw(cotangent))
    np.testing.assert_allclose(y, _nhwc(y_torch), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_params["params"]["kernel"], kernel.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, _nhwc(x_torch.grad), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 5, 7, 6), (4, 6)])  # NHWC activations, and (N, C) features
def test_batch_norm_training_matches_torch_autograd(torch, mode, shape):
    """Output, running statistics and gradients (x, γ, β) of a training-mode BatchNorm against torch's."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3 + 2).astype(np.float32)
    weights = rng.normal(size=shape).astype(np.float32)  # the loss is sum(weights · y)
    scale = rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32)
    bias = rng.normal(size=shape[-1]).astype(np.float32)
    running = {"mean": rng.normal(size=shape[-1]).astype(np.float32),
               "var": rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32)}

    def loss(params, x):
        y, updates = BatchNorm().apply({"params": params, "batch_stats": running}, x, train=True,
                                       mutable=["batch_stats"])
        return (y * weights).sum(), (y, updates["batch_stats"])

    (_, (y, stats)), (dparams, dx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        {"scale": scale, "bias": bias}, x)

    channels_first = (0, len(shape) - 1, *range(1, len(shape) - 1))  # NHWC → NCHW (identity for (N, C))
    reference = torch.nn.BatchNorm2d(shape[-1]) if len(shape) == 4 else torch.nn.BatchNorm1d(shape[-1])
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(scale))
        reference.bias.copy_(torch.from_numpy(bias))
        reference.running_mean.copy_(torch.from_numpy(running["mean"]))
        reference.running_var.copy_(torch.from_numpy(running["var"]))
    x_torch = torch.from_numpy(x.transpose(channels_first)).requires_grad_()
    y_torch = reference.train()(x_torch)
    (y_torch * torch.from_numpy(weights.transpose(channels_first))).sum().backward()
    back = np.argsort(channels_first)

    np.testing.assert_allclose(y, y_torch.detach().numpy().transpose(back), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, x_torch.grad.numpy().transpose(back), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dparams["scale"], reference.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dparams["bias"], reference.bias.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["mean"], reference.running_mean.numpy(), rtol=1e-6, atol=1e-6)
    # torch's running variance uses the unbiased batch variance, Flax's (and so fusionjax's) the biased one.
    count = x.size // shape[-1]
    biased = (reference.running_var.numpy() - 0.9 * running["var"]) * (count - 1) / count + 0.9 * running["var"]
    np.testing.assert_allclose(stats["var"], biased, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 8, 8, 4), (64, 4)])
def test_batch_norm_statistics_far_from_zero_match_float64(mode, shape):
    """Training-mode statistics and output for activations whose mean is 100 standard deviations from zero, against
    float64 NumPy. The one-pass variance about zero, E[x²] − E[x]² (Flax's fast variance), loses about four of
    float32's seven digits here (3e-3 relative error in the variance); sums about a shift near the mean do not,
    in either form."""
    x = (100 + np.random.default_rng(0).normal(size=shape)).astype(np.float32)
    norm = BatchNorm(momentum=0.0)  # the running statistics become the batch's
    y, updates = jax.jit(lambda v, x: norm.apply(v, x, train=True, mutable=["batch_stats"]))(
        norm.init(jax.random.key(0), x), x)
    x64, axes = x.astype(np.float64), tuple(range(len(shape) - 1))
    mean, var = x64.mean(axis=axes), x64.var(axis=axes)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], mean, rtol=5e-7)
    np.testing.assert_allclose(updates["batch_stats"]["var"], var, rtol=2e-6)
    np.testing.assert_allclose(y, (x64 - mean) / np.sqrt(var + 1e-5), rtol=0, atol=2e-5)


def test_flax_fast_variance_is_what_the_shift_avoids():
    """The counterfactual of the test above: Flax's own BatchNorm with its default fast variance misses the float64
    variance by far more than 2e-6 on the same data, so that test can fail."""
    import flax.linen as nn

    x = (100 + np.random.default_rng(0).normal(size=(16, 8, 8, 4))).astype(np.float32)
    norm = nn.BatchNorm(use_running_average=False, momentum=0.0)
    _, updates = norm.apply(norm.init(jax.random.key(0), x), x, mutable=["batch_stats"])
    var = x.astype(np.float64).var(axis=(0, 1, 2))
    assert np.max(np.abs(np.asarray(updates["batch_stats"]["var"]) / var - 1)) > 1e-4


def test_batch_norm_trains_on_a_batch_sharded_with_explicit_axes(mode):
    """Under sharding in types (``AxisType.Explicit``) the batch axis may not be sliced; the statistics must still
    be the whole batch's, as on one device."""
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    x = (5 + np.random.default_rng(0).normal(size=(8, 4, 4, 3))).astype(np.float32)
    norm = BatchNorm()
    variables = norm.init(jax.random.key(0), x)
    train = jax.jit(lambda v, x: norm.apply(v, x, train=True, mutable=["batch_stats"]))
    mesh = jax.make_mesh((8,), ("batch",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(mesh):
        y, stats = train(variables, jax.device_put(x, NamedSharding(mesh, P("batch"))))
    y_one, stats_one = train(variables, x)
    np.testing.assert_allclose(y, y_one, rtol=0, atol=1e-6)
    chex.assert_trees_all_close(stats, stats_one, rtol=1e-6)


def test_group_norm_far_from_zero_matches_float64():
    """GroupNorm on activations 100 standard deviations from zero, against float64 NumPy (Flax's default one-pass
    variance is off by 1.6e-2 here)."""
    x = (100 + np.random.default_rng(0).normal(size=(4, 8, 8, 64))).astype(np.float32)
    norm = GroupNorm()
    y = norm.apply(norm.init(jax.random.key(0), x), x)
    groups = x.astype(np.float64).reshape(4, 8, 8, 32, 2)  # 32 groups of 2 channels
    mean, var = groups.mean(axis=(1, 2, 4), keepdims=True), groups.var(axis=(1, 2, 4), keepdims=True)
    # float32 holds values near 100 to 4e-6; (x − mean) carries that into the O(1) output.
    np.testing.assert_allclose(y, ((groups - mean) / np.sqrt(var + 1e-5)).reshape(x.shape), rtol=0, atol=1e-4)


@pytest.mark.parametrize("window, strides, padding, size",
                         [(3, 2, 1, 9), (3, 2, 1, 8), (2, 2, 0, 6), (3, 1, 1, 5), (12, 1, 6, 13)])
def test_max_pool_gradients_match_torch_autograd(torch, mode, window, strides, padding, size):
    """Output, reverse-mode gradient and forward-mode tangent of max_pool against torch's, ties included.

    After a ReLU and rounding most windows hold several equal maxima; torch gives the gradient to the first in
    row-major order, and so must fusionjax, in both forms (an even split, as ``jnp.maximum`` differentiates,
    would fail here).
    """
    rng = np.random.default_rng(0)
    x = np.maximum(np.round(rng.normal(size=(2, size, size + 1, 3)) * 2) / 2, 0).astype(np.float32)
    pool = functools.partial(max_pool, window=window, strides=strides, padding=padding)
    y = pool(x)
    cotangent = rng.normal(size=y.shape).astype(np.float32)
    tangent = rng.normal(size=x.shape).astype(np.float32)
    (dx,) = jax.jit(jax.vjp(pool, x)[1])(cotangent)
    _, dy = jax.jvp(pool, (x,), (tangent,))

    torch_pool = functools.partial(torch.nn.functional.max_pool2d, kernel_size=window, stride=strides,
                                   padding=padding)
    x_torch = _nchw(x).requires_grad_()
    y_torch = torch_pool(x_torch)
    y_torch.backward(_nchw(cotangent))
    _, dy_torch = torch.func.jvp(torch_pool, (_nchw(x),), (_nchw(tangent),))
    padded = torch.nn.functional.pad(_nchw(x), (padding,) * 4, value=-np.inf)
    windows = torch.nn.functional.unfold(padded, window, stride=strides)
    windows = windows.reshape(x.shape[0], x.shape[3], window ** 2, -1)
    ties = (windows == windows.max(dim=2, keepdim=True).values).sum(dim=2) > 1
    assert ties.sum() >= 3  # windows with several maxima: what this test is about
    np.testing.assert_array_equal(y, _nhwc(y_torch))
    np.testing.assert_allclose(dx, _nhwc(x_torch.grad), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(dy, _nhwc(dy_torch))


def test_average_pools_match_torch(torch, mode):
    x = np.random.default_rng(0).normal(size=(2, 9, 8, 5)).astype(np.float32)
    np.testing.assert_allclose(avg_pool(x), _nhwc(torch.nn.functional.avg_pool2d(_nchw(x), 2, 2)), rtol=1e-6)
    np.testing.assert_allclose(global_avg_pool(x), _nchw(x).mean(dim=(2, 3)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("scale, mode, distribution", [(2.0, "fan_out", "normal"), (1.0, "fan_in", "truncated_normal"),
                                                       (1 / 3, "fan_in", "uniform")])
@pytest.mark.parametrize("shape", [(3, 3, 16, 24), (7, 7, 3, 64), (1, 1, 5, 1), (3, 1, 1), (512, 10)])
@pytest.mark.parametrize("partitionable", [True, False])  # jax's default since 0.5, and the older generator
def test_matrix_drawn_initializers_equal_jax_s_own(scale, mode, distribution, shape, partitionable):
    with jax.threefry_partitionable(partitionable):
        expected = jax.nn.initializers.variance_scaling(scale, mode, distribution)(jax.random.key(7), shape)
        drawn = variance_scaling(scale, mode, distribution)(jax.random.key(7), shape)
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(expected))


def test_a_model_init_draws_every_kernel_as_a_matrix():
    """What makes init compile faster on XLA:CPU: each draw's counters are 2-D iotas, not one per kernel axis."""
    model = create_model("resnet18", num_classes=10)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
    program = jax.jit(functools.partial(model.init, train=False)).lower(jax.random.key(0), x).as_text()
    iota_shapes = re.findall(r"stablehlo\.iota dim = \d+ : tensor<((?:\d+x)+)[a-z]+\d+>", program)
    assert iota_shapes and all(shape.count("x") <= 2 for shape in iota_shapes), sorted(set(iota_shapes))


def test_variance_scaling_refuses_a_mode_a_matrix_cannot_keep():
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'.*'fan_avg'"):
        variance_scaling(1.0, "fan_avg", "normal")
