"""Input pipelines (fusionjax.train.data): every data set through the code path a user's data takes, offline.

References are independent of the pipeline: scikit-learn's digits array, CIFAR archives written here byte by byte,
tfds's mock data read directly, torchvision's Resize + CenterCrop, and NumPy arithmetic for normalization.
"""

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fusionjax.train import data, errors, trainer, workdir as workdir_lib
from fusionjax.train.data import catalog
from fusionjax.train.data.transforms import Transform, inception_boxes

MEAN_STD = {name: (np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32), spec.pixel_max)
            for name, spec in catalog.SPECS.items()}


def make_config(dataset, **overrides):
    defaults = dict(dataset=dataset, data_dir=None, manual_dir=None, train_split="train",
                    eval_split="test", image_size=None, augment="none", input_workers=0)
    return ml_collections.ConfigDict({**defaults, **overrides})


def denormalize(dataset, images):
    mean, std, pixel_max = MEAN_STD[dataset]
    return np.rint((images * std + mean) * pixel_max).astype(np.int64)


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


# ----------------------------------------------------------------------------------------------------------------
# CIFAR archives in the original formats (https://www.cs.toronto.edu/~kriz/cifar.html), written by the tests.


def _write_tar(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def write_cifar_archive(manual_dir, dataset, fmt, num_train, num_test, seed=0):
    """Writes the archive; returns {split: (images NHWC uint8, labels)} with CIFAR-100's fine labels."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if dataset == "cifar10" else 100
    splits = {}
    for split, count in (("train", num_train), ("test", num_test)):
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        splits[split] = (images, rng.integers(0, num_classes, count), rng.integers(0, 20, count))
    chw = {split: images.transpose(0, 3, 1, 2).reshape(len(images), -1) for split, (images, _, _) in splits.items()}
    members = {}
    if dataset == "cifar10" and fmt == "binary":
        folder = "cifar-10-batches-bin"
        train_parts = np.array_split(np.arange(num_train), 5)
        for i, rows in enumerate(train_parts, 1):
            labels = splits["train"][1][rows].astype(np.uint8)[:, None]
            members[f"{folder}/data_batch_{i}.bin"] = np.hstack([labels, chw["train"][rows]]).tobytes()
        members[f"{folder}/test_batch.bin"] = np.hstack(
            [splits["test"][1].astype(np.uint8)[:, None], chw["test"]]).tobytes()
        members[f"{folder}/batches.meta.txt"] = "".join(f"class{i}\n" for i in range(10)).encode() + b"\n"
        archive = "cifar-10-binary.tar.gz"
    elif dataset == "cifar10":
        folder = "cifar-10-batches-py"
        for i, rows in enumerate(np.array_split(np.arange(num_train), 5), 1):
            members[f"{folder}/data_batch_{i}"] = pickle.dumps(
                {b"data": chw["train"][rows], b"labels": splits["train"][1][rows].tolist()})
        members[f"{folder}/test_batch"] = pickle.dumps({b"data": chw["test"], b"labels": splits["test"][1].tolist()})
        members[f"{folder}/batches.meta"] = pickle.dumps({b"label_names": [f"class{i}".encode() for i in range(10)]})
        archive = "cifar-10-python.tar.gz"
    elif fmt == "binary":
        folder = "cifar-100-binary"
        for split in ("train", "test"):
            _, fine, coarse = splits[split]
            members[f"{folder}/{split}.bin"] = np.hstack(
                [coarse.astype(np.uint8)[:, None], fine.astype(np.uint8)[:, None], chw[split]]).tobytes()
        members[f"{folder}/fine_label_names.txt"] = "".join(f"fine{i}\n" for i in range(100)).encode()
        members[f"{folder}/coarse_label_names.txt"] = "".join(f"coarse{i}\n" for i in range(20)).encode()
        archive = "cifar-100-binary.tar.gz"
    else:
        folder = "cifar-100-python"
        for split in ("train", "test"):
            _, fine, coarse = splits[split]
            members[f"{folder}/{split}"] = pickle.dumps(
                {b"data": chw[split], b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist()})
        members[f"{folder}/meta"] = pickle.dumps({
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
        archive = "cifar-100-python.tar.gz"
    _write_tar(manual_dir / archive, members)
    return {split: (images, fine) for split, (images, fine, _) in splits.items()}


def match_rows(produced, written):
    """Index into ``written`` of each produced image (exact pixel match); fails if one has no match."""
    flat = written.reshape(len(written), -1)
    indices = []
    for image in produced.reshape(len(produced), -1):
        hits = np.flatnonzero((flat == image).all(axis=1))
        assert len(hits) == 1, "a produced image matches no written image"
        indices.append(hits[0])
    return np.asarray(indices)


@pytest.fixture(scope="module")
def cifar10_archive(tmp_path_factory):
    """A tiny CIFAR-10 binary archive (23 train, 5 test images), prepared once through the user's path."""
    root = tmp_path_factory.mktemp("cifar10")
    (root / "manual").mkdir()
    written = write_cifar_archive(root / "manual", "cifar10", "binary", num_train=23, num_test=5)
    config = make_config("cifar10", data_dir=str(root / "data"), manual_dir=str(root / "manual"))
    data.dataset_info(config)  # prepares
    return config, written


@pytest.mark.parametrize("dataset,fmt,extracted", [("cifar10", "binary", False), ("cifar10", "python", False),
                                                   ("cifar100", "binary", False), ("cifar100", "python", True)])
def test_cifar_archive_is_prepared_offline_and_read_back_exactly(tmp_path, no_network, dataset, fmt, extracted):
    written = write_cifar_archive(tmp_path, dataset, fmt, num_train=10, num_test=7, seed=1)
    if extracted:  # the archive's folder, as `tar xzf` leaves it
        (archive,) = tmp_path.glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path, filter="data")
        archive.unlink()
    config = make_config(dataset, data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path))
    info = data.dataset_info(config)
    assert info == data.DatasetInfo(dataset, 10 if dataset == "cifar10" else 100, (32, 32, 3), 10, 7)
    assert (tmp_path / "data" / dataset / "3.0.2" / "dataset_info.json").exists()
    for split, (images, labels) in written.items():
        batches = list(data.eval_batches(make_config(**{**config, "eval_split": split}), global_batch_size=len(images)))
        assert len(batches) == 1 and batches[0]["mask"].all()
        rows = match_rows(denormalize(dataset, batches[0]["image"]), images)
        assert sorted(rows) == list(range(len(images)))  # every written image exactly once
        np.testing.assert_array_equal(batches[0]["label"], labels[rows])
    names = tfds.builder(dataset, data_dir=str(tmp_path / "data")).info.features["label"].names
    assert names[:2] == (["class0", "class1"] if dataset == "cifar10" else ["fine0", "fine1"])


