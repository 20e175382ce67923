"""bAbI question answering (20 tasks, joint training): the STM model of the paper.

Task (`keras_stm.experiments.tasks.babi`): bAbI v1.2 `en-valid-10k` (per task
9,000 training, 1,000 validation and 1,000 test questions). A story is every statement
before the question (the last 70 kept); one vocabulary over all tasks; each task keeps its own
padded shape. The answer is one vocabulary item.

Shape buckets (`--shape-buckets`, on by default; a speed setting): under jax every distinct
batch shape is one compiled program, and the 20 tasks have 17 shapes, so a run compiled 55
programs (training, validation and prediction steps) before its first epoch. By default each
task is padded further, to a story length of 10, 14, 26 or 70 sentences and to the longest
sentence (12 words): 4 shapes, 16 programs, at the cost of 13% more STM steps per training
batch. The added positions are absent words (id -1) that the model skips and masks (the
STM keeps its state over an absent sentence), so the numbers are those of each task's own
shape, to float round-off (tested); the task's own PAD padding is read as before.
`--shape-buckets none` keeps every task at its own shape; `--shape-buckets 10,30,70` sets
other story-length boundaries (a task longer than the last one goes to the longest story).

Model (`keras_stm.experiments.models.babi_model`): position-weighted sums of word embeddings
encode each sentence and the question; an STM (nq 20, d 90, r 96, 80-unit linear input
projectors, gated write, `α1 = 1`, `α2` learned, `α3 = 0`) reads the story one sentence per
step; a 3-hop TPR-style inference over its final relational memory answers through a frozen
output embedding.

Protocol (the paper's):

* cross-entropy over the vocabulary, averaged over the batch's questions (the last, smaller
  batch of a task's pass is filled up to 128 with zero-weight rows and the loss is the
  weighted mean: the same numbers, one compiled step per task); Adam lr 6e-4, beta_2 0.99,
  eps 1e-8; global-norm gradient clipping 5; batch 128; every batch from one task drawn
  uniformly at random; an epoch = sum over tasks of ceil(n_train / 128) batches (1,420 with
  full data); 500 epochs (the default of `--iterations`);
* validation after every epoch on all validation sets (pooled loss and accuracy, as the
  authors); `best.keras` keeps the best validation accuracy; the learning rate is halved
  once, from the epoch after the validation loss first drops below 0.1;
* test: the best checkpoint, per task; the paper reports the mean error over the 20 tasks
  (STM 0.39% mean, best run 0.15%). The per-task table (valid and test error)
  is printed and written as `task_errors.md` / `task_errors.csv`; `results.json` holds
  `test.mean_error` and every task's error; `learning_curve.png` the curves.

Data: `--data` names the archive `babi_tasks_1-20_v1-2.tar.gz` or its extracted folder;
without it the archive is downloaded once with `keras.utils.get_file`. Copies of the archive
that lack the task-3 10k training file (the local repack does) need `--allow-partial` (task 3
then trains on a smaller set and is labelled "partial" in every table) or `--tasks` without 3.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/babi.py --data /path/to/babi_tasks_1-20_v1-2.tar.gz
    KERAS_BACKEND=jax python examples/babi.py --data ARCHIVE --allow-partial   # local repack
    KERAS_BACKEND=jax python examples/babi.py --data ARCHIVE --tasks 1,2,4-20
    KERAS_BACKEND=jax python examples/babi.py --data ARCHIVE --allow-partial \\
        --eval-only runs/babi-stm/best.keras                                   # test only
    KERAS_BACKEND=jax python examples/babi.py --data ARCHIVE --tasks 1,2 --quick  # smoke run

Started again with the same command, an interrupted run continues from its last epoch
(`--fresh` starts over). Results go to `runs/babi-<model>/` by default.
"""

import argparse
import csv
import json
import os
import sys

import keras
import numpy as np

from keras_stm.experiments import training
from keras_stm.experiments.models import babi_model
from keras_stm.experiments.tasks import babi as babi_data

TASK = "babi"
EPOCHS = 500
QUICK = {
    "batch_size": 8,
    "iterations": 8,
    "num_queries": 2,
    "memory_size": 8,
    "relation_size": 8,
    "projector_hidden_units": 8,
    "embedding_size": 16,
    "inference_hidden_units": 8,
    "lstm_units": 8,
}
QUICK_EXAMPLES = {"train": 16, "valid": 8, "test": 8}  # per task, with --quick
QUICK_TASKS = 2  # --quick keeps the first tasks of --tasks
ERROR_TABLE = "task_errors"


