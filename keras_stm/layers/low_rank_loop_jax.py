"""The low-rank time loop of `keras_stm.STM` with a hand-written backward pass (jax only).

`keras_stm.STM`'s portable low-rank loop (`STM.low_rank_step`, `STM.low_rank_indexed_step`) is
differentiated by jax's autodiff, which computes every weight's gradient inside every time
step: at the paper's sizes each step then runs about a dozen small reductions (the biases, the
LayerNorm gains, the mixing coefficients) and split-K products with a long batch axis and a
small result (`tanh(Mi)^T dG` for the gate kernel), tens of microseconds of GPU time per step
for work that is not recurrent. This module gives the same loop a `jax.custom_vjp` whose
backward pass, like cuDNN's RNNs, carries only what is recurrent (the gradients of `Mi` and
of the pending reads) through the steps, keeps each step's gradient of the weights' inputs,
and forms every weight gradient after the loop in one product over all `T * batch` rows.

The forward pass is the portable step's maths (`STMCell.write_memories`, SAM's projection and
LayerNorm) written out, because the backward pass needs its intermediates (the gates, the
normalised projection and its inverse deviation); OPA's scores come from
`keras_stm.ops.outer_product_attention_scores`. The backward pass is its derivative by hand. `keras_stm.STM` uses it under jax when
`loop_gradient` allows and the configuration is covered (`supports`); tests check it against
jax's autodiff of the portable loop (outputs, memories and every gradient, float64).

Notation (one step, per sample; `d` memory size, `n` queries, `T` steps):
    u, w, gin = projected write vector, read vector, gate input terms
    X = u u^T                      H = tanh(Mi_{t-1})
    G = H Wg + bg + gin            I = sigmoid(G[:, :d] + oi), F = sigmoid(G[:, d:] + of)
    N = I * tanh(X) + F * Mi_{t-1}          (additive write: N = Mi_{t-1} + X)
    S = N + a2 v w^T               v = pending[:, t] (the read of Mr_{t-1})
    P = S Wq + bq                  Pn = LayerNorm over (d, 3n);  Ph = Pn * gamma + beta
    Q, K, V = Ph[:, :n]^T, Ph[:, n:2n]^T, Ph[:, 2n:]   E[j, i, p] = tanh(Q[i, p] K[j, p])
    Mi_t = N + a3 (V (E W1) + b1)   pending <- a1 pending + V (E mixers)
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from keras_stm import ops as stm_ops

# Short names of the mixing coefficients in the weights dict.
_COEFFICIENTS = {"carry": "relational_carry", "read": "relational_read", "transfer": "relational_transfer"}


class _Config(NamedTuple):
    """What the loop's shapes and branches depend on (static under `jax.custom_vjp`)."""

    memory_size: int
    num_queries: int
    gated: bool  # gated item write (else additive)
    reads: bool  # steps read Mr_{t-1} (the pending reads are carried)
    transfer: bool  # the Mr -> Mi transfer is on
    epsilon: float  # SAM's LayerNorm epsilon
    unroll: bool  # Python loop (else lax.scan)


def supports(cell, mask, dtype):
    """Whether the hand-written backward covers this cell, mask and compute dtype."""
    return (
        mask is None
        and cell.sam_steps == 1
        and cell.carry_relational_memory
        and cell.self_attentive_memory.normalization == "joint"
        and str(dtype) in ("float32", "float64")
        and all(str(v.dtype) == str(dtype) for v in cell.trainable_weights)
    )


def weights_of(cell, dtype):
    """The arrays the loop needs from `cell`, as a dict (coefficients as 0-d arrays)."""
    sam = cell.self_attentive_memory
    weights = {
        "qkv_kernel": sam.kernel,
        "qkv_bias": sam.bias,
        "gamma": sam.gamma,
        "beta": sam.beta,
    }
    if cell.gated_write:
        weights.update(
            gate_kernel=cell.gate_memory_kernel,
            gate_bias=cell.gate_memory_bias,
            input_offset=cell.input_gate_offset,
            forget_offset=cell.forget_gate_offset,
        )
    if cell._path_active("relational_transfer"):
        weights.update(transfer_kernel=cell.transfer_kernel, transfer_bias=cell.transfer_bias)
    for short, name in _COEFFICIENTS.items():
        weights[short] = cell.coefficient(name)
    return {
        k: jnp.asarray(getattr(v, "value", v), dtype=dtype) for k, v in weights.items()
    }


