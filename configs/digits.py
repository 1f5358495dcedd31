"""The README's main job: CIFAR ResNet-20 on scikit-learn's 8×8 handwritten digits, offline, on a CPU.

Model: He et al. 2016, §4.2 (ResNet-20, option-A shortcuts) with one input channel; data: the fixed stratified
1437/360 split of ``fusionjax.train.data.sources.digits_split``. Recipe: SGD with Nesterov momentum 0.9, wd 5e-4,
batch 64, a one-epoch linear warmup, then cosine decay, 12 epochs in all (264 steps). The test suite trains it
and asserts at least 97% test top-1.
"""

from fusionjax.configs import common


def get_config():
    config = common.get_config()
    config.model = "resnet20"
    config.model_overrides.in_channels = 1
    config.dataset = "digits"
    config.batch_size = 64
    config.eval_batch_size = 360
    config.num_epochs = 12.0
    config.learning_rate = 0.1
    config.nesterov = True
    config.weight_decay = 5e-4
    config.warmup_epochs = 1.0
    config.log_every_steps = 10
    config.eval_every_epochs = 4.0
    config.checkpoint_every_steps = 100
    return config