def parse_tasks(text):
    """Task ids from a string such as `"1,2,4-20"`.

    Args:
        text: str, comma-separated ids and inclusive ranges `a-b`.

    Returns:
        sorted list of distinct ints.

    Raises:
        ValueError: on anything that is not ids in 1..20.
    """
    tasks = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                tasks.update(range(low, high + 1))
            elif part:
                tasks.add(int(part))
    except ValueError as error:
        raise ValueError(f"--tasks must look like '1,2,4-20', got {text!r}.") from error
    if not tasks or not tasks <= set(range(1, babi_data.NUM_TASKS + 1)):
        raise ValueError(f"--tasks must name task ids in 1..20, got {text!r}.")
    return sorted(tasks)


def parse_shape_buckets(text):
    """Story-length boundaries from `--shape-buckets`, such as `"10,14,26,70"`; `"none"`: ().

    Args:
        text: str, comma-separated increasing positive integers, or `none`.

    Returns:
        tuple of int (empty: every task keeps its own shape).

    Raises:
        ValueError: naming what is wrong.
    """
    if text.strip().lower() == "none":
        return ()
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--shape-buckets must be story lengths in increasing order such as "
            f"'10,14,26,70', or 'none'; got {text!r}."
        ) from None
    try:
        return babi_data.check_shape_buckets(values)
    except ValueError as error:
        raise ValueError(f"--shape-buckets {text!r}: {error}") from None


def build_parser():
    """The script's flags: the shared training flags with the paper's bAbI values, and data,
    model-size, schedule and evaluation flags."""
    parser = training.argument_parser(
        __doc__,
        task=TASK,
        learning_rate=6e-4,
        batch_size=128,
        iterations=None,
        steps_per_epoch=1420,
        optimizer="adam",
        clip_norm=5.0,
        adam_beta_2=0.99,
    )
    for action in parser._actions:
        if "--iterations" in action.option_strings:
            action.help = (
                f"Training batches in total, rounded down to whole epochs (default: "
                f"{EPOCHS} epochs; an epoch is one pass over every task's training "
                f"batches, 1,420 with the full data)."
            )
        if "--steps-per-epoch" in action.option_strings:
            action.help = argparse.SUPPRESS  # an epoch is one pass over the data
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default=None,
        help="bAbI archive (.tar.gz) or extracted folder; default: download.",
    )
    data.add_argument(
        "--subset",
        default="en-valid-10k",
        choices=babi_data.SUBSETS,
        help="bAbI subset (the paper: en-valid-10k).",
    )
    data.add_argument("--tasks", default="1-20", help="Task ids, e.g. '1-20' or '1,2,4-20'.")
    data.add_argument(
        "--allow-partial",
        action="store_true",
        help="Train task 3 on a smaller set if its 10k training file is missing.",
    )
    data.add_argument(
        "--story-cap",
        type=int,
        default=babi_data.DEFAULT_STORY_CAP,
        help="Keep the last N statements of a story (0: all).",
    )
    data.add_argument(
        "--shape-buckets",
        default=",".join(map(str, babi_data.DEFAULT_SHAPE_BUCKETS)),
        help="Speed only: pad every task's story to the first of these lengths that holds it "
        "(past the last one: the longest story) and its sentences to the longest one, with "
        "absent words the model masks, so that tasks share compiled programs; the numbers "
        "do not change. 'none': each task keeps its own shape.",
    )
    data.add_argument("--cache-dir", default=None, help="Cache of the vectorised data.")
    data.add_argument(
        "--no-verify",
        action="store_true",
        help="Skip the SHA-256 check of the data files (hand-made archives).",
    )
    model = parser.add_argument_group("model")
    stm = babi_model.BABI_STM_CONFIG
    sizes = {
        "num_queries": "STM: number of queries / relational slots (nq).",
        "memory_size": "STM: item memory side d (memory d x d).",
        "relation_size": "STM: read-out size r of each relational slot.",
        "projector_hidden_units": "STM: width of the input projectors.",
        "embedding_size": "Word embedding size.",
        "inference_hidden_units": "Width of the inference module's hidden layer.",
        "hops": "Reasoning steps of the inference module.",
    }
    values = {
        **{
            name: stm[name]
            for name in ("num_queries", "memory_size", "relation_size", "projector_hidden_units")
        },
        **babi_model.BABI_MODEL_CONFIG,
    }
    for name, value in values.items():
        model.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=value,
            help=sizes[name] + " The paper's value by default.",
        )
    model.add_argument(
        "--lstm-units", type=int, default=256, help="Width of the LSTM baseline (--model lstm)."
    )
    schedule = parser.add_argument_group("schedule and evaluation")
    training.add_deprecated_alias(schedule, "--epochs", "--iterations", dest="epochs", type=int)
    schedule.add_argument(
        "--decay-threshold",
        type=float,
        default=0.1,
        help="Multiply the learning rate by --decay-factor once, from the "
        "epoch after the validation loss first drops below this.",
    )
    schedule.add_argument(
        "--decay-factor",
        type=float,
        default=0.5,
        help="Factor of the one learning-rate decay (the paper halves it).",
    )
    schedule.add_argument(
        "--eval-batch-size",
        type=int,
        default=128,
        help="Largest validation/test batch (does not change any metric).",
    )
    schedule.add_argument(
        "--test-size",
        type=int,
        default=None,
        help="Test only the first N questions of each task (default: all "
        "1,000; a quick check of a model, e.g. the CPU test of the "
        "committed one).",
    )
    schedule.add_argument(
        "--eval-only",
        metavar="CHECKPOINT",
        default=None,
        help="Only evaluate this .keras model on the validation and test sets.",
    )
    return parser


