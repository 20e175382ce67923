"""What every example script shares: flags, optimiser, resumable fitting, results and plots.

An example builds its task data and model, then calls `run(...)`:

    parser = training.argument_parser(__doc__, task="nth_farthest", learning_rate=1e-4, ...)
    args = training.parse_args(parser)
    model = ...; model.compile(optimizer=training.make_optimizer(args), ...)
    training.run(model, train_data, args, validation_data=..., evaluate=...)

`run` resumes an interrupted run from the checkpoints in `<output_dir>/backup` (the last two
epochs, each written to a temporary file and renamed, checked against the SHA-256 recorded in
`backup/training_metadata.json` before it is loaded), keeps the best model as
`<output_dir>/best.keras`, appends the learning curve to `history.csv`, and writes
`results.json` and `learning_curve.png`. While it runs, the output folder is locked
(`<output_dir>/run.lock`). A damaged checkpoint, metadata or `best.keras` stops the run with a
`RunFolderError` naming the file and the way out (`--fresh`); it never trains from fresh
weights when the metadata says training had progressed.
"""

import argparse
import csv
import glob
import json
import os
import platform
import re
import socket
import time
import warnings
import zipfile

import keras
import numpy as np

from keras_stm.experiments.tasks.base import file_sha256
from keras_stm.optimizers import TorchRMSprop

