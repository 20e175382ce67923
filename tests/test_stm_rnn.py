"""`keras_stm.STM` and `keras.layers.RNN(STMCell)`: agreement with each other and with the numpy
recurrence (`tests/layer_test_helper.reference_stm`) for the RNN options (return_sequences,
return_state, go_backwards, unroll, initial_state, stateful, masking, Bidirectional), gradients
of the learned initial memories, fixed coefficients, and a long bAbI-sized sequence."""

import time

import keras
import numpy as np
import pytest
from keras import ops

import keras_stm
from tests import layer_test_helper as helper
from tests.backend_utils import gradients

# nq 2, d 4, r 3, a 5, head 3 (hidden 6); input size 3, T 5.
CELL = dict(
    num_queries=2, memory_size=4, relation_size=3, readout_size=5, head_units=3, head_hidden_units=6
)
D, NQ, OUT, FEATURES, STEPS = 4, 2, 3, 3, 5
COEFFICIENTS = ("relational_carry", "relational_read", "relational_transfer")
BACKEND = keras.backend.backend()


def sequences(batch=3, steps=STEPS, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, steps, FEATURES)).astype("float32")


def local_name(variable):
    """A cell variable's path without the outer layer's and the cell's names."""
    return "/".join(variable.path.split("/")[2:])


WEIGHT_NAMES = [  # weight order of an STM cell of config CELL (all learned coefficients)
    "write_kernel",
    "write_bias",
    "read_kernel",
    "read_bias",
    "slot_kernel",
    "slot_bias",
    "gate_input_kernel",
    "gate_input_bias",
    "gate_memory_kernel",
    "gate_memory_bias",
    "input_gate_offset",
    "forget_gate_offset",
    "transfer_kernel",
    "transfer_bias",
    "slot_readout_kernel",
    "slot_readout_bias",
    "readout_kernel",
    "readout_bias",
    "head_hidden_1_kernel",
    "head_hidden_1_bias",
    "head_hidden_2_kernel",
    "head_hidden_2_bias",
    "head_output_kernel",
    "head_output_bias",
    "relational_carry",
    "relational_read",
    "relational_transfer",
    "initial_item_memory",
    "initial_relational_memory",
    "self_attentive_memory/kernel",
    "self_attentive_memory/bias",
    "self_attentive_memory/gamma",
    "self_attentive_memory/beta",
]


def random_weights(seed=1, scale=0.4, **cell_overrides):
    """Random values for every weight of an STM cell of config `CELL` (+ overrides), as a list
    in weight order, learned coefficients included (so every path of the cell is open)."""
    layer = keras_stm.STM(**{**CELL, **cell_overrides})
    layer.build((None, None, FEATURES))
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale, tuple(w.shape)).astype("float32") for w in layer.weights]


def unused_weights(cell):
    """The weights of the paths that a cell's configuration never runs: it creates none."""
    unused = []
    if not cell.gated_write:
        unused += [
            "gate_input_kernel",
            "gate_input_bias",
            "gate_memory_kernel",
            "gate_memory_bias",
            "input_gate_offset",
            "forget_gate_offset",
        ]
    if not cell._reads_relational_memory:
        unused += ["read_kernel", "read_bias", "slot_kernel", "slot_bias"]
    if cell.relational_transfer == 0.0:
        unused += ["transfer_kernel", "transfer_bias"]
    if not cell._uses_previous_relational_memory:
        unused.append("initial_relational_memory")
    return unused


def with_weights(layer, values, input_shape=(None, None, FEATURES)):
    """Build `layer` (an `STM` or `RNN(STMCell)`) and set its weights, checking names agree."""
    layer.build(input_shape)
    fixed = [n for n in COEFFICIENTS if getattr(layer.cell, n) != "learned"]
    absent = fixed + unused_weights(layer.cell)
    assert [local_name(w) for w in layer.weights] == [n for n in WEIGHT_NAMES if n not in absent]
    layer.set_weights(values)
    return layer


