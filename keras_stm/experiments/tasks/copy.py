"""Copy task (Graves et al. 2014) as wired by the SAM authors, and the shared decoding wiring.

One batch (all examples share one length `L ~ U{min_seq_len..max_seq_len}`, drawn per batch):

* Input phase, `L + 2` rows of width `INPUT_SIZE` = 34: row 0 has the start flag (channel 32),
  rows 1..L carry `L` random bit vectors (Bernoulli(0.5), channels 0..31), row L+1 has the end
  flag (channel 33).
* Decoding phase, `L` all-zero rows: the model reads them and its outputs there are the
  predictions of the `L` bit vectors, in order.

Common wiring of the decoding tasks (copy, priority sort, RAR; spec 4.0), implemented once in
`with_decoding_phase` and reused by `priority_sort` and `rar`: given the input rows
`(B, T_in, D_in)` and the targets `(B, T_out, 32)`, the batch is

* `x`: `(B, T_in + T_out, D_in)` float32, the input rows followed by `T_out` zero rows;
* `y`: `(B, T_in + T_out, 32)` float32, zeros during the input phase, the targets after;
* `sample_weight`: `(B, T_in + T_out)` float32, 0 during the input phase, 1 on the `T_out`
  decoding steps.

So a model returning per-step logits `(B, T, 32)` trains with per-step binary cross-entropy
weighted by `sample_weight`, and is scored with
`keras_stm.experiments.tasks.metrics.BitErrorPerSequence` (as a weighted metric).

Streams whose time length changes from batch to batch (copy, RAR) are served by
`VaryingLengthDataset`, which keeps every batch's length distribution exact but never gives
batches 0 and 1 the same length: under the TensorFlow backend, Keras fixes the `tf.data`
signature from the shapes of those two batches, and a time axis they share would be frozen
(`TypeError: generator yielded an element of shape ... where ... was expected` later on).

References:
    Graves, Wayne, Danihelka, "Neural Turing Machines", 2014.
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (official code
    `thaihungle/SAM`, `datasets/copy.py`, `run_toys.py`, `tasks/copy.json`).
"""

import numpy as np

from keras_stm.experiments.tasks.base import TaskDataset

NUM_BITS = 32
"""int: width of the bit vectors (targets and channels 0..31 of the input)."""
START_CHANNEL = NUM_BITS
"""int: input channel of the start flag (32)."""
END_CHANNEL = NUM_BITS + 1
"""int: input channel of the end flag (33)."""
INPUT_SIZE = NUM_BITS + 2
"""int: D_in of the model (34)."""
OUTPUT_SIZE = NUM_BITS
"""int: D_out of the model (32 logits per step)."""
MIN_SEQ_LEN = 1
"""int: the authors' shortest sequence."""
MAX_SEQ_LEN = 20
"""int: the authors' longest sequence."""
NUM_BATCHES = 200
"""int: default batches per `dataset` epoch (the authors log every 200 iterations)."""


def _check_rng(rng):
    """Raises ValueError unless `rng` is a `np.random.Generator`."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"`rng` must be a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}."
        )


def _check_int(name, value, minimum=1):
    """Returns `value` as int, or raises ValueError naming `name` if it is not an int >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def with_decoding_phase(inputs, targets):
    """Appends the zero-input decoding phase to a decoding task's inputs and targets.

    Args:
        inputs: array (B, T_in, D_in), the input rows.
        targets: array (B, T_out, W), what the model must output, one row per decoding step.

    Returns:
        Tuple `(x, y, sample_weight)` of float32 arrays: `x` (B, T_in + T_out, D_in) is `inputs`
        followed by T_out zero rows; `y` (B, T_in + T_out, W) is zeros then `targets`;
        `sample_weight` (B, T_in + T_out) is 0 on the input steps and 1 on the decoding steps.

    Raises:
        ValueError: if the arrays are not 3-D or their batch sizes differ.

    Example:

    >>> x, y, w = with_decoding_phase(np.ones((2, 3, 34)), np.ones((2, 4, 32)))
    >>> x.shape, y.shape, w.shape, w[0].tolist()
    ((2, 7, 34), (2, 7, 32), (2, 7), [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    """
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    if inputs.ndim != 3:
        raise ValueError(f"`inputs` must be 3-D (B, T_in, D_in), got shape {inputs.shape}.")
    if targets.ndim != 3 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"`targets` must be 3-D (B, T_out, W) with B = {inputs.shape[0]}, got shape "
            f"{targets.shape}."
        )
    batch, t_in, d_in = inputs.shape
    t_out, width = targets.shape[1], targets.shape[2]
    x = np.zeros((batch, t_in + t_out, d_in), dtype=np.float32)
    x[:, :t_in] = inputs
    y = np.zeros((batch, t_in + t_out, width), dtype=np.float32)
    y[:, t_in:] = targets
    sample_weight = np.zeros((batch, t_in + t_out), dtype=np.float32)
    sample_weight[:, t_in:] = 1.0
    return x, y, sample_weight


