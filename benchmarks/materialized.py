"""What ``fusionjax.layers.materialized`` saves: a training step with it and with the identity in its place.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python -m benchmarks.materialized [--models resnet20,resnet50]

The models store each residual block's output, each DenseNet layer's new feature map and ``max_pool``'s input
once (``layers.materialized``); without it XLA fuses each of these cheap element-wise values into every reader and
recomputes it there (benchmarks/RESULTS.md, attempt 16). Both programs are compiled from fresh traces
in one process and timed alternately; the script prints the median and minimum step times, their ratio, and the
largest difference between the parameters the two steps produce (the division by one changes no value).
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks.compare import CPU_SHAPES, LR, MOMENTUM, sgd_train_step, synthetic_inputs
from fusionjax import blocks, layers


def measure(name: str, rounds: int) -> str:
    batch, size = CPU_SHAPES[name]
    model, x, labels, variables = synthetic_inputs(name, batch, size)
    tx = optax.sgd(LR, momentum=MOMENTUM)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    shipped = layers.materialized
    steps = {}
    for label, store in (("materialized", shipped), ("identity", lambda value: value)):
        blocks.materialized = layers.materialized = store
        try:
            steps[label] = jax.jit(sgd_train_step(model, tx)).lower(state, x, labels).compile()
        finally:
            blocks.materialized = layers.materialized = shipped
    params = {label: step(state, x, labels)[0][0] for label, step in steps.items()}
    difference = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                     zip(jax.tree.leaves(params["materialized"]), jax.tree.leaves(params["identity"])))

    times = {label: [] for label in steps}
    for round_ in range(rounds):
        for label in (list(steps) if round_ % 2 == 0 else list(steps)[::-1]):
            start = time.perf_counter()
            jax.block_until_ready(steps[label](state, x, labels))
            times[label].append(time.perf_counter() - start)
    median = {label: statistics.median(t) * 1e3 for label, t in times.items()}
    least = {label: min(t) * 1e3 for label, t in times.items()}
    return (f"| {name} | {batch} | {median['identity']:.0f} ({least['identity']:.0f}) | "
            f"{median['materialized']:.0f} ({least['materialized']:.0f}) | "
            f"{median['materialized'] / median['identity']:.2f} | {difference:.1e} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet50,densenet121",
                        help=f"comma-separated, from {', '.join(CPU_SHAPES)}")
    parser.add_argument("--rounds", type=int, default=6, help="timed steps of each variant, alternating")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; training step ms, median (min)")
    print("| model | batch | identity | materialized | ratio | largest parameter difference |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        print(measure(name, args.rounds), flush=True)


if __name__ == "__main__":
    main()
