"""DenseNet-121 on ImageNet: Huang et al. 2017, §4.2 (the fb.resnet.torch recipe).

``common.imagenet_config`` (batch 256, SGD with Nesterov momentum 0.9, lr 0.1, wd 1e-4, 90 epochs) with lr ÷10 at
epochs 30 and 60, and weight decay on every parameter, BatchNorm included, as the paper's Torch code does.
"""

from fusionjax.configs import common


def get_config():
    config = common.imagenet_config("densenet121")
    config.decay_norm_and_bias = True
    config.schedule = "piecewise"
    config.piecewise_epochs = (30.0, 60.0)
    return config
