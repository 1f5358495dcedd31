"""DenseNet-BC (L=100, k=12) on CIFAR-10: Huang et al. 2017, §4.2 and Table 2 (with data augmentation).

``common.cifar_config`` with SGD, Nesterov momentum 0.9, wd 1e-4, batch 64, 300 epochs, lr 0.1 ÷10 at 50% and 75%
of training.
"""

from fusionjax.configs import common


def get_config(dataset: str = "cifar10"):
    config = common.cifar_config("densenet_bc_100_12", dataset)
    config.batch_size = 64
    config.num_epochs = 300.0
    config.learning_rate = 0.1
    config.nesterov = True
    config.weight_decay = 1e-4
    config.schedule = "piecewise"
    config.piecewise_epochs = (150.0, 225.0)
    return config
