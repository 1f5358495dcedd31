"""Random access to a split's images (HWC, uint8; digits' values 0..16) and integer labels, a batch of indices at
a time: scikit-learn's digits in memory, tfds's prepared array_record files (``tfds_source``), or image files
(``folder.FolderSource``)."""

from __future__ import annotations

import numpy as np

from fusionjax.train.errors import ConfigError

DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TEST = 360


class ArraySource:
    """An in-memory split."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        return list(self.images[indices]), self.labels[indices]


def digits_split(split: str) -> ArraySource:
    """scikit-learn's 8x8 digits, split 1437/360, stratified by class with the fixed ``DIGITS_SPLIT_SEED``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]  # values 0..16
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, digits.target, test_size=DIGITS_NUM_TEST, stratify=digits.target, random_state=DIGITS_SPLIT_SEED)
    splits = {"train": (train_images, train_labels), "test": (test_images, test_labels)}
    if split not in splits:
        raise ConfigError(f"digits has splits 'train' and 'test', not {split!r}; set config.train_split and "
                          "config.eval_split to one of them.")
    return ArraySource(*splits[split])


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An HWC uint8 image with ``channels`` channels: gray repeated into RGB, RGB to gray as PIL's ``convert('L')``."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    from PIL import Image

    return np.asarray(Image.fromarray(image).convert("L"))[..., None]


class TfdsSource:
    """A split of prepared tfds data, read with ``as_data_source`` (array_record, no TensorFlow)."""

    def __init__(self, data_source, channels: int):
        self._data_source, self.channels = data_source, channels

    def __len__(self) -> int:
        return len(self._data_source)

    def read(self, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        records = self._data_source.__getitems__([int(i) for i in indices])  # one batched array_record read
        # A few ImageNet JPEGs are grayscale.
        images = [to_channels(np.asarray(record["image"]), self.channels) for record in records]
        return images, np.asarray([record["label"] for record in records])

    def to_memory(self, chunk: int = 1024) -> ArraySource:
        """The whole split decoded into one array, read a chunk of records at a time."""
        # Threads do not help here: decoding tfds records is mostly Python, serialized by the GIL.
        parts = [self.read(np.arange(start, min(start + chunk, len(self)))) for start in range(0, len(self), chunk)]
        return ArraySource(np.stack([image for images, _ in parts for image in images]),
                           np.concatenate([labels for _, labels in parts]))
