"""`ActorCritic`: the reference's Atari agent (CNN -> LSTMCell -> STM -> actor and critic) in Keras.

Spec sections 3.6 and 4.9 (the authors' `baselines/sam/a3c.py`, `stm_rl.py`, `rl/train_sam.py`).
Network, for one step of `N` environments:

    frame (80, 80, 1) -> 4 x [conv, 2x2 max-pool, ReLU] -> 1024 features
        conv 32 5x5 pad 2 | conv 32 5x5 pad 1 | conv 64 4x4 pad 1 | conv 64 3x3 pad 1
    -> LSTMCell(256) -> h
    -> STM, RL variant (nq 8, d 96, r 96, read-out 64, head 128 -> 256) on h -> y
    -> features concat[y, h] (512) -> critic Dense(1), actor Dense(n_actions) (logits)

`core="lstm"` drops the STM: the features are `h` alone (the usual A3C-LSTM agent).

Recurrent state, carried by the caller as a list of flat float32 arrays (`state_names`):
`[lstm_h (N, 256), lstm_c (N, 256)]` plus, for the STM core, `[stm_output (N, 256),
stm_item_memory (N, d*d)]`. That is the reference's state `(hx = previous STM output, cx = Mi,
h2, c2)`. The relational memory `Mr` is not carried: the RL variant recomputes it every step
from `Mi` (`relational_carry=0, relational_read=0`), and the previous STM output is never read by
the
next step (it is kept only to mirror the reference and `keras_stm.STMCell`'s state list).

Episode ends: `resets[:, t] = 1` re-initialises an environment's state *before* step `t`:
`s <- (1 - reset) * s + reset * s0`, where `s0` is zeros for `h`, `c` and the STM output and the
STM's learned initial item memory for `Mi` (the reference calls `init_sequence` on `done`, which
tiles `item_memory_state_bias`; gradients reach it, as there).

Training (`train_on_batch`) re-runs a whole rollout: inputs `{"observations": (N, T, 80, 80, 1),
"resets": (N, T), "states": the states at the rollout's start}` and targets `{"actions": (N, T)
int, "advantages": (N, T), "returns": (N, T)}` (GAE and discounted returns from
`keras_stm.experiments.tasks.advantages`, computed from the values seen while acting).
`compute_loss` is the
reference's A3C loss (`actor_critic_loss`), so the whole update goes through Keras' own train
step under jax, torch and tensorflow. Because the learner starts from the states stored at the
start of the rollout and applies the same resets, it recomputes exactly the logits and values
the actors saw (same weights), and the states are detached between rollouts (truncated BPTT over
`T` steps, as the reference's `Variable(cx.data)` every 20 steps).

References:
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020 (official code
    `thaihungle/SAM`). Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning",
    ICML 2016.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_stm.layers.stm_cell import STMCell

CORES = ("stm", "lstm")
"""tuple: recurrent cores of `ActorCritic`: the paper's STM agent and the LSTM-only baseline."""

OBSERVATION_SHAPE = (80, 80, 1)
"""tuple: one preprocessed Atari frame, channels-last
(`keras_stm.experiments.tasks.atari.OBSERVATION_SHAPE`)."""

CONV_FILTERS = (32, 32, 64, 64)
"""tuple: filters of the four convolutions of the reference encoder."""

LSTM_UNITS = 256
"""int: width of the reference's `LSTMCell(1024, 256)`."""

ATARI_STM_CONFIG = {
    "num_queries": 8,
    "memory_size": 96,
    "relation_size": 96,
    "readout_size": 64,
    "head_units": 256,
    "head_hidden_units": 128,
    "gated_write": True,
    "sam_steps": 1,
}
"""dict: the reference's RL STM sizes (`STM(256, 256, num_slot=8, mlp_size=128, slot_size=96,
rel_size=96, out_att_size=64, rd=True)`); `stm_config` may override these keys only."""

