"""Blocks against PyTorch/torchvision block by block (a mismatch names its block), and their options."""

import functools
import re

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from fusionjax import blocks
from fusionjax.layers import GroupNorm

torch = pytest.importorskip("torch")
from fusionjax.torch_compat import import_torchvision  # noqa: E402

tv = import_torchvision()
torch.manual_seed(0)

# torch submodule names that differ from fusionjax's
_RENAMES = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}


def _randomize(module):
    """Random BN/GN affine parameters and running statistics, so normalization is not the identity."""
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, 0.0, 0.1)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return module


def _to_flax(module) -> dict:
    """fusionjax variables holding a torch block's weights: OIHW→HWIO kernels, BN weight→scale, running stats."""
    variables = {"params": {}, "batch_stats": {}}
    for key, value in module.state_dict().items():
        path, leaf = key.rsplit(".", 1)
        for old, new in _RENAMES.items():
            path = path.replace(old, new)
        value = value.detach().numpy()
        if leaf == "num_batches_tracked":
            continue
        if leaf in ("running_mean", "running_var"):
            collection, leaf = "batch_stats", {"running_mean": "mean", "running_var": "var"}[leaf]
        elif leaf == "weight":
            collection, leaf = "params", "kernel" if value.ndim == 4 else "scale"
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        else:
            collection = "params"
        node = variables[collection]
        for part in path.split("."):
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(value)
    return variables


def _check_parity(torch_module, flax_module, x_nhwc, train: bool, rtol=1e-5, atol=1e-5):
    torch_module.train(train)
    with torch.no_grad():
        expected = torch_module(torch.from_numpy(np.array(x_nhwc).transpose(0, 3, 1, 2))).numpy()
    variables = _to_flax(torch_module)
    apply = jax.jit(functools.partial(flax_module.apply, train=train, mutable=["batch_stats"]))
    out, _ = apply(variables, x_nhwc)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), expected, rtol=rtol, atol=atol)
    return variables


def _init(module, x):
    return jax.jit(module.init)(jax.random.key(0), x)


def _apply(module, variables, x, **kwargs):
    """Jitted apply (eager Flax compiles every op on its own: minutes instead of seconds on this CPU)."""
    return jax.jit(functools.partial(module.apply, **kwargs))(variables, x)


def _x(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _downsample(inplanes, outplanes, stride):
    return torch.nn.Sequential(torch.nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), torch.nn.BatchNorm2d(outplanes))


@pytest.mark.parametrize("train", [False, True])
def test_basic_block_matches_torchvision(train):
    x = _x((2, 9, 9, 16))  # odd size: PyTorch's symmetric padding at stride 2
    reference = _randomize(tv.models.resnet.BasicBlock(16, 32, stride=2, downsample=_downsample(16, 32, 2)))
    _check_parity(reference, blocks.BasicBlock(32, strides=2), x, train)
    _check_parity(_randomize(tv.models.resnet.BasicBlock(16, 16)), blocks.BasicBlock(16), x, train)


@pytest.mark.parametrize("train", [False, True])
def test_resnext_bottleneck_matches_torchvision(train):
    x = _x((2, 9, 9, 32))
    reference = tv.models.resnet.Bottleneck(32, 16, stride=2, downsample=_downsample(32, 64, 2), groups=4, base_width=8)
    _check_parity(_randomize(reference), blocks.Bottleneck(16, strides=2, groups=4, base_width=8), x, train)


def test_basic_block_with_group_norm_matches_torchvision():
    x = _x((2, 8, 8, 64))
    group_norm = lambda channels: torch.nn.GroupNorm(32, channels)  # noqa: E731
    reference = _randomize(tv.models.resnet.BasicBlock(64, 64, norm_layer=group_norm))
    variables = _check_parity(reference, blocks.BasicBlock(64, norm=GroupNorm), x, train=True)
    assert not variables["batch_stats"]


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_dense_layer_and_transition_match_torchvision(memory_efficient):
    x = _x((2, 7, 7, 24))
    reference = tv.models.densenet._DenseLayer(24, growth_rate=12, bn_size=4, drop_rate=0.0)
    layer = blocks.DenseLayer(12, bn_size=4, memory_efficient=memory_efficient)
    for train in (False, True):
        _check_parity(_randomize(reference), layer, x, train)
    transition = _randomize(tv.models.densenet._Transition(24, 12))
    _check_parity(transition, blocks.Transition(compression=0.5), x, train=False)


