"""The `STM` recurrent layer: `keras.layers.RNN` over an `STMCell`, with a lean inner loop."""

import numbers

import keras
from keras import ops
from keras import tree

from keras_stm import ops as stm_ops
from keras_stm.layers.stm_cell import STMCell

_CELL_ARGS = (
    "num_queries",
    "memory_size",
    "relation_size",
    "readout_size",
    "head_units",
    "head_hidden_units",
    "gated_write",
    "sam_steps",
    "relational_carry",
    "relational_read",
    "relational_transfer",
    "projector_hidden_units",
    "learn_initial_memory",
    "sam_normalization",
    "readout_normalization",
    "carry_relational_memory",
    "layer_norm_epsilon",
    "kernel_initializer",
    "bias_initializer",
    "dropout",
    "seed",
    "kernel_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "bias_constraint",
)


TORCH_COMPILE = (None, "step", "loop", "layer")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes with CUDA graphs
RELATIONAL_MEMORY_LOOPS = ("auto", "dense", "low_rank")
LOOP_GRADIENTS = ("auto", "autodiff", "manual")


@keras.saving.register_keras_serializable(package="keras_stm")
class STM(keras.layers.RNN):
    """Self-attentive associative memory recurrent layer (an `STMCell` in an RNN).

    Runs `STMCell` over a sequence, as `keras.layers.LSTM` runs `LSTMCell`, and gives the same
    numbers as `keras.layers.RNN(STMCell(...))`, faster: the input projections of all steps
    are computed before the loop in one product, the loop carries only the two memories (no
    per-step output unless `return_sequences`), and the read-out (and head) are computed after
    the loop, once for the last step, or for all steps in one batched product when
    `return_sequences=True`. When no step reads `Mr_{t-1}` (a fixed zero `relational_carry`
    and `relational_read`, as in RAR, or `carry_relational_memory=False`), the loop carries
    SAM's two small factors instead of `Mr` and multiplies them once at the end. When steps do
    read or carry `Mr`, the low-rank loop (`relational_memory_loop`) carries the reads still to
    come instead of `Mr`, and forms the last `Mr` after the loop.

    The recurrence is the cell's (see `STMCell` for the equations).

    Args:
        num_queries: int, number of SAM queries (relational slots). Defaults to 8.
        memory_size: int, side `d` of the item memory and of each slot. Defaults to 96.
        relation_size: int, size `r` of each slot's read-out projection. Defaults to 96.
        readout_size: int, size `a` of the read-out `o_t`. Defaults to 64.
        head_units: int or None, output size of the authors' head; None (default) outputs `o_t`.
        head_hidden_units: int, width of the head's two ReLU layers. Defaults to 128.
        gated_write: bool, gated (True, default) or additive item write.
        sam_steps: int, SAM iterations per step, sharing weights. Defaults to 1.
        relational_carry: `"learned"` (default) or a number, the carry `α1` of `Mr`.
        relational_read: `"learned"` (default) or a number, `α2`, weight of the `Mr` read.
        relational_transfer: `"learned"` (default) or a number, `α3`, the `Mr -> Mi` transfer.
        projector_hidden_units: int or None, hidden width of 3-layer linear input projectors;
            None (default) for single linear projectors.
        learn_initial_memory: bool, learned (True, default) or zero initial memories.
        sam_normalization: `"joint"` (default) or `"row"` (RL variant) SAM LayerNorm.
        readout_normalization: bool, LayerNorm on `o_t` (RL variant). Defaults to False.
        carry_relational_memory: bool, False drops `Mr` between steps (RL variant). Default True.
        layer_norm_epsilon: float, LayerNorm epsilon. Defaults to `1e-5`.
        kernel_initializer: kernel initializer, or None (default) for PyTorch's default.
        bias_initializer: bias initializer, or None (default) for PyTorch's default.
        dropout: float in [0, 1), the fraction of the input features dropped in training,
            one mask per sequence, the same at every step (as `keras.layers.LSTM`). Default 0.
        seed: int or None, the seed of the dropout masks. Defaults to None.
        kernel_regularizer: regularizer of every kernel, or None (default).
        bias_regularizer: regularizer of every bias, or None (default).
        kernel_constraint: constraint on every kernel, or None (default).
        bias_constraint: constraint on every bias, or None (default).
        return_sequences: bool, return the output of every step (True) or of the last (False,
            default).
        return_state: bool, also return the final states `[output (batch, output_size),
            item_memory (batch, d, d), relational_memory (batch, nq, d, d)]`. Default False.
        go_backwards: bool, process the sequence backwards. Default False.
        stateful: bool, carry the final states of a batch into the next batch. Default False.
        unroll: bool, unroll the time loop. Default False. Under jax on a GPU, unrolling
            removes the loop's per-step overhead (1.2-1.4x faster at the paper's sizes, T 8
            to 70) at the price of a longer compile (30-70 s); see docs/performance.md.
        zero_output_for_mask: bool, whether masked steps of the output sequence are zeros.
            Default False (they repeat the previous output).
        torch_compile: None (default), `"step"`, `"loop"` or `"layer"`; torch backend only,
            ignored by jax and tensorflow (which compile the whole loop with `jit_compile`).
            `"step"` runs each time step through `torch.compile`; `"loop"` compiles the whole
            time loop (unrolled: one forward and one backward graph, compile time grows with
            the number of steps: 275 s for copy's dense loop, T 42, on an H200 machine's
            host); `"layer"` compiles the layer's whole computation (input
            projections, loop, read-out and head) into one graph. The maths is the
            portable `keras.ops` step either way. Each new input shape compiles anew.
        torch_compile_mode: None (default) or a `torch.compile` mode, e.g.
            `"reduce-overhead"` (CUDA graphs: the fastest torch setting measured on a GPU,
            with `torch_compile="loop"` or `"layer"`) or `"max-autotune-no-cudagraphs"`.
            With a CUDA-graph mode the compiled results are copied out of the graph's memory
            pool, so returned states stay valid after the next call.
        relational_memory_loop: `"auto"` (default), `"dense"` or `"low_rank"`: how the loop
            carries the relational memory when steps read or carry it. `"dense"` carries
            `Mr` (`nq d^2` numbers per sample). `"low_rank"` never builds `Mr` inside the
            loop: it carries the reads still to come (`d T` numbers) and keeps SAM's factors
            of each step, then forms the last `Mr` in one product (see `low_rank_step`, and
            `low_rank_indexed_step` for Python loops: torch and `unroll=True`, which update
            the reads in blocks of `STM.low_rank_block_size` steps); same numbers, a
            fraction of the memory traffic while `T` is not much larger than `d`.
            It needs `return_sequences=False`, `sam_steps=1` and a known number of steps.
            `"auto"` takes `"low_rank"` when those hold and `T <= 2 d` (jax) or `T <= d / 4`
            (torch and tensorflow, where the low-rank loop measured slower at `T ~ d/2`; see
            docs/performance.md), else `"dense"`.
        loop_gradient: `"auto"` (default), `"manual"` or `"autodiff"`: how jax differentiates
            the low-rank loop; ignored by torch and tensorflow. `"manual"` runs the loop with
            a hand-written backward pass (`keras_stm.layers.low_rank_loop_jax`) that carries
            only the recurrent gradients through the steps and forms every weight gradient
            after the loop in one product over all steps; it covers unmasked float32 and
            float64 calls with the joint SAM normalisation, and falls back to autodiff
            otherwise (masks, mixed precision). `"auto"` uses it where it measured faster
            on an H200: gated write with the transfer on (associative retrieval 11%, copy 2%;
            Nth-farthest and bAbI were 4-8% slower with it). `"autodiff"` never does; use it
            for forward-mode derivatives (`jax.jvp`, Hessians), which a custom backward pass
            does not support.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        sequences: tensor of shape `(batch, timesteps, input_size)`.
        initial_state: optional list `[output, item_memory, relational_memory]`; the memories
            may be given flat `(batch, d*d)`, `(batch, nq*d*d)` or as matrices.
        mask: optional boolean tensor `(batch, timesteps)`; masked steps keep the state.
        training: bool, whether to apply `dropout` to the inputs.

    Masking: supported (e.g. from `Embedding(mask_zero=True)`) on every backend, with or
    without `jit_compile`, `unroll` and `go_backwards`.

    Example:

    >>> import numpy as np, keras_stm
    >>> stm = keras_stm.STM(num_queries=2, memory_size=8, relation_size=8, readout_size=16,
    ...                     head_units=4, return_state=True)
    >>> y, last, item_memory, relational_memory = stm(np.zeros((3, 5, 7), "float32"))
    >>> tuple(y.shape), tuple(item_memory.shape), tuple(relational_memory.shape)
    ((3, 4), (3, 8, 8), (3, 2, 8, 8))

    References:
        Le, Tran, Venkatesh. Self-Attentive Associative Memory. ICML 2020.
    """

    # Steps per block of the pending reads in the low-rank loop's Python form
    # (`low_rank_indexed_step`); a class attribute, not a constructor argument: it changes
    # speed only (the same sums in another order). A block as long as the sequence updates
    # every column at every step.
    low_rank_block_size = 8

    def __init__(
        self,
        num_queries=8,
        memory_size=96,
        relation_size=96,
        readout_size=64,
        head_units=None,
        head_hidden_units=128,
        gated_write=True,
        sam_steps=1,
        relational_carry="learned",
        relational_read="learned",
        relational_transfer="learned",
        projector_hidden_units=None,
        learn_initial_memory=True,
        sam_normalization="joint",
        readout_normalization=False,
        carry_relational_memory=True,
        layer_norm_epsilon=1e-5,
        kernel_initializer=None,
        bias_initializer=None,
        dropout=0.0,
        seed=None,
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        zero_output_for_mask=False,
        torch_compile=None,
        torch_compile_mode=None,
        relational_memory_loop="auto",
        loop_gradient="auto",
        **kwargs,
    ):
        if torch_compile not in TORCH_COMPILE:
            raise ValueError(f"`torch_compile` must be one of {TORCH_COMPILE}, got {torch_compile!r}.")
        if torch_compile_mode is not None and not isinstance(torch_compile_mode, str):
            raise ValueError(
                f"`torch_compile_mode` must be None or a torch.compile mode name, got "
                f"{torch_compile_mode!r}."
            )
        if relational_memory_loop not in RELATIONAL_MEMORY_LOOPS:
            raise ValueError(
                f"`relational_memory_loop` must be one of {RELATIONAL_MEMORY_LOOPS}, got "
                f"{relational_memory_loop!r}."
            )
        if loop_gradient not in LOOP_GRADIENTS:
            raise ValueError(
                f"`loop_gradient` must be one of {LOOP_GRADIENTS}, got {loop_gradient!r}."
            )
        if relational_memory_loop == "low_rank" and (return_sequences or sam_steps != 1):
            raise ValueError(
                "`relational_memory_loop='low_rank'` needs `return_sequences=False` and "
                f"`sam_steps=1`, got return_sequences={return_sequences!r}, "
                f"sam_steps={sam_steps!r}."
            )
        cell = STMCell(
            num_queries=num_queries,
            memory_size=memory_size,
            relation_size=relation_size,
            readout_size=readout_size,
            head_units=head_units,
            head_hidden_units=head_hidden_units,
            gated_write=gated_write,
            sam_steps=sam_steps,
            relational_carry=relational_carry,
            relational_read=relational_read,
            relational_transfer=relational_transfer,
            projector_hidden_units=projector_hidden_units,
            learn_initial_memory=learn_initial_memory,
            sam_normalization=sam_normalization,
            readout_normalization=readout_normalization,
            carry_relational_memory=carry_relational_memory,
            layer_norm_epsilon=layer_norm_epsilon,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            dropout=dropout,
            seed=seed,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            dtype=kwargs.get("dtype"),
            name="stm_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            zero_output_for_mask=zero_output_for_mask,
            **kwargs,
        )
        self.input_spec = keras.layers.InputSpec(ndim=3)
        self.torch_compile = torch_compile
        self.torch_compile_mode = torch_compile_mode
        self.relational_memory_loop = relational_memory_loop
        self.loop_gradient = loop_gradient
        self._compiled = {}

    def _compiled_function(self, kind, function, tensor=None):
        """`function`, or its torch.compile'd version when `torch_compile == kind` under torch
        (not for `tensor` on torch's meta device: Keras' shape inference runs eagerly)."""
        if self.torch_compile != kind or keras.backend.backend() != "torch":
            return function
        if tensor is not None and tensor.device.type == "meta":
            return function
        key = (kind, function.__name__)
        if key not in self._compiled:
            import torch

            self._compiled[key] = torch.compile(function, dynamic=False, mode=self.torch_compile_mode)
        return self._compiled[key]

    def loop_step(self, projected_t, relational_flat, item_flat, keep=None, factored=False):
        """One step of the dense (or factored) time loop on flat memories.

        Args:
            projected_t: `(batch, projected_size)`, the step's projected input.
            relational_flat: `(batch, nq*d*d)`, `Mr_{t-1}` value-major and flat, or with
                `factored`, the flat factors `[values (d*nq), scores (nq*nq*d)]` of the
                previous step (unused).
            item_flat: `(batch, d*d)`, `Mi_{t-1}` flat.
            keep: optional boolean `(batch, 1)`: False keeps the previous memories (masking).
            factored: bool, carry `Mr_t` as its factors (see `STMCell.update_memories`).

        Returns:
            `(relational_flat, item_flat, relational_flat)` of step t (the last is the step's
            output, collected with `return_sequences`).
        """
        cell = self.cell
        d, nq = cell.memory_size, cell.num_queries
        item = ops.reshape(item_flat, (-1, d, d))
        if factored:
            item, (values, scores) = cell.update_memories(projected_t, item, None, factored=True)
            relational = self._flatten_factors(values, scores)
        else:
            relational = ops.reshape(relational_flat, (-1, d, nq * d))
            item, relational = cell.update_memories(projected_t, item, relational)
            relational = ops.reshape(relational, (-1, nq * d * d))
        item = ops.reshape(item, (-1, d * d))
        if keep is not None:
            relational = ops.where(keep, relational, relational_flat)
            item = ops.where(keep, item, item_flat)
        return relational, item, relational

    def low_rank_step(self, inputs_t, pending_flat, item_flat, keep=None, mixers=None):
        """One step of the low-rank time loop: `Mr` is never built.

        With `Mr_t = α1 Mr_{t-1} + R_t` and `R_t = values_t @ scores_t` (SAM's factors), and
        every read `v_t = Mr_{t-1} @ m_t` with a mixing vector `m_t` that depends on the
        input alone (`STMCell.read_mixer`), the loop carries the pending reads,
        `pending[:, t'] = Mr_t @ m_{t'}` for every step `t'`, and updates them with the
        step's factors: `pending <- α1 pending + values_t @ (scores_t @ [m_1 .. m_T])`, a
        product on `nq` rows. Step `t` reads its own column, here by a one-hot product (the
        step index is a loop variable under `ops.scan` and Keras' tensorflow loop; Python
        loops use `low_rank_indexed_step`). A column `t' <= t` is never read again, so it is
        updated like the others. The same sums as the dense loop, in another order.

        Args:
            inputs_t: `(batch, projected_size + T)`: the step's projected input, then the
                one-hot of `t`.
            pending_flat: `(batch, d*T)`, the pending reads (flat), or a `(batch, 1)`
                placeholder when no step reads `Mr_{t-1}`.
            item_flat: `(batch, d*d)`, `Mi_{t-1}` flat.
            keep: optional boolean `(batch, 1)`: False keeps the previous memories (masking).
            mixers: `(batch, nq*d, T)`, every step's mixing vector `m_{t'}` as a column.

        Returns:
            `(pending_flat, item_flat, factors)` of step t, `factors` the flat
            `[values (d*nq), scores (nq*nq*d)]` of `R_t`.
        """
        cell = self.cell
        d = cell.memory_size
        size = cell.projected_size
        steps = inputs_t.shape[-1] - size
        pending = value = None
        if cell.reads_relational_memory:
            pending = ops.reshape(pending_flat, (-1, d, steps))
            current = ops.expand_dims(inputs_t[:, size:], 1)
            value = ops.sum(pending * current, axis=-1)  # v_t = Mr_{t-1} @ m_t
        pending, item, values, scores = self._low_rank_write(
            inputs_t[:, :size], value, pending, item_flat, keep, mixers
        )
        if pending is not None:
            pending_flat = ops.reshape(pending, (-1, d * steps))
        return pending_flat, item, self._flatten_factors(values, scores)

    def low_rank_indexed_step(
        self, step_index, projected_t, reads, item_flat, keep=None, mixers=None
    ):
        """One step of the low-rank loop at a step index known when the loop is built.

        The Python loops (torch, and `unroll=True`) know `t`: the step reads its own column
        of the pending reads by slicing instead of the one-hot product of `low_rank_step`,
        and the pending reads are updated in blocks of `low_rank_block_size` steps. Inside a
        block, each step updates only the block's own columns,
        `local <- α1 local + values_t @ (scores_t @ [m_b0 .. m_b1])`; at the block's end, the
        columns of the later steps take the whole block in one product,
        `pending <- (Π α1) pending + [c_t values_t]_t @ ([scores_t]_t @ [m_b1+1 .. m_T])`,
        with `c_t` the product of the carries of the block's later steps (masked steps carry
        1 and write nothing). Columns of earlier blocks are never computed again, so the
        loop does about half the work of updating every column at every step (`T^2 / 2`
        columns instead of `T^2`), and the end-of-block products are larger. Every step of a
        block has the same shapes; the block's end has one more product, on fewer columns
        for each later block. The same sums as `low_rank_step`, in another order.

        Args:
            step_index: int, `t` (0-based, in processing order).
            projected_t: `(batch, projected_size)`, the step's projected input.
            reads: None when no step reads `Mr_{t-1}`, else the tuple `(pending, local,
                block_mixers, block)`: `pending (batch, d, T - b0)`, the reads of the steps
                from the block's first step `b0` on, as of the block's start (at `t = 0`:
                `Mr_0 @ [m_1 .. m_T]`, with the other three entries `None, None, ()`);
                `local (batch, d, block)`, the block's reads now; `block_mixers
                (batch, nq*d, block)`; the block's steps so far as `(values, scores, keep)`.
            item_flat: `(batch, d*d)`, `Mi_{t-1}` flat.
            keep: optional boolean `(batch, 1)`: False keeps the previous memories (masking).
            mixers: `(batch, nq*d, T)`, every step's mixing vector `m_{t'}` as a column.

        Returns:
            `(reads or None, item_flat, (values (batch, d, nq), scores (batch, nq, nq*d)))`.
        """
        if reads is None:
            _, item, values, scores = self._low_rank_write(
                projected_t, None, None, item_flat, keep, mixers
            )
            return None, item, (values, scores)
        steps = mixers.shape[-1]
        size = self.low_rank_block_size
        first = step_index - step_index % size  # the block's first step
        width = min(size, steps - first)
        if step_index == first:
            pending = reads[0]
            reads = (pending, pending[:, :, :width], mixers[:, :, first : first + width], ())
        pending, local, block_mixers, block = reads
        value = local[:, :, step_index - first]  # v_t = Mr_{t-1} @ m_t
        last_of_block = step_index == first + width - 1
        local, item, values, scores = self._low_rank_write(
            projected_t, value, local, item_flat, keep, block_mixers, update=not last_of_block
        )
        block = block + ((values, scores, keep),)
        if last_of_block and first + width < steps:
            pending = self._low_rank_block_update(pending[:, :, width:], block, mixers[:, :, first + width :])
        return (pending, local, block_mixers, block), item, (values, scores)

    def _low_rank_block_update(self, pending, block, mixers):
        """The pending reads of the later steps after a block (`_carried_factors`):
        `(Π decay) pending + [c_t values_t]_t @ ([scores_t]_t @ mixers)`."""
        values = ops.stack([values for values, _, _ in block], axis=1)
        scores = ops.stack([scores for _, scores, _ in block], axis=1)
        mask = None
        if block[0][2] is not None:
            mask = ops.concatenate([keep for _, _, keep in block], axis=1)
        values, scores, carried = self._carried_factors(values, scores, mask)
        return carried * pending + stm_ops.matmul(values, stm_ops.matmul(scores, mixers))

    def _low_rank_write(self, projected_t, value, pending, item_flat, keep, mixers, update=True):
        """What a low-rank step does after its read (both step forms): `write_memories`, then
        `pending <- α1 pending + values @ (scores @ mixers)` (when `update` and `pending`
        `(batch, d, T)` is not None). Masked samples (`keep` False) keep `Mi` and `pending`.

        Returns `(pending, item_flat, values, scores)`."""
        cell = self.cell
        d = cell.memory_size
        item, factors = cell.write_memories(projected_t, ops.reshape(item_flat, (-1, d, d)), value)
        values, scores = factors[0]
        item = ops.reshape(item, (-1, d * d))
        if keep is not None:
            item = ops.where(keep, item, item_flat)
        if pending is not None and update:
            updated = cell.coefficient("relational_carry") * pending
            updated = updated + stm_ops.matmul(values, stm_ops.matmul(scores, mixers))
            if keep is not None:
                updated = ops.where(ops.expand_dims(keep, -1), updated, pending)
            pending = updated
        return pending, item, values, scores

    def _flatten_factors(self, values, scores):
        d, nq = self.cell.memory_size, self.cell.num_queries
        return ops.concatenate(
            [ops.reshape(values, (-1, d * nq)), ops.reshape(scores, (-1, nq * nq * d))], axis=-1
        )

    def _split_factors(self, factors):
        """Flat factors `(..., d*nq + nq*nq*d)` -> `values (..., d, nq)`, `scores (..., nq, nq*d)`."""
        d, nq = self.cell.memory_size, self.cell.num_queries
        lead = tuple(ops.shape(factors)[:-1])
        values = ops.reshape(factors[..., : d * nq], lead + (d, nq))
        scores = ops.reshape(factors[..., d * nq :], lead + (nq, nq * d))
        return values, scores

    def _factors_to_memory(self, factors):
        """Flat factors `(..., d*nq + nq*nq*d)` -> value-major `Mr` `(..., d, nq*d)`."""
        d, nq = self.cell.memory_size, self.cell.num_queries
        lead = tuple(ops.shape(factors)[:-1])
        values, scores = self._split_factors(ops.reshape(factors, (-1, factors.shape[-1])))
        return ops.reshape(stm_ops.matmul(values, scores), lead + (d, nq * d))

    def relational_loop_form(self, steps):
        """How the loop carries `Mr` for sequences of `steps` steps: `"factored"` (no step reads
        `Mr_{t-1}`: SAM's latest factors), `"dense"` or `"low_rank"` (see
        `relational_memory_loop`)."""
        cell = self.cell
        if not cell.uses_previous_relational_memory:
            return "factored"
        if self.relational_memory_loop == "low_rank":
            if steps is None:
                raise ValueError(
                    "`relational_memory_loop='low_rank'` needs a known number of timesteps; got "
                    "inputs with an undefined time axis. Give the Input a fixed length or use "
                    "`relational_memory_loop='auto'`."
                )
            return "low_rank"
        if self.relational_memory_loop == "auto" and steps is not None:
            # Measured (docs/performance.md): under torch (GPU) and tensorflow (CPU) the
            # low-rank loop is faster for Nth-farthest (T = d/16) but slower for associative
            # retrieval and copy (T ~ d/2); under jax it gained on copy and Nth-farthest.
            limit = 2 * cell.memory_size if keras.backend.backend() == "jax" else cell.memory_size // 4
            if not self.return_sequences and cell.sam_steps == 1 and steps <= limit:
                return "low_rank"
        return "dense"

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 3:
            raise ValueError(
                "STM expects inputs of shape (batch, timesteps, features), got "
                f"{tuple(sequences_shape)}."
            )
        super().build(sequences_shape, initial_state_shape)
        # The feature size is fixed from now on: a wrong one fails with a clear ValueError.
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: self.cell.input_size})

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if training and self.cell.dropout > 0.0:
            # The cell's mask (made by `keras.layers.RNN.call` before the loop), for all steps.
            dropout_mask = self.cell.get_dropout_mask(sequences[:, 0, :])
            sequences = sequences * ops.expand_dims(ops.cast(dropout_mask, sequences.dtype), 1)
        if self.torch_compile == "layer" and keras.backend.backend() == "torch":
            results = self._compiled_function("layer", self.layer_computation, sequences)(
                sequences, list(initial_state) if tree.is_nested(initial_state) else initial_state, mask
            )
            return self._copy_from_cuda_graphs(results)
        return self.layer_computation(sequences, initial_state, mask)

    def layer_computation(self, sequences, initial_state, mask=None):
        """The layer's computation from its input sequences and flat initial states: input
        projections, the time loop, read-out and head. Returns `(last_output, outputs,
        final_states)` as `keras.layers.RNN.inner_loop`; with `torch_compile="layer"` this whole
        function is compiled."""
        cell = self.cell
        if not tree.is_nested(initial_state):
            initial_state = [initial_state]
        if len(initial_state) != 3:
            raise ValueError(
                "STM expects 3 initial states [output, item_memory, relational_memory], got "
                f"{len(initial_state)}."
            )
        batch = ops.shape(sequences)[0]
        d, nq = cell.memory_size, cell.num_queries
        item_memory = ops.reshape(initial_state[1], (-1, d * d))
        initial_relational = cell.to_value_major(ops.reshape(initial_state[2], (-1, nq, d, d)))
        projected = cell.project_inputs(sequences)  # (B, T, projected_size), all steps at once
        if mask is not None:
            mask = ops.cast(mask, "bool")
        if self.go_backwards:
            # Reverse the steps here rather than through the backend loop's `go_backwards`:
            # Keras 3.15's torch unrolled loop fails to reverse a mask (it flips a tuple).
            projected = ops.flip(projected, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        form = self.relational_loop_form(projected.shape[1])
        if form == "low_rank":
            relational_memory, item_memory = self._low_rank_loop(
                projected, mask, initial_relational, item_memory
            )
            relational_sequence = None
        else:
            # The loop carries Mr value-major (see STMCell.update_memories), flat; or, when no
            # step reads Mr_{t-1}, the flat factors of SAM's latest result: nq*d*(nq+1) numbers
            # instead of nq*d*d, and no d x nq*d product per step.
            factored = form == "factored"
            if factored:
                relational_memory = ops.zeros((batch, nq * d * (nq + 1)), dtype=item_memory.dtype)
            else:
                relational_memory = ops.reshape(initial_relational, (-1, nq * d * d))
            relational_memory, item_memory, relational_sequence = self._run_loop(
                form, projected, mask, relational_memory, item_memory, self.return_sequences
            )
            if factored:
                # A step writes Mr_t = its factors' product; before the first unmasked step the
                # memory is still the initial one.
                relational_memory = self._factors_to_memory(relational_memory)
                if mask is not None:
                    written = ops.reshape(ops.any(mask, axis=1), (-1, 1, 1))
                    relational_memory = ops.where(written, relational_memory, initial_relational)
            else:
                relational_memory = ops.reshape(relational_memory, (-1, d, nq * d))
        relational_memory = cell.from_value_major(relational_memory)
        last_output = cell.output_from_memory(relational_memory)
        initial_output = initial_state[0]
        if mask is not None:
            # Until a sample's first unmasked step its output is the initial output state, as
            # in `keras.layers.RNN(STMCell)` (masked steps repeat the previous output).
            written = ops.any(mask, axis=1, keepdims=True)
            last_output = ops.where(written, last_output, ops.cast(initial_output, last_output.dtype))
        if self.return_sequences:
            steps = ops.shape(relational_sequence)[1]
            if form == "factored":
                relational_sequence = self._factors_to_memory(relational_sequence)
            outputs = cell.output_from_memory(
                cell.from_value_major(ops.reshape(relational_sequence, (batch, steps, d, nq * d)))
            )
            if mask is not None:
                written = ops.expand_dims(ops.cumsum(ops.cast(mask, "int32"), axis=1) > 0, -1)
                outputs = ops.where(
                    written, outputs, ops.cast(ops.expand_dims(initial_output, 1), outputs.dtype)
                )
            if mask is not None and self.zero_output_for_mask:
                # `mask` is in processing order, as the outputs (reversed with go_backwards).
                outputs = outputs * ops.expand_dims(ops.cast(mask, outputs.dtype), -1)
        else:
            outputs = ops.expand_dims(last_output, 1)
        relational_memory = ops.reshape(relational_memory, (-1, nq * d * d))
        return last_output, outputs, [last_output, item_memory, relational_memory]

    def _low_rank_loop(self, projected, mask, initial_relational, item_memory):
        """The low-rank loop and the last `Mr` from the kept factors.

        Python loops (torch, `unroll=True`) run `low_rank_indexed_step`, which knows its step
        index; `ops.scan` (jax), Keras' backend loop (tensorflow) and a step compiled on its
        own (`torch_compile="step"`) run `low_rank_step`. Then
        `Mr_T = c_0 Mr_0 + sum_t c_t R_t` with `c_t` the product of the carries `α1` of the
        later unmasked steps (`c_t = 0` for a masked step `t`), one product over the `T * nq`
        stacked factors.

        Returns:
            `(Mr_T value-major (batch, d, nq*d), Mi_T flat (batch, d*d))`.
        """
        cell = self.cell
        d, nq = cell.memory_size, cell.num_queries
        steps = projected.shape[1]
        dtype = projected.dtype
        batch = ops.shape(projected)[0]
        backend = keras.backend.backend()
        mixers = pending = None
        if cell.reads_relational_memory:
            mixers = ops.moveaxis(cell.read_mixer(projected), 1, 2)  # (B, nq*d, T)
            pending = stm_ops.matmul(initial_relational, mixers)  # (B, d, T)
        if self._uses_jax_gradient(mask, dtype):
            from keras_stm.layers import low_rank_loop_jax

            item, values, scores = low_rank_loop_jax.low_rank_loop(
                cell, projected, ops.reshape(item_memory, (-1, d, d)), pending, mixers, self.unroll
            )
            item_memory = ops.reshape(item, (-1, d * d))
        elif self._runs_python_loop() and not (backend == "torch" and self.torch_compile == "step"):
            size = self.low_rank_block_size
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
                raise ValueError(
                    "`STM.low_rank_block_size` must be a positive integer (steps per block), "
                    f"got {size!r}."
                )
            reads = None if pending is None else (pending, None, None, ())
            _, item_memory, (values, scores) = self._run_loop(
                "low_rank_indexed", projected, mask, reads, item_memory, True, mixers
            )
        else:
            if pending is None:
                pending = ops.zeros((batch, 1), dtype=dtype)
            else:
                pending = ops.reshape(pending, (-1, d * steps))
            # Per step, after its projected input: the one-hot of t.
            positions = ops.arange(steps)
            current = ops.cast(ops.expand_dims(positions, 1) == ops.expand_dims(positions, 0), dtype)
            current = ops.zeros((batch, 1, 1), dtype=dtype) + ops.expand_dims(current, 0)
            _, item_memory, factors = self._run_loop(
                "low_rank", ops.concatenate([projected, current], axis=-1), mask, pending,
                item_memory, True, mixers,
            )
            values, scores = self._split_factors(factors)  # (B, T, d, nq), (B, T, nq, nq*d)
        values, scores, initial_weight = self._carried_factors(values, scores, mask)
        relational = stm_ops.matmul(values, scores)
        return relational + initial_weight * initial_relational, item_memory

    def _carried_factors(self, values, scores, mask):
        """The factors of `K` steps weighted for `Σ_t c_t R_t` with `R_t = values_t @ scores_t`,
        `c_t = Π_{u > t} decay_u` (0 for a masked step), `decay_u = α1` (1 for a masked step):
        the last `Mr` after the loop, and the pending reads after a block.

        Args:
            values: `(batch, K, d, nq)`; scores: `(batch, K, nq, nq*d)`.
            mask: optional boolean `(batch, K)`, True where the step ran.

        Returns:
            `(c_t * values (batch, d, K*nq), scores (batch, K*nq, nq*d), Π_u decay_u
            (batch, 1, 1))`: the last, the weight of what was carried in before the first step.
        """
        d, nq = self.cell.memory_size, self.cell.num_queries
        steps = values.shape[1]
        dtype = values.dtype
        batch = ops.shape(values)[0]
        carry = self.cell.coefficient("relational_carry")
        decay = ops.zeros((batch, steps), dtype=dtype) + ops.cast(carry, dtype)
        written = ops.ones((batch, steps), dtype=dtype)
        if mask is not None:
            decay = ops.where(mask, decay, ops.ones_like(decay))
            written = ops.cast(mask, dtype)
        positions = ops.arange(steps)
        later = ops.expand_dims(ops.expand_dims(positions, 1) < ops.expand_dims(positions, 0), 0)
        # [., t, u] = u > t; dtype given: Keras 3.15's torch `prod` computes float64 in float32.
        suffix = ops.prod(ops.where(later, ops.expand_dims(decay, 1), 1.0), axis=-1, dtype=dtype)
        # Scale the values, the smaller factor (d x nq against nq x nq*d per step).
        values = values * ops.reshape(suffix * written, (-1, steps, 1, 1))
        values = ops.reshape(ops.moveaxis(values, 1, 2), (-1, d, steps * nq))
        scores = ops.reshape(scores, (-1, steps * nq, nq * d))
        return values, scores, ops.reshape(decay[:, 0] * suffix[:, 0], (-1, 1, 1))

    def _uses_jax_gradient(self, mask, dtype):
        """Whether the low-rank loop runs `low_rank_loop_jax` (hand-written backward): under
        jax, for a configuration it covers, with `loop_gradient="manual"`, or with `"auto"`
        when the write is gated and the transfer is on (where it measured faster)."""
        if self.loop_gradient == "autodiff" or keras.backend.backend() != "jax":
            return False
        cell = self.cell
        if self.loop_gradient == "auto" and not (
            cell.gated_write and cell._path_active("relational_transfer")
        ):
            return False
        from keras_stm.layers import low_rank_loop_jax

        return low_rank_loop_jax.supports(cell, mask, dtype)

    def _step_function(self, form, mixers=None, tensor=None):
        """`step(t, inputs_t, relational, item, keep) -> (relational, item, output_t)` of a
        loop form: `loop_step` (`"dense"`, `"factored"`), `low_rank_step` (`"low_rank"`) or
        `low_rank_indexed_step` (`"low_rank_indexed"`, Python loops only). `t` is the step
        index in Python loops, None under `ops.scan` and Keras' tensorflow loop; only the
        indexed step uses it."""
        if form == "low_rank_indexed":
            return lambda t, *args: self.low_rank_indexed_step(t, *args, mixers=mixers)
        if form == "low_rank":
            step = self._compiled_function("step", self.low_rank_step, tensor)
            return lambda t, *args: step(*args, mixers=mixers)
        step = self._compiled_function("step", self.loop_step, tensor)
        factored = form == "factored"
        return lambda t, *args: step(*args, factored=factored)

    def _runs_python_loop(self):
        """Whether `_run_loop` runs a Python loop (torch, and `unroll=True`), where each step's
        index is known when the loop is built."""
        return self.unroll or keras.backend.backend() not in ("jax", "tensorflow")

    def _run_loop(self, form, inputs, mask, relational_memory, item_memory, collect, mixers=None):
        """Run the step of `form` (`_step_function`) over the time axis of `inputs` `(B, T, P)`.

        Returns the final `(relational, item)` and, when `collect`, every step's output
        `(B, T, ...)`, else None. jax runs `ops.scan` with no per-step output unless one is
        needed; tensorflow runs Keras' backend loop; torch, and `unroll=True`, run a Python
        loop.
        """
        backend = keras.backend.backend()
        steps = inputs.shape[1]
        if self._runs_python_loop():
            python_loop = self._compiled_function("loop", self.python_loop, inputs)
            results = python_loop(form, inputs, mask, relational_memory, item_memory, collect, mixers)
            # With "layer" the whole computation is copied out once, in `inner_loop`.
            return results if self.torch_compile == "layer" else self._copy_from_cuda_graphs(results)
        step = self._step_function(form, mixers, inputs)
        if backend == "jax":
            keep_sequence = None if mask is None else ops.expand_dims(ops.moveaxis(mask, 1, 0), -1)

            def scan_step(carry, inputs_t):
                inputs_t, keep = inputs_t
                relational, item, output = step(None, inputs_t, carry[0], carry[1], keep)
                return (relational, item), (output if collect else None)

            (relational_memory, item_memory), sequence = ops.scan(
                scan_step,
                (relational_memory, item_memory),
                (ops.moveaxis(inputs, 1, 0), keep_sequence),
            )
            if sequence is not None:
                sequence = ops.moveaxis(sequence, 0, 1)
            return relational_memory, item_memory, sequence

        def rnn_step(inputs_t, states):  # tensorflow
            relational, item, output = step(None, inputs_t, states[0], states[1], None)
            # Without `collect` the flat Mr is both the step's output and states[0].
            return (output if collect else relational), [relational, item]

        _, sequence, (relational_memory, item_memory) = keras.src.backend.rnn(
            rnn_step,
            inputs,
            [relational_memory, item_memory],
            mask=mask,
            input_length=steps,
            return_all_outputs=collect,
        )
        return relational_memory, item_memory, sequence if collect else None

    def _copy_from_cuda_graphs(self, results):
        """CUDA graph outputs live in a pool that the next replay overwrites: copy the results
        of a compiled function so that returned states stay valid across calls (e.g. in
        `predict`). Other results are returned as they are."""
        if not (self._compiled and self.torch_compile_mode in CUDA_GRAPH_MODES):  # torch only
            return results
        return tree.map_structure(lambda r: None if r is None else ops.copy(r), results)

    def python_loop(
        self, form, inputs, mask, relational_memory, item_memory, collect=False, mixers=None
    ):
        """The time loop as a Python loop over the step of `form` (torch, and `unroll=True`);
        with `torch_compile="loop"` this whole function is compiled. Returns like `_run_loop`."""
        if inputs.shape[1] is None:
            raise ValueError(
                "`unroll=True` needs a known number of timesteps; got inputs with an undefined "
                "time axis. Give the Input a fixed length or use `unroll=False`."
            )
        step = self._step_function(form, mixers, inputs)
        sequence = []
        for t in range(inputs.shape[1]):
            keep = None if mask is None else mask[:, t : t + 1]
            relational_memory, item_memory, output = step(
                t, inputs[:, t], relational_memory, item_memory, keep
            )
            if collect:
                sequence.append(output)
        if not sequence:
            return relational_memory, item_memory, None
        # Each step's output is a tensor, or a tuple of them (the indexed low-rank step).
        stacked = tree.map_structure(lambda *outputs: ops.stack(outputs, axis=1), *sequence)
        return relational_memory, item_memory, stacked

    def call(self, sequences, initial_state=None, mask=None, training=False):
        steps = sequences.shape[1] if len(sequences.shape) == 3 else None
        if steps == 0:
            raise ValueError(f"STM needs at least one timestep, got inputs of shape "
                             f"{tuple(sequences.shape)}.")
        if mask is not None:
            mask_shape = tuple(ops.convert_to_tensor(mask).shape)
            if len(mask_shape) != 2 or (
                    steps is not None and mask_shape[1] is not None and mask_shape[1] != steps):
                raise ValueError(f"`mask` must have shape (batch, timesteps) = (batch, {steps}) "
                                 f"for inputs of shape {tuple(sequences.shape)}, got {mask_shape}.")
        if initial_state is not None:
            if not tree.is_nested(initial_state):
                initial_state = [initial_state]
            d, nq = self.cell.memory_size, self.cell.num_queries
            if len(initial_state) != 3:
                raise ValueError(
                    "`initial_state` must hold 3 states [output, item_memory, relational_memory], "
                    f"got {len(initial_state)}."
                )
            allowed = (
                [(self.cell.output_size,)],
                [(d * d,), (d, d)],
                [(nq * d * d,), (nq, d, d)],
            )
            for index, (state, shapes) in enumerate(zip(initial_state, allowed)):
                if tuple(state.shape[1:]) not in shapes:
                    raise ValueError(
                        f"`initial_state[{index}]` must have shape (batch,) + one of {shapes}, "
                        f"got {tuple(state.shape)}."
                    )
            initial_state = [
                initial_state[0],
                ops.reshape(initial_state[1], (-1, d * d)),
                ops.reshape(initial_state[2], (-1, nq * d * d)),
            ]
        result = super().call(sequences, initial_state=initial_state, mask=mask, training=training)
        if not self.return_state:
            return result
        output, last, item_memory, relational_memory = result
        item_memory, relational_memory = self.cell.unflatten_memories(item_memory, relational_memory)
        return output, last, item_memory, relational_memory

    def reset_state(self):
        """Reset the states of a stateful layer to the cell's initial state.

        `keras.layers.RNN.reset_state` sets them to zeros; the STM starts from its learned
        initial memories (current values) instead, as a non-stateful call does.
        """
        if self.states is None:
            return
        batch = ops.shape(self.states[0])[0]
        for variable, value in zip(self.states, self.cell.get_initial_state(batch_size=batch)):
            variable.assign(ops.cast(value, variable.dtype))

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, steps = sequences_shape[0], sequences_shape[1]
        size = self.cell.output_size
        output_shape = (batch, steps, size) if self.return_sequences else (batch, size)
        if not self.return_state:
            return output_shape
        d, nq = self.cell.memory_size, self.cell.num_queries
        return output_shape, (batch, size), (batch, d, d), (batch, nq, d, d)

    def get_config(self):
        config = super().get_config()
        cell_config = self.cell.get_config()
        for name in _CELL_ARGS:
            config[name] = cell_config[name]
        del config["cell"]
        config["torch_compile"] = self.torch_compile
        config["torch_compile_mode"] = self.torch_compile_mode
        config["relational_memory_loop"] = self.relational_memory_loop
        config["loop_gradient"] = self.loop_gradient
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _cell_property(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}` (read-only).")


for _name in _CELL_ARGS:
    setattr(STM, _name, _cell_property(_name))
