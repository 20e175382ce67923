"""How `keras_stm.STM` runs its time loop: plain functions, private to the layer.

The maths of a step lives in `STMCell` (`_write_memories`, `_update_memories`, ...: methods
private to the `keras_stm.layers` package, used here and by `STM`); this module
only decides in which order and with which carried tensors the steps run, as Haiku's
`dynamic_unroll` runs a core. Two loop forms remain, both tested against
`keras.layers.RNN(STMCell)`:

* the dense form (`_dense_step`) carries `Mr` value-major and flat; when no step reads
  `Mr_{t-1}` it carries SAM's two small factors of the latest step instead (`_factored_step`);
* the low-rank form (`_low_rank_step`) never builds `Mr` inside the loop: it carries the reads
  still to come and keeps SAM's factors of every step, then forms the last `Mr` in one product
  (`_carried_factors`). It runs in a Python loop (the step index is known when the loop is
  built) and updates the pending reads in blocks of `_LOW_RANK_BLOCK` steps.

One driver (`_scan`) runs a step over the time axis: a backend's compiled loop
(`_backend_scan`: `ops.scan` under jax, Keras' loop under tensorflow) or, where there is none
(`NotImplementedError`, as Keras' `backend/<name>/rnn.py::lstm`) or with `unroll`, a Python
loop. `_plan` is the one place where the fastest correct form is chosen.
"""

import keras
from keras import ops
from keras import tree

from keras_stm import ops as stm_ops

LOOPS = ("auto", "dense", "low_rank")

# Steps per block of the pending reads in the low-rank loop (speed only: the same sums in
# another order). bAbI (T 70) on an H200, jax, unrolled: 38.99 ms per iteration with blocks of
# 8 against 48.36 ms with one block (docs/performance_archive.md, session 7).
_LOW_RANK_BLOCK = 8


def _on_jax_gpu():
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "gpu"


def _on_torch():
    return keras.backend.backend() == "torch"


def _plan(cell, steps, loop, unroll, return_sequences):
    """`(form, unroll)` for a sequence of `steps` steps: the one choice of how the loop runs.

    `form` is `"factored"` (no step reads `Mr_{t-1}`), `"dense"` or `"low_rank"`. With
    `loop="auto"`: on a jax GPU, with a known number of steps, the loop is unrolled (1.2-1.4x
    faster at the paper's sizes, docs/performance.md) and, where a step reads or carries `Mr`,
    runs the low-rank form (copy 26.3 -> 21.5 ms, Nth-farthest 7.6 -> 5.1 ms through
    `train_on_batch`, docs/performance_archive.md, sessions 3 and 4). Under torch the low-rank
    form runs for a last output up to T = d/4 (Nth-farthest through `fit`: 32.37 -> 27.83 ms on
    an H100, 93 -> 59 ms on the 2-core CPU, docs/performance.md, session 13; at T ~ d/2 it
    measured slower). Elsewhere the dense form runs as asked (`unroll`).
    """
    low_rank_applies = (
        cell._uses_previous_relational_memory and not return_sequences and cell.sam_steps == 1
    )
    if loop == "low_rank":
        if not low_rank_applies:
            raise ValueError(
                "`loop='low_rank'` needs a step that reads or carries the relational memory, "
                "`return_sequences=False` and `sam_steps=1`."
            )
        if steps is None:
            raise ValueError(
                "`loop='low_rank'` needs a known number of timesteps; got inputs with an "
                "undefined time axis. Give the Input a fixed length or use `loop='auto'`."
            )
        return "low_rank", True
    if not cell._uses_previous_relational_memory:
        form = "factored"
    else:
        form = "dense"
    if loop == "auto" and steps is not None and _on_jax_gpu():
        unroll = True
        if low_rank_applies and steps <= 2 * cell.memory_size:
            form = "low_rank"
    elif loop == "auto" and steps is not None and _on_torch():
        if low_rank_applies and steps <= cell.memory_size // 4:
            form, unroll = "low_rank", True
    return form, unroll


