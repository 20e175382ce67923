"""Tests of the convex hull, TSP, shortest path and minimum spanning tree example scripts.

The `--quick` runs check the wiring end to end (results, plot, resume, LSTM, files); the scoring
tests feed hand-made predictions through each script's decoding and check the metrics against
values computed here independently (brute-force optimal tours, hand-computed tour lengths).
"""

import csv
import itertools
import json
import math
import re

import numpy as np
import pytest

from examples import convex_hull
from examples import minimum_spanning_tree
from examples import shortest_path
from examples import tsp
from keras_stm.experiments.tasks import geometry
from keras_stm.experiments.tasks import graphs

QUICK = ["--quick", "--verbose", "0"]


def _load(out):
    with open(out / "results.json") as f:
        return json.load(f)


def _history_rows(out):
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def _check_results(out, keys, model="stm"):
    """results.json has the keys, finite values (NaN only for a mean over no valid answer)."""
    results = _load(out)
    assert results["model"] == model
    assert (out / "learning_curve.png").stat().st_size > 0
    assert (out / "best.keras").exists()
    test = results["test"]
    assert set(keys) <= set(test), sorted(set(keys) - set(test))
    for key, value in test.items():
        if math.isnan(value):  # allowed only for a mean over the valid answers, when none is
            suffix = re.search(r"(_n\d+)?$", key).group()
            prefix = re.match(r"(masked_|beam_)?", key).group()
            assert key[len(prefix) :].startswith(("mean_", "optimality_gap")), key
            if "mean_invalid" not in key:  # that one: over invalid answers with indices in range
                assert test[f"{prefix}num_valid{suffix}"] == 0, key
        else:
            assert math.isfinite(value), key
    for key, value in test.items():
        if "fraction" in key or "accuracy" in key or "exact" in key:
            assert 0.0 <= value <= 1.0, key
    return results


# ------------------------------------------------------------------------------------------
# --quick runs


def test_convex_hull_quick_run(tmp_path):
    out = tmp_path / "hull"
    first = convex_hull.main(QUICK + ["--output-dir", str(out)])
    keys = [
        f"{m}_n5"
        for m in (
            "sequence_accuracy",
            "cyclic_accuracy",
            "point_accuracy",
            "loss",
            "sparse_categorical_accuracy",
            "examples",
        )
    ]
    results = _check_results(out, keys)
    np.testing.assert_equal(results["test"], first["test"])
    assert results["test"]["examples_n5"] == 8
    assert results["stm_config"]["memory_size"] == 8  # --quick's tiny model
    assert results["train_points"] == [5] and results["test_points"] == [5]
    assert len(geometry.read_file(out / "test_n5.txt")) == 8
    assert len(_history_rows(out)) == 2


def test_tsp_quick_run_from_files_lstm(tmp_path):
    train, test = tmp_path / "tsp_train.txt", tmp_path / "tsp_test.txt"
    geometry.generate(train, "tsp", 20, (5, 6), seed=3)
    geometry.generate(test, "tsp", 12, 5, seed=4)
    out = tmp_path / "tsp"
    results = tsp.main(
        QUICK
        + [
            "--model",
            "lstm",
            "--output-dir",
            str(out),
            "--train-file",
            str(train),
            "--test-file",
            str(test),
        ]
    )
    keys = [
        "mean_length",
        "optimality_gap",
        "valid_fraction",
        "num_valid",
        "num_invalid",
        "mean_target_length_all",
        "loss",
        "examples",
    ]
    _check_results(out, keys, model="lstm")
    assert results["test"]["examples"] == 12
    assert results["stm_config"] is None
    reference = np.mean(
        [geometry.tour_length(e.points, e.output) for e in geometry.read_file(test)]
    )
    assert results["test"]["mean_target_length_all"] == pytest.approx(reference)


