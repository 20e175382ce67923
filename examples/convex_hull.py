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
`cyclic_accuracy`, `point_accuracy`, `valid_fraction`, `area_coverage` (answer polygon area /
hull area), `mean_answer_length`, the masked test `loss` and the per-step
`sparse_categorical_accuracy`. These are the plain greedy figures; `--decoding masked` (default)
or `beam` adds the same figures, prefixed `masked_` or `beam_`, of answers decoded under the
hull rule (`geometry.hull_rule`: no point twice, lowest index first, at least 3 points).

Shapes: every batch is padded (zero-weight steps and examples) to one of at most
`--step-buckets` lengths and to `--batch-size` examples, so a compiled run traces each step
function at most that many times (`geometry.bucket_lengths`; tensorflow: one length).
`--evaluate [NAME_OR_PATH]` evaluates a pretrained model (default `pretrained/convex_hull_<N>`
for one `--n-points N`) on the generated sets or `--test-file`, training and writing nothing.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/convex_hull.py                      # STM, paper settings
    KERAS_BACKEND=jax python examples/convex_hull.py --model lstm         # LSTM baseline
    KERAS_BACKEND=jax python examples/convex_hull.py --train-points 5,10 --n-points 5,10,20
    KERAS_BACKEND=jax python examples/convex_hull.py \\
        --train-file convex_hull_5-50_train.txt --test-file convex_hull_5_test.txt
    KERAS_BACKEND=jax python examples/convex_hull.py --evaluate pretrained/convex_hull_5 \\
        --test-file convex_hull_5_test.txt --decoding beam
    KERAS_BACKEND=torch python examples/convex_hull.py --quick            # CPU smoke run

An interrupted run resumes from `runs/convex_hull-<model>/backup` (`--fresh` starts over); the
best model, `history.csv`, `results.json` and `learning_curve.png` go to the same folder.
"""

import argparse
import os
import tempfile

import keras
import numpy as np

from keras_stm.experiments import training
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import geometry
from keras_stm.experiments.tasks.base import TaskDataset

TASK = "convex_hull"
MIN_POINTS = 3
QUICK = {
    "iterations": 2,
    "steps_per_epoch": 1,
    "batch_size": 8,
    "train_points": "5",
    "n_points": "5",
    "test_size": 8,
    "validation_batches": 1,
    **task_configs.QUICK_MODEL,
}


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
            f"{geometry.N_MAX}], got {text!r}"
        ) from None
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
    parser.add_argument(
        "--train-points",
        type=point_counts,
        default=train_points,
        help="Numbers of points of the random training sets, one per batch, e.g. 5,10 or 5-20.",
    )
    parser.add_argument(
        "--n-points",
        type=point_counts,
        default="5,10",
        help="Numbers of points of the fixed test sets, one set each (the "
        "default: the reported settings).",
    )
    parser.add_argument(
        "--train-file",
        default=None,
        help="Train on a Pointer Networks file instead of random point sets.",
    )
    parser.add_argument(
        "--test-file",
        default=None,
        help="Evaluate on a Pointer Networks file instead of the generated sets.",
    )
    parser.add_argument(
        "--test-size", type=int, default=1000, help="Examples per generated test set."
    )
    parser.add_argument(
        "--test-seed",
        type=int,
        default=task_configs.TEST_SEED,
        help="Seed of the generated test and validation sets.",
    )
    parser.add_argument(
        "--validation-batches",
        type=int,
        default=4,
        help="Fixed batches evaluated after every epoch to keep the best model.",
    )
    add_decoding_arguments(parser)
    return parser


def add_decoding_arguments(parser):
    """Adds `--decoding`, `--beam-width` and `--step-buckets` (shared with the graph scripts)."""
    parser.add_argument(
        "--decoding",
        choices=geometry.DECODINGS,
        default="masked",
        help="Test decoding besides the plain greedy one (always reported, "
        "unprefixed): masked (greedy under the task's rule: a tour visits "
        "every city once, a hull or path repeats no point, a tree closes no "
        "cycle; keys masked_*) or beam search under the rule (beam_*).",
    )
    parser.add_argument("--beam-width", type=int, default=5, help="Beams of --decoding beam.")
    parser.add_argument(
        "--step-buckets",
        type=int,
        default=4,
        help="Batches are padded (zero-weight steps and examples) to this many "
        "sequence lengths and to --batch-size examples, so a compiled step "
        "is traced at most this many times per function (tensorflow: 1).",
    )


def check_decoding_args(parser, args):
    """Checks the flags of `add_decoding_arguments`."""
    for name in ("beam_width", "step_buckets"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )


def decode_options(args, lengths):
    """The keyword arguments of `geometry.predict_and_decode` from the flags and the buckets."""
    return {
        "decoding": args.decoding,
        "beam_width": args.beam_width,
        "lengths": lengths,
        "batch_size": args.batch_size,
    }


def bucket_lengths(args, lengths):
    """The padded sequence lengths: at most `--step-buckets` buckets over the possible
    `lengths`, one under tensorflow (its `tf.data` pipeline takes one shape)."""
    count = 1 if keras.backend.backend() == "tensorflow" else args.step_buckets
    return geometry.bucket_lengths(lengths, count)


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
    check_decoding_args(parser, args)
    for name in ("train_file", "test_file"):
        path = getattr(args, name)
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"--{name.replace('_', '-')}: data file not found: {path!r}")
    if not args.evaluate:
        os.makedirs(args.output_dir, exist_ok=True)
    return args


PaddedSteps = geometry.PaddedBatches


def for_fit(data, lengths, batch_size=None):
    """`data` for `fit`/`evaluate`: batches padded to the bucket `lengths` (one compiled program
    per bucket) and to `batch_size` examples (`geometry.PaddedBatches`)."""
    return geometry.PaddedBatches(data, lengths, batch_size)


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
    `--n-points` (seed `--test-seed` + N), written to `<output_dir>/test_n<N>.txt` (under
    `--evaluate`, to a temporary folder: nothing is written), suffix `_n<N>`.
    """
    if args.test_file:
        return {
            "": geometry.file_dataset(args.test_file, args.batch_size, shuffle=False, task=task)
        }
    sets = {}
    with tempfile.TemporaryDirectory() as scratch:
        for n in args.n_points:
            path = os.path.join(scratch if args.evaluate else args.output_dir, f"test_n{n}.txt")
            geometry.generate(path, task, args.test_size, n, seed=args.test_seed + n)
            sets[f"_n{n}"] = geometry.file_dataset(path, args.batch_size, shuffle=False)
    return sets


