"""Shortest path and minimum spanning tree: graphs as edge sequences, exact solvers, metrics.

This module is the single home of the graph-task protocol; `docs/tasks/graph_protocol.md`
explains the choices and the sizes. The reference (section 4.8) has no code for these tasks, so the
protocol follows the geometric tasks of `keras_stm.experiments.tasks.geometry`: the model reads one
row per
item, then answers by emitting item labels (here edge labels) and an end token on zero-input steps.

**Examples.** A `GraphExample(num_nodes, edges, weights, query, output)`: `edges` an `(E, 2)` int
array of 0-based endpoints (undirected), `weights` `(E,)` floats, `query` the 0-based
`(source, target)` pair for shortest path or None for the spanning tree, and `output` the answer as
0-based **edge indices**: the path's edges from source to target, or the tree's edges in Kruskal
order (increasing weight, ties by lower edge index).

**Graphs made here**: connected simple graphs with `n_nodes` nodes (default 8..10) and `n_edges`
edges (default 15..20), a random recursive spanning tree over a random node order plus extra edges
drawn uniformly among the other node pairs; edges listed in random order with random orientation;
weights uniform in [0, 1); shortest-path queries a uniform pair of distinct nodes. One N and one E
per batch.

**Encoding** (`NODE_MAX` = 10, `EDGE_MAX` = 20, `NUM_CLASSES` = 22: 0 padding, 1..20 edge labels,
21 = `END`; `INPUT_WIDTH` = 44). Edge labels are a random permutation of 1..E at training and the
position (edge i has label i + 1) at test. Columns of an input row:

====================  ==========================================================================
columns               content
====================  ==========================================================================
0 .. 9                one-hot of the first endpoint (query row: the source)
10 .. 19              one-hot of the second endpoint (query row: the target)
20                    the weight
21 .. 42              one-hot of the edge label over 22 classes (column 21 + label); column 21
                      (class 0) flags the last edge row (end of the edge list)
43                    query flag (1 on the query row only)
====================  ==========================================================================

Time steps: E edge rows, then (shortest path only) the query row, then one all-zero row, then `K`
all-zero decoding rows, K = (longest answer in the batch) + 1. So `num_inputs` = E + 2 for shortest
path and E + 1 for the spanning tree, and

* `x`: float32 `(B, num_inputs + K, 44)`;
* `y`: int32 `(B, num_inputs + K)`: 0 on input steps, then the labels of the answer's edges, `END`,
  and 0 padding;
* `sample_weight`: float32, 1 on the output steps holding an edge label or `END`, else 0.

`decode_predictions` maps the last K steps back to edge indices, allowing only labels present in the
example (plus `END`). Metrics: `shortest_path_metrics` and `mst_metrics` (exact match, share of
optimal answers, share of valid answers and the cost ratio to the optimum over valid answers; an
invalid answer never counts as cheap).
"""

import os
from typing import NamedTuple
from typing import Optional

import numpy as np

from keras_stm.experiments.tasks import geometry
from keras_stm.experiments.tasks.base import TaskDataset

NODE_MAX = 10
EDGE_MAX = 20
NUM_CLASSES = EDGE_MAX + 2
PAD = 0
END = EDGE_MAX + 1
COL_U = 0
COL_V = NODE_MAX
COL_WEIGHT = 2 * NODE_MAX
COL_LABEL = COL_WEIGHT + 1
COL_QUERY = COL_LABEL + NUM_CLASSES
INPUT_WIDTH = COL_QUERY + 1
TASKS = ("shortest_path", "mst")
DEFAULT_N_NODES = (8, 10)
DEFAULT_N_EDGES = (15, 20)

__all__ = [
    "NODE_MAX",
    "EDGE_MAX",
    "NUM_CLASSES",
    "PAD",
    "END",
    "INPUT_WIDTH",
    "TASKS",
    "GraphExample",
    "random_graphs",
    "shortest_paths",
    "minimum_spanning_trees",
    "path_cost",
    "is_valid_path",
    "is_spanning_tree",
    "encode",
    "make_batch",
    "dataset",
    "read_file",
    "write_file",
    "generate",
    "file_dataset",
    "edge_labels",
    "decode_predictions",
    "shortest_path_metrics",
    "mst_metrics",
]


class GraphExample(NamedTuple):
    """One shortest-path or minimum-spanning-tree example.

    Attributes:
        num_nodes: int, number of nodes (0 .. num_nodes - 1).
        edges: int array `(E, 2)`, 0-based endpoints of the undirected edges.
        weights: float array `(E,)`, the edge weights.
        query: `(source, target)` 0-based node pair for shortest path, None for the spanning tree.
        output: int array `(k,)`, the answer as 0-based edge indices.
    """

    num_nodes: int
    edges: np.ndarray
    weights: np.ndarray
    query: Optional[tuple]
    output: np.ndarray


def _check_task(task):
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    return task


