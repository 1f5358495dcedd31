"""What ``fusionjax.layers.materialized`` saves: the models with it and with the identity in its place.

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= python -m benchmarks.materialized [--models resnet20,resnet50]

The models store each residual block's output, each DenseNet layer's new feature map and ``max_pool``'s input
once (``layers.materialized``); without it XLA fuses each of these cheap element-wise values into every reader and
recomputes it there (benchmarks/RESULTS.md, attempts 16 and 19). Two programs per model: the training step, with
``materialized`` and with the identity; and the evaluation forward, with the identity, with the training step's
form (a scalar divisor, which XLA rewrites into a multiplication and duplicates in an evaluation program) and with
the shipped evaluation form (a full-size divisor). Each is compiled from a fresh trace in one process and timed
alternately; the script prints median and minimum times, the ratio to the identity, and the largest difference
from the identity's results (parameters after one step; logits), which the division by one does not change.
"""

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp
import optax

from benchmarks.compare import CPU_SHAPES, LR, MOMENTUM, sgd_train_step, synthetic_inputs
from benchmarks.layers import alternating_times
from fusionjax import blocks, layers


def compile_with(store, fn, *args):
    """``fn`` compiled with ``store`` in place of ``layers.materialized`` (the models look it up when traced)."""
    shipped = layers.materialized
    blocks.materialized = layers.materialized = store
    try:
        return jax.jit(fn).lower(*args).compile()
    finally:
        blocks.materialized = layers.materialized = shipped


def rows(name: str, rounds: int) -> list[str]:
    batch, size = CPU_SHAPES[name]
    model, x, labels, variables = synthetic_inputs(name, batch, size)
    tx = optax.sgd(LR, momentum=MOMENTUM)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    shipped = layers.materialized
    identity = lambda value, train: value  # noqa: E731
    training_form = lambda value, train: shipped(value, train=True)  # noqa: E731

    # fresh functions for every program: jax caches traces per function
    steps = {label: compile_with(store, sgd_train_step(model, tx), state, x, labels)
             for label, store in (("identity", identity), ("materialized", shipped))}
    forwards = {label: compile_with(store, lambda v, x: model.apply(v, x, train=False), variables, x)
                for label, store in (("identity", identity), ("scalar divisor", training_form),
                                     ("materialized", shipped))}

    def largest_difference(results):
        return max(max(float(jnp.max(jnp.abs(a - b))) for a, b in
                       zip(jax.tree.leaves(results[label]), jax.tree.leaves(results["identity"])))
                   for label in results)

    out = []
    for mode, programs, args, result in (
        ("train", steps, (state, x, labels), lambda program: program(state, x, labels)[0][0]),
        ("eval", forwards, (variables, x), lambda program: program(variables, x)),
    ):
        difference = largest_difference({label: result(program) for label, program in programs.items()})
        times = alternating_times({label: functools.partial(lambda p: jax.block_until_ready(p(*args)), program)
                                   for label, program in programs.items()}, rounds)
        base = statistics.median(times["identity"])
        cells = [f"{statistics.median(times[label]):.0f} ({min(times[label]):.0f}), "
                 f"×{statistics.median(times[label]) / base:.2f}" if label in times else "–"
                 for label in ("identity", "scalar divisor", "materialized")]
        out.append(f"| {name} | {mode} | {batch} | " + " | ".join(cells) + f" | {difference:.1e} |")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet50,densenet121",
                        help=f"comma-separated, from {', '.join(CPU_SHAPES)}")
    parser.add_argument("--rounds", type=int, default=6, help="timed calls of each variant, alternating")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; ms per call, median (min), ratio of medians to the "
          "identity's")
    print("| model | program | batch | identity | scalar divisor (training form) | materialized (shipped) | "
          "largest difference |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for row in rows(name, args.rounds):
            print(row, flush=True)


if __name__ == "__main__":
    main()