class VaryingLengthDataset(TaskDataset):
    """A `TaskDataset` whose batch shape (sequence length) is drawn once per batch.

    Batch i of epoch e uses `rng = default_rng([seed, e, i])`: it draws one of `choices`
    uniformly (`rng.integers(len(choices))`) and returns
    `make_batch(rng, batch_size, **choices[c])`. Batch 1 instead draws uniformly among the
    choices whose time length differs from batch 0's (when there are any). If all choices have
    different lengths, every batch's length is still exactly uniform over the choices (only
    batches 0 and 1 are dependent); this keeps the time axis unknown (`None`) in the `tf.data`
    signature that Keras infers from batches 0 and 1 under the TensorFlow backend. With a
    single batch per epoch (`num_batches=1`) the TensorFlow backend cannot accept a length
    that changes between epochs: use `fixed=True` or a single length there.

    Args:
        make_batch: callable `(rng, batch_size, **sizes) -> tuple`, the task's generator.
        choices: list of dicts, the possible fixed `sizes` (each makes one time length).
        lengths: list of ints, the time length T of the batches of each choice.
        batch_size: int, examples per batch.
        num_batches: int, batches per epoch.
        seed: int, base seed. Defaults to 0.
        fixed: bool, repeat the same batches every epoch. Defaults to False.
        **kwargs: forwarded to `keras.utils.PyDataset`.

    Example:

    >>> data = VaryingLengthDataset(make_batch, [dict(min_seq_len=n, max_seq_len=n)
    ...                                          for n in (1, 2, 3)], [4, 6, 8],
    ...                             batch_size=2, num_batches=4)
    >>> data[0][0].shape[1] != data[1][0].shape[1]
    True
    """

    def __init__(
        self, make_batch, choices, lengths, batch_size, num_batches, seed=0, fixed=False, **kwargs
    ):
        choices = [dict(c) for c in choices]
        lengths = [int(t) for t in lengths]
        if not choices or len(choices) != len(lengths):
            raise ValueError(
                f"`choices` must be a non-empty list with one entry per `lengths` entry, got "
                f"{len(choices)} choices and {len(lengths)} lengths."
            )
        if not callable(make_batch):
            raise ValueError(f"`make_batch` must be callable, got {make_batch!r}.")
        self.make_batch = make_batch
        self.choices = choices
        self.lengths = lengths
        super().__init__(
            self._independent_batch,
            batch_size=batch_size,
            num_batches=num_batches,
            seed=seed,
            fixed=fixed,
            **kwargs,
        )

    def _independent_batch(self, rng, batch_size):
        """`batch_fn` of the base class: a batch with a uniformly drawn choice."""
        choice = int(rng.integers(len(self.choices)))
        return self.make_batch(rng, batch_size, **self.choices[choice])

    def _choose(self, rng, epoch, index):
        """Index of the choice used by batch `index` of `epoch` (draws from `rng`)."""
        if index == 1:
            first = self._choose(np.random.default_rng([self.seed, epoch, 0]), epoch, 0)
            others = [c for c, t in enumerate(self.lengths) if t != self.lengths[first]]
            if others:
                return others[int(rng.integers(len(others)))]
        return int(rng.integers(len(self.choices)))

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range [0, {len(self)}).")
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        choice = self._choose(rng, epoch, int(index))
        return self.make_batch(rng, self.batch_size, **self.choices[choice])


def _check_sizes(min_seq_len, max_seq_len):
    """Validates the copy sizes; returns them as ints."""
    min_seq_len = _check_int("min_seq_len", min_seq_len, 1)
    max_seq_len = _check_int("max_seq_len", max_seq_len, 1)
    if max_seq_len < min_seq_len:
        raise ValueError(f"`max_seq_len` ({max_seq_len}) must be >= `min_seq_len` ({min_seq_len}).")
    return min_seq_len, max_seq_len