def stm(values, **kwargs):
    return with_weights(keras_stm.STM(**CELL, **kwargs), values)


def rnn(values, **kwargs):
    return with_weights(keras.layers.RNN(keras_stm.STMCell(**CELL), **kwargs), values)


def reference(layer, x, item=None, relational=None, mask=None):
    """`helper.reference_stm` with the layer's cell weights: (outputs, read-outs, Mi, Mr)."""
    cell = layer.cell
    config = dict(
        num_queries=NQ,
        memory_size=D,
        alphas=[float(ops.convert_to_numpy(cell._coefficient(n))) for n in COEFFICIENTS],
    )
    return helper.reference_stm(
        helper.official_parameters(cell), config, np.asarray(x, "float64"), item, relational, mask
    )


def numpy_list(*tensors):
    return helper.to_numpy(list(tensors))


# ------------------------------------------------------------------------------------------
# RNN(STMCell) == STM == numpy, for the RNN options


@pytest.mark.parametrize(
    "options",
    [{}, {"go_backwards": True}, {"unroll": True}],
    ids=["forward", "go_backwards", "unroll"],
)
def test_rnn_cell_and_stm_agree_with_reference(options):
    values = random_weights()
    x = sequences()
    flags = dict(return_sequences=True, return_state=True, **options)
    y, last, item, relational = stm(values, **flags)(x)
    assert tuple(item.shape) == (3, D, D) and tuple(relational.shape) == (3, NQ, D, D)
    ry, rlast, ritem_flat, rrel_flat = (r_layer := rnn(values, **flags))(x)
    assert tuple(ritem_flat.shape) == (3, D * D) and tuple(rrel_flat.shape) == (3, NQ * D * D)
    ritem, rrel = r_layer.cell.unflatten_memories(ritem_flat, rrel_flat)
    stm_numbers = numpy_list(y, last, item, relational)
    helper.assert_close(numpy_list(ry, rlast, ritem, rrel), stm_numbers, 1e-5, "RNN vs STM")
    source = x[:, ::-1] if options.get("go_backwards") else x  # go_backwards == reversed input
    outputs, _, ref_item, ref_relational = reference(r_layer, source)
    helper.assert_close(
        stm_numbers, [outputs, outputs[:, -1], ref_item, ref_relational], 1e-4, "vs numpy"
    )


def test_return_flags():
    """The four return_sequences / return_state combinations give consistent numbers."""
    values = random_weights()
    x = sequences()
    full, last, item, relational = numpy_list(
        *stm(values, return_sequences=True, return_state=True)(x)
    )
    helper.assert_close(last, full[:, -1], 1e-6)  # batched vs last-step read-out
    only_last = stm(values)(x)
    assert tuple(only_last.shape) == (3, OUT)
    helper.assert_close(ops.convert_to_numpy(only_last), full[:, -1], 1e-5)
    seq = stm(values, return_sequences=True)(x)
    helper.assert_close(ops.convert_to_numpy(seq), full, 1e-5)
    states = stm(values, return_state=True)(x)
    assert len(states) == 4
    helper.assert_close(numpy_list(*states), [full[:, -1], full[:, -1], item, relational], 1e-5)
    plain = rnn(values)(x)
    helper.assert_close(ops.convert_to_numpy(plain), full[:, -1], 1e-5)


# ------------------------------------------------------------------------------------------
# initial_state and stateful


