"""Associative retrieval (Ba et al. 2016): recall the digit stored with a queried letter.

Task (`keras_stm.experiments.tasks.associative_retrieval`): a sequence of P key-value pairs
(distinct random letters, random digits), `? ?`, then one of the keys, e.g.
`c9k8j3f1??k` -> 8. Token ids are embedded (`Embedding(37, 100)`, N(0, 1) init) and the
model classifies the last step's read-out into one of 10 digits.

* `--num-pairs 24` (default): 51 tokens, the authors' generator (presumably the paper's
  "length 50" setting);
* `--num-pairs 14`: 31 tokens, our choice for the paper's "length 30" setting (13, i.e.
  29 tokens, is the other candidate; the paper's pair count is unverified).

Protocol (the authors' `run_nar.py`):

* a fixed data set of 100,000 training, 10,000 validation and 20,000 test sequences, made once
  and stored in `--data-file` (default `runs/data/associative_retrieval_<pairs>.npz`);
  minibatches are drawn without replacement and reshuffled every epoch;
* loss: sparse categorical cross-entropy from logits; metric: accuracy;
* STM nq 2, d 96, r 96, gated write, learned alphas (`TASK_CONFIGS["associative_retrieval"]`);
* RMSprop lr 1e-4, momentum 0.9, rho 0.99, gradient clipping by value 10, batch 128,
  100,000 iterations; one epoch = 100,000 // 128 = 781 iterations, after which the whole
  validation set (its 78 full batches) is evaluated and `best.keras` is kept on the best
  validation accuracy;
* test: the best checkpoint on the test split (156 full batches), `results.json`:
  `test.accuracy`; and `convergence.epoch`, the first epoch (1-based) whose validation
  accuracy reached 99% (the paper's "converges in N epochs"; null if it never did).

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/associative_retrieval.py                  # length 51
    KERAS_BACKEND=jax python examples/associative_retrieval.py --num-pairs 14 \\
        --output-dir runs/associative_retrieval_14-stm                          # length 31
    KERAS_BACKEND=jax python examples/associative_retrieval.py --model lstm     # LSTM baseline
    KERAS_BACKEND=jax python examples/associative_retrieval.py --quick          # CPU smoke run

Started again with the same command, an interrupted run resumes (`--fresh` starts over).
Results go to `runs/associative_retrieval-<model>/` by default.
"""

import os

import keras

from keras_stm.experiments import training
from keras_stm.experiments import visualize
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import associative_retrieval as ar_data

TASK = "associative_retrieval"
CONVERGENCE_THRESHOLD = 0.99
"""float: validation accuracy at which a run counts as converged."""
# --quick: 4 pairs (11 tokens); 2 batches of 8 per epoch, so the tiny training split is
# exactly one epoch.
QUICK = {
    **task_configs.QUICK_MODEL,
    "num_pairs": 4,
    "train_size": 16,
    "validation_size": 16,
    "test_size": 16,
}


def default_data_file(args):
    """The data file used when `--data-file` is not given.

    Paper sizes and data seed 0: `runs/data/associative_retrieval_<pairs>.npz` (shared by all
    runs); other sizes or seeds get a suffix; `--quick` keeps its tiny file in the output
    folder.
    """
    name = f"associative_retrieval_{args.num_pairs}"
    sizes = (args.train_size, args.validation_size, args.test_size)
    if args.quick:
        return os.path.join(args.output_dir, f"{name}_quick.npz")
    if sizes != tuple(ar_data.SPLIT_SIZES[s] for s in ar_data.SPLITS) or args.data_seed:
        name += f"_seed{args.data_seed}_{'-'.join(str(n) for n in sizes)}"
    return os.path.join("runs", "data", f"{name}.npz")


def convergence_epoch(history_path, threshold=CONVERGENCE_THRESHOLD):
    """First epoch (1-based) of the latest run whose validation accuracy reached `threshold`.

    Args:
        history_path: str, the `history.csv` written by `training.run` (rows of resumed runs
            continue the epoch count; a run started over begins again at epoch 0, and only
            the rows after that restart count).
        threshold: float, validation accuracy to reach. Defaults to 0.99.

    Returns:
        Tuple `(epoch, best_validation_accuracy)`: epoch is an int or None (never reached);
        the best accuracy is a float or None (no validation rows).
    """
    columns = visualize.read_history(history_path)
    epochs = columns.get("epoch", [])
    accuracy = columns.get("val_accuracy", [])
    start = 0
    for i in range(1, len(epochs)):
        if epochs[i] <= epochs[i - 1]:
            start = i
    rows = list(zip(epochs, accuracy))[start:]
    reached = next((int(epoch) + 1 for epoch, value in rows if value >= threshold), None)
    best = max((value for _, value in rows), default=None)
    return reached, best


