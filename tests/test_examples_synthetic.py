"""The synthetic-task example scripts and the per-task configuration registry.

Each script's `--quick` mode runs in-process (its `main(argv)`) with the output folder in
`tmp_path`; the checks are on what the runs leave behind (results.json, history.csv, the
plot, the data file) and on numbers recomputed independently (parameter counts from the
reference formula, the test metric from the saved best model's predictions).
"""

import argparse
import csv
import json
import math
import os

import keras
import numpy as np
import pytest

from keras_stm.experiments import training
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import copy as copy_data
from keras_stm.experiments.tasks import nth_farthest
from keras_stm.experiments.tasks.metrics import bit_error_per_sequence
from tests.example_loader import load_example as _load
from tests.example_loader import load_script


def _run(name, out, *extra):
    """Runs `examples/<name>.py --quick`; returns (results dict, output folder)."""
    results = _load(name).main(["--quick", "--verbose", "0", "--output-dir", str(out), *extra])
    with open(os.path.join(out, "results.json")) as f:
        stored = json.load(f)
    assert stored["test"] == pytest.approx(results["test"])
    return stored


def _history_rows(out):
    with open(os.path.join(out, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _check_common(results, out, task, model="stm"):
    assert results["task"] == task and results["model"] == model
    assert results["iterations"] == 4 and results["batch_size"] == 8
    assert results["environment"]["backend"] == keras.backend.backend()
    for value in results["test"].values():
        assert math.isfinite(value)
    assert os.path.getsize(os.path.join(out, "learning_curve.png")) > 0
    assert os.path.exists(os.path.join(out, "best.keras"))
    rows = _history_rows(out)
    assert len(rows) == 2  # 4 iterations, 2 per epoch
    assert all(float(row["epoch_seconds"]) > 0 for row in rows)  # each epoch's wall time


# --- the registry -------------------------------------------------------------------------


def _formula_parameters(d_in, d_out, nq, d, r, learned_alphas=3, a=64, m=128):
    """Parameter count of the authors' STM (spec 3.2 formula), written out independently."""
    return (
        learned_alphas
        + 2
        + d * d
        + nq * d * d
        + (3 * nq * d + 3 * nq)
        + 6 * nq * d
        + 2 * (d * d_in + d)
        + (nq * d_in + nq)
        + 2 * (2 * d * d + 2 * d)
        + (r * d * d + r)
        + (nq * d * d + d)
        + (a * nq * r + a)
        + (m * a + m)
        + (m * m + m)
        + (d_out * m + d_out)
    )


def test_registry_values_follow_the_spec():
    expected = {  # task: (nq, d, r, gated, optimizer, iterations)
        "associative_retrieval": (2, 96, 96, True, "rmsprop", 100_000),
        "copy": (8, 96, 96, True, "rmsprop", 50_000),
        "priority_sort": (8, 96, 96, True, "rmsprop", 50_000),
        "rar": (16, 72, 72, True, "rmsprop", 50_000),
        "nth_farthest": (8, 128, 96, False, "adam", 1_000_000),
        "convex_hull": (8, 128, 96, True, "adam", 1_000_000),
        "tsp": (8, 128, 96, True, "adam", 1_000_000),
        "shortest_path": (8, 128, 96, True, "adam", 1_000_000),
        "minimum_spanning_tree": (8, 128, 96, True, "adam", 1_000_000),
    }
    assert set(task_configs.TASK_CONFIGS) == set(expected)
    for task, (nq, d, r, gated, optimizer, iterations) in expected.items():
        config = task_configs.get_task_config(task)
        stm = config["stm"]
        assert (stm["num_queries"], stm["memory_size"], stm["relation_size"]) == (nq, d, r)
        assert stm["gated_write"] is gated and stm["readout_size"] == 64
        assert stm["head_hidden_units"] == 128 and stm["sam_steps"] == 1
        assert config["optimizer"] == optimizer and config["iterations"] == iterations
        assert config["learning_rate"] == 1e-4 and config["clip_value"] == 10.0
        assert config["batch_size"] == 128
        # The defaults reach the shared parser unchanged.
        args = training.argument_parser("doc", **task_configs.training_defaults(task)).parse_args(
            []
        )
        assert (args.task, args.optimizer, args.iterations) == (task, optimizer, iterations)
        assert (args.learning_rate, args.clip_value, args.batch_size) == (1e-4, 10.0, 128)
    rar = task_configs.stm_config("rar")
    assert (rar["relational_carry"], rar["relational_read"], rar["relational_transfer"]) == (
        0.0,
        0.0,
        "learned",
    )
    assert task_configs.get_task_config("associative_retrieval")["rmsprop_rho"] == 0.99
    assert task_configs.get_task_config("associative_retrieval")["steps_per_epoch"] == 781
    assert task_configs.get_task_config("copy")["rmsprop_rho"] == 0.95
    # get_task_config returns copies: editing one does not change the registry.
    task_configs.get_task_config("copy")["stm"]["memory_size"] = 1
    assert task_configs.TASK_CONFIGS["copy"]["stm"]["memory_size"] == 96


def test_registry_rejects_bad_input():
    with pytest.raises(ValueError, match="task"):
        task_configs.get_task_config("nonsense")
    with pytest.raises(ValueError, match="Unknown STM arguments"):
        task_configs.stm_config("copy", memory_sizes=3)
    args = argparse.Namespace(
        num_queries=0, memory_size=8, relation_size=8, readout_size=8, head_hidden_units=8
    )
    with pytest.raises(ValueError, match="--num-queries"):
        task_configs.model_config_from_args(args, "copy")
    parser = task_configs.add_model_arguments(
        training.argument_parser("doc", **task_configs.training_defaults("rar")), "rar"
    )
    args = parser.parse_args(["--memory-size", "32", "--lstm-units", "16"])
    config = task_configs.model_config_from_args(args, "rar")
    assert config["memory_size"] == 32 and config["num_queries"] == 16 and args.lstm_units == 16
    # --stm-config (flag or --hparams key) replaces any STM argument, winning over the flags.
    args = parser.parse_args(
        ["--memory-size", "32", "--stm-config", '{"memory_size": 24, "sam_normalization": "row"}']
    )
    config = task_configs.model_config_from_args(args, "rar")
    assert (config["memory_size"], config["sam_normalization"]) == (24, "row")
    # It also takes the loop options of the STM layer (how the loop runs, not its numbers).
    args = parser.parse_args(["--stm-config", '{"unroll": true, "loop": "dense"}'])
    config = task_configs.model_config_from_args(args, "rar")
    assert config["unroll"] is True and config["loop"] == "dense"
    for bad, message in (('{"head_units": 3}', "head_units"), ('{"memory": 3}', "memory")):
        args = parser.parse_args(["--stm-config", bad])
        with pytest.raises(ValueError, match=message):
            task_configs.model_config_from_args(args, "rar")


@pytest.mark.parametrize(
    "task, d_in, d_out, kwargs, learned",
    [
        ("copy", 34, 32, {}, 3),
        ("rar", 34, 32, {}, 1),
        ("nth_farthest", 40, 8, {}, 3),
        ("convex_hull", 24, 22, {}, 3),
        ("associative_retrieval", 100, 10, {"vocabulary_size": 37, "embedding_size": 100}, 3),
    ],
)
def test_paper_models_have_the_authors_parameter_counts(task, d_in, d_out, kwargs, learned):
    stm = task_configs.stm_config(task)
    # Zero kernels and biases: the count does not depend on them, and they build fast.
    fast = {**stm, "kernel_initializer": "zeros", "bias_initializer": "zeros"}
    model = build_sequence_model(d_in, d_out, stm_config=fast, **kwargs)
    expected = _formula_parameters(
        d_in,
        d_out,
        stm["num_queries"],
        stm["memory_size"],
        stm["relation_size"],
        learned_alphas=learned,
    )
    expected += 37 * 100 if kwargs else 0
    # The spec's published totals (section 3.2) agree with the formula.
    published = {
        "copy": 1_170_965,
        "rar": 684_259,
        "nth_farthest": 2_012_813,
        "convex_hull": 2_010_395,
        "associative_retrieval": 1_028_063 + 3_700,
    }
    assert expected == published[task]
    # The authors' module creates every parameter; ours none for a path fixed off. RAR's
    # alphas (0, 0, learned) switch off the carried and read relational memory: its initial
    # value (nq d d), the read and slot input projectors (d d_in + d, nq d_in + nq) and the two
    # fixed alphas (already left out of the formula through `learned`). Nth-farthest's
    # `gated_write=False` switches off the two gate projectors (2 d x 2d + 2d) and the two gate
    # offsets.
    nq, d = stm["num_queries"], stm["memory_size"]
    unused = {
        "rar": nq * d * d + (d * d_in + d) + (nq * d_in + nq),
        "nth_farthest": 2 * (2 * d * d + 2 * d) + 2,
    }.get(task, 0)
    assert model.count_params() == expected - unused


# --- the scripts --------------------------------------------------------------------------


def test_copy_quick_tests_the_best_checkpoint(tmp_path):
    out = tmp_path / "copy"
    results = _run("copy_task", out)
    _check_common(results, out, "copy")
    assert results["paper_metric"] == "bit_error_per_sequence"
    assert results["stm_config"]["memory_size"] == 8
    error = results["test"]["bit_error_per_sequence"]
    # Independent recomputation: the saved best model on the fixed-seed test batches.
    best = keras.saving.load_model(os.path.join(out, "best.keras"))
    batches = copy_data.dataset(
        batch_size=8,
        num_batches=2,
        seed=task_configs.TEST_SEED,
        fixed=True,
        min_seq_len=2,
        max_seq_len=2,
    )
    errors = []
    for x, y, w in (batches[0], batches[1]):
        errors.append(bit_error_per_sequence(y, keras.ops.convert_to_numpy(best(x)), w))
    assert error == pytest.approx(np.mean(errors), rel=1e-5)
    assert 0.0 <= error <= 32 * 2


def test_priority_sort_quick(tmp_path):
    out = tmp_path / "ps"
    results = _run("priority_sort", out)
    _check_common(results, out, "priority_sort")
    assert results["data"] == {"input_seq_len": 5, "target_seq_len": 4}
    assert 0.0 <= results["test"]["bit_error_per_sequence"] <= 32 * 4


def test_rar_quick_both_readings(tmp_path):
    out = tmp_path / "rar"
    results = _run("rar", out, "--reading", "intended")
    _check_common(results, out, "rar")
    assert results["data"] == {"reading": "intended", "num_items": [3, 3], "item_length": [2, 3]}
    assert results["stm_config"]["relational_carry"] == 0.0
    assert 0.0 <= results["test"]["bit_error_per_sequence"] <= 32 * 3
    rar = _load("rar")
    assert rar.parse_size("2-5", "--x") == (2, 5) and rar.parse_size("4", "--x") == 4
    with pytest.raises(ValueError, match="--item-length"):
        rar.parse_size("two", "--item-length")
    with pytest.raises(ValueError, match="num_items"):
        rar.main(["--output-dir", str(tmp_path / "bad"), "--num-items", "1"])


def test_nth_farthest_quick_stm_lstm_and_second_call(tmp_path):
    for model in ("stm", "lstm"):
        out = tmp_path / model
        results = _run(
            "nth_farthest", out, "--model", model, "--stm-config", '{"relational_read": 0.0}'
        )
        _check_common(results, out, "nth_farthest", model)
        if model == "stm":
            assert results["stm_config"]["relational_read"] == 0.0
            assert results["stm_config"]["gated_write"] is False
        # No --dims-curriculum (the default): no record, no columns, no state saved.
        assert results["dims_curriculum"] is None
        assert "active_dims" not in _history_rows(out)[0]
        with open(out / "backup" / "training_metadata.json") as f:
            assert all("state" not in entry for entry in json.load(f)["checkpoints"])
        test = results["test"]
        assert 0.0 <= test["accuracy"] <= 1.0
        assert test["error"] == pytest.approx(1.0 - test["accuracy"])
        # 2 test batches of 8 examples: accuracy is a multiple of 1/16.
        assert test["accuracy"] * 16 == pytest.approx(round(test["accuracy"] * 16))
        # The accuracy for each n present in the test set, read back from its inputs.
        by_n = {k: v for k, v in test.items() if k.startswith("accuracy_n")}
        assert by_n and set(by_n) <= {f"accuracy_n{k}" for k in range(8)}
        assert all(0.0 <= v <= 1.0 for v in by_n.values())
    assert results["stm_config"] is None and results["parameters"] == (
        4 * 8 * (40 + 8 + 1) + 8 * 8 + 8
    )  # LSTM(8) + Dense(8)
    # Second call into the same folder resumes the finished run: nothing is trained again and
    # history.csv keeps the first call's rows.
    rows = _history_rows(tmp_path / "lstm")
    results = _run("nth_farthest", tmp_path / "lstm", "--model", "lstm")
    assert _history_rows(tmp_path / "lstm") == rows and len(rows) == 2
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
    for empty_test in (["--test-size", "0"], ["--test-batches", "0"]):  # the old spelling too
        with pytest.raises(SystemExit):
            _load("nth_farthest").main(["--output-dir", str(tmp_path / "bad"), *empty_test])
    for minutes in ("0", "-1"):
        with pytest.raises(SystemExit):
            _load("nth_farthest").main(
                ["--output-dir", str(tmp_path / "bad"), "--max-minutes", minutes]
            )


def _recording_make_batch(monkeypatch):
    """Wraps `nth_farthest.make_batch`: returns the list of `((seed, epoch, index), active_dims,
    x)` of the batches made (the key read from the generator's seed, as `TaskDataset` seeds
    it)."""
    made = []
    make_batch = nth_farthest.make_batch

    def recording(rng, batch_size, *args, **kwargs):
        x, y = make_batch(rng, batch_size, *args, **kwargs)
        key = tuple(int(v) for v in rng.bit_generator.seed_seq.entropy)
        made.append((key, kwargs.get("active_dims"), x))
        return x, y

    monkeypatch.setattr(nth_farthest, "make_batch", recording)
    return made


def _replayed_schedule(rows, curriculum, threshold, steps=2):
    """The active dims of each training iteration, replayed from history.csv's rows (each
    epoch's `accuracy_active` decides its advance), checking each row's `active_dims`; returns
    the list and the replayed schedule."""
    schedule = nth_farthest.DimsSchedule(curriculum, 16)
    actives = []
    for row in rows:
        last = (int(row["epoch"]) + 1) * steps
        actives += [schedule.active(i) for i in range(last - steps + 1, last + 1)]
        assert int(float(row["active_dims"])) == actives[-1], row
        accuracy = float(row["accuracy_active"])
        assert 0.0 <= accuracy <= 1.0
        if actives[-1] != 16 and accuracy >= threshold:
            schedule.advance(last)
    return actives, schedule


_CURRICULUM = ["--dims-curriculum", "1:4,2:8", "--advance-accuracy", "1e-9", "--test-size", "64"]


def test_nth_farthest_dims_curriculum_flags(tmp_path, capsys):
    """Malformed stages and an --advance-accuracy without a curriculum or outside (0, 1] are
    usage errors naming the flag, before anything is built; the default is the paper's run."""
    example = _load("nth_farthest")
    for bad, flag in (
        (["--dims-curriculum", "17:10"], "--dims-curriculum"),  # the vectors have 16 dims
        (["--dims-curriculum", "2:10,4:5"], "--dims-curriculum"),
        (["--dims-curriculum", "2-10"], "--dims-curriculum"),
        (["--advance-accuracy", "0.5"], "--advance-accuracy"),
        (["--dims-curriculum", "2:10", "--advance-accuracy", "0"], "--advance-accuracy"),
        (["--dims-curriculum", "2:10", "--advance-accuracy", "1.5"], "--advance-accuracy"),
    ):
        with pytest.raises(SystemExit):
            example.main(["--quick", "--output-dir", str(tmp_path / "bad"), *bad])
        assert flag in capsys.readouterr().err, bad
    assert not os.path.exists(tmp_path / "bad")
    args = example.build_parser().parse_args([])
    assert args.dims_curriculum is None and args.advance_accuracy is None


def test_nth_farthest_dims_curriculum_batches_and_advance(tmp_path, monkeypatch):
    """`--dims-curriculum 1:4,2:8 --advance-accuracy 1e-9`, 4 epochs of 2 iterations: every
    training batch has its tail zeroed as the schedule says, the schedule moving on at the
    epoch ends whose accuracy at the active dims reaches the threshold (replayed here from
    history.csv); results.json records the stages and where they ended."""
    made = _recording_make_batch(monkeypatch)
    out = tmp_path / "run"
    results = _run("nth_farthest", out, "--iterations", "8", *_CURRICULUM)
    rows = _history_rows(out)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]
    actives, schedule = _replayed_schedule(rows, [(1, 4), (2, 8)], 1e-9)
    assert actives[:2] == [1, 1]
    # Training batches (seed 0): one per iteration (tensorflow reads the first two once more,
    # for their shapes), zeroed from the scheduled dims on.
    train = {key: (active, x) for key, active, x in made if key[0] == 0}
    assert sorted(train) == [(0, e, i) for e in range(4) for i in range(2)]
    for (_, epoch, index), (active, x) in train.items():
        assert active == actives[2 * epoch + index]
        assert np.all(x[:, :, active:16] == 0) and np.all(x[:, :, :active] != 0)
    # The scoring sets: examples of the curriculum's own seed (not the test set's 1111), the
    # tail zeroed; the same examples at every dimension.
    seed = nth_farthest.CURRICULUM_SEED
    assert seed != task_configs.TEST_SEED
    scored = [(key, active, x) for key, active, x in made if key[0] == seed and active]
    assert {active for _, active, _ in scored} == set(actives[1::2])
    for key, active, x in scored:
        full, _ = nth_farthest.make_batch(np.random.default_rng(list(key)), x.shape[0])
        assert np.all(x[:, :, active:16] == 0)
        assert np.array_equal(x[:, :, :active], full[:, :, :active])
    assert not [key for key, active, _ in made if key[0] == 1111 and active]
    # The threshold is reached (one right answer of 64): the stages end early.
    record = results["dims_curriculum"]
    assert record["stages"] == schedule.stage_ends(8)
    assert any(stage["advanced"] for stage in record["stages"])
    assert record["advance_accuracy"] == 1e-9 and record["num_dims"] == 16
    assert record["accuracy_active_set"] == {"examples": 64, "seed": seed}
    assert results["flags"]["dims_curriculum"] == "1:4,2:8"


def test_nth_farthest_dims_curriculum_resumes_in_its_stage(tmp_path, monkeypatch):
    """A curriculum run stopped after each epoch (--max-minutes) and resumed: the schedule's
    state saved with each checkpoint is restored, so the stage goes on (an early end made in
    the first session holds in the next) and the iterations continue; resuming with another
    curriculum, or without one, is refused (a curriculum added to a run started without one:
    tests/test_run_folder.py)."""
    made = _recording_make_batch(monkeypatch)
    out = tmp_path / "run"
    argv = ["--iterations", "8", *_CURRICULUM]
    states = []
    for session in range(3):
        results = _run("nth_farthest", out, *argv, "--max-minutes", "1e-9")
        assert results["stopped_by_time_budget"] and results["iterations"] == 2 * (session + 1)
        with open(out / "backup" / "training_metadata.json") as f:
            [newest, *_] = json.load(f)["checkpoints"]
        assert newest["epoch"] == session + 1
        states.append(newest["state"]["dims_schedule"])
        assert states[-1]["iteration"] == 2 * (session + 1)
        assert results["dims_curriculum"]["last_iteration"] == 2 * (session + 1)
    results = _run("nth_farthest", out, *argv)  # the last epoch
    assert results["iterations"] == 8 and not results["stopped_by_time_budget"]
    rows = _history_rows(out)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]  # continued, none again
    actives, schedule = _replayed_schedule(rows, [(1, 4), (2, 8)], 1e-9)
    train = {key: active for key, active, _ in made if key[0] == 0}
    assert [train[(0, e, i)] for e in range(4) for i in range(2)] == actives
    assert results["dims_curriculum"]["stages"] == schedule.stage_ends(8)
    # The first session's early end of stage 1 (at iteration 2) held after the resume: a
    # schedule started over would have trained iterations 3-4 at 1 dimension again.
    assert states[0]["ended"] == [{"ended_at_iteration": 2, "advanced": True}]
    assert actives[2:4] == [2, 2]
    # Another curriculum, or none, cannot resume this run; nothing is trained.
    for other in (["--dims-curriculum", "1:4,2:10"], []):
        with pytest.raises(training.RunFolderError, match="--dims-curriculum"):
            _load("nth_farthest").main(
                ["--quick", "--verbose", "0", "--output-dir", str(out), "--iterations", "10"]
                + other
            )
    assert len(_history_rows(out)) == 4


