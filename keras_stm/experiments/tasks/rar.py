"""RAR, relational associative recall: recall the item farthest from / closest to a query.

Layout of one example with `I` items of `n` vectors each (width 34, bits in channels 0..31):

* for each item i = 0..I-1: one delimiter row (channel 32 = 1), then its n bit rows
  (Bernoulli(0.5), drawn independently for every item and batch element);
* one query-delimiter row (channel 33 = 1), the query item (a copy of item q), and a closing
  query-delimiter row (channel 33 = 1).

That is `T_in = (n + 1)(I + 1) + 1` input rows. The query index `q` is uniform in
{0, ..., I - 2} (never the last item) and **shared by the whole batch**.

Target (n rows): among the items other than q, the one **farthest** from the query if the last
bit of the query item (last element of its last vector) is 1, otherwise the **closest** one;
distance = Euclidean distance between the flattened items (n * 32 bits). Bits make many
distances equal; ties go to the item with the lowest index, as in the authors' loop (strict
comparisons, items visited in order). With I = 2 the target is always the single other item.

Two readings of the authors' generator, chosen by `reading`:

* `reading="executed"` (default), what the authors' `run_toys.py` trained on: it calls
  `get_sample_wlen(3, n, bs)` with n ~ U{2..5}, but the signature is
  `get_sample_wlen(num_item, seq_len, bs)`, so the data has **I = 3 items, each of
  n ~ U{2..5} vectors** (n drawn once per batch), q in {0, 1}, 4n + 5 input rows, n target
  rows. Defaults: `num_items=3`, `item_length=(2, 5)`.
* `reading="intended"`, the generator's own signature read as the call meant it:
  **I ~ U{2..5} items** (drawn once per batch), **each of n = 3 vectors**, q in {0..I-2},
  4(I + 1) + 1 input rows, 3 target rows. Defaults: `num_items=(2, 5)`, `item_length=3`.

`reading` only chooses the defaults of `num_items` and `item_length`; each may also be given
explicitly as an int (fixed) or an inclusive `(low, high)` range drawn once per batch.

The batch follows the shared decoding wiring
(`keras_stm.experiments.tasks.copy.with_decoding_phase`):
`x` (B, T_in + n, 34) with n zero decoding rows, `y` (B, T_in + n, 32), `sample_weight`
(B, T_in + n) = 1 on the n decoding steps.

References:
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (official code
    `thaihungle/SAM`, `datasets/rar.py`, `run_toys.py`, `tasks/rar.json`).
"""

import numpy as np

from keras_stm.experiments.tasks.copy import VaryingLengthDataset
from keras_stm.experiments.tasks.copy import _check_int
from keras_stm.experiments.tasks.copy import _check_rng
from keras_stm.experiments.tasks.copy import with_decoding_phase

NUM_BITS = 32
"""int: width of the bit vectors."""
ITEM_CHANNEL = NUM_BITS
"""int: input channel of the item delimiter (32)."""
QUERY_CHANNEL = NUM_BITS + 1
"""int: input channel of the query delimiters (33)."""
INPUT_SIZE = NUM_BITS + 2
"""int: D_in of the model (34)."""
OUTPUT_SIZE = NUM_BITS
"""int: D_out of the model (32)."""
READINGS = ("executed", "intended")
"""tuple: the accepted values of `reading`."""
DEFAULT_SIZES = {
    "executed": {"num_items": 3, "item_length": (2, 5)},
    "intended": {"num_items": (2, 5), "item_length": 3},
}
"""dict: per reading, the default `num_items` and `item_length` (int or inclusive range)."""
NUM_BATCHES = 200
"""int: default batches per `dataset` epoch."""


