"""Post-training int8 quantization, calibrated on real images: of the JAX model, and of an ONNX file.

Both quantize the same way: weights symmetric per output channel (int8 codes in [−127, 127], one scale per
channel); activations asymmetric per tensor (one scale and zero point, from the min and max that the calibration
images reach, as onnxruntime's MinMax calibrator does).

- ``int8_apply(module, variables, calibration_inputs)``: a JAX function whose convolutions and dense layers
  multiply int8 weight codes with int8 activation codes (the input of every convolution or dense layer, and the
  output of every feature fusion, ``add`` or ``concat``, is quantized) and rescale the integer sums to float32.
  The integer products are summed in float32, exact while a sum stays below 2^24 in magnitude.
- ``quantize_onnx(proto, calibration_inputs)``: onnxruntime's static QDQ quantization (QuantizeLinear /
  DequantizeLinear pairs that onnxruntime and TensorRT run as int8 kernels), activations uint8, weights int8.
  The ONNX writer pads max pools through MaxPool's ``pads`` attribute, never with a −∞ tensor, whose range would
  give the calibrator an infinite scale (NaN after quantization).
"""

import tempfile
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fusionjax.export import program
from fusionjax.export.errors import ExportError

CALIBRATION_BATCH = 64
ONNX_CALIBRATION_BATCH = 16  # onnxruntime runs a calibration batch whole: its memory grows with the batch
_MATMULS = ("conv_general_dilated", "dot_general")
_FUSIONS = ("add", "concatenate")


def activation_qparams(low, high):
    """Asymmetric int8: (scale, zero point) mapping [min(low, 0), max(high, 0)] onto [−128, 127]."""
    low, high = jnp.minimum(low, 0.0), jnp.maximum(high, 0.0)
    scale = jnp.where(high > low, (high - low) / 255.0, 1.0)
    zero_point = jnp.clip(jnp.round(-128.0 - low / scale), -128, 127)
    return scale, zero_point


