"""Every committed pretrained model loads on the CPU and reproduces its recorded test figure.

For each folder under `pretrained/`, the task's example script runs with `--evaluate FOLDER`
on a smaller test set drawn with a fixed seed (associative retrieval: a fresh data set of
another seed; the fresh-data tasks: the first batches of their fixed-seed test set), and
the figure must be within the stated margin of the one in the folder's `results.json`.
"""

import os

import keras
import numpy as np
import pytest

from keras_stm.experiments import pretrained
from tests.example_loader import load_example as _load_example
from tests.test_babi_data import REAL_ARCHIVE

ACCURACY_MARGIN = 0.03
"""float: smallest absolute accuracy margin (512 test examples against the recorded 20,000 or
1,280: a 99% model's sampling spread is about 0.4 points, a 90% model's about 1.3). For
accuracies far from 0 and 1 the margin grows to three standard deviations of the difference of
two independent test sets (`accuracy_margin`): a TSP model at 26% valid tours, scored on 512
fresh examples against its recorded 1,000, has a spread of 2.4 points."""

SAMPLE_SIZE = 512
"""int: test examples of the CPU check for the accuracy-scored tasks."""


def accuracy_margin(recorded, recorded_examples=None, examples=SAMPLE_SIZE):
    """Margin for a re-measured accuracy: `ACCURACY_MARGIN`, or three standard deviations of
    the difference of two binomial proportions (`examples` fresh against the
    `recorded_examples` behind the recorded figure; as many as `examples` when unknown),
    whichever is larger."""
    recorded_examples = recorded_examples or examples
    variance = recorded * (1.0 - recorded) * (1.0 / examples + 1.0 / recorded_examples)
    return max(ACCURACY_MARGIN, 3.0 * float(np.sqrt(variance)))


BABI_ERROR_MARGIN = 3.0
"""float: margin of the bAbI mean error, in points (the first 50 test questions of each task,
1,000 in all, against the recorded 20,000: a 10%-error model's spread is about 1 point)."""
BIT_ERROR_MARGIN = 0.25
"""float: relative bit-error margin (2 test batches against 10), at least 0.5 bits. Not fewer
batches: each batch draws its own sequence length, so one batch can be far from the mean
(RAR's first batch alone: 39 bits against 25.9)."""


