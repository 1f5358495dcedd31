"""fusionjax-claims' command line: a missing extra fails at once, naming it; a quick run never writes over a full
report; the report states each rule before its number and labels every quick verdict."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusionjax.claims import report
from fusionjax.claims.cli import main


def test_a_missing_extra_fails_in_the_first_second_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # how Python marks a module that cannot be imported
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "claims")])
    assert time.perf_counter() - started < 1.0
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "mlxtend not installed" in error and "pip install 'fusionjax[claims]'" in error
    assert not (tmp_path / "claims").exists()


def test_a_quick_run_never_writes_over_a_full_report(tmp_path, capsys):
    out = tmp_path / "claims"
    assert main(["--out", str(out), "--only", "A2"]) == 0  # a full run of one cheap claim
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(out), "--quick", "--only", "A2"])
    assert exit_info.value.code == 2
    assert "holds a full run's report" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    # The run names the code that measured: this checkout's commit, as git reports it.
    package = Path(report.__file__).parents[1]
    head = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    (run,) = json.loads((out / "claims.json").read_text())["runs"]
    assert f"at commit {head}" in run["code"] and f"at commit {head}" in (out / "CLAIMS.md").read_text()


def _results(mode: str) -> dict:
    run = {"command": "fusionjax-claims", "mode": mode, "machine": "m", "load_start": "0", "load_end": "0",
           "started": "2026-01-01 00:00", "wall_minutes": 1.0, "jax": "0", "claims": "A2"}
    claim = {"statement": "s", "verdict": "confirmed", "measured": "NUMBERS", "rule": "RULE", "setup": "SETUP",
             "plots": ["A2.png"], "details": "", "run": 0, "seconds": 3}
    return {"runs": [run], "claims": {"A2": claim}}


def test_each_section_states_setup_and_rule_before_the_number_and_the_verdict():
    text = report.render(_results("full"), ["A2"])
    section = text.split("## A2", 1)[1]
    assert section.index("SETUP") < section.index("RULE") < section.index("NUMBERS") < section.index("Verdict")
    assert "quick" not in section


def test_quick_verdicts_say_so_in_the_summary_and_the_section():
    text = report.render(_results("quick"), ["A2"])
    summary, section = text.split("## A2", 1)
    assert "**confirmed** (quick)" in summary
    assert "**Verdict: confirmed** (quick run: toy sizes, not evidence)" in section