def test_dense_block_matches_torchvision_and_grows_by_k_per_layer():
    x = _x((2, 6, 6, 16))
    reference = _randomize(tv.models.densenet._DenseBlock(3, 16, bn_size=4, growth_rate=8, drop_rate=0.0))
    reference.train(False)
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.array(x).transpose(0, 3, 1, 2))).numpy()
    out = jax.jit(blocks.DenseBlock(3, 8).apply)(_to_flax(reference), x)
    chex.assert_shape(out, (2, 6, 6, 16 + 3 * 8))
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), expected, rtol=1e-5, atol=1e-5)


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


def test_memory_efficient_dense_block_same_numbers_fewer_saved_bytes():
    # 12 layers: what remat saves grows with the concatenations, quadratically in depth, while both variants keep
    # each layer's 4k-wide bottleneck output and its activation; at 6 layers on 24 channels the two weigh alike.
    x = _x((2, 8, 8, 24))
    plain, efficient = blocks.DenseBlock(12, 12), blocks.DenseBlock(12, 12, memory_efficient=True)
    variables = _init(plain, x)

    def loss(module, params, x):
        out, _ = module.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out**2)

    grads = [jax.jit(jax.grad(functools.partial(loss, m), argnums=(0, 1)))(variables["params"], x)
             for m in (plain, efficient)]
    chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(_apply(plain, variables, x), _apply(efficient, variables, x))
    saved = [_residual_bytes(functools.partial(loss, m), variables["params"], x) for m in (plain, efficient)]
    # Without remat each layer keeps its concatenated input and that input's normalized copy; with it, only the
    # narrow per-layer outputs (which the concatenation needs anyway) and the bottleneck.
    assert saved[1] <= 0.5 * saved[0], saved
    # Linear, not quadratic, growth: doubling the layers at most ~doubles what memory_efficient keeps.
    deeper = blocks.DenseBlock(24, 12, memory_efficient=True)
    deeper_vars = jax.eval_shape(deeper.init, jax.random.key(0), x)
    deeper_saved = _residual_bytes(
        lambda v, x: jnp.sum(deeper.apply(v, x, train=True, mutable=["batch_stats"])[0]),
        jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), deeper_vars), x)
    assert deeper_saved <= 2.2 * saved[1], (deeper_saved, saved[1])


def test_hybrid_block_concats_inside_and_adds_outside():
    x = _x((2, 6, 6, 16))
    block = blocks.HybridBlock(16, growth_rate=4, num_layers=3)
    variables = jax.eval_shape(block.init, jax.random.key(0), x)
    assert variables["params"]["fuse_conv"]["kernel"].shape == (1, 1, 3 * 4, 16)  # the concat of 3 new maps
    assert "denselayer3" in variables["params"]["dense"] and "downsample_conv" not in variables["params"]
    strided = blocks.HybridBlock(32, strides=2, growth_rate=4)
    out = _apply(strided, _init(strided, x), x)
    chex.assert_shape(out, (2, 3, 3, 32))


@pytest.mark.parametrize("shape", [(8, 5, 7, 6), (4, 6)])  # NHWC activations, and (N, C) features
def test_batch_norm_training_matches_torch_autograd(shape):
    """Output, running statistics and gradients (x, γ, β) of a training-mode BatchNorm against torch's."""
    from fusionjax.layers import BatchNorm

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
def test_batch_norm_statistics_far_from_zero_match_float64(shape):
    """Training-mode statistics and output for activations whose mean is 100 standard deviations from zero, against
    float64 NumPy. The one-pass variance about zero, E[x²] − E[x]² (Flax's fast variance), loses about four of
    float32's seven digits here (3e-3 relative error in the variance); sums about a shift near the mean do not."""
    from fusionjax.layers import BatchNorm

    x = (100 + np.random.default_rng(0).normal(size=shape)).astype(np.float32)
    norm = BatchNorm(momentum=0.0)  # the running statistics become the batch's
    y, updates = jax.jit(lambda v, x: norm.apply(v, x, train=True, mutable=["batch_stats"]))(
        norm.init(jax.random.key(0), x), x)
    x64, axes = x.astype(np.float64), tuple(range(len(shape) - 1))
    mean, var = x64.mean(axis=axes), x64.var(axis=axes)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], mean, rtol=5e-7)
    np.testing.assert_allclose(updates["batch_stats"]["var"], var, rtol=2e-6)
    np.testing.assert_allclose(y, (x64 - mean) / np.sqrt(var + 1e-5), rtol=0, atol=2e-5)


