"""Rule cases for fusionjax/claims/small_data.py: {claim ID: [(numbers, verdict), ...]}."""

import numpy as np

from fusionjax.claims.base import CONFIRMED, PARTLY, REFUTED

RULE_CASES = {
    "O7": [
        # the last report: resnet20 vs densenet_bc_52_12 at 100 images, gaps at 100, 300, 1,000 and 4,000 images
        (dict(resnet_smallest=np.array([0.584, 0.642, 0.679]), densenet_smallest=np.array([0.825, 0.829, 0.841]),
              gaps=np.array([0.1967, 0.046, 0.0, 0.004])), CONFIRMED),
        # ahead on average at 100 images, but the seeds overlap
        (dict(resnet_smallest=np.array([0.70, 0.76, 0.80]), densenet_smallest=np.array([0.78, 0.79, 0.82]),
              gaps=np.array([0.043, 0.02, 0.0, 0.004])), PARTLY),
        (dict(resnet_smallest=np.array([0.82, 0.83, 0.85]), densenet_smallest=np.array([0.80, 0.81, 0.83]),
              gaps=np.array([-0.02, 0.01, 0.0, 0.004])), REFUTED),
    ],
    "P5": [
        # torchvision's IMAGENET1K_V1: ResNet-18/34/50/101/152 matched by DenseNet-121, -121, -201, none, none
        (dict(shares=[0.68, 0.37, 0.78, np.nan, np.nan]), PARTLY),
        # Huang et al.'s CIFAR-10+ reading, about 1/3 at every size
        (dict(shares=[0.33, 0.36, 0.31, 0.40, 0.35]), CONFIRMED),
        (dict(shares=[0.68, 0.55, 0.78, np.nan, np.nan]), REFUTED),
        (dict(shares=[np.nan] * 5), REFUTED),
    ],
}
