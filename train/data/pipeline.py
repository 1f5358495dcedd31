"""Batches: grain maps a step number to this host's share of that step's global batch.

Every training batch is a pure function of ``(seed, step)``: the example order is a per-epoch permutation seeded by
``(seed, epoch)`` and the augmentation's random numbers come from a generator seeded by ``(seed, step)``. Resuming
at ``start_step`` therefore reproduces an uninterrupted run exactly, and a batch does not depend on how many hosts
read it: host ``i`` of ``n`` reads and augments rows ``[i*B/n, (i+1)*B/n)`` of it. grain reads with threads and
worker processes (``config.input_workers``; unset: ``auto_input_workers``); the order of batches never depends on
either.

Images leave the workers as uint8 pixels, a quarter of float32's bytes: copying batches between processes, not
decoding, is what made a few workers slower than none. They are normalized in the consuming process
(``normalized=True``), or kept as pixels for a consumer that normalizes them itself: the trainer, on the device.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator

import grain
import ml_collections
import numpy as np

from fusionjax.train.data import catalog
from fusionjax.train.data.description import DataDescription, describe
from fusionjax.train.data.sources import ArraySource
from fusionjax.train.data.transforms import Transform
from fusionjax.train.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class HostShard:
    """This host's equal share of every global batch."""

    global_batch_size: int
    process_index: int
    process_count: int

    def __post_init__(self):
        if self.process_count < 1 or not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"process_index={self.process_index} must lie in [0, process_count={self.process_count}).")
        if self.global_batch_size < 1 or self.global_batch_size % self.process_count:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} must be a positive multiple of "
                f"process_count={self.process_count}: every host reads an equal share of each batch.")

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    @property
    def rows(self) -> slice:
        """This host's rows of the global batch."""
        return slice(self.process_index * self.local_batch_size, (self.process_index + 1) * self.local_batch_size)


class _TrainBatch:
    """Step -> this host's rows of the step's global batch: a per-epoch permutation, then augmentation."""

    def __init__(self, source, transform: Transform, shard: HostShard, seed: int, steps_per_epoch: int):
        self.source, self.transform, self.shard = source, transform, shard
        self.seed, self.steps_per_epoch = seed, steps_per_epoch
        self._epoch_and_order: tuple[int, np.ndarray | None] = (-1, None)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        # One attribute holds (epoch, order) so that grain's reader threads, which may straddle an epoch boundary,
        # never pair one epoch's number with another's order.
        cached_epoch, order = self._epoch_and_order
        if cached_epoch != epoch:
            order = np.random.default_rng((self.seed, 0, epoch)).permutation(len(self.source))
            self._epoch_and_order = (epoch, order)
        return order

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        batch = self.shard.global_batch_size
        indices = self._epoch_order(epoch)[step_in_epoch * batch:(step_in_epoch + 1) * batch][self.shard.rows]
        draws = self.transform.draw(np.random.default_rng((self.seed, 1, step)), batch)
        images, labels = self.source.read(indices)
        return {"image": self.transform.train(images, {k: v[self.shard.rows] for k, v in draws.items()}),
                "label": labels.astype(np.int32)}


class _EvalBatch:
    """Batch number -> this host's rows of it, in split order; rows past the split's end are zero with mask 0."""

    def __init__(self, source, transform: Transform, shard: HostShard, image_shape: tuple[int, int, int]):
        self.source, self.transform, self.shard, self.image_shape = source, transform, shard, image_shape

    def __call__(self, batch_number: int) -> dict[str, np.ndarray]:
        rows = self.shard.rows
        positions = batch_number * self.shard.global_batch_size + np.arange(rows.start, rows.stop)
        real = positions[positions < len(self.source)]
        image, label = np.zeros((0, *self.image_shape), np.uint8), np.zeros(0, np.int32)
        if len(real):
            images, labels = self.source.read(real)
            image, label = self.transform.eval(images), labels.astype(np.int32)
        if blank := len(positions) - len(real):  # only the last batches: a full one is the transform's array as is
            image = np.concatenate([image, np.zeros((blank, *self.image_shape), np.uint8)])
            label = np.concatenate([label, np.zeros(blank, np.int32)])
        return {"image": image, "label": label, "mask": (positions < len(self.source)).astype(np.float32)}


MAX_AUTO_WORKERS = 16  # bounds start-up time and memory: every worker holds its own reader and batches in flight


