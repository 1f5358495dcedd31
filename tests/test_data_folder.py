"""The user's own data: ``folder:PATH`` (torchvision's ImageFolder layout) and ``tfds:NAME`` (any prepared tfds set).

References are independent of the pipeline: torchvision's ``ImageFolder`` and its ``Resize`` + ``CenterCrop``, PIL's
own decoding, the arrays a tiny tfds builder was prepared from, and counting by hand.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from fusionjax import cards
from fusionjax.train import data, errors

IMAGENET_MEAN, IMAGENET_STD = np.asarray([0.485, 0.456, 0.406]), np.asarray([0.229, 0.224, 0.225])
SCRIPTS = Path(sys.executable).parent


def make_config(dataset, **overrides):
    defaults = dict(dataset=dataset, data_dir=None, train_split="train", eval_split=None, image_size=16,
                    augment="none", input_workers=0, skip_bad_images=False,
                    model_overrides=ml_collections.ConfigDict())
    return ml_collections.ConfigDict({**defaults, **overrides})


def random_image(rng, height, width, channels=3):
    # Smooth content (an upsampled coarse grid): JPEG keeps it close, and resizing has something to average.
    coarse = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, channels), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse).resize((width, height)))


def save(path, image: Image.Image, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)


def write_every_mode(directory, rng):
    """One image per PIL mode and file format a user's folder may hold, under upper- and lower-case extensions."""
    rgb = lambda: Image.fromarray(random_image(rng, int(rng.integers(20, 40)), int(rng.integers(20, 40))))
    save(directory / "gray.png", rgb().convert("L"))
    save(directory / "palette.png", rgb().convert("P", palette=Image.ADAPTIVE, colors=16))
    save(directory / "cmyk.JPG", rgb().convert("CMYK"), quality=95)
    rgba = rgb().convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, rgba.size[::-1], dtype=np.uint8)))
    save(directory / "alpha.PNG", rgba)
    save(directory / "gray_alpha.png", rgb().convert("LA"))
    save(directory / "photo.jpeg", rgb(), quality=90)
    save(directory / "bitmap.Bmp", rgb())
    save(directory / "web.webp", rgb(), lossless=True)
    save(directory / "nested" / "deeper.png", rgb())  # class folders are walked recursively
    (directory / "notes.txt").write_text("not an image")  # left out, as by torchvision


