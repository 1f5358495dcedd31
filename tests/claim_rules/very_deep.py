"""Rule cases for fusionjax/claims/very_deep.py: {claim ID: [(numbers, verdict), ...]}."""

from fusionjax.claims.base import CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED

# ResNet-110's final training errors on digits in the last full report (O2: 400 steps of batch 128, 3 seeds).
_RESNET_110 = [0.0, 0.0, 0.002088]

RULE_CASES = {
    "O10": [
        # He et al. 2016 §4.2: the 1202-layer net fits its training set as well as ResNet-110 does.
        (dict(deep_train_loss=[0.41, 0.004], deep_final_train_error=0.001, reference_final_train_error=_RESNET_110),
         CONFIRMED),
        # It learns (loss below chance, ln 10 = 2.303) but stays 20 points behind ResNet-110's worst seed.
        (dict(deep_train_loss=[2.1, 0.9], deep_final_train_error=0.21, reference_final_train_error=_RESNET_110),
         PARTLY),
        # Diverged: a non-finite loss at any measurement, even if a later one is finite.
        (dict(deep_train_loss=[float("nan"), 0.5], deep_final_train_error=0.1, reference_final_train_error=_RESNET_110),
         REFUTED),
        # Finite but no better than chance, while ResNet-110 learns at the budget (its final training errors after
        # 200 steps of batch 32 at lr 0.05, three seeds, measured while choosing this claim's budget).
        (dict(deep_train_loss=[5260.0, 4.575e5], deep_final_train_error=0.8991,
              reference_final_train_error=[0.235, 0.051, 0.024]), REFUTED),
        # The previous report's budget (40 steps of batch 32 at lr 0.1): ResNet-110 itself ends near chance, so the
        # deeper net's chance-level loss says nothing.
        (dict(deep_train_loss=[7.017e5, 2.513], deep_final_train_error=0.8984,
              reference_final_train_error=[0.8288, 0.8566, 0.8824]), NOT_MEASURABLE),
    ],
}
