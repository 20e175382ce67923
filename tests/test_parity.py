"""The port against tensors produced by the authors' own PyTorch STM (tests/fixtures/*.npz)."""

import json
import pathlib

import keras
import numpy as np
import pytest
from keras import ops

import keras_stm
from keras_stm.layers import _stm_loop
from tests.backend_utils import float64_mode
from tests.backend_utils import gradients

FIXTURES = sorted((pathlib.Path(__file__).parent / "fixtures").glob("stm_*.npz"))


def load_fixture(path):
    data = np.load(path)
    meta = json.loads(str(data["meta"]))
    state = {k[len("param/") :]: data[k] for k in data.files if k.startswith("param/")}
    return data, meta, state


def build_cell(meta, state, dtype):
    config = keras_stm.cell_config_from_official(meta["config"])
    cell = keras_stm.STMCell(**config, dtype=dtype)
    cell.build((None, meta["config"]["input_size"]))
    keras_stm.load_official_weights(cell, state)
    return cell


def close(actual, expected, rtol):
    actual = np.asarray(actual, dtype="float64")
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 1e-4)])
def test_steps_match_reference(path, dtype, rtol):
    """Outputs, read-outs and both memories at every step, through the cell step by step."""
    with float64_mode():
        data, meta, state = load_fixture(path)
        cell = build_cell(meta, state, dtype)
        inputs = data["inputs"].astype(dtype)  # (T, B, D) time-major
        steps, batch = inputs.shape[:2]
        states = cell.get_initial_state(batch_size=batch)
        item0, rel0 = cell.unflatten_memories(states[1], states[2])
        close(ops.convert_to_numpy(item0), data["init/Mi"], rtol)
        close(ops.convert_to_numpy(rel0), data["init/Mr"], rtol)
        for t in range(steps):
            output, states = cell(ops.convert_to_tensor(inputs[t], dtype=dtype), states)
            item, rel = cell.unflatten_memories(states[1], states[2])
            close(ops.convert_to_numpy(output), data["outputs"][t], rtol)
            close(ops.convert_to_numpy(cell.read_out(rel)), data["readouts"][t], rtol)
            close(ops.convert_to_numpy(item), data["steps/Mi"][t], rtol)
            close(ops.convert_to_numpy(rel), data["steps/Mr"][t], rtol)
        close(ops.convert_to_numpy(item), data["final/Mi"], rtol)
        close(ops.convert_to_numpy(rel), data["final/Mr"], rtol)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
@pytest.mark.parametrize("layer", ["rnn", "stm"])
def test_gradients_match_reference(path, layer):
    """Gradients of sum(outputs * loss_weights) w.r.t. every weight and the inputs, float64,
    through `keras.layers.RNN(STMCell)` and through the `STM` layer's lean loop."""
    with float64_mode():
        data, meta, state = load_fixture(path)
        inputs = np.swapaxes(data["inputs"], 0, 1)  # batch-major
        weights = np.swapaxes(data["loss_weights"], 0, 1)
        if layer == "rnn":
            cell = build_cell(meta, state, "float64")
            rnn = keras.layers.RNN(cell, return_sequences=True, dtype="float64")
        else:
            config = keras_stm.cell_config_from_official(meta["config"])
            rnn = keras_stm.STM(**config, return_sequences=True, dtype="float64")
            rnn.build(inputs.shape)
            keras_stm.load_official_weights(rnn, state)
            cell = rnn.cell

        def loss_fn(x):
            return ops.sum(rnn(x) * ops.convert_to_tensor(weights))

        mapping = keras_stm.weights.official_weight_map(cell)
        names = sorted(mapping)
        variables = [mapping[n][0] for n in names]
        loss, grads, grad_inputs = gradients(loss_fn, variables, inputs)
        np.testing.assert_allclose(loss, float(data["loss"]), rtol=1e-9)
        close(grad_inputs, np.swapaxes(data["grad/inputs"], 0, 1), 1e-9)
        for name, grad in zip(names, grads):
            transpose = mapping[name][1]
            ours = grad.T if transpose else grad
            key = f"grad/{name}"
            if key in data.files:
                close(np.reshape(ours, data[key].shape), data[key], 1e-9)
            else:  # the official module got no gradient: the path is unused (e.g. gates, rd=False)
                assert np.all(ours == 0), name


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_last_step_loops_match_reference(path):
    """`STM` with `return_sequences=False` (the authors' 3-D path): the last output and both
    final memories match the fixture in float64 through the dense loop and, wherever a step
    reads or carries Mr and SAM runs once a step, through the low-rank loop (no Mr inside the
    loop) as well."""
    with float64_mode():
        data, meta, state = load_fixture(path)
        config = keras_stm.cell_config_from_official(meta["config"])
        inputs = np.swapaxes(data["inputs"], 0, 1)  # batch-major
        loops = ["dense"]
        if (
            config.get("sam_steps", 1) == 1
            and build_cell(meta, state, "float64")._uses_previous_relational_memory
        ):
            loops.append("low_rank")
        for loop in loops:
            layer = keras_stm.STM(**config, return_state=True, loop=loop, dtype="float64")
            layer.build(inputs.shape)
            keras_stm.load_official_weights(layer, state)
            form, _ = _stm_loop._plan(layer.cell, inputs.shape[1], loop, False, False)
            assert form in (loop, "factored")
            output, _, item, relational = layer(inputs)
            close(ops.convert_to_numpy(output), data["outputs"][-1], 1e-9)
            close(ops.convert_to_numpy(item), data["final/Mi"], 1e-9)
            close(ops.convert_to_numpy(relational), data["final/Mr"], 1e-9)


def test_low_rank_loop_applies_to_fixtures():
    """The fixtures exercise the low-rank loop: it applies to at least three of them."""
    applicable = 0
    for path in FIXTURES:
        _, meta, state = load_fixture(path)
        config = keras_stm.cell_config_from_official(meta["config"])
        cell = build_cell(meta, state, "float32")
        applicable += config.get("sam_steps", 1) == 1 and cell._uses_previous_relational_memory
    assert applicable >= 3
