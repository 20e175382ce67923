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
COPIED_FILES = ("history.csv", "learning_curve.png", "vocab.json", "task_errors.md",
                "task_errors.csv")
"""tuple: the run's files copied beside the model when they exist (the learning curve; for
bAbI the vocabulary the model was trained with and the per-task error table)."""
MAX_MODEL_BYTES = 10 * 1024 * 1024
"""int: the size limit of a committed `model.keras` (10 MiB)."""

ROOT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "pretrained")
"""str: the repository's `pretrained/` folder (absent from an installed wheel: pass a path)."""


def available(root=ROOT):
    """Names of the pretrained models under `root` (sorted; empty if `root` does not exist)."""
    if not os.path.isdir(root):
        return []
    return sorted(name for name in os.listdir(root)
                  if os.path.exists(os.path.join(root, name, MODEL_FILE)))


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
        f"{available(root) or 'none'}.")


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
    import keras_stm  # noqa: F401  (registers the layers for deserialisation)

    folder = resolve(name_or_path, root)
    model = keras.saving.load_model(os.path.join(folder, MODEL_FILE), compile=False)
    return model, read_results(folder)


def export(run_dir, dest, extra=None):
    """Make a pretrained folder from a finished run of an example script.

    The best checkpoint (`best.keras`) is saved without its optimizer state; `results.json`
    (updated with `extra`) and the `COPIED_FILES` the run has are copied.

    Args:
        run_dir: the run's output folder.
        dest: the pretrained folder to write (created; its files replaced).
        extra: optional dict merged into the copied `results.json` (e.g. the commit and
            the GPU-minutes).

    Returns:
        The path of the written `model.keras`.

    Raises:
        FileNotFoundError: if the run has no `best.keras` or `results.json`.
        ValueError: if the model exceeds `MAX_MODEL_BYTES`.
    """
    import keras_stm  # noqa: F401

    best = os.path.join(run_dir, "best.keras")
    results_path = os.path.join(run_dir, RESULTS_FILE)
    for path in (best, results_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: export needs a finished run.")
    model = keras.saving.load_model(best, compile=False)
    os.makedirs(dest, exist_ok=True)
    target = os.path.join(dest, MODEL_FILE)
    model.save(target)
    size = os.path.getsize(target)
    if size > MAX_MODEL_BYTES:
        os.remove(target)
        raise ValueError(f"{target} would be {size} bytes, above the {MAX_MODEL_BYTES}-byte "
                         "limit of a committed model.")
    with open(results_path) as f:
        results = json.load(f)
    results.update(extra or {})
    with open(os.path.join(dest, RESULTS_FILE), "w") as f:
        json.dump(results, f, indent=2)
    for name in COPIED_FILES:
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(dest, name))
    return target
