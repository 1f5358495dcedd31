"""fusionjax (jit) against torchvision (eager NCHW, eager channels_last, torch.compile), in one process.

    python -m benchmarks.compare                       # the four models, 7 rounds, appends to benchmarks/RESULTS.md
    python -m benchmarks.compare --models resnet20 --rounds 5 --note "what this run tries"
    python -m benchmarks.compare --quick               # 3 rounds, no torch.compile, nothing appended
    python -m benchmarks.compare --reuse-freed-host-memory   # as fusionjax-train --reuse_freed_host_memory runs
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python -m benchmarks.compare   # with tcmalloc

Every round times one call of every variant, JAX and torch alternating, the order reversed every other round so
drift hits both sides alike; warm-up calls (and compilation) are excluded and reported separately. Forward is eval
mode; the training step is forward, backward and an SGD-momentum update with BatchNorm in train mode, on both
sides. On this shared 2-core machine a busy neighbour slows torch's OpenMP threads far more than XLA's, so the
load average is recorded before and after, and minimums are reported beside medians.

The forward is also timed the way ``fusionjax.deploy`` serves it: BatchNorm folded (``fold_batchnorm``), and
folded and run in micro-batches (``micro_batched``, sizes in ``CPU_MICRO_BATCH``, picked from a sweep on this
machine) so each layer's activations stay in cache; torch channels_last is timed in the same micro-batches too,
so the table separates what the slicing gives from what the libraries do.

Where JAX runs the CPU as more than one device (one per core: ``XLA_FLAGS="--xla_force_host_platform_device_count=2
..."``, what ``--cpu_devices 2`` does for ``fusionjax-train`` and ``fusionjax-eval``), the forward and the training
step are also timed with the batch split over all of them ("batch over devices": data parallel, BatchNorm
statistics over the whole batch); the other variants run on the first device alone, unchanged. (Several GPUs
against torch on one would not be a comparison, so GPUs are timed one at a time.)

The allocator both frameworks share moves both by 10–25 % on CPU, so the report names it (``host_malloc``:
glibc's, or one preloaded with ``LD_PRELOAD``, such as tcmalloc). Every variant's images/s, model FLOP/s and host
page faults per call (``getrusage``: memory the kernel had to map in afresh, which tcmalloc and
``--reuse-freed-host-memory`` avoid) follow the timing tables; the model FLOPs of a forward or a
training step are XLA's count for the *lowered* fusionjax program (what the model asks for, the same on every
backend, before a backend rewrites it), used for the torch variants of the same model too. On a GPU
(``jax.devices()[0].platform == 'gpu'``) both sides compute in bfloat16 (torch: autocast), batches grow (256 for
ResNet-50), and the throughput table adds the fraction of the GPU's dense bf16 peak.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once when torch loads its OpenMP runtime

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import fusionjax  # noqa: E402
from fusionjax.deploy import fold_batchnorm, host_malloc, micro_batched, reuse_freed_host_memory  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
# (batch, image size) on CPU and on GPU.
CPU_SHAPES = {"resnet20": (128, 32), "resnet18": (16, 224), "resnet50": (16, 224), "densenet121": (16, 224)}
GPU_SHAPES = {"resnet20": (1024, 32), "resnet18": (256, 224), "resnet50": (256, 224), "densenet121": (128, 224)}
# Micro-batch of the deployed CPU forward: the fastest of those tried (ResNet-20: 8, 16, 32, 48; the others: 4, 8)
# in 2026-11-24 sweeps on the 2-core machine (benchmarks/RESULTS.md, attempt 17).
CPU_MICRO_BATCH = {"resnet20": 32, "resnet18": 8, "resnet50": 4, "densenet121": 4}
# Dense bf16 tensor-core peaks (FLOP/s) from NVIDIA's data sheets, matched against jax's device_kind.
GPU_BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}
LR, MOMENTUM = 0.1, 0.9
SHARDED = "fusionjax, batch over devices"


@dataclass
class Variant:
    """One thing timed: ``run()`` does a step and returns once the result is ready."""

    framework: str  # "jax" or "torch"
    label: str
    mode: str  # "forward" or "train"
    run: Callable[[], None]
    compile_s: float = 0.0  # lowering + compiling (JAX) or the first call (torch.compile)
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)  # CPU seconds this process used per call (all threads)
    page_faults: list[int] = field(default_factory=list)  # minor page faults of this process per call
    flops: float | None = None  # per call, the model's (fusionjax's plain variants only)


def _compiled(fn, *args, donate: tuple[int, ...] = ()):
    """The compiled program, seconds to lower and compile, and the lowered program's FLOPs.

    Counted before compilation: a backend may rewrite what it counts (cuDNN calls on GPU), and the count of a
    ``lax.map`` loop covers one slice only; the plain variants' counts serve as the model's.
    """
    start = time.perf_counter()
    lowered = jax.jit(fn, donate_argnums=donate).lower(*args)
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start, lowered.cost_analysis().get("flops")


def synthetic_inputs(name: str, batch: int, size: int, dtype=jnp.float32):
    """The model, a batch of standard-normal images with random labels, and its initialized variables."""
    model = fusionjax.create_model(name, dtype=dtype)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, 3)), dtype)
    labels = jnp.asarray(rng.integers(0, fusionjax.get_model_spec(name).num_classes, batch))
    return model, x, labels, jax.jit(model.init)(jax.random.key(0), x[:1])


def sgd_train_step(model, tx):
    """The training step both sides time: forward and backward with BatchNorm in train mode, then ``tx``'s update.

    A new function on each call, so each gets its own trace (jax caches traces per function).
    """

    def train_step(state, x, labels):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    return train_step


def forward_and_train(label: str, model, x, labels, variables) -> list[Variant]:
    """The eval forward and the SGD training step of ``model`` on ``x``, compiled for wherever ``x`` lies."""
    forward, forward_s, forward_flops = _compiled(lambda v, x: model.apply(v, x, train=False), variables, x)
    tx = optax.sgd(LR, momentum=MOMENTUM)
    # copies: the step donates its state, and the forward variants keep reading ``variables``
    state = jax.tree.map(jnp.copy, (variables["params"], variables["batch_stats"], tx.init(variables["params"])))
    train, train_s, train_flops = _compiled(sgd_train_step(model, tx), state, x, labels, donate=(0,))
    holder = {"state": state}

    def run_train():
        holder["state"], loss = train(holder["state"], x, labels)
        loss.block_until_ready()

    return [Variant("jax", label, "forward", lambda: forward(variables, x).block_until_ready(), forward_s,
                    flops=forward_flops),
            Variant("jax", label, "train", run_train, train_s, flops=train_flops)]


def jax_variants(name: str, batch: int, size: int, dtype, micro_batch: int | None) -> list[Variant]:
    model, x, labels, variables = synthetic_inputs(name, batch, size, dtype)
    plain_forward, plain_train = forward_and_train("fusionjax", model, x, labels, variables)

    folded_model, folded_variables = fold_batchnorm(model, variables)
    folded, folded_s, _ = _compiled(lambda v, x: folded_model.apply(v, x), folded_variables, x)
    deployed = [Variant("jax", "fusionjax folded BN", "forward",
                        lambda: folded(folded_variables, x).block_until_ready(), folded_s)]
    if micro_batch:
        sliced, sliced_s, _ = _compiled(micro_batched(folded_model.apply, micro_batch), folded_variables, x)
        deployed.append(Variant("jax", "fusionjax folded + micro-batched", "forward",
                                lambda: sliced(folded_variables, x).block_until_ready(), sliced_s))

    sharded, cpus = [], jax.devices()[0].platform == "cpu"
    if cpus and jax.device_count() > 1 and batch % jax.device_count() == 0:
        mesh = jax.make_mesh((jax.device_count(),), ("batch",))
        split, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
        sharded = forward_and_train(SHARDED, model, jax.device_put(x, split), jax.device_put(labels, split),
                                    jax.device_put(variables, replicated))
        for variant in sharded:
            variant.flops = None  # the model's count is the single-device program's
    elif cpus and jax.device_count() > 1:
        print(f"{name}: batch {batch} does not split over {jax.device_count()} devices; no sharded variants")
    return [plain_forward, *deployed, *sharded[:1], plain_train, *sharded[1:]]


def torch_cifar_resnet(depth: int, num_classes: int = 10):
    """He et al. 2016 §4.2's CIFAR ResNet (option-A zero-pad shortcuts), which torchvision does not ship."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.pad = stride, cout - cin

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            shortcut = x
            if self.stride > 1 or self.pad:
                shortcut = nn.functional.pad(x[:, :, :: self.stride, :: self.stride],
                                             (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return torch.relu(y + shortcut)

    n = (depth - 2) // 6
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage, width in enumerate((16, 32, 64)):
        for j in range(n):
            layers.append(Block(cin, width, 2 if stage > 0 and j == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def torch_variants(name: str, batch: int, size: int, gpu: bool, with_compile: bool,
                   micro_batch: int | None) -> list[Variant]:
    import torch

    from fusionjax.torch_compat import import_torchvision

    tv = import_torchvision()
    device = "cuda" if gpu else "cpu"
    num_classes = fusionjax.get_model_spec(name).num_classes
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.standard_normal((batch, 3, size, size), dtype=np.float32)).to(device)
    labels = torch.from_numpy(rng.integers(0, num_classes, batch)).to(device)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    autocast = (lambda: torch.autocast("cuda", torch.bfloat16)) if gpu else (lambda: torch.autocast("cpu", enabled=False))

    def build(memory_format):
        torchvision_name = fusionjax.get_model_spec(name).torchvision
        module = getattr(tv.models, torchvision_name)() if torchvision_name else torch_cifar_resnet(int(name[6:]))
        return module.to(device, memory_format=memory_format)

    def forward_fn(module, x, micro_batch=None):
        module.eval()

        def run():
            with torch.inference_mode(), autocast():
                torch.cat([module(part) for part in x.split(micro_batch)]) if micro_batch else module(x)
            sync()

        return run

    def train_fn(module, x):
        module.train()
        optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)

        def run():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(module(x), labels)
            loss.backward()
            optimizer.step()
            sync()

        return run

    variants = []
    layouts = [("torch NCHW", torch.contiguous_format), ("torch channels_last", torch.channels_last)]
    for label, memory_format in layouts:
        x = images.contiguous(memory_format=memory_format)
        variants.append(Variant("torch", label, "forward", forward_fn(build(memory_format), x)))
        variants.append(Variant("torch", label, "train", train_fn(build(memory_format), x)))
    x = images.contiguous(memory_format=torch.channels_last)
    if micro_batch:
        variants.append(Variant("torch", "torch channels_last micro-batched", "forward",
                                forward_fn(build(torch.channels_last), x, micro_batch)))
    if with_compile:
        for mode, make in (("forward", forward_fn), ("train", train_fn)):
            label = "torch.compile channels_last"
            try:
                run = make(torch.compile(build(torch.channels_last)), x)
                start = time.perf_counter()
                run()  # compiles
                variants.append(Variant("torch", label, mode, run, time.perf_counter() - start))
            except Exception as error:  # noqa: BLE001 — any backend failure is a result to record
                print(f"{name} {mode}: torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0]}")
                variants.append(Variant("torch", label, mode, None, float("nan")))
    return variants


def time_rounds(variants: list[Variant], rounds: int, warmup: int) -> None:
    """Warm every variant up, then time one call of each per round, JAX and torch interleaved."""
    runnable = [v for v in variants if v.run is not None]
    jax_side = [v for v in runnable if v.framework == "jax"]
    torch_side = [v for v in runnable if v.framework == "torch"]
    order = []
    for i in range(max(len(jax_side), len(torch_side))):
        order += jax_side[i : i + 1] + torch_side[i : i + 1]
    for variant in order:
        for _ in range(warmup):
            variant.run()
    for r in range(rounds):
        for variant in order if r % 2 == 0 else order[::-1]:
            faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start, cpu_start = time.perf_counter(), time.process_time()
            variant.run()
            variant.times.append(time.perf_counter() - start)
            variant.cpu_times.append(time.process_time() - cpu_start)
            variant.page_faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_start)


def fmt_ms(variant: Variant | None) -> str:
    if variant is None:
        return "–"
    if not variant.times:
        return "failed"
    return f"{1e3 * statistics.median(variant.times):.1f} / {1e3 * min(variant.times):.1f}"


def fmt_ratio(jax_v: Variant | None, torch_v: Variant | None) -> str:
    if jax_v is None or torch_v is None or not torch_v.times or not jax_v.times:
        return "–"
    median = statistics.median(jax_v.times) / statistics.median(torch_v.times)
    return f"{median:.2f} ({min(jax_v.times) / min(torch_v.times):.2f})"


def gpu_peak() -> float | None:
    kind = jax.devices()[0].device_kind
    return next((peak for key, peak in GPU_BF16_PEAK.items() if key in kind), None)


def tables(results: dict[str, list[Variant]], batches: dict[str, int], gpu: bool) -> str:
    jax_labels = ["fusionjax", "fusionjax folded BN", "fusionjax folded + micro-batched", SHARDED]
    torch_labels = ["torch NCHW", "torch channels_last", "torch channels_last micro-batched",
                    "torch.compile channels_last"]
    # (numerator, denominator, column heading)
    ratios = [("fusionjax", "torch NCHW", "fusionjax ÷ NCHW"), ("fusionjax", "torch channels_last", "÷ channels_last"),
              ("fusionjax", "torch.compile channels_last", "÷ compile"),
              ("fusionjax folded BN", "torch channels_last", "folded ÷ channels_last"),
              ("fusionjax folded + micro-batched", "torch channels_last", "folded + micro-batched ÷ channels_last"),
              ("fusionjax folded + micro-batched", "torch channels_last micro-batched",
               "÷ channels_last micro-batched"),
              (SHARDED, "torch channels_last", "batch over devices ÷ channels_last")]
    headings = ["fusionjax ms (median / min)", "folded BN", "folded + micro-batched", "batch over devices",
                *torch_labels]
    lines = [
        "| model | mode | batch | " + " | ".join(headings + [heading for _, _, heading in ratios]) + " |",
        "|---|---|---|" + "---|" * (len(headings) + len(ratios)),
    ]
    spreads = []
    for name, variants in results.items():
        for mode in ("forward", "train"):
            found = {label: next((v for v in variants if v.label == label and v.mode == mode), None)
                     for label in jax_labels + torch_labels}
            lines.append(
                f"| {name} | {mode} | {batches[name]} | " + " | ".join(fmt_ms(v) for v in found.values()) + " | "
                + " | ".join(fmt_ratio(found[a], found[b]) for a, b, _ in ratios) + " |"
            )
            spreads += [f"{name} {v.mode} {v.label}: max/min {max(v.times) / min(v.times):.1f}"
                        for v in found.values() if v is not None and v.times and max(v.times) > 2 * min(v.times)]
    lines += ["", "Ratios: median ÷ median (min ÷ min); below 1 fusionjax is faster.", "",
              "CPU time per call (all threads of this process; less distorted by other processes than wall time):",
              "", "| model | mode | " + " | ".join(["fusionjax", *headings[1:]]) + " (min CPU ms) | fusionjax ÷ NCHW "
              "| ÷ channels_last |",
              "|---|---|" + "---|" * (len(headings) + 2)]
    for name, variants in results.items():
        for mode in ("forward", "train"):
            found = [next((v for v in variants if v.label == label and v.mode == mode and v.cpu_times), None)
                     for label in jax_labels + torch_labels]
            cells = [f"{1e3 * min(v.cpu_times):.0f}" if v else "–" for v in found]
            jax_v, torch_vs = found[0], found[len(jax_labels):len(jax_labels) + 2]
            cpu_ratios = [f"{min(jax_v.cpu_times) / min(v.cpu_times):.2f}" if jax_v and v else "–" for v in torch_vs]
            lines.append(f"| {name} | {mode} | " + " | ".join(cells + cpu_ratios) + " |")
    lines += ["",
              "| model | variant | mode | compile / first call (s) |", "|---|---|---|---|"]
    for name, variants in results.items():
        for v in variants:
            if v.compile_s:
                lines.append(f"| {name} | {v.label} | {v.mode} | {v.compile_s:.1f} |")
    peak = gpu_peak() if gpu else None
    lines += ["", "| model | variant | mode | images/s (median) | model GFLOP/s | host page faults per call (median)"
              + (" | fraction of bf16 peak |" if gpu else " |"),
              "|---|---|---|---|---|---|" + ("---|" if gpu else "")]
    for name, variants in results.items():
        model_flops = {v.mode: v.flops for v in variants if v.flops}
        for v in variants:
            if v.times:
                calls_per_s = 1 / statistics.median(v.times)
                flops_per_s = model_flops[v.mode] * calls_per_s if v.mode in model_flops else None
                images_per_s = batches[name] * calls_per_s
                cells = [f"{images_per_s:.{0 if images_per_s >= 100 else 1}f}",
                         f"{flops_per_s / 1e9:.0f}" if flops_per_s else "–",
                         f"{statistics.median(v.page_faults):.0f}"]
                if gpu:
                    cells.append(f"{flops_per_s / peak:.2f}" if flops_per_s and peak else "–")
                lines.append(f"| {name} | {v.label} | {v.mode} | " + " | ".join(cells) + " |")
    if spreads:
        lines += ["", "Spread over 2× (distrust these): " + "; ".join(spreads) + "."]
    return "\n".join(lines)


def machine() -> list[str]:
    import torch

    from fusionjax.torch_compat import import_torchvision

    cpu = platform.processor() or "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    return [
        f"- machine: {cpu}, {os.cpu_count()} cores; JAX devices: {jax.device_count()} × {device.platform} "
        f"({device.device_kind})",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}, torch {torch.__version__}, torchvision {import_torchvision().__version__}",
        f"- environment: XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, torch threads {torch.get_num_threads()}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(CPU_SHAPES), help="comma-separated, from " + ", ".join(CPU_SHAPES))
    per_model = {platform: ", ".join(f"{name} {batch}" for name, (batch, _) in shapes.items())
                 for platform, shapes in (("CPU", CPU_SHAPES), ("GPU", GPU_SHAPES))}
    parser.add_argument("--batch", type=int, help="one batch size for every model (default, per model: "
                        + "; ".join(f"{platform} {sizes}" for platform, sizes in per_model.items()) + ")")
    parser.add_argument("--rounds", type=int, default=7, help="timed calls of every variant (default 7)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before the rounds (default 1)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, no torch.compile, nothing appended")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (it compiles for minutes)")
    parser.add_argument("--no-append", action="store_true", help=f"print only; do not append to {RESULTS.name}")
    parser.add_argument("--jax-only", action="store_true", help="time fusionjax alone (for comparing XLA flags)")
    parser.add_argument("--note", default="", help="what this run tries, written with its table")
    parser.add_argument("--reuse-freed-host-memory", action="store_true",
                        help="call fusionjax.deploy.reuse_freed_host_memory() first, as fusionjax-train "
                        "--reuse_freed_host_memory does (both frameworks share the process and the setting)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CPU_SHAPES))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(CPU_SHAPES)}")
    rounds = 3 if args.quick else args.rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.batch is not None and args.batch < 1:
        parser.error("--batch must be at least 1")
    malloc = host_malloc() + (f" (LD_PRELOAD={os.environ['LD_PRELOAD']})" if os.environ.get("LD_PRELOAD") else "")
    if args.reuse_freed_host_memory:  # before torch and JAX's backend start: their threads keep the arenas they get
        malloc += ", reuse_freed_host_memory()" if reuse_freed_host_memory() else ", not glibc's: nothing to reuse"

    import torch

    gpu = jax.devices()[0].platform == "gpu"
    if not gpu:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    if gpu and not torch.cuda.is_available():
        sys.exit("JAX sees a GPU but this torch build has no CUDA: install a CUDA build of torch to compare.")
    shapes = GPU_SHAPES if gpu else CPU_SHAPES
    batches = {name: args.batch or shapes[name][0] for name in names}
    dtype = jnp.bfloat16 if gpu else jnp.float32
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {}
    for name in names:
        batch, size = batches[name], shapes[name][1]
        print(f"{name}: batch {batch}, {size}×{size}: compiling…", flush=True)
        micro_batch = None if gpu else CPU_MICRO_BATCH[name]
        variants = jax_variants(name, batch, size, dtype, micro_batch)
        if not args.jax_only:
            variants += torch_variants(name, batch, size, gpu, not (args.quick or args.no_torch_compile), micro_batch)
        time_rounds(variants, rounds, args.warmup)
        results[name] = variants
        print(tables({name: variants}, batches, gpu), flush=True)
    load_after = os.getloadavg()

    report = "\n".join([
        f"\n## {started:%Y-%m-%d %H:%M} UTC — {args.note or 'benchmark run'}\n",
        f"- command: `{' '.join(shlex.quote(a) for a in ['python', '-m', 'benchmarks.compare', *(argv or sys.argv[1:])])}`",
        *machine(),
        f"- host malloc: {malloc}",
        f"- {rounds} rounds, {args.warmup} warm-up; {'bfloat16 (torch autocast)' if gpu else 'float32'}",
        *([] if gpu else ["- micro-batches of the micro-batched forwards: "
                          + ", ".join(f"{name} {CPU_MICRO_BATCH[name]}" for name in names)]),
        "- load average (1, 5, 15 min): before " + ", ".join(f"{v:.2f}" for v in load_before)
        + "; after " + ", ".join(f"{v:.2f}" for v in load_after),
        "",
        tables(results, batches, gpu),
        "",
    ])
    print(report)
    if not (args.quick or args.no_append):
        with RESULTS.open("a") as f:
            f.write(report)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
