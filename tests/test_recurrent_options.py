"""Keras' options of a recurrent layer on `STM` and `STMCell` (issue 22): input `dropout` with
a `seed`, kernel / bias regularizers and constraints, saved in the config."""

import copy

import keras
import numpy as np
import pytest
from keras import ops

import keras_stm

SMALL = dict(
    num_queries=2, memory_size=4, relation_size=3, readout_size=5, head_units=3, head_hidden_units=6
)
OPTIONS = dict(
    dropout=0.25,
    seed=7,
    kernel_regularizer=keras.regularizers.L2(1e-3),
    bias_regularizer="l1",
    kernel_constraint=keras.constraints.MaxNorm(2.0),
    bias_constraint="non_neg",
)


def sequences(batch=4, steps=5, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, steps, 3)).astype("float32")


@pytest.mark.parametrize("kind", ["stm", "cell"])
def test_options_round_trip_through_the_config(kind):
    layer = (
        keras_stm.STM(**SMALL, **OPTIONS)
        if kind == "stm"
        else keras_stm.STMCell(**SMALL, **OPTIONS)
    )
    config = layer.get_config()
    assert config["dropout"] == 0.25 and config["seed"] == 7
    assert config["kernel_regularizer"]["class_name"] == "L2"
    assert config["bias_constraint"]["class_name"] == "NonNeg"
    clone = layer.__class__.from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert restored.get_config() == config
    defaults = (keras_stm.STM if kind == "stm" else keras_stm.STMCell)(**SMALL).get_config()
    assert defaults["dropout"] == 0.0 and defaults["seed"] is None
    assert all(
        defaults[k] is None
        for k in ("kernel_regularizer", "bias_regularizer", "kernel_constraint", "bias_constraint")
    )


@pytest.mark.parametrize("value", [-0.1, 1.0, "0.5", True], ids=["negative", "one", "str", "bool"])
def test_bad_dropout_is_refused(value):
    with pytest.raises(ValueError, match="`dropout`"):
        keras_stm.STM(**SMALL, dropout=value)


def test_bad_seed_is_refused():
    with pytest.raises(ValueError, match="`seed`"):
        keras_stm.STMCell(**SMALL, seed=1.5)


def test_zero_dropout_and_inference_give_identical_numbers():
    """`dropout=0` (training or not), and any dropout outside training, compute exactly what the
    layer without the option computes."""
    x = sequences()
    plain = keras_stm.STM(**SMALL, return_sequences=True)
    zero = keras_stm.STM(**SMALL, dropout=0.0, return_sequences=True)
    dropped = keras_stm.STM(**SMALL, dropout=0.5, seed=3, return_sequences=True)
    for layer in (plain, zero, dropped):
        layer.build(x.shape)
    zero.set_weights(plain.get_weights())
    dropped.set_weights(plain.get_weights())
    expected = ops.convert_to_numpy(plain(x, training=True))
    np.testing.assert_array_equal(ops.convert_to_numpy(zero(x, training=True)), expected)
    np.testing.assert_array_equal(ops.convert_to_numpy(dropped(x, training=False)), expected)
    assert not np.allclose(ops.convert_to_numpy(dropped(x, training=True)), expected)


def test_stm_dropout_matches_the_cell_in_an_rnn():
    """`STM` drops the inputs as `keras.layers.RNN(STMCell)` does with the same seed: one mask
    per sequence, made before the loop, the same at every step (as `keras.layers.LSTM`)."""
    x = sequences()
    layer = keras_stm.STM(**SMALL, dropout=0.5, seed=3, return_sequences=True)
    rnn = keras.layers.RNN(keras_stm.STMCell(**SMALL, dropout=0.5, seed=3), return_sequences=True)
    layer.build(x.shape)
    rnn.build(x.shape)
    rnn.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(x, training=True)),
        ops.convert_to_numpy(rnn(x, training=True)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_model_with_dropout_regularizers_and_constraints_trains():
    inputs = keras.Input((5, 3))
    layer = keras_stm.STM(**SMALL, **OPTIONS)
    model = keras.Model(inputs, layer(inputs))
    # every kernel and every bias (the cell's and SAM's) has its regularizer: one loss each
    kernels = [w for w in layer.weights if w.name.endswith("kernel")]
    biases = [w for w in layer.weights if w.name.endswith("bias")]
    assert len(model.losses) == len(kernels) + len(biases) > 0
    assert all(w.constraint is not None for w in kernels + biases)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="mse",
        jit_compile=keras.backend.backend() != "torch",
    )
    history = model.fit(sequences(), np.zeros((4, 3), "float32"), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for w in biases:  # NonNeg holds after the updates
        assert ops.convert_to_numpy(w).min() >= 0.0
