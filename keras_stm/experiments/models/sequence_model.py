"""`build_sequence_model`: an STM (or LSTM baseline) over a sequence, with a task output."""

import keras

from keras_stm.layers.stm import STM

CORES = ("stm", "lstm")


def build_sequence_model(
    input_size,
    output_size,
    core="stm",
    return_sequences=False,
    stm_config=None,
    lstm_units=512,
    vocabulary_size=None,
    embedding_size=None,
    name=None,
):
    """A sequence model whose recurrent core is STM or the LSTM baseline.

    STM: the cell's own output head produces `output_size` logits per step (as the authors'
    class does). LSTM: one LSTM layer (`lstm_units`, the authors' baseline uses 2 x 256) and a
    linear output layer. With `vocabulary_size`, integer token inputs are embedded first.

    Args:
        input_size: int, feature size of each step (ignored when `vocabulary_size` is set).
        output_size: int, logits per output step.
        core: `"stm"` (default) or `"lstm"`.
        return_sequences: bool, logits for every step `(B, T, output_size)` or only the last
            `(B, output_size)`.
        stm_config: dict of `STM` arguments (the task's configuration); `head_units` is set to
            `output_size`.
        lstm_units: int, LSTM width for the baseline. Defaults to 512.
        vocabulary_size: optional int; inputs are then token ids `(B, T)`.
        embedding_size: int, embedding width when `vocabulary_size` is set.
        name: optional model name.

    Returns:
        An uncompiled `keras.Model` producing logits.

    Example:

    >>> from keras_stm.experiments.models import build_sequence_model
    >>> model = build_sequence_model(40, 8, stm_config=dict(num_queries=2, memory_size=8,
    ...                              relation_size=8, readout_size=8, head_hidden_units=8))
    >>> model.output_shape
    (None, 8)
    """
    if core not in CORES:
        raise ValueError(f"`core` must be one of {CORES}, got {core!r}.")
    if vocabulary_size is not None:
        if not embedding_size:
            raise ValueError("`embedding_size` is needed with `vocabulary_size`.")
        inputs = keras.Input((None,), dtype="int32", name="tokens")
        x = keras.layers.Embedding(
            vocabulary_size,
            embedding_size,
            name="embedding",
            embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
        )(inputs)
    else:
        inputs = keras.Input((None, input_size), name="inputs")
        x = inputs
    if core == "stm":
        config = dict(stm_config or {})
        config["head_units"] = output_size
        outputs = STM(**config, return_sequences=return_sequences, name="stm")(x)
    else:
        x = keras.layers.LSTM(lstm_units, return_sequences=return_sequences, name="lstm")(x)
        outputs = keras.layers.Dense(output_size, name="output")(x)
    # Logits in float32 under a mixed-precision policy, in float64 when that is the float type.
    logits_dtype = "float64" if keras.config.floatx() == "float64" else "float32"
    outputs = keras.layers.Activation("linear", dtype=logits_dtype, name="logits")(outputs)
    return keras.Model(inputs, outputs, name=name or f"{core}_sequence_model")
