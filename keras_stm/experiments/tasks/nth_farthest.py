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

A dimension curriculum, not in the authors' protocol and off by default, is here too for the
example's and the probe's `--dims-curriculum` / `--advance-accuracy`: `make_batch(...,
active_dims=k)` zeroes the coordinates from k on, `parse_dims_curriculum` reads the stages,
`DimsSchedule` gives each training iteration its active dimensions (stages may end early on
accuracy; its state is a JSON object, saved with a run's checkpoints) and `dataset(...,
active_dims=schedule)` draws each batch at its iteration's.

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

CURRICULUM_SEED = 2222
"""int: seed of the examples on which a dimension curriculum scores its stages
(`--advance-accuracy`): not the test set's (`task_configs.TEST_SEED`, 1111), so that no test
example steers the training."""
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


# --- the dimension curriculum (not the authors' protocol; off by default) --------------------

DIMS_CURRICULUM_HELP = (
    'Stages "DIMS:UNTIL,...": the training vectors have DIMS non-zero coordinates up to '
    "iteration UNTIL (increasing), then all of them; e.g. 2:3000,4:6000,8:12000 (none: every "
    "coordinate from the start, the authors' protocol)."
)
"""str: the help of `--dims-curriculum` (`add_dims_curriculum_arguments`)."""


def add_dims_curriculum_arguments(parser, accuracy_name, report="report"):
    """Adds `--dims-curriculum STAGES` and `--advance-accuracy A` to an argparse parser.

    Args:
        parser: `argparse.ArgumentParser`.
        accuracy_name: str, how the script logs the accuracy at the active dimension (for the
            help of `--advance-accuracy`).
        report: str, when that accuracy is measured (for the help). Defaults to "report".

    Returns:
        The parser. `check_dims_curriculum_args` validates the two values after parsing.
    """
    parser.add_argument(
        "--dims-curriculum", default=None, metavar="STAGES", help=DIMS_CURRICULUM_HELP
    )
    parser.add_argument(
        "--advance-accuracy",
        type=float,
        default=None,
        metavar="A",
        help=f"With --dims-curriculum: a stage also ends at the first {report} whose accuracy "
        f"at its dimension ({accuracy_name}) reaches this, in (0, 1]; the later stages keep "
        "their lengths and move earlier (none: stages end only at UNTIL).",
    )
    return parser


def check_dims_curriculum_args(parser, args, num_dims):
    """Parses `args.dims_curriculum` and checks `args.advance_accuracy` (usage errors).

    Args:
        parser: the parser of `add_dims_curriculum_arguments` (for `parser.error`).
        args: the parsed `argparse.Namespace`.
        num_dims: int, the vector dimension (the largest DIMS).

    Returns:
        The curriculum of `parse_dims_curriculum` (None without `--dims-curriculum`).

    Raises:
        SystemExit: through `parser.error`, naming the flag: on a malformed curriculum, or an
            `--advance-accuracy` without `--dims-curriculum` or outside (0, 1].
    """
    try:
        curriculum = parse_dims_curriculum(args.dims_curriculum, num_dims)
    except ValueError as error:
        parser.error(f"--dims-curriculum: {error}")
    if args.advance_accuracy is not None and (
        curriculum is None or not 0.0 < args.advance_accuracy <= 1.0
    ):
        parser.error(
            "--advance-accuracy needs --dims-curriculum and a value in (0, 1], got "
            f"{args.advance_accuracy}"
        )
    return curriculum


def parse_dims_curriculum(text, num_dims):
    """Parses `--dims-curriculum`: `"2:3000,4:6000"` -> `[(2, 3000), (4, 6000)]`.

    Stage `(d, until)` trains on vectors with `d` non-zero coordinates for the iterations up to
    and including `until` (iterations count from 1); after the last stage, all `num_dims`.

    Args:
        text: str of comma-separated `DIMS:UNTIL` stages, or None (no curriculum).
        num_dims: int, the task's vector dimension (the largest allowed DIMS).

    Returns:
        List of `(active_dims, until_iteration)` int pairs, or None when `text` is None.

    Raises:
        ValueError: naming the stage, on a stage that is not `DIMS:UNTIL` with integer parts,
            on DIMS outside 1..num_dims, on UNTIL < 1 or not greater than the previous stage's.

    Example:

    >>> parse_dims_curriculum("2:3000,4:6000,8:12000", 16)
    [(2, 3000), (4, 6000), (8, 12000)]
    """
    if text is None:
        return None
    stages = []
    for part in str(text).split(","):
        fields = part.strip().split(":")
        try:
            if len(fields) != 2:
                raise ValueError
            active, until = int(fields[0]), int(fields[1])
        except ValueError:
            raise ValueError(
                f"dims curriculum stage {part.strip()!r} of {text!r} is not DIMS:UNTIL with "
                "integers (e.g. 2:3000,4:6000)"
            ) from None
        if not 1 <= active <= num_dims:
            raise ValueError(
                f"dims curriculum stage {part.strip()!r}: DIMS must be in 1..{num_dims} "
                f"(the vector dimension), got {active}"
            )
        if until < 1:
            raise ValueError(
                f"dims curriculum stage {part.strip()!r}: UNTIL must be >= 1, got {until}"
            )
        if stages and until <= stages[-1][1]:
            raise ValueError(
                f"dims curriculum stage {part.strip()!r}: UNTIL iterations must increase, got "
                f"{until} after {stages[-1][1]}"
            )
        stages.append((active, until))
    return stages


def format_dims_curriculum(curriculum):
    """The `--dims-curriculum` text of a curriculum (the inverse of `parse_dims_curriculum`).

    Example:

    >>> format_dims_curriculum([(2, 3000), (4, 6000)])
    '2:3000,4:6000'
    """
    return ",".join(f"{d}:{until}" for d, until in curriculum or ())


def active_dims_at(curriculum, iteration, num_dims):
    """The active dimensions of training iteration `iteration` (counted from 1), stages ending
    at their UNTIL only (`DimsSchedule` also ends them early on accuracy).

    Args:
        curriculum: list of `(active_dims, until_iteration)` from `parse_dims_curriculum`, or
            None.
        iteration: int >= 1.
        num_dims: int, the task's dimension (after the last stage, and without a curriculum).

    Returns:
        int, the number of non-zero vector coordinates.

    Example:

    >>> [active_dims_at([(2, 2), (4, 3)], i, 16) for i in (1, 2, 3, 4)]
    [2, 2, 4, 16]
    """
    for active, until in curriculum or ():
        if iteration <= until:
            return active
    return num_dims


class DimsSchedule:
    """The active dimensions of each training iteration under a curriculum whose stages may end
    early on accuracy (`--advance-accuracy`).

    Stage i keeps its scheduled length (UNTIL_i - UNTIL_{i-1} iterations) from where it begins;
    `advance` ends the current stage at once. Without early advances, `active(i)` is
    `active_dims_at(curriculum, i, num_dims)`. The schedule's whole state is a JSON object
    (`get_state` / `from_state`), so a run can save it with its checkpoints and resume in the
    same stage.

    Args:
        curriculum: list of `(active_dims, until_iteration)` from `parse_dims_curriculum`, or
            None.
        num_dims: int, the task's dimension (after the last stage).

    Example:

    >>> schedule = DimsSchedule([(2, 4), (4, 8)], 16)
    >>> schedule.active(1), schedule.active(3)
    (2, 2)
    >>> schedule.advance(3)  # stage 2 (4 iterations long) now covers 4..7
    >>> [schedule.dims_at(i) for i in (4, 7, 8)]  # looks ahead, moves nothing
    [4, 4, 16]
    >>> [schedule.active(i) for i in (4, 7, 8)]
    [4, 4, 16]
    >>> [(s["active_dims"], s["ended_at_iteration"], s["advanced"]) for s in schedule.stage_ends()]
    [(2, 3, True), (4, 7, False)]
    >>> DimsSchedule.from_state(schedule.get_state()).get_state() == schedule.get_state()
    True
    """

    def __init__(self, curriculum, num_dims):
        self.stages = [(int(d), int(until)) for d, until in curriculum or ()]
        self.lengths = [
            until - (self.stages[k - 1][1] if k else 0) for k, (_, until) in enumerate(self.stages)
        ]
        self.num_dims = int(num_dims)
        self.stage = 0
        self.stage_end = self.lengths[0] if self.lengths else 0
        self.ended = []  # per finished stage: {"ended_at_iteration": int, "advanced": bool}
        self.iteration = 0  # the last iteration given to `active` or `advance`

    def active(self, iteration):
        """The active dimensions of `iteration` (counted from 1; called in increasing order):
        the stages scheduled to end before it are ended."""
        while self.stage < len(self.stages) and iteration > self.stage_end:
            self._next(self.stage_end, advanced=False)
        self.iteration = max(self.iteration, int(iteration))
        return self.current_dims()

    def dims_at(self, iteration):
        """What `active(iteration)` returns, without moving the schedule (so without changing
        its state): for readers of later iterations (a data set's batches) while another
        caller moves it. `iteration` must not precede the current stage."""
        stage, end = self.stage, self.stage_end
        while stage < len(self.stages) and iteration > end:
            stage += 1
            if stage < len(self.stages):
                end += self.lengths[stage]
        return self.stages[stage][0] if stage < len(self.stages) else self.num_dims

    def current_dims(self):
        """The active dimensions of the current stage (`num_dims` after the last one)."""
        return self.stages[self.stage][0] if self.stage < len(self.stages) else self.num_dims

    def advance(self, iteration):
        """Ends the current stage after `iteration` (recorded as advanced when that is before
        its scheduled end)."""
        if self.stage < len(self.stages):
            self._next(iteration, advanced=iteration < self.stage_end)
        self.iteration = max(self.iteration, int(iteration))

    def _next(self, last_iteration, advanced):
        self.ended.append({"ended_at_iteration": int(last_iteration), "advanced": bool(advanced)})
        self.stage += 1
        if self.stage < len(self.stages):
            self.stage_end = last_iteration + self.lengths[self.stage]

    def stage_ends(self, iteration=None):
        """Each stage with the iteration it ended at (its last iteration) and whether it ended
        early on accuracy.

        Args:
            iteration: int or None: the last iteration trained; a stage scheduled to end at or
                before it counts as ended (`active` had not been called past it). Defaults to
                the last iteration given to `active` or `advance`.

        Returns:
            List of dicts, one per stage: `active_dims`, `until_iteration` (as scheduled),
            `ended_at_iteration` (int, or None while the stage has not ended) and `advanced`
            (True when it ended early, through `advance`).
        """
        schedule = self.from_state(self.get_state())
        schedule.active((self.iteration if iteration is None else int(iteration)) + 1)
        return [
            {
                "active_dims": d,
                "until_iteration": until,
                "ended_at_iteration": None,
                "advanced": False,
                **(schedule.ended[k] if k < len(schedule.ended) else {}),
            }
            for k, (d, until) in enumerate(self.stages)
        ]

    def get_state(self):
        """The schedule as a JSON-serializable dict (`from_state` rebuilds it).

        Returns:
            Dict with `stages` (list of `[active_dims, until_iteration]`), `num_dims`, `stage`
            (index of the current stage; `len(stages)` after the last), `stage_end` (the
            current stage's last iteration), `ended` (one `{"ended_at_iteration",
            "advanced"}` per finished stage) and `iteration` (the last one given to `active`
            or `advance`).
        """
        return {
            "stages": [[d, until] for d, until in self.stages],
            "num_dims": self.num_dims,
            "stage": self.stage,
            "stage_end": self.stage_end,
            "ended": [dict(e) for e in self.ended],
            "iteration": self.iteration,
        }

    def set_state(self, state):
        """Takes the state of a `get_state` dict of a schedule with the same stages.

        Raises:
            ValueError: if `state` is not such a dict (missing keys, wrong types, a stage
                index or ended list that does not fit the stages), or its stages or
                `num_dims` differ from this schedule's.
        """
        try:
            stages = [(int(d), int(until)) for d, until in state["stages"]]
            num_dims, stage, stage_end = state["num_dims"], state["stage"], state["stage_end"]
            iteration = state["iteration"]
            ended = [
                {
                    "ended_at_iteration": int(e["ended_at_iteration"]),
                    "advanced": bool(e["advanced"]),
                }
                for e in state["ended"]
            ]
            valid = all(isinstance(v, int) for v in (num_dims, stage, stage_end, iteration))
            valid = valid and 0 <= stage <= len(stages) and len(ended) == stage
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"not a DimsSchedule state: {state!r}")
        if (stages, num_dims) != (self.stages, self.num_dims):
            raise ValueError(
                f"the state is of the curriculum {format_dims_curriculum(stages)!r} in "
                f"{num_dims} dimensions, this schedule's is "
                f"{format_dims_curriculum(self.stages)!r} in {self.num_dims}"
            )
        self.stage, self.stage_end, self.ended = stage, stage_end, ended
        self.iteration = iteration

    @classmethod
    def from_state(cls, state):
        """The schedule of a `get_state` dict.

        Raises:
            ValueError: if `state` is not such a dict.
        """
        try:
            schedule = cls([(int(d), int(u)) for d, u in state["stages"]], int(state["num_dims"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"not a DimsSchedule state: {state!r}") from None
        schedule.set_state(state)
        return schedule


def dataset(
    batch_size=128,
    num_batches=NUM_BATCHES,
    seed=0,
    fixed=False,
    num_vectors=NUM_VECTORS,
    num_dims=NUM_DIMS,
    active_dims=None,
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
        active_dims: None (every coordinate drawn), an int in 1..num_dims (every batch drawn
            with `make_batch(..., active_dims=active_dims)`), or a `DimsSchedule` (the
            dimension curriculum): batch i of epoch e is training iteration
            `e * num_batches + i + 1` and is drawn at `schedule.dims_at(iteration)`, read when
            the batch is made. The schedule is moved by its owner between epochs (e.g. at an
            epoch's end); a batch is the same for the same seed, epoch, index and schedule
            state. Defaults to None.
        **kwargs: forwarded to `TaskDataset` / `keras.utils.PyDataset`.

    Returns:
        `TaskDataset` yielding `(x, y)` as in `make_batch` (use a sparse categorical loss on
        the last-step logits).

    Raises:
        ValueError: on bad sizes or a bad `active_dims`.

    Example:

    >>> x, y = dataset(batch_size=4, num_batches=2)[0]
    >>> x.shape, y.shape
    ((4, 8, 40), (4,))
    >>> data = dataset(batch_size=4, num_batches=2, active_dims=DimsSchedule([(2, 3)], 16))
    >>> data.epoch = 1  # batch 0 is iteration 3 (stage 1), batch 1 iteration 4 (all dims)
    >>> [int(np.count_nonzero(data[i][0][0, 0, :16])) for i in (0, 1)]
    [2, 16]
    """
    num_vectors, num_dims = _check_sizes(num_vectors, num_dims)
    if isinstance(active_dims, DimsSchedule):
        if active_dims.num_dims != num_dims:
            raise ValueError(
                f"The DimsSchedule is for {active_dims.num_dims} dimensions, the data set has "
                f"num_dims={num_dims}."
            )
        return _ScheduledDataset(
            active_dims,
            num_vectors,
            num_dims,
            batch_size=batch_size,
            num_batches=num_batches,
            seed=seed,
            fixed=fixed,
            **kwargs,
        )
    active_dims = _check_active_dims(active_dims, num_dims)
    batch_fn = functools.partial(
        _make_batch, num_vectors=num_vectors, num_dims=num_dims, active_dims=active_dims
    )
    return TaskDataset(
        batch_fn, batch_size=batch_size, num_batches=num_batches, seed=seed, fixed=fixed, **kwargs
    )


def _make_batch(rng, batch_size, num_vectors, num_dims, active_dims=None):
    """`make_batch`, looked up when called (so that a test can wrap it)."""
    return make_batch(rng, batch_size, num_vectors, num_dims, active_dims=active_dims)


class _ScheduledDataset(TaskDataset):
    """`dataset` under a `DimsSchedule`: each batch drawn at its iteration's active dims."""

    def __init__(self, schedule, num_vectors, num_dims, **kwargs):
        self.schedule = schedule
        self.num_vectors, self.num_dims = num_vectors, num_dims
        super().__init__(self._batch, **kwargs)

    def _batch(self, rng, batch_size, active_dims=None):
        return _make_batch(rng, batch_size, self.num_vectors, self.num_dims, active_dims)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range [0, {len(self)}).")
        epoch = 0 if self.fixed else self.epoch
        active = self.schedule.dims_at(epoch * len(self) + int(index) + 1)
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        return self._batch(rng, self.batch_size, active)
