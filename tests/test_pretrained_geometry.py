"""Pretrained-model plumbing of convex hull, TSP, shortest path and MST (CPU, tiny models).

A `--quick` run is exported with `keras_stm.experiments.pretrained.export` and evaluated again
through the
script's `--evaluate`: the figures come back (same fixed-seed test set), nothing is written, and
convex hull and TSP also evaluate on any Pointer Networks file (`--test-file`).
"""

import math
import os

import numpy as np
import pytest

from keras_stm.experiments import pretrained
from keras_stm.experiments.tasks import geometry
from tests.example_loader import load_example

QUICK = ["--quick", "--verbose", "0"]
PRIMARY = {
    "convex_hull": "sequence_accuracy_n5",
    "tsp": "masked_mean_length_n5",
    "shortest_path": "masked_valid_fraction",
    "minimum_spanning_tree": "optimal_fraction",
}


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-5)


@pytest.mark.large
@pytest.mark.parametrize("task", sorted(PRIMARY))
def test_quick_run_exports_and_evaluates(task, tmp_path):
    example = load_example(task)
    results = example.main(QUICK + ["--output-dir", str(tmp_path / "run")])
    name = f"{task}_5" if task in ("convex_hull", "tsp") else task
    dest = tmp_path / "pretrained" / name
    path = pretrained.export(
        str(tmp_path / "run"),
        str(dest),
        {"commit": "test", "gpu_minutes": 0.0, "command": "--quick"},
    )
    assert os.path.getsize(path) <= pretrained.MAX_MODEL_BYTES
    report = example.main(QUICK + ["--output-dir", str(tmp_path / "x"), "--evaluate", str(dest)])
    assert not os.path.exists(tmp_path / "x")  # --evaluate writes nothing
    np.testing.assert_equal(report["recorded"], results["test"])  # NaN == NaN here
    for key in (PRIMARY[task], "loss" + ("_n5" if "_n5" in PRIMARY[task] else "")):
        assert _same(report["test"][key], results["test"][key]), key


@pytest.mark.large
@pytest.mark.parametrize("task", ["convex_hull", "tsp"])
def test_evaluate_on_a_pointer_networks_file(task, tmp_path):
    example = load_example(task)
    example.main(QUICK + ["--output-dir", str(tmp_path / "run")])
    dest = tmp_path / "pretrained" / f"{task}_5"
    pretrained.export(
        str(tmp_path / "run"),
        str(dest),
        {"commit": "test", "gpu_minutes": 0.0, "command": "--quick"},
    )
    test_file = tmp_path / "test.txt"
    examples = geometry.generate(test_file, task, 9, (5, 6), seed=11)
    report = example.main(
        QUICK
        + [
            "--evaluate",
            str(dest),
            "--test-file",
            str(test_file),
            "--decoding",
            "beam",
            "--beam-width",
            "3",
        ]
    )
    test = report["test"]
    assert test["examples"] == 9
    if task == "tsp":  # beam decoding under the tour rule: every tour valid, never shorter
        assert test["beam_valid_fraction"] == 1.0
        reference = np.mean([geometry.tour_length(e.points, e.output) for e in examples])
        assert test["beam_mean_target_length"] == pytest.approx(reference)
        assert test["beam_mean_length"] >= reference - 1e-9
        assert test["beam_optimality_gap"] >= -1e-9
    else:
        for key in (
            "sequence_accuracy",
            "valid_fraction",
            "area_coverage",
            "beam_sequence_accuracy",
            "beam_area_coverage",
            "mean_target_length",
        ):
            assert key in test
        assert test["mean_target_length"] == pytest.approx(
            np.mean([len(e.output) for e in examples])
        )


def test_evaluate_without_value_names_the_task_and_size(tmp_path):
    """`--evaluate` without a value looks for `<task>_<N>` (N = the one --n-points): here 7,
    a size with no committed model (pretrained/tsp_5 exists since session 15)."""
    example = load_example("tsp")
    with pytest.raises(FileNotFoundError, match="No pretrained model 'tsp_7'"):
        example.main(QUICK + ["--n-points", "7", "--evaluate", "--output-dir", str(tmp_path / "x")])


@pytest.mark.large
@pytest.mark.parametrize("task", ["convex_hull", "shortest_path"])
def test_the_committed_model_check_covers_these_tasks(task, tmp_path):
    """tests/test_pretrained.py's evaluation of a committed model runs for these tasks (here on
    a tiny exported model, so with --quick's model sizes)."""
    from tests.test_pretrained import _evaluation

    example = load_example(task)
    example.main(QUICK + ["--output-dir", str(tmp_path / "run")])
    dest = tmp_path / "pretrained" / task
    pretrained.export(
        str(tmp_path / "run"),
        str(dest),
        {"commit": "test", "gpu_minutes": 0.0, "command": "--quick"},
    )
    results = pretrained.read_results(str(dest))
    script, argv, metric, kind = _evaluation(str(dest), results, tmp_path)
    assert script == task and kind == "accuracy"
    report = load_example(script).main(argv + ["--quick", "--test-size", "16"])
    assert 0.0 <= report["test"][metric] <= 1.0
