"""Tests of the synthetic task generators and the bit-error metric (spec 4.0-4.5).

Every generator is checked example by example against a plain-Python solution written here
(parsing the model input, recomputing the target with loops / `sorted`), plus layout, dtypes,
seeding, speed and argument validation. Run once per backend (KERAS_BACKEND=jax|torch|tensorflow).
"""

import argparse
import json
import math
import time

import keras
import numpy as np
import pytest

from keras_stm.experiments.tasks import associative_retrieval as ar
from keras_stm.experiments.tasks import copy as copy_task
from keras_stm.experiments.tasks import nth_farthest
from keras_stm.experiments.tasks import priority_sort
from keras_stm.experiments.tasks import rar
from keras_stm.experiments.tasks.base import TaskDataset
from keras_stm.experiments.tasks.metrics import BitErrorPerSequence
from keras_stm.experiments.tasks.metrics import bit_error_per_sequence


def _rng(seed=0):
    return np.random.default_rng(seed)


def _check_decoding_layout(x, y, w, t_in, t_out, d_in=34):
    """Shapes/dtypes of the shared decoding wiring, and zero rows / weights where they belong."""
    batch = x.shape[0]
    assert x.shape == (batch, t_in + t_out, d_in) and x.dtype == np.float32
    assert y.shape == (batch, t_in + t_out, 32) and y.dtype == np.float32
    assert w.shape == (batch, t_in + t_out) and w.dtype == np.float32
    assert np.all(x[:, t_in:] == 0)
    assert np.all(y[:, :t_in] == 0)
    assert np.all(w[:, :t_in] == 0) and np.all(w[:, t_in:] == 1)
    assert set(np.unique(y)) <= {0.0, 1.0}


# --------------------------------------------------------------------------------- copy


def test_copy_against_brute_force():
    lengths = set()
    for seed in range(60):
        x, y, w = copy_task.make_batch(_rng(seed), 5)
        length = int(w[0].sum())
        lengths.add(length)
        _check_decoding_layout(x, y, w, length + 2, length)
        for b in range(5):
            assert x[b, 0].tolist() == [0.0] * 32 + [1.0, 0.0]
            assert x[b, length + 1].tolist() == [0.0] * 33 + [1.0]
            for t in range(length):
                row = x[b, 1 + t]
                assert row[32] == 0 and row[33] == 0
                assert all(v in (0.0, 1.0) for v in row[:32])
                assert y[b, length + 2 + t].tolist() == row[:32].tolist()
    assert lengths <= set(range(1, 21)) and len(lengths) >= 15
    x, y, w = copy_task.make_batch(_rng(0), 256, min_seq_len=20, max_seq_len=20)
    assert x.shape[1] == 42 and abs(x[:, 1:21, :32].mean() - 0.5) < 0.02


# ------------------------------------------------------------------------ priority sort


def test_priority_sort_against_brute_force():
    x, y, w = priority_sort.make_batch(_rng(3), 16)
    _check_decoding_layout(x, y, w, 20, 16)
    for b in range(16):
        priorities = [float(x[b, i, 32]) for i in range(20)]
        assert all(-1.0 <= p < 1.0 for p in priorities)
        assert all(x[b, i, 33] == 0 for i in range(20))
        order = sorted(range(20), key=lambda i: -priorities[i])[:16]
        for t, i in enumerate(order):
            assert y[b, 20 + t].tolist() == x[b, i, :32].tolist()


class _FewPriorities(np.random.Generator):
    """A real Generator whose `random` draws only 0, 0.25, 0.5, so priorities often tie."""

    def random(self, size=None, dtype=np.float64, out=None):
        return (self.integers(0, 3, size=size) / 4.0).astype(dtype)


def test_priority_sort_ties_keep_input_order():
    x, y, w = priority_sort.make_batch(
        _FewPriorities(np.random.PCG64(0)), 50, input_seq_len=6, target_seq_len=4
    )
    ties = 0
    for b in range(50):
        p = [float(v) for v in x[b, :6, 32]]
        ties += len(set(p)) < 6
        order = sorted(range(6), key=lambda i: -p[i])[:4]  # stable: input order among ties
        assert [y[b, 6 + t].tolist() for t in range(4)] == [x[b, i, :32].tolist() for i in order]
    assert ties == 50