def predict_answers(predict, data, options=None, task=TASK):
    """Decoded answers of a model for every example of an ordered geometric file dataset.

    Args:
        predict: callable `x -> logits (B, T, 22)`, e.g. `model.predict_on_batch`.
        data: `geometry.GroupedFileDataset` in ordered mode (labels = position).
        options: dict of `geometry.predict_and_decode` options (`decode_options`); None: the
            plain greedy decoding of the batches as they are.
        task: str, `"convex_hull"` (rule `geometry.hull_rule`) or `"tsp"` (`tour_rule`).

    Returns:
        dict `{"": greedy answers, "masked_" or "beam_": rule-respecting answers}`, lists of int
        arrays (0-based point indices) aligned with `data.examples`.
    """
    make_rule = geometry.tour_rule if task == "tsp" else geometry.hull_rule

    def rule(example):
        return make_rule(len(example.points))

    return geometry.predict_and_decode(
        predict, data, lambda e: len(e.points) + 1, lambda e: len(e.points), rule, **(options or {})
    )


def hull_scores(predict, data, options=None):
    """`geometry.hull_scores` of a model's decoded answers on an ordered file dataset."""
    return geometry.hull_scores(predict_answers(predict, data, options), data.examples)


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
    model = build_sequence_model(
        input_width,
        num_classes,
        core=args.model,
        return_sequences=True,
        stm_config=task_configs.model_config_from_args(args, task),
        lstm_units=args.lstm_units,
        name=f"{task}_{args.model}",
    )
    model.compile(
        optimizer=training.make_optimizer(args),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=["sparse_categorical_accuracy"],
        jit_compile=training.jit_compile(args),
    )
    return model


