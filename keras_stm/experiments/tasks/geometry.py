"""Convex hull and TSP: Pointer Networks files, exact solvers, encoding, decoding and metrics.

This module is the single home of the geometric-task protocol (reference sections 4.6 and 4.7).

**Examples.** An example is an `Example(points, output)`: `points` is an `(N, 2)` float array and
`output` the answer as **0-based point indices, without the closing repeat** (a hull or a tour is a
cycle; the file format closes it by repeating the first index, the in-memory form does not).

**File format** (Vinyals et al. 2015, Pointer Networks): one example per line,
`x1 y1 x2 y2 ... xN yN output i1 i2 ... ik i1`, with **1-based** indices and the cycle closed by
repeating its first index. `read_file` / `write_file` convert between the two forms.

**Canonical answers written by `generate`** (readers accept any order):

* convex hull: hull vertices only (points on an edge, collinear, are not vertices),
  counter-clockwise (x to the right, y up), starting at the hull vertex with the lowest index, as
  in the Pointer Networks data ("start from the lowest index, go counter-clockwise").
* TSP: the tour starts at city 1 (index 0); of its two directions, the one whose second city has the
  lower index is written.

**Encoding** (section 4.6; `N_MAX` = 20 points, `NUM_CLASSES` = 22 classes: 0 padding, 1..20 point
labels, 21 = `END`; input width `INPUT_WIDTH` = 24). Each point gets a label: a random permutation
of 1..N at training (`random_labels=True`), its position (label of point i is i + 1) at test. A
batch has one number of points N and `K` = (longest answer in the batch) + 1 output steps:

====================  ==========================================================================
time steps            content
====================  ==========================================================================
0 .. N-1              input row i = [x_i, y_i, one-hot(label_i) over 22 classes at column 2+label];
                      the last point (i = N-1) also has column 2 set (end of input)
N                     an all-zero row (the appended extra input row)
N+1 .. N+K            all-zero rows: the decoding steps
====================  ==========================================================================

* `x`: float32 `(B, N+1+K, 24)`.
* `y`: int32 `(B, N+1+K)`: 0 on the N+1 input steps; on output step k the label of the k-th point of
  the answer, then `END` (the closing repeated index of the file replaced by the end token), then 0.
  (The reference appends one padding 0 after the end token; here it is simply part of the padding
  and only appears where the batch has a longer answer.)
* `sample_weight`: float32 `(B, N+1+K)`: 1 where `y` holds a point label or `END` on an output step,
  else 0, so a masked sparse cross-entropy counts exactly the answer and its end token.

A model reads all `N+1+K` rows and emits `NUM_CLASSES` logits per step; the logits of the last `K`
steps (`y_pred[:, N+1:]`) are the answer. `decode_predictions` restricts them to the labels that
exist in the example (plus `END`), so the model always points at an input point, maps labels back to
point indices and stops at `END`.

**Metrics.** `hull_metrics`: `sequence_accuracy` (exact sequence, the primary metric of the Pointer
Networks / DAM protocol, where the answer starts at the first index given in the file, so a rotated
hull is wrong), `cyclic_accuracy` (any rotation of the right cycle in the same orientation counts,
reported for information) and `point_accuracy` (aligned output steps, end token included, that are
right). `tsp_metrics`: share of valid tours, mean length of valid tours, optimality gap (valid tours
only) and the mean length of invalid answers reported apart.

References:
    Vinyals, Fortunato, Jaitly, "Pointer Networks", NeurIPS 2015.
    Le, Tran, Venkatesh, "Self-Attentive Associative Memory", ICML 2020.
"""

import math
import os
from typing import NamedTuple

import keras
import numpy as np

from keras_stm.experiments.tasks.base import TaskDataset

N_MAX = 20
NUM_CLASSES = N_MAX + 2
PAD = 0
END = N_MAX + 1
INPUT_WIDTH = 2 + NUM_CLASSES
TASKS = ("convex_hull", "tsp")
DEFAULT_N_POINTS = {"convex_hull": (5, 20), "tsp": (5, 10)}
HELD_KARP_MAX = 12
_HELD_KARP_ELEMENTS = 4_000_000  # cap on the DP work array of one held_karp chunk
EXACT_TSP_MAX = 10
TSP_METHODS = ("auto", "exact", "two_opt")

__all__ = [
    "N_MAX",
    "NUM_CLASSES",
    "PAD",
    "END",
    "INPUT_WIDTH",
    "TASKS",
    "Example",
    "convex_hull",
    "convex_hull_batch",
    "held_karp",
    "two_opt",
    "solve_tsp",
    "tour_length",
    "solve",
    "encode",
    "make_batch",
    "dataset",
    "read_file",
    "write_file",
    "generate",
    "file_dataset",
    "GroupedFileDataset",
    "point_labels",
    "decode_predictions",
    "hull_metrics",
    "tsp_metrics",
]


class Example(NamedTuple):
    """One convex-hull or TSP example.

    Attributes:
        points: float array `(N, 2)`, the point coordinates.
        output: int array `(k,)`, the answer as 0-based point indices without the closing repeat.
    """

    points: np.ndarray
    output: np.ndarray


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_task(task):
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    return task


def _check_points(points, name="points"):
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[1] < 1:
        raise ValueError(f"`{name}` must have shape (batch, N, 2) with N >= 1, got {points.shape}.")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"`{name}` must be finite.")
    return points


