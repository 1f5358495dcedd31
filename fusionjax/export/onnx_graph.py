"""The ONNX graph under construction: values with their layout, nodes, initializers, and constant folding.

Layout. Activations stay NCHW inside the graph, as ONNX's Conv and pools need: every graph value records which JAX
axis each of its ONNX axes holds (``Tensor.perm``), so a JAX transpose costs nothing and a Transpose node is written
only where two layouts meet (the NHWC input, a reshape, the output). Constants (parameters and everything computed
from them alone) are evaluated here with JAX (``fold``) and stored as initializers: a convolution's kernel reaches
ONNX as one OIHW initializer that onnxruntime's quantizer can quantize per channel. Values broadcast from a smaller
shape keep that shape (``Tensor.shape`` has 1 there) and ONNX's own broadcasting expands them.
"""

import dataclasses
import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fusionjax.export import program
from fusionjax.export.errors import UnsupportedOperationError
from fusionjax.export.program import is_static


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A value computed by the graph (constants are NumPy arrays)."""

    name: str
    perm: tuple[int, ...]  # ONNX axis i holds the JAX value's axis perm[i]
    shape: tuple  # the JAX-order shape of the ONNX tensor: the value's, or 1 on axes ONNX still broadcasts
    fusable: tuple | None = None  # how this value was made, where a following op can merge into it (see _add)


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


class Graph:
    """The ONNX nodes and initializers written so far."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._ids = itertools.count()

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        name = f"{op.lower()}_{next(self._ids)}"
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def constant(self, array: np.ndarray) -> str:
        name = f"const_{next(self._ids)}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def int64s(self, values) -> str:
        return self.constant(np.asarray(values, np.int64))

    def arranged(self, value, perm: tuple[int, ...]) -> str:
        """The name of an ONNX tensor holding ``value`` with its axes in the order ``perm``."""
        if isinstance(value, np.ndarray):
            return self.constant(np.transpose(value, perm) if value.ndim else value)
        if value.perm == perm:
            return value.name
        return self.node("Transpose", [value.name], perm=[value.perm.index(axis) for axis in perm])

    def full(self, value, aval, perm: tuple[int, ...] | None = None) -> Tensor:
        """``value`` as a Tensor in ``perm`` (default: its own) with every axis at full size (Expand if needed)."""
        if isinstance(value, np.ndarray):
            shape = tuple(aval.shape)
            if not all(is_static(d) for d in shape):
                raise UnsupportedOperationError(f"a constant of shape {shape} that depends on the batch size")
            perm = perm or identity(len(shape))
            return Tensor(self.arranged(np.broadcast_to(value, shape), perm), perm, shape)
        perm = perm or value.perm
        name = self.arranged(value, perm)
        expand = [aval.shape[a] if value.shape[a] == 1 and aval.shape[a] != 1 else 1 for a in perm]
        if any(d != 1 for d in expand):
            if not all(is_static(d) for d in expand):
                raise UnsupportedOperationError("broadcasting a value along the batch axis")
            name = self.node("Expand", [name, self.int64s(expand)])
        return Tensor(name, perm, tuple(aval.shape))


ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "max", "min", "pow", "lt", "gt", "le", "ge", "eq", "and", "or", "neg", "exp", "log",
    "tanh", "logistic", "sqrt", "abs", "floor", "ceil", "sign", "erf", "not", "rsqrt", "square", "integer_pow",
    "convert_element_type", "select_n",
})
ONNX_TYPES = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float16): onnx.TensorProto.FLOAT16,
              np.dtype(np.int32): onnx.TensorProto.INT32, np.dtype(np.int64): onnx.TensorProto.INT64,
              np.dtype(np.bool_): onnx.TensorProto.BOOL}


# NumPy's float arithmetic is IEEE's, as XLA's is: constants fold without compiling one XLA program per operation.
_NUMPY_FLOAT = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
                "min": np.minimum, "neg": np.negative, "sqrt": np.sqrt, "exp": np.exp, "square": np.square,
                "rsqrt": lambda x: np.reciprocal(np.sqrt(x))}
_NUMPY_SHAPES = {
    "reshape": lambda x, p: np.reshape(x, p["new_sizes"]),
    "transpose": lambda x, p: np.transpose(x, p["permutation"]),
    "squeeze": lambda x, p: np.squeeze(x, tuple(p["dimensions"])),
    "convert_element_type": lambda x, p: x.astype(p["new_dtype"]),
}


def fold(eqn, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """An equation on constants only, evaluated now (element-wise ones on their broadcast shapes)."""
    name = eqn.primitive.name
    if name == "broadcast_in_dim":  # kept at its own size: ONNX broadcasts it where it is used
        (value,) = inputs
        shape = [1] * len(eqn.params["shape"])
        for i, axis in enumerate(eqn.params["broadcast_dimensions"]):
            shape[axis] = value.shape[i]
        return [value.reshape(shape)]
    dtype = np.dtype(eqn.outvars[0].aval.dtype)
    floating = all(np.issubdtype(v.dtype, np.floating) for v in inputs) and np.issubdtype(dtype, np.floating)
    if name in _NUMPY_FLOAT and floating:
        return [np.asarray(_NUMPY_FLOAT[name](*inputs), dtype)]
    if name in ELEMENTWISE:
        arrays = np.broadcast_arrays(*inputs)
    else:
        arrays = []
        for value, var in zip(inputs, eqn.invars):
            if not all(is_static(d) for d in var.aval.shape):
                raise UnsupportedOperationError(f"{name} of constants shaped by the batch size")
            arrays.append(np.broadcast_to(value, var.aval.shape))
        if name in _NUMPY_SHAPES:
            return [np.asarray(_NUMPY_SHAPES[name](arrays[0], eqn.params))]
    return [np.asarray(out) for out in program.bind(eqn, arrays)]
