"""Associative retrieval (Ba et al. 2016, "fast weights"): the fixed data set of the SAM authors.

One example with `num_pairs` = P key-value pairs is a sequence of `2P + 3` token ids:

    k_1 v_1 k_2 v_2 ... k_P v_P ? ? k_q          target: v_q

Keys are P *distinct* random letters, values random digits (independent per pair), then two
`?` tokens and one of the keys, chosen uniformly; the target is that key's digit (a class in
0..9). Token ids: digits '0'-'9' -> 0..9, letters 'a'-'z' -> 10..35, '?' -> 36 (`VOCAB_SIZE`
= 37). The authors embed the ids (`Embedding(37, 100)`) and classify the read-out after the
last token.

Lengths: the authors' generator uses P = 24 (`NUM_PAIRS`), i.e. 51 tokens, presumably the
paper's "length 50" setting. For the paper's "length 30" setting use `NUM_PAIRS_LENGTH_30` =
14 (31 tokens); P = 13 (29 tokens) is the other candidate. **The exact pair count of the
paper's "length 30" setting is unverified** (only the P = 24 generator is in the official code).

The data set is fixed, like the original pickle: 100,000 training, 10,000 validation and
20,000 test sequences (`SPLIT_SIZES`), created once by `load_or_create(path, ...)` and stored
as an `.npz`. Each split is generated from its own seed `default_rng([seed, split_number])`
(train 0, validation 1, test 2), so a split does not depend on the sizes of the others.
Training reads it in minibatches drawn without replacement and reshuffled every epoch
(`dataset`); the authors evaluate on `size // 128` full batches (the remainder is dropped).

References:
    Ba, Hinton, Mnih, Leibo, Ionescu, "Using Fast Weights to Attend to the Recent Past",
    NeurIPS 2016.
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (official code
    `thaihungle/SAM`, `datasets/number_arecall/number_arecall.py`, `run_nar.py`).
"""

import os

import numpy as np

from keras_stm.experiments.tasks.base import TaskDataset
from keras_stm.experiments.tasks.copy import _check_int
from keras_stm.experiments.tasks.copy import _check_rng

NUM_PAIRS = 24
"""int: the authors' number of key-value pairs (sequence length 51)."""
NUM_PAIRS_LENGTH_30 = 14
"""int: pairs for the paper's "length 30" setting (31 tokens; unverified, 13 is possible)."""
NUM_LETTERS = 26
"""int: number of distinct keys, so `num_pairs` <= 26."""
FIRST_LETTER = 10
"""int: token id of 'a' (letters are 10..35)."""
QUERY_TOKEN = 36
"""int: token id of '?'."""
VOCAB_SIZE = 37
"""int: number of token ids (the model's embedding input dimension)."""
EMBEDDING_DIM = 100
"""int: the authors' embedding width (D_in of the memory cell)."""
NUM_CLASSES = 10
"""int: number of target classes (digits)."""
OUTPUT_SIZE = NUM_CLASSES
"""int: D_out of the model (10 logits)."""
SPLITS = ("train", "validation", "test")
"""tuple: split names, in seed order."""
SPLIT_SIZES = {"train": 100_000, "validation": 10_000, "test": 20_000}
"""dict: the authors' number of sequences per split."""
FORMAT_VERSION = 1
"""int: version of the `.npz` layout written by `load_or_create`."""


def sequence_length(num_pairs=NUM_PAIRS):
    """Tokens per sequence, 2 * num_pairs + 3.

    Args:
        num_pairs: int, key-value pairs. Defaults to 24.

    Returns:
        int (51 for the default, 31 for `NUM_PAIRS_LENGTH_30`).

    Example:

    >>> sequence_length(), sequence_length(NUM_PAIRS_LENGTH_30)
    (51, 31)
    """
    return 2 * _check_num_pairs(num_pairs) + 3


def _check_num_pairs(num_pairs):
    """Validates `num_pairs` (1..26); returns it as int."""
    num_pairs = _check_int("num_pairs", num_pairs, 1)
    if num_pairs > NUM_LETTERS:
        raise ValueError(
            f"`num_pairs` must be <= {NUM_LETTERS} (keys are distinct letters), got {num_pairs}."
        )
    return num_pairs


