"""Training-mode BatchNorm, forward and backward: ``fusionjax.layers.BatchNorm`` against Flax's ``nn.BatchNorm``.

    python -m benchmarks.batchnorm [--rounds 7] [--offset 300]

Both compute the same function (batch mean and biased variance, y = x̂·γ + β); fusionjax's reads the data once
for both statistics and once for both backward sums. For each ResNet activation shape it prints the median time of
one jit-compiled value-and-gradient call of each, and each one's largest error against float64 NumPy, relative
to the largest value of each output (y, dx, dγ, dβ). The activations are 3·N(0, 1) + offset: ``--offset 300`` puts
their mean 100 standard deviations from zero, where a one-pass variance about zero (Flax's fast variance) loses
four of float32's seven digits.
"""

import argparse
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


def value_and_grads(module, kwargs):
    def loss(params, x, weights):
        y, _ = module.apply({"params": params, "batch_stats": {"mean": jnp.zeros(x.shape[-1]),
                                                               "var": jnp.ones(x.shape[-1])}},
                            x, mutable=["batch_stats"], **kwargs)
        return (y * weights).sum(), y

    def run(params, x, weights):
        (_, y), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x, weights)
        return y, dx, dparams["scale"], dparams["bias"]

    return jax.jit(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--offset", type=float, default=2.0, help="the activations' mean (their std is 3; default 2)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    variants = {"flax": value_and_grads(nn.BatchNorm(momentum=0.9, epsilon=EPSILON), {"use_running_average": False}),
                "fusionjax": value_and_grads(BatchNorm(), {"train": True})}
    print(f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, load {os.getloadavg()[0]:.1f}, "
          f"activations 3·N(0, 1) + {args.offset:g}")
    print(f"{'shape':<20}{'flax ms':>9}{'fusionjax ms':>14}{'ratio':>7}   max error vs float64 (y, dx, dγ, dβ)")
    for shape in SHAPES:
        x = (rng.normal(size=shape) * 3 + args.offset).astype(np.float32)
        weights = rng.normal(size=shape).astype(np.float32)
        params = {"scale": rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32),
                  "bias": rng.normal(size=shape[-1]).astype(np.float32)}
        expected = float64_reference(x, params["scale"], params["bias"], weights)
        times, errors = {}, {}
        for name, fn in variants.items():
            outputs = jax.block_until_ready(fn(params, x, weights))
            errors[name] = [np.abs(np.asarray(a, np.float64) - e).max() / np.abs(e).max()
                            for a, e in zip(outputs, expected)]
            times[name] = []
        for _ in range(args.rounds):
            for name, fn in variants.items():  # alternating, so both see the same machine
                start = time.perf_counter()
                jax.block_until_ready(fn(params, x, weights))
                times[name].append(time.perf_counter() - start)
        flax_ms, ours_ms = (1e3 * np.median(times[n]) for n in variants)
        error_text = "  ".join(f"{n}: " + " ".join(f"{e:.0e}" for e in errors[n]) for n in variants)
        print(f"{str(shape):<20}{flax_ms:>9.2f}{ours_ms:>14.2f}{ours_ms / flax_ms:>7.2f}   {error_text}")


if __name__ == "__main__":
    main()
