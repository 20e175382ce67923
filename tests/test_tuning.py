"""KerasTuner searches (`keras_stm.experiments.tuning`, `examples/tune.py`) and `--data-parallel`.

Checked: the search spaces are centred on the paper's configuration; every task's hypermodel
builds a model whose logits and loss fit the task's batches; a two-trial search completes,
survives an interruption mid-trial and resumes; the best trial's file is read by a training
script, which then trains exactly that model (the distributed search, a chief and two workers
over loopback: tests/test_launch_tuning.py); `--data-parallel` splits batches over 2
simulated CPU devices under jax and is refused clearly under torch and tensorflow.
"""

import contextlib
import io
import json
import math
import os
import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest

from keras_stm.experiments import training
from keras_stm.experiments import tuning
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import graphs
from tests.example_loader import load_example as _load

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()


def _trials(project):
    """{trial_id: trial.json} of a KerasTuner project folder."""
    out = {}
    for name in sorted(os.listdir(project)):
        path = os.path.join(project, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                out[name[len("trial_") :]] = json.load(f)
    return out


# ------------------------------------------------------------------------- search spaces


@pytest.mark.parametrize("task", sorted(task_configs.TASK_CONFIGS))
def test_search_space_defaults_are_the_papers_configuration(task):
    entry = task_configs.TASK_CONFIGS[task]
    hypermodel = tuning.TaskHyperModel(task)
    hp = keras_tuner.HyperParameters()
    values = hypermodel.values(hp)  # every parameter at its default
    for key, value in entry["stm"].items():
        if key in values:
            assert values[key] == value, key
    for key in ("learning_rate", "clip_value", "batch_size"):
        assert values[key] == pytest.approx(entry[key]), key
    # The searched ranges surround the paper's value.
    space = {p.name: p for p in tuning.search_space(task)}
    nq = entry["stm"]["num_queries"]
    assert set(space["num_queries"].values) == {max(1, nq // 2), nq, 2 * nq}
    for key in ("memory_size", "relation_size", "readout_size"):
        choices = space[key].values
        assert min(choices) < entry["stm"][key] < max(choices), key
    lr = space["learning_rate"]
    assert lr.sampling == "log" and lr.min_value < entry["learning_rate"] < lr.max_value
    for key in ("relational_carry", "relational_read", "relational_transfer"):
        assert {"learned", "0", "1"} <= set(space[key].values)
    assert space["gated_write"].kind == "boolean"
    # Batch size is searched where the data are a fixed set, else fixed at the paper's 128.
    assert space["batch_size"].kind == ("choice" if task == "associative_retrieval" else "fixed")
    # An LSTM search has the baseline's width instead of STM arguments.
    lstm = {p.name for p in tuning.search_space(task, "lstm")}
    assert "lstm_units" in lstm and "num_queries" not in lstm


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="task"):
        tuning.TaskHyperModel("sorting")
    with pytest.raises(ValueError, match="model"):
        tuning.search_space("copy", model="gru")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        tuning.TaskHyperModel("copy", steps_per_epoch=0)
    with pytest.raises(ValueError, match="kind"):
        tuning.make_tuner("grid", tuning.TaskHyperModel("copy", quick=True))
    with pytest.raises(ValueError, match="mixing coefficient"):
        tuning.coefficient_value("sometimes")
    with pytest.raises(ValueError, match="default"):
        tuning.Param("memory_size", "choice", values=(4, 8), default=6)
    with pytest.raises(ValueError, match="sizes"):
        tuning.fix_params(tuning.search_space("copy"), ["sizes"])
    fixed = {
        p.name: p
        for p in tuning.fix_params(tuning.search_space("rar"), ["gated_write", "learning_rate"])
    }
    assert fixed["gated_write"].kind == fixed["learning_rate"].kind == "fixed"
    assert fixed["learning_rate"].default == task_configs.TASK_CONFIGS["rar"]["learning_rate"]
    assert fixed["memory_size"].kind == "choice"


@pytest.mark.parametrize("task", sorted(task_configs.TASK_CONFIGS))
def test_every_task_builds_a_model_for_its_batches(task):
    """The tiny model of every task takes the task's batches (symbolically: no compile per
    task), and output steps alone carry weight."""
    hypermodel = tuning.TaskHyperModel(task, quick=True)
    model = hypermodel.build(keras_tuner.HyperParameters())
    stm = model.get_layer("stm").get_config()
    for key, value in task_configs.QUICK_MODEL.items():
        if key in task_configs.MODEL_FLAGS:
            assert stm[key] == value, key
    assert stm["gated_write"] == task_configs.stm_config(task)["gated_write"]
    batches = [hypermodel.validation_data(4)[0], hypermodel.training_data(4)[1]]
    data = tuning.TASK_DATA[task]
    for batch in batches:
        x, y = batch[0], batch[1]
        spec = model.compute_output_spec(keras.KerasTensor(x.shape, dtype=str(x.dtype)))
        if data.return_sequences:
            assert tuple(spec.shape) == (4, x.shape[1], data.output_size)
            weight = batch[2]
            assert weight.shape == x.shape[:2] and y.shape[:2] == x.shape[:2]
            assert 0 < weight.sum() < weight.size
            if data.loss == "pointer":  # output labels and END weighted; inputs, padding not
                assert np.all(y[weight > 0] > 0) and np.all(y[weight == 0] == 0)
        else:
            assert tuple(spec.shape) == (4, data.output_size) and y.shape == (4,)
    # The padded geometry/graph batches share one length (one compiled shape).
    if data.loss == "pointer":
        assert batches[0][0].shape[1] == batches[1][0].shape[1]


def test_padded_pointer_batch_gives_the_unpadded_loss():
    """Padding a graph batch with zero-weight steps leaves the model's masked loss unchanged."""
    hypermodel = tuning.TaskHyperModel("shortest_path", quick=True)
    model = hypermodel.build(keras_tuner.HyperParameters())
    rng = np.random.default_rng(3)
    x, y, weight = graphs.make_batch(
        rng, 4, "shortest_path", n_nodes=5, n_edges=6, random_labels=False
    )
    padded = hypermodel.validation_data(4)[0]
    length = padded[0].shape[1]
    assert length >= x.shape[1]
    pad = length - x.shape[1]
    xp = np.pad(x, ((0, 0), (0, pad), (0, 0)))
    logits, logits_padded = (keras.ops.convert_to_numpy(model(v)) for v in (x, xp))
    np.testing.assert_allclose(logits_padded[:, : x.shape[1]], logits, rtol=1e-5, atol=1e-5)
    loss = float(model.loss(y, logits, sample_weight=weight))
    loss_padded = float(
        model.loss(
            np.pad(y, ((0, 0), (0, pad))),
            logits_padded,
            sample_weight=np.pad(weight, ((0, 0), (0, pad))),
        )
    )
    assert math.isfinite(loss) and loss == pytest.approx(loss_padded, rel=1e-5)


def test_best_hparams_file_keys():
    values = {
        "learning_rate": 3e-4,
        "clip_value": 5.0,
        "batch_size": 64,
        "num_queries": 16,
        "memory_size": 48,
        "gated_write": True,
        "relational_carry": "1",
        "relational_read": "0",
        "relational_transfer": "learned",
        "tuner/epochs": 3,
    }
    # RAR's registry: gated write, carry 0, read 0, transfer learned: only the carry differs.
    assert tuning.best_hparams("rar", values) == {
        "learning_rate": 3e-4,
        "clip_value": 5.0,
        "batch_size": 64,
        "num_queries": 16,
        "memory_size": 48,
        "stm_config": {"relational_carry": 1.0},
        "model": "stm",
    }
    # Nth-farthest's registry is additive: a gated write must be written out.
    assert tuning.best_hparams("nth_farthest", values)["stm_config"] == {
        "gated_write": True,
        "relational_read": 0.0,
        "relational_carry": 1.0,
    }
    lstm = tuning.best_hparams(
        "copy", {"lstm_units": 256, "learning_rate": 1e-3, "num_queries": 4}, model="lstm"
    )
    assert lstm == {"lstm_units": 256, "learning_rate": 1e-3, "model": "lstm"}


def test_stm_config_flag_and_its_guard(tmp_path):
    """`--stm-config` (or an `stm_config` key of `--hparams`) reaches `args`; `training.run`
    refuses a model whose STM disagrees with it."""
    parser = training.argument_parser("doc", **task_configs.training_defaults("copy"))
    args = training.parse_args(parser, ["--stm-config", '{"gated_write": false}'])
    assert args.stm_config == {"gated_write": False}
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"learning_rate": 0.01, "stm_config": {"relational_read": 1.0}}))
    args = training.parse_args(parser, ["--hparams", str(path)])
    assert args.stm_config == {"relational_read": 1.0} and args.learning_rate == 0.01
    with pytest.raises(SystemExit):
        training.parse_args(parser, ["--stm-config", "[1, 2]"])
    tiny = {k: v for k, v in task_configs.QUICK_MODEL.items() if k in task_configs.MODEL_FLAGS}
    model = build_sequence_model(
        4, 2, stm_config=task_configs.stm_config("copy", relational_read=1.0, **tiny)
    )
    training.check_stm_config_applied(model, args)  # agrees: no error
    args.stm_config = {"relational_read": "learned"}
    with pytest.raises(ValueError, match="relational_read"):
        training.check_stm_config_applied(model, args)


