"""What the XLA:CPU kernels save: whole models traced with the plain ops and with the kernels, on this CPU.

    python -m benchmarks.cpu_kernels [--models resnet20,resnet50,densenet121] [--rounds 7]

Two programs per call: the user's training step (``benchmarks.steps``) and the evaluation forward, each compiled
inside ``fusionjax.kernels.use("reference")`` (what a GPU or TPU runs) and ``use("auto")`` (on a CPU: the kernels
of ``fusionjax.kernels.xla_cpu``), from fresh traces in one process, then timed in alternating rounds. The table
gives both times, their ratio and the largest difference between the two programs' results (parameters after one
step; logits) relative to the largest value, which only the order of float32 sums may cause. Each kernel alone
against its op: ``python -m benchmarks.layers``; why each exists: docs/cpu-performance.md.
"""

import argparse

import jax
import jax.numpy as jnp
import optax

import fusionjax
from benchmarks import harness, records, steps, tables

MODES = ("reference", "auto")


def programs(name: str, batch: int, size: int) -> list[harness.Timed]:
    """The forward and the step of ``name``, each compiled in both modes, as timed calls."""
    model, images, labels, variables = steps.synthetic_batch(name, batch, size)
    variants = []
    for mode in MODES:
        with fusionjax.kernels.use(mode):  # read when tracing, which forward_and_train does now
            variants += steps.forward_and_train(mode, model, images, labels, variables)
    return variants


def largest_difference(name: str, batch: int, size: int, variants: list[harness.Timed]) -> dict[str, float]:
    """Per mode of call, the largest |difference| between the two programs' results ÷ their largest |value|:
    logits for the forward, every parameter after one step from the same state for the step (a per-leaf ratio
    would magnify the rounding of sums that nearly cancel, such as a BatchNorm bias's first gradient)."""
    _, images, labels, variables = steps.synthetic_batch(name, batch, size)
    tx = optax.sgd(steps.LEARNING_RATE, momentum=steps.MOMENTUM)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    results = {}
    for v in variants:
        outputs = v.program(variables, images) if v.mode == "forward" else v.program(state, images, labels)[0][0]
        results.setdefault(v.mode, []).append(jax.tree.leaves(outputs))
    return {mode: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*pair))
            / max(float(jnp.max(jnp.abs(b))) for b in pair[1]) for mode, pair in results.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet50,densenet121",
                        help=f"comma-separated, from {', '.join(steps.CPU_SHAPES)}")
    parser.add_argument("--rounds", type=int, default=7, help="timed calls of each, alternating (default 7)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(steps.CPU_SHAPES))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(steps.CPU_SHAPES)}")
    harness.pin_to_cores()
    started = records.now()
    print("\n".join(records.header("what the XLA:CPU kernels save", "benchmarks.cpu_kernels", argv, started)))
    print(f"- load average before: {harness.load_average()}\n")
    rows = []
    for name in names:
        batch, size = steps.CPU_SHAPES[name]
        variants = programs(name, batch, size)
        harness.time_rounds(variants, args.rounds)
        difference = largest_difference(name, batch, size, variants)
        for mode in ("train", "forward"):
            plain, kernels = (next(v for v in variants if v.label == label and v.mode == mode) for label in MODES)
            rows.append([name, mode, str(batch), tables.ms(plain), tables.ms(kernels), tables.ratio(kernels, plain),
                         tables.cpu_ratio(kernels, plain), f"{difference[mode]:.1e}"])
            print(f"| {' | '.join(rows[-1])} |", flush=True)
    print("\n" + tables.markdown(["model", "call", "batch", "plain ops ms, min (median)", "XLA:CPU kernels ms",
                                  "kernels ÷ plain, min (median)", "÷, CPU time", "largest difference ÷ largest value"],
                                 rows))
    print(f"\n- load average after: {harness.load_average()}")


if __name__ == "__main__":
    main()
