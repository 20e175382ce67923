"""Every example's command line: `--help` runs and shows the defaults, the flags the scripts
share have one spelling, the old spellings still work (hidden, with a warning), and a run
prints its whole-run progress with an ETA."""

import argparse
import contextlib
import importlib
import io
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_stm.experiments import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
SCRIPTS = sorted(
    name[:-3] for name in os.listdir(EXAMPLES) if name.endswith(".py") and not name.startswith("_")
)
TRAINING_SCRIPTS = [name for name in SCRIPTS if name not in ("quickstart", "tune")]

SHARED = {
    "model": "--model",
    "output_dir": "--output-dir",
    "iterations": "--iterations",
    "steps_per_epoch": "--steps-per-epoch",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "optimizer": "--optimizer",
    "seed": "--seed",
    "quick": "--quick",
    "evaluate": "--evaluate",
    "fresh": "--fresh",
    "verbose": "--verbose",
    "max_minutes": "--max-minutes",
    "hparams": "--hparams",
    "jit_compile": "--jit-compile",
    "data_parallel": "--data-parallel",
    "initial_weights": "--initial-weights",
    "compile_threads": "--compile-threads",
}
"""dict: destination -> the one spelling of the flags every training script has."""
CANONICAL = {
    **SHARED,
    "test_size": "--test-size",
    "train_size": "--train-size",
    "validation_size": "--validation-size",
    "lstm_units": "--lstm-units",
    "test_seed": "--test-seed",
    "data_seed": "--data-seed",
    "task": "--task",
}
"""dict: destination -> its one spelling, in whichever script has it."""
OLD_SPELLINGS = (
    "--core",
    "--test-batches",
    "--num-test",
    "--num-train",
    "--num-validation",
    "--directory",
    "--project-name",
    "--pretrained-test-size",
)


def _load(name):
    return importlib.import_module(f"examples.{name}")


class _Parsed(Exception):
    pass


def _parser(name, monkeypatch):
    """The `argparse` parser `main` of the script builds (caught as it starts parsing)."""
    module = _load(name)
    caught = {}

    def catch(self, args=None, namespace=None):
        caught["parser"] = self
        raise _Parsed()

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
        with pytest.raises(_Parsed):
            module.main([])
    return caught["parser"]


def _visible(parser):
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_runs_and_shows_defaults(name):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as stop:
        _load(name).main(["--help"])
    assert stop.value.code == 0
    text = printed.getvalue()
    assert text.startswith("usage:") and "(default: " in text
    # Users' words: no internal spec section numbers, no hidden old spelling.
    assert not re.search(r"\b(spec|section)\s+\d", text), re.findall(r".*\bspec\b.*", text)
    for old in OLD_SPELLINGS:
        assert old not in text, old


def test_help_from_the_command_line():
    done = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "copy_task.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert done.returncode == 0, done.stderr
    assert "--learning-rate LEARNING_RATE" in done.stdout
    flat = " ".join(done.stdout.split())
    assert (
        "--iterations ITERATIONS Training batches in total (the whole run). (default: 50000)"
        in (flat)
    ), flat


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_with_a_value_shows_its_default(name, monkeypatch):
    parser = _parser(name, monkeypatch)
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    assert issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    for action in _visible(parser):
        # ArgumentDefaultsHelpFormatter shows a default only beside a help text.
        assert action.help and action.help.strip(), action.option_strings


@pytest.mark.parametrize("name", SCRIPTS)
def test_shared_flags_have_one_spelling(name, monkeypatch):
    parser = _parser(name, monkeypatch)
    visible = {a.dest: a.option_strings for a in _visible(parser)}
    for dest, options in visible.items():
        if dest in CANONICAL:
            assert options == [CANONICAL[dest]], (dest, options)
        assert not set(options) & set(OLD_SPELLINGS), options
    if name in TRAINING_SCRIPTS:
        flags = {option for a in parser._actions for option in a.option_strings}
        assert set(SHARED.values()) <= flags, set(SHARED.values()) - flags
        assert "--epochs" not in {o for options in visible.values() for o in options}
    else:  # the tuner and the quick start: the spellings they have are the shared ones
        assert {"--model", "--seed", "--batch-size", "--test-size", "--output-dir"} & {
            o for options in visible.values() for o in options
        }


