"""Fusion primitives: the two classic ways to merge feature maps, and two learned merges built on them.

``add`` is ResNet's element-wise sum: the inputs must have identical shapes, and the channel count stays.
``concat`` is DenseNet's channel concatenation: all axes but the channel axis must agree, channels add up.
The two are related: a linear map applied to ``concat(a, b)`` whose weights are the same for both halves equals
that map applied to ``add(a, b)`` (``tests/test_fusion.py`` checks this), so concat is the more general merge
and add the cheaper one.
"""

from typing import Callable, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fusionjax.layers import BatchNorm, Conv2d, ModuleDef


def _shapes(xs: Sequence[jax.Array]) -> str:
    return ", ".join(str(tuple(x.shape)) for x in xs)


def add(*xs: jax.Array) -> jax.Array:
    """Element-wise sum of feature maps of identical shape (ResNet's residual merge)."""
    if len(xs) < 2:
        raise ValueError(f"add needs at least two inputs, got {len(xs)}.")
    if any(x.shape != xs[0].shape for x in xs):
        raise ValueError(
            f"add needs identical shapes, got {_shapes(xs)}. Project the shortcut (1x1 conv, or stride/zero-pad) "
            "to the branch's shape, or use concat to keep both."
        )
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def concat(*xs: jax.Array, axis: int = -1) -> jax.Array:
    """Concatenation along the channel axis (DenseNet's merge); every other axis must agree."""
    if len(xs) < 1:
        raise ValueError("concat needs at least one input.")
    ndim = xs[0].ndim
    if any(x.ndim != ndim for x in xs):
        raise ValueError(f"concat needs inputs of the same rank, got shapes {_shapes(xs)}.")
    axis = axis % ndim
    others = [tuple(d for i, d in enumerate(x.shape) if i != axis) for x in xs]
    if any(o != others[0] for o in others):
        raise ValueError(
            f"concat along axis {axis} needs all other axes equal, got shapes {_shapes(xs)}. Resize the inputs to "
            "one spatial size first (e.g. an upsample or a strided conv), as FPN and ASFF do."
        )
    return xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=axis)


def _resize_nearest(x: jax.Array, height: int, width: int) -> jax.Array:
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method="nearest")


class ASFF(nn.Module):
    """Adaptive spatial feature fusion (Liu et al. 2019, "Learning Spatial Fusion for Single-Shot Detection").

    Takes 2–3 pyramid levels (NHWC, finest first, each level half the previous one's size) and fuses them at
    ``level``: every input is brought to that level's channels (1×1 conv) and resolution (strided 3×3 convs down,
    nearest-neighbour up), then a softmax over levels, computed per position from the inputs themselves, weighs
    their sum. The weights are a learned, spatially varying mix between "add" (equal weights) and "select".
    """

    level: int
    compress_channels: int = 16
    conv: ModuleDef = Conv2d
    norm: ModuleDef = BatchNorm
    act: Callable = nn.relu

    def _align(self, x: jax.Array, source: int, target_shape: tuple, train: bool) -> jax.Array:
        channels = target_shape[-1]
        if source < self.level:  # finer level: downsample by strided convs, one per halving
            for step in range(self.level - source):
                x = self.conv(channels, 3, strides=2, name=f"down{source}_{step}")(x)
                x = self.act(self.norm(name=f"down{source}_{step}_norm")(x, train))
        elif source > self.level:  # coarser level: match channels, then upsample
            if x.shape[-1] != channels:
                x = self.conv(channels, 1, name=f"lateral{source}")(x)
                x = self.act(self.norm(name=f"lateral{source}_norm")(x, train))
            x = _resize_nearest(x, target_shape[1], target_shape[2])
        return x

    @nn.compact
    def __call__(self, levels: Sequence[jax.Array], train: bool = False) -> jax.Array:
        if not 2 <= len(levels) <= 3:
            raise ValueError(f"ASFF fuses 2 or 3 levels, got {len(levels)}.")
        if not 0 <= self.level < len(levels):
            raise ValueError(f"ASFF level={self.level} is out of range for {len(levels)} inputs.")
        for finer, coarser in zip(levels, levels[1:]):
            expected = (-(-finer.shape[1] // 2), -(-finer.shape[2] // 2))  # what a 3x3/2 conv padded by 1 gives
            if coarser.shape[1:3] != expected:
                raise ValueError(
                    f"ASFF levels must halve in size (finest first): {finer.shape[1:3]} is followed by "
                    f"{coarser.shape[1:3]}, expected {expected}. Pass backbone stages in order, e.g. stage2..stage4."
                )
        target_shape = levels[self.level].shape
        aligned = [self._align(x, i, target_shape, train) for i, x in enumerate(levels)]
        compressed = [
            self.act(self.conv(self.compress_channels, 1, name=f"weight{i}")(x))
            for i, x in enumerate(aligned)
        ]
        logits = self.conv(len(levels), 1, use_bias=True, name="weight_logits")(concat(*compressed))
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(logits.dtype)
        self.sow("intermediates", "fusion_weights", weights)  # (N, H, W, levels): what each position took from where
        fused = add(*[x * weights[..., i : i + 1] for i, x in enumerate(aligned)])
        return self.act(self.norm(name="out_norm")(
            self.conv(target_shape[-1], 3, name="out")(fused), train))


class FPNBlock(nn.Module):
    """One top-down step of a feature pyramid (Lin et al. 2017): upsample the coarser map, merge with a lateral.

    ``mode='add'`` sums them (the FPN paper); ``mode='concat'`` stacks them and lets a 1×1 conv mix them back to
    ``features`` channels (more parameters, can weigh the two sources differently).
    """

    features: int
    mode: Literal["add", "concat"] = "add"
    conv: ModuleDef = Conv2d

    @nn.compact
    def __call__(self, top_down: jax.Array, lateral: jax.Array) -> jax.Array:
        lateral = self.conv(self.features, 1, use_bias=True, name="lateral")(lateral)
        up = _resize_nearest(top_down, lateral.shape[1], lateral.shape[2])
        if self.mode == "add":
            return add(up, lateral)
        if self.mode == "concat":
            return self.conv(self.features, 1, use_bias=True, name="merge")(concat(up, lateral))
        raise ValueError(f"FPNBlock mode must be 'add' or 'concat', got {self.mode!r}.")


class FPN(nn.Module):
    """A feature pyramid over backbone stages (finest first): returns one ``features``-channel map per level."""

    features: int = 256
    mode: Literal["add", "concat"] = "add"
    conv: ModuleDef = Conv2d

    @nn.compact
    def __call__(self, levels: Sequence[jax.Array]) -> list[jax.Array]:
        top = self.conv(self.features, 1, use_bias=True, name="top_lateral")(levels[-1])
        merged = [top]
        for i in range(len(levels) - 2, -1, -1):
            top = FPNBlock(self.features, mode=self.mode, conv=self.conv, name=f"merge{i}")(top, levels[i])
            merged.append(top)
        merged.reverse()
        return [
            self.conv(self.features, 3, use_bias=True, name=f"smooth{i}")(x)
            for i, x in enumerate(merged)
        ]


__all__ = ["add", "concat", "ASFF", "FPNBlock", "FPN"]