def low_rank_loop(cell, projected, item_memory, pending, mixers, unroll):
    """Run the low-rank loop with the hand-written backward.

    Args:
        cell: the `STMCell` (built).
        projected: `(batch, T, projected_size)`, the steps' projected inputs (processing order).
        item_memory: `(batch, d, d)`, `Mi_0`.
        pending: `(batch, d, T)`, `Mr_0 @ mixers`, or None when no step reads `Mr_{t-1}`.
        mixers: `(batch, n*d, T)`, every step's read mixing vector, or None with `pending`.
        unroll: bool, Python loop (True) or `lax.scan`.

    Returns:
        `(Mi_T (batch, d, d), values (batch, T, d, n), scores (batch, T, n, n*d))`.
    """
    dtype = projected.dtype
    config = _Config(
        memory_size=cell.memory_size,
        num_queries=cell.num_queries,
        gated=bool(cell.gated_write),
        reads=pending is not None,
        transfer=cell._path_active("relational_transfer"),
        epsilon=float(cell.self_attentive_memory.epsilon),
        unroll=bool(unroll),
    )
    if pending is None:
        pending = jnp.zeros((projected.shape[0], cell.memory_size, 0), dtype)
        mixers = jnp.zeros((projected.shape[0], cell.num_queries * cell.memory_size, 0), dtype)
    return _loop(config, weights_of(cell, dtype), projected, item_memory, pending, mixers)


def _swap(x):
    return jnp.swapaxes(x, -1, -2)


def _step_forward(config, weights, projected_t, item, pending, mixers, t, last):
    """One step; returns `(item, pending, values, scores, residuals)`."""
    d, n, gated, reads, transfer_on, epsilon, _ = config
    # [u, w, s, gate terms]; w and s only when steps read, the gate terms only when gated
    u = projected_t[:, :d]
    read = projected_t[:, d : 2 * d]
    gate_input = projected_t[:, projected_t.shape[-1] - 2 * d :]
    outer = u[:, :, None] * u[:, None, :]
    res = {"item": item}
    if gated:
        h = jnp.tanh(item)
        gates = h @ weights["gate_kernel"] + (weights["gate_bias"] + gate_input[:, None, :])
        input_gate = jax.nn.sigmoid(gates[..., :d] + weights["input_offset"])
        forget_gate = jax.nn.sigmoid(gates[..., d:] + weights["forget_offset"])
        written = jnp.tanh(outer)
        new_item = input_gate * written + forget_gate * item
        res.update(h=h, input_gate=input_gate, forget_gate=forget_gate, written=written)
    else:
        new_item = item + outer
    sam_input = new_item
    if reads:
        value = _column(pending, t)
        sam_input = new_item + weights["read"] * (value[:, :, None] * read[:, None, :])
        res.update(value=value, pending=pending)
    res["sam_input"] = sam_input
    p = sam_input @ weights["qkv_kernel"] + weights["qkv_bias"]  # (B, d, 3n)
    count = p.shape[-1] * p.shape[-2]
    mean = jnp.sum(p, axis=(-2, -1), keepdims=True) / count
    centered = p - mean
    variance = jnp.sum(jnp.square(centered), axis=(-2, -1), keepdims=True) / count
    rstd = jax.lax.rsqrt(variance + epsilon)
    normed = centered * rstd
    ph = normed * weights["gamma"] + weights["beta"]
    query = _swap(ph[..., :n])  # (B, n, d)
    key = _swap(ph[..., n : 2 * n])
    values = ph[..., 2 * n :]  # (B, d, n)
    scores = stm_ops.outer_product_attention_scores(query, key)  # (B, j, i*d + p)
    e = jnp.reshape(scores, (scores.shape[0], n, n, d))  # E[j, i, p] = tanh(Q[i, p] K[j, p])
    res.update(normed=normed, rstd=rstd, query=query, key=key, e=e)
    if transfer_on:
        z = scores @ weights["transfer_kernel"]  # (B, n, d)
        transfer = values @ z + weights["transfer_bias"]
        new_item = new_item + weights["transfer"] * transfer
        res.update(z=z, transfer=transfer)
    if reads and not last:
        mixed = scores @ mixers  # (B, n, T)
        pending = weights["carry"] * pending + values @ mixed
        res["mixed"] = mixed
    return new_item, pending, values, scores, res


