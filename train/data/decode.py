"""Reading a folder's image files, with JPEGs decoded only at the scale their crop needs.

JPEGs are decoded by libjpeg-turbo through simplejpeg, which gives the same pixels as Pillow's own decoder (the same
library, IDCT and upsampling) in less time, straight into the layout PIL keeps RGB in (4 bytes a pixel), which PIL
then reads where it lies, through its Arrow interface (docs/data.md). libjpeg can also decode at 1/2, 1/4 or 1/8 of
the size in the DCT domain, for a fraction of the cost. A JPEG is therefore read as a ``JpegFile``: its header only,
so that the crop can be drawn on the full-size coordinates exactly as torchvision draws it; the pixels are decoded
when the transform asks for the crop, at the smallest scale at which the crop still has at least the output's
pixels, and the crop is resized from there in one pass (``Image.resize`` with a box). A JPEG that libjpeg-turbo
reports any problem with (cut short, stray bytes) is decoded whole by Pillow, which reads what torchvision's loader
reads and names what it cannot; CMYK JPEGs and every other format are decoded whole by Pillow, and transformed as
they always were.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import nanoarrow
import numpy as np
import simplejpeg
from PIL import Image

from fusionjax.train.data import transforms
from fusionjax.train.errors import DataError

PIL_ERRORS = (OSError, SyntaxError, ValueError)  # what PIL raises for bytes it cannot read (UnidentifiedImageError)
DCT_SCALES = (8, 4, 2)  # the reductions libjpeg decodes to directly, largest first
JPEG_START = b"\xff\xd8\xff"  # start-of-image marker, then the next marker's first byte
# Decoding into memory already used spares the page faults of fresh memory: one buffer per reading thread, grown as
# needed up to this size (a larger decode, a big photo decoded whole, gets fresh memory that is not kept).
REUSED_DECODE_BYTES = 16 * 2**20
_decode_buffers = threading.local()
_RGBX_PIXEL = nanoarrow.uint32()  # one RGBX pixel, as Arrow sees PIL's RGB storage


def undecodable(path: Path, error: Exception) -> DataError:
    return DataError(f"{path} cannot be decoded ({error}): replace or delete it, or set "
                     "--config.skip_bad_images=True (then every image is decoded at start-up and the bad "
                     "ones are skipped).")


def open_image(path: Path, mode: str) -> np.ndarray | JpegFile:
    """The image at ``path`` in PIL ``mode``: a ``JpegFile`` for a JPEG that simplejpeg decodes (YCbCr, RGB or
    gray), otherwise its pixels [H, W, C] uint8."""
    try:
        encoded = path.read_bytes()
        header = _jpeg_header(encoded)
        if header is not None:
            return JpegFile(path, encoded, mode, *header)
        with Image.open(io.BytesIO(encoded)) as image:
            return _pixels(image, mode)
    except PIL_ERRORS as error:
        raise undecodable(path, error) from None


def _jpeg_header(encoded: bytes) -> tuple[int, int, bool] | None:
    """(height, width, gray) of a JPEG in YCbCr, RGB or gray; None for CMYK, unreadable headers, other formats."""
    if not encoded.startswith(JPEG_START):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(encoded)
    except ValueError:
        return None
    return (height, width, colorspace == "Gray") if colorspace in ("YCbCr", "RGB", "Gray") else None


def reduction(crop_h: float, crop_w: float, out_h: int, out_w: int) -> int:
    """The largest DCT scale at which a crop of ``crop_h`` x ``crop_w`` full-size pixels still covers the output
    (so the resize still only shrinks); 1 where none does."""
    return next((scale for scale in DCT_SCALES if crop_h / scale >= out_h and crop_w / scale >= out_w), 1)


class JpegFile:
    """A JPEG whose header is read and whose pixels are decoded once the crop is known.

    ``np.asarray(jpeg)`` decodes it whole (as every other format is); ``crop_resize`` gives ``transforms.resize`` of
    a box (a training crop, the evaluation crop): the same pixels where no reduction applies, and otherwise decoded
    at a reduced scale and resized from there in one pass.
    """

    def __init__(self, path: Path, encoded: bytes, mode: str, height: int, width: int, gray: bool):
        self.path, self.mode, self._encoded, self._gray = path, mode, encoded, gray
        self.shape = (height, width, 1 if mode == "L" else 3)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        # A copy of its own to read from: Pillow before 13 crashes lending an image whose memory it borrowed.
        pixels = self._apply(1, lambda image, _: image.copy())
        return pixels if dtype is None else pixels.astype(dtype)

    def crop_resize(self, size: tuple[int, int], box: np.ndarray, mirror: bool = False) -> np.ndarray:
        """``transforms.resize(pixels, size, box, mirror)``, ``box`` = (top, left, h, w) in full-size pixels."""
        box = tuple(float(value) for value in box)
        return self._apply(reduction(*box[2:], *size), lambda image, scale: transforms.resized(
            image, size, tuple(value / scale for value in box), mirror))

    def _apply(self, scale: int, operation) -> np.ndarray:
        """``operation(image, decoded_scale)`` of the image decoded at ``scale`` (1, 2, 4 or 8) in ``mode``, as an
        array. libjpeg's reduced pixel i covers full-size pixels [i * scale, (i + 1) * scale)."""
        try:
            image, decoded_scale = self._decoded(scale), scale
        except ValueError:  # libjpeg-turbo reported a problem: Pillow decodes it as torchvision would, or names it
            image, decoded_scale = self._decoded_by_pillow(), 1
        # The decoded image may lie in this thread's reused buffer: only a new array leaves.
        return transforms.array_of(operation(image, decoded_scale))

    def _decoded(self, scale: int) -> Image.Image:
        """The pixels at 1/``scale``, in ``mode``, decoded into this thread's reused buffer where they fit."""
        height, width = (-(-side // scale) for side in self.shape[:2])  # libjpeg rounds scaled sizes up
        gray = self.mode == "L" and self._gray
        pixels = simplejpeg.decode_jpeg(self._encoded, "GRAY" if gray else "RGBX", min_height=height,
                                        min_width=width, buffer=_decode_buffer(height * width * (1 if gray else 4)))
        if pixels.shape[:2] != (height, width):
            raise ValueError(f"simplejpeg decoded {pixels.shape[:2]} pixels, not 1/{scale} of {self.shape[:2]}")
        if gray:
            return Image.frombuffer("L", (width, height), pixels, "raw", "L", 0, 1)  # PIL maps L without a copy
        return _converted(image_on_rgbx(pixels), self.mode)

    def _decoded_by_pillow(self) -> Image.Image:
        try:
            with Image.open(io.BytesIO(self._encoded)) as image:
                image.load()
                return _converted(image, self.mode)
        except PIL_ERRORS as error:
            raise undecodable(self.path, error) from None


def image_on_rgbx(pixels: np.ndarray) -> Image.Image:
    """A PIL RGB image reading RGBX ``pixels`` [H, W, 4] uint8 where they lie: RGBX is PIL's own RGB layout, lent
    through Arrow. (A PIL "RGBX" image, which frombuffer would map, resizes 10% slower: four bands, not three.)"""
    height, width = pixels.shape[:2]
    rgbx = nanoarrow.c_array_from_buffers(_RGBX_PIXEL, height * width, [None, pixels])
    return Image.fromarrow(rgbx, "RGB", (width, height))


def _decode_buffer(size: int) -> np.ndarray | None:
    """This thread's reused buffer of at least ``size`` bytes; None (fresh memory) above ``REUSED_DECODE_BYTES``."""
    if size > REUSED_DECODE_BYTES:
        return None
    buffer = getattr(_decode_buffers, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = _decode_buffers.buffer = np.empty(size, np.uint8)
    return buffer


def _converted(image: Image.Image, mode: str) -> Image.Image:
    return image if image.mode == mode else image.convert(mode)


def _pixels(image: Image.Image, mode: str) -> np.ndarray:
    """torchvision's loader: ``PIL.Image.convert(mode)``, as an [H, W, C] array."""
    return transforms.array_of(_converted(image, mode))