def run(cell, projected, mask, initial_relational, item_memory, form, unroll, collect):
    """The time loop over the projected inputs `(batch, T, projected_size)`.

    Args:
        cell: the built `STMCell`.
        projected: every step's projected input, in processing order.
        mask: optional boolean `(batch, T)`.
        initial_relational: `Mr_0` value-major `(batch, d, nq*d)`.
        item_memory: `Mi_0` flat `(batch, d*d)`.
        form, unroll: from `_plan`.
        collect: bool, also return every step's `Mr` (value-major, `(batch, T, d, nq*d)`).

    Returns:
        `(Mr_T value-major (batch, d, nq*d), Mi_T flat (batch, d*d), Mr sequence or None)`.
    """
    d, nq = cell.memory_size, cell.num_queries
    if form == "low_rank":
        relational, item_memory = _low_rank_loop(
            cell, projected, mask, initial_relational, item_memory
        )
        return relational, item_memory, None
    batch = ops.shape(projected)[0]
    factored = form == "factored"
    if factored:
        relational = ops.zeros((batch, nq * d * (nq + 1)), dtype=item_memory.dtype)
    else:
        relational = ops.reshape(initial_relational, (-1, nq * d * d))

    def step(t, projected_t, carry, keep):
        relational, item = carry
        new = (_factored_step if factored else _dense_step)(cell, projected_t, relational, item)
        if keep is not None:
            new = tuple(ops.where(keep, n, o) for n, o in zip(new, carry))
        return new, (new[0] if collect else None)

    (relational, item_memory), sequence = _scan(
        step, (relational, item_memory), projected, mask, collect, unroll
    )
    if factored:
        # A step writes Mr_t = its factors' product; before the first unmasked step the
        # memory is still the initial one.
        relational = _factors_to_memory(cell, relational)
        if mask is not None:
            written = ops.reshape(ops.any(mask, axis=1), (-1, 1, 1))
            relational = ops.where(written, relational, initial_relational)
        if sequence is not None:
            sequence = _factors_to_memory(cell, sequence)
    else:
        relational = ops.reshape(relational, (-1, d, nq * d))
        if sequence is not None:
            sequence = ops.reshape(sequence, (batch, -1, d, nq * d))
    return relational, item_memory, sequence


# ---------------------------------------------------------------------------- driver
def _scan(step, carry, inputs, mask, collect, unroll):
    """Run `step(t, inputs_t, carry, keep) -> (carry, output_t)` over axis 1 of `inputs`.

    Returns `(carry, outputs (batch, T, ...) or None)`. A backend's compiled loop
    (`_backend_scan`) unless `unroll`; a Python loop where the backend has none.
    """
    if not unroll:
        try:
            return _backend_scan(step, carry, inputs, mask, collect)
        except NotImplementedError:
            pass
    return _python_loop(step, carry, inputs, mask, collect)


def _backend_scan(step, carry, inputs, mask, collect):
    """The backend's compiled loop; `NotImplementedError` where there is none (torch)."""
    backend = keras.backend.backend()
    if backend == "jax":
        keep = None if mask is None else ops.expand_dims(ops.moveaxis(mask, 1, 0), -1)

        def scan_step(carry, xs):
            return step(None, xs[0], carry, xs[1])

        carry, outputs = ops.scan(scan_step, carry, (ops.moveaxis(inputs, 1, 0), keep))
        return carry, None if outputs is None else ops.moveaxis(outputs, 0, 1)
    if backend == "tensorflow":
        size = len(carry)

        def rnn_step(inputs_t, states):
            new, output = step(None, inputs_t, tuple(states), None)
            # Without `collect` the first carried tensor stands for the step's output.
            return (output if collect else new[0]), list(new)

        _, outputs, carry = keras.src.backend.rnn(
            rnn_step,
            inputs,
            list(carry),
            mask=mask,
            input_length=inputs.shape[1],
            return_all_outputs=collect,
        )
        return tuple(carry[:size]), outputs if collect else None
    raise NotImplementedError(backend)


def _python_loop(step, carry, inputs, mask, collect):
    if inputs.shape[1] is None:
        raise ValueError(
            "`unroll=True` needs a known number of timesteps; got inputs with an undefined "
            "time axis. Give the Input a fixed length or use `unroll=False`."
        )
    outputs = []
    for t in range(inputs.shape[1]):
        keep = None if mask is None else mask[:, t : t + 1]
        carry, output = step(t, inputs[:, t], carry, keep)
        if collect:
            outputs.append(output)
    if not outputs:
        return carry, None
    # Each step's output is a tensor, or a tuple of them (the low-rank step).
    return carry, tree.map_structure(lambda *o: ops.stack(o, axis=1), *outputs)


# ---------------------------------------------------------------------------- dense form
def _dense_step(cell, projected_t, relational_flat, item_flat):
    """One step on flat memories, `Mr` value-major: `(Mr_t flat, Mi_t flat)`."""
    d, nq = cell.memory_size, cell.num_queries
    relational = ops.reshape(relational_flat, (-1, d, nq * d))
    item, relational = cell._update_memories(
        projected_t, ops.reshape(item_flat, (-1, d, d)), relational
    )
    return ops.reshape(relational, (-1, nq * d * d)), ops.reshape(item, (-1, d * d))


