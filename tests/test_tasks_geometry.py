"""Tests of keras_stm.experiments.tasks.geometry: solvers against brute force, files, encoding,
metrics."""

import itertools
import math

import numpy as np
import pytest

from keras_stm.experiments.tasks import geometry as geo

# ------------------------------------------------------------------------------------------
# independent brute-force references


def _orient(o, a, b):
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _brute_hull(points):
    """Hull vertices of points in general position: points inside no triangle of three others,
    ordered counter-clockwise by angle around their centroid, starting at the lowest index."""
    n = len(points)
    extreme = []
    for i in range(n):
        inside = False
        for a, b, c in itertools.combinations([k for k in range(n) if k != i], 3):
            s = [
                _orient(points[a], points[b], points[i]),
                _orient(points[b], points[c], points[i]),
                _orient(points[c], points[a], points[i]),
            ]
            if all(v > 0 for v in s) or all(v < 0 for v in s):
                inside = True
                break
        if not inside:
            extreme.append(i)
    centre = points[extreme].mean(axis=0)
    angle = {i: math.atan2(points[i][1] - centre[1], points[i][0] - centre[0]) for i in extreme}
    ordered = sorted(extreme, key=lambda i: angle[i])
    start = ordered.index(min(ordered))
    return ordered[start:] + ordered[:start]


def _brute_tsp(points):
    n = len(points)
    best = math.inf
    for perm in itertools.permutations(range(1, n)):
        tour = (0,) + perm
        length = sum(math.dist(points[tour[k]], points[tour[(k + 1) % n]]) for k in range(n))
        best = min(best, length)
    return best


# ------------------------------------------------------------------------------------------
# solvers


def test_convex_hull_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in range(3, 10):
        points = rng.random((6, n, 2))
        hull, sizes = geo.convex_hull_batch(points)
        for b in range(6):
            got = hull[b, : sizes[b]].tolist()
            assert got == _brute_hull(points[b])
            assert got == geo.convex_hull(points[b]).tolist()
            assert np.all(hull[b, sizes[b] :] == -1)
            # every point lies on the left of (or on) every hull edge: counter-clockwise, convex
            for k in range(len(got)):
                a, c = points[b][got[k]], points[b][got[(k + 1) % len(got)]]
                assert all(_orient(a, c, p) >= -1e-12 for p in points[b])


def test_convex_hull_drops_collinear_and_duplicate_points():
    points = np.array([[0, 0], [1, 0], [2, 0], [2, 2], [1, 1], [0, 2], [2, 1], [0, 0]], float)
    assert geo.convex_hull(points).tolist() == [0, 2, 3, 5]
    assert geo.convex_hull([[0.5, 0.5]]).tolist() == [0]


def test_held_karp_matches_permutations():
    rng = np.random.default_rng(1)
    for n in range(1, 8):
        points = rng.random((4, n, 2))
        tours, lengths = geo.held_karp(points)
        for b in range(4):
            assert sorted(tours[b].tolist()) == list(range(n))
            assert tours[b][0] == 0
            if n > 2:
                assert tours[b][1] < tours[b][-1]  # canonical direction
            assert lengths[b] == pytest.approx(_brute_tsp(points[b]), abs=1e-12)
            assert lengths[b] == pytest.approx(geo.tour_length(points[b], tours[b]))


def test_two_opt_is_valid_and_near_exact():
    rng = np.random.default_rng(2)
    points = rng.random((32, 9, 2))
    tours, lengths = geo.two_opt(points, np.random.default_rng(3), num_starts=4)
    _, exact = geo.held_karp(points)
    assert all(sorted(t.tolist()) == list(range(9)) for t in tours)
    assert np.all(lengths >= exact - 1e-12)
    assert np.mean(lengths / exact - 1) < 0.01
    # a 2-opt local optimum: no segment reversal shortens the tour
    tour = tours[0].tolist()
    for i in range(9):
        for j in range(i + 2, 9):
            cand = tour[: i + 1] + tour[i + 1 : j + 1][::-1] + tour[j + 1 :]
            assert geo.tour_length(points[0], cand) >= lengths[0] - 1e-12
    auto_tours, _ = geo.solve_tsp(points[:2], method="auto")
    assert auto_tours.tolist() == geo.held_karp(points[:2])[0].tolist()
    with pytest.raises(ValueError, match="method"):
        geo.solve_tsp(points, method="greedy")
    with pytest.raises(ValueError, match="at most"):
        geo.held_karp(rng.random((1, 13, 2)))


