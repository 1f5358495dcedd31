"""What a training step keeps for its backward pass: DenseNet-121 with and without ``memory_efficient``, ResNet-50.

    python -m benchmarks.memory                 # traced residuals per image and compiled temp memory; records
    python -m benchmarks.memory --no-compile    # traced residuals only (nothing runs)
    python -m benchmarks.memory --time-rounds 5 # also times the compiled steps

Two measures, because they disagree on XLA:CPU:
- traced residuals: the arrays ``jax.vjp`` saves from the forward pass for the backward pass (what
  ``jax.ad_checkpoint.print_saved_residuals`` lists), excluding the step's own inputs (parameters and images,
  kept anyway), summed in bytes, per image (the difference between batch 2 and batch 1), with the plain layer ops
  (what a GPU or TPU program keeps; the goals are stated on these) and with the XLA:CPU kernels. This is what
  ``nn.remat`` changes by construction.
- compiled temp memory: ``jit(grad).lower(...).compile().memory_analysis().temp_size_in_bytes``, the scratch the
  compiled program allocates. XLA may undo rematerialization (common-subexpression elimination merges the
  recomputed values back), in which case the traced saving does not reach the program: XLA:CPU does
  (docs/cpu-performance.md); on a GPU, ``python -m benchmarks.gpu`` measures the compiled peak.
With ``--time-rounds``, the compiled steps also run, alternating, and give what ``memory_efficient`` costs (the
recomputation, where the backend keeps it).
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp

import fusionjax
from fusionjax.analysis import compiled_memory, saved_residual_bytes
from benchmarks import harness, records, tables

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


def residual_bytes(model, batch: int, size: int, kernels: str = "reference") -> int:
    """Bytes the VJP saves for the backward pass, the step's inputs excluded, with the layer ops traced in
    ``fusionjax.kernels`` mode ``kernels``: "reference" (what a GPU or TPU program keeps) or "xla_cpu"."""
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    return saved_residual_bytes(loss_fn(model), variables["params"], variables["batch_stats"], images,
                                kernels_mode=kernels)


def compiled_step(model, batch: int, size: int):
    """(the compiled gradient, its temp bytes, optimization barriers in the lowered program, in the compiled one).

    ``nn.remat`` puts an optimization barrier around each recomputation (and on CPU the kernel of
    ``layers.reused`` one per stored value); the count that survives compilation shows whether the backend kept
    the recomputation apart from the forward pass.
    """
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    grad = jax.jit(jax.grad(loss_fn(model)))
    lowered = grad.lower(variables["params"], variables["batch_stats"], images)
    compiled = lowered.compile()
    return (compiled, compiled_memory(compiled).temporaries, lowered.as_text().count("optimization_barrier"),
            compiled.as_text().count("opt-barrier("))


def traced_residuals(size: int, kernels: str = "reference") -> dict[str, int]:
    """Bytes of traced residuals per image of each case (batch 2's minus batch 1's), in ``kernels`` mode."""
    per_image = {}
    for label, (name, overrides) in CASES.items():
        model = fusionjax.create_model(name, **overrides)
        per_image[label] = residual_bytes(model, 2, size, kernels) - residual_bytes(model, 1, size, kernels)
    return per_image


def step_times(steps: dict, models: dict, batch: int, size: int, rounds: int) -> list[harness.Timed]:
    """Each compiled step on one random batch, timed in alternating rounds."""
    images = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
    timed = []
    for label, model in models.items():
        variables = jax.jit(model.init)(jax.random.key(1), images)
        inputs = (variables["params"], variables["batch_stats"], images)
        timed.append(harness.Timed("jax", label, "train", functools.partial(
            lambda step, args: jax.block_until_ready(step(*args)), steps[label], inputs)))
    harness.time_rounds(timed, rounds)
    return timed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="square input size (default 224)")
    parser.add_argument("--compile-batch", type=int, default=4,
                        help="batch of the compiled (and timed) step (default 4)")
    parser.add_argument("--no-compile", action="store_true", help="traced residuals only")
    parser.add_argument("--time-rounds", type=int, default=0,
                        help="also time each compiled step this many times, alternating (default 0: no timing)")
    parser.add_argument("--no-append", action="store_true", help="print only; record nothing")
    parser.add_argument("--results", default=str(records.RESULTS),
                        help="summary file to append to; the full record goes to runs/ beside it")
    args = parser.parse_args(argv)
    if args.time_rounds and args.no_compile:
        parser.error("--time-rounds times the compiled steps: drop --no-compile")

    started = records.now()
    start = time.perf_counter()
    per_image, with_kernels = traced_residuals(args.size), traced_residuals(args.size, "xla_cpu")
    print(f"traced in {time.perf_counter() - start:.0f} s", flush=True)
    temp, steps, models = {}, {}, {}
    if not args.no_compile:
        for label, (name, overrides) in CASES.items():
            models[label] = fusionjax.create_model(name, **overrides)
            start = time.perf_counter()
            steps[label], *temp[label] = compiled_step(models[label], args.compile_batch, args.size)
            print(f"{label}: compiled in {time.perf_counter() - start:.0f} s", flush=True)

    dense, lean, resnet = (per_image[k] for k in CASES)
    headings = ["model", "traced residuals per image (MiB)", "÷ densenet121", "with the XLA:CPU kernels (MiB)"]
    if temp:
        headings += [f"compiled temp, batch {args.compile_batch} (MiB)", "optimization barriers, lowered → compiled"]
    rows = []
    for label in CASES:
        row = [label, f"{per_image[label] / 2**20:.1f}", f"{per_image[label] / dense:.3f}",
               f"{with_kernels[label] / 2**20:.1f}"]
        if temp:
            row += [f"{temp[label][0] / 2**20:.1f}", f"{temp[label][1]} → {temp[label][2]}"]
        rows.append(row)
    verdicts = [
        f"- memory_efficient ÷ plain (traced): {lean / dense:.3f} "
        f"(goal ≤ 0.5: {'met' if 2 * lean <= dense else 'NOT met'})",
        f"- memory_efficient ÷ resnet50 (traced): {lean / resnet:.3f} "
        f"(goal ≤ 1: {'met' if lean <= resnet else 'NOT met'})",
    ]
    if temp:
        ratio = temp["densenet121 memory_efficient"][0] / temp["densenet121"][0]
        verdicts.append(f"- compiled temp memory, memory_efficient ÷ plain: {ratio:.2f}")
    if args.time_rounds:
        timed = step_times(steps, models, args.compile_batch, args.size, args.time_rounds)
        verdicts.append(f"- compiled step, batch {args.compile_batch}, ms min (median): "
                        + "; ".join(f"{v.label} {tables.ms(v)}" for v in timed)
                        + f"; memory_efficient ÷ plain {tables.ratio(timed[1], timed[0])}")
    summary = "\n".join([tables.markdown(headings, rows), "", *verdicts])
    record = "\n".join([
        *records.header("DenseNet memory", "benchmarks.memory", argv, started),
        f"- input {args.size}×{args.size}, float32; load average {harness.load_average()}", "", summary, "",
    ])
    print(record)
    if not args.no_append:
        path = records.publish(args.results, started, f"memory_{args.size}px", f"memory, {args.size}×{args.size}",
                               record, summary)
        print(f"recorded in {path} and {args.results}")


if __name__ == "__main__":
    main()