def _factored_step(cell, projected_t, factors_flat, item_flat):
    """One step when no step reads `Mr_{t-1}`: `(flat factors of Mr_t, Mi_t flat)`."""
    d = cell.memory_size
    item, (values, scores) = cell._update_memories(
        projected_t, ops.reshape(item_flat, (-1, d, d)), None, factored=True
    )
    return _flatten_factors(cell, values, scores), ops.reshape(item, (-1, d * d))


def _flatten_factors(cell, values, scores):
    d, nq = cell.memory_size, cell.num_queries
    return ops.concatenate(
        [ops.reshape(values, (-1, d * nq)), ops.reshape(scores, (-1, nq * nq * d))], axis=-1
    )


def _factors_to_memory(cell, factors):
    """Flat factors `(..., d*nq + nq*nq*d)` -> value-major `Mr` `(..., d, nq*d)`."""
    d, nq = cell.memory_size, cell.num_queries
    lead = tuple(ops.shape(factors)[:-1])
    flat = ops.reshape(factors, (-1, factors.shape[-1]))
    values = ops.reshape(flat[:, : d * nq], (-1, d, nq))
    scores = ops.reshape(flat[:, d * nq :], (-1, nq, nq * d))
    return ops.reshape(stm_ops.matmul(values, scores), lead + (d, nq * d))


# ---------------------------------------------------------------------------- low-rank form
def _low_rank_loop(cell, projected, mask, initial_relational, item_memory):
    """The low-rank loop and the last `Mr` from the kept factors.

    `Mr_t = α1 Mr_{t-1} + R_t` with `R_t = values_t @ scores_t`, and every read
    `v_t = Mr_{t-1} @ m_t` with a mixing vector `m_t` of the input alone
    (`STMCell._read_mixer`): the loop carries the pending reads `Mr_t @ [m_1 .. m_T]` and
    updates them with each step's factors; after the loop
    `Mr_T = c_0 Mr_0 + sum_t c_t R_t` (`_carried_factors`).

    Returns:
        `(Mr_T value-major (batch, d, nq*d), Mi_T flat (batch, d*d))`.
    """
    mixers = pending = None
    if cell._reads_relational_memory:
        mixers = ops.moveaxis(cell._read_mixer(projected), 1, 2)  # (B, nq*d, T)
        pending = stm_ops.matmul(initial_relational, mixers)  # (B, d, T)
    reads = None if pending is None else (pending, None, None, ())

    def step(t, projected_t, carry, keep):
        reads, item = carry
        reads, item, factors = _low_rank_step(cell, t, projected_t, reads, item, keep, mixers)
        return (reads, item), factors

    (_, item_memory), (values, scores) = _python_loop(
        step, (reads, item_memory), projected, mask, True
    )
    values, scores, initial_weight = _carried_factors(cell, values, scores, mask)
    relational = stm_ops.matmul(values, scores)
    return relational + initial_weight * initial_relational, item_memory


def _low_rank_step(cell, t, projected_t, reads, item_flat, keep, mixers):
    """Step `t` of the low-rank loop.

    The step reads its own column of the pending reads. The pending reads are updated in
    blocks of `_LOW_RANK_BLOCK` steps: inside a block each step updates only the block's own
    columns, `local <- α1 local + values_t @ (scores_t @ [m_b0 .. m_b1])`; at the block's end
    the columns of the later steps take the whole block in one product,
    `pending <- (Π α1) pending + [c_t values_t]_t @ ([scores_t]_t @ [m_b1+1 .. m_T])`.

    Args:
        t: int, the step index (processing order).
        projected_t: `(batch, projected_size)`.
        reads: None when no step reads `Mr_{t-1}`, else `(pending (batch, d, T - b0), local
            (batch, d, block), block_mixers (batch, nq*d, block), block steps so far as
            (values, scores, keep))`; at `t = 0`, `(Mr_0 @ mixers, None, None, ())`.
        item_flat: `(batch, d*d)`, `Mi_{t-1}`.
        keep: optional boolean `(batch, 1)`: False keeps the previous memories (masking).
        mixers: `(batch, nq*d, T)`, every step's mixing vector as a column.

    Returns:
        `(reads, item_flat, (values (batch, d, nq), scores (batch, nq, nq*d)))`.
    """
    if reads is None:
        _, item, values, scores = _low_rank_write(
            cell, projected_t, None, None, item_flat, keep, None
        )
        return None, item, (values, scores)
    steps = mixers.shape[-1]
    first = t - t % _LOW_RANK_BLOCK
    width = min(_LOW_RANK_BLOCK, steps - first)
    if t == first:
        pending = reads[0]
        reads = (pending, pending[:, :, :width], mixers[:, :, first : first + width], ())
    pending, local, block_mixers, block = reads
    value = local[:, :, t - first]  # v_t = Mr_{t-1} @ m_t
    last_of_block = t == first + width - 1
    local, item, values, scores = _low_rank_write(
        cell, projected_t, value, local, item_flat, keep, block_mixers, update=not last_of_block
    )
    block = block + ((values, scores, keep),)
    if last_of_block and first + width < steps:
        pending = _block_update(cell, pending[:, :, width:], block, mixers[:, :, first + width :])
    return (pending, local, block_mixers, block), item, (values, scores)


