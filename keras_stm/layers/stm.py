"""The `STM` recurrent layer: `keras.layers.RNN` over an `STMCell`, with a lean inner loop."""

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
)


TORCH_COMPILE = (None, "step", "loop")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes with CUDA graphs


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
    SAM's two small factors instead of `Mr` and multiplies them once at the end.

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
        torch_compile: None (default), `"step"` or `"loop"`; torch backend only, ignored by
            jax and tensorflow (which compile the whole loop with `jit_compile`). `"step"` runs
            each time step through `torch.compile`; `"loop"` compiles the whole time loop
            (unrolled: one forward and one backward graph, compile time grows with the
            number of steps). The maths is the portable `keras.ops` step either way. Each
            new input shape compiles anew.
        torch_compile_mode: None (default) or a `torch.compile` mode, e.g.
            `"reduce-overhead"` (CUDA graphs: the fastest torch setting measured on a GPU,
            with `torch_compile="loop"`) or `"max-autotune-no-cudagraphs"`. With a CUDA-graph
            mode the loop's results are copied out of the graph's memory pool, so returned
            states stay valid after the next call.
        torch_compile_step: bool, the older spelling of `torch_compile="step"`. Default False.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        sequences: tensor of shape `(batch, timesteps, input_size)`.
        initial_state: optional list `[output, item_memory, relational_memory]`; the memories
            may be given flat `(batch, d*d)`, `(batch, nq*d*d)` or as matrices.
        mask: optional boolean tensor `(batch, timesteps)`; masked steps keep the state.
        training: unused, accepted for the RNN API.

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
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        zero_output_for_mask=False,
        torch_compile=None,
        torch_compile_mode=None,
        torch_compile_step=False,
        **kwargs,
    ):
        if not isinstance(torch_compile_step, bool):
            raise ValueError(f"`torch_compile_step` must be a bool, got {torch_compile_step!r}.")
        if torch_compile_step:
            if torch_compile not in (None, "step"):
                raise ValueError(
                    f"`torch_compile_step=True` contradicts `torch_compile={torch_compile!r}`."
                )
            torch_compile = "step"
        if torch_compile not in TORCH_COMPILE:
            raise ValueError(f"`torch_compile` must be one of {TORCH_COMPILE}, got {torch_compile!r}.")
        if torch_compile_mode is not None and not isinstance(torch_compile_mode, str):
            raise ValueError(
                f"`torch_compile_mode` must be None or a torch.compile mode name, got "
                f"{torch_compile_mode!r}."
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
        self._compiled = {}

    def _compiled_function(self, kind, function):
        """`function`, or its torch.compile'd version when `torch_compile == kind` under torch."""
        if self.torch_compile != kind or keras.backend.backend() != "torch":
            return function
        if kind not in self._compiled:
            import torch

            self._compiled[kind] = torch.compile(function, dynamic=False, mode=self.torch_compile_mode)
        return self._compiled[kind]

    def loop_step(self, projected_t, relational_flat, item_flat, keep=None, factored=False):
        """One step of the time loop on flat memories.

        Args:
            projected_t: `(batch, projected_size)`, the step's projected input.
            relational_flat: `(batch, nq*d*d)`, `Mr_{t-1}` value-major and flat, or with
                `factored`, the flat factors `[values (d*nq), scores (nq*nq*d)]` of the
                previous step (unused).
            item_flat: `(batch, d*d)`, `Mi_{t-1}` flat.
            keep: optional boolean `(batch, 1)`: False keeps the previous memories (masking).
            factored: bool, carry `Mr_t` as its factors (see `STMCell.update_memories`).

        Returns:
            `(relational_flat, item_flat)` of step t.
        """
        cell = self.cell
        d, nq = cell.memory_size, cell.num_queries
        item = ops.reshape(item_flat, (-1, d, d))
        if factored:
            item, (values, scores) = cell.update_memories(projected_t, item, None, factored=True)
            relational = ops.concatenate(
                [ops.reshape(values, (-1, d * nq)), ops.reshape(scores, (-1, nq * nq * d))], axis=-1
            )
        else:
            relational = ops.reshape(relational_flat, (-1, d, nq * d))
            item, relational = cell.update_memories(projected_t, item, relational)
            relational = ops.reshape(relational, (-1, nq * d * d))
        item = ops.reshape(item, (-1, d * d))
        if keep is not None:
            relational = ops.where(keep, relational, relational_flat)
            item = ops.where(keep, item, item_flat)
        return relational, item

    def _factors_to_memory(self, factors):
        """Flat factors `(..., d*nq + nq*nq*d)` -> value-major `Mr` `(..., d, nq*d)`."""
        d, nq = self.cell.memory_size, self.cell.num_queries
        lead = tuple(ops.shape(factors)[:-1])
        values = ops.reshape(factors[..., : d * nq], (-1, d, nq))
        scores = ops.reshape(factors[..., d * nq :], (-1, nq, nq * d))
        return ops.reshape(stm_ops.matmul(values, scores), lead + (d, nq * d))

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
        # The loop carries Mr value-major (see STMCell.update_memories), flat; or, when no
        # step reads Mr_{t-1}, the flat factors of SAM's latest result: nq*d*(nq+1) numbers
        # instead of nq*d*d, and no d x nq*d product per step.
        initial_relational = cell.to_value_major(ops.reshape(initial_state[2], (-1, nq, d, d)))
        factored = not cell.uses_previous_relational_memory
        if factored:
            relational_memory = ops.zeros((batch, nq * d * (nq + 1)), dtype=item_memory.dtype)
        else:
            relational_memory = ops.reshape(initial_relational, (-1, nq * d * d))
        projected = cell.project_inputs(sequences)  # (B, T, projected_size), all steps at once
        if mask is not None:
            mask = ops.cast(mask, "bool")
        if self.go_backwards:
            # Reverse the steps here rather than through the backend loop's `go_backwards`:
            # Keras 3.15's torch unrolled loop fails to reverse a mask (it flips a tuple).
            projected = ops.flip(projected, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        relational_memory, item_memory, relational_sequence = self._run_loop(
            projected, mask, relational_memory, item_memory, factored
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
            if factored:
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

    def _run_loop(self, projected, mask, relational_memory, item_memory, factored):
        """Run `loop_step` over the time axis of `projected` `(B, T, P)`.

        Returns the final `(relational, item)` and, when `return_sequences`, the relational
        memory (or factors) of every step `(B, T, ...)`, else None. jax runs `ops.scan` with
        no per-step output unless one is needed; tensorflow runs Keras' backend loop;
        torch, and `unroll=True`, run a Python loop.
        """
        step_function = self._compiled_function("step", self.loop_step)
        backend = keras.backend.backend()
        steps = projected.shape[1]
        if backend == "jax" and not self.unroll:
            keep_sequence = None if mask is None else ops.expand_dims(ops.moveaxis(mask, 1, 0), -1)

            def scan_step(carry, inputs):
                projected_t, keep = inputs
                relational, item = step_function(projected_t, carry[0], carry[1], keep, factored)
                return (relational, item), (relational if self.return_sequences else None)

            (relational_memory, item_memory), sequence = ops.scan(
                scan_step,
                (relational_memory, item_memory),
                (ops.moveaxis(projected, 1, 0), keep_sequence),
            )
            if sequence is not None:
                sequence = ops.moveaxis(sequence, 0, 1)
            return relational_memory, item_memory, sequence
        if backend == "tensorflow" and not self.unroll:

            def rnn_step(projected_t, states):
                relational, item = step_function(projected_t, states[0], states[1], None, factored)
                # The flat Mr is both the step's output and states[0], as Keras' masked loops need.
                return relational, [relational, item]

            _, sequence, (relational_memory, item_memory) = keras.src.backend.rnn(
                rnn_step,
                projected,
                [relational_memory, item_memory],
                mask=mask,
                input_length=steps,
                return_all_outputs=self.return_sequences,
            )
            return relational_memory, item_memory, sequence if self.return_sequences else None
        python_loop = self._compiled_function("loop", self.python_loop)
        results = python_loop(projected, mask, relational_memory, item_memory, factored)
        if self._compiled and self.torch_compile_mode in CUDA_GRAPH_MODES:  # torch only
            # CUDA graph outputs live in a pool that the next replay overwrites: copy the
            # results so that returned states stay valid across calls (e.g. in `predict`).
            results = tuple(None if r is None else ops.copy(r) for r in results)
        return results

    def python_loop(self, projected, mask, relational_memory, item_memory, factored=False):
        """The time loop as a Python loop over `loop_step` (torch, and `unroll=True`); with
        `torch_compile="loop"` this whole function is compiled. Returns like `_run_loop`."""
        step_function = self._compiled_function("step", self.loop_step)
        if projected.shape[1] is None:
            raise ValueError(
                "`unroll=True` needs a known number of timesteps; got inputs with an undefined "
                "time axis. Give the Input a fixed length or use `unroll=False`."
            )
        sequence = []
        for t in range(projected.shape[1]):
            keep = None if mask is None else mask[:, t : t + 1]
            relational_memory, item_memory = step_function(
                projected[:, t], relational_memory, item_memory, keep, factored
            )
            if self.return_sequences:
                sequence.append(relational_memory)
        return relational_memory, item_memory, ops.stack(sequence, axis=1) if sequence else None

    def call(self, sequences, initial_state=None, mask=None, training=False):
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
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _cell_property(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}` (read-only).")


for _name in _CELL_ARGS:
    setattr(STM, _name, _cell_property(_name))
