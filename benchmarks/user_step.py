"""A researcher's own training step on CPU: ``import fusionjax``, a plain ``jax.jit`` step, against PyTorch.

    python -m benchmarks.user_step                           # ResNet-20, batch 128, 11 rounds; records the run
    python -m benchmarks.user_step --models resnet20,resnet50
    python -m benchmarks.user_step --quick                   # a tiny batch, 2 rounds, printed only

One process holds both sides: a fusionjax model in the training step of the Flax and optax examples
(``benchmarks.steps.user_train_step``: no donated buffers, no flags of its own) and the same architecture in
PyTorch in channels_last (``benchmarks.torch_models``), trained with the same SGD. Both are pinned to the same
cores (``os.sched_setaffinity``, ``torch.set_num_threads``) and timed in alternating rounds; the evaluation
forwards are timed beside the steps. The process sets nothing else: what ``import fusionjax`` chooses is what is
measured, and the record says what that was (the YNNPACK fusions in the compiled step, the allocator,
``XLA_FLAGS``, ``OMP_WAIT_POLICY``), with the load average before and after. Why this figure, and not an
earlier, lower one: docs/cpu-performance.md.
"""

import argparse
import os

import fusionjax  # noqa: F401  (first, as a user's script imports it: it makes the library's XLA:CPU choice)
from benchmarks import harness, records, steps, tables, torch_models

QUICK_BATCH = 4


def allocator() -> str:
    """The library whose ``malloc`` this process calls (glibc's, or one preloaded such as tcmalloc)."""
    from fusionjax.train.host import host_malloc

    return host_malloc()


def measure(name: str, batch: int, size: int, rounds: int, warmup: int) -> list[harness.Timed]:
    """fusionjax's forward and step, then torch channels_last's, timed in alternating rounds."""
    import torch

    model, images, labels, variables = steps.synthetic_batch(name, batch, size)
    forward, step = steps.forward_and_train("fusionjax", model, images, labels, variables)
    torch_images, torch_labels = torch_models.synthetic_batch(batch, size, model.num_classes,
                                                              memory_format=torch.channels_last)

    def reference():  # one per call: forward (eval mode) and step (train mode) each keep their own
        return torch_models.reference_model(name).to(memory_format=torch.channels_last)

    no_autocast, no_sync = (lambda: torch.autocast("cpu", enabled=False)), (lambda: None)
    label = "torch channels_last"
    variants = [
        forward, step,
        harness.Timed("torch", label, "forward", torch_models.forward_call(reference(), torch_images, no_autocast,
                                                                           no_sync)),
        harness.Timed("torch", label, "train", torch_models.train_call(
            reference(), torch_images, torch_labels, no_autocast, no_sync, steps.LEARNING_RATE, steps.MOMENTUM)),
    ]
    harness.time_rounds(variants, rounds, warmup)
    return variants


def summary_rows(name: str, batch: int, variants: list[harness.Timed]) -> list[list[str]]:
    rows = []
    for mode in ("train", "forward"):
        ours = next(v for v in variants if v.framework == "jax" and v.mode == mode)
        theirs = next(v for v in variants if v.framework == "torch" and v.mode == mode)
        rows.append([name, str(batch), "training step" if mode == "train" else "forward", tables.ms(ours),
                     tables.ms(theirs), tables.ratio(ours, theirs), tables.cpu_ratio(ours, theirs)])
    return rows


SUMMARY_HEADINGS = ["model", "batch", "call", "fusionjax ms, min (median)", "torch channels_last ms",
                    "÷ torch, min (median)", "÷ torch, CPU time"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet20",
                        help="comma-separated, from " + ", ".join(steps.CPU_SHAPES) + " (default resnet20)")
    parser.add_argument("--batch", type=int, help="one batch for every model (default: "
                        + ", ".join(f"{n} {b}" for n, (b, _) in steps.CPU_SHAPES.items()) + ")")
    parser.add_argument("--rounds", type=int, default=11, help="timed calls of each, alternating (default 11)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each first (default 1)")
    parser.add_argument("--cores", help="comma-separated core numbers to pin both sides to (default: all this "
                        "process may use)")
    parser.add_argument("--no-pin", action="store_true", help="leave thread placement and torch's thread count "
                        "to the libraries")
    parser.add_argument("--quick", action="store_true", help=f"batch {QUICK_BATCH}, 2 rounds, nothing recorded")
    parser.add_argument("--no-append", action="store_true", help="print only; record nothing")
    parser.add_argument("--note", default="", help="what this run tries, written into its record")
    parser.add_argument("--results", default=str(records.RESULTS),
                        help="summary file to append to; the full record goes to runs/ beside it")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(steps.CPU_SHAPES))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(steps.CPU_SHAPES)}")
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    if args.batch is not None and args.batch < 1:
        parser.error("--batch must be at least 1")
    if args.no_pin and args.cores:
        parser.error("--cores pins the threads: drop --no-pin")
    try:
        wanted = {int(c) for c in args.cores.split(",")} if args.cores else None
    except ValueError:
        parser.error(f"--cores takes comma-separated core numbers such as 0,1, got {args.cores!r}")
    rounds = 2 if args.quick else args.rounds

    started, load_before = records.now(), harness.load_average()
    cores = None if args.no_pin else harness.pin_to_cores(wanted)  # before JAX and torch start their threads
    import torch

    if cores:
        torch.set_num_threads(len(cores))
    results = {}
    for name in names:
        batch = QUICK_BATCH if args.quick else args.batch or steps.CPU_SHAPES[name][0]
        size = steps.CPU_SHAPES[name][1]
        print(f"{name}: batch {batch}, {size}×{size}, {rounds} rounds…", flush=True)
        results[name] = (batch, measure(name, batch, size, rounds, args.warmup))
    load_after = harness.load_average()

    summary = tables.markdown(SUMMARY_HEADINGS, [row for name, (batch, variants) in results.items()
                                                 for row in summary_rows(name, batch, variants)])
    ynn = {name: steps.ynn_fusions(next(v for v in variants if v.mode == "train").program)
           for name, (_, variants) in results.items()}
    record = records.timing_record(
        records.header(args.note or "a user's own jax.jit step against torch", "benchmarks.user_step", argv,
                       started),
        [f"- threads: {'pinned to cores ' + ','.join(map(str, cores)) if cores else 'not pinned'}; torch "
         f"{torch.get_num_threads()} threads",
         f"- host malloc: {allocator()}",
         "- YNNPACK fusions in the compiled fusionjax step: " + ", ".join(f"{n} {c}" for n, c in ynn.items()),
         f"- {rounds} rounds after {args.warmup} warm-up call(s) each; float32"],
        (load_before, load_after), summary, results)
    print(record)
    if not (args.quick or args.no_append):
        path = records.publish(args.results, started, "user-step_" + "-".join(names),
                               f"user_step, {harness.cpu_name()}, {os.cpu_count()} cores, load {load_before} → "
                               f"{load_after}", record, summary)
        print(f"recorded in {path} and {args.results}")


if __name__ == "__main__":
    main()
