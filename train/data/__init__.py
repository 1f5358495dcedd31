"""Input pipelines for training and evaluation: grain with NumPy/PIL transforms, no TensorFlow.

``catalog`` names the data sets (``digits``: scikit-learn's 8x8 handwritten digits, offline; ``cifar10``,
``cifar100``, ``imagenette``, ``imagenet2012``: tensorflow-datasets data in array_record files; ``folder:PATH``:
the user's image files, ``folder``; ``tfds:NAME``: any prepared tfds data set), ``description`` resolves a config
into one ``DataDescription`` (sources, classes, normalization, transform), ``sources`` reads splits,
``transforms`` augments and preprocesses, ``pipeline`` turns a step number into this host's share of that step's
batch. ``tfds_source`` opens prepared tfds data, preparing CIFAR (``cifar_archive``) and Imagenette
(``imagenette_archive``) offline from the user's archives; nothing here downloads. The user's guide:
``docs/data.md``.
"""

from fusionjax.train.data.catalog import DATASETS, DatasetInfo, UnknownDatasetError
from fusionjax.train.data.description import DataDescription, describe
from fusionjax.train.data.pipeline import dataset_info, eval_batches, train_batches

__all__ = ["DATASETS", "DataDescription", "DatasetInfo", "UnknownDatasetError", "dataset_info", "describe",
           "eval_batches", "train_batches"]