# ---------------------------------------------------------------------------------- RAR


def _parse_rar(xb):
    """Splits one RAR input (T, 34) into its items and query by scanning the flag channels."""
    items, query, current, in_query = [], None, None, False
    for row in xb:
        if row[32] == 1:
            current = []
            items.append(current)
        elif row[33] == 1:
            if not in_query:
                in_query, current = True, []
                query = current
            else:
                break
        elif current is not None:
            current.append([int(v) for v in row[:32]])
    return items, query


def _brute_force_rar_target(items, query_index):
    flat = [[bit for vec in item for bit in vec] for item in items]
    q = flat[query_index]
    choose_max = q[-1] == 1
    best, best_d = None, (0.0 if choose_max else float("inf"))
    for i, item in enumerate(flat):
        if i == query_index:
            continue
        d = math.sqrt(sum((a - b) ** 2 for a, b in zip(q, item)))
        if (choose_max and d > best_d) or (not choose_max and d < best_d) or best is None:
            best, best_d = i, d
    return best, choose_max


@pytest.mark.parametrize("reading", ["executed", "intended"])
def test_rar_against_brute_force(reading):
    sizes_seen, branches, ties = set(), set(), 0
    for seed in range(25):
        x, y, w = rar.make_batch(_rng(seed), 12, reading=reading)
        t_out = int(w[0].sum())
        t_in = x.shape[1] - t_out
        query_indices = set()
        for b in range(12):
            items, query = _parse_rar(x[b])
            n_items, length = len(items), len(items[0])
            assert all(len(item) == length for item in items) and len(query) == length
            assert t_out == length and t_in == (length + 1) * (n_items + 1) + 1
            if reading == "executed":
                assert n_items == 3 and 2 <= length <= 5
            else:
                assert length == 3 and 2 <= n_items <= 5
            q = [i for i, item in enumerate(items) if item == query][0]
            assert q <= n_items - 2
            query_indices.add(q)
            target, choose_max = _brute_force_rar_target(items, q)
            branches.add(choose_max)
            assert y[b, t_in:].astype(int).tolist() == items[target]
            others = [
                sum(a != b_ for v1, v2 in zip(items[i], query) for a, b_ in zip(v1, v2))
                for i in range(n_items)
                if i != q
            ]
            ties += len(set(others)) < len(others)
            sizes_seen.add((n_items, length))
        assert len(query_indices) == 1  # q is shared by the whole batch
        _check_decoding_layout(x, y, w, t_in, t_out)
    assert branches == {True, False} and ties > 0 and len(sizes_seen) >= 3


def test_rar_explicit_sizes_and_readings():
    x, y, w = rar.make_batch(_rng(0), 4, reading="intended", num_items=4, item_length=2)
    assert x.shape == (4, rar.input_length(4, 2) + 2, 34) and rar.input_length(4, 2) == 16
    assert rar.resolve_sizes() == ((3, 3), (2, 5))
    assert rar.resolve_sizes("intended") == ((2, 5), (3, 3))
    assert rar.resolve_sizes("executed", num_items=(2, 4), item_length=1) == ((2, 4), (1, 1))


# ------------------------------------------------------------------------- Nth-farthest


def test_nth_farthest_against_brute_force():
    x, y = nth_farthest.make_batch(_rng(7), 64)
    assert x.shape == (64, 8, 40) and x.dtype == np.float32
    assert y.shape == (64,) and y.dtype == np.int32
    assert nth_farthest.INPUT_SIZE == 40 and nth_farthest.OUTPUT_SIZE == 8
    ns = set()
    for b in range(64):
        vectors = [[float(v) for v in x[b, k, :16]] for k in range(8)]
        assert all(-1.0 <= v < 1.0 for vec in vectors for v in vec)
        labels = []
        for k in range(8):
            onehot = x[b, k, 16:24].tolist()
            assert sorted(onehot) == [0.0] * 7 + [1.0]
            labels.append(onehot.index(1.0))
        assert sorted(labels) == list(range(8))
        n = x[b, 0, 24:32].tolist().index(1.0)
        m = x[b, 0, 32:40].tolist().index(1.0)
        for k in range(8):
            assert x[b, k, 24:40].tolist() == x[b, 0, 24:40].tolist()
        ref = labels.index(m)
        dist = [
            math.sqrt(sum((a - c) ** 2 for a, c in zip(vectors[k], vectors[ref]))) for k in range(8)
        ]
        farthest_first = sorted(range(8), key=lambda k: dist[k], reverse=True)
        assert int(y[b]) == labels[farthest_first[n]]
        if n == 7:
            assert int(y[b]) == m
        ns.add(n)
    assert len(ns) == 8


