"""Nth-farthest at a chosen size: does a model learn to compare distances, and when?

A diagnostic for the 25% plateau of `examples/nth_farthest.py` (8 vectors of 16 dimensions):
the same data generator (`keras_stm.experiments.tasks.nth_farthest.make_batch`) and model
builder, with the number of vectors, their dimension and the STM sizes free, so that a small
version runs on a CPU. Every `--every` iterations it scores a fixed test set (seed 1111) and
prints one JSON line: the accuracy, the accuracy for n = V - 1 (the reference vector itself,
whose label is in the input) and for the other n. A model that ignores the vectors stays at
1/V + (V-1)/V x 1/(V-1) = 2/V with the other n at chance, 1/(V-1); one that compares distances
rises above it. The curve goes to `--output` (JSON) after every report.

Training: fresh batches every iteration, Adam with gradient-value clipping 10 (the example's
protocol; Keras' Adam, not `TorchAdam`), sparse cross-entropy on the last step's logits.

Dimension curriculum (`--dims-curriculum "2:3000,4:6000,8:12000"`): the training vectors have
only their first 2 coordinates non-zero for iterations 1..3000, then 4 up to 6000, then 8 up
to 12000, then all `--num-dims` (`make_batch(..., active_dims=...)`: the input width, hence
the model, stays the task's, so the weights carry over). The fixed test set stays at full
dimension; each JSON line also gives `active_dims` (that of the last training batch before
the report) and `test_accuracy_active`, the accuracy on a second fixed test set (seed 1111
too, the same examples with the tail coordinates zeroed) at that `active_dims`. With
`--advance-accuracy A`, a stage also ends at the first report where `test_accuracy_active`
reaches A (the line says `"advanced": true`); the later stages keep their lengths and start
earlier (`DimsSchedule`).

Example (the session-14 runs, CPU, one thread each):

    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python scripts/nth_farthest_probe.py \\
        --num-vectors 4 --num-dims 2 --stm-config '{"memory_size": 32, "relation_size": 32}' \\
        --minutes 40 --output runs/probe/stm32_v4d2.json
"""

import argparse
import json
import time

import keras
import numpy as np

from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import nth_farthest


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", choices=("stm", "lstm"), default="stm", help="The core.")
    parser.add_argument("--num-vectors", type=int, default=8, help="Vectors per example (V).")
    parser.add_argument("--num-dims", type=int, default=16, help="Dimension of each vector.")
    parser.add_argument(
        "--stm-config",
        type=json.loads,
        default=None,
        help="JSON object of STM arguments replacing the task's (e.g. smaller sizes).",
    )
    parser.add_argument("--lstm-units", type=int, default=512, help="LSTM width.")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Adam's rate.")
    parser.add_argument("--batch-size", type=int, default=128, help="Training batch.")
    parser.add_argument("--every", type=int, default=250, help="Iterations between reports.")
    parser.add_argument("--test-size", type=int, default=1024, help="Fixed test examples.")
    parser.add_argument("--minutes", type=float, default=10.0, help="Training time budget.")
    parser.add_argument(
        "--max-iterations", type=int, default=None, help="Stop after this many (no limit)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Weights and training data seed.")
    parser.add_argument(
        "--dims-curriculum",
        default=None,
        help='Stages "DIMS:UNTIL,...": DIMS non-zero vector coordinates up to iteration UNTIL '
        "(increasing), then all --num-dims; e.g. 2:3000,4:6000,8:12000 (none).",
    )
    parser.add_argument(
        "--advance-accuracy",
        type=float,
        default=None,
        help="With --dims-curriculum: a stage also ends at the first report whose accuracy at "
        "its dimension (test_accuracy_active) reaches this; the later stages keep their "
        "lengths and move earlier (none: stages end only at UNTIL).",
    )
    parser.add_argument("--output", required=True, help="JSON file of the curve.")
    return parser


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
                f"(--num-dims), got {active}"
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


