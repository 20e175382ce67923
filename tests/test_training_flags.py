"""The shared flags of `keras_stm.experiments.training` (issue 24, finding 5): `--hparams` values
pass the
command line's checks, the two gradient clippings give way to each other, and `--quick` keeps
the flags given on the command line."""

import json

import pytest

from keras_stm.experiments import training
from keras_stm.experiments.models import task_configs


def _parser(task="copy"):
    return training.argument_parser("doc", **task_configs.training_defaults(task))


def _hparams(tmp_path, values):
    path = tmp_path / "h.json"
    path.write_text(json.dumps(values))
    return ["--hparams", str(path)]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"optimizer": "sgd"}, "optimizer"),
        ({"jit_compile": "yes"}, "jit_compile"),
        ({"verbose": 3}, "verbose"),
        ({"batch_size": "many"}, "batch_size"),
        ({"batch_size": 8.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"learning_rate": None}, "learning_rate"),
        ({"fresh": "yes"}, "fresh"),
        ({"model": "gru"}, "model"),
    ],
)
def test_hparams_values_pass_the_flag_checks(tmp_path, capsys, values, message):
    with pytest.raises(SystemExit):
        training.parse_args(_parser(), _hparams(tmp_path, values))
    error = capsys.readouterr().err
    assert message in error and "h.json" in error


def test_hparams_values_are_converted_like_flags(tmp_path):
    args = training.parse_args(
        _parser(),
        _hparams(
            tmp_path,
            {"batch_size": 16.0, "learning_rate": "0.01", "optimizer": "adam", "clip_value": None},
        ),
    )
    assert args.batch_size == 16 and isinstance(args.batch_size, int)
    assert args.learning_rate == 0.01 and args.optimizer == "adam" and args.clip_value is None
    with pytest.raises(SystemExit):
        training.parse_args(_parser(), _hparams(tmp_path, [1, 2]))


def test_one_clipping_clears_the_other_default(tmp_path, capsys):
    parser = _parser("copy")  # default clip_value 10
    args = training.parse_args(parser, ["--clip-norm", "1.0"])
    assert (args.clip_value, args.clip_norm) == (None, 1.0)
    assert training.make_optimizer(args).global_clipnorm == 1.0
    args = training.parse_args(parser, _hparams(tmp_path, {"clip_norm": 2.0}))
    assert (args.clip_value, args.clip_norm) == (None, 2.0)
    args = training.parse_args(parser, [])
    assert (args.clip_value, args.clip_norm) == (10.0, None)
    babi_like = training.argument_parser(
        "doc", task="babi", learning_rate=1e-3, iterations=10, clip_norm=5.0
    )
    args = training.parse_args(babi_like, ["--clip-value", "3"])
    assert (args.clip_value, args.clip_norm) == (3.0, None)
    with pytest.raises(SystemExit):
        training.parse_args(parser, ["--clip-value", "3", "--clip-norm", "1"])
    assert "--clip-norm" in capsys.readouterr().err


def test_quick_keeps_explicit_flags():
    parser = _parser()
    args = training.parse_args(
        parser,
        ["--quick", "--iterations", "6", "--batch-size", "4"],
        quick_overrides={"steps_per_epoch": 3},
    )
    assert (args.iterations, args.batch_size, args.steps_per_epoch) == (6, 4, 3)
    args = training.parse_args(parser, ["--quick"])
    assert (args.iterations, args.batch_size, args.steps_per_epoch) == (4, 8, 2)