# ------------------------------------------------------------------ associative retrieval


def _brute_force_ar(sequence, num_pairs):
    pairs = {}
    for i in range(num_pairs):
        key, value = int(sequence[2 * i]), int(sequence[2 * i + 1])
        assert 10 <= key <= 35 and 0 <= value <= 9 and key not in pairs
        pairs[key] = value
    assert int(sequence[2 * num_pairs]) == 36 and int(sequence[2 * num_pairs + 1]) == 36
    return pairs[int(sequence[2 * num_pairs + 2])]


def test_nth_farthest_accuracy_by_n_tells_the_plateau_from_distances():
    x, y = nth_farthest.make_batch(np.random.default_rng(3), 4096)
    n = x[:, 0, 24:32].argmax(-1)
    labels = x[:, :, 16:24].argmax(-1)
    reference = x[:, 0, 32:40].argmax(-1)
    assert set(nth_farthest.accuracy_by_n(x, y, y).values()) == {1.0}
    # The plateau's answer: the reference's label when n = 7, else another label at random.
    rng = np.random.default_rng(4)
    others = np.array([rng.choice(row[row != m]) for row, m in zip(labels, reference)])
    plateau = np.where(n == 7, reference, others)
    scores = nth_farthest.accuracy_by_n(x, y, plateau)
    assert sorted(scores) == [f"accuracy_n{k}" for k in range(8)]
    assert scores["accuracy_n7"] == 1.0
    for k in range(7):  # 1/7 each, within about 3.5 standard errors of ~512 examples
        assert abs(scores[f"accuracy_n{k}"] - 1 / 7) < 0.055, (k, scores)
    assert np.mean(plateau == y) == pytest.approx(0.25, abs=0.02)
    # Only the n present are reported.
    assert list(nth_farthest.accuracy_by_n(x[n == 2], y[n == 2], y[n == 2])) == ["accuracy_n2"]
    with pytest.raises(ValueError, match="accuracy_by_n needs x of shape"):
        nth_farthest.accuracy_by_n(x[:, :4], y, y)
    with pytest.raises(ValueError, match="predicted"):
        nth_farthest.accuracy_by_n(x, y, y[:-1])


# --- Nth-farthest's dimension curriculum (the probe's and the example's --dims-curriculum) ---


@pytest.mark.parametrize(
    "text, match",
    [
        ("2:30,2:20", "must increase, got 20 after 30"),
        ("2:30,4:30", "must increase"),
        ("0:10", r"DIMS must be in 1\.\.16"),
        ("17:10", r"DIMS must be in 1\.\.16.*got 17"),
        ("2:0", "UNTIL must be >= 1"),
        ("2-10", "not DIMS:UNTIL"),
        ("2:10:3", "not DIMS:UNTIL"),
        ("two:10", "not DIMS:UNTIL"),
        ("2:10,", "not DIMS:UNTIL"),
        ("", "not DIMS:UNTIL"),
    ],
)
def test_nth_farthest_dims_curriculum_parser_errors(text, match):
    with pytest.raises(ValueError, match=match):
        nth_farthest.parse_dims_curriculum(text, 16)


