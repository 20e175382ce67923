"""RAR, relational associative recall: recall the item farthest from (or closest to) a query.

Task (`keras_stm.experiments.tasks.rar`): I items of n random 32-bit vectors, each item after a
delimiter row (channel 32); then a query item (a copy of one of the items) between two query
delimiters (channel 33). The model must output, during n all-zero rows, the item farthest from
the query if the query's last bit is 1, else the closest one (Euclidean distance). Input width
34, 32 logits per step.

Two readings of the authors' generator call (`--reading`):

* `executed` (default): what `run_toys.py` actually trained on (its arguments are swapped):
  3 items of n ~ U{2..5} vectors each;
* `intended`: the generator's signature as meant: I ~ U{2..5} items of 3 vectors each.

Protocol (the authors' `run_toys.py`): logits for every step
(`return_sequences=True`), only the n decoding steps weighted (`sample_weight`):

* loss: binary cross-entropy from logits, mean over decoding steps x batch x bits
  (`reduction="mean_with_sample_weight"`);
* metric: bit error per sequence (`BitErrorPerSequence`, a weighted metric);
* STM nq 16, d 72, r 72, gated write, alpha1 = alpha2 = 0 (no relational carry, no read),
  alpha3 learned (`TASK_CONFIGS["rar"]`, the last values of the authors' `tasks/rar.json`);
* RMSprop lr 1e-4, momentum 0.9, rho 0.95, gradient clipping by value 10, batch 128,
  50,000 iterations of fresh data; a learning-curve point every 200 iterations;
  `best.keras` kept on the training loss;
* test: the best checkpoint on `--test-size` (default 1280: 10 batches of 128) fresh
  examples with the fixed seed 1111, same reading
  (`results.json`: `test.bit_error_per_sequence`).

The paper shows this task as a learning curve of bit error per sequence;
`learning_curve.png` plots the same curve (figure number in the paper unverified).

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/rar.py                          # executed reading
    KERAS_BACKEND=jax python examples/rar.py --reading intended       # intended reading
    KERAS_BACKEND=jax python examples/rar.py --model lstm             # LSTM baseline
    KERAS_BACKEND=jax python examples/rar.py --item-length 4          # fixed sizes ("2-5" = range)
    KERAS_BACKEND=jax python examples/rar.py --quick                  # CPU smoke run

Started again with the same command, an interrupted run resumes (`--fresh` starts over).
Results go to `runs/rar-<model>/` by default (use `--output-dir` per reading).
"""

from keras_stm.experiments import training
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import rar as rar_data

TASK = "rar"
# --quick: two time lengths in training (the varying-length path), one test batch.
QUICK = {**task_configs.QUICK_MODEL, "num_items": "3", "item_length": "2-3", "test_size": 8}


def parse_size(text, flag):
    """Parses a size flag: None (the reading's default), "N", or an inclusive range "LOW-HIGH".

    Args:
        text: str or None, the flag value.
        flag: str, the flag name (for the error message).

    Returns:
        None, an int, or a `(low, high)` tuple of ints.

    Raises:
        ValueError: if `text` is not of those forms.
    """
    if text is None:
        return None
    parts = str(text).split("-")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise ValueError(f"{flag} must be an integer N or a range LOW-HIGH, got {text!r}.")
    return values[0] if len(values) == 1 else tuple(values)


def build_parser():
    """The script's flags: the shared training flags, model sizes, the reading and sizes."""
    parser = training.argument_parser(__doc__, **task_configs.training_defaults(TASK))
    task_configs.add_model_arguments(parser, TASK)
    parser.add_argument(
        "--reading",
        choices=rar_data.READINGS,
        default="executed",
        help="Which reading of the authors' generator call to train on.",
    )
    parser.add_argument(
        "--num-items",
        default=None,
        help="Items per example, N or LOW-HIGH (default: the reading's).",
    )
    parser.add_argument(
        "--item-length",
        default=None,
        help="Vectors per item, N or LOW-HIGH (default: the reading's).",
    )
    training.add_test_size_argument(parser, task_configs.TEST_BATCHES)
    return parser


def main(argv=None):
    """Train and test on RAR; returns the results dict (also in results.json)."""
    parser = build_parser()
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    training.resolve_test_batches(parser, args)
    (items_low, items_high), (length_low, length_high) = rar_data.resolve_sizes(
        args.reading,
        parse_size(args.num_items, "--num-items"),
        parse_size(args.item_length, "--item-length"),
    )
    sizes = dict(
        reading=args.reading,
        num_items=(items_low, items_high),
        item_length=(length_low, length_high),
    )
    record = {
        "reading": args.reading,
        "num_items": [items_low, items_high],
        "item_length": [length_low, length_high],
    }
    name = "rar" if args.reading == "executed" else f"rar_{args.reading}"
    return training.run_bit_error_task(
        args, TASK, rar_data, sizes, data_record=record, pretrained_name=name
    )


if __name__ == "__main__":
    main()
