"""ONNX for onnxruntime and TensorRT, written from the model's JAX program by this package's own writer.

Why not jax2onnx: 0.17.1 (the last release that allows orbax-checkpoint ≥ 0.12) writes ResNet-20 and DenseNet-BC
to 5e-7 in onnxruntime, but its max pooling (``lax.reduce_window``) is a pool onnxruntime rejects, it drops
explicit max-pool padding, refuses ``nn.avg_pool`` with a positional window and records NHWC shapes on NCHW values
(docs/export.md). The zoo needs about thirty primitives; ``fusionjax.export.onnx_ops`` writes each exactly.

``to_onnx(model, variables, input_shape)`` returns an ``onnx.ModelProto`` (opset 17, float32, checked by
``onnx.checker``); ``runner(proto)`` runs it in onnxruntime. ``fusionjax-export`` also verifies and writes it.
"""

import os
from typing import Sequence

import jax
import numpy as np
import onnx
from onnx import helper

from fusionjax.export import artifact, onnx_graph, onnx_ops, program
from fusionjax.export.errors import ExportError, UnsupportedOperationError

OPSET = 17  # TensorRT 8.6 and every onnxruntime since 1.13 read it
IR_VERSION = 8
INPUT_NAME = "images"


def to_onnx(model, variables, input_shape: Sequence[int], *, batch: int | None = None, nchw: bool = False,
            **apply_kwargs) -> onnx.ModelProto:
    """``model.apply(variables, images, **apply_kwargs)`` as an ONNX model with one float32 input ``images``.

    ``input_shape`` is one image's (height, width, channels); ``batch=None`` makes the batch dimension dynamic;
    ``nchw=True`` takes images as (N, C, H, W), what most ONNX consumers feed. Outputs are named ``logits`` (one
    output) or ``output_0``…, flattened in ``jax.tree`` order. Float32 models only: onnxruntime's CPU kernels have
    no bfloat16 convolutions.
    """
    spec = artifact.input_spec(input_shape, batch, nchw=nchw)
    forward = artifact.image_function(model, variables, **apply_kwargs)
    artifact.check_takes(forward, artifact.input_spec(input_shape, 1), type(model).__name__)
    closed = program.trace(forward, jax.ShapeDtypeStruct((spec.shape[0], *input_shape), np.float32))
    graph = onnx_graph.Graph()
    layout = (0, 3, 1, 2) if nchw else (0, 1, 2, 3)

    def apply(eqn, inputs):
        if all(isinstance(value, np.ndarray) for value in inputs):
            return onnx_graph.fold(eqn, inputs)
        rule = onnx_ops.RULES.get(eqn.primitive.name)
        if rule is None:
            shapes = ", ".join(str(var.aval) for var in eqn.invars)
            raise UnsupportedOperationError(
                f"{type(model).__name__} uses `{eqn.primitive.name}` ({shapes}), which the ONNX writer has no rule "
                "for. Export StableHLO instead (--format stablehlo), or report the layer."
            )
        return rule(graph, eqn, inputs)

    images = onnx_graph.Tensor(INPUT_NAME, layout, tuple(closed.in_avals[0].shape))
    outputs = program.run(closed, [images], apply)
    names = ["logits"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    graph_outputs = []
    for name, value, aval in zip(names, outputs, closed.out_avals, strict=True):
        if isinstance(value, np.ndarray):
            raise ExportError(f"Output {name} does not depend on the images; an ONNX graph cannot return it.")
        full = graph.full(value, aval, tuple(range(len(aval.shape))))
        graph.nodes.append(helper.make_node("Identity", [full.name], [name], name=name))
        graph_outputs.append(helper.make_tensor_value_info(name, onnx_graph.ONNX_TYPES[np.dtype(aval.dtype)],
                                                           _dims(aval.shape)))
    graph_input = helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, _dims(spec.shape))
    nodes, initializers = _live(graph, names)
    proto = helper.make_model(
        helper.make_graph(nodes, type(model).__name__, [graph_input], graph_outputs, initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fusionjax", ir_version=IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _dims(shape) -> list:
    return [d if program.is_static(d) else artifact.BATCH_AXIS_NAME for d in shape]


def _live(graph: onnx_graph.Graph, outputs: list[str]):
    """The nodes the outputs depend on, in order, and the initializers they read: folding and fusing leave some
    nodes unread (a Conv whose bias was merged into a new one)."""
    needed, nodes = set(outputs), []
    for node in reversed(graph.nodes):
        if any(name in needed for name in node.output):
            nodes.append(node)
            needed.update(node.input)
    return nodes[::-1], [t for t in graph.initializers if t.name in needed]


def session(model: onnx.ModelProto | str | os.PathLike, **options):
    """An onnxruntime CPU session for ``model`` (a ModelProto or a file)."""
    import onnxruntime

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    settings = onnxruntime.SessionOptions()
    for key, value in options.items():
        setattr(settings, key, value)
    return onnxruntime.InferenceSession(source, settings, providers=["CPUExecutionProvider"])


def runner(model: onnx.ModelProto | str | os.PathLike):
    """``images -> outputs`` (a single array, or a list for several outputs) through onnxruntime."""
    run_session = session(model)
    input_name = run_session.get_inputs()[0].name

    def run(images):
        outputs = run_session.run(None, {input_name: np.asarray(images, np.float32)})
        return outputs[0] if len(outputs) == 1 else outputs

    return run
