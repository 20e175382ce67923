"""`scripts/launch_tuning.py`: a chief and two workers over loopback, one worker killed.

The launcher starts `examples/tune.py` as a chief and two CPU workers sharing one search folder;
the test kills a worker with SIGKILL while the oracle has a trial running for it; the launcher
starts it again under the same tuner ID, the oracle gives it back its trial, and the search ends
with every trial completed and the launcher's summary (`launcher.json`) written.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from keras_stm.experiments import tuning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "scripts", "launch_tuning.py")
BACKEND = keras.backend.backend()
TRIALS = 2

pytestmark = pytest.mark.large


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # not written yet, or being written
        return None


def _kill_a_worker_mid_trial(output_dir, launcher, timeout=240):
    """Waits for the oracle to run a trial in a worker, kills it; returns (tuner ID, trial)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert launcher.poll() is None, "the launcher ended before a worker ran a trial"
        oracle = _read_json(os.path.join(output_dir, "oracle.json")) or {}
        state = _read_json(os.path.join(output_dir, "launcher.json")) or {}
        pids = {p["tuner_id"]: p["pid"] for p in state.get("processes", [])}
        for tuner_id, trial_id in (oracle.get("ongoing_trials") or {}).items():
            if tuner_id in pids:
                os.kill(pids[tuner_id], signal.SIGKILL)
                return tuner_id, trial_id, pids[tuner_id]
        time.sleep(0.1)
    raise AssertionError("no worker started a trial in time")


def test_launcher_restarts_a_killed_worker_and_completes_the_search(tmp_path):
    output_dir = str(tmp_path / "search")
    command = [
        sys.executable,
        LAUNCHER,
        "--output-dir",
        output_dir,
        "--workers",
        "2",
        "--gpus",
        "none",
        "--max-restarts",
        "2",
        "--task",
        "copy",
        "--quick",
        "--max-trials",
        str(TRIALS),
        "--epochs",
        "1",
        "--verbose",
        "0",
    ]
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    launcher = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        killed, trial_id, pid = _kill_a_worker_mid_trial(output_dir, launcher)
        out, _ = launcher.communicate(timeout=420)
    finally:
        if launcher.poll() is None:
            launcher.terminate()
            launcher.communicate(timeout=60)
    assert launcher.returncode == 0, out
    assert f"{killed} exited -9; restart 1" in out
    summary = _read_json(os.path.join(output_dir, "launcher.json"))
    processes = {p["tuner_id"]: p for p in summary["processes"]}
    assert sorted(processes) == ["chief", "tuner0", "tuner1"]
    assert all(p["gpu"] is None for p in processes.values())
    assert processes[killed]["restarts"] == 1
    assert processes[killed]["exit_codes"] == [-signal.SIGKILL, 0]
    assert processes[killed]["pids"][0] == pid and len(processes[killed]["pids"]) == 2
    for tuner_id, process in processes.items():
        assert process["exit_codes"][-1] == 0, (tuner_id, process)
    # Every trial completed, the killed worker's among them (run again after the restart).
    trials = {}
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            trials[name[len("trial_") :]] = _read_json(path)
    assert len(trials) == TRIALS and trial_id in trials
    assert all(t["status"] == "COMPLETED" and math.isfinite(t["score"]) for t in trials.values())
    # Trials ran in the workers (the chief runs none): each saved its trial's weights.
    for i in trials:
        assert os.path.exists(os.path.join(output_dir, f"trial_{i}", "checkpoint.weights.h5")), i
    best = _read_json(os.path.join(output_dir, tuning.BEST_TRIALS_FILE))
    assert best["num_completed"] == TRIALS
    assert summary["exit_status"] == 0 and summary["num_completed"] == TRIALS
    assert summary["objective"]["name"] == "val_bit_error_per_sequence"
    assert summary["best_score"] == min(t["score"] for t in trials.values())
    assert summary["trials_per_hour"] > 0 and summary["wall_seconds"] > 0
    assert summary["backend"] == BACKEND and summary["versions"]["keras"] == keras.__version__
    # Each process's log is in the search folder; the killed worker's holds both runs.
    logs = {n: open(os.path.join(output_dir, "logs", f"{n}.log")).read() for n in processes}
    assert logs[killed].count("=== launcher: starting") == 2
    for worker in ("tuner0", "tuner1"):
        assert f"worker {worker}: no trial left" in logs[worker]
    assert "Best hyper-parameters" in logs["chief"]
