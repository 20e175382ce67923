"""Convex hull with STM: read a set of points, then point at the hull vertices in order.

Task (Vinyals et al. 2015, Pointer Networks; STM paper, geometric tasks).
Each example is a set of N points uniform in the unit square; the answer is the list of its
convex-hull vertices, counter-clockwise from the vertex with the lowest index, then an end token.
The model reads one row per point (its coordinates and a one-hot *label*), one all-zero row, and
then, on all-zero decoding rows, emits the label of the next hull vertex per step (a softmax over
22 classes: padding, 20 point labels, end). Labels are a random permutation at training and the
point's position at test, so the model has to point at a point by the label it read with it.
The whole protocol (encoding, files, exact solver, decoding, metrics) lives in
`keras_stm.experiments.tasks.geometry`; this script only trains and evaluates. `examples/tsp.py`
reuses the
functions below with the TSP metrics.

Training: batches of fresh random point sets, one N per batch, N drawn uniformly from
`--train-points` (default 5-20: the published `convex_hull_5-50_train.txt`, of which the reference
keeps N <= 20, one size per batch), or batches of a Pointer Networks file (`--train-file`, used as
it is, N > 20 dropped). Loss: sparse cross-entropy on the output steps only (answer and end token,
`sample_weight`). STM sizes (nq 8, d 128, r 96), optimiser (Adam 1e-4, gradients clipped to
[-10, 10]) and the 1,000,000 iterations of the authors' json come from
`keras_stm.experiments.models.task_configs.TASK_CONFIGS["convex_hull"]`; batch 128.

Evaluation (of `best.keras`, the weights with the lowest loss on `--validation-batches` fixed
batches of the test sizes, checked after every `--steps-per-epoch` batches): the model's output
steps are decoded with `geometry.decode_predictions` (each step points at a label present in the
example, or ends) and scored with `geometry.hull_metrics`, on a fixed-seed test set of
`--test-size` examples for every N of `--n-points` (default 5 and 10, the reported settings; metric
names get the suffix `_n5`, `_n10`; the sets are written to the output folder in the Pointer
Networks format), or on `--test-file` (e.g. the published `convex_hull_5_test.txt`, read as it is;
no suffix). Primary metric: `sequence_accuracy` (the exact vertex sequence); also
`cyclic_accuracy`, `point_accuracy`, the masked test `loss` and the per-step
`sparse_categorical_accuracy`.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/convex_hull.py                      # STM, paper settings
    KERAS_BACKEND=jax python examples/convex_hull.py --model lstm         # LSTM baseline
    KERAS_BACKEND=jax python examples/convex_hull.py --train-points 5,10 --n-points 5,10,20
    KERAS_BACKEND=jax python examples/convex_hull.py \\
        --train-file convex_hull_5-50_train.txt --test-file convex_hull_5_test.txt
    KERAS_BACKEND=torch python examples/convex_hull.py --quick            # CPU smoke run

An interrupted run resumes from `runs/convex_hull-<model>/backup` (`--fresh` starts over); the
best model, `history.csv`, `results.json` and `learning_curve.png` go to the same folder.
"""

import argparse
import os

import keras
import numpy as np

from keras_stm.experiments import training
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import geometry
from keras_stm.experiments.tasks.base import TaskDataset

TASK = "convex_hull"
MIN_POINTS = 3
QUICK = {"iterations": 2, "steps_per_epoch": 1, "batch_size": 8, "train_points": "5",
         "n_points": "5", "test_size": 8, "validation_batches": 1, **task_configs.QUICK_MODEL}


