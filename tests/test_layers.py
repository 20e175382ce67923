"""The layers of keras-stm: numbers against brute-force numpy, and the shared layer checks
(`tests/layer_test_helper.run_layer_test`) on every layer, plus cross-backend `.keras` loading."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_stm
from keras_stm.layers import OuterProductAttention
from keras_stm.layers import SelfAttentiveMemory
from tests import layer_test_helper as helper

# Small shapes: nq 2, d 4, r 3, a 5, head 3 (hidden 6), input size 3, T 4, batch 2.
SMALL = dict(num_queries=2, memory_size=4, relation_size=3, readout_size=5, head_hidden_units=6)
FIXED = dict(relational_carry=0.5, relational_read=0.3, relational_transfer=0.2)
BATCH, STEPS, FEATURES = 2, 4, 3


def sequences(seed=0, batch=BATCH, steps=STEPS, features=FEATURES):
    return np.random.default_rng(seed).normal(size=(batch, steps, features)).astype("float32")


# ------------------------------------------------------------------------------------------
# Outer product attention


def brute_force_opa(q, k, v):
    """A[..., i, p, c] = sum_j tanh(q[..., i, p] * k[..., j, p]) * v[..., j, c], explicit loops."""
    lead = q.shape[:-2]
    nq, d = q.shape[-2:]
    nkv, dv = v.shape[-2:]
    out = np.zeros(lead + (nq, d, dv))
    for index in np.ndindex(*lead):
        for i in range(nq):
            for j in range(nkv):
                for p in range(d):
                    out[index + (i, p)] += (
                        np.tanh(q[index + (i, p)] * k[index + (j, p)]) * v[index + (j,)]
                    )
    return out


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)], ids=["rank2", "rank3", "rank4"])
def test_outer_product_attention_matches_brute_force(lead):
    rng = np.random.default_rng(1)
    q = rng.normal(size=lead + (3, 4)).astype("float32")
    k = rng.normal(size=lead + (2, 4)).astype("float32")
    v = rng.normal(size=lead + (2, 5)).astype("float32")
    expected = brute_force_opa(q, k, v)
    actual = ops.convert_to_numpy(keras_stm.ops.outer_product_attention(q, k, v))
    helper.assert_close(actual, expected, 1e-5)
    if len(lead) == 1:
        helper.assert_close(ops.convert_to_numpy(OuterProductAttention()(q, k, v)), expected, 1e-5)


def test_outer_product_attention_layer_checks(tmp_path):
    rng = np.random.default_rng(2)
    q = rng.normal(size=(2, 3, 4)).astype("float32")
    k = rng.normal(size=(2, 2, 4)).astype("float32")
    v = rng.normal(size=(2, 2, 5)).astype("float32")
    helper.run_layer_test(
        OuterProductAttention,
        {},
        input_data=[q, k, v],
        expected_output_shape=(None, 3, 4, 5),
        expected_output=brute_force_opa(q, k, v),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


# ------------------------------------------------------------------------------------------
# Self-attentive memory


def sam_parameters(layer):
    """SAM weights under the official names/layouts used by `helper.reference_sam`."""
    return {
        "qkv_projector.0.weight": ops.convert_to_numpy(layer.kernel).T.astype("float64"),
        "qkv_projector.0.bias": ops.convert_to_numpy(layer.bias).astype("float64"),
        "qkv_layernorm.0.weight": ops.convert_to_numpy(layer.gamma).astype("float64"),
        "qkv_layernorm.0.bias": ops.convert_to_numpy(layer.beta).astype("float64"),
    }


@pytest.mark.parametrize("normalization,rows,cols", [("joint", 4, 4), ("row", 5, 3)])
def test_self_attentive_memory_matches_reference(normalization, rows, cols):
    rng = np.random.default_rng(3)
    memory = rng.normal(size=(2, rows, cols)).astype("float32")
    layer = SelfAttentiveMemory(num_queries=3, normalization=normalization)
    layer.build(memory.shape)
    expected_norm_shape = (rows, 9) if normalization == "joint" else (9,)
    assert tuple(layer.gamma.shape) == expected_norm_shape
    helper.set_random_weights(layer, rng)
    expected = helper.reference_sam(
        sam_parameters(layer), memory.astype("float64"), 3, normalization
    )
    actual = ops.convert_to_numpy(layer(memory))
    assert actual.shape == (2, 3, rows, rows)
    helper.assert_close(actual, expected, 1e-4)
    # The factors the STM loop uses: values @ scores is SAM value-major, [b, c, i * rows + p].
    values, scores = layer.factors(memory)
    major = ops.convert_to_numpy(ops.matmul(values, scores))
    helper.assert_close(major, np.moveaxis(expected, -1, -3).reshape(2, rows, 3 * rows), 1e-4)
    # return_attention_scores: OPA's weights tanh(q_i[p] k_j[p]), [b, i, j, p].
    output, attention = layer(memory, return_attention_scores=True)
    helper.assert_close(ops.convert_to_numpy(output), expected, 1e-4)
    query, key, _ = (ops.convert_to_numpy(t) for t in layer.queries_keys_values(memory))
    expected_scores = np.tanh(query[:, :, None, :] * key[:, None, :, :])
    helper.assert_close(ops.convert_to_numpy(attention), expected_scores, 1e-5)


def test_self_attentive_memory_initialisation():
    layer = SelfAttentiveMemory(num_queries=3)
    layer.build((None, 6, 8))
    limit = 1.0 / np.sqrt(8)  # PyTorch nn.Linear default, fan_in = cols
    kernel = ops.convert_to_numpy(layer.kernel)
    assert kernel.shape == (8, 9) and np.abs(kernel).max() <= limit and kernel.std() > limit / 4
    assert np.abs(ops.convert_to_numpy(layer.bias)).max() <= limit
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.gamma), np.ones((6, 9)))
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.beta), np.zeros((6, 9)))


@pytest.mark.parametrize("normalization,shape", [("joint", (2, 4, 4)), ("row", (2, 5, 3))])
def test_self_attentive_memory_layer_checks(tmp_path, normalization, shape):
    memory = np.random.default_rng(4).normal(size=shape).astype("float32")
    helper.run_layer_test(
        SelfAttentiveMemory,
        dict(num_queries=3, normalization=normalization, epsilon=1e-4),
        input_data=memory,
        expected_output_shape=(None, 3, shape[1], shape[1]),
        expected_num_trainable_weights=4,  # kernel, bias, gamma, beta
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


# ------------------------------------------------------------------------------------------
# STM cell and STM layer against the numpy recurrence

VARIANTS = {
    "default": dict(head_units=3),
    "no_head": dict(),
    "linear_projectors_ungated_two_sam_steps": dict(
        head_units=3, projector_hidden_units=6, gated_write=False, sam_steps=2
    ),
    "rl_variant": dict(
        head_units=3,
        sam_normalization="row",
        readout_normalization=True,
        relational_carry=0.0,
        relational_read=0.0,
    ),
    "zero_initial_memory_fixed_coefficients": dict(
        head_units=3, learn_initial_memory=False, **FIXED
    ),
}


def reference_config(cell):
    alphas = [
        float(ops.convert_to_numpy(cell._coefficient(name)))
        for name in ("relational_carry", "relational_read", "relational_transfer")
    ]
    return dict(
        num_queries=cell.num_queries,
        memory_size=cell.memory_size,
        alphas=alphas,
        gated_write=cell.gated_write,
        sam_steps=cell.sam_steps,
        sam_normalization=cell.sam_normalization,
        readout_normalization=cell.readout_normalization,
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_stm_and_cell_match_numpy_recurrence(variant):
    """`STM` (sequences and final memories) and one `STMCell` step, random weights (learned
    coefficients included, so every path is open), against `helper.reference_stm`."""
    rng = np.random.default_rng(5)
    x = sequences(seed=6)
    layer = keras_stm.STM(**SMALL, **VARIANTS[variant], return_sequences=True, return_state=True)
    layer.build(x.shape)
    helper.set_random_weights(layer, rng, scale=0.4)
    cell = layer.cell
    params = helper.official_parameters(cell)
    config = reference_config(cell)
    outputs, _, item, relational = helper.reference_stm(params, config, x.astype("float64"))

    sequence, last, item_memory, relational_memory = layer(x)
    helper.assert_close(
        helper.to_numpy([sequence, last, item_memory, relational_memory]),
        [outputs, outputs[:, -1], item, relational],
        1e-4,
        variant,
    )

    # one step of the cell from the initial state
    states = cell.get_initial_state(batch_size=BATCH)
    step_output, new_states = cell(ops.convert_to_tensor(x[:, 0]), states)
    first = helper.reference_stm(params, config, x[:, :1].astype("float64"))
    step_item, step_relational = cell.unflatten_memories(new_states[1], new_states[2])
    helper.assert_close(
        helper.to_numpy([step_output, new_states[0], step_item, step_relational]),
        [first[0][:, 0], first[0][:, 0], first[2], first[3]],
        1e-4,
        variant,
    )
    helper.assert_close(ops.convert_to_numpy(cell.read_out(step_relational)), first[1][:, 0], 1e-4)


def spec_parameter_count(d_in, d_out, nq=8, d=96, r=96, a=64, m=128, hidden=None, learned_alphas=3):
    """Spec 3.2's parameter count, extended to `mlp_hid` projectors and fixed alphas."""

    def projector(out):
        if hidden is None:
            return out * d_in + out
        return (hidden * d_in + hidden) + (hidden * hidden + hidden) + (out * hidden + out)

    return (
        learned_alphas
        + 2
        + d * d
        + nq * d * d
        + (3 * nq * d + 3 * nq)
        + 6 * nq * d
        + 2 * projector(d)
        + projector(nq)
        + 2 * (2 * d * d + 2 * d)
        + (r * d * d + r)
        + (nq * d * d + d)
        + (a * nq * r + a)
        + (m * a + m)
        + (m * m + m)
        + (d_out * m + d_out)
    )


