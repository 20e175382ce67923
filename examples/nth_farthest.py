"""Nth-farthest (Santoro et al. 2018): name the n-th farthest of 8 vectors from a reference.

Task (`keras_stm.experiments.tasks.nth_farthest`): 8 steps, one per vector (16 dims, U(-1, 1)),
each step `[vector | one-hot label | one-hot n | one-hot reference label]` (width 40). The
target is the label of the (n+1)-th farthest vector from the reference vector (Euclidean
distance): one of 8 classes, read from the logits of the **last** step (no decoding phase).

Protocol:

* loss: sparse categorical cross-entropy from logits; metric: accuracy (the paper reports
  accuracy; the authors log the error rate 1 - accuracy, in `results.json` as `test.error`);
* STM nq 8, d 128, r 96, **additive** item write (`gated_write=False`, the authors'
  `rd=False`), learned alphas (`TASK_CONFIGS["nth_farthest"]`);
* Adam lr 1e-4, gradient clipping by value 10, batch 128, 1,000,000 iterations of fresh
  data; a learning-curve point every 200 iterations; `best.keras` kept on the training loss;
* test: the best checkpoint on `--test-size` (default 1280: 10 batches of 128) fresh examples
  with the fixed seed 1111 (`results.json`: `test.accuracy`, and `test.accuracy_n0` ...
  `accuracy_n7`, the accuracy for each n: at the 25% plateau n = 7, the reference itself, is
  solved and every other n is at 1/7, a label other than the reference's drawn at random).

The paper reports the test accuracy of STM against RMC, DNC and LSTM (recalled as about
98% for STM, 91% RMC, about 25% DNC/LSTM; recalled, not checked against the paper).

Deviation from the authors' protocol, off by default: a **dimension curriculum** against the
25% plateau. `--dims-curriculum "2:40000,4:80000,8:120000"` trains on vectors whose first 2
coordinates only are non-zero up to iteration 40,000, then 4 up to 80,000, then 8 up to
120,000, then all 16 (`nth_farthest.make_batch(..., active_dims=k)` zeroes the coordinates
from k on and computes the targets of the zeroed vectors; the input width, hence the model,
stays the task's). With `--advance-accuracy A` a stage also ends at the first epoch end whose
accuracy at the stage's dimension reaches A; the later stages keep their lengths and start
earlier (`nth_farthest.DimsSchedule`). That accuracy is measured at every epoch end on
`--test-size` examples of their own (seed `nth_farthest.CURRICULUM_SEED`, 2222, not the test
set's 1111, so no test example steers training) with the coordinates from the active
dimension on zeroed; `history.csv` records it as `accuracy_active` beside `active_dims`, the
dimension of the epoch's last batch. The schedule's state is saved with every checkpoint
(`backup/training_metadata.json`), so an interrupted run resumes in the same stage;
`results.json` (`dims_curriculum`) records the stages, the threshold and the iteration each
stage ended at. The test stays at all 16 dimensions.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/nth_farthest.py                 # the paper's run
    KERAS_BACKEND=jax python examples/nth_farthest.py --model lstm    # LSTM baseline
    KERAS_BACKEND=jax python examples/nth_farthest.py --quick         # CPU smoke run
    KERAS_BACKEND=jax python examples/nth_farthest.py \\
        --dims-curriculum 2:40000,4:80000,8:120000 --advance-accuracy 0.8  # the curriculum

Started again with the same command, an interrupted run resumes (`--fresh` starts over).
Results go to `runs/nth_farthest-<model>/` by default.
"""

import keras
import numpy as np

from keras_stm.experiments import training
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import nth_farthest as nfar_data

TASK = "nth_farthest"
QUICK = {**task_configs.QUICK_MODEL, "test_size": 16}


def build_parser():
    """The script's flags: the shared training flags, model sizes, the test size and the
    dimension curriculum."""
    parser = training.argument_parser(__doc__, **task_configs.training_defaults(TASK))
    task_configs.add_model_arguments(parser, TASK)
    training.add_test_size_argument(parser, task_configs.TEST_BATCHES)
    nfar_data.add_dims_curriculum_arguments(parser, "accuracy_active", report="epoch end")
    return parser


