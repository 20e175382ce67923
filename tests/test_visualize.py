"""Tests of `keras_stm.experiments.visualize`: memory traces (checked against the STM layer and a
numpy
re-derivation of SAM/OPA), the plots, and the results comparison."""

import json
import os

import keras
import numpy as np
import pytest

import keras_stm
from keras_stm.experiments import visualize
from keras_stm.experiments.models import build_sequence_model

SIZES = dict(
    num_queries=2, memory_size=4, relation_size=3, readout_size=5, head_units=3, head_hidden_units=6
)


def _inputs(batch=2, steps=3, width=5, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, steps, width)).astype("float32")


def _stm(**changes):
    config = dict(SIZES, relational_carry=0.5, relational_read=0.3, relational_transfer=0.2)
    config.update(changes)
    return keras_stm.STM(return_sequences=True, return_state=True, **config)


def _numpy(x):
    if isinstance(x, keras.Variable):
        x = keras.ops.convert_to_tensor(x)
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_trace_matches_the_stm_layer():
    x = _inputs()
    stm = _stm()
    outputs, _, item, relational = stm(x)
    trace = visualize.trace_memories(stm, x)
    assert trace["item_memory"].shape == (2, 3, 4, 4)
    assert trace["relational_memory"].shape == (2, 3, 2, 4, 4)
    # Every step's output is read from that step's relational memory: all must match.
    np.testing.assert_allclose(trace["outputs"], _numpy(outputs), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(trace["item_memory"][:, -1], _numpy(item), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        trace["relational_memory"][:, -1], _numpy(relational), rtol=1e-4, atol=1e-5
    )
    d, nq = 4, 2
    cell = stm.cell
    np.testing.assert_allclose(
        trace["initial_item_memory"][0], _numpy(cell.initial_item_memory), rtol=1e-6
    )
    np.testing.assert_allclose(
        trace["initial_relational_memory"][1],
        _numpy(cell.initial_relational_memory).reshape(nq, d, d),
        rtol=1e-6,
    )


def _layer_norm(p, axis, eps):
    mean = p.mean(axis=axis, keepdims=True)
    var = ((p - mean) ** 2).mean(axis=axis, keepdims=True)
    return (p - mean) / np.sqrt(var + eps)


def test_attention_scores_rebuild_the_relational_memory():
    """q, k, v recomputed in numpy from the captured SAM input; OPA of them must give the new
    relational memory, Mr_t = carry * Mr_{t-1} + R with R_i = sum_j tanh(q_i ⊙ k_j) ⊗ v_j, and
    (additive write) the new item memory, Mi_t = Mi_{t-1} + u ⊗ u + transfer * G1(R)."""
    x = _inputs(seed=1)
    stm = _stm(gated_write=False)
    stm.build(x.shape)
    trace = visualize.trace_memories(stm, x)
    sam = stm.cell.self_attentive_memory
    kernel, bias, gamma, beta = (_numpy(w) for w in (sam.kernel, sam.bias, sam.gamma, sam.beta))
    cell = stm.cell
    write_kernel, write_bias = (_numpy(w) for w in cell.write_projector[0])
    transfer_kernel, transfer_bias = _numpy(cell.transfer_kernel), _numpy(cell.transfer_bias)
    nq, d = 2, 4
    previous = trace["initial_relational_memory"]
    previous_item = trace["initial_item_memory"]
    for t in range(3):
        s = trace["sam_input"][:, t].astype(np.float64)
        p = _layer_norm(s @ kernel + bias, (-2, -1), 1e-5) * gamma + beta  # (B, d, 3nq)
        q, k, v = p[..., :nq], p[..., nq : 2 * nq], p[..., 2 * nq :]
        q, k, v = (np.swapaxes(a, -1, -2) for a in (q, k, v))  # (B, nq, d)
        np.testing.assert_allclose(trace["queries"][:, t], q, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(trace["keys"][:, t], k, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(trace["values"][:, t], v, rtol=1e-4, atol=1e-5)
        scores = np.tanh(q[:, :, None, :] * k[:, None, :, :])
        np.testing.assert_allclose(trace["attention"][:, t], scores, rtol=1e-4, atol=1e-5)
        relation = np.einsum("bijp,bjc->bipc", scores, v)
        np.testing.assert_allclose(
            trace["relational_memory"][:, t], 0.5 * previous + relation, rtol=1e-4, atol=1e-4
        )
        previous = trace["relational_memory"][:, t]
        # Additive write then transfer: Mi_t = Mi_{t-1} + u ⊗ u + 0.2 * G1(R).
        u = x[:, t] @ write_kernel + write_bias
        transfer = (
            np.einsum("bipc,ipe->bce", relation, transfer_kernel.reshape(nq, d, d)) + transfer_bias
        )
        np.testing.assert_allclose(
            trace["item_memory"][:, t],
            previous_item + u[:, :, None] * u[:, None, :] + 0.2 * transfer,
            rtol=1e-4,
            atol=1e-4,
        )
        previous_item = trace["item_memory"][:, t]
    assert np.all(np.abs(trace["attention"]) <= 1.0)


def test_trace_of_a_model_with_an_embedding():
    model = build_sequence_model(
        None,
        4,
        vocabulary_size=7,
        embedding_size=5,
        stm_config=dict(
            num_queries=2, memory_size=4, relation_size=3, readout_size=5, head_hidden_units=6
        ),
    )
    tokens = np.array([[1, 2, 3, 4], [6, 5, 0, 2]], dtype="int32")
    trace = visualize.trace_memories(model, tokens)
    np.testing.assert_allclose(trace["outputs"][:, -1], _numpy(model(tokens)), rtol=1e-4, atol=1e-5)
    assert trace["item_memory"].shape == (2, 4, 4, 4)


def test_trace_rejects_bad_inputs():
    stm = _stm()
    stm.build((None, 3, 5))
    with pytest.raises(ValueError, match="features per step"):
        visualize.trace_memories(stm, np.zeros((3, 7), "float32"))
    with pytest.raises(ValueError, match="sequence"):
        visualize.trace_memories(stm, np.zeros((1, 1, 3, 5), "float32"))
    no_stm = keras.Sequential([keras.Input((3, 5)), keras.layers.LSTM(2)])
    with pytest.raises(ValueError, match="exactly one"):
        visualize.trace_memories(no_stm, _inputs())
    with pytest.raises(ValueError, match="built"):
        visualize.trace_memories(keras_stm.STMCell(**SIZES), _inputs())
    with pytest.raises(ValueError, match="model"):
        visualize.trace_memories("not a model", _inputs())


def _png_shape(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image[..., :3].std() > 0.01  # not a blank image
    return image.shape


def test_memory_plots(tmp_path):
    stm = _stm()
    x = _inputs()
    stm.build(x.shape)
    trace = visualize.trace_memories(stm, x)
    for plot in (
        visualize.plot_item_memory,
        visualize.plot_relational_memory,
        visualize.plot_attention,
    ):
        everything = str(tmp_path / f"{plot.__name__}_all.png")
        one = str(tmp_path / f"{plot.__name__}_one.png")
        assert plot(trace, everything, example=1, title="t") == everything
        assert plot(trace, one, steps=[-1]) == one
        full, single = _png_shape(everything), _png_shape(one)
        # Steps are laid out along the width (item memory, attention) or height (slots).
        assert full[0] * full[1] > single[0] * single[1]
        with pytest.raises(ValueError, match="example"):
            plot(trace, one, example=2)
        with pytest.raises(ValueError, match="steps"):
            plot(trace, one, steps=[3])
        with pytest.raises(ValueError, match="trace"):
            plot({"nothing": 1}, one)


def _write_run(folder, task, model, test, losses, steps_per_epoch=50, paper_metric="accuracy"):
    os.makedirs(folder)
    results = {
        "task": task,
        "model": model,
        "paper_metric": paper_metric,
        "test": test,
        "flags": {"steps_per_epoch": steps_per_epoch},
        "environment": {"backend": "jax"},
    }
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(folder, "history.csv"), "w") as f:
        f.write("epoch,loss\n" + "".join(f"{i},{v}\n" for i, v in enumerate(losses)))
    return os.path.join(folder, "results.json")


def test_read_and_plot_results(tmp_path):
    a = _write_run(
        str(tmp_path / "a"), "nth_farthest", "stm", {"loss": 0.5, "accuracy": 0.9}, [2.0, 1.0, 0.5]
    )
    b = _write_run(
        str(tmp_path / "b"),
        "nth_farthest",
        "lstm",
        {"accuracy": 0.3, "loss": 1.7},
        [2.1, 1.9],
        steps_per_epoch=200,
    )
    table = visualize.read_results([a, b])
    assert table["metric"] == "accuracy"  # the shared paper metric
    assert [run["value"] for run in table["runs"]] == [0.9, 0.3]
    assert table["runs"][0]["iterations"] == [50, 100, 150]
    assert table["runs"][1]["iterations"] == [200, 400]
    assert table["runs"][1]["loss"] == [2.1, 1.9]
    assert table["runs"][0]["label"] == "nth_farthest / stm / jax (a)"
    assert [run["value"] for run in visualize.read_results([a, b], metric="loss")["runs"]] == [
        0.5,
        1.7,
    ]
    out = str(tmp_path / "compare.png")
    assert visualize.plot_results([a, b], out, title="compare") == out
    _png_shape(out)

    with pytest.raises(ValueError, match="metric"):
        visualize.read_results([a, b], metric="bit_error")
    with pytest.raises(FileNotFoundError, match="missing"):
        visualize.read_results([a, str(tmp_path / "missing" / "results.json")])
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt.json"):
        visualize.read_results([str(corrupt)])
    with pytest.raises(ValueError, match="at least one"):
        visualize.read_results([])


def test_read_results_of_runs_collected_in_one_folder(tmp_path):
    """`<run>.results.json` takes its curve from `<run>.history.csv` beside it."""
    for name, losses in (("copy-stm", [1.0, 0.5]), ("copy-lstm", [0.9, 0.8, 0.7])):
        (tmp_path / f"{name}.results.json").write_text(
            json.dumps(
                {
                    "task": "copy",
                    "model": name.split("-")[1],
                    "test": {"loss": losses[-1]},
                    "flags": {"steps_per_epoch": 10},
                }
            )
        )
        (tmp_path / f"{name}.history.csv").write_text(
            "epoch,loss\n" + "".join(f"{i},{v}\n" for i, v in enumerate(losses))
        )
    table = visualize.read_results(
        [str(tmp_path / "copy-stm.results.json"), str(tmp_path / "copy-lstm.results.json")]
    )
    assert [run["loss"] for run in table["runs"]] == [[1.0, 0.5], [0.9, 0.8, 0.7]]
    assert [run["iterations"] for run in table["runs"]] == [[10, 20], [10, 20, 30]]
    assert [run["value"] for run in table["runs"]] == [0.5, 0.7]
    assert [run["label"] for run in table["runs"]] == [
        "copy / stm (copy-stm)",
        "copy / lstm (copy-lstm)",
    ]


def test_history_with_rows_longer_than_its_header(tmp_path):
    """A session that logged more columns than the file's header (issue 24, finding 2: the
    learning-curve plot crashed after training)."""
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.5,3.0\n")
    assert visualize.read_history(str(path)) == {"epoch": [0.0, 1.0], "loss": [1.0, 0.5]}
    visualize.plot_history(str(path), str(tmp_path / "curve.png"))
    assert os.path.getsize(tmp_path / "curve.png") > 0
