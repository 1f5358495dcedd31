"""Rule cases for fusionjax/claims/architecture.py: {claim ID: [(numbers, verdict), ...]}."""

from fusionjax.claims.base import CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED

NAN = float("nan")

RULE_CASES = {
    "A6": [
        (dict(reference_available=True, add_difference=0.0, concat_difference=2.08), REFUTED),  # torchvision's FPN
        (dict(reference_available=True, add_difference=1.9, concat_difference=3e-7), CONFIRMED),
        (dict(reference_available=False, add_difference=NAN, concat_difference=NAN), NOT_MEASURABLE),
        (dict(reference_available=True, add_difference=0.8, concat_difference=1.2), NOT_MEASURABLE),
    ],
    "A7": [
        # DenseNet-121 (6, 12, 24, 16 layers of a 1×1 and a 3×3 conv) and DenseNet L=40 (12 layers of one 3×3 conv)
        (dict(three_by_three_per_block=[6, 12, 24, 16, 12, 12, 12],
              other_convs_per_block=[6, 12, 24, 16, 0, 0, 0]), REFUTED),
        (dict(three_by_three_per_block=[2, 2, 2], other_convs_per_block=[0, 0, 0]), CONFIRMED),
        (dict(three_by_three_per_block=[2, 2, 2, 3, 3, 3], other_convs_per_block=[2, 2, 2, 0, 0, 0]), REFUTED),
        (dict(three_by_three_per_block=[2, 2, 12], other_convs_per_block=[0, 0, 0]), PARTLY),
    ],
    "A8": [
        # DenseNet-121 (4 blocks) and DenseNet L=40 (3 blocks): 9 pairs, each joined only through its transitions
        (dict(direct_cross_block_inputs=0, block_pairs_joined=0, block_pairs=9, pairs_dependent=9,
              pairs_dependent_past_transition=0), REFUTED),
        (dict(direct_cross_block_inputs=54, block_pairs_joined=9, block_pairs=9, pairs_dependent=9,
              pairs_dependent_past_transition=9), CONFIRMED),
        (dict(direct_cross_block_inputs=12, block_pairs_joined=3, block_pairs=9, pairs_dependent=9,
              pairs_dependent_past_transition=3), PARTLY),
        (dict(direct_cross_block_inputs=0, block_pairs_joined=0, block_pairs=9, pairs_dependent=8,
              pairs_dependent_past_transition=0), NOT_MEASURABLE),
    ],
    "A9": [
        (dict(plain_model_matching=1.0, bc_model_matching=0.0), PARTLY),  # the original DenseNet and DenseNet-121
        (dict(plain_model_matching=1.0, bc_model_matching=1.0), CONFIRMED),
        (dict(plain_model_matching=0.0, bc_model_matching=0.0), REFUTED),
        (dict(plain_model_matching=0.97, bc_model_matching=0.0), REFUTED),
    ],
}
