"""Plain-56 on CIFAR-10, the degradation experiment: He et al. 2016, §4.2 and Fig. 6 (left).

Same recipe as ResNet-56; the plain net trains to a higher training and test error than plain-20.
"""

from configs import common


def get_config():
    return common.he2016_cifar_config("plain56")