def test_shortest_path_quick_run_lstm_and_resume(tmp_path):
    out = tmp_path / "sp"
    argv = QUICK + ["--model", "lstm", "--output-dir", str(out)]
    results = shortest_path.main(argv)
    keys = [
        "exact_match",
        "optimal_fraction",
        "valid_fraction",
        "mean_cost_ratio",
        "loss",
        "sparse_categorical_accuracy",
        "examples",
    ]
    _check_results(out, keys, model="lstm")
    assert results["n_nodes"] == [5, 5] and results["n_edges"] == [6, 6]
    examples = graphs.read_file(out / "test.txt")
    assert len(examples) == 8 and all(e.query is not None and len(e.edges) == 6 for e in examples)
    rows, test_set = _history_rows(out), (out / "test.txt").read_text()
    assert len(rows) == 2
    # a second call in the same folder resumes the finished run: no epoch is trained again and
    # the records are kept
    again = shortest_path.main(argv)
    assert _history_rows(out) == rows
    np.testing.assert_equal(_load(out)["test"], again["test"])  # NaN == NaN here
    assert (out / "test.txt").read_text() == test_set  # the fixed-seed test set is the same
    _check_results(out, keys, model="lstm")


def test_minimum_spanning_tree_quick_run_from_files(tmp_path):
    train, test = tmp_path / "mst_train.txt", tmp_path / "mst_test.txt"
    graphs.generate(train, "mst", 20, n_nodes=5, n_edges=6, seed=3)
    graphs.generate(test, "mst", 10, n_nodes=5, n_edges=6, seed=4)
    out = tmp_path / "mst"
    results = minimum_spanning_tree.main(
        QUICK + ["--output-dir", str(out), "--train-file", str(train), "--test-file", str(test)]
    )
    keys = [
        "exact_match",
        "sequence_accuracy",
        "optimal_fraction",
        "valid_fraction",
        "mean_cost_ratio",
        "loss",
        "examples",
    ]
    _check_results(out, keys)
    assert results["test"]["examples"] == 10
    assert results["stm_config"]["num_queries"] == 2


