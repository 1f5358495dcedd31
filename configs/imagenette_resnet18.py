"""ResNet-18 on Imagenette (10 easy ImageNet classes; fast.ai, github.com/fastai/imagenette) at 160 px.

The ImageNet recipe of imagenet_resnet50.py (Goyal et al. 2017; He et al. 2019) scaled to a one-GPU run:
batch 256, lr 0.1 × batch/256, 5-epoch warmup then cosine, wd 5e-5 off BN/bias, label smoothing 0.1, 40 epochs.
"""

from configs import common


def get_config():
    config = common.get_config()
    config.model = "resnet18"
    config.dataset = "imagenette"
    config.image_size = 160
    config.augment = "inception"
    config.input_workers = 4
    config.batch_size = 256
    config.eval_batch_size = 500
    config.num_epochs = 40.0
    config.learning_rate = 0.1
    config.lr_reference_batch = 256
    config.nesterov = True
    config.weight_decay = 5e-5
    config.schedule = "cosine"
    config.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.log_every_steps = 20
    config.checkpoint_every_steps = 500
    return config