def build_parser():
    """The script's flags: the shared training flags, model sizes and the data set."""
    parser = training.argument_parser(__doc__, **task_configs.training_defaults(TASK))
    task_configs.add_model_arguments(parser, TASK)
    parser.add_argument(
        "--num-pairs",
        type=int,
        default=ar_data.NUM_PAIRS,
        help="Key-value pairs (24: 51 tokens; 14: 31 tokens).",
    )
    parser.add_argument(
        "--data-file",
        default=None,
        help="The fixed data set (.npz), created if absent (default "
        "runs/data/associative_retrieval_<pairs>.npz).",
    )
    parser.add_argument("--data-seed", type=int, default=0, help="Seed of the data set.")
    for split, what in (("train", "training"), ("validation", "validation"), ("test", "test")):
        parser.add_argument(
            f"--{split}-size",
            type=int,
            default=ar_data.SPLIT_SIZES[split],
            help=f"Sequences in the {what} split of the data set.",
        )
        training.add_deprecated_alias(parser, f"--num-{split}", f"--{split}-size", type=int)
    return parser


def main(argv=None):
    """Train, validate and test on associative retrieval; returns the results dict."""
    parser = build_parser()
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    data_file = args.data_file or default_data_file(args)
    splits = ar_data.load_or_create(
        data_file,
        seed=args.data_seed,
        num_pairs=args.num_pairs,
        num_train=args.train_size,
        num_validation=args.validation_size,
        num_test=args.test_size,
    )
    train_data = ar_data.SplitDataset(
        *splits["train"], batch_size=args.batch_size, seed=args.seed, shuffle=True
    )
    validation_data = ar_data.SplitDataset(
        *splits["validation"], batch_size=args.batch_size, shuffle=False
    )
    test_data = ar_data.SplitDataset(*splits["test"], batch_size=args.batch_size, shuffle=False)
    if args.steps_per_epoch > len(train_data) and not args.evaluate:
        parser.error(
            f"--steps-per-epoch ({args.steps_per_epoch}) exceeds the {len(train_data)} "
            f"batches of the training split ({args.train_size} // {args.batch_size})."
        )
    stm_config = task_configs.model_config_from_args(args, TASK)
    config = task_configs.get_task_config(TASK)

    model = build_sequence_model(
        config["embedding_size"],
        ar_data.OUTPUT_SIZE,
        core=args.model,
        return_sequences=False,
        stm_config=stm_config,
        lstm_units=args.lstm_units,
        vocabulary_size=config["vocabulary_size"],
        embedding_size=config["embedding_size"],
    )
    model.compile(
        optimizer=training.make_optimizer(args),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=training.jit_compile(args),
    )

    extra = {
        "paper_metric": "accuracy",
        "evaluated": "best.keras (best validation accuracy)",
        "data": {
            "file": data_file,
            "num_pairs": args.num_pairs,
            "sequence_length": ar_data.sequence_length(args.num_pairs),
            "data_seed": args.data_seed,
            "sizes": {s: len(splits[s][0]) for s in ar_data.SPLITS},
        },
        "stm_config": stm_config if args.model == "stm" else None,
    }

    def evaluate(trained):
        best = os.path.join(args.output_dir, "best.keras")
        if os.path.exists(best):
            trained.load_weights(best)  # the best checkpoint's weights
        epoch, best_accuracy = convergence_epoch(os.path.join(args.output_dir, "history.csv"))
        extra["convergence"] = {
            "threshold": CONVERGENCE_THRESHOLD,
            "epoch": epoch,
            "iterations": None if epoch is None else epoch * args.steps_per_epoch,
            "best_validation_accuracy": best_accuracy,
        }
        return trained.evaluate(test_data, return_dict=True, verbose=0)

    return training.run(
        model,
        train_data,
        args,
        validation_data=validation_data,
        evaluate=evaluate,
        monitor="val_accuracy",
        mode="max",
        extra_results=extra,
        pretrained_name=f"associative_retrieval_{args.num_pairs}",
    )


if __name__ == "__main__":
    main()