def test_batch_norm_trains_on_a_batch_sharded_with_explicit_axes():
    """Under sharding in types (``AxisType.Explicit``) the batch axis may not be sliced; the statistics must still
    be the whole batch's, as on one device."""
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    from fusionjax.layers import BatchNorm

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
    from fusionjax.layers import GroupNorm

    x = (100 + np.random.default_rng(0).normal(size=(4, 8, 8, 64))).astype(np.float32)
    norm = GroupNorm()
    y = norm.apply(norm.init(jax.random.key(0), x), x)
    groups = x.astype(np.float64).reshape(4, 8, 8, 32, 2)  # 32 groups of 2 channels
    mean, var = groups.mean(axis=(1, 2, 4), keepdims=True), groups.var(axis=(1, 2, 4), keepdims=True)
    # float32 holds values near 100 to 4e-6; (x − mean) carries that into the O(1) output.
    np.testing.assert_allclose(y, ((groups - mean) / np.sqrt(var + 1e-5)).reshape(x.shape), rtol=0, atol=1e-4)


@pytest.mark.parametrize("window, strides, padding, size",
                         [(3, 2, 1, 9), (3, 2, 1, 8), (2, 2, 0, 6), (3, 1, 1, 5), (12, 1, 6, 13)])
def test_max_pool_gradients_match_torch_autograd(window, strides, padding, size):
    """Output, reverse-mode gradient and forward-mode tangent of max_pool against torch's, ties included.

    After a ReLU and rounding most windows hold several equal maxima; torch gives the gradient to the first in
    row-major order, and so must fusionjax (an even split, as ``jnp.maximum`` differentiates, would fail here).
    """
    from fusionjax.layers import max_pool

    rng = np.random.default_rng(0)
    x = np.maximum(np.round(rng.normal(size=(2, size, size + 1, 3)) * 2) / 2, 0).astype(np.float32)
    pool = functools.partial(max_pool, window=window, strides=strides, padding=padding)
    y = pool(x)
    cotangent = rng.normal(size=y.shape).astype(np.float32)
    tangent = rng.normal(size=x.shape).astype(np.float32)
    (dx,) = jax.jit(jax.vjp(pool, x)[1])(cotangent)
    _, dy = jax.jvp(pool, (x,), (tangent,))

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

    torch_pool = functools.partial(torch.nn.functional.max_pool2d, kernel_size=window, stride=strides,
                                   padding=padding)
    x_torch = nchw(x).requires_grad_()
    y_torch = torch_pool(x_torch)
    y_torch.backward(nchw(cotangent))
    _, dy_torch = torch.func.jvp(torch_pool, (nchw(x),), (nchw(tangent),))
    padded = torch.nn.functional.pad(nchw(x), (padding,) * 4, value=-np.inf)
    windows = torch.nn.functional.unfold(padded, window, stride=strides)
    windows = windows.reshape(x.shape[0], x.shape[3], window ** 2, -1)
    ties = (windows == windows.max(dim=2, keepdim=True).values).sum(dim=2) > 1
    assert ties.sum() >= 3  # windows with several maxima: what this test is about
    np.testing.assert_array_equal(y, y_torch.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(dx, x_torch.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(dy, dy_torch.numpy().transpose(0, 2, 3, 1))


def _entry_instructions(fn, *args) -> list[str]:
    """The compiled program's top-level instructions (XLA:CPU, as the suite's flags configure it)."""
    entry = jax.jit(fn).lower(*args).compile().as_text().split("\nENTRY ")[1]
    return [line.strip() for line in entry.splitlines() if " = " in line]


@pytest.mark.parametrize("train", [True, False])
def test_residual_stream_is_stored_once_not_recomputed_by_every_later_block(train):
    """XLA:CPU fuses cheap element-wise producers into each consumer; down a residual stream that recomputes every
    earlier block's BN→add→ReLU inside each later one. With ``layers.materialized`` at each block's output the
    widest fusion stays the same size however deep the stage, in a training step's gradient and in an evaluation
    forward (without it: 13, 22 and 42 operands at 2, 4 and 8 blocks; the training form in an evaluation forward:
    22 and 42)."""
    class Stage(flax.linen.Module):
        depth: int

        @flax.linen.compact
        def __call__(self, x):
            for _ in range(self.depth):
                x = blocks.BasicBlock(8)(x, train=train)
            return x

    def widest_fusion(depth):
        stage, x = Stage(depth), jnp.ones((4, 8, 8, 8))
        variables = stage.init(jax.random.key(0), x)

        def loss(params):
            y, _ = stage.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])
            return y.sum()

        if train:
            instructions = _entry_instructions(jax.grad(loss), variables["params"])
        else:
            instructions = _entry_instructions(stage.apply, variables, x)
        fusions = [line for line in instructions if " fusion(" in line]
        return max(len(re.findall(r"%[\w.\-]+", line.split(" fusion(")[1].split("), kind=")[0])) for line in fusions)

    assert widest_fusion(8) <= widest_fusion(4)


