"""Optional dependencies: import them, or fail with the `pip install` line that provides them.

The core (`keras_stm.STM`, `STMCell`, the layers, ops and task data) needs only keras and numpy
plus one backend. Other modules need an extra of the package:

| module | extra | packages |
|---|---|---|
| `keras_stm.visualize` (plots), learning curves | `plots` | matplotlib |
| `keras_stm.tuning` | `tuning` | keras-tuner, six, scikit-learn, tensorboard |
| `keras_stm.tasks.atari` | `atari` | gymnasium, ale-py |
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
        purpose: str, what needs it, for the message (e.g. `"keras_stm.visualize"`).

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