def weight_codes(kernel: np.ndarray, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: (codes as int8, one float32 scale per channel)."""
    others = tuple(a for a in range(kernel.ndim) if a != channel_axis)
    peak = np.max(np.abs(kernel), axis=others, keepdims=True)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.round(kernel / scale), -127, 127).astype(np.int8), scale


class _Int8Program:
    """Evaluates a traced program with quantized matrix products and fusions; ``ranges`` None means calibrating
    (record each quantized tensor's min and max in ``observed``, compute in float)."""

    def __init__(self, ranges: list | None):
        self.ranges, self.observed = ranges, []

    def _quantize(self, x):
        """``x`` as (integer codes minus the zero point, as float32; scale)."""
        index = len(self.observed)
        x = x.astype(jnp.float32)
        self.observed.append((jnp.min(x), jnp.max(x)))
        if self.ranges is None:
            return x, jnp.float32(1.0)
        scale, zero_point = activation_qparams(*self.ranges[index])
        codes = jnp.clip(jnp.round(x / scale) + zero_point, -128, 127)
        return codes - zero_point, scale

    def __call__(self, eqn, inputs):
        name = eqn.primitive.name
        static = [isinstance(v, np.ndarray) for v in inputs]
        if all(static):  # parameters only: folded now, so that the weights reach the matrix products as arrays
            with jax.ensure_compile_time_eval():
                return [np.asarray(out) for out in program.bind(eqn, inputs)]
        if name in _MATMULS and static == [False, True]:
            return [self._matmul(eqn, *inputs)]
        if name in _FUSIONS and not any(static):
            (fused,) = program.bind(eqn, inputs)
            codes, scale = self._quantize(fused)
            return [(codes * scale).astype(fused.dtype)]
        return program.bind(eqn, inputs)

    def _matmul(self, eqn, x, weights):
        if eqn.primitive.name == "conv_general_dilated":
            dn = eqn.params["dimension_numbers"]
            weight_axis, out_axis = dn.rhs_spec[0], dn.out_spec[1]
        else:
            (_, rhs_contract), _ = eqn.params["dimension_numbers"]
            if weights.ndim != 2:
                raise ExportError("int8: only dense layers with a 2-D kernel quantize.")
            weight_axis, out_axis = 1 - rhs_contract[0], len(eqn.outvars[0].aval.shape) - 1
        x_codes, x_scale = self._quantize(x)
        if self.ranges is None:  # calibrating: the float model's ranges, as onnxruntime's calibrator sees them
            return eqn.primitive.bind(x, weights, **eqn.params)
        codes, weight_scale = weight_codes(weights, weight_axis)
        params = {**eqn.params, "precision": (lax.Precision.HIGHEST, lax.Precision.HIGHEST),
                  "preferred_element_type": jnp.float32}  # integer sums in float32 whatever the model's dtype
        total = eqn.primitive.bind(x_codes, jnp.asarray(codes).astype(jnp.float32), **params)  # stored as int8
        shape = [1] * total.ndim
        shape[out_axis] = -1
        return (total * (x_scale * weight_scale.reshape(shape))).astype(eqn.outvars[0].aval.dtype)


def _evaluate(forward: Callable, inputs, state: _Int8Program):
    closed, outputs = program.trace(forward, inputs, return_shape=True)
    return jax.tree.unflatten(jax.tree.structure(outputs), program.run(closed, jax.tree.leaves(inputs), state))


def int8_apply(module, variables, calibration_inputs, **apply_kwargs) -> Callable:
    """``inputs -> outputs`` (float32) computing ``module.apply(variables, inputs, **apply_kwargs)`` with int8
    weights (per output channel) and int8 activations (per tensor), calibrated on ``calibration_inputs``.

    ``module`` is a whole model or a single block (``fusionjax.blocks.BasicBlock``…) called as
    ``apply(variables, x, **apply_kwargs)``; for a BatchNorm model pass ``train=False`` where its ``__call__`` does
    not default to it (every fusionjax model and block does). The returned function is jitted; it takes any batch.
    """
    def forward(x):
        return module.apply(variables, x, **apply_kwargs)

    calibration_inputs = np.asarray(calibration_inputs)
    if calibration_inputs.ndim == 0 or len(calibration_inputs) == 0:
        raise ExportError("int8_apply needs a batch of calibration inputs (at least one example).")

    @jax.jit
    def observe(x):
        state = _Int8Program(None)
        _evaluate(forward, x, state)
        return state.observed

    ranges = None
    for start in range(0, len(calibration_inputs), CALIBRATION_BATCH):
        seen = observe(calibration_inputs[start:start + CALIBRATION_BATCH])
        ranges = seen if ranges is None else [(jnp.minimum(lo, a), jnp.maximum(hi, b))
                                              for (lo, hi), (a, b) in zip(ranges, seen, strict=True)]
    ranges = [(np.float32(lo), np.float32(hi)) for lo, hi in ranges]

    @jax.jit
    def run(x):
        return _evaluate(forward, x, _Int8Program(ranges))

    return run


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader over an array of images, a batch at a time."""

    def __init__(self, input_name: str, images: np.ndarray):
        self.batches = iter([{input_name: images[i:i + ONNX_CALIBRATION_BATCH]}
                             for i in range(0, len(images), ONNX_CALIBRATION_BATCH)])

    def get_next(self):
        return next(self.batches, None)


def quantize_onnx(proto, calibration_inputs: np.ndarray):
    """``proto`` (float32, from ``to_onnx``) quantized by onnxruntime's static QDQ quantization, calibrated on
    ``calibration_inputs`` (images in the model's input layout and normalization). Returns the int8 ModelProto."""
    import onnx
    from onnxruntime import quantization

    images = np.asarray(calibration_inputs, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ExportError(f"quantize_onnx needs a batch of calibration images (N, …), got shape {images.shape}.")
    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "float32.onnx", Path(scratch) / "int8.onnx"
        onnx.save(proto, source)
        reader = _CalibrationReader(proto.graph.input[0].name, images)
        quantization.quantize_static(
            str(source), str(target), reader, quant_format=quantization.QuantFormat.QDQ, per_channel=True,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax)
        quantized = onnx.load(target)
    _check_scales(quantized)
    return quantized


def _check_scales(proto) -> None:
    """Refuse a quantized model with a non-finite or zero scale (a tensor the calibration saw as ±∞)."""
    from onnx import numpy_helper

    scales = {node.input[1] for node in proto.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")}
    bad = [t.name for t in proto.graph.initializer
           if t.name in scales and not np.all(np.isfinite(numpy_helper.to_array(t)))]
    if bad:
        raise ExportError(f"int8: calibration gave non-finite scales for {bad}; a tensor reached ±inf on the "
                          "calibration images. Check them for inf/NaN.")


__all__ = ["activation_qparams", "int8_apply", "quantize_onnx", "weight_codes"]
