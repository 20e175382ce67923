"""The `STMCell` layer: one time step of the Self-attentive Associative Memory."""

import math
import numbers
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

# Keras' RNN layer makes the input dropout mask of a `DropoutRNNCell` before its time loop (one
# mask for every step, and a loop free of random draws under jax); the class is not exported.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

from keras_stm import ops as stm_ops
from keras_stm.layers.self_attentive_memory import SelfAttentiveMemory
from keras_stm.layers.self_attentive_memory import check_epsilon
from keras_stm.layers.self_attentive_memory import check_positive_int
from keras_stm.layers.self_attentive_memory import pytorch_linear_initializers
from keras_stm.layers.self_attentive_memory import regularizers_and_constraints_config

LEARNED = "learned"
COEFFICIENTS = ("relational_carry", "relational_read", "relational_transfer")


MAX_FIXED_COEFFICIENT = 10.0
"""float: the largest magnitude of a fixed coefficient. The authors' are 0 or 1; a carry of 10
multiplies `Mr` by 10 at every step (float32 overflows within 40 steps)."""


def _check_coefficient(name, value):
    if isinstance(value, str) and value == LEARNED:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be {LEARNED!r} or a number, got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    if abs(value) > MAX_FIXED_COEFFICIENT:
        raise ValueError(
            f"`{name}` must be within [-{MAX_FIXED_COEFFICIENT:g}, "
            f"{MAX_FIXED_COEFFICIENT:g}] (the authors fix coefficients to 0 or 1), "
            f"got {value!r}."
        )
    return float(value)


