"""Tests of keras_stm.experiments.tasks.graphs: solvers against enumeration, files, encoding,
metrics."""

import itertools
import math

import numpy as np
import pytest

from keras_stm.experiments.tasks import graphs as gr

# ------------------------------------------------------------------------------------------
# independent brute-force references


def _connected(n, pairs):
    reach, frontier = {0}, [0]
    while frontier:
        u = frontier.pop()
        for a, b in pairs:
            for p, q in ((a, b), (b, a)):
                if p == u and q not in reach:
                    reach.add(q)
                    frontier.append(q)
    return len(reach) == n


def _all_simple_paths(edges, source, target):
    """Every simple path from source to target, as edge-index lists (depth-first)."""
    found = []

    def walk(node, visited, path):
        if node == target:
            found.append(list(path))
            return
        for k, (a, b) in enumerate(edges):
            nxt = b if a == node else a if b == node else None
            if nxt is not None and nxt not in visited:
                walk(nxt, visited | {nxt}, path + [k])

    walk(source, {source}, [])
    return found


def _all_spanning_trees(n, edges):
    return [
        list(c)
        for c in itertools.combinations(range(len(edges)), n - 1)
        if _connected(n, [edges[k] for k in c])
    ]


# ------------------------------------------------------------------------------------------
# generation and solvers


def test_random_graphs_are_connected_simple_and_sized():
    rng = np.random.default_rng(0)
    for n, e in [(2, 1), (5, 4), (8, 15), (10, 20), (6, 15)]:
        edges, weights = gr.random_graphs(rng, 16, n, e)
        assert edges.shape == (16, e, 2) and weights.shape == (16, e)
        assert np.all((weights >= 0) & (weights < 1))
        for g in edges.tolist():
            pairs = {tuple(sorted(p)) for p in g}
            assert len(pairs) == e and all(a != b for a, b in pairs)  # simple graph
            assert _connected(n, g)
    with pytest.raises(ValueError, match="n_edges"):
        gr.random_graphs(rng, 1, 5, 11)


def test_dijkstra_matches_enumeration_of_simple_paths():
    rng = np.random.default_rng(1)
    for n, e in [(4, 4), (5, 7), (6, 8), (6, 10)]:
        edges, weights = gr.random_graphs(rng, 8, n, e)
        source = rng.integers(0, n, 8)
        target = (source + rng.integers(1, n, 8)) % n
        paths = gr.shortest_paths(n, edges, weights, source, target)
        for b in range(8):
            options = _all_simple_paths(edges[b].tolist(), source[b], target[b])
            costs = [weights[b][p].sum() for p in options]
            assert paths[b].tolist() == options[int(np.argmin(costs))]  # unique with random weights
            assert gr.is_valid_path(edges[b], source[b], target[b], paths[b])


def test_dijkstra_uses_lightest_parallel_edge_and_rejects_unreachable():
    edges = np.array([[[0, 1], [1, 0], [1, 2], [2, 2]]])
    weights = np.array([[0.9, 0.2, 0.5, 0.0]])
    assert gr.shortest_paths(3, edges, weights, [0], [2])[0].tolist() == [1, 2]
    with pytest.raises(ValueError, match="not reachable"):
        gr.shortest_paths(4, edges, weights, [0], [3])
    with pytest.raises(ValueError, match="distinct"):
        gr.shortest_paths(3, edges, weights, [1], [1])


def test_kruskal_matches_enumeration_of_spanning_trees():
    rng = np.random.default_rng(2)
    for n, e in [(3, 3), (4, 6), (5, 7), (6, 9)]:
        edges, weights = gr.random_graphs(rng, 6, n, e)
        trees = gr.minimum_spanning_trees(n, edges, weights)
        for b in range(6):
            options = _all_spanning_trees(n, edges[b].tolist())
            costs = [weights[b][t].sum() for t in options]
            best = options[int(np.argmin(costs))]
            assert sorted(trees[b].tolist()) == best
            assert np.all(np.diff(weights[b][trees[b]]) >= 0)  # Kruskal order
    with pytest.raises(ValueError, match="not connected"):
        gr.minimum_spanning_trees(4, np.array([[[0, 1], [2, 3]]]), np.ones((1, 2)))


def test_validity_checks_by_hand():
    edges = np.array([[0, 1], [1, 2], [2, 3], [0, 2], [3, 0]])
    assert gr.is_valid_path(edges, 0, 3, [0, 1, 2])
    assert gr.is_valid_path(edges, 0, 3, [4])
    assert not gr.is_valid_path(edges, 0, 3, [0, 2])  # edges do not chain
    assert not gr.is_valid_path(edges, 0, 3, [0, 1, 3, 4])  # revisits node 0
    assert not gr.is_valid_path(edges, 0, 3, [0, 1])  # ends at 2
    assert not gr.is_valid_path(edges, 0, 3, [])
    assert not gr.is_valid_path(edges, 0, 3, [7])
    assert gr.is_spanning_tree(4, edges, [0, 1, 2])
    assert not gr.is_spanning_tree(4, edges, [0, 1, 3])  # cycle 0-1-2, node 3 left out
    assert not gr.is_spanning_tree(4, edges, [0, 1, 2, 4])  # too many
    assert not gr.is_spanning_tree(4, edges, [0, 0, 2])  # repeated edge


