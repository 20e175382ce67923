"""Per-task STM configurations and training defaults of the paper, as one registry.

`TASK_CONFIGS[task]` holds, for every task of the paper's experiments:

* `"stm"`: the `keras_stm.STM` arguments (all but `head_units`, which the model builder sets to
  the task's output size), from the authors' `tasks/*.json` (reference spec, section 4.0);
* the training defaults, under the names of `keras_stm.experiments.training.argument_parser`'s
keywords:
  `optimizer`, `learning_rate`, `clip_value`, `batch_size`, `iterations`, `steps_per_epoch`,
  and the optimiser's `momentum` / `rmsprop_rho` (RMSprop) or `adam_beta_2` (Adam);
* task-specific extras (e.g. `vocabulary_size`, `embedding_size`) and `"source"`, where the
  values come from.

The example scripts, the KerasTuner search and the geometry/graph scripts read this registry
(through `stm_config`, `training_defaults`, `add_model_arguments` and
`model_config_from_args`) so each value lives in one place.

Values and their provenance (spec = shared/docs/stm_reference.md):

| task | nq, d, r | write | alphas (carry, read, transfer) | optimiser | iterations |
|---|---|---|---|---|---|
| associative_retrieval | 2, 96, 96 | gated | learned | RMSprop 1e-4, momentum 0.9, rho 0.99 | 100,000 |
| copy, priority_sort | 8, 96, 96 | gated | learned | RMSprop 1e-4, momentum 0.9, rho 0.95 | 50,000 |
| rar | 16, 72, 72 | gated | 0, 0, learned | RMSprop 1e-4, momentum 0.9, rho 0.95 | 50,000 |
| nth_farthest | 8, 128, 96 | additive | learned | Adam 1e-4 | 1,000,000 |
| convex_hull, tsp | 8, 128, 96 | gated | learned | Adam 1e-4 (our choice) | 1,000,000 |
| shortest_path, minimum_spanning_tree | 8, 128, 96 (our choice) | gated | learned | Adam 1e-4 (our choice) | 1,000,000 |

Every task: batch 128, gradient clipping by value to [-10, 10], read-out size 64, head hidden
size 128, one SAM step, learned initial memories. For convex hull and TSP only the STM sizes
and the iteration count come from the authors' json (their repository has no training script);
the gated write, the optimiser and the clipping are our choice (the settings of the other
tasks, Adam as for Nth-farthest). Shortest path and minimum spanning tree are absent from the
authors' repository: their configuration copies convex hull / TSP (our choice).

References:
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (official code
    `thaihungle/SAM`, `tasks/*.json`, `run_toys.py`, `run_nar.py`).
"""

import copy as _copy
import inspect

from keras_stm.experiments.tasks import associative_retrieval as _associative_retrieval
from keras_stm.layers import stm_cell as _stm_cell

LEARNED = _stm_cell.LEARNED
"""str: value of a mixing coefficient (`relational_carry/read/transfer`) that is learned."""

TEST_SEED = 1111
"""int: seed of the fixed test batches of the fresh-data tasks (the authors' numpy test seed)."""
TEST_BATCHES = 10
"""int: number of test batches of the fresh-data tasks (the authors' `-num_eval`)."""

# Flags of `keras_stm.experiments.training.argument_parser` that a registry entry may set.
_TRAINING_KEYS = (
    "optimizer",
    "learning_rate",
    "batch_size",
    "iterations",
    "steps_per_epoch",
    "clip_value",
    "clip_norm",
    "rmsprop_rho",
    "momentum",
    "adam_beta_2",
)

_BASE_STM = {
    "num_queries": 8,
    "memory_size": 96,
    "relation_size": 96,
    "readout_size": 64,
    "head_hidden_units": 128,
    "gated_write": True,
    "sam_steps": 1,
    "relational_carry": LEARNED,
    "relational_read": LEARNED,
    "relational_transfer": LEARNED,
    "projector_hidden_units": None,
    "learn_initial_memory": True,
}


def _stm(**changes):
    config = dict(_BASE_STM)
    config.update(changes)
    return config


_TOY_RMSPROP = {
    "optimizer": "rmsprop",
    "learning_rate": 1e-4,
    "momentum": 0.9,
    "rmsprop_rho": 0.95,
    "clip_value": 10.0,
    "batch_size": 128,
    "iterations": 50_000,
    "steps_per_epoch": 200,
}
_ADAM = {
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "adam_beta_2": 0.999,
    "clip_value": 10.0,
    "batch_size": 128,
    "iterations": 1_000_000,
    "steps_per_epoch": 200,
}
_GEOMETRY_STM = _stm(num_queries=8, memory_size=128, relation_size=96)

