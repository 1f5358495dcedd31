"""WRN-28-10 on CIFAR-10: Zagoruyko & Komodakis 2016, §3 and Table 4 (the variant without dropout).

``common.cifar_config`` with SGD, Nesterov momentum 0.9, wd 5e-4, batch 128, lr 0.1 × 0.2 at epochs 60, 120 and
160, 200 epochs. The registry's wrn28_10 has no dropout.
"""

from fusionjax.configs import common


def get_config(dataset: str = "cifar10"):
    config = common.cifar_config("wrn28_10", dataset)
    config.num_epochs = 200.0
    config.learning_rate = 0.1
    config.nesterov = True
    config.weight_decay = 5e-4
    config.schedule = "piecewise"
    config.piecewise_epochs = (60.0, 120.0, 160.0)
    config.piecewise_factor = 0.2
    return config