def test_corrupt_archive_is_refused_and_leaves_no_prepared_data(tmp_path, no_network):
    folder = "cifar-10-batches-bin"
    members = {f"{folder}/data_batch_{i}.bin": bytes(3073) for i in range(1, 6)}
    members[f"{folder}/test_batch.bin"] = bytes(3000)  # a truncated record
    members[f"{folder}/batches.meta.txt"] = "".join(f"class{i}\n" for i in range(10)).encode()
    _write_tar(tmp_path / "cifar-10-binary.tar.gz", members)
    config = make_config("cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path))
    with pytest.raises(errors.DataError, match="not a whole number of 3073-byte records; the archive is corrupt"):
        data.dataset_info(config)
    assert not list((tmp_path / "data").glob("cifar10/3.0.2/*"))


class _RunsCode:
    """Unpickling this calls ``os.system``: what a hostile "CIFAR batch" could hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_pickled_batch_that_would_run_code_is_refused_unrun(tmp_path, no_network):
    folder = "cifar-10-batches-py"
    marker = tmp_path / "code_ran"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    members = {f"{folder}/data_batch_{i}": pickle.dumps(batch) for i in range(2, 6)}
    members[f"{folder}/data_batch_1"] = pickle.dumps({**batch, b"extra": _RunsCode(marker)})
    members[f"{folder}/test_batch"] = pickle.dumps(batch)
    members[f"{folder}/batches.meta"] = pickle.dumps({b"label_names": [f"class{i}".encode() for i in range(10)]})
    _write_tar(tmp_path / "cifar-10-python.tar.gz", members)
    config = make_config("cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path))
    with pytest.raises(errors.DataError, match="refers to posix.system.*refusing to unpickle it"):
        data.dataset_info(config)
    assert not marker.exists()
    assert not list((tmp_path / "data").glob("cifar10/3.0.2/*"))


def test_unknown_split_names_the_existing_ones(cifar10_archive):
    with pytest.raises(errors.ConfigError, match=r"Unknown split 'validation'. Should be one of \['train', 'test'\]"):
        data.eval_batches(make_config(**{**cifar10_archive[0], "eval_split": "validation"}), global_batch_size=4)


def test_tfds_split_slices_carve_a_held_out_set_from_train(cifar10_archive):
    config, written = cifar10_archive
    config = make_config(**{**config, "train_split": "train[:15]", "eval_split": "train[15:]"})
    assert data.dataset_info(config).num_train == 15 and data.dataset_info(config).num_eval == 8
    train = next(data.train_batches(config, seed=0, global_batch_size=15))
    held_out = next(data.eval_batches(config, global_batch_size=8))
    rows = [match_rows(denormalize("cifar10", batch["image"]), written["train"][0]) for batch in (train, held_out)]
    assert sorted(np.concatenate(rows)) == list(range(23))  # disjoint, and together the whole train split


def test_training_order_is_a_fresh_permutation_every_epoch(cifar10_archive):
    config, written = cifar10_archive
    train_images, train_labels = written["train"]
    steps_per_epoch = 23 // 4  # the incomplete sixth batch (3 examples) is dropped
    batches = take(data.train_batches(config, seed=5, global_batch_size=4), 3 * steps_per_epoch)
    epochs = []
    for epoch in range(3):
        epoch_batches = batches[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch]
        rows = np.concatenate([match_rows(denormalize("cifar10", b["image"]), train_images) for b in epoch_batches])
        labels = np.concatenate([b["label"] for b in epoch_batches])
        np.testing.assert_array_equal(labels, train_labels[rows])
        assert len(set(rows)) == 4 * steps_per_epoch
        epochs.append(rows)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    for batch in batches:
        assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32


def test_resume_at_step_k_equals_the_uninterrupted_stream(cifar10_archive):
    config = make_config(**{**cifar10_archive[0], "augment": "cifar"})
    uninterrupted = take(data.train_batches(config, seed=11, global_batch_size=4), 14)
    for start in (3, 7):  # mid-epoch and across an epoch boundary (5 steps per epoch)
        resumed = take(data.train_batches(config, seed=11, global_batch_size=4, start_step=start), 14 - start)
        for expected, got in zip(uninterrupted[start:], resumed):
            np.testing.assert_array_equal(expected["image"], got["image"])
            np.testing.assert_array_equal(expected["label"], got["label"])
    other_seed = next(data.train_batches(config, seed=12, global_batch_size=4))
    assert not np.array_equal(other_seed["image"], uninterrupted[0]["image"])


def test_cifar_augmentation_is_zero_pad_4_crop_and_flip(cifar10_archive):
    config, written = cifar10_archive
    padded = np.pad(written["train"][0], ((0, 0), (4, 4), (4, 4), (0, 0)))
    # Every crop (and mirrored crop) that zero padding by 4 allows, keyed by its pixels.
    allowed = {}
    for top in range(9):
        for left in range(9):
            crops = padded[:, top:top + 32, left:left + 32]
            allowed.update({crop.tobytes(): False for crop in crops})
            allowed.update({crop[:, ::-1].tobytes(): True for crop in crops})
    batch = next(data.train_batches(make_config(**{**config, "augment": "cifar"}), seed=2, global_batch_size=20))
    images = denormalize("cifar10", batch["image"]).astype(np.uint8)
    flipped = [allowed.get(image.tobytes()) for image in images]
    assert None not in flipped, "an augmented image is no zero-padded crop (or its mirror) of a training image"
    assert 0 < sum(flipped) < len(images)


def test_host_shards_are_disjoint_and_make_up_the_global_batch(cifar10_archive):
    for augment in ("none", "cifar"):
        config = make_config(**{**cifar10_archive[0], "augment": augment})
        whole = take(data.train_batches(config, seed=1, global_batch_size=4, start_step=2), 4)
        shards = [take(data.train_batches(config, seed=1, global_batch_size=4, start_step=2, process_index=i,
                                          process_count=2), 4) for i in range(2)]
        for step, batch in enumerate(whole):
            assert shards[0][step]["image"].shape == (2, 32, 32, 3)
            for key in ("image", "label"):
                np.testing.assert_array_equal(
                    np.concatenate([shards[0][step][key], shards[1][step][key]]), batch[key])
        if augment == "none":  # the global batch holds distinct examples, so the shards are disjoint
            train_images = cifar10_archive[1]["train"][0]
            for step in range(4):
                rows = [set(match_rows(denormalize("cifar10", s[step]["image"]), train_images)) for s in shards]
                assert not rows[0] & rows[1]


def test_eval_covers_every_example_once_with_a_padding_mask(cifar10_archive):
    config, written = cifar10_archive
    test_images, test_labels = written["test"]
    for process_count in (1, 2):
        shards = [list(data.eval_batches(config, global_batch_size=4, process_index=i, process_count=process_count))
                  for i in range(process_count)]
        assert all(len(s) == 2 for s in shards)  # ceil(5 / 4) batches on every host, so hosts stay in lockstep
        batches = [b for s in shards for b in s]
        assert all(b["mask"].dtype == np.float32 and b["image"].shape[0] == 4 // process_count for b in batches)
        real = np.concatenate([b["image"][b["mask"] == 1] for b in batches])
        labels = np.concatenate([b["label"][b["mask"] == 1] for b in batches])
        rows = match_rows(denormalize("cifar10", real), test_images)
        assert sorted(rows) == list(range(5))
        np.testing.assert_array_equal(labels, test_labels[rows])
        assert sum(b["mask"].sum() for b in batches) == 5
    single = list(data.eval_batches(config, global_batch_size=4))
    np.testing.assert_array_equal(single[1]["mask"], [1, 0, 0, 0])  # the order is the split's, padding at the end


# ----------------------------------------------------------------------------------------------------------------
# tfds mock data: every tfds data set through the real code path.


@pytest.mark.parametrize("dataset,size,num_classes", [("cifar10", 32, 10), ("cifar100", 32, 100),
                                                      ("imagenette", 64, 10), ("imagenet2012", 48, 1000)])
def test_tfds_mock_data_through_the_pipeline(tmp_path, tfds_mock_data, no_network, dataset, size, num_classes):
    augment = "cifar" if dataset.startswith("cifar") else "inception"
    config = make_config(dataset, data_dir=str(tmp_path), image_size=size, augment=augment,
                         eval_split="test" if dataset.startswith("cifar") else "validation")
    with tfds_mock_data(num_examples=12):
        info = data.dataset_info(config)
        train = take(data.train_batches(config, seed=0, global_batch_size=6), 3)
        evaluation = list(data.eval_batches(config, global_batch_size=8))
        raw = tfds.data_source(dataset, split=config.eval_split, data_dir=str(tmp_path))
        raw = [raw[i] for i in range(12)]
    assert info == data.DatasetInfo(dataset, num_classes, (size, size, 3), 12, 12)
    for batch in train:
        assert batch["image"].shape == (6, size, size, 3) and batch["image"].dtype == np.float32
        assert batch["label"].dtype == np.int32 and ((0 <= batch["label"]) & (batch["label"] < num_classes)).all()
        assert np.isfinite(batch["image"]).all()
    assert [b["image"].shape for b in evaluation] == [(8, size, size, 3)] * 2
    images = np.concatenate([b["image"] for b in evaluation])[:12]
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in evaluation])[:12], [r["label"] for r in raw])
    mean, std, _ = MEAN_STD[dataset]
    if dataset.startswith("cifar"):
        expected = np.stack([(r["image"] / 255.0 - mean) / std for r in raw])
        np.testing.assert_allclose(images, expected, rtol=0, atol=1e-5)  # float32 rounding of (x/255 - mean)/std
    else:  # torchvision's eval transform is the reference for resize + center crop
        from PIL import Image

        from fusionjax.torch_compat import import_torchvision

        transforms = import_torchvision().transforms
        eval_transform = transforms.Compose([transforms.Resize(int(size / 0.875)), transforms.CenterCrop(size)])
        expected = np.stack([(np.asarray(eval_transform(Image.fromarray(r["image"]))) / 255.0 - mean) / std
                             for r in raw])
        # A level or two off on some values: one resize of the kept box (tests/test_decode.py, MAX_EVAL_LEVELS).
        levels = np.abs(images - expected) * std * 255
        assert levels.max() <= 2 + 1e-3 and levels.mean() <= 0.2


def write_imagenette_archive(path, images_per_class):
    """imagenette2.tgz laid out as fast.ai ships it; returns {split: [(JPEG bytes, wordnet id)]}."""
    from PIL import Image

    rng = np.random.default_rng(3)
    wnids = ["n01440764", "n03000684"]  # the first and sixth of Imagenette's classes
    written, members = {}, {}
    for split in ("train", "val"):
        written[split] = []
        for wnid in wnids:
            for i in range(images_per_class):
                height, width = rng.integers(40, 90, size=2)
                smooth = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
                image = Image.fromarray(smooth).resize((int(width), int(height)), Image.BILINEAR)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=90)
                members[f"imagenette2/{split}/{wnid}/{wnid}_{i}.JPEG"] = buffer.getvalue()
                written[split].append((buffer.getvalue(), wnid))
    _write_tar(path, members)
    return written


@pytest.fixture(scope="module")
def imagenette_archive(tmp_path_factory):
    """A tiny imagenette2.tgz (3 images per class and split, 2 classes), prepared once through the user's path."""
    root = tmp_path_factory.mktemp("imagenette")
    written = write_imagenette_archive(root / "imagenette2.tgz", images_per_class=3)
    config = make_config("imagenette", data_dir=str(root / "data"), manual_dir=str(root), image_size=32,
                         eval_split="validation")
    return config, written


def test_imagenette_archive_is_prepared_offline_and_read_like_torchvision(imagenette_archive, no_network):
    from PIL import Image

    from fusionjax.torch_compat import import_torchvision

    config, written = imagenette_archive
    assert data.dataset_info(config) == data.DatasetInfo("imagenette", 10, (32, 32, 3), 6, 6)
    labels_file = tfds.core.tfds_path("image_classification/imagenette_labels.txt")
    wnids = labels_file.read_text().split()
    transforms = import_torchvision().transforms
    eval_transform = transforms.Compose([transforms.Resize(36), transforms.CenterCrop(32)])
    mean, std, _ = MEAN_STD["imagenette"]
    expected = np.stack([(np.asarray(eval_transform(Image.open(io.BytesIO(jpeg)).convert("RGB"))) / 255.0 - mean)
                         / std for jpeg, _ in written["val"]])
    expected_labels = np.asarray([wnids.index(wnid) for _, wnid in written["val"]])
    batch = next(data.eval_batches(config, global_batch_size=6))
    # The prepared order is tfds's; match each produced image to the closest written one.
    distances = ((batch["image"][:, None] - expected[None]) ** 2).mean(axis=(2, 3, 4))
    rows = distances.argmin(axis=1)
    assert sorted(rows) == list(range(6))
    # A level or two off on some values: one resize of the kept box (tests/test_decode.py, MAX_EVAL_LEVELS).
    levels = np.abs(batch["image"] - expected[rows]) * std * 255
    assert levels.max() <= 2 + 1e-3 and levels.mean() <= 0.2
    np.testing.assert_array_equal(batch["label"], expected_labels[rows])


def test_grain_worker_processes_yield_the_same_batches(imagenette_archive):
    # The prepared tfds data source is pickled into the worker processes, which read and augment; the batches
    # and their order must not change.
    config = make_config(**{**imagenette_archive[0], "augment": "inception"})
    in_process = take(data.train_batches(config, seed=4, global_batch_size=2, start_step=3), 3)
    with_workers = take(data.train_batches(make_config(**{**config, "input_workers": 2}), seed=4,
                                           global_batch_size=2, start_step=3), 3)
    for expected, got in zip(in_process, with_workers):
        np.testing.assert_array_equal(expected["image"], got["image"])
        np.testing.assert_array_equal(expected["label"], got["label"])


def test_inception_crop_stays_in_its_scale_and_ratio_range():
    count = 4000
    transform = Transform("inception", 224, False, 255.0, (0.0,) * 3, (1.0,) * 3)
    draws = transform.draw(np.random.default_rng(0), count)
    # Mostly 300x400 images; every tenth is 20x400, where no attempt fits and the central fallback is taken.
    sizes = np.where((np.arange(count) % 10 == 0)[:, None], [20, 400], [300, 400])
    top, left, crop_h, crop_w = inception_boxes(sizes, draws).T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + crop_h <= sizes[:, 0]).all() and (left + crop_w <= sizes[:, 1]).all()
    regular = sizes[:, 0] == 300
    area = crop_h * crop_w / (sizes[:, 0] * sizes[:, 1])
    # Rounding each side to whole pixels moves area and ratio by about a pixel's worth.
    assert area[regular].min() >= 0.08 - 2e-3 and area[regular].max() <= 1.0
    assert area[regular].min() < 0.1 and area[regular].max() > 0.9  # the whole scale range is used
    ratio = crop_w / crop_h
    assert ratio[regular].min() >= 3 / 4 - 1e-2 and ratio[regular].max() <= 4 / 3 + 1e-2
    # On a 20x400 image no attempt can fit (every crop is taller than 20 pixels), so torchvision deterministically
    # takes its central fallback crop.
    from PIL import Image

    from fusionjax.torch_compat import import_torchvision

    transforms = import_torchvision().transforms
    fallback = transforms.RandomResizedCrop.get_params(Image.new("RGB", (400, 20)), [0.08, 1.0], [3 / 4, 4 / 3])
    np.testing.assert_array_equal(np.stack([top, left, crop_h, crop_w], 1)[~regular], [fallback] * (count // 10))


# ----------------------------------------------------------------------------------------------------------------
# digits (scikit-learn) and bad input.


def test_digits_split_sizes_class_balance_and_pixels():
    from sklearn.datasets import load_digits

    digits = load_digits()
    config = make_config("digits")
    info = data.dataset_info(config)
    assert info == data.DatasetInfo("digits", 10, (8, 8, 1), 1437, 360)
    train = next(data.train_batches(config, seed=0, global_batch_size=1437))  # one batch = the whole split
    test = list(data.eval_batches(config, global_batch_size=360))
    assert len(test) == 1 and test[0]["mask"].all()
    # Normalized with the train split's own statistics.
    assert abs(train["image"].mean()) < 1e-3 and abs(train["image"].std() - 1) < 1e-3
    # The two splits partition the data set: same multiset of (pixels, label) rows as scikit-learn's.
    def rows(images, labels):
        return sorted(map(tuple, np.hstack([images.reshape(len(images), -1), labels[:, None]]).tolist()))

    produced = rows(np.concatenate([denormalize("digits", train["image"]), denormalize("digits", test[0]["image"])]),
                    np.concatenate([train["label"], test[0]["label"]]))
    assert produced == rows(digits.images.astype(np.int64), digits.target)
    # Stratified: each class's share of the test split is its share of the data set, to within one example.
    expected = 360 * np.bincount(digits.target) / len(digits.target)
    assert np.abs(np.bincount(test[0]["label"], minlength=10) - expected).max() < 1


IMAGENET_CARD = {"channel_order": "RGB", "pixel_max": 255.0, "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225]}
CAFFE_CARD = {"channel_order": "BGR", "pixel_max": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}


@pytest.mark.parametrize("card", [IMAGENET_CARD, CAFFE_CARD], ids=["imagenet", "caffe"])
def test_a_cards_normalization_sees_digits_at_8_bit_scale_and_the_run_keeps_it(tmp_path, capsys, card):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, test_images, _, _ = train_test_split(digits.images, digits.target, test_size=360, stratify=digits.target,
                                            random_state=0)
    # A card is written for 8-bit pixels: digits' 0..16 are scaled to 0..255 (in float, not rounded) first.
    gray = test_images[..., None] * (255 / 16)
    expected = (np.repeat(gray, 3, axis=-1) / card["pixel_max"] - np.asarray(card["mean"])) / np.asarray(card["std"])
    config = make_config("digits", model="resnet18")
    description = data.describe(config, normalization=card)
    assert capsys.readouterr().out == "digits images are grayscale; replicated to the 3 channels resnet18 takes.\n"
    (batch,) = data.eval_batches(description, global_batch_size=360)
    np.testing.assert_allclose(batch["image"], expected, rtol=1e-6, atol=2e-5)
    description.save(tmp_path)  # the card, as the run records it, is what resuming (or fine-tuning again) applies
    assert json.loads((tmp_path / "dataset.json").read_text())["normalization"] == card
    (resumed,) = data.eval_batches(data.describe(config, workdir=tmp_path), global_batch_size=360)
    np.testing.assert_array_equal(resumed["image"], batch["image"])
    # A digits run's own normalization (pixel_max 16), as fine-tuning from its workdir passes it, applies as it is.
    own = {"channel_order": "RGB", "pixel_max": 16.0, "mean": [0.3054] * 3, "std": [0.3761] * 3}
    (again,) = data.eval_batches(data.describe(config, normalization=own), global_batch_size=360)
    np.testing.assert_allclose(again["image"], (np.repeat(test_images[..., None], 3, axis=-1) / 16 - 0.3054) / 0.3761,
                               atol=2e-5)


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(data.UnknownDatasetError, match="digits, cifar10, cifar100, imagenette, imagenet2012"):
        data.dataset_info(make_config("mnist"))
    with pytest.raises(data.UnknownDatasetError, match=r"config.dataset is required: set --config.dataset to digits, "
                       r"cifar10, .*folder:PATH .* or tfds:NAME\[:VERSION\]"):
        data.dataset_info(make_config(None))


@pytest.mark.parametrize("overrides,match", [
    (dict(dataset="cifar10", image_size=64), "config.image_size=32"),
    (dict(dataset="digits", augment="inception"), "use one of none"),
    (dict(dataset="digits", input_workers=-1), "input_workers"),
])
def test_bad_config_is_refused_with_the_fix(overrides, match):
    with pytest.raises(errors.ConfigError, match=match):
        next(data.train_batches(make_config(**overrides), seed=0, global_batch_size=8))


def test_bad_batch_and_host_arguments_are_refused():
    config = make_config("digits")
    with pytest.raises(ValueError, match="multiple of process_count=3"):
        data.train_batches(config, seed=0, global_batch_size=8, process_count=3)
    with pytest.raises(errors.ConfigError, match="exceeds the 1437 training examples"):
        data.train_batches(config, seed=0, global_batch_size=2048)
    with pytest.raises(ValueError, match="process_index=2"):
        data.eval_batches(config, global_batch_size=8, process_index=2, process_count=2)


@pytest.mark.parametrize("dataset,match", [
    ("cifar10", "cifar-10-binary.tar.gz or cifar-10-python.tar.gz .*config.manual_dir"),
    ("cifar100", "cifar-100-binary.tar.gz or cifar-100-python.tar.gz"),
    ("imagenette", "imagenette2.tgz .*or its extracted imagenette2/ folder .*config.manual_dir"),
    ("imagenet2012", "(?s)ILSVRC2012_img_train.tar .*--manual_dir"),
])
def test_missing_data_fails_fast_saying_what_to_put_where(tmp_path, no_network, dataset, match):
    (tmp_path / "empty_manual").mkdir()
    config = make_config(dataset, data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path / "empty_manual"))
    start = time.monotonic()
    with pytest.raises(errors.DataNotFoundError, match=match) as error:
        data.dataset_info(config)
    assert time.monotonic() - start < 10
    assert str(tmp_path / "data") in str(error.value) and "\n" not in str(error.value)


def test_missing_data_in_the_default_data_dir_names_it_and_how_to_choose_another(tmp_path, no_network, monkeypatch):
    # Unset config.data_dir: tfds would fail with a KeyError about empty splits here.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(errors.DataNotFoundError) as error:
        data.dataset_info(make_config("cifar10"))
    message = str(error.value)
    assert "\n" not in message
    for part in (f"{tmp_path} (the default data dir: $TFDS_DATA_DIR", "--config.data_dir=DIR",
                 "cifar-10-binary.tar.gz or cifar-10-python.tar.gz", "--config.manual_dir=M"):
        assert part in message


def _can_unshare_the_network() -> bool:
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare_the_network(), reason="needs `unshare --net` (a network namespace) to be offline")
def test_train_command_without_data_or_network_fails_in_one_line_before_compiling(tmp_path):
    (tmp_path / "tfds").mkdir()
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    command = ["unshare", "--net", str(Path(sys.executable).parent / "fusionjax-train"), "--config",
               "cifar10_resnet20", "--workdir", str(tmp_path / "run")]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert time.monotonic() - start < 60  # start-up and the data check; compiling ResNet-20 alone takes longer
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cifar10 is not prepared in ")
    for part in (str(tmp_path / "tfds"), "--config.data_dir", "cifar-10-binary.tar.gz", "--config.manual_dir"):
        assert part in lines[0]
    assert not (tmp_path / "run" / workdir_lib.CONFIG_FILE).exists()  # config.json only once the data loaded


def test_the_workdir_is_checked_before_the_data_is_read(tmp_path, no_network):
    from fusionjax.configs import cifar10_resnet20, digits

    run = tmp_path / "run"
    run.mkdir()
    (run / workdir_lib.CONFIG_FILE).write_text(digits.get_config().to_json())
    config = cifar10_resnet20.get_config()
    config.data_dir = str(tmp_path / "no_data")  # not prepared: reading it first would raise DataNotFoundError
    with pytest.raises(errors.WorkdirConflictError, match="holds a run of another config"):
        trainer.train_and_evaluate(config, run)
    assert json.loads((run / workdir_lib.CONFIG_FILE).read_text())["dataset"] == "digits"