MODELS = ("stm", "lstm")
OPTIMIZERS = ("rmsprop", "adam")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` with each flag's default and the script's docstring kept as written.

    A default is shown for every flag that takes a value and has one (not for on/off switches,
    nor for `None` or an empty text, whose meaning the flag's help says).
    """

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None or action.default == "":
            return action.help or ""
        return super()._get_help_string(action)


def add_deprecated_alias(parser, old, new, dest=None, **kwargs):
    """Keeps an old flag spelling working, hidden from `--help`, with a deprecation warning.

    Args:
        parser: an `argparse.ArgumentParser` (or argument group).
        old: str, the old spelling, e.g. `"--core"`.
        new: str, the flag to use instead, e.g. `"--model"` (named in the warning).
        dest: str or None, where the value goes (default: the new flag's destination).
        **kwargs: more `add_argument` arguments (`type`, `choices`, ...).

    Example:

    >>> import argparse
    >>> from keras_stm.experiments import training
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--model", default="stm")
    >>> training.add_deprecated_alias(parser, "--core", "--model")
    >>> parser.parse_args(["--core", "lstm"]).model
    'lstm'
    """
    dest = dest or new.lstrip("-").replace("-", "_")
    parser.add_argument(
        old,
        dest=dest,
        action=_DeprecatedAlias,
        new=new,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **kwargs,
    )


class _DeprecatedAlias(argparse.Action):
    """Stores the value like the new flag would and warns on stderr that `old` is deprecated."""

    def __init__(self, option_strings, dest, new, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        import sys

        if not getattr(namespace, "_deprecation_probe", False):
            print(
                f"warning: {option_string} is deprecated and will be removed; use {self.new}.",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def argument_parser(
    description,
    *,
    task,
    learning_rate,
    batch_size=128,
    iterations,
    steps_per_epoch=200,
    optimizer="rmsprop",
    clip_value=None,
    clip_norm=None,
    rmsprop_rho=0.95,
    momentum=0.9,
    adam_beta_2=0.999,
):
    """An `argparse.ArgumentParser` with the flags every example shares, paper values as defaults.

    Args:
        description: str, the script's docstring (shown by `--help`).
        task: str, task name (default output folder `runs/<task>-<model>`).
        learning_rate: float, the paper's learning rate for the task.
        batch_size: int, examples per batch. Defaults to 128.
        iterations: int, the paper's number of training batches.
        steps_per_epoch: int, training batches between two evaluations/checkpoints.
        optimizer: `"rmsprop"` (default) or `"adam"`.
        clip_value: float or None, element-wise gradient clipping (the authors' `clip_grad_value_`).
        clip_norm: float or None, global-norm gradient clipping.
        rmsprop_rho: float, RMSprop's decay. Defaults to 0.95.
        momentum: float, RMSprop's momentum. Defaults to 0.9.
        adam_beta_2: float, Adam's second-moment decay. Defaults to 0.999.

    Returns:
        An `argparse.ArgumentParser`; scripts add their own task flags before parsing.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.set_defaults(task=task)
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="stm",
        help="The model to train: STM, or the LSTM baseline.",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="Folder of the results and checkpoints (default "
        "runs/<task>-<model>, with -quick under --quick).",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=iterations,
        help="Training batches in total (the whole run).",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=steps_per_epoch,
        help="Training batches per epoch: the run is evaluated and "
        "checkpointed, and one progress line printed, after each epoch.",
    )
    parser.add_argument("--batch-size", type=int, default=batch_size, help="Examples per batch.")
    parser.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=optimizer,
        help="Optimizer (the paper's for the task).",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=learning_rate,
        help="Learning rate (the paper's value for the task).",
    )
    parser.add_argument(
        "--clip-value",
        type=float,
        default=clip_value,
        help="Clip each gradient element to [-v, v] (the authors' clip_grad_value_).",
    )
    parser.add_argument(
        "--clip-norm",
        type=float,
        default=clip_norm,
        help="Scale the gradients down to this global norm (instead of --clip-value).",
    )
    parser.add_argument(
        "--rmsprop-rho",
        type=float,
        default=rmsprop_rho,
        help="RMSprop: decay of the moving average of squared gradients.",
    )
    parser.add_argument("--momentum", type=float, default=momentum, help="RMSprop: momentum.")
    parser.add_argument(
        "--adam-beta-2",
        type=float,
        default=adam_beta_2,
        help="Adam: decay of the second-moment estimate.",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="Random seed of the weights and the training data."
    )
    parser.add_argument(
        "--hparams",
        default=None,
        help="JSON file of hyper-parameters (e.g. written by examples/tune.py); "
        "its keys override the flags of the same name.",
    )
    parser.add_argument(
        "--stm-config",
        type=_json_object,
        default=None,
        help="JSON object of keras_stm.STM arguments that replace the task's "
        '(e.g. \'{"gated_write": false, "relational_carry": 1.0}\'), '
        "for arguments without a flag of their own, and the loop options "
        "unroll and loop; also an --hparams key "
        "(examples/tune.py writes it). The run stops before training if "
        "the model's STM does not carry these values.",
    )
    parser.add_argument(
        "--speed-settings",
        default="auto",
        choices=("auto", "off"),
        help="auto: on a GPU under jax, train with the fastest settings that "
        "give the same numbers (docs/performance.md: STM unroll=True, XLA "
        "command buffers); off: Keras' defaults. Recorded in results.json.",
    )
    parser.add_argument(
        "--compile-threads",
        default="auto",
        type=_compile_threads,
        help="jax: threads that compile the training, validation and test programs of every "
        "input shape (sequence length, bAbI task) before the first step, into jax's "
        "persistent compilation cache, so that fit reads them instead of compiling one "
        "after another. auto: with --speed-settings auto on a jax GPU, half the CPU cores "
        "(at most 8); 0: each program is compiled when its shape first comes. Ignored "
        "under torch and tensorflow, and by atari_pong.py (no fit). Recorded in results.json.",
    )
    parser.add_argument(
        "--jit-compile",
        default="auto",
        choices=("auto", "true", "false"),
        help="Compile the training step with XLA (Keras' jit_compile); auto: "
        "Keras decides for the backend.",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="Train in bfloat16 with float32 weights (Keras' mixed_bfloat16).",
    )
    parser.add_argument(
        "--data-parallel",
        action="store_true",
        help="Data-parallel over all local accelerators via keras.distribution (jax).",
    )
    parser.add_argument(
        "--evaluate",
        nargs="?",
        const="auto",
        default=None,
        metavar="NAME_OR_PATH",
        help="Train nothing: evaluate a pretrained model (a name under "
        "pretrained/, a folder, or no value for the task's own) on the "
        "script's test set and print its figures.",
    )
    parser.add_argument(
        "--initial-weights",
        default=None,
        metavar="PATH",
        help="Start a new run from these weights (a .keras or .weights.h5 "
        "file, e.g. pretrained/<name>/model.keras) with a fresh optimizer; "
        "ignored when the output folder holds a checkpoint to resume.",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=100,
        help="Linear learning-rate warm-up over this many steps whenever the optimizer "
        "starts fresh on trained weights (--initial-weights, or a checkpoint whose "
        "optimizer state could not be restored); 0 turns it off.",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="Ignore an existing checkpoint and start over."
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="Stop at the first epoch end after this much training time; the run "
        "resumes from its checkpoint when started again.",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        default=None,
        choices=(0, 1, 2),
        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a "
        "terminal, 2 when the output goes to a file); 1 and 2 add a line "
        "per epoch on the whole run: iterations done, time, ETA.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="A tiny run of a few seconds on a CPU, to check the set-up (small "
        "model and data, few iterations).",
    )
    return parser


def add_test_size_argument(parser, default_batches=10, batch_size=128):
    """Adds `--test-size` (examples in the fixed-seed test set of a fresh-data task).

    The test set is drawn in batches of `--batch-size`; `--test-size` is rounded up to whole
    batches (`test_batches`). The old `--test-batches N` still works (N batches), deprecated.

    Args:
        parser: the script's parser.
        default_batches: int, the paper's number of test batches (the authors' `-num_eval`).
        batch_size: int, the task's batch size (the default test set is
            `default_batches * batch_size` examples).
    """
    parser.add_argument(
        "--test-size",
        type=int,
        default=default_batches * batch_size,
        help="Examples in the fixed-seed test set, drawn in batches of "
        "--batch-size (rounded up to whole batches).",
    )
    add_deprecated_alias(parser, "--test-batches", "--test-size", dest="test_batches", type=int)


def resolve_test_batches(parser, args):
    """The number of test batches of `add_test_size_argument`'s flags (also set as
    `args.test_batches`; `args.test_size` becomes the examples actually tested).

    Raises:
        SystemExit: through `parser.error`, if the test set would be empty.
    """
    batches = getattr(args, "test_batches", None)
    if batches is None:
        if args.test_size <= 0:
            parser.error(f"--test-size must be positive, got {args.test_size}")
        batches = -(-args.test_size // args.batch_size)
    elif batches <= 0:
        parser.error(f"--test-batches must be positive, got {batches}")
    args.test_batches = batches
    args.test_size = batches * args.batch_size
    return batches


def parse_args(parser, argv=None, quick_overrides=None):
    """Parse flags, apply `--hparams` and `--quick`, validate, and set the seed and precision.

    `--hparams` values go through the same checks as the command line (each flag's type and
    choices). Of the two clippings, the one set (on the command line or in `--hparams`) clears
    the other's task default: Keras takes only one of them. `--quick` sets small sizes for the
    flags not given on the command line.

    Args:
        parser: from `argument_parser` (plus the script's own flags).
        argv: list of strings, or None for `sys.argv`.
        quick_overrides: dict of flag values used by `--quick` (small sizes, few iterations).

    Returns:
        `argparse.Namespace` with `output_dir` resolved.

    Raises:
        SystemExit: through `parser.error`, naming the flag, for an invalid value.
    """
    args = parser.parse_args(argv)
    explicit = _explicit_flags(parser, argv)
    if args.hparams:
        if not os.path.exists(args.hparams):
            parser.error(f"--hparams file not found: {args.hparams}")
        try:
            with open(args.hparams, encoding="utf-8") as f:
                values = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            parser.error(f"--hparams file {args.hparams} is not valid JSON: {error}")
        if not isinstance(values, dict):
            parser.error(
                f"--hparams file {args.hparams} must hold a JSON object, got "
                f"{type(values).__name__}"
            )
        actions = {
            action.dest: action
            for action in parser._actions
            if not isinstance(action, _DeprecatedAlias)
        }
        for action in parser._actions:  # an old spelling's own destination (e.g. test_batches)
            actions.setdefault(action.dest, action)
        for key, value in values.items():
            key = key.replace("-", "_")
            if not hasattr(args, key):
                parser.error(f"--hparams file {args.hparams} sets unknown option {key!r}")
            if key in actions:
                value = _checked_hparam(parser, actions[key], value, args.hparams)
            setattr(args, key, value)
            explicit.add(key)
    if getattr(args, "stm_config", None) is not None and not isinstance(args.stm_config, dict):
        parser.error(
            f"--stm-config must be a JSON object (from --hparams: a dict), got {args.stm_config!r}"
        )
    if {"clip_value", "clip_norm"} <= explicit and None not in (args.clip_value, args.clip_norm):
        parser.error(
            f"--clip-value {args.clip_value} and --clip-norm {args.clip_norm} are both "
            "set: Keras applies only one gradient clipping, choose one"
        )
    if "clip_norm" in explicit and args.clip_norm is not None:
        args.clip_value = None  # the task's default value clipping gives way
    elif "clip_value" in explicit and args.clip_value is not None:
        args.clip_norm = None
    if args.quick:
        defaults = {"iterations": 4, "steps_per_epoch": 2, "batch_size": 8}
        defaults.update(quick_overrides or {})
        for key, value in defaults.items():
            if key not in explicit:
                setattr(args, key, value)
    for name in ("iterations", "steps_per_epoch", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    if getattr(args, "warmup_steps", 0) < 0:
        parser.error(f"--warmup-steps must be 0 or more, got {args.warmup_steps}")
    if getattr(args, "max_minutes", None) is not None and not args.max_minutes > 0:
        parser.error(f"--max-minutes must be positive, got {args.max_minutes}")
    if args.output_dir is None:
        suffix = "-quick" if args.quick else ""
        args.output_dir = os.path.join("runs", f"{args.task}-{args.model}{suffix}")
    if getattr(args, "verbose", 0) is None:
        args.verbose = progress_verbosity()
    args.speed_settings_applied = apply_speed_settings(args)
    if hasattr(args, "compile_threads"):
        args.compile_threads = _resolve_compile_threads(args, args.speed_settings_applied)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if args.data_parallel:
        enable_data_parallel()
    return args


COMMAND_BUFFER_XLA_FLAGS = (
    "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL "
    "--xla_gpu_graph_min_graph_size=1 --xla_gpu_command_buffer_scheduling_mode=CONCURRENT"
)
"""str: XLA command buffers (CUDA graphs) with concurrent kernels, the fastest jax GPU
setting measured (docs/performance.md); checked against float64 by
`benchmarks/check_xla_flags.py`."""


def _jax_gpu_available():
    """Whether jax will run on a GPU, found without starting jax's backend (which would
    freeze `XLA_FLAGS`): a CUDA plugin of jax is installed and an NVIDIA device is present."""
    import importlib.util

    if os.environ.get("JAX_PLATFORMS", "").strip().lower() in ("cpu", "tpu"):
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    plugin = any(
        importlib.util.find_spec(f"jax_cuda{version}_plugin") is not None for version in (12, 13)
    )
    return plugin and os.path.exists("/dev/nvidiactl")


def apply_speed_settings(args):
    """Apply `--speed-settings auto`: the fastest correct training settings for this machine.

    Under jax on a GPU: the unrolled STM loop (`unroll=True` in `args.stm_config`, unless
    `--stm-config` sets `unroll`), XLA command buffers with concurrent kernels
    (`COMMAND_BUFFER_XLA_FLAGS`, unless `XLA_FLAGS` is already set), and jax's persistent
    compilation cache (`compilation_cache_dir`), so that a resumed or repeated run on the same
    machine reads its compiled programs from disk. These leave the numbers unchanged (tests
    and `benchmarks/check_xla_flags.py`). `XLA_FLAGS` is read when jax
    starts its backend, so the scripts call this from `parse_args`, before any computation;
    importing the library sets nothing. Elsewhere (CPU, torch, tensorflow) nothing changes.

    Args:
        args: the parsed flags (`speed_settings`, `stm_config`, `model`).

    Returns:
        dict of what was applied (recorded in `results.json`), e.g.
        `{"unroll": True, "xla_flags": "...", "compilation_cache_dir": "..."}`; empty when
        nothing was.
    """
    applied = {}
    if getattr(args, "speed_settings", "auto") != "auto" or keras.backend.backend() != "jax":
        return applied
    if not _jax_gpu_available():
        return applied
    from jax._src import xla_bridge

    if "XLA_FLAGS" not in os.environ:
        if xla_bridge.backends_are_initialized():
            import warnings

            warnings.warn(
                "jax had already started; XLA command buffers not enabled (set "
                "XLA_FLAGS before the first jax computation).",
                stacklevel=2,
            )
        else:
            os.environ["XLA_FLAGS"] = COMMAND_BUFFER_XLA_FLAGS
            applied["xla_flags"] = COMMAND_BUFFER_XLA_FLAGS
    applied["compilation_cache_dir"] = compilation_cache_dir()
    if getattr(args, "model", "stm") == "stm":
        config = dict(getattr(args, "stm_config", None) or {})
        if "unroll" not in config:
            config["unroll"] = True
            args.stm_config = config
            applied["unroll"] = True
    return applied


def _compile_threads(value):
    """`--compile-threads`: "auto" or an integer >= 0."""
    if value == "auto":
        return value
    try:
        threads = int(value)
    except ValueError:
        threads = -1
    if threads < 0:
        raise argparse.ArgumentTypeError(f"expected auto or an integer >= 0, got {value!r}")
    return threads


def _resolve_compile_threads(args, applied):
    """`--compile-threads` as a count: "auto" is half the cores (at most 8) where
    `--speed-settings auto` applied something (a jax GPU), else 0. Under jax, a count above 0
    turns the persistent compilation cache on now, before the first compilation, and is
    recorded in `applied`."""
    threads = args.compile_threads
    if threads == "auto":
        threads = max(1, min(8, (os.cpu_count() or 2) // 2)) if applied else 0
    if threads and keras.backend.backend() == "jax":
        applied["compilation_cache_dir"] = compilation_cache_dir()
        applied["compile_threads"] = threads
    return threads


def compilation_cache_dir():
    """Turns on jax's persistent compilation cache; returns its folder.

    The folder is `JAX_COMPILATION_CACHE_DIR` (or jax's `jax_compilation_cache_dir` option) when
    set, else `$XDG_CACHE_HOME/keras_stm/jax` (`~/.cache/keras_stm/jax`). Called by
    `apply_speed_settings` for jax GPU runs; the cache only saves compilation time.

    Returns:
        str: the cache folder.
    """
    import jax

    path = jax.config.jax_compilation_cache_dir
    if not path:
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(home, "keras_stm", "jax")
        jax.config.update("jax_compilation_cache_dir", path)
    return path


def _explicit_flags(parser, argv):
    """The destinations of the flags given on the command line (not left at their default)."""
    unset = object()
    dests = {action.dest for action in parser._actions if action.dest is not argparse.SUPPRESS}
    probe = argparse.Namespace(**{d: unset for d in dests}, _deprecation_probe=True)
    probe = parser.parse_args(argv, namespace=probe)
    return {key for key in dests if getattr(probe, key, unset) is not unset}


def _checked_hparam(parser, action, value, source):
    """An `--hparams` value checked (and converted) as its flag's command-line value would be."""
    flag = action.option_strings[-1] if action.option_strings else action.dest
    where = f"--hparams file {source}: {action.dest} ({flag})"
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            parser.error(f"{where} must be true or false, got {value!r}")
        return value
    if value is None:
        if action.default is not None and action.dest not in ("clip_value", "clip_norm"):
            parser.error(f"{where} must not be null (default {action.default!r})")
        return value
    if action.type in (int, float):
        if isinstance(value, str):
            try:
                value = action.type(value)
            except ValueError:
                parser.error(
                    f"{where} must be {'an integer' if action.type is int else 'a number'}"
                    f", got {value!r}"
                )
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            parser.error(
                f"{where} must be {'an integer' if action.type is int else 'a number'}, "
                f"got {value!r}"
            )
        elif action.type is int and not float(value).is_integer():
            parser.error(f"{where} must be an integer, got {value!r}")
        else:
            value = action.type(value)
    elif action.type is not None and isinstance(value, str):
        try:
            value = action.type(value)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            parser.error(f"{where}: {error}")
    elif (
        action.type is None
        and action.choices is None
        and not isinstance(value, (str, int, float, dict, list))
    ):
        parser.error(f"{where} has an unusable value {value!r}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{where} must be one of {list(action.choices)}, got {value!r}")
    return value


def enable_data_parallel():
    """Replicate the model over all local accelerators and split each batch (`keras.distribution`).

    Works under the jax backend (the only Keras backend with a working `keras.distribution`
    in Keras 3.15); elsewhere it raises a ValueError explaining the alternatives.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            "--data-parallel uses keras.distribution, which Keras 3.15 implements for the jax "
            "backend only; under tensorflow use tf.distribute.MirroredStrategy, under torch "
            "torch.nn.parallel.DistributedDataParallel (see docs/scaling.md)."
        )
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return devices


def _json_object(text):
    """`argparse` type of `--stm-config`: a JSON object given as text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def check_stm_config_applied(model, args):
    """Raises unless every `--stm-config` value is the value of the model's STM layers.

    A script that builds its STM without `task_configs.model_config_from_args` would
    otherwise train another model than the flags say (e.g. a tuned `--hparams` file).

    Args:
        model: the `keras.Model` about to be trained.
        args: the parsed flags (`args.stm_config`: dict or None).

    Raises:
        ValueError: if `--stm-config` is set and the model has no STM layer, or one of them
            has another value for one of its keys.
    """
    wanted = getattr(args, "stm_config", None)
    if not wanted or getattr(args, "model", "stm") != "stm":
        return
    from keras_stm.layers.stm import stm_layers

    found = stm_layers(model)
    if not found:
        raise ValueError(f"--stm-config {wanted} was given but the model has no STM layer.")
    for layer in found:
        config = layer.get_config()
        for key, value in wanted.items():
            if key == "loop":  # how the loop runs: not saved in the config (like `use_cudnn`)
                continue
            actual = config.get(key, "<not an STM argument>")
            numbers = [
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, actual)
            ]
            same = float(actual) == float(value) if all(numbers) else actual == value
            if not same:
                raise ValueError(
                    f"--stm-config sets {key}={value!r} but the model's STM layer "
                    f"{layer.name!r} has {key}={actual!r}: this script does not apply "
                    f"--stm-config (it must build its STM arguments with "
                    f"keras_stm.experiments.models.task_configs.model_config_from_args)."
                )


def make_optimizer(args):
    """The optimiser of the flags, with the gradient clipping.

    `"rmsprop"` is `keras_stm.TorchRMSprop` (the authors' PyTorch update, epsilon after the
    square root); `"adam"` is `keras.optimizers.Adam`, which trains along the authors' Adam
    losses (tests/test_training_parity.py).
    """
    clip = {}
    if args.clip_value is not None:
        clip["clipvalue"] = args.clip_value
    if args.clip_norm is not None:
        clip["global_clipnorm"] = args.clip_norm
    if args.optimizer == "rmsprop":
        # The authors' update (torch: epsilon after the square root), not Keras' RMSprop.
        return TorchRMSprop(
            learning_rate=args.learning_rate,
            rho=args.rmsprop_rho,
            momentum=args.momentum,
            epsilon=1e-8,
            **clip,
        )
    return keras.optimizers.Adam(
        learning_rate=args.learning_rate, beta_2=args.adam_beta_2, epsilon=1e-8, **clip
    )


def backend_dataset(dataset, repeat=False):
    """`dataset` in the form this backend's `fit` and `predict` take it.

    A `keras.utils.PyDataset` whose batches differ in shape beyond the batch axis declares it
    with a true `varying_shapes` attribute (bAbI's tasks differ in story and sentence length).
    Under jax and torch it is returned as is. Under tensorflow, Keras fixes a PyDataset's
    signature from its first two batches and stops at a later batch of another shape; there
    the batches are served by a `tf.data.Dataset` whose signature leaves every dimension open.
    Any other dataset is returned as is.

    Args:
        dataset: the dataset.
        repeat: bool. True: `len(dataset)` batches a pass, passes without end, `dataset.epoch`
            advanced after each (for `fit` with `steps_per_epoch=len(dataset)`, whose
            callbacks keep `epoch` in step); False: one pass (for `evaluate`, `predict` and
            validation data).

    Returns:
        `dataset`, or a `tf.data.Dataset` of its batches.
    """
    if keras.backend.backend() != "tensorflow" or not getattr(dataset, "varying_shapes", False):
        return dataset
    import tensorflow as tf

    signature = keras.tree.map_structure(
        lambda a: tf.TensorSpec((None,) * np.ndim(a), tf.as_dtype(np.asarray(a).dtype)),
        dataset[0],
    )

    def batches():
        while True:
            epoch = getattr(dataset, "epoch", None)
            for index in range(len(dataset)):
                yield dataset[index]
            if not repeat:
                return
            if epoch is not None:
                dataset.epoch = epoch + 1

    return tf.data.Dataset.from_generator(batches, output_signature=signature)


def jit_compile(args):
    return {"auto": "auto", "true": True, "false": False}[args.jit_compile]


def _git_commit():
    """`(commit, dirty)` of the git checkout keras_stm is imported from, or `(None, None)`.

    Only a checkout whose top folder holds the `keras_stm` package counts (an installed wheel,
    or a virtual environment inside some other repository, gives None). `dirty` is whether
    tracked files differ from the commit.
    """
    import subprocess

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # keras_stm/
    root = os.path.dirname(package)

    def git(*arguments):
        done = subprocess.run(
            ["git", "-C", root, *arguments], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel")) != os.path.realpath(root):
            return None, None
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except Exception:  # no git, not a checkout, no commit yet, a timeout
        return None, None
    return commit, dirty


def environment():
    """Versions, code and device, recorded in every results file.

    Returns:
        dict with `backend`, the versions of `keras_stm`, `keras`, `python`, `numpy` and the
        backend's library, `git_commit` (the commit of the keras-stm checkout the code was
        imported from, None for an installed package), `git_dirty` (whether tracked files had
        uncommitted changes, None without a commit) and `device`.
    """
    import keras_stm

    commit, dirty = _git_commit()
    info = {
        "backend": keras.backend.backend(),
        "keras_stm": keras_stm.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            info["jax"] = jax.__version__
            info["device"] = str(jax.devices()[0].device_kind)
        elif backend == "torch":
            import torch

            info["torch"] = torch.__version__
            info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        else:
            import tensorflow as tf

            info["tensorflow"] = tf.__version__
            gpus = tf.config.list_physical_devices("GPU")
            info["device"] = gpus[0].name if gpus else "cpu"
    except Exception as error:  # recording versions must never stop a run
        info["device"] = f"unknown ({error})"
    return info


def progress_verbosity(stream=None):
    """The `verbose` for Keras' `fit`: 1 (a live progress bar) on a terminal, else 2.

    Keras 3.15's progress bar (`verbose=1`) writes ANSI colour codes and backspaces whether or
    not its output is a terminal (it treats every POSIX system as one), so a log redirected to a
    file fills with escape sequences. `verbose=2` writes one plain line per epoch.

    Args:
        stream: the output to test (default `sys.stdout`).

    Returns:
        1 if `stream` is a terminal, else 2.

    Example:

    >>> import io
    >>> from keras_stm.experiments import training
    >>> training.progress_verbosity(io.StringIO())
    2
    """
    import sys

    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return 2


def plot_or_warn(plot, *args, **kwargs):
    """Call a plotting function; without matplotlib, warn and return None instead of failing.

    A training run writes its results before its figures, so a missing plotting package
    (`pip install "keras-stm[plots]"`) must not turn a finished run into an error.

    Args:
        plot: callable, e.g. `keras_stm.experiments.visualize.plot_history`.
        *args, **kwargs: its arguments.

    Returns:
        What `plot` returns, or None when matplotlib is missing.

    Raises:
        Exception: whatever `plot` raises, except the missing matplotlib.
    """
    try:
        return plot(*args, **kwargs)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "matplotlib":
            raise
        import warnings

        warnings.warn(
            f"{getattr(plot, '__name__', 'plot')} skipped: {error}", RuntimeWarning, stacklevel=2
        )
        return None


def _best_so_far(history_path, monitor, mode):
    """Best value of `monitor` in an earlier session's history, so a resumed run's
    `best.keras` is only replaced by a better model."""
    if not os.path.exists(history_path):
        return None
    from keras_stm.experiments.visualize import read_history

    values = [v for v in read_history(history_path).get(monitor, []) if np.isfinite(v)]
    if not values:
        return None
    return float(min(values) if mode == "min" else max(values))


class RunFolderError(RuntimeError):
    """A run's output folder cannot be used as it is: a damaged or missing checkpoint, history,
    metadata or `best.keras` file, or a folder locked by another running process. The message
    names the file and the way out (often `--fresh`, which starts the run over)."""


_FRESH_HINT = (
    "restore it, or start the run over with --fresh (which deletes the checkpoints, "
    "history.csv, timer.json and best.keras of {out})"
)


def _write_atomically(path, write):
    """Writes a file through a temporary file in the same folder, synced, then renamed over
    `path`: a reader (or a run killed mid-write) sees the old file or the new one, never half."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_json(path, value):
    _write_atomically(path, lambda f: json.dump(value, f))


def _read_json(path, out, what):
    """The JSON object in `path`, or a `RunFolderError` naming the file.

    Args:
        path: str, the file (it must exist).
        out: str, the run's output folder (for the message).
        what: str, what the file holds (for the message).

    Raises:
        RunFolderError: if the file cannot be read or is not a JSON object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFolderError(
            f"The {what} {path} is unreadable ({error}): " + _FRESH_HINT.format(out=out) + "."
        ) from None
    if not isinstance(value, dict):
        raise RunFolderError(
            f"The {what} {path} is not a JSON object (got {value!r}): "
            + _FRESH_HINT.format(out=out)
            + "."
        )
    return value


_OPTIMIZER_SKIPPED = re.compile(
    r"Skipping variable loading for optimizer .*has (\d+) variables "
    r"whereas the saved optimizer has (\d+) variables"
)
"""Keras' warning when a checkpoint's optimizer state does not fit the model's optimizer."""


class _Checkpoints(keras.callbacks.Callback):
    """Resumable training state: the weights (optimizer included) of the last two epochs.

    Each epoch's weights go to `backup/epoch-NNNNNN.weights.h5` through a temporary file that is
    synced and renamed; then `backup/training_metadata.json` (also written through a temporary
    file) records the newest and the previous checkpoint, with each file's size and SHA-256.
    A run killed at any moment therefore leaves the metadata pointing to complete files.
    `restore` verifies the newest checkpoint (size, SHA-256, loading) and falls back to the
    previous one (one epoch trained again, with a warning); if none is usable while the
    metadata says training had progressed, it raises instead of starting from fresh weights.
    Folders written by Keras' `BackupAndRestore` (`latest.weights.h5`, `.bkp` copies) are
    read too. A checkpoint whose optimizer state does not fit the model's optimizer (e.g. one
    written before unused STM weights were removed) resumes with its weights and a fresh
    optimizer, with a warning naming it; `optimizer_restarts` records it (kept in the metadata
    across resumes, and in `results.json`).

    Training state beyond the weights (e.g. a curriculum's stage) is kept by the `resumable`
    callbacks: each checkpoint's entry in the metadata holds `"state": {state_name:
    get_state()}` of them, taken when the checkpoint is written, and `restore` hands each the
    state of the checkpoint it loads (`set_state`), so a fallback to the previous checkpoint
    also goes back to its state.

    Args:
        backup_dir: str, the checkpoint folder.
        out: str, the run's output folder (for messages).
        keep: int, checkpoints kept. Defaults to 2.
        resumable: callbacks with a `state_name` (str), `get_state()` (a JSON value) and
            `set_state(state)` (raising `ValueError` on a state it cannot take). Defaults to
            none.
    """

    def __init__(self, backup_dir, out, keep=2, resumable=()):
        super().__init__()
        self.backup_dir = backup_dir
        self.out = out
        self.keep = keep
        self.resumable = {callback.state_name: callback for callback in resumable}
        self.metadata_path = os.path.join(backup_dir, "training_metadata.json")
        self.checkpoints = []  # newest first: {"epoch", "weights", "bytes", "sha256"}
        self.optimizer_restarts = []  # resumes whose optimizer state was not restored
        self.optimizer_restarted = False  # this process's resume restarted the optimizer
        self._optimizer_mismatch = None  # set by `_problem` for the checkpoint it loaded

    def _entries(self, metadata):
        """The checkpoints the metadata lists, newest first."""
        if "checkpoints" in metadata:
            entries = metadata["checkpoints"]
            valid = (
                isinstance(entries, list)
                and entries
                and all(
                    isinstance(e, dict)
                    and isinstance(e.get("epoch"), int)
                    and e["epoch"] >= 0
                    and isinstance(e.get("weights"), str)
                    and os.path.basename(e["weights"]) == e["weights"]
                    for e in entries
                )
            )
        else:  # a Keras BackupAndRestore folder: latest.weights.h5 (+ latest.weights.h5.bkp)
            valid = isinstance(metadata.get("epoch"), int) and metadata["epoch"] >= 0
            entries = [{"epoch": metadata.get("epoch"), "weights": "latest.weights.h5"}]
            previous = self.metadata_path + ".bkp"
            if valid and os.path.exists(previous):
                try:
                    with open(previous, encoding="utf-8") as f:
                        epoch = json.load(f)["epoch"]
                    entries.append({"epoch": int(epoch), "weights": "latest.weights.h5.bkp"})
                except (OSError, ValueError, KeyError, TypeError):
                    pass
        if not valid:
            raise RunFolderError(
                f"The checkpoint metadata {self.metadata_path} does not list its checkpoints "
                f"(got {metadata!r}): " + _FRESH_HINT.format(out=self.out) + "."
            )
        return entries

    def _problem(self, entry):
        """Why the checkpoint of `entry` cannot be used, or None (then it is loaded).

        A checkpoint whose optimizer variables do not fit the model's optimizer (Keras then
        loads the model weights, skips the optimizer's with a warning and keeps it fresh) is
        usable: the mismatch is kept in `_optimizer_mismatch` for `restore` to report.
        """
        self._optimizer_mismatch = None
        path = os.path.join(self.backup_dir, entry["weights"])
        if not os.path.exists(path):
            return "is missing"
        size = os.path.getsize(path)
        if entry.get("bytes") is not None and size != entry["bytes"]:
            return (
                f"has {size} bytes where {entry['bytes']} were written (truncated or changed since)"
            )
        if entry.get("sha256") is not None and file_sha256(path) != entry["sha256"]:
            return "does not match the SHA-256 recorded when it was written (changed since)"
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables are saved too
        # Keras' loader wants a `.weights.h5` name; Keras' `.bkp` copies are read through a link.
        target = path
        if not path.endswith(".weights.h5"):
            target = os.path.join(self.backup_dir, f"restore-{os.getpid()}.weights.h5")
            if os.path.lexists(target):
                os.remove(target)
            os.symlink(os.path.abspath(path), target)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.load_weights(target)
        except Exception as error:  # h5py's OSError, Keras' ValueError on mismatched variables
            return f"cannot be loaded ({type(error).__name__}: {error})"
        finally:
            if target != path:
                os.remove(target)
        for caught_warning in caught:  # Keras' own, passed on, except the optimizer's (below)
            mismatch = _OPTIMIZER_SKIPPED.search(str(caught_warning.message))
            if mismatch and model.optimizer is not None:
                self._optimizer_mismatch = {
                    "optimizer": type(model.optimizer).__name__,
                    "optimizer_variables": int(mismatch.group(1)),
                    "saved_variables": int(mismatch.group(2)),
                }
                continue
            warnings.warn_explicit(
                caught_warning.message,
                caught_warning.category,
                caught_warning.filename,
                caught_warning.lineno,
                source=caught_warning.source,
            )
        return None

    def _record_optimizer_restart(self, path, epoch):
        """Our warning, and a record for `results.json`, when Keras skipped the optimizer state."""
        mismatch = self._optimizer_mismatch
        if mismatch is None:
            return
        self.optimizer_restarted = True
        self.optimizer_restarts.append({"checkpoint": path, "epoch": int(epoch), **mismatch})
        warnings.warn(
            f"Resumed {path} (epoch {epoch}) with its model weights but without its optimizer "
            f"state: the checkpoint holds {mismatch['saved_variables']} optimizer variables and "
            f"the model's optimizer ({mismatch['optimizer']}) has "
            f"{mismatch['optimizer_variables']}, so Keras skipped them (e.g. a checkpoint written "
            "before unused STM weights were removed, or with another optimizer). The optimizer "
            "restarts from scratch: its moments and its iteration count (and any learning-rate "
            "schedule following it) are reset. Recorded in results.json (optimizer_restarts).",
            RuntimeWarning,
            stacklevel=3,
        )

    def restore(self, model):
        """Load the newest usable checkpoint into `model`; returns the epoch to resume at.

        Returns:
            int: 0 without a checkpoint, else the number of epochs the loaded weights trained.

        Raises:
            RunFolderError: if the metadata is unreadable, or lists checkpoints none of which
                is usable (missing, truncated, changed or not loadable).
        """
        self.set_model(model)
        for leftover in glob.glob(os.path.join(self.backup_dir, "*.tmp*")):
            os.remove(leftover)  # a write killed before its rename: the metadata never named it
        if not os.path.exists(self.metadata_path):
            return 0  # nothing recorded: no epoch finished (an orphaned weights file is unused)
        metadata = _read_json(self.metadata_path, self.out, "checkpoint metadata")
        entries = self._entries(metadata)
        if not getattr(model, "built", False):
            raise RunFolderError(
                f"{self.metadata_path} records a checkpoint, but the model is not built: build "
                "it (call it on a batch) before `run`, or start over with --fresh."
            )
        problems = []
        for index, entry in enumerate(entries):
            problem = self._problem(entry)
            path = os.path.join(self.backup_dir, entry["weights"])
            if problem is None:
                if problems:
                    warnings.warn(
                        f"Checkpoint {problems[0]}; resuming from the previous checkpoint {path} "
                        f"(epoch {entry['epoch']}), so {entries[0]['epoch'] - entry['epoch']} "
                        "epoch(s) are trained again.",
                        stacklevel=2,
                    )
                self.checkpoints = [e for e in entries[index:] if "bytes" in e][: self.keep]
                earlier = metadata.get("optimizer_restarts")
                self.optimizer_restarts = list(earlier) if isinstance(earlier, list) else []
                self._record_optimizer_restart(path, entry["epoch"])
                self._restore_state(entry, path)
                return int(entry["epoch"])
            problems.append(f"{path} {problem}")
        raise RunFolderError(
            f"Cannot resume the run in {self.out}: {self.metadata_path} says "
            f"{entries[0]['epoch']} epoch(s) were trained, but no checkpoint is usable ("
            + "; ".join(problems)
            + "). Training from fresh weights would silently restart it: "
            "restore the checkpoint, or start over with --fresh (which deletes the checkpoints, "
            "history.csv, timer.json and best.keras)."
        )

    def _restore_state(self, entry, path):
        """Hands each resumable callback its state saved with the checkpoint of `entry`.

        Raises:
            RunFolderError: when the checkpoint's states and the resumable callbacks differ (a
                run resumed with other flags than it was started with), or a callback refuses
                its state.
        """
        state = entry.get("state", {})
        if not isinstance(state, dict):
            raise RunFolderError(
                f"The checkpoint metadata {self.metadata_path} holds a state of {path} that is "
                f"not a JSON object ({state!r}): " + _FRESH_HINT.format(out=self.out) + "."
            )
        unknown = sorted(set(state) - set(self.resumable))
        missing = sorted(set(self.resumable) - set(state))
        if unknown or missing:
            held = f"holds the training state {unknown}" if unknown else "holds no training state"
            raise RunFolderError(
                f"The checkpoint {path} (epoch {entry['epoch']}) {held} where this run keeps "
                f"{sorted(self.resumable)}: the run was started with other flags (e.g. with or "
                "without --dims-curriculum). Resume it with the flags it was started with, or "
                "start over with --fresh."
            )
        for name, callback in self.resumable.items():
            try:
                callback.set_state(state[name])
            except ValueError as error:
                raise RunFolderError(
                    f"The checkpoint {path} (epoch {entry['epoch']}) holds a {name} state this "
                    f"run cannot take ({error}). Resume it with the flags it was started with, "
                    "or start over with --fresh."
                ) from None

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{epoch + 1:06d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        tmp = os.path.join(self.backup_dir, f"epoch-{epoch + 1:06d}.tmp{os.getpid()}.weights.h5")
        self.model.save_weights(tmp, overwrite=True)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        entry = {
            "epoch": epoch + 1,
            "weights": name,
            "bytes": os.path.getsize(tmp),
            "sha256": file_sha256(tmp),
        }
        if self.resumable:
            entry["state"] = {name: c.get_state() for name, c in self.resumable.items()}
        os.replace(tmp, path)
        self.checkpoints = [entry] + [e for e in self.checkpoints if e["weights"] != name][
            : self.keep - 1
        ]
        _write_json(
            self.metadata_path,
            {
                "epoch": epoch + 1,
                "batch": 0,
                "format": 2,
                "checkpoints": self.checkpoints,
                "optimizer_restarts": self.optimizer_restarts,
            },
        )
        kept = {e["weights"] for e in self.checkpoints}
        for stale in glob.glob(os.path.join(self.backup_dir, "*.weights.h5*")):
            if os.path.basename(stale) not in kept:
                os.remove(stale)
        stale_metadata = self.metadata_path + ".bkp"
        if os.path.exists(stale_metadata):
            os.remove(stale_metadata)


def _check_keras_archive(path, out):
    """Raises `RunFolderError` unless `path` (a `.keras` file) is a complete zip archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        reason = f"{type(error).__name__}: {error}"
    else:
        reason = (
            f"member {bad} fails its CRC check"
            if bad is not None
            else None
            if "config.json" in names
            else "no config.json in the archive"
        )
    if reason is not None:
        raise RunFolderError(
            f"The best model {path} is not a readable .keras archive ({reason}). Delete it (the "
            f"run keeps training from its checkpoint and writes {os.path.basename(path)} again at "
            f"its next best epoch), or start over with --fresh."
        )


class _BestModel(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint(save_best_only=True)` that writes the best model to a temporary file
    and renames it over `filepath`, so a run killed mid-write keeps the previous best model."""

    def __init__(self, filepath, **kwargs):
        self.final_path = filepath
        stem, extension = os.path.splitext(filepath)
        super().__init__(f"{stem}.incomplete{extension}", save_best_only=True, **kwargs)

    def on_train_begin(self, logs=None):
        if os.path.exists(self.filepath):
            os.remove(self.filepath)
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if os.path.exists(self.filepath):
            os.replace(self.filepath, self.final_path)


def _repair_history(path, resume_epoch):
    """Make `history.csv` agree with the checkpoint the run resumes from.

    A row cut by a kill (no line end) is dropped, and so are the last rows of epochs at or
    after `resume_epoch` (trained again when the run fell back to an earlier checkpoint, or
    logged after the checkpoint the run restarted from); each repair is a warning naming the
    file.

    Raises:
        RunFolderError: if the file has no readable header.
    """
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RunFolderError(
            f"The learning curve {path} is not UTF-8 text ({error}): repair or "
            "delete it, or start over with --fresh."
        ) from None
    lines = text.splitlines(keepends=True)
    repairs = []
    if lines and not lines[-1].endswith("\n"):
        repairs.append(f"dropped a row cut mid-write ({lines[-1].strip()!r})")
        lines = lines[:-1]
    if not lines:
        os.remove(path)
        return
    header = next(csv.reader([lines[0]]))
    if "epoch" not in header:
        raise RunFolderError(
            f"The learning curve {path} has no 'epoch' column (header "
            f"{lines[0].strip()!r}): repair or delete it, or start over with --fresh."
        )
    column = header.index("epoch")
    dropped = 0
    while len(lines) > 1:
        row = next(csv.reader([lines[-1]]))
        try:
            epoch = int(float(row[column]))
        except (IndexError, ValueError):
            epoch = None
        if epoch is not None and epoch < resume_epoch:
            break
        lines.pop()
        dropped += 1
    if dropped:
        repairs.append(
            f"dropped {dropped} row(s) of epochs not in the checkpoint resumed at "
            f"epoch {resume_epoch}"
        )
    if repairs:
        warnings.warn(f"Repaired {path}: " + "; ".join(repairs) + ".", stacklevel=2)
        _write_atomically(path, lambda f: f.write("".join(lines)))


LOCK_NAME = "run.lock"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _lock_output_dir(out):
    """Take `<out>/run.lock` (pid and host) for this process; returns its path.

    A lock left by a process that is no longer running (killed) is taken over with a warning.

    Raises:
        RunFolderError: if another running process holds the lock.
    """
    path = os.path.join(out, LOCK_NAME)
    record = json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as f:
                    holder = json.load(f)
                pid = int(holder["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid = None, None  # half-written by a killed process: stale
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                raise RunFolderError(
                    f"The output folder {out} is in use by process {pid} on "
                    f"{holder.get('host', '?')} (lock file {path}, since "
                    f"{holder.get('started', '?')}): wait for it to finish, or use another "
                    f"--output-dir. If no such process runs there, delete {path}."
                ) from None
            warnings.warn(
                f"Taking over the stale lock {path} "
                f"({'of process ' + str(pid) if pid else 'unreadable'}, "
                "no longer running).",
                stacklevel=2,
            )
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return path
    raise RunFolderError(f"Could not take the lock {path}: another process keeps taking it.")


def _unlock_output_dir(path):
    try:
        with open(path, encoding="utf-8") as f:
            mine = json.load(f).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        mine = False
    if mine:
        os.remove(path)


def format_duration(seconds):
    """`H:MM:SS` (with days, `D d H:MM:SS`, past 24 hours) of a number of seconds.

    Example:

    >>> from keras_stm.experiments import training
    >>> training.format_duration(3725.4), training.format_duration(90061)
    ('1:02:05', '1 d 1:01:01')
    """
    seconds = max(0, int(round(seconds)))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    text = f"{hours}:{seconds // 60:02d}:{seconds % 60:02d}"
    return f"{days} d {text}" if days else text


def progress_line(done, total, elapsed, seconds_per_step, unit="iterations", budget_left=None):
    """One line of a whole run's progress: position, percent, time so far and an ETA.

    Args:
        done, total: int, units done and planned (iterations, frames, ...).
        elapsed: float, training seconds so far (all sessions of the run).
        seconds_per_step: float or None, mean seconds per unit of this session (None: no
            estimate yet).
        unit: str, what is counted.
        budget_left: float or None, seconds left of `--max-minutes` in this session.

    Returns:
        str, e.g. `"run: 4,000/1,000,000 iterations (0.4%), 0:01:05 elapsed, ETA 4:30:12"`.

    Example:

    >>> from keras_stm.experiments import training
    >>> training.progress_line(400, 1000, 60.0, 0.15)
    'run: 400/1,000 iterations (40.0%), 0:01:00 elapsed, ETA 0:01:30'
    """
    percent = 100.0 * done / max(total, 1)
    line = f"run: {done:,}/{total:,} {unit} ({percent:.1f}%), {format_duration(elapsed)} elapsed"
    if seconds_per_step is None or done >= total:
        return line + (", done" if done >= total else "")
    remaining = (total - done) * seconds_per_step
    line += f", ETA {format_duration(remaining)}"
    if budget_left is not None and budget_left < remaining:
        line += (
            f" (--max-minutes stops this session in about "
            f"{format_duration(max(budget_left, 0.0))}; the same command resumes)"
        )
    return line


class _RunProgress(keras.callbacks.Callback):
    """One line per epoch on the whole run: iterations done of the total, percent, training time
    so far and an ETA from this session's mean epoch time (and when `--max-minutes` stops it).

    The line of an epoch is printed when the next epoch begins (or training ends), so that it
    never cuts into the line of Keras' progress bar.

    Args:
        total_epochs: int, the run's epochs.
        steps_per_epoch: int, training batches per epoch.
        timer: the run's `_Timer` (training seconds of all sessions).
        budget_seconds: float or None, `--max-minutes` in seconds.
    """

    def __init__(self, total_epochs, steps_per_epoch, timer, budget_seconds=None):
        super().__init__()
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.timer = timer
        self.budget_seconds = budget_seconds
        self._pending = None

    def on_train_begin(self, logs=None):
        self._session_start = time.perf_counter()
        self._session_epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._flush()

    def on_epoch_end(self, epoch, logs=None):
        self._session_epochs += 1
        session = time.perf_counter() - self._session_start
        per_step = session / (self._session_epochs * self.steps_per_epoch)
        budget_left = None if self.budget_seconds is None else self.budget_seconds - session
        self._pending = progress_line(
            (epoch + 1) * self.steps_per_epoch,
            self.total_epochs * self.steps_per_epoch,
            self.timer.elapsed,
            per_step,
            budget_left=budget_left,
        )

    def on_train_end(self, logs=None):
        self._flush()

    def _flush(self):
        if self._pending is not None:
            print(self._pending, flush=True)
            self._pending = None


class _DataEpoch(keras.callbacks.Callback):
    """Keeps a seeded task stream's epoch equal to fit's epoch, so a resumed run draws the data
    of the epoch it resumes at instead of replaying epoch 0."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch, logs=None):
        if hasattr(self.data, "epoch"):
            self.data.epoch = epoch