RL_VARIANT = {
    "sam_normalization": "row",
    "readout_normalization": True,
    "relational_carry": 0.0,
    "relational_read": 0.0,
    "relational_transfer": "learned",
    "learn_initial_memory": True,
}
"""dict: fixed `STMCell` arguments of the authors' `stm_rl` as `a3c.py` calls it (spec 3.6).

With `Mr = None` the reference never uses alpha1/alpha2 (carry, read): they are fixed to 0 here,
which computes the same thing without creating weights that would get no gradient."""

SMOKE_CONFIG = {
    "conv_filters": (2, 2, 2, 2),
    "lstm_units": 6,
    "stm_config": {
        "num_queries": 2,
        "memory_size": 3,
        "relation_size": 3,
        "readout_size": 4,
        "head_units": 5,
        "head_hidden_units": 4,
    },
}
"""dict: tiny `ActorCritic` sizes for CPU smoke runs (`--quick`) and tests (all widths differ,
so that a mixed-up axis shows)."""

A2C_DEFAULTS = {
    "learning_rate": 1e-4,
    "adam_epsilon": 1e-3,
    "amsgrad": True,
    "gamma": 0.99,
    "gae_lambda": 0.92,
    "entropy_coef": 0.01,
    "value_coef": 0.5,
    "rollout_length": 20,
}
"""dict: the reference's training constants (spec 4.9): shared Adam(lr 1e-4, amsgrad, eps 1e-3),
no gradient clipping, gamma 0.99, GAE tau 0.92, entropy 0.01, value 0.5, 20-step rollouts."""


@keras.saving.register_keras_serializable(package="keras_stm")
class NormalizedColumns(keras.initializers.Initializer):
    """Gaussian kernel whose every output unit has incoming weights of L2 norm `std`.

    The reference's `norm_col_init` for the actor (std 0.01) and critic (std 1.0) layers:
    `W ~ N(0, 1)`, then each column of the Keras kernel `(fan_in, units)` is rescaled to norm
    `std` (the rows of PyTorch's `(out, in)` weight).

    Args:
        std: float > 0, the norm of each column. Defaults to 1.0.
        seed: optional int seed.

    Example:

    >>> import numpy as np
    >>> w = NormalizedColumns(0.5, seed=1)((10, 3))
    >>> np.allclose(np.linalg.norm(np.asarray(w), axis=0), 0.5, atol=1e-5)
    True
    """

    def __init__(self, std=1.0, seed=None):
        if isinstance(std, bool) or not isinstance(std, (int, float)) or not std > 0:
            raise ValueError(f"`std` must be a positive number, got {std!r}.")
        self.std = float(std)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        if len(shape) != 2:
            raise ValueError(f"NormalizedColumns needs a 2-D kernel shape, got {shape}.")
        x = keras.random.normal(shape, seed=self.seed, dtype=dtype)
        return x * (self.std / ops.sqrt(ops.sum(ops.square(x), axis=0, keepdims=True)))

    def get_config(self):
        return {"std": self.std, "seed": self.seed}


