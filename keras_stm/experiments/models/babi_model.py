"""The STM bAbI question-answering model, its configuration and its evaluation protocol.

This module is the one place that defines the bAbI model of the paper (reference spec 5.3) and
how it is scored (spec 5.4):

* `BABI_STM_CONFIG`: the STM configuration (nq 20, d 90, r 96, linear 80-unit projectors,
  gated write, `α1 = 1` fixed, `α2` learned, `α3 = 0` fixed, learned initial memories, no
  head).
* `build_babi_model`: word ids -> `SentenceEncoder` (one vector per sentence) -> `STM` read
  one sentence per step -> final relational memory `Mr_T` -> `TPRInference` -> logits over
  the vocabulary. Story and sentence lengths are free (`None`), so every task keeps its own
  padded shape, or shares a larger one (`BabiData.with_shape_buckets`): word id -1 is an absent
  word, which the encoder skips, and an all-absent sentence is masked, so the STM (or LSTM)
  keeps its state over it and the numbers are those of the task's own shape.
* `BabiEvalDataset` / `evaluate_babi`: per-task accuracy, error (%) and loss, their mean over
  tasks (the paper's "mean error") and the number of failed tasks (error > 5%).
* `DecayLearningRateOnce`: the authors' once-only learning-rate halving when the validation
  loss first drops below 0.1.
"""

import inspect
import json
import os

import keras
import numpy as np

from keras_stm.experiments import training
from keras_stm.layers.self_attentive_memory import check_positive_int
from keras_stm.layers.sentence_encoder import SentenceEncoder
from keras_stm.layers.stm import STM
from keras_stm.layers.tpr_inference import TPRInference

CORES = ("stm", "lstm")

#: STM configuration of the authors' bAbI model (`qamodel.py`; reference spec 5.3). Only the
#: final relational memory is used: the head is off, `α3 = 0` switches the transfer path off
#: (the layer skips it) and the read-out is computed once, after the loop, and ignored.
BABI_STM_CONFIG = {
    "num_queries": 20,
    "memory_size": 90,
    "relation_size": 96,
    "readout_size": 64,
    "projector_hidden_units": 80,
    "gated_write": True,
    "relational_carry": 1.0,
    "relational_read": "learned",
    "relational_transfer": 0.0,
    "learn_initial_memory": True,
    "head_units": None,
}

#: Sizes of the rest of the model (reference spec 5.3).
BABI_MODEL_CONFIG = {"embedding_size": 64, "inference_hidden_units": 80, "hops": 3}

#: A task counts as failed when its test error exceeds this (percent), the usual bAbI criterion.
FAILED_TASK_ERROR = 5.0