def test_associative_retrieval_quick(tmp_path):
    out = tmp_path / "ar"
    results = _run("associative_retrieval", out)
    _check_common(results, out, "associative_retrieval")
    data = results["data"]
    assert data["num_pairs"] == 4 and data["sequence_length"] == 11
    assert data["sizes"] == {"train": 16, "validation": 16, "test": 16}
    assert os.path.exists(data["file"]) and data["file"].startswith(str(out))
    # The fixed data set on disk is the one trained on: 11 tokens, a '?' pair before the query.
    with np.load(data["file"]) as archive:
        x = archive["x_test"]
        assert x.shape == (16, 11) and (x[:, 8:10] == 36).all()
    # Validation every epoch, and the convergence summary read from it.
    rows = _history_rows(out)
    accuracies = [float(r["val_accuracy"]) for r in rows]
    convergence = results["convergence"]
    assert convergence["threshold"] == 0.99
    assert convergence["best_validation_accuracy"] == pytest.approx(max(accuracies))
    first = next((i + 1 for i, a in enumerate(accuracies) if a >= 0.99), None)
    assert convergence["epoch"] == first
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
    # A data file holding another data set is refused, naming the file.
    with pytest.raises(ValueError, match="seed"):
        _load("associative_retrieval").main(
            ["--quick", "--output-dir", str(out), "--data-file", data["file"], "--data-seed", "3"]
        )


