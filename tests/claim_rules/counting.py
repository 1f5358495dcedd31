"""Rule cases for fusionjax/claims/counting.py: {claim ID: [(numbers, verdict), ...]}."""

import numpy as np

from fusionjax.claims.base import CONFIRMED, PARTLY, REFUTED

# ResNet-18/34/50/101/152 as the claim states them, and as the last full report counted and torchvision publishes
_CLAIMED = dict(claimed_params=[11.7, 21.8, 25.6, 44.5, 60.2], claimed_gflops=[1.8, 3.6, 4.1, 7.9, 11.6],
                claimed_top1=[69.8, 73.3, 76.2, 77.4, 78.3])
_COUNTED_PARAMS = [11.689512, 21.797672, 25.557032, 44.549160, 60.192808]
_COUNTED_GMACS = [1.814, 3.664, 4.089, 7.801, 11.514]
_TORCHVISION_TOP1 = [69.758, 73.314, 76.130, 77.374, 78.312]

_WIDTHS = np.array([16, 64, 512])

RULE_CASES = {
    "P1": [
        # the last report: parameters match, GFLOPs of ResNet-34/101/152 and ResNet-50's top-1 do not
        (dict(**_CLAIMED, measured_params=_COUNTED_PARAMS, measured_gmacs=_COUNTED_GMACS,
              published_top1=_TORCHVISION_TOP1), PARTLY),
        # every figure within ±0.05 of the claim
        (dict(**_CLAIMED, measured_params=_COUNTED_PARAMS, measured_gmacs=[1.81, 3.63, 4.09, 7.86, 11.57],
              published_top1=[69.76, 73.31, 76.17, 77.37, 78.31]), CONFIRMED),
        # parameters counted without the classifier (ResNet-50: 23.51 M) miss the claim
        (dict(**_CLAIMED, measured_params=[11.18, 21.28, 23.51, 42.50, 58.14], measured_gmacs=_COUNTED_GMACS,
              published_top1=_TORCHVISION_TOP1), REFUTED),
    ],
    "P2": [
        (dict(widths=_WIDTHS, conv_weights=18 * _WIDTHS**2, all_parameters=18 * _WIDTHS**2 + 4 * _WIDTHS), PARTLY),
        # two convolutions with biases and no BatchNorm
        (dict(widths=_WIDTHS, conv_weights=18 * _WIDTHS**2, all_parameters=18 * _WIDTHS**2 + 2 * _WIDTHS),
         CONFIRMED),
        # a bottleneck's convolutions are not 18C²
        (dict(widths=_WIDTHS, conv_weights=17 * _WIDTHS**2 // 16, all_parameters=17 * _WIDTHS**2 // 16),
         REFUTED),
    ],
    "P3": [
        (dict(bottleneck_weights=69_632, basic_weights=1_179_648, three_by_three_ratio=1 / 16), CONFIRMED),
        # BatchNorm's γ and β counted too: 70,400 and 1,180,672, the 3×3 ratio unchanged
        (dict(bottleneck_weights=70_400, basic_weights=1_180_672, three_by_three_ratio=1 / 16), PARTLY),
        # a bottleneck 256→128→128→256 against two 3×3 at 128: none of the three numbers
        (dict(bottleneck_weights=212_992, basic_weights=294_912, three_by_three_ratio=1.0), REFUTED),
    ],
    "P4": [
        (dict(densenet201_params=20_013_928, resnet50_params=25_557_032), REFUTED),  # 0.78, the last report
        (dict(densenet201_params=12_800_000, resnet50_params=25_557_032), CONFIRMED),  # 0.50
    ],
    "P6": [
        (dict(weight_layers=121, dense_layers_per_block=[6, 12, 24, 16]), CONFIRMED),
        (dict(weight_layers=120, dense_layers_per_block=[6, 12, 24, 16]), PARTLY),  # classifier not counted
        (dict(weight_layers=169, dense_layers_per_block=[6, 12, 32, 32]), REFUTED),  # DenseNet-169
    ],
    "P7": [
        # the zoo's counts beside Table 2's 1.0, 7.0 and 0.8 M; DenseNet ÷ DenseNet-BC at L = 100
        (dict(counted_millions=[1.020, 6.980, 0.769], published_millions=[1.0, 7.0, 0.8], parameter_factor=9.07,
              mac_factor=6.15), CONFIRMED),
        # DenseNet-B counted for DenseNet-BC: 1.18 M misses 0.8 M, the other two match
        (dict(counted_millions=[1.020, 6.980, 1.181], published_millions=[1.0, 7.0, 0.8], parameter_factor=5.91,
              mac_factor=4.87), PARTLY),
        # compression alone taken as the 'DenseNet' rows: nothing matches
        (dict(counted_millions=[0.578, 4.013, 0.176], published_millions=[1.0, 7.0, 0.8], parameter_factor=9.07,
              mac_factor=6.15), REFUTED),
        # every figure matches but the bottleneck would add multiply-adds
        (dict(counted_millions=[1.020, 6.980, 0.769], published_millions=[1.0, 7.0, 0.8], parameter_factor=9.07,
              mac_factor=0.95), REFUTED),
    ],
    "P8": [
        # zoo counts 25.03 / 25.56 M and 4.23 / 4.09 G; top-1 +1.49 (torchvision) and +1.7 (Xie et al. Table 3)
        (dict(params_ratio=0.979, macs_ratio=1.035, torchvision_gain=1.488, paper_gain=1.7), CONFIRMED),
        # ResNeXt-101 (32×8d) against ResNet-50: higher top-1 at 3.5× the parameters
        (dict(params_ratio=3.465, macs_ratio=4.03, torchvision_gain=3.18, paper_gain=2.6), PARTLY),
        # the same cost but a published top-1 below ResNet-50's in one source
        (dict(params_ratio=0.979, macs_ratio=1.035, torchvision_gain=-0.2, paper_gain=1.7), PARTLY),
        (dict(params_ratio=1.74, macs_ratio=1.91, torchvision_gain=-0.3, paper_gain=-0.1), REFUTED),
    ],
}
