"""Each XLA:CPU kernel against its op's plain definition and against PyTorch, one layer at a time, on this CPU.

    python -m benchmarks.layers [--rounds 11]

``fusionjax.layers`` defines each op once; on CPU it runs the kernel of ``fusionjax.kernels.xla_cpu`` instead.
Each row compiles the op (and its gradient where a training step needs it) twice, inside
``fusionjax.kernels.use("reference")`` and ``use("xla_cpu")``, and times both beside torch channels_last (oneDNN),
in alternating rounds:

- the weight gradient of a 1×1 convolution (16×56×56×64 → 256, ResNet-50's first bottleneck), after the BN→ReLU a
  network puts before it;
- max pooling 3×3/2, forward and backward (16×112×112×64, ResNet-50's stem);
- ResNet-20's stem convolution (128×32×32×3 → 16), forward alone and with its weight gradient;
- each 3×3 convolution shape of ResNet-20 at batch 128, forward: the kernels leave these to XLA, and they are
  where ResNet-20's forward loses to torch (docs/cpu-performance.md).

Times in ms, the least (median) of the rounds.
"""

import argparse
import functools
import os

import jax
import jax.numpy as jnp

import fusionjax
from benchmarks import harness, records
from fusionjax.layers import conv2d, max_pool

PLAIN, KERNEL = "reference", "xla_cpu"


def compiled_in(mode: str, fn, *args):
    """``fn`` compiled with the layer ops traced in ``fusionjax.kernels`` mode ``mode``."""
    with fusionjax.kernels.use(mode):
        return jax.jit(fn).lower(*args).compile()


def timed(label: str, program, *args) -> harness.Timed:
    return harness.Timed("jax", label, "", functools.partial(lambda p: jax.block_until_ready(p(*args)), program))


def torch_nchw(array):
    """A JAX NHWC array as a channels_last torch tensor."""
    import torch

    return torch.from_numpy(jax.device_get(array).transpose(0, 3, 1, 2).copy()).contiguous(
        memory_format=torch.channels_last)


def one_by_one_weight_gradient() -> list[harness.Timed]:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (16, 56, 56, 64))
    dy = jax.random.normal(keys[1], (16, 56, 56, 256))
    scale = jax.random.uniform(keys[2], (64,))

    def weight_gradient(x, dy):
        activations = jax.nn.relu(x * scale)
        convolution = functools.partial(conv2d, strides=1, padding=0, groups=1)
        return jax.vjp(lambda kernel: convolution(activations, kernel), jnp.zeros((1, 1, 64, 256)))[1](dy)[0]

    return [timed(mode, compiled_in(mode, weight_gradient, x, dy), x, dy) for mode in (PLAIN, KERNEL)]


def max_pool_forward_backward() -> list[harness.Timed]:
    import torch

    x = jax.nn.relu(jax.random.normal(jax.random.key(0), (16, 112, 112, 64)))
    cotangent = jax.random.normal(jax.random.key(1), (16, 56, 56, 64))

    def gradient(x):
        return jax.vjp(max_pool, x)[1](cotangent)[0]

    x_torch, cotangent_torch = torch_nchw(x).requires_grad_(), torch_nchw(cotangent)

    def torch_pool():
        x_torch.grad = None
        torch.nn.functional.max_pool2d(x_torch, 3, 2, 1).backward(cotangent_torch)

    return [*(timed(mode, compiled_in(mode, gradient, x), x) for mode in (PLAIN, KERNEL)),
            harness.Timed("torch", "torch channels_last", "", torch_pool)]


def stem_convolution() -> list[harness.Timed]:
    import torch

    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (128, 32, 32, 3))
    dy = jax.random.normal(keys[1], (128, 32, 32, 16))
    kernel = jax.random.normal(keys[2], (3, 3, 3, 16)) * 0.2
    stem = functools.partial(conv2d, strides=1, padding=1, groups=1)

    def with_weight_gradient(x, kernel):
        y, backward = jax.vjp(lambda kernel: stem(x, kernel), kernel)
        return y, backward(dy)[0]  # the output too, as a network needs it

    variants = [timed(f"{mode} {part}", compiled_in(mode, fn, x, kernel), x, kernel)
                for part, fn in (("forward", stem), ("forward + weight gradient", with_weight_gradient))
                for mode in (PLAIN, KERNEL)]
    x_torch, dy_torch = torch_nchw(x), torch_nchw(dy)
    kernel_torch = torch.from_numpy(jax.device_get(kernel).transpose(3, 2, 0, 1).copy()).requires_grad_()

    def torch_forward():
        with torch.inference_mode():
            torch.nn.functional.conv2d(x_torch, kernel_torch.detach(), padding=1)

    def torch_weight_gradient():
        kernel_torch.grad = None
        torch.nn.functional.conv2d(x_torch, kernel_torch, padding=1).backward(dy_torch)

    return variants + [harness.Timed("torch", "torch forward", "", torch_forward),
                       harness.Timed("torch", "torch forward + weight gradient", "", torch_weight_gradient)]


# ResNet-20's 3×3 convolutions: (image size, in channels, out channels, stride), batch 128.
RESNET20_CONVOLUTIONS = [(32, 16, 16, 1), (32, 16, 32, 2), (16, 32, 32, 1), (16, 32, 64, 2), (8, 64, 64, 1)]


def convolution_forward(size: int, in_channels: int, channels: int, strides: int) -> list[harness.Timed]:
    import torch

    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (128, size, size, in_channels))
    kernel = jax.random.normal(keys[1], (3, 3, in_channels, channels))
    convolution = functools.partial(conv2d, strides=strides, padding=1, groups=1)
    x_torch = torch_nchw(x)
    kernel_torch = torch.from_numpy(jax.device_get(kernel).transpose(3, 2, 0, 1).copy())

    def torch_forward():
        with torch.inference_mode():
            torch.nn.functional.conv2d(x_torch, kernel_torch, stride=strides, padding=1)

    return [timed("XLA convolution", compiled_in(KERNEL, convolution, x, kernel), x, kernel),
            harness.Timed("torch", "torch channels_last", "", torch_forward)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="timed calls of each, alternating (default 11)")
    args = parser.parse_args(argv)
    cores = harness.pin_to_cores()
    import torch

    torch.set_num_threads(len(cores))
    started = records.now()
    print("\n".join(records.header("each XLA:CPU kernel against its plain op and torch", "benchmarks.layers", argv,
                                   started)))
    print(f"- load average before: {harness.load_average()}\n\nms, min (median)")
    measures = [("1×1 weight gradient, 16×56×56×64 → 256", one_by_one_weight_gradient),
                ("max pool 3×3/2 forward + backward, 16×112×112×64", max_pool_forward_backward),
                ("ResNet-20 stem, 128×32×32×3 → 16", stem_convolution)]
    measures += [(f"3×3/{strides} convolution forward, 128×{size}×{size}×{cin} → {cout}",
                  functools.partial(convolution_forward, size, cin, cout, strides))
                 for size, cin, cout, strides in RESNET20_CONVOLUTIONS]
    for title, measure in measures:
        variants = measure()
        harness.time_rounds(variants, args.rounds)
        print(f"- {title}: " + "; ".join(f"{v.label} {1e3 * v.min_s:.1f} ({1e3 * v.median_s:.1f})"
                                         for v in variants), flush=True)
    print(f"- load average after: {harness.load_average()}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