def test_convergence_epoch_reads_the_latest_run(tmp_path):
    module = _load("associative_retrieval")
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_accuracy\n0,0.5\n1,0.995\n2,1.0\n0,0.2\n1,0.9\n2,0.991\n3,0.3\n")
    assert module.convergence_epoch(str(path)) == (3, pytest.approx(0.991))
    path.write_text("epoch,val_accuracy\n0,0.5\n1,0.6\n")
    assert module.convergence_epoch(str(path)) == (None, pytest.approx(0.6))


_PROBE_STM = (
    '{"num_queries": 2, "memory_size": 4, "relation_size": 4, "readout_size": 4, '
    '"head_hidden_units": 4}'
)


def _load_probe():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return load_script(os.path.join(root, "scripts", "nth_farthest_probe.py"))


def test_nth_farthest_probe_reports_the_plateau_split(tmp_path):
    """`scripts/nth_farthest_probe.py`: a tiny run reports after every `--every` iterations;
    the accuracy is the n = V - 1 part and the other-n part weighted by their test shares."""
    probe = _load_probe()
    output = tmp_path / "curve.json"
    small = _PROBE_STM
    argv = ["--num-vectors", "3", "--num-dims", "2", "--stm-config", small, "--batch-size", "4"]
    argv += ["--every", "2", "--max-iterations", "4", "--test-size", "64"]
    record = probe.main(argv + ["--output", str(output)])
    with open(output) as f:
        assert json.load(f) == json.loads(json.dumps(record))
    assert [row["iteration"] for row in record["curve"]] == [2, 4]
    assert record["ignore_distances_accuracy"] == pytest.approx(2.0 / 3.0)
    assert record["stm_config"]["memory_size"] == 4 and record["stm_config"]["gated_write"] is False
    share = record["test_reference_fraction"]
    assert 0.0 < share < 1.0
    for row in record["curve"]:
        assert math.isfinite(row["loss"])
        parts = share * row["accuracy_reference"] + (1 - share) * row["accuracy_other_n"]
        assert row["test_accuracy"] == pytest.approx(parts)
    # Without a curriculum: no active_dims columns, none recorded.
    assert record["dims_curriculum"] is None
    assert all("active_dims" not in row for row in record["curve"])


