"""What a training step keeps for its backward pass: DenseNet-121 with and without ``memory_efficient``, ResNet-50.

    python -m benchmarks.memory                 # traced residuals per image, and compiled temp memory; appends
    python -m benchmarks.memory --no-compile    # traced residuals only (seconds, nothing runs)
    python -m benchmarks.memory --time-rounds 5 # also times the compiled steps (the issue's cost goal: ≤ 1.2×)

Two measures, because they disagree on XLA:CPU:
- traced residuals: the arrays ``jax.vjp`` saves from the forward pass for the backward pass (what
  ``jax.ad_checkpoint.print_saved_residuals`` lists), excluding the step's own inputs (parameters and images,
  kept anyway), summed in bytes, per image (the difference between batch 2 and batch 1). This is what
  ``nn.remat`` changes by construction.
- compiled temp memory: ``jit(grad).lower(...).compile().memory_analysis().temp_size_in_bytes``, the scratch the
  compiled program allocates. XLA may undo rematerialization (common-subexpression elimination merges the
  recomputed values back), in which case the traced saving does not reach the program.
With ``--time-rounds``, the compiled steps also run, alternating, and their median times give what
``memory_efficient`` costs (the recomputation, where the backend keeps it).
"""

import argparse
import datetime
import functools
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import fusionjax
from benchmarks.layers import alternating_times

RESULTS = Path(__file__).with_name("RESULTS.md")
CASES = {  # label -> (model name, overrides)
    "densenet121": ("densenet121", {}),
    "densenet121 memory_efficient": ("densenet121", {"memory_efficient": True}),
    "resnet50": ("resnet50", {}),
}