TASK_CONFIGS = {
    "associative_retrieval": {
        "stm": _stm(num_queries=2, memory_size=96, relation_size=96),
        "optimizer": "rmsprop",
        "learning_rate": 1e-4,
        "momentum": 0.9,
        "rmsprop_rho": 0.99,
        "clip_value": 10.0,
        "batch_size": 128,
        "iterations": 100_000,
        # One epoch = one pass over the 100,000 training sequences: 100,000 // 128 batches.
        "steps_per_epoch": _associative_retrieval.SPLIT_SIZES["train"] // 128,
        "vocabulary_size": _associative_retrieval.VOCAB_SIZE,
        "embedding_size": _associative_retrieval.EMBEDDING_DIM,
        "source": "tasks/nar.json, run_nar.py (spec 4.0, 4.1)",
    },
    "copy": {
        "stm": _stm(),
        **_TOY_RMSPROP,
        "source": "tasks/copy.json, run_toys.py (spec 4.0, 4.2)",
    },
    "priority_sort": {
        "stm": _stm(),
        **_TOY_RMSPROP,
        "source": "tasks/prioritysort.json, run_toys.py (spec 4.0, 4.3)",
    },
    "rar": {
        "stm": _stm(
            num_queries=16,
            memory_size=72,
            relation_size=72,
            relational_carry=0.0,
            relational_read=0.0,
        ),
        **_TOY_RMSPROP,
        "source": "tasks/rar.json (last values of its repeated keys), run_toys.py (spec 4.0, 4.4)",
    },
    "nth_farthest": {
        "stm": _stm(num_queries=8, memory_size=128, relation_size=96, gated_write=False),
        **_ADAM,
        "source": "tasks/nfar.json (spec 4.0, 4.5)",
    },
    "convex_hull": {
        "stm": dict(_GEOMETRY_STM),
        **_ADAM,
        "source": "tasks/convex_hull.json sizes and iterations; write, optimiser and clipping "
        "our choice (spec 4.6)",
    },
    "tsp": {
        "stm": dict(_GEOMETRY_STM),
        **_ADAM,
        "source": "tasks/tsp.json sizes and iterations; write, optimiser and clipping our "
        "choice (spec 4.7)",
    },
    "shortest_path": {
        "stm": dict(_GEOMETRY_STM),
        **_ADAM,
        "source": "not in the authors' repository: convex hull / TSP settings (our choice, "
        "spec 4.8)",
    },
    "minimum_spanning_tree": {
        "stm": dict(_GEOMETRY_STM),
        **_ADAM,
        "source": "not in the authors' repository: convex hull / TSP settings (our choice, "
        "spec 4.8)",
    },
}
"""dict: task name -> {"stm": STM arguments, training defaults, extras, "source"}."""

QUICK_MODEL = {
    "num_queries": 2,
    "memory_size": 8,
    "relation_size": 8,
    "readout_size": 8,
    "head_hidden_units": 8,
    "lstm_units": 8,
}
"""dict: tiny model sizes (flag names of `add_model_arguments`) for `--quick` smoke runs."""

MODEL_FLAGS = ("num_queries", "memory_size", "relation_size", "readout_size", "head_hidden_units")
"""tuple: the STM arguments that `add_model_arguments` exposes as flags."""

LSTM_UNITS = 512
"""int: width of the LSTM baseline (the authors' 2 x controller size 256)."""


def _check_task(task):
    if task not in TASK_CONFIGS:
        raise ValueError(f"`task` must be one of {sorted(TASK_CONFIGS)}, got {task!r}.")


def get_task_config(task):
    """A deep copy of the registry entry of `task`.

    Args:
        task: str, a key of `TASK_CONFIGS`.

    Returns:
        dict with `"stm"` (STM arguments), the training defaults and the task's extras.

    Raises:
        ValueError: if `task` is unknown.

    Example:

    >>> from keras_stm.experiments.models.task_configs import get_task_config
    >>> get_task_config("nth_farthest")["optimizer"]
    'adam'
    """
    _check_task(task)
    return _copy.deepcopy(TASK_CONFIGS[task])


def stm_config(task, **overrides):
    """The `keras_stm.STM` arguments of `task` (without `head_units`), optionally changed.

    Args:
        task: str, a key of `TASK_CONFIGS`.
        **overrides: STM arguments replacing the registry's (e.g. `memory_size=32`).

    Returns:
        dict of STM arguments, e.g. for `build_sequence_model(..., stm_config=...)`.

    Raises:
        ValueError: if `task` is unknown or an override is not an argument of the registry's
            STM configuration.

    Example:

    >>> from keras_stm.experiments.models.task_configs import stm_config
    >>> config = stm_config("rar")
    >>> config["num_queries"], config["memory_size"], config["relational_carry"]
    (16, 72, 0.0)
    """
    config = get_task_config(task)["stm"]
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(
            f"Unknown STM arguments {unknown} for task {task!r}; expected some of {sorted(config)}."
        )
    config.update(overrides)
    return config


