"""Augmentation and evaluation preprocessing, on the host with NumPy and PIL.

``cifar``: zero-pad 4, random 32x32 crop, horizontal flip (He et al. 2016). ``inception``: torchvision's
RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bilinear) and a flip. Evaluation images are used as they are
(digits, CIFAR) or resized (shorter side to image_size / 0.875, bilinear, antialiased) and center-cropped with
torchvision's Resize + CenterCrop geometry, in one resize of the box kept.

The random draws of a step are made for the whole global batch from one generator seeded by (seed, step), so every
host draws the same numbers and takes its own rows: a batch does not depend on the number of hosts. The draws do not
depend on image sizes, which are known only after reading.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

# torchvision's ImageNet eval recipe: resize the shorter side to 256 for a 224 crop.
EVAL_CROP_FRACTION = 0.875
CIFAR_PADDING = 4  # zero padding, as in He et al. (2016) and the Wide ResNet / DenseNet papers
INCEPTION_SCALE = (0.08, 1.0)
INCEPTION_RATIO = (3 / 4, 4 / 3)


def pad_crop_flip(images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pads NHWC ``images`` by ``padding``, crops each back at ``offsets`` [N, 2] and mirrors where ``flips``."""
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.empty_like(images)
    # Slice copies, one image at a time: faster than one fancy-indexed gather of the whole batch.
    for i, ((top, left), flip) in enumerate(zip(offsets.tolist(), flips.tolist())):
        crop = padded[i, top:top + height, left:left + width]
        out[i] = crop[:, ::-1] if flip else crop
    return out


def inception_boxes(sizes: np.ndarray, draws: dict[str, np.ndarray]) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params for each (height, width) in ``sizes``: [N, 4] top, left, h, w.

    ``draws`` holds uniforms: ``area`` and ``log_ratio`` [N, 10] (the 10 attempts), ``position`` [N, 2].
    """
    heights, widths = sizes[:, :1].astype(np.float64), sizes[:, 1:].astype(np.float64)
    target_area = heights * widths * draws["area"]
    aspect = np.exp(draws["log_ratio"])
    crop_w = np.rint(np.sqrt(target_area * aspect))
    crop_h = np.rint(np.sqrt(target_area / aspect))
    fits = (crop_w > 0) & (crop_w <= widths) & (crop_h > 0) & (crop_h <= heights)
    attempt = fits.argmax(axis=1)[:, None]  # the first attempt that fits, as in torchvision's loop
    crop_h = np.take_along_axis(crop_h, attempt, 1)[:, 0]
    crop_w = np.take_along_axis(crop_w, attempt, 1)[:, 0]
    # No attempt fits: the largest central crop with the aspect ratio clamped into range.
    in_ratio = widths[:, 0] / heights[:, 0]
    fallback_w = np.where(in_ratio < INCEPTION_RATIO[0], widths[:, 0],
                          np.where(in_ratio > INCEPTION_RATIO[1], np.rint(heights[:, 0] * INCEPTION_RATIO[1]),
                                   widths[:, 0]))
    fallback_h = np.where(in_ratio < INCEPTION_RATIO[0], np.rint(widths[:, 0] / INCEPTION_RATIO[0]), heights[:, 0])
    found = fits.any(axis=1)
    crop_h, crop_w = np.where(found, crop_h, fallback_h), np.where(found, crop_w, fallback_w)
    top = np.where(found, np.floor(draws["position"][:, 0] * (heights[:, 0] - crop_h + 1)),
                   (heights[:, 0] - crop_h) // 2)
    left = np.where(found, np.floor(draws["position"][:, 1] * (widths[:, 0] - crop_w + 1)),
                    (widths[:, 0] - crop_w) // 2)
    return np.stack([top, left, crop_h, crop_w], axis=1).astype(np.int64)


def resized(image, size: tuple[int, int], box: tuple[float, ...] | None = None, mirror: bool = False):
    """PIL ``image``'s ``box`` = (top, left, h, w) resized bilinearly to ``size`` (antialiased when shrinking, like
    torchvision on PIL images), mirrored left-right where ``mirror``."""
    from PIL import Image

    pil_box = None if box is None else (box[1], box[0], box[1] + box[3], box[0] + box[2])
    out = image.resize((size[1], size[0]), Image.BILINEAR, box=pil_box)
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirror else out


def eval_box(height: int, width: int, size: int) -> tuple[float, float, float, float]:
    """(top, left, h, w), in the image's own pixels, of what torchvision's Resize(int(size / 0.875)) +
    CenterCrop(size) keep of a ``height`` x ``width`` image: the crop's box in the resized image, scaled back by each
    axis's own factor."""
    short = int(size / EVAL_CROP_FRACTION)
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return top * height / new_h, left * width / new_w, size * height / new_h, size * width / new_w