def test_nth_farthest_dims_curriculum_parser_and_flags():
    assert nth_farthest.parse_dims_curriculum(None, 16) is None
    stages = nth_farthest.parse_dims_curriculum(" 2:3000, 4:6000,8:12000", 16)
    assert stages == [(2, 3000), (4, 6000), (8, 12000)]
    assert nth_farthest.format_dims_curriculum(stages) == "2:3000,4:6000,8:12000"
    schedule = [(2, 3000), (4, 6000)]
    got = [nth_farthest.active_dims_at(schedule, i, 16) for i in (1, 3000, 3001, 6000, 6001)]
    assert got == [2, 2, 4, 4, 16]
    assert nth_farthest.active_dims_at(None, 1, 16) == 16
    # The flags: parsed, or a usage error naming the flag.
    parser = nth_farthest.add_dims_curriculum_arguments(argparse.ArgumentParser(), "acc")
    for argv, expected in (
        ([], None),
        (["--dims-curriculum", "2:10"], [(2, 10)]),
        (["--dims-curriculum", "2:10", "--advance-accuracy", "1"], [(2, 10)]),
    ):
        args = parser.parse_args(argv)
        assert nth_farthest.check_dims_curriculum_args(parser, args, 16) == expected
    for argv in (
        ["--dims-curriculum", "8:10"],  # DIMS > 4
        ["--dims-curriculum", "2:10,1:5"],
        ["--advance-accuracy", "0.5"],  # without --dims-curriculum
        ["--dims-curriculum", "2:10", "--advance-accuracy", "0"],
        ["--dims-curriculum", "2:10", "--advance-accuracy", "1.5"],
    ):
        with pytest.raises(SystemExit):
            nth_farthest.check_dims_curriculum_args(parser, parser.parse_args(argv), 4)


def test_nth_farthest_dims_schedule():
    curriculum = [(2, 3), (4, 7), (8, 8)]
    schedule = nth_farthest.DimsSchedule(curriculum, 16)
    ahead = [schedule.dims_at(i) for i in range(1, 12)]  # looks ahead, moves nothing
    assert schedule.get_state() == nth_farthest.DimsSchedule(curriculum, 16).get_state()
    assert [schedule.active(i) for i in range(1, 12)] == ahead
    assert ahead == [nth_farthest.active_dims_at(curriculum, i, 16) for i in range(1, 12)]
    assert schedule.stage_ends() == [
        {"active_dims": 2, "until_iteration": 3, "ended_at_iteration": 3, "advanced": False},
        {"active_dims": 4, "until_iteration": 7, "ended_at_iteration": 7, "advanced": False},
        {"active_dims": 8, "until_iteration": 8, "ended_at_iteration": 8, "advanced": False},
    ]
    # An early end: the later stages keep their lengths and move earlier.
    schedule = nth_farthest.DimsSchedule(curriculum, 16)
    schedule.active(1)
    schedule.advance(1)  # stage 2 (4 long) covers 2-5, stage 3 (1 long) 6
    assert [schedule.dims_at(i) for i in range(2, 9)] == [4, 4, 4, 4, 8, 16, 16]
    assert [schedule.active(i) for i in range(2, 9)] == [4, 4, 4, 4, 8, 16, 16]
    ends = [(s["ended_at_iteration"], s["advanced"]) for s in schedule.stage_ends()]
    assert ends == [(1, True), (5, False), (6, False)]
    # A stage ended at its scheduled end is not an early one; stage_ends(iteration) counts a
    # stage ending at `iteration` as ended, one ending later as not yet.
    schedule = nth_farthest.DimsSchedule([(2, 4), (4, 8)], 16)
    schedule.active(4)
    schedule.advance(4)
    assert schedule.stage_ends()[0]["advanced"] is False
    schedule.active(6)
    assert [s["ended_at_iteration"] for s in schedule.stage_ends()] == [4, None]
    assert [s["ended_at_iteration"] for s in schedule.stage_ends(8)] == [4, 8]
    assert schedule.active(7) == 4  # stage_ends moved nothing
    assert nth_farthest.DimsSchedule(None, 16).active(1) == 16
    assert nth_farthest.DimsSchedule(None, 16).stage_ends() == []


