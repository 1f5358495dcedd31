"""DenseNet-121 on ImageNet: Huang et al. 2017, §4.2 and Table 3 (25.02% top-1 error, single crop).

SGD with Nesterov momentum 0.9, wd 1e-4, batch 256, 90 epochs, lr 0.1 ÷10 at epochs 30 and 60.
"""

from configs import common


def get_config():
    config = common.get_config()
    config.model = "densenet121"
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.augment = "inception"
    config.input_workers = 8
    config.batch_size = 256
    config.eval_batch_size = 1000
    config.num_epochs = 90.0
    config.learning_rate = 0.1
    config.nesterov = True
    config.weight_decay = 1e-4
    config.decay_norm_and_bias = True  # as the paper's fb.resnet.torch-based code does
    config.schedule = "piecewise"
    config.piecewise_epochs = (30.0, 60.0)
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    return config