def generate(num_examples, rng, num_pairs=NUM_PAIRS):
    """Generates associative-retrieval examples.

    Random draws, in this order: the keys (a random permutation of the 26 letters per example,
    first P kept), the values, the query index.

    Args:
        num_examples: int, number of sequences N (>= 1).
        rng: `np.random.Generator`.
        num_pairs: int, key-value pairs P (1..26). Defaults to 24.

    Returns:
        Tuple `(x, y)`: `x` int32 (N, 2P + 3) token ids, `y` int32 (N,) target digits.

    Raises:
        ValueError: on a bad `num_examples`, `rng` or `num_pairs`.

    Example:

    >>> x, y = generate(3, np.random.default_rng(0), num_pairs=4)
    >>> x.shape, y.shape, x.dtype
    ((3, 11), (3,), dtype('int32'))
    >>> bool((x[:, 8:10] == QUERY_TOKEN).all())
    True
    """
    num_examples = _check_int("num_examples", num_examples, 1)
    _check_rng(rng)
    num_pairs = _check_num_pairs(num_pairs)
    rows = np.arange(num_examples)
    letters = np.tile(np.arange(NUM_LETTERS, dtype=np.int32), (num_examples, 1))
    keys = rng.permuted(letters, axis=1)[:, :num_pairs] + FIRST_LETTER
    values = rng.integers(0, NUM_CLASSES, size=(num_examples, num_pairs), dtype=np.int32)
    query = rng.integers(0, num_pairs, size=num_examples)
    x = np.empty((num_examples, 2 * num_pairs + 3), dtype=np.int32)
    x[:, 0 : 2 * num_pairs : 2] = keys
    x[:, 1 : 2 * num_pairs : 2] = values
    x[:, 2 * num_pairs] = QUERY_TOKEN
    x[:, 2 * num_pairs + 1] = QUERY_TOKEN
    x[:, 2 * num_pairs + 2] = keys[rows, query]
    y = values[rows, query].astype(np.int32)
    return x, y


def _split_sizes(num_train, num_validation, num_test):
    """Validated split sizes as a dict."""
    return {
        "train": _check_int("num_train", num_train, 1),
        "validation": _check_int("num_validation", num_validation, 1),
        "test": _check_int("num_test", num_test, 1),
    }


def _check_split(split):
    """Returns the seed number of `split`, or raises ValueError naming it."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    return SPLITS.index(split)


def generate_split(split, seed=0, num_pairs=NUM_PAIRS, num_examples=None):
    """Generates one split of the fixed data set, from `default_rng([seed, split_number])`.

    Args:
        split: str, "train", "validation" or "test".
        seed: int, data-set seed. Defaults to 0.
        num_pairs: int, key-value pairs. Defaults to 24.
        num_examples: optional int, sequences; defaults to None (`SPLIT_SIZES[split]`).

    Returns:
        Tuple `(x, y)` of int32 arrays as in `generate`; the same arrays `load_or_create`
        stores for that split.

    Raises:
        ValueError: on a bad `split`, `num_pairs` or `num_examples`.

    Example:

    >>> x, y = generate_split("test", seed=0, num_pairs=4, num_examples=5)
    >>> x.shape
    (5, 11)
    """
    number = _check_split(split)
    size = SPLIT_SIZES[split] if num_examples is None else num_examples
    return generate(size, np.random.default_rng([int(seed), number]), num_pairs)


def _load(path, seed, num_pairs, sizes):
    """Reads and checks an `.npz` written by `load_or_create`."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except Exception as error:  # zipfile.BadZipFile, OSError, ValueError, EOFError, ...
        raise ValueError(
            f"File {path!r} is not a readable associative-retrieval .npz ({error}). Delete it "
            f"to regenerate the data set."
        ) from error
    expected_keys = {"format_version", "seed", "num_pairs"}
    for split in SPLITS:
        expected_keys |= {f"x_{split}", f"y_{split}"}
    missing = sorted(expected_keys - set(contents))
    if missing:
        raise ValueError(
            f"File {path!r} is corrupt or not an associative-retrieval data set: "
            f"missing arrays {missing}."
        )
    stored = {
        "format_version": int(contents["format_version"]),
        "seed": int(contents["seed"]),
        "num_pairs": int(contents["num_pairs"]),
    }
    wanted = {"format_version": FORMAT_VERSION, "seed": int(seed), "num_pairs": num_pairs}
    for key in wanted:
        if stored[key] != wanted[key]:
            raise ValueError(
                f"File {path!r} holds a data set with {key}={stored[key]}, but {key}="
                f"{wanted[key]} was asked for; use another path or the stored settings."
            )
    length = 2 * num_pairs + 3
    splits = {}
    for split in SPLITS:
        x, y = contents[f"x_{split}"], contents[f"y_{split}"]
        if x.shape != (sizes[split], length) or y.shape != (sizes[split],):
            raise ValueError(
                f"File {path!r}: split {split!r} has shapes {x.shape}, {y.shape}; expected "
                f"({sizes[split]}, {length}) and ({sizes[split]},) (num_{split} differs?)."
            )
        if (
            x.size
            and (x.min() < 0 or x.max() >= VOCAB_SIZE)
            or y.size
            and (y.min() < 0 or y.max() >= NUM_CLASSES)
        ):
            raise ValueError(f"File {path!r} is corrupt: split {split!r} has ids out of range.")
        splits[split] = (x.astype(np.int32), y.astype(np.int32))
    return splits


