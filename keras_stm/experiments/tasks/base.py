"""Shared plumbing for the task data pipelines: seeded batches as a `keras.utils.PyDataset`."""

import hashlib

import keras
import numpy as np


def file_sha256(path):
    """The SHA-256 hex digest of a file, read in 1 MiB blocks (checkpoints, data archives)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TaskDataset(keras.utils.PyDataset):
    """A seeded, endless-or-finite stream of task batches usable by `model.fit`.

    Every batch is made by `batch_fn(rng, batch_size)` from a generator seeded with
    `(seed, epoch, index)`, so batch `i` of epoch `e` is the same whatever the order, the
    number of workers or an interruption in between: a resumed run sees the same data.

    Args:
        batch_fn: callable `(rng: np.random.Generator, batch_size: int) -> tuple` returning
            `(inputs, targets)` or `(inputs, targets, sample_weight)` as numpy arrays.
        batch_size: int, examples per batch. Must be positive.
        num_batches: int, batches per epoch (`len(dataset)`). Must be positive.
        seed: int, base seed of the stream.
        fixed: bool, if True every epoch repeats the same batches (an evaluation set);
            otherwise each epoch draws fresh data. Defaults to False.
        **kwargs: forwarded to `keras.utils.PyDataset` (`workers`, `use_multiprocessing`,
            `max_queue_size`).

    Example:

    >>> def batch_fn(rng, n):
    ...     x = rng.random((n, 3, 2)).astype("float32")
    ...     return x, x.sum(axis=(1, 2))
    >>> data = TaskDataset(batch_fn, batch_size=4, num_batches=2, seed=0)
    >>> x, y = data[0]
    >>> x.shape, y.shape
    ((4, 3, 2), (4,))
    """

    def __init__(self, batch_fn, batch_size, num_batches, seed=0, fixed=False, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("batch_size", batch_size), ("num_batches", num_batches)):
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not callable(batch_fn):
            raise ValueError(f"`batch_fn` must be callable, got {batch_fn!r}.")
        self.batch_fn = batch_fn
        self.batch_size = int(batch_size)
        self._num_batches = int(num_batches)
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.epoch = 0

    def __len__(self):
        return self._num_batches

    def __getitem__(self, index):
        if not 0 <= index < self._num_batches:
            raise IndexError(f"batch index {index} out of range [0, {self._num_batches}).")
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        return self.batch_fn(rng, self.batch_size)

    def on_epoch_end(self):
        self.epoch += 1