def test_initial_state_flat_matrix_and_continuation():
    values = random_weights()
    x = sequences()
    rng = np.random.default_rng(2)
    out0 = rng.normal(size=(3, OUT)).astype("float32")
    item0 = rng.normal(size=(3, D, D)).astype("float32")
    rel0 = rng.normal(size=(3, NQ, D, D)).astype("float32")
    layer = stm(values, return_sequences=True, return_state=True)

    matrix = numpy_list(*layer(x, initial_state=[out0, item0, rel0]))
    flat = numpy_list(*layer(x, initial_state=[out0, item0.reshape(3, -1), rel0.reshape(3, -1)]))
    helper.assert_close(flat, matrix, 1e-6, "flat vs matrix initial state")
    outputs, _, ref_item, ref_rel = reference(layer, x, item0, rel0)
    helper.assert_close(matrix, [outputs, outputs[:, -1], ref_item, ref_rel], 1e-4, "vs numpy")
    r_layer = rnn(values, return_sequences=True, return_state=True)
    ry, rlast, ritem, rrel = r_layer(
        x, initial_state=[out0, item0.reshape(3, -1), rel0.reshape(3, -1)]
    )
    helper.assert_close(
        numpy_list(ry, rlast, *r_layer.cell.unflatten_memories(ritem, rrel)), matrix, 1e-5
    )

    # Feeding final states back continues the sequence.
    full = numpy_list(*layer(x))
    head = layer(x[:, :3])
    tail = numpy_list(*layer(x[:, 3:], initial_state=list(head[1:])))
    head = numpy_list(*head)
    helper.assert_close(
        [np.concatenate([head[0], tail[0]], 1)] + tail[1:], full, 1e-5, "continuation"
    )
    # The default initial state is the learned memories tiled over the batch.
    cell = layer.cell
    learned = [
        np.zeros((3, OUT), "float32"),
        np.broadcast_to(ops.convert_to_numpy(cell.initial_item_memory), (3, D, D)),
        np.broadcast_to(ops.convert_to_numpy(cell.initial_relational_memory), (3, NQ, D, D)),
    ]
    helper.assert_close(numpy_list(*layer(x, initial_state=learned)), full, 1e-6, "default state")

    # Matrix initial states as functional inputs.
    inputs = [
        keras.Input((None, FEATURES)),
        keras.Input((OUT,)),
        keras.Input((D, D)),
        keras.Input((NQ, D, D)),
    ]
    model = keras.Model(inputs, layer(inputs[0], initial_state=inputs[1:]))
    assert [tuple(t.shape) for t in model.outputs] == [
        (None, None, OUT),
        (None, OUT),
        (None, D, D),
        (None, NQ, D, D),
    ]
    helper.assert_close(numpy_list(*model([x, out0, item0, rel0])), matrix, 1e-5, "functional")


def test_stateful_carries_states_between_calls():
    values = random_weights()
    x = sequences()
    full = numpy_list(*stm(values, return_sequences=True, return_state=True)(x))
    layer = keras_stm.STM(**CELL, return_sequences=True, return_state=True, stateful=True)
    with_weights(layer, values, (3, None, FEATURES))
    # The state variables were made at build time, from the memories before `set_weights`:
    # `reset_states` restarts from the (current) learned initial memories.
    layer.reset_states()
    first = numpy_list(*layer(x[:, :2]))
    second = numpy_list(*layer(x[:, 2:]))
    helper.assert_close(
        [np.concatenate([first[0], second[0]], 1)] + second[1:], full, 1e-5, "stateful"
    )
    layer.reset_states()
    helper.assert_close(numpy_list(*layer(x[:, :2])), first, 1e-6, "after reset_states")


# ------------------------------------------------------------------------------------------
# masking


LENGTHS = [5, 3, 1, 4]  # post-padded
VOCABULARY = 7


def padded_ids(lengths, seed=3):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), STEPS), "int32")
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, VOCABULARY, n)
    return ids


def masked_model(layer):
    ids = keras.Input((STEPS,), dtype="int32")
    embedding = keras.layers.Embedding(VOCABULARY, FEATURES, mask_zero=True, name="embedding")
    return keras.Model(ids, layer(embedding(ids)))