def load_or_create(
    path,
    seed=0,
    num_pairs=NUM_PAIRS,
    num_train=SPLIT_SIZES["train"],
    num_validation=SPLIT_SIZES["validation"],
    num_test=SPLIT_SIZES["test"],
):
    """Loads the fixed data set from `path`, creating and saving it first if the file is absent.

    The `.npz` holds `x_train, y_train, x_validation, y_validation, x_test, y_test` (uint8)
    and the scalars `format_version, seed, num_pairs`. An existing file is checked against the
    arguments (seed, pair count, split sizes): a mismatch raises instead of silently serving
    another data set. The file is written atomically (temporary file, then rename).

    Args:
        path: str or path-like, the `.npz` file (its folder is created if needed).
        seed: int, data-set seed. Defaults to 0.
        num_pairs: int, key-value pairs (1..26). Defaults to 24.
        num_train: int, training sequences. Defaults to 100,000.
        num_validation: int, validation sequences. Defaults to 10,000.
        num_test: int, test sequences. Defaults to 20,000.

    Returns:
        dict mapping "train", "validation", "test" to `(x, y)`: `x` int32 (N, 2P + 3) token
        ids, `y` int32 (N,) target digits.

    Raises:
        ValueError: on bad sizes, or if the file is corrupt or holds a different data set.

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ar.npz")
    >>> data = load_or_create(path, num_pairs=4, num_train=8, num_validation=4, num_test=4)
    >>> data["train"][0].shape, os.path.exists(path)
    ((8, 11), True)
    """
    num_pairs = _check_num_pairs(num_pairs)
    sizes = _split_sizes(num_train, num_validation, num_test)
    seed = _check_int("seed", seed, 0)
    path = os.fspath(path)
    if os.path.exists(path):
        return _load(path, seed, num_pairs, sizes)
    splits = {split: generate_split(split, seed, num_pairs, sizes[split]) for split in SPLITS}
    arrays = {
        "format_version": np.int64(FORMAT_VERSION),
        "seed": np.int64(seed),
        "num_pairs": np.int64(num_pairs),
    }
    for split, (x, y) in splits.items():
        arrays[f"x_{split}"] = x.astype(np.uint8)
        arrays[f"y_{split}"] = y.astype(np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return splits


class SplitDataset(TaskDataset):
    """Minibatches of a fixed split, drawn without replacement and reshuffled every epoch.

    Batch i of epoch e is `x[perm[i * B:(i + 1) * B]]` with `perm =
    default_rng([seed, e]).permutation(N)` (identity order when `shuffle=False`), so each
    epoch visits every example at most once and a resumed run sees the same batches.

    Args:
        x: int array (N, T), token ids.
        y: int array (N,), target classes.
        batch_size: int, examples per batch. Defaults to 128.
        seed: int, shuffling seed. Defaults to 0.
        shuffle: bool, reshuffle every epoch (True, default) or keep the stored order.
        drop_remainder: bool, drop the last incomplete batch (True, default, as the authors)
            or serve it as a smaller batch.
        **kwargs: forwarded to `keras.utils.PyDataset`.

    Example:

    >>> x, y = generate(10, np.random.default_rng(0), num_pairs=4)
    >>> data = SplitDataset(x, y, batch_size=4)
    >>> len(data), data[0][0].shape
    (2, (4, 11))
    """

    def __init__(self, x, y, batch_size=128, seed=0, shuffle=True, drop_remainder=True, **kwargs):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"`x` must be (N, T) and `y` (N,) with the same N >= 1, got {x.shape} and "
                f"{y.shape}."
            )
        batch_size = _check_int("batch_size", batch_size, 1)
        if drop_remainder:
            num_batches = len(x) // batch_size
        else:
            num_batches = -(-len(x) // batch_size)
        if num_batches == 0:
            raise ValueError(
                f"`batch_size` ({batch_size}) exceeds the {len(x)} examples of the split with "
                f"drop_remainder=True."
            )
        super().__init__(
            self.sample,
            batch_size=batch_size,
            num_batches=num_batches,
            seed=seed,
            fixed=not shuffle,
            **kwargs,
        )
        self.x = x
        self.y = y
        self.shuffle = bool(shuffle)
        self._order_epoch = None
        self._order = None

    def sample(self, rng, batch_size):
        """A random batch (distinct examples) drawn with `rng`, outside the epoch order.

        Args:
            rng: `np.random.Generator`.
            batch_size: int, examples to draw (<= N).

        Returns:
            Tuple `(x, y)` of int32 arrays (batch_size, T) and (batch_size,).
        """
        index = rng.choice(len(self.x), size=batch_size, replace=False)
        return self.x[index].astype(np.int32), self.y[index].astype(np.int32)

    def _epoch_order(self, epoch):
        """The example order of `epoch` (cached for the current epoch)."""
        if self._order_epoch != epoch:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
            else:
                order = np.arange(len(self.x))
            self._order, self._order_epoch = order, epoch
        return self._order

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range [0, {len(self)}).")
        epoch = 0 if self.fixed else self.epoch
        chosen = self._epoch_order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[chosen].astype(np.int32), self.y[chosen].astype(np.int32)


def dataset(
    split="train",
    batch_size=128,
    path=None,
    data_seed=0,
    num_pairs=NUM_PAIRS,
    seed=0,
    shuffle=None,
    drop_remainder=True,
    num_train=SPLIT_SIZES["train"],
    num_validation=SPLIT_SIZES["validation"],
    num_test=SPLIT_SIZES["test"],
    **kwargs,
):
    """Minibatches of one split of the fixed data set, for `model.fit` / `model.evaluate`.

    Args:
        split: str, "train" (default), "validation" or "test".
        batch_size: int, examples per batch. Defaults to 128.
        path: optional str, `.npz` file given to `load_or_create` (created if absent). Defaults
            to None: the split is generated in memory (identical to the stored one).
        data_seed: int, seed of the data set itself. Defaults to 0.
        num_pairs: int, key-value pairs. Defaults to 24.
        seed: int, shuffling seed. Defaults to 0.
        shuffle: optional bool; defaults to None (True for "train", False otherwise).
        drop_remainder: bool, drop the last incomplete batch. Defaults to True.
        num_train: int, training sequences. Defaults to 100,000.
        num_validation: int, validation sequences. Defaults to 10,000.
        num_test: int, test sequences. Defaults to 20,000.
        **kwargs: forwarded to `keras.utils.PyDataset`.

    Returns:
        `SplitDataset` yielding `(x, y)`: int32 token ids (B, 2P + 3) and int32 labels (B,).

    Raises:
        ValueError: on a bad split, size or data file.

    Example:

    >>> data = dataset("validation", batch_size=32, num_pairs=4, num_validation=100)
    >>> len(data), data[0][0].shape, data[0][1].shape
    (3, (32, 11), (32,))
    """
    _check_split(split)
    sizes = _split_sizes(num_train, num_validation, num_test)
    if path is not None:
        x, y = load_or_create(
            path,
            seed=data_seed,
            num_pairs=num_pairs,
            **{
                "num_train": sizes["train"],
                "num_validation": sizes["validation"],
                "num_test": sizes["test"],
            },
        )[split]
    else:
        x, y = generate_split(split, _check_int("data_seed", data_seed, 0), num_pairs, sizes[split])
    if shuffle is None:
        shuffle = split == "train"
    return SplitDataset(
        x,
        y,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
        **kwargs,
    )