def test_nth_farthest_dims_schedule_state_roundtrip_and_errors():
    """The state is JSON: a schedule rebuilt from it (or given it) goes on as the original."""
    schedule = nth_farthest.DimsSchedule([(2, 4), (4, 8), (8, 12)], 16)
    schedule.active(3)
    schedule.advance(3)
    schedule.active(5)
    state = json.loads(json.dumps(schedule.get_state()))
    assert state["stage"] == 1 and state["iteration"] == 5
    restored = nth_farthest.DimsSchedule.from_state(state)
    fresh = nth_farthest.DimsSchedule([(2, 4), (4, 8), (8, 12)], 16)
    fresh.set_state(state)  # in place (the training data holds the object)
    for other in (restored, fresh):
        assert other.get_state() == state
    later = [schedule.active(i) for i in range(6, 16)]
    for other in (restored, fresh):
        assert [other.active(i) for i in range(6, 16)] == later == [4, 4, 8] + [8] * 3 + [16] * 4
        assert other.get_state() == schedule.get_state()
        assert other.stage_ends() == schedule.stage_ends()
    with pytest.raises(ValueError, match=r"'2:4,4:8,8:12' in 16 dimensions.*'2:4,4:9' in 16"):
        nth_farthest.DimsSchedule([(2, 4), (4, 9)], 16).set_state(state)
    with pytest.raises(ValueError, match="in 16 dimensions, this schedule's is .* in 12"):
        nth_farthest.DimsSchedule([(2, 4), (4, 8), (8, 12)], 12).set_state(state)
    for bad in (
        None,
        {},
        {**state, "stage": 3},  # more than the ended stages
        {**state, "stage": -1},
        {**state, "ended": []},
        {**state, "stage_end": "9"},
        {**state, "stages": [[2]]},
    ):
        with pytest.raises(ValueError, match="not a DimsSchedule state"):
            nth_farthest.DimsSchedule.from_state(bad)