def _column(pending, t):
    if isinstance(t, int):
        return pending[:, :, t]
    return jnp.take(pending, t, axis=2)


def _step_backward(config, weights, mixers, res, t, last, d_item, d_pending, d_values, d_scores):
    """The derivative of `_step_forward` for the recurrent inputs and the step's inputs.

    Returns `(d_item_prev, d_pending_prev, d_projected_t, stash)`, `stash` holding what the
    weight gradients need (summed after the loop)."""
    d, n, gated, reads, transfer_on, epsilon, _ = config
    stash = {}
    d_new = d_item
    if transfer_on:
        # transfer = V Z + b1, contributes a3 * transfer to Mi_t.
        vt_dout = _swap(res["values"]) @ d_new  # (B, n, d) = V^T dMi_t
        stash["transfer_dot"] = jnp.sum(vt_dout * res["z"], axis=(-2, -1)) + jnp.sum(
            jnp.sum(d_new, axis=-2) * weights["transfer_bias"], axis=-1
        )  # <dMi_t, transfer>
        stash["transfer_rows"] = jnp.sum(d_new, axis=-2)  # (B, d): sums of dMi_t over rows
        d_z = weights["transfer"] * vt_dout  # (B, n, d)
        stash["d_z"] = d_z
        d_values = d_values + weights["transfer"] * (d_new @ _swap(res["z"]))
        d_scores = d_scores + d_z @ _swap(weights["transfer_kernel"])
    if reads and not last:
        stash["carry_dot"] = jnp.sum(d_pending * res["pending"], axis=(-2, -1))
        d_mixed = _swap(res["values"]) @ d_pending  # (B, n, T)
        stash["d_mixed"] = d_mixed
        d_values = d_values + d_pending @ _swap(res["mixed"])
        d_scores = d_scores + d_mixed @ _swap(mixers)
        d_pending = weights["carry"] * d_pending
    # Outer product attention scores: e = tanh(K_j * Q_i).
    e = res["e"]
    d_pre = jnp.reshape(d_scores, e.shape) * (1.0 - jnp.square(e))  # (B, j, i, p)
    d_query = jnp.sum(d_pre * res["key"][:, :, None, :], axis=1)  # (B, i, p)
    d_key = jnp.sum(d_pre * res["query"][:, None, :, :], axis=2)  # (B, j, p)
    d_ph = jnp.concatenate([_swap(d_query), _swap(d_key), d_values], axis=-1)  # (B, d, 3n)
    stash["d_ph"] = d_ph
    # LayerNorm over (d, 3n), then the projection.
    normed = res["normed"]
    d_normed = d_ph * weights["gamma"]
    count = normed.shape[-1] * normed.shape[-2]
    mean_d = jnp.sum(d_normed, axis=(-2, -1), keepdims=True) / count
    mean_dn = jnp.sum(d_normed * normed, axis=(-2, -1), keepdims=True) / count
    d_p = res["rstd"] * (d_normed - mean_d - normed * mean_dn)
    stash["d_p"] = d_p
    d_sam = d_p @ _swap(weights["qkv_kernel"])  # (B, d, d)
    d_new = d_new + d_sam
    read = res["projected"][:, d : 2 * d]
    u = res["projected"][:, :d]
    d_read = jnp.zeros_like(read)
    if reads:
        d_sam_read = d_sam @ read[:, :, None]  # (B, d, 1): sum_c dS[p, c] w[c]
        stash["read_dot"] = jnp.sum(res["value"] * d_sam_read[..., 0], axis=-1)
        d_value = weights["read"] * d_sam_read[..., 0]
        d_read = weights["read"] * (_swap(d_sam) @ res["value"][:, :, None])[..., 0]
        d_pending = _add_column(d_pending, d_value, t)
    item = res["item"]
    if gated:
        input_gate, forget_gate = res["input_gate"], res["forget_gate"]
        written = res["written"]
        d_outer = d_new * input_gate * (1.0 - jnp.square(written))
        d_gates = jnp.concatenate(
            [
                d_new * written * input_gate * (1.0 - input_gate),
                d_new * item * forget_gate * (1.0 - forget_gate),
            ],
            axis=-1,
        )  # (B, d, 2d)
        stash["d_gates"] = d_gates
        d_gate_input = jnp.sum(d_gates, axis=-2)  # (B, 2d)
        d_h = d_gates @ _swap(weights["gate_kernel"])
        d_item_prev = d_new * forget_gate + d_h * (1.0 - jnp.square(res["h"]))
    else:
        d_outer = d_new
        d_item_prev = d_new
    # X = u u^T: du_k = sum_c dX[k, c] u_c + sum_p dX[p, k] u_p.
    d_u = ((d_outer + _swap(d_outer)) @ u[:, :, None])[..., 0]
    parts = [d_u]
    if reads:
        parts += [d_read, jnp.zeros((u.shape[0], n), u.dtype)]
    if gated:
        parts.append(d_gate_input)
    d_projected = jnp.concatenate(parts, axis=-1)
    return d_item_prev, d_pending, d_projected, stash