class DimsCurriculum(keras.callbacks.Callback):
    """The dimension curriculum of `--dims-curriculum` at each epoch's end, resumable.

    At the end of epoch e (training iteration `last = (e + 1) * steps_per_epoch`), it moves
    the schedule to `last` (`schedule.active(last)`: the dimension of the epoch's last
    batch), scores the model on the fixed set of that dimension, adds `active_dims` and
    `accuracy_active` to the epoch's logs (so `history.csv` records them) and, with
    `advance_accuracy`, ends the stage when the accuracy reaches it (not after the last
    stage). The training data reads the schedule when it makes a batch
    (`nth_farthest.dataset(..., active_dims=schedule)`), so the next epoch's batches follow.

    As a `resumable_callbacks` entry of `training.run`, its state (`get_state`: the schedule's)
    is saved with every checkpoint and restored from the one the run resumes from.

    Args:
        schedule: `nth_farthest.DimsSchedule`, shared with the training data.
        steps_per_epoch: int, training iterations per epoch.
        scoring_set: callable `(active_dims) -> (x, y)`, the fixed examples the accuracy at an
            active dimension is measured on (called once per dimension).
        advance_accuracy: float in (0, 1], or None (stages end at their UNTIL only).
        batch_size: int, the prediction batch size.
    """

    state_name = "dims_schedule"

    def __init__(
        self, schedule, steps_per_epoch, scoring_set, advance_accuracy=None, batch_size=128
    ):
        super().__init__()
        self.schedule = schedule
        self.steps_per_epoch = int(steps_per_epoch)
        self.scoring_set = scoring_set
        self.advance_accuracy = advance_accuracy
        self.batch_size = int(batch_size)
        self._sets = {}

    def get_state(self):
        return self.schedule.get_state()

    def set_state(self, state):
        try:
            self.schedule.set_state(state)  # in place: the training data holds this schedule
        except ValueError as error:
            flag = nfar_data.format_dims_curriculum(self.schedule.stages)
            raise ValueError(f"this run has --dims-curriculum {flag}: {error}") from None

    def accuracy(self, active_dims):
        """The model's accuracy on the fixed set of `active_dims`."""
        if active_dims not in self._sets:
            self._sets[active_dims] = self.scoring_set(active_dims)
        x, y = self._sets[active_dims]
        logits = self.model.predict(x, batch_size=self.batch_size, verbose=0)
        return float(np.mean(np.argmax(logits, axis=-1) == y))

    def on_epoch_end(self, epoch, logs=None):
        last = (epoch + 1) * self.steps_per_epoch
        active = self.schedule.active(last)
        accuracy = self.accuracy(active)
        if logs is not None:
            logs["active_dims"] = active
            logs["accuracy_active"] = accuracy
        threshold = self.advance_accuracy
        if threshold is not None and active != self.schedule.num_dims and accuracy >= threshold:
            self.schedule.advance(last)

    def record(self, test_size, seed):
        """The curriculum for `results.json`: the stages (each with the iteration it ended
        at, None while it has not), the threshold and the scoring set."""
        return {
            "deviation": "not in the authors' protocol (off by default)",
            "stages": self.schedule.stage_ends(),
            "num_dims": self.schedule.num_dims,
            "advance_accuracy": self.advance_accuracy,
            "accuracy_active_set": {"examples": test_size, "seed": seed},
            "last_iteration": self.schedule.iteration,
        }


def main(argv=None):
    """Train and test on Nth-farthest; returns the results dict (also in results.json)."""
    parser = build_parser()
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    training.resolve_test_batches(parser, args)
    curriculum = nfar_data.check_dims_curriculum_args(parser, args, nfar_data.NUM_DIMS)
    stm_config = task_configs.model_config_from_args(args, TASK)
    schedule = (
        None if curriculum is None else nfar_data.DimsSchedule(curriculum, nfar_data.NUM_DIMS)
    )
    train_data = nfar_data.dataset(
        batch_size=args.batch_size,
        num_batches=args.steps_per_epoch,
        seed=args.seed,
        active_dims=schedule,
    )
    test_data = nfar_data.dataset(
        batch_size=args.batch_size,
        num_batches=args.test_batches,
        seed=task_configs.TEST_SEED,
        fixed=True,
    )

    model = build_sequence_model(
        nfar_data.INPUT_SIZE,
        nfar_data.OUTPUT_SIZE,
        core=args.model,
        return_sequences=False,
        stm_config=stm_config,
        lstm_units=args.lstm_units,
    )
    model.compile(
        optimizer=training.make_optimizer(args),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=training.jit_compile(args),
    )

    extra = {
        "paper_metric": "accuracy",
        "evaluated": "best.keras",
        "test_protocol": {
            "batches": args.test_batches,
            "examples": args.test_size,
            "seed": task_configs.TEST_SEED,
        },
        "stm_config": stm_config if args.model == "stm" else None,
    }
    test_scores = training.evaluate_best_checkpoint(
        args, test_data, lambda scores: {"error": 1.0 - scores["accuracy"]}
    )

    def evaluate(model):
        """The test figures, and the accuracy for each n (the 25% plateau ignores distances)."""
        scores = test_scores(model)  # loads best.keras first
        x = np.concatenate([test_data[i][0] for i in range(len(test_data))])
        y = np.concatenate([test_data[i][1] for i in range(len(test_data))])
        logits = model.predict(test_data, verbose=0)
        return {**scores, **nfar_data.accuracy_by_n(x, y, np.argmax(logits, axis=-1))}

    resumable = []
    if schedule is not None:

        def scoring_set(active_dims):
            """`--test-size` examples of the curriculum's own seed (not the test set's), the
            coordinates from `active_dims` on zeroed."""
            data = nfar_data.dataset(
                batch_size=args.batch_size,
                num_batches=args.test_batches,
                seed=nfar_data.CURRICULUM_SEED,
                fixed=True,
                active_dims=active_dims,
            )
            batches = [data[i] for i in range(len(data))]
            return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

        resumable.append(
            DimsCurriculum(
                schedule,
                args.steps_per_epoch,
                scoring_set,
                advance_accuracy=args.advance_accuracy,
                batch_size=args.batch_size,
            )
        )

    def evaluate_and_record(model):
        """`evaluate`, and the curriculum as trained (for results.json), now that it is done."""
        if resumable:
            curriculum_record = resumable[0].record(args.test_size, nfar_data.CURRICULUM_SEED)
            extra["dims_curriculum"] = curriculum_record
        return evaluate(model)

    extra["dims_curriculum"] = None
    return training.run(
        model,
        train_data,
        args,
        evaluate=evaluate_and_record,
        evaluation_data=[("test", test_data), ("predict", test_data)],
        monitor="loss",
        mode="min",
        extra_results=extra,
        resumable_callbacks=resumable,
    )


if __name__ == "__main__":
    main()
