"""The `TPRInference` layer: multi-hop question answering over a relational memory."""

import keras
from keras import ops

from keras_stm import ops as stm_ops
from keras_stm.layers.self_attentive_memory import check_positive_int


@keras.saving.register_keras_serializable(package="keras_stm")
class TPRInference(keras.layers.Layer):
    """Multi-hop inference over a relational memory, TPR-RNN style, with a frozen output map.

    The relational memory `M` (roles x entities x entities; the STM's final `Mr`, slot axis
    first) is read as a third-order tensor `T[e, r, f] = M[r, e, f]` (entity `e`, role `r`).
    From the question vector `q`:

        mlp(q) = tanh(tanh(q W1 + b1) W2 + b2)                # hidden_units wide
        e1 = mlp_e(q) (entity_size),  r_k = mlp_r_k(q) (role_size), k = 1..hops
        i_1 = LN_1(sum_{e,r} e1[e] r_1[r] T[e, r, :])
        i_k = LN_k(sum_{e,r} i_{k-1}[e] r_k[r] T[e, r, :])    k = 2..hops
        logits = (i_1 + ... + i_hops) Z

    `LN_k` normalises each vector over its `entity_size` entries (biased variance, epsilon
    `1e-12`) with a learned gain (initialised to 1) and offset (initialised to 0). The MLP
    kernels are Glorot-uniform and their biases zero. `Z` (entity_size, vocabulary_size) is
    Glorot-uniform and **never trained** (a non-trainable weight): the authors' bAbI model uses
    it through `.data`, so no gradient reaches it (reference spec 5.3). It is saved with the
    model like any weight.

    Args:
        vocabulary_size: int, number of output classes (the answer vocabulary).
        entity_size: int, the entity axis of the memory (the STM's `memory_size` d).
            Defaults to 90.
        role_size: int, the role axis of the memory (the STM's `num_queries` nq). Defaults
            to 20.
        hidden_units: int, width of the query MLPs' hidden layer. Defaults to 80.
        hops: int, number of inference hops. Defaults to 3.
        epsilon: float, LayerNorm epsilon. Defaults to `1e-12`.
        kernel_initializer: initializer of the MLP kernels. Defaults to "glorot_uniform".
        output_initializer: initializer of the frozen `Z`. Defaults to "glorot_uniform".
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: list `[query, relational_memory]`: `query` of shape `(batch, features)` and
            `relational_memory` of shape `(batch, role_size, entity_size, entity_size)`.

    Returns:
        Logits of shape `(batch, vocabulary_size)`.

    Example:

    >>> import numpy as np
    >>> from keras_stm.layers.tpr_inference import TPRInference
    >>> infer = TPRInference(vocabulary_size=7, entity_size=5, role_size=3, hidden_units=4)
    >>> logits = infer([np.ones((2, 6), "float32"), np.ones((2, 3, 5, 5), "float32")])
    >>> tuple(logits.shape), len(infer.trainable_weights), len(infer.non_trainable_weights)
    ((2, 7), 22, 1)

    References:
        Le, Tran, Venkatesh. Self-Attentive Associative Memory. ICML 2020 (bAbI model).
        Schlag, Schmidhuber. Learning to Reason with Third-Order Tensor Products. NeurIPS 2018.
    """

    def __init__(
        self,
        vocabulary_size,
        entity_size=90,
        role_size=20,
        hidden_units=80,
        hops=3,
        epsilon=1e-12,
        kernel_initializer="glorot_uniform",
        output_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = check_positive_int("vocabulary_size", vocabulary_size)
        self.entity_size = check_positive_int("entity_size", entity_size)
        self.role_size = check_positive_int("role_size", role_size)
        self.hidden_units = check_positive_int("hidden_units", hidden_units)
        self.hops = check_positive_int("hops", hops)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(f"`epsilon` must be a positive number, got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_initializer = keras.initializers.get(output_initializer)

    def _mlp(self, name, fan_in, units):
        layers = []
        for i, (n_in, n_out) in enumerate(
            ((fan_in, self.hidden_units), (self.hidden_units, units)), 1
        ):
            kernel = self.add_weight(
                name=f"{name}_kernel_{i}", shape=(n_in, n_out), initializer=self.kernel_initializer
            )
            bias = self.add_weight(name=f"{name}_bias_{i}", shape=(n_out,), initializer="zeros")
            layers.append((kernel, bias))
        return layers

    def build(self, input_shape):
        query_shape, memory_shape = self._split_shapes(input_shape)
        features = query_shape[-1]
        if features is None:
            raise ValueError(
                f"TPRInference needs a known query size (last axis), got {tuple(query_shape)}."
            )
        self.entity_mlp = self._mlp("entity", int(features), self.entity_size)
        self.role_mlps = [
            self._mlp(f"role_{k}", int(features), self.role_size) for k in range(1, self.hops + 1)
        ]
        self.norms = [
            (
                self.add_weight(
                    name=f"norm_{k}_gamma", shape=(self.entity_size,), initializer="ones"
                ),
                self.add_weight(
                    name=f"norm_{k}_beta", shape=(self.entity_size,), initializer="zeros"
                ),
            )
            for k in range(1, self.hops + 1)
        ]
        self.output_embedding = self.add_weight(
            name="output_embedding",
            shape=(self.entity_size, self.vocabulary_size),
            initializer=self.output_initializer,
            trainable=False,
        )
        self.built = True

    def _split_shapes(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "TPRInference expects inputs [query (batch, features), relational_memory "
                f"(batch, roles, entities, entities)], got shapes {input_shape!r}."
            )
        query_shape, memory_shape = (tuple(s) for s in input_shape)
        expected = (self.role_size, self.entity_size, self.entity_size)
        if len(query_shape) != 2:
            raise ValueError(
                f"TPRInference: `query` must have shape (batch, features), got {query_shape}."
            )
        if len(memory_shape) != 4 or any(
            got is not None and got != want for got, want in zip(memory_shape[1:], expected)
        ):
            raise ValueError(
                "TPRInference: `relational_memory` must have shape (batch, role_size, "
                f"entity_size, entity_size) = (batch, {', '.join(map(str, expected))}), got "
                f"{memory_shape}."
            )
        return query_shape, memory_shape

    @staticmethod
    def _apply_mlp(layers, x):
        for kernel, bias in layers:
            x = ops.tanh(ops.matmul(x, kernel) + bias)
        return x

    def call(self, inputs):
        query, memory = inputs
        self._split_shapes([tuple(query.shape), tuple(memory.shape)])
        nr, ne = self.role_size, self.entity_size
        flat_memory = ops.reshape(memory, (-1, nr, ne * ne))  # [b, r, (e, f)]
        entity = self._apply_mlp(self.entity_mlp, query)
        total = None
        for role_mlp, (gamma, beta) in zip(self.role_mlps, self.norms):
            role = self._apply_mlp(role_mlp, query)
            # B[e, f] = sum_r role[r] M[r, e, f];  hop[f] = sum_e entity[e] B[e, f]
            bound = ops.reshape(ops.matmul(ops.expand_dims(role, 1), flat_memory), (-1, ne, ne))
            hop = ops.matmul(ops.expand_dims(entity, 1), bound)[:, 0]
            hop = stm_ops.normalize(hop, -1, self.epsilon) * gamma + beta
            total = hop if total is None else total + hop
            entity = hop
        z = ops.cast(self.output_embedding, total.dtype)
        return ops.matmul(total, z)

    def compute_output_shape(self, input_shape):
        query_shape, _ = self._split_shapes(input_shape)
        return (query_shape[0], self.vocabulary_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "entity_size": self.entity_size,
                "role_size": self.role_size,
                "hidden_units": self.hidden_units,
                "hops": self.hops,
                "epsilon": self.epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "output_initializer": keras.initializers.serialize(self.output_initializer),
            }
        )
        return config