def _check_size(name, value, minimum):
    """Returns `value` as an inclusive (low, high) int range, validating it; names `name`."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"`{name}` must be an int or a (low, high) pair, got {value!r}.")
        low = _check_int(name, value[0], minimum)
        high = _check_int(name, value[1], minimum)
        if high < low:
            raise ValueError(f"`{name}` range must have low <= high, got {value!r}.")
        return low, high
    value = _check_int(name, value, minimum)
    return value, value


def resolve_sizes(reading="executed", num_items=None, item_length=None):
    """Returns the validated size ranges of a RAR configuration.

    Args:
        reading: str, "executed" (3 items of U{2..5} vectors) or "intended" (U{2..5} items of
            3 vectors). Defaults to "executed".
        num_items: optional int or inclusive (low, high) range, items per example (>= 2).
            Defaults to None (the reading's default).
        item_length: optional int or inclusive (low, high) range, vectors per item (>= 1).
            Defaults to None (the reading's default).

    Returns:
        Tuple `((items_low, items_high), (length_low, length_high))` of ints.

    Raises:
        ValueError: on an unknown `reading` or a bad `num_items` / `item_length`.

    Example:

    >>> resolve_sizes("intended")
    ((2, 5), (3, 3))
    """
    if reading not in READINGS:
        raise ValueError(f"`reading` must be one of {READINGS}, got {reading!r}.")
    defaults = DEFAULT_SIZES[reading]
    num_items = defaults["num_items"] if num_items is None else num_items
    item_length = defaults["item_length"] if item_length is None else item_length
    return _check_size("num_items", num_items, 2), _check_size("item_length", item_length, 1)


def input_length(num_items, item_length):
    """Number of input rows T_in = (item_length + 1)(num_items + 1) + 1 (before decoding rows).

    Args:
        num_items: int, items I.
        item_length: int, vectors per item n.

    Returns:
        int, T_in.

    Example:

    >>> input_length(3, 2)
    13
    """
    return (item_length + 1) * (num_items + 1) + 1


def make_batch(rng, batch_size, reading="executed", num_items=None, item_length=None):
    """Draws one RAR batch.

    Random draws, in this order: I (if a range), n (if a range), the query index q, the bits.

    Args:
        rng: `np.random.Generator`.
        batch_size: int, number of sequences B (>= 1).
        reading: str, "executed" (default) or "intended"; see the module docstring.
        num_items: optional int or (low, high), items I (>= 2). Defaults to the reading's.
        item_length: optional int or (low, high), vectors per item n (>= 1). Defaults to the
            reading's.

    Returns:
        Tuple `(x, y, sample_weight)` (float32), T = T_in + n:
        `x` (B, T, 34): item blocks, query block, then n zero rows;
        `y` (B, T, 32): zeros during the input phase, then the recalled item's n vectors;
        `sample_weight` (B, T): 1 on the last n steps, 0 elsewhere.

    Raises:
        ValueError: on a bad `rng`, `batch_size`, `reading`, `num_items` or `item_length`.

    Example:

    >>> x, y, w = make_batch(np.random.default_rng(0), 2, num_items=3, item_length=2)
    >>> x.shape, y.shape, w.shape
    ((2, 15, 34), (2, 15, 32), (2, 15))
    """
    _check_rng(rng)
    batch_size = _check_int("batch_size", batch_size, 1)
    items_range, length_range = resolve_sizes(reading, num_items, item_length)
    n_items = int(rng.integers(items_range[0], items_range[1] + 1))
    length = int(rng.integers(length_range[0], length_range[1] + 1))
    query_index = int(rng.integers(0, n_items - 1))
    items = rng.integers(0, 2, size=(batch_size, n_items, length, NUM_BITS), dtype=np.uint8)
    query = items[:, query_index]  # (B, n, 32)

    # Squared Euclidean distance (same order as the distance; exact integers for bits).
    diff = items.astype(np.int32) - query[:, None].astype(np.int32)
    sq_dist = np.sum(diff * diff, axis=(2, 3))  # (B, I)
    farthest_dist = sq_dist.copy()
    farthest_dist[:, query_index] = -1
    closest_dist = sq_dist.copy()
    closest_dist[:, query_index] = np.iinfo(np.int32).max
    choose_far = query[:, -1, -1] == 1
    # argmax / argmin return the first (lowest) index among ties.
    target_index = np.where(
        choose_far, np.argmax(farthest_dist, axis=1), np.argmin(closest_dist, axis=1)
    )
    targets = items[np.arange(batch_size), target_index]  # (B, n, 32)

    block = length + 1
    inputs = np.zeros((batch_size, input_length(n_items, length), INPUT_SIZE), dtype=np.float32)
    item_rows = inputs[:, : block * n_items].reshape(batch_size, n_items, block, INPUT_SIZE)
    item_rows[:, :, 0, ITEM_CHANNEL] = 1.0
    item_rows[:, :, 1:, :NUM_BITS] = items
    start = block * n_items
    inputs[:, start, QUERY_CHANNEL] = 1.0
    inputs[:, start + 1 : start + block, :NUM_BITS] = query
    inputs[:, start + block, QUERY_CHANNEL] = 1.0
    return with_decoding_phase(inputs, targets)


def dataset(
    batch_size=128,
    num_batches=NUM_BATCHES,
    seed=0,
    fixed=False,
    reading="executed",
    num_items=None,
    item_length=None,
    **kwargs,
):
    """A seeded stream of RAR batches for `model.fit` / `model.evaluate`.

    Args:
        batch_size: int, sequences per batch. Defaults to 128.
        num_batches: int, batches per epoch. Defaults to 200.
        seed: int, base seed (batch i of epoch e uses `default_rng([seed, e, i])`). Defaults to 0.
        fixed: bool, repeat the same batches every epoch. Defaults to False.
        reading: str, "executed" (default) or "intended".
        num_items: optional int or (low, high) range. Defaults to the reading's.
        item_length: optional int or (low, high) range. Defaults to the reading's.
        **kwargs: forwarded to `TaskDataset` / `keras.utils.PyDataset`.

    Returns:
        `keras_stm.experiments.tasks.copy.VaryingLengthDataset` (a `TaskDataset`) yielding
        `(x, y, sample_weight)` as in `make_batch`; each batch draws its (I, n) uniformly over
        the size ranges (batches 0 and 1 of an epoch never share the time length, so the
        TensorFlow backend sees a `None` time axis), so the time length changes from batch
        to batch.

    Raises:
        ValueError: on a bad reading or bad sizes.

    Example:

    >>> x, y, w = dataset(batch_size=4, num_batches=2, reading="intended")[0]
    >>> x.shape[0], x.shape[2]
    (4, 34)
    """
    items_range, length_range = resolve_sizes(reading, num_items, item_length)
    choices, lengths = [], []
    for n_items in range(items_range[0], items_range[1] + 1):
        for length in range(length_range[0], length_range[1] + 1):
            choices.append(dict(reading=reading, num_items=n_items, item_length=length))
            lengths.append(input_length(n_items, length) + length)
    return VaryingLengthDataset(
        make_batch,
        choices,
        lengths,
        batch_size=batch_size,
        num_batches=num_batches,
        seed=seed,
        fixed=fixed,
        **kwargs,
    )
