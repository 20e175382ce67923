"""Tests of the benchmark script's options (`benchmarks/cell_throughput.py`: `--devices`,
`--unroll`, `--train-step fit`, libraries without `loop`) and of `benchmarks/summarize.py`.

The timings themselves are never asserted (speed targets live in `benchmarks/`, not in tests);
these check that a measurement runs, records its device count, and that bad flags are refused.
"""

import importlib.util
import json
import math
import os
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # the script imports `configs`
    spec = importlib.util.spec_from_file_location(
        "cell_throughput", os.path.join(ROOT, "benchmarks", "cell_throughput.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = (6, 3, 2, 8, 8, 4, False, ("learned",) * 3, None)
"""A configuration shaped like Nth-farthest (ungated write, every path learned, the output of
the last step: the low-rank loop applies) at a size that times in a blink."""


@pytest.fixture
def bench(monkeypatch):
    module = _load()
    monkeypatch.setitem(importlib.import_module("configs").CONFIGS, "tiny", TINY)
    yield module
    if keras.backend.backend() == "jax":
        keras.distribution.set_distribution(None)


@pytest.mark.parametrize(
    "flags",
    [
        ["--devices", "0"],
        ["--devices", "3", "--batch", "16"],
        ["--batch", "0"],
        ["--configs", "nope"],
        ["--impl", "fast"],
        ["--sync", "never"],
        ["--sync", "end"],
        ["--low-rank-block-size", "0"],
        ["--low-rank-block-size", "8,x"],
    ],
)
def test_bad_flags_exit_with_an_error(bench, flags, capsys):
    with pytest.raises(SystemExit):
        bench.main(flags)
    assert "error" in capsys.readouterr().err


def test_devices_measurement_records_the_device_count(bench, tmp_path):
    out = tmp_path / "rows.jsonl"
    bench.main(
        [
            "--configs",
            "tiny",
            "--batch",
            "2",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--devices",
            "1",
            "--output",
            str(out),
        ]
    )
    row = json.loads(out.read_text().strip())
    if keras.backend.backend() == "jax":
        assert row["data_parallel_devices"] == 1 and row["batch"] == 2
        assert math.isfinite(row["ms"]) and row["loss_finite"]
    else:  # keras.distribution is jax-only in Keras 3.15: the row records the error
        assert "error" in row and "jax" in row["error"]


def test_set_devices_refuses_more_devices_than_exist(bench):
    if keras.backend.backend() != "jax":
        with pytest.raises(ValueError, match="jax"):
            bench.set_devices(1)
        return
    available = len(keras.distribution.list_devices())
    with pytest.raises(ValueError, match="only"):
        bench.set_devices(available + 1)
    bench.set_devices(None)  # no distribution asked for: nothing changes
    assert keras.distribution.distribution() is None


def test_unrolled_measurement_records_its_options(bench, tmp_path):
    """`--unroll` runs on every backend; the row says what ran."""
    out = tmp_path / "rows.jsonl"
    bench.main(
        [
            "--configs",
            "tiny",
            "--batch",
            "2",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--unroll",
            "--impl",
            "stm",
            "--output",
            str(out),
        ]
    )
    row = json.loads(out.read_text().strip())
    assert row["unroll"] is True and row["impl"] == "stm" and row["loop"] == "auto"
    assert math.isfinite(row["ms"]) and row["loss_finite"]


def test_loop_and_train_step_options_are_recorded(bench, tmp_path):
    """`--loop` reaches the layer (the row records it); `--train-step stateless` times a jitted
    stateless step under jax and is refused elsewhere."""
    out = tmp_path / "rows.jsonl"
    common = [
        "--configs",
        "tiny",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--output",
        str(out),
    ]
    bench.main(common + ["--loop", "low_rank"])
    row = json.loads(out.read_text().strip().splitlines()[-1])
    assert row["loop"] == "low_rank" and "error" not in row
    assert math.isfinite(row["ms"]) and row["loss_finite"] and row["train_step"] == "keras"
    if keras.backend.backend() != "jax":
        with pytest.raises(SystemExit):
            bench.main(common + ["--train-step", "stateless"])
        return
    bench.main(common + ["--train-step", "stateless"])
    row = json.loads(out.read_text().strip().splitlines()[-1])
    assert row["train_step"] == "stateless" and math.isfinite(row["ms"]) and row["loss_finite"]
    assert row["sync"] == "iteration"
    bench.main(common + ["--train-step", "stateless", "--sync", "end"])
    row = json.loads(out.read_text().strip().splitlines()[-1])
    assert row["sync"] == "end" and math.isfinite(row["ms"]) and row["loss_finite"]


def test_fit_train_step_records_the_library(bench, tmp_path, monkeypatch):
    """`--train-step fit` times `model.fit` calls of `--repeats` steps; the row says which
    keras_stm ran (`$KERAS_STM_COMMIT` where given) and under which label."""
    import keras_stm

    monkeypatch.setenv("KERAS_STM_COMMIT", "abc1234")
    out = tmp_path / "rows.jsonl"
    flags = ["--configs", "tiny", "--batch", "2", "--repeats", "2", "--warmup", "1"]
    flags += ["--train-step", "fit", "--fit-calls", "2", "--code-version", "after"]
    bench.main(flags + ["--output", str(out)])
    row = json.loads(out.read_text().strip())
    assert row["train_step"] == "fit" and row["sync"] == "fit" and row["loop"] == "auto"
    assert row["fit_calls"] == 2 and row["steps_per_fit_call"] == 2
    assert math.isfinite(row["ms"]) and row["min_ms"] <= row["ms"] and row["loss_finite"]
    assert row["code_version"] == "after" and row["keras_stm_commit"] == "abc1234"
    assert row["keras_stm_path"] == os.path.dirname(os.path.abspath(keras_stm.__file__))
    with pytest.raises(SystemExit):
        bench.main(flags[:-4] + ["--train-step", "fit", "--fit-calls", "0"])


def test_a_library_without_loop_keeps_its_defaults(bench, monkeypatch):
    """An STM without `loop` (keras-stm before issue 22) is built with its own loop defaults;
    asking it for another loop is an error; a copy inside a checkout takes no commit of it."""
    import keras_stm

    class OldSTM(keras_stm.STM):
        def __init__(self, **kwargs):
            assert "loop" not in kwargs
            super().__init__(**kwargs)

    monkeypatch.setattr(keras_stm, "STM", OldSTM)
    assert not bench.stm_takes_loop()
    assert bench.build_model("nth_farthest", "stm", 2).get_layer("stm").__class__ is OldSTM
    with pytest.raises(ValueError, match="no `loop`"):
        bench.build_model("nth_farthest", "stm", 2, loop="dense")
    assert bench.git_commit(os.path.join(ROOT, "benchmarks")) is None


def test_baseline_times_both_sync_modes(tmp_path, monkeypatch):
    """The authors'-style baseline (torch, CPU here) records how it synchronised."""
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(
        "official_style_torch", os.path.join(ROOT, "benchmarks", "official_style_torch.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(module.CONFIGS, "tiny", TINY)
    out = tmp_path / "rows.jsonl"
    for sync in ("iteration", "end"):
        module.main(
            [
                "--configs",
                "tiny",
                "--batch",
                "2",
                "--repeats",
                "2",
                "--device",
                "cpu",
                "--sync",
                sync,
                "--output",
                str(out),
            ]
        )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sync"] for r in rows] == ["iteration", "end"]
    assert all(math.isfinite(r["ms"]) and r["ms"] > 0 for r in rows)


def _load_summarize():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "summarize", os.path.join(ROOT, "benchmarks", "summarize.py")
    )
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    return summarize


def test_summarize_labels_options_and_ratios(tmp_path, capsys):
    summarize = _load_summarize()
    rows = [
        {"impl": "official_style_torch", "config": "copy", "ms": 200.0, "precision": "float32"},
        {
            "impl": "stm",
            "config": "copy",
            "ms": 20.0,
            "precision": "highest",
            "backend": "jax",
            "unroll": True,
            "peak_gib": 4.0,
        },
        {
            "impl": "stm_compiled_loop",
            "config": "copy",
            "ms": 50.0,
            "precision": "highest",
            "backend": "torch",
            "torch_compile_mode": "reduce-overhead",
            "peak_gib": 0.2,
        },
        {
            "impl": "stm",
            "config": "copy",
            "ms": 16.0,
            "precision": "highest",
            "backend": "jax",
            "unroll": True,
            "relational_loop_form": "low_rank",
            "train_step": "stateless",
            "hand_written_backward": True,
        },
        {
            "impl": "stm",
            "config": "copy",
            "ms": 17.0,
            "precision": "highest",
            "backend": "jax",
            "code_version": "0ad932a",
        },
        {
            "impl": "stm",
            "config": "copy",
            "ms": 18.0,
            "precision": "highest",
            "backend": "jax",
            "unroll": True,
            "relational_loop_form": "low_rank",
            "low_rank_block_size": 8,
            "timesteps": 42,
        },
        {
            "impl": "stm",
            "config": "copy",
            "ms": 19.0,
            "precision": "highest",
            "backend": "jax",
            "unroll": True,
            "relational_loop_form": "low_rank",
            "low_rank_block_size": 42,
            "timesteps": 42,
        },
        {
            "impl": "stm",
            "config": "copy",
            "ms": 14.0,
            "precision": "highest",
            "backend": "jax",
            "unroll": True,
            "train_step": "stateless",
            "xla_flags": "--xla_gpu_enable_command_buffer=FUSION --xla_gpu_command_buffer_scheduling_mode=CONCURRENT",
        },
        {
            "impl": "stm",
            "config": "copy",
            "ms": 19.3,
            "precision": "highest",
            "backend": "jax",
            "xla_flags": "--xla_gpu_command_buffer_unroll_loops=true",
        },
        {
            "impl": "official_style_torch",
            "config": "copy",
            "ms": 150.0,
            "precision": "float32",
            "sync": "end",
        },
        {
            "impl": "stm",
            "config": "copy",
            "ms": 15.0,
            "precision": "highest",
            "backend": "jax",
            "train_step": "stateless",
            "sync": "end",
        },
    ]
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    summarize.main([str(path)])
    text = capsys.readouterr().out
    assert "| stm, unroll | jax | highest | copy | 42 | 20.0 | 4.0 | 10.0x | 8.7x |" in text
    assert "| stm_compiled_loop, reduce-overhead | torch | highest | copy | 42 | 50.0 | n/a" in text
    assert "| 4.0x | 3.5x |" in text
    assert (
        "| stm, unroll, low-rank loop, stateless jit step, hand-written backward | jax | highest "
        "| copy | 42 | 16.0 |"
    ) in text
    assert "| stm, code: 0ad932a | jax | highest | copy | 42 | 17.0 |" in text
    assert "| stm, unroll, low-rank loop, blocks of 8 | jax | highest | copy | 42 | 18.0 |" in text
    assert "| stm, unroll, low-rank loop, one block | jax | highest | copy | 42 | 19.0 |" in text
    assert (
        "| stm, unroll, XLA command buffers, concurrent, stateless jit step | jax | highest | copy "
        "| 42 | 14.0 | n/a | 14.3x | 12.4x |"
    ) in text
    assert (
        "| stm, XLA command buffers, loops unrolled in the graphs | jax | highest | copy | 42 | 19.3 |"
        in text
    )
    # A pipelined row is compared with the pipelined baseline, not with the authors' figure.
    assert (
        "| stm, stateless jit step, pipelined | jax | highest | copy | 42 | 15.0 | n/a | 10.0x "
        "| n/a (pipelined) |"
    ) in text


def test_profile_script_refuses_bad_flags(capsys):
    """The GPU profiler checks its flags before it needs CUDA."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "profile_jax_step", os.path.join(ROOT, "benchmarks", "profile_jax_step.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for flags in (["--configs", "nope"], ["--batch", "0"], ["--low-rank-block-size", "0"]):
        with pytest.raises(SystemExit):
            module.parse(flags)
        assert "error" in capsys.readouterr().err
    assert module.parse(["--configs", "copy", "--unroll"]).unroll is True


def test_summarize_before_after_pairs_versions(tmp_path, capsys):
    summarize = _load_summarize()
    common = {"impl": "stm", "precision": "highest", "train_step": "fit", "device": "H100"}
    rows = [
        dict(common, config="copy", backend="jax", code_version="before", ms=20.0, compile_s=40),
        dict(
            common,
            config="copy",
            backend="jax",
            code_version="after",
            ms=18.0,
            compile_s=30,
            keras_stm_commit="8489fd0ec+uncommitted",
        ),
        dict(common, config="babi", backend="torch", code_version="after", error="timeout"),
        dict(common, config="copy", backend="jax", ms=5.0),  # no version: left out
    ]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in rows[:2]))
    second.write_text("\n".join(json.dumps(r) for r in rows[2:]))
    summarize.main(["--before-after", str(first), str(second)])
    text = capsys.readouterr().out
    assert (
        "| jax | copy | 42 | highest | fit | 20.00 | 18.00 | 0.90 | 40 / 30 | ? / 8489fd0+ |"
        in text
    )
    assert "| torch | babi | 70 | highest | fit | missing | error: timeout | n/a |" in text
    assert text.count("| copy |") == 1


def test_summarize_fit_against_the_stateless_step(tmp_path, capsys):
    summarize = _load_summarize()
    common = {"impl": "stm", "precision": "highest", "backend": "jax", "device": "H100"}
    rows = [
        dict(common, config="copy", train_step="fit", code_version="before", ms=20.0),
        dict(common, config="copy", train_step="fit", code_version="after", ms=18.0),
        dict(common, config="copy", train_step="stateless", code_version="after", ms=12.0),
        dict(common, config="rar", train_step="fit", code_version="after", ms=9.0),
        dict(common, config="rar", train_step="stateless", code_version="after", error="timeout"),
        dict(common, config="babi", train_step="fit", code_version="after", ms=30.0),  # no pair
    ]
    path = tmp_path / "ba.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    summarize.main(["--before-after", str(path)])
    before_after, _, against = capsys.readouterr().out.partition("### Through fit against")
    # The stateless rows stay out of the before / after table ...
    assert "stateless" not in before_after and before_after.count("| copy |") == 1
    # ... and fill their own, fit / stateless, where a stateless row exists.
    assert "| jax | copy | 42 | highest | 18.00 | 12.00 | 1.50 | H100 |" in against
    assert "| jax | rar | 25 | highest | 9.00 | error: timeout | n/a | H100 |" in against
    assert "| babi |" not in against
    # Files without stateless rows print no second table.
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]))
    summarize.main(["--before-after", str(path)])
    assert "Through fit against" not in capsys.readouterr().out


def _load_check_xla_flags():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "check_xla_flags", os.path.join(ROOT, "benchmarks", "check_xla_flags.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_xla_flags_check_judges_against_float64(capsys):
    """The flagged step passes when its gradient error against float64 is at most `error_ratio`
    times the unflagged one's, and fails when it is larger, or when a loss moves."""
    import numpy as np

    module = _load_check_xla_flags()
    reference = {"grad_0": np.array([1.0, -2.0]), "grad_1": np.array([0.5, 0.25])}
    plain = {
        "grad_0": np.array([1.0 + 1e-5, -2.0]),
        "grad_1": np.array([0.5, 0.25]),
        "loss": np.array(0.3),
        "losses": np.array([0.3, 0.29]),
    }
    close = dict(plain, grad_0=np.array([1.0, -2.0 - 1.5e-5]))  # error 7.5e-6 <= 2 x 5e-6
    row = module.judge(close, plain, reference, error_ratio=2.0, tolerance=1e-5)
    assert row["ok"] and row["gradients"] == 2
    assert math.isclose(row["flagged_vs_float64"], 7.5e-6) and math.isclose(
        row["plain_vs_float64"], 5e-6
    )
    far = dict(plain, grad_1=np.array([0.5, 0.25 + 1e-4]))  # exact before, now off by 2e-4
    row = module.judge(far, plain, reference, error_ratio=2.0, tolerance=1e-5)
    assert not row["ok"] and row["worst_gradient"]["index"] == 1
    moved = dict(plain, losses=np.array([0.3, 0.2901]))
    assert not module.judge(moved, plain, reference, error_ratio=2.0, tolerance=1e-5)["ok"]
    for flags in (
        ["--configs", "nope"],
        ["--batch", "0"],
        ["--timesteps", "-1"],
        ["--error-ratio", "0.5"],
        ["--tolerance", "0"],
    ):
        with pytest.raises(SystemExit):
            module.parse(flags)
        assert "error" in capsys.readouterr().err


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="checks jax's XLA flags (runs jax itself)"
)
@pytest.mark.large
def test_xla_flags_check_runs_three_processes(capsys):
    """On a CPU the GPU flags change nothing: the flagged and plain steps agree exactly, and
    both are within float32 error of the float64 step from the same weights."""
    module = _load_check_xla_flags()
    status = module.main(
        [
            "--configs",
            "nth_farthest",
            "--batch",
            "2",
            "--timesteps",
            "2",
            "--steps",
            "2",
            "--flags=--xla_gpu_command_buffer_scheduling_mode=CONCURRENT",
        ]
    )
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0 and row["ok"] and row["gradients"] > 20
    assert row["gradient_max_rel_diff"] == 0.0 and row["adam_losses_max_rel_diff"] == 0.0
    assert 0.0 < row["plain_vs_float64"] < 1e-4