# ------------------------------------------------------------------------------------------
# files


def test_file_round_trip_and_hand_line(tmp_path):
    path = tmp_path / "tsp.txt"
    written = geo.generate(path, "tsp", 12, (4, 7), seed=5, decimals=None)
    read = geo.read_file(path)
    assert len(read) == 12
    for a, b in zip(written, read):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.output, b.output)
        assert b.output[0] == 0
    hand = tmp_path / "hull.txt"
    hand.write_text("\n0.1 0.2 0.9 0.1 0.5 0.5 0.4 0.95 output 1 2 4 1 \n")
    (example,) = geo.read_file(hand)
    np.testing.assert_array_equal(example.points, [[0.1, 0.2], [0.9, 0.1], [0.5, 0.5], [0.4, 0.95]])
    assert example.output.tolist() == [0, 1, 3]
    assert example.output.tolist() == geo.convex_hull(example.points).tolist()
    geo.write_file(hand, [example])
    assert hand.read_text() == "0.1 0.2 0.9 0.1 0.5 0.5 0.4 0.95 output 1 2 4 1\n"


def test_generated_answers_are_exact(tmp_path):
    hulls = geo.generate(tmp_path / "h.txt", "convex_hull", 6, 8, seed=1)
    for ex in geo.read_file(tmp_path / "h.txt"):
        assert ex.output.tolist() == _brute_hull(ex.points)
    for ex in geo.generate(None, "tsp", 5, 6, seed=2):
        assert geo.tour_length(ex.points, ex.output) == pytest.approx(_brute_tsp(ex.points))
    assert len(hulls) == 6 and all(len(h.points) == 8 for h in hulls)


@pytest.mark.parametrize(
    "line, message",
    [
        ("0.1 0.2 0.3 0.4 1 2 1", "'output'"),
        ("0.1 0.2 0.3 output 1 2 1", "even"),
        ("0.1 x 0.3 0.4 output 1 2 1", "bad coordinate"),
        ("0.1 0.2 0.3 0.4 output 1 3 1", r"\[1, 2\]"),
        ("0.1 0.2 0.3 0.4 output 1 2", "end with its first index"),
        ("0.1 0.2 0.3 0.4 output 1 b 1", "bad index"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text("0 0 1 0 0 1 output 1 2 3 1\n" + line + "\n")
    with pytest.raises(ValueError, match=message) as info:
        geo.read_file(path)
    assert f"{path}, line 2" in str(info.value)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        geo.read_file(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="task"):
        geo.make_batch(np.random.default_rng(0), 2, "sorting")
    with pytest.raises(ValueError, match="n_points"):
        geo.make_batch(np.random.default_rng(0), 2, "tsp", n_points=21)
    with pytest.raises(ValueError, match="output"):
        geo.write_file(tmp_path / "w.txt", [geo.Example(np.zeros((2, 2)), np.array([2]))])


# ------------------------------------------------------------------------------------------
# encoding and decoding


def test_encode_layout_by_hand():
    points = np.array([[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], [[0.7, 0.8], [0.9, 1.0], [0.0, 0.5]]])
    x, y, w, labels = geo.encode(points, [np.array([2, 0]), np.array([1, 0, 2])])
    n, k = 3, 4
    assert x.shape == (2, n + 1 + k, 24) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :n, :2], points)
    for i in range(n):
        assert x[0, i, 3 + i] == 1.0 and x[0, i, 2:].sum() == (2.0 if i == n - 1 else 1.0)
    assert x[0, n - 1, 2] == 1.0 and x[0, : n - 1, 2].sum() == 0
    assert np.all(x[:, n:] == 0)
    assert y.tolist() == [[0, 0, 0, 0, 3, 1, 21, 0], [0, 0, 0, 0, 2, 1, 3, 21]]
    assert w.tolist() == [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1, 1]]
    assert labels.tolist() == [[1, 2, 3]] * 2


