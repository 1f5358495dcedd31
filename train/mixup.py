"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on device: each example mixed with its partner in the
reversed batch, the targets in the proportion of the pixels."""

import jax
import jax.numpy as jnp


def _mixup(images, key, alpha: float):
    lam = jax.random.beta(key, alpha, alpha)
    return lam * images + (1 - lam) * images[::-1], lam


def _cutmix(images, key, alpha: float):
    """Paste a box of the partner image; lam is the kept area fraction."""
    lam_key, y_key, x_key = jax.random.split(key, 3)
    lam = jax.random.beta(lam_key, alpha, alpha)
    height, width = images.shape[1:3]
    cut_h, cut_w = height * jnp.sqrt(1 - lam), width * jnp.sqrt(1 - lam)
    center_y, center_x = jax.random.uniform(y_key) * height, jax.random.uniform(x_key) * width
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    top, bottom = (jnp.clip(jnp.round(center_y + sign * cut_h / 2), 0, height) for sign in (-1, 1))
    left, right = (jnp.clip(jnp.round(center_x + sign * cut_w / 2), 0, width) for sign in (-1, 1))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    mixed = jnp.where(inside[None, :, :, None], images[::-1], images)
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)


def mix_batch(images, targets, key, mixup_alpha: float, cutmix_alpha: float):
    """Mixup and/or CutMix with Beta(α, α) proportions; with both α set, one of the two per call, at random."""
    if not mixup_alpha and not cutmix_alpha:
        return images, targets
    choice_key, mix_key = jax.random.split(key)
    if mixup_alpha and cutmix_alpha:
        images, lam = jax.lax.cond(jax.random.bernoulli(choice_key), lambda: _cutmix(images, mix_key, cutmix_alpha),
                                   lambda: _mixup(images, mix_key, mixup_alpha))
    elif mixup_alpha:
        images, lam = _mixup(images, mix_key, mixup_alpha)
    else:
        images, lam = _cutmix(images, mix_key, cutmix_alpha)
    return images, lam * targets + (1 - lam) * targets[::-1]
