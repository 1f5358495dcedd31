"""ResNet-50 on ImageNet: the large-batch recipe of Goyal et al. 2017 with He et al. 2019 ("Bag of Tricks", §3–5).

``common.bag_of_tricks_config`` at batch 1024 (so lr 0.4), with each block's last BatchNorm γ initialized to zero
(Bag of Tricks §3.1). He et al. 2019 train 120 epochs; this config trains the usual 90. The registry's ResNet-50
is torchvision's (v1.5, stride on the 3×3 convolution). Use weight_decay=5e-5 for the lighter regularization of
some reference recipes.
"""

from fusionjax.configs import common


def get_config():
    config = common.bag_of_tricks_config("resnet50")
    config.model_overrides.zero_init_last = True
    config.batch_size = 1024
    return config