def _add_column(pending, value, t):
    if isinstance(t, int):
        return pending.at[:, :, t].add(value)
    one_hot = (jnp.arange(pending.shape[-1]) == t).astype(pending.dtype)
    return pending + value[:, :, None] * one_hot


def _forward_all(config, weights, projected, item, pending, mixers):
    """All steps. Returns `(Mi_T, values (T, B, d, n), scores (T, B, n, n*d), residuals)`:
    the residuals are a list of per-step dicts (Python loop, the last step has no pending
    update) or one dict of stacked arrays (`lax.scan`)."""
    steps = projected.shape[1]
    if config.unroll:
        values, scores, res = [], [], []
        for t in range(steps):
            item, pending, values_t, scores_t, res_t = _step_forward(
                config, weights, projected[:, t], item, pending, mixers, t, t == steps - 1
            )
            res_t.update(values=values_t, projected=projected[:, t])
            values.append(values_t)
            scores.append(scores_t)
            res.append(res_t)
        return item, jnp.stack(values), jnp.stack(scores), res

    def body(carry, xs):
        item, pending = carry
        projected_t, t = xs
        new_item, new_pending, values, scores, res = _step_forward(
            config, weights, projected_t, item, pending, mixers, t, False
        )
        res.update(values=values, projected=projected_t)
        return (new_item, new_pending), (values, scores, res)

    (item, _), (values, scores, res) = jax.lax.scan(
        body, (item, pending), (jnp.swapaxes(projected, 0, 1), jnp.arange(steps))
    )
    return item, values, scores, res


def _stacked(res, key, steps=None):
    """Residual `key` of every step (or of the first `steps`), stacked on a leading axis."""
    if isinstance(res, list):
        return jnp.stack([r[key] for r in res[:steps]])
    return res[key] if steps is None else res[key][:steps]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _loop(config, weights, projected, item, pending, mixers):
    item, values, scores, _ = _forward_all(config, weights, projected, item, pending, mixers)
    return item, jnp.swapaxes(values, 0, 1), jnp.swapaxes(scores, 0, 1)


def _loop_forward(config, weights, projected, item, pending, mixers):
    item, values, scores, res = _forward_all(config, weights, projected, item, pending, mixers)
    saved = (weights, mixers, scores, res)
    return (item, jnp.swapaxes(values, 0, 1), jnp.swapaxes(scores, 0, 1)), saved


