"""Layers of keras-stm."""

from keras_stm.layers.outer_product_attention import OuterProductAttention
from keras_stm.layers.self_attentive_memory import SelfAttentiveMemory
from keras_stm.layers.sentence_encoder import SentenceEncoder
from keras_stm.layers.stm import STM
from keras_stm.layers.stm_cell import STMCell
from keras_stm.layers.tpr_inference import TPRInference

__all__ = [
    "OuterProductAttention",
    "SelfAttentiveMemory",
    "SentenceEncoder",
    "STM",
    "STMCell",
    "TPRInference",
]