def test_bad_flags_are_reported(tmp_path):
    with pytest.raises(SystemExit):
        convex_hull.main(QUICK + ["--train-points", "2-30", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        shortest_path.main(QUICK + ["--n-nodes", "12", "--output-dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        tsp.main(
            QUICK + ["--test-file", str(tmp_path / "missing.txt"), "--output-dir", str(tmp_path)]
        )
    assert convex_hull.point_counts("5,8-10") == (5, 8, 9, 10)
    assert shortest_path.size_range("8-10") == (8, 10)


# ------------------------------------------------------------------------------------------
# scoring: the scripts' decoding against independent expectations


def _one_hot_logits(labels_per_step, total_steps, skip):
    """Logits (B, T, 22) putting 5.0 on the given label of every output step."""
    labels = np.asarray(labels_per_step)
    logits = np.zeros((labels.shape[0], total_steps, geometry.NUM_CLASSES), np.float32)
    rows = np.arange(labels.shape[0])[:, None]
    steps = skip + np.arange(labels.shape[1])[None]
    logits[rows, steps, labels] = 5.0
    return logits


def _oracle(data):
    """A predictor returning the targets of each batch of `data` as logits (a batch given more
    all-zero decoding steps gets zero logits there)."""
    batches = [data[i][:2] for i in range(len(data))]

    def predict(x):
        x = np.asarray(x)
        for known, y in batches:
            steps = known.shape[1]
            if known.shape[0] == x.shape[0] and np.array_equal(x[:, :steps], known):
                y = np.pad(y, ((0, 0), (0, x.shape[1] - steps)))
                return _one_hot_logits(y, y.shape[1], 0)
        raise KeyError("not a batch of the data set")

    return predict


def _brute_tsp_length(points):
    n = len(points)
    return min(
        sum(math.dist(points[t[k]], points[t[(k + 1) % n]]) for k in range(n))
        for t in ((0,) + p for p in itertools.permutations(range(1, n)))
    )


def test_hull_scores(tmp_path):
    path = tmp_path / "hull.txt"
    geometry.generate(path, "convex_hull", 12, (5, 6), seed=5)
    data = geometry.file_dataset(path, 5, shuffle=False)
    perfect = convex_hull.hull_scores(_oracle(data), data)
    expected = {
        "sequence_accuracy": 1.0,
        "cyclic_accuracy": 1.0,
        "point_accuracy": 1.0,
        "valid_fraction": 1.0,
        "area_coverage": 1.0,
        "num_invalid": 0,
    }
    assert {k: perfect[k] for k in expected} == pytest.approx(expected)
    assert perfect["mean_answer_length"] == perfect["mean_target_length"]

    def rotated(x):  # the right hull from its second vertex: a rotation, not the sequence
        y = _oracle(data)(x).argmax(-1)
        skip = int((geometry.point_labels(x) > 0).sum(1)[0]) + 1
        out = y.copy()
        for b in range(len(y)):
            hull = y[b, skip:][y[b, skip:] != 0][:-1]
            out[b, skip : skip + len(hull)] = np.roll(hull, -1)
        return _one_hot_logits(out, out.shape[1], 0)

    scores = convex_hull.hull_scores(rotated, data)
    assert scores["sequence_accuracy"] == 0.0 and scores["cyclic_accuracy"] == 1.0


def test_tsp_scores(tmp_path):
    path = tmp_path / "tsp.txt"
    geometry.generate(path, "tsp", 10, 5, seed=6)
    data = geometry.file_dataset(path, 4, shuffle=False)
    points = [e.points for e in data.examples]
    optimal = np.mean([_brute_tsp_length(p) for p in points])

    perfect = tsp.tsp_scores(_oracle(data), data)
    assert perfect["valid_fraction"] == 1.0 and perfect["num_invalid"] == 0
    assert perfect["mean_length"] == pytest.approx(optimal)
    assert perfect["optimality_gap"] == pytest.approx(0.0, abs=1e-12)

    def in_order(x):  # cities in input order 0, 1, ..., N-1, then the end token
        n = int((geometry.point_labels(x) > 0).sum(1)[0])
        labels = np.tile(np.append(np.arange(1, n + 1), geometry.END), (x.shape[0], 1))
        return _one_hot_logits(labels, x.shape[1], n + 1)

    identity = [sum(math.dist(p[k], p[(k + 1) % 5]) for k in range(5)) for p in points]
    scores = tsp.tsp_scores(in_order, data)
    assert scores["valid_fraction"] == 1.0
    assert scores["mean_length"] == pytest.approx(np.mean(identity))
    gaps = [a / _brute_tsp_length(p) - 1 for a, p in zip(identity, points)]
    assert scores["optimality_gap"] == pytest.approx(np.mean(gaps))
    assert scores["optimality_gap"] > 0

    def first_city_only(x):  # city 1 five times: invalid, must not count as a short tour
        labels = np.tile([1, 1, 1, 1, 1, geometry.END], (x.shape[0], 1))
        return _one_hot_logits(labels, x.shape[1], 6)

    scores = tsp.tsp_scores(first_city_only, data)
    assert scores["valid_fraction"] == 0.0 and scores["num_invalid"] == 10
    assert math.isnan(scores["mean_length"]) and math.isnan(scores["optimality_gap"])
    assert scores["mean_invalid_length"] == 0.0


@pytest.mark.parametrize(
    "script,task", [(shortest_path, "shortest_path"), (minimum_spanning_tree, "mst")]
)
def test_graph_scores(tmp_path, script, task):
    path = tmp_path / f"{task}.txt"
    graphs.generate(path, task, 12, n_nodes=(6, 7), n_edges=(8, 10), seed=7)
    data = graphs.file_dataset(path, 5, shuffle=False)
    scores_fn = (
        shortest_path.path_scores
        if task == "shortest_path"
        else (minimum_spanning_tree.tree_scores)
    )
    perfect = scores_fn(_oracle(data), data)
    assert perfect["exact_match"] == perfect["optimal_fraction"] == 1.0
    assert perfect["valid_fraction"] == 1.0 and perfect["mean_cost_ratio"] == pytest.approx(1.0)

    def stop_at_once(x):  # the end token on the first output step: an empty answer
        skip = int((graphs.edge_labels(x) > 0).sum(1)[0]) + 1
        skip += int(x[0, :, graphs.COL_QUERY].max() > 0)
        labels = np.full((x.shape[0], 1), graphs.END)
        return _one_hot_logits(labels, x.shape[1], skip)

    scores = scores_fn(stop_at_once, data)
    assert scores["valid_fraction"] == scores["exact_match"] == scores["optimal_fraction"] == 0.0
    assert scores["num_invalid"] == 12 and math.isnan(scores["mean_cost_ratio"])

    if task == "mst":  # Kruskal's order reversed: the same tree, another sequence

        def reversed_tree(x):
            y = _oracle(data)(x).argmax(-1)
            skip = int((graphs.edge_labels(x) > 0).sum(1)[0]) + 1
            out = y.copy()
            for b in range(len(y)):
                tree = y[b, skip:][y[b, skip:] != 0][:-1]
                out[b, skip : skip + len(tree)] = tree[::-1]
            return _one_hot_logits(out, out.shape[1], 0)

        scores = scores_fn(reversed_tree, data)
        assert scores["exact_match"] == 1.0 and scores["sequence_accuracy"] == 0.0


def test_padded_steps_change_no_output_or_loss(tmp_path):
    """The tensorflow-only padding adds zero-weight steps after the answer: same logits, loss."""
    path = tmp_path / "hull.txt"
    geometry.generate(path, "convex_hull", 4, 6, seed=8)
    data = geometry.file_dataset(path, 4, shuffle=False)
    args = convex_hull.geometry_parser("convex_hull", "doc", "5").parse_args(
        ["--model", "lstm", "--lstm-units", "8"]
    )
    model = convex_hull.build_model(args, "convex_hull")
    length = convex_hull.max_steps(examples=data.examples)
    assert length == max(len(e.points) + len(e.output) + 2 for e in data.examples)
    padded = convex_hull.PaddedSteps(data, length + 3)
    for i in range(len(data)):
        x, y, w = data[i]
        px, py, pw = padded[i]
        assert px.shape[1] == py.shape[1] == pw.shape[1] == length + 3
        np.testing.assert_array_equal(px[:, x.shape[1] :], 0)
        assert pw[:, x.shape[1] :].sum() == 0 and np.array_equal(py[:, : x.shape[1]], y)
        np.testing.assert_allclose(
            model.predict_on_batch(px)[:, : x.shape[1]],
            model.predict_on_batch(x),
            rtol=1e-5,
            atol=1e-5,
        )
        assert float(model.test_on_batch(px, py, pw)[0]) == pytest.approx(
            float(model.test_on_batch(x, y, w)[0]), rel=1e-5
        )


# ------------------------------------------------------------------------------------------
# decoding that respects the task, and padding to fixed shapes


def _flat_logits(x, favourite, skip):
    """Logits putting 5.0 on label `favourite` on every step after `skip` (and 1.0 on END)."""
    logits = np.zeros((x.shape[0], x.shape[1], geometry.NUM_CLASSES), np.float32)
    logits[:, skip:, favourite] = 5.0
    logits[:, skip:, geometry.END] = 1.0
    return logits


def test_masked_and_beam_decoding_give_valid_tours_and_hulls(tmp_path):
    """A model stuck on one label: greedy is invalid, the rule-respecting decodings are valid."""
    path = tmp_path / "tsp.txt"
    geometry.generate(path, "tsp", 6, 5, seed=1)
    data = geometry.file_dataset(path, 4, shuffle=False)

    def stuck(x):
        return _flat_logits(x, 1, 6)

    for decoding in ("masked", "beam"):
        options = {"decoding": decoding, "beam_width": 3, "lengths": (14,), "batch_size": 4}
        scores = tsp.tsp_scores(stuck, data, options)
        assert scores["valid_fraction"] == 0.0
        assert scores[f"{decoding}_valid_fraction"] == 1.0
        assert scores[f"{decoding}_num_valid"] == 6
    greedy_only = tsp.tsp_scores(stuck, data, {"decoding": "greedy"})
    assert not any(k.startswith(("masked_", "beam_")) for k in greedy_only)

    path = tmp_path / "hull.txt"
    geometry.generate(path, "convex_hull", 6, 6, seed=2)
    data = geometry.file_dataset(path, 6, shuffle=False)
    scores = convex_hull.hull_scores(lambda x: _flat_logits(x, 1, 7), data, {"decoding": "masked"})
    assert scores["valid_fraction"] == 0.0
    assert scores["masked_num_invalid"] + scores["masked_num_valid"] == 6
    assert scores["masked_mean_answer_length"] >= 3


def test_rules_of_every_task():
    hull = geometry.hull_rule(5)
    assert hull(())[0].tolist() == [True, True, True, False, False]  # 2 points must follow
    assert hull((1, 3))[0].tolist() == [False, False, True, False, True] and not hull((1, 3))[1]
    assert hull((1, 3, 2))[1]
    tour = geometry.tour_rule(3)
    assert tour(())[0].tolist() == [True, False, False] and tour((0, 2, 1))[1]
    edges = np.array([[0, 1], [1, 2], [0, 2], [2, 3]])
    path = graphs.path_rule(edges, 0, 3)
    assert path(())[0].tolist() == [True, False, True, False]
    assert path((0,))[0].tolist() == [False, True, False, False]
    assert path((2, 3))[1] and not path((2, 3))[0].any()
    tree = graphs.tree_rule(4, edges)
    assert tree((0, 1))[0].tolist() == [False, False, False, True]
    assert tree((0, 1, 3))[1]


@pytest.mark.parametrize("decoding", ["masked", "beam"])
def test_graph_rule_decoding_is_valid(tmp_path, decoding):
    for task, script in (("shortest_path", shortest_path), ("mst", minimum_spanning_tree)):
        path = tmp_path / f"{task}.txt"
        graphs.generate(path, task, 8, n_nodes=6, n_edges=9, seed=3)
        data = graphs.file_dataset(path, 8, shuffle=False)
        scores_fn = script.path_scores if task == "shortest_path" else script.tree_scores
        scores = scores_fn(
            lambda x: _flat_logits(x, 1, 0), data, {"decoding": decoding, "beam_width": 4}
        )
        if task == "mst":
            assert scores[f"{decoding}_valid_fraction"] == 1.0
        else:  # a path can dead-end (all neighbours visited) under masked greedy decoding
            assert scores[f"{decoding}_valid_fraction"] > scores["valid_fraction"]


def test_bucket_padding_bounds_the_shapes(tmp_path):
    """Batches of any N in 5-20 and any answer length take at most --step-buckets shapes."""
    lengths = geometry.bucket_lengths(geometry.sequence_lengths("convex_hull", range(5, 21)), 4)
    assert len(lengths) == 4 and lengths[-1] == 42
    assert geometry.bucket_lengths(geometry.sequence_lengths("tsp", (5, 10)), 4) == (12, 22)
    data = convex_hull.random_batches("convex_hull", range(5, 21), 4, 12, seed=0)
    padded = convex_hull.for_fit(data, lengths, 6)
    shapes = {padded[i][0].shape for i in range(len(padded))}
    assert shapes <= {(6, length, geometry.INPUT_WIDTH) for length in lengths}
    _, y, w = data[0]
    _, py, pw = padded[0]
    assert pw[4:].sum() == 0 and pw.sum() == w.sum()
    np.testing.assert_array_equal(py[:4, : y.shape[1]], y)