class LearningRateWarmup(keras.callbacks.Callback):
    """Ramps the optimizer's learning rate linearly from `1 / steps` of its value to its value
    over the first `steps` training steps of `fit`.

    `run` adds it when the optimizer starts with empty moments on trained weights
    (`--initial-weights`, or a checkpoint whose optimizer state could not be restored): the
    first steps of RMSprop (and, less so, Adam) from an empty state are the largest, and would
    shake weights that were already trained.

    Args:
        steps: int, the number of warm-up steps (positive).

    Example:

    >>> model.fit(data, callbacks=[LearningRateWarmup(100)])  # doctest: +SKIP
    """

    def __init__(self, steps):
        super().__init__()
        if not isinstance(steps, int) or steps <= 0:
            raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
        self.steps = steps
        self.target = None
        self.step = 0

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        try:  # a schedule's rate cannot be set
            optimizer.learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except TypeError as error:
            raise ValueError(
                "LearningRateWarmup needs a constant learning rate, not a schedule (pass "
                f"--warmup-steps 0): {error}"
            ) from None
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.step == 0:  # the rate in force once every callback has begun its epoch
            self.target = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self.step < self.steps:
            self.model.optimizer.learning_rate = self.target * (self.step + 1) / self.steps
        elif self.step == self.steps:
            self.model.optimizer.learning_rate = self.target
        self.step += 1