def test_cifar_resnet_computes_its_element_wise_stem_once():
    """The stem's k·k·C shifted slices sit in one fused computation of the compiled evaluation forward. Without the
    stored stem output, XLA computes the stem inside both readers of the first block (two computations)."""
    import fusionjax

    model, x = fusionjax.create_model("resnet20"), jnp.ones((4, 16, 16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    text = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile().as_text()
    stem_slices = [len(re.findall(r"f32\[4,16,16,1\]\{[^}]*\} slice\(", computation))
                   for computation in text.split("\n\n")]
    assert sorted(n for n in stem_slices if n) == [27], stem_slices


def test_one_by_one_conv_gradient_reads_activations_in_place():
    """A 1×1 convolution's weight gradient is xᵀ·dy over N·H·W rows: no transposed copy of either operand (on the
    4-D arrays XLA:CPU copied one into (channels, N·H·W): 35 copies, a quarter of a ResNet-50 step)."""
    from fusionjax.layers import Conv2d

    conv, x = Conv2d(32, kernel_size=1), jnp.ones((4, 8, 8, 16))
    params = conv.init(jax.random.key(0), x)

    def loss(params, x):
        return (jax.nn.relu(conv.apply(params, jax.nn.relu(x * 2.0))) * 3.0).sum()

    instructions = _entry_instructions(jax.grad(loss, argnums=(0, 1)), params, x)
    assert any(" dot(" in line for line in instructions)
    assert not [line for line in instructions if "transpose" in line.split(" = ")[0] or "copy" in line.split(" = ")[0]]


@pytest.mark.parametrize("in_features, padding, strides", [(3, 1, 1), (1, 1, 1), (3, 0, 1), (3, 1, 2), (4, 1, 1)])
def test_stem_conv_matches_torch_autograd(in_features, padding, strides):
    """A 3×3 convolution over ≤ 3 channels at stride 1 runs as element-wise multiply-adds with the convolution's
    own gradients; it, and the convolutions just outside that rule, give torch's output and gradients (kernel and
    input) to 1e-5."""
    from fusionjax.layers import Conv2d

    conv = Conv2d(8, kernel_size=3, strides=strides, padding=padding)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 7, in_features)).astype(np.float32)
    params = conv.init(jax.random.key(0), x)
    y, backward = jax.vjp(lambda p, x: conv.apply(p, x), params, x)
    cotangent = rng.normal(size=y.shape).astype(np.float32)
    d_params, dx = backward(cotangent)

    kernel = torch.from_numpy(np.asarray(params["params"]["kernel"]).transpose(3, 2, 0, 1).copy()).requires_grad_()
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    y_torch = torch.nn.functional.conv2d(x_torch, kernel, stride=strides, padding=padding)
    y_torch.backward(torch.from_numpy(cotangent.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(y, y_torch.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_params["params"]["kernel"], kernel.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, x_torch.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    element_wise = in_features <= 3 and strides == 1
    instructions = _entry_instructions(lambda p, x: conv.apply(p, x), params, x)
    assert not any(" dot(" in line for line in instructions)
    assert any(" convolution(" in line for line in instructions) != element_wise