def build_babi_model(
    vocabulary_size,
    max_sentence_length,
    embedding_size=64,
    stm_config=None,
    inference_hidden_units=80,
    hops=3,
    core="stm",
    lstm_units=256,
    name=None,
):
    """The STM bAbI model: sentence encoder, STM over sentences, TPR-style inference.

    Inputs are a dict `{"story": (batch, sentences, words), "question": (batch, words)}` of
    int32 word ids (any number of sentences and words, so each task keeps its own padded
    shape; a task's question and sentences share its `words`). Ids -1 are absent words (the
    padding of `BabiData.with_shape_buckets`): they add nothing, and the encoder's mask makes
    the core keep its state over a sentence made only of them, so extra -1 padding at the end
    of the sentences and of the story changes no output. The same `SentenceEncoder`
    (embedding `E`, position weights `P`) encodes every story sentence and the question. The
    STM reads the story one sentence per step; with `return_state=True` only its final
    relational memory `Mr_T` (batch, nq, d, d) is used: `TPRInference` answers from it and
    the question vector. Output: logits over the whole vocabulary (answers are single
    vocabulary items).

    `core="lstm"` is a simple baseline that is not in the paper: an LSTM over the sentence
    vectors, its last state concatenated with the question vector, and a linear output.

    Args:
        vocabulary_size: int, size of the joint vocabulary (word and answer ids).
        max_sentence_length: int, the longest sentence or question over all tasks (rows of the
            position weights).
        embedding_size: int, word/sentence vector size (the STM input size). Defaults to 64.
        stm_config: dict of `STM` arguments overriding `BABI_STM_CONFIG` (e.g. smaller sizes
            for a test). `head_units` must stay None and `return_state` is always True.
        inference_hidden_units: int, hidden width of the inference MLPs. Defaults to 80.
        hops: int, inference hops. Defaults to 3.
        core: `"stm"` (default) or `"lstm"`.
        lstm_units: int, LSTM width of the baseline. Defaults to 256.
        name: optional model name.

    Returns:
        An uncompiled functional `keras.Model` with inputs `story`, `question` and float32
        logits `(batch, vocabulary_size)`.

    Example:

    >>> from keras_stm.experiments.models.babi_model import build_babi_model
    >>> model = build_babi_model(30, 8, embedding_size=16, inference_hidden_units=8,
    ...     stm_config=dict(num_queries=3, memory_size=6, relation_size=4,
    ...                     projector_hidden_units=8))
    >>> model.output_shape
    (None, 30)

    References:
        Le, Tran, Venkatesh. Self-Attentive Associative Memory. ICML 2020 (bAbI, Table 9).
    """
    if core not in CORES:
        raise ValueError(f"`core` must be one of {CORES}, got {core!r}.")
    check_positive_int("vocabulary_size", vocabulary_size)
    check_positive_int("max_sentence_length", max_sentence_length)
    check_positive_int("embedding_size", embedding_size)
    config = dict(BABI_STM_CONFIG)
    if stm_config:
        unknown = sorted(
            set(stm_config) - (set(inspect.signature(STM.__init__).parameters) - {"self", "kwargs"})
        )
        if unknown:
            raise ValueError(f"`stm_config` has unknown STM argument(s) {unknown}.")
        if stm_config.get("head_units") is not None:
            raise ValueError(
                "`stm_config['head_units']` must be None: the bAbI model reads only "
                "the final relational memory."
            )
        for key in ("return_state", "return_sequences"):
            if key in stm_config:
                raise ValueError(f"`stm_config[{key!r}]` is fixed by the bAbI model.")
        config.update(stm_config)

    story = keras.Input((None, None), dtype="int32", name="story")
    question = keras.Input((None,), dtype="int32", name="question")
    encoder = SentenceEncoder(
        vocabulary_size, max_sentence_length, embedding_size, name="sentence_encoder"
    )
    sentences = encoder(story)  # (B, S, E)
    query = encoder(question)  # (B, E)
    if core == "stm":
        stm = STM(**config, return_state=True, name="stm")
        _, _, _, relational_memory = stm(sentences)
        _freeze_unused_stm_weights(stm)
        logits = TPRInference(
            vocabulary_size,
            entity_size=config["memory_size"],
            role_size=config["num_queries"],
            hidden_units=inference_hidden_units,
            hops=hops,
            name="inference",
        )([query, relational_memory])
    else:
        summary = keras.layers.LSTM(lstm_units, name="lstm")(sentences)
        features = keras.layers.Concatenate(name="features")([summary, query])
        logits = keras.layers.Dense(vocabulary_size, name="output")(features)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model({"story": story, "question": question}, logits, name=name or f"babi_{core}")


def _freeze_unused_stm_weights(stm):
    """Marks the STM weights the bAbI model never uses as non-trainable.

    Only `Mr_T` is consumed, so the read-out (G2, G3, and its LayerNorm if any) gets no
    gradient, nor does the transfer G1 when its coefficient is fixed at 0. Freezing them keeps
    optimisers from tracking (and warning about) weights without gradients; they stay in the
    model and its files. A model re-loaded from a file has them trainable again (harmless:
    their gradient is zero).
    """
    cell = stm.cell
    unused = [
        cell.slot_readout_kernel,
        cell.slot_readout_bias,
        cell.readout_kernel,
        cell.readout_bias,
    ]
    if cell.readout_normalization:
        unused += [cell.readout_gamma, cell.readout_beta]
    for variable in unused:
        if variable is not None:  # a path fixed off creates no weight (e.g. the transfer)
            variable.trainable = False


