"""The paper's experiments: task data, task models, the training loop, tuning, plots.

Apart from the library (`import keras_stm` loads only the layers, ops, optimizers and the
authors'-weight loader, with keras and numpy) and imported explicitly, one submodule at a time:

| module | holds | needs |
|---|---|---|
| `keras_stm.experiments.tasks` | one data pipeline per task | numpy; `tasks.atari`: gymnasium |
| `keras_stm.experiments.models` | the task models and their per-task configurations | keras |
| `keras_stm.experiments.training` | the examples' training loop | keras; matplotlib (curves) |
| `keras_stm.experiments.tuning` | KerasTuner hypermodels and searches | keras-tuner |
| `keras_stm.experiments.visualize` | learning curves, memory and attention plots | matplotlib |
| `keras_stm.experiments.pretrained` | the committed models of `pretrained/`: load, export | keras |

`pip install "keras-stm[experiments]"` installs every optional package above (plus a backend
extra, e.g. `[experiments,jax]`). Importing this package imports none of its submodules.
"""