@pytest.mark.parametrize("task", geo.TASKS)
def test_random_labels_round_trip(task):
    rng = np.random.default_rng(4)
    x, y, w, info = geo.make_batch(rng, 16, task, n_points=7, return_info=True)
    labels = info["labels"]
    assert all(sorted(row) == list(range(1, 8)) for row in labels.tolist())
    assert not np.all(labels == np.arange(1, 8))  # labels really are permuted
    np.testing.assert_array_equal(geo.point_labels(x)[:, :7], labels)
    skip = info["num_inputs"]
    decoded = geo.decode_predictions(y, geo.point_labels(x), skip=skip)
    for got, want in zip(decoded, info["targets"]):
        np.testing.assert_array_equal(got, want)
    # the same targets from one-hot "logits"
    onehot = np.eye(geo.NUM_CLASSES)[y[:, skip:]]
    for got, want in zip(geo.decode_predictions(onehot, labels), info["targets"]):
        np.testing.assert_array_equal(got, want)
    assert np.all(w[:, :skip] == 0)
    assert w.sum() == sum(len(t) + 1 for t in info["targets"])
    if task == "tsp":
        assert all(sorted(t.tolist()) == list(range(7)) for t in info["targets"])


def test_decode_points_only_at_present_labels():
    labels = np.array([[4, 2, 0, 0]])  # point 0 has label 4, point 1 label 2
    logits = np.full((1, 4, geo.NUM_CLASSES), -5.0)
    logits[0, 0, [7, 2]] = [9.0, 1.0]  # label 7 absent: falls back to label 2 -> point 1
    logits[0, 1, [0, 4]] = [9.0, 1.0]  # padding class is never chosen: label 4 -> point 0
    logits[0, 2, geo.END] = 3.0
    logits[0, 3, 4] = 8.0  # after the end token: ignored
    assert [a.tolist() for a in geo.decode_predictions(logits, labels)] == [[1, 0]]
    no_end = np.array([[2, 4, 9]])
    assert geo.decode_predictions(no_end, labels)[0].tolist() == [1, 0, -1, -1]
    with pytest.raises(ValueError, match="skip"):
        geo.decode_predictions(no_end, labels, skip=3)


def test_datasets_are_seeded_and_grouped(tmp_path):
    data = geo.dataset(8, 3, seed=7, task="convex_hull")
    a, b = data[1], geo.dataset(8, 3, seed=7, task="convex_hull")[1]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    fixed = geo.dataset(4, 2, seed=7, fixed=True, task="tsp", n_points=5)
    assert np.all(geo.point_labels(fixed[0][0])[:, :5] == np.arange(1, 6))
    path = tmp_path / "mixed.txt"
    examples = geo.generate(path, "convex_hull", 30, (5, 7), seed=3)
    geo.write_file(
        path,
        examples + [geo.Example(np.random.default_rng(0).random((25, 2)), np.array([0, 1, 2]))],
    )
    ordered = geo.file_dataset(path, 4, shuffle=False)
    assert len(ordered.examples) == 30  # the 25-point example is dropped (N_MAX = 20)
    seen = []
    for i in range(len(ordered)):
        x, y, w = ordered[i]
        idx = ordered.batch_indices(i)
        sizes = {len(ordered.examples[j].points) for j in idx}
        assert len(sizes) == 1
        steps = max(len(ordered.examples[j].output) for j in idx) + 1
        assert x.shape[1] == y.shape[1] == sizes.pop() + 1 + steps
        targets = geo.decode_predictions(
            y, geo.point_labels(x), skip=len(ordered.examples[idx[0]].points) + 1
        )
        for j, t in zip(idx, targets):
            np.testing.assert_array_equal(t, ordered.examples[j].output)
        seen += idx.tolist()
    assert sorted(seen) == list(range(30))
    shuffled = geo.file_dataset(path, 4, num_batches=5, seed=1)
    x, y, w = shuffled[2]
    idx = shuffled.batch_indices(2)
    assert len({len(shuffled.examples[j].points) for j in idx}) == 1 and len(idx) == 4