# ------------------------------------------------------------------------------------------
# files


def test_file_round_trip_and_hand_line(tmp_path):
    for task in gr.TASKS:
        path = tmp_path / f"{task}.txt"
        written = gr.generate(path, task, 10, n_nodes=(5, 7), n_edges=(6, 12), seed=3)
        read = gr.read_file(path)
        assert len(read) == 10
        for a, b in zip(written, read):
            assert a.num_nodes == b.num_nodes and a.query == b.query
            np.testing.assert_array_equal(a.edges, b.edges)
            np.testing.assert_array_equal(a.weights, b.weights)
            np.testing.assert_array_equal(a.output, b.output)
            assert len(np.unique(b.weights)) == len(b.weights)  # distinct weights
    hand = tmp_path / "hand.txt"
    hand.write_text("nodes 4 edges 1 2 0.5 2 3 0.25 3 4 1.0 1 4 3.0 query 1 4 output 1 2 3\n")
    (ex,) = gr.read_file(hand)
    assert ex.num_nodes == 4 and ex.query == (0, 3)
    assert ex.edges.tolist() == [[0, 1], [1, 2], [2, 3], [0, 3]]
    assert ex.weights.tolist() == [0.5, 0.25, 1.0, 3.0]
    assert ex.output.tolist() == [0, 1, 2]
    solved = gr.shortest_paths(4, ex.edges[None], ex.weights[None], [0], [3])[0]
    assert solved.tolist() == ex.output.tolist()
    gr.write_file(hand, [ex])
    assert hand.read_text() == (
        "nodes 4 edges 1 2 0.5 2 3 0.25 3 4 1.0 1 4 3.0 query 1 4 output 1 2 3\n"
    )


