"""The `STM` recurrent layer: `keras.layers.RNN` over an `STMCell`, with a lean inner loop."""

import warnings
from typing import Any

import keras
from keras import ops
from keras import tree

from keras_stm.layers import _stm_loop
from keras_stm.layers.stm_cell import STMCell
from keras_stm.layers.stm_cell import upgrade_cell_config

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


# Keys that configs saved by older versions carry and that are dropped on loading: how the loop
# ran is chosen by `loop` (not saved) now.
_REMOVED_KEYS = (
    "torch_compile",
    "torch_compile_mode",
    "torch_compile_step",
    "relational_memory_loop",
    "loop_gradient",
)


@keras.saving.register_keras_serializable(package="keras_stm")
class STM(keras.layers.RNN):
    """Self-attentive associative memory recurrent layer (an `STMCell` run over a sequence).

    Runs `STMCell` over a sequence, as `keras.layers.LSTM` runs `LSTMCell`, with the numbers of
    `keras.layers.RNN(STMCell(...))`. For each step `x_t` (see `STMCell` for every equation):

        Mi_t = I ⊙ tanh(u ⊗ u) + F ⊙ Mi_{t-1} + α3 G1(R_t)     # item memory (gated write)
        R_t = SAM(Mi' + α2 v_t ⊗ w),  Mr_t = α1 Mr_{t-1} + R_t  # relational memory
        o_t = G3(flatten_n(G2(Mr_t)))                            # read-out (and optional head)

    The input projections of all steps are computed before the loop in one product, and the
    read-out (and head) after it, for the last step, or for all steps at once when
    `return_sequences=True`. How the loop runs (what it carries, whether it is unrolled) is
    chosen for the backend, the device and the configuration by `loop="auto"`, with the same
    numbers either way; docs/performance.md gives the measurements behind the choice.

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
            A fixed 0 switches a path off, and its weights are not created (the authors' RL
            variant drops `Mr` between steps: `relational_carry=0, relational_read=0`).
        projector_hidden_units: int or None, hidden width of 3-layer linear input projectors;
            None (default) for single linear projectors.
        learn_initial_memory: bool, learned (True, default) or zero initial memories.
        sam_normalization: `"joint"` (default) or `"row"` (RL variant) SAM LayerNorm.
        readout_normalization: bool, LayerNorm on `o_t` (RL variant). Defaults to False.
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
        unroll: bool, unroll the time loop. Default False (`loop="auto"` may unroll where it
            measured faster: jax on a GPU, with a known number of steps).
        zero_output_for_mask: bool, whether masked steps of the output sequence are zeros.
            Default False (they repeat the previous output).
        loop: `"auto"` (default), `"dense"` or `"low_rank"`: how the time loop runs, like
            `keras.layers.LSTM`'s `use_cudnn`; not saved in the config. `"auto"` picks the
            fastest form measured for the backend, device and configuration. `"dense"`
            carries the relational memory through the loop, as `keras.layers.RNN(STMCell)`
            does (`unroll` as given). `"low_rank"` carries the reads still to come instead of
            `Mr` and forms the last `Mr` after the loop, in an unrolled loop (same numbers, to
            round-off); it needs `return_sequences=False`, `sam_steps=1`, a known number of
            steps and a step that reads or carries `Mr`.
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

    def __init__(
        self,
        num_queries: int = 8,
        memory_size: int = 96,
        relation_size: int = 96,
        readout_size: int = 64,
        head_units: int | None = None,
        head_hidden_units: int = 128,
        gated_write: bool = True,
        sam_steps: int = 1,
        relational_carry: str | float = "learned",
        relational_read: str | float = "learned",
        relational_transfer: str | float = "learned",
        projector_hidden_units: int | None = None,
        learn_initial_memory: bool = True,
        sam_normalization: str = "joint",
        readout_normalization: bool = False,
        layer_norm_epsilon: float = 1e-5,
        kernel_initializer: Any = None,
        bias_initializer: Any = None,
        dropout: float = 0.0,
        seed: int | None = None,
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        zero_output_for_mask: bool = False,
        loop: str = "auto",
        **kwargs,
    ):
        if loop not in _stm_loop.LOOPS:
            raise ValueError(f"`loop` must be one of {_stm_loop.LOOPS}, got {loop!r}.")
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
        self._loop = loop

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
        """The layer's computation from its input sequences and flat initial states (Keras'
        `RNN.inner_loop`): input projections for all steps at once, the time loop
        (`keras_stm.layers._stm_loop`), read-out and head. Returns `(last_output, outputs,
        final_states)`. Calls the cell's package-private step methods (`_project_inputs`,
        `_to_value_major`, ...)."""
        cell = self.cell
        if training and cell.dropout > 0.0:
            # The cell's mask (made by `keras.layers.RNN.call` before the loop), for all steps.
            dropout_mask = cell.get_dropout_mask(sequences[:, 0, :])
            sequences = sequences * ops.expand_dims(ops.cast(dropout_mask, sequences.dtype), 1)
        if not tree.is_nested(initial_state):
            initial_state = [initial_state]
        if len(initial_state) != 3:
            raise ValueError(
                "STM expects 3 initial states [output, item_memory, relational_memory], got "
                f"{len(initial_state)}."
            )
        d, nq = cell.memory_size, cell.num_queries
        item_memory = ops.reshape(initial_state[1], (-1, d * d))
        initial_relational = cell._to_value_major(ops.reshape(initial_state[2], (-1, nq, d, d)))
        projected = cell._project_inputs(sequences)  # (B, T, projected_size), all steps at once
        if mask is not None:
            mask = ops.cast(mask, "bool")
        if self.go_backwards:
            # Reverse the steps here rather than through the backend loop's `go_backwards`:
            # Keras 3.15's torch unrolled loop fails to reverse a mask (it flips a tuple).
            projected = ops.flip(projected, axis=1)
            mask = None if mask is None else ops.flip(mask, axis=1)
        form, unroll = _stm_loop._plan(
            cell, projected.shape[1], self._loop, self.unroll, self.return_sequences
        )
        relational_memory, item_memory, relational_sequence = _stm_loop.run(
            cell,
            projected,
            mask,
            initial_relational,
            item_memory,
            form,
            unroll,
            self.return_sequences,
        )
        relational_memory = cell._from_value_major(relational_memory)
        last_output = cell._output_from_memory(relational_memory)
        initial_output = initial_state[0]
        if mask is not None:
            # Until a sample's first unmasked step its output is the initial output state, as
            # in `keras.layers.RNN(STMCell)` (masked steps repeat the previous output).
            written = ops.any(mask, axis=1, keepdims=True)
            last_output = ops.where(
                written, last_output, ops.cast(initial_output, last_output.dtype)
            )
        if self.return_sequences:
            outputs = cell._output_from_memory(cell._from_value_major(relational_sequence))
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

    def call(
        self,
        sequences: Any,
        initial_state: list | None = None,
        mask: Any = None,
        training: bool = False,
    ) -> Any:
        steps = sequences.shape[1] if len(sequences.shape) == 3 else None
        if steps == 0:
            raise ValueError(
                f"STM needs at least one timestep, got inputs of shape {tuple(sequences.shape)}."
            )
        if mask is not None:
            mask_shape = tuple(ops.convert_to_tensor(mask).shape)
            if len(mask_shape) != 2 or (
                steps is not None and mask_shape[1] is not None and mask_shape[1] != steps
            ):
                raise ValueError(
                    f"`mask` must have shape (batch, timesteps) = (batch, {steps}) "
                    f"for inputs of shape {tuple(sequences.shape)}, got {mask_shape}."
                )
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
        item_memory, relational_memory = self.cell.unflatten_memories(
            item_memory, relational_memory
        )
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
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in _REMOVED_KEYS:
            if key in config:
                config.pop(key)
                warnings.warn(
                    f"STM: the config key `{key}` is ignored; it was removed (how the loop runs "
                    "is chosen by `loop='auto'`, which is not saved).",
                    DeprecationWarning,
                    stacklevel=2,
                )
        return cls(**upgrade_cell_config(config))


def _cell_property(name):
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's `{name}` (read-only).")


for _name in _CELL_ARGS:
    setattr(STM, _name, _cell_property(_name))


def stm_layers(model):
    """Every `STM` layer of `model` (itself included), nested ones too, in Keras' order."""
    # Keras has no public recursive walk over a model's layers; this is the one place that
    # uses its private one.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, STM)
    ]