def masked_results(layers, ids, seed=8):
    """Each layer's numbers on the padded `ids`, through `masked_model` with one shared
    embedding table (the same inputs and masks for every layer)."""
    table = np.random.default_rng(seed).normal(size=(VOCABULARY, FEATURES)).astype("float32")
    results = []
    for layer in layers:
        model = masked_model(layer)
        model.get_layer("embedding").set_weights([table])
        results.append(numpy_list(*model(ids)))
    return results, table


def check_masked_run(layer, model, ids, lengths, results=None):
    """Every sample of the masked batch equals the sample's unpadded prefix run alone through the
    numpy recurrence. `layer` has return_sequences and return_state."""
    y, last, item, relational = results if results is not None else numpy_list(*model(ids))
    if not isinstance(layer, keras_stm.STM):
        item, relational = numpy_list(*layer.cell.unflatten_memories(item, relational))
    table = ops.convert_to_numpy(model.get_layer("embedding").embeddings)
    backwards, zeros = layer.go_backwards, layer.zero_output_for_mask
    for i, n in enumerate(lengths):
        prefix = table[ids[i, :n]][None]
        outputs, _, ref_item, ref_rel = reference(layer, prefix[:, ::-1] if backwards else prefix)
        helper.assert_close(
            [last[i], item[i], relational[i]],
            [outputs[0, -1], ref_item[0], ref_rel[0]],
            1e-4,
            f"sample {i} final",
        )
        valid = slice(STEPS - n, STEPS) if backwards else slice(0, n)
        helper.assert_close(y[i, valid], outputs[0], 1e-4, f"sample {i} sequence")
        padded = slice(0, STEPS - n) if backwards else slice(n, STEPS)
        if zeros:
            np.testing.assert_array_equal(y[i, padded], 0.0)
        elif not backwards:  # masked steps after the prefix repeat its last output
            helper.assert_close(
                y[i, padded], np.broadcast_to(outputs[0, -1], y[i, padded].shape), 1e-4
            )


@pytest.mark.parametrize(
    "lengths", [[3], LENGTHS[:3], LENGTHS], ids=["batch1", "batch3", "batch_eq_d"]
)
def test_masking_matches_unpadded_runs(lengths):
    assert len(LENGTHS) == D  # the batch == d case is silently wrong on jax with matrix states
    values = random_weights()
    layer = stm(values, return_sequences=True, return_state=True)
    check_masked_run(layer, masked_model(layer), padded_ids(lengths), lengths)


MASK_OPTIONS = {
    "go_backwards": dict(go_backwards=True),
    "unroll": dict(unroll=True),
    "unroll_go_backwards": dict(unroll=True, go_backwards=True),
    "zero_output_for_mask": dict(zero_output_for_mask=True),
    "zero_output_go_backwards": dict(zero_output_for_mask=True, go_backwards=True),
}


@pytest.mark.parametrize("option", sorted(MASK_OPTIONS))
def test_masking_options(option):
    values = random_weights()
    layer = stm(values, return_sequences=True, return_state=True, **MASK_OPTIONS[option])
    check_masked_run(layer, masked_model(layer), padded_ids(LENGTHS), LENGTHS)


def test_masking_through_plain_rnn_of_cell():
    values = random_weights()
    layer = rnn(values, return_sequences=True, return_state=True, zero_output_for_mask=True)
    check_masked_run(layer, masked_model(layer), padded_ids(LENGTHS), LENGTHS)


def test_masked_fit_with_jit_compile():
    """`fit` with `jit_compile=True` (eager on torch) through a masked STM: finite loss, the
    weights move, and the compiled `predict` still matches the unpadded runs."""
    values = random_weights()
    layer = stm(values, return_sequences=True, return_state=True)
    model = masked_model(layer)
    ids = padded_ids(LENGTHS)
    train = keras.Model(model.inputs, model.outputs[1])
    train.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="mse",
        jit_compile=BACKEND in helper.JIT_BACKENDS,
    )
    before = [ops.convert_to_numpy(w) for w in layer.trainable_weights]
    history = train.fit(
        ids, np.zeros((len(LENGTHS), OUT), "float32"), batch_size=len(LENGTHS), epochs=2, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]
    after = [ops.convert_to_numpy(w) for w in layer.trainable_weights]
    assert sum(not np.array_equal(b, a) for b, a in zip(before, after)) >= len(before) - 1
    predicted = model.predict(ids, batch_size=len(LENGTHS), verbose=0)
    check_masked_run(layer, model, ids, LENGTHS, results=[np.asarray(p) for p in predicted])


