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
earlier (`DimsSchedule` of `keras_stm.experiments.tasks.nth_farthest`, which the example's
`--dims-curriculum` uses too).

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
from keras_stm.experiments.tasks.nth_farthest import DimsSchedule


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
    nth_farthest.add_dims_curriculum_arguments(parser, "test_accuracy_active")
    parser.add_argument("--output", required=True, help="JSON file of the curve.")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    v, dims = args.num_vectors, args.num_dims
    curriculum = nth_farthest.check_dims_curriculum_args(parser, args, dims)
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
