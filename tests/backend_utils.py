"""Backend-specific helpers for tests: gradients and 64-bit mode (tests only, never the library)."""

import contextlib

import keras
import numpy as np


def float64_mode():
    """Context in which float64 computes in float64 on the current backend (jax needs x64)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def gradients(loss_fn, variables, inputs, traced=False):
    """Gradients of `loss_fn(x)` w.r.t. `variables` and `x`, evaluated at `x = inputs`.

    Returns `(loss, [grad per variable], grad_inputs)` as numpy arrays. `traced=True` runs
    TensorFlow's forward and backward passes as one `tf.function` graph (as `fit` does) rather
    than op by op: the same computation, far cheaper for long sequences (the other backends
    compute as without it).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def loss_and_grads(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = loss_fn(x)
            return loss, tape.gradient(loss, [v.value for v in variables] + [x])

        if traced:
            loss_and_grads = tf.function(loss_and_grads)
        x = tf.constant(inputs)
        loss, grads = loss_and_grads(x)
        grads = [
            np.zeros(v.shape) if g is None else g.numpy() for g, v in zip(grads, variables + [x])
        ]
        return float(loss), grads[:-1], grads[-1]
    if backend == "torch":
        import torch

        for v in variables:
            v.value.grad = None
        x = torch.tensor(inputs, requires_grad=True)
        loss = loss_fn(x)
        loss.backward()
        grads = [
            np.zeros(v.shape) if v.value.grad is None else v.value.grad.detach().cpu().numpy()
            for v in variables
        ]
        return float(loss.detach()), grads, x.grad.detach().cpu().numpy()
    if backend == "jax":
        import jax

        def stateless(values, x):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn(x)

        values = [v.value for v in variables]
        loss, (grad_values, grad_x) = jax.value_and_grad(stateless, argnums=(0, 1))(
            values, jax.numpy.asarray(inputs)
        )
        return float(loss), [np.asarray(g) for g in grad_values], np.asarray(grad_x)
    raise NotImplementedError(backend)
