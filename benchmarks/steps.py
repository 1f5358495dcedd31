"""The JAX side of the comparisons: a fusionjax model in the training step a researcher writes, and its forward.

``user_train_step`` is deliberately the plain step of the Flax and optax examples, with nothing a fusionjax
command line adds (no donated buffers, no flags, no sharding): the figure a user of the library sees.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fusionjax
from benchmarks.harness import Timed

LEARNING_RATE, MOMENTUM = 0.1, 0.9
# (batch, image size) of the CPU comparisons: CIFAR's recipe batch for ResNet-20, what fits two cores for the others.
CPU_SHAPES = {"resnet20": (128, 32), "resnet18": (16, 224), "resnet50": (16, 224), "densenet121": (16, 224)}


def synthetic_batch(model_name: str, batch: int, size: int, dtype=jnp.float32, **overrides):
    """The model, standard-normal NHWC images and random labels (NumPy seed 0), and its initialized variables."""
    model = fusionjax.create_model(model_name, dtype=dtype, **overrides)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, size, size, 3), dtype=np.float32), dtype)
    labels = jnp.asarray(rng.integers(0, model.num_classes, batch))
    return model, images, labels, jax.jit(model.init)(jax.random.key(0), images[:1])


def user_train_step(model, tx):
    """The training step a researcher writes around ``model``: cross-entropy, BatchNorm in train mode, ``tx``.

    A new function on each call, so that each gets its own trace (jit caches traces per function, and
    ``fusionjax.kernels.use`` is read when tracing).
    """

    def train_step(state, images, labels):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                          mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    return train_step


def compiled(fn, *args, compiler_options: dict | None = None):
    """(``jax.jit(fn)`` compiled for ``args`` with XLA's ``compiler_options``, seconds to lower and compile, the
    model's FLOPs per call)."""
    start = time.perf_counter()
    program = jax.jit(fn).lower(*args).compile(compiler_options)
    return program, time.perf_counter() - start, model_flops(fn, *args)


def model_flops(fn, *args) -> float | None:
    """XLA's FLOP count of ``fn`` before compiling, lowered for the CPU.

    Counted before compiling: what the model asks for, whatever a backend's rewrites (cuDNN calls, the CPU kernels);
    lowered for the CPU because a GPU backend's lowering reports no count.
    """
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS leaves the CPU out: count where JAX runs, which may report nothing
        cpu = None
    with jax.default_device(cpu):
        return (jax.jit(fn).lower(*shapes).cost_analysis() or {}).get("flops")


def ynn_fusions(program) -> int:
    """How many YNNPACK fusions XLA:CPU put in a compiled program (0: its own Eigen kernels only)."""
    return program.as_text().count("__ynn_fusion")


def forward_call(label: str, model, images, variables) -> Timed:
    """The evaluation forward as a timed call, compiled now."""
    forward, seconds, flops = compiled(lambda v, x: model.apply(v, x, train=False), variables, images)
    return Timed("jax", label, "forward", lambda: forward(variables, images).block_until_ready(), seconds, flops,
                 forward)


def sgd_momentum(variables) -> tuple[optax.GradientTransformation, tuple]:
    """The comparisons' optimizer and ``user_train_step``'s initial state (params, batch_stats, optimizer state)."""
    tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
    return tx, (variables["params"], variables["batch_stats"], tx.init(variables["params"]))


def train_call(label: str, model, images, labels, variables, compiler_options: dict | None = None) -> Timed:
    """``user_train_step`` with SGD-momentum as a timed call, compiled now (with XLA's ``compiler_options``); each
    call continues from the last."""
    tx, state = sgd_momentum(variables)
    step, seconds, flops = compiled(user_train_step(model, tx), state, images, labels,
                                    compiler_options=compiler_options)
    holder = {"state": state}

    def run():
        holder["state"], loss = step(holder["state"], images, labels)
        jax.block_until_ready((holder["state"], loss))

    return Timed("jax", label, "train", run, seconds, flops, step)


def forward_and_train(label: str, model, images, labels, variables) -> tuple[Timed, Timed]:
    return forward_call(label, model, images, variables), train_call(label, model, images, labels, variables)
