"""Rule cases for fusionjax/claims/optimization.py: {claim ID: [(numbers, verdict), ...]}."""

import numpy as np

from fusionjax.claims.base import CONFIRMED, PARTLY, REFUTED

RULE_CASES = {
    # First-layer gradient norms per seed at 110 layers.
    "O1": [
        # The last full report: with BatchNorm the plain net's first layer explodes, without it gets ~1e-3.
        (dict(plain_with_bn=[2.868e6, 1.026e7, 1.892e7], plain_without_bn=[6.834e-5, 9.996e-4, 2.334e-3],
              residual_with_bn=[11.18, 15.31, 19.6], residual_without_bn=[5.812e7, 1.911e8, 3.386e8]), REFUTED),
        # The claim's own numbers: ~1e-20 for the plain net, ~1e-2 for the ResNet.
        (dict(plain_with_bn=[3e-21, 1e-20, 4e-20], plain_without_bn=[1e-19, 2e-20, 5e-21],
              residual_with_bn=[8e-3, 1e-2, 2e-2], residual_without_bn=[5e-3, 1e-2, 3e-2]), CONFIRMED),
        # Vanished without BatchNorm only.
        (dict(plain_with_bn=[2.868e6, 1.026e7, 1.892e7], plain_without_bn=[1e-12, 3e-13, 2e-11],
              residual_with_bn=[11.18, 15.31, 19.6], residual_without_bn=[0.02, 0.05, 0.1]), PARTLY),
    ],
    # E[x²] growth of the He/2 net over ResNet-110's 51 same-width additions, per seed.
    "O5": [
        (dict(preact_growth=[5545, 1.484e4, 2.068e4], postact_growth=[1.088e6, 1.142e6, 1.182e6]), REFUTED),
        (dict(preact_growth=[1.3, 1.5, 1.9], postact_growth=[0.8, 1.2, 1.6]), CONFIRMED),
        # One seed of the post-activation net just outside 2×: not stable there.
        (dict(preact_growth=[1.3, 1.5, 1.9], postact_growth=[1.4, 1.8, 2.3]), PARTLY),
    ],
    # First-layer / classifier gradient norm of DenseNet-BC, rows depths 100 and 250, columns seeds.
    "O8": [
        (dict(ratio_with_bn=np.array([[1.37, 1.2, 1.5], [1.36, 1.1, 1.9]]),
              ratio_without_bn=np.array([[0.65, 0.5, 0.7], [0.54, 0.4, 0.6]])), CONFIRMED),
        # Strong with BatchNorm, but the unnormalized 250-layer net's first layer gets 1/30 of the classifier's.
        (dict(ratio_with_bn=np.array([[1.37, 1.2, 1.5], [1.36, 1.1, 1.9]]),
              ratio_without_bn=np.array([[0.65, 0.5, 0.7], [0.03, 0.05, 0.04]])), PARTLY),
        # Like the plain nets of the last report: exploding with BatchNorm, vanishing without.
        (dict(ratio_with_bn=np.array([[1.2e7, 3e6, 2e7], [9e12, 1e12, 1e13]]),
              ratio_without_bn=np.array([[6.0, 2.9, 9.8], [99.0, 52.0, 110.0]])), REFUTED),
    ],
    # Neighbour correlation of the input gradients along the line, deep plain and residual nets, per seed.
    "O9": [
        (dict(plain_deep=[0.02, 0.08, 0.15], residual_deep=[0.62, 0.7, 0.81]), CONFIRMED),
        # The residual net's is higher for every seed, but the plain net's is not yet white noise.
        (dict(plain_deep=[0.28, 0.31, 0.35], residual_deep=[0.62, 0.67, 0.75]), PARTLY),
        # Overlapping seeds: no difference in correlation to explain.
        (dict(plain_deep=[0.55, 0.6, 0.7], residual_deep=[0.5, 0.65, 0.72]), REFUTED),
    ],
}
