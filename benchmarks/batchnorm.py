"""Training-mode BatchNorm, forward and backward: Flax's ``nn.BatchNorm`` and ``fusionjax.layers.BatchNorm``.

    python -m benchmarks.batchnorm [--rounds 7] [--offset 300]

All three compute the same function (batch mean and biased variance, y = x̂·γ + β): Flax's, fusionjax's plain op
(``fusionjax.kernels.use("reference")``: a one-pass variance about a shift near the mean) and its XLA:CPU kernel
(``use("xla_cpu")``: both statistics and both backward sums each in one pass over the data). For each ResNet
activation shape it prints the least time of one jit-compiled value-and-gradient call of each, and each one's
largest error against float64 NumPy, relative to the largest value of each output (y, dx, dγ, dβ). The
activations are 3·N(0, 1) + offset: ``--offset 300`` puts their mean 100 standard deviations from zero, where a
one-pass variance about zero (Flax's fast variance) loses four of float32's seven digits (docs/numerics.md).
"""

import argparse
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import fusionjax
from benchmarks import harness
from fusionjax.layers import BatchNorm

SHAPES = [(128, 32, 32, 16), (128, 16, 16, 32), (128, 8, 8, 64),  # ResNet-20, batch 128
          (16, 56, 56, 64), (16, 56, 56, 256), (16, 28, 28, 512), (16, 7, 7, 2048)]  # ResNet-50, batch 16
EPSILON = 1e-5


def float64_reference(x, scale, bias, weights):
    """y and the gradients of sum(weights · y), in float64."""
    x, scale, bias, weights = (np.asarray(a, np.float64) for a in (x, scale, bias, weights))
    axes, count = (0, 1, 2), x.size // x.shape[-1]
    inv = 1 / np.sqrt(x.var(axes) + EPSILON)
    x_hat = (x - x.mean(axes)) * inv
    dx = (scale * inv / count) * (count * weights - weights.sum(axes) - x_hat * (weights * x_hat).sum(axes))
    return x_hat * scale + bias, dx, (weights * x_hat).sum(axes), weights.sum(axes)


def value_and_grads(module, kwargs, mode: str, example):
    """The compiled (y, dx, dγ, dβ) of ``sum(weights · module(x))``, traced in ``fusionjax.kernels`` ``mode``."""

    def loss(params, x, weights):
        y, _ = module.apply({"params": params, "batch_stats": {"mean": jnp.zeros(x.shape[-1]),
                                                               "var": jnp.ones(x.shape[-1])}},
                            x, mutable=["batch_stats"], **kwargs)
        return (y * weights).sum(), y

    def run(params, x, weights):
        (_, y), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x, weights)
        return y, dx, dparams["scale"], dparams["bias"]

    with fusionjax.kernels.use(mode):
        return jax.jit(run).lower(*example).compile()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--offset", type=float, default=2.0, help="the activations' mean (their std is 3; default 2)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    variants = {"flax": (nn.BatchNorm(momentum=0.9, epsilon=EPSILON), {"use_running_average": False}, "reference"),
                "fusionjax plain": (BatchNorm(), {"train": True}, "reference"),
                "fusionjax XLA:CPU kernel": (BatchNorm(), {"train": True}, "xla_cpu")}
    print(f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, load {harness.load_average()}, "
          f"activations 3·N(0, 1) + {args.offset:g}; ms, min (median); max error vs float64 (y, dx, dγ, dβ)")
    for shape in SHAPES:
        x = (rng.normal(size=shape) * 3 + args.offset).astype(np.float32)
        weights = rng.normal(size=shape).astype(np.float32)
        params = {"scale": rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32),
                  "bias": rng.normal(size=shape[-1]).astype(np.float32)}
        expected = float64_reference(x, params["scale"], params["bias"], weights)
        timed, errors = [], {}
        for name, (module, kwargs, mode) in variants.items():
            program = value_and_grads(module, kwargs, mode, (params, x, weights))
            outputs = jax.block_until_ready(program(params, x, weights))
            errors[name] = " ".join(f"{np.abs(np.asarray(a, np.float64) - e).max() / np.abs(e).max():.0e}"
                                    for a, e in zip(outputs, expected))
            timed.append(harness.Timed("jax", name, "", lambda p=program: jax.block_until_ready(p(params, x, weights))))
        harness.time_rounds(timed, args.rounds)
        print(f"{str(shape):<20}" + "; ".join(f"{v.label} {1e3 * v.min_s:.2f} ({1e3 * v.median_s:.2f}), errors "
                                              f"{errors[v.label]}" for v in timed), flush=True)


if __name__ == "__main__":
    main()
