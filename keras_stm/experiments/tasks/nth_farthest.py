"""Nth-farthest task (Santoro et al. 2018), generator as used by the SAM authors.

One example: `num_vectors` = 8 vectors of `num_dims` = 16 dimensions, each ~ U(-1, 1); a random
permutation `labels` of 0..7 (vector k has label `labels[k]`); `n ~ U{0..7}`; a reference
index `m_idx ~ U{0..7}` with label `m = labels[m_idx]`. Input step k (8 steps, D_in =
16 + 3 * 8 = 40) is

    [vector_k (16) | one-hot(labels[k]) (8) | one-hot(n) (8) | one-hot(m) (8)]

(n and m repeated on every step). Target: the label of the (n+1)-th farthest vector from the
reference vector (Euclidean distance), `labels[argsort(dist)[-(n + 1)]]`: n = 0 is the farthest
vector, n = 7 the reference itself (distance 0). One of 8 classes, returned as an int label;
the model reads the 8 steps and its logits at the last step are the prediction.

Distances are computed in float64 from the float32 vectors the model receives; exact ties
between distinct vectors have probability ~0 (a stable sort breaks them by vector index).

References:
    Santoro et al., "Relational recurrent neural networks", NeurIPS 2018.
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (official code
    `thaihungle/SAM`, `datasets/nfar.py`, `tasks/nfar.json`).
"""

import functools

import numpy as np

from keras_stm.experiments.tasks.base import TaskDataset
from keras_stm.experiments.tasks.copy import _check_int
from keras_stm.experiments.tasks.copy import _check_rng

NUM_VECTORS = 8
"""int: the authors' number of vectors (= number of classes, = time steps)."""
NUM_DIMS = 16
"""int: the authors' vector dimension."""
NUM_BATCHES = 200
"""int: default batches per `dataset` epoch."""


def input_size(num_vectors=NUM_VECTORS, num_dims=NUM_DIMS):
    """D_in = num_dims + 3 * num_vectors.

    Args:
        num_vectors: int, vectors per example. Defaults to 8.
        num_dims: int, dimension of each vector. Defaults to 16.

    Returns:
        int, the input width (40 for the defaults).

    Example:

    >>> input_size()
    40
    """
    return int(num_dims) + 3 * int(num_vectors)


def output_size(num_vectors=NUM_VECTORS):
    """D_out = number of classes = num_vectors.

    Args:
        num_vectors: int, vectors per example. Defaults to 8.

    Returns:
        int, the number of classes (8 for the default).

    Example:

    >>> output_size()
    8
    """
    return int(num_vectors)


INPUT_SIZE = input_size()
"""int: D_in for the default sizes (40)."""
OUTPUT_SIZE = output_size()
"""int: D_out (classes) for the default sizes (8)."""


def _check_sizes(num_vectors, num_dims):
    """Validates the sizes; returns them as ints."""
    return _check_int("num_vectors", num_vectors, 2), _check_int("num_dims", num_dims, 1)


def _check_active_dims(active_dims, num_dims):
    """Validates `active_dims` (None, or an int in 1..num_dims); returns it (int or None)."""
    if active_dims is None:
        return None
    active_dims = _check_int("active_dims", active_dims, 1)
    if active_dims > num_dims:
        raise ValueError(
            f"`active_dims` must be <= num_dims ({num_dims}), got {active_dims}: it is how many "
            "of the vector's coordinates are non-zero."
        )
    return active_dims


def make_batch(rng, batch_size, num_vectors=NUM_VECTORS, num_dims=NUM_DIMS, *, active_dims=None):
    """Draws one Nth-farthest batch.

    Random draws, in this order: the label permutations, n, m_idx, the vectors.

    Args:
        rng: `np.random.Generator`.
        batch_size: int, number of examples B (>= 1).
        num_vectors: int, vectors per example V (>= 2). Defaults to 8.
        num_dims: int, dimension of each vector (>= 1). Defaults to 16.
        active_dims: int in 1..num_dims, or None (all). Keyword only. When given, the vectors
            are drawn as usual (the same random draws, so the same stream as without it) and
            then their coordinates with index >= `active_dims` are set to 0; the targets are
            computed from these zeroed vectors. The input width stays `num_dims + 3V`, so a
            model trained at fewer active dimensions keeps its weights at more (the probe's
            `--dims-curriculum`). Defaults to None: every coordinate drawn, as before.

    Returns:
        Tuple `(x, y)`: `x` float32 (B, V, num_dims + 3V) as described in the module
        docstring; `y` int32 (B,), the target label in 0..V-1.

    Raises:
        ValueError: on a bad `rng`, `batch_size`, `num_vectors`, `num_dims` or `active_dims`.

    Example:

    >>> x, y = make_batch(np.random.default_rng(0), 4)
    >>> x.shape, x.dtype, y.shape, y.dtype
    ((4, 8, 40), dtype('float32'), (4,), dtype('int32'))
    >>> x, _ = make_batch(np.random.default_rng(0), 4, active_dims=2)
    >>> bool(np.all(x[:, :, 2:16] == 0)), bool(np.all(x[:, :, :2] != 0))
    (True, True)
    """
    _check_rng(rng)
    batch_size = _check_int("batch_size", batch_size, 1)
    num_vectors, num_dims = _check_sizes(num_vectors, num_dims)
    active_dims = _check_active_dims(active_dims, num_dims)
    rows = np.arange(batch_size)
    labels = rng.permuted(np.tile(np.arange(num_vectors), (batch_size, 1)), axis=1)
    n = rng.integers(0, num_vectors, size=batch_size)
    m_index = rng.integers(0, num_vectors, size=batch_size)
    m = labels[rows, m_index]
    vectors = (2.0 * rng.random((batch_size, num_vectors, num_dims)) - 1.0).astype(np.float32)
    if active_dims is not None:
        vectors[:, :, active_dims:] = 0.0

    v64 = vectors.astype(np.float64)
    dist = np.linalg.norm(v64 - v64[rows, m_index][:, None], axis=-1)  # (B, V)
    order = np.argsort(dist, axis=1, kind="stable")  # nearest first
    target_index = order[rows, num_vectors - 1 - n]
    y = labels[rows, target_index].astype(np.int32)

    x = np.zeros((batch_size, num_vectors, input_size(num_vectors, num_dims)), dtype=np.float32)
    x[:, :, :num_dims] = vectors
    steps = np.arange(num_vectors)
    x[rows[:, None], steps[None, :], num_dims + labels] = 1.0
    x[rows, :, num_dims + num_vectors + n] = 1.0
    x[rows, :, num_dims + 2 * num_vectors + m] = 1.0
    return x, y