def active_dims_at(curriculum, iteration, num_dims):
    """The active dimensions of training iteration `iteration` (counted from 1).

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
    `active_dims_at(curriculum, i, num_dims)`.

    Args:
        curriculum: list of `(active_dims, until_iteration)` from `parse_dims_curriculum`, or
            None.
        num_dims: int, the task's dimension (after the last stage).

    Example:

    >>> schedule = DimsSchedule([(2, 4), (4, 8)], 16)
    >>> schedule.active(1), schedule.active(3)
    (2, 2)
    >>> schedule.advance(3)  # stage 2 (4 iterations long) now covers 4..7
    >>> [schedule.active(i) for i in (4, 7, 8)]
    [4, 4, 16]
    """

    def __init__(self, curriculum, num_dims):
        self.stages = list(curriculum or ())
        self.lengths = [
            until - (self.stages[k - 1][1] if k else 0) for k, (_, until) in enumerate(self.stages)
        ]
        self.num_dims = num_dims
        self.stage = 0
        self.stage_end = self.lengths[0] if self.lengths else 0

    def active(self, iteration):
        """The active dimensions of `iteration` (counted from 1; called in increasing order)."""
        while self.stage < len(self.stages) and iteration > self.stage_end:
            self._next(self.stage_end)
        return self.stages[self.stage][0] if self.stage < len(self.stages) else self.num_dims

    def advance(self, iteration):
        """Ends the current stage after `iteration`."""
        if self.stage < len(self.stages):
            self._next(iteration)

    def _next(self, last_iteration):
        self.stage += 1
        if self.stage < len(self.stages):
            self.stage_end = last_iteration + self.lengths[self.stage]


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    v, dims = args.num_vectors, args.num_dims
    try:
        curriculum = parse_dims_curriculum(args.dims_curriculum, dims)
    except ValueError as error:
        parser.error(f"--dims-curriculum: {error}")
    if args.advance_accuracy is not None and (
        curriculum is None or not 0.0 < args.advance_accuracy <= 1.0
    ):
        parser.error(
            "--advance-accuracy needs --dims-curriculum and a value in (0, 1], got "
            f"{args.advance_accuracy}"
        )
    schedule = DimsSchedule(curriculum, dims)
    keras.utils.set_random_seed(args.seed)
    stm_config = dict(task_configs.TASK_CONFIGS["nth_farthest"]["stm"])
    stm_config.update(args.stm_config or {})
    model = build_sequence_model(
        nth_farthest.input_size(v, dims),
        nth_farthest.output_size(v),
        core=args.model,
        return_sequences=False,
        stm_config=stm_config,
        lstm_units=args.lstm_units,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, clipvalue=10.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(args.seed + 1)
    x_test, y_test = nth_farthest.make_batch(np.random.default_rng(1111), args.test_size, v, dims)
    n_test = nth_farthest.asked_n(x_test, v)
    record = {
        "backend": keras.backend.backend(),
        "flags": vars(args),
        "stm_config": stm_config if args.model == "stm" else None,
        "parameters": model.count_params(),
        "ignore_distances_accuracy": 2.0 / v,
        "test_reference_fraction": float(np.mean(n_test == v - 1)),
        "dims_curriculum": None
        if curriculum is None
        else [{"active_dims": d, "until_iteration": until} for d, until in curriculum],
        "curve": [],
    }
    # The second fixed test sets, one per active_dims met (the same seed, the tail zeroed).
    active_tests = {dims: (x_test, y_test)}
    start, iteration = time.time(), 0
    while time.time() - start < 60.0 * args.minutes and (
        args.max_iterations is None or iteration < args.max_iterations
    ):
        for _ in range(args.every):
            iteration += 1
            active = schedule.active(iteration)
            x, y = nth_farthest.make_batch(rng, args.batch_size, v, dims, active_dims=active)
            loss = float(model.train_on_batch(x, y))
        right = _correct(model, x_test, y_test)
        row = {
            "iteration": iteration,
            "seconds": round(time.time() - start, 1),
            "loss": loss,
            "test_accuracy": float(right.mean()),
            "accuracy_reference": float(right[n_test == v - 1].mean()),
            "accuracy_other_n": float(right[n_test != v - 1].mean()),
        }
        if curriculum is not None:
            if active not in active_tests:
                active_tests[active] = nth_farthest.make_batch(
                    np.random.default_rng(1111), args.test_size, v, dims, active_dims=active
                )
            row["active_dims"] = active
            row["test_accuracy_active"] = (
                float(right.mean())
                if active == dims
                else float(_correct(model, *active_tests[active]).mean())
            )
            if (
                args.advance_accuracy is not None
                and active != dims
                and row["test_accuracy_active"] >= args.advance_accuracy
            ):
                schedule.advance(iteration)
                row["advanced"] = True
        record["curve"].append(row)
        print(json.dumps(row), flush=True)
        _write(record, args.output)
    _write(record, args.output)
    return record


def _correct(model, x, y):
    """Boolean array (B,): whether the model's last-step prediction is the target."""
    return np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y


def _write(record, path):
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
