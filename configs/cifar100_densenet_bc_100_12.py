"""DenseNet-BC (L=100, k=12) on CIFAR-100: Huang et al. 2017, Table 2; the recipe of
cifar10_densenet_bc_100_12.py."""

from fusionjax.configs import cifar10_densenet_bc_100_12


def get_config():
    return cifar10_densenet_bc_100_12.get_config("cifar100")
