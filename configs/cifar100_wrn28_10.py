"""WRN-28-10 on CIFAR-100: Zagoruyko & Komodakis 2016, Table 4; the recipe of cifar10_wrn28_10.py."""

from fusionjax.configs import cifar10_wrn28_10


def get_config():
    return cifar10_wrn28_10.get_config("cifar100")
