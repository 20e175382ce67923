"""Backend-agnostic tensor functions of the STM model, written with `keras.ops` only.

Each equation of the model lives in exactly one function here or in the layer that owns its
weights; the layers call these functions.
"""

from typing import Any

import keras
from keras import ops


def _check_rank(name, tensor, min_rank):
    rank = len(tensor.shape)
    if rank < min_rank:
        raise ValueError(f"`{name}` must have rank >= {min_rank}, got shape {tuple(tensor.shape)}.")


def outer_product_attention(query: Any, key: Any, value: Any) -> Any:
    """Outer Product Attention (OPA), the attention of the SAM operator.

    Computes, for every query `i`,

        A_i = sum_j tanh(q_i ⊙ k_j) ⊗ v_j

    i.e. `A[..., i, p, c] = sum_j tanh(Q[..., i, p] * K[..., j, p]) * V[..., j, c]`: the
    element-wise product of a query and a key, squashed by `tanh` (no softmax, no scaling, as in
    the authors' code), weights the outer product with the value. It is evaluated as one batched
    matrix product `V^T @ tanh(Q ⊙ K)` over the keys; the `(..., nq, nkv, d, dv)` tensor of all
    outer products is never built.

    Args:
        query: tensor of shape `(..., num_queries, d)`.
        key: tensor of shape `(..., num_keys, d)`.
        value: tensor of shape `(..., num_keys, value_size)`.

    Returns:
        Tensor of shape `(..., num_queries, d, value_size)`.

    Example:

    >>> import numpy as np
    >>> from keras_stm.ops import outer_product_attention
    >>> q = np.ones((2, 3, 4), "float32"); k = np.ones((2, 5, 4), "float32")
    >>> v = np.ones((2, 5, 6), "float32")
    >>> tuple(outer_product_attention(q, k, v).shape)
    (2, 3, 4, 6)

    References:
        Le, Tran, Venkatesh. Self-Attentive Associative Memory. ICML 2020, section 2.
    """
    query = ops.convert_to_tensor(query)
    key = ops.convert_to_tensor(key)
    value = ops.convert_to_tensor(value)
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        _check_rank(name, tensor, 2)
    if query.shape[-1] is not None and key.shape[-1] is not None:
        if query.shape[-1] != key.shape[-1]:
            raise ValueError(
                "`query` and `key` must have the same feature size (last axis), got "
                f"{tuple(query.shape)} and {tuple(key.shape)}."
            )
    if key.shape[-2] is not None and value.shape[-2] is not None:
        if key.shape[-2] != value.shape[-2]:
            raise ValueError(
                "`key` and `value` must hold the same number of items (axis -2), got "
                f"{tuple(key.shape)} and {tuple(value.shape)}."
            )
    num_queries, size = query.shape[-2], query.shape[-1]
    lead = tuple(ops.shape(key)[:-2])
    scores = outer_product_attention_scores(query, key)
    # A'[..., c, (i, p)] = sum_j v[..., j, c] * scores[..., j, (i, p)]
    attended = matmul(ops.swapaxes(value, -1, -2), scores)
    attended = ops.reshape(attended, lead + (value.shape[-1], num_queries, size))
    return ops.moveaxis(attended, -3, -1)


def outer_product_attention_scores(query: Any, key: Any) -> Any:
    """The weights of Outer Product Attention, `tanh(q_i ⊙ k_j)`, laid out for one product.

    `scores[..., j, i * d + p] = tanh(Q[..., i, p] * K[..., j, p])`, so that the value-major
    OPA is the matrix product `swapaxes(value) @ scores` (see `outer_product_attention`).
    Keeping the two factors apart lets a caller multiply `scores` first: the STM's transfer
    `OPA @ W` is computed as `swapaxes(value) @ (scores @ W)`, on `num_keys` rows instead of
    `value_size` rows.

    Args:
        query: tensor of shape `(..., num_queries, d)`.
        key: tensor of shape `(..., num_keys, d)`.

    Returns:
        Tensor of shape `(..., num_keys, num_queries * d)`.

    Example:

    >>> import numpy as np
    >>> from keras_stm.ops import outer_product_attention_scores
    >>> q = np.ones((2, 3, 4), "float32"); k = np.ones((2, 5, 4), "float32")
    >>> tuple(outer_product_attention_scores(q, k).shape)
    (2, 5, 12)
    """
    num_queries, size = query.shape[-2], query.shape[-1]
    lead = tuple(ops.shape(key)[:-2])
    scores = tanh(ops.expand_dims(key, -2) * ops.expand_dims(query, -3))
    return ops.reshape(scores, lead + (key.shape[-2], num_queries * size))