def _loop_backward(config, saved, cotangents):
    weights, mixers, scores, res = saved
    d, n, gated, reads, transfer_on, epsilon, unroll = config
    d_item, d_values, d_scores = cotangents
    d_values = jnp.swapaxes(d_values, 0, 1)  # (T, B, d, n)
    d_scores = jnp.swapaxes(d_scores, 0, 1)
    steps = d_values.shape[0]
    d_pending = jnp.zeros((d_item.shape[0], d, mixers.shape[-1]), d_item.dtype)
    if unroll:
        stash, d_projected = [None] * steps, [None] * steps
        for t in reversed(range(steps)):
            d_item, d_pending, d_projected[t], stash[t] = _step_backward(
                config, weights, mixers, res[t], t, t == steps - 1,
                d_item, d_pending, d_values[t], d_scores[t],
            )
        d_projected = jnp.stack(d_projected, axis=1)
    else:
        # Under lax.scan every step updates the pending reads (the last one's update is never
        # read: its cotangent is zero), so every step has the same residuals.
        def body(carry, xs):
            d_item, d_pending = carry
            res_t, d_values_t, d_scores_t, t = xs
            d_item, d_pending, d_projected_t, stash_t = _step_backward(
                config, weights, mixers, res_t, t, False, d_item, d_pending, d_values_t, d_scores_t
            )
            return (d_item, d_pending), (d_projected_t, stash_t)

        (d_item, d_pending), (d_projected, stash) = jax.lax.scan(
            body, (d_item, d_pending), (res, d_values, d_scores, jnp.arange(steps)), reverse=True
        )
        d_projected = jnp.swapaxes(d_projected, 0, 1)
    return (
        _weight_gradients(config, weights, scores, res, stash),
        d_projected,
        d_item,
        d_pending,
        _mixer_gradient(scores, stash, mixers),
    )


def _mixer_gradient(scores, stash, mixers):
    """`d mixers = sum_t scores_t^T d_mixed_t`, one product with `T * n` rows per sample."""
    steps = _count(stash, "d_mixed")
    if not steps:
        return jnp.zeros_like(mixers)
    return jnp.einsum("tbjk,tbjm->bkm", scores[:steps], _stacked(stash, "d_mixed", steps))


def _count(stash, key):
    """How many steps have `key` in their stash (the first ones)."""
    if isinstance(stash, list):
        return sum(key in s for s in stash)
    return stash[key].shape[0] if key in stash else 0


def _weight_gradients(config, weights, scores, res, stash):
    """Every weight's gradient, each one product or sum over all steps at once."""
    d, n, gated, reads, transfer_on, epsilon, unroll = config
    grads = {k: jnp.zeros_like(v) for k, v in weights.items()}

    def rows(x):  # (T, B, rows, cols) -> (T * B * rows, cols)
        return jnp.reshape(x, (-1, x.shape[-1]))

    d_p = _stacked(stash, "d_p")
    d_ph = _stacked(stash, "d_ph")
    grads["qkv_kernel"] = _swap(rows(_stacked(res, "sam_input"))) @ rows(d_p)
    grads["qkv_bias"] = jnp.sum(d_p, axis=(0, 1, 2))
    grads["gamma"] = jnp.sum(d_ph * _stacked(res, "normed"), axis=(0, 1))
    grads["beta"] = jnp.sum(d_ph, axis=(0, 1))
    if gated:
        d_gates = _stacked(stash, "d_gates")
        grads["gate_kernel"] = _swap(rows(_stacked(res, "h"))) @ rows(d_gates)
        grads["gate_bias"] = jnp.sum(d_gates, axis=(0, 1, 2))
        grads["input_offset"] = jnp.sum(d_gates[..., :d])
        grads["forget_offset"] = jnp.sum(d_gates[..., d:])
    if transfer_on:
        grads["transfer_kernel"] = _swap(rows(scores)) @ rows(_stacked(stash, "d_z"))
        grads["transfer_bias"] = weights["transfer"] * jnp.sum(
            _stacked(stash, "transfer_rows"), axis=(0, 1)
        )
        grads["transfer"] = jnp.sum(_stacked(stash, "transfer_dot"))
    if reads:
        grads["read"] = jnp.sum(_stacked(stash, "read_dot"))
        steps = _count(stash, "carry_dot")
        if steps:
            grads["carry"] = jnp.sum(_stacked(stash, "carry_dot", steps))
    return grads


_loop.defvjp(_loop_forward, _loop_backward)