# RAR's coefficients: no step reads Mr_{t-1}, so STM carries SAM's two factors instead of Mr.
FACTORED = dict(relational_carry=0.0, relational_read=0.0)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"go_backwards": True},
        {"unroll": True},
        {"zero_output_for_mask": True},
        {"go_backwards": True, "zero_output_for_mask": True},
    ],
    ids=["forward", "go_backwards", "unroll", "zero_output", "zero_output_go_backwards"],
)
@pytest.mark.parametrize("coefficients", [FACTORED, {}], ids=["factored", "full"])
def test_stm_matches_cell_with_mask(options, coefficients):
    """With a mask (including a sample whose steps are all masked: it keeps the initial
    memories and output), `STM` gives the numbers of `RNN(STMCell)` for every output and
    state; with a fixed zero carry and read `STM` carries Mr as SAM's factors, while the plain
    RNN carries the full Mr."""
    values = random_weights(seed=7, **coefficients)
    flags = dict(return_sequences=True, return_state=True, **options)
    layer = with_weights(keras_stm.STM(**CELL, **coefficients, **flags), values)
    assert layer.cell._uses_previous_relational_memory == (not coefficients)
    plain = with_weights(
        keras.layers.RNN(keras_stm.STMCell(**CELL, **coefficients), **flags), values
    )
    results, _ = masked_results((layer, plain), padded_ids([5, 0, 2, 4]))
    y, last, item, relational = results[0]
    ry, rlast, ritem, rrel = results[1]
    ritem, rrel = numpy_list(*plain.cell.unflatten_memories(ritem, rrel))
    helper.assert_close([y, last, item, relational], [ry, rlast, ritem, rrel], 1e-5, "STM vs RNN")
    # (the initial Mr is zeros, not learned, when no step reads or carries it)
    initial = layer.cell.get_initial_state(batch_size=1)[1:]
    initial_item, initial_relational = numpy_list(*layer.cell.unflatten_memories(*initial))
    helper.assert_close(
        [item[1], relational[1]],
        [initial_item[0], initial_relational[0]],
        1e-6,
        "all-masked sample keeps the initial memories",
    )
    np.testing.assert_array_equal(last[1], 0.0)  # the initial output state


def test_factored_loop_gradients_match_cell():
    """Gradients through the factored loop equal those through `RNN(STMCell)`."""
    values = random_weights(seed=9, **FACTORED)
    x = sequences()
    grads = []
    for layer in (
        with_weights(keras_stm.STM(**CELL, **FACTORED, return_sequences=True), values),
        with_weights(
            keras.layers.RNN(keras_stm.STMCell(**CELL, **FACTORED), return_sequences=True), values
        ),
    ):
        _, weight_grads, input_grad = gradients(lambda t: ops.sum(layer(t) ** 2), layer.weights, x)
        grads.append(list(weight_grads) + [input_grad])
    helper.assert_close(grads[0], grads[1], 1e-4, "gradients, factored vs full Mr")