def learning_rate_warmup(args, fresh_moments):
    """The `LearningRateWarmup` of `--warmup-steps` when the optimizer starts with empty
    moments on trained weights (`fresh_moments`), else None."""
    steps = getattr(args, "warmup_steps", 0)
    return LearningRateWarmup(steps) if fresh_moments and steps > 0 else None


def _distinct_batches(datasets, limit=5000):
    """The first batch of each distinct shape among `datasets` (`PyDataset`s), in order.

    Batches are read by index (the task datasets make batch `i` of an epoch the same whatever
    the order of reading, so reading them here changes nothing in training); at most `limit`
    of each dataset. Anything that is not an indexable dataset (arrays, generators, None) is
    skipped.
    """
    seen = {}
    for dataset in datasets:
        if not isinstance(dataset, keras.utils.PyDataset):
            continue
        for index in range(min(len(dataset), limit)):
            batch = dataset[index]
            key = (
                str(keras.tree.map_structure(lambda a: None, batch)),
                tuple((np.shape(a), np.asarray(a).dtype.str) for a in keras.tree.flatten(batch)),
            )
            seen.setdefault(key, batch)
    return list(seen.values())


class _Precompile(keras.callbacks.Callback):
    """Compiles every input shape's training, validation and test program before the first
    step, `threads` at a time, into jax's persistent compilation cache (`--compile-threads`).

    Keras compiles the program of a new input shape when the first batch of that shape comes,
    one after another; bAbI had 55 programs of several seconds each on a GPU (one shape per
    task; 16 with its shape buckets). Here, when training begins (Keras has built the
    optimizer and metrics), each distinct batch of the training data is lowered with the
    model's own `train_step`, of the validation and test data with `test_step` and of the data
    for `model.predict` with the prediction step, as Keras' jax trainer lowers them, and the
    lowered programs are compiled by a thread pool (XLA compiles without holding Python's
    lock). Keras' own first call of each shape then finds its executable in the cache (turned
    on by `parse_args`): same numbers, less waiting. jax only, and not under a
    `keras.distribution` (`--data-parallel`) or without a compilation cache; any failure
    here is a warning, and Keras compiles what is missing as usual.
    """

    def __init__(self, threads, train_data, validation_data=None, evaluation_data=(), verbose=1):
        super().__init__()
        self.threads = threads
        self.datasets = {"train": [train_data], "test": [validation_data], "predict": []}
        for kind, dataset in evaluation_data:
            self.datasets[kind].append(dataset)
        self.verbose = verbose
        self.report = None

    def on_train_begin(self, logs=None):
        if self.report is not None or keras.backend.backend() != "jax" or self.threads < 1:
            return
        if keras.distribution.distribution() is not None:
            # Keras compiles with the distribution's shardings, which these programs lack.
            self.report = {"threads": self.threads, "skipped": "a keras.distribution is set"}
            return
        import jax

        if not jax.config.jax_compilation_cache_dir:  # nowhere for fit to find them
            self.report = {"threads": self.threads, "skipped": "no compilation cache"}
            return
        start = time.perf_counter()
        try:
            count = self._compile_all()
        except Exception as error:  # an optimisation only: training goes on without it
            warnings.warn(
                f"--compile-threads: compiling ahead failed ({error!r}); Keras "
                "compiles each program when its shape first comes.",
                stacklevel=2,
            )
            self.report = {"threads": self.threads, "error": repr(error)}
            return
        seconds = time.perf_counter() - start
        self.report = {
            "threads": self.threads,
            "programs": count,
            "seconds": round(seconds, 1),
            "lowering_seconds": round(self.lower_seconds, 1),
        }
        if self.verbose and count:
            print(
                f"Compiled {count} programs ahead in {seconds:.1f} s ({self.threads} threads; "
                f"{self.lower_seconds:.1f} s of it tracing them)."
            )

    def _compile_all(self):
        from concurrent.futures import ThreadPoolExecutor

        import jax

        model = self.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        optimizer = [v.value for v in model.optimizer.variables]
        metrics = [v.value for v in model.metrics_variables]

        def predict_step(state, data):  # the wrapper of Keras' make_predict_function
            outputs, non_trainable_variables = model.predict_step(state, data)
            return outputs, (state[0], non_trainable_variables)

        steps = {
            "train": (
                jax.jit(model.train_step, donate_argnums=0),
                (trainable, non_trainable, optimizer, metrics),
            ),
            "test": (
                jax.jit(model.test_step, donate_argnums=0),
                (trainable, non_trainable, metrics),
            ),
            "predict": (jax.jit(predict_step, donate_argnums=0), (trainable, non_trainable)),
        }
        lowered = []
        start = time.perf_counter()
        for kind, datasets in self.datasets.items():
            step, state = steps[kind]
            # Lowering traces the model in Python: one at a time, in this thread.
            lowered += [step.lower(state, batch) for batch in _distinct_batches(datasets)]
        self.lower_seconds = time.perf_counter() - start
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(lambda program: program.compile(), lowered))
        return len(lowered)


