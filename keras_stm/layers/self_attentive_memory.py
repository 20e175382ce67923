"""The `SelfAttentiveMemory` layer (the SAM operator)."""

import math
import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_stm import ops as stm_ops

NORMALIZATIONS = ("joint", "row")


def pytorch_linear_initializers(fan_in, kernel_initializer=None, bias_initializer=None):
    """Initializers reproducing PyTorch's `nn.Linear` default, unless overridden.

    PyTorch draws weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); for the kernel that
    is `VarianceScaling(scale=1/3, mode="fan_in", distribution="uniform")`.
    """
    kernel = kernel_initializer
    if kernel is None:
        kernel = keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
        )
    bias = bias_initializer
    if bias is None:
        limit = 1.0 / math.sqrt(fan_in)
        bias = keras.initializers.RandomUniform(-limit, limit)
    return keras.initializers.get(kernel), keras.initializers.get(bias)


REGULARIZERS_AND_CONSTRAINTS = (
    "kernel_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "bias_constraint",
)


def regularizers_and_constraints_config(layer):
    """`{name: serialized}` of a layer's kernel and bias regularizers and constraints."""
    return {
        name: (
            keras.regularizers.serialize
            if name.endswith("regularizer")
            else keras.constraints.serialize
        )(getattr(layer, name))
        for name in REGULARIZERS_AND_CONSTRAINTS
    }


def check_positive_int(name, value):
    """Raise a ValueError naming `name` unless `value` is a positive integer (a Python or numpy
    integer, not a bool); returns it as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_epsilon(name, value):
    """Raise a ValueError naming `name` unless `value` is a finite positive number; returns it
    as a Python float."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
    return float(value)


def attention_scores(query, key):
    """OPA's scores `[..., i, j, p] = tanh(q_i[p] k_j[p])` of queries and keys `(..., n, d)`."""
    scores = stm_ops.outer_product_attention_scores(query, key)  # [..., j, i * d + p]
    lead = tuple(ops.shape(key)[:-2])
    scores = ops.reshape(scores, lead + (key.shape[-2], query.shape[-2], query.shape[-1]))
    return ops.swapaxes(scores, -2, -3)


