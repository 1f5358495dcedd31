"""What every claim shares: its outcome, the verdict words, the run's context and the seed-spread helpers."""

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

CONFIRMED, REFUTED, PARTLY, NOT_MEASURABLE = "confirmed", "refuted", "partly", "not measurable here"
VERDICTS = (CONFIRMED, REFUTED, PARTLY, NOT_MEASURABLE)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a claim's measurement found.

    ``measured`` is the one line of numbers the verdict follows from; ``rule`` the threshold that turns them into
    ``verdict``; ``setup`` the data, model, seeds and budget (or what was computed instead of trained);
    ``details`` Markdown for the report's section (tables of every number behind the plot).
    """

    verdict: str
    measured: str
    rule: str
    setup: str
    plots: tuple[str, ...]
    details: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}.")
        if not self.plots:
            raise ValueError("every claim's outcome has at least one plot.")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the fusion literature: an ID, the claim in one line, how to measure it, and its rule.

    ``decide`` is the rule, fixed before any number is measured: it takes the measured numbers (keyword arguments)
    and returns the verdict, and its docstring names every verdict it can return. ``measure`` calls it; the
    tests feed it numbers that give each of those verdicts (tests/test_claim_rules.py), so no rule is a formality.
    """

    id: str
    statement: str
    measure: Callable[["Context"], Outcome]
    decide: Callable[..., str]


def claim(claim_id: str, statement: str, decide: Callable[..., str]) -> Callable[[Callable[["Context"], Outcome]],
                                                                                 Claim]:
    """Decorator: the function measuring a claim becomes that ``Claim``, decided by ``decide``."""
    return lambda measure: Claim(claim_id, statement, measure, decide)


def verdicts_named(decide: Callable[..., str]) -> set[str]:
    """The verdicts a rule's docstring names: what its tests must show it can return."""
    text = " ".join((decide.__doc__ or "").split())
    return {verdict for verdict in VERDICTS if verdict in text}


@dataclasses.dataclass
class Context:
    """One run of the claims: its size (``quick``), where plots go, and what claims share (data, trained runs)."""

    quick: bool
    plot_dir: Path
    cache: dict[Any, Any] = dataclasses.field(default_factory=dict)

    def pick(self, full: Any, quick: Any) -> Any:
        """``quick`` in a ``--quick`` run, else ``full``: each claim states both sizes side by side."""
        return quick if self.quick else full

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()`` once per run for ``key``: data sets, trained models and compiled steps shared by claims."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def save_plot(self, fig, name: str) -> str:
        """Write ``fig`` as ``name`` (a PNG) and return the file name; a quick run's figures say so on their face."""
        from fusionjax.claims import plots

        return plots.save(fig, self.plot_dir / name, quick=self.quick)


def spread(values: Any) -> str:
    """``mean [min–max]`` of per-seed values, the form every table and verdict line uses."""
    values = np.asarray(values, np.float64)
    if values.size == 1:
        return f"{values.item():.4g}"
    return f"{values.mean():.4g} [{values.min():.4g}–{values.max():.4g}]"


def separated(lower: Any, higher: Any) -> bool:
    """True when every seed of ``lower`` is below every seed of ``higher``: a difference larger than the spread."""
    return float(np.max(lower)) < float(np.min(higher))


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
