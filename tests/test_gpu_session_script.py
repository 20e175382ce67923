"""`scripts/gpu_session.sh` packs what a GPU call brings back in the right order.

The device tool brings back about 60 MiB a call, so the script packs every run's records, then
every run's newest checkpoint (what a run resumes from on a fresh machine), then the best.keras
files, then jax's compilation cache, and lists what did not fit in `$RUNS/left_out.txt`. Here
the runs' scripts do not exist (they fail at once) and their folders are made by hand.
"""

import json
import os
import shutil
import subprocess
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024


def _fake_run(runs, name, checkpoint_mib, best_mib):
    backup = runs / name / "backup"
    backup.mkdir(parents=True)
    weights = "epoch-000002.weights.h5"
    (backup / "training_metadata.json").write_text(
        json.dumps({"checkpoints": [{"epoch": 2, "weights": weights}]})
    )
    (backup / weights).write_bytes(os.urandom(int(checkpoint_mib * MIB)))
    (backup / "epoch-000001.weights.h5").write_bytes(b"older")  # not the newest: never packed
    (runs / name / "best.keras").write_bytes(os.urandom(int(best_mib * MIB)))
    (runs / name / "results.json").write_text("{}")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_checkpoints_before_best_models_and_the_rest_listed(tmp_path):
    runs, dest = tmp_path / "runs", tmp_path / "out"
    _fake_run(runs, "a", 2, 2)
    _fake_run(runs, "b", 2, 2)
    (runs / "jax_cache").mkdir()
    (runs / "jax_cache" / "program").write_bytes(b"x" * 1000)
    spec = tmp_path / "spec.txt"
    spec.write_text("# two runs\na no_such_script_a.py\nb XLA_FOO=1 no_such_script_b.py --x 1\n")
    env = dict(os.environ, RUNS=str(runs), BUDGET_MB="7", KERAS_BACKEND="jax")
    done = subprocess.run(
        ["bash", "scripts/gpu_session.sh", str(spec), "0.01", str(dest)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "left out: b/best.keras" in done.stdout
    parts = sorted(p for p in os.listdir(dest) if p.startswith("runs.tgz.part"))
    archive = tmp_path / "runs.tgz"
    with open(archive, "wb") as f:
        for part in parts:
            f.write((dest / part).read_bytes())
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    packed = [n for n in names if not n.endswith(".log")]
    # records, then both newest checkpoints, then the best.keras that fits, then the cache
    assert packed.index("b/results.json") < packed.index("a/backup/epoch-000002.weights.h5")
    assert packed.index("b/backup/epoch-000002.weights.h5") < packed.index("a/best.keras")
    assert "jax_cache" in names and "a.log" in names and "b.log" in names
    assert not [n for n in names if n.endswith("epoch-000001.weights.h5")]
    assert (runs / "left_out.txt").read_text().split() == ["b/best.keras"]