@keras.saving.register_keras_serializable(package="keras_stm")
class SelfAttentiveMemory(keras.layers.Layer):
    """Self-attentive memory (SAM): relational memory from a matrix memory by OPA.

    For a memory `S` of shape `(rows, cols)` (the item memory, `rows = cols = d`, in the STM):

        P = S W + b                                  # (rows, 3 nq): a linear map of each row
        P̂ = LayerNorm(P)                             # "joint": one statistic over all of P
        Q = P̂[:, :nq]^T, K = P̂[:, nq:2nq]^T, V = P̂[:, 2nq:]^T     # each (nq, rows)
        SAM(S) = OPA(Q, K, V)                         # (nq, rows, rows)

    where `OPA(Q, K, V)_i = sum_j tanh(q_i ⊙ k_j) ⊗ v_j`. With `normalization="row"` (the RL
    variant of the authors' cell) each row of `P` is normalised on its own over its `3 nq`
    entries, and the gain and offset have shape `(3 nq,)` instead of `(rows, 3 nq)`.

    Args:
        num_queries: int, the number `nq` of queries (= keys = values), i.e. of relational slots.
        epsilon: float, LayerNorm epsilon. Defaults to `1e-5` (PyTorch's).
        normalization: str, `"joint"` (default; LayerNorm over the whole `(rows, 3 nq)` block) or
            `"row"` (LayerNorm over each row's `3 nq` entries).
        kernel_initializer: initializer for `W`, or None for PyTorch's `nn.Linear` default.
        bias_initializer: initializer for `b`, or None for PyTorch's `nn.Linear` default.
        kernel_regularizer: regularizer of `W`, or None (default).
        bias_regularizer: regularizer of `b`, or None (default).
        kernel_constraint: constraint on `W`, or None (default).
        bias_constraint: constraint on `b`, or None (default).
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        memory: tensor of shape `(batch, rows, cols)`.
        return_attention_scores: bool, also return OPA's scores `tanh(q_i ⊙ k_j)` of shape
            `(batch, num_queries, num_queries, rows)` (`[b, i, j, p]`, query `i`, key `j`), as
            `keras.layers.MultiHeadAttention` does. Defaults to False.

    Returns:
        Tensor of shape `(batch, num_queries, rows, rows)`, or the pair `(output, scores)`.

    Masking: not supported.

    Example:

    >>> import numpy as np
    >>> import keras_stm
    >>> sam = keras_stm.layers.SelfAttentiveMemory(num_queries=4)
    >>> tuple(sam(np.random.rand(2, 8, 8).astype("float32")).shape)
    (2, 4, 8, 8)

    References:
        Le, Tran, Venkatesh. Self-Attentive Associative Memory. ICML 2020, section 2.2.
    """

    def __init__(
        self,
        num_queries: int,
        epsilon: float = 1e-5,
        normalization: str = "joint",
        kernel_initializer: Any = None,
        bias_initializer: Any = None,
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_queries = check_positive_int("num_queries", num_queries)
        self.epsilon = check_epsilon("epsilon", epsilon)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}."
            )
        self.normalization = normalization
        self.kernel_initializer = (
            keras.initializers.get(kernel_initializer) if kernel_initializer is not None else None
        )
        self.bias_initializer = (
            keras.initializers.get(bias_initializer) if bias_initializer is not None else None
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.supports_masking = False

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None or input_shape[-2] is None:
            raise ValueError(
                "SelfAttentiveMemory expects a memory of shape (batch, rows, cols) with known "
                f"rows and cols, got {tuple(input_shape)}."
            )
        rows, cols = int(input_shape[-2]), int(input_shape[-1])
        width = 3 * self.num_queries
        kernel_init, bias_init = pytorch_linear_initializers(
            cols, self.kernel_initializer, self.bias_initializer
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(cols, width),
            initializer=kernel_init,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = self.add_weight(
            name="bias",
            shape=(width,),
            initializer=bias_init,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )
        norm_shape = (rows, width) if self.normalization == "joint" else (width,)
        self.gamma = self.add_weight(name="gamma", shape=norm_shape, initializer="ones")
        self.beta = self.add_weight(name="beta", shape=norm_shape, initializer="zeros")
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-2: rows, -1: cols})

    def call(self, memory: Any, return_attention_scores: bool = False) -> Any:
        query, key, value = self.queries_keys_values(memory)
        output = stm_ops.outer_product_attention(query, key, value)
        if not return_attention_scores:
            return output
        return output, attention_scores(query, key)

    def queries_keys_values(self, memory):
        """Projection, LayerNorm and split: `(query, key, value)`, each `(batch, nq, rows)`."""
        nq = self.num_queries
        projected = stm_ops.matmul(memory, self.kernel) + self.bias  # (B, rows, 3nq)
        axis = (-2, -1) if self.normalization == "joint" else -1
        projected = stm_ops.normalize(projected, axis, self.epsilon) * self.gamma + self.beta
        projected = ops.swapaxes(projected, -1, -2)  # (B, 3nq, rows)
        return projected[:, :nq], projected[:, nq : 2 * nq], projected[:, 2 * nq :]

    def factors(self, memory):
        """SAM of `memory` as two factors `(values, scores)`.

        `values` is `(batch, rows, nq)` (the values, transposed) and `scores` is
        `(batch, nq, nq * rows)` (`keras_stm.ops.outer_product_attention_scores`); their
        product `values @ scores` is `call(memory)` value-major (`[b, c, i * rows + p] =
        SAM(memory)[b, i, p, c]`). The STM loop uses them
        to apply the transfer to the small factor and to skip building `Mr` when no step
        reads it.
        """
        query, key, value = self.queries_keys_values(memory)
        return ops.swapaxes(value, -1, -2), stm_ops.outer_product_attention_scores(query, key)

    def compute_output_shape(self, input_shape):
        rows = input_shape[-2]
        return (input_shape[0], self.num_queries, rows, rows)

    def compute_output_spec(self, memory, return_attention_scores=False):
        shape = memory.shape
        output = keras.KerasTensor(self.compute_output_shape(shape), dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        scores_shape = (shape[0], self.num_queries, self.num_queries, shape[-2])
        return output, keras.KerasTensor(scores_shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_queries": self.num_queries,
                "epsilon": self.epsilon,
                "normalization": self.normalization,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)
                if self.kernel_initializer is not None
                else None,
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)
                if self.bias_initializer is not None
                else None,
                **regularizers_and_constraints_config(self),
            }
        )
        return config