def test_parameter_count_matches_specification():
    """Spec 3.2: D_in 64, D_out 10 and default sizes give 1,174,127 parameters; the small cells
    built here have the counts of the same formula."""
    assert spec_parameter_count(64, 10) == 1_174_127
    cell = keras_stm.STMCell(**SMALL, head_units=3)
    cell.build((None, FEATURES))
    assert cell.count_params() == spec_parameter_count(FEATURES, 3, nq=2, d=4, r=3, a=5, m=6)
    babi_like = keras_stm.STMCell(
        **SMALL,
        head_units=3,
        projector_hidden_units=7,
        relational_carry=1.0,
        relational_transfer=0.0,
    )
    babi_like.build((None, FEATURES))
    # A fixed zero transfer creates no transfer weights (nq*d*d + d of the formula).
    assert babi_like.count_params() == spec_parameter_count(
        FEATURES, 3, nq=2, d=4, r=3, a=5, m=6, hidden=7, learned_alphas=1
    ) - (2 * 4 * 4 + 4)


def test_initial_memories_and_coefficients_initialisation():
    cell = keras_stm.STMCell(**SMALL, head_units=3)
    cell.build((None, FEATURES))
    d, nq = 4, 2
    item = ops.convert_to_numpy(cell.initial_item_memory)
    relational = ops.convert_to_numpy(cell.initial_relational_memory)
    assert np.abs(item).max() <= 1 / np.sqrt(2 * d) and item.std() > 0
    assert np.abs(relational).max() <= 1 / np.sqrt(2 * d + nq) and relational.std() > 0
    for name in ("relational_carry", "relational_read", "relational_transfer"):
        assert float(ops.convert_to_numpy(cell._coefficient(name))) == 0.0
    assert float(ops.convert_to_numpy(cell.forget_gate_offset)) == 1.0
    assert float(ops.convert_to_numpy(cell.input_gate_offset)) == 0.0
    states = cell.get_initial_state(batch_size=3)
    assert [tuple(s.shape) for s in states] == [(3, 3), (3, d * d), (3, nq * d * d)]
    np.testing.assert_array_equal(ops.convert_to_numpy(states[0]), 0.0)
    unflat = cell.unflatten_memories(states[1], states[2])
    np.testing.assert_array_equal(ops.convert_to_numpy(unflat[0]), np.broadcast_to(item, (3, d, d)))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(unflat[1]), np.broadcast_to(relational, (3, nq, d, d))
    )