def test_bidirectional_stm():
    """Bidirectional(STM) with a mask: the forward half is the forward STM, the backward half the
    backward STM re-aligned in time, masked steps zero (Bidirectional forces
    zero_output_for_mask when return_sequences)."""
    values = random_weights()
    ids_input = keras.Input((STEPS,), dtype="int32")
    embedding = keras.layers.Embedding(VOCABULARY, FEATURES, mask_zero=True, name="embedding")
    bidirectional = keras.layers.Bidirectional(keras_stm.STM(**CELL, return_sequences=True))
    model = keras.Model(ids_input, bidirectional(embedding(ids_input)))
    assert tuple(model.outputs[0].shape) == (None, STEPS, 2 * OUT)
    backward_values = random_weights(seed=5)
    bidirectional.forward_layer.set_weights(values)
    bidirectional.backward_layer.set_weights(backward_values)
    assert bidirectional.backward_layer.go_backwards
    ids = padded_ids(LENGTHS)
    y = ops.convert_to_numpy(model(ids))
    table = ops.convert_to_numpy(embedding.embeddings)
    for i, n in enumerate(LENGTHS):
        prefix = table[ids[i, :n]][None]
        forward = reference(bidirectional.forward_layer, prefix)[0][0]
        backward = reference(bidirectional.backward_layer, prefix[:, ::-1])[0][0][::-1]
        helper.assert_close(y[i, :n], np.concatenate([forward, backward], -1), 1e-4, f"sample {i}")
        np.testing.assert_array_equal(y[i, n:], 0.0)


# ------------------------------------------------------------------------------------------
# gradients and coefficients


@pytest.mark.parametrize("kind", ["stm", "rnn"])
def test_learned_initial_memories_receive_gradients(kind):
    x = sequences()
    make = stm if kind == "stm" else rnn
    # At initialisation every learned coefficient is 0: Mr_0 is neither carried nor read, so it
    # gets an exactly zero gradient while Mi_0 gets a non-zero one (spec 3.4).
    layer = make(_initial_values())
    cell = layer.cell
    variables = [cell.initial_item_memory, cell.initial_relational_memory]
    _, (g_item, g_rel), g_x = gradients(lambda t: ops.sum(layer(t) ** 2), variables, x)
    assert np.abs(g_item).max() > 1e-6 and np.all(g_rel == 0.0)
    # With every path open, both get non-zero gradients (every entry of Mr_0 matters).
    layer = make(random_weights())
    cell = layer.cell
    variables = [cell.initial_item_memory, cell.initial_relational_memory]
    _, (g_item, g_rel), g_x = gradients(lambda t: ops.sum(layer(t) ** 2), variables, x)
    assert np.all(np.isfinite(g_item)) and np.all(np.isfinite(g_rel))
    assert np.abs(g_item).max() > 1e-6 and np.count_nonzero(g_rel) == g_rel.size
    assert np.abs(g_x).max() > 0


def _initial_values():
    """The weights of a freshly initialised cell (learned coefficients 0)."""
    layer = keras_stm.STM(**CELL)
    layer.build((None, None, FEATURES))
    return layer.get_weights()


def test_fixed_zero_coefficients_skip_their_paths():
    """Fixed coefficients 0 give the numbers of learned coefficients whose value is 0, and the
    paths they switch off are not computed at all: NaN in the weights of those paths (read
    projectors, transfer G1, initial Mr) leaves the fixed layer finite but poisons the learned
    one (0 * NaN). The fixed layer has no read projectors and no initial Mr."""
    x = sequences()
    fixed = keras_stm.STM(
        **CELL,
        relational_carry=0.0,
        relational_read=0.0,
        relational_transfer=0.0,
        return_sequences=True,
        return_state=True,
    )
    fixed.build(x.shape)
    learned = stm(_initial_values(), return_sequences=True, return_state=True)
    rng = np.random.default_rng(4)
    values = {
        local_name(w): rng.normal(0, 0.4, tuple(w.shape)).astype("float32") for w in learned.weights
    }
    for name in COEFFICIENTS:
        values[name] = np.zeros((), "float32")
    for layer in (fixed, learned):
        for w in layer.weights:
            w.assign(values[local_name(w)])
    assert len(fixed.weights) == len(learned.weights) - 3 - len(unused_weights(fixed.cell))
    expected = numpy_list(*learned(x))
    helper.assert_close(numpy_list(*fixed(x)), expected, 1e-6, "fixed 0 vs learned 0")
    skipped = ("read_kernel", "slot_kernel", "transfer_kernel", "initial_relational_memory")
    for layer in (fixed, learned):
        for w in layer.weights:
            if local_name(w) in skipped:
                w.assign(np.full(tuple(w.shape), np.nan, "float32"))
    helper.assert_close(numpy_list(*fixed(x)), expected, 1e-6, "fixed 0 with NaN weights")
    assert np.isnan(numpy_list(*learned(x))[0]).all()