def normalize(inputs: Any, axis: int | tuple[int, ...], epsilon: float) -> Any:
    """Zero-mean, unit-variance normalisation over `axis`, computed in float32 at least.

    The statistics (mean and biased variance) are taken jointly over all axes in `axis`; the
    result is cast back to the input dtype (safe under mixed precision).

    Args:
        inputs: tensor.
        axis: int or tuple of ints, the axes normalised together.
        epsilon: float, added to the variance.

    Returns:
        Tensor of the same shape and dtype as `inputs`.
    """
    dtype = inputs.dtype
    x = ops.cast(inputs, _statistics_dtype(dtype))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    count = 1
    for a in axes:
        count *= x.shape[a]
    # sum / count rather than ops.mean: Keras 3.15's torch mean computes float64 in float32.
    mean = ops.sum(x, axis=axes, keepdims=True) / count
    centered = x - mean
    variance = ops.sum(ops.square(centered), axis=axes, keepdims=True) / count
    return ops.cast(centered * ops.rsqrt(variance + epsilon), dtype)


def _statistics_dtype(dtype):
    # float32 for 16-bit inputs, float64 kept (keras.backend.result_type would demote it).
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def outer(a: Any, b: Any) -> Any:
    """Batched outer product: `out[..., p, c] = a[..., p] * b[..., c]`."""
    return ops.expand_dims(a, -1) * ops.expand_dims(b, -2)


def softmax(inputs: Any, axis: int = -1) -> Any:
    """Softmax over `axis`, computed in float32 at least and cast back to the input dtype."""
    dtype = inputs.dtype
    x = ops.cast(inputs, _statistics_dtype(dtype))
    return ops.cast(ops.softmax(x, axis=axis), dtype)


def _is_float64(*tensors):
    return any(keras.backend.standardize_dtype(t.dtype) == "float64" for t in tensors)


def matmul(a: Any, b: Any) -> Any:
    """`ops.matmul` that keeps float64 inputs in float64.

    Keras 3.15's `ops.matmul` computes float64 operands in float32 on the torch backend (its
    type promotion maps 64-bit types to 32-bit outside TensorFlow); a float64 product is
    therefore written as an equivalent `einsum`, which keeps the precision. Other dtypes go to
    `ops.matmul` unchanged, except one case under TensorFlow: a batch of rows times a kernel
    (rank > 2 by rank 2). There Keras calls `tf.tensordot`, whose transposes get their
    permutation from the runtime shape when the batch size is unknown at trace time; inside
    the STM loop, the gradient of that transpose is not a compile-time constant, and
    `jit_compile=True` (XLA) training fails for any batch size not fixed at trace time (a
    partial last batch, a `PyDataset`). The rows are flattened into one rank-2 product
    instead, the same product `tf.tensordot` computes.
    """
    a = ops.convert_to_tensor(a)
    b = ops.convert_to_tensor(b)
    if _is_float64(a, b) and len(a.shape) >= 2 and len(b.shape) >= 2:
        return ops.einsum("...ij,...jk->...ik", a, b)
    if len(a.shape) > 2 and len(b.shape) == 2 and keras.backend.backend() == "tensorflow":
        lead = ops.shape(a)[:-1]
        flat = ops.matmul(ops.reshape(a, (-1, b.shape[0])), b)
        return ops.reshape(flat, tuple(lead) + (b.shape[-1],))
    return ops.matmul(a, b)


def tanh(x: Any) -> Any:
    """`ops.tanh` that keeps float64 inputs in float64.

    Keras 3.15's jax `ops.tanh` returns float32 for float64 input; float64 uses the identity
    `tanh(x) = 2 sigmoid(2x) - 1` instead (exact to float64 round-off).
    """
    x = ops.convert_to_tensor(x)
    if _is_float64(x):
        return 2.0 * ops.sigmoid(2.0 * x) - 1.0
    return ops.tanh(x)