def test_nth_farthest_probe_dims_curriculum(tmp_path, monkeypatch):
    """`--dims-curriculum 1:2,2:4` at 3 dimensions: iterations 1-2 train on 1 non-zero
    coordinate, 3-4 on 2, then all 3; each report gives the last batch's active_dims and the
    accuracy on the seed-1111 test set at it; the full-dimension test set stays the task's."""
    probe = _load_probe()
    calls = []
    make_batch = nth_farthest.make_batch

    def recording_make_batch(rng, batch_size, *args, **kwargs):
        x, y = make_batch(rng, batch_size, *args, **kwargs)
        calls.append((batch_size, kwargs.get("active_dims"), x))
        return x, y

    monkeypatch.setattr(nth_farthest, "make_batch", recording_make_batch)
    output = tmp_path / "curve.json"
    argv = ["--num-vectors", "3", "--num-dims", "3", "--stm-config", _PROBE_STM]
    argv += ["--batch-size", "4", "--every", "2", "--max-iterations", "6", "--test-size", "64"]
    argv += ["--dims-curriculum", "1:2,2:4", "--output", str(output)]
    record = probe.main(argv)
    with open(output) as f:
        assert json.load(f) == json.loads(json.dumps(record))
    assert record["flags"]["dims_curriculum"] == "1:2,2:4"
    assert record["dims_curriculum"] == [
        {"active_dims": 1, "until_iteration": 2},
        {"active_dims": 2, "until_iteration": 4},
    ]
    curve = record["curve"]
    assert [(row["iteration"], row["active_dims"]) for row in curve] == [(2, 1), (4, 2), (6, 3)]
    for row in curve:
        assert 0.0 <= row["test_accuracy_active"] <= 1.0
    assert curve[-1]["test_accuracy_active"] == curve[-1]["test_accuracy"]
    # Training batches: one per iteration, the tail coordinates zeroed as scheduled.
    train = [(active, x) for size, active, x in calls if size == 4]
    assert [active for active, _ in train] == [1, 1, 2, 2, 3, 3]
    for active, x in train:
        assert np.all(x[:, :, active:3] == 0) and np.all(x[:, :, :active] != 0)
    # Test sets: the full-dimension one (the task), then one per lower active_dims.
    tests = [(active, x) for size, active, x in calls if size == 64]
    assert [active for active, _ in tests] == [None, 1, 2]
    assert np.any(tests[0][1][:, :, 1:3] != 0)
    for active, x in tests[1:]:
        assert np.all(x[:, :, active:3] == 0)
        assert np.array_equal(x[:, :, :active], tests[0][1][:, :, :active])


