"""fusionjax.analysis against independent references: torchvision's published counts, torch autograd, NumPy,
JAX's own residual listing and closed forms."""

import contextlib
import io
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

import fusionjax
from fusionjax import analysis, kernels
from fusionjax.blocks import BasicBlock
from fusionjax.layers import BatchNorm, Conv2d
from fusionjax.torch_compat import import_torchvision


@pytest.mark.parametrize("name, weights", [("resnet18", "ResNet18_Weights"), ("densenet121", "DenseNet121_Weights")])
def test_layer_costs_match_torchvision_published_figures(name, weights):
    """Parameters exactly, multiply-adds to the 3 decimals of torchvision's 'GFLOPS' (which are multiply-adds)."""
    meta = getattr(import_torchvision().models, weights).IMAGENET1K_V1.meta
    costs = analysis.layer_costs(fusionjax.create_model(name), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32),
                                 train=False)
    assert sum(c.params for c in costs) == meta["num_params"]
    assert round(sum(c.macs for c in costs) / 1e9, 3) == meta["_ops"]


def test_layer_costs_closed_forms():
    # A grouped convolution: k·k·(C_in/groups)·C_out weights, that many multiply-adds per output position.
    costs = analysis.layer_costs(Conv2d(8, 3, groups=2), jax.ShapeDtypeStruct((2, 6, 6, 4), jnp.float32))
    assert [(c.kind, c.params, c.macs, c.output_shape) for c in costs] == [("conv", 144, 2 * 6 * 6 * 8 * 18,
                                                                           (2, 6, 6, 8))]
    # A basic block at C channels: 18C² convolution weights, γ and β of two BatchNorms; in call order.
    c = 24
    costs = analysis.layer_costs(BasicBlock(features=c), jax.ShapeDtypeStruct((1, 5, 5, c), jnp.float32))
    assert [x.path for x in costs] == ["conv1", "bn1", "conv2", "bn2"]
    assert sum(x.params for x in costs if x.kind == "conv") == 18 * c * c
    assert sum(x.params for x in costs) == 18 * c * c + 4 * c


def test_xla_flops_counts_two_operations_per_multiply_add():
    x, kernel = jnp.ones((2, 5, 5, 6)), jnp.ones((1, 1, 6, 4))  # 1×1, no padding: every tap is a multiply-add
    flops = analysis.xla_flops(lambda x, k: fusionjax.layers.conv2d.reference(x, k, strides=1, padding=0, groups=1),
                               x, kernel)
    assert flops == 2 * (2 * 5 * 5 * 4 * 6)


class _TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(BatchNorm(name="bn")(Conv2d(4, 3, name="conv1")(x), train))
        x = nn.relu(Conv2d(5, 3, strides=2, name="conv2")(x))
        return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


def test_layer_gradient_norms_match_torch_autograd():
    import torch

    images = np.random.default_rng(0).standard_normal((6, 7, 7, 2)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    model = _TinyNet()
    variables = model.init(jax.random.key(0), images[:1])
    norms = analysis.layer_gradient_norms(model, variables, images, labels)

    p = jax.tree.map(lambda a: torch.tensor(np.asarray(a), requires_grad=True), variables["params"])
    x = torch.tensor(images).permute(0, 3, 1, 2)
    y = torch.nn.functional.conv2d(x, p["conv1"]["kernel"].permute(3, 2, 0, 1), padding=1)
    y = torch.nn.functional.batch_norm(y, None, None, p["bn"]["scale"], p["bn"]["bias"], training=True, eps=1e-5)
    y = torch.relu(torch.nn.functional.conv2d(torch.relu(y), p["conv2"]["kernel"].permute(3, 2, 0, 1), stride=2,
                                              padding=1))
    logits = y.mean(dim=(2, 3)) @ p["head"]["kernel"] + p["head"]["bias"]
    torch.nn.functional.cross_entropy(logits, torch.tensor(labels)).backward()
    expected = [float(p[name]["kernel"].grad.norm()) for name in ("conv1", "conv2", "head")]

    assert [n.path for n in norms] == ["conv1", "conv2", "head"]
    np.testing.assert_allclose([n.grad_norm for n in norms], expected, rtol=1e-5)  # float32 on both sides
    np.testing.assert_allclose([n.weight_norm for n in norms],
                               [float(p[name]["kernel"].detach().norm()) for name in ("conv1", "conv2", "head")],
                               rtol=1e-6)


def test_activation_statistics_match_numpy():
    class TwoLayers(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="second")(nn.Dense(5, name="first")(x))

    x = np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32)
    model = TwoLayers()
    variables = model.init(jax.random.key(0), x)
    rows = analysis.activation_statistics(model, variables, x, select=lambda m: isinstance(m, nn.Dense))
    p = jax.tree.map(np.asarray, variables["params"])
    first = x @ p["first"]["kernel"] + p["first"]["bias"]
    second = first @ p["second"]["kernel"] + p["second"]["bias"]
    assert [r.path for r in rows] == ["first", "second"]
    for row, expected in zip(rows, (first, second), strict=True):
        np.testing.assert_allclose([row.mean, row.variance, row.second_moment],
                                   [expected.mean(), expected.var(), np.mean(expected**2)], rtol=1e-5, atol=1e-6)


