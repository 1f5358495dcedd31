"""Where a benchmark run goes: its full record to ``runs/``, a short section to ``RESULTS.md``, both atomically.

A record names what ran, where and with what: the command, the machine, the versions, the environment variables
that change speed, and the load average; each benchmark adds its own lines and tables. Files are written to a
temporary file beside the target and renamed over it, so a crash leaves the old file whole; a record never
replaces an earlier one.
"""

import datetime
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import cpu_name, cpu_vector_extensions

RESULTS = Path(__file__).with_name("RESULTS.md")
RUNS_HEADING = "## Runs appended by the benchmark commands"
# Environment variables read at process start that change how fast one side or the other runs.
SPEED_VARIABLES = ("XLA_FLAGS", "FUSIONJAX_KEEP_XLA_FLAGS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "LD_PRELOAD",
                   "MALLOC_ARENA_MAX")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def command_line(module: str, argv: list[str] | None) -> str:
    return " ".join(shlex.quote(a) for a in ["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def header(title: str, module: str, argv: list[str] | None, started: datetime.datetime) -> list[str]:
    """The lines every record starts with: what ran, on what machine, with which versions and environment."""
    import flax
    import jax

    device = jax.devices()[0]
    versions = [f"python {platform.python_version()}", f"jax {jax.__version__}", f"flax {flax.__version__}"]
    for name in ("optax", "torch", "torchvision"):
        if name in sys.modules:  # only what this run imported
            versions.append(f"{name} {getattr(sys.modules[name], '__version__', '?')}")
    environment = ", ".join(f"{name}={os.environ[name]!r}" for name in SPEED_VARIABLES if name in os.environ)
    return [
        f"# {started:%Y-%m-%d %H:%M} UTC — {title}",
        "",
        f"- command: `{command_line(module, argv)}`",
        f"- machine: {cpu_name()} ({cpu_vector_extensions()}), {os.cpu_count()} cores; JAX devices: "
        f"{jax.device_count()} × {device.platform} ({device.device_kind})",
        f"- versions: {', '.join(versions)}",
        f"- environment: {environment or 'none of ' + ', '.join(SPEED_VARIABLES)}",
    ]


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s contents with ``text``: written beside it, flushed, then renamed over it."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def append_atomically(path: Path, text: str) -> None:
    """``path`` with ``text`` added at its end, replaced in one rename (see ``write_atomically``)."""
    path = Path(path)
    write_atomically(path, (path.read_text(encoding="utf-8") if path.exists() else "") + text)


def save_record(runs: Path, name: str, text: str) -> Path:
    """Write ``text`` as ``runs/<name>.md`` (``<name>-2.md``… if taken: an earlier record is never replaced)."""
    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=runs, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        for attempt in range(1, 1000):
            target = runs / (f"{name}.md" if attempt == 1 else f"{name}-{attempt}.md")
            try:
                os.link(temporary, target)  # fails if the name is taken, where a rename would replace
                return target
            except FileExistsError:
                continue
        raise FileExistsError(f"benchmarks: {runs} holds 999 records named {name}; move some away.")
    finally:
        Path(temporary).unlink(missing_ok=True)


def publish(results: Path, started: datetime.datetime, slug: str, title: str, record: str, summary: str) -> Path:
    """Save the full ``record`` under ``runs/`` beside ``results`` and append ``summary`` to ``results`` under
    ``RUNS_HEADING``, linking the record. Returns the record's path."""
    results = Path(results)
    path = save_record(results.parent / "runs", f"{started:%Y-%m-%d_%H%M}_{slug}", record)
    existing = results.read_text(encoding="utf-8") if results.exists() else ""
    heading = "" if RUNS_HEADING in existing else f"\n{RUNS_HEADING}\n"
    link = path.relative_to(results.parent).as_posix()
    append_atomically(results, f"{heading}\n### {started:%Y-%m-%d %H:%M} UTC — {title} ([record]({link}))\n\n"
                               f"{summary}\n")
    return path


def timing_record(header_lines: list[str], setup: list[str], load: tuple[str, str], summary: str,
                  results: dict) -> str:
    """A timing run's full record: ``header`` lines, the ``setup`` lines, the load before and after, the
    ``summary`` table, every variant's row and every call's time; ``results`` maps a model to (batch, variants)."""
    from benchmarks import tables

    # The load before the run: the one after includes the benchmark's own threads, up to one per core.
    busiest = float(load[0].split(",")[0])
    warning = ([f"- **busy machine** (1-minute load {busiest:.1f} on {os.cpu_count()} cores before the run): wall "
                "times are inflated "
                "unevenly, torch's most where its OpenMP threads spin (its default); compare CPU times, or re-run "
                "on a quiet machine (docs/cpu-performance.md)"] if busiest > 0.5 * (os.cpu_count() or 1) else [])
    return "\n".join([
        *header_lines, *setup,
        f"- load average (1, 5, 15 min): before {load[0]}; after {load[1]}", *warning,
        "", "Times: the least (median) of the rounds; ratios: min ÷ min (median ÷ median); below 1 fusionjax is "
        "faster. CPU time: the least CPU time of the process (all threads) per call.", "",
        summary, "",
        tables.markdown(tables.PER_CALL_HEADINGS, [row for name, (batch, variants) in results.items()
                                                    for row in tables.per_call_rows(name, batch, variants)]),
        "", "Every call (ms):", "",
        *[line for name, (_, variants) in results.items() for line in tables.raw_times(name, variants)], "",
    ])