class _TimeBudget(keras.callbacks.Callback):
    """Stops training at the end of the first epoch after `seconds` of training (this session)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() - self._start >= self.seconds:
            self.stopped_early = True
            self.model.stop_training = True


class _Timer(keras.callbacks.Callback):
    """Accumulates training time across sessions; adds `epoch_seconds` (the epoch's wall time,
    validation included) to the epoch's logs, so `history.csv` records it."""

    def __init__(self, state_path, out=None):
        super().__init__()
        self.state_path = state_path
        self.elapsed = 0.0
        if os.path.exists(state_path):
            state = _read_json(state_path, out or os.path.dirname(state_path), "training timer")
            self.elapsed = state.get("train_seconds", 0.0)
            if not isinstance(self.elapsed, (int, float)) or isinstance(self.elapsed, bool):
                raise RunFolderError(
                    f"The training timer {state_path} has train_seconds="
                    f"{self.elapsed!r}, not a number: "
                    + _FRESH_HINT.format(out=out or os.path.dirname(state_path))
                    + "."
                )

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.elapsed += seconds
        if logs is not None:
            logs["epoch_seconds"] = seconds
        _write_json(self.state_path, {"train_seconds": self.elapsed, "epochs_done": epoch + 1})


def load_weights_only(model, path, what):
    """Load a model's weights from `path`, leaving its optimizer out of it.

    A pretrained model carries no optimizer state, and a run's `best.keras` carries one that
    plays no part in a test: Keras' warning about skipped optimizer variables is silenced.

    Args:
        model: a built `keras.Model` of the same architecture.
        path: a `.keras` or `.weights.h5` file.
        what: how error messages name the file (e.g. `"--initial-weights"`).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: naming `what` and `path`, if the weights do not fit `model`.
    """
    import warnings

    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path}: no such file.")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(path)
    except ValueError as error:
        raise ValueError(f"{what} {path} does not fit this script's model: {error}") from None