def _as_batch(points):
    """Returns `(points as (B, N, 2), was_single)`."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 2:
        return _check_points(points[None]), True
    return _check_points(points), False


def _draw_size(rng, value, name, low_limit, high_limit):
    """Draws one int from `value` (an int or an inclusive `(low, high)` range)."""
    if isinstance(value, (int, np.integer)):
        low = high = int(value)
    else:
        try:
            low, high = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(
                f"`{name}` must be an int or a (low, high) pair, got {value!r}."
            ) from None
    if not low_limit <= low <= high <= high_limit:
        raise ValueError(
            f"`{name}` must lie in [{low_limit}, {high_limit}] with low <= high, got {value!r}."
        )
    return low if low == high else int(rng.integers(low, high + 1))


def random_label_permutation(rng, batch_size, n):
    """Draws one random permutation of the labels 1..n per example.

    Args:
        rng: `np.random.Generator`.
        batch_size: int, number of examples.
        n: int, number of labelled items per example.

    Returns:
        int64 array `(batch_size, n)`, each row a permutation of 1..n.

    Example:

    >>> labels = random_label_permutation(np.random.default_rng(0), 2, 4)
    >>> sorted(labels[0].tolist())
    [1, 2, 3, 4]
    """
    return np.argsort(rng.random((batch_size, n)), axis=1) + 1


# --------------------------------------------------------------------------------------------
# exact solvers


def _cross(o, a, b):
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0]
    )


def _chain(sorted_points, order):
    """One monotone-chain half hull, batched: returns (stack (B, N) of sorted positions, sizes)."""
    batch, n = sorted_points.shape[:2]
    rows = np.arange(batch)
    stack = np.zeros((batch, n), dtype=np.int64)
    size = np.zeros(batch, dtype=np.int64)
    for t in order:
        p = sorted_points[:, t]
        while True:
            can = size >= 2
            a = sorted_points[rows, stack[rows, np.maximum(size - 2, 0)]]
            b = sorted_points[rows, stack[rows, np.maximum(size - 1, 0)]]
            pop = can & (_cross(a, b, p) <= 0)
            if not pop.any():
                break
            size -= pop
        stack[rows, size] = t
        size += 1
    return stack, size


def convex_hull_batch(points):
    """Convex hulls of a batch of point sets (Andrew's monotone chain, vectorised over the batch).

    The hull keeps vertices only (collinear points on an edge are dropped), runs counter-clockwise
    (x right, y up) and starts at the hull vertex with the lowest index.

    Args:
        points: float array `(B, N, 2)`.

    Returns:
        `(hull, sizes)`: int64 `(B, N)` hull indices padded with -1, and int64 `(B,)` hull sizes.

    Example:

    >>> square = np.array([[[0., 0.], [1., 1.], [0.5, 0.5], [1., 0.], [0., 1.]]])
    >>> hull, sizes = convex_hull_batch(square)
    >>> hull[0, :sizes[0]].tolist()
    [0, 3, 1, 4]
    """
    points = _check_points(points)
    batch, n = points.shape[:2]
    order = np.lexsort((points[..., 1], points[..., 0]), axis=-1)
    sorted_points = np.take_along_axis(points, order[..., None], axis=1)
    lower, lsize = _chain(sorted_points, range(n))
    upper, usize = _chain(sorted_points, range(n - 1, -1, -1))
    cols = np.arange(n)
    both = np.concatenate([lower, upper], axis=1)
    valid = np.concatenate([cols < (lsize - 1)[:, None], cols < (usize - 1)[:, None]], axis=1)
    sizes = valid.sum(axis=1)
    if n == 1:
        sizes[:] = 1
        valid[:, 0] = True
    compact = np.argsort(~valid, axis=1, kind="stable")[:, :n]
    positions = np.take_along_axis(both, compact, axis=1)
    ids = np.take_along_axis(order, positions, axis=1)
    cols_valid = cols < sizes[:, None]
    start = np.argmin(np.where(cols_valid, ids, np.iinfo(np.int64).max), axis=1)
    rolled = (start[:, None] + cols) % np.maximum(sizes, 1)[:, None]
    hull = np.where(cols_valid, np.take_along_axis(ids, rolled, axis=1), -1)
    return hull, sizes


def convex_hull(points):
    """Convex hull of one point set (see `convex_hull_batch` for the conventions).

    Args:
        points: float array `(N, 2)`.

    Returns:
        int64 array of hull vertex indices, counter-clockwise from the lowest index.

    Example:

    >>> convex_hull([[0, 0], [2, 0], [1, 1], [2, 2], [0, 2]]).tolist()
    [0, 1, 3, 4]
    """
    points, single = _as_batch(points)
    if not single:
        raise ValueError(f"`points` must have shape (N, 2), got {points.shape}.")
    hull, sizes = convex_hull_batch(points)
    return hull[0, : sizes[0]]


def _distances(points):
    diff = points[:, :, None, :] - points[:, None, :, :]
    return np.sqrt((diff**2).sum(-1))


def tour_length(points, tour):
    """Length of a closed tour (the last city connects back to the first).

    Args:
        points: float array `(N, 2)`, or `(B, N, 2)` for a batch.
        tour: int array `(k,)` of point indices, or `(B, k)` for a batch.

    Returns:
        float (or float array `(B,)`), the Euclidean length of the closed tour.

    Example:

    >>> tour_length([[0, 0], [3, 0], [3, 4]], [0, 1, 2])
    12.0
    """
    points = np.asarray(points, dtype=np.float64)
    tour = np.asarray(tour, dtype=np.int64)
    single = points.ndim == 2
    if single:
        points, tour = points[None], tour[None]
    if points.ndim != 3 or tour.ndim != 2 or tour.shape[0] != points.shape[0]:
        raise ValueError(
            f"`points` {points.shape} and `tour` {tour.shape} must be (N, 2) and (k,), or "
            f"(B, N, 2) and (B, k)."
        )
    if tour.size and (tour.min() < 0 or tour.max() >= points.shape[1]):
        raise ValueError(f"`tour` indices must lie in [0, {points.shape[1]}).")
    seq = np.take_along_axis(points, tour[..., None], axis=1)
    nxt = np.roll(seq, -1, axis=1)
    lengths = np.sqrt(((seq - nxt) ** 2).sum(-1)).sum(-1)
    return float(lengths[0]) if single else lengths


def _canonical_tours(tours):
    """Rotates tours to start at city 0 and picks the direction with the lower second city."""
    tours = np.asarray(tours, dtype=np.int64)
    batch, n = tours.shape
    if n <= 2:
        start = np.argmin(tours, axis=1)
        return np.take_along_axis(tours, (start[:, None] + np.arange(n)) % n, axis=1)
    start = np.argmax(tours == 0, axis=1)
    rolled = np.take_along_axis(tours, (start[:, None] + np.arange(n)) % n, axis=1)
    flip = rolled[:, 1] > rolled[:, -1]
    reverse = np.concatenate([rolled[:, :1], rolled[:, :0:-1]], axis=1)
    return np.where(flip[:, None], reverse, rolled)


def held_karp(points):
    """Optimal TSP tours by Held-Karp dynamic programming, vectorised over the batch.

    Time and memory grow as `2^N N^2`, so N is limited to `HELD_KARP_MAX` = 12.

    Args:
        points: float array `(B, N, 2)` (or `(N, 2)` for one instance), 1 <= N <= 12.

    Returns:
        `(tours, lengths)`: int64 `(B, N)` optimal tours (canonical: city 0 first, the direction
        with the lower second city) and float64 `(B,)` their lengths (unbatched for one instance).

    Example:

    >>> tour, length = held_karp([[0, 0], [1, 1], [1, 0], [0, 1]])
    >>> tour.tolist(), round(length, 6)
    ([0, 2, 1, 3], 4.0)
    """
    points, single = _as_batch(points)
    batch, n = points.shape[:2]
    if n > HELD_KARP_MAX:
        raise ValueError(f"held_karp supports at most {HELD_KARP_MAX} points, got N={n}.")
    widest_layer = math.comb(n - 1, (n - 1) // 2)
    chunk = max(1, _HELD_KARP_ELEMENTS // (widest_layer * n * n))
    if batch > chunk:
        parts = [held_karp(points[s : s + chunk]) for s in range(0, batch, chunk)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if n <= 3:
        tours = np.tile(np.arange(n), (batch, 1))
    else:
        dist = _distances(points)
        m = n - 1  # cities 1..n-1 are bits 0..m-1
        full = (1 << m) - 1
        # dp[S, j, b]: shortest path from city 0 through the cities of S, ending at city j + 1.
        # Batch last keeps every gather contiguous; no parent table is stored: the tour is
        # recovered afterwards by re-running the (cheap) minimisation along the optimal path.
        step_cost = np.transpose(dist[:, 1:, 1:], (2, 1, 0))  # (j, k, B) = d(k+1, j+1)
        dp = np.full((1 << m, m, batch), np.inf)
        bits = 1 << np.arange(m)
        dp[bits, np.arange(m)] = dist[:, 0, 1:].T
        masks = np.arange(1 << m)
        popcount = np.array([bin(v).count("1") for v in masks])
        for count in range(2, m + 1):
            layer = masks[popcount == count]
            subset, last = np.nonzero((layer[:, None] & bits[None]) != 0)  # pairs j in S
            subset = layer[subset]
            value = (dp[subset ^ bits[last]] + step_cost[last]).min(axis=1)  # (pairs, B)
            dp[subset, last] = value
        closing = dp[full] + dist[:, 1:, 0].T  # (m, B)
        city = np.argmin(closing, axis=0)
        rows = np.arange(batch)
        mask = np.full(batch, full)
        reverse = np.zeros((batch, m), dtype=np.int64)
        for step in range(m):
            reverse[:, step] = city + 1
            mask = mask ^ (1 << city)
            if step < m - 1:
                before = dp[mask[None, :], np.arange(m)[:, None], rows[None, :]]  # (k, B)
                city = np.argmin(before + step_cost[city, :, rows].T, axis=0)
        tours = np.concatenate([np.zeros((batch, 1), dtype=np.int64), reverse[:, ::-1]], axis=1)
    tours = _canonical_tours(tours)
    lengths = tour_length(points, tours)
    return (tours[0], float(lengths[0])) if single else (tours, lengths)


def _nearest_neighbour_tours(dist):
    batch, n = dist.shape[:2]
    rows = np.arange(batch)
    visited = np.zeros((batch, n), dtype=bool)
    tours = np.zeros((batch, n), dtype=np.int64)
    visited[:, 0] = True
    for step in range(1, n):
        here = tours[:, step - 1]
        d = np.where(visited, np.inf, dist[rows, here])
        nxt = np.argmin(d, axis=1)
        tours[:, step] = nxt
        visited[rows, nxt] = True
    return tours


def two_opt(points, rng, num_starts=8, max_rounds=None):
    """Short TSP tours by 2-opt local search from several starts (a heuristic, not exact).

    Start 0 is the nearest-neighbour tour from city 0, the others are random permutations. Each
    round applies, to every tour, its best improving 2-opt move (segment reversal); the search
    stops when no tour improves (a 2-opt local optimum) or after `max_rounds`. The shortest of the
    starts is kept. The result is **not guaranteed optimal**. Measured with 8 starts on uniform
    points: N = 10, 255 of 256 tours optimal (mean gap 1.5e-6); N = 12, 64 of 64 optimal; N = 20,
    mean length 3.838 against 3.834 with 32 starts. A batch of 128 with N = 20 takes about 0.4 s,
    so make larger-N TSP data offline with `generate`.

    Args:
        points: float array `(B, N, 2)` (or `(N, 2)`).
        rng: `np.random.Generator` for the random starts.
        num_starts: int, number of starts per instance (>= 1). Defaults to 8.
        max_rounds: int or None, cap on improvement rounds; None means `10 * N`.

    Returns:
        `(tours, lengths)` as in `held_karp`.

    Example:

    >>> pts = np.random.default_rng(0).random((15, 2))
    >>> tour, length = two_opt(pts, np.random.default_rng(1))
    >>> sorted(tour.tolist()) == list(range(15))
    True
    """
    points, single = _as_batch(points)
    if not isinstance(num_starts, (int, np.integer)) or num_starts < 1:
        raise ValueError(f"`num_starts` must be a positive integer, got {num_starts!r}.")
    batch, n = points.shape[:2]
    if n <= 3:
        return held_karp(points[0] if single else points)
    max_rounds = 10 * n if max_rounds is None else int(max_rounds)
    dist = _distances(points)
    starts = [_nearest_neighbour_tours(dist)]
    if num_starts > 1:
        rand = np.argsort(rng.random((batch, num_starts - 1, n)), axis=-1)
        starts += [rand[:, s] for s in range(num_starts - 1)]
    tours = np.stack(starts, axis=1).reshape(batch * num_starts, n)
    tdist = np.repeat(dist, num_starts, axis=0)
    i_idx, j_idx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    legal = (j_idx >= i_idx + 2) & ~((i_idx == 0) & (j_idx == n - 1))
    pos = np.arange(n)
    active = np.arange(tours.shape[0])  # tours not yet at a 2-opt local optimum
    for _ in range(max_rounds):
        cur, dist_a = tours[active], tdist[active]
        count = active.size
        rows = np.arange(count)
        nxt = np.roll(cur, -1, axis=1)
        edge = dist_a[rows[:, None], cur, nxt]  # d(a_i, a_{i+1})
        d_aa = dist_a[rows[:, None, None], cur[:, :, None], cur[:, None, :]]
        d_bb = dist_a[rows[:, None, None], nxt[:, :, None], nxt[:, None, :]]
        gain = edge[:, :, None] + edge[:, None, :] - d_aa - d_bb
        gain = np.where(legal[None], gain, -np.inf).reshape(count, -1)
        best = np.argmax(gain, axis=1)
        improve = gain[rows, best] > 1e-12
        if not improve.any():
            break
        i, j = best[improve] // n, best[improve] % n
        inside = (pos[None] >= i[:, None] + 1) & (pos[None] <= j[:, None])
        source = np.where(inside, i[:, None] + 1 + j[:, None] - pos[None], pos[None])
        active = active[improve]
        tours[active] = np.take_along_axis(tours[active], source, axis=1)
    lengths = tour_length(np.repeat(points, num_starts, axis=0), tours).reshape(batch, num_starts)
    pick = np.argmin(lengths, axis=1)
    tours = tours.reshape(batch, num_starts, n)[np.arange(batch), pick]
    tours = _canonical_tours(tours)
    lengths = tour_length(points, tours)
    return (tours[0], float(lengths[0])) if single else (tours, lengths)


def solve_tsp(points, rng=None, method="auto", num_starts=8):
    """TSP tours: exact Held-Karp or 2-opt from several starts.

    Args:
        points: float array `(B, N, 2)` (or `(N, 2)`).
        rng: `np.random.Generator`, needed for `two_opt` (random starts). Defaults to a generator
            seeded with 0.
        method: str, `"exact"` (Held-Karp, N <= 12), `"two_opt"` (heuristic), or `"auto"`
            (exact for N <= 10, else 2-opt). Defaults to `"auto"`.
        num_starts: int, starts of the 2-opt search. Defaults to 8.

    Returns:
        `(tours, lengths)` as in `held_karp`.

    Example:

    >>> tour, length = solve_tsp([[0, 0], [0, 1], [1, 1], [1, 0]])
    >>> tour.tolist()
    [0, 1, 2, 3]
    """
    if method not in TSP_METHODS:
        raise ValueError(f"`method` must be one of {TSP_METHODS}, got {method!r}.")
    n = np.asarray(points).shape[-2]
    if method == "exact" or (method == "auto" and n <= EXACT_TSP_MAX):
        return held_karp(points)
    rng = np.random.default_rng(0) if rng is None else rng
    return two_opt(points, rng, num_starts=num_starts)


def solve(task, points, rng=None, method="auto", num_starts=8):
    """Answers for a batch of point sets: hulls or tours, as lists of 0-based index arrays.

    Args:
        task: str, `"convex_hull"` or `"tsp"`.
        points: float array `(B, N, 2)`.
        rng: `np.random.Generator` (2-opt starts only). Defaults to a generator seeded with 0.
        method: str, TSP solver (see `solve_tsp`). Defaults to `"auto"`.
        num_starts: int, 2-opt starts. Defaults to 8.

    Returns:
        list of B int64 arrays (hull vertices or tours, no closing repeat).

    Example:

    >>> solve("convex_hull", np.array([[[0., 0.], [1., 0.], [0., 1.]]]))[0].tolist()
    [0, 1, 2]
    """
    _check_task(task)
    points = _check_points(points)
    if task == "convex_hull":
        hull, sizes = convex_hull_batch(points)
        return [hull[b, : sizes[b]] for b in range(points.shape[0])]
    tours, _ = solve_tsp(points, rng=rng, method=method, num_starts=num_starts)
    return list(tours)


# --------------------------------------------------------------------------------------------
# encoding and decoding


def encode(points, outputs, rng=None, random_labels=False):
    """Encodes a batch of examples with one number of points into model arrays.

    See the module docstring for the layout.

    Args:
        points: float array `(B, N, 2)`, 1 <= N <= `N_MAX`.
        outputs: sequence of B int arrays, the answers (0-based indices, no closing repeat).
        rng: `np.random.Generator`, required when `random_labels` is True.
        random_labels: bool, random permutation labels (training) instead of labels = position + 1
            (test). Defaults to False.

    Returns:
        `(x, y, sample_weight, labels)`: float32 `(B, N+1+K, 24)`, int32 `(B, N+1+K)`, float32
        `(B, N+1+K)` and int64 `(B, N)`, the label of each point, with K = longest answer + 1.

    Example:

    >>> x, y, w, labels = encode(np.zeros((1, 3, 2)), [np.array([0, 2])])
    >>> x.shape, y[0].tolist(), w[0].tolist()
    ((1, 7, 24), [0, 0, 0, 0, 1, 3, 21], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    """
    points = _check_points(points)
    batch, n = points.shape[:2]
    if n > N_MAX:
        raise ValueError(f"`points` has N={n} points; at most N_MAX={N_MAX} can be encoded.")
    if len(outputs) != batch:
        raise ValueError(f"`outputs` must hold {batch} answers, got {len(outputs)}.")
    lens = np.array([len(o) for o in outputs], dtype=np.int64)
    if lens.min() < 1:
        raise ValueError("every answer in `outputs` must hold at least one index.")
    steps = int(lens.max()) + 1
    padded = np.full((batch, steps - 1), -1, dtype=np.int64)
    for b, out in enumerate(outputs):
        padded[b, : lens[b]] = out
    if padded.max() >= n or np.any(padded[np.arange(steps - 1)[None] < lens[:, None]] < 0):
        raise ValueError(f"`outputs` indices must lie in [0, {n}).")
    if random_labels:
        if rng is None:
            raise ValueError("`rng` is required when `random_labels` is True.")
        labels = random_label_permutation(rng, batch, n)
    else:
        labels = np.tile(np.arange(1, n + 1), (batch, 1))
    total = n + 1 + steps
    x = np.zeros((batch, total, INPUT_WIDTH), dtype=np.float32)
    x[:, :n, :2] = points
    rows = np.arange(batch)[:, None]
    x[rows, np.arange(n)[None], 2 + labels] = 1.0
    x[:, n - 1, 2] = 1.0
    y = np.zeros((batch, total), dtype=np.int32)
    answer = np.where(padded >= 0, np.take_along_axis(labels, np.maximum(padded, 0), axis=1), PAD)
    y[:, n + 1 : n + steps] = answer
    y[np.arange(batch), n + 1 + lens] = END
    sample_weight = (y != PAD).astype(np.float32)
    return x, y, sample_weight, labels


def point_labels(x):
    """Reads the label of every input row back from encoded inputs.

    Args:
        x: float array `(B, T, 24)` as made by `encode`.

    Returns:
        int64 `(B, T)`: the label (1..20) of each point row, 0 for the other rows; index i is the
        label of point i.

    Example:

    >>> x, _, _, labels = encode(np.zeros((1, 3, 2)), [np.array([0])])
    >>> point_labels(x)[0].tolist()
    [1, 2, 3, 0, 0, 0]
    """
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] != INPUT_WIDTH:
        raise ValueError(f"`x` must have shape (B, T, {INPUT_WIDTH}), got {x.shape}.")
    block = x[..., 3 : 3 + N_MAX]
    return np.where(block.max(axis=-1) > 0, np.argmax(block, axis=-1) + 1, 0).astype(np.int64)


def decode_predictions(logits_or_labels, labels_of_points, skip=0, end_token=END):
    """Maps predicted output steps back to input indices, pointing only at labels that exist.

    With logits (or probabilities), each step takes the argmax over the labels present in the
    example plus the end token, so the model always points at an input item. With integer labels,
    a label not present in the example decodes to -1. Decoding stops at the first end token; if no
    end token is emitted, a -1 is appended so the answer can never count as right or valid.

    Args:
        logits_or_labels: float `(B, K, C)` scores or int `(B, K)` labels of the output steps
            (or of the whole sequence, with `skip` leading steps to drop); numpy arrays (convert
            backend tensors with `keras.ops.convert_to_numpy`).
        labels_of_points: int `(B, M)`, the label of input item i at position i, 0 for none (as
            returned by `point_labels` or `encode`).
        skip: int, leading time steps to drop, e.g. `N + 1` for a whole-sequence prediction.
            Defaults to 0.
        end_token: int, the end label. Defaults to `END` (21).

    Returns:
        list of B int64 arrays of 0-based input indices.

    Example:

    >>> logits = np.zeros((1, 3, NUM_CLASSES))
    >>> logits[0, 0, 2] = logits[0, 1, 9] = logits[0, 1, 1] = logits[0, 2, END] = 1.0
    >>> [a.tolist() for a in decode_predictions(logits, np.array([[2, 1, 0]]))]
    [[0, 1]]
    """
    pred = np.asarray(logits_or_labels)
    labels = np.asarray(labels_of_points, dtype=np.int64)
    if labels.ndim != 2:
        raise ValueError(f"`labels_of_points` must have shape (B, M), got {labels.shape}.")
    if pred.ndim not in (2, 3) or pred.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`logits_or_labels` must be (B, K, C) scores or (B, K) labels with B="
            f"{labels.shape[0]}, got shape {pred.shape}."
        )
    if not isinstance(skip, (int, np.integer)) or not 0 <= skip < pred.shape[1]:
        raise ValueError(f"`skip` must be an int in [0, {pred.shape[1]}), got {skip!r}.")
    pred = pred[:, skip:]
    batch = labels.shape[0]
    classes = pred.shape[-1] if pred.ndim == 3 else max(int(labels.max(initial=0)), end_token) + 1
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= classes or end_token >= classes:
        raise ValueError(f"labels and `end_token` must lie in [0, {classes}).")
    rows, cols = np.nonzero(labels > 0)
    inverse = np.full((batch, classes), -1, dtype=np.int64)
    inverse[rows, labels[rows, cols]] = cols
    if pred.ndim == 3:
        allowed = inverse >= 0
        allowed[:, end_token] = True
        scores = np.where(allowed[:, None, :], pred.astype(np.float64), -np.inf)
        chosen = np.argmax(scores, axis=-1)
    else:
        chosen = pred.astype(np.int64)
    in_range = (chosen >= 0) & (chosen < classes)
    index = np.where(
        in_range, inverse[np.arange(batch)[:, None], np.clip(chosen, 0, classes - 1)], -1
    )
    is_end = chosen == end_token
    results = []
    for b in range(batch):
        stops = np.flatnonzero(is_end[b])
        if stops.size:
            results.append(index[b, : stops[0]].copy())
        else:
            results.append(np.append(index[b], -1))
    return results


# --------------------------------------------------------------------------------------------
# batches


def make_batch(
    rng,
    batch_size,
    task,
    n_points=None,
    random_labels=True,
    return_info=False,
    method="auto",
    num_starts=8,
):
    """Makes one batch of fresh random examples (points uniform in the unit square).

    Args:
        rng: `np.random.Generator`.
        batch_size: int, examples in the batch.
        task: str, `"convex_hull"` or `"tsp"`.
        n_points: int or inclusive `(low, high)` range, points per example; one N is drawn per
            batch. Defaults to (5, 20) for the convex hull and (5, 10) for TSP (exact tours).
        random_labels: bool, random permutation labels (training) or labels = position (test).
            Defaults to True.
        return_info: bool, also return a dict with `points` (B, N, 2), `targets` (list of answer
            index arrays), `labels` (B, N) and `num_inputs` (N + 1). Defaults to False.
        method: str, TSP solver (see `solve_tsp`). Defaults to `"auto"`.
        num_starts: int, 2-opt starts. Defaults to 8.

    Returns:
        `(x, y, sample_weight)` (see the module docstring), plus the info dict if requested.

    Example:

    >>> x, y, w = make_batch(np.random.default_rng(0), 4, "tsp", n_points=6)
    >>> x.shape, y.shape, int(w.sum())
    ((4, 14, 24), (4, 14), 28)
    """
    _check_task(task)
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    n_points = DEFAULT_N_POINTS[task] if n_points is None else n_points
    n = _draw_size(rng, n_points, "n_points", 3 if task == "convex_hull" else 1, N_MAX)
    points = rng.random((int(batch_size), n, 2))
    targets = solve(task, points, rng=rng, method=method, num_starts=num_starts)
    x, y, sample_weight, labels = encode(points, targets, rng=rng, random_labels=random_labels)
    if return_info:
        info = {"points": points, "targets": targets, "labels": labels, "num_inputs": n + 1}
        return x, y, sample_weight, info
    return x, y, sample_weight


def dataset(
    batch_size,
    num_batches,
    seed=0,
    fixed=False,
    task="convex_hull",
    n_points=None,
    random_labels=None,
    method="auto",
    num_starts=8,
    **kwargs,
):
    """A seeded stream of random convex-hull or TSP batches for `model.fit`.

    Args:
        batch_size: int, examples per batch.
        num_batches: int, batches per epoch.
        seed: int, base seed. Defaults to 0.
        fixed: bool, repeat the same batches every epoch (an evaluation set). Defaults to False.
        task: str, `"convex_hull"` or `"tsp"`. Defaults to `"convex_hull"`.
        n_points: int or `(low, high)`, see `make_batch`.
        random_labels: bool or None; None means random labels unless `fixed` (training draws
            random labels, evaluation uses labels = position). Defaults to None.
        method: str, TSP solver. Defaults to `"auto"`.
        num_starts: int, 2-opt starts. Defaults to 8.
        **kwargs: forwarded to `TaskDataset` (`workers`, `use_multiprocessing`, ...).

    Returns:
        `TaskDataset` yielding `(x, y, sample_weight)`.

    Example:

    >>> data = dataset(8, 2, seed=1, task="convex_hull", n_points=10)
    >>> x, y, w = data[0]
    >>> x.shape[0], x.shape[2]
    (8, 24)
    """
    _check_task(task)
    random_labels = (not fixed) if random_labels is None else bool(random_labels)

    def batch_fn(rng, size):
        return make_batch(
            rng,
            size,
            task,
            n_points=n_points,
            random_labels=random_labels,
            method=method,
            num_starts=num_starts,
        )

    return TaskDataset(batch_fn, batch_size, num_batches, seed=seed, fixed=fixed, **kwargs)


# --------------------------------------------------------------------------------------------
# files


def _open_lines(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path!r}")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not UTF-8 text ({error.reason} at "
                    f"byte {error.start} of the line)."
                ) from None
            yield path, number, line


def _parse_line(path, number, line, task=None):
    def fail(message):
        raise ValueError(f"{path}, line {number}: {message}")

    tokens = line.split()
    if tokens.count("output") != 1:
        fail("expected exactly one 'output' separator between the coordinates and the indices.")
    cut = tokens.index("output")
    coords, indices = tokens[:cut], tokens[cut + 1 :]
    if not coords or len(coords) % 2:
        fail(f"expected an even, non-zero number of coordinates, got {len(coords)}.")
    try:
        values = np.array([float(v) for v in coords], dtype=np.float64)
    except ValueError as err:
        fail(f"bad coordinate ({err}).")
    if not np.all(np.isfinite(values)):
        fail("coordinates must be finite.")
    n = len(coords) // 2
    try:
        ids = np.array([int(v) for v in indices], dtype=np.int64)
    except ValueError as err:
        fail(f"bad index ({err}).")
    if ids.size < 2:
        fail("expected at least two output indices (the cycle closed by its first index).")
    if ids.min() < 1 or ids.max() > n:
        fail(f"output indices must be 1-based in [1, {n}], got {ids.min()}..{ids.max()}.")
    if ids[0] != ids[-1]:
        fail(f"the output cycle must end with its first index {ids[0]}, got {ids[-1]}.")
    if task == "tsp" and (ids.size - 1 != n or len(set(ids[:-1].tolist())) != n):
        fail(
            f"a TSP tour must visit each of the {n} cities exactly once, got "
            f"{ids.size - 1} indices ({len(set(ids[:-1].tolist()))} distinct)."
        )
    return Example(values.reshape(n, 2), ids[:-1] - 1)


def read_file(path, task=None):
    """Reads a Pointer Networks convex-hull or TSP text file.

    Blank lines are skipped. The indices are checked (1-based, in range, cycle closed by its
    first index); repeated indices inside the cycle are kept as they are, except that with
    `task="tsp"` every tour must visit each city exactly once.

    Args:
        path: str or path-like, the text file.
        task: None (default: any answer) or `"tsp"` (complete tours only).

    Returns:
        list of `Example` (0-based answers without the closing repeat).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on a corrupt line, naming the file and the line number.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hull.txt"
    >>> _ = path.write_text("0 0 1 0 0 1 0.2 0.2 output 1 2 3 1\\n")
    >>> example = read_file(path)[0]
    >>> example.points.shape, example.output.tolist()
    ((4, 2), [0, 1, 2])
    """
    examples = []
    for name, number, line in _open_lines(path):
        if line.strip():
            examples.append(_parse_line(name, number, line, task))
    return examples


def _check_example(example, position, name="examples"):
    try:
        points, output = example
    except (TypeError, ValueError):
        raise ValueError(f"`{name}[{position}]` must be a (points, output) pair.") from None
    points = np.asarray(points, dtype=np.float64)
    output = np.asarray(output, dtype=np.int64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 1:
        raise ValueError(f"`{name}[{position}].points` must have shape (N, 2), got {points.shape}.")
    if output.ndim != 1 or output.size < 1:
        raise ValueError(f"`{name}[{position}].output` must be a non-empty 1-D index array.")
    if output.min() < 0 or output.max() >= points.shape[0]:
        raise ValueError(f"`{name}[{position}].output` indices must lie in [0, {points.shape[0]}).")
    return Example(points, output)


def write_file(path, examples):
    """Writes examples in the Pointer Networks text format (1-based, cycle closed).

    Coordinates are written with Python's shortest round-trip float format, so `read_file` gives
    back exactly the same numbers.

    Args:
        path: str or path-like, the file to (over)write.
        examples: iterable of `Example` or `(points, output)` pairs.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tsp.txt"
    >>> write_file(path, [Example(np.array([[0., 0.], [0.5, 1.]]), np.array([0, 1]))])
    >>> path.read_text()
    '0.0 0.0 0.5 1.0 output 1 2 1\\n'
    """
    lines = []
    for position, example in enumerate(examples):
        points, output = _check_example(example, position)
        coords = " ".join(repr(v) for v in points.reshape(-1).tolist())
        ids = " ".join(str(v) for v in (np.append(output, output[0]) + 1).tolist())
        lines.append(f"{coords} output {ids}\n")
    with open(os.fspath(path), "w", encoding="utf-8") as handle:
        handle.writelines(lines)


def generate(
    path,
    task,
    num_examples,
    n_points,
    seed=0,
    decimals=6,
    method="auto",
    num_starts=8,
    chunk_size=512,
):
    """Generates new examples with the solvers of this module and writes them to a file.

    Points are uniform in the unit square, rounded to `decimals` places **before** solving, so the
    answers in the file are right for the coordinates in the file. Hulls are exact; tours are exact
    (Held-Karp) for N <= 10 with `method="auto"` and 2-opt heuristic tours above (documented as
    such; use `method="exact"` for N <= 12).

    Args:
        path: str or path-like, output file (or None to only return the examples).
        task: str, `"convex_hull"` or `"tsp"`.
        num_examples: int, number of examples.
        n_points: int or inclusive `(low, high)` range; N is drawn per example.
        seed: int, seed of the generator. Defaults to 0.
        decimals: int or None, rounding of the coordinates. Defaults to 6.
        method: str, TSP solver (see `solve_tsp`). Defaults to `"auto"`.
        num_starts: int, 2-opt starts. Defaults to 8.
        chunk_size: int, examples solved at once. Defaults to 512.

    Returns:
        list of `Example`, in file order.

    Example:

    >>> examples = generate(None, "tsp", 3, 5, seed=0)
    >>> len(examples), int(examples[0].output[0])
    (3, 0)
    """
    _check_task(task)
    for name, value in (("num_examples", num_examples), ("chunk_size", chunk_size)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    rng = np.random.default_rng(seed)
    sizes = np.array([_draw_size(rng, n_points, "n_points", 1, 10**6) for _ in range(num_examples)])
    examples = [None] * num_examples
    for n in np.unique(sizes):
        where = np.flatnonzero(sizes == n)
        for start in range(0, where.size, chunk_size):
            chunk = where[start : start + chunk_size]
            points = rng.random((chunk.size, int(n), 2))
            if decimals is not None:
                points = np.round(points, int(decimals))
            answers = solve(task, points, rng=rng, method=method, num_starts=num_starts)
            for k, idx in enumerate(chunk):
                examples[idx] = Example(points[k], answers[k])
    if path is not None:
        write_file(path, examples)
    return examples


class GroupedFileDataset(keras.utils.PyDataset):
    """Batches of examples read from a file, one group (e.g. one number of points) per batch.

    In shuffle mode every batch (of any epoch) is drawn from a generator seeded with
    `(seed, epoch, index)`: one group is chosen with probability proportional to its size and
    `batch_size` of its examples without replacement (all of them if the group is smaller).
    In ordered mode the batches walk through every example exactly once, group by group in
    increasing key order, and the same batches repeat every epoch (an evaluation pass).

    Args:
        examples: list of examples.
        encode_fn: callable `(examples, rng, random_labels) -> tuple` making the batch arrays.
        key_fn: callable `example -> hashable`, the group of an example.
        batch_size: int, examples per batch.
        num_batches: int or None, batches per epoch in shuffle mode; None means
            `ceil(len(examples) / batch_size)`. Ignored in ordered mode.
        seed: int, base seed. Defaults to 0.
        shuffle: bool, shuffle mode (training) or ordered mode (evaluation). Defaults to True.
        random_labels: bool, passed to `encode_fn`. Defaults to True.
        **kwargs: forwarded to `keras.utils.PyDataset`.

    Example:

    >>> exs = generate(None, "convex_hull", 10, (5, 6), seed=0)
    >>> data = GroupedFileDataset(exs, _encode_examples, lambda e: len(e.points), 4, shuffle=False)
    >>> sum(len(data.batch_indices(i)) for i in range(len(data)))
    10
    """

    def __init__(
        self,
        examples,
        encode_fn,
        key_fn,
        batch_size,
        num_batches=None,
        seed=0,
        shuffle=True,
        random_labels=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if not examples:
            raise ValueError("`examples` is empty: nothing to batch.")
        self.examples = list(examples)
        self.encode_fn = encode_fn
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.random_labels = bool(random_labels)
        self.epoch = 0
        keys = [key_fn(e) for e in self.examples]
        self.keys = sorted(set(keys))
        self.groups = [np.array([i for i, k in enumerate(keys) if k == key]) for key in self.keys]
        if self.shuffle:
            if num_batches is None:
                num_batches = math.ceil(len(self.examples) / self.batch_size)
            if not isinstance(num_batches, (int, np.integer)) or num_batches <= 0:
                raise ValueError(f"`num_batches` must be a positive integer, got {num_batches!r}.")
            self._num_batches = int(num_batches)
            sizes = np.array([g.size for g in self.groups], dtype=np.float64)
            self._probs = sizes / sizes.sum()
        else:
            self._ordered = [
                g[s : s + self.batch_size]
                for g in self.groups
                for s in range(0, g.size, self.batch_size)
            ]
            self._num_batches = len(self._ordered)

    def __len__(self):
        return self._num_batches

    def _select(self, index):
        if not 0 <= index < self._num_batches:
            raise IndexError(f"batch index {index} out of range [0, {self._num_batches}).")
        epoch = self.epoch if self.shuffle else 0
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        if not self.shuffle:
            return rng, self._ordered[index]
        group = self.groups[rng.choice(len(self.groups), p=self._probs)]
        take = min(self.batch_size, group.size)
        return rng, np.sort(rng.choice(group, size=take, replace=False))

    def batch_indices(self, index):
        """Indices into `examples` of the examples in batch `index` (of the current epoch).

        Args:
            index: int, the batch index.

        Returns:
            int array of example indices, in batch order.
        """
        return self._select(index)[1]

    def __getitem__(self, index):
        rng, idx = self._select(index)
        return self.encode_fn([self.examples[i] for i in idx], rng, self.random_labels)

    def on_epoch_end(self):
        self.epoch += 1


def _encode_examples(examples, rng, random_labels):
    points = np.stack([np.asarray(e.points, dtype=np.float64) for e in examples])
    x, y, sample_weight, _ = encode(
        points, [e.output for e in examples], rng=rng, random_labels=random_labels
    )
    return x, y, sample_weight


def file_dataset(
    path,
    batch_size,
    num_batches=None,
    seed=0,
    shuffle=True,
    random_labels=None,
    max_points=N_MAX,
    task=None,
    **kwargs,
):
    """Batches of a Pointer Networks file, one number of points per batch.

    Examples with more than `max_points` points are dropped (the reference keeps N <= 20).

    Args:
        path: str or path-like, a file readable by `read_file`.
        batch_size: int, examples per batch.
        num_batches: int or None, batches per epoch in shuffle mode (None: one pass worth).
        seed: int, base seed. Defaults to 0.
        shuffle: bool, random groups and examples every batch (training) or one ordered pass over
            all examples (evaluation). Defaults to True.
        random_labels: bool or None; None means random labels when shuffling, labels = position
            otherwise. Defaults to None.
        max_points: int, largest N kept, at most `N_MAX`. Defaults to 20.
        task: None or `"tsp"`: passed to `read_file` (`"tsp"` refuses partial tours).
        **kwargs: forwarded to `keras.utils.PyDataset`.

    Returns:
        `GroupedFileDataset` yielding `(x, y, sample_weight)`; its `examples` and
        `batch_indices(i)` tie batches back to the file's examples.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hull.txt"
    >>> _ = generate(path, "convex_hull", 6, (5, 7), seed=0)
    >>> data = file_dataset(path, batch_size=4, shuffle=False)
    >>> x, y, w = data[0]
    >>> x.shape[-1]
    24
    """
    if not isinstance(max_points, (int, np.integer)) or not 1 <= max_points <= N_MAX:
        raise ValueError(f"`max_points` must be an int in [1, {N_MAX}], got {max_points!r}.")
    examples = read_file(path, task)
    if not examples:
        raise ValueError(
            f"{os.fspath(path)}: the file holds no example (empty, or blank lines only)."
        )
    examples = [e for e in examples if len(e.points) <= max_points]
    if not examples:
        raise ValueError(f"{os.fspath(path)}: no example has at most {max_points} points.")
    random_labels = shuffle if random_labels is None else bool(random_labels)
    return GroupedFileDataset(
        examples,
        _encode_examples,
        lambda e: len(e.points),
        batch_size,
        num_batches=num_batches,
        seed=seed,
        shuffle=shuffle,
        random_labels=random_labels,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# metrics


def _check_pairs(predictions, targets, name="targets"):
    if len(predictions) != len(targets):
        raise ValueError(
            f"`predictions` ({len(predictions)}) and `{name}` ({len(targets)}) differ in length."
        )
    if not len(predictions):
        raise ValueError("`predictions` is empty.")


def hull_metrics(predictions, targets):
    """Convex-hull accuracies of decoded predictions.

    Args:
        predictions: sequence of int arrays, decoded answers (0-based, no closing repeat; -1
            marks an invalid step, as from `decode_predictions`).
        targets: sequence of int arrays, the true hulls in the file's order.

    Returns:
        dict with `sequence_accuracy` (identical sequence: the primary metric, rotations count as
        wrong since the protocol starts at the first index of the file), `cyclic_accuracy` (the
        right cycle from any starting vertex, same orientation) and `point_accuracy` (share of
        the aligned output steps, one per hull vertex plus the end token, predicted right).

    Example:

    >>> m = hull_metrics([np.array([1, 2, 0]), np.array([0, 1])], [np.array([0, 1, 2])] * 2)
    >>> m["sequence_accuracy"], m["cyclic_accuracy"], round(m["point_accuracy"], 3)
    (0.0, 0.5, 0.375)
    """
    _check_pairs(predictions, targets)
    exact = cyclic = correct = total = 0
    for pred, target in zip(predictions, targets):
        pred, target = np.asarray(pred, dtype=np.int64), np.asarray(target, dtype=np.int64)
        same_length = pred.size == target.size
        exact += bool(same_length and np.array_equal(pred, target))
        if same_length and target.size:
            starts = np.flatnonzero(target == pred[0])
            cyclic += any(np.array_equal(np.roll(target, -s), pred) for s in starts)
        k = min(pred.size, target.size)
        correct += int((pred[:k] == target[:k]).sum()) + int(same_length)
        total += target.size + 1
    count = len(targets)
    return {
        "sequence_accuracy": exact / count,
        "cyclic_accuracy": cyclic / count,
        "point_accuracy": correct / total,
    }


def tsp_metrics(points, predictions, targets):
    """TSP tour metrics; an invalid tour (a repeated or missing city) never counts as short.

    Args:
        points: sequence of float arrays `(N, 2)` (or one `(B, N, 2)` array).
        predictions: sequence of int arrays, decoded tours (0-based, no closing repeat).
        targets: sequence of int arrays (reference tours) or floats (reference lengths).

    Returns:
        dict with `valid_fraction`, `num_valid`, `num_invalid`, `mean_length` (valid tours only),
        `mean_target_length` (reference, same valid examples), `mean_target_length_all` (all
        examples), `optimality_gap` (mean over valid tours of length / reference - 1), and
        `mean_invalid_length` (closed length of the invalid answers whose indices are all in
        range, reported apart; NaN if none). Means over an empty set are NaN.

    Example:

    >>> pts = [np.array([[0., 0.], [1., 0.], [1., 1.], [0., 1.]])] * 2
    >>> m = tsp_metrics(pts, [np.array([0, 2, 1, 3]), np.array([0, 1, 1, 3])], [4.0, 4.0])
    >>> m["valid_fraction"], round(m["optimality_gap"], 4)
    (0.5, 0.2071)
    """
    _check_pairs(predictions, targets)
    if len(points) != len(predictions):
        raise ValueError(f"`points` ({len(points)}) and `predictions` ({len(predictions)}) differ.")
    valid_len, valid_ref, invalid_len, all_ref = [], [], [], []
    for pts, pred, target in zip(points, predictions, targets):
        pts = np.asarray(pts, dtype=np.float64)
        n = pts.shape[0]
        target = np.asarray(target)
        ref = float(target) if target.ndim == 0 else tour_length(pts, target.astype(np.int64))
        all_ref.append(ref)
        pred = np.asarray(pred, dtype=np.int64)
        valid = pred.size == n and np.array_equal(np.sort(pred), np.arange(n))
        if valid:
            valid_len.append(tour_length(pts, pred))
            valid_ref.append(ref)
        elif pred.size and pred.min() >= 0 and pred.max() < n:
            invalid_len.append(tour_length(pts, pred))

    def mean(values):
        return float(np.mean(values)) if values else float("nan")

    gaps = [a / b - 1.0 for a, b in zip(valid_len, valid_ref)]
    count = len(predictions)
    return {
        "valid_fraction": len(valid_len) / count,
        "num_valid": len(valid_len),
        "num_invalid": count - len(valid_len),
        "mean_length": mean(valid_len),
        "mean_target_length": mean(valid_ref),
        "mean_target_length_all": mean(all_ref),
        "optimality_gap": mean(gaps),
        "mean_invalid_length": mean(invalid_len),
    }


# --------------------------------------------------------------------------------------------
# shapes: one compiled program per bucket of sequence lengths


def bucket_lengths(lengths, count):
    """The padded sequence lengths of a run: at most `count` buckets over its possible lengths.

    A compiled training step (jax, tensorflow with XLA) is traced once per input shape; padding
    every batch with trailing zero-weight steps up to the smallest bucket that holds it bounds
    the number of programs by `count` (the batch size is fixed too, see `PaddedBatches`). With
    no more distinct lengths than `count`, every length is its own bucket (no padding);
    otherwise the buckets end at evenly spaced quantiles of the distinct lengths.

    Args:
        lengths: iterable of ints, the sequence lengths the run can meet
            (`sequence_lengths`).
        count: int >= 1, the most buckets (1: every batch padded to the longest).

    Returns:
        sorted tuple of distinct ints, the last one the longest length.

    Example:

    >>> bucket_lengths([12, 22], 4), bucket_lengths(range(10, 43), 4)
    ((12, 22), (18, 26, 34, 42))
    """
    distinct = sorted({int(v) for v in lengths})
    count = int(count)
    if count < 1 or not distinct or distinct[0] < 1:
        raise ValueError(f"need count >= 1 and positive lengths, got {count}, {distinct}.")
    if len(distinct) <= count:
        return tuple(distinct)
    m = len(distinct)
    return tuple(sorted({distinct[math.ceil((i + 1) * m / count) - 1] for i in range(count)}))


def sequence_lengths(task, sizes):
    """The encoded sequence lengths (inputs, extra row, answer, end) a run over `sizes` meets.

    Convex hull: an answer has min(3, N)..N points (training batches: the longest answer of
    the batch); TSP: N. Evaluation decodes every example over N + 1 output steps (`2 N + 2`).

    Example:

    >>> sequence_lengths("convex_hull", (5,)), sequence_lengths("tsp", (5, 10))
    ((10, 11, 12), (12, 22))
    """
    _check_task(task)
    out = set()
    for n in {int(n) for n in sizes}:
        out.add(2 * n + 2)
        if task == "convex_hull":
            out.update(n + 1 + k + 1 for k in range(min(3, n), n + 1))
    return tuple(sorted(out))


def _pad_to(array, length, batch_size):
    pad = [(0, batch_size - array.shape[0]), (0, length - array.shape[1])]
    return np.pad(array, pad + [(0, 0)] * (array.ndim - 2))


def pad_batch(arrays, lengths, batch_size=None):
    """Pads `(x, y, sample_weight, ...)` with trailing zero steps (and zero rows) to a bucket.

    The models are causal and the loss and metrics weighted, so trailing all-zero, zero-weight
    steps and all-zero, zero-weight examples change no output step, loss or metric.

    Args:
        arrays: tuple of arrays `(B, T, ...)`.
        lengths: int or sorted sequence of ints: the smallest one >= T is used.
        batch_size: int or None: pad the batch dimension to it (None: keep B).

    Returns:
        tuple of padded arrays.

    Raises:
        ValueError: if T exceeds the longest length, or B the batch size.
    """
    lengths = (int(lengths),) if np.ndim(lengths) == 0 else tuple(int(v) for v in lengths)
    batch, steps = arrays[0].shape[:2]
    fits = [v for v in lengths if v >= steps]
    if not fits:
        raise ValueError(
            f"a batch has {steps} steps, more than the longest padded length {max(lengths)}."
        )
    size = batch if batch_size is None else int(batch_size)
    if batch > size:
        raise ValueError(f"a batch has {batch} examples, more than `batch_size`={size}.")
    return tuple(_pad_to(np.asarray(a), min(fits), size) for a in arrays)


class PaddedBatches(keras.utils.PyDataset):
    """A dataset whose batches are padded to a few fixed shapes (see `pad_batch`).

    Args:
        data: a `PyDataset` yielding `(x (B, T, W), y (B, T), sample_weight (B, T))`.
        lengths: int or sequence of ints (`bucket_lengths`), the padded numbers of steps.
        batch_size: int or None, pad smaller batches (the last of an ordered pass) to it.
    """

    def __init__(self, data, lengths, batch_size=None):
        super().__init__()
        self.data = data
        self.lengths = (int(lengths),) if np.ndim(lengths) == 0 else tuple(sorted(lengths))
        self.length = self.lengths[-1]
        self.batch_size = batch_size

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return pad_batch(self.data[index], self.lengths, self.batch_size)

    def on_epoch_end(self):
        self.data.on_epoch_end()


# --------------------------------------------------------------------------------------------
# decoding that respects the task: masked (greedy) and beam decoding


def _log_softmax(scores):
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def constrained_decode(scores, labels_of_items, constraints, skip=0, beam_width=1, end_token=END):
    """Decodes output steps so that every answer obeys its task's rules (masked or beam search).

    The decoding steps of these models read all-zero inputs, so their scores do not depend on
    the answer chosen so far; a rule is applied on top of the model's log-probabilities: at each
    step only the items `constraints[b](prefix)` allows (and the end token where it allows it)
    can be chosen. `beam_width=1` is masked greedy decoding (the best allowed item each step),
    a larger width keeps the `beam_width` best partial answers (summed log-probabilities) and
    returns the best finished one.

    Args:
        scores: float `(B, K, C)` logits of the output steps (or of whole sequences, with `skip`).
        labels_of_items: int `(B, M)`, label of item i at position i, 0 for none.
        constraints: sequence of B callables `prefix (tuple of item indices) -> (allowed (M,)
            bool, end_allowed bool)`, e.g. from `hull_rule` or `tour_rule`.
        skip: int, leading steps to drop. Defaults to 0.
        beam_width: int >= 1. Defaults to 1.
        end_token: int. Defaults to `END`.

    Returns:
        list of B int64 arrays of 0-based item indices; an answer the steps did not let finish
        ends with -1 (never valid).

    Example:

    >>> logits = np.zeros((1, 4, NUM_CLASSES)); logits[0, :, 1] = 5.0  # always "point 0"
    >>> [a.tolist() for a in constrained_decode(logits, [[1, 2, 3]], [tour_rule(3)])]
    [[0, 1, 2]]
    """
    labels = np.asarray(labels_of_items, dtype=np.int64)
    log_probs = _log_softmax(np.asarray(scores)[:, skip:])
    if len(constraints) != labels.shape[0] or log_probs.shape[0] != labels.shape[0]:
        raise ValueError("`scores`, `labels_of_items` and `constraints` differ in batch size.")
    if int(beam_width) < 1:
        raise ValueError(f"`beam_width` must be >= 1, got {beam_width!r}.")
    answers = []
    for b, rule in enumerate(constraints):
        items = labels[b] > 0
        item_lp = log_probs[b][:, np.where(items, labels[b], 0)]  # (K, M)
        end_lp = log_probs[b][:, end_token]
        beams, finished = [(0.0, ())], []
        for k in range(log_probs.shape[1]):
            candidates = []
            for score, prefix in beams:
                allowed, end_ok = rule(prefix)
                allowed = np.asarray(allowed, dtype=bool)[: items.size] & items[: len(allowed)]
                if end_ok:
                    candidates.append((score + end_lp[k], prefix, True))
                for i in np.flatnonzero(allowed):
                    candidates.append((score + item_lp[k, i], prefix + (int(i),), False))
            candidates.sort(key=lambda c: -c[0])
            beams = []
            for score, prefix, ended in candidates[: int(beam_width)]:
                (finished if ended else beams).append((score, prefix))
            if not beams or (finished and max(f[0] for f in finished) >= beams[0][0]):
                break
        if finished:
            answers.append(np.array(max(finished, key=lambda f: f[0])[1], dtype=np.int64))
        else:
            best = beams[0][1] if beams else ()
            answers.append(np.append(np.array(best, dtype=np.int64), -1))
    return answers


def hull_rule(n):
    """Rule of a convex-hull answer over `n` points for `constrained_decode`.

    No point twice; the answer starts at its lowest index (every later point has a higher
    index, the canonical start of the protocol) and ends after at least min(3, n) points (a
    point is allowed only if enough higher-index points remain to reach that length).
    """
    least = min(3, n)

    def rule(prefix):
        index = np.arange(n)
        free = np.ones(n, dtype=bool)
        free[list(prefix)] = False
        first = prefix[0] if prefix else None
        # free points above the first one, after choosing each candidate
        above = index if first is None else np.full(n, first)
        left = np.array([np.count_nonzero(free[a + 1 :]) for a in above]) - ((index > above) & free)
        allowed = free & (left >= least - len(prefix) - 1)
        if first is not None:
            allowed &= index > first
        return allowed, len(prefix) >= least

    return rule


def tour_rule(n):
    """Rule of a tour over `n` cities: starts at city 1 (index 0), every city once, then ends."""

    def rule(prefix):
        allowed = np.zeros(n, dtype=bool) if not prefix else np.ones(n, dtype=bool)
        if not prefix:
            allowed[0] = True
        allowed[list(prefix)] = False
        return allowed, len(prefix) == n

    return rule


DECODINGS = ("greedy", "masked", "beam")
"""tuple: `--decoding` choices: greedy (plain argmax over the example's labels, always reported),
masked (greedy under the task's rule) and beam (beam search under the rule)."""


def decode_all(
    scores, labels_of_items, skip, rules, decoding="masked", beam_width=5, end_token=END
):
    """`{prefix: answers}` of the plain greedy decoding and, unless `decoding` is greedy, of the
    rule-respecting one (`prefix` "" for greedy, "masked_" or "beam_")."""
    if decoding not in DECODINGS:
        raise ValueError(f"`decoding` must be one of {DECODINGS}, got {decoding!r}.")
    out = {"": decode_predictions(scores, labels_of_items, skip=skip, end_token=end_token)}
    if decoding != "greedy":
        width = 1 if decoding == "masked" else int(beam_width)
        out[f"{decoding}_"] = constrained_decode(
            scores, labels_of_items, rules, skip=skip, beam_width=width, end_token=end_token
        )
    return out


# --------------------------------------------------------------------------------------------
# convex hull answer quality: validity, length and area coverage


def _polygon_area(poly):
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _segments_cross(p1, p2, q1, q2):
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    return (d1 * d2 < 0) and (d3 * d4 < 0)


def is_simple_polygon(poly):
    """Whether a closed polygon `(k, 2)`, k >= 3, has no two non-adjacent edges crossing."""
    poly = np.asarray(poly, dtype=np.float64)
    k = len(poly)
    if k < 3:
        return False
    for i in range(k):
        for j in range(i + 2, k):
            if i == 0 and j == k - 1:
                continue
            if _segments_cross(poly[i], poly[(i + 1) % k], poly[j], poly[(j + 1) % k]):
                return False
    return True


def hull_answer_metrics(points, predictions, targets):
    """Validity, length and area coverage of convex-hull answers (Pointer Networks' figures).

    A valid answer names at least 3 distinct points of the example (in range) and, as a closed
    polygon in the answer's order, does not cross itself. `area_coverage` is the mean over all
    examples of area(answer polygon) / area(true hull), an invalid answer counting 0 (its
    points lie inside the hull, so a valid answer covers at most 1, exactly 1 for the hull).

    Returns:
        dict with `valid_fraction`, `num_valid`, `num_invalid`, `area_coverage`,
        `mean_answer_length` (points named, valid answers) and `mean_target_length` (hull
        vertices of the reference, all examples).

    Example:

    >>> pts = [np.array([[0., 0.], [1., 0.], [1., 1.], [0., 1.], [.5, .5]])] * 2
    >>> m = hull_answer_metrics(pts, [np.array([0, 1, 2]), np.array([0, 2, 1, 3])],
    ...                         [np.array([0, 1, 2, 3])] * 2)
    >>> m["valid_fraction"], m["area_coverage"]
    (0.5, 0.25)
    """
    _check_pairs(predictions, targets)
    coverage, valid_lengths = [], []
    for pts, pred, target in zip(points, predictions, targets):
        pts = np.asarray(pts, dtype=np.float64)
        pred = np.asarray(pred, dtype=np.int64)
        hull_area = _polygon_area(pts[np.asarray(target, dtype=np.int64)])
        ok = (
            pred.size >= 3
            and pred.min() >= 0
            and pred.max() < len(pts)
            and np.unique(pred).size == pred.size
            and is_simple_polygon(pts[pred])
        )
        if ok:
            valid_lengths.append(pred.size)
            coverage.append(_polygon_area(pts[pred]) / hull_area if hull_area > 0 else 1.0)
        else:
            coverage.append(0.0)
    count = len(predictions)
    return {
        "valid_fraction": len(valid_lengths) / count,
        "num_valid": len(valid_lengths),
        "num_invalid": count - len(valid_lengths),
        "area_coverage": float(np.mean(coverage)),
        "mean_answer_length": float(np.mean(valid_lengths)) if valid_lengths else float("nan"),
        "mean_target_length": float(np.mean([len(t) for t in targets])),
    }


def same_tour(a, b):
    """Whether two tours are the same cycle (any start, either direction)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.size != b.size or not a.size or b[0] not in a:
        return False
    rolled = np.roll(a, -int(np.flatnonzero(a == b[0])[0]))
    return np.array_equal(rolled, b) or np.array_equal(np.roll(rolled[::-1], 1), b)


def predict_and_decode(
    predict,
    data,
    num_inputs,
    answer_steps,
    rule,
    decoding="greedy",
    beam_width=5,
    lengths=None,
    batch_size=None,
    end_token=END,
):
    """Decoded answers of a model for every example of an ordered file dataset.

    Every batch is first given enough all-zero decoding steps for the longest valid answer
    (`answer_steps`) and, with `lengths`, padded to a bucket and to `batch_size` examples (so
    a compiled `predict` sees a few fixed shapes); then decoded by `decode_all`.

    Args:
        predict: callable `x -> logits (B, T, C)`, e.g. `model.predict_on_batch`.
        data: ordered `GroupedFileDataset` (labels = position), with `examples`.
        num_inputs: callable `example -> int`, the input steps before decoding.
        answer_steps: callable `example -> int`, the most answer items (the end token apart).
        rule: callable `example -> constraint` for `constrained_decode`.
        decoding: one of `DECODINGS`. Defaults to "greedy".
        beam_width: int, for "beam".
        lengths: None (no padding beyond the answer steps) or the bucket lengths.
        batch_size: None or int, pad batches to it (with `lengths`).
        end_token: int. Defaults to `END`.

    Returns:
        dict `{prefix: list of int arrays aligned with data.examples}` (see `decode_all`).
    """
    from keras_stm.experiments.tasks.graphs import INPUT_WIDTH as GRAPH_WIDTH
    from keras_stm.experiments.tasks.graphs import edge_labels

    answers = {}
    for i in range(len(data)):
        x = np.asarray(data[i][0])
        index = data.batch_indices(i)
        batch = [data.examples[k] for k in index]
        skip = num_inputs(batch[0])
        steps = max(x.shape[1], skip + max(answer_steps(e) for e in batch) + 1)
        x = np.pad(x, ((0, 0), (0, steps - x.shape[1]), (0, 0)))
        if lengths is not None:
            (x,) = pad_batch((x,), lengths, batch_size)
        labels = edge_labels(x) if x.shape[-1] == GRAPH_WIDTH else point_labels(x)
        logits = np.asarray(keras.ops.convert_to_numpy(predict(x)))[: len(index), :steps]
        decoded = decode_all(
            logits,
            labels[: len(index)],
            skip,
            [rule(e) for e in batch],
            decoding,
            beam_width,
            end_token,
        )
        for prefix, values in decoded.items():
            out = answers.setdefault(prefix, [None] * len(data.examples))
            for k, answer in zip(index, values):
                out[k] = answer
    return answers


def hull_scores(answers, examples):
    """All convex-hull figures of `predict_and_decode`'s answers, keys prefixed by decoding."""
    targets = [e.output for e in examples]
    points = [e.points for e in examples]
    scores = {}
    for prefix, predicted in answers.items():
        values = {
            **hull_metrics(predicted, targets),
            **hull_answer_metrics(points, predicted, targets),
        }
        scores.update({prefix + key: value for key, value in values.items()})
    return scores


def tsp_scores(answers, examples):
    """All TSP figures of `predict_and_decode`'s answers (the examples' tours the reference),
    keys prefixed by decoding; `sequence_accuracy`: the reference tour (any start, direction)."""
    targets = [e.output for e in examples]
    points = [e.points for e in examples]
    scores = {}
    for prefix, predicted in answers.items():
        values = tsp_metrics(points, predicted, targets)
        values["sequence_accuracy"] = float(
            np.mean([same_tour(p, t) for p, t in zip(predicted, targets)])
        )
        scores.update({prefix + key: value for key, value in values.items()})
    return scores