def check_dropout(value):
    """Raise a ValueError unless `value` is a number in [0, 1); returns it as a float."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(f"`dropout` must be a number in [0, 1), got {value!r}.")
    return float(value)


def check_seed(value):
    """Raise a ValueError unless `value` is None or an integer; returns it."""
    if value is not None and (
        isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
    ):
        raise ValueError(f"`seed` must be None or an integer, got {value!r}.")
    return None if value is None else int(value)


def upgrade_cell_config(config):
    """A cell config saved by an older version, in today's arguments.

    `carry_relational_memory=False` (removed) dropped `Mr` between steps: the same numbers as
    `relational_carry=0, relational_read=0`, which it becomes (with a DeprecationWarning)."""
    if "carry_relational_memory" not in config:
        return config
    config = dict(config)
    carry = config.pop("carry_relational_memory")
    message = "the config key `carry_relational_memory` was removed"
    if not carry:
        config["relational_carry"] = 0.0
        config["relational_read"] = 0.0
        message += (
            "; `carry_relational_memory=False` is now `relational_carry=0, relational_read=0`"
        )
    warnings.warn(f"{message}.", DeprecationWarning, stacklevel=3)
    return config


@keras.saving.register_keras_serializable(package="keras_stm")
class STMCell(DropoutRNNCell, keras.layers.Layer):
    """Self-attentive associative memory cell (STM), one step for `keras.layers.RNN`.

    The state holds an item memory `Mi` (d x d) and a relational memory `Mr` (nq x d x d).
    For an input `x_t` one step computes (authors' code, section 3.4 of the reference):

        u = f1(x_t), w = f3(x_t), s = f2(x_t)           # input projections (d, d, nq)
        I, F = sigmoid(gates(u, tanh(Mi)) + (input_offset, forget_offset))
        Mi' = I ⊙ tanh(u ⊗ u) + F ⊙ Mi                   # gated write (else Mi + u ⊗ u)
        v = sum_n softmax(s)_n w^T Mr_n                   # relational read
        repeat sam_steps times:
            R = SAM(Mi' + α2 v ⊗ w)                       # SAM: projection, LayerNorm, OPA
            Mi' = Mi' + α3 G1(R)                          # relational -> item transfer
            Mr = α1 Mr + R                                # relational memory update
        o_t = G3(flatten_n(G2(Mr_n)))                     # read-out
        y_t = W3 relu(W2 relu(W1 o_t))                    # optional output head

    The per-step output is `y_t` when the head is on (`head_units` set) and `o_t` otherwise.
    Coefficients `α1, α2, α3` are learned scalars initialised to 0, or fixed numbers; a fixed 0
    switches its path off and the cell skips its computation.

    States are carried flat, as Keras' RNN layer needs integer state sizes:
    `[previous output (output_size), Mi (d*d), Mr (nq*d*d)]`, row-major;
    `unflatten_memories` reshapes them. The first state is the previous output (used by Keras'
    masking on every backend). The initial memories are learned weights (when
    `learn_initial_memory`), tiled over the batch, and receive gradients.

    Beyond Keras' cell API the public methods are `unflatten_memories`, `update_memories` (one
    step of the memories, optionally with SAM's inputs), `read_out` and `head`. Methods with a
    leading underscore belong to the `keras_stm.layers` package (`STM`'s loop calls them).

    Args:
        num_queries: int, number `nq` of SAM queries, i.e. of relational slots. Defaults to 8.
        memory_size: int, side `d` of the item memory (d x d) and of each slot. Defaults to 96.
        relation_size: int, size `r` of each slot's projection `G2` in the read-out. Defaults to 96.
        readout_size: int, size `a` of the read-out `o_t`. Defaults to 64.
        head_units: int or None, size of the output head's result `y_t`; None (default) turns
            the head off and the cell outputs `o_t`.
        head_hidden_units: int, width of the head's two ReLU layers. Defaults to 128.
        gated_write: bool, gated item write (True, default) or additive `Mi + u ⊗ u` (False).
        sam_steps: int, SAM iterations per time step, sharing weights. Defaults to 1.
        relational_carry: `"learned"` (default) or a number: `α1`, the carry of `Mr`.
        relational_read: `"learned"` (default) or a number: `α2`, weight of the `Mr` read added
            to SAM's input.
        relational_transfer: `"learned"` (default) or a number: `α3`, weight of the `Mr -> Mi`
            transfer.
        projector_hidden_units: int or None. None (default): each input projector is one
            linear layer; an int `h`: three linear layers `D_in -> h -> h -> out` with no
            activation (the authors' bAbI projector).
        learn_initial_memory: bool, learn `Mi_0` and `Mr_0` (True, default) or start at zeros.
        sam_normalization: `"joint"` (default, LayerNorm over SAM's whole projection) or
            `"row"` (per-row LayerNorm: the authors' RL variant).
        readout_normalization: bool, LayerNorm on `o_t` (the RL variant). Defaults to False.
        layer_norm_epsilon: float, epsilon of every LayerNorm. Defaults to `1e-5`.
        kernel_initializer: initializer of every kernel, or None (default) for PyTorch's
            `nn.Linear` default U(±1/sqrt(fan_in)).
        bias_initializer: initializer of every bias, or None (default) for PyTorch's.
        kernel_regularizer: regularizer of every kernel (the input projectors, the gates,
            SAM's projection, the transfer, the read-out and the head), or None (default).
        bias_regularizer: regularizer of every bias of those layers, or None (default).
        kernel_constraint: constraint on every kernel, or None (default).
        bias_constraint: constraint on every bias, or None (default).
        dropout: float in [0, 1), the fraction of the input features dropped in training, as
            in `keras.layers.LSTMCell`: inside `keras.layers.RNN` or `keras_stm.STM` one mask
            per sequence, the same at every step. Defaults to 0.
        seed: int or None, the seed of the dropout masks. Defaults to None.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor of shape `(batch, input_size)`.
        states: list `[previous_output, item_memory, relational_memory]` of flat tensors of
            shapes `(batch, output_size)`, `(batch, d*d)`, `(batch, nq*d*d)`.
        training: bool, whether to apply `dropout` to the inputs.

    Returns:
        `(output, new_states)`.

    Masking: inside `keras.layers.RNN` or `keras_stm.STM`, masked steps keep the previous
    memories and output, on every backend.

    Example:

    >>> import numpy as np, keras, keras_stm
    >>> cell = keras_stm.STMCell(num_queries=2, memory_size=8, relation_size=8,
    ...                          readout_size=16, head_units=4)
    >>> rnn = keras.layers.RNN(cell)
    >>> tuple(rnn(np.zeros((3, 5, 7), "float32")).shape)
    (3, 4)

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
        relational_carry: str | float = LEARNED,
        relational_read: str | float = LEARNED,
        relational_transfer: str | float = LEARNED,
        projector_hidden_units: int | None = None,
        learn_initial_memory: bool = True,
        sam_normalization: str = "joint",
        readout_normalization: bool = False,
        layer_norm_epsilon: float = 1e-5,
        kernel_initializer: Any = None,
        bias_initializer: Any = None,
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_queries = check_positive_int("num_queries", num_queries)
        self.memory_size = check_positive_int("memory_size", memory_size)
        self.relation_size = check_positive_int("relation_size", relation_size)
        self.readout_size = check_positive_int("readout_size", readout_size)
        self.head_units = (
            None if head_units is None else check_positive_int("head_units", head_units)
        )
        self.head_hidden_units = check_positive_int("head_hidden_units", head_hidden_units)
        if not isinstance(gated_write, bool):
            raise ValueError(f"`gated_write` must be a bool, got {gated_write!r}.")
        self.gated_write = gated_write
        self.sam_steps = check_positive_int("sam_steps", sam_steps)
        self.relational_carry = _check_coefficient("relational_carry", relational_carry)
        self.relational_read = _check_coefficient("relational_read", relational_read)
        self.relational_transfer = _check_coefficient("relational_transfer", relational_transfer)
        self.projector_hidden_units = (
            None
            if projector_hidden_units is None
            else check_positive_int("projector_hidden_units", projector_hidden_units)
        )
        for name, value in (
            ("learn_initial_memory", learn_initial_memory),
            ("readout_normalization", readout_normalization),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be a bool, got {value!r}.")
        self.learn_initial_memory = learn_initial_memory
        self.readout_normalization = readout_normalization
        if sam_normalization not in ("joint", "row"):
            raise ValueError(
                f"`sam_normalization` must be 'joint' or 'row', got {sam_normalization!r}."
            )
        self.sam_normalization = sam_normalization
        self.layer_norm_epsilon = check_epsilon("layer_norm_epsilon", layer_norm_epsilon)
        if not keras.backend.is_float_dtype(self.compute_dtype) or not keras.backend.is_float_dtype(
            self.variable_dtype
        ):
            raise ValueError(
                f"STMCell computes in floating point: its dtype policy must be a float one (e.g. "
                f"'float32', 'mixed_bfloat16'), got {self.dtype_policy.name!r}."
            )
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
        self.dropout = check_dropout(dropout)
        self.seed = check_seed(seed)
        if self.dropout > 0.0:  # (no generator, and no saved state, without dropout)
            self.seed_generator = keras.random.SeedGenerator(seed=self.seed)

        d, nq = self.memory_size, self.num_queries
        self.output_size = self.head_units if self.head_units is not None else self.readout_size
        self.state_size = [self.output_size, d * d, nq * d * d]
        self.self_attentive_memory = SelfAttentiveMemory(
            num_queries=nq,
            epsilon=self.layer_norm_epsilon,
            normalization=sam_normalization,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            dtype=self.dtype_policy,
            name="self_attentive_memory",
        )

    # ------------------------------------------------------------------ weights
    def _add(
        self, name, shape, initializer, used, regularizer=None, constraint=None, previous=False
    ):
        """`add_weight` for a weight of the full layout, or None (no weight) when `used` is False.

        Every name goes into `_full_layout`, the weights in order that files saved before
        unused weights were dropped hold; `previous` names an unused weight that version 0.x
        still created (the transfer under a fixed zero `relational_transfer`), kept in
        `_previous_layout` (see `load_own_variables`)."""
        self._full_layout.append(name)
        if used or previous:
            self._previous_layout.append(name)
        if not used:
            return None
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            regularizer=regularizer,
            constraint=constraint,
        )

    def _dense(self, name, fan_in, units, used=True, previous=False):
        # The initializers are made even for an unused layer: each draws a seed, and the
        # weights created after it keep their values under `keras.utils.set_random_seed`.
        kernel_init, bias_init = pytorch_linear_initializers(
            fan_in, self.kernel_initializer, self.bias_initializer
        )
        kernel = self._add(
            f"{name}_kernel",
            (fan_in, units),
            kernel_init,
            used,
            self.kernel_regularizer,
            self.kernel_constraint,
            previous,
        )
        bias = self._add(
            f"{name}_bias",
            (units,),
            bias_init,
            used,
            self.bias_regularizer,
            self.bias_constraint,
            previous,
        )
        return kernel, bias

    def _projector(self, name, fan_in, units, used=True):
        hidden = self.projector_hidden_units
        if hidden is None:
            return [self._dense(name, fan_in, units, used)]
        return [
            self._dense(f"{name}_1", fan_in, hidden, used),
            self._dense(f"{name}_2", hidden, hidden, used),
            self._dense(f"{name}_3", hidden, units, used),
        ]

    @property
    def _uses_initial_relational_memory(self):
        """Whether `Mr_0` is used: a step reads or carries `Mr_{t-1}`. When none does, `Mr_t`
        is SAM's latest result alone and `Mr_0` is never seen (a sample whose steps are all
        masked keeps the initial output), so no `initial_relational_memory` is learned and
        the initial state's `Mr` is zeros."""
        return self._uses_previous_relational_memory

    def build(self, input_shape):
        input_size = input_shape[-1]
        if input_size is None:
            raise ValueError(
                f"STMCell needs a known input feature size (last axis), got {tuple(input_shape)}."
            )
        if input_size <= 0:
            raise ValueError(
                "STMCell needs a positive input feature size (last axis), got "
                f"{tuple(input_shape)}."
            )
        self.input_size = int(input_size)
        d, nq, r, a, m = (
            self.memory_size,
            self.num_queries,
            self.relation_size,
            self.readout_size,
            self.head_hidden_units,
        )
        # Weights of a path the configuration never runs are not created (their attributes
        # are None): the gates without `gated_write`, the read and slot projectors and `α2`
        # when no step reads `Mr_{t-1}`, `α1` and `Mr_0` when `Mr` is not carried.
        self._full_layout = []
        self._previous_layout = []
        gated, reads = self.gated_write, self._reads_relational_memory
        # Input projectors: u (item to write), w (read/bind vector), s (slot logits).
        self.write_projector = self._projector("write", self.input_size, d)
        self.read_projector = self._projector("read", self.input_size, d, reads)
        self.slot_projector = self._projector("slot", self.input_size, nq, reads)
        # Gates: from u, and from every row of tanh(Mi).
        self.gate_input_kernel, self.gate_input_bias = self._dense("gate_input", d, 2 * d, gated)
        self.gate_memory_kernel, self.gate_memory_bias = self._dense("gate_memory", d, 2 * d, gated)
        self.input_gate_offset = self._add("input_gate_offset", (), "zeros", gated)
        self.forget_gate_offset = self._add("forget_gate_offset", (), "ones", gated)
        # Relational memory -> item memory transfer (G1), slot read-out (G2), read-out (G3).
        self.transfer_kernel, self.transfer_bias = self._dense(
            "transfer", nq * d, d, self._path_on("relational_transfer"), previous=True
        )
        self.slot_readout_kernel, self.slot_readout_bias = self._dense("slot_readout", d * d, r)
        self.readout_kernel, self.readout_bias = self._dense("readout", nq * r, a)
        if self.readout_normalization:
            self.readout_gamma = self._add("readout_gamma", (a,), "ones", True)
            self.readout_beta = self._add("readout_beta", (a,), "zeros", True)
        if self.head_units is not None:
            self.head_hidden_1 = self._dense("head_hidden_1", a, m)
            self.head_hidden_2 = self._dense("head_hidden_2", m, m)
            self.head_output = self._dense("head_output", m, self.head_units)
        # Mixing coefficients: learned scalars (initialised to 0) or fixed numbers.
        for name in COEFFICIENTS:
            if getattr(self, name) == LEARNED:
                weight = self._add(name, (), "zeros", True)
                setattr(self, f"{name}_weight", weight)
        if self.learn_initial_memory:
            item_limit = 1.0 / math.sqrt(2 * d)
            rel_limit = 1.0 / math.sqrt(2 * d + nq)
            self.initial_item_memory = self._add(
                "initial_item_memory",
                (d, d),
                keras.initializers.RandomUniform(-item_limit, item_limit),
                True,
            )
            self.initial_relational_memory = self._add(
                "initial_relational_memory",
                (nq, d, d),
                keras.initializers.RandomUniform(-rel_limit, rel_limit),
                self._uses_initial_relational_memory,
            )
        self.self_attentive_memory.build((None, d, d))
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: self.input_size})
        self.built = True

    def load_own_variables(self, store):
        """Load the cell's weights; also from a file saved when the cell still created the
        weights of paths its configuration never runs (`_full_layout`): those are skipped."""
        own = self._trainable_variables + self._non_trainable_variables
        count = len(store.keys())
        layouts = [getattr(self, "_previous_layout", None), getattr(self, "_full_layout", None)]
        layout = next((lay for lay in layouts if lay is not None and len(lay) == count), None)
        if layout is None or count == len(own):
            return super().load_own_variables(store)
        index = {name: i for i, name in enumerate(layout)}
        for variable in own:
            variable.assign(store[f"{index[variable.name]}"])

    # ------------------------------------------------------------------ maths
    # (private to the `keras_stm.layers` package: `STM` and `_stm_loop` call these)
    def _coefficient(self, name):
        """The value of mixing coefficient `name`: a tensor if learned, else a float."""
        value = getattr(self, name)
        if value != LEARNED:
            return value
        return getattr(self, f"{name}_weight")

    def _path_on(self, name):
        """Whether the path of coefficient `name` runs (learned, or a fixed non-zero)."""
        return getattr(self, name) != 0.0

    @property
    def _projected_size(self):
        """Width of `_project_inputs`' result: `[u (d), w (d), s (nq), gate terms (2d)]`, without
        `w` and `s` when no step reads `Mr_{t-1}` and without the gate terms when the write is
        not gated."""
        d = self.memory_size
        reads = d + self.num_queries if self._reads_relational_memory else 0
        return d + reads + (2 * d if self.gated_write else 0)

    def _project_inputs(self, inputs):
        """Everything a step needs from its input alone, for any leading axes.

        Returns `concat([u, w, s, u W_gate_in + b_gate_in], -1)` of width `_projected_size`
        (the parts a configuration uses, see `_projected_size`), so that `keras_stm.STM` can
        compute it for all time steps at once.
        """

        def apply(projector, x):
            for kernel, bias in projector:
                x = stm_ops.matmul(x, kernel) + bias
            return x

        write = apply(self.write_projector, inputs)
        parts = [write]
        if self._reads_relational_memory:
            parts += [apply(self.read_projector, inputs), apply(self.slot_projector, inputs)]
        if self.gated_write:
            parts.append(stm_ops.matmul(write, self.gate_input_kernel) + self.gate_input_bias)
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def _split_projected(self, projected):
        """`(u, w, s, gate terms)` of `_project_inputs`' result; None for a part the
        configuration does not compute."""
        d, nq = self.memory_size, self.num_queries
        write, read, slots, gate = projected[..., :d], None, None, None
        if self._reads_relational_memory:
            read, slots = projected[..., d : 2 * d], projected[..., 2 * d : 2 * d + nq]
        if self.gated_write:
            gate = projected[..., self._projected_size - 2 * d :]
        return write, read, slots, gate

    @property
    def _uses_previous_relational_memory(self):
        """Whether a step reads `Mr_{t-1}` (a carry or a read path is on).

        When it does not (RAR's fixed zero carry and read, the RL variant), `Mr_t` is SAM's
        latest result alone, and `keras_stm.STM` carries it as two small factors instead.
        """
        return self._path_on("relational_read") or self._path_on("relational_carry")

    def _read_mixer(self, projected):
        """The read's mixing vector `m = vec(pi ⊗ w)` of a step (or of all steps).

        `pi = softmax(s)` (slot weights) and `w` (read vector) are projections of the input
        alone, so `m` depends on no memory: the read `v[c] = sum_n sum_p pi[n] w[p] Mr[n, p, c]`
        is `Mr @ m` with `Mr` value-major.

        Args:
            projected: `(..., projected_size)` from `_project_inputs`.

        Returns:
            `(..., nq * d)`, slot-major (`[i * d + p] = pi[i] * w[p]`).
        """
        d, nq = self.memory_size, self.num_queries
        _, read, slots, _ = self._split_projected(projected)
        weights = stm_ops.softmax(slots, axis=-1)
        mixer = ops.expand_dims(weights, -1) * ops.expand_dims(read, -2)
        return ops.reshape(mixer, tuple(ops.shape(projected)[:-1]) + (nq * d,))

    def _read_relational_memory(self, relational_memory, mixer):
        """The read `v = Mr_{t-1} @ m`: `(batch, d, nq * d)` value-major, `(batch, nq * d)` ->
        `(batch, d)`."""
        return stm_ops.matmul(relational_memory, ops.expand_dims(mixer, -1))[..., 0]

    def _update_memories(
        self, projected, item_memory, relational_memory, factored=False, return_sam_inputs=False
    ):
        """One step of the memory dynamics.

        The relational memory is taken and returned **value-major**: shape
        `(batch, d, nq * d)` with `[b, c, i * d + p] = Mr[b, i, p, c]` (see `_to_value_major`).
        In that layout OPA's product and the transfer's product need no transpose.

        The step is the read (`_read_relational_memory`), then `_write_memories`, then the
        carry `Mr_t = α1 Mr_{t-1} + R` with `R = values @ scores`, SAM's result from its
        factors (`SelfAttentiveMemory.factors`).

        Args:
            projected: `(batch, projected_size)` from `_project_inputs`.
            item_memory: `(batch, d, d)`, `Mi_{t-1}`.
            relational_memory: `(batch, d, nq * d)`, `Mr_{t-1}` value-major; unused (may be
                None) when `_uses_previous_relational_memory` is False.
            factored: bool. True returns `Mr_t` as its factors `(values (batch, d, nq),
                scores (batch, nq, nq * d))`, `Mr_t = values @ scores`; only allowed when
                `_uses_previous_relational_memory` is False.
            return_sam_inputs: bool, also return the input `S` of each SAM iteration (see
                `_write_memories`).

        Returns:
            `(Mi_t, Mr_t)`, the latter value-major, or factored; with `return_sam_inputs`,
            `(Mi_t, Mr_t, sam_inputs)`.
        """
        if factored and self._uses_previous_relational_memory:
            raise ValueError(
                "`factored=True` needs a step that does not read the previous relational "
                "memory (a fixed zero `relational_carry` and `relational_read`)."
            )
        value = None
        if self._reads_relational_memory:
            value = self._read_relational_memory(relational_memory, self._read_mixer(projected))
        new_item, factors, sam_inputs = self._write_memories(
            projected, item_memory, value, return_sam_inputs=True
        )
        if factored:
            return (new_item, factors[-1]) + ((sam_inputs,) if return_sam_inputs else ())
        carry = self._coefficient("relational_carry")
        for values, scores in factors:
            relation = stm_ops.matmul(values, scores)  # (B, d, nq*d), value-major
            if isinstance(carry, float) and carry == 0.0:
                relational_memory = relation
            elif isinstance(carry, float) and carry == 1.0:
                relational_memory = relational_memory + relation
            else:
                relational_memory = carry * relational_memory + relation
        return (new_item, relational_memory) + ((sam_inputs,) if return_sam_inputs else ())

    @property
    def _reads_relational_memory(self):
        """Whether a step reads `Mr_{t-1}` into SAM's input (a non-zero `relational_read`)."""
        return self._path_on("relational_read")

    def _write_memories(
        self, projected, item_memory, relational_value=None, return_sam_inputs=False
    ):
        """The item-memory write, SAM and the transfer of one step, given the step's read.

        Computes `Mi' = I ⊙ tanh(u ⊗ u) + F ⊙ Mi_{t-1}` (or `Mi_{t-1} + u ⊗ u`), then for each
        SAM iteration `R = SAM(Mi' + α2 v ⊗ w)` as its factors and `Mi' += α3 (G1(R) + b1)`.
        The transfer `G1(R)` is computed on the factors, `R = values @ scores`:
        `R W1 = values @ (scores W1)`, the same sum in another order, with `nq` rows in the
        large product instead of `d`. The relational memory itself is not touched: the caller
        combines `Mr_t = α1 Mr_{t-1} + R` (`_update_memories`, or `keras_stm.STM`'s loops).

        Args:
            projected: `(batch, projected_size)` from `_project_inputs`.
            item_memory: `(batch, d, d)`, `Mi_{t-1}`.
            relational_value: `(batch, d)`, the read `v` of `Mr_{t-1}`
                (`_read_relational_memory`), or None when `_reads_relational_memory` is False.

            return_sam_inputs: bool, also return the list of SAM's inputs `S` (one
                `(batch, d, d)` per SAM iteration), e.g. for `keras_stm.visualize`.

        Returns:
            `(Mi_t, factors)`: `factors` holds one `(values (batch, d, nq),
            scores (batch, nq, nq * d))` pair per SAM iteration; with `return_sam_inputs`,
            `(Mi_t, factors, sam_inputs)`.
        """
        d = self.memory_size
        write, read, _, gate_input = self._split_projected(projected)

        item = stm_ops.outer(write, write)  # u ⊗ u
        if self.gated_write:
            gates = stm_ops.matmul(stm_ops.tanh(item_memory), self.gate_memory_kernel)
            gates = gates + (self.gate_memory_bias + ops.expand_dims(gate_input, 1))
            input_gate = ops.sigmoid(gates[..., :d] + self.input_gate_offset)
            forget_gate = ops.sigmoid(gates[..., d:] + self.forget_gate_offset)
            new_item = input_gate * stm_ops.tanh(item) + forget_gate * item_memory
        else:
            new_item = item_memory + item

        sam_input_shift = None
        if relational_value is not None:
            sam_input_shift = self._coefficient("relational_read") * stm_ops.outer(
                relational_value, read
            )

        transfer_on = self._path_on("relational_transfer")
        factors, sam_inputs = [], []
        for _ in range(self.sam_steps):
            sam_input = new_item if sam_input_shift is None else new_item + sam_input_shift
            sam_inputs.append(sam_input)
            values, scores = self.self_attentive_memory.factors(sam_input)  # R = values @ scores
            if transfer_on:
                # Tr[c, e] = sum_{i, p} R[c, (i, p)] W1[(i, p), e] + b1[e], as values @ (scores W1)
                transfer = stm_ops.matmul(values, stm_ops.matmul(scores, self.transfer_kernel))
                transfer = transfer + self.transfer_bias
                new_item = new_item + self._coefficient("relational_transfer") * transfer
            factors.append((values, scores))
        return (new_item, factors) + ((sam_inputs,) if return_sam_inputs else ())

    def _to_value_major(self, relational_memory):
        """`(..., nq, d, d)` [i, p, c] -> value-major `(..., d, nq * d)` [c, (i, p)]."""
        d, nq = self.memory_size, self.num_queries
        lead = tuple(ops.shape(relational_memory)[:-3])
        moved = ops.moveaxis(relational_memory, -1, -3)
        return ops.reshape(moved, lead + (d, nq * d))

    def _from_value_major(self, relational_memory):
        """Value-major `(..., d, nq * d)` -> `(..., nq, d, d)` [i, p, c]."""
        d, nq = self.memory_size, self.num_queries
        lead = tuple(ops.shape(relational_memory)[:-2])
        split = ops.reshape(relational_memory, lead + (d, nq, d))
        return ops.moveaxis(split, -3, -1)

    def read_out(self, relational_memory):
        """Read-out `o_t = G3(flatten_n(G2(Mr_n)))` for any leading axes of `Mr`."""
        d, nq, r = self.memory_size, self.num_queries, self.relation_size
        lead = ops.shape(relational_memory)[:-3]
        slots = ops.reshape(relational_memory, (-1, nq, d * d))
        relations = stm_ops.matmul(slots, self.slot_readout_kernel) + self.slot_readout_bias
        readout = (
            stm_ops.matmul(ops.reshape(relations, (-1, nq * r)), self.readout_kernel)
            + self.readout_bias
        )
        if self.readout_normalization:
            readout = stm_ops.normalize(readout, -1, self.layer_norm_epsilon)
            readout = readout * self.readout_gamma + self.readout_beta
        return ops.reshape(readout, tuple(lead) + (self.readout_size,))

    def head(self, readout):
        """The optional output head `W3 relu(W2 relu(W1 o + b1) + b2) + b3` (identity if off)."""
        if self.head_units is None:
            return readout
        x = readout
        for kernel, bias in (self.head_hidden_1, self.head_hidden_2):
            x = ops.relu(stm_ops.matmul(x, kernel) + bias)
        kernel, bias = self.head_output
        return stm_ops.matmul(x, kernel) + bias

    def _output_from_memory(self, relational_memory):
        """The per-step output (`y_t` or `o_t`) computed from `Mr_t`."""
        return self.head(self.read_out(relational_memory))

    # ------------------------------------------------------------------ one step, public
    def update_memories(
        self,
        inputs: Any,
        item_memory: Any,
        relational_memory: Any,
        return_sam_inputs: bool = False,
    ) -> tuple:
        """One step of the memory dynamics, on the memories as the layers return them.

        From a step's input `x_t` and the memories `Mi_{t-1}`, `Mr_{t-1}`: the input
        projections, the gated (or additive) item write, the read of `Mr_{t-1}`, SAM, the
        transfer and the carry (sections 1-5 of `docs/model.md`). `call` is this step between
        the flat states, plus `read_out` and `head`; `keras_stm.experiments.visualize` records
        the memories and SAM's inputs with it.

        Args:
            inputs: `(batch, input_size)`, the step's input (no dropout is applied).
            item_memory: `(batch, d, d)`, `Mi_{t-1}`.
            relational_memory: `(batch, nq, d, d)`, `Mr_{t-1}` (`[i, p, c]`: slot `i`).
            return_sam_inputs: bool, also return the input `S = Mi' + α2 v ⊗ w` of each SAM
                iteration (one `(batch, d, d)` tensor per iteration, `sam_steps` in all).

        Returns:
            `(Mi_t, Mr_t)` of shapes `(batch, d, d)`, `(batch, nq, d, d)`; with
            `return_sam_inputs`, `(Mi_t, Mr_t, sam_inputs)`.

        Example:

        >>> import numpy as np, keras_stm
        >>> cell = keras_stm.STMCell(num_queries=2, memory_size=4, relation_size=4,
        ...                          readout_size=4)
        >>> cell.build((None, 3))
        >>> _, item, relational = cell.get_initial_state(batch_size=1)
        >>> item, relational = cell.unflatten_memories(item, relational)
        >>> item, relational = cell.update_memories(np.ones((1, 3), "float32"), item, relational)
        >>> tuple(item.shape), tuple(relational.shape), tuple(cell.read_out(relational).shape)
        ((1, 4, 4), (1, 2, 4, 4), (1, 4))
        """
        if not (ops.is_tensor(inputs) or isinstance(inputs, keras.KerasTensor)):
            inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        result = self._update_memories(
            self._project_inputs(inputs),
            item_memory,
            self._to_value_major(relational_memory),
            return_sam_inputs=return_sam_inputs,
        )
        return (result[0], self._from_value_major(result[1])) + tuple(result[2:])

    # ------------------------------------------------------------------ RNN API
    def unflatten_memories(self, item_memory: Any, relational_memory: Any) -> tuple:
        """Reshape flat memories `(batch, d*d)`, `(batch, nq*d*d)` (the cell's states 1 and 2)
        to `(batch, d, d)`, `(batch, nq, d, d)`."""
        d, nq = self.memory_size, self.num_queries
        return ops.reshape(item_memory, (-1, d, d)), ops.reshape(relational_memory, (-1, nq, d, d))

    def call(self, inputs: Any, states: list, training: bool | None = None) -> tuple:
        if len(states) != 3:
            raise ValueError(
                "STMCell expects 3 states [previous_output, item_memory, relational_memory], "
                f"got {len(states)}."
            )
        item_memory, relational_memory = self.unflatten_memories(states[1], states[2])
        if training and self.dropout > 0.0:
            inputs = inputs * ops.cast(self.get_dropout_mask(inputs), inputs.dtype)
        item_memory, relational_memory = self.update_memories(
            inputs, item_memory, relational_memory
        )
        output = self._output_from_memory(relational_memory)
        d, nq = self.memory_size, self.num_queries
        new_states = [
            output,
            ops.reshape(item_memory, (-1, d * d)),
            ops.reshape(relational_memory, (-1, nq * d * d)),
        ]
        return output, new_states

    def get_recurrent_dropout_mask(self, step_input):
        """None: the cell has no recurrent dropout (`DropoutRNNCell` API)."""
        return None

    def get_initial_state(self, batch_size=None):
        d, nq = self.memory_size, self.num_queries
        dtype = self.compute_dtype
        previous_output = ops.zeros((batch_size, self.output_size), dtype=dtype)
        # Learned memories are tiled by a broadcasting add, not `ops.broadcast_to`: torch's
        # broadcast view has stride 0, and `stateful=True` assigns into the variables made
        # from these.
        item = ops.zeros((batch_size, d * d), dtype=dtype)
        relational = ops.zeros((batch_size, nq * d * d), dtype=dtype)
        if self.learn_initial_memory:
            item = ops.cast(ops.reshape(self.initial_item_memory, (1, d * d)), dtype) + item
        if getattr(self, "initial_relational_memory", None) is not None:
            initial = ops.reshape(self.initial_relational_memory, (1, nq * d * d))
            relational = ops.cast(initial, dtype) + relational
        return [previous_output, item, relational]

    def get_config(self):
        config = super().get_config()

        def initializer(value):
            return keras.initializers.serialize(value) if value is not None else None

        config.update(
            {
                "num_queries": self.num_queries,
                "memory_size": self.memory_size,
                "relation_size": self.relation_size,
                "readout_size": self.readout_size,
                "head_units": self.head_units,
                "head_hidden_units": self.head_hidden_units,
                "gated_write": self.gated_write,
                "sam_steps": self.sam_steps,
                "relational_carry": self.relational_carry,
                "relational_read": self.relational_read,
                "relational_transfer": self.relational_transfer,
                "projector_hidden_units": self.projector_hidden_units,
                "learn_initial_memory": self.learn_initial_memory,
                "sam_normalization": self.sam_normalization,
                "readout_normalization": self.readout_normalization,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_initializer": initializer(self.kernel_initializer),
                "bias_initializer": initializer(self.bias_initializer),
                **regularizers_and_constraints_config(self),
                "dropout": self.dropout,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**upgrade_cell_config(config))
