"""keras-stm: Self-Attentive Associative Memory (Le, Tran, Venkatesh, ICML 2020) for Keras 3."""

from keras_stm import layers
from keras_stm import ops
from keras_stm import optimizers
from keras_stm import weights
from keras_stm.layers import STM
from keras_stm.layers import STMCell
from keras_stm.optimizers import TorchRMSprop
from keras_stm.weights import cell_config_from_official
from keras_stm.weights import load_official_weights

__version__ = "0.1.0"

__all__ = ["STM", "STMCell", "TorchRMSprop", "cell_config_from_official", "layers",
           "load_official_weights", "ops", "optimizers", "weights", "__version__"]
