"""fusionjax against torchvision on CPU, in one process: the figure a user of the library sees.

    python -m benchmarks.compare                              # the four models, 11 rounds; records the run
    python -m benchmarks.compare --models resnet20 --rounds 7 --note "what this run tries"
    python -m benchmarks.compare --quick                      # 2 rounds, no torch.compile, nothing recorded
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python -m benchmarks.compare   # with tcmalloc

fusionjax's side is a user's: ``import fusionjax``, the training step of the Flax and optax examples
(``benchmarks.steps``), the library's defaults and nothing else. Torch's side is torchvision's model (He et al.'s
CIFAR ResNet for ResNet-20, ``benchmarks.torch_models``) eager in NCHW and in channels_last, and with
``torch.compile``; its step is forward, backward and ``torch.optim.SGD`` with momentum, BatchNorm in train mode.
Both sides are pinned to the same cores and timed in alternating rounds (``benchmarks.harness``); the tables give
minima beside medians and the ratio of CPU times, and the record holds every call's time.

Two more fusionjax forwards show deployment: "deployed" is ``fusionjax.deploy``'s BatchNorm folded into the
convolutions and the batch run in micro-batches (sizes in ``CPU_MICRO_BATCH``), so each layer's activations stay
in cache; where JAX runs the CPU as several devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, what
``fusionjax-train --cpu_devices 2`` does), the forward and the step also run with the batch split over them. What
moves these figures (allocator, YNNPACK, OpenMP's wait policy, load): docs/cpu-performance.md. On a GPU, run
``python -m benchmarks.gpu``.
"""

import argparse
import os

import fusionjax  # first, as a user's script imports it: it makes the library's XLA:CPU choice
from benchmarks import harness, records, steps, tables, torch_models

# The deployed forward's micro-batch: the fastest of those tried on a 2-core machine (docs/cpu-performance.md).
CPU_MICRO_BATCH = {"resnet20": 32, "resnet18": 8, "resnet50": 4, "densenet121": 4}
SHARDED = "fusionjax, batch over devices"
TORCH_LAYOUTS = ("torch NCHW", "torch channels_last")
COMPILED = "torch.compile channels_last"


def jax_variants(name: str, batch: int, size: int) -> list[harness.Timed]:
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from fusionjax.deploy import fold_batchnorm, micro_batched

    model, images, labels, variables = steps.synthetic_batch(name, batch, size)
    forward, step = steps.forward_and_train("fusionjax", model, images, labels, variables)
    folded_model, folded_variables = fold_batchnorm(model, variables)
    micro_batch = min(CPU_MICRO_BATCH[name], batch)
    deployed, deployed_s, _ = steps.compiled(micro_batched(folded_model.apply, micro_batch), folded_variables,
                                             images)
    variants = [forward, harness.Timed("jax", "fusionjax deployed", "forward",
                                       lambda: deployed(folded_variables, images).block_until_ready(), deployed_s),
                step]
    devices = jax.device_count()
    if devices > 1 and batch % devices == 0:
        mesh = jax.make_mesh((devices,), ("batch",))
        split, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
        variants += steps.forward_and_train(SHARDED, model, jax.device_put(images, split),
                                            jax.device_put(labels, split), jax.device_put(variables, replicated))
    elif devices > 1:
        print(f"{name}: batch {batch} does not split over {devices} devices; no batch-over-devices variants")
    return variants


def torch_variants(name: str, batch: int, size: int, with_compile: bool) -> list[harness.Timed]:
    import time

    import torch

    no_autocast, no_sync = (lambda: torch.autocast("cpu", enabled=False)), (lambda: None)
    num_classes = fusionjax.get_model_spec(name).num_classes
    variants = []
    for label, memory_format in zip(TORCH_LAYOUTS, (torch.contiguous_format, torch.channels_last)):
        images, labels = torch_models.synthetic_batch(batch, size, num_classes, memory_format=memory_format)
        # a model each: the forward runs in eval mode, the step in train mode
        forward_model, train_model = (torch_models.reference_model(name).to(memory_format=memory_format)
                                      for _ in range(2))
        variants += [
            harness.Timed("torch", label, "forward",
                          torch_models.forward_call(forward_model, images, no_autocast, no_sync)),
            harness.Timed("torch", label, "train", torch_models.train_call(
                train_model, images, labels, no_autocast, no_sync, steps.LEARNING_RATE, steps.MOMENTUM)),
        ]
    if with_compile:
        images, labels = torch_models.synthetic_batch(batch, size, num_classes, memory_format=torch.channels_last)
        for mode in ("forward", "train"):
            module = torch.compile(torch_models.reference_model(name).to(memory_format=torch.channels_last))
            run = (torch_models.forward_call(module, images, no_autocast, no_sync) if mode == "forward" else
                   torch_models.train_call(module, images, labels, no_autocast, no_sync, steps.LEARNING_RATE,
                                           steps.MOMENTUM))
            start = time.perf_counter()
            try:
                run()  # compiles
            except Exception as error:  # noqa: BLE001 — a backend that fails to compile is a result to record
                print(f"{name} {mode}: torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0]}")
                run = None
            variants.append(harness.Timed("torch", COMPILED, mode, run, time.perf_counter() - start))
    return variants


