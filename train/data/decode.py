"""Reading a folder's image files, with JPEGs decoded only at the scale their crop needs.

libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size in the DCT domain (PIL's ``Image.draft``), for a fraction
of the cost of a full decode. A JPEG is therefore read as a ``JpegFile``: its header only, so that the crop can be
drawn on the full-size coordinates exactly as torchvision draws it; the pixels are decoded when the transform asks
for the crop, at the smallest scale at which the crop still has at least the output's pixels, and the crop is
resized from there in one pass (``Image.resize`` with a box). Where no reduction applies, and for every other
format, the image is decoded whole and transformed as it always was.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from fusionjax.train.data import transforms
from fusionjax.train.errors import DataError

PIL_ERRORS = (OSError, SyntaxError, ValueError)  # what PIL raises for bytes it cannot read (UnidentifiedImageError)
DCT_SCALES = (8, 4, 2)  # the reductions libjpeg decodes to directly, largest first


def undecodable(path: Path, error: Exception) -> DataError:
    return DataError(f"{path} cannot be decoded ({error}): replace or delete it, or set "
                     "--config.skip_bad_images=True (then every image is decoded at start-up and the bad "
                     "ones are skipped).")


def open_image(path: Path, mode: str) -> np.ndarray | JpegFile:
    """The image at ``path`` in PIL ``mode``: a ``JpegFile`` for a JPEG, otherwise its pixels [H, W, C] uint8."""
    try:
        encoded = path.read_bytes()
        image = Image.open(io.BytesIO(encoded))
        if image.format == "JPEG":
            return JpegFile(path, encoded, mode, image)
        with image:
            return _pixels(image, mode)
    except PIL_ERRORS as error:
        raise undecodable(path, error) from None


def reduction(crop_h: float, crop_w: float, out_h: int, out_w: int) -> int:
    """The largest DCT scale at which a crop of ``crop_h`` x ``crop_w`` full-size pixels still covers the output
    (so the resize still only shrinks); 1 where none does."""
    return next((scale for scale in DCT_SCALES if crop_h / scale >= out_h and crop_w / scale >= out_w), 1)


def _eval_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """``transforms.resize_center_crop``'s resized (height, width) and the crop's (top, left) in it."""
    short = int(size / transforms.EVAL_CROP_FRACTION)
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


def eval_box(height: int, width: int, size: int) -> tuple[float, float, float, float]:
    """(top, left, h, w), in full-size pixels, of what ``transforms.resize_center_crop`` keeps: the shorter side
    resized to ``size / EVAL_CROP_FRACTION``, then the central ``size`` x ``size``."""
    new_h, new_w, top, left = _eval_geometry(height, width, size)
    return top * height / new_h, left * width / new_w, size * height / new_h, size * width / new_w


class JpegFile:
    """A JPEG whose header is read and whose pixels are decoded once the crop is known.

    ``np.asarray(jpeg)`` decodes it whole (as every other format is); ``crop_resize`` and ``resize_center_crop``
    give ``transforms.resize`` of a box and ``transforms.resize_center_crop``: the same pixels where no reduction
    applies, and otherwise decoded at a reduced scale and resized from there in one pass.
    """

    def __init__(self, path: Path, encoded: bytes, mode: str, image: Image.Image):
        self.path, self.mode, self._encoded, self._header = path, mode, encoded, image
        self.shape = (image.height, image.width, 1 if mode == "L" else 3)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        pixels = self._apply(1, lambda image, _: image)
        return pixels if dtype is None else pixels.astype(dtype)

    def crop_resize(self, size: tuple[int, int], box: np.ndarray) -> np.ndarray:
        """``transforms.resize(pixels, size, box)``, ``box`` = (top, left, h, w) in full-size pixels."""
        top, left, crop_h, crop_w = (float(value) for value in box)
        return self._apply(reduction(crop_h, crop_w, *size),
                           lambda image, scale: _resize(image, size, (top, left, crop_h, crop_w), scale))

    def resize_center_crop(self, size: int) -> np.ndarray:
        """``transforms.resize_center_crop(pixels, size)``: torchvision's Resize(size / 0.875) + CenterCrop(size)."""
        box = eval_box(*self.shape[:2], size)
        scale = reduction(box[2], box[3], size, size)
        if scale > 1:
            return self._apply(scale, lambda image, scale: _resize(image, (size, size), box, scale))
        new_h, new_w, top, left = _eval_geometry(*self.shape[:2], size)
        # As transforms.resize_center_crop, on the decoded image itself rather than a copy of it.
        return self._apply(1, lambda image, _: image.resize((new_w, new_h), Image.BILINEAR).crop(
            (left, top, left + size, top + size)))

    def _apply(self, scale: int, operation) -> np.ndarray:
        """``operation(image, decoded_scale)`` of the image decoded at ``scale`` (1, 2, 4 or 8) and converted to
        ``mode``, as an array."""
        # The header read at start is decoded once; a second decode of the same file reopens the bytes.
        header, self._header = self._header, None
        try:
            with header if header is not None else Image.open(io.BytesIO(self._encoded)) as image:
                decoded_scale = 1
                if scale > 1:
                    # draft takes the largest DCT scale not above min(width // w, height // h) for a requested
                    # (w, h): the size at ``scale``, rounded down, gives exactly ``scale``.
                    width = image.width  # draft shrinks image.size to the decoded size
                    drafted = image.draft("RGB", (width // scale, image.height // scale))
                    decoded_scale = 1 if drafted is None else width / drafted[1][2]
                out = np.asarray(operation(_converted(image, self.mode), decoded_scale))
        except PIL_ERRORS as error:
            raise undecodable(self.path, error) from None
        return out[..., None] if out.ndim == 2 else out


def _resize(image: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float],
            scale: float) -> Image.Image:
    """Bilinear resize to ``size`` of ``box`` (top, left, h, w in full-size pixels) of ``image`` decoded at
    ``scale``: libjpeg's reduced pixel i covers full-size pixels [i * scale, (i + 1) * scale), so coordinates
    divide by the scale."""
    top, left, crop_h, crop_w = (value / scale for value in box)
    return image.resize((size[1], size[0]), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))


def _converted(image: Image.Image, mode: str) -> Image.Image:
    return image if image.mode == mode else image.convert(mode)


def _pixels(image: Image.Image, mode: str) -> np.ndarray:
    """torchvision's loader: ``PIL.Image.convert(mode)``, as an [H, W, C] array."""
    pixels = np.asarray(_converted(image, mode))
    return pixels[..., None] if pixels.ndim == 2 else pixels