def actor_critic_loss(
    logits, values, actions, advantages, returns, entropy_coef=0.01, value_coef=0.5
):
    """The reference A3C loss of a batch of rollouts, with `keras.ops`.

    Per environment (summed over the rollout's `T` steps, as the authors' worker does):
    `policy = sum_t [-log pi(a_t | s_t) * A_t - entropy_coef * H(pi(. | s_t))]`,
    `value = sum_t 0.5 * (R_t - V(s_t))^2`, `loss_env = policy + value_coef * value`; the loss
    is the mean of `loss_env` over the `N` environments (each environment contributes what one
    A3C worker's update would).

    Args:
        logits: float tensor `(N, T, n_actions)`, the actor's logits.
        values: float tensor `(N, T)`, the critic's values.
        actions: int tensor `(N, T)`, the actions taken.
        advantages: float tensor `(N, T)`, GAE advantages (constants).
        returns: float tensor `(N, T)`, value targets (constants).
        entropy_coef: float, weight of the entropy bonus. Defaults to 0.01.
        value_coef: float, weight of the value loss. Defaults to 0.5.

    Returns:
        Tuple `(loss, parts)`: the scalar loss and a dict of scalars `policy_loss`,
        `value_loss` (means over environments of the per-environment sums) and `entropy`
        (mean policy entropy per step).

    Example:

    >>> import numpy as np
    >>> loss, parts = actor_critic_loss(np.zeros((1, 2, 3), "float32"),
    ...                                 np.zeros((1, 2), "float32"), np.zeros((1, 2), "int32"),
    ...                                 np.ones((1, 2), "float32"), np.ones((1, 2), "float32"))
    >>> round(float(loss), 4)  # 2 log 3 - 0.02 log 3 + 0.5 * 0.5 * 2
    2.6753
    """
    logits = ops.convert_to_tensor(logits)
    if len(logits.shape) != 3:
        raise ValueError(f"`logits` must have shape (N, T, n_actions), got {logits.shape}.")
    dtype = "float32"
    logits = ops.cast(logits, dtype)
    values = ops.cast(values, dtype)
    advantages = ops.stop_gradient(ops.cast(advantages, dtype))
    returns = ops.stop_gradient(ops.cast(returns, dtype))
    log_probs = ops.log_softmax(logits, axis=-1)
    entropy = -ops.sum(ops.exp(log_probs) * log_probs, axis=-1)
    taken = ops.sum(
        ops.one_hot(ops.cast(actions, "int32"), logits.shape[-1], dtype=dtype) * log_probs, axis=-1
    )
    policy = -ops.sum(taken * advantages, axis=1) - entropy_coef * ops.sum(entropy, axis=1)
    value = ops.sum(0.5 * ops.square(returns - values), axis=1)
    loss = ops.mean(policy + value_coef * value)
    return loss, {
        "policy_loss": ops.mean(policy),
        "value_loss": ops.mean(value),
        "entropy": ops.mean(entropy),
    }


def a2c_optimizer(
    learning_rate=1e-4,
    epsilon=1e-3,
    amsgrad=True,
    beta_1=0.9,
    beta_2=0.999,
    clipnorm=None,
    clipvalue=None,
):
    """The reference's optimiser: Adam(lr 1e-4, amsgrad, eps 1e-3), no gradient clipping.

    Note: Keras' Adam adds `epsilon` to `sqrt(v)` before the bias correction and PyTorch after
    it, so Keras' effective epsilon is `epsilon / sqrt(1 - beta_2^t)` (31.6x at step 1, 1.6x at
    step 500, -> 1x): only the first few hundred updates differ, slightly more damped.

    Args:
        learning_rate: float. Defaults to 1e-4.
        epsilon: float. Defaults to 1e-3 (the reference's `eps`).
        amsgrad: bool. Defaults to True.
        beta_1, beta_2: floats. Default to PyTorch's 0.9, 0.999.
        clipnorm, clipvalue: optional gradient clipping (the reference has none).

    Returns:
        `keras.optimizers.Adam`.

    Example:

    >>> a2c_optimizer().amsgrad
    True
    """
    clip = {}
    if clipnorm is not None:
        clip["global_clipnorm"] = clipnorm
    if clipvalue is not None:
        clip["clipvalue"] = clipvalue
    return keras.optimizers.Adam(
        learning_rate=learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        amsgrad=amsgrad,
        **clip,
    )


