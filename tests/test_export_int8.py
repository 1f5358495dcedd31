"""int8 post-training quantization on real data: a small CIFAR ResNet trained here on scikit-learn's handwritten
digits (1437 training, 360 test images, the split of the README's main job), quantized by ``int8_apply`` (JAX) and
by onnxruntime's static QDQ quantization, each calibrated on 256 training images and scored on the 360 test images.

Tolerances: int8 top-1 within 2 points (7 of 360 images) of float32's, what per-channel int8 keeps on a net this
size; the int8 arithmetic itself is checked exactly against NumPy's integer arithmetic.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

import fusionjax
from benchmarks.export import train
from fusionjax import blocks, layers
from fusionjax.deploy import fold_batchnorm
from fusionjax.export import int8_apply, quantize
from fusionjax.export import onnx as onnx_export

DIGITS_MEAN, DIGITS_STD = 0.3054, 0.3761  # of the training split, as the trainer normalizes digits
ACCURACY_DROP = 0.02


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = ((data.images / 16.0 - DIGITS_MEAN) / DIGITS_STD).astype(np.float32)[..., None]
    train_x, test_x, train_y, test_y = train_test_split(images, data.target, test_size=360, stratify=data.target,
                                                        random_state=0)
    return train_x, train_y, test_x, test_y


@pytest.fixture(scope="module")
def trained(digits):
    """ResNet-8 (one block per stage) trained for 300 SGD steps with the recipe of benchmarks.export: about 97 %."""
    train_x, train_y, _, _ = digits
    model = fusionjax.create_model("resnet20", stage_sizes=(1, 1, 1), in_channels=1)
    return model, train(model, train_x, train_y, steps=300)


def accuracy(run, images, labels) -> float:
    return float(np.mean(np.argmax(np.asarray(run(images)), -1) == labels))


@pytest.mark.slow
def test_jax_int8_accuracy_beside_float32(digits, trained):
    train_x, _, test_x, test_y = digits
    model, variables = trained
    forward = jax.jit(model.apply)
    float32 = accuracy(lambda x: forward(variables, x), test_x, test_y)
    int8 = accuracy(int8_apply(model, variables, train_x[:256]), test_x, test_y)
    assert float32 >= 0.93
    assert abs(int8 - float32) <= ACCURACY_DROP, (float32, int8)


@pytest.mark.slow
def test_onnx_int8_accuracy_and_size(digits, trained, tmp_path):
    train_x, _, test_x, test_y = digits
    model, variables = trained
    folded_model, folded = fold_batchnorm(model, variables)
    proto = onnx_export.to_onnx(folded_model, folded, (8, 8, 1))
    quantized = quantize.quantize_onnx(proto, train_x[:256])
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in quantized.graph.node}
    float32 = accuracy(onnx_export.runner(proto), test_x, test_y)
    int8 = accuracy(onnx_export.runner(quantized), test_x, test_y)
    assert float32 >= 0.93
    assert abs(int8 - float32) <= ACCURACY_DROP, (float32, int8)
    onnx.save(proto, tmp_path / "float32.onnx")
    onnx.save(quantized, tmp_path / "int8.onnx")
    # int8 weights are a quarter of float32's; per-channel scales and the graph's QDQ nodes add a little
    assert (tmp_path / "int8.onnx").stat().st_size < 0.4 * (tmp_path / "float32.onnx").stat().st_size


def test_max_pool_padding_calibrates_to_finite_scales():
    """An ImageNet stem's padded max pool: every QDQ scale is finite (a −∞ padded tensor would give NaN) and the
    int8 model's outputs stay within 10 % of float32's largest (an untrained net: no accuracy to compare)."""
    model = fusionjax.create_model("resnet18", stage_sizes=(1, 1, 1, 1), stage_widths=(8, 8, 8, 8), stem_width=8,
                                   num_classes=4)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 32, 32, 3), np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images[:1])  # drawn with NumPy: no XLA compilation
    variables = jax.tree.map(lambda s: (rng.uniform(0.5, 1.5, s.shape) if s.ndim == 1 else  # He-scaled kernels
                                        rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape)).astype(np.float32),
                             shapes)
    folded_model, folded = fold_batchnorm(model, variables)
    proto = onnx_export.to_onnx(folded_model, folded, (32, 32, 3))
    quantized = quantize.quantize_onnx(proto, images)
    scales = {node.input[1] for node in quantized.graph.node if node.op_type == "QuantizeLinear"}
    values = [onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer if t.name in scales]
    assert values and all(np.all(np.isfinite(v)) and np.all(v > 0) for v in values)
    expected = onnx_export.runner(proto)(images)
    actual = onnx_export.runner(quantized)(images)
    assert np.max(np.abs(actual - expected)) <= 0.1 * np.max(np.abs(expected))


class ConvOnly(nn.Module):
    @nn.compact
    def __call__(self, x):
        return layers.Conv2d(5, 3, strides=2, name="conv")(x)


def test_int8_conv_is_integer_arithmetic():
    """int8_apply's convolution equals NumPy's: asymmetric int8 input codes, symmetric per-channel int8 weight
    codes, an exact integer sum of products, rescaled by the two scales (≤ 1e-6 relative: float32 rescaling)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9, 9, 3)).astype(np.float32) + 0.5
    model = ConvOnly()
    variables = jax.jit(model.init)(jax.random.key(0), x)
    actual = np.asarray(int8_apply(model, variables, x)(x))

    kernel = np.asarray(variables["params"]["conv"]["kernel"])  # HWIO
    w_scale = np.max(np.abs(kernel), axis=(0, 1, 2)) / np.float32(127)
    w_codes = np.clip(np.round(kernel / w_scale), -127, 127).astype(np.int64)
    low, high = np.float32(min(x.min(), 0)), np.float32(max(x.max(), 0))
    scale = (high - low) / np.float32(255)
    zero = np.round(np.float32(-128) - low / scale)
    x_codes = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int64) - int(zero)
    padded = np.pad(x_codes, ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = np.zeros((4, 5, 5, 5), np.int64)
    for i in range(3):
        for j in range(3):
            patch = padded[:, i:i + 9:2, j:j + 9:2, :]
            total += np.einsum("nhwc,co->nhwo", patch, w_codes[i, j])
    expected = total * (scale * w_scale.reshape(-1))
    assert np.max(np.abs(actual - expected)) <= 1e-6 * np.max(np.abs(expected))


def test_int8_apply_takes_a_single_block():
    """The contract the claims use: a BasicBlock quantized alone, called as apply(x, train=False)."""
    block = blocks.BasicBlock(features=8)
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 8), np.float32)
    variables = jax.jit(block.init)(jax.random.key(0), x)
    run = int8_apply(block, variables, x, train=False)
    expected = np.asarray(block.apply(variables, x, train=False))
    error = np.max(np.abs(np.asarray(run(x)) - expected)) / np.max(np.abs(expected))
    assert 0 < error < 0.05  # quantized (not the float block), and within int8's resolution of it
    assert run(x[:3]).shape == (3, 8, 8, 8)
    assert run(x).dtype == jnp.float32
