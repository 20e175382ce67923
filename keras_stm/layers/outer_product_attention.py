"""The `OuterProductAttention` layer."""

from typing import Any

import keras

from keras_stm import ops as stm_ops


@keras.saving.register_keras_serializable(package="keras_stm")
class OuterProductAttention(keras.layers.Layer):
    """Outer Product Attention (OPA): `A_i = sum_j tanh(q_i ⊙ k_j) ⊗ v_j`.

    A weight-free layer around `keras_stm.ops.outer_product_attention`. For every query `i`
    the element-wise product of the query with each key `j` is squashed by `tanh` and weights
    the outer product of that feature vector with value `j`; the results are summed over `j`.
    There is no softmax and no scaling, as in the authors' implementation.

    Args:
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: tensor of shape `(batch, num_queries, d)`.
        key: tensor of shape `(batch, num_keys, d)`.
        value: tensor of shape `(batch, num_keys, value_size)`.

    Returns:
        Tensor of shape `(batch, num_queries, d, value_size)`.

    Masking: not supported (no mask is consumed or produced).

    Example:

    >>> import numpy as np
    >>> import keras_stm
    >>> opa = keras_stm.layers.OuterProductAttention()
    >>> q = np.random.rand(2, 3, 4).astype("float32")
    >>> kv = np.random.rand(2, 5, 4).astype("float32")
    >>> tuple(opa(q, kv, kv).shape)
    (2, 3, 4, 4)

    References:
        Le, Tran, Venkatesh. Self-Attentive Associative Memory. ICML 2020, section 2.1.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = False

    def build(self, query_shape, key_shape=None, value_shape=None):
        # Checked here too, so that symbolic calls (`keras.Input`) fail as eager ones do.
        if (
            key_shape is not None
            and None not in (query_shape[-1], key_shape[-1])
            and (query_shape[-1] != key_shape[-1])
        ):
            raise ValueError(
                "`query` and `key` must have the same feature size (last axis), got "
                f"{tuple(query_shape)} and {tuple(key_shape)}."
            )
        if (
            key_shape is not None
            and value_shape is not None
            and None not in (key_shape[-2], value_shape[-2])
            and key_shape[-2] != value_shape[-2]
        ):
            raise ValueError(
                "`key` and `value` must hold the same number of items (axis -2), got "
                f"{tuple(key_shape)} and {tuple(value_shape)}."
            )
        self.built = True

    def call(self, query: Any, key: Any, value: Any) -> Any:
        return stm_ops.outer_product_attention(query, key, value)

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None):
        value_size = value_shape[-1] if value_shape is not None else query_shape[-1]
        return tuple(query_shape[:-1]) + (query_shape[-1], value_size)
