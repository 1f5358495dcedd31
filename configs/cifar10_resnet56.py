"""ResNet-56 on CIFAR-10: He et al. 2016, §4.2 and Table 6 (option-A shortcuts), ``common.he2016_cifar_config``."""

from fusionjax.configs import common


def get_config():
    return common.he2016_cifar_config("resnet56")
