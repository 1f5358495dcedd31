"""Markdown tables of timed calls, and the ratios between them."""

import statistics

from benchmarks.harness import Timed


def markdown(headings: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; every row must have one cell per heading."""
    for row in rows:
        if len(row) != len(headings):
            raise ValueError(f"tables.markdown: a row has {len(row)} cells for {len(headings)} headings: {row}")
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def measured(timed: Timed | None) -> bool:
    return timed is not None and bool(timed.times)


def ms(timed: Timed | None) -> str:
    """``"min (median)"`` in milliseconds; ``–`` where not timed, ``failed`` where it did not build."""
    if timed is None:
        return "–"
    if not timed.times:
        return "failed"
    return f"{1e3 * timed.min_s:.1f} ({1e3 * timed.median_s:.1f})"


def ratio(numerator: Timed | None, denominator: Timed | None) -> str:
    """``numerator ÷ denominator`` as ``"min ÷ min (median ÷ median)"``; below 1 the numerator is faster."""
    if not (measured(numerator) and measured(denominator)):
        return "–"
    return (f"{numerator.min_s / denominator.min_s:.2f} "
            f"({numerator.median_s / denominator.median_s:.2f})")


def cpu_ratio(numerator: Timed | None, denominator: Timed | None) -> str:
    """The ratio of the least CPU time (all threads of the process) each call took."""
    if not (measured(numerator) and measured(denominator)):
        return "–"
    return f"{numerator.min_cpu_s / denominator.min_cpu_s:.2f}"


def per_call_rows(model: str, batch: int, variants: list[Timed]) -> list[list[str]]:
    """One row per variant: wall and CPU time, images/s, the model's GFLOP/s, page faults, compile time."""
    model_flops = {v.mode: v.flops for v in variants if v.flops}
    rows = []
    for v in variants:
        if not v.times:
            rows.append([model, v.label, v.mode, "failed", "–", "–", "–", "–", "–"])
            continue
        flops = model_flops.get(v.mode)
        images_per_s = batch / v.min_s
        rows.append([
            model, v.label, v.mode, ms(v), f"{1e3 * v.min_cpu_s:.0f}",
            f"{images_per_s:.{0 if images_per_s >= 100 else 1}f}",
            f"{flops / v.min_s / 1e9:.0f}" if flops else "–",
            f"{statistics.median_low(v.page_faults)}",
            f"{v.compile_s:.1f}" if v.compile_s else "–",
        ])
    return rows


PER_CALL_HEADINGS = ["model", "variant", "mode", "ms, min (median)", "CPU ms (min)", "images/s (best)",
                     "model GFLOP/s (best)", "page faults per call (median)", "compile / first call (s)"]


def raw_times(model: str, variants: list[Timed]) -> list[str]:
    """Every recorded call, in milliseconds: the record a table can be recomputed from."""
    return [f"- {model} {v.label} {v.mode}: wall " + ", ".join(f"{1e3 * t:.3f}" for t in v.times)
            + "; CPU " + ", ".join(f"{1e3 * t:.1f}" for t in v.cpu_times) for v in variants if v.times]
