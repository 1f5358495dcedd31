"""JAX primitives as ONNX nodes: one rule per primitive (``RULES``), over the flat program of
``fusionjax.export.program`` and the graph of ``fusionjax.export.onnx_graph``.

Where a following op can merge into a node, the node's value says how (``Tensor.fusable``): a per-channel constant
added to a Conv or MatMul becomes its bias (Conv with bias, Gemm), a window or global sum divided by its size is
the AveragePool or GlobalAveragePool itself. Max pooling is MaxPool with its ``pads`` attribute, never a −∞ padded
tensor (which would give onnxruntime's int8 calibration NaN scales).
"""

import math

import numpy as np

from fusionjax.export.errors import UnsupportedOperationError
from fusionjax.export.onnx_graph import ONNX_TYPES, Graph, Tensor, identity
from fusionjax.export.program import is_static


def _first_tensor(inputs) -> Tensor:
    return next(v for v in inputs if isinstance(v, Tensor))


def _broadcast(*shapes) -> tuple:
    return tuple(next((d for d in dims if not (is_static(d) and d == 1)), 1) for dims in zip(*shapes))


def _shape_of(value, rank: int) -> tuple:
    """The JAX-order shape ``value`` broadcasts from (a scalar constant: ones)."""
    if isinstance(value, Tensor):
        return value.shape
    return tuple(value.shape) if value.ndim else (1,) * rank


# ---------------------------------------------------------------------------------------------------------------
# Element-wise


_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min", "pow": "Pow",
           "lt": "Less", "gt": "Greater", "le": "LessOrEqual", "ge": "GreaterOrEqual", "eq": "Equal",
           "and": "And", "or": "Or"}
_UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid", "sqrt": "Sqrt",
          "abs": "Abs", "floor": "Floor", "ceil": "Ceil", "sign": "Sign", "erf": "Erf", "not": "Not"}


def _elementwise(g: Graph, op: str, inputs: list, rank: int) -> Tensor:
    perm = _first_tensor(inputs).perm
    names = [g.arranged(v, perm) for v in inputs]
    shape = _broadcast(*[_shape_of(v, rank) for v in inputs])
    return Tensor(g.node(op, names), perm, shape)


def _binary(g, eqn, inputs):
    x, y = inputs
    rank = len(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == "max" and any(isinstance(v, np.ndarray) and v.size == 1 and not v.any() for v in inputs):
        t = _first_tensor(inputs)
        return [Tensor(g.node("Relu", [t.name]), t.perm, t.shape)]
    if eqn.primitive.name == "add":
        fused = _add(g, x, y, eqn) if isinstance(x, Tensor) else _add(g, y, x, eqn)
        if fused is not None:
            return [fused]
    if eqn.primitive.name == "div" and isinstance(x, Tensor) and x.fusable and x.fusable[0] == "sum":
        _, mean, count = x.fusable
        if isinstance(y, np.ndarray) and y.size == 1 and y.item() == count:
            return [mean]  # a window or global sum divided by its size: the AveragePool's own output
    return [_elementwise(g, _BINARY[eqn.primitive.name], inputs, rank)]


def _add(g: Graph, x: Tensor, bias, eqn) -> Tensor | None:
    """A per-channel constant added to a bias-free Conv or MatMul output: the same node with that bias."""
    if not (isinstance(bias, np.ndarray) and x.fusable and x.fusable[0] in ("conv", "matmul")):
        return None
    kind, inputs, attributes, channel_axis = x.fusable
    if bias.ndim != len(x.shape) or any(d != 1 for i, d in enumerate(bias.shape) if i != channel_axis):
        return None
    channels = eqn.outvars[0].aval.shape[channel_axis]
    vector = np.broadcast_to(bias.reshape(-1), (channels,)).astype(np.float32)
    if kind == "conv":
        return Tensor(g.node("Conv", [*inputs, g.constant(vector)], **attributes), x.perm, x.shape)
    return Tensor(g.node("Gemm", [*inputs, g.constant(vector)]), x.perm, x.shape)


def _unary(g, eqn, inputs):
    (x,) = inputs
    name = eqn.primitive.name
    if name == "rsqrt":
        out = g.node("Reciprocal", [g.node("Sqrt", [x.name])])
    elif name == "square":
        out = g.node("Mul", [x.name, x.name])
    elif name == "integer_pow":
        out = g.node("Pow", [x.name, g.constant(np.asarray(eqn.params["y"], np.float32))])
    elif name == "convert_element_type":
        dtype = np.dtype(eqn.params["new_dtype"])
        if dtype == np.dtype(eqn.invars[0].aval.dtype):
            return [x]
        if dtype not in ONNX_TYPES:
            raise UnsupportedOperationError(f"a conversion to {dtype}; export the model in float32")
        out = g.node("Cast", [x.name], to=ONNX_TYPES[dtype])
    else:
        out = g.node(_UNARY[name], [x.name])
    return [Tensor(out, x.perm, x.shape)]


def _select(g, eqn, inputs):
    if len(inputs) != 3:
        raise UnsupportedOperationError("select_n with more than two cases")
    predicate, if_false, if_true = inputs
    return [_elementwise(g, "Where", [predicate, if_true, if_false], len(eqn.outvars[0].aval.shape))]


# ---------------------------------------------------------------------------------------------------------------
# Convolution, matrix product, pooling, reductions


def _conv(g, eqn, inputs):
    x, kernel = inputs
    p = eqn.params
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise UnsupportedOperationError("a transposed (input-dilated) or batch-grouped convolution")
    dn = p["dimension_numbers"]
    x = g.full(x, eqn.invars[0].aval, tuple(dn.lhs_spec))
    attributes = {"strides": list(p["window_strides"]), "dilations": list(p["rhs_dilation"]),
                  "pads": [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]],
                  "group": p["feature_group_count"]}
    inputs = [x.name, g.arranged(kernel, tuple(dn.rhs_spec))]
    out_spec, shape = tuple(dn.out_spec), tuple(eqn.outvars[0].aval.shape)
    return [Tensor(g.node("Conv", inputs, **attributes), out_spec, shape, ("conv", inputs, attributes, out_spec[1]))]


