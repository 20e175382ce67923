"""keras-stm: Self-Attentive Associative Memory (Le, Tran, Venkatesh, ICML 2020) for Keras 3.

`import keras_stm` loads the library only: the layers, `ops`, `optimizers` and the loader of
the authors' weights (`weights`), with keras and numpy. The paper's experiments (task data,
task models, training loop, tuning, plots, pretrained models) are `keras_stm.experiments`,
imported explicitly (`pip install "keras-stm[experiments]"`).
"""

__version__ = "0.1.0"  # the package's only version number (pyproject.toml reads it)


def _import_keras():
    """`import keras`, or an error that says how to choose and install a Keras backend."""
    try:
        import keras  # noqa: F401
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in ("tensorflow", "jax", "torch"):
            raise
        import os

        chosen = os.environ.get("KERAS_BACKEND")
        why = f"KERAS_BACKEND={chosen}" if chosen else "Keras' default; KERAS_BACKEND is not set"
        raise ModuleNotFoundError(
            f"Keras' backend {missing!r} ({why}) is not installed. keras_stm needs one backend: "
            f'install it with pip install "keras-stm[jax]" (or [torch], [tensorflow]) and choose '
            f"it with the environment variable KERAS_BACKEND=jax (or torch, tensorflow).",
            name=error.name,
        ) from error


_import_keras()

from keras_stm import _moved  # noqa: E402

_moved.install()  # keras_stm.training, keras_stm.tasks, ... (0.1.0 paths): deprecated aliases

from keras_stm import layers  # noqa: E402
from keras_stm import ops  # noqa: E402
from keras_stm import optimizers  # noqa: E402
from keras_stm import weights  # noqa: E402
from keras_stm.layers import STM  # noqa: E402
from keras_stm.layers import STMCell  # noqa: E402
from keras_stm.optimizers import TorchRMSprop  # noqa: E402
from keras_stm.weights import cell_config_from_official  # noqa: E402
from keras_stm.weights import load_official_weights  # noqa: E402

__all__ = [
    "STM",
    "STMCell",
    "TorchRMSprop",
    "cell_config_from_official",
    "layers",
    "load_official_weights",
    "ops",
    "optimizers",
    "weights",
    "__version__",
]
