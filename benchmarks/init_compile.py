"""What compiling a model's ``init`` costs on this CPU: kernels drawn in their own shape and drawn as matrices.

    python -m benchmarks.init_compile [--models resnet20,resnet50,densenet121] [--rounds 3] [--no-append]

fusionjax's convolution initializer (``fusionjax.layers.variance_scaling``) has jax's own initializer draw each
kernel as a matrix with the kernel's fan and reshapes it; ``jax.nn.initializers.variance_scaling`` (what Flax's
layers use) draws it in its own 4-D shape. The values are the same to the bit (checked here on every model, and
in tests/test_layers.py); XLA:CPU compiles the matrix draws faster. Each round lowers the jitted ``init`` of both
afresh and times only its compile, alternating; the table gives the least compile time of each and their ratio.
docs/cpu-performance.md.
"""

import argparse
import functools
import time

import jax
import numpy as np
from flax import linen as nn

import fusionjax
from fusionjax.layers import Conv2d
from benchmarks import harness, records, tables

JAX_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # as fusionjax.layers.conv_kernel_init
IMAGE = {"resnet20": 32}  # CIFAR models at CIFAR's size; the others at 224


def lowered_init(name: str, initializers: str, image: np.ndarray):
    """The jitted ``init`` of ``name`` lowered with fusionjax's convolution initializer or (``'jax'``) jax's."""
    model = fusionjax.create_model(name)
    if initializers == "jax":
        model = model.clone(conv=functools.partial(Conv2d, kernel_init=JAX_CONV_INIT))
    return jax.jit(functools.partial(model.init, train=False)).lower(jax.random.key(0), image)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet50,densenet121",
                        help="comma-separated zoo names (default: resnet20,resnet50,densenet121)")
    parser.add_argument("--rounds", type=int, default=3, help="compiles of each, alternating (default 3)")
    parser.add_argument("--no-append", action="store_true", help="print only; record nothing")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if unknown := sorted(set(names) - set(fusionjax.list_models())):
        parser.error(f"unknown model(s) {', '.join(unknown)}: choose from fusionjax.list_models()")
    harness.pin_to_cores()
    started, load_before = records.now(), harness.load_average()
    rows, raw = [], []
    for name in names:
        size = IMAGE.get(name, 224)
        image = np.zeros((1, size, size, 3), np.float32)
        variants, values = [harness.Timed("jax", side, "init", None) for side in ("jax", "fusionjax")], {}
        for r in range(args.rounds):
            for variant in variants if r % 2 == 0 else variants[::-1]:
                lowered = lowered_init(name, variant.label, image)  # a fresh lowering: each keeps its compiled program
                start, cpu_start = time.perf_counter(), time.process_time()
                program = lowered.compile()
                variant.times.append(time.perf_counter() - start)
                variant.cpu_times.append(time.process_time() - cpu_start)
                values.setdefault(variant.label, jax.tree.leaves(program(jax.random.key(0), image)))
        identical = all(np.array_equal(a, b) for a, b in zip(values["jax"], values["fusionjax"]))
        in_shape, matrices = variants
        rows.append([name, tables.ms(in_shape), tables.ms(matrices), tables.ratio(matrices, in_shape),
                     "yes" if identical else "**no**"])
        raw += tables.raw_times(name, variants)
        print(f"| {' | '.join(rows[-1])} |", flush=True)
    summary = tables.markdown(["model", "kernels drawn in their shape: compile ms, min (median)",
                               "drawn as matrices: compile ms", "matrices ÷ shape, min (median)", "same values"], rows)
    record = "\n".join([
        *records.header("compiling init: kernels drawn in their shape and as matrices", "benchmarks.init_compile", argv,
                        started),
        f"- jitted init, batch 1, {args.rounds} alternating compiles of each; load average before "
        f"{load_before}, after {harness.load_average()}", "", summary, "", "Every compile (ms):", "", *raw, ""])
    print(record)
    if not args.no_append:
        path = records.publish(records.RESULTS, started, "init-compile", "compiling init on this CPU", record, summary)
        print(f"recorded in {path} and {records.RESULTS}")


if __name__ == "__main__":
    # Every compile timed, none loaded from a persistent cache (read once per process, at its first compile)
    jax.config.update("jax_enable_compilation_cache", False)
    main()
