"""Numbers fed to each claim's rule (``Claim.decide``), one module per group of claims, each case with the
verdict the rule must return: tests/test_claim_rules.py runs them."""