def array_of(image) -> np.ndarray:
    """PIL ``image``'s pixels, [H, W, C] uint8. PIL keeps RGB as 4 bytes a pixel; its Arrow interface lends that
    memory without a copy and OpenCV packs it to 3 channels in one pass, where ``np.asarray`` would go through
    ``tobytes`` (64 KiB pieces, then joined): twice the time for a crop (docs/data.md)."""
    import cv2
    import nanoarrow

    if image.mode == "RGB":
        try:
            rgbx = nanoarrow.c_array(image).view().child(0).buffer(1)
        except ValueError:  # an image larger than one PIL memory block has no single buffer to lend
            pass
        else:
            return cv2.cvtColor(np.frombuffer(rgbx, np.uint8).reshape(image.height, image.width, 4),
                                cv2.COLOR_RGBA2RGB)
    pixels = np.asarray(image)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _through_pil(operation, image: np.ndarray) -> np.ndarray:
    """``operation`` of an [H, W, C] uint8 array, on the PIL image of its pixels."""
    from PIL import Image

    return array_of(operation(Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)))


def resize(image: np.ndarray, size: tuple[int, int], box: np.ndarray | None = None, mirror: bool = False) -> np.ndarray:
    """``resized`` of an array: the bilinear resize of ``box`` = (top, left, h, w), mirrored where ``mirror``."""
    return _through_pil(lambda pil: resized(pil, size, None if box is None else tuple(map(float, box)), mirror),
                        image)


def crop_resize(image, size: tuple[int, int], box: np.ndarray, mirror: bool = False) -> np.ndarray:
    """``resize`` of ``box``; a JPEG still encoded (``decode.JpegFile``) decodes only what the crop needs."""
    return (resize(image, size, box, mirror) if isinstance(image, np.ndarray)
            else image.crop_resize(size, box, mirror))


def resize_center_crop(image, size: int) -> np.ndarray:
    """torchvision's Resize(int(size / 0.875)) + CenterCrop(size), as one resize of the kept box (``eval_box``) of an
    array or a JPEG still encoded. The geometry is torchvision's; PIL places the filter at the box's float32
    coordinates, so a pixel may differ from torchvision's by a level or two (docs/data.md)."""
    return crop_resize(image, (size, size), eval_box(*image.shape[:2], size))


@dataclasses.dataclass(frozen=True)
class Transform:
    """Turns a host's raw images into a uint8 NHWC batch (``train``, ``eval``) and such a batch into the model's
    normalized float32 input (``normalize``)."""

    augment: str  # 'none' | 'cifar' | 'inception'
    image_size: int
    fixed_size: bool  # images already have the output size (digits, CIFAR)
    pixel_max: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reverse_channels: bool = False  # RGB images to the BGR order that some converted weights expect

    def draw(self, rng: np.random.Generator, global_batch_size: int) -> dict[str, np.ndarray]:
        """This step's random numbers for every row of the global batch."""
        if self.augment == "cifar":
            return {"offsets": rng.integers(0, 2 * CIFAR_PADDING + 1, (global_batch_size, 2)),
                    "flips": rng.random(global_batch_size) < 0.5}
        if self.augment == "inception":
            return {"area": rng.uniform(*INCEPTION_SCALE, (global_batch_size, 10)),
                    "log_ratio": rng.uniform(*np.log(INCEPTION_RATIO), (global_batch_size, 10)),
                    "position": rng.random((global_batch_size, 2)),
                    "flips": rng.random(global_batch_size) < 0.5}
        return {}

    def train(self, images: list[np.ndarray], draws: dict[str, np.ndarray]) -> np.ndarray:
        if self.augment == "cifar":
            return pad_crop_flip(np.stack(images), draws["offsets"], draws["flips"], CIFAR_PADDING)
        if self.augment == "inception":
            boxes = inception_boxes(np.asarray([image.shape[:2] for image in images]), draws)
            size = (self.image_size, self.image_size)
            # PIL mirrors each crop as it is resized, and the crop is written straight into the batch: NumPy's
            # copy of a mirrored view, three bytes at a time, cost more than the resize.
            return _filled((crop_resize(image, size, box, flip)
                            for image, box, flip in zip(images, boxes, draws["flips"].tolist())), len(images))
        return self.eval(images)

    def eval(self, images: list[np.ndarray]) -> np.ndarray:
        if self.fixed_size:
            return np.stack(images)
        return _filled((resize_center_crop(image, self.image_size) for image in images), len(images))

    def normalize_on_device(self, pixels):
        """``normalize``'s formula for uint8 ``pixels`` on the device (a jax array, inside a jitted step): the host
        sends a quarter of float32's bytes."""
        scale, shift = self._scale_and_shift()
        return self._in_model_order(pixels).astype(np.float32) * scale - shift

    def normalize(self, images: np.ndarray) -> np.ndarray:
        scale, shift = self._scale_and_shift()
        out = self._in_model_order(images).astype(np.float32)
        out *= scale  # in place: no float32 temporaries the size of the batch
        out -= shift
        return out

    def _scale_and_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, ``x * scale - shift`` = ``(x / pixel_max - mean) / std``, in float32."""
        std = np.asarray(self.std, np.float32)
        return np.float32(1 / self.pixel_max) / std, np.asarray(self.mean, np.float32) / std

    def _in_model_order(self, images):
        return images[..., ::-1] if self.reverse_channels else images


def _filled(crops: Iterator[np.ndarray], count: int) -> np.ndarray:
    """The batch of ``count`` equally shaped ``crops``."""
    batch = None
    for row, crop in enumerate(crops):
        if batch is None:
            batch = np.empty((count, *crop.shape), crop.dtype)
        batch[row] = crop
    return batch
