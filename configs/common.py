"""Defaults every config starts from, and the recipes several configs share (CIFAR, ImageNet); a config file
changes only what its recipe changes. The fields: ``docs/training.md``."""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # Model: a name from fusionjax.list_models() and any create_model overrides (in_channels, drop_path, ...).
    config.model = "resnet20"
    config.model_overrides = ml_collections.ConfigDict()
    config.dtype = "float32"  # compute dtype; "bfloat16" keeps float32 params, optimizer state and BN statistics

    # Data (fusionjax.train.data; docs/data.md).
    config.dataset = "cifar10"  # a built-in data set, folder:PATH (your images) or tfds:NAME[:VERSION]
    config.data_dir = config_dict.placeholder(str)  # unset: $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.manual_dir = config_dict.placeholder(str)
    config.train_split = "train"
    # Unset: the data set's eval split ("test", "validation"; a folder's val/). Folder data: or a fraction ("0.2").
    config.eval_split = config_dict.placeholder(str)
    config.image_size = config_dict.placeholder(int)  # unset: the data set's native size, or 224
    config.augment = "none"  # "none" | "cifar" | "inception"
    # grain worker processes; 0 reads in the training process. Unset: one per core but one (at most 16) for data
    # that is decoded as it is read, none for data held in memory (digits, CIFAR training) or under 3 cores.
    config.input_workers = config_dict.placeholder(int)
    config.skip_bad_images = False  # folder data: skip (and count) corrupt or unreadable images instead of failing

    # Fine-tuning (docs/training.md): start from converted or trained weights, optionally freezing parts.
    # Unset: from scratch. A fusionjax-convert directory, a workdir (DIR, DIR@best, DIR@STEP) or torchvision:NAME.
    config.init_from = config_dict.placeholder(str)
    config.freeze = ""  # comma-separated parameter-path patterns kept fixed ("stem,stage1", or "backbone")
    config.freeze_batch_stats = False  # True: BatchNorm statistics of frozen parts stay as loaded
    config.head_lr_multiplier = 1.0  # the classifier's learning rate ÷ the backbone's

    # Optimization. batch_size is the global batch of one optimizer update.
    config.seed = 0
    config.batch_size = 128
    config.eval_batch_size = 256
    config.num_epochs = 1.0
    config.num_train_steps = 0  # > 0 overrides num_epochs (counted in optimizer updates)
    config.optimizer = "sgd"  # "sgd" | "adamw" | "lars" | "lamb"
    config.learning_rate = 0.1
    config.lr_reference_batch = 0  # > 0: peak lr = learning_rate × batch_size / lr_reference_batch
    config.momentum = 0.9
    config.nesterov = False
    config.b1 = 0.9
    config.b2 = 0.999
    config.weight_decay = 1e-4
    config.decay_norm_and_bias = False  # False: no weight decay on norm scales/offsets and biases
    config.schedule = "cosine"  # "cosine" | "piecewise" | "sgdr" | "linear" | "constant"
    config.warmup_epochs = 0.0
    config.end_lr_factor = 0.0  # final lr ÷ peak lr (cosine, sgdr, linear)
    config.piecewise_epochs = ()  # piecewise: multiply by piecewise_factor at each of these epochs
    config.piecewise_factor = 0.1
    config.sgdr_first_epochs = 10.0  # sgdr: T_0
    config.sgdr_period_mult = 2.0  # sgdr: T_mult
    config.grad_clip_norm = 0.0  # > 0: clip the global gradient norm
    config.grad_accum_steps = 1  # micro-batches of batch_size / grad_accum_steps per update (optax.MultiSteps)
    config.label_smoothing = 0.0
    config.mixup_alpha = 0.0  # > 0: mixup with Beta(α, α) (Zhang et al. 2018)
    config.cutmix_alpha = 0.0  # > 0: CutMix (Yun et al. 2019); with both set, one of the two per step
    config.ema_decay = 0.0  # > 0: keep and evaluate an EMA of params and batch_stats

    # Parallelism.
    config.fsdp = False  # True: shard params and optimizer state over the 'data' axis
    config.bn_groups = 0  # > 0: BatchNorm statistics per group of batch_size / bn_groups examples

    # Bookkeeping.
    config.log_every_steps = 50
    config.eval_every_epochs = 1.0
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.progress_bar = True
    return config


def cifar_config(model: str, dataset: str = "cifar10") -> ml_collections.ConfigDict:
    """What the CIFAR papers share: pad-4 random crops and flips, batch 128, SGD with momentum 0.9.

    The papers' Torch code decays every parameter, BatchNorm included, so these reproductions do too.
    """
    config = get_config()
    config.model = model
    config.dataset = dataset
    config.augment = "cifar"
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.decay_norm_and_bias = True
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config


def he2016_cifar_config(model: str) -> ml_collections.ConfigDict:
    """He et al. 2016, §4.2: lr 0.1, ÷10 at 32k and 48k iterations, stop at 64k (batch 128), wd 1e-4.

    In epochs of the full 50k training set: 64k × 128 / 50k ≈ 164 epochs, boundaries at 82 and 123.
    """
    config = cifar_config(model)
    config.num_epochs = 164.0
    config.learning_rate = 0.1
    config.weight_decay = 1e-4
    config.schedule = "piecewise"
    config.piecewise_epochs = (82.0, 123.0)
    return config


def imagenet_config(model: str, dataset: str = "imagenet2012") -> ml_collections.ConfigDict:
    """What the ImageNet recipes share: 224² inception crops and flips, batch 256, SGD with Nesterov momentum 0.9,
    lr 0.1 × batch/256 (Goyal et al. 2017, §2.1), weight decay 1e-4, 90 epochs."""
    config = get_config()
    config.model = model
    config.dataset = dataset
    config.image_size = 224
    config.augment = "inception"
    config.batch_size = 256
    config.eval_batch_size = 1000
    config.num_epochs = 90.0
    config.learning_rate = 0.1
    config.lr_reference_batch = 256
    config.nesterov = True
    config.weight_decay = 1e-4
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    return config


def bag_of_tricks_config(model: str, dataset: str = "imagenet2012") -> ml_collections.ConfigDict:
    """The ImageNet recipe with He et al. 2019 ("Bag of Tricks"): a 5-epoch linear warmup (Goyal et al. 2017, §2.2)
    then cosine decay (§5.1), label smoothing 0.1 (§5.2), no weight decay on BatchNorm and biases (§3.1)."""
    config = imagenet_config(model, dataset)
    config.schedule = "cosine"
    config.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.decay_norm_and_bias = False
    return config
