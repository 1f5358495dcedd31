"""fusionjax-claims: measure the fusion literature's claims on fusionjax's models, write DIR/CLAIMS.md and plots.

    fusionjax-claims --out docs/claims              # every claim at the sizes of the committed report
    fusionjax-claims --out /tmp/claims --quick      # every claim at toy sizes: a smoke test
    fusionjax-claims --out docs/claims --only A5,M3 # rerun some claims; the report keeps the others' rows
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from fusionjax.claims import CLAIMS
from fusionjax.claims.base import Context
from fusionjax.claims.report import load_results, write_report


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()}"


def _versions() -> str:
    """Python and the packages whose versions can move the claims' numbers."""
    found = [f"Python {platform.python_version()}"]
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "torchvision"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def _code() -> str:
    """Which code measured: fusionjax's version, and where it runs from a git checkout, the commit and whether
    the package's files differed from it (a committed report must come from committed code)."""
    version = f"fusionjax {importlib.metadata.version('fusionjax')}"
    package = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        changes = subprocess.run(["git", "-C", str(package), "status", "--porcelain", "--", "."],
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine
        return version
    if commit.returncode:  # installed from a wheel, not a checkout
        return version
    return f"{version} at commit {commit.stdout.strip()}" + (" with uncommitted changes" if changes.stdout else "")


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# What the claims import beyond fusionjax's own requirements: the ``claims`` extra (mlxtend, which brings
# scikit-learn and matplotlib). Checked before anything runs, so a missing one fails in the first second.
EXTRA_MODULES = ("mlxtend", "sklearn", "matplotlib")


def missing_extra() -> list[str]:
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line's arguments, checked: ``ids`` are the claims to run."""
    parser = argparse.ArgumentParser(
        prog="fusionjax-claims", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="Claim IDs: " + ", ".join(CLAIMS))
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for CLAIMS.md, claims.json and the plots (created if missing)")
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks that every claim runs; its "
                        "verdicts are marked (quick) and are not evidence")
    parser.add_argument("--only", default="", metavar="ID,...", help="comma-separated claim IDs to run (default: all)")
    args = parser.parse_args(argv)
    args.ids = [part.strip().upper() for part in args.only.split(",") if part.strip()] or list(CLAIMS)
    unknown = [claim_id for claim_id in args.ids if claim_id not in CLAIMS]
    if unknown:
        parser.error(f"unknown claim ID(s) {', '.join(unknown)}; valid IDs: {', '.join(CLAIMS)}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a directory (it is created if missing)")
    missing = missing_extra()
    if missing:
        parser.error(f"{', '.join(missing)} not installed: the claims need the 'claims' extra, "
                     "pip install 'fusionjax[claims]' (or pip install -e '.[claims]' in a clone)")
    if args.quick and any(run["mode"] == "full" for run in load_results(args.out)["runs"]):
        parser.error(f"--out {args.out} holds a full run's report, and --quick would mix toy-size verdicts into it; "
                     "give --quick another directory")
    return args


def _merge(earlier: dict, outcomes: dict, run: dict) -> dict:
    """``earlier`` results with ``outcomes`` replacing their claims' rows; runs no row refers to any more dropped."""
    kept = {i: c for i, c in earlier["claims"].items() if i in CLAIMS and i not in outcomes}
    runs_kept = sorted({c["run"] for c in kept.values()})
    renumber = {old: new for new, old in enumerate(runs_kept)}
    rows = {**{i: {**c, "run": renumber[c["run"]]} for i, c in kept.items()},
            **{i: {"statement": CLAIMS[i].statement, **o, "run": len(runs_kept)} for i, o in outcomes.items()}}
    return {"runs": [earlier["runs"][i] for i in runs_kept] + [run],
            "claims": {i: rows[i] for i in CLAIMS if i in rows}}  # in the report's order, whatever ran when


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import jax

    args.out.mkdir(parents=True, exist_ok=True)
    earlier = load_results(args.out)
    started, load_start, clock = datetime.datetime.now(datetime.timezone.utc), _load(), time.perf_counter()
    command = " ".join(shlex.quote(a) for a in ["fusionjax-claims", *(sys.argv[1:] if argv is None else argv)])
    code = _code()  # before the run writes its report, which may lie in the same checkout
    staging = Path(tempfile.mkdtemp(dir=args.out, prefix=".staging-"))
    context = Context(quick=args.quick, plot_dir=staging)
    outcomes, failed = {}, []
    try:
        for claim_id in args.ids:
            claim, claim_clock = CLAIMS[claim_id], time.perf_counter()
            print(f"{claim_id}: {claim.statement}", flush=True)
            try:
                outcomes[claim_id] = dataclasses.asdict(claim.measure(context))
            except Exception as error:  # one claim's failure must not lose the others' measurements
                traceback.print_exc()
                failed.append(claim_id)
                outcomes[claim_id] = {"verdict": "error", "measured": f"{type(error).__name__}: {error}",
                                      "rule": "", "setup": "", "plots": [], "details": ""}
            outcomes[claim_id]["seconds"] = round(time.perf_counter() - claim_clock)
            print(f"{claim_id}: {outcomes[claim_id]['verdict']} — {outcomes[claim_id]['measured']} "
                  f"({outcomes[claim_id]['seconds']} s)", flush=True)
            # The report is rewritten after every claim, so that an interrupted run keeps what it measured.
            run = {"command": command, "mode": "quick" if args.quick else "full", "machine": _machine(),
                   "load_start": load_start, "load_end": _load(), "started": f"{started:%Y-%m-%d %H:%M}",
                   "wall_minutes": (time.perf_counter() - clock) / 60, "jax": jax.__version__,
                   "versions": _versions(), "code": code, "backend": jax.default_backend(),
                   "claims": "all" if list(outcomes) == list(CLAIMS) else ", ".join(outcomes)}
            report = write_report(args.out, staging, _merge(earlier, outcomes, run), list(CLAIMS))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {report} in {(time.perf_counter() - clock) / 60:.1f} min", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