def load_data(args):
    """Loads the tasks of the flags; with --quick keeps a few tasks and examples; pads them to
    the shapes of --shape-buckets."""
    tasks = parse_tasks(args.tasks)
    if args.quick:
        tasks = tasks[:QUICK_TASKS]
    data = babi_data.load_babi(
        data=args.data,
        subset=args.subset,
        tasks=tasks,
        story_cap=args.story_cap or None,
        allow_partial=args.allow_partial,
        cache_dir=args.cache_dir,
        verify=not args.no_verify,
    )
    sizes = dict(QUICK_EXAMPLES) if args.quick else {}
    if args.test_size is not None:
        sizes["test"] = min(args.test_size, sizes.get("test", args.test_size))
    for split, n in sizes.items():
        arrays = getattr(data, split)
        for t in list(arrays):
            arrays[t] = babi_data.BabiArrays(*(a[:n] for a in arrays[t]))
    return data.with_shape_buckets(parse_shape_buckets(args.shape_buckets))


def build_model(args, data):
    """The bAbI model of the flags for the loaded vocabulary (`--stm-config` applied last)."""
    stm_config = {
        name: getattr(args, name)
        for name in ("num_queries", "memory_size", "relation_size", "projector_hidden_units")
    }
    stm_config.update(getattr(args, "stm_config", None) or {})
    return babi_model.build_babi_model(
        data.metadata["vocab_size"],
        data.common_shape[1],
        embedding_size=args.embedding_size,
        stm_config=stm_config,
        inference_hidden_units=args.inference_hidden_units,
        hops=args.hops,
        core=args.model,
        lstm_units=args.lstm_units,
    )


def score(model, data, batch_size, splits=None):
    """Per-task scores of `model` on `splits` (default: every loaded split but train), partial
    tasks marked."""
    if splits is None:
        splits = [s for s in data.metadata["splits"] if s != "train"]
    scores = {
        split: babi_model.evaluate_babi(model, getattr(data, split), batch_size) for split in splits
    }
    partial = data.metadata["partial_tasks"]
    for split_scores in scores.values():
        for t, task_scores in split_scores["tasks"].items():
            task_scores["partial"] = t in partial
        if partial:
            # The mean over the tasks trained on their full data, beside the all-task mean.
            full = [v["error"] for t, v in split_scores["tasks"].items() if t not in partial]
            split_scores["mean_error_full_tasks"] = float(np.mean(full)) if full else None
            split_scores["failed_full_tasks"] = int(
                sum(e > babi_model.FAILED_TASK_ERROR for e in full)
            )
    return scores