def test_saved_residual_bytes_closed_form_and_jax_listing():
    # exp keeps its output for the backward pass; x and w are arguments, kept anyway.
    assert analysis.saved_residual_bytes(lambda x, w: jnp.sum(jnp.exp(x @ w)), jnp.ones((5, 3)),
                                         jnp.ones((3, 7))) == 5 * 7 * 4
    block = BasicBlock(features=8, strides=2)  # convolutions, training-mode BatchNorm, a projection, the addition
    images = jax.random.normal(jax.random.key(1), (2, 6, 6, 4))
    variables = block.init(jax.random.key(0), images)

    def loss(params, batch_stats, images):
        out, _ = block.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                             mutable=["batch_stats"])
        return out.sum()

    args = (variables["params"], variables["batch_stats"], images)
    for mode in ("reference", "xla_cpu"):  # the plain ops (a GPU's program) and XLA:CPU's kernels keep different sets
        listing = io.StringIO()
        with contextlib.redirect_stdout(listing), kernels.use(mode):
            print_saved_residuals(loss, *args)
        expected = 0
        for line in listing.getvalue().splitlines():
            if "from the argument" not in line:
                dtype, shape = re.match(r"(\w+)\[([\d,]*)\]", line).groups()
                size = int(np.prod([int(d) for d in shape.split(",") if d]))
                expected += size * {"f32": 4, "i32": 4, "i8": 1, "bool": 1}[dtype]
        assert analysis.saved_residual_bytes(loss, *args, kernels_mode=mode) == expected, mode


def test_compiled_memory_of_an_elementwise_program():
    x = jax.ShapeDtypeStruct((1000,), jnp.float32)
    memory = analysis.compiled_memory(jax.jit(lambda x: x * 2 + 1).lower(x).compile())
    assert (memory.arguments, memory.outputs) == (4000, 4000)
    assert memory.peak == memory.arguments + memory.outputs + memory.temporaries - memory.aliased


def test_filter_normalized_direction_matches_numpy():
    rng = np.random.default_rng(2)
    params = {"conv": {"kernel": rng.standard_normal((3, 3, 4, 6)).astype(np.float32),
                       "bias": rng.standard_normal(6).astype(np.float32)},
              "dense": {"kernel": rng.standard_normal((6, 5)).astype(np.float32)}}
    direction = analysis.filter_normalized_direction(jax.random.key(0), params)
    for kernel, d in ((params["conv"]["kernel"], direction["conv"]["kernel"]),
                      (params["dense"]["kernel"], direction["dense"]["kernel"])):
        d = np.asarray(d)
        axes = tuple(range(kernel.ndim - 1))
        np.testing.assert_allclose(np.sqrt((d**2).sum(axis=axes)), np.sqrt((kernel**2).sum(axis=axes)), rtol=1e-5)
        assert not np.allclose(d, kernel)  # a random direction, not the weights
    np.testing.assert_array_equal(direction["conv"]["bias"], np.zeros(6))  # Li et al.: biases stay put


def test_loss_landscape_of_a_quadratic():
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    d1, d2 = {"w": jnp.array([1.0, 0.0, 1.0])}, {"w": jnp.array([0.0, 2.0, 0.0])}
    def loss(p):
        return jnp.sum(p["w"] ** 2)

    steps = [-1.0, 0.0, 0.5]
    w, a, b = np.array([1.0, -2.0, 0.5]), np.array([1.0, 0.0, 1.0]), np.array([0.0, 2.0, 0.0])
    curve = analysis.loss_landscape(loss, params, [d1], [steps])
    np.testing.assert_allclose(curve, [np.sum((w + s * a) ** 2) for s in steps], rtol=1e-6)
    surface = analysis.loss_landscape(loss, params, [d1, d2], [steps, steps[:2]])
    np.testing.assert_allclose(surface, [[np.sum((w + s * a + t * b) ** 2) for t in steps[:2]] for s in steps],
                               rtol=1e-6)


def test_linear_reconstruction_error_matches_numpy_lstsq():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((4, 10, 10, 3)).astype(np.float32)
    targets = rng.standard_normal((4, 10, 10, 5)).astype(np.float32) + features[..., :1] @ np.ones((1, 5), np.float32)
    x = np.concatenate([features.reshape(-1, 3), np.ones((400, 1))], axis=1).astype(np.float64)
    y = targets.reshape(-1, 5).astype(np.float64)
    solution = np.linalg.lstsq(x, y, rcond=None)[0]
    expected = np.sum((y - x @ solution) ** 2) / np.sum((y - y.mean(axis=0)) ** 2)
    np.testing.assert_allclose(analysis.linear_reconstruction_error(features, targets), expected, rtol=1e-4)


def test_sum_of_independent_maps_loses_half_their_variance_concat_none():
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((8, 32, 32, 4)).astype(np.float32) for _ in range(2))
    both = np.concatenate([a, b], axis=-1)
    # Closed form: from a + b the best estimate of a is (a + b)/2, leaving var(a − b)/4 = 1/2 of var(a).
    assert abs(analysis.linear_reconstruction_error(a + b, both) - 0.5) < 0.01  # 32,768 samples: ±0.005 std
    assert analysis.linear_reconstruction_error(both, both) < 1e-6


def test_concat_kernel_for_add_matches_numpy():
    rng = np.random.default_rng(5)
    a, b, c = (rng.standard_normal((7, 4)) for _ in range(3))
    kernel = rng.standard_normal((4, 3))
    tied = np.asarray(analysis.concat_kernel_for_add(jnp.asarray(kernel), 3))
    np.testing.assert_allclose(np.concatenate([a, b, c], axis=1) @ tied, (a + b + c) @ kernel, rtol=1e-5)


def test_alternating_times_alternate_and_wait():
    calls = []

    def call(label):
        calls.append(label)
        return jnp.zeros(())

    times = analysis.alternating_times({"a": lambda: call("a"), "b": lambda: call("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert {label: len(t) for label, t in times.items()} == {"a": 3, "b": 3}
    assert all(t > 0 for ts in times.values() for t in ts)
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        analysis.alternating_times({"a": lambda: call("a")}, rounds=0)
