"""Input checks shared by the model families."""

import jax


def check_image_batch(x: jax.Array, in_channels: int, model: str) -> None:
    """Raise a ValueError that names the fix unless ``x`` is a 4-D NHWC batch with ``in_channels`` channels."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        hint = " Add a batch axis: x[None]." if len(shape) == 3 else ""
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