SUMMARY_HEADINGS = ["model", "mode", "batch", "fusionjax ms, min (median)", "torch channels_last ms",
                    "÷ channels_last, min (median)", "÷ channels_last, CPU time", "torch NCHW ms", "÷ NCHW",
                    "deployed ÷ channels_last", "batch over devices ÷ channels_last", "÷ torch.compile"]


def summary_rows(name: str, batch: int, variants: list[harness.Timed]) -> list[list[str]]:
    rows = []
    for mode in ("forward", "train"):
        found = {v.label: v for v in variants if v.mode == mode}
        ours, channels_last, nchw = found.get("fusionjax"), found.get("torch channels_last"), found.get("torch NCHW")
        rows.append([name, mode, str(batch), tables.ms(ours), tables.ms(channels_last),
                     tables.ratio(ours, channels_last), tables.cpu_ratio(ours, channels_last), tables.ms(nchw),
                     tables.ratio(ours, nchw), tables.ratio(found.get("fusionjax deployed"), channels_last),
                     tables.ratio(found.get(SHARDED), channels_last), tables.ratio(ours, found.get(COMPILED))])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(steps.CPU_SHAPES),
                        help="comma-separated, from " + ", ".join(steps.CPU_SHAPES))
    parser.add_argument("--batch", type=int, help="one batch for every model (default: "
                        + ", ".join(f"{n} {b}" for n, (b, _) in steps.CPU_SHAPES.items()) + ")")
    parser.add_argument("--rounds", type=int, default=11, help="timed calls of every variant (default 11)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of every variant first (default 1)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, no torch.compile, nothing recorded")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (it compiles for minutes)")
    parser.add_argument("--no-append", action="store_true", help="print only; record nothing")
    parser.add_argument("--note", default="", help="what this run tries, written into its record")
    parser.add_argument("--results", default=str(records.RESULTS),
                        help="summary file to append to; the full record goes to runs/ beside it")
    parser.add_argument("--reuse-freed-host-memory", action="store_true",
                        help="keep freed host memory in the process first, as fusionjax-train "
                        "--reuse_freed_host_memory does (both frameworks share the setting)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(steps.CPU_SHAPES))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(steps.CPU_SHAPES)}")
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    if args.batch is not None and args.batch < 1:
        parser.error("--batch must be at least 1")
    rounds = 2 if args.quick else args.rounds

    from fusionjax.train.host import host_malloc, reuse_freed_host_memory

    malloc = host_malloc()
    if args.reuse_freed_host_memory:  # before torch and JAX start their threads: those keep the arenas they get
        malloc += ", reuse_freed_host_memory()" if reuse_freed_host_memory() else ", not glibc's: nothing to reuse"
    started, load_before = records.now(), harness.load_average()
    cores = harness.pin_to_cores()
    import jax
    import torch

    if jax.default_backend() != "cpu":
        parser.error(f"JAX runs on {jax.default_backend()}: this compares CPUs (JAX_PLATFORMS=cpu to compare "
                     "this host's); on a GPU run python -m benchmarks.gpu")
    torch.set_num_threads(len(cores))
    results = {}
    for name in names:
        batch, size = args.batch or steps.CPU_SHAPES[name][0], steps.CPU_SHAPES[name][1]
        print(f"{name}: batch {batch}, {size}×{size}: compiling…", flush=True)
        variants = jax_variants(name, batch, size)
        variants += torch_variants(name, batch, size, not (args.quick or args.no_torch_compile))
        harness.time_rounds(variants, rounds, args.warmup)
        results[name] = (batch, variants)
        print(tables.markdown(SUMMARY_HEADINGS, summary_rows(name, batch, variants)), flush=True)
    load_after = harness.load_average()

    summary = tables.markdown(SUMMARY_HEADINGS, [row for name, (batch, variants) in results.items()
                                                 for row in summary_rows(name, batch, variants)])
    ynn = {name: steps.ynn_fusions(next(v for v in variants if v.label == "fusionjax" and v.mode == "train").program)
           for name, (_, variants) in results.items()}
    record = records.timing_record(
        records.header(args.note or "fusionjax against torchvision", "benchmarks.compare", argv, started),
        [f"- threads: pinned to cores {','.join(map(str, cores))}; torch {torch.get_num_threads()} threads",
         f"- host malloc: {malloc}",
         "- YNNPACK fusions in the compiled fusionjax step: " + ", ".join(f"{n} {c}" for n, c in ynn.items()),
         f"- {rounds} rounds after {args.warmup} warm-up call(s) each; float32; deployed micro-batches: "
         + ", ".join(f"{name} {min(CPU_MICRO_BATCH[name], batch)}" for name, (batch, _) in results.items())],
        (load_before, load_after), summary, results)
    print(record)
    if not (args.quick or args.no_append):
        path = records.publish(args.results, started, "compare_" + "-".join(names),
                               f"compare, {harness.cpu_name()}, {os.cpu_count()} cores, {malloc}, load "
                               f"{load_before} → {load_after}", record, summary)
        print(f"recorded in {path} and {args.results}")


if __name__ == "__main__":
    main()
