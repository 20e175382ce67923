"""Task models built from the library's layers."""

from keras_stm.models.sequence_model import build_sequence_model

__all__ = ["build_sequence_model"]
