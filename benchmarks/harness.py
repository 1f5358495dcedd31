"""The timing harness of every benchmark here: calls timed in alternating rounds, with what else the machine did.

Every round times one call of every variant, JAX and torch interleaved, the order reversed every other round so
that drift (another process starting, a CPU clocking down) hits both sides alike. Warm-up calls, and compiling,
are excluded and reported apart. Each call records its wall time, the CPU time of this process (all threads: less
distorted by other processes than wall time) and its minor page faults (memory the kernel had to map in afresh).
Minima are what a call costs when nothing else runs; medians what it cost during the run: docs/cpu-performance.md.
"""

import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Timed:
    """One thing timed: ``run()`` does one call and returns once its results are ready (None: it failed to build)."""

    framework: str  # "jax" or "torch"
    label: str
    mode: str  # "forward" or "train"
    run: Callable[[], None] | None
    compile_s: float | None = None  # lowering and compiling (JAX), or the first call (torch.compile)
    flops: float | None = None  # per call, the model's count (see steps.compiled)
    program: object = None  # the compiled JAX program, where there is one
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    page_faults: list[int] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def min_s(self) -> float:
        return min(self.times)

    @property
    def min_cpu_s(self) -> float:
        return min(self.cpu_times)


def interleaved(variants: list[Timed]) -> list[Timed]:
    """The runnable variants, JAX and torch alternating, each side in its given order."""
    runnable = [v for v in variants if v.run is not None]
    jax_side = [v for v in runnable if v.framework == "jax"]
    other_side = [v for v in runnable if v.framework != "jax"]
    order = []
    for i in range(max(len(jax_side), len(other_side))):
        order += jax_side[i : i + 1] + other_side[i : i + 1]
    return order


def time_rounds(variants: list[Timed], rounds: int, warmup: int = 1) -> None:
    """Warm every variant up, then time one call of each per round, in ``interleaved`` order, reversed every
    other round; the measurements land in each variant's lists."""
    order = interleaved(variants)
    for variant in order:
        for _ in range(warmup):
            variant.run()
    for r in range(rounds):
        for variant in order if r % 2 == 0 else order[::-1]:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start, cpu_start = time.perf_counter(), time.process_time()
            variant.run()
            variant.times.append(time.perf_counter() - start)
            variant.cpu_times.append(time.process_time() - cpu_start)
            variant.page_faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)


def pin_to_cores(cores: set[int] | None = None) -> list[int]:
    """Pin every thread of this process, and so the threads they start, to ``cores`` (default: the cores it may
    use now); returns them. Called before JAX and torch start their thread pools, so both share the same cores."""
    cores = set(cores) if cores is not None else os.sched_getaffinity(0)
    for thread in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread), cores)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    return sorted(os.sched_getaffinity(0))


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``"0.12, 0.34, 0.56"``."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def cpu_vector_extensions() -> str:
    """The widest x86 vector extensions the CPU has (the kernels torch and XLA pick depend on them)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    found = [name for name in ("avx512f", "avx512_bf16", "amx_tile", "avx2") if f" {name}" in flags]
    return "+".join(found) or "no AVX"
