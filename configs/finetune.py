"""Fine-tune converted or trained weights on a small image folder:
``--config finetune --config.init_from=SOURCE --config.dataset=folder:PATH``.

The architecture and input normalization are the source's (``config.model`` stays unset); every layer starts from
the source's weights and the classifier starts afresh when the class count differs. Recipe (docs/training.md,
"Fine-tuning"): torchvision's transfer-learning tutorial (SGD, momentum 0.9, a low learning rate) with timm's
fine-tuning practice (a short warmup, cosine decay, label smoothing 0.1, no mixup on small data) and a 10× learning
rate on the new classifier: 224² inception crops and flips, batch 32, 15 epochs.
"""

from ml_collections import config_dict

from fusionjax.configs import common


def get_config():
    config = common.get_config()
    config.model = config_dict.placeholder(str)  # unset: the architecture of config.init_from
    config.dataset = config_dict.placeholder(str)  # e.g. folder:PATH
    config.image_size = 224
    config.augment = "inception"
    config.batch_size = 32
    config.eval_batch_size = 64
    config.num_epochs = 15.0
    config.optimizer = "sgd"
    config.learning_rate = 0.01  # the backbone's; the classifier's is head_lr_multiplier times this
    config.head_lr_multiplier = 10.0
    config.momentum = 0.9
    config.nesterov = True
    config.weight_decay = 1e-4
    config.schedule = "cosine"
    config.warmup_epochs = 1.0
    config.label_smoothing = 0.1
    config.log_every_steps = 10
    config.eval_every_epochs = 1.0
    config.checkpoint_every_steps = 500
    return config
