"""Plain-56 on CIFAR-10, the degradation experiment: He et al. 2016, §4.2 and Fig. 6 (left).

The recipe of ResNet-56 (``common.he2016_cifar_config``) for the same depth without shortcuts; the paper's plain-56
ends with a higher training and test error than its plain-20.
"""

from fusionjax.configs import common


def get_config():
    return common.he2016_cifar_config("plain56")