def make_evaluator(sets, scores, best_path=None, lengths=None, options=None):
    """A `training.run` evaluate callable: loss, step accuracy and task metrics of every set.

    Args:
        sets: dict `{suffix: ordered dataset with .examples}`.
        scores: callable `(predict, data, options) -> dict` of task metrics.
        best_path: optional path of the best checkpoint (`best.keras`); when it exists its
            weights are loaded into the model before testing (None under `--evaluate`).
        lengths: int, sequence of ints (the bucket lengths, see `for_fit`) or None (the
            longest geometric example of the set).
        options: dict of decoding options (`decode_options`), passed to `scores`.

    Returns:
        callable `model -> dict` with `<metric><suffix>` keys, plus `examples<suffix>`.
    """

    def evaluate(model):
        if best_path and os.path.exists(best_path):
            model.load_weights(best_path)
        results = {}
        for suffix, data in sets.items():
            steps = lengths or max_steps(examples=data.examples)
            batch = (options or {}).get("batch_size")
            values = model.evaluate(for_fit(data, steps, batch), verbose=0, return_dict=True)
            values.update(scores(model.predict_on_batch, data, options))
            values["examples"] = len(data.examples)
            results.update({f"{key}{suffix}": value for key, value in values.items()})
        return results

    return evaluate


def pretrained_name(task, args):
    """The pretrained model `--evaluate` takes without a value: `<task>_<N>` for one
    `--n-points` N (e.g. `tsp_10`), else `<task>`."""
    return f"{task}_{args.n_points[0]}" if len(args.n_points) == 1 else task


def run_geometry_task(task, args, scores, primary_metric):
    """Builds data and model, trains (resumable) and evaluates; see `training.run`.

    Every batch (training, validation, test, prediction) is padded to one of `--step-buckets`
    sequence lengths and to `--batch-size` examples: a compiled run traces each step function
    at most once per bucket.

    Args:
        task: str, `"convex_hull"` or `"tsp"`.
        args: flags from `parse_geometry_args`.
        scores: callable `(predict, data, options) -> dict`, the task metrics.
        primary_metric: str, recorded in `results.json`.

    Returns:
        The results dict.
    """
    if args.train_file:
        train_data = geometry.file_dataset(
            args.train_file,
            args.batch_size,
            num_batches=args.steps_per_epoch,
            seed=args.seed,
            task=task,
        )
    else:
        train_data = random_batches(
            task, args.train_points, args.batch_size, args.steps_per_epoch, args.seed
        )
    validation_data = random_batches(
        task,
        args.n_points,
        args.batch_size,
        args.validation_batches,
        args.test_seed + 1000,
        fixed=True,
    )
    sets = evaluation_sets(task, args)
    file_examples = getattr(train_data, "examples", []) + [
        e for data in sets.values() for e in data.examples
    ]
    sizes = list(args.n_points) + ([] if args.train_file else list(args.train_points))
    sizes += [len(e.points) for e in file_examples]
    possible = geometry.sequence_lengths(task, sizes)
    possible += tuple(len(e.points) + len(e.output) + 2 for e in file_examples)
    lengths = bucket_lengths(args, possible)
    options = decode_options(args, lengths)
    model = build_model(args, task)
    best = None if args.evaluate else os.path.join(args.output_dir, "best.keras")
    extra = {
        "evaluated": "best.keras (lowest validation loss)",
        "stm_config": task_configs.model_config_from_args(args, task)
        if args.model == "stm"
        else None,
        "train_points": None if args.train_file else list(args.train_points),
        "test_points": None if args.test_file else list(args.n_points),
        "padded_lengths": list(lengths),
        "primary_metric": primary_metric,
    }
    return training.run(
        model,
        for_fit(train_data, lengths, args.batch_size),
        args,
        validation_data=for_fit(validation_data, lengths, args.batch_size),
        evaluate=make_evaluator(sets, scores, best, lengths, options),
        extra_results=extra,
        pretrained_name=pretrained_name(task, args),
    )


def main(argv=None):
    """Trains and evaluates; returns the results dict (also in `<output_dir>/results.json`)."""
    parser = geometry_parser(TASK, __doc__, train_points="5-20")
    args = parse_geometry_args(parser, argv)
    return run_geometry_task(TASK, args, hull_scores, "sequence_accuracy")


if __name__ == "__main__":
    main()