# ------------------------------------------------------------------------------------------
# metrics


def test_hull_metrics_by_hand():
    targets = [np.array([0, 3, 1]), np.array([0, 3, 1]), np.array([2, 0, 1, 4])]
    predictions = [np.array([0, 3, 1]), np.array([3, 1, 0]), np.array([2, 0, 4])]
    m = geo.hull_metrics(predictions, targets)
    assert m["sequence_accuracy"] == pytest.approx(1 / 3)
    assert m["cyclic_accuracy"] == pytest.approx(2 / 3)
    # aligned steps (answer + end): 4 of 4; the end only, 1 of 4; 2 of 5 (early end)
    assert m["point_accuracy"] == pytest.approx((4 + 1 + 2) / 13)


def test_tsp_metrics_with_invalid_tours():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    points = [square] * 4
    optimal = [np.array([0, 1, 2, 3])] * 4
    predictions = [
        np.array([0, 1, 2, 3]),  # optimal, length 4
        np.array([0, 2, 1, 3]),  # valid, length 2 + 2 sqrt 2
        np.array([0, 1, 0, 3]),  # repeated city: invalid (length 3 + ... apart)
        np.array([0, 1, 2]),
    ]  # missing city: invalid
    m = geo.tsp_metrics(points, predictions, optimal)
    crossed = 2 + 2 * math.sqrt(2)
    assert m["valid_fraction"] == 0.5 and m["num_valid"] == 2 and m["num_invalid"] == 2
    assert m["mean_length"] == pytest.approx((4 + crossed) / 2)
    assert m["mean_target_length"] == pytest.approx(4.0)
    assert m["optimality_gap"] == pytest.approx((0 + crossed / 4 - 1) / 2)
    assert m["mean_invalid_length"] == pytest.approx((1 + 1 + 1 + 1 + 2 + math.sqrt(2)) / 2)
    short = geo.tsp_metrics([square], [np.array([0, 1])], [4.0])  # short but invalid
    assert short["valid_fraction"] == 0 and math.isnan(short["mean_length"])


def test_bad_utf8_and_empty_files_are_named(tmp_path):
    """Issue 24, finding 6: bad UTF-8 names the file and line; an empty file is called empty."""
    path = tmp_path / "latin.txt"
    path.write_bytes(b"0 0 1 0 0 1 output 1 2 3 1\n0 0 1 0 \xe9 1 output 1 2 3 1\n")
    with pytest.raises(ValueError, match="not UTF-8") as info:
        geo.read_file(path)
    assert f"{path}, line 2" in str(info.value)
    for name, content in (("empty.txt", ""), ("blank.txt", "\n  \n")):
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=f"{name}: the file holds no example"):
            geo.file_dataset(tmp_path / name, 4)


def test_partial_tsp_tour_is_refused(tmp_path):
    """Issue 24, finding 6: a TSP file's tour must visit every city once (a hull need not)."""
    path = tmp_path / "tsp.txt"
    path.write_text("0 0 1 0 1 1 0 1 output 1 2 3 4 1\n0 0 1 0 1 1 0 1 output 1 2 4 1\n")
    assert len(geo.read_file(path)) == 2  # any answer without a task
    with pytest.raises(ValueError, match="each of the 4 cities exactly once") as info:
        geo.file_dataset(path, 2, task="tsp")
    assert f"{path}, line 2" in str(info.value)
    path.write_text("0 0 1 0 1 1 0 1 output 1 2 2 4 1\n")
    with pytest.raises(ValueError, match="3 distinct"):
        geo.read_file(path, task="tsp")