def test_nth_farthest_dataset_follows_its_dims_schedule():
    """`dataset(active_dims=schedule)`: batch i of epoch e is iteration e * len + i + 1, drawn at
    the schedule's dimension for it (read when made: an early end changes the next batches),
    with the plain stream's draws; a fixed int `active_dims` zeroes every batch."""
    plain = nth_farthest.dataset(batch_size=4, num_batches=3, seed=5)
    schedule = nth_farthest.DimsSchedule([(1, 2), (3, 5)], 16)
    data = nth_farthest.dataset(batch_size=4, num_batches=3, seed=5, active_dims=schedule)

    def check(epoch, index, active):
        plain.epoch = data.epoch = epoch
        (x, y), (px, _) = data[index], plain[index]
        assert np.all(x[:, :, active:16] == 0) and np.all(x[:, :, :active] != 0)
        assert np.array_equal(x[:, :, :active], px[:, :, :active])
        assert np.array_equal(x[:, :, 16:], px[:, :, 16:])
        again = nth_farthest.make_batch(
            np.random.default_rng([5, epoch, index]), 4, active_dims=active
        )
        assert x.tobytes() == again[0].tobytes() and y.tobytes() == again[1].tobytes()

    for iteration, active in zip(range(1, 10), [1, 1, 3, 3, 3, 16, 16, 16, 16]):
        check((iteration - 1) // 3, (iteration - 1) % 3, active)
    schedule.active(3)
    schedule.advance(3)  # stage 2 ends at 3: iterations 4.. at 16 dims
    check(1, 0, 16)
    # After the curriculum the batches are the plain stream's, bit for bit.
    data.epoch = plain.epoch = 4
    assert data[2][0].tobytes() == plain[2][0].tobytes()
    fixed = nth_farthest.dataset(batch_size=4, num_batches=2, seed=5, fixed=True, active_dims=2)
    fixed.epoch = 3
    x, _ = fixed[1]
    assert np.all(x[:, :, 2:16] == 0) and np.all(x[:, :, :2] != 0)
    with pytest.raises(ValueError, match="for 16 dimensions, the data set has num_dims=4"):
        nth_farthest.dataset(num_dims=4, active_dims=schedule)
    with pytest.raises(ValueError, match="active_dims"):
        nth_farthest.dataset(num_dims=4, active_dims=5)


def test_associative_retrieval_against_brute_force():
    for num_pairs in [ar.NUM_PAIRS, ar.NUM_PAIRS_LENGTH_30, 26, 1]:
        _check_ar(num_pairs)


def _check_ar(num_pairs):
    x, y = ar.generate(300, _rng(2), num_pairs=num_pairs)
    assert x.shape == (300, ar.sequence_length(num_pairs)) and x.dtype == np.int32
    assert y.shape == (300,) and y.dtype == np.int32
    for b in range(300):
        assert int(y[b]) == _brute_force_ar(x[b], num_pairs)
    positions = {list(x[b, : 2 * num_pairs : 2]).index(x[b, -1]) for b in range(300)}
    assert positions == set(range(num_pairs))  # the query key is drawn from every pair
    assert ar.sequence_length() == 51 and ar.sequence_length(ar.NUM_PAIRS_LENGTH_30) == 31
    assert ar.VOCAB_SIZE == 37 and ar.OUTPUT_SIZE == 10


def test_associative_retrieval_file_roundtrip(tmp_path):
    sizes = dict(num_train=40, num_validation=10, num_test=20)
    path = tmp_path / "sub" / "ar.npz"
    first = ar.load_or_create(path, seed=3, num_pairs=5, **sizes)
    assert path.exists()
    second = ar.load_or_create(str(path), seed=3, num_pairs=5, **sizes)
    for split in ar.SPLITS:
        x, y = first[split]
        assert x.shape == (sizes[f"num_{split}"], 13) and x.dtype == np.int32
        np.testing.assert_array_equal(x, second[split][0])
        np.testing.assert_array_equal(y, second[split][1])
        gx, gy = ar.generate_split(split, seed=3, num_pairs=5, num_examples=sizes[f"num_{split}"])
        np.testing.assert_array_equal(x, gx)
        for b in range(len(x)):
            assert int(y[b]) == _brute_force_ar(x[b], 5)
    assert not np.array_equal(first["train"][0][:10], first["validation"][0])
    with pytest.raises(ValueError, match="ar.npz"):
        ar.load_or_create(path, seed=4, num_pairs=5, **sizes)
    with pytest.raises(ValueError, match="num_pairs"):
        ar.load_or_create(path, seed=3, num_pairs=6, **sizes)
    with pytest.raises(ValueError, match="ar.npz"):
        ar.load_or_create(path, seed=3, num_pairs=5, num_train=41, num_validation=10, num_test=20)
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt.npz"):
        ar.load_or_create(bad, num_pairs=5, **sizes)


def test_associative_retrieval_epochs_without_replacement(tmp_path):
    sizes = dict(num_train=50, num_validation=12, num_test=8)
    data = ar.dataset(
        "train", batch_size=8, path=tmp_path / "a.npz", num_pairs=4, drop_remainder=False, **sizes
    )
    x_all, y_all = ar.load_or_create(tmp_path / "a.npz", num_pairs=4, **sizes)["train"]
    assert isinstance(data, TaskDataset) and len(data) == 7

    def epoch_rows():
        rows = []
        for i in range(len(data)):
            xb, yb = data[i]
            assert xb.dtype == np.int32 and yb.dtype == np.int32 and xb.shape[1] == 11
            rows += [tuple(r) + (int(t),) for r, t in zip(xb.tolist(), yb)]
        return rows

    expected = sorted(tuple(r) + (int(t),) for r, t in zip(x_all.tolist(), y_all))
    epoch0 = epoch_rows()
    assert sorted(epoch0) == expected  # every example exactly once
    data.on_epoch_end()
    epoch1 = epoch_rows()
    assert sorted(epoch1) == expected and epoch1 != epoch0
    assert (
        len(ar.dataset("train", batch_size=8, path=tmp_path / "a.npz", num_pairs=4, **sizes)) == 6
    )  # remainder dropped by default
    val = ar.dataset("validation", batch_size=4, num_pairs=4, **sizes)  # in memory
    vx, vy = ar.generate_split("validation", num_pairs=4, num_examples=12)
    np.testing.assert_array_equal(np.concatenate([val[i][0] for i in range(3)]), vx)
    val.on_epoch_end()
    np.testing.assert_array_equal(val[0][1], vy[:4])  # no shuffling outside training


# ----------------------------------------------------------- seeding, speed, validation

MAKERS = {
    "copy": lambda rng, b: copy_task.make_batch(rng, b),
    "priority_sort": lambda rng, b: priority_sort.make_batch(rng, b),
    "rar_executed": lambda rng, b: rar.make_batch(rng, b),
    "rar_intended": lambda rng, b: rar.make_batch(rng, b, reading="intended"),
    "nth_farthest": lambda rng, b: nth_farthest.make_batch(rng, b),
    "associative_retrieval": lambda rng, b: ar.generate(b, rng),
}


def test_seeding_and_speed():
    for name in sorted(MAKERS):
        _check_seeding_and_speed(MAKERS[name])


def _check_seeding_and_speed(make):
    a, b, c = make(_rng(11), 128), make(_rng(11), 128), make(_rng(12), 128)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert any(u.shape != v.shape or not np.array_equal(u, v) for u, v in zip(a, c))
    best = float("inf")
    rng = _rng(0)
    for _ in range(5):
        start = time.perf_counter()
        make(rng, 128)
        best = min(best, time.perf_counter() - start)
    assert best < 0.05


def test_task_dataset_streams():
    for module, kwargs in [
        (copy_task, dict(max_seq_len=4)),
        (priority_sort, {}),
        (rar, dict(reading="intended")),
        (nth_farthest, {}),
    ]:
        _check_stream(module, kwargs)


def _check_stream(module, kwargs):
    data = module.dataset(batch_size=4, num_batches=3, seed=5, **kwargs)
    again = module.dataset(batch_size=4, num_batches=3, seed=5, **kwargs)
    other = module.dataset(batch_size=4, num_batches=3, seed=6, **kwargs)
    assert isinstance(data, TaskDataset) and len(data) == 3
    first = data[1]
    assert first[0].shape[0] == 4 and first[0].shape[-1] == module.INPUT_SIZE
    for u, v in zip(first, again[1]):
        np.testing.assert_array_equal(u, v)
    assert any(u.shape != v.shape or not np.array_equal(u, v) for u, v in zip(first, other[1]))
    data.on_epoch_end()
    assert any(u.shape != v.shape or not np.array_equal(u, v) for u, v in zip(first, data[1]))


def test_varying_length_streams_keep_uniform_lengths():
    counts = {0: [0] * 21, 1: [0] * 21, 2: [0] * 21}
    for seed in range(600):
        data = copy_task.dataset(batch_size=1, num_batches=3, seed=seed)
        lengths = [int(data[i][2].sum()) for i in range(3)]
        assert lengths[0] != lengths[1]  # keeps TF's inferred time axis `None`
        for i, n in enumerate(lengths):
            counts[i][n] += 1
    for i in range(3):  # each batch's L stays uniform on 1..20 (600 / 20 = 30 per length)
        assert counts[i][0] == 0 and min(counts[i][1:]) >= 12 and max(counts[i][1:]) <= 55
    for reading in rar.READINGS:
        data = rar.dataset(batch_size=2, num_batches=2, seed=3, reading=reading)
        assert data[0][0].shape[1] != data[1][0].shape[1]
    single = copy_task.dataset(batch_size=2, num_batches=2, min_seq_len=4, max_seq_len=4)
    assert single[0][0].shape == single[1][0].shape == (2, 10, 34)


BAD_ARGUMENTS = [
    (lambda: copy_task.make_batch(_rng(), 0), "batch_size"),
    (lambda: copy_task.make_batch(_rng(), 4, min_seq_len=0), "min_seq_len"),
    (lambda: copy_task.make_batch(_rng(), 4, min_seq_len=5, max_seq_len=3), "max_seq_len"),
    (lambda: copy_task.make_batch(np.random.RandomState(0), 4), "rng"),
    (lambda: copy_task.dataset(max_seq_len=2.5), "max_seq_len"),
    (lambda: priority_sort.make_batch(_rng(), 4, target_seq_len=21), "target_seq_len"),
    (lambda: priority_sort.dataset(input_seq_len=-1), "input_seq_len"),
    (lambda: rar.make_batch(_rng(), 4, reading="swapped"), "reading"),
    (lambda: rar.make_batch(_rng(), 4, num_items=1), "num_items"),
    (lambda: rar.make_batch(_rng(), 4, item_length=(3, 2)), "item_length"),
    (lambda: rar.dataset(item_length=(1, 2, 3)), "item_length"),
    (lambda: nth_farthest.make_batch(_rng(), 4, num_vectors=1), "num_vectors"),
    (lambda: nth_farthest.dataset(num_dims=0), "num_dims"),
    (lambda: ar.generate(4, _rng(), num_pairs=27), "num_pairs"),
    (lambda: ar.generate(0, _rng()), "num_examples"),
    (lambda: ar.dataset("dev"), "split"),
    (lambda: ar.dataset("test", batch_size=30, num_test=20, num_pairs=2), "batch_size"),
    (lambda: bit_error_per_sequence(np.zeros((2, 3, 4)), np.zeros((2, 3, 5))), "y_pred"),
    (
        lambda: bit_error_per_sequence(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.ones((2, 4))),
        "sample_weight",
    ),
    (lambda: BitErrorPerSequence(from_logits="yes"), "from_logits"),
]


def test_bad_arguments_raise():
    for call, name in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=name):
            call()