def sample_actions(logits, rng):
    """Draws one action per row from `softmax(logits)` (numpy, vectorised).

    Args:
        logits: float array `(N, n_actions)`.
        rng: `np.random.Generator`.

    Returns:
        int64 array `(N,)`.

    Example:

    >>> import numpy as np
    >>> sample_actions(np.array([[0.0, -1e9], [-1e9, 0.0]]), np.random.default_rng(0))
    array([0, 1])
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"`logits` must have shape (N, n_actions), got {logits.shape}.")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a np.random.Generator, got {type(rng).__name__}.")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cumulative = np.cumsum(probs, axis=1)
    draws = rng.random(logits.shape[0]) * cumulative[:, -1]
    return np.minimum((cumulative <= draws[:, None]).sum(axis=1), logits.shape[1] - 1)


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@keras.saving.register_keras_serializable(package="keras_stm")
class ActorCritic(keras.Model):
    """Advantage actor-critic with the reference CNN, an LSTMCell and an STM core (spec 4.9).

    See the module docstring for the network, the state layout and the training protocol.
    `call` processes `T` consecutive steps of `N` environments from given states:

        out = model({"observations": (N, T, 80, 80, 1), "resets": (N, T), "states": [...]})
        out["logits"] (N, T, n_actions), out["values"] (N, T), out["states"] (after step T)

    `step` is the one-step form for acting (a `predict_on_batch` with `T = 1`), and
    `train_on_batch(inputs, {"actions", "advantages", "returns"})` one A2C update.

    Initialisation as the reference: convolutions Glorot-uniform x sqrt(2) (ReLU gain), every
    dense layer of the STM Glorot-uniform, all biases zero, actor / critic `NormalizedColumns`
    0.01 / 1.0; LSTM kernels U(+-1/sqrt(units)) (PyTorch's default) with zero biases.
    The RL variant (spec 3.6) never reads the relational memory: the STM cell creates no read /
    slot projectors and no initial relational memory (their paths never run).

    Args:
        num_actions: int >= 1, size of the action set (6 for Pong).
        core: `"stm"` (default) or `"lstm"`.
        observation_shape: tuple `(height, width, channels)` of one frame. Defaults to
            `(80, 80, 1)`; must leave at least 1 x 1 pixels after the four blocks.
        conv_filters: 4 ints, filters of the convolutions. Defaults to `(32, 32, 64, 64)`.
        lstm_units: int, LSTMCell width. Defaults to 256.
        stm_config: optional dict overriding keys of `ATARI_STM_CONFIG` (sizes of the STM).
        entropy_coef: float, entropy bonus weight of the loss. Defaults to 0.01.
        value_coef: float, value loss weight. Defaults to 0.5.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> model = ActorCritic(6, conv_filters=(4, 4, 4, 4), lstm_units=8,
    ...                     stm_config=dict(num_queries=2, memory_size=4, relation_size=4,
    ...                                     readout_size=4, head_units=8, head_hidden_units=8))
    >>> states = model.initial_states(3)
    >>> logits, values, states = model.step(np.zeros((3, 80, 80, 1), "float32"), states)
    >>> logits.shape, values.shape, [s.shape for s in states]
    ((3, 6), (3,), [(3, 8), (3, 8), (3, 8), (3, 16)])
    """

    def __init__(
        self,
        num_actions,
        core="stm",
        observation_shape=OBSERVATION_SHAPE,
        conv_filters=CONV_FILTERS,
        lstm_units=LSTM_UNITS,
        stm_config=None,
        entropy_coef=0.01,
        value_coef=0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_actions = _check_int("num_actions", num_actions)
        if core not in CORES:
            raise ValueError(f"`core` must be one of {CORES}, got {core!r}.")
        self.core = core
        if not (isinstance(observation_shape, (tuple, list)) and len(observation_shape) == 3):
            raise ValueError(
                f"`observation_shape` must be (height, width, channels), got {observation_shape!r}."
            )
        self.observation_shape = tuple(
            _check_int("observation_shape", v) for v in observation_shape
        )
        if not (isinstance(conv_filters, (tuple, list)) and len(conv_filters) == 4):
            raise ValueError(f"`conv_filters` must be 4 integers, got {conv_filters!r}.")
        self.conv_filters = tuple(_check_int("conv_filters", v) for v in conv_filters)
        self.lstm_units = _check_int("lstm_units", lstm_units)
        unknown = sorted(set(stm_config or {}) - set(ATARI_STM_CONFIG))
        if unknown:
            raise ValueError(
                f"`stm_config` has unknown keys {unknown}; allowed: {sorted(ATARI_STM_CONFIG)}."
            )
        self.stm_config = {**ATARI_STM_CONFIG, **(stm_config or {})}
        for name, value in (("entropy_coef", entropy_coef), ("value_coef", value_coef)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.")
        self.entropy_coef = float(entropy_coef)
        self.value_coef = float(value_coef)

        relu_glorot = keras.initializers.VarianceScaling(2.0, "fan_avg", "uniform")
        # (kernel size, explicit zero padding) of the reference's four convolutions.
        geometry = ((5, 2), (5, 1), (4, 1), (3, 1))
        self.encoder_layers = []
        for i, (filters, (size, pad)) in enumerate(zip(self.conv_filters, geometry), start=1):
            self.encoder_layers += [
                keras.layers.ZeroPadding2D(pad, name=f"pad{i}"),
                keras.layers.Conv2D(
                    filters,
                    size,
                    kernel_initializer=relu_glorot,
                    bias_initializer="zeros",
                    name=f"conv{i}",
                ),
                keras.layers.MaxPooling2D(2, name=f"pool{i}"),
                keras.layers.ReLU(name=f"relu{i}"),
            ]
        self.encoder_layers.append(keras.layers.Flatten(name="flatten"))
        lstm_init = keras.initializers.RandomUniform(
            -1.0 / math.sqrt(self.lstm_units), 1.0 / math.sqrt(self.lstm_units)
        )
        self.lstm_cell = keras.layers.LSTMCell(
            self.lstm_units,
            kernel_initializer=lstm_init,
            recurrent_initializer=lstm_init,
            bias_initializer="zeros",
            unit_forget_bias=False,
            name="lstm_cell",
        )
        self.stm_cell = None
        if core == "stm":
            self.stm_cell = STMCell(
                **self.stm_config,
                **RL_VARIANT,
                kernel_initializer="glorot_uniform",
                bias_initializer="zeros",
                name="stm_cell",
            )
        self.actor = keras.layers.Dense(
            self.num_actions,
            name="actor",
            kernel_initializer=NormalizedColumns(0.01),
            bias_initializer="zeros",
        )
        self.critic = keras.layers.Dense(
            1, name="critic", kernel_initializer=NormalizedColumns(1.0), bias_initializer="zeros"
        )
        self.policy_loss_tracker = keras.metrics.Mean(name="policy_loss")
        self.value_loss_tracker = keras.metrics.Mean(name="value_loss")
        self.entropy_tracker = keras.metrics.Mean(name="entropy")
        self.build()

    # ------------------------------------------------------------------ structure
    def build(self, input_shape=None):
        """Creates every weight (the shapes follow from the constructor; `input_shape` unused)."""
        if self.built:
            return
        shape = (None,) + self.observation_shape
        for layer in self.encoder_layers:
            too_small = ValueError(
                f"`observation_shape` {self.observation_shape} is too small for the four "
                "conv + max-pool blocks (needs at least 40 x 40 pixels)."
            )
            try:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
            except ValueError as error:
                raise too_small from error
            if any(s is not None and s <= 0 for s in shape[1:]):
                raise too_small
        self.feature_size = int(shape[-1])
        self.lstm_cell.build((None, self.feature_size))
        features = self.lstm_units
        if self.stm_cell is not None:
            self.stm_cell.build((None, self.lstm_units))
            features += self.stm_cell.output_size
        self.actor.build((None, features))
        self.critic.build((None, features))
        self.built = True

    @property
    def state_names(self):
        """list of str: names of the recurrent states, in order."""
        names = ["lstm_h", "lstm_c"]
        if self.stm_cell is not None:
            names += ["stm_output", "stm_item_memory"]
        return names

    @property
    def state_sizes(self):
        """list of int: width of each (flat) recurrent state."""
        sizes = [self.lstm_units, self.lstm_units]
        if self.stm_cell is not None:
            sizes += [self.stm_cell.output_size, self.stm_cell.memory_size**2]
        return sizes

    def _reset_values(self):
        """The state every environment starts from, as `(1, size)` tensors (None = zeros)."""
        values = [None, None]
        if self.stm_cell is not None:
            values += [None, self.stm_cell.get_initial_state(batch_size=1)[1]]
        return values

    def initial_states(self, batch_size):
        """The start state of `batch_size` environments, as float32 numpy arrays.

        Args:
            batch_size: int >= 1.

        Returns:
            list of arrays `(batch_size, size)` in the order of `state_names`: zeros, and the
            learned initial item memory (flattened) for `stm_item_memory`.
        """
        batch_size = _check_int("batch_size", batch_size)
        states = []
        for size, value in zip(self.state_sizes, self._reset_values()):
            if value is None:
                states.append(np.zeros((batch_size, size), np.float32))
            else:
                row = np.asarray(ops.convert_to_numpy(value), np.float32)
                states.append(np.repeat(row, batch_size, axis=0))
        return states

    # ------------------------------------------------------------------ forward
    def encode(self, frames):
        """CNN features `(B, feature_size)` of frames `(B, height, width, channels)`."""
        x = frames
        for layer in self.encoder_layers:
            x = layer(x)
        return x

    def recurrent_step(self, features, states):
        """One step of the LSTMCell (and STM) from CNN features `(N, feature_size)`.

        Returns:
            The new states (list, order of `state_names`).
        """
        h, (h, c) = self.lstm_cell(features, [states[0], states[1]])
        if self.stm_cell is None:
            return [h, c]
        cell = self.stm_cell
        # The RL variant never reads Mr (Mr = None in the reference): a zero placeholder
        # fills the cell's third state, and the Mr it returns is dropped.
        unused_mr = ops.zeros((ops.shape(h)[0], cell.state_size[2]), dtype=h.dtype)
        output, (_, item_memory, _) = cell(h, [states[2], states[3], unused_mr])
        return [h, c, output, item_memory]

    def heads(self, states):
        """Actor logits `(..., n_actions)` and critic values `(...)` from states after a step.

        The features are `concat[stm_output, lstm_h]` (STM core) or `lstm_h` (LSTM core).
        """
        features = (
            states[0] if self.stm_cell is None else ops.concatenate([states[2], states[0]], axis=-1)
        )
        return self.actor(features), self.critic(features)[..., 0]

    def _unpack(self, inputs):
        if not isinstance(inputs, dict) or "observations" not in inputs or "states" not in inputs:
            raise ValueError(
                "ActorCritic inputs must be a dict with 'observations' "
                "(N, T, height, width, channels), 'states' (list) and optionally "
                f"'resets' (N, T); got {type(inputs).__name__}"
                f"{sorted(inputs) if isinstance(inputs, dict) else ''}."
            )
        observations = inputs["observations"]
        expected = self.observation_shape
        if len(observations.shape) != 5 or tuple(observations.shape[2:]) != expected:
            raise ValueError(
                f"'observations' must have shape (N, T) + {expected}, got "
                f"{tuple(observations.shape)}."
            )
        states = list(inputs["states"])
        if len(states) != len(self.state_sizes):
            raise ValueError(
                f"'states' must be {len(self.state_sizes)} arrays "
                f"{self.state_names}, got {len(states)}."
            )
        for name, size, state in zip(self.state_names, self.state_sizes, states):
            if len(state.shape) != 2 or state.shape[-1] != size:
                raise ValueError(
                    f"state {name!r} must have shape (N, {size}), got {tuple(state.shape)}."
                )
        resets = inputs.get("resets")
        if resets is not None and (
            len(resets.shape) != 2
            or (
                None not in (resets.shape[1], observations.shape[1])
                and resets.shape[1] != observations.shape[1]
            )
        ):
            raise ValueError(
                f"'resets' must have shape (N, T={observations.shape[1]}), got "
                f"{tuple(resets.shape)}."
            )
        return observations, resets, states

    def call(self, inputs, training=None):
        """Runs `T` steps; see the class docstring for the input and output dicts."""
        observations, resets, states = self._unpack(inputs)
        dtype = self.compute_dtype
        states = [ops.cast(s, dtype) for s in states]
        shape = ops.shape(observations)
        frames = ops.reshape(ops.cast(observations, dtype), (-1,) + self.observation_shape)
        features = ops.reshape(self.encode(frames), (shape[0], shape[1], self.feature_size))
        if resets is None:
            resets = ops.zeros((shape[0], shape[1]), dtype=dtype)
        resets = ops.expand_dims(ops.cast(resets, dtype), -1)
        reset_values = [None if s0 is None else ops.cast(s0, dtype) for s0 in self._reset_values()]

        def step(carry, step_inputs):
            step_features, reset = step_inputs[:, :-1], step_inputs[:, -1:]
            keep = 1.0 - reset
            carry = [
                c * keep if c0 is None else c * keep + reset * c0
                for c, c0 in zip(carry, reset_values)
            ]
            carry = self.recurrent_step(step_features, carry)
            return carry, carry  # (the tensorflow scan wants outputs shaped like the carry)

        # Time-major scan (a while loop, so T may be dynamic); the heads run on all steps at once.
        # One xs tensor [features | reset]: Keras' tensorflow scan mishandles several xs when T
        # is unknown (as after `predict_on_batch` retraces with relaxed shapes).
        xs = ops.swapaxes(ops.concatenate([features, resets], axis=-1), 0, 1)
        final, per_step = ops.scan(step, states, xs)
        logits, values = self.heads(per_step)
        return {
            "logits": ops.swapaxes(logits, 0, 1),
            "values": ops.swapaxes(values, 0, 1),
            "states": list(final),
        }

    def step(self, observations, states, resets=None):
        """One acting step for `N` environments (numpy in, numpy out; compiled by Keras).

        Args:
            observations: float32 array `(N, height, width, channels)`.
            states: list of arrays, as from `initial_states` or a previous `step`.
            resets: optional bool/float array `(N,)`: environments whose state is
                re-initialised before this step (their previous step ended an episode).

        Returns:
            `(logits (N, n_actions), values (N,), new_states)` as numpy arrays.
        """
        observations = np.asarray(observations, np.float32)
        if observations.ndim != 4:
            raise ValueError(
                "`observations` must have shape (N, height, width, channels), got "
                f"{observations.shape}."
            )
        n = observations.shape[0]
        resets = np.zeros((n,), np.float32) if resets is None else np.asarray(resets, np.float32)
        if resets.shape != (n,):
            raise ValueError(f"`resets` must have shape ({n},), got {resets.shape}.")
        out = self.predict_on_batch(
            {
                "observations": observations[:, None],
                "resets": resets[:, None],
                "states": [np.asarray(s, np.float32) for s in states],
            }
        )
        return out["logits"][:, 0], out["values"][:, 0], list(out["states"])

    # ------------------------------------------------------------------ training
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The A3C loss (`actor_critic_loss`) of a rollout; `y`: actions, advantages, returns."""
        if not isinstance(y, dict) or not {"actions", "advantages", "returns"} <= set(y):
            raise ValueError(
                "ActorCritic targets must be a dict with 'actions', 'advantages' "
                f"and 'returns' (each (N, T)); got {type(y).__name__}."
            )
        loss, parts = actor_critic_loss(
            y_pred["logits"],
            y_pred["values"],
            y["actions"],
            y["advantages"],
            y["returns"],
            entropy_coef=self.entropy_coef,
            value_coef=self.value_coef,
        )
        self.policy_loss_tracker.update_state(parts["policy_loss"])
        self.value_loss_tracker.update_state(parts["value_loss"])
        self.entropy_tracker.update_state(parts["entropy"])
        for extra in self.losses:
            loss = loss + ops.cast(ops.sum(extra), loss.dtype)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_actions": self.num_actions,
                "core": self.core,
                "observation_shape": list(self.observation_shape),
                "conv_filters": list(self.conv_filters),
                "lstm_units": self.lstm_units,
                "stm_config": dict(self.stm_config),
                "entropy_coef": self.entropy_coef,
                "value_coef": self.value_coef,
            }
        )
        return config
