"""What every model family shares: its options, the input check and the classification head."""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fusionjax import arguments
from fusionjax.layers import BatchNorm, Conv2d, Dtype, ModuleDef, global_avg_pool


def _three_axes_hint(shape: tuple[int, int, int], in_channels: int) -> str:
    """What a 3-D input most likely lacks: the batch axis of one image, or the channel axis of a grayscale batch."""
    if shape[-1] == in_channels:
        return " Add a batch axis: x[None]."
    if in_channels == 1:
        return " For a batch of grayscale images (N, H, W), add the channel axis: x[..., None]."
    if shape[0] == in_channels:
        return " For one CHW image (PyTorch's layout), transpose it and add a batch axis: x.transpose(1, 2, 0)[None]."
    return ""


def check_image_batch(x: jax.Array, in_channels: int, model: str) -> None:
    """Raise a ValueError that names the fix unless ``x`` is a 4-D NHWC batch with ``in_channels`` channels."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        hint = _three_axes_hint(shape, in_channels) if len(shape) == 3 else ""
        raise ValueError(f"{model} expects a 4-D NHWC batch (N, H, W, {in_channels}), got shape {shape}.{hint}")
    if shape[-1] != in_channels:
        if shape[1] == in_channels:
            raise ValueError(
                f"{model} expects NHWC input (N, H, W, {in_channels}) but got {shape}, which looks like NCHW "
                "(PyTorch's layout). Transpose it: x.transpose(0, 2, 3, 1)."
            )
        raise ValueError(
            f"{model} expects {in_channels} input channels in the last axis (NHWC), got shape {shape}. "
            f"Pass in_channels={shape[-1]} to create_model for other inputs."
        )


class ImageClassifier(nn.Module):
    """The base of ResNet and DenseNet: the options they share, ``conv``/``norm`` bound to ``dtype`` once, and
    their head (global average pool → linear, float32 logits).

    ``drop_path`` is the stochastic-depth rate of the deepest block; it rises linearly from 0 at the first.
    Arguments out of range raise ``fusionjax.arguments.ModelArgumentError`` when the model is constructed.
    """

    num_classes: int = 1000
    in_channels: int = 3
    drop_path: float = 0.0
    zero_init_last: bool = False
    conv: ModuleDef = Conv2d
    norm: ModuleDef = BatchNorm
    act: Callable = nn.relu
    dtype: Dtype = jnp.float32

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__name__
        arguments.positive_int(owner, "num_classes", self.num_classes)
        arguments.positive_int(owner, "in_channels", self.in_channels)
        arguments.rate(owner, "drop_path", self.drop_path)

    def _parts(self) -> tuple[ModuleDef, ModuleDef]:
        """``conv`` and ``norm`` with the compute dtype bound, for every layer of the model."""
        return functools.partial(self.conv, dtype=self.dtype), functools.partial(self.norm, dtype=self.dtype)

    def _drop_path_rates(self, num_blocks: int) -> list[float]:
        return [self.drop_path * i / max(num_blocks - 1, 1) for i in range(num_blocks)]

    def _head(self, x: jax.Array, outputs: dict, features: bool, name: str):
        outputs["pooled"] = x = global_avg_pool(x)
        outputs["logits"] = logits = nn.Dense(self.num_classes, dtype=self.dtype, name=name)(x).astype(jnp.float32)
        return outputs if features else logits
