"""Pre-activation ResNet-164 on CIFAR-10: He et al. 2016b, "Identity Mappings", §4 and Table 2.

``common.he2016_cifar_config`` plus the paper's warm-up for ResNet-164 (lr 0.01 for the first 400 iterations,
about one epoch): here a one-epoch linear warmup to 0.1.
"""

from fusionjax.configs import common


def get_config():
    config = common.he2016_cifar_config("preact_resnet164")
    config.warmup_epochs = 1.0
    return config
