"""The output folder of `keras_stm.experiments.training.run` (issue 24, finding 2): checkpoints
written
through a temporary file and renamed, the previous one kept and used when the newest is
damaged, every damaged file (weights, metadata, timer, history, best model) reported with its
name and the way out before any training, and a lock against two runs in one folder.

The first tests use a tiny Dense model (seconds); the last ones are fault-injection runs of
`examples/nth_farthest.py --quick`, one of them killed with SIGKILL in the middle of writing a
checkpoint."""

import argparse
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import warnings
import zipfile

import keras
import numpy as np
import pytest

from keras_stm.experiments import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Data(keras.utils.PyDataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        return rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 1)).astype("float32")


def _args(out, iterations=4, **overrides):
    values = dict(
        output_dir=str(out),
        fresh=False,
        iterations=iterations,
        steps_per_epoch=2,
        max_minutes=None,
        verbose=0,
        task="toy",
        model="dense",
        batch_size=4,
        stm_config=None,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def _run(out, **overrides):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return training.run(model, _Data(), _args(out, **overrides), monitor="loss")


def _epochs(out):
    with open(os.path.join(out, "history.csv"), newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _backup(out, name="training_metadata.json"):
    return os.path.join(out, "backup", name)


def _checkpoints(out):
    with open(_backup(out)) as f:
        return json.load(f)["checkpoints"]


def test_checkpoints_keep_two_verified_epochs(tmp_path):
    out = tmp_path / "run"
    results = _run(out, iterations=6)
    assert results["iterations"] == 6 and _epochs(out) == [0, 1, 2]
    entries = _checkpoints(out)
    assert [e["epoch"] for e in entries] == [3, 2]
    assert sorted(os.listdir(out / "backup")) == sorted(
        [e["weights"] for e in entries] + ["training_metadata.json"]
    )
    assert not os.path.exists(out / training.LOCK_NAME)  # released
    # Resumed with more iterations: only the new epochs train.
    assert _run(out, iterations=8)["iterations"] == 8 and _epochs(out) == [0, 1, 2, 3]


def test_checkpoint_with_another_optimizer_state_restarts_the_optimizer_with_one_warning(tmp_path):
    """A checkpoint whose optimizer variables do not fit (Keras only warns "Skipping variable
    loading for optimizer ...") resumes its weights with a fresh optimizer: one warning of ours
    naming the checkpoint, and `optimizer_restarts` in results.json and the metadata."""
    out = tmp_path / "run"
    _run(out)  # Adam: 2 moments per variable
    checkpoint = _backup(out, _checkpoints(out)[0]["weights"])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.RMSprop(1e-2), loss="mse")  # 1 per variable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = training.run(model, _Data(), _args(out, iterations=6), monitor="loss")
    messages = [str(w.message) for w in caught]
    ours = [m for m in messages if "without its optimizer state" in m]
    assert len(ours) == 1, messages
    assert checkpoint in ours[0] and "(epoch 2)" in ours[0] and "(RMSprop)" in ours[0]
    assert not [m for m in messages if "Skipping variable loading for optimizer" in m], messages
    assert _epochs(out) == [0, 1, 2]  # resumed at epoch 2 with the checkpoint's weights
    [restart] = results["optimizer_restarts"]
    assert restart["checkpoint"] == checkpoint and restart["epoch"] == 2
    assert restart["saved_variables"] > restart["optimizer_variables"] > 0
    with open(out / "results.json") as f:
        assert json.load(f)["optimizer_restarts"] == [restart]
    with open(_backup(out)) as f:
        assert json.load(f)["optimizer_restarts"] == [restart]  # kept across later resumes
    # Resumed again with the same optimizer: the state fits, nothing new to report.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = training.run(model, _Data(), _args(out, iterations=8), monitor="loss")
    assert not [w for w in caught if "optimizer" in str(w.message)]
    assert again["optimizer_restarts"] == [restart]
    # A normal run records none.
    assert _run(tmp_path / "plain")["optimizer_restarts"] == []


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    out = tmp_path / "run"
    _run(out, iterations=6)
    newest = _backup(out, _checkpoints(out)[0]["weights"])
    with open(newest, "r+b") as f:
        f.truncate(100)
    with pytest.warns(UserWarning, match="epoch-000003.weights.h5"):
        _run(out, iterations=8)
    assert _epochs(out) == [0, 1, 2, 3]  # epoch 2 trained again, its old row replaced
    assert [e["epoch"] for e in _checkpoints(out)] == [4, 3]


class _EpochCounter(keras.callbacks.Callback):
    """A resumable callback: counts the epochs ended, in the logs and in its saved state."""

    state_name = "counter"

    def __init__(self):
        super().__init__()
        self.epochs = 0

    def get_state(self):
        return {"epochs": self.epochs}

    def set_state(self, state):
        if not isinstance(state, dict) or not isinstance(state.get("epochs"), int):
            raise ValueError(f"not a counter state: {state!r}")
        self.epochs = state["epochs"]

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        logs["counted"] = self.epochs


def _run_counting(out, counter, **overrides):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    callbacks = [counter] if counter else []
    args = _args(out, **overrides)
    return training.run(model, _Data(), args, monitor="loss", resumable_callbacks=callbacks)


def test_resumable_callback_state_goes_with_its_checkpoint(tmp_path):
    """`run(resumable_callbacks=...)`: each checkpoint's metadata entry holds the callbacks'
    state of its epoch (taken after their epoch end, whose logs reach history.csv); a resume
    restores the state of the checkpoint it loads, the previous one's on a fallback; a run
    resumed without them, or with a state they refuse, stops naming the checkpoint."""
    out = tmp_path / "run"
    counter = _EpochCounter()
    _run_counting(out, counter, iterations=6)
    assert counter.epochs == 3
    assert [e["state"] for e in _checkpoints(out)] == [{"counter": {"epochs": n}} for n in (3, 2)]
    with open(out / "history.csv", newline="") as f:
        assert [int(row["counted"]) for row in csv.DictReader(f)] == [1, 2, 3]
    newest = _backup(out, _checkpoints(out)[0]["weights"])
    with open(newest, "r+b") as f:
        f.truncate(100)
    counter = _EpochCounter()
    with pytest.warns(UserWarning, match="epoch-000003.weights.h5"):
        _run_counting(out, counter, iterations=8)
    assert counter.epochs == 4  # 2 restored with epoch 2's checkpoint, then epochs 3 and 4
    with open(out / "history.csv", newline="") as f:
        assert [int(row["counted"]) for row in csv.DictReader(f)] == [1, 2, 3, 4]
    with pytest.raises(training.RunFolderError, match=r"holds the training state \['counter'\]"):
        _run_counting(out, None, iterations=10)
    metadata = json.loads((out / "backup" / "training_metadata.json").read_text())
    metadata["checkpoints"][0]["state"]["counter"] = "three"
    (out / "backup" / "training_metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(training.RunFolderError, match="not a counter state: 'three'"):
        _run_counting(out, _EpochCounter(), iterations=10)
    # A run without them resumes (and saves) no state; one started without them refuses them.
    _run_counting(tmp_path / "plain", None)
    assert all("state" not in e for e in _checkpoints(tmp_path / "plain"))
    with pytest.raises(training.RunFolderError, match="holds no training state"):
        _run_counting(tmp_path / "plain", _EpochCounter(), iterations=6)


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_unusable_checkpoints_stop_the_run(tmp_path, damage):
    out = tmp_path / "run"
    _run(out)
    for entry in _checkpoints(out):
        path = _backup(out, entry["weights"])
        if damage == "delete":
            os.remove(path)
        elif damage == "truncate":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        else:
            with open(path, "r+b") as f:
                f.seek(os.path.getsize(path) // 2)
                f.write(b"\xff" * 64)
    with pytest.raises(training.RunFolderError, match="epoch-000002.weights.h5") as error:
        _run(out, iterations=8)
    assert "--fresh" in str(error.value) and "2 epoch(s)" in str(error.value)
    assert _epochs(out) == [0, 1]  # nothing trained
    # --fresh starts over.
    assert _run(out, iterations=4, fresh=True)["iterations"] == 4 and _epochs(out) == [0, 1]


@pytest.mark.parametrize("name", ["backup/training_metadata.json", "timer.json"])
def test_corrupt_json_names_the_file(tmp_path, name):
    out = tmp_path / "run"
    _run(out)
    with open(out / name, "w") as f:
        f.write('{"epoch": 2, "bat')
    with pytest.raises(training.RunFolderError, match=os.path.basename(name)) as error:
        _run(out, iterations=6)
    assert "--fresh" in str(error.value)


def test_history_cut_mid_row_is_repaired(tmp_path):
    out = tmp_path / "run"
    _run(out)
    path = out / "history.csv"
    text = path.read_text()
    path.write_text(text + "2,0.5")  # a third row cut by a kill (its checkpoint never written)
    with pytest.warns(UserWarning, match="history.csv"):
        _run(out, iterations=6)
    assert _epochs(out) == [0, 1, 2]
    rows = path.read_text().splitlines()
    assert len(rows) == 4 and all(len(r.split(",")) == len(rows[0].split(",")) for r in rows)


def test_corrupt_best_model_is_reported_before_training(tmp_path):
    out = tmp_path / "run"
    _run(out)
    best = out / "best.keras"
    assert zipfile.is_zipfile(best)
    best.write_bytes(best.read_bytes()[:300])
    with pytest.raises(training.RunFolderError, match="best.keras"):
        _run(out, iterations=6)
    assert _epochs(out) == [0, 1]


def test_output_folder_lock(tmp_path):
    out = tmp_path / "run"
    os.makedirs(out)
    lock = out / training.LOCK_NAME
    # Held by a running process (this test's parent): refused, naming the process and file.
    lock.write_text(json.dumps({"pid": os.getppid(), "host": "here"}))
    with pytest.raises(training.RunFolderError, match=f"process {os.getppid()}") as error:
        _run(out)
    assert str(lock) in str(error.value) and not os.path.exists(out / "history.csv")
    # Left by a process that has ended: taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": "here"}))
    with pytest.warns(UserWarning, match="stale lock"):
        _run(out)
    assert _epochs(out) == [0, 1] and not lock.exists()


# --- fault injection into a real example run ----------------------------------------------


def _example(out, *extra):
    spec = importlib.util.spec_from_file_location(
        "example_nth_farthest", os.path.join(ROOT, "examples", "nth_farthest.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--quick", "--verbose", "0", "--output-dir", str(out), *extra])


_KILLED_WRITE = """
import os, runpy, signal, sys
import keras
original = keras.Model.save_weights
def save_weights(self, filepath, *args, **kwargs):
    original(self, filepath, *args, **kwargs)
    if "epoch-000002" in filepath:  # half of epoch 2's checkpoint is on disk: SIGKILL
        with open(filepath, "r+b") as f:
            f.truncate(os.path.getsize(filepath) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
keras.Model.save_weights = save_weights
sys.argv = [sys.argv[1], "--quick", "--verbose", "0", "--output-dir", sys.argv[2]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.large
def test_example_killed_during_a_checkpoint_write_resumes(tmp_path):
    """SIGKILL while epoch 2's checkpoint is half-written: the rerun resumes from epoch 1 (one
    epoch lost at most), taking over the dead run's lock; then damaged checkpoints stop a
    rerun with the file named, instead of training from fresh weights."""
    out = tmp_path / "nfar"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILLED_WRITE,
            os.path.join(ROOT, "examples", "nth_farthest.py"),
            str(out),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [e["epoch"] for e in _checkpoints(out)] == [1]
    assert any(".tmp" in name for name in os.listdir(out / "backup"))  # the half-written file
    assert (out / training.LOCK_NAME).exists()  # left by the killed run
    with pytest.warns(UserWarning, match="stale lock"):
        results = _example(out)
    assert results["iterations"] == 4 and _epochs(out) == [0, 1]
    assert [e["epoch"] for e in _checkpoints(out)] == [2, 1]
    assert not any(".tmp" in name for name in os.listdir(out / "backup"))

    # A deleted newest and truncated previous checkpoint: a clear stop, not fresh weights.
    entries = _checkpoints(out)
    os.remove(_backup(out, entries[0]["weights"]))
    with open(_backup(out, entries[1]["weights"]), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(training.RunFolderError, match="--fresh") as error:
        _example(out, "--iterations", "6")
    assert entries[0]["weights"] in str(error.value) and entries[1]["weights"] in str(error.value)
    assert _epochs(out) == [0, 1]


@pytest.mark.parametrize("damaged", [False, True])
def test_folder_of_keras_backup_and_restore_resumes(tmp_path, damaged):
    """A run folder written before this change (Keras' `BackupAndRestore`, `latest.weights.h5`)
    resumes at its epoch, or from its `.bkp` copy when the latest file is damaged; the next
    checkpoint replaces the old files."""
    out = tmp_path / "run"
    os.makedirs(out)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(
        _Data(),
        epochs=2,
        steps_per_epoch=2,
        verbose=0,
        callbacks=[
            keras.callbacks.BackupAndRestore(
                str(out / "backup"), delete_checkpoint=False, double_checkpoint=True
            )
        ],
    )
    latest = out / "backup" / "latest.weights.h5"
    assert latest.exists() and (out / "backup" / "latest.weights.h5.bkp").exists()
    if damaged:
        latest.write_bytes(latest.read_bytes()[:500])
        with pytest.warns(UserWarning, match="latest.weights.h5 cannot be loaded"):
            _run(out, iterations=6)
        assert _epochs(out) == [1, 2]  # from the .bkp copy of epoch 1
    else:
        assert _run(out, iterations=6)["iterations"] == 6
        assert _epochs(out) == [2]  # only the third epoch trained
    kept = [3, 2] if damaged else [3]
    assert [e["epoch"] for e in _checkpoints(out)] == kept
    assert sorted(os.listdir(out / "backup")) == sorted(
        [f"epoch-00000{k}.weights.h5" for k in kept] + ["training_metadata.json"]
    )