def test_nth_farthest_probe_advance_accuracy(tmp_path, monkeypatch):
    """`--advance-accuracy`: a stage ends at the first report whose accuracy at its dimension
    reaches the threshold; the next stage keeps its length (here: 1:4,2:8 at threshold 0 ends
    stage 1 at the report of iteration 2, so stage 2 covers iterations 3-6, then all 3)."""
    probe = _load_probe()
    actives = []
    make_batch = nth_farthest.make_batch

    def recording_make_batch(rng, batch_size, *args, **kwargs):
        if batch_size == 4:
            actives.append(kwargs.get("active_dims"))
        return make_batch(rng, batch_size, *args, **kwargs)

    monkeypatch.setattr(nth_farthest, "make_batch", recording_make_batch)
    argv = ["--num-vectors", "3", "--num-dims", "3", "--stm-config", _PROBE_STM]
    argv += ["--batch-size", "4", "--every", "2", "--max-iterations", "8", "--test-size", "16"]
    argv += ["--dims-curriculum", "1:4,2:8", "--advance-accuracy", "1e-9"]
    record = probe.main(argv + ["--output", str(tmp_path / "curve.json")])
    # accuracy >= 1e-9 is not certain at every report: recompute the expected schedule from them
    schedule = nth_farthest.DimsSchedule([(1, 4), (2, 8)], 3)
    expected = []
    for row in record["curve"]:
        expected += [schedule.active(i) for i in range(row["iteration"] - 1, row["iteration"] + 1)]
        assert row["active_dims"] == expected[-1]
        if row["active_dims"] != 3 and row["test_accuracy_active"] >= 1e-9:
            assert row.get("advanced") is True
            schedule.advance(row["iteration"])
        else:
            assert "advanced" not in row
    assert actives == expected
    assert any(row.get("advanced") for row in record["curve"])  # the early ends were met
    with pytest.raises(SystemExit):
        probe.main(argv[:-4] + ["--advance-accuracy", "0.5", "--output", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        probe.main(argv[:-1] + ["1.5", "--output", str(tmp_path / "y")])


def test_nth_farthest_probe_uses_the_task_modules_curriculum(tmp_path, capsys):
    """The curriculum's parser and schedule are the task module's (tested in
    tests/test_tasks_synthetic.py); on the command line a bad curriculum is a usage error
    naming the flag."""
    probe = _load_probe()
    assert probe.DimsSchedule is nth_farthest.DimsSchedule
    with pytest.raises(SystemExit):
        probe.main(["--num-dims", "4", "--dims-curriculum", "8:10", "--output", str(tmp_path)])
    assert "--dims-curriculum" in capsys.readouterr().err


def _nth_farthest_reference(rng, batch_size, num_vectors, num_dims):
    """The generator as it was before `active_dims` (the draws and layout of the module
    docstring), written out again: `make_batch` without `active_dims` must match it bit for bit."""
    rows = np.arange(batch_size)
    labels = rng.permuted(np.tile(np.arange(num_vectors), (batch_size, 1)), axis=1)
    n = rng.integers(0, num_vectors, size=batch_size)
    m_index = rng.integers(0, num_vectors, size=batch_size)
    vectors = (2.0 * rng.random((batch_size, num_vectors, num_dims)) - 1.0).astype(np.float32)
    v64 = vectors.astype(np.float64)
    dist = np.linalg.norm(v64 - v64[rows, m_index][:, None], axis=-1)
    target_index = np.argsort(dist, axis=1, kind="stable")[rows, num_vectors - 1 - n]
    x = np.zeros((batch_size, num_vectors, num_dims + 3 * num_vectors), dtype=np.float32)
    x[:, :, :num_dims] = vectors
    x[rows[:, None], np.arange(num_vectors)[None, :], num_dims + labels] = 1.0
    x[rows, :, num_dims + num_vectors + n] = 1.0
    x[rows, :, num_dims + 2 * num_vectors + labels[rows, m_index]] = 1.0
    return x, labels[rows, target_index].astype(np.int32)


@pytest.mark.parametrize("num_vectors, num_dims", [(8, 16), (3, 2), (4, 5)])
def test_nth_farthest_make_batch_active_dims(num_vectors, num_dims):
    """`active_dims=None` (or all dims) is the old output bit for bit; `active_dims=k` is the
    same draws with coordinates k.. zeroed and the targets of the zeroed vectors."""
    v, d = num_vectors, num_dims
    old_x, old_y = _nth_farthest_reference(np.random.default_rng(5), 256, v, d)
    for kwargs in ({}, {"active_dims": None}, {"active_dims": d}):
        x, y = nth_farthest.make_batch(np.random.default_rng(5), 256, v, d, **kwargs)
        assert x.tobytes() == old_x.tobytes() and y.tobytes() == old_y.tobytes(), kwargs
    changed = 0
    for active in range(1, d):
        x, y = nth_farthest.make_batch(np.random.default_rng(5), 256, v, d, active_dims=active)
        assert x.shape == old_x.shape and x.dtype == np.float32 and y.dtype == np.int32
        assert np.all(x[:, :, active:d] == 0)
        assert np.array_equal(x[:, :, :active], old_x[:, :, :active])
        assert np.array_equal(x[:, :, d:], old_x[:, :, d:])  # labels, n, m unchanged
        # Targets from the zeroed vectors, by brute force (a stable sort: ties by index).
        for b in range(256):
            labels = list(x[b, :, d : d + v].argmax(-1))
            n, m = int(x[b, 0, d + v :].argmax()), int(x[b, 0, d + 2 * v :].argmax())
            ref = x[b, labels.index(m), :d].astype(np.float64)
            dist = [float(np.sqrt(np.sum((x[b, k, :d] - ref) ** 2))) for k in range(v)]
            nearest_first = sorted(range(v), key=lambda k: dist[k])
            assert int(y[b]) == labels[nearest_first[v - 1 - n]]
        changed += int(np.sum(y != old_y))
    if d > 1:
        assert changed > 0  # dropping coordinates does change some targets


@pytest.mark.parametrize(
    "active_dims, match",
    [(0, "active_dims` must be >= 1"), (17, r"active_dims` must be <= num_dims \(16\)")]
    + [(2.0, "active_dims` must be an integer"), (True, "active_dims` must be an integer")],
)
def test_nth_farthest_make_batch_active_dims_errors(active_dims, match):
    with pytest.raises(ValueError, match=match):
        nth_farthest.make_batch(np.random.default_rng(0), 4, active_dims=active_dims)