class BabiEvalDataset(keras.utils.PyDataset):
    """All examples of some bAbI tasks (one split) as batches of a single task each.

    Each task's examples are cut, in order, into `ceil(n / batch_size)` batches of nearly
    equal size (sizes differ by at most one), so a task has at most two batch shapes (fewer
    retraces under `jit`). Batch size does not change any metric: every example is scored
    once. Used as `validation_data` in `fit` and by `evaluate_babi`.

    Args:
        arrays: dict task id -> `keras_stm.experiments.tasks.babi.BabiArrays` (e.g. `data.valid`).
        batch_size: int > 0, largest batch. Defaults to 128.
        **kwargs: forwarded to `keras.utils.PyDataset`.

    Attributes:
        tasks: tuple of task ids, ascending.
        row_tasks: (N,) int32 task id of every example, in batch order.
        answers: (N,) int32 answer id of every example, in batch order.

    Example:

    >>> ds = BabiEvalDataset(data.valid, batch_size=128)  # doctest: +SKIP
    >>> x, y = ds[0]  # doctest: +SKIP
    """

    varying_shapes = True
    """bool: batches of different tasks differ in story and sentence length (see
    `keras_stm.experiments.training.backend_dataset`)."""

    def __init__(self, arrays, batch_size=128, **kwargs):
        super().__init__(**kwargs)
        if (
            not isinstance(batch_size, (int, np.integer))
            or isinstance(batch_size, bool)
            or batch_size <= 0
        ):
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if not arrays:
            raise ValueError("`arrays` must hold at least one task.")
        self.arrays = arrays
        self.tasks = tuple(sorted(arrays))
        self.batches = []
        for task in self.tasks:
            n = int(arrays[task].answer.shape[0])
            if n == 0:
                raise ValueError(f"`arrays` task {task} has no examples.")
            for rows in np.array_split(np.arange(n), -(-n // int(batch_size))):
                self.batches.append((task, int(rows[0]), int(rows[-1]) + 1))
        self.row_tasks = np.concatenate(
            [np.full(stop - start, task, np.int32) for task, start, stop in self.batches]
        )
        self.answers = np.concatenate(
            [arrays[task].answer[start:stop] for task, start, stop in self.batches]
        ).astype(np.int32)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        if not 0 <= index < len(self.batches):
            raise IndexError(f"batch index {index} out of range [0, {len(self.batches)}).")
        task, start, stop = self.batches[index]
        a = self.arrays[task]
        return {"story": a.story[start:stop], "question": a.question[start:stop]}, a.answer[
            start:stop
        ]


def scores_from_logits(logits, answers, row_tasks):
    """Per-task accuracy, error and loss from logits (the bAbI scoring, reference spec 5.4).

    Args:
        logits: (N, V) array of logits.
        answers: (N,) int answer ids.
        row_tasks: (N,) int task id of each row.

    Returns:
        dict with `tasks` (task id -> `{"accuracy", "error", "loss", "examples"}`, error in
        percent = 100 (1 - accuracy), loss = mean cross-entropy), `mean_accuracy` and
        `mean_error` (unweighted means over tasks, the paper's mean error), `accuracy` and
        `loss` pooled over all examples (what validation monitors), and `failed_tasks`
        (number of tasks with error > `FAILED_TASK_ERROR`).

    Example:

    >>> s = scores_from_logits(np.eye(3), np.array([0, 1, 0]), np.array([1, 1, 2]))
    >>> s["tasks"][1]["accuracy"], s["tasks"][2]["error"], s["mean_error"]
    (1.0, 100.0, 50.0)
    """
    logits = np.asarray(logits, np.float64)
    answers = np.asarray(answers)
    row_tasks = np.asarray(row_tasks)
    if logits.ndim != 2 or logits.shape[0] != answers.shape[0] or answers.shape != row_tasks.shape:
        raise ValueError(
            f"`logits` (N, V), `answers` (N,) and `row_tasks` (N,) do not match: "
            f"{logits.shape}, {answers.shape}, {row_tasks.shape}."
        )
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    losses = log_norm - shifted[np.arange(len(answers)), answers]
    correct = logits.argmax(axis=1) == answers
    tasks = {}
    for task in np.unique(row_tasks):
        rows = row_tasks == task
        accuracy = float(correct[rows].mean())
        tasks[int(task)] = {
            "accuracy": accuracy,
            "error": 100.0 * (1.0 - accuracy),
            "loss": float(losses[rows].mean()),
            "examples": int(rows.sum()),
        }
    errors = [v["error"] for v in tasks.values()]
    return {
        "tasks": tasks,
        "mean_accuracy": float(np.mean([v["accuracy"] for v in tasks.values()])),
        "mean_error": float(np.mean(errors)),
        "accuracy": float(correct.mean()),
        "loss": float(losses.mean()),
        "failed_tasks": int(sum(e > FAILED_TASK_ERROR for e in errors)),
    }


def evaluate_babi(model, arrays, batch_size=128):
    """Scores a bAbI model on every task of one split.

    Args:
        model: a model taking `{"story", "question"}` and returning logits (batch, V).
        arrays: dict task id -> `BabiArrays` (e.g. `data.test`).
        batch_size: int, largest evaluation batch. Defaults to 128.

    Returns:
        The dict of `scores_from_logits`.

    Example:

    >>> scores = evaluate_babi(model, data.test)  # doctest: +SKIP
    >>> scores["mean_error"], scores["tasks"][1]["error"]  # doctest: +SKIP
    """
    dataset = BabiEvalDataset(arrays, batch_size=batch_size)
    logits = model.predict(training.backend_dataset(dataset), verbose=0)
    if logits.shape[0] != dataset.answers.shape[0]:
        raise ValueError(
            f"The model returned {logits.shape[0]} rows for {dataset.answers.shape[0]} examples."
        )
    return scores_from_logits(logits, dataset.answers, dataset.row_tasks)


class DecayLearningRateOnce(keras.callbacks.Callback):
    """Multiplies the learning rate by `factor` once, after the first epoch whose monitored
    value drops below `threshold` (the authors' bAbI schedule: halve when the validation loss
    first goes below 0.1; the new rate applies from the next epoch on).

    The rate is set at the start of every epoch from the base rate and the remembered decay
    epoch, so a resumed run (Keras `BackupAndRestore`) keeps the schedule when `state_path` is
    given: the decay epoch is written there (JSON) and read back at the start of training.
    Put `state_path` inside the backup folder so that it disappears with the backup when a
    run completes or is restarted afresh.

    Args:
        learning_rate: float, the base learning rate.
        threshold: float, the decay happens once `logs[monitor] < threshold`. Defaults to 0.1.
        factor: float, the multiplier. Defaults to 0.5.
        monitor: str, the logged quantity. Defaults to "val_loss".
        state_path: optional str, JSON file remembering the decay epoch.

    Example:

    >>> cb = DecayLearningRateOnce(6e-4, threshold=0.1, factor=0.5)
    >>> model.fit(train, validation_data=valid, epochs=500, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(
        self, learning_rate, threshold=0.1, factor=0.5, monitor="val_loss", state_path=None
    ):
        super().__init__()
        for arg, value in (("learning_rate", learning_rate), ("factor", factor)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"`{arg}` must be a positive number, got {value!r}.")
        self.learning_rate = float(learning_rate)
        self.threshold = float(threshold)
        self.factor = float(factor)
        self.monitor = monitor
        self.state_path = state_path
        self.decay_epoch = None

    def current_rate(self, epoch):
        """The learning rate of (0-based) `epoch`."""
        decayed = self.decay_epoch is not None and epoch > self.decay_epoch
        return self.learning_rate * (self.factor if decayed else 1.0)

    def on_train_begin(self, logs=None):
        self.decay_epoch = None
        if self.state_path and os.path.exists(self.state_path):
            with open(self.state_path) as f:
                self.decay_epoch = json.load(f).get("decay_epoch")

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = self.current_rate(epoch)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if self.decay_epoch is None and value is not None and float(value) < self.threshold:
            self.decay_epoch = int(epoch)
            if self.state_path:
                os.makedirs(os.path.dirname(os.path.abspath(self.state_path)), exist_ok=True)
                with open(self.state_path, "w") as f:
                    json.dump(
                        {
                            "decay_epoch": self.decay_epoch,
                            "monitor": self.monitor,
                            "value": float(value),
                        },
                        f,
                    )