# ------------------------------------------------------------------------------------------
# The shared checks on the recurrent layers


# Weights of a cell with fixed non-zero coefficients (every path on) and no head: kernel and
# bias of the write, read and slot projectors (6), of the two gates (4), the two gate offsets,
# the transfer (2), the slot read-out (2) and the read-out (2), the two initial memories and
# SAM's kernel, bias, gamma and beta (4). The head adds 3 kernels and 3 biases.
CELL_WEIGHTS, HEAD_WEIGHTS = 24, 6


def rnn_of_cell():
    return keras.layers.RNN(
        keras_stm.STMCell(**SMALL, **FIXED, head_units=3), return_sequences=True
    )


def stm_with_states():
    return keras_stm.STM(**SMALL, **FIXED, return_state=True)


def test_stm_cell_in_rnn_layer_checks(tmp_path):
    x = sequences(seed=7)
    result = helper.run_layer_test(
        rnn_of_cell,
        input_data=x,
        expected_output_shape=(None, STEPS, 3),
        expected_num_trainable_weights=CELL_WEIGHTS + HEAD_WEIGHTS,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
    assert result["layer"].cell.__class__ is keras_stm.STMCell


def test_stm_layer_checks(tmp_path):
    x = sequences(seed=8)
    d, nq, a = 4, 2, 5
    result = helper.run_layer_test(
        keras_stm.STM,
        dict(**SMALL, **FIXED, return_state=True),
        input_data=x,
        expected_output_shape=[(None, a), (None, a), (None, d, d), (None, nq, d, d)],
        expected_num_trainable_weights=CELL_WEIGHTS,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )
    output, last, _, _ = result["outputs"]
    np.testing.assert_array_equal(output, last)
    # The returned memories are what the read-out of the output was computed from.
    cell = result["layer"].cell
    # (weights were trained by the fit step after `outputs` was taken: recompute both now)
    fresh = result["layer"](x)
    helper.assert_close(
        ops.convert_to_numpy(cell.read_out(fresh[3])), ops.convert_to_numpy(fresh[0]), 1e-5
    )


def test_saved_models_load_under_another_backend(tmp_path):
    """One subprocess under the next backend (jax -> torch -> tensorflow -> jax) loads one saved
    model per layer type and reproduces the parent's predictions."""
    rng = np.random.default_rng(9)
    x = sequences(seed=10)
    q = rng.normal(size=(2, 3, 4)).astype("float32")
    kv = rng.normal(size=(2, 2, 4)).astype("float32")
    memory = rng.normal(size=(2, 5, 3)).astype("float32")
    cases = {
        "outer_product_attention": (OuterProductAttention, [q, kv, kv]),
        "self_attentive_memory": (
            lambda: SelfAttentiveMemory(num_queries=2, normalization="row"),
            memory,
        ),
        "rnn_stm_cell": (rnn_of_cell, x),
        "stm": (stm_with_states, x),
    }
    differences = helper.check_cross_backend(cases, tmp_path)
    assert max(differences.values()) < 1e-5