# ------------------------------------------------------------------------------ metric

# Hand-computed example: B=2, T=3, W=2; weight 1 on the last two steps.
Y_TRUE = np.array([[[1, 0], [1, 1], [0, 0]], [[0, 1], [0, 0], [1, 1]]], dtype="float32")
LOGITS = np.array(
    [
        [[5, 5], [-1, 2], [0.0, -3]],  # bits [[1,1],[0,1],[0,0]]
        [[-2, 2], [4, 4], [1, -1]],
    ],
    dtype="float32",
)  # [[0,1],[1,1],[1,0]]
WEIGHT = np.array([[0, 1, 1], [0, 1, 1]], dtype="float32")
# Wrong bits on weighted steps: example 0: step 1 -> 1, step 2 -> 0; example 1: step 1 -> 2,
# step 2 -> 1.  Total 4 over 2 sequences = 2.0.  Unweighted adds step 0: 1 + 0 -> 5 / 2 = 2.5.


def test_bit_error_numpy_hand_computed():
    assert bit_error_per_sequence(Y_TRUE, LOGITS, WEIGHT) == 2.0
    assert bit_error_per_sequence(Y_TRUE, LOGITS) == 2.5
    probs = 1.0 / (1.0 + np.exp(-LOGITS.astype(np.float64)))
    assert bit_error_per_sequence(Y_TRUE, probs, WEIGHT, from_logits=False) == 2.0
    # Probability exactly 0.5 rounds to 0 (logit 0 at example 0, step 2, bit 0 -> target 0).
    assert (
        bit_error_per_sequence(np.ones((1, 1, 1)), np.full((1, 1, 1), 0.5), from_logits=False)
        == 1.0
    )
    assert bit_error_per_sequence(Y_TRUE, LOGITS, 2 * WEIGHT) == 4.0