def error_table(scores, data):
    """The per-task error table as markdown text and CSV rows."""
    info = data.metadata["task_info"]
    splits = [s for s in ("valid", "test") if s in scores]
    header = ["task", "name"] + [f"{s} error (%)" for s in splits] + ["test examples", "note"]
    rows = []
    for t in data.tasks:
        note = "partial: " + info[t]["note"].split(": ", 1)[-1] if info[t]["partial"] else ""
        label = f"{t} (partial)" if info[t]["partial"] else str(t)
        rows.append(
            [label, info[t]["name"]]
            + [f"{scores[s]['tasks'][t]['error']:.2f}" for s in splits]
            + [str(scores["test"]["tasks"][t]["examples"]) if "test" in scores else "", note]
        )
    failed = scores["test"]["failed_tasks"] if "test" in scores else ""
    rows.append(
        ["mean", f"{len(data.tasks)} tasks"]
        + [f"{scores[s]['mean_error']:.2f}" for s in splits]
        + ["", f"failed tasks (test error > {babi_model.FAILED_TASK_ERROR:g}%): {failed}"]
    )
    if all(scores[s].get("mean_error_full_tasks") is not None for s in splits):
        full = len(data.tasks) - len(data.metadata["partial_tasks"])
        failed_full = scores["test"]["failed_full_tasks"] if "test" in scores else ""
        rows.append(
            ["mean", f"{full} task{'s' if full != 1 else ''} (partial left out)"]
            + [f"{scores[s]['mean_error_full_tasks']:.2f}" for s in splits]
            + ["", f"failed tasks: {failed_full}"]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n", [header] + rows


def write_error_table(scores, data, out, title):
    """Writes `task_errors.md` and `task_errors.csv` to `out` and prints the table."""
    markdown, rows = error_table(scores, data)
    partial = data.metadata["partial_tasks"]
    caption = (
        f"# {title}\n\nbAbI {data.metadata['subset']}, error = 100 - accuracy (%), "
        f"per task; mean = unweighted mean over tasks."
        + (f" Task(s) {partial} trained on a partial training set." if partial else "")
        + "\n\n"
    )
    with open(os.path.join(out, ERROR_TABLE + ".md"), "w") as f:
        f.write(caption + markdown)
    with open(os.path.join(out, ERROR_TABLE + ".csv"), "w", newline="") as f:
        csv.writer(f).writerows(rows)
    print(caption + markdown)


def flat_test_metrics(scores):
    """The test numbers of `results.json`: means and every task's error and accuracy."""
    test = scores["test"]
    flat = {
        "mean_error": test["mean_error"],
        "mean_accuracy": test["mean_accuracy"],
        "failed_tasks": test["failed_tasks"],
        "accuracy": test["accuracy"],
        "loss": test["loss"],
    }
    if test.get("mean_error_full_tasks") is not None:
        flat["mean_error_full_tasks"] = test["mean_error_full_tasks"]
        flat["failed_full_tasks"] = test["failed_full_tasks"]
    for t, v in test["tasks"].items():
        flat[f"task_{t}_error"] = v["error"]
    return flat


def data_summary(data):
    """What `results.json` records about the data (partial tasks labelled)."""
    meta = data.metadata
    return {
        "subset": meta["subset"],
        "tasks": meta["tasks"],
        "vocab_size": meta["vocab_size"],
        "partial_tasks": meta["partial_tasks"],
        "verified": meta["verified"],
        "source_sha256": meta["source_sha256"],
        "story_cap": meta["story_cap"],
        "shape_buckets": meta.get("shape_buckets"),
        "padded_shapes": meta.get("padded_shapes"),
        "task_notes": {t: i["note"] for t, i in meta["task_info"].items() if i["note"]},
    }


def save_vocabulary(path, data):
    with open(path, "w") as f:
        json.dump(
            {
                "vocab": data.vocab,
                "subset": data.metadata["subset"],
                "tasks": data.metadata["tasks"],
            },
            f,
        )


def check_vocabulary(checkpoint, model, data):
    """Raises a ValueError if the checkpoint was trained on another vocabulary."""
    vocab_path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "vocab.json")
    if os.path.exists(vocab_path):
        with open(vocab_path) as f:
            saved = json.load(f)
        if saved["vocab"] != data.vocab:
            raise ValueError(
                f"{checkpoint}: the model was trained with the vocabulary in "
                f"{vocab_path} (subset {saved['subset']}, tasks {saved['tasks']}), which differs "
                f"from the loaded data's; pass the same --subset and --tasks as for training."
            )
    size = model.output_shape[-1]
    if size != len(data.vocab):
        raise ValueError(
            f"{checkpoint}: the model predicts {size} classes but the "
            f"loaded data has a vocabulary of {len(data.vocab)}; pass the same "
            f"--subset and --tasks as for training."
        )