def _check_graphs(num_nodes, edges, weights):
    edges = np.asarray(edges, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if edges.ndim != 3 or edges.shape[-1] != 2 or weights.shape != edges.shape[:2]:
        raise ValueError(
            f"`edges` must be (B, E, 2) and `weights` (B, E), got {edges.shape} and "
            f"{weights.shape}."
        )
    num_nodes = np.broadcast_to(np.asarray(num_nodes, dtype=np.int64), edges.shape[:1])
    if edges.size and (edges.min() < 0 or np.any(edges.max(axis=(1, 2)) >= num_nodes)):
        raise ValueError("`edges` endpoints must lie in [0, num_nodes).")
    if not np.all(np.isfinite(weights)):
        raise ValueError("`weights` must be finite.")
    return num_nodes, edges, weights


# --------------------------------------------------------------------------------------------
# generation and exact solvers


def random_graphs(rng, batch_size, n_nodes, n_edges):
    """Random connected simple graphs with the same numbers of nodes and edges.

    A random recursive tree over a random node order makes the graph connected; the other edges
    are drawn uniformly among the remaining node pairs. Edges come in random order with random
    orientation; weights are uniform in [0, 1).

    Args:
        rng: `np.random.Generator`.
        batch_size: int, number of graphs.
        n_nodes: int, nodes per graph (>= 2).
        n_edges: int, edges per graph, in [n_nodes - 1, n_nodes (n_nodes - 1) / 2].

    Returns:
        `(edges, weights)`: int64 `(B, E, 2)` and float64 `(B, E)`.

    Example:

    >>> edges, weights = random_graphs(np.random.default_rng(0), 2, 5, 6)
    >>> edges.shape, weights.shape
    ((2, 6, 2), (2, 6))
    """
    n, e = int(n_nodes), int(n_edges)
    if n < 2 or not n - 1 <= e <= n * (n - 1) // 2:
        raise ValueError(
            f"need n_nodes >= 2 and n_nodes - 1 <= n_edges <= n_nodes (n_nodes - 1) / 2, got "
            f"n_nodes={n_nodes}, n_edges={n_edges}."
        )
    batch = int(batch_size)
    rows = np.arange(batch)
    order = np.argsort(rng.random((batch, n)), axis=1)
    pair_a, pair_b = np.triu_indices(n, k=1)
    pair_id = np.zeros((n, n), dtype=np.int64)
    pair_id[pair_a, pair_b] = pair_id[pair_b, pair_a] = np.arange(pair_a.size)
    keys = rng.random((batch, pair_a.size))
    for i in range(1, n):
        parent = order[rows, (rng.random(batch) * i).astype(np.int64)]
        keys[rows, pair_id[order[:, i], parent]] = -1.0  # tree edges are always kept
    chosen = np.argsort(keys, axis=1)[:, :e]
    chosen = np.take_along_axis(chosen, np.argsort(rng.random((batch, e)), axis=1), axis=1)
    edges = np.stack([pair_a[chosen], pair_b[chosen]], axis=-1)
    flip = rng.random((batch, e)) < 0.5
    edges = np.where(flip[..., None], edges[..., ::-1], edges)
    return edges, rng.random((batch, e))


def _dense(num_nodes, edges, weights):
    """Adjacency (B, N, N) of the lightest edge per pair (lowest index on ties) and its index."""
    batch, count = weights.shape
    size = int(num_nodes.max())
    rows = np.arange(batch)
    weight = np.full((batch, size, size), np.inf)
    index = np.full((batch, size, size), -1, dtype=np.int64)
    for k in range(count):
        u, v, w = edges[:, k, 0], edges[:, k, 1], weights[:, k]
        better = (w < weight[rows, u, v]) & (u != v)
        for a, b in ((u, v), (v, u)):
            weight[rows, a, b] = np.where(better, w, weight[rows, a, b])
            index[rows, a, b] = np.where(better, k, index[rows, a, b])
    return weight, index


def shortest_paths(num_nodes, edges, weights, source, target):
    """Shortest paths by Dijkstra's algorithm, vectorised over the batch.

    Among parallel edges the lightest is used (lowest index on ties); among equally short paths
    the first one found is kept.

    Args:
        num_nodes: int or int array `(B,)`, nodes per graph.
        edges: int array `(B, E, 2)`, 0-based endpoints.
        weights: float array `(B, E)`, non-negative weights.
        source: int array `(B,)`, start nodes.
        target: int array `(B,)`, end nodes (different from the source).

    Returns:
        list of B int64 arrays: the path's edge indices in order from source to target.

    Raises:
        ValueError: if a target cannot be reached or the inputs are malformed.

    Example:

    >>> edges = np.array([[[0, 1], [1, 2], [0, 2]]])
    >>> shortest_paths(3, edges, np.array([[1.0, 1.0, 3.0]]), [0], [2])[0].tolist()
    [0, 1]
    """
    num_nodes, edges, weights = _check_graphs(num_nodes, edges, weights)
    if np.any(weights < 0):
        raise ValueError("`weights` must be non-negative for Dijkstra's algorithm.")
    source = np.asarray(source, dtype=np.int64).reshape(-1)
    target = np.asarray(target, dtype=np.int64).reshape(-1)
    batch = weights.shape[0]
    if source.shape != (batch,) or target.shape != (batch,):
        raise ValueError(f"`source` and `target` must have shape ({batch},).")
    if (
        np.any(source < 0)
        or np.any(source >= num_nodes)
        or np.any(target < 0)
        or np.any(target >= num_nodes)
        or np.any(source == target)
    ):
        raise ValueError("`source`/`target` must be distinct nodes in [0, num_nodes).")
    weight, index = _dense(num_nodes, edges, weights)
    size = weight.shape[1]
    rows = np.arange(batch)
    dist = np.full((batch, size), np.inf)
    dist[rows, source] = 0.0
    done = np.zeros((batch, size), dtype=bool)
    pred_node = np.full((batch, size), -1, dtype=np.int64)
    pred_edge = np.full((batch, size), -1, dtype=np.int64)
    for _ in range(size):
        u = np.argmin(np.where(done, np.inf, dist), axis=1)
        done[rows, u] = True
        cand = dist[rows, u][:, None] + weight[rows, u]
        better = (cand < dist) & ~done
        dist = np.where(better, cand, dist)
        pred_node = np.where(better, u[:, None], pred_node)
        pred_edge = np.where(better, index[rows, u], pred_edge)
    unreachable = np.flatnonzero(~np.isfinite(dist[rows, target]))
    if unreachable.size:
        raise ValueError(f"target not reachable from source in graph(s) {unreachable.tolist()}.")
    steps = np.full((batch, size), -1, dtype=np.int64)
    node = target.copy()
    for k in range(size):
        active = node != source
        steps[:, k] = np.where(active, pred_edge[rows, node], -1)
        node = np.where(active, pred_node[rows, node], node)
    return [steps[b][steps[b] >= 0][::-1].copy() for b in range(batch)]


def minimum_spanning_trees(num_nodes, edges, weights):
    """Minimum spanning trees by Kruskal's algorithm, vectorised over the batch.

    Args:
        num_nodes: int or int array `(B,)`, nodes per graph.
        edges: int array `(B, E, 2)`, 0-based endpoints.
        weights: float array `(B, E)`.

    Returns:
        list of B int64 arrays: the tree's edge indices in Kruskal order (increasing weight, ties
        by lower edge index).

    Raises:
        ValueError: if a graph is not connected or the inputs are malformed.

    Example:

    >>> edges = np.array([[[0, 1], [1, 2], [0, 2]]])
    >>> minimum_spanning_trees(3, edges, np.array([[2.0, 1.0, 3.0]]))[0].tolist()
    [1, 0]
    """
    num_nodes, edges, weights = _check_graphs(num_nodes, edges, weights)
    batch, count = weights.shape
    size = int(num_nodes.max())
    rows = np.arange(batch)
    order = np.argsort(weights, axis=1, kind="stable")
    component = np.tile(np.arange(size), (batch, 1))
    taken = np.zeros((batch, count), dtype=bool)
    for k in range(count):
        edge = order[:, k]
        cu = component[rows, edges[rows, edge, 0]]
        cv = component[rows, edges[rows, edge, 1]]
        join = cu != cv
        taken[:, k] = join
        component = np.where(join[:, None] & (component == cv[:, None]), cu[:, None], component)
    sizes = taken.sum(axis=1)
    broken = np.flatnonzero(sizes != num_nodes - 1)
    if broken.size:
        raise ValueError(f"graph(s) {broken.tolist()} are not connected: no spanning tree.")
    return [order[b][taken[b]] for b in range(batch)]


def path_cost(weights, answer):
    """Total weight of a set or sequence of edges.

    Args:
        weights: float array `(E,)`.
        answer: int array of edge indices in [0, E).

    Returns:
        float, the summed weight.

    Example:

    >>> path_cost(np.array([0.5, 1.0, 2.0]), [0, 2])
    2.5
    """
    return float(np.asarray(weights, dtype=np.float64)[np.asarray(answer, dtype=np.int64)].sum())


def _in_range(answer, count):
    answer = np.asarray(answer, dtype=np.int64)
    return answer.ndim == 1 and (answer.size == 0 or (answer.min() >= 0 and answer.max() < count))


def is_valid_path(edges, source, target, answer):
    """Whether edge indices form a simple path from source to target, in order.

    Args:
        edges: int array `(E, 2)`, 0-based endpoints (undirected).
        source: int, start node.
        target: int, end node.
        answer: int array of edge indices, in path order.

    Returns:
        bool.

    Example:

    >>> edges = np.array([[0, 1], [2, 1], [0, 2]])
    >>> is_valid_path(edges, 0, 2, [0, 1]), is_valid_path(edges, 0, 2, [1, 0])
    (True, False)
    """
    edges = np.asarray(edges, dtype=np.int64)
    if not _in_range(answer, len(edges)) or len(answer) == 0:
        return False
    node, seen = int(source), {int(source)}
    for k in np.asarray(answer, dtype=np.int64).tolist():
        a, b = edges[k].tolist()
        if node == a:
            node = b
        elif node == b:
            node = a
        else:
            return False
        if node in seen:
            return False
        seen.add(node)
    return node == int(target)


def is_spanning_tree(num_nodes, edges, answer):
    """Whether edge indices form a spanning tree (N - 1 distinct edges joining all N nodes).

    Args:
        num_nodes: int, N.
        edges: int array `(E, 2)`, 0-based endpoints.
        answer: int array of edge indices, any order.

    Returns:
        bool.

    Example:

    >>> edges = np.array([[0, 1], [1, 2], [0, 2]])
    >>> is_spanning_tree(3, edges, [0, 1]), is_spanning_tree(3, edges, [0, 0])
    (True, False)
    """
    edges = np.asarray(edges, dtype=np.int64)
    answer = np.asarray(answer, dtype=np.int64)
    if not _in_range(answer, len(edges)) or answer.size != num_nodes - 1:
        return False
    if np.unique(answer).size != answer.size:
        return False
    parent = list(range(num_nodes))

    def root(v):
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for k in answer.tolist():
        a, b = (root(v) for v in edges[k].tolist())
        if a == b:
            return False
        parent[a] = b
    return True


def _solve(task, num_nodes, edges, weights, queries):
    if task == "shortest_path":
        return shortest_paths(num_nodes, edges, weights, queries[:, 0], queries[:, 1])
    return minimum_spanning_trees(num_nodes, edges, weights)


# --------------------------------------------------------------------------------------------
# encoding and decoding


def encode(edges, weights, queries, outputs, rng=None, random_labels=False):
    """Encodes a batch of graphs with one number of edges into model arrays.

    See the module docstring for the layout.

    Args:
        edges: int array `(B, E, 2)`, 0-based endpoints < `NODE_MAX`, 1 <= E <= `EDGE_MAX`.
        weights: float array `(B, E)`.
        queries: int array `(B, 2)` of (source, target) for shortest path, None for the tree.
        outputs: sequence of B int arrays, the answers (0-based edge indices).
        rng: `np.random.Generator`, required when `random_labels` is True.
        random_labels: bool, random permutation edge labels (training) instead of labels =
            position + 1 (test). Defaults to False.

    Returns:
        `(x, y, sample_weight, labels)`; `labels` is int64 `(B, E)`, the label of each edge.

    Example:

    >>> edges = np.array([[[0, 1], [1, 2]]])
    >>> x, y, w, labels = encode(edges, np.ones((1, 2)), None, [np.array([0, 1])])
    >>> x.shape, y[0].tolist()
    ((1, 6, 44), [0, 0, 0, 1, 2, 21])
    """
    edges = np.asarray(edges, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if edges.ndim != 3 or edges.shape[-1] != 2 or weights.shape != edges.shape[:2]:
        raise ValueError(
            f"`edges` must be (B, E, 2) and `weights` (B, E), got {edges.shape}, {weights.shape}."
        )
    batch, count = weights.shape
    if not 1 <= count <= EDGE_MAX:
        raise ValueError(f"the number of edges must lie in [1, EDGE_MAX={EDGE_MAX}], got {count}.")
    if edges.min() < 0 or edges.max() >= NODE_MAX:
        raise ValueError(f"`edges` endpoints must lie in [0, NODE_MAX={NODE_MAX}).")
    if queries is not None:
        queries = np.asarray(queries, dtype=np.int64)
        if queries.shape != (batch, 2) or queries.min() < 0 or queries.max() >= NODE_MAX:
            raise ValueError(f"`queries` must be ({batch}, 2) node pairs in [0, {NODE_MAX}).")
    if len(outputs) != batch:
        raise ValueError(f"`outputs` must hold {batch} answers, got {len(outputs)}.")
    lens = np.array([len(o) for o in outputs], dtype=np.int64)
    if lens.min() < 1:
        raise ValueError("every answer in `outputs` must hold at least one edge index.")
    steps = int(lens.max()) + 1
    padded = np.full((batch, steps - 1), -1, dtype=np.int64)
    for b, out in enumerate(outputs):
        padded[b, : lens[b]] = out
    if padded.max() >= count or np.any(padded[np.arange(steps - 1)[None] < lens[:, None]] < 0):
        raise ValueError(f"`outputs` edge indices must lie in [0, {count}).")
    if random_labels:
        if rng is None:
            raise ValueError("`rng` is required when `random_labels` is True.")
        labels = geometry.random_label_permutation(rng, batch, count)
    else:
        labels = np.tile(np.arange(1, count + 1), (batch, 1))
    num_inputs = count + (1 if queries is not None else 0) + 1
    total = num_inputs + steps
    x = np.zeros((batch, total, INPUT_WIDTH), dtype=np.float32)
    rows, cols = np.arange(batch)[:, None], np.arange(count)[None]
    x[rows, cols, COL_U + edges[..., 0]] = 1.0
    x[rows, cols, COL_V + edges[..., 1]] = 1.0
    x[:, :count, COL_WEIGHT] = weights
    x[rows, cols, COL_LABEL + labels] = 1.0
    x[:, count - 1, COL_LABEL + PAD] = 1.0
    if queries is not None:
        flat = np.arange(batch)
        x[flat, count, COL_U + queries[:, 0]] = 1.0
        x[flat, count, COL_V + queries[:, 1]] = 1.0
        x[:, count, COL_QUERY] = 1.0
    y = np.zeros((batch, total), dtype=np.int32)
    answer = np.where(padded >= 0, np.take_along_axis(labels, np.maximum(padded, 0), axis=1), PAD)
    y[:, num_inputs : num_inputs + steps - 1] = answer
    y[np.arange(batch), num_inputs + lens] = END
    sample_weight = (y != PAD).astype(np.float32)
    return x, y, sample_weight, labels


def edge_labels(x):
    """Reads the label of every input row back from encoded inputs.

    Args:
        x: float array `(B, T, 44)` as made by `encode`.

    Returns:
        int64 `(B, T)`: the label (1..20) of each edge row, 0 for the other rows; index i is the
        label of edge i.

    Example:

    >>> x, _, _, _ = encode(np.array([[[0, 1], [1, 2]]]), np.ones((1, 2)), None, [np.array([0])])
    >>> edge_labels(x)[0].tolist()
    [1, 2, 0, 0, 0]
    """
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] != INPUT_WIDTH:
        raise ValueError(f"`x` must have shape (B, T, {INPUT_WIDTH}), got {x.shape}.")
    block = x[..., COL_LABEL + 1 : COL_LABEL + 1 + EDGE_MAX]
    return np.where(block.max(axis=-1) > 0, np.argmax(block, axis=-1) + 1, 0).astype(np.int64)


def decode_predictions(logits_or_labels, labels_of_edges, skip=0):
    """Maps predicted output steps back to edge indices, pointing only at edges that exist.

    Same rules as `keras_stm.experiments.tasks.geometry.decode_predictions` (argmax over the labels
    present in
    the example plus `END`; stop at `END`; a missing end token appends -1).

    Args:
        logits_or_labels: float `(B, K, 22)` scores or int `(B, K)` labels of the output steps
            (or of the whole sequence, with `skip` leading steps to drop).
        labels_of_edges: int `(B, M)`, label of edge i at position i, 0 for none (`edge_labels`).
        skip: int, leading time steps to drop (`num_inputs` for a whole-sequence prediction).
            Defaults to 0.

    Returns:
        list of B int64 arrays of 0-based edge indices.

    Example:

    >>> labels = np.array([[3, 1, 2]])
    >>> [a.tolist() for a in decode_predictions(np.array([[2, 3, END]]), labels)]
    [[2, 0]]
    """
    return geometry.decode_predictions(logits_or_labels, labels_of_edges, skip=skip, end_token=END)


# --------------------------------------------------------------------------------------------
# batches


def _draw(rng, value, name, low, high):
    return geometry._draw_size(rng, value, name, low, high)


def make_batch(
    rng,
    batch_size,
    task,
    n_nodes=DEFAULT_N_NODES,
    n_edges=DEFAULT_N_EDGES,
    random_labels=True,
    return_info=False,
):
    """Makes one batch of fresh random graphs with exact answers.

    Args:
        rng: `np.random.Generator`.
        batch_size: int, examples in the batch.
        task: str, `"shortest_path"` or `"mst"`.
        n_nodes: int or inclusive `(low, high)`, nodes per graph (one draw per batch, at most
            `NODE_MAX`). Defaults to (8, 10).
        n_edges: int or inclusive `(low, high)`, edges per graph (one draw per batch, at most
            `EDGE_MAX`, clipped to what N nodes allow). Defaults to (15, 20).
        random_labels: bool, random permutation edge labels (training) or position labels (test).
            Defaults to True.
        return_info: bool, also return a dict with `examples` (list of `GraphExample`), `labels`
            (B, E) and `num_inputs`. Defaults to False.

    Returns:
        `(x, y, sample_weight)` (see the module docstring), plus the info dict if requested.

    Example:

    >>> x, y, w = make_batch(np.random.default_rng(0), 4, "mst", n_nodes=8, n_edges=15)
    >>> x.shape, int(w.sum())
    ((4, 24, 44), 32)
    """
    _check_task(task)
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    n = _draw(rng, n_nodes, "n_nodes", 2, NODE_MAX)
    e = _draw(rng, n_edges, "n_edges", 1, EDGE_MAX)
    e = min(max(e, n - 1), n * (n - 1) // 2)
    batch = int(batch_size)
    edges, weights = random_graphs(rng, batch, n, e)
    queries = None
    if task == "shortest_path":
        source = rng.integers(0, n, batch)
        queries = np.stack([source, (source + rng.integers(1, n, batch)) % n], axis=1)
    outputs = _solve(task, n, edges, weights, queries)
    x, y, sample_weight, labels = encode(
        edges, weights, queries, outputs, rng=rng, random_labels=random_labels
    )
    if return_info:
        examples = [
            GraphExample(
                n,
                edges[b],
                weights[b],
                None if queries is None else tuple(queries[b].tolist()),
                outputs[b],
            )
            for b in range(batch)
        ]
        info = {
            "examples": examples,
            "labels": labels,
            "num_inputs": e + (2 if queries is not None else 1),
        }
        return x, y, sample_weight, info
    return x, y, sample_weight


def dataset(
    batch_size,
    num_batches,
    seed=0,
    fixed=False,
    task="shortest_path",
    n_nodes=DEFAULT_N_NODES,
    n_edges=DEFAULT_N_EDGES,
    random_labels=None,
    **kwargs,
):
    """A seeded stream of random shortest-path or spanning-tree batches for `model.fit`.

    Args:
        batch_size: int, examples per batch.
        num_batches: int, batches per epoch.
        seed: int, base seed. Defaults to 0.
        fixed: bool, repeat the same batches every epoch (an evaluation set). Defaults to False.
        task: str, `"shortest_path"` or `"mst"`. Defaults to `"shortest_path"`.
        n_nodes: int or `(low, high)`, see `make_batch`.
        n_edges: int or `(low, high)`, see `make_batch`.
        random_labels: bool or None; None means random labels unless `fixed`. Defaults to None.
        **kwargs: forwarded to `TaskDataset`.

    Returns:
        `TaskDataset` yielding `(x, y, sample_weight)`.

    Example:

    >>> data = dataset(8, 2, seed=0, task="shortest_path")
    >>> data[0][0].shape[-1]
    44
    """
    _check_task(task)
    random_labels = (not fixed) if random_labels is None else bool(random_labels)

    def batch_fn(rng, size):
        return make_batch(
            rng, size, task, n_nodes=n_nodes, n_edges=n_edges, random_labels=random_labels
        )

    return TaskDataset(batch_fn, batch_size, num_batches, seed=seed, fixed=fixed, **kwargs)


# --------------------------------------------------------------------------------------------
# files


def _parse_line(path, number, line):
    def fail(message):
        raise ValueError(f"{path}, line {number}: {message}")

    tokens = line.split()
    keys = [t for t in tokens if t in ("nodes", "edges", "query", "output")]
    if keys not in (["nodes", "edges", "output"], ["nodes", "edges", "query", "output"]):
        fail(
            "expected 'nodes N edges u v w ... [query s t] output e1 ... ek', each keyword once "
            "and in that order."
        )
    if tokens[0] != "nodes":
        fail("a line must start with 'nodes'.")
    at = {key: tokens.index(key) for key in keys}
    try:
        if at["edges"] != 2:
            raise ValueError("'nodes' takes exactly one number")
        num_nodes = int(tokens[1])
        stop = at.get("query", at["output"])
        triples = tokens[at["edges"] + 1 : stop]
        if not triples or len(triples) % 3:
            raise ValueError(
                f"expected whole 'u v w' triples after 'edges', got {len(triples)} values"
            )
        edges = np.array(
            [[int(triples[i]), int(triples[i + 1])] for i in range(0, len(triples), 3)],
            dtype=np.int64,
        )
        weights = np.array([float(triples[i + 2]) for i in range(0, len(triples), 3)])
        query = None
        if "query" in at:
            pair = tokens[at["query"] + 1 : at["output"]]
            if len(pair) != 2:
                raise ValueError("'query' takes exactly two nodes")
            query = (int(pair[0]) - 1, int(pair[1]) - 1)
        output = np.array([int(v) for v in tokens[at["output"] + 1 :]], dtype=np.int64) - 1
    except ValueError as err:
        fail(str(err))
    if num_nodes < 2:
        fail(f"need at least 2 nodes, got {num_nodes}.")
    if edges.min() < 1 or edges.max() > num_nodes:
        fail(f"edge endpoints must be 1-based in [1, {num_nodes}].")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        fail("weights must be finite and non-negative.")
    if query is not None and (min(query) < 0 or max(query) >= num_nodes or query[0] == query[1]):
        fail(f"the query must be two distinct 1-based nodes in [1, {num_nodes}].")
    if output.size < 1 or output.min() < 0 or output.max() >= len(edges):
        fail(f"output must hold 1-based edge indices in [1, {len(edges)}].")
    return GraphExample(num_nodes, edges - 1, weights, query, output)


def read_file(path):
    """Reads a graph-task text file (format in `docs/tasks/graph_protocol.md`).

    One example per line: `nodes N edges u1 v1 w1 ... uE vE wE [query s t] output e1 ... ek`, nodes
    and edge indices 1-based; shortest-path lines have the `query` part, spanning-tree lines not.
    Blank lines are skipped.

    Args:
        path: str or path-like, the text file.

    Returns:
        list of `GraphExample` (0-based).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on a corrupt line, naming the file and the line number.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "sp.txt"
    >>> _ = path.write_text("nodes 3 edges 1 2 0.5 2 3 0.25 query 1 3 output 1 2\\n")
    >>> ex = read_file(path)[0]
    >>> ex.num_nodes, ex.edges.tolist(), ex.query, ex.output.tolist()
    (3, [[0, 1], [1, 2]], (0, 2), [0, 1])
    """
    examples = []
    for name, number, line in geometry._open_lines(path):
        if line.strip():
            examples.append(_parse_line(name, number, line))
    return examples


def _check_example(example, position):
    try:
        num_nodes, edges, weights, query, output = example
    except (TypeError, ValueError):
        raise ValueError(f"`examples[{position}]` must be a GraphExample.") from None
    edges = np.asarray(edges, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    output = np.asarray(output, dtype=np.int64)
    where = f"`examples[{position}]`"
    if edges.ndim != 2 or edges.shape[1] != 2 or weights.shape != (len(edges),) or not len(edges):
        raise ValueError(f"{where}: edges must be (E, 2) with E >= 1 and weights (E,).")
    if edges.min() < 0 or edges.max() >= num_nodes:
        raise ValueError(f"{where}: edge endpoints must lie in [0, {num_nodes}).")
    if output.ndim != 1 or not output.size or output.min() < 0 or output.max() >= len(edges):
        raise ValueError(f"{where}: output must be non-empty edge indices in [0, {len(edges)}).")
    if query is not None and (len(query) != 2 or min(query) < 0 or max(query) >= num_nodes):
        raise ValueError(f"{where}: query must be a (source, target) pair of nodes.")
    return GraphExample(int(num_nodes), edges, weights, query, output)


def write_file(path, examples):
    """Writes graph examples in the text format read by `read_file` (1-based).

    Weights are written with Python's shortest round-trip float format.

    Args:
        path: str or path-like, the file to (over)write.
        examples: iterable of `GraphExample`.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "mst.txt"
    >>> ex = GraphExample(2, np.array([[0, 1]]), np.array([0.5]), None, np.array([0]))
    >>> write_file(path, [ex])
    >>> path.read_text()
    'nodes 2 edges 1 2 0.5 output 1\\n'
    """
    lines = []
    for position, example in enumerate(examples):
        num_nodes, edges, weights, query, output = _check_example(example, position)
        parts = [f"nodes {num_nodes} edges"]
        parts += [f"{a + 1} {b + 1} {w!r}" for (a, b), w in zip(edges.tolist(), weights.tolist())]
        if query is not None:
            parts.append(f"query {int(query[0]) + 1} {int(query[1]) + 1}")
        parts.append("output " + " ".join(str(k + 1) for k in output.tolist()))
        lines.append(" ".join(parts) + "\n")
    with open(os.fspath(path), "w", encoding="utf-8") as handle:
        handle.writelines(lines)


def generate(
    path,
    task,
    num_examples,
    n_nodes=DEFAULT_N_NODES,
    n_edges=DEFAULT_N_EDGES,
    seed=0,
    decimals=4,
    chunk_size=512,
):
    """Generates random graphs with exact answers (Dijkstra or Kruskal) and writes them.

    N and E are drawn per example. Weights are rounded to `decimals` places before solving, and an
    example whose rounded weights repeat a value gets new weights, so every spanning tree answer is
    the unique optimum (distinct weights) and shortest-path ties are very unlikely.

    Args:
        path: str or path-like, output file (or None to only return the examples).
        task: str, `"shortest_path"` or `"mst"`.
        num_examples: int, number of examples.
        n_nodes: int or inclusive `(low, high)`. Defaults to (8, 10).
        n_edges: int or inclusive `(low, high)`, clipped to what N nodes allow. Defaults to
            (15, 20).
        seed: int, seed. Defaults to 0.
        decimals: int or None, rounding of the weights. Defaults to 4.
        chunk_size: int, examples solved at once. Defaults to 512.

    Returns:
        list of `GraphExample`, in file order.

    Example:

    >>> examples = generate(None, "mst", 3, n_nodes=5, n_edges=7)
    >>> [len(e.output) for e in examples]
    [4, 4, 4]
    """
    _check_task(task)
    for name, value in (("num_examples", num_examples), ("chunk_size", chunk_size)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    rng = np.random.default_rng(seed)
    sizes = []
    for _ in range(num_examples):
        n = _draw(rng, n_nodes, "n_nodes", 2, NODE_MAX)
        e = _draw(rng, n_edges, "n_edges", 1, EDGE_MAX)
        sizes.append((n, min(max(e, n - 1), n * (n - 1) // 2)))
    sizes = np.array(sizes)
    examples = [None] * num_examples
    for n, e in np.unique(sizes, axis=0).tolist():
        where = np.flatnonzero((sizes[:, 0] == n) & (sizes[:, 1] == e))
        for start in range(0, where.size, chunk_size):
            chunk = where[start : start + chunk_size]
            edges, weights = random_graphs(rng, chunk.size, n, e)
            if decimals is not None:
                weights = np.round(weights, int(decimals))
                while True:
                    ordered = np.sort(weights, axis=1)
                    repeat = np.any(ordered[:, 1:] == ordered[:, :-1], axis=1)
                    if not repeat.any():
                        break
                    weights[repeat] = np.round(rng.random((repeat.sum(), e)), int(decimals))
            queries = None
            if task == "shortest_path":
                source = rng.integers(0, n, chunk.size)
                queries = np.stack([source, (source + rng.integers(1, n, chunk.size)) % n], axis=1)
            outputs = _solve(task, n, edges, weights, queries)
            for k, idx in enumerate(chunk):
                query = None if queries is None else tuple(queries[k].tolist())
                examples[idx] = GraphExample(n, edges[k], weights[k], query, outputs[k])
    if path is not None:
        write_file(path, examples)
    return examples


def _encode_examples(examples, rng, random_labels):
    edges = np.stack([e.edges for e in examples])
    weights = np.stack([e.weights for e in examples])
    queries = None
    if examples[0].query is not None:
        queries = np.array([e.query for e in examples], dtype=np.int64)
    x, y, sample_weight, _ = encode(
        edges, weights, queries, [e.output for e in examples], rng=rng, random_labels=random_labels
    )
    return x, y, sample_weight


def file_dataset(
    path, batch_size, num_batches=None, seed=0, shuffle=True, random_labels=None, **kwargs
):
    """Batches of a graph-task file, one number of edges per batch.

    Examples with more than `NODE_MAX` nodes or `EDGE_MAX` edges are dropped. All examples of the
    file must be of one task (all with a query, or none).

    Args:
        path: str or path-like, a file readable by `read_file`.
        batch_size: int, examples per batch.
        num_batches: int or None, batches per epoch in shuffle mode (None: one pass worth).
        seed: int, base seed. Defaults to 0.
        shuffle: bool, random batches (training) or one ordered pass (evaluation). Defaults to
            True.
        random_labels: bool or None; None means random labels when shuffling. Defaults to None.
        **kwargs: forwarded to `keras.utils.PyDataset`.

    Returns:
        `keras_stm.experiments.tasks.geometry.GroupedFileDataset` yielding `(x, y, sample_weight)`;
        its
        `examples` and `batch_indices(i)` tie batches back to the file's examples.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "sp.txt"
    >>> _ = generate(path, "shortest_path", 5, n_nodes=8, n_edges=15)
    >>> file_dataset(path, 4, shuffle=False)[0][0].shape[-1]
    44
    """
    examples = [e for e in read_file(path) if e.num_nodes <= NODE_MAX and len(e.edges) <= EDGE_MAX]
    if not examples:
        raise ValueError(
            f"{os.fspath(path)}: no example fits NODE_MAX={NODE_MAX}, EDGE_MAX={EDGE_MAX}."
        )
    if len({e.query is None for e in examples}) != 1:
        raise ValueError(f"{os.fspath(path)}: mixes shortest-path (query) and spanning-tree lines.")
    random_labels = shuffle if random_labels is None else bool(random_labels)
    return geometry.GroupedFileDataset(
        examples,
        _encode_examples,
        lambda e: len(e.edges),
        batch_size,
        num_batches=num_batches,
        seed=seed,
        shuffle=shuffle,
        random_labels=random_labels,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# metrics


def _summary(exact, optimal, ratios, count):
    return {
        "exact_match": exact / count,
        "optimal_fraction": optimal / count,
        "valid_fraction": len(ratios) / count,
        "num_valid": len(ratios),
        "num_invalid": count - len(ratios),
        "mean_cost_ratio": float(np.mean(ratios)) if ratios else float("nan"),
    }


def _cost_ratio(weights, answer, reference):
    best = path_cost(weights, reference)
    cost = path_cost(weights, answer)
    return cost / best if best > 0 else (1.0 if cost == 0 else float("inf"))


def shortest_path_metrics(examples, predictions):
    """Shortest-path metrics of decoded predictions against the examples' exact answers.

    Args:
        examples: sequence of `GraphExample` with a query; `output` is the reference path.
        predictions: sequence of int arrays of edge indices (from `decode_predictions`).

    Returns:
        dict with `exact_match` (same edge sequence as the reference), `optimal_fraction` (a valid
        path as cheap as the reference, ties included), `valid_fraction` (edges chaining from the
        source to the target without revisiting a node), `num_valid`, `num_invalid`, and
        `mean_cost_ratio` (path cost / optimal cost, over valid answers only; NaN if none).

    Example:

    >>> ex = GraphExample(3, np.array([[0, 1], [1, 2], [0, 2]]), np.array([1., 1., 3.]), (0, 2),
    ...                   np.array([0, 1]))
    >>> m = shortest_path_metrics([ex, ex, ex], [np.array([0, 1]), np.array([2]), np.array([1])])
    >>> m["exact_match"], m["valid_fraction"], m["mean_cost_ratio"]
    (0.3333333333333333, 0.6666666666666666, 1.25)
    """
    geometry._check_pairs(predictions, examples, name="examples")
    exact = optimal = 0
    ratios = []
    for example, pred in zip(examples, predictions):
        if example.query is None:
            raise ValueError("shortest_path_metrics needs examples with a query.")
        pred = np.asarray(pred, dtype=np.int64)
        exact += bool(np.array_equal(pred, example.output))
        if is_valid_path(example.edges, example.query[0], example.query[1], pred):
            ratio = _cost_ratio(example.weights, pred, example.output)
            ratios.append(ratio)
            optimal += bool(ratio <= 1.0 + 1e-9)
    return _summary(exact, optimal, ratios, len(predictions))


def mst_metrics(examples, predictions):
    """Minimum-spanning-tree metrics of decoded predictions against the exact trees.

    Args:
        examples: sequence of `GraphExample`; `output` is the reference tree in Kruskal order.
        predictions: sequence of int arrays of edge indices (from `decode_predictions`).

    Returns:
        dict with `exact_match` (same edge set as the reference, any order), `sequence_accuracy`
        (same edges in the same, Kruskal, order), `optimal_fraction` (a spanning tree of optimal
        weight, ties included), `valid_fraction` (N - 1 distinct edges forming a spanning tree),
        `num_valid`, `num_invalid` and `mean_cost_ratio` (tree weight / optimum, valid answers
        only; NaN if none).

    Example:

    >>> ex = GraphExample(3, np.array([[0, 1], [1, 2], [0, 2]]), np.array([2., 1., 3.]), None,
    ...                   np.array([1, 0]))
    >>> m = mst_metrics([ex, ex, ex], [np.array([0, 1]), np.array([1, 2]), np.array([1, 1])])
    >>> m["exact_match"], m["sequence_accuracy"], m["valid_fraction"]
    (0.3333333333333333, 0.0, 0.6666666666666666)
    >>> round(m["mean_cost_ratio"], 4)
    1.1667
    """
    geometry._check_pairs(predictions, examples, name="examples")
    exact = ordered = optimal = 0
    ratios = []
    for example, pred in zip(examples, predictions):
        pred = np.asarray(pred, dtype=np.int64)
        reference = np.asarray(example.output, dtype=np.int64)
        ordered += bool(np.array_equal(pred, reference))
        same_set = pred.size == reference.size and np.array_equal(np.sort(pred), np.sort(reference))
        if is_spanning_tree(example.num_nodes, example.edges, pred):
            exact += bool(same_set)
            ratio = _cost_ratio(example.weights, pred, reference)
            ratios.append(ratio)
            optimal += bool(ratio <= 1.0 + 1e-9)
    result = _summary(exact, optimal, ratios, len(predictions))
    result["sequence_accuracy"] = ordered / len(predictions)
    return result


# --------------------------------------------------------------------------------------------
# shapes and decoding that respects the task


def sequence_lengths(task, n_nodes, n_edges):
    """The encoded sequence lengths a graph run meets (see `geometry.bucket_lengths`).

    Args:
        task: str, `"shortest_path"` or `"mst"`.
        n_nodes, n_edges: `(low, high)` ranges (or ints).

    Returns:
        sorted tuple of ints: training lengths (a path of 1..N-1 edges, a tree of N - 1) and the
        evaluation length (every example decoded over N output steps).

    Example:

    >>> sequence_lengths("shortest_path", 5, 6), sequence_lengths("mst", (5, 6), 6)
    ((10, 11, 12, 13), (12, 13))
    """
    _check_task(task)
    (n_lo, n_hi), (e_lo, e_hi) = (
        np.broadcast_to(np.asarray(v, dtype=np.int64), 2).tolist() for v in (n_nodes, n_edges)
    )
    out = set()
    for n in range(n_lo, n_hi + 1):
        for e in range(e_lo, e_hi + 1):
            if task == "shortest_path":
                out.update(e + 2 + k + 1 for k in range(1, n))
                out.add(e + 2 + n)
            else:
                out.add(e + 1 + n)
    return tuple(sorted(out))


def path_rule(edges, source, target):
    """Rule of a shortest-path answer for `geometry.constrained_decode`.

    The first edge leaves the source, each next edge leaves the node reached, no node is visited
    twice, and the answer ends exactly when the target is reached.
    """
    edges = np.asarray(edges, dtype=np.int64)

    def rule(prefix):
        node, seen = int(source), {int(source)}
        for k in prefix:
            a, b = edges[k].tolist()
            node = b if node == a else a
            seen.add(node)
        if prefix and node == int(target):
            return np.zeros(len(edges), dtype=bool), True
        touches = (edges[:, 0] == node) | (edges[:, 1] == node)
        other = np.where(edges[:, 0] == node, edges[:, 1], edges[:, 0])
        return touches & ~np.isin(other, list(seen)), False

    return rule


def tree_rule(num_nodes, edges):
    """Rule of a spanning-tree answer: distinct edges that close no cycle, ending after N - 1."""
    edges = np.asarray(edges, dtype=np.int64)

    def rule(prefix):
        component = np.arange(int(num_nodes))
        for k in prefix:
            a, b = component[edges[k]]
            component[component == b] = a
        if len(prefix) == num_nodes - 1:
            return np.zeros(len(edges), dtype=bool), True
        return component[edges[:, 0]] != component[edges[:, 1]], False

    return rule


def example_rule(example):
    """The decoding rule of a `GraphExample`: `path_rule` with a query, else `tree_rule`."""
    if example.query is not None:
        return path_rule(example.edges, example.query[0], example.query[1])
    return tree_rule(example.num_nodes, example.edges)


def scores(task, answers, examples):
    """All figures of `geometry.predict_and_decode`'s answers, keys prefixed by decoding.

    Args:
        task: str, `"shortest_path"` (`shortest_path_metrics`) or `"mst"` (`mst_metrics`).
        answers: dict `{prefix: answers aligned with examples}`.
        examples: the `GraphExample`s (their outputs the exact answers).

    Returns:
        dict.
    """
    _check_task(task)
    metric = shortest_path_metrics if task == "shortest_path" else mst_metrics
    out = {}
    for prefix, predicted in answers.items():
        out.update({prefix + key: value for key, value in metric(examples, predicted).items()})
    return out