# ------------------------------------------------------------------------------------------
# a long sequence at the bAbI configuration (runs on every backend; kept to one forward and
# one backward pass)

BABI = dict(
    num_queries=20,
    memory_size=90,
    relation_size=96,
    projector_hidden_units=80,
    relational_carry=1.0,
    relational_transfer=0.0,
)


def test_thousand_step_babi_configuration_stays_finite():
    start = time.perf_counter()
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 1000, 64)).astype("float32")
    layer = keras_stm.STM(**BABI, return_state=True)
    layer.build(x.shape)
    probe = ops.convert_to_tensor(rng.normal(size=(1, 20, 90, 90)).astype("float32"))

    def loss_fn(t):
        output, _, item, relational = layer(t)
        return ops.sum(relational * probe) * 1e-3 + ops.sum(output) + ops.sum(item)

    variables = list(layer.trainable_weights)
    # traced: TensorFlow's op-by-op execution of the 1000 steps and their gradients took ~25 s
    # of the test's time; as one graph (as `fit` runs it) the same computation takes ~3 s.
    loss, grads, grad_x = gradients(loss_fn, variables, x, traced=True)
    assert np.isfinite(loss)
    for variable, grad in zip(variables, grads):
        assert np.all(np.isfinite(grad)), variable.path
    assert np.all(np.isfinite(grad_x)) and np.abs(grad_x).max() > 0
    # the transfer is fixed at 0: it has no weights; the initial memories get gradients
    by_name = {v.path.rsplit("/", 1)[1]: g for v, g in zip(variables, grads)}
    assert "transfer_kernel" not in by_name and layer.cell.transfer_kernel is None
    assert np.abs(by_name["initial_relational_memory"]).max() > 0
    assert np.abs(by_name["initial_item_memory"]).max() > 0
    print(f"1000-step bAbI-size forward+backward on {BACKEND}: {time.perf_counter() - start:.1f} s")


@pytest.mark.parametrize("kind, options", [("stm", {}), ("stm", FACTORED), ("rnn", {})])
def test_jit_fit_with_a_partial_last_batch(kind, options):
    """`fit(jit_compile=True)` with 5 samples in batches of 4: the batch size is not fixed at
    trace time (issue 24, finding 1: TensorFlow's XLA refused the loop's `tensordot`
    transposes, whose permutation came from the runtime shape). Eager on torch."""
    x = sequences(batch=5)
    config = dict(CELL, **{k: v for k, v in options.items() if k in FACTORED})
    loop = {k: v for k, v in options.items() if k not in FACTORED}
    inputs = keras.Input((STEPS, FEATURES))
    if kind == "stm":
        outputs = keras_stm.STM(**config, **loop)(inputs)
    else:
        outputs = keras.layers.RNN(keras_stm.STMCell(**config))(inputs)
    if len(outputs.shape) == 3:
        outputs = keras.layers.GlobalAveragePooling1D()(outputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="mse",
        jit_compile=BACKEND in helper.JIT_BACKENDS,
    )
    history = model.fit(x, np.zeros((5, OUT), "float32"), batch_size=4, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # And the compiled model predicts the partial batch like the eager layer does.
    predicted = model.predict(x, batch_size=4, verbose=0)
    np.testing.assert_allclose(predicted, ops.convert_to_numpy(model(x)), rtol=1e-4, atol=1e-5)
