"""The optimizer from a config, all of it Optax: schedules, weight-decay mask, clipping, accumulation.

The schedule counts optimizer updates, which are micro-steps ÷ ``config.grad_accum_steps``; epochs convert to
updates with ``updates_per_epoch = num_train // config.batch_size`` (the effective batch).
"""

import jax
import optax

from fusionjax.train.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")
SCHEDULES = ("cosine", "piecewise", "sgdr", "linear", "constant")


def peak_learning_rate(config) -> float:
    """``config.learning_rate``, scaled by batch_size / lr_reference_batch when set (Goyal et al. 2017)."""
    if config.lr_reference_batch:
        return config.learning_rate * config.batch_size / config.lr_reference_batch
    return config.learning_rate


def learning_rate_schedule(config, updates_per_epoch: int, total_updates: int) -> optax.Schedule:
    """Linear warmup over ``config.warmup_epochs``, then the decay named by ``config.schedule``."""
    peak = peak_learning_rate(config)
    warmup = int(round(config.warmup_epochs * updates_per_epoch))
    if warmup >= total_updates:
        raise ConfigError(
            f"config.warmup_epochs={config.warmup_epochs} covers the whole run ({total_updates} updates); "
            "lower it or train longer.")
    name = config.schedule
    if name == "cosine":
        decay = optax.cosine_decay_schedule(peak, total_updates - warmup, alpha=config.end_lr_factor)
    elif name == "piecewise":  # He et al. 2016: ÷10 at fixed epochs
        boundaries = {int(round(e * updates_per_epoch)) - warmup: config.piecewise_factor
                      for e in config.piecewise_epochs}
        decay = optax.piecewise_constant_schedule(peak, boundaries)
    elif name == "sgdr":  # Loshchilov & Hutter 2017: cosine cycles of length T_0·T_mult^i, restarting at the peak
        cycles, length, covered = [], config.sgdr_first_epochs * updates_per_epoch, 0
        while covered < total_updates - warmup:
            steps = max(1, int(round(length)))
            cycles.append(dict(init_value=peak, peak_value=peak, decay_steps=steps, warmup_steps=0,
                               end_value=peak * config.end_lr_factor))
            covered += steps
            length *= config.sgdr_period_mult
        decay = optax.sgdr_schedule(cycles)
    elif name == "linear":
        decay = optax.linear_schedule(peak, peak * config.end_lr_factor, total_updates - warmup)
    elif name == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ConfigError(f"config.schedule={name!r} is not one of {', '.join(SCHEDULES)}.")
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def weight_decay_mask(params) -> dict:
    """True for the weights that decay: every kernel with 2+ dimensions, not norm scales/offsets or biases.

    Norm layers and biases hold 1-D parameters (``scale``, ``bias``), kernels are 2-D (Dense) or 4-D (Conv).
    """
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def _has_role(roles, role: str):
    return jax.tree_util.tree_map(lambda r: r == role, roles)


def make_optimizer(config, updates_per_epoch: int, total_updates: int, roles=None) -> tuple[
        optax.GradientTransformation, optax.Schedule]:
    """``(transformation, schedule)``: clip → optimizer with masked decay → the head's lr multiplier, frozen
    parameters set apart, wrapped in MultiSteps to accumulate.

    ``roles`` maps params to a tree of ``'frozen'``, ``'head'`` or ``'backbone'`` (``finetune.parameter_roles``);
    it is needed when anything is frozen or ``config.head_lr_multiplier`` is not 1.
    """
    schedule = learning_rate_schedule(config, updates_per_epoch, total_updates)
    mask = None if config.decay_norm_and_bias else weight_decay_mask
    wd = config.weight_decay
    name = config.optimizer
    if name == "sgd":
        # L2 added to the gradient before momentum, as torch.optim.SGD(weight_decay=...) does.
        optimizer = optax.chain(
            optax.add_decayed_weights(wd, mask),
            optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
    elif name == "adamw":
        optimizer = optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=wd, mask=mask)
    elif name == "lars":  # You et al. 2017: trust ratio and decay skip norm parameters and biases
        optimizer = optax.lars(schedule, weight_decay=wd, weight_decay_mask=mask or True,
                               trust_ratio_mask=mask or True, momentum=config.momentum, nesterov=config.nesterov)
    elif name == "lamb":
        optimizer = optax.lamb(schedule, b1=config.b1, b2=config.b2, weight_decay=wd, mask=mask)
    else:
        raise ConfigError(f"config.optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}.")
    if config.head_lr_multiplier < 0:
        raise ConfigError(f"config.head_lr_multiplier={config.head_lr_multiplier} must be >= 0: the classifier's "
                          "learning rate over the backbone's.")
    if config.head_lr_multiplier != 1:
        # Every optimizer's update is -lr × (a direction), so scaling the head's update is a head lr of lr × m.
        optimizer = optax.chain(optimizer, optax.masked(optax.scale(config.head_lr_multiplier),
                                                        lambda params: _has_role(roles(params), "head")))
    if config.grad_clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)
    if config.freeze:
        # The optimizer never sees frozen parameters (no state, no weight decay, not in the clipped norm), as
        # torch's requires_grad=False parameters; their updates are zero.
        optimizer = optax.multi_transform(
            {"frozen": optax.set_to_zero(), "trained": optimizer},
            lambda params: jax.tree_util.tree_map(lambda role: "frozen" if role == "frozen" else "trained",
                                                  roles(params)))
    if config.grad_accum_steps > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=config.grad_accum_steps)
    return optimizer, schedule