def evaluate_pretrained(model, args, evaluate, name):
    """`--evaluate`: the test figures of a pretrained model, through the script's own test.

    The pretrained weights are loaded into the script's compiled model (same architecture),
    then `evaluate(model)` runs with the pretrained folder as `args.output_dir` (so its
    `history.csv` is the one read; nothing is written).

    Args:
        model: the script's compiled model.
        args: the parsed flags (`evaluate`: a name, a folder or "auto").
        evaluate: the script's test callable `(model) -> dict`.
        name: the pretrained name used for `--evaluate` without a value.

    Returns:
        dict: `{"pretrained": folder, "test": scores, "recorded": results.json's test}`.
    """
    from keras_stm.experiments import pretrained

    folder = pretrained.resolve(name if args.evaluate == "auto" else args.evaluate)
    recorded = pretrained.read_results(folder)
    load_weights_only(
        model,
        os.path.join(folder, pretrained.MODEL_FILE),
        f"--evaluate: the pretrained model of {folder} (flags {recorded.get('flags')}),",
    )
    args.output_dir = folder
    scores = {k: float(v) for k, v in evaluate(model).items()} if evaluate else {}
    report = {"pretrained": folder, "test": scores, "recorded": recorded.get("test")}
    print(json.dumps(report))
    return report