def loss_fn(model):
    """Training-mode loss of (params, batch_stats, images): what the backward pass differentiates."""

    def loss(params, batch_stats, images):
        logits, _ = model.apply(
            {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
        )
        return jax.nn.logsumexp(logits, axis=-1).mean()

    return loss


def residual_bytes(model, batch: int, size: int) -> int:
    """Bytes of the distinct arrays the VJP saves for the backward pass, the step's inputs excluded."""
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    closed, _ = jax.make_jaxpr(lambda *args: jax.vjp(loss_fn(model), *args), return_shape=True)(
        variables["params"], variables["batch_stats"], images
    )
    jaxpr = closed.jaxpr
    num_outputs = 1  # the loss; every later output of the traced function is a residual of vjp's closure
    inputs = set(jaxpr.invars)
    saved = {v for v in jaxpr.outvars[num_outputs:] if not hasattr(v, "val") and v not in inputs}
    return sum(v.aval.size * v.aval.dtype.itemsize for v in saved)


def compiled_step(model, batch: int, size: int):
    """(the compiled gradient, its temp bytes, optimization barriers in the lowered program, in the compiled one).

    ``nn.remat`` puts an optimization barrier around each recomputation (and ``layers.materialized`` one on a scalar
    one per stored value: 60 in DenseNet-121); the count that survives compilation shows whether the backend kept
    the recomputation apart from the forward pass.
    """
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    grad = jax.jit(jax.grad(loss_fn(model)))
    lowered = grad.lower(variables["params"], variables["batch_stats"], images)
    compiled = lowered.compile()
    return (compiled, compiled.memory_analysis().temp_size_in_bytes, lowered.as_text().count("optimization_barrier"),
            compiled.as_text().count("opt-barrier("))


def step_times(steps: dict, models: dict, batch: int, size: int, rounds: int) -> dict[str, list[float]]:
    """ms per call of each compiled step on one random batch, alternating (``benchmarks.layers``' loop)."""
    images = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
    calls = {}
    for label, model in models.items():
        variables = jax.jit(model.init)(jax.random.key(1), images)
        inputs = (variables["params"], variables["batch_stats"], images)
        calls[label] = functools.partial(lambda step, args: jax.block_until_ready(step(*args)), steps[label], inputs)
    return alternating_times(calls, rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="square input size (default 224)")
    parser.add_argument("--compile-batch", type=int, default=4,
                        help="batch of the compiled (and timed) step (default 4)")
    parser.add_argument("--no-compile", action="store_true", help="traced residuals only")
    parser.add_argument("--time-rounds", type=int, default=0,
                        help="also time each compiled step this many times, alternating (default 0: no timing)")
    parser.add_argument("--no-append", action="store_true", help=f"print only; do not append to {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.time_rounds and args.no_compile:
        parser.error("--time-rounds times the compiled steps: drop --no-compile")

    started = datetime.datetime.now(datetime.timezone.utc)
    per_image, temp, steps, models = {}, {}, {}, {}
    for label, (name, overrides) in CASES.items():
        model = models[label] = fusionjax.create_model(name, **overrides)
        start = time.perf_counter()
        per_image[label] = residual_bytes(model, 2, args.size) - residual_bytes(model, 1, args.size)
        traced_s = time.perf_counter() - start
        if not args.no_compile:
            start = time.perf_counter()
            steps[label], *temp[label] = compiled_step(model, args.compile_batch, args.size)
            print(f"{label}: compiled in {time.perf_counter() - start:.0f} s", flush=True)
        print(f"{label}: {per_image[label] / 2**20:.1f} MiB of residuals per image (traced in {traced_s:.0f} s)",
              flush=True)

    dense, lean, resnet = (per_image[k] for k in CASES)
    compile_header = (f" | compiled temp, batch {args.compile_batch} (MiB) | optimization barriers, lowered → "
                      "compiled") if temp else ""
    rows = [f"| model | traced residuals per image (MiB) | ÷ densenet121{compile_header} |",
            "|---|---|---|" + ("---|---|" if temp else "")]
    for label in CASES:
        compiled = f" | {temp[label][0] / 2**20:.1f} | {temp[label][1]} → {temp[label][2]}" if temp else ""
        rows.append(f"| {label} | {per_image[label] / 2**20:.1f} | {per_image[label] / dense:.2f}{compiled} |")
    verdicts = [
        f"- memory_efficient ÷ plain (traced): {lean / dense:.2f} (goal ≤ 0.50: {'met' if lean <= 0.5 * dense else 'NOT met'})",
        f"- densenet121 ÷ resnet50 (traced, goal ≤ 1): memory_efficient {lean / resnet:.2f} "
        f"({'met' if lean <= resnet else 'NOT met'}), plain {dense / resnet:.2f} "
        f"({'met' if dense <= resnet else 'NOT met'})",
    ]
    if temp:
        ratio = temp["densenet121 memory_efficient"][0] / temp["densenet121"][0]
        verdicts.append(f"- compiled temp memory, memory_efficient ÷ plain: {ratio:.2f}"
                        + (" — XLA:CPU compiled the rematerialization away" if ratio > 0.9 else ""))
    if args.time_rounds:
        times = step_times(steps, models, args.compile_batch, args.size, args.time_rounds)
        median_ms = {label: statistics.median(t) for label, t in times.items()}
        cost = median_ms["densenet121 memory_efficient"] / median_ms["densenet121"]
        verdicts += [
            f"- compiled step, batch {args.compile_batch}, median of {args.time_rounds} (min) ms: "
            + "; ".join(f"{label} {median_ms[label]:.1f} ({min(times[label]):.1f})" for label in times),
            f"- step time, memory_efficient ÷ plain: {cost:.2f} (goal ≤ 1.2: {'met' if cost <= 1.2 else 'NOT met'})",
        ]
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "benchmarks.memory", *(argv or sys.argv[1:])])
    report = "\n".join([
        f"\n## {started:%Y-%m-%d %H:%M} UTC — DenseNet memory (benchmarks/memory.py)\n",
        f"- command: `{command}`; input {args.size}×{args.size}, float32, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}",
        "", *rows, "", *verdicts, "",
    ])
    print(report)
    if not args.no_append:
        with RESULTS.open("a") as f:
            f.write(report)


if __name__ == "__main__":
    main()