@pytest.mark.parametrize(
    "name, old, dest, value",
    [
        ("atari_pong", ["--core", "lstm"], "model", "lstm"),
        ("copy_task", ["--test-batches", "3"], "test_batches", 3),
        ("nth_farthest", ["--test-batches", "3"], "test_batches", 3),
        ("associative_retrieval", ["--num-test", "5"], "test_size", 5),
        ("associative_retrieval", ["--num-train", "6"], "train_size", 6),
        ("associative_retrieval", ["--num-validation", "7"], "validation_size", 7),
        ("babi", ["--epochs", "2"], "epochs", 2),
        ("tune", ["--task", "copy", "--directory", "searches"], "directory", "searches"),
        ("tune", ["--task", "copy", "--project-name", "p"], "project_name", "p"),
        ("quickstart", ["--pretrained-test-size", "9"], "test_size", 9),
    ],
)
def test_old_spellings_still_work_with_a_warning(name, old, dest, value, monkeypatch, capsys):
    parser = _parser(name, monkeypatch)
    args = parser.parse_args(old)
    assert getattr(args, dest) == value
    assert f"{old[-2]} is deprecated" in capsys.readouterr().err


def test_test_size_and_the_old_test_batches():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=128)
    training.add_test_size_argument(parser, 10)
    args = parser.parse_args([])
    assert training.resolve_test_batches(parser, args) == 10 and args.test_size == 1280
    args = parser.parse_args(["--test-size", "300"])  # rounded up to whole batches
    assert training.resolve_test_batches(parser, args) == 3 and args.test_size == 384
    args = parser.parse_args(["--test-batches", "2", "--batch-size", "8"])
    assert training.resolve_test_batches(parser, args) == 2 and args.test_size == 16
    with pytest.raises(SystemExit):
        training.resolve_test_batches(parser, parser.parse_args(["--test-size", "0"]))


def test_progress_line():
    assert training.progress_line(0, 10, 0.0, None) == (
        "run: 0/10 iterations (0.0%), 0:00:00 elapsed"
    )
    assert training.progress_line(250, 1000, 3600.0, 2.0) == (
        "run: 250/1,000 iterations (25.0%), 1:00:00 elapsed, ETA 0:25:00"
    )
    line = training.progress_line(250, 1000, 3600.0, 2.0, unit="frames", budget_left=60.0)
    assert "ETA 0:25:00 (--max-minutes stops this session in about 0:01:00" in line
    assert training.progress_line(1000, 1000, 5.0, 1.0).endswith(", done")
    assert training.format_duration(2 * 86400 + 59) == "2 d 0:00:59"


def test_run_prints_the_whole_run_position_each_epoch(tmp_path, capsys):
    """`training.run` resumed at epoch 2 of 4 prints positions 3/4 and 4/4 of the whole run."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")

    def data():
        while True:
            yield x, y

    parser = training.argument_parser(
        "doc", task="toy", learning_rate=0.1, iterations=8, steps_per_epoch=2
    )
    argv = ["--output-dir", str(tmp_path), "--verbose", "2", "--iterations", "4"]
    training.run(model, data(), training.parse_args(parser, argv))
    assert "run: 4/4 iterations (100.0%)" in capsys.readouterr().out
    argv[-1] = "8"  # continues to 8 iterations: epochs 3 and 4 of 4
    training.run(model, data(), training.parse_args(parser, argv))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run: ")]
    assert [line.split(" (")[0] for line in lines] == ["run: 6/8 iterations", "run: 8/8 iterations"]
    assert "ETA " in lines[0] and lines[1].endswith(", done")
    argv += ["--verbose", "0", "--fresh"]
    training.run(model, data(), training.parse_args(parser, argv))
    assert "run: " not in capsys.readouterr().out


def test_atari_progress_shows_frames_and_eta(tmp_path, capsys):
    _load("atari_pong").main(["--quick", "--output-dir", str(tmp_path), "--verbose", "2"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run: ")]
    assert len(lines) == 3  # --quick: 3 updates, a line each
    assert lines[0].startswith("run: 16/48 frames (33.3%)") and "ETA " in lines[0]
    assert "update 1/3" in lines[0] and "mean score" in lines[0]
    assert lines[-1].startswith("run: 48/48 frames (100.0%)")
