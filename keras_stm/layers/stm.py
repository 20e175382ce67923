"""The `STM` recurrent layer: `keras.layers.RNN` over an `STMCell`, with a lean inner loop."""

import keras
from keras import ops
from keras import tree

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


@keras.saving.register_keras_serializable(package="keras_stm")
class STM(keras.layers.RNN):
    """Self-attentive associative memory recurrent layer (an `STMCell` in an RNN).

    Runs `STMCell` over a sequence, as `keras.layers.LSTM` runs `LSTMCell`, and gives the same
    numbers as `keras.layers.RNN(STMCell(...))`, faster: the input projections of all steps
    are computed before the loop in one product, the loop carries only the two memories, and
    the read-out (and head) are computed after the loop, once for the last step, or for all
    steps in one batched product when `return_sequences=True`.

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
        unroll: bool, unroll the time loop (small T only). Default False.
        zero_output_for_mask: bool, whether masked steps of the output sequence are zeros.
            Default False (they repeat the previous output).
        torch_compile_step: bool, torch backend only: run the per-step memory update through
            `torch.compile` (the same keras.ops maths, fused into fewer kernels; the first call
            of each batch size compiles for tens of seconds). Ignored by jax and tensorflow,
            which compile the whole step with `jit_compile`. Default False.
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
        torch_compile_step=False,
        **kwargs,
    ):
        if not isinstance(torch_compile_step, bool):
            raise ValueError(f"`torch_compile_step` must be a bool, got {torch_compile_step!r}.")
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
        self.torch_compile_step = torch_compile_step
        self._compiled_update = None

    def _memory_update(self):
        """The per-step update: the cell's portable `update_memories`, or its torch.compile'd
        version (same maths) when `torch_compile_step` is on under the torch backend."""
        if not (self.torch_compile_step and keras.backend.backend() == "torch"):
            return self.cell.update_memories
        if self._compiled_update is None:
            import torch

            self._compiled_update = torch.compile(self.cell.update_memories, dynamic=False)
        return self._compiled_update

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
        # The loop carries Mr value-major (see STMCell.update_memories), flat.
        relational_memory = cell.to_value_major(ops.reshape(initial_state[2], (-1, nq, d, d)))
        relational_memory = ops.reshape(relational_memory, (-1, nq * d * d))
        projected = cell.project_inputs(sequences)  # (B, T, projected_size), all steps at once
        update_memories = self._memory_update()

        def step(projected_t, states):
            relational_flat, item_flat = states
            item = ops.reshape(item_flat, (-1, d, d))
            relational = ops.reshape(relational_flat, (-1, d, nq * d))
            item, relational = update_memories(projected_t, item, relational)
            relational_flat = ops.reshape(relational, (-1, nq * d * d))
            item_flat = ops.reshape(item, (-1, d * d))
            # The flat Mr is both the step's output and states[0], as Keras' masked loops need.
            return relational_flat, [relational_flat, item_flat]

        loop_mask = mask
        if self.go_backwards:
            # Reverse the steps here rather than through `go_backwards=`: Keras 3.15's torch
            # unrolled loop fails to reverse a mask (it flips a tuple). Same numbers.
            projected = ops.flip(projected, axis=1)
            loop_mask = None if mask is None else ops.flip(mask, axis=1)
        _, relational_sequence, (relational_memory, item_memory) = keras.src.backend.rnn(
            step,
            projected,
            [relational_memory, item_memory],
            go_backwards=False,
            mask=loop_mask,
            unroll=self.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=False,
            return_all_outputs=self.return_sequences,
        )
        relational_memory = cell.from_value_major(ops.reshape(relational_memory, (-1, d, nq * d)))
        last_output = cell.output_from_memory(relational_memory)
        if self.return_sequences:
            steps = ops.shape(relational_sequence)[1]
            outputs = cell.output_from_memory(
                cell.from_value_major(ops.reshape(relational_sequence, (batch, steps, d, nq * d)))
            )
            if mask is not None and self.zero_output_for_mask:
                keep = ops.cast(mask, outputs.dtype)
                if self.go_backwards:
                    keep = ops.flip(keep, axis=1)
                outputs = outputs * ops.expand_dims(keep, -1)
        else:
            outputs = ops.expand_dims(last_output, 1)
        relational_memory = ops.reshape(relational_memory, (-1, nq * d * d))
        return last_output, outputs, [last_output, item_memory, relational_memory]

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
        config["torch_compile_step"] = self.torch_compile_step
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _cell_property(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}` (read-only).")


for _name in _CELL_ARGS:
    setattr(STM, _name, _cell_property(_name))
