"""`--compile-threads` (keras_stm.experiments.training._Precompile): every input shape's
training, validation and test program compiled ahead, in threads, into jax's persistent
compilation cache, where `fit` then finds them; nothing else changes."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_stm.experiments import training
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import copy as copy_task
from tests.example_loader import load_example

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPY_ARGS = ["--quick", "--min-seq-len", "1", "--max-seq-len", "3", "--verbose", "0"]

# Runs in a fresh process: jax reads its cache folder once, at the first compilation.
CHILD = """
import json, sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(1) if event.endswith("cache_hits") else None)
from tests.example_loader import load_example
main = load_example("copy_task").main
ahead = main(sys.argv[2:] + ["--compile-threads", "2", "--output-dir", sys.argv[1] + "/a"])
fit_hits = len(hits)
plain = main(sys.argv[2:] + ["--compile-threads", "0", "--output-dir", sys.argv[1] + "/b"])
print("RESULT " + json.dumps({"ahead": ahead, "plain": plain, "hits": fit_hits}, default=str))
"""


def _parser():
    return training.argument_parser("doc", **task_configs.training_defaults("copy"))


def test_distinct_batches_keeps_the_first_batch_of_each_shape():
    data = copy_task.dataset(batch_size=4, num_batches=40, min_seq_len=1, max_seq_len=3, seed=0)
    batches = training._distinct_batches([data, None, (np.zeros(2), np.zeros(2)), data])
    lengths = sorted(b[0].shape[1] for b in batches)
    assert lengths == [4, 6, 8]  # 2L + 2 steps (reading, then decoding), each length once
    first = next(i for i in range(len(data)) if data[i][0].shape[1] == batches[0][0].shape[1])
    np.testing.assert_array_equal(batches[0][0], data[first][0])


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_compile_threads_must_be_auto_or_a_count(capsys, value):
    with pytest.raises(SystemExit):
        training.parse_args(_parser(), ["--compile-threads", value])
    assert "--compile-threads" in capsys.readouterr().err


def test_compile_threads_auto_is_off_on_this_cpu():
    args = training.parse_args(_parser(), [])
    assert args.compile_threads == 0
    assert "compile_threads" not in args.speed_settings_applied


@pytest.mark.large
def test_compile_ahead_fills_the_cache_fit_reads(tmp_path):
    """Under jax the copy example (3 sequence lengths) compiles its programs ahead, fit's first
    batch of each length finds them in the cache, and the results equal those of a run that
    compiles on the way; elsewhere the flag changes nothing."""
    if keras.backend.backend() != "jax":
        results = load_example("copy_task").main(
            COPY_ARGS + ["--compile-threads", "2", "--output-dir", str(tmp_path / "run")]
        )
        assert "compile_ahead" not in results
        assert "compile_threads" not in (results["speed_settings"] or {})
        return
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",  # the test's programs compile fast
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), *COPY_ARGS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    report = out["ahead"]["compile_ahead"]
    assert report["threads"] == 2 and "error" not in report
    # --quick: 2 training batches an epoch, of two lengths; the test set's lengths
    assert report["programs"] >= 3
    assert out["ahead"]["speed_settings"]["compile_threads"] == 2
    assert out["hits"] >= report["programs"]  # fit read every program compiled ahead
    assert "compile_ahead" not in out["plain"]
    assert out["ahead"]["test"] == out["plain"]["test"]


def test_compile_ahead_steps_aside_under_a_distribution(monkeypatch):
    """Under a `keras.distribution` (`--data-parallel`) Keras compiles with its shardings:
    nothing is compiled ahead, and the report says why (jax; elsewhere nothing happens)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    callback = training._Precompile(2, None)
    callback.set_model(model)
    monkeypatch.setattr(keras.distribution, "distribution", lambda: object())
    callback.on_train_begin()
    if keras.backend.backend() == "jax":
        assert callback.report == {"threads": 2, "skipped": "a keras.distribution is set"}
    else:
        assert callback.report is None
