"""What a GPU or TPU runs, read on this CPU-only machine: programs exported for ``cuda`` and ``tpu`` with
``jax.export`` hold the plain ops, with none of the XLA:CPU kernels (fusionjax.kernels).

For ResNet-20, ResNet-50 and DenseNet-121, a training step and an evaluation forward, each platform: no
optimization barrier, every convolution layer (the stem included) a ``stablehlo.convolution``, and the same
operations as the program traced with ``kernels.use('reference')``, where no CPU kernel exists at all. What may
differ is what ``lax.platform_dependent`` leaves for the compiler to fold: its one-branch ``case`` wrappers, and,
in a training step, the zero placeholders JAX's cond differentiation returns for the CPU branch's residuals
(scalar broadcasts used by nothing but a ``case``'s return). Lowered for ``cpu`` the same function keeps its
kernels, so each check can fail.
"""

import collections
import functools
import re

import jax
import jax.numpy as jnp
import optax
import pytest
from jax import export
from jax._src.interpreters import mlir  # jaxlib's MLIR bindings: uses of a value, which printed text cannot give
from jax._src.lib.mlir import ir

import fusionjax
from fusionjax import kernels

# name, input size (the smallest each takes), convolution layers (stem, blocks, projections, transitions)
MODELS = [("resnet20", 8, 19), pytest.param("resnet50", 32, 53, marks=pytest.mark.slow, id="resnet50"),
          pytest.param("densenet121", 32, 120, marks=pytest.mark.slow, id="densenet121")]
PLATFORM_WRAPPERS = {"case", "return", "constant"}  # lax.platform_dependent's one-branch case and its index


@functools.cache
def _programs(name: str, size: int, batch: int = 1) -> dict:
    """Jitted functions and their abstract arguments: traced once per kernels mode, lowered once per platform."""
    model = fusionjax.create_model(name)
    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    tx = optax.sgd(0.1, momentum=0.9)
    opt_state = jax.eval_shape(tx.init, variables["params"])

    def train_step(variables, opt_state, x, labels):
        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                          train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

        (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        steps, opt_state = tx.update(grads, opt_state, variables["params"])
        return {"params": optax.apply_updates(variables["params"], steps), **updates}, opt_state

    return {"train": (jax.jit(train_step), (variables, opt_state, x, labels)),
            "eval": (jax.jit(lambda variables, x: model.apply(variables, x)), (variables, x))}


@functools.cache
def _stablehlo(name: str, size: int, program: str, platform: str, mode: str = "auto") -> str:
    function, args = _programs(name, size)[program]
    with kernels.use(mode):
        return export.export(function, platforms=(platform,))(*args).mlir_module()


def _operations(text: str) -> collections.Counter:
    return collections.Counter(re.findall(r"stablehlo\.(\w+)", text))


def _residual_placeholders(text: str) -> int:
    """Broadcasts of a scalar whose every use is a ``stablehlo.return``: the zeros a differentiated cond returns for
    the residuals of a branch not taken (dead once the compiler inlines the one-branch case)."""

    def walk(operation):
        for region in operation.regions:
            for block in region.blocks:
                for op in block.operations:
                    yield op.operation
                    yield from walk(op.operation)

    with mlir.make_ir_context():
        module = ir.Module.parse(text)
        return sum(1 for op in walk(module.operation)
                   if op.name == "stablehlo.broadcast_in_dim" and not ir.ShapedType(op.operands[0].type).shape
                   and (users := [use.owner.name for use in op.results[0].uses])
                   and all(user == "stablehlo.return" for user in users))


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("program", ["train", "eval"])
@pytest.mark.parametrize("name, size, conv_layers", MODELS, ids=["resnet20", "resnet50", "densenet121"])
def test_gpu_and_tpu_programs_are_the_plain_ops(name, size, conv_layers, program, platform):
    text = _stablehlo(name, size, program, platform)
    operations = _operations(text)
    assert operations["optimization_barrier"] == 0
    # The forward has one convolution per layer; a training step adds each layer's weight gradient and every input
    # gradient but the stem's (the image needs none).
    assert operations["convolution"] == (3 * conv_layers - 1 if program == "train" else conv_layers)
    plain_text = _stablehlo(name, size, program, platform, mode="reference")
    assert _residual_placeholders(plain_text) == 0
    operations["broadcast_in_dim"] -= _residual_placeholders(text)
    plain = _operations(plain_text)
    differ = {op: (operations[op], plain[op]) for op in set(operations) | set(plain)
              if op not in PLATFORM_WRAPPERS and operations[op] != plain[op]}
    assert not differ


@pytest.mark.parametrize("name, size, conv_layers", MODELS, ids=["resnet20", "resnet50", "densenet121"])
def test_the_cpu_program_keeps_its_kernels(name, size, conv_layers):
    """The counterfactual: for ``cpu`` the same step stores its residual streams (barriers) and runs its 1×1
    convolutions as matrix products, so the GPU/TPU checks above see something real."""
    operations = _operations(_stablehlo(name, size, "train", "cpu"))
    assert operations["optimization_barrier"] > 0
    assert operations["convolution"] < 3 * conv_layers - 1
