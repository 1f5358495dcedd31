"""ResNet-50 on ImageNet, the large-batch recipe of Goyal et al. 2017 and He et al. 2019 ("Bag of Tricks", §3–5).

Batch 1024, SGD with Nesterov momentum 0.9, lr 0.1 × batch/256 (Goyal et al. 2017, §2.1) with a 5-epoch linear
warmup (§2.2) then cosine decay (Bag of Tricks §5.1), wd 1e-4 off BatchNorm and biases (§3.1, "no bias decay"),
label smoothing 0.1 (§5.2), zero-initialized last BN γ of each block (§3.1), 90 epochs, inception crops + flips.
Bag of Tricks reports 77.2% top-1 for this ResNet-50 (v1.5 is torchvision's ResNet-50) with the cosine schedule and
label smoothing at 120 epochs. Use weight_decay=5e-5 for the lighter regularization of some reference recipes.
"""

from configs import common


def get_config():
    config = common.get_config()
    config.model = "resnet50"
    config.model_overrides.zero_init_last = True
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.augment = "inception"
    config.input_workers = 8
    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.num_epochs = 90.0
    config.learning_rate = 0.1
    config.lr_reference_batch = 256
    config.nesterov = True
    config.weight_decay = 1e-4
    config.schedule = "cosine"
    config.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    return config