def make_batch(rng, batch_size, min_seq_len=MIN_SEQ_LEN, max_seq_len=MAX_SEQ_LEN):
    """Draws one copy batch (one length L for the whole batch).

    Args:
        rng: `np.random.Generator`, the only source of randomness. L is drawn first
            (`rng.integers(min_seq_len, max_seq_len + 1)`), then the bits.
        batch_size: int, number of sequences B (>= 1).
        min_seq_len: int, shortest L (>= 1). Defaults to 1.
        max_seq_len: int, longest L (>= min_seq_len). Defaults to 20.

    Returns:
        Tuple `(x, y, sample_weight)` (float32), with T = 2L + 2:
        `x` (B, T, 34): start flag, L bit rows, end flag, L zero rows;
        `y` (B, T, 32): zeros on the first L + 2 steps, then the L bit rows;
        `sample_weight` (B, T): 1 on the last L steps, 0 elsewhere.

    Raises:
        ValueError: on a bad `rng`, `batch_size`, `min_seq_len` or `max_seq_len`.

    Example:

    >>> x, y, w = make_batch(np.random.default_rng(0), 4, min_seq_len=5, max_seq_len=5)
    >>> x.shape, y.shape, w.shape
    ((4, 12, 34), (4, 12, 32), (4, 12))
    >>> bool((y[:, 7:] == x[:, 1:6, :32]).all())
    True
    """
    _check_rng(rng)
    batch_size = _check_int("batch_size", batch_size, 1)
    min_seq_len, max_seq_len = _check_sizes(min_seq_len, max_seq_len)
    length = int(rng.integers(min_seq_len, max_seq_len + 1))
    bits = rng.integers(0, 2, size=(batch_size, length, NUM_BITS), dtype=np.uint8)
    inputs = np.zeros((batch_size, length + 2, INPUT_SIZE), dtype=np.float32)
    inputs[:, 0, START_CHANNEL] = 1.0
    inputs[:, 1 : length + 1, :NUM_BITS] = bits
    inputs[:, length + 1, END_CHANNEL] = 1.0
    return with_decoding_phase(inputs, bits)


def dataset(
    batch_size=128,
    num_batches=NUM_BATCHES,
    seed=0,
    fixed=False,
    min_seq_len=MIN_SEQ_LEN,
    max_seq_len=MAX_SEQ_LEN,
    **kwargs,
):
    """A seeded stream of copy batches for `model.fit` / `model.evaluate`.

    Args:
        batch_size: int, sequences per batch. Defaults to 128 (the authors' batch).
        num_batches: int, batches per epoch. Defaults to 200.
        seed: int, base seed (batch i of epoch e uses `default_rng([seed, e, i])`). Defaults to 0.
        fixed: bool, repeat the same batches every epoch (an evaluation set). Defaults to False.
        min_seq_len: int, shortest sequence. Defaults to 1.
        max_seq_len: int, longest sequence. Defaults to 20.
        **kwargs: forwarded to `TaskDataset` / `keras.utils.PyDataset` (`workers`, ...).

    Returns:
        `VaryingLengthDataset` (a `TaskDataset`) yielding `(x, y, sample_weight)` as in
        `make_batch`, each batch with L uniform in `min_seq_len..max_seq_len` (batches 0 and 1
        of an epoch never share L, see `VaryingLengthDataset`). The time length changes from
        batch to batch, so the model's time axis must be `None`.

    Raises:
        ValueError: on bad sizes.

    Example:

    >>> data = dataset(batch_size=8, num_batches=3, seed=1)
    >>> x, y, w = data[0]
    >>> x.shape[0], x.shape[2], y.shape[2]
    (8, 34, 32)
    """
    min_seq_len, max_seq_len = _check_sizes(min_seq_len, max_seq_len)
    lengths = range(min_seq_len, max_seq_len + 1)
    return VaryingLengthDataset(
        make_batch,
        [dict(min_seq_len=n, max_seq_len=n) for n in lengths],
        [2 * n + 2 for n in lengths],
        batch_size=batch_size,
        num_batches=num_batches,
        seed=seed,
        fixed=fixed,
        **kwargs,
    )
