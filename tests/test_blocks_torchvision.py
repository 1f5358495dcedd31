"""Blocks against torchvision's, block by block (a mismatch names its block), in training and evaluation."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fusionjax import blocks
from fusionjax.layers import GroupNorm
from fusionjax.torch_compat import import_torchvision

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


class _TorchHybridBlock(torch.nn.Module):
    """fusionjax's HybridBlock written with torchvision's dense block: its new maps → 1×1 conv → BN, plus the
    (projected) shortcut, then ReLU."""

    def __init__(self, in_channels, features, growth_rate, num_layers, stride):
        super().__init__()
        self.in_channels = in_channels
        self.dense = tv.models.densenet._DenseBlock(num_layers, in_channels, bn_size=4, growth_rate=growth_rate,
                                                    drop_rate=0.0)
        self.fuse_conv = torch.nn.Conv2d(num_layers * growth_rate, features, 1, stride, bias=False)
        self.fuse_bn = torch.nn.BatchNorm2d(features)
        needs_projection = stride > 1 or in_channels != features
        self.downsample = _downsample(in_channels, features, stride) if needs_projection else None

    def forward(self, x):
        y = self.fuse_bn(self.fuse_conv(self.dense(x)[:, self.in_channels:]))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("features, stride", [(16, 1), (24, 2)])
def test_hybrid_block_matches_a_torchvision_composition(train, features, stride):
    x = _x((2, 7, 7, 16))
    reference = _randomize(_TorchHybridBlock(16, features, growth_rate=4, num_layers=3, stride=stride))
    _check_parity(reference, blocks.HybridBlock(features, strides=stride, growth_rate=4, num_layers=3), x, train)