def asked_n(x, num_vectors=NUM_VECTORS):
    """Which farthest each example asks for (n), read back from its one-hot input columns.

    Args:
        x: float array (B, V, D_in), batches of `make_batch`.
        num_vectors: int, V. Defaults to 8.

    Returns:
        int array (B,) of n in [0, V).

    Example:

    >>> x, _ = make_batch(np.random.default_rng(0), 4)
    >>> asked_n(x).shape
    (4,)
    """
    x = np.asarray(x)
    num_dims = x.shape[-1] - 3 * int(num_vectors)
    return np.argmax(x[:, 0, num_dims + num_vectors : num_dims + 2 * num_vectors], axis=-1)


def accuracy_by_n(x, y, predicted, num_vectors=NUM_VECTORS):
    """The accuracy for each n (which farthest is asked), read back from the inputs.

    The 25% plateau of LSTM and DNC (and of a stuck STM) is the answer that ignores the
    vectors: n = V-1 asks for the reference itself, whose label is in the input, and any other
    n is answered by one of the V-1 other labels at random, 1/V + (V-1)/V * 1/(V-1) = 2/V.
    These figures tell that plateau from a model that has begun to compare distances.

    Args:
        x: float array (B, V, D_in), batches of `make_batch` (n is read from its columns).
        y: int array (B,), the targets.
        predicted: int array (B,), the predicted labels.
        num_vectors: int, V. Defaults to 8.

    Returns:
        Dict `{"accuracy_n0": float, ..., "accuracy_n<V-1>": float}` over the n present in `x`.

    Raises:
        ValueError: when the shapes do not agree.

    Example:

    >>> x, y = make_batch(np.random.default_rng(0), 64)
    >>> scores = accuracy_by_n(x, y, y)
    >>> sorted(set(scores.values()))
    [1.0]
    """
    x, y, predicted = np.asarray(x), np.asarray(y).reshape(-1), np.asarray(predicted).reshape(-1)
    num_vectors = _check_int("num_vectors", num_vectors, 2)
    num_dims = x.shape[-1] - 3 * num_vectors if x.ndim == 3 else -1
    if num_dims < 1 or x.shape[1] != num_vectors or not len(x) == len(y) == len(predicted):
        raise ValueError(
            f"accuracy_by_n needs x of shape (B, {num_vectors}, D_in), y and predicted of "
            f"shape (B,); got x {x.shape}, y {y.shape}, predicted {predicted.shape}"
        )
    n = asked_n(x, num_vectors)
    correct = predicted == y
    return {f"accuracy_n{k}": float(np.mean(correct[n == k])) for k in np.unique(n).tolist()}


def dataset(
    batch_size=128,
    num_batches=NUM_BATCHES,
    seed=0,
    fixed=False,
    num_vectors=NUM_VECTORS,
    num_dims=NUM_DIMS,
    **kwargs,
):
    """A seeded stream of Nth-farthest batches for `model.fit` / `model.evaluate`.

    Args:
        batch_size: int, examples per batch. Defaults to 128.
        num_batches: int, batches per epoch. Defaults to 200.
        seed: int, base seed (batch i of epoch e uses `default_rng([seed, e, i])`). Defaults to 0.
        fixed: bool, repeat the same batches every epoch. Defaults to False.
        num_vectors: int, vectors per example. Defaults to 8.
        num_dims: int, vector dimension. Defaults to 16.
        **kwargs: forwarded to `TaskDataset` / `keras.utils.PyDataset`.

    Returns:
        `TaskDataset` yielding `(x, y)` as in `make_batch` (use a sparse categorical loss on
        the last-step logits).

    Raises:
        ValueError: on bad sizes.

    Example:

    >>> x, y = dataset(batch_size=4, num_batches=2)[0]
    >>> x.shape, y.shape
    ((4, 8, 40), (4,))
    """
    num_vectors, num_dims = _check_sizes(num_vectors, num_dims)
    batch_fn = functools.partial(make_batch, num_vectors=num_vectors, num_dims=num_dims)
    return TaskDataset(
        batch_fn, batch_size=batch_size, num_batches=num_batches, seed=seed, fixed=fixed, **kwargs
    )
