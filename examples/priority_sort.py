"""Priority sort: train STM (or the LSTM baseline) to output bit vectors sorted by priority.

Task (`keras_stm.experiments.tasks.priority_sort`): 20 random 32-bit vectors, each with a
priority ~ U[-1, 1) on channel 32 (input width 34); then 16 all-zero rows during which the
model must output the 16 highest-priority vectors in descending priority order (bits only,
32 logits per step). No delimiter rows.

Protocol (the authors' `run_toys.py`): logits for every step
(`return_sequences=True`), only the 16 decoding steps weighted (`sample_weight`):

* loss: binary cross-entropy from logits, mean over decoding steps x batch x bits
  (`reduction="mean_with_sample_weight"`);
* metric: bit error per sequence (`BitErrorPerSequence`, a weighted metric);
* STM nq 8, d 96, r 96, gated write, learned alphas (`TASK_CONFIGS["priority_sort"]`);
* RMSprop lr 1e-4, momentum 0.9, rho 0.95, gradient clipping by value 10, batch 128,
  50,000 iterations of fresh data; a learning-curve point every 200 iterations;
  `best.keras` kept on the training loss (no validation set, as the authors);
* test: the best checkpoint on `--test-size` (default 1280: 10 batches of 128) fresh
  examples with the fixed seed 1111
  (`results.json`: `test.bit_error_per_sequence`).

The paper shows this task as a learning curve of bit error per sequence;
`learning_curve.png` plots the same curve (figure number in the paper unverified).

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/priority_sort.py                 # the paper's run
    KERAS_BACKEND=jax python examples/priority_sort.py --model lstm    # LSTM baseline
    KERAS_BACKEND=jax python examples/priority_sort.py --quick         # CPU smoke run

Started again with the same command, an interrupted run resumes (`--fresh` starts over).
Results go to `runs/priority_sort-<model>/` by default.
"""

from keras_stm.experiments import training
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import priority_sort as sort_data

TASK = "priority_sort"
QUICK = {**task_configs.QUICK_MODEL, "input_seq_len": 5, "target_seq_len": 4, "test_size": 16}


def build_parser():
    """The script's flags: the shared training flags, model sizes and the sequence lengths."""
    parser = training.argument_parser(__doc__, **task_configs.training_defaults(TASK))
    task_configs.add_model_arguments(parser, TASK)
    parser.add_argument(
        "--input-seq-len",
        type=int,
        default=sort_data.INPUT_SEQ_LEN,
        help="Number of input vectors.",
    )
    parser.add_argument(
        "--target-seq-len",
        type=int,
        default=sort_data.TARGET_SEQ_LEN,
        help="Number of highest-priority vectors to output.",
    )
    training.add_test_size_argument(parser, task_configs.TEST_BATCHES)
    return parser


def main(argv=None):
    """Train and test on priority sort; returns the results dict (also in results.json)."""
    parser = build_parser()
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    training.resolve_test_batches(parser, args)
    sizes = dict(input_seq_len=args.input_seq_len, target_seq_len=args.target_seq_len)
    return training.run_bit_error_task(args, TASK, sort_data, sizes)


if __name__ == "__main__":
    main()