def run(
    model,
    train_data,
    args,
    validation_data=None,
    evaluate=None,
    monitor="val_loss",
    mode="min",
    extra_results=None,
    extra_callbacks=(),
    pretrained_name=None,
    evaluation_data=(),
    resumable_callbacks=(),
):
    """Fit with resumable checkpoints, then evaluate and write results and the learning curve.

    Args:
        model: a compiled `keras.Model`.
        train_data: a `keras.utils.PyDataset` (or anything `fit` takes), `args.steps_per_epoch`
            batches per epoch.
        args: the parsed flags.
        validation_data: optional data evaluated after every epoch.
        evaluate: optional callable `(model) -> dict` computing the task's test metrics.
        monitor, mode: the quantity deciding the best checkpoint (`best.keras`).
        extra_results: dict merged into `results.json` (e.g. the task configuration).
        extra_callbacks: more Keras callbacks.
        pretrained_name: the name under `pretrained/` of this task's model, evaluated by
            `--evaluate` without a value (default `args.task`).
        evaluation_data: `(kind, dataset)` pairs of the data that `evaluate` passes to
            `model.evaluate` (kind "test") or `model.predict` ("predict"), whose programs
            `--compile-threads` compiles ahead with the training and validation ones.
        resumable_callbacks: Keras callbacks that keep training state of their own (e.g. a
            curriculum's stage), each with a `state_name` (str), `get_state()` (a JSON value)
            and `set_state(state)` (raising `ValueError` on a state it cannot take). Each one's
            state is saved with every checkpoint (in `backup/training_metadata.json`, written
            atomically after the weights) and restored from the checkpoint the run resumes
            from; a checkpoint without it (or with others) stops the run with a
            `RunFolderError`. They come first in the callback list, so that at an epoch's end
            they act (and add to the logs that `history.csv` records) before the checkpoint
            is written.

    Returns:
        The results dict (also written to `<output_dir>/results.json`); with `--evaluate`,
        the report of `evaluate_pretrained` (nothing is trained or written).

    Raises:
        RunFolderError: before training, if the output folder is locked by another running
            process, or a checkpoint, its metadata, `timer.json`, `history.csv` or
            `best.keras` is unreadable (the message names the file and the way out).
    """
    from keras_stm.experiments import visualize

    if getattr(args, "evaluate", None):
        return evaluate_pretrained(model, args, evaluate, pretrained_name or args.task)
    check_stm_config_applied(model, args)
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    lock = _lock_output_dir(out)
    try:
        return _run_locked(
            model,
            train_data,
            args,
            visualize,
            validation_data,
            evaluate,
            monitor,
            mode,
            extra_results,
            extra_callbacks,
            evaluation_data,
            resumable_callbacks,
        )
    finally:
        _unlock_output_dir(lock)