def test_speed_settings_on_a_jax_gpu(monkeypatch, tmp_path):
    """`--speed-settings auto` on a jax GPU (simulated): the unrolled loop and jax's persistent
    compilation cache (under XDG_CACHE_HOME unless one is set); `off`, or any other machine,
    changes nothing."""
    import keras

    args = training.parse_args(_parser(), ["--speed-settings", "off"])
    assert args.speed_settings_applied == {}
    if keras.backend.backend() != "jax":
        args = training.parse_args(_parser(), [])
        assert args.speed_settings_applied == {}  # torch and tensorflow: nothing changes
        return
    import jax

    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setattr(training, "_jax_gpu_available", lambda: True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("XLA_FLAGS", "")  # set: the script leaves XLA_FLAGS alone
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        args = training.parse_args(_parser(), ["--model", "stm"])
        applied = args.speed_settings_applied
        assert applied["unroll"] is True and args.stm_config["unroll"] is True
        assert "xla_flags" not in applied
        assert applied["compilation_cache_dir"] == str(tmp_path / "keras_stm" / "jax")
        assert jax.config.jax_compilation_cache_dir == applied["compilation_cache_dir"]
        # --compile-threads auto: half the cores, at most 8; a count given is kept.
        assert applied["compile_threads"] == args.compile_threads
        monkeypatch.setattr(training.os, "cpu_count", lambda: 16)
        assert training.parse_args(_parser(), []).compile_threads == 8
        monkeypatch.setattr(training.os, "cpu_count", lambda: 6)
        assert training.parse_args(_parser(), []).compile_threads == 3
        args = training.parse_args(_parser(), ["--compile-threads", "0"])
        assert args.compile_threads == 0 and "compile_threads" not in args.speed_settings_applied
        # A cache folder already chosen (JAX_COMPILATION_CACHE_DIR) is kept.
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        args = training.parse_args(_parser(), ["--stm-config", '{"unroll": false}'])
        assert args.speed_settings_applied["compilation_cache_dir"] == str(tmp_path / "mine")
        assert "unroll" not in args.speed_settings_applied and not args.stm_config["unroll"]
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_learning_rate_warmup_ramps_then_holds():
    """LearningRateWarmup: step k of the first `steps` trains at (k + 1) / steps of the rate,
    then the rate itself; a schedule is refused."""
    import keras
    import numpy as np

    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            rate = self.model.optimizer.learning_rate
            seen.append(float(keras.ops.convert_to_numpy(rate)))

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = np.ones((6, 3), "float32"), np.ones((6, 1), "float32")
    model.fit(
        x,
        y,
        batch_size=1,
        epochs=1,
        verbose=0,
        callbacks=[training.LearningRateWarmup(4), Record()],
    )
    np.testing.assert_allclose(seen, [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01], rtol=1e-6)

    class EpochRate(keras.callbacks.Callback):  # like bAbI's decay: sets the epoch's rate
        def on_epoch_begin(self, epoch, logs=None):
            self.model.optimizer.learning_rate = 0.004

    seen.clear()
    callbacks = [training.LearningRateWarmup(2), EpochRate(), Record()]
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=callbacks)
    np.testing.assert_allclose(seen, [0.002, 0.004, 0.004], rtol=1e-6)  # ramps to the epoch's
    with pytest.raises(ValueError, match="positive"):
        training.LearningRateWarmup(0)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    with pytest.raises(ValueError, match="schedule"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[training.LearningRateWarmup(2)])
    args = training.parse_args(_parser(), ["--warmup-steps", "0"])
    assert args.warmup_steps == 0
    with pytest.raises(SystemExit):
        training.parse_args(_parser(), ["--warmup-steps", "-1"])


def test_backend_dataset_serves_batches_of_every_shape():
    """A PyDataset whose batches differ in shape (`varying_shapes`, bAbI's) reaches tensorflow
    as a tf.data.Dataset with open dimensions (Keras would fix the shapes of its first two
    batches); with `repeat`, pass after pass with its epoch advanced. jax and torch take it as
    it is."""
    import keras
    import numpy as np

    class Varying(keras.utils.PyDataset):
        varying_shapes = True

        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __len__(self):
            return 2

        def __getitem__(self, index):
            width = 3 + index + self.epoch
            return np.zeros((2, width), "float32"), np.zeros((2,), "int32")

    data = Varying()
    served = training.backend_dataset(data)
    if keras.backend.backend() != "tensorflow":
        assert served is data and training.backend_dataset(data, repeat=True) is data
        return
    assert [tuple(x.shape) for x, _ in served] == [(2, 3), (2, 4)]
    batches = iter(training.backend_dataset(data, repeat=True))
    assert [tuple(next(batches)[0].shape) for _ in range(4)] == [(2, 3), (2, 4), (2, 4), (2, 5)]
    assert data.epoch >= 1  # tf.data may have read ahead into the next passes
    inputs = keras.Input((None,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: keras.ops.sum(x, axis=-1))(inputs))
    assert model.predict(training.backend_dataset(Varying()), verbose=0).shape == (4,)