def auto_input_workers(source, cores: int | None = None) -> int:
    """Worker processes for an unset ``config.input_workers``: one per core this process may use (``cores``), less
    one for the training loop, at most ``MAX_AUTO_WORKERS``. None for a split in memory (digits, CIFAR's training
    images), which has nothing to decode and would be copied into every worker, nor below 2, where one worker
    would only add a copy between processes to reading in-process."""
    if isinstance(source, ArraySource):
        return 0
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cores - 1, MAX_AUTO_WORKERS)
    return workers if workers >= 2 else 0


def _normalized(batches: Iterator[dict], transform: Transform) -> Iterator[dict]:
    for batch in batches:
        image = transform.normalize(batch["image"])
        if "mask" in batch:
            image[batch["mask"] == 0] = 0  # padding rows stay zero, as eval_batches promises
        yield {**batch, "image": image}


def _iterate(dataset: grain.MapDataset, workers: int) -> Iterator[dict]:
    # In-process, threads overlap decoding and array_record reads, which release the GIL; a few batches in flight
    # suffice. A worker process makes one batch at a time: threads beside it only contend for its core (measured:
    # 12% fewer images/s with four, docs/data.md).
    threads = 1 if workers else 4
    iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4))
    if workers:
        from absl import flags

        # grain's worker start-up reads its absl flags; outside an absl app (a library call, a test) nothing has
        # parsed them, and their defaults are what we want.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        # Two batches ready per worker: one being taken while the next is made.
        iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                                             per_worker_buffer_size=2))
    return iter(iter_dataset)


def _described(data) -> DataDescription:
    return data if isinstance(data, DataDescription) else describe(data)


def worker_count(data: DataDescription, source) -> int:
    """The worker processes that read ``source``: ``data.input_workers``, or where unset ``auto_input_workers``."""
    return auto_input_workers(source) if data.input_workers is None else data.input_workers


def dataset_info(config) -> catalog.DatasetInfo:
    """Shapes, class count and split sizes of the data ``config`` names (opened, prepared where needed, checked)."""
    return describe(config, log=None).info


def train_batches(data: DataDescription | ml_collections.ConfigDict, *, seed: int, global_batch_size: int,
                  start_step: int = 0, process_index: int = 0, process_count: int = 1,
                  normalized: bool = True) -> Iterator[dict]:
    """Infinite training batches ``{'image': float32 [B/n, H, W, C], 'label': int32 [B/n]}`` from ``start_step``
    of the data that ``data`` describes (a config is described first); ``normalized=False``: the images are the
    uint8 pixels that ``data.transform.normalize`` turns into them.

    Deterministic in ``(seed, step)``; reshuffles every epoch and drops each epoch's incomplete last batch.
    """
    data = _described(data)
    if seed < 0 or start_step < 0:
        raise ValueError(f"seed ({seed}) and start_step ({start_step}) must be >= 0.")
    shard = HostShard(global_batch_size, process_index, process_count)
    source = data.train.source
    steps_per_epoch = len(source) // global_batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"global_batch_size={global_batch_size} exceeds the {len(source)} training examples of "
                          f"{data.dataset}; use a smaller batch.")
    # Fixed-size training images (CIFAR: 150 MB for 50,000) are decoded once and kept in memory, so record parsing
    # and PNG decoding cost seconds per run instead of most of every epoch's input time. One evaluation pass reads
    # each image once anyway, so it streams.
    if data.train_in_memory:
        source = source.to_memory()
    # Steps are unbounded in principle; sys.maxsize // 2 is a length grain can hold that no run reaches.
    steps = grain.MapDataset.range(start_step, sys.maxsize // 2)
    batches = _iterate(steps.map(_TrainBatch(source, data.transform, shard, seed, steps_per_epoch)),
                       worker_count(data, source))
    return _normalized(batches, data.transform) if normalized else batches


def eval_batches(data: DataDescription | ml_collections.ConfigDict, *, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1, normalized: bool = True) -> Iterator[dict]:
    """One ordered pass over the eval split of ``data`` (a description, or a config described first); the last
    batch is padded with zeros, and ``'mask'`` marks real examples. ``normalized=False``: uint8 pixels, as in
    ``train_batches``."""
    data = _described(data)
    shard = HostShard(global_batch_size, process_index, process_count)
    source = data.eval.source
    batches = grain.MapDataset.range(-(-len(source) // global_batch_size))
    batches = _iterate(batches.map(_EvalBatch(source, data.eval_transform, shard, data.image_shape)),
                       worker_count(data, source))
    return _normalized(batches, data.eval_transform) if normalized else batches