@pytest.fixture(scope="module")
def split_folders(tmp_path_factory):
    """PATH/train/<class>/… and PATH/val/<class>/…, every image mode in every class."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, classes in (("train", ("dog", "Cat", "ant", ".hidden")), ("val", ("dog", "Cat", "ant"))):
        for name in classes:
            write_every_mode(root / split / name, rng)
    return root


def torchvision_folder(root, mode="RGB"):
    from fusionjax.torch_compat import import_torchvision

    torchvision = import_torchvision()
    return torchvision.datasets.ImageFolder(str(root), loader=lambda path: Image.open(path).convert(mode))


def all_images(source):
    return source.read(np.arange(len(source)))


@pytest.mark.parametrize("channels,mode", [(3, "RGB"), (1, "L")])
def test_classes_files_labels_and_pixels_are_torchvisions(split_folders, channels, mode):
    config = make_config(f"folder:{split_folders}", model_overrides=ml_collections.ConfigDict(
        {"in_channels": channels}))
    description = data.describe(config)
    train_reference = torchvision_folder(split_folders / "train", mode)
    assert list(description.classes) == train_reference.classes  # sorted; the hidden folder too, as torchvision
    assert {c: i for i, c in enumerate(description.classes)} == train_reference.class_to_idx
    for split, folder in ((description.train, "train"), (description.eval, "val")):
        reference = torchvision_folder(split_folders / folder, mode)
        expected_labels = [train_reference.class_to_idx[reference.classes[label]] for _, label in reference.samples]
        assert [str(split_folders / f) for f in split.source.files.files] == [path for path, _ in reference.samples]
        images, labels = all_images(split.source)
        np.testing.assert_array_equal(labels, expected_labels)
        assert len(images) == len(reference) == (36 if folder == "train" else 27)
        for image, (expected, _) in zip(images, reference):
            expected = np.asarray(expected)
            np.testing.assert_array_equal(image, expected[..., None] if channels == 1 else expected)
    assert description.image_shape == (16, 16, channels)
    assert description.normalization["channel_order"] == ("RGB" if channels == 3 else "grayscale")


def test_eval_transform_is_torchvisions_resize_and_center_crop(split_folders):
    from fusionjax.torch_compat import import_torchvision

    transforms = import_torchvision().transforms
    size = 24
    description = data.describe(make_config(f"folder:{split_folders}", image_size=size))
    (batch,) = data.eval_batches(description, global_batch_size=32)
    reference = torchvision_folder(split_folders / "val")
    reference.transform = transforms.Compose([
        transforms.Resize(int(size / 0.875)), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist())])
    expected = np.stack([image.numpy().transpose(1, 2, 0) for image, _ in reference])
    assert batch["mask"].sum() == 27
    # torchvision's 8-bit pixels, a level or two off on some values: the evaluation crop is one resize of the kept
    # box, whose filter PIL places at float32 coordinates (tests/test_decode.py, MAX_EVAL_LEVELS).
    levels = np.abs(batch["image"][:27] - expected) * IMAGENET_STD * 255
    assert levels.max() <= 2 + 1e-3 and levels.mean() <= 0.2


def test_a_single_folder_is_split_by_fraction_stratified_and_the_same_for_every_seed(tmp_path):
    rng = np.random.default_rng(1)
    counts = {"a": 10, "b": 7, "c": 3}
    for name, count in counts.items():
        for i in range(count):
            save(tmp_path / "data" / name / f"{i}.png", Image.fromarray(random_image(rng, 12, 12)))
    config = make_config(f"folder:{tmp_path / 'data'}", eval_split="0.3")
    description = data.describe(config)
    held_out = {c: round(0.3 * n) for c, n in counts.items()}  # 3, 2, 1
    assert description.eval.per_class == held_out
    assert description.train.per_class == {c: n - held_out[c] for c, n in counts.items()}
    train, held = set(description.train.source.files.files), set(description.eval.source.files.files)
    assert not train & held and len(train | held) == 20
    same = data.describe(make_config(config.dataset, eval_split="30%", seed=7))
    assert set(same.eval.source.files.files) == held
    # torchvision's order inside each split: classes in order, files sorted.
    assert list(description.eval.source.files.files) == sorted(held, key=lambda f: (f.split(os.sep)[0], f))


def test_the_workdir_keeps_the_split_a_resumed_or_evaluated_run_reads(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("x", "y"):
        for i in range(5):
            save(tmp_path / "data" / name / f"{i}.png", Image.fromarray(random_image(rng, 12, 12)))
    config = make_config(f"folder:{tmp_path / 'data'}", eval_split="0.4")
    first = data.describe(config)
    first.save(tmp_path / "run")
    card = json.loads((tmp_path / "run" / cards.WORKDIR_CARD).read_text())
    assert card == {"dataset": config.dataset, "classes": ["x", "y"], "num_classes": 2, "image_shape": [16, 16, 3],
                    "normalization": {"channel_order": "RGB", "pixel_max": 255.0, "mean": IMAGENET_MEAN.tolist(),
                                      "std": IMAGENET_STD.tolist()},
                    # 12x12 images for a 16x16 input: evaluated resized (shorter side 18) and centre-cropped
                    "eval_resize": {"method": "resize_shorter_crop", "crop_fraction": 0.875},
                    "splits": {"train": {"name": "train", "count": 6, "per_class": {"x": 3, "y": 3}},
                               "eval": {"name": "0.4", "count": 4, "per_class": {"x": 2, "y": 2}}}}
    for i in range(5, 9):  # the folder grows after the run started
        save(tmp_path / "data" / "x" / f"{i}.png", Image.fromarray(random_image(rng, 12, 12)))
    resumed = data.describe(config, workdir=tmp_path / "run")
    assert resumed.train.source.files == first.train.source.files
    assert resumed.eval.source.files == first.eval.source.files
    assert len(data.describe(config).train.source) == 8  # a new run sees the new images
    on_train = data.describe(make_config(config.dataset, eval_split="train"), workdir=tmp_path / "run")
    assert on_train.eval.source.files == first.train.source.files  # fusionjax-eval --split train
    with pytest.raises(errors.ConfigError, match="holds out 0.4 of its images for evaluation, not 0.5"):
        data.describe(make_config(config.dataset, eval_split="0.5"), workdir=tmp_path / "run")


def test_batches_are_a_function_of_seed_and_step_and_hosts_share_them(split_folders):
    description = data.describe(make_config(f"folder:{split_folders}", augment="inception"))
    whole = [next(data.train_batches(description, seed=3, global_batch_size=8, start_step=s)) for s in (0, 4, 6)]
    stream = data.train_batches(description, seed=3, global_batch_size=8)
    uninterrupted = [next(stream) for _ in range(7)]
    for got, step in zip(whole, (0, 4, 6)):  # resuming at a step (one epoch is 5 steps) continues the stream
        np.testing.assert_array_equal(got["image"], uninterrupted[step]["image"])
        np.testing.assert_array_equal(got["label"], uninterrupted[step]["label"])
    shards = [next(data.train_batches(description, seed=3, global_batch_size=8, start_step=4, process_index=i,
                                      process_count=2)) for i in range(2)]
    for key in ("image", "label"):
        np.testing.assert_array_equal(np.concatenate([s[key] for s in shards]), uninterrupted[4][key])


def test_images_at_the_model_size_allow_cifar_augmentation_and_are_used_as_they_are(tmp_path):
    rng = np.random.default_rng(3)
    pixels = {}
    for name in ("p", "q"):
        for i in range(4):
            pixels[f"{name}/{i}.png"] = random_image(rng, 16, 16)
            save(tmp_path / name / f"{i}.png", Image.fromarray(pixels[f"{name}/{i}.png"]))
    description = data.describe(make_config(f"folder:{tmp_path}", eval_split="0.5", augment="cifar"))
    (batch,) = data.eval_batches(description, global_batch_size=4)
    expected = np.stack([pixels[f] for f in description.eval.source.files.files])
    np.testing.assert_allclose(batch["image"], (expected / 255.0 - IMAGENET_MEAN) / IMAGENET_STD, atol=2e-5)
    with pytest.raises(errors.ConfigError, match="config.augment='cifar' does not apply .*not all images 24x24"):
        data.describe(make_config(f"folder:{tmp_path}", eval_split="0.5", augment="cifar", image_size=24))


def test_a_cards_normalization_replaces_the_data_sets_own_and_the_workdir_keeps_it(tmp_path):
    rng = np.random.default_rng(6)
    pixels = {}
    for name in ("p", "q"):
        for i in range(3):
            pixels[f"{name}/{i}.png"] = random_image(rng, 16, 16)
            save(tmp_path / "data" / name / f"{i}.png", Image.fromarray(pixels[f"{name}/{i}.png"]))
    caffe = {"channel_order": "BGR", "pixel_max": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}
    config = make_config(f"folder:{tmp_path / 'data'}", eval_split="0.5")
    description = data.describe(config, normalization=caffe)
    (batch,) = data.eval_batches(description, global_batch_size=4)  # 1.5 of each class's 3, rounded up
    expected = np.stack([pixels[f] for f in description.eval.source.files.files])[..., ::-1] - np.asarray(caffe["mean"])
    np.testing.assert_allclose(batch["image"], expected, atol=1e-4)
    description.save(tmp_path / "run")
    assert data.describe(config, workdir=tmp_path / "run").normalization == caffe
    gray = {"channel_order": "grayscale", "pixel_max": 255.0, "mean": [0.5], "std": [0.5]}
    assert data.describe(config, normalization=gray).image_shape == (16, 16, 1)
    with pytest.raises(errors.ConfigError, match="does not fit 3 input channels"):
        data.describe(config, normalization=gray, channels=3)


def test_grayscale_images_into_a_3_channel_model_are_replicated_and_say_so(tmp_path, capsys):
    rng = np.random.default_rng(7)
    pixels = {}
    for name in ("p", "q"):
        for i in range(3):
            pixels[f"{name}/{i}.png"] = random_image(rng, 16, 16, channels=1)
            save(tmp_path / "data" / name / f"{i}.png", Image.fromarray(pixels[f"{name}/{i}.png"]))
    config = make_config(f"folder:{tmp_path / 'data'}", eval_split="0.5", model="resnet18")
    description = data.describe(config)
    assert capsys.readouterr().out == (f"folder:{tmp_path / 'data'} images are grayscale; replicated to the 3 "
                                       "channels resnet18 takes.\n")
    (batch,) = data.eval_batches(description, global_batch_size=4)
    gray = np.stack([pixels[f] for f in description.eval.source.files.files])[..., None] / 255.0
    np.testing.assert_allclose(batch["image"], (gray - IMAGENET_MEAN) / IMAGENET_STD, atol=2e-5)
    data.describe(config, normalization={"channel_order": "grayscale", "pixel_max": 255.0, "mean": [0.5],
                                         "std": [0.5]})  # a 1-channel model takes them as they are
    save(tmp_path / "data" / "q" / "3.png", Image.fromarray(random_image(rng, 16, 16)))  # one colour image
    data.describe(config)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------------------------------------------
# Bad input: named errors before anything compiles.


def small_folder(root, per_class=3, classes=("a", "b")):
    rng = np.random.default_rng(4)
    for split in ("train", "val"):
        for name in classes:
            for i in range(per_class):
                save(root / split / name / f"{i}.jpg", Image.fromarray(random_image(rng, 20, 20)), quality=90)
    return root


def test_an_unreadable_image_is_named_or_skipped_and_listed(tmp_path):
    root = small_folder(tmp_path / "data")
    corrupt = root / "train" / "a" / "1.jpg"
    corrupt.write_bytes(np.random.default_rng(5).bytes(500))  # not an image at all
    with pytest.raises(errors.DataError, match=f"1 image file\\(s\\) cannot be read: {corrupt}\\. .*skip_bad_images"):
        data.describe(make_config(f"folder:{root}"))
    description = data.describe(make_config(f"folder:{root}", skip_bad_images=True))
    assert description.skipped_images == (str(corrupt),) and description.card()["skipped_images"] == [str(corrupt)]
    assert str(corrupt) not in [str(root / f) for f in description.train.source.files.files]
    assert description.card()["splits"]["train"]["per_class"] == {"a": 2, "b": 3}


def test_an_image_corrupt_past_its_header_is_found_when_read_or_by_the_full_check(tmp_path):
    root = small_folder(tmp_path / "data")
    truncated = root / "val" / "b" / "0.jpg"
    jpeg = truncated.read_bytes()
    truncated.write_bytes(jpeg[:jpeg.index(b"\xff\xda") + 20])  # cut after the start of scan: headers survive
    description = data.describe(make_config(f"folder:{root}"))  # headers only: it passes
    with pytest.raises(errors.DataError, match=f"{truncated} cannot be decoded .*skip_bad_images=True"):
        list(data.eval_batches(description, global_batch_size=6))
    skipping = data.describe(make_config(f"folder:{root}", skip_bad_images=True))  # decodes every image
    assert skipping.skipped_images == (str(truncated),) and len(skipping.eval.source) == 5


@pytest.mark.parametrize("damage,error,match", [
    ("missing", errors.DataNotFoundError, "no such directory"),
    ("empty_class", errors.DataError, r"class folder .*train/b holds no image files"),
    ("val_only_class", errors.DataError, r"val has class folders that the training images lack: c"),
    ("no_images", errors.DataError, "holds no image files"),
    ("no_val", errors.ConfigError, "has train/ but no val or validation folder.*--config.eval_split=0.2"),
    ("flat_without_split", errors.ConfigError, "no train/ folder: set --config.eval_split=0.2"),
    ("bad_fraction", errors.ConfigError, "must be a fraction in \\(0, 1\\)"),
])
def test_bad_folders_are_named_errors(tmp_path, damage, error, match):
    root = tmp_path / "data"
    eval_split = None
    if damage != "missing":
        small_folder(root)
    if damage == "empty_class":
        for path in (root / "train" / "b").iterdir():
            path.unlink()
    elif damage == "val_only_class":
        small_folder(tmp_path / "extra", classes=("c",))
        (tmp_path / "extra" / "val" / "c").rename(root / "val" / "c")
    elif damage == "no_images":
        for path in root.glob("*/*/*.jpg"):
            path.rename(path.with_suffix(".dat"))
    elif damage == "no_val":
        for path in root.glob("val/*/*"):
            path.unlink()
        for path in root.glob("val/*"):
            path.rmdir()
        (root / "val").rmdir()
    elif damage == "flat_without_split":
        root = root / "train"
    elif damage == "bad_fraction":
        eval_split = "150%"
    with pytest.raises(error, match=match) as raised:
        data.describe(make_config(f"folder:{root}", eval_split=eval_split))
    assert "\n" not in str(raised.value)


def test_fewer_images_than_a_batch_is_refused(tmp_path):
    description = data.describe(make_config(f"folder:{small_folder(tmp_path / 'data')}"))
    with pytest.raises(errors.ConfigError, match="global_batch_size=8 exceeds the 6 training examples"):
        data.train_batches(description, seed=0, global_batch_size=8)


# ----------------------------------------------------------------------------------------------------------------
# tfds:NAME — a data set prepared offline by a builder of its own.


def tiny_builder_class(channels=3):
    import tensorflow_datasets as tfds

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        """12 training and 5 test images of 10x10 pixels, 3 classes, drawn from a fixed seed."""

        name = "tiny_shapes" if channels == 3 else "tiny_gray_shapes"
        VERSION = tfds.core.Version("1.0.0")
        pkg_dir_path = Path(__file__).parent  # where tfds looks for README/checksums: none (a module, not a package)

        def _info(self):
            return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(10, 10, channels)),
                "label": tfds.features.ClassLabel(names=["circle", "square", "star"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12, 0), "test": self._generate_examples(5, 1)}

        def _generate_examples(self, count, seed):
            for i, (image, label) in enumerate(zip(*tiny_examples(count, seed, channels))):
                # PIL encodes it: no TensorFlow
                yield i, {"image": Image.fromarray(image.squeeze(-1) if channels == 1 else image), "label": int(label)}

    return TinyShapes


def tiny_examples(count, seed, channels=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 10, 10, channels), dtype=np.uint8), rng.integers(0, 3, count)


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    tiny_builder_class()(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def test_any_prepared_tfds_data_set_is_read_from_its_own_description(tiny_tfds, no_network):
    config = make_config("tfds:tiny_shapes", data_dir=str(tiny_tfds), image_size=None, augment="cifar")
    description = data.describe(config)
    assert description.classes == ("circle", "square", "star")
    assert description.image_shape == (10, 10, 3) and description.train.name == "train"
    assert description.eval.name == "test" and description.info.num_train == 12 and description.info.num_eval == 5
    (batch,) = data.eval_batches(description, global_batch_size=5)
    images, labels = tiny_examples(5, 1)
    # The split's own order (tfds shuffles the written examples by key): match the rows by label and pixels.
    expected = (images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    rows = [int(np.argmin(np.abs(expected - image).max(axis=(1, 2, 3)))) for image in batch["image"]]
    assert sorted(rows) == list(range(5))
    np.testing.assert_allclose(batch["image"], expected[rows], atol=2e-5)
    np.testing.assert_array_equal(batch["label"], labels[rows])
    assert data.describe(make_config("tfds:tiny_shapes:1.0.0", data_dir=str(tiny_tfds),
                                     image_size=None)).info.num_train == 12
    with pytest.raises(errors.DataNotFoundError, match="tfds:tiny_shapes:2.0.0 is not prepared .*versions: 1.0.0"):
        data.describe(make_config("tfds:tiny_shapes:2.0.0", data_dir=str(tiny_tfds), image_size=None))
    with pytest.raises(errors.DataNotFoundError, match="tfds:other is not prepared in config.data_dir="):
        data.describe(make_config("tfds:other", data_dir=str(tiny_tfds)))
    with pytest.raises(errors.ConfigError, match="config.image_size=16 but tfds:tiny_shapes images are 10x10"):
        data.describe(make_config("tfds:tiny_shapes", data_dir=str(tiny_tfds)))


def test_a_grayscale_tfds_data_set_into_a_3_channel_model_is_replicated_and_says_so(tmp_path, no_network, capsys):
    tiny_builder_class(channels=1)(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    capsys.readouterr()  # what tfds printed while preparing
    config = make_config("tfds:tiny_gray_shapes", data_dir=str(tmp_path), image_size=None, model="resnet18")
    assert data.describe(config).image_shape == (10, 10, 1)  # a model of the data's own channels: nothing to say
    assert capsys.readouterr().out == ""
    card = {"channel_order": "RGB", "pixel_max": 255.0, "mean": IMAGENET_MEAN.tolist(), "std": IMAGENET_STD.tolist()}
    description = data.describe(config, normalization=card)
    assert capsys.readouterr().out == ("tfds:tiny_gray_shapes images are grayscale; replicated to the 3 channels "
                                       "resnet18 takes.\n")
    (batch,) = data.eval_batches(description, global_batch_size=5)
    images, _ = tiny_examples(5, 1, channels=1)
    expected = (images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    rows = [int(np.argmin(np.abs(expected - image).max(axis=(1, 2, 3)))) for image in batch["image"]]
    assert sorted(rows) == list(range(5))
    np.testing.assert_allclose(batch["image"], expected[rows], atol=2e-5)


# ----------------------------------------------------------------------------------------------------------------
# The command lines on a folder.


@pytest.mark.slow
def test_train_and_eval_command_lines_on_a_folder(tmp_path):
    root = small_folder(tmp_path / "data", per_class=8, classes=("bird", "ant", "cow"))
    workdir = tmp_path / "run"
    trained = subprocess.run(
        [str(SCRIPTS / "fusionjax-train"), "--config", "digits", "--workdir", str(workdir),
         f"--config.dataset=folder:{root}", "--config.image_size=16", "--config.num_train_steps=3",
         "--config.batch_size=8", "--config.eval_batch_size=8", "--config.warmup_epochs=0",
         "--config.progress_bar=False"],
        capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    card = json.loads((workdir / cards.WORKDIR_CARD).read_text())
    reference = torchvision_folder(root / "train")
    assert card["classes"] == reference.classes and card["num_classes"] == 3
    assert card["image_shape"] == [16, 16, 1]  # the digits config's ResNet-20 takes one channel: converted to gray
    assert card["splits"]["eval"] == {"name": "val", "count": 24, "per_class": {"ant": 8, "bird": 8, "cow": 8}}
    evaluated = subprocess.run([str(SCRIPTS / "fusionjax-eval"), "--workdir", str(workdir)], capture_output=True,
                               text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    # The same files, transform and normalization as the run's own final evaluation: the same numbers.
    (final,) = [record for record in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
                if record["split"] == "eval"]
    assert f"step 3: top-1 {final['top1']:.4f}, top-5 {final['top5']:.4f}, loss {final['loss']:.4f}" in evaluated.stdout
