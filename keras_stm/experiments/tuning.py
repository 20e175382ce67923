"""KerasTuner searches for every task: search spaces, `TaskHyperModel`, tuners and result files.

One `TaskHyperModel(keras_tuner.HyperModel)` serves every task of
`keras_stm.experiments.models.task_configs.TASK_CONFIGS`. What differs between tasks lives in two
registries:

* `SEARCH_SPACES[task]`: the hyper-parameters searched, each a `Param`, centred on the
  paper's values (the registry's `"stm"` configuration and training defaults, which are each
  range's default): number of queries `nq` (x1/2, x1, x2), memory size `d` and relation size
  `r` (x1/2, x1, x1.5), read-out size `a` (32, 64, 96), gated or additive write, each mixing
  coefficient (`relational_carry`, `relational_read`, `relational_transfer`) learned or fixed
  at 0 or 1, the learning rate (log-uniform from lr/4 to 10 lr), value clipping (2, 5, 10,
  20) and, for associative retrieval only, the batch size (32, 64, 128: a fixed training set
  where a smaller batch means more updates per epoch; the other tasks draw fresh data and
  their budget is iterations of 128, so a bigger batch would only buy more data).
  `QUICK_SEARCH_SPACES` (tiny sizes) are used with `quick=True`; `LSTM_SEARCH_SPACES` for the
  LSTM baseline (`lstm_units` instead of the STM arguments).
* `TASK_DATA[task]`: the task's data module and output protocol (a `TaskData`): input and
  output sizes, sequence or last-step output, the loss family (`"bits"`: sigmoid BCE and bit
  error per sequence; `"classes"`: softmax and accuracy; `"pointer"`: masked softmax over
  labels), the objective, and how to make training and validation batches.

The models are those of the example scripts: `build_sequence_model` with
`task_configs.stm_config(task, **tuned)`, compiled like `examples/<task>.py`, the optimiser
from `training.make_optimizer` with the task's defaults. Validation batches are fixed batches
of the fresh-data tasks drawn with `VALIDATION_SEED` (never the test seed), or the validation
split of associative retrieval: the test sets stay untouched by the search.

After a search `write_results` writes `best_hparams.json`, a file the task's training
script reads with `--hparams` (keys: its flags `learning_rate`, `clip_value`, `batch_size`,
`num_queries`, `memory_size`, `relation_size`, `readout_size`, `head_hidden_units` or
`lstm_units`, and `stm_config`: the tuned STM arguments without a flag of their own that
differ from the registry, e.g. `{"gated_write": false}`), and `best_trials.json`.

Example:

>>> import keras_tuner
>>> from keras_stm.experiments import tuning
>>> hypermodel = tuning.TaskHyperModel("nth_farthest", quick=True)
>>> tuner = tuning.make_tuner("random", hypermodel, max_trials=2, directory="runs/tune",
...                           project_name="demo")  # doctest: +SKIP
>>> tuner.search(epochs=1)  # doctest: +SKIP
>>> tuning.write_results(tuner, hypermodel)  # doctest: +SKIP

References:
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020.
    O'Malley et al., KerasTuner, https://github.com/keras-team/keras-tuner (1.4.8).
"""

import dataclasses
import json
import os
from typing import Any
from typing import Callable
from typing import Optional

import keras
import numpy as np

from keras_stm.experiments import training
from keras_stm.experiments._optional import require
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import associative_retrieval as ar_data
from keras_stm.experiments.tasks import copy as copy_data
from keras_stm.experiments.tasks import geometry
from keras_stm.experiments.tasks import graphs
from keras_stm.experiments.tasks import nth_farthest as nfar_data
from keras_stm.experiments.tasks import priority_sort as sort_data
from keras_stm.experiments.tasks import rar as rar_data
from keras_stm.experiments.tasks.base import TaskDataset
from keras_stm.experiments.tasks.metrics import BitErrorPerSequence

# keras-tuner 1.4.8 imports six without declaring it: the `tuning` extra installs both.
keras_tuner = require("keras_tuner", "tuning", "keras_stm.experiments.tuning")

TUNERS = ("random", "bayesian", "hyperband")
"""tuple: the tuner kinds of `make_tuner` (KerasTuner's RandomSearch, BayesianOptimization,
Hyperband)."""

VALIDATION_SEED = task_configs.TEST_SEED + 1000
"""int: seed of the fixed validation batches (the geometry and graph examples' validation seed;
never the test seed `TEST_SEED`)."""

TRAINING_SCRIPTS = {
    "associative_retrieval": "associative_retrieval.py",
    "copy": "copy_task.py",
    "priority_sort": "priority_sort.py",
    "rar": "rar.py",
    "nth_farthest": "nth_farthest.py",
    "convex_hull": "convex_hull.py",
    "tsp": "tsp.py",
    "shortest_path": "shortest_path.py",
    "minimum_spanning_tree": "minimum_spanning_tree.py",
}
"""dict: task -> its training script under `examples/` (reads `best_hparams.json`)."""