def test_bit_error_keras_metric_hand_computed():
    metric = BitErrorPerSequence()
    metric.update_state(Y_TRUE, LOGITS, sample_weight=WEIGHT)
    assert float(metric.result()) == pytest.approx(2.0)
    metric.update_state(Y_TRUE[:1], LOGITS[:1])  # 1 + 1 + 0 = 2 wrong bits, 1 sequence
    assert float(metric.result()) == pytest.approx((4.0 + 2.0) / 3.0)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    probs = BitErrorPerSequence(from_logits=False)
    probs.update_state(Y_TRUE, keras.ops.sigmoid(LOGITS), sample_weight=WEIGHT)
    assert float(probs.result()) == pytest.approx(2.0)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(BitErrorPerSequence(name="bits", from_logits=False))
    )
    assert isinstance(restored, BitErrorPerSequence)
    assert restored.name == "bits" and restored.from_logits is False


def test_bit_error_metric_in_compile_evaluate():
    data = copy_task.dataset(
        batch_size=6, num_batches=3, seed=0, fixed=True, min_seq_len=2, max_seq_len=4
    )
    inputs = keras.Input((None, copy_task.INPUT_SIZE))
    model = keras.Model(inputs, keras.layers.Dense(copy_task.OUTPUT_SIZE)(inputs))
    model.compile(
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[BitErrorPerSequence(name="bits_all")],
        weighted_metrics=[BitErrorPerSequence(name="bits")],
        run_eagerly=False,
    )
    result = model.evaluate(data, verbose=0, return_dict=True)
    errors_weighted = errors_all = sequences = 0.0
    for i in range(len(data)):
        x, y, w = data[i]
        logits = np.asarray(model.predict_on_batch(x))
        errors_weighted += bit_error_per_sequence(y, logits, w) * len(x)
        errors_all += bit_error_per_sequence(y, logits) * len(x)
        sequences += len(x)
    assert result["bits"] == pytest.approx(errors_weighted / sequences, rel=1e-5)
    # Keras gives `metrics=` no sample weights: every step counts.
    assert result["bits_all"] == pytest.approx(errors_all / sequences, rel=1e-5)
    assert result["bits"] != pytest.approx(result["bits_all"])