def _block_update(cell, pending, block, mixers):
    """The pending reads of the later steps after a block:
    `(Π decay) pending + [c_t values_t]_t @ ([scores_t]_t @ mixers)`."""
    values = ops.stack([values for values, _, _ in block], axis=1)
    scores = ops.stack([scores for _, scores, _ in block], axis=1)
    mask = None
    if block[0][2] is not None:
        mask = ops.concatenate([keep for _, _, keep in block], axis=1)
    values, scores, carried = _carried_factors(cell, values, scores, mask)
    return carried * pending + stm_ops.matmul(values, stm_ops.matmul(scores, mixers))


def _low_rank_write(cell, projected_t, value, pending, item_flat, keep, mixers, update=True):
    """`STMCell._write_memories`, then `pending <- α1 pending + values @ (scores @ mixers)`
    (when `update` and `pending` is not None); masked samples keep `Mi` and `pending`.

    Returns `(pending, item_flat, values, scores)`."""
    d = cell.memory_size
    item, factors = cell._write_memories(projected_t, ops.reshape(item_flat, (-1, d, d)), value)
    values, scores = factors[0]
    item = ops.reshape(item, (-1, d * d))
    if keep is not None:
        item = ops.where(keep, item, item_flat)
    if pending is not None and update:
        updated = cell._coefficient("relational_carry") * pending
        updated = updated + stm_ops.matmul(values, stm_ops.matmul(scores, mixers))
        if keep is not None:
            updated = ops.where(ops.expand_dims(keep, -1), updated, pending)
        pending = updated
    return pending, item, values, scores


def _carried_factors(cell, values, scores, mask):
    """The factors of `K` steps weighted for `Σ_t c_t R_t` with `R_t = values_t @ scores_t`,
    `c_t = Π_{u > t} decay_u` (0 for a masked step), `decay_u = α1` (1 for a masked step).

    Args:
        values: `(batch, K, d, nq)`; scores: `(batch, K, nq, nq*d)`.
        mask: optional boolean `(batch, K)`, True where the step ran.

    Returns:
        `(c_t * values (batch, d, K*nq), scores (batch, K*nq, nq*d), Π_u decay_u
        (batch, 1, 1))`.
    """
    d, nq = cell.memory_size, cell.num_queries
    steps = values.shape[1]
    dtype = values.dtype
    batch = ops.shape(values)[0]
    decay = ops.zeros((batch, steps), dtype=dtype) + ops.cast(
        cell._coefficient("relational_carry"), dtype
    )
    written = ops.ones((batch, steps), dtype=dtype)
    if mask is not None:
        decay = ops.where(mask, decay, ops.ones_like(decay))
        written = ops.cast(mask, dtype)
    positions = ops.arange(steps)
    later = ops.expand_dims(ops.expand_dims(positions, 1) < ops.expand_dims(positions, 0), 0)
    # [., t, u] = u > t; dtype given: Keras 3.15's torch `prod` computes float64 in float32.
    suffix = ops.prod(ops.where(later, ops.expand_dims(decay, 1), 1.0), axis=-1, dtype=dtype)
    values = values * ops.reshape(suffix * written, (-1, steps, 1, 1))
    values = ops.reshape(ops.moveaxis(values, 1, 2), (-1, d, steps * nq))
    scores = ops.reshape(scores, (-1, steps * nq, nq * d))
    return values, scores, ops.reshape(decay[:, 0] * suffix[:, 0], (-1, 1, 1))
