"""The trainer's input path: uint8 pixels from the host pipeline, normalized on the device, and the share of each
logging interval that the loop waits for its next batch.

References are independent of the code under test: the former host formula ``(x / pixel_max - mean) / std`` in
NumPy float64 (channels reversed first for BGR cards), PIL's decoding of the files written here, and NumPy's
softmax cross-entropy of the model applied to those float inputs.
"""

import json
import time

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from fusionjax.train import cli, data, trainer
from fusionjax.train.data import pipeline
from fusionjax.train.data.sources import digits_split

# Normalized values reach about |3|; two float32 roundings of the input and of each constant keep the device result
# within a few ulps (ulp(4) = 4.8e-7) of the float64 formula.
NORMALIZE_ATOL = 2e-6
TINY_MODEL = dict(stage_sizes=(1, 1, 1), stage_widths=(4, 8, 8), stem_width=4)
CAFFE = {"channel_order": "BGR", "pixel_max": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}


def digits_config(**changes) -> ml_collections.ConfigDict:
    config = cli.load_config("digits")
    config.model_overrides.update({**TINY_MODEL, "in_channels": 1})
    config.update(changes)
    return config


def reference(pixels: np.ndarray, normalization: dict, pixel_max: float) -> np.ndarray:
    """The former host normalization of pixels that run 0..``pixel_max``, in float64: a card written for 8-bit
    pixels (pixel_max 255 or 1) sees them scaled to 0..255 first."""
    scale = 1.0 if normalization["pixel_max"] == pixel_max else 255.0 / pixel_max
    x = pixels.astype(np.float64) * scale
    x = x[..., ::-1] if normalization["channel_order"] == "BGR" else x
    return (x / normalization["pixel_max"] - np.asarray(normalization["mean"])) / np.asarray(normalization["std"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder data set of 8-bit RGB PNGs at 16x16, two classes, four images each; returns (root, {file: pixels})."""
    root, rng, written = tmp_path_factory.mktemp("folder"), np.random.default_rng(0), {}
    for label in ("a", "b"):
        (root / label).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
            written[f"{label}/{i}.png"] = pixels
    return root, written


def folder_config(root, **changes) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"dataset": f"folder:{root}", "data_dir": None, "train_split": "train",
                                      "eval_split": "0.5", "image_size": 16, "augment": "none", "input_workers": 0,
                                      "skip_bad_images": False, "model_overrides": ml_collections.ConfigDict(),
                                      **changes})


def on_device(pixels: np.ndarray, transform) -> np.ndarray:
    return np.asarray(jax.jit(transform.normalize_on_device)(pixels))


@pytest.mark.parametrize("channels", [1, 3])
def test_digits_cross_as_uint8_and_normalize_on_device_as_on_the_host(channels):
    description = data.describe(digits_config(model_overrides={"in_channels": channels}), log=None)
    batch = next(data.train_batches(description, seed=0, global_batch_size=1437, normalized=False))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape[-1] == channels
    images = digits_split("train").images
    assert batch["image"].max() == images.max() == 16  # digits' own scale, kept as it is
    expected = reference(batch["image"], description.normalization, 16.0)
    np.testing.assert_allclose(on_device(batch["image"], description.transform), expected, rtol=0,
                               atol=NORMALIZE_ATOL)
    host = next(data.train_batches(description, seed=0, global_batch_size=1437))
    assert host["image"].dtype == np.float32
    np.testing.assert_allclose(host["image"], expected, rtol=0, atol=NORMALIZE_ATOL)


@pytest.mark.parametrize("normalization", [None, CAFFE], ids=["imagenet", "caffe_bgr"])
@pytest.mark.parametrize("augment", ["none", "cifar"])
def test_folder_images_cross_as_their_decoded_pixels(folder, normalization, augment):
    root, written = folder
    description = data.describe(folder_config(root, augment=augment), normalization=normalization, log=None)
    batch = next(data.train_batches(description, seed=1, global_batch_size=4, normalized=False))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (4, 16, 16, 3)
    if augment == "none":  # unaugmented: each row is one file's pixels, exactly
        files = description.train.source.files.files
        rows = [min(files, key=lambda f: np.abs(written[f].astype(int) - image).sum()) for image in batch["image"]]
        np.testing.assert_array_equal(batch["image"], np.stack([written[f] for f in rows]))
    expected = reference(batch["image"], description.normalization, 255.0)
    atol = NORMALIZE_ATOL * max(description.normalization["mean"])  # caffe's values reach ~150, with ulps to match
    np.testing.assert_allclose(on_device(batch["image"], description.transform), expected, rtol=0, atol=atol)
    host = next(data.train_batches(description, seed=1, global_batch_size=4))
    np.testing.assert_allclose(host["image"], expected, rtol=0, atol=atol)


def test_eval_padding_stays_out_of_every_metric():
    """360 test digits in batches of 64: the last holds 40 real rows and 24 of zero padding, which normalize to
    nonzero values on the device. The metrics equal NumPy's over the 360 real images alone."""
    config = digits_config(eval_batch_size=64)
    description = data.describe(config, log=None)
    mesh = trainer.make_mesh(jax.devices()[:1])
    setup = trainer.make_setup(config, mesh, description.info, training=False)
    variables = jax.device_get(trainer.init_state(setup).variables())
    last = list(data.eval_batches(description, global_batch_size=64, normalized=False))[-1]
    assert last["image"].dtype == np.uint8 and last["mask"].sum() == 40 and not last["image"][40:].any()
    eval_step = trainer.make_eval_step(setup.model, mesh, description.eval_transform)
    result = trainer.evaluate(description, 64, mesh, eval_step, variables)

    test = digits_split("test")
    inputs = reference(test.images, description.normalization, 16.0).astype(np.float32)
    logits = np.asarray(setup.model.apply(variables, inputs, train=False), np.float64)
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    assert result["top1"] == pytest.approx(np.mean(logits.argmax(1) == test.labels), abs=1e-9)
    # float32 sums of 360 losses against a float64 mean.
    assert result["loss"] == pytest.approx(-log_softmax[np.arange(360), test.labels].mean(), rel=1e-5)


def test_auto_input_workers_follow_the_cores_and_leave_memory_splits_in_process(folder):
    root, _ = folder
    streamed = data.describe(folder_config(root, input_workers=None), log=None).train.source
    in_memory = data.describe(digits_config(), log=None).train.source
    assert [pipeline.auto_input_workers(streamed, cores) for cores in (1, 2, 3, 8, 64)] == [0, 0, 2, 7, 16]
    assert pipeline.auto_input_workers(in_memory, 64) == 0
    assert data.describe(digits_config(), log=None).input_workers is None  # unset by default: auto
    assert data.describe(folder_config(root, input_workers=3), log=None).input_workers == 3


def test_input_wait_is_high_when_batches_are_slow_and_low_when_they_are_ready(tmp_path, monkeypatch):
    """Logs every 4 steps: steps 1-4 compile; steps 5-8 take ready batches; steps 9-12 wait 0.25 s for each."""
    real_train_batches, slow_from, delay = data.train_batches, 9, 0.25

    def timed(description, **kwargs):
        ready = [next(batches) for batches in [real_train_batches(description, **kwargs)] for _ in range(12)]
        for step, batch in enumerate(ready, kwargs["start_step"] + 1):
            if step >= slow_from:
                time.sleep(delay)
            yield batch

    monkeypatch.setattr(data, "train_batches", timed)
    config = digits_config(batch_size=32, num_train_steps=12, warmup_epochs=0.0, log_every_steps=4,
                           eval_every_epochs=100.0, checkpoint_every_steps=100, progress_bar=False)
    trainer.train_and_evaluate(config, tmp_path)
    waits = {r["step"]: r["input_wait"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"}
    assert sorted(waits) == [4, 8, 12]
    # A tiny model's step takes milliseconds: 4 x 0.25 s of sleeping is nearly all of the last interval, while
    # ready batches leave the loop waiting for almost none of the one before. Generous bounds for a loaded machine.
    assert waits[12] > 0.6, waits
    assert waits[8] < 0.3, waits
