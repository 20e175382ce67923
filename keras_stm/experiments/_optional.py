"""Optional dependencies: import them, or fail with the `pip install` line that provides them.

The library (`import keras_stm`) and most of `keras_stm.experiments` (task data, task models,
the training loop) need only keras and numpy plus one backend. Other modules need an extra of
the package (`[experiments]` installs all of them):

| module | extra | packages |
|---|---|---|
| `keras_stm.experiments.visualize` (plots), learning curves | `plots` | matplotlib |
| `keras_stm.experiments.tuning` | `tuning` | keras-tuner, six, scikit-learn, tensorboard |
| `keras_stm.experiments.tasks.atari` | `atari` | gymnasium, ale-py |
| reading an authors' `.pth` checkpoint | `torch` | torch |
"""

import importlib


def install_hint(extra):
    """The command that installs an extra, e.g. `pip install "keras-stm[plots]"`."""
    return f'pip install "keras-stm[{extra}]"'


def require(module, extra, purpose):
    """Import `module`, or raise a ModuleNotFoundError naming the extra that installs it.

    Args:
        module: str, the module to import (e.g. `"matplotlib"`).
        extra: str, the keras-stm extra that provides it (e.g. `"plots"`).
        purpose: str, what needs it, for the message (e.g. `"keras_stm.experiments.visualize"`).

    Returns:
        The imported module.

    Raises:
        ModuleNotFoundError: when `module`, or a module it imports, is missing; the message
            names the missing module and the `pip install "keras-stm[extra]"` line.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None) or module
        raise ModuleNotFoundError(
            f"{purpose} needs the optional package {missing!r}, which is not installed: "
            f"{install_hint(extra)}",
            name=missing,
        ) from error
