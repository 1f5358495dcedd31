"""ResNet-18 on Imagenette (10 easy ImageNet classes; fast.ai, github.com/fastai/imagenette) at 160 px.

``common.bag_of_tricks_config`` (the recipe of imagenet_resnet50.py at batch 256) shortened to a one-GPU run:
40 epochs, weight decay 5e-5.
"""

from fusionjax.configs import common


def get_config():
    config = common.bag_of_tricks_config("resnet18", "imagenette")
    config.image_size = 160
    config.eval_batch_size = 500
    config.num_epochs = 40.0
    config.weight_decay = 5e-5
    config.log_every_steps = 20
    config.checkpoint_every_steps = 500
    return config
