"""Task models built from the library's layers.

`build_sequence_model` (STM or LSTM over a sequence) and `build_babi_model` are imported here;
`keras_stm.experiments.models.actor_critic` (needs nothing beyond Keras) and
`keras_stm.experiments.models.task_configs`
(the per-task configurations) are imported as submodules.
"""

from keras_stm.experiments.models.babi_model import build_babi_model
from keras_stm.experiments.models.sequence_model import build_sequence_model

__all__ = ["build_babi_model", "build_sequence_model"]