@pytest.mark.parametrize(
    "line, message",
    [
        ("nodes 3 edges 1 2 0.5 2 3 0.5", "keyword"),
        ("nodes 3 edges 1 2 0.5 2 3 output 1", "triples"),
        ("nodes 3 edges 1 4 0.5 output 1", r"\[1, 3\]"),
        ("nodes 3 edges 1 2 0.5 query 1 1 output 1", "distinct"),
        ("nodes 3 edges 1 2 0.5 output 2", "edge indices"),
        ("nodes 3 edges 1 2 abc output 1", "could not convert"),
        ("nodes 3 edges 1 2 -0.5 output 1", "non-negative"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text("nodes 2 edges 1 2 0.5 output 1\n\n" + line + "\n")
    with pytest.raises(ValueError, match=message) as info:
        gr.read_file(path)
    assert f"{path}, line 3" in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        gr.read_file(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------------
# encoding and decoding


def test_encode_layout_by_hand():
    edges = np.array([[[0, 1], [1, 2], [2, 0]]])
    weights = np.array([[0.5, 0.25, 0.75]])
    x, y, w, labels = gr.encode(edges, weights, np.array([[0, 2]]), [np.array([0, 1])])
    assert x.shape == (1, 3 + 1 + 1 + 3, gr.INPUT_WIDTH) == (1, 8, 44)
    row = x[0]
    assert row[0, 0] == 1 and row[0, 10 + 1] == 1 and row[0, 20] == 0.5 and row[0, 21 + 1] == 1
    assert row[1, 1] == 1 and row[1, 10 + 2] == 1 and row[1, 20] == 0.25 and row[1, 21 + 2] == 1
    assert row[2, 2] == 1 and row[2, 10 + 0] == 1 and row[2, 21 + 3] == 1
    assert row[2, 21] == 1 and row[:2, 21].sum() == 0  # end-of-edges flag on the last edge
    assert row[3, 0] == 1 and row[3, 12] == 1 and row[3, 43] == 1 and row[3].sum() == 3
    assert row[:3, 43].sum() == 0 and np.all(row[4:] == 0)
    assert y.tolist() == [[0, 0, 0, 0, 0, 1, 2, 21]]
    assert w.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]
    x2, y2, _, _ = gr.encode(edges, weights, None, [np.array([1, 0])])
    assert x2.shape == (1, 7, 44) and np.all(x2[:, :, 43] == 0)
    assert y2.tolist() == [[0, 0, 0, 0, 2, 1, 21]]


@pytest.mark.parametrize("task", gr.TASKS)
def test_random_labels_round_trip(task):
    x, y, w, info = gr.make_batch(
        np.random.default_rng(5), 16, task, n_nodes=8, n_edges=14, return_info=True
    )
    labels = info["labels"]
    assert all(sorted(r) == list(range(1, 15)) for r in labels.tolist())
    np.testing.assert_array_equal(gr.edge_labels(x)[:, :14], labels)
    skip = info["num_inputs"]
    assert skip == (16 if task == "shortest_path" else 15)
    decoded = gr.decode_predictions(np.eye(gr.NUM_CLASSES)[y[:, skip:]], labels)
    for got, ex in zip(decoded, info["examples"]):
        np.testing.assert_array_equal(got, ex.output)
        if task == "mst":
            assert len(got) == 7 and gr.is_spanning_tree(8, ex.edges, got)
        else:
            assert gr.is_valid_path(ex.edges, ex.query[0], ex.query[1], got)
    assert np.all(w[:, :skip] == 0) and w.sum() == sum(len(e.output) + 1 for e in info["examples"])
    m = (gr.mst_metrics if task == "mst" else gr.shortest_path_metrics)(info["examples"], decoded)
    assert m["exact_match"] == m["optimal_fraction"] == m["valid_fraction"] == 1.0
    assert m["mean_cost_ratio"] == pytest.approx(1.0)


def test_decode_only_points_at_existing_edges():
    labels = np.array([[3, 1, 0, 0]])
    logits = np.zeros((1, 3, gr.NUM_CLASSES))
    logits[0, 0, [5, 3]] = [9, 2]  # label 5 absent: label 3, edge 0
    logits[0, 1, gr.END] = 1
    assert gr.decode_predictions(logits, labels)[0].tolist() == [0]


def test_datasets(tmp_path):
    a = gr.dataset(4, 2, seed=3, task="mst")[1]
    b = gr.dataset(4, 2, seed=3, task="mst")[1]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    fixed = gr.dataset(4, 2, seed=3, fixed=True, task="shortest_path", n_edges=15, n_nodes=8)
    assert np.all(gr.edge_labels(fixed[0][0])[:, :15] == np.arange(1, 16))
    path = tmp_path / "sp.txt"
    gr.generate(path, "shortest_path", 20, n_nodes=(8, 9), n_edges=(15, 16), seed=4)
    data = gr.file_dataset(path, 3, shuffle=False)
    seen = []
    for i in range(len(data)):
        x, y, w = data[i]
        idx = data.batch_indices(i)
        count = {len(data.examples[j].edges) for j in idx}
        assert len(count) == 1
        skip = count.pop() + 2
        for j, got in zip(idx, gr.decode_predictions(y, gr.edge_labels(x), skip=skip)):
            np.testing.assert_array_equal(got, data.examples[j].output)
        seen += idx.tolist()
    assert sorted(seen) == list(range(20))
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("nodes 2 edges 1 2 0.5 output 1\nnodes 2 edges 1 2 0.5 query 1 2 output 1\n")
    with pytest.raises(ValueError, match="mixes"):
        gr.file_dataset(mixed, 2)


# ------------------------------------------------------------------------------------------
# metrics


def test_shortest_path_metrics_by_hand():
    ex = gr.GraphExample(
        4,
        np.array([[0, 1], [1, 2], [2, 3], [0, 3], [0, 2]]),
        np.array([1.0, 1.0, 1.0, 5.0, 2.0]),
        (0, 3),
        np.array([0, 1, 2]),
    )
    predictions = [
        np.array([0, 1, 2]),  # the answer, cost 3
        np.array([4, 2]),  # tie: other optimal path, cost 3
        np.array([3]),  # valid, cost 5
        np.array([0, 2]),  # does not chain: invalid
        np.array([0, 1, -1]),
    ]  # no end token: invalid
    m = gr.shortest_path_metrics([ex] * 5, predictions)
    assert m["exact_match"] == pytest.approx(1 / 5)
    assert m["optimal_fraction"] == pytest.approx(2 / 5)
    assert m["valid_fraction"] == pytest.approx(3 / 5) and m["num_invalid"] == 2
    assert m["mean_cost_ratio"] == pytest.approx((1 + 1 + 5 / 3) / 3)


def test_mst_metrics_by_hand():
    ex = gr.GraphExample(
        4,
        np.array([[0, 1], [1, 2], [2, 3], [0, 3], [0, 2]]),
        np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
        None,
        np.array([0, 1, 2]),
    )
    predictions = [
        np.array([0, 1, 2]),  # exact, Kruskal order
        np.array([2, 0, 1]),  # same set, other order
        np.array([0, 1, 3]),  # valid tree, cost 7
        np.array([0, 1, 4]),  # cycle 0-1-2: invalid
        np.array([0, 1]),
    ]  # too few edges: invalid
    m = gr.mst_metrics([ex] * 5, predictions)
    assert m["sequence_accuracy"] == pytest.approx(1 / 5)
    assert m["exact_match"] == pytest.approx(2 / 5) == m["optimal_fraction"]
    assert m["valid_fraction"] == pytest.approx(3 / 5)
    assert m["mean_cost_ratio"] == pytest.approx((1 + 1 + 7 / 6) / 3)
    empty = gr.mst_metrics([ex], [np.array([0, 0, 0])])
    assert empty["valid_fraction"] == 0 and math.isnan(empty["mean_cost_ratio"])