def _run_locked(
    model,
    train_data,
    args,
    visualize,
    validation_data,
    evaluate,
    monitor,
    mode,
    extra_results,
    extra_callbacks,
    evaluation_data=(),
    resumable_callbacks=(),
):
    """`run`'s work, with the output folder locked."""
    out = args.output_dir
    backup_dir = os.path.join(out, "backup")
    history_path = os.path.join(out, "history.csv")
    timer_path = os.path.join(out, "timer.json")
    best_path = os.path.join(out, "best.keras")
    if args.fresh:
        import shutil

        shutil.rmtree(backup_dir, ignore_errors=True)
        for path in (history_path, timer_path, best_path):
            if os.path.exists(path):
                os.remove(path)
    epochs = max(1, args.iterations // args.steps_per_epoch)
    if validation_data is None and monitor.startswith("val_"):
        monitor = monitor[4:]
    # Everything is checked before training: a damaged file stops the run now, not after it.
    timer = _Timer(timer_path, out)
    if os.path.exists(best_path):
        _check_keras_archive(best_path, out)
    checkpoints = _Checkpoints(backup_dir, out, resumable=resumable_callbacks)
    initial_epoch = checkpoints.restore(model)
    initial_weights = getattr(args, "initial_weights", None)
    if initial_weights and initial_epoch == 0:
        load_weights_only(model, initial_weights, "--initial-weights")
    elif initial_weights:
        print(
            f"--initial-weights {initial_weights} ignored: resuming the checkpoint of {out} "
            f"at epoch {initial_epoch}."
        )
    _repair_history(history_path, initial_epoch)
    warmup = learning_rate_warmup(
        args, bool(initial_weights and initial_epoch == 0) or checkpoints.optimizer_restarted
    )
    budget = _TimeBudget(60.0 * args.max_minutes) if getattr(args, "max_minutes", None) else None
    precompile = _Precompile(
        getattr(args, "compile_threads", 0) or 0,
        train_data,
        validation_data,
        evaluation_data,
        verbose=args.verbose,
    )
    callbacks = [
        *resumable_callbacks,  # first: their epoch-end state goes into the checkpoint and logs
        checkpoints,  # the resumable state; kept after the run, so a finished run is not rerun
        _BestModel(
            best_path,
            monitor=monitor,
            mode=mode,
            initial_value_threshold=_best_so_far(history_path, monitor, mode),
        ),
        _DataEpoch(train_data),
        timer,  # before CSVLogger: it adds `epoch_seconds` to the logs
        keras.callbacks.CSVLogger(history_path, append=True),
        *([budget] if budget else []),
        *([warmup] if warmup else []),
        *extra_callbacks,
    ]
    if args.verbose:
        callbacks.append(
            _RunProgress(epochs, args.steps_per_epoch, timer, budget.seconds if budget else None)
        )
    # Last: its on_train_begin compiles ahead after --max-minutes and the progress line have
    # started their clocks, so the compilation counts against the session's time budget.
    callbacks.append(precompile)
    if hasattr(train_data, "epoch"):
        train_data.epoch = initial_epoch  # before any read-ahead of tensorflow's pipeline
    model.fit(
        backend_dataset(train_data, repeat=True),
        epochs=epochs,
        steps_per_epoch=args.steps_per_epoch,
        validation_data=backend_dataset(validation_data),
        callbacks=callbacks,
        verbose=args.verbose,
        initial_epoch=min(initial_epoch, epochs),
    )
    epochs_done = epochs
    if os.path.exists(timer_path):
        epochs_done = _read_json(timer_path, out, "training timer").get("epochs_done", epochs)
    results = {
        "task": args.task,
        "model": args.model,
        "iterations": epochs_done * args.steps_per_epoch,
        "iterations_planned": epochs * args.steps_per_epoch,
        "stopped_by_time_budget": bool(budget and budget.stopped_early),
        "batch_size": args.batch_size,
        "train_seconds": round(timer.elapsed, 2),
        "parameters": int(model.count_params()),
        "flags": {
            k: v
            for k, v in vars(args).items()
            if isinstance(v, (int, float, str, bool, type(None)))
        },
        "environment": environment(),
        "speed_settings": getattr(args, "speed_settings_applied", None),
        # resumes from a checkpoint whose optimizer state did not fit (restarted): normally []
        "optimizer_restarts": checkpoints.optimizer_restarts,
    }
    if warmup is not None:
        results["learning_rate_warmup_steps"] = warmup.steps
    if precompile.report is not None:
        results["compile_ahead"] = precompile.report
    if evaluate is not None:
        results["test"] = {k: float(v) for k, v in evaluate(model).items()}
    if extra_results:
        results.update(extra_results)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot_or_warn(
        visualize.plot_history,
        history_path,
        os.path.join(out, "learning_curve.png"),
        title=f"{args.task} ({args.model})",
    )
    print(json.dumps({"task": args.task, "model": args.model, **results.get("test", {})}))
    return results


def evaluate_best_checkpoint(args, test_data, extra_metrics=None):
    """The test protocol shared by the fresh-data tasks: the weights of `<output_dir>/best.keras`
    (if any) evaluated on `test_data`.

    Args:
        args: the parsed flags (for `output_dir`).
        test_data: the fixed-seed test set.
        extra_metrics: optional callable `(scores) -> dict` adding derived metrics.

    Returns:
        A callable `(model) -> dict` for `run(..., evaluate=...)`.
    """

    def evaluate(model):
        best = os.path.join(args.output_dir, "best.keras")
        if os.path.exists(best):
            model.load_weights(best)
        scores = model.evaluate(test_data, return_dict=True, verbose=0)
        if extra_metrics is not None:
            scores = {**scores, **extra_metrics(scores)}
        return scores

    return evaluate


def run_bit_error_task(args, task, data_module, sizes, data_record=None, pretrained_name=None):
    """Train and test a read-then-decode bit task (copy, priority sort, RAR) as the authors do.

    The model reads the inputs, then emits the targets from zero-input steps; the loss is binary
    cross-entropy over the decoding steps (`sample_weight`), the paper's metric bit error per
    sequence, the test the best checkpoint on `args.test_batches` fixed-seed batches
    (`test_batches`, from `--test-size`).

    Args:
        args: the parsed flags (`training` flags, model-size flags, `test_size`).
        task: str, the `task_configs.TASK_CONFIGS` key.
        data_module: the task's data module (`INPUT_SIZE`, `OUTPUT_SIZE`, `dataset(...)`).
        sizes: dict of the task's size arguments for `data_module.dataset`.
        data_record: optional JSON-able description of the data for `results.json`
            (default `sizes`).
        pretrained_name: the task's name under `pretrained/` (default `task`).

    Returns:
        The results dict of `run`.
    """
    from keras_stm.experiments.models import build_sequence_model
    from keras_stm.experiments.models import task_configs
    from keras_stm.experiments.tasks.metrics import BitErrorPerSequence

    stm_config = task_configs.model_config_from_args(args, task)
    train_data = data_module.dataset(
        batch_size=args.batch_size, num_batches=args.steps_per_epoch, seed=args.seed, **sizes
    )
    test_data = data_module.dataset(
        batch_size=args.batch_size,
        num_batches=args.test_batches,
        seed=task_configs.TEST_SEED,
        fixed=True,
        **sizes,
    )
    model = build_sequence_model(
        data_module.INPUT_SIZE,
        data_module.OUTPUT_SIZE,
        core=args.model,
        return_sequences=True,
        stm_config=stm_config,
        lstm_units=args.lstm_units,
    )
    model.compile(
        optimizer=make_optimizer(args),
        loss=keras.losses.BinaryCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[BitErrorPerSequence()],
        jit_compile=jit_compile(args),
    )
    extra = {
        "paper_metric": "bit_error_per_sequence",
        "evaluated": "best.keras",
        "test_protocol": {
            "batches": args.test_batches,
            "examples": args.test_size,
            "seed": task_configs.TEST_SEED,
        },
        "data": sizes if data_record is None else data_record,
        "stm_config": stm_config if args.model == "stm" else None,
    }
    return run(
        model,
        train_data,
        args,
        evaluate=evaluate_best_checkpoint(args, test_data),
        evaluation_data=[("test", test_data)],
        monitor="loss",
        mode="min",
        extra_results=extra,
        pretrained_name=pretrained_name,
    )