# ------------------------------------------------------------------------- searches


class _Interrupt(keras.callbacks.Callback):
    """Stops the process in the middle of a trial, as a Ctrl-C would."""

    def on_train_begin(self, logs=None):
        raise KeyboardInterrupt("interrupted by the test")


TUNED_TASK = "nth_farthest"
TUNE_ARGS = [
    "--task",
    TUNED_TASK,
    "--quick",
    "--max-trials",
    "2",
    "--epochs",
    "1",
    "--verbose",
    "0",
]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A two-trial random search interrupted in its second trial, then resumed by the script.

    Returns a dict: directory, project folder, trial 0 before the interruption, trial 1's
    values when interrupted, the summary of `tune.main`, and its printed output.
    """
    directory = str(tmp_path_factory.mktemp("tune"))
    hypermodel = tuning.TaskHyperModel(TUNED_TASK, quick=True)
    project = os.path.join(directory, f"{TUNED_TASK}-stm-random-quick")

    # Trial 0 completes (a search of 1 trial).
    tuning.make_tuner("random", hypermodel, max_trials=1, directory=directory).search(
        epochs=1, verbose=0
    )
    first = _trials(project)
    # Asked for 2: trial 1 starts and the process is interrupted before it trains.
    tuner = tuning.make_tuner("random", hypermodel, max_trials=2, directory=directory)
    with pytest.raises(KeyboardInterrupt):
        tuner.search(epochs=1, verbose=0, callbacks=[_Interrupt()])
    interrupted = _trials(project)["1"]
    # The script, started again, resumes.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = _load("tune").main([*TUNE_ARGS, "--output-dir", project])
    return dict(
        directory=directory,
        project=project,
        first=first,
        interrupted=interrupted,
        summary=summary,
        printed=printed.getvalue(),
    )


@pytest.mark.large
def test_two_trial_search_completes_resumes_and_summarises(searched):
    project, summary = searched["project"], searched["summary"]
    assert list(searched["first"]) == ["0"] and searched["first"]["0"]["status"] == "COMPLETED"
    assert searched["interrupted"]["status"] == "RUNNING"
    assert "Reloading Tuner" in searched["printed"]
    trials = _trials(project)
    assert sorted(trials) == ["0", "1"]
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    # The interrupted trial was run again with its values; trial 0 was kept as it was.
    assert (
        trials["1"]["hyperparameters"]["values"]
        == searched["interrupted"]["hyperparameters"]["values"]
    )
    assert trials["0"] == searched["first"]["0"]
    assert summary["num_trials"] == summary["num_completed"] == 2
    assert summary["objective"] == {"name": "val_accuracy", "direction": "max"}

    # The summary ranks by the objective (higher accuracy first; ties keep KerasTuner's
    # order) and the file holds the best trial.
    scores = {t["trial_id"]: t["score"] for t in trials.values()}
    ranked = [t["score"] for t in summary["best_trials"]]
    assert ranked == sorted(scores.values(), reverse=True)
    best = summary["best_trials"][0]
    assert best["score"] == max(scores.values())
    with open(os.path.join(project, tuning.BEST_HPARAMS_FILE)) as f:
        stored = json.load(f)
    assert stored == tuning.best_hparams(TUNED_TASK, best["hyperparameters"])
    with open(os.path.join(project, tuning.BEST_TRIALS_FILE)) as f:
        assert json.load(f)["best_trials"][0]["trial_id"] == best["trial_id"]
    assert "Results summary" in searched["printed"]
    assert (
        f"examples/nth_farthest.py --hparams {summary['best_hparams_path']}"
        in (searched["printed"])
    )

    # Started once more with every trial done: nothing new, same result.
    # (The deprecated --directory still finds the same search.)
    again = _load("tune").main([*TUNE_ARGS, "--directory", searched["directory"]])
    assert _trials(project) == trials and again["best_hparams"] == summary["best_hparams"]


@pytest.mark.large
def test_best_hparams_round_trip_into_the_training_script(searched, tmp_path):
    """The best trial's file trains exactly the trial's model in `examples/nth_farthest.py`."""
    summary = searched["summary"]
    assert summary["best_hparams"]["model"] == "stm"
    values = summary["best_trials"][0]["hyperparameters"]
    out = str(tmp_path / "train")
    results = _load("nth_farthest").main(
        [
            "--hparams",
            summary["best_hparams_path"],
            "--iterations",
            "2",
            "--steps-per-epoch",
            "1",
            "--test-size",
            "1",
            "--output-dir",
            out,
            "--verbose",
            "0",
        ]
    )
    with open(os.path.join(out, "results.json")) as f:
        stored = json.load(f)
    for key in ("learning_rate", "clip_value"):
        assert stored["flags"][key] == pytest.approx(values[key]), key
    assert stored["batch_size"] == values["batch_size"]
    for key in task_configs.MODEL_FLAGS:
        assert stored["stm_config"][key] == values[key], key
    # Write and mixing coefficients (flag-less: `stm_config` in the file where they differ
    # from the registry) are the trial's too.
    assert stored["stm_config"]["gated_write"] == values["gated_write"]
    for key in ("relational_carry", "relational_read", "relational_transfer"):
        assert stored["stm_config"][key] == tuning.coefficient_value(values[key]), key
    # The script's model is the trial's model: the same parameter count.
    hp = keras_tuner.HyperParameters()
    hypermodel = tuning.TaskHyperModel(TUNED_TASK, quick=True)
    hypermodel.values(hp)
    hp.values.update({k: v for k, v in values.items() if k in hp.values})
    assert results["parameters"] == hypermodel.build(hp).count_params()


# The chief-and-two-workers search over loopback is tests/test_launch_tuning.py's (through
# scripts/launch_tuning.py, with a worker killed and restarted).


# ------------------------------------------------------------------------- data parallel

_DATA_PARALLEL_CHECK = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import jax, keras, keras_tuner
from examples.nth_farthest import main
from keras_stm.experiments import tuning
results = main(["--quick", "--data-parallel", "--output-dir", sys.argv[2], "--verbose", "0"])
distribution = keras.distribution.distribution()
# KerasTuner clears the session (and the distribution) before every trial: the hypermodel
# sets it again in build().
keras.backend.clear_session()
assert keras.distribution.distribution() is None
model = tuning.TaskHyperModel("nth_farthest", quick=True, data_parallel=True).build(
    keras_tuner.HyperParameters())
kernel = model.trainable_variables[0].value
print(json.dumps({
    "devices": len(jax.devices()),
    "distribution": type(distribution).__name__,
    "mesh": dict(zip(distribution.device_mesh.axis_names, distribution.device_mesh.shape)),
    "tuner_distribution": type(keras.distribution.distribution()).__name__,
    "kernel_devices": len(kernel.sharding.device_set),
    "kernel_replicated": bool(kernel.sharding.is_fully_replicated),
    "test": results["test"]}))
"""


def test_data_parallel_flag(tmp_path):
    if BACKEND != "jax":
        # keras.distribution has no torch or tensorflow implementation: a clear refusal.
        with pytest.raises(ValueError, match="jax") as error:
            _load("nth_farthest").main(
                [
                    "--quick",
                    "--data-parallel",
                    "--output-dir",
                    str(tmp_path / "run"),
                    "--verbose",
                    "0",
                ]
            )
        assert "docs/scaling.md" in str(error.value)
        with pytest.raises(SystemExit):
            _load("tune").main(
                [
                    "--task",
                    "copy",
                    "--quick",
                    "--data-parallel",
                    "--output-dir",
                    str(tmp_path / "tune"),
                ]
            )
        return
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    done = subprocess.run(
        [sys.executable, "-c", _DATA_PARALLEL_CHECK, REPO, str(tmp_path / "run")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2
    assert report["distribution"] == "DataParallel" and report["mesh"] == {"batch": 2}
    assert report["tuner_distribution"] == "DataParallel"
    assert report["kernel_devices"] == 2 and report["kernel_replicated"]
    assert all(math.isfinite(v) for v in report["test"].values())
    assert os.path.exists(tmp_path / "run" / "results.json")