def training_defaults(task):
    """The keyword arguments of `keras_stm.experiments.training.argument_parser` for `task`.

    Args:
        task: str, a key of `TASK_CONFIGS`.

    Returns:
        dict with `task` and the registry's training defaults (`learning_rate`, `iterations`,
        `optimizer`, `clip_value`, ...), ready for `argument_parser(doc, **defaults)`.

    Raises:
        ValueError: if `task` is unknown.

    Example:

    >>> from keras_stm.experiments import training
    >>> from keras_stm.experiments.models.task_configs import training_defaults
    >>> parser = training.argument_parser("doc", **training_defaults("copy"))
    >>> parser.parse_args([]).iterations
    50000
    """
    entry = get_task_config(task)
    return {"task": task, **{key: entry[key] for key in _TRAINING_KEYS if key in entry}}


def add_model_arguments(parser, task):
    """Adds the model-size flags (`--num-queries`, `--memory-size`, ...) with `task`'s defaults.

    The flags are `--num-queries`, `--memory-size`, `--relation-size`, `--readout-size`,
    `--head-hidden-units` (STM) and `--lstm-units` (LSTM baseline); being flags, they can also
    be set from an `--hparams` JSON file (e.g. a KerasTuner result).

    Args:
        parser: an `argparse.ArgumentParser` (from
            `keras_stm.experiments.training.argument_parser`).
        task: str, a key of `TASK_CONFIGS`.

    Returns:
        The same parser.

    Raises:
        ValueError: if `task` is unknown.

    Example:

    >>> from keras_stm.experiments import training
    >>> from keras_stm.experiments.models.task_configs import add_model_arguments, training_defaults
    >>> parser = add_model_arguments(
    ...     training.argument_parser("doc", **training_defaults("copy")), "copy")
    >>> parser.parse_args(["--memory-size", "32"]).memory_size
    32
    """
    config = stm_config(task)
    help_text = {
        "num_queries": "STM: number of SAM queries / relational slots (nq).",
        "memory_size": "STM: item memory side d (memory d x d).",
        "relation_size": "STM: read-out size r of each relational slot.",
        "readout_size": "STM: read-out size a.",
        "head_hidden_units": "STM: width of the output head's hidden layers.",
    }
    for name in MODEL_FLAGS:
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=config[name], help=help_text[name]
        )
    parser.add_argument(
        "--lstm-units",
        type=int,
        default=LSTM_UNITS,
        help="Width of the LSTM baseline (--model lstm).",
    )
    return parser


LOOP_ARGUMENTS = ("unroll", "loop")
"""tuple: `keras_stm.STM` arguments that change how the time loop runs, not its numbers
(`unroll`, and `loop`: `"auto"`, `"dense"` or `"low_rank"`); `--stm-config` accepts them beside
`stm_arguments()`."""


def stm_arguments():
    """Names of the STM arguments a configuration may set (all but `head_units`).

    Returns:
        tuple of str, the `keras_stm.STMCell` constructor arguments except `head_units`
        (which the model builder sets to the task's output size).

    Example:

    >>> from keras_stm.experiments.models.task_configs import stm_arguments
    >>> "relational_carry" in stm_arguments(), "head_units" in stm_arguments()
    (True, False)
    """
    parameters = inspect.signature(_stm_cell.STMCell.__init__).parameters.values()
    return tuple(
        p.name
        for p in parameters
        if p.name not in ("self", "head_units") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )


def model_config_from_args(args, task):
    """The STM arguments of `task` with the model flags of `args` applied.

    The size flags of `add_model_arguments` replace the registry's values, then the
    `--stm-config` JSON object (`args.stm_config`, from the flag or an `--hparams` file), if
    any, replaces any STM argument, sizes included (it wins over the size flags).

    Args:
        args: `argparse.Namespace` parsed from a parser given `add_model_arguments`
            (`args.stm_config`: optional dict).
        task: str, a key of `TASK_CONFIGS`.

    Returns:
        dict of STM arguments.

    Raises:
        ValueError: if `task` is unknown, a size flag is not a positive integer, or
            `--stm-config` is not a dict of STM arguments (`head_units` excluded).

    Example:

    >>> import argparse
    >>> from keras_stm.experiments.models.task_configs import model_config_from_args
    >>> args = argparse.Namespace(num_queries=2, memory_size=8, relation_size=8,
    ...                           readout_size=8, head_hidden_units=8)
    >>> model_config_from_args(args, "copy")["memory_size"]
    8
    """
    overrides = {}
    for name in MODEL_FLAGS + ("lstm_units",):
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"--{name.replace('_', '-')} must be a positive integer, got {value!r}."
            )
        if name != "lstm_units":
            overrides[name] = value
    config = stm_config(task, **overrides)
    extra = getattr(args, "stm_config", None)
    if extra is not None:
        if not isinstance(extra, dict):
            raise ValueError(f"--stm-config must be a JSON object of STM arguments, got {extra!r}.")
        allowed = set(stm_arguments()) | set(LOOP_ARGUMENTS)
        unknown = sorted(set(extra) - allowed)
        if unknown:
            raise ValueError(
                f"--stm-config has unknown STM arguments {unknown}; expected some "
                f"of {sorted(allowed)}."
            )
        config.update(extra)
    return config
