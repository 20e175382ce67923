"""A cell creates no weight for a path its configuration never runs (issue 22): no "Gradients do
not exist" warning in `fit`, files saved with the older full layout still load, and the authors'
state_dicts (which hold every parameter) still load, their unused tensors skipped."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_stm
from keras_stm.weights import official_weight_map

SMALL = dict(
    num_queries=2, memory_size=4, relation_size=3, readout_size=5, head_units=3, head_hidden_units=6
)
FEATURES, STEPS = 3, 4
COEFFICIENTS = ("relational_carry", "relational_read", "relational_transfer")
GATES = [
    "gate_input_kernel",
    "gate_input_bias",
    "gate_memory_kernel",
    "gate_memory_bias",
    "input_gate_offset",
    "forget_gate_offset",
]
READS = ["read_kernel", "read_bias", "slot_kernel", "slot_bias"]
UNUSED = {
    "additive_write": (dict(gated_write=False), GATES),
    "no_read": (dict(relational_read=0.0), READS),
    "no_transfer": (dict(relational_transfer=0.0), ["transfer_kernel", "transfer_bias"]),
    "fixed_zero_carry_and_read": (
        dict(relational_carry=0.0, relational_read=0.0),
        READS + ["initial_relational_memory"],
    ),
}


def fixed_coefficients(overrides):
    return {name for name in COEFFICIENTS if name in overrides}


def built_cell(**overrides):
    cell = keras_stm.STMCell(**SMALL, **overrides)
    cell.build((None, FEATURES))
    return cell


def sequences(batch=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, STEPS, FEATURES)).astype("float32")


@pytest.mark.parametrize("variant", sorted(UNUSED))
def test_unused_paths_create_no_weights(variant):
    overrides, unused = UNUSED[variant]
    full = {w.name for w in built_cell().weights}
    cell = built_cell(**overrides)
    names = {w.name for w in cell.weights}
    assert names == full - set(unused) - fixed_coefficients(overrides)
    assert cell.count_params() < built_cell().count_params()


@pytest.mark.parametrize("variant", sorted(UNUSED))
def test_fit_warns_of_no_missing_gradient(variant):
    """One `fit` step of an `STM` model, every warning an error: none says that a gradient is
    missing (torch and tensorflow give None gradients for unused weights; jax gives zeros)."""
    overrides, _ = UNUSED[variant]
    inputs = keras.Input((STEPS, FEATURES))
    model = keras.Model(inputs, keras_stm.STM(**SMALL, **overrides)(inputs))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    before = ops.convert_to_numpy(model.trainable_weights[0]).copy()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*Gradients do not exist.*")
        history = model.fit(sequences(), np.zeros((4, 3), "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert not np.array_equal(ops.convert_to_numpy(model.trainable_weights[0]), before)


def test_old_full_layout_loads():
    """A `.keras` file saved before unused weights were dropped holds every weight of the full
    layout: the cell takes its own by name and skips the others; other counts are refused."""
    cell = built_cell(gated_write=False)
    rng = np.random.default_rng(1)
    reference = built_cell()
    full = reference._trainable_variables + reference._non_trainable_variables
    assert [w.name for w in full] == list(cell._full_layout) == list(reference._full_layout)
    store = {str(i): rng.normal(size=tuple(w.shape)).astype("float32") for i, w in enumerate(full)}
    cell.load_own_variables(store)
    by_name = {w.name: str(i) for i, w in enumerate(full)}
    own = cell._trainable_variables + cell._non_trainable_variables
    for variable in own:
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), store[by_name[variable.name]])
    # the new layout loads as before
    cell.load_own_variables({str(i): ops.convert_to_numpy(v) for i, v in enumerate(own)})
    with pytest.raises(ValueError, match="expected"):
        cell.load_own_variables({"0": store["0"]})


def official_state(cell):
    """An official-like state_dict (random) for every weight of a fully used cell."""
    rng = np.random.default_rng(2)
    return {
        name: rng.normal(size=tuple(v.shape)[::-1] if transpose else tuple(v.shape)).astype(
            "float32"
        )
        for name, (v, transpose) in official_weight_map(cell).items()
    }


OFFICIAL_ALPHAS = dict(zip(COEFFICIENTS, ("alpha10", "alpha20", "alpha30")))


@pytest.mark.parametrize("variant", sorted(UNUSED))
def test_official_state_dict_with_unused_tensors_loads(variant):
    """The authors' module has every parameter: those of unused paths are skipped unchecked
    (even misshaped); a name that no path has is still refused."""
    overrides, unused = UNUSED[variant]
    state = official_state(built_cell())
    for name in fixed_coefficients(overrides):  # the authors' module has no fixed alphas
        del state[OFFICIAL_ALPHAS[name]]
    cell = built_cell(**overrides)
    mapping = official_weight_map(cell)
    skipped = sorted(set(state) - set(mapping))
    assert skipped and len(skipped) <= len(unused)
    for name in skipped:
        state[name] = np.zeros((7, 7, 7), "float32")  # not checked
    keras_stm.load_official_weights(cell, state)
    for name, (variable, transpose) in mapping.items():
        value = state[name].T if transpose else state[name]
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value.reshape(variable.shape))
    keras_stm.load_official_weights(cell, {k: v for k, v in state.items() if k not in skipped})
    with pytest.raises(ValueError, match="unexpected weights: \\['typo.weight'\\]"):
        keras_stm.load_official_weights(cell, {**state, "typo.weight": np.zeros(2, "float32")})


def test_previous_layout_with_transfer_weights_loads(tmp_path):
    """Files saved by 0.x, whose cell still created the transfer weights under a fixed zero
    `relational_transfer`, load: the cell skips those two weights."""
    cell = built_cell(relational_transfer=0.0)
    assert cell.transfer_kernel is None and cell.transfer_bias is None
    assert "transfer_kernel" in cell._previous_layout
    rng = np.random.default_rng(3)
    own = {w.name: w for w in cell._trainable_variables + cell._non_trainable_variables}
    shapes = {w.name: tuple(w.shape) for w in built_cell().weights}
    store = {
        str(i): rng.normal(size=shapes[name]).astype("float32")
        for i, name in enumerate(cell._previous_layout)
    }
    cell.load_own_variables(store)
    for i, name in enumerate(cell._previous_layout):
        if name in own:
            np.testing.assert_array_equal(ops.convert_to_numpy(own[name]), store[str(i)])


def test_configs_of_older_versions_load():
    """Removed keys of an older config are dropped with a DeprecationWarning naming them;
    `carry_relational_memory=False` becomes `relational_carry=0, relational_read=0`."""
    layer = keras_stm.STM(**SMALL)
    config = layer.get_config()
    for key in (
        "loop",
        "torch_compile",
        "relational_memory_loop",
        "loop_gradient",
        "carry_relational_memory",
    ):
        assert key not in config
    old = dict(
        config,
        torch_compile=None,
        torch_compile_mode=None,
        relational_memory_loop="auto",
        loop_gradient="auto",
        carry_relational_memory=False,
    )
    with pytest.warns(DeprecationWarning) as caught:
        restored = keras_stm.STM.from_config(old)
    messages = " ".join(str(w.message) for w in caught)
    for key in (
        "torch_compile",
        "torch_compile_mode",
        "relational_memory_loop",
        "loop_gradient",
        "carry_relational_memory",
    ):
        assert f"`{key}`" in messages
    assert restored.relational_carry == 0.0 and restored.relational_read == 0.0
    cell_config = dict(keras_stm.STMCell(**SMALL).get_config(), carry_relational_memory=True)
    with pytest.warns(DeprecationWarning, match="carry_relational_memory"):
        cell = keras_stm.STMCell.from_config(cell_config)
    assert cell.relational_carry == "learned"
