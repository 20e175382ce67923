"""Copy task: train STM (or the LSTM baseline) to reproduce a sequence of random bit vectors.

Task (`keras_stm.experiments.tasks.copy`): a start flag, L random 32-bit vectors
(L ~ U{1..20}, one L per batch), an end flag; then L all-zero rows during which the model must
output the L vectors in order. Input width 34, 32 logits per step.

Protocol (the authors' `run_toys.py`): the model returns logits for every step
(`return_sequences=True`); only the L decoding steps count, through `sample_weight`
(0 on the input phase, 1 on the decoding phase):

* loss: binary cross-entropy from logits, mean over decoding steps x batch x bits
  (`reduction="mean_with_sample_weight"`, the authors' `BCELoss` mean);
* metric: bit error per sequence (`BitErrorPerSequence`, a weighted metric), the wrong bits
  of `round(sigmoid(logit))` summed over a sequence's decoding steps, averaged over sequences;
* STM nq 8, d 96, r 96, gated write, learned alphas (`TASK_CONFIGS["copy"]`);
* RMSprop lr 1e-4, momentum 0.9, rho 0.95, gradient clipping by value 10, batch 128,
  50,000 iterations of fresh data; a learning-curve point every 200 iterations;
  `best.keras` kept on the training loss (the authors have no validation set);
* test: the best checkpoint on `--test-size` (default 1280: 10 batches of 128) fresh examples
  drawn with the fixed seed 1111 (`results.json`: `test.bit_error_per_sequence`).

The paper shows this task as a learning curve of bit error per sequence (STM against the
baselines); `learning_curve.png` plots the same curve (figure number in the paper
unverified).

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/copy_task.py                 # the paper's run
    KERAS_BACKEND=jax python examples/copy_task.py --model lstm    # LSTM baseline (512 units)
    KERAS_BACKEND=jax python examples/copy_task.py --quick         # CPU smoke run, seconds

An interrupted run resumes from `<output-dir>/backup` when started again with the same
command (`--fresh` starts over). Results go to `runs/copy-<model>/` by default.
"""

from keras_stm.experiments import training
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import copy as copy_data

TASK = "copy"
# --quick: one length (one compiled shape); examples/rar.py --quick covers varying lengths.
QUICK = {**task_configs.QUICK_MODEL, "min_seq_len": 2, "max_seq_len": 2, "test_size": 16}


def build_parser():
    """The script's flags: the shared training flags, model sizes and the copy lengths."""
    parser = training.argument_parser(__doc__, **task_configs.training_defaults(TASK))
    task_configs.add_model_arguments(parser, TASK)
    parser.add_argument(
        "--min-seq-len",
        type=int,
        default=copy_data.MIN_SEQ_LEN,
        help="Shortest sequence L (training and test).",
    )
    parser.add_argument(
        "--max-seq-len",
        type=int,
        default=copy_data.MAX_SEQ_LEN,
        help="Longest sequence L (training and test).",
    )
    training.add_test_size_argument(parser, task_configs.TEST_BATCHES)
    return parser


def main(argv=None):
    """Train and test on the copy task; returns the results dict (also in results.json)."""
    parser = build_parser()
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    training.resolve_test_batches(parser, args)
    sizes = dict(min_seq_len=args.min_seq_len, max_seq_len=args.max_seq_len)
    return training.run_bit_error_task(args, TASK, copy_data, sizes)


if __name__ == "__main__":
    main()