def _evaluation(folder, results, tmp_path):
    """(script, argv, metric, margin check) of one pretrained model."""
    task = results["task"]
    flags = results.get("flags", {})
    base = ["--evaluate", folder, "--verbose", "0", "--output-dir", str(tmp_path / "unused")]
    if task == "associative_retrieval":
        pairs = str(results["data"]["num_pairs"])
        argv = base + [
            "--num-pairs",
            pairs,
            "--train-size",
            "128",
            "--validation-size",
            "128",
            "--test-size",
            str(SAMPLE_SIZE),
            "--data-seed",
            "7",
            "--data-file",
            str(tmp_path / "fresh.npz"),
        ]
        return "associative_retrieval", argv, "accuracy", "accuracy"
    if task == "nth_farthest":
        return "nth_farthest", base + ["--test-size", str(SAMPLE_SIZE)], "accuracy", "accuracy"
    if task in ("copy", "priority_sort", "rar"):
        script = {"copy": "copy_task"}.get(task, task)
        argv = base + ["--test-size", "256"]
        if task == "rar":
            argv += ["--reading", flags.get("reading", "executed")]
        return script, argv, "bit_error_per_sequence", "bit_error"
    if task == "babi":
        if not os.path.exists(REAL_ARCHIVE):
            pytest.skip(f"the bAbI archive {REAL_ARCHIVE} is not present")
        argv = base + [
            "--data",
            REAL_ARCHIVE,
            "--test-size",
            "50",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
        if results.get("data", {}).get("partial_tasks"):
            argv.append("--allow-partial")
        return "babi", argv, "mean_error", "babi_error"
    if task in ("convex_hull", "tsp", "shortest_path", "minimum_spanning_tree"):
        # fresh fixed-seed test set (--test-seed 7) of the recorded sizes; greedy figure
        argv = base + [
            "--model",
            results.get("model", "stm"),
            "--test-size",
            str(SAMPLE_SIZE),
            "--test-seed",
            "7",
            "--decoding",
            "greedy",
        ]
        if task in ("convex_hull", "tsp"):
            n = (results.get("test_points") or [10])[-1]
            argv += ["--n-points", str(n)]
            metric = "sequence_accuracy" if task == "convex_hull" else "valid_fraction"
            return task, argv, f"{metric}_n{n}", "accuracy"
        argv += [
            "--n-nodes",
            "-".join(map(str, results["n_nodes"])),
            "--n-edges",
            "-".join(map(str, results["n_edges"])),
        ]
        return task, argv, "optimal_fraction", "accuracy"
    pytest.fail(f"{folder}: no CPU evaluation written for task {task!r}; add one to this test")


ATARI_KEYS = (
    "commit",
    "gpu_minutes",
    "command",
    "frames",
    "episodes",
    "mean_reward_last_100",
    "seed",
    "environment",
)
"""tuple: what a committed Atari agent's results.json must record."""


def _check_atari_agent(name, folder, results, tmp_path):
    """A committed Atari agent plays 2 short games on the CPU (a few steps: its score is not
    compared, only that it loads, acts in its own environment and reports)."""
    for key in ATARI_KEYS:
        assert key in results, f"{name}: results.json lacks {key!r}"
    from keras_stm.experiments.tasks import atari

    try:
        atari.make_env(results["env_id"]).close()
    except (ImportError, ValueError, OSError) as error:
        pytest.skip(f"{results['env_id']} is not available here: {error}")
    report = _load_example("atari_pong").main(
        [
            "--evaluate",
            folder,
            "--episodes",
            "2",
            "--num-envs",
            "2",
            "--max-episode-steps",
            "20",
            "--verbose",
            "0",
            "--output-dir",
            str(tmp_path / "unused"),
        ]
    )
    assert report["episodes"] == 2 and report["frame_skip"] == results["a2c"]["frame_skip"]
    assert all(-21 <= score <= 21 for score in report["scores"])
    assert not os.path.exists(tmp_path / "unused")


@pytest.mark.large
@pytest.mark.parametrize("name", pretrained.available())
def test_pretrained_model_reproduces_its_results(name, tmp_path):
    folder = pretrained.resolve(name)
    results = pretrained.read_results(folder)
    assert (
        os.path.getsize(os.path.join(folder, pretrained.MODEL_FILE)) <= pretrained.MAX_MODEL_BYTES
    )
    if results.get("task") == "atari_pong":
        return _check_atari_agent(name, folder, results, tmp_path)
    for key in ("commit", "gpu_minutes", "command", "iterations", "environment", "test"):
        assert key in results, f"{name}: results.json lacks {key!r}"
    script, argv, metric, kind = _evaluation(folder, results, tmp_path)
    report = _load_example(script).main(argv)
    recorded = results["test"][metric]
    measured = report["test"][metric]
    if kind == "accuracy":
        suffix = metric.rpartition("_n")[2] if "_n" in metric else ""
        recorded_examples = results["test"].get(f"examples_n{suffix}") if suffix.isdigit() else None
        margin = accuracy_margin(recorded, recorded_examples)
        assert abs(measured - recorded) <= margin, (name, measured, recorded, margin)
    elif kind == "babi_error":
        assert abs(measured - recorded) <= BABI_ERROR_MARGIN, (name, measured, recorded)
    else:
        assert abs(measured - recorded) <= max(0.5, BIT_ERROR_MARGIN * recorded), (
            name,
            measured,
            recorded,
        )


def test_accuracy_margin():
    assert accuracy_margin(0.99, 20000) == ACCURACY_MARGIN
    # 26% valid tours on 512 fresh examples against 1,000 recorded: 3 x 2.4 points
    assert abs(accuracy_margin(0.257, 1000) - 0.0712) < 1e-3
    assert accuracy_margin(0.5) > accuracy_margin(0.5, 100000) > ACCURACY_MARGIN


def test_load_by_name_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No pretrained model 'no_such_model'"):
        pretrained.load("no_such_model")
    for name in pretrained.available()[:1]:
        model, results = pretrained.load(name)
        assert model.count_params() == results["parameters"]
        assert np.isfinite(results["iterations"])


def test_export_then_evaluate_reproduces_the_run(tmp_path):
    """A finished (quick) run, exported, gives its own test figures back through --evaluate."""
    run_dir = tmp_path / "run"
    example = _load_example("nth_farthest")
    results = example.main(["--quick", "--verbose", "0", "--output-dir", str(run_dir)])
    dest = tmp_path / "pretrained" / "nth_farthest_quick"
    path = pretrained.export(
        str(run_dir), str(dest), {"commit": "test", "gpu_minutes": 0.0, "command": "--quick"}
    )
    assert os.path.getsize(path) <= pretrained.MAX_MODEL_BYTES
    assert pretrained.available(str(tmp_path / "pretrained")) == ["nth_farthest_quick"]
    model, recorded = pretrained.load(str(dest))
    assert recorded["commit"] == "test" and model.count_params() == results["parameters"]
    report = example.main(
        ["--quick", "--verbose", "0", "--output-dir", str(tmp_path / "x"), "--evaluate", str(dest)]
    )
    assert report["recorded"] == results["test"]
    np.testing.assert_allclose(report["test"]["accuracy"], results["test"]["accuracy"], atol=1e-6)
    assert not os.path.exists(tmp_path / "x")  # --evaluate writes nothing


def test_initial_weights_start_a_run_from_a_pretrained_model(tmp_path):
    """--initial-weights: a new run starts from the given weights (fresh optimizer)."""
    example = _load_example("nth_farthest")
    example.main(["--quick", "--verbose", "0", "--output-dir", str(tmp_path / "a")])
    dest = tmp_path / "pretrained" / "a"
    path = pretrained.export(
        str(tmp_path / "a"), str(dest), {"commit": "test", "gpu_minutes": 0.0, "command": "--quick"}
    )
    start, _ = pretrained.load(str(dest))
    # A learning rate of 1e-12 leaves the weights where they started.
    results = example.main(
        [
            "--quick",
            "--verbose",
            "0",
            "--output-dir",
            str(tmp_path / "b"),
            "--initial-weights",
            path,
            "--learning-rate",
            "1e-12",
        ]
    )
    assert results["flags"]["initial_weights"] == path
    assert results["learning_rate_warmup_steps"] == 100  # fresh moments on trained weights
    after = keras.saving.load_model(str(tmp_path / "b" / "best.keras"), compile=False)
    for expected, actual in zip(start.weights, after.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(actual.value),
            keras.ops.convert_to_numpy(expected.value),
            atol=1e-6,
            err_msg=expected.path,
        )
    with pytest.raises(FileNotFoundError, match="--initial-weights .*no such file"):
        example.main(
            [
                "--quick",
                "--verbose",
                "0",
                "--output-dir",
                str(tmp_path / "c"),
                "--initial-weights",
                str(tmp_path / "missing.keras"),
            ]
        )
