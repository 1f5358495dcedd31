"""Every claim's rule can return each verdict it names: numbers fed to ``Claim.decide`` that give each of them, so
that no rule is a formality. The cases live beside each other in tests/claim_rules/, one module per group."""

import pytest

from claim_rules import architecture, counting, depth, fusion, memory, optimization, small_data, very_deep
from fusionjax.claims import CLAIMS, base

CASES = {}
for _group in (fusion, architecture, counting, small_data, optimization, depth, very_deep, memory):
    assert not set(_group.RULE_CASES) & set(CASES), _group.__name__
    CASES.update(_group.RULE_CASES)


def test_every_claim_has_rule_cases():
    assert sorted(CASES) == sorted(CLAIMS)


@pytest.mark.parametrize("claim_id", list(CLAIMS))
def test_rule_returns_each_verdict_it_names_and_no_other(claim_id):
    decide = CLAIMS[claim_id].decide
    named = base.verdicts_named(decide)
    assert len(named) >= 2, f"{claim_id}: a rule that names one verdict cannot fail ({decide.__doc__!r})"
    returned = set()
    for numbers, expected in CASES.get(claim_id, []):
        assert decide(**numbers) == expected, (claim_id, numbers)
        returned.add(expected)
    assert returned == named, f"{claim_id}: the cases show {sorted(returned)}, the rule names {sorted(named)}"
