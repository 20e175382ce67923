"""The `SentenceEncoder` layer: word embeddings summed with learned position weights."""

import keras
from keras import ops

from keras_stm.layers.self_attentive_memory import check_positive_int


@keras.saving.register_keras_serializable(package="keras_stm")
class SentenceEncoder(keras.layers.Layer):
    """Encodes a sentence of word ids as one vector: a position-weighted sum of embeddings.

    For a sentence of `W` word ids `x_1 .. x_W` (padded at the end):

        s = sum_{w=1..W} P[w] ⊙ E[x_w]

    with a word embedding `E` (vocabulary_size, embedding_size) and learned position weights
    `P` (max_sentence_length, embedding_size); only the first `W` rows of `P` are used, so
    inputs may be shorter than `max_sentence_length`. The padding id (0) is a word like any
    other: it has its own learned embedding and padded words (and all-padding sentences)
    contribute, as in the authors' bAbI model. Any leading axes are kept: a story
    `(batch, sentences, W)` gives `(batch, sentences, embedding_size)`, a question `(batch, W)`
    gives `(batch, embedding_size)`.

    **Absent words.** A negative id marks a word that is not there at all: it contributes
    nothing to the sum (the padding that `keras_stm.experiments.tasks.babi` adds to bring
    tasks to shared shapes, `ABSENT_ID = -1`). For a story (inputs of rank 3 or more) the layer
    also returns a Keras mask over the sentences, False for a sentence whose ids are all
    negative, so a following recurrent layer (`STM`, `keras.layers.LSTM`) keeps its state over
    it. Absent words and sentences appended at the end of a sentence or story therefore leave
    every output (and gradient) as without them, to float round-off. A question (rank 2) gets
    no mask.

    Defaults follow the authors' bAbI input module (reference spec 5.3): `E ~ U(-0.1, 0.1)`,
    `P = 1 / max_sentence_length` everywhere.

    Args:
        vocabulary_size: int, number of word ids (ids are `0 .. vocabulary_size - 1`).
        max_sentence_length: int, the longest sentence the layer accepts (rows of `P`).
        embedding_size: int, size of the word embedding and of the sentence vector.
            Defaults to 64.
        embeddings_initializer: initializer of `E`. Defaults to `RandomUniform(-0.1, 0.1)`.
        position_initializer: initializer of `P`, or None (default) for the constant
            `1 / max_sentence_length`.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: integer tensor of shape `(..., W)`, word ids, `W <= max_sentence_length`;
            negative ids are absent words.

    Returns:
        Tensor of shape `(..., embedding_size)`; for inputs of rank >= 3 with a Keras mask
        `(..., sentences)` (`compute_mask`).

    Example:

    >>> import numpy as np
    >>> from keras_stm.layers.sentence_encoder import SentenceEncoder
    >>> encoder = SentenceEncoder(vocabulary_size=10, max_sentence_length=6, embedding_size=4)
    >>> tuple(encoder(np.zeros((2, 3, 5), "int32")).shape)
    (2, 3, 4)
    >>> story = np.array([[[1, 2, -1], [-1, -1, -1]]], "int32")  # one word absent, one sentence
    >>> keras.ops.convert_to_numpy(encoder.compute_mask(story)).tolist()
    [[True, False]]

    References:
        Le, Tran, Venkatesh. Self-Attentive Associative Memory. ICML 2020 (bAbI model).
        Schlag, Schmidhuber. Learning to Reason with Third-Order Tensor Products. NeurIPS 2018
        (the TPR-RNN input module it adapts).
    """

    def __init__(
        self,
        vocabulary_size,
        max_sentence_length,
        embedding_size=64,
        embeddings_initializer=None,
        position_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_masking = True  # a story's mask over sentences (`compute_mask`)
        self.vocabulary_size = check_positive_int("vocabulary_size", vocabulary_size)
        self.max_sentence_length = check_positive_int("max_sentence_length", max_sentence_length)
        self.embedding_size = check_positive_int("embedding_size", embedding_size)
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.RandomUniform(-0.1, 0.1)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.position_initializer = (
            keras.initializers.get(position_initializer)
            if position_initializer is not None
            else None
        )

    def build(self, input_shape):
        self._check_length(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocabulary_size, self.embedding_size),
            initializer=self.embeddings_initializer,
        )
        position_initializer = self.position_initializer or keras.initializers.Constant(
            1.0 / self.max_sentence_length
        )
        self.position_weights = self.add_weight(
            name="position_weights",
            shape=(self.max_sentence_length, self.embedding_size),
            initializer=position_initializer,
        )
        self.built = True

    def _check_length(self, shape):
        if len(shape) < 1:
            raise ValueError(
                f"SentenceEncoder expects inputs of shape (..., words), got {tuple(shape)}."
            )
        length = shape[-1]
        if length is not None and length > self.max_sentence_length:
            raise ValueError(
                f"SentenceEncoder got sentences of {length} words but `max_sentence_length` is "
                f"{self.max_sentence_length}."
            )

    def call(self, inputs):
        self._check_length(inputs.shape)
        if not keras.backend.is_int_dtype(inputs.dtype):
            inputs = ops.cast(inputs, "int32")
        length = ops.shape(inputs)[-1]
        present = ops.greater_equal(inputs, 0)  # negative ids: absent words
        words = ops.take(self.embeddings, ops.where(present, inputs, 0), axis=0)  # (..., W, E)
        words = ops.where(ops.expand_dims(present, -1), words, ops.zeros_like(words))
        positions = ops.cast(self.position_weights[:length], words.dtype)  # (W, E)
        return ops.sum(words * positions, axis=-2)

    def compute_mask(self, inputs, mask=None):
        """For a story `(..., sentences, W)`: True where a sentence has a word (an id >= 0);
        None for a question `(..., W)` of rank < 3."""
        if len(inputs.shape) < 3:
            return None
        return ops.any(ops.greater_equal(inputs, 0), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.embedding_size,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_sentence_length": self.max_sentence_length,
                "embedding_size": self.embedding_size,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
                "position_initializer": (
                    keras.initializers.serialize(self.position_initializer)
                    if self.position_initializer is not None
                    else None
                ),
            }
        )
        return config
