"""Rule cases for fusionjax/claims/memory.py: {claim ID: [(numbers, verdict), ...]}."""

import numpy as np

from fusionjax.claims.base import CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED

# Per-seed values whose mean [min–max] the last full report printed: with three seeds, the middle one is
# 3 × mean − min − max.
_BLOCK_ADD, _BLOCK_CONCAT = np.array([0.01208, 0.01375, 0.01428]), np.array([0.0139, 0.01434, 0.01652])
_RESNET20, _DENSENET_BC_52 = np.array([0.01147, 0.01329, 0.01349]), np.array([0.02838, 0.03062, 0.03439])

RULE_CASES = {
    "M1": [
        (dict(saved_ratio=253.8 / 167.7), PARTLY),  # the last full report: 1.51×, more than 30–40%
        (dict(saved_ratio=1.35), CONFIRMED),
        (dict(saved_ratio=1.25), CONFIRMED),  # the interval's ends belong to it
        (dict(saved_ratio=1.1), PARTLY),
        (dict(saved_ratio=0.9), REFUTED),
        (dict(saved_ratio=1.0), REFUTED),
    ],
    "M2": [
        (dict(backend="cpu", peak_cut=0.0, slowdown=1.01), NOT_MEASURABLE),  # the last full report, XLA:CPU
        (dict(backend="cpu", peak_cut=0.5, slowdown=1.2), NOT_MEASURABLE),  # CPU numbers never decide
        (dict(backend="gpu", peak_cut=0.45, slowdown=1.15), CONFIRMED),
        (dict(backend="gpu", peak_cut=0.45, slowdown=1.0), PARTLY),  # the memory drops at no measurable cost
        (dict(backend="gpu", peak_cut=0.1, slowdown=1.15), PARTLY),
        (dict(backend="gpu", peak_cut=0.01, slowdown=1.15), REFUTED),
        (dict(backend="gpu", peak_cut=-0.05, slowdown=1.0), REFUTED),
    ],
    "M3": [
        (dict(max_change=1.4e-6, same_predictions=True, speedups=np.array([1.02, 1.00, 0.99])), PARTLY),  # last
        (dict(max_change=1.4e-6, same_predictions=True, speedups=np.array([1.3, 1.2, 1.1])), CONFIRMED),
        (dict(max_change=1.4e-6, same_predictions=True, speedups=np.array([1.3, 1.2, 1.04])), PARTLY),
        (dict(max_change=3e-3, same_predictions=True, speedups=np.array([1.3, 1.2, 1.1])), REFUTED),
        (dict(max_change=1.4e-6, same_predictions=False, speedups=np.array([1.3, 1.2, 1.1])), REFUTED),
    ],
    "M4": [
        # the last full report: the blocks' seeds overlap, the networks' do not
        (dict(block_add=_BLOCK_ADD, block_concat=_BLOCK_CONCAT, network_add=_RESNET20,
              network_concat=_DENSENET_BC_52), PARTLY),
        (dict(block_add=_BLOCK_ADD * 0.5, block_concat=_BLOCK_CONCAT, network_add=_RESNET20,
              network_concat=_DENSENET_BC_52), CONFIRMED),
        (dict(block_add=_BLOCK_ADD, block_concat=_BLOCK_CONCAT, network_add=_RESNET20, network_concat=_RESNET20),
         REFUTED),  # add wins neither
        (dict(block_add=_BLOCK_CONCAT * 2, block_concat=_BLOCK_CONCAT, network_add=_DENSENET_BC_52,
              network_concat=_RESNET20), REFUTED),  # concat wins both
    ],
}