def _dot(g, eqn, inputs):
    x, w = inputs
    ((lhs_contract, rhs_contract), (lhs_batch, _)) = eqn.params["dimension_numbers"]
    rank = len(eqn.invars[0].aval.shape)
    if lhs_batch or len(eqn.invars[1].aval.shape) != 2 or tuple(lhs_contract) != (rank - 1,):
        raise UnsupportedOperationError("a matrix product other than (…, K) × (K, N)")
    x = g.full(x, eqn.invars[0].aval, identity(rank))
    w_name = g.arranged(w, (0, 1) if tuple(rhs_contract) == (0,) else (1, 0))
    shape = tuple(eqn.outvars[0].aval.shape)
    fusable = ("matmul", [x.name, w_name], {}, 1) if rank == 2 else None
    return [Tensor(g.node("MatMul", [x.name, w_name]), identity(rank), shape, fusable)]


def _window(g, eqn, inputs):
    """reduce_window_max → MaxPool; reduce_window_sum → AveragePool × window size (divided again by a mean)."""
    p = eqn.params
    (x,) = inputs
    aval = eqn.invars[0].aval
    pooled = [a for a in range(len(aval.shape))
              if p["window_dimensions"][a] != 1 or p["window_strides"][a] != 1 or p["padding"][a] != (0, 0)]
    kept = [a for a in range(len(aval.shape)) if a not in pooled]
    if len(kept) != 2 or any(d != 1 for d in p["base_dilation"]):
        raise UnsupportedOperationError("a pooling window over other than the trailing spatial axes")
    perm = tuple(kept + pooled)
    x = g.full(x, aval, perm)
    attributes = {"kernel_shape": [p["window_dimensions"][a] for a in pooled],
                  "strides": [p["window_strides"][a] for a in pooled],
                  "pads": [p["padding"][a][0] for a in pooled] + [p["padding"][a][1] for a in pooled]}
    shape = tuple(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == "reduce_window_max":
        return [Tensor(g.node("MaxPool", [x.name], dilations=[p["window_dilation"][a] for a in pooled],
                              **attributes), perm, shape)]
    if any(p["window_dilation"][a] != 1 for a in pooled):
        raise UnsupportedOperationError("a dilated average pool")
    count = math.prod(attributes["kernel_shape"])
    mean = Tensor(g.node("AveragePool", [x.name], count_include_pad=1, **attributes), perm, shape)
    total = g.node("Mul", [mean.name, g.constant(np.asarray(count, np.float32))])
    return [Tensor(total, perm, shape, ("sum", mean, count))]


def _reduce(g, eqn, inputs):
    (x,) = inputs
    aval, axes = eqn.invars[0].aval, tuple(eqn.params["axes"])
    x = g.full(x, aval)
    onnx_axes = sorted(x.perm.index(a) for a in axes)
    remaining = [a for a in x.perm if a not in axes]
    perm = tuple(sorted(remaining).index(a) for a in remaining)
    shape = tuple(eqn.outvars[0].aval.shape)
    name = eqn.primitive.name
    if name == "reduce_sum" and len(x.perm) == 4 and onnx_axes == [2, 3] and perm == (0, 1):
        mean = Tensor(g.node("Flatten", [g.node("GlobalAveragePool", [x.name])], axis=1), perm, shape)
        count = math.prod(aval.shape[a] for a in axes)
        return [Tensor(g.node("Mul", [mean.name, g.constant(np.asarray(count, np.float32))]), perm, shape,
                       ("sum", mean, count))]
    if name == "reduce_sum":
        return [Tensor(g.node("ReduceSum", [x.name, g.int64s(onnx_axes)], keepdims=0), perm, shape)]
    op = {"reduce_max": "ReduceMax", "reduce_min": "ReduceMin"}[name]
    return [Tensor(g.node(op, [x.name], axes=onnx_axes, keepdims=0), perm, shape)]


# ---------------------------------------------------------------------------------------------------------------
# Shapes and data movement


def _broadcast_in_dim(g, eqn, inputs):
    (x,) = inputs
    target, dims = eqn.params["shape"], tuple(eqn.params["broadcast_dimensions"])
    if len(dims) == len(target):
        if dims != identity(len(target)):
            raise UnsupportedOperationError("a broadcast that reorders axes")
        return [x]
    if list(dims) != sorted(dims):
        raise UnsupportedOperationError("a broadcast that reorders axes")
    x = Tensor(g.arranged(x, identity(len(dims))), identity(len(dims)), x.shape)
    new_axes = [a for a in range(len(target)) if a not in dims]
    shape = [1] * len(target)
    for i, axis in enumerate(dims):
        shape[axis] = x.shape[i]
    return [Tensor(g.node("Unsqueeze", [x.name, g.int64s(new_axes)]), identity(len(target)), tuple(shape))]


def _reshape(g, eqn, inputs):
    (x,) = inputs
    if eqn.params.get("dimensions") is not None:
        raise UnsupportedOperationError("a reshape with a dimension order")
    in_shape, out_shape = eqn.invars[0].aval.shape, tuple(eqn.outvars[0].aval.shape)
    x = g.full(x, eqn.invars[0].aval, identity(len(in_shape)))
    sizes = [d if is_static(d) else 0 if i < len(in_shape) and in_shape[i] is d else -1
             for i, d in enumerate(out_shape)]
    if sizes.count(-1) > 1:
        raise UnsupportedOperationError(f"a reshape to {out_shape} with several unknown sizes")
    return [Tensor(g.node("Reshape", [x.name, g.int64s(sizes)]), identity(len(out_shape)), out_shape)]


def _squeeze(g, eqn, inputs):
    (x,) = inputs
    dims = tuple(eqn.params["dimensions"])
    perm = tuple(a - sum(d < a for d in dims) for a in x.perm if a not in dims)
    shape = tuple(d for a, d in enumerate(x.shape) if a not in dims)
    return [Tensor(g.node("Squeeze", [x.name, g.int64s(sorted(x.perm.index(d) for d in dims))]), perm, shape)]


def _transpose(g, eqn, inputs):
    (x,) = inputs
    order = tuple(eqn.params["permutation"])
    return [Tensor(x.name, tuple(order.index(a) for a in x.perm), tuple(x.shape[a] for a in order))]


def _concatenate(g, eqn, inputs):
    perm = _first_tensor(inputs).perm
    names = [g.full(v, var.aval, perm).name for v, var in zip(inputs, eqn.invars)]
    axis = perm.index(eqn.params["dimension"])
    return [Tensor(g.node("Concat", names, axis=axis), perm, tuple(eqn.outvars[0].aval.shape))]


def _pad(g, eqn, inputs):
    x, value = inputs
    config = eqn.params["padding_config"]
    if any(interior or lo < 0 or hi < 0 for lo, hi, interior in config) or not isinstance(value, np.ndarray):
        raise UnsupportedOperationError("interior or negative padding")
    x = g.full(x, eqn.invars[0].aval)
    pads = [int(config[a][0]) for a in x.perm] + [int(config[a][1]) for a in x.perm]
    out = g.node("Pad", [x.name, g.int64s(pads), g.constant(value.astype(eqn.invars[0].aval.dtype))])
    return [Tensor(out, x.perm, tuple(eqn.outvars[0].aval.shape))]


def _slice(g, eqn, inputs):
    (x,) = inputs
    aval = eqn.invars[0].aval
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    x = g.full(x, aval)
    axes = [a for a in range(len(starts)) if (starts[a], limits[a], strides[a]) != (0, aval.shape[a], 1)]
    if not axes:
        return [x]
    if any(not is_static(aval.shape[a]) for a in axes):
        raise UnsupportedOperationError("a slice of the batch axis")
    out = g.node("Slice", [x.name, g.int64s([starts[a] for a in axes]), g.int64s([limits[a] for a in axes]),
                           g.int64s([x.perm.index(a) for a in axes]), g.int64s([strides[a] for a in axes])])
    return [Tensor(out, x.perm, tuple(eqn.outvars[0].aval.shape))]


def _gather(g, eqn, inputs):
    """A gather with constant indices that takes whole rows along some axes, one index vector per axis (jnp.take,
    nearest-neighbour resizing, strided slicing of a batch of unknown size): one Slice or Gather per axis."""
    x, indices = inputs
    dn = eqn.params["dimension_numbers"]
    aval = eqn.invars[0].aval
    axes = tuple(dn.start_index_map)
    sizes = eqn.params["slice_sizes"]
    out_rank = len(eqn.outvars[0].aval.shape)
    if (isinstance(indices, np.ndarray) and indices.ndim == 1 and set(dn.collapsed_slice_dims) <= set(axes)
            and tuple(dn.offset_dims) == tuple(range(out_rank)) and not dn.operand_batching_dims):
        return [_gathered_block(g, x, aval, axes, indices, sizes, tuple(dn.collapsed_slice_dims), eqn)]
    batch_positions = [i for i in range(out_rank) if i not in dn.offset_dims]
    whole_rows = all(sizes[a] == (1 if a in axes else aval.shape[a]) for a in range(aval.ndim))
    if (not isinstance(indices, np.ndarray) or dn.operand_batching_dims or sorted(dn.collapsed_slice_dims) != sorted(axes)
            or not whole_rows or batch_positions != sorted(axes) or indices.ndim != len(axes) + 1):
        raise UnsupportedOperationError("a gather other than taking whole rows at constant indices")
    x = g.full(x, aval)
    name = x.name
    for component, axis in enumerate(axes):
        position = sorted(axes).index(axis)
        values = np.moveaxis(indices[..., component], position, 0)
        line = values.reshape(values.shape[0], -1)[:, 0]
        if not (values == line.reshape((-1,) + (1,) * (values.ndim - 1))).all():
            raise UnsupportedOperationError("a gather whose indices are not one vector per axis")
        if line.min() < 0 or line.max() >= aval.shape[axis]:
            raise UnsupportedOperationError("a gather with indices out of range")
        step = np.diff(line)
        onnx_axis = x.perm.index(axis)
        if len(line) > 1 and (step == step[0]).all() and step[0] > 0:
            name = g.node("Slice", [name, g.int64s([line[0]]), g.int64s([line[-1] + 1]), g.int64s([onnx_axis]),
                                    g.int64s([step[0]])])
        else:
            name = g.node("Gather", [name, g.int64s(line)], axis=onnx_axis)
    return [Tensor(name, x.perm, tuple(eqn.outvars[0].aval.shape))]


def _gathered_block(g: Graph, x, aval, axes, starts: np.ndarray, sizes, collapsed, eqn) -> Tensor:
    """A gather of one block at a constant position (``x[..., i:i + n]`` or ``x[..., i]`` of a batch of unknown
    size): a Slice, then a Squeeze of the axes the gather drops."""
    if any(start < 0 or start + sizes[a] > aval.shape[a] for start, a in zip(starts, axes)):
        raise UnsupportedOperationError("a gather with indices out of range")
    x = g.full(x, aval)
    name = g.node("Slice", [x.name, g.int64s(starts), g.int64s([start + sizes[a] for start, a in zip(starts, axes)]),
                            g.int64s([x.perm.index(a) for a in axes])])
    if not collapsed:
        return Tensor(name, x.perm, tuple(eqn.outvars[0].aval.shape))
    perm = tuple(a - sum(d < a for d in collapsed) for a in x.perm if a not in collapsed)
    name = g.node("Squeeze", [name, g.int64s(sorted(x.perm.index(d) for d in collapsed))])
    return Tensor(name, perm, tuple(eqn.outvars[0].aval.shape))


RULES = {
    **{name: _binary for name in _BINARY}, **{name: _unary for name in _UNARY},
    "rsqrt": _unary, "square": _unary, "integer_pow": _unary, "convert_element_type": _unary,
    "select_n": _select, "conv_general_dilated": _conv, "dot_general": _dot,
    "reduce_window_max": _window, "reduce_window_sum": _window,
    "reduce_sum": _reduce, "reduce_max": _reduce, "reduce_min": _reduce,
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "squeeze": _squeeze, "transpose": _transpose,
    "concatenate": _concatenate, "pad": _pad, "slice": _slice, "gather": _gather,
}


