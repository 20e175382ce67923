"""Metrics shared by the synthetic tasks: the "bit error per sequence" of the decoding tasks.

The authors' `run_toys.py` scores copy, priority sort and RAR by the *bit error per
sequence*: every target bit is predicted as `round(sigmoid(logit))` (threshold 0.5), and the
absolute differences to the target bits, summed over all decoded steps and all bits, are
divided by the batch size. Here the decoded steps are the ones with a non-zero
`sample_weight` (the task generators put weight 1 on the `T_out` decoding steps and 0 on the
input phase), so the same arrays that train the model also score it.

A prediction bit is 1 exactly when the probability is strictly above 0.5 (equivalently, the
logit is strictly positive); a probability of exactly 0.5 rounds to 0, as PyTorch's
round-half-to-even `torch.round(0.5)` does.

References:
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (official code
    `thaihungle/SAM`, `run_toys.py`).
"""

import keras
import numpy as np
from keras import ops


def _same(a, b):
    """True if two static shapes agree (None, i.e. unknown, matches any size)."""
    return len(a) == len(b) and all(i is None or j is None or i == j for i, j in zip(a, b))


def _static_shape(x):
    """The static shape of an array or tensor as a tuple of ints / None."""
    return tuple(None if d is None else int(d) for d in x.shape)


def _check_shapes(y_true_shape, y_pred_shape, sample_weight_shape):
    """Validates the (B, T, W) / (B, T) layout shared by both implementations."""
    if not _same(y_true_shape, y_pred_shape):
        raise ValueError(
            f"`y_true` and `y_pred` must have the same shape, got {y_true_shape} "
            f"and {y_pred_shape}."
        )
    if len(y_true_shape) < 2:
        raise ValueError(
            f"`y_true` must have a batch axis and a bit axis (B, ..., W), got shape {y_true_shape}."
        )
    if sample_weight_shape is not None:
        expected = y_true_shape[:-1]
        if not (
            _same(sample_weight_shape, expected) or _same(sample_weight_shape, expected + (1,))
        ):
            raise ValueError(
                f"`sample_weight` must have shape {expected} (one weight per step), got "
                f"{sample_weight_shape}."
            )


def bit_error_per_sequence(y_true, y_pred, sample_weight=None, from_logits=True):
    """Bit error per sequence of binary predictions (numpy).

    Computes `sum_{b, t, k} w[b, t] * |round(p[b, t, k]) - y[b, t, k]| / B` where `p` is the
    predicted probability (threshold 0.5, exactly 0.5 rounds to 0).

    Args:
        y_true: array-like of shape (B, T, W) (or any (B, ..., W)), target bits in {0, 1}.
        y_pred: array-like, same shape as `y_true`: logits if `from_logits`, otherwise
            probabilities in [0, 1].
        sample_weight: optional array-like of shape (B, T) (`y_true.shape[:-1]`), the weight of
            every step; the task generators give 1 on the decoding steps and 0 elsewhere.
            Defaults to None (every step counts with weight 1).
        from_logits: bool, whether `y_pred` holds logits (True, default) or probabilities.

    Returns:
        float, the weighted number of wrong bits divided by the batch size B.

    Raises:
        ValueError: if the shapes of `y_true`, `y_pred` and `sample_weight` disagree.

    Example:

    >>> y = np.array([[[1., 0.], [1., 1.]]])           # B=1, T=2, W=2
    >>> logits = np.array([[[2., 1.], [-1., 3.]]])     # predicted bits [[1, 1], [0, 1]]
    >>> float(bit_error_per_sequence(y, logits, sample_weight=np.array([[0., 1.]])))
    1.0
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    sw_shape = None if sample_weight is None else tuple(np.shape(sample_weight))
    _check_shapes(y_true.shape, y_pred.shape, sw_shape)
    threshold = 0.0 if from_logits else 0.5
    bits = (y_pred > threshold).astype(np.float64)
    errors = np.abs(bits - y_true).sum(axis=-1)  # (B, T)
    if sample_weight is not None:
        weight = np.asarray(sample_weight, dtype=np.float64).reshape(errors.shape)
        errors = errors * weight
    return float(errors.sum() / y_true.shape[0])


@keras.saving.register_keras_serializable(package="keras_stm")
class BitErrorPerSequence(keras.metrics.Metric):
    """Keras metric: bit error per sequence, honouring a per-step `sample_weight`.

    Accumulates the weighted number of wrong bits (`round(sigmoid(logit))` against the target,
    threshold 0.5) and the number of sequences; `result()` is their ratio, i.e. the mean over
    all sequences seen of the per-sequence bit error. Pure `keras.ops`, so it runs under the
    jax, torch and tensorflow backends.

    Keras passes `sample_weight` only to *weighted* metrics: put this metric in
    `model.compile(weighted_metrics=[...])` so that only the decoding steps are scored. Listed
    in `metrics=[...]` it receives no weights and counts every step (input phase included).

    Args:
        name: str, metric name. Defaults to "bit_error_per_sequence".
        from_logits: bool, whether the model outputs logits (True, default) or sigmoid
            probabilities.
        dtype: optional dtype of the metric's state and result. Defaults to None (float32).

    Example:

    >>> metric = BitErrorPerSequence()
    >>> y = np.array([[[1., 0.], [1., 1.]]], dtype="float32")
    >>> logits = np.array([[[2., 1.], [-1., 3.]]], dtype="float32")
    >>> metric.update_state(y, logits, sample_weight=np.array([[0., 1.]], dtype="float32"))
    >>> float(metric.result())
    1.0
    >>> # model.compile(loss=..., weighted_metrics=[BitErrorPerSequence()])

    References:
        Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (`run_toys.py`).
    """

    def __init__(self, name="bit_error_per_sequence", from_logits=True, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if not isinstance(from_logits, (bool, np.bool_)):
            raise ValueError(f"`from_logits` must be a bool, got {from_logits!r}.")
        self.from_logits = bool(from_logits)
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, name="total"
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, name="count"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds one batch.

        Args:
            y_true: tensor (B, T, W), target bits.
            y_pred: tensor (B, T, W), logits (or probabilities if `from_logits=False`).
            sample_weight: optional tensor (B, T) (or (B, T, 1)) of step weights.
                Defaults to None (every step counts).
        """
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight)
        sw_shape = None if sample_weight is None else _static_shape(sample_weight)
        _check_shapes(_static_shape(y_true), _static_shape(y_pred), sw_shape)
        threshold = 0.0 if self.from_logits else 0.5
        bits = ops.cast(ops.greater(y_pred, threshold), self.dtype)
        errors = ops.sum(ops.abs(bits - ops.cast(y_true, self.dtype)), axis=-1)  # (B, T)
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, self.dtype), ops.shape(errors))
            errors = errors * weight
        self.total.assign_add(ops.sum(errors))
        self.count.assign_add(ops.cast(ops.shape(y_true)[0], self.dtype))

    def result(self):
        """Returns the weighted wrong bits per sequence seen so far (0 before any update)."""
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        """Clears the accumulated totals."""
        self.total.assign(ops.zeros((), dtype=self.dtype))
        self.count.assign(ops.zeros((), dtype=self.dtype))

    def get_config(self):
        """Returns the serialisable config (`name`, `dtype`, `from_logits`)."""
        return {**super().get_config(), "from_logits": self.from_logits}