def evaluate_only(args, data):
    """`--eval-only`: scores a saved model, writes the tables and `eval_results.json`."""
    if not os.path.isfile(args.eval_only):
        raise FileNotFoundError(f"--eval-only checkpoint {args.eval_only!r} does not exist.")
    model = keras.saving.load_model(args.eval_only)
    check_vocabulary(args.eval_only, model, data)
    os.makedirs(args.output_dir, exist_ok=True)
    scores = score(model, data, args.eval_batch_size)
    write_error_table(scores, data, args.output_dir, f"bAbI errors of {args.eval_only}")
    results = {
        "task": TASK,
        "checkpoint": os.path.abspath(args.eval_only),
        "test": flat_test_metrics(scores) if "test" in scores else {},
        "scores": scores,
        "data": data_summary(data),
        "environment": training.environment(),
    }
    with open(os.path.join(args.output_dir, "eval_results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def main(argv=None):
    """Train and test the STM on bAbI (or only evaluate); returns the results dict."""
    parser = build_parser()
    given = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--steps-per-epoch" or a.startswith("--steps-per-epoch=") for a in given):
        parser.error(
            "--steps-per-epoch does not apply to bAbI: an epoch is one pass over every "
            "task's training batches; set the run's length with --iterations."
        )
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    for name in ("epochs", "eval_batch_size", "story_cap", "test_size") + tuple(QUICK) + ("hops",):
        value = getattr(args, name, None)
        if value is None:
            continue
        if value < 0 or (value == 0 and name != "story_cap"):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    try:
        parse_tasks(args.tasks)
        parse_shape_buckets(args.shape_buckets)
    except ValueError as error:
        parser.error(str(error))
    data = load_data(args)
    if args.eval_only:
        return evaluate_only(args, data)
    if "valid" not in data.metadata["splits"]:
        parser.error(
            f"--subset {args.subset} has no validation split; the protocol selects "
            "the checkpoint on validation accuracy (use en-valid-10k or en-valid)."
        )

    # pad_batches: the last, smaller batch of each pass is filled with zero-weight rows, so jax
    # compiles one training step per task; the weighted mean below keeps the loss exact.
    train_data = babi_data.BabiTrainDataset(
        data.train, batch_size=args.batch_size, seed=args.seed, include_task=False, pad_batches=True
    )
    valid_data = babi_model.BabiEvalDataset(data.valid, batch_size=args.eval_batch_size)
    args.steps_per_epoch = len(train_data)
    if getattr(args, "epochs", None) is not None:  # the deprecated --epochs
        args.iterations = args.epochs * args.steps_per_epoch
    elif args.iterations is None:
        args.iterations = EPOCHS * args.steps_per_epoch
    epochs = max(1, args.iterations // args.steps_per_epoch)

    model = build_model(args, data)
    model.compile(
        optimizer=training.make_optimizer(args),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=training.jit_compile(args),
    )
    if not args.evaluate:
        os.makedirs(args.output_dir, exist_ok=True)
        save_vocabulary(os.path.join(args.output_dir, "vocab.json"), data)
    decay = babi_model.DecayLearningRateOnce(
        args.learning_rate,
        threshold=args.decay_threshold,
        factor=args.decay_factor,
        monitor="val_loss",
        state_path=os.path.join(args.output_dir, "backup", "lr_decay.json"),
    )
    extra = {
        "paper_metric": "mean error (%) over tasks (test)",
        "evaluated": "best.keras",
        "paper_result": {"mean_error": 0.39, "best_run_error": 0.15},
        "data": data_summary(data),
        "epochs": epochs,
        "stm_config": (model.get_layer("stm").get_config() if args.model == "stm" else None),
    }

    def evaluate(trained):
        if args.evaluate:  # a pretrained model (already loaded): print, write nothing
            check_vocabulary(os.path.join(args.output_dir, "model.keras"), trained, data)
            scores = score(trained, data, args.eval_batch_size, splits=["test"])
            print(error_table(scores, data)[0])
            return flat_test_metrics(scores)
        best = os.path.join(args.output_dir, "best.keras")
        if os.path.exists(best):  # its weights; its optimizer state plays no part in a test
            training.load_weights_only(trained, best, "The best model")
        scores = score(trained, data, args.eval_batch_size)
        write_error_table(scores, data, args.output_dir, f"bAbI errors ({args.model}, best.keras)")
        extra["scores"] = scores
        extra["lr_decay_epoch"] = decay.decay_epoch
        return flat_test_metrics(scores)

    return training.run(
        model,
        train_data,
        args,
        validation_data=valid_data,
        evaluate=evaluate,
        monitor="val_accuracy",
        mode="max",
        extra_results=extra,
        extra_callbacks=[decay],  # run() keeps train_data.epoch equal to fit's
        pretrained_name=TASK,
        # score()'s model.predict inputs, compiled ahead with the training programs
        evaluation_data=[
            ("predict", babi_model.BabiEvalDataset(getattr(data, s), args.eval_batch_size))
            for s in data.metadata["splits"]
            if s != "train"
        ],
    )


if __name__ == "__main__":
    main()
