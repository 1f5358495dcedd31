"""Layer-level levers of benchmarks/RESULTS.md, each against what it replaced and against torch (attempts 14, 15,
18, 20 and 30).

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python -m benchmarks.layers [--rounds 10]

- The weight gradient of a 1×1 convolution (16×56×56×64 → 256, ResNet-50's first bottleneck) from autodiff of the
  product over 2-D arrays (``fusionjax.layers.Conv2d``) and over the 4-D arrays, after the same element-wise
  producers a network has; XLA:CPU copies one operand of the 4-D form into (channels, N·H·W) first.
- ``fusionjax.layers.max_pool`` forward and backward (16×112×112×64, ResNet-50's stem) against Flax's
  ``nn.max_pool`` and torch's ``max_pool2d`` on channels_last.
- ResNet-20's stem (128×32×32×3 → 16), forward and forward + weight gradient: XLA's convolution, ``Conv2d``'s
  element-wise multiply-adds (with the convolution's gradient) and torch channels_last.
- Each 3×3 convolution shape of ResNet-20 at batch 128, forward alone: XLA's convolution against torch
  channels_last (oneDNN), which is where ResNet-20's forward loses to torch.

Medians and minimums in ms, jit calls and torch calls alternating.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once when torch loads its OpenMP runtime

import argparse  # noqa: E402
import functools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from fusionjax.layers import Conv2d, max_pool  # noqa: E402


def alternating_times(calls: dict, rounds: int) -> dict[str, list[float]]:
    """ms of each call per round after one warm-up call each, the order reversed every other round."""
    for call in calls.values():
        call()
    times = {label: [] for label in calls}
    for round_ in range(rounds):
        for label in (list(calls) if round_ % 2 == 0 else list(calls)[::-1]):
            start = time.perf_counter()
            calls[label]()
            times[label].append((time.perf_counter() - start) * 1e3)
    return times


def time_alternating(calls: dict, rounds: int) -> dict[str, str]:
    times = alternating_times(calls, rounds)
    return {label: f"{statistics.median(t):.1f} ({min(t):.1f})" for label, t in times.items()}


def one_by_one_weight_gradient(rounds: int) -> dict:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (16, 56, 56, 64))
    dy = jax.random.normal(keys[1], (16, 56, 56, 256))
    scale = jax.random.uniform(keys[2], (64,))

    def gradient(product):
        def weight_gradient(x, dy):
            activations = jax.nn.relu(x * scale)  # the BN→ReLU a network puts before the convolution
            return jax.vjp(lambda kernel: product(activations, kernel), jnp.zeros((64, 256)))[1](dy * 0.5)[0]
        return jax.jit(weight_gradient)

    four_d = gradient(lambda a, kernel: lax.dot_general(a, kernel, (((3,), (0,)), ((), ()))))
    two_d = gradient(lambda a, kernel: (a.reshape(-1, 64) @ kernel).reshape(16, 56, 56, 256))
    return time_alternating({"4-D product": lambda: four_d(x, dy).block_until_ready(),
                             "2-D product (fusionjax)": lambda: two_d(x, dy).block_until_ready()}, rounds)


def _nchw(a, torch):
    nchw = torch.from_numpy(jax.device_get(a).transpose(0, 3, 1, 2).copy())
    return nchw.contiguous(memory_format=torch.channels_last)


def _xla_convolution(strides: int = 1):
    return lambda x, kernel: lax.conv_general_dilated(x, kernel, (strides, strides), ((1, 1), (1, 1)),
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def max_pool_forward_backward(rounds: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count())
    x = jax.nn.relu(jax.random.normal(jax.random.key(0), (16, 112, 112, 64)))
    cotangent = jax.random.normal(jax.random.key(1), (16, 56, 56, 64))

    def gradient(pool):
        return jax.jit(lambda x: jax.vjp(pool, x)[1](cotangent)[0])

    flax_pool = gradient(lambda x: nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))))
    fusionjax_pool = gradient(max_pool)
    x_torch, cotangent_torch = _nchw(x, torch).requires_grad_(), _nchw(cotangent, torch)

    def torch_pool():
        x_torch.grad = None
        torch.nn.functional.max_pool2d(x_torch, 3, 2, 1).backward(cotangent_torch)

    return time_alternating({"flax nn.max_pool": lambda: flax_pool(x).block_until_ready(),
                             "fusionjax max_pool": lambda: fusionjax_pool(x).block_until_ready(),
                             "torch channels_last": torch_pool}, rounds)


def stem_convolution(rounds: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count())
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (128, 32, 32, 3))
    dy = jax.random.normal(keys[1], (128, 32, 32, 16))
    stem = Conv2d(16)
    params = stem.init(jax.random.key(2), x)
    kernel = params["params"]["kernel"]

    def with_weight_gradient(form):
        def run(x, kernel):
            y, backward = jax.vjp(lambda kernel: form(x, kernel), kernel)
            return y, backward(dy)[0]  # the output too, as in a network: else XLA drops the forward convolution

        return jax.jit(run)

    forms = {"XLA convolution": _xla_convolution(),
             "Conv2d element-wise": lambda x, kernel: stem.apply({"params": {"kernel": kernel}}, x)}
    calls = {}
    for label, form in forms.items():
        for suffix, program in (("forward", jax.jit(form)), ("forward + weight gradient", with_weight_gradient(form))):
            calls[f"{label} {suffix}"] = functools.partial(lambda f: jax.block_until_ready(f(x, kernel)), program)
    x_torch, dy_torch = _nchw(x, torch), _nchw(dy, torch)
    kernel_torch = torch.from_numpy(jax.device_get(kernel).transpose(3, 2, 0, 1).copy()).requires_grad_()

    def torch_forward():
        with torch.inference_mode():
            torch.nn.functional.conv2d(x_torch, kernel_torch.detach(), padding=1)

    def torch_weight_gradient():
        kernel_torch.grad = None
        torch.nn.functional.conv2d(x_torch, kernel_torch, padding=1).backward(dy_torch)

    calls["torch forward"], calls["torch forward + weight gradient"] = torch_forward, torch_weight_gradient
    return time_alternating(calls, rounds)


# ResNet-20's 3×3 convolutions: (image size, in channels, out channels, stride), batch 128.
RESNET20_CONVOLUTIONS = [(32, 16, 16, 1), (32, 16, 32, 2), (16, 32, 32, 1), (16, 32, 64, 2), (8, 64, 64, 1)]


def convolution_forward(size: int, in_features: int, features: int, strides: int, rounds: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count())
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (128, size, size, in_features))
    kernel = jax.random.normal(keys[1], (3, 3, in_features, features))
    convolution = jax.jit(_xla_convolution(strides))
    x_torch = _nchw(x, torch)
    kernel_torch = torch.from_numpy(jax.device_get(kernel).transpose(3, 2, 0, 1).copy())

    def torch_forward():
        with torch.inference_mode():
            torch.nn.functional.conv2d(x_torch, kernel_torch, stride=strides, padding=1)

    return time_alternating({"XLA convolution": lambda: convolution(x, kernel).block_until_ready(),
                             "torch channels_last": torch_forward}, rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed calls of each variant, alternating")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; ms, median (min)")
    measures = [("1×1 weight gradient, 16×56×56×64 → 256", one_by_one_weight_gradient),
                ("max pool 3×3/2 forward + backward, 16×112×112×64", max_pool_forward_backward),
                ("ResNet-20 stem, 128×32×32×3 → 16", stem_convolution)]
    measures += [(f"3×3/{strides} convolution forward, 128×{size}×{size}×{cin} → {cout}",
                  functools.partial(convolution_forward, size, cin, cout, strides))
                 for size, cin, cout, strides in RESNET20_CONVOLUTIONS]
    for title, measure in measures:
        print(f"{title}: " + "; ".join(f"{label} {ms}" for label, ms in measure(args.rounds).items()), flush=True)


if __name__ == "__main__":
    main()
