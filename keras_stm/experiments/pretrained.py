"""The trained models behind our published results: `pretrained/<name>/`, loaded by name or path.

A pretrained folder holds:

* `model.keras`: the whole model (architecture and weights, no optimizer state), loadable
  with `keras.saving.load_model` once `keras_stm` is imported;
* `results.json`: the run's `results.json` (task, flags, device, iterations, GPU-minutes,
  test figures), with the commit that trained it;
* `history.csv` and `learning_curve.png`: the learning curve.

`export(run_dir, dest)` makes one from a finished run of an example script (`best.keras`,
`results.json`, `history.csv`); `load(name_or_path)` reads it back. Names are the folder
names under `pretrained/` of the repository (`available()` lists them), e.g.
`"associative_retrieval_14"`.
"""

import json
import os
import shutil

import keras

MODEL_FILE = "model.keras"
RESULTS_FILE = "results.json"
COPIED_FILES = (
    "history.csv",
    "learning_curve.png",
    "vocab.json",
    "task_errors.md",
    "task_errors.csv",
    "reward_curve.png",
    "episodes.csv",
)
"""tuple: the run's files copied beside the model when they exist (the learning curve; for
bAbI the vocabulary the model was trained with and the per-task error table; for Atari the
reward curve and every training game's frame and score)."""
CHECKPOINT_STATE_FILE = "checkpoint_state.json"
"""str: in a folder exported from a checkpoint (`run_model_path`), a copy of that checkpoint's
`state.json` (counters, games, sampler), so that the run can continue from the exported
weights elsewhere (`examples/atari_pong.py --continue-from`)."""
CHECKPOINT_POINTER = os.path.join("checkpoints", "latest.json")
"""str: in a run folder without `best.keras` (the Atari A2C run), the file naming the newest
checkpoint folder `checkpoints/<name>/` whose `model.keras` is exported."""
MAX_MODEL_BYTES = 10 * 1024 * 1024
"""int: the size limit of a committed `model.keras` (10 MiB)."""

ROOT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "pretrained"
)
"""str: the repository's `pretrained/` folder (absent from an installed wheel: pass a path)."""


def import_model_module(path):
    """Imports the `keras_stm` module that defines the model saved in `path` (a `.keras` file),
    so that its class is registered for `keras.saving.load_model` (e.g. the Atari agent's
    `ActorCritic`, which `import keras_stm` alone does not load). Unknown or missing modules
    are left to `load_model`'s own error."""
    import importlib
    import zipfile

    import keras_stm  # noqa: F401  (registers the layers for deserialisation)

    try:
        with zipfile.ZipFile(path) as archive:
            module = json.loads(archive.read("config.json")).get("module", "")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return
    if module.startswith("keras_stm."):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def available(root=ROOT):
    """Names of the pretrained models under `root` (sorted; empty if `root` does not exist)."""
    if not os.path.isdir(root):
        return []
    return sorted(
        name for name in os.listdir(root) if os.path.exists(os.path.join(root, name, MODEL_FILE))
    )


def resolve(name_or_path, root=ROOT):
    """The folder of a pretrained model given by name (under `root`) or by path.

    Raises:
        FileNotFoundError: naming what was looked for and the models that exist.
    """
    for folder in (name_or_path, os.path.join(root, str(name_or_path))):
        if os.path.exists(os.path.join(folder, MODEL_FILE)):
            return folder
    raise FileNotFoundError(
        f"No pretrained model {name_or_path!r}: neither {name_or_path!r} nor "
        f"{os.path.join(root, str(name_or_path))!r} holds a {MODEL_FILE}. Available: "
        f"{available(root) or 'none'}."
    )


def read_results(name_or_path, root=ROOT):
    """The `results.json` of a pretrained model, as a dict."""
    path = os.path.join(resolve(name_or_path, root), RESULTS_FILE)
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None


def load(name_or_path, root=ROOT):
    """Load a pretrained model (uncompiled) and its results.

    Args:
        name_or_path: a name from `available()` or a folder holding `model.keras`.
        root: the folder of named models. Defaults to the repository's `pretrained/`.

    Returns:
        Tuple `(model, results)`: the uncompiled `keras.Model` and its `results.json` dict.

    Example:

    >>> from keras_stm.experiments import pretrained
    >>> isinstance(pretrained.available(), list)
    True
    """
    folder = resolve(name_or_path, root)
    import_model_module(os.path.join(folder, MODEL_FILE))
    model = keras.saving.load_model(os.path.join(folder, MODEL_FILE), compile=False)
    return model, read_results(folder)


def run_model_path(run_dir):
    """The model file a run folder's export uses: `best.keras`, or else (runs without a
    validation set, such as the Atari A2C run) the newest checkpoint's `model.keras` named by
    `checkpoints/latest.json`.

    Raises:
        FileNotFoundError: if the run has neither.
    """
    best = os.path.join(run_dir, "best.keras")
    if os.path.exists(best):
        return best
    pointer = os.path.join(run_dir, CHECKPOINT_POINTER)
    if os.path.exists(pointer):
        with open(pointer) as f:
            try:
                name = json.load(f)["checkpoint"]
            except (ValueError, KeyError) as error:
                raise FileNotFoundError(f"{pointer} is unreadable ({error}).") from None
        path = os.path.join(run_dir, "checkpoints", name, MODEL_FILE)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"{best} not found (nor a checkpoint named by {pointer}): export needs a finished run."
    )


def export(run_dir, dest, extra=None, max_bytes=MAX_MODEL_BYTES):
    """Make a pretrained folder from a finished run of an example script.

    The best checkpoint (`best.keras`; for a run without one, the newest checkpoint, see
    `run_model_path`) is saved without its optimizer state; `results.json` (updated with
    `extra`) and the `COPIED_FILES` the run has are copied.

    Args:
        run_dir: the run's output folder.
        dest: the pretrained folder to write (created; its files replaced).
        extra: optional dict merged into the copied `results.json` (e.g. the commit and
            the GPU-minutes).
        max_bytes: int, size limit of the written `model.keras`. Defaults to
            `MAX_MODEL_BYTES`.

    Returns:
        The path of the written `model.keras`.

    Raises:
        FileNotFoundError: if the run has no model (see `run_model_path`) or `results.json`.
        ValueError: if the model exceeds `max_bytes`.
    """
    best = run_model_path(run_dir)
    results_path = os.path.join(run_dir, RESULTS_FILE)
    if not os.path.exists(results_path):
        raise FileNotFoundError(f"{results_path} not found: export needs a finished run.")
    import_model_module(best)
    model = keras.saving.load_model(best, compile=False)
    os.makedirs(dest, exist_ok=True)
    target = os.path.join(dest, MODEL_FILE)
    model.save(target)
    size = os.path.getsize(target)
    if size > max_bytes:
        os.remove(target)
        raise ValueError(
            f"{target} would be {size} bytes, above the {max_bytes}-byte "
            "limit of a committed model."
        )
    with open(results_path) as f:
        results = json.load(f)
    results.update(extra or {})
    with open(os.path.join(dest, RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=2)
    for name in COPIED_FILES:
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(dest, name))
    checkpoint_state = os.path.join(os.path.dirname(best), "state.json")
    if os.path.basename(best) == MODEL_FILE and os.path.exists(checkpoint_state):
        shutil.copyfile(checkpoint_state, os.path.join(dest, CHECKPOINT_STATE_FILE))
    return target
