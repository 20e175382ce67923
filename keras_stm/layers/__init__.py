"""Layers of keras-stm."""

from keras_stm.layers.outer_product_attention import OuterProductAttention
from keras_stm.layers.self_attentive_memory import SelfAttentiveMemory
from keras_stm.layers.stm import STM
from keras_stm.layers.stm_cell import STMCell

__all__ = ["OuterProductAttention", "SelfAttentiveMemory", "STM", "STMCell"]