def point_counts(text):
    """Parses `--train-points` / `--n-points`: sizes `5,10`, ranges `5-20`, or both (`5,8-10`).

    Args:
        text: str, comma-separated sizes or inclusive `low-high` ranges.

    Returns:
        sorted tuple of distinct ints in [3, 20].

    Raises:
        argparse.ArgumentTypeError: on anything else (argparse reports it as a flag error).

    Example:

    >>> point_counts("5,8-10")
    (5, 8, 9, 10)
    """
    sizes = set()
    try:
        for part in str(text).split(","):
            low, _, high = part.strip().partition("-")
            low, high = int(low), int(high or low)
            if not MIN_POINTS <= low <= high <= geometry.N_MAX:
                raise ValueError
            sizes.update(range(low, high + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected point counts like '5,10' or '5-20' within [{MIN_POINTS}, "
            f"{geometry.N_MAX}], got {text!r}") from None
    return tuple(sorted(sizes))


def geometry_parser(task, description, train_points):
    """The flags of a geometric example: the shared ones, model sizes and the data flags.

    Args:
        task: str, `"convex_hull"` or `"tsp"` (a `TASK_CONFIGS` key).
        description: str, the script's docstring.
        train_points: str, default of `--train-points`.

    Returns:
        `argparse.ArgumentParser` with the task's paper defaults.
    """
    parser = training.argument_parser(description, **task_configs.training_defaults(task))
    task_configs.add_model_arguments(parser, task)
    parser.add_argument("--train-points", type=point_counts, default=train_points,
                        help="Numbers of points of the random training sets, one per batch, "
                             "e.g. 5,10 or 5-20.")
    parser.add_argument("--n-points", type=point_counts, default="5,10",
                        help="Numbers of points of the fixed test sets, one set each (the "
                             "default: the reported settings).")
    parser.add_argument("--train-file", default=None,
                        help="Train on a Pointer Networks file instead of random point sets.")
    parser.add_argument("--test-file", default=None,
                        help="Evaluate on a Pointer Networks file instead of the generated sets.")
    parser.add_argument("--test-size", type=int, default=1000,
                        help="Examples per generated test set.")
    parser.add_argument("--test-seed", type=int, default=task_configs.TEST_SEED,
                        help="Seed of the generated test and validation sets.")
    parser.add_argument("--validation-batches", type=int, default=4,
                        help="Fixed batches evaluated after every epoch to keep the best model.")
    return parser


def parse_geometry_args(parser, argv=None):
    """Parses and checks the flags (`--quick` applies `QUICK`); creates the output folder."""
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    for name in ("train_points", "n_points"):
        value = getattr(args, name)
        if isinstance(value, (list, tuple)):  # from an --hparams file
            value = ",".join(str(v) for v in value)
        if isinstance(value, str):  # set by --quick or --hparams
            try:
                setattr(args, name, point_counts(value))
            except argparse.ArgumentTypeError as error:
                parser.error(f"--{name.replace('_', '-')}: {error}")
    for name in ("test_size", "validation_batches"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("train_file", "test_file"):
        path = getattr(args, name)
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"--{name.replace('_', '-')}: data file not found: {path!r}")
    os.makedirs(args.output_dir, exist_ok=True)
    return args


class PaddedSteps(keras.utils.PyDataset):
    """Pads every batch of a dataset with trailing all-zero, zero-weight steps to one length.

    Needed under the tensorflow backend only: Keras turns a `PyDataset` into a `tf.data` pipeline
    whose shapes are taken from its first two batches, so batches of another length (other N,
    other answer lengths) would be refused. The model is causal and the loss and accuracy are
    weighted, so the padding changes no output step, loss or metric, only the compute.

    Args:
        data: a `PyDataset` yielding `(x (B, T, W), y (B, T), sample_weight (B, T))`, T <= length.
        length: int, the number of time steps of every batch.
    """

    def __init__(self, data, length):
        super().__init__()
        self.data = data
        self.length = int(length)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        x, y, weight = self.data[index]
        pad = self.length - x.shape[1]
        if pad < 0:
            raise ValueError(f"a batch has {x.shape[1]} steps, more than `length`={self.length}.")
        return (np.pad(x, ((0, 0), (0, pad), (0, 0))), np.pad(y, ((0, 0), (0, pad))),
                np.pad(weight, ((0, 0), (0, pad))))

    def on_epoch_end(self):
        self.data.on_epoch_end()


def for_fit(data, length):
    """`data` for `fit`/`evaluate`: wrapped in `PaddedSteps(data, length)` under tensorflow."""
    if keras.backend.backend() == "tensorflow":
        return PaddedSteps(data, length)
    return data


def max_steps(sizes=(), examples=()):
    """The longest sequence (inputs, extra row, answer, end token) of a geometric run.

    Args:
        sizes: numbers of points of random examples (an answer has at most N points).
        examples: `geometry.Example`s of files.

    Returns:
        int.
    """
    lengths = [2 * n + 2 for n in sizes]
    lengths += [len(e.points) + len(e.output) + 2 for e in examples]
    return max(lengths)


def random_batches(task, sizes, batch_size, num_batches, seed, fixed=False):
    """Fresh random examples, one number of points per batch drawn uniformly from `sizes`.

    Args:
        task: str, `"convex_hull"` or `"tsp"`.
        sizes: sequence of ints, the numbers of points.
        batch_size: int, examples per batch.
        num_batches: int, batches per epoch.
        seed: int, base seed.
        fixed: bool, the same batches every epoch with labels = position (validation), or fresh
            batches with random labels (training). Defaults to False.

    Returns:
        `TaskDataset` yielding `(x, y, sample_weight)`.
    """
    sizes = np.asarray(sizes)

    def batch_fn(rng, size):
        n = int(rng.choice(sizes))
        return geometry.make_batch(rng, size, task, n_points=n, random_labels=not fixed)

    return TaskDataset(batch_fn, batch_size, num_batches, seed=seed, fixed=fixed)


def evaluation_sets(task, args):
    """The test sets as `{metric suffix: ordered file dataset}`.

    `--test-file` gives one set without suffix; otherwise one generated set per N of
    `--n-points` (seed `--test-seed` + N), written to `<output_dir>/test_n<N>.txt`, suffix `_n<N>`.
    """
    if args.test_file:
        return {"": geometry.file_dataset(args.test_file, args.batch_size, shuffle=False,
                                          task=task)}
    sets = {}
    for n in args.n_points:
        path = os.path.join(args.output_dir, f"test_n{n}.txt")
        geometry.generate(path, task, args.test_size, n, seed=args.test_seed + n)
        sets[f"_n{n}"] = geometry.file_dataset(path, args.batch_size, shuffle=False)
    return sets


def predict_answers(predict, data):
    """Decoded answers of a model for every example of an ordered file dataset.

    Args:
        predict: callable `x -> logits (B, T, 22)`, e.g. `model.predict_on_batch`.
        data: `geometry.GroupedFileDataset` in ordered mode (labels = position).

    Returns:
        list of int arrays (0-based point indices), aligned with `data.examples`.
    """
    answers = [None] * len(data.examples)
    for i in range(len(data)):
        x = data[i][0]
        index = data.batch_indices(i)
        skip = len(data.examples[index[0]].points) + 1
        logits = keras.ops.convert_to_numpy(predict(x))
        decoded = geometry.decode_predictions(logits, geometry.point_labels(x), skip=skip)
        for k, answer in zip(index, decoded):
            answers[k] = answer
    return answers


def hull_scores(predict, data):
    """`geometry.hull_metrics` of a model's decoded answers on an ordered file dataset."""
    answers = predict_answers(predict, data)
    return geometry.hull_metrics(answers, [e.output for e in data.examples])


def build_model(args, task, input_width=geometry.INPUT_WIDTH, num_classes=geometry.NUM_CLASSES):
    """The compiled STM (or LSTM) pointer model: logits per step, masked cross-entropy.

    Args:
        args: parsed flags (`--model`, the model sizes, the optimiser flags).
        task: str, the `TASK_CONFIGS` key.
        input_width: int, features per input row. Defaults to `geometry.INPUT_WIDTH`.
        num_classes: int, logits per step. Defaults to `geometry.NUM_CLASSES`.

    Returns:
        A compiled `keras.Model`.
    """
    model = build_sequence_model(input_width, num_classes, core=args.model,
                                 return_sequences=True,
                                 stm_config=task_configs.model_config_from_args(args, task),
                                 lstm_units=args.lstm_units, name=f"{task}_{args.model}")
    model.compile(
        optimizer=training.make_optimizer(args),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=["sparse_categorical_accuracy"],
        jit_compile=training.jit_compile(args),
    )
    return model


def make_evaluator(sets, scores, best_path=None, length=None):
    """A `training.run` evaluate callable: loss, step accuracy and task metrics of every set.

    Args:
        sets: dict `{suffix: ordered dataset with .examples}`.
        scores: callable `(predict, data) -> dict` of task metrics.
        best_path: optional path of the best checkpoint (`best.keras`); when it exists its
            weights are loaded into the model before testing.
        length: int or None, time steps of the padded batches of `model.evaluate` under
            tensorflow (see `for_fit`); None means the longest geometric example of the set.

    Returns:
        callable `model -> dict` with `<metric><suffix>` keys, plus `examples<suffix>`.
    """
    def evaluate(model):
        if best_path and os.path.exists(best_path):
            model.load_weights(best_path)
        results = {}
        for suffix, data in sets.items():
            steps = length or max_steps(examples=data.examples)
            values = model.evaluate(for_fit(data, steps), verbose=0, return_dict=True)
            values.update(scores(model.predict_on_batch, data))
            values["examples"] = len(data.examples)
            results.update({f"{key}{suffix}": value for key, value in values.items()})
        return results

    return evaluate


def run_geometry_task(task, args, scores, primary_metric):
    """Builds data and model, trains (resumable) and evaluates; see `training.run`.

    Args:
        task: str, `"convex_hull"` or `"tsp"`.
        args: flags from `parse_geometry_args`.
        scores: callable `(predict, data) -> dict`, the task metrics.
        primary_metric: str, recorded in `results.json`.

    Returns:
        The results dict.
    """
    if args.train_file:
        train_data = geometry.file_dataset(args.train_file, args.batch_size,
                                           num_batches=args.steps_per_epoch, seed=args.seed,
                                           task=task)
    else:
        train_data = random_batches(task, args.train_points, args.batch_size,
                                    args.steps_per_epoch, args.seed)
    validation_data = random_batches(task, args.n_points, args.batch_size,
                                     args.validation_batches, args.test_seed + 1000, fixed=True)
    sets = evaluation_sets(task, args)
    length = max_steps(args.n_points if args.train_file else args.n_points + args.train_points,
                       getattr(train_data, "examples", []) +
                       [e for data in sets.values() for e in data.examples])
    model = build_model(args, task)
    best = os.path.join(args.output_dir, "best.keras")
    extra = {"evaluated": "best.keras (lowest validation loss)",
             "stm_config": task_configs.model_config_from_args(args, task)
             if args.model == "stm" else None,
             "train_points": None if args.train_file else list(args.train_points),
             "test_points": None if args.test_file else list(args.n_points),
             "primary_metric": primary_metric}
    return training.run(model, for_fit(train_data, length), args,
                        validation_data=for_fit(validation_data, length),
                        evaluate=make_evaluator(sets, scores, best, length), extra_results=extra)


def main(argv=None):
    """Trains and evaluates; returns the results dict (also in `<output_dir>/results.json`)."""
    parser = geometry_parser(TASK, __doc__, train_points="5-20")
    args = parse_geometry_args(parser, argv)
    return run_geometry_task(TASK, args, hull_scores, "sequence_accuracy")


if __name__ == "__main__":
    main()