TRAINING_KEYS = ("learning_rate", "clip_value", "batch_size")
"""tuple: tuned training settings; flags of every training script."""

FLAG_KEYS = TRAINING_KEYS + tuple(task_configs.MODEL_FLAGS) + ("lstm_units",)
"""tuple: hyper-parameters written as top-level keys of `best_hparams.json` (script flags)."""

STM_ONLY_KEYS = ("gated_write", "relational_carry", "relational_read", "relational_transfer")
"""tuple: tuned STM arguments without a flag; written under `stm_config` in the file."""

COEFFICIENT_CHOICES = ("learned", "0", "1")
"""tuple: the searched values of a mixing coefficient (a learned scalar, or fixed at 0 or 1);
strings because a KerasTuner `Choice` holds one type."""

BEST_HPARAMS_FILE = "best_hparams.json"
BEST_TRIALS_FILE = "best_trials.json"


# ---------------------------------------------------------------------------------------------
# search spaces


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyper-parameter of a search space, declared on a `keras_tuner.HyperParameters`.

    Args:
        name: str, the hyper-parameter name (a training-script flag or an STM argument).
        kind: str, `"choice"`, `"float"`, `"boolean"` or `"fixed"`.
        values: tuple, the choices (`"choice"`).
        min_value, max_value: floats, the range (`"float"`).
        sampling: str, `"linear"` or `"log"` (`"float"`). Defaults to `"linear"`.
        default: the value of the paper (the first value tried by Bayesian optimisation and
            Hyperband's first bracket, and the value of a `"fixed"` parameter).

    Example:

    >>> import keras_tuner
    >>> hp = keras_tuner.HyperParameters()
    >>> Param("memory_size", "choice", values=(48, 96, 144), default=96).declare(hp)
    96
    """

    name: str
    kind: str
    values: tuple = ()
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    sampling: str = "linear"
    default: Any = None

    def __post_init__(self):
        if self.kind not in ("choice", "float", "boolean", "fixed"):
            raise ValueError(
                f"`kind` of {self.name!r} must be 'choice', 'float', 'boolean' or "
                f"'fixed', got {self.kind!r}."
            )
        if self.kind == "choice" and self.default not in self.values:
            raise ValueError(
                f"`default` {self.default!r} of {self.name!r} is not among its "
                f"values {self.values}."
            )
        if self.kind == "float" and not (self.min_value <= self.default <= self.max_value):
            raise ValueError(
                f"`default` {self.default!r} of {self.name!r} is outside "
                f"[{self.min_value}, {self.max_value}]."
            )

    def declare(self, hp):
        """Registers the parameter on `hp` and returns its current value."""
        if self.kind == "choice":
            return hp.Choice(self.name, list(self.values), default=self.default)
        if self.kind == "float":
            return hp.Float(
                self.name,
                self.min_value,
                self.max_value,
                sampling=self.sampling,
                default=self.default,
            )
        if self.kind == "boolean":
            return hp.Boolean(self.name, default=self.default)
        return hp.Fixed(self.name, self.default)


def _coefficient_text(value):
    """A mixing coefficient of the registry as a `COEFFICIENT_CHOICES`-style string."""
    return value if value == task_configs.LEARNED else f"{float(value):g}"


def coefficient_value(text):
    """A searched mixing coefficient as an STM argument: `"learned"` or a float.

    Args:
        text: str, `"learned"` or a number as text (e.g. `"0"`).

    Returns:
        `"learned"` or a float.

    Raises:
        ValueError: if `text` is neither.

    Example:

    >>> coefficient_value("learned"), coefficient_value("1")
    ('learned', 1.0)
    """
    if text == task_configs.LEARNED:
        return text
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(
            f"A mixing coefficient must be 'learned' or a number, got {text!r}."
        ) from None


def _scaled(value, factors, multiple=1):
    """Sorted distinct multiples of `multiple` nearest `value * f`, `value` itself included."""
    out = {max(multiple, int(value * f / multiple + 0.5) * multiple) for f in factors}
    return tuple(sorted(out | {value}))


def _training_space(entry, tune_batch_size):
    lr = entry["learning_rate"]
    clip = entry.get("clip_value") or 10.0
    params = [
        Param(
            "learning_rate",
            "float",
            min_value=lr / 4,
            max_value=lr * 10,
            sampling="log",
            default=lr,
        ),
        Param(
            "clip_value", "choice", values=tuple(sorted({2.0, 5.0, 10.0, 20.0, clip})), default=clip
        ),
    ]
    batch = entry["batch_size"]
    if tune_batch_size:
        params.append(
            Param("batch_size", "choice", values=tuple(sorted({32, 64, 128, batch})), default=batch)
        )
    else:
        params.append(Param("batch_size", "fixed", default=batch))
    return params


def _paper_space(task):
    """The STM search space of `task`, centred on its `TASK_CONFIGS` entry."""
    entry = task_configs.get_task_config(task)
    stm = entry["stm"]
    params = [
        Param(
            "num_queries",
            "choice",
            values=_scaled(stm["num_queries"], (0.5, 1, 2)),
            default=stm["num_queries"],
        ),
        Param(
            "memory_size",
            "choice",
            values=_scaled(stm["memory_size"], (0.5, 1, 1.5), 4),
            default=stm["memory_size"],
        ),
        Param(
            "relation_size",
            "choice",
            values=_scaled(stm["relation_size"], (0.5, 1, 1.5), 4),
            default=stm["relation_size"],
        ),
        Param(
            "readout_size",
            "choice",
            values=_scaled(stm["readout_size"], (0.5, 1, 1.5), 4),
            default=stm["readout_size"],
        ),
        Param("head_hidden_units", "fixed", default=stm["head_hidden_units"]),
        Param("gated_write", "boolean", default=stm["gated_write"]),
    ]
    for name in ("relational_carry", "relational_read", "relational_transfer"):
        paper = _coefficient_text(stm[name])
        params.append(
            Param(
                name,
                "choice",
                values=tuple(dict.fromkeys((*COEFFICIENT_CHOICES, paper))),
                default=paper,
            )
        )
    params += _training_space(entry, tune_batch_size=task == "associative_retrieval")
    return tuple(params)


def _lstm_space(task):
    entry = task_configs.get_task_config(task)
    units = task_configs.LSTM_UNITS
    return (
        Param("lstm_units", "choice", values=(units // 2, units, units * 2), default=units),
        *_training_space(entry, tune_batch_size=task == "associative_retrieval"),
    )


SEARCH_SPACES = {task: _paper_space(task) for task in task_configs.TASK_CONFIGS}
"""dict: task -> tuple of `Param`, the STM search space around the paper's values."""

LSTM_SEARCH_SPACES = {task: _lstm_space(task) for task in task_configs.TASK_CONFIGS}
"""dict: task -> tuple of `Param` for the LSTM baseline (`--model lstm`)."""

QUICK_SEARCH_SPACE = (
    Param("num_queries", "choice", values=(1, 2), default=2),
    Param("memory_size", "choice", values=(4, 8), default=8),
    Param("relation_size", "choice", values=(4, 8), default=8),
    Param("readout_size", "choice", values=(4, 8), default=8),
    Param("head_hidden_units", "fixed", default=task_configs.QUICK_MODEL["head_hidden_units"]),
    Param("gated_write", "boolean", default=True),
    Param("relational_carry", "choice", values=COEFFICIENT_CHOICES, default="learned"),
    Param("relational_read", "choice", values=COEFFICIENT_CHOICES, default="learned"),
    Param("relational_transfer", "choice", values=COEFFICIENT_CHOICES, default="learned"),
    Param("learning_rate", "float", min_value=1e-3, max_value=1e-2, sampling="log", default=3e-3),
    Param("clip_value", "choice", values=(1.0, 10.0), default=10.0),
    Param("batch_size", "choice", values=(4, 8), default=8),
)
"""tuple of `Param`: a tiny space for CPU smoke runs and tests (`quick=True`); per task, the
write and mixing-coefficient defaults become the task's (`QUICK_SEARCH_SPACES`)."""


def _quick_space(task):
    registry = task_configs.stm_config(task)
    params = []
    for param in QUICK_SEARCH_SPACE:
        if param.name == "gated_write":
            param = dataclasses.replace(param, default=registry["gated_write"])
        elif param.name.startswith("relational_"):
            param = dataclasses.replace(param, default=_coefficient_text(registry[param.name]))
        params.append(param)
    return tuple(params)


QUICK_SEARCH_SPACES = {task: _quick_space(task) for task in task_configs.TASK_CONFIGS}
"""dict: task -> the tiny STM space with the task's write and coefficient defaults."""

QUICK_LSTM_SEARCH_SPACE = (
    Param("lstm_units", "choice", values=(8, 16), default=task_configs.QUICK_MODEL["lstm_units"]),
    *[p for p in QUICK_SEARCH_SPACE if p.name in TRAINING_KEYS],
)
"""tuple of `Param`: the tiny LSTM space (`quick=True`, `model="lstm"`)."""


def search_space(task, model="stm", quick=False):
    """The search space of `task` for `model`.

    Args:
        task: str, a key of `TASK_CONFIGS`.
        model: str, `"stm"` (default) or `"lstm"`.
        quick: bool, the tiny space (`QUICK_SEARCH_SPACES`) instead of the paper's. Defaults
            to False.

    Returns:
        tuple of `Param`.

    Raises:
        ValueError: on an unknown task or model.

    Example:

    >>> [p.default for p in search_space("rar") if p.name.startswith("relational")]
    ['0', '0', 'learned']
    """
    _check_task(task)
    if model not in training.MODELS:
        raise ValueError(f"`model` must be one of {training.MODELS}, got {model!r}.")
    if model == "lstm":
        return QUICK_LSTM_SEARCH_SPACE if quick else LSTM_SEARCH_SPACES[task]
    return QUICK_SEARCH_SPACES[task] if quick else SEARCH_SPACES[task]


def fix_params(space, names):
    """`space` with the parameters `names` fixed at their defaults (searched no more).

    Args:
        space: tuple of `Param`.
        names: iterable of parameter names of `space`.

    Returns:
        tuple of `Param`.

    Raises:
        ValueError: if a name is not in `space`.

    Example:

    >>> space = fix_params(search_space("copy"), ["gated_write", "relational_read"])
    >>> [p.kind for p in space if p.name in ("gated_write", "relational_read")]
    ['fixed', 'fixed']
    """
    names = set(names)
    unknown = sorted(names - {p.name for p in space})
    if unknown:
        raise ValueError(
            f"Cannot fix {unknown}: not in the search space {[p.name for p in space]}."
        )
    return tuple(Param(p.name, "fixed", default=p.default) if p.name in names else p for p in space)


def _check_task(task):
    if task not in TASK_DATA:
        raise ValueError(f"`task` must be one of {sorted(TASK_DATA)}, got {task!r}.")


# ---------------------------------------------------------------------------------------------
# task data and output protocol


@dataclasses.dataclass(frozen=True)
class TaskData:
    """How a task feeds a `TaskHyperModel`: sizes, output protocol, objective and batches.

    Args:
        input_size: int, features per step (the embedding width for token inputs).
        output_size: int, logits per output step.
        return_sequences: bool, logits for every step (decoding tasks) or the last one.
        loss: str, `"bits"` (sigmoid BCE on the weighted decoding steps, bit error per
            sequence), `"classes"` (softmax cross-entropy, accuracy) or `"pointer"` (softmax
            cross-entropy on the weighted output steps, per-step accuracy).
        objective: tuple `(name, direction)`, the validation metric the search optimises.
        make: callable `(batch_size, num_batches, seed, fixed, quick, data_dir) -> PyDataset`;
            `fixed=True` gives the validation batches. `num_batches` None: the task decides (a
            full pass over a fixed split).
        vocabulary_size, embedding_size: ints for token inputs, else None.
    """

    input_size: int
    output_size: int
    return_sequences: bool
    loss: str
    objective: tuple
    make: Callable
    vocabulary_size: Optional[int] = None
    embedding_size: Optional[int] = None


_QUICK_SIZES = {
    "copy": dict(min_seq_len=2, max_seq_len=2),
    "priority_sort": dict(input_seq_len=5, target_seq_len=4),
    "rar": dict(num_items=3, item_length=(2, 3)),
    "associative_retrieval": dict(num_pairs=4, num_train=32, num_validation=16, num_test=16),
    "convex_hull": dict(n_points=5),
    "tsp": dict(n_points=5),
    "shortest_path": dict(n_nodes=5, n_edges=6),
    "minimum_spanning_tree": dict(n_nodes=5, n_edges=6),
}


def _fresh(module, task):
    def make(batch_size, num_batches, seed, fixed, quick, data_dir):
        sizes = _QUICK_SIZES.get(task, {}) if quick else {}
        return module.dataset(
            batch_size=batch_size, num_batches=num_batches, seed=seed, fixed=fixed, **sizes
        )

    return make


def _associative_retrieval(batch_size, num_batches, seed, fixed, quick, data_dir):
    sizes = {
        "num_train": ar_data.SPLIT_SIZES["train"],
        "num_validation": ar_data.SPLIT_SIZES["validation"],
        "num_test": ar_data.SPLIT_SIZES["test"],
        "num_pairs": ar_data.NUM_PAIRS,
    }
    path = None
    if quick:  # generated in memory
        sizes = dict(_QUICK_SIZES["associative_retrieval"])
    elif data_dir:  # the examples' default data file for the paper's sizes and seed 0
        path = os.path.join(data_dir, f"associative_retrieval_{ar_data.NUM_PAIRS}.npz")
    split = "validation" if fixed else "train"
    return ar_data.dataset(split, batch_size=batch_size, path=path, seed=seed, **sizes)


def _padded(make_batch, length):
    """`batch_fn` padding `(x, y, weight)` with zero-weight steps to `length` steps.

    One time length for every batch: one compiled shape under jax, and the fixed shapes that
    the tensorflow backend's `tf.data` signature needs (batches of the geometric and graph
    tasks differ in length). The models are causal and the losses and metrics weighted, so
    padding changes no output step, loss or metric.
    """

    def batch_fn(rng, batch_size):
        x, y, weight = make_batch(rng, batch_size)
        pad = length - x.shape[1]
        if pad < 0:
            raise ValueError(f"a batch has {x.shape[1]} steps, more than {length}.")
        return (
            np.pad(x, ((0, 0), (0, pad), (0, 0))),
            np.pad(y, ((0, 0), (0, pad))),
            np.pad(weight, ((0, 0), (0, pad))),
        )

    return batch_fn


def _geometry(task):
    def make(batch_size, num_batches, seed, fixed, quick, data_dir):
        n_points = _QUICK_SIZES[task]["n_points"] if quick else geometry.DEFAULT_N_POINTS[task]
        high = n_points if isinstance(n_points, int) else n_points[1]

        def batch(rng, size):
            return geometry.make_batch(rng, size, task, n_points=n_points, random_labels=not fixed)

        return TaskDataset(
            _padded(batch, 2 * high + 2), batch_size, num_batches, seed=seed, fixed=fixed
        )

    return make


def _graph(task, data_task):
    def make(batch_size, num_batches, seed, fixed, quick, data_dir):
        sizes = (
            _QUICK_SIZES[task]
            if quick
            else dict(n_nodes=graphs.DEFAULT_N_NODES, n_edges=graphs.DEFAULT_N_EDGES)
        )
        nodes, edges = (np.max(sizes["n_nodes"]), np.max(sizes["n_edges"]))
        query = 1 if data_task == "shortest_path" else 0

        def batch(rng, size):
            return graphs.make_batch(rng, size, data_task, random_labels=not fixed, **sizes)

        return TaskDataset(
            _padded(batch, int(edges + query + 1 + nodes)),
            batch_size,
            num_batches,
            seed=seed,
            fixed=fixed,
        )

    return make


_AR = task_configs.TASK_CONFIGS["associative_retrieval"]
_BITS = ("val_bit_error_per_sequence", "min")
_POINTER = ("val_loss", "min")

TASK_DATA = {
    "associative_retrieval": TaskData(
        _AR["embedding_size"],
        ar_data.OUTPUT_SIZE,
        False,
        "classes",
        ("val_accuracy", "max"),
        _associative_retrieval,
        _AR["vocabulary_size"],
        _AR["embedding_size"],
    ),
    "copy": TaskData(
        copy_data.INPUT_SIZE, copy_data.OUTPUT_SIZE, True, "bits", _BITS, _fresh(copy_data, "copy")
    ),
    "priority_sort": TaskData(
        sort_data.INPUT_SIZE,
        sort_data.OUTPUT_SIZE,
        True,
        "bits",
        _BITS,
        _fresh(sort_data, "priority_sort"),
    ),
    "rar": TaskData(
        rar_data.INPUT_SIZE, rar_data.OUTPUT_SIZE, True, "bits", _BITS, _fresh(rar_data, "rar")
    ),
    "nth_farthest": TaskData(
        nfar_data.INPUT_SIZE,
        nfar_data.OUTPUT_SIZE,
        False,
        "classes",
        ("val_accuracy", "max"),
        _fresh(nfar_data, "nth_farthest"),
    ),
    "convex_hull": TaskData(
        geometry.INPUT_WIDTH,
        geometry.NUM_CLASSES,
        True,
        "pointer",
        _POINTER,
        _geometry("convex_hull"),
    ),
    "tsp": TaskData(
        geometry.INPUT_WIDTH, geometry.NUM_CLASSES, True, "pointer", _POINTER, _geometry("tsp")
    ),
    "shortest_path": TaskData(
        graphs.INPUT_WIDTH,
        graphs.NUM_CLASSES,
        True,
        "pointer",
        _POINTER,
        _graph("shortest_path", "shortest_path"),
    ),
    "minimum_spanning_tree": TaskData(
        graphs.INPUT_WIDTH,
        graphs.NUM_CLASSES,
        True,
        "pointer",
        _POINTER,
        _graph("minimum_spanning_tree", "mst"),
    ),
}
"""dict: task -> `TaskData` (same keys as `TASK_CONFIGS`)."""


def _compile_arguments(loss):
    if loss == "bits":
        return dict(
            loss=keras.losses.BinaryCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            ),
            weighted_metrics=[BitErrorPerSequence()],
        )
    if loss == "classes":
        return dict(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return dict(
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=["sparse_categorical_accuracy"],
    )


# ---------------------------------------------------------------------------------------------
# the hypermodel


class TaskHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` for any task of `TASK_CONFIGS`: builds, compiles and fits.

    `build(hp)` declares the task's search space (`search_space`) and returns the compiled
    model of the example scripts (`build_sequence_model` on the tuned STM arguments, the
    task's loss and metrics, `training.make_optimizer` with the task's optimiser and the tuned
    learning rate and clipping). `fit(hp, model, **kwargs)` makes the task's training batches
    (tuned batch size, `steps_per_epoch` per epoch, fresh data every epoch) and fixed
    validation batches, then calls `model.fit`; pass no data to `tuner.search`.

    Args:
        task: str, a key of `TASK_CONFIGS`.
        model: str, `"stm"` (default) or `"lstm"` (the baseline, searching `lstm_units`).
        quick: bool, the tiny space and tiny data (CPU smoke runs, tests). Defaults to False.
        space: optional tuple of `Param` replacing the registry's (`search_space`).
        steps_per_epoch: int or None, training batches per epoch; None: the registry's (200,
            or a full pass for associative retrieval), 2 with `quick`.
        validation_batches: int, fixed validation batches of the fresh-data tasks. Defaults
            to 4 (1 with `quick`).
        seed: int, seed of the weights and of the training batches. Defaults to 0.
        data_dir: str or None, folder of the associative-retrieval data file (created there
            if absent); None generates the split in memory. Defaults to `"runs/data"`, the
            example's.
        data_parallel: bool, build every trial's model under `keras.distribution`
            DataParallel (jax; `training.enable_data_parallel`). Re-applied in every `build`
            because KerasTuner calls `keras.backend.clear_session()` before each trial, which
            also clears the global distribution. Defaults to False.
        jit_compile: `"auto"`, True or False, given to `model.compile`. Defaults to `"auto"`.

    Raises:
        ValueError: on an unknown task or model, or bad sizes.

    Example:

    >>> import keras_tuner
    >>> hypermodel = TaskHyperModel("copy", quick=True)
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.output_shape
    (None, None, 32)
    """

    def __init__(
        self,
        task,
        model="stm",
        quick=False,
        space=None,
        steps_per_epoch=None,
        validation_batches=None,
        seed=0,
        data_dir=os.path.join("runs", "data"),
        data_parallel=False,
        jit_compile="auto",
    ):
        super().__init__(name=f"{task}_{model}")
        _check_task(task)
        self.task = task
        self.model = model
        self.quick = bool(quick)
        self.space = tuple(space) if space is not None else search_space(task, model, quick)
        self.data = TASK_DATA[task]
        entry = task_configs.get_task_config(task)
        if steps_per_epoch is None:
            steps_per_epoch = 2 if quick else entry["steps_per_epoch"]
        if validation_batches is None:
            validation_batches = 1 if quick else 4
        for name, value in (
            ("steps_per_epoch", steps_per_epoch),
            ("validation_batches", validation_batches),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        self.steps_per_epoch = steps_per_epoch
        self.validation_batches = validation_batches
        self.seed = int(seed)
        self.data_dir = data_dir
        self.data_parallel = bool(data_parallel)
        self.jit_compile = jit_compile

    @property
    def objective(self):
        """`keras_tuner.Objective` of the task (e.g. `val_accuracy`, max)."""
        name, direction = self.data.objective
        return keras_tuner.Objective(name, direction=direction)

    def declare_hyperparameters(self, hp):
        """Registers the search space on `hp` (KerasTuner calls it once, before any build)."""
        self.values(hp)

    def values(self, hp):
        """Declares the search space on `hp`; returns `{name: value}` as model arguments.

        Mixing coefficients come back as `"learned"` or floats (`coefficient_value`).
        """
        values = {}
        for param in self.space:
            value = param.declare(hp)
            if param.name.startswith("relational_"):
                value = coefficient_value(value)
            values[param.name] = value
        return values

    def training_args(self, values):
        """The training script's flags (paper defaults) with the tuned values set.

        Args:
            values: dict from `values(hp)`.

        Returns:
            `argparse.Namespace` as `training.parse_args` gives, for `training.make_optimizer`.
        """
        parser = training.argument_parser("", **task_configs.training_defaults(self.task))
        args = parser.parse_args([])
        args.model = self.model
        for key in TRAINING_KEYS:
            if key in values:
                setattr(args, key, values[key])
        return args

    def stm_config(self, values):
        """The STM arguments of a trial: the registry's, with the tuned ones replaced."""
        overrides = {
            k: v for k, v in values.items() if k in task_configs.MODEL_FLAGS or k in STM_ONLY_KEYS
        }
        if self.quick:  # sizes not in the space fall back to the tiny ones, not the paper's
            tiny = {
                k: v for k, v in task_configs.QUICK_MODEL.items() if k in task_configs.MODEL_FLAGS
            }
            overrides = {**tiny, **overrides}
        return task_configs.stm_config(self.task, **overrides)

    def build(self, hp):
        """The compiled model of a trial (see the class docstring)."""
        values = self.values(hp)
        if self.data_parallel:
            training.enable_data_parallel()
        keras.utils.set_random_seed(self.seed)
        args = self.training_args(values)
        default_units = (
            task_configs.QUICK_MODEL["lstm_units"] if self.quick else task_configs.LSTM_UNITS
        )
        model = build_sequence_model(
            self.data.input_size,
            self.data.output_size,
            core=self.model,
            return_sequences=self.data.return_sequences,
            stm_config=self.stm_config(values) if self.model == "stm" else None,
            lstm_units=values.get("lstm_units", default_units),
            vocabulary_size=self.data.vocabulary_size,
            embedding_size=self.data.embedding_size,
            name=f"{self.task}_{self.model}",
        )
        model.compile(
            optimizer=training.make_optimizer(args),
            jit_compile=self.jit_compile,
            **_compile_arguments(self.data.loss),
        )
        return model

    def training_data(self, batch_size):
        """The training batches: `steps_per_epoch` fresh ones per epoch.

        Associative retrieval: its training split, reshuffled every epoch (`fit` takes at most
        `steps_per_epoch` of its batches per epoch).
        """
        return self.data.make(
            batch_size, self.steps_per_epoch, self.seed, False, self.quick, self.data_dir
        )

    def validation_data(self, batch_size):
        """The fixed validation batches (seed `VALIDATION_SEED`, or the validation split)."""
        return self.data.make(
            batch_size, self.validation_batches, VALIDATION_SEED, True, self.quick, self.data_dir
        )

    def fit(self, hp, model, *args, **kwargs):
        """Trains a trial's model on the task's batches; `kwargs` go to `model.fit`.

        Args:
            hp: the trial's `HyperParameters` (its `batch_size`, if searched).
            model: the model from `build`.
            *args: must be empty (the hypermodel makes its own data).
            **kwargs: `model.fit` arguments from `tuner.search` (`epochs`, `callbacks`,
                `verbose`, Hyperband's `initial_epoch`).

        Returns:
            The `History` of `model.fit`.

        Raises:
            ValueError: if data are passed.
        """
        if args or "x" in kwargs:
            raise ValueError(
                "TaskHyperModel makes its own training data: call "
                "`tuner.search(epochs=...)` without data."
            )
        batch_size = hp.values.get("batch_size", task_configs.TASK_CONFIGS[self.task]["batch_size"])
        train = self.training_data(batch_size)
        steps = min(self.steps_per_epoch, len(train))
        kwargs.setdefault("steps_per_epoch", steps)
        return model.fit(train, validation_data=self.validation_data(batch_size), **kwargs)


# ---------------------------------------------------------------------------------------------
# tuners and results


def distributed_role():
    """This process's part in KerasTuner's distributed tuning, from its environment.

    Returns:
        `"chief"` (`KERASTUNER_TUNER_ID` contains "chief"), `"worker"` (another ID), or None
        (no `KERASTUNER_ORACLE_IP`: a single-process search).
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def make_tuner(
    kind,
    hypermodel,
    max_trials=None,
    directory=os.path.join("runs", "tune"),
    project_name=None,
    overwrite=False,
    seed=0,
    objective=None,
    executions_per_trial=1,
    max_epochs=None,
    factor=3,
    hyperband_iterations=1,
    max_consecutive_failed_trials=3,
):
    """A KerasTuner tuner over a `TaskHyperModel`, resuming `directory/project_name` if there.

    Args:
        kind: str, one of `TUNERS`: `"random"`, `"bayesian"`, `"hyperband"`.
        hypermodel: a `TaskHyperModel`.
        max_trials: int or None, trials in total (resumed ones count). Defaults to 10 for
            random and Bayesian search; for Hyperband None means its own schedule, an int caps
            it (KerasTuner's Hyperband has no such argument: the oracle's `max_trials` is set).
        directory: str, results folder. Defaults to `runs/tune`.
        project_name: str or None; None: `<task>-<model>-<kind>` (`-quick` with quick).
        overwrite: bool, delete an existing project instead of resuming it. Defaults to False.
        seed: int, the oracle's seed. Defaults to 0.
        objective: None (the task's, `hypermodel.objective`), or a `keras_tuner.Objective`.
        executions_per_trial: int, fits per trial (random and Bayesian search). Defaults to 1.
        max_epochs: int, Hyperband's most epochs per model (required for Hyperband).
        factor: int, Hyperband's reduction factor. Defaults to 3.
        hyperband_iterations: int, Hyperband brackets sweeps. Defaults to 1.
        max_consecutive_failed_trials: int, KerasTuner stops after this many failed trials
            in a row. Defaults to 3.

    Returns:
        A `keras_tuner.Tuner`.

    Raises:
        ValueError: on an unknown kind or bad counts.
    """
    if kind not in TUNERS:
        raise ValueError(f"`kind` must be one of {TUNERS}, got {kind!r}.")
    if max_trials is not None and (
        isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials <= 0
    ):
        raise ValueError(f"`max_trials` must be a positive integer or None, got {max_trials!r}.")
    objective = objective or hypermodel.objective
    if project_name is None:
        project_name = f"{hypermodel.task}-{hypermodel.model}-{kind}" + (
            "-quick" if hypermodel.quick else ""
        )
    common = dict(
        hypermodel=hypermodel,
        objective=objective,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        seed=seed,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
    )
    if kind == "hyperband":
        if not isinstance(max_epochs, int) or max_epochs < 1:
            raise ValueError(f"Hyperband needs `max_epochs` >= 1, got {max_epochs!r}.")
        tuner = keras_tuner.Hyperband(
            max_epochs=max_epochs,
            factor=factor,
            hyperband_iterations=hyperband_iterations,
            **common,
        )
        if max_trials is not None:
            _oracle(tuner).max_trials = max_trials
        return tuner
    cls = keras_tuner.RandomSearch if kind == "random" else keras_tuner.BayesianOptimization
    return cls(
        max_trials=10 if max_trials is None else max_trials,
        executions_per_trial=executions_per_trial,
        **common,
    )


def _oracle(tuner):
    """The tuner's own oracle (a worker's is wrapped in an `OracleClient`)."""
    return getattr(tuner.oracle, "_oracle", tuner.oracle)


def best_hparams(task, values, model="stm"):
    """A trial's hyper-parameters as the `--hparams` file of the task's training script.

    Args:
        task: str, a key of `TASK_CONFIGS`.
        values: dict, the trial's `HyperParameters.values` (KerasTuner's `tuner/...`
            bookkeeping keys are left out).
        model: str, `"stm"` or `"lstm"`.

    Returns:
        dict: the flags of the script (`learning_rate`, `clip_value`, `batch_size`, the model
        sizes), and for STM `stm_config` with the tuned flag-less STM arguments that differ
        from `TASK_CONFIGS[task]["stm"]` (omitted when there are none), plus `model`.

    Example:

    >>> best_hparams("copy", {"learning_rate": 3e-4, "memory_size": 48,
    ...                       "gated_write": True, "relational_read": "0"})
    {'learning_rate': 0.0003, 'memory_size': 48, 'stm_config': {'relational_read': 0.0}, 'model': 'stm'}
    """
    _check_task(task)
    registry = task_configs.stm_config(task)
    out, stm = {}, {}
    for key, value in values.items():
        if key in FLAG_KEYS:
            if model == "lstm" and key in task_configs.MODEL_FLAGS:
                continue
            if model == "stm" and key == "lstm_units":
                continue
            out[key] = value
        elif key in STM_ONLY_KEYS and model == "stm":
            if key.startswith("relational_"):
                value = coefficient_value(value)
            if value != registry[key]:
                stm[key] = value
    if stm:
        out["stm_config"] = stm
    out["model"] = model
    return out


def trial_summary(trial):
    """A JSON-ready dict of a `keras_tuner` trial: id, status, score, best step, values."""
    return {
        "trial_id": trial.trial_id,
        "status": str(trial.status),
        "score": trial.score,
        "best_step": trial.best_step,
        "hyperparameters": dict(trial.hyperparameters.values),
    }


def write_results(tuner, hypermodel, num_best=3):
    """Writes `best_hparams.json` and `best_trials.json` into the tuner's project folder.

    Args:
        tuner: the tuner after `search` (its oracle holds the trials).
        hypermodel: the `TaskHyperModel` searched.
        num_best: int, trials listed in `best_trials.json`. Defaults to 3.

    Returns:
        dict with `best_hparams` (the file's content), `best_trials`, `num_trials`,
        `num_completed`, `objective`, and the two paths.

    Raises:
        ValueError: if no trial completed (nothing to write).
    """
    oracle = _oracle(tuner)
    best = oracle.get_best_trials(num_best)
    if not best:
        raise ValueError(f"No completed trial in {tuner.project_dir}: nothing to write.")
    trials = list(oracle.trials.values())
    completed = [t for t in trials if str(t.status) == "COMPLETED"]
    hparams = best_hparams(hypermodel.task, best[0].hyperparameters.values, hypermodel.model)
    folder = str(tuner.project_dir)
    hparams_path = os.path.join(folder, BEST_HPARAMS_FILE)
    trials_path = os.path.join(folder, BEST_TRIALS_FILE)
    summary = {
        "task": hypermodel.task,
        "model": hypermodel.model,
        "quick": hypermodel.quick,
        "objective": {"name": oracle.objective.name, "direction": oracle.objective.direction},
        "num_trials": len(trials),
        "num_completed": len(completed),
        "best_trials": [trial_summary(t) for t in best],
        "training_script": os.path.join("examples", TRAINING_SCRIPTS[hypermodel.task]),
    }
    with open(hparams_path, "w") as f:
        json.dump(hparams, f, indent=2)
    with open(trials_path, "w") as f:
        json.dump(summary, f, indent=2)
    return {
        **summary,
        "best_hparams": hparams,
        "best_hparams_path": hparams_path,
        "best_trials_path": trials_path,
    }


def training_command(task, hparams_path, model="stm"):
    """The command line training the task's script with a best-hyper-parameters file.

    Example:

    >>> training_command("copy", "runs/tune/copy-stm-random/best_hparams.json")
    'python examples/copy_task.py --hparams runs/tune/copy-stm-random/best_hparams.json'
    """
    _check_task(task)
    command = f"python examples/{TRAINING_SCRIPTS[task]} --hparams {hparams_path}"
    return command + (" --model lstm" if model == "lstm" else "")


__all__ = [
    "COEFFICIENT_CHOICES",
    "LSTM_SEARCH_SPACES",
    "Param",
    "QUICK_SEARCH_SPACE",
    "QUICK_SEARCH_SPACES",
    "SEARCH_SPACES",
    "TASK_DATA",
    "TRAINING_SCRIPTS",
    "TUNERS",
    "TaskData",
    "TaskHyperModel",
    "VALIDATION_SEED",
    "best_hparams",
    "coefficient_value",
    "distributed_role",
    "fix_params",
    "make_tuner",
    "search_space",
    "training_command",
    "trial_summary",
    "write_results",
]
