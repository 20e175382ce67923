"""`keras_stm.load_official_weights` and `cell_config_from_official`: the authors' state_dict
names and shapes (spec 3.2, written out by hand here), error messages naming the weights,
shared copies, `STM` layers, and `.pth` files."""

import numpy as np
import pytest
from keras import ops

import keras_stm
from keras_stm.weights import official_weight_map
from tests import layer_test_helper as helper

# Official STM(input_size=3, output_size=3, num_slot=2, slot_size=4, rel_size=3,
# out_att_size=5, mlp_size=6): our cell arguments, and the state_dict the authors' module has.
OFFICIAL_CONFIG = dict(
    input_size=3, output_size=3, num_slot=2, slot_size=4, rel_size=3, out_att_size=5, mlp_size=6
)
CELL = dict(
    num_queries=2, memory_size=4, relation_size=3, readout_size=5, head_units=3, head_hidden_units=6
)
D_IN = 3


def official_shapes(hidden=None, step=1, alphas=(None, None, None), learn_init_mem=True):
    """Spec 3.2, by hand: {name: shape} of the official state_dict for the small config."""
    d, nq, r, a, m, out = 4, 2, 3, 5, 6, 3
    shapes = {}
    for k in range(step):
        for i, alpha in enumerate(alphas):
            if alpha is None:
                shapes[f"alpha{i + 1}{k}"] = (1,)
    shapes.update({"forget_bias": (), "input_bias": ()})
    if learn_init_mem:
        shapes.update({"item_memory_state_bias": (d, d), "rel_memory_state_bias": (nq, d, d)})
    for k in range(step):
        shapes.update(
            {
                f"qkv_projector.{k}.weight": (3 * nq, d),
                f"qkv_projector.{k}.bias": (3 * nq,),
                f"qkv_layernorm.{k}.weight": (d, 3 * nq),
                f"qkv_layernorm.{k}.bias": (d, 3 * nq),
            }
        )
    for name, size in (("input_projector", d), ("input_projector2", d), ("input_projector3", nq)):
        if hidden is None:
            shapes.update({f"{name}.fc1.weight": (size, D_IN), f"{name}.fc1.bias": (size,)})
        else:
            shapes.update(
                {
                    f"{name}.fc1.weight": (hidden, D_IN),
                    f"{name}.fc1.bias": (hidden,),
                    f"{name}.fc2h.0.weight": (hidden, hidden),
                    f"{name}.fc2h.0.bias": (hidden,),
                    f"{name}.fc3.weight": (size, hidden),
                    f"{name}.fc3.bias": (size,),
                }
            )
    shapes.update(
        {
            "input_gate_projector.weight": (2 * d, d),
            "input_gate_projector.bias": (2 * d,),
            "memory_gate_projector.weight": (2 * d, d),
            "memory_gate_projector.bias": (2 * d,),
            "rel_projector.weight": (r, d * d),
            "rel_projector.bias": (r,),
            "rel_projector3.weight": (a, nq * r),
            "rel_projector3.bias": (a,),
            "mlp.0.weight": (m, a),
            "mlp.0.bias": (m,),
            "mlp.2.weight": (m, m),
            "mlp.2.bias": (m,),
            "out.weight": (out, m),
            "out.bias": (out,),
        }
    )
    if alphas[2] != 0.0:  # a transfer fixed at 0: the cell has no `rel_projector2` (skipped)
        shapes.update({"rel_projector2.weight": (d, nq * d), "rel_projector2.bias": (d,)})
    return shapes


def random_state(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0.0, 0.4, shape).astype("float32") for name, shape in shapes.items()}


def built_cell(**overrides):
    cell = keras_stm.STMCell(**{**CELL, **overrides})
    cell.build((None, D_IN))
    return cell


def cell_values(cell):
    return {w.path: ops.convert_to_numpy(w.value).copy() for w in cell.weights}


VARIANTS = {
    "default": ({}, {}),
    "linear_projectors": (dict(projector_hidden_units=7), dict(hidden=7)),
    "fixed_alphas_no_initial_memory": (
        dict(relational_carry=1.0, relational_transfer=0.0, learn_initial_memory=False),
        dict(alphas=(1.0, None, 0.0), learn_init_mem=False),
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_official_names_shapes_and_numbers(variant):
    """The weight map has exactly the official names and shapes, and a loaded random state_dict
    gives the numbers of the numpy recurrence run on that state_dict directly."""
    cell_kwargs, shape_kwargs = VARIANTS[variant]
    cell = built_cell(**cell_kwargs)
    shapes = official_shapes(**shape_kwargs)
    mapping = official_weight_map(cell)
    assert sorted(mapping) == sorted(shapes)
    for name, (variable, transpose) in mapping.items():
        expected = shapes[name][::-1] if transpose else shapes[name]
        assert int(np.prod(variable.shape)) == int(np.prod(expected)), name
        if len(expected) > 1:
            assert tuple(variable.shape) == expected, name
    state = random_state(shapes)
    keras_stm.load_official_weights(cell, state)
    # every official tensor now sits in its variable
    for name, (variable, transpose) in mapping.items():
        value = ops.convert_to_numpy(variable.value)
        np.testing.assert_array_equal(
            value.T if transpose else value.reshape(state[name].shape), state[name]
        )

    layer = keras_stm.STM(**CELL, **cell_kwargs, return_sequences=True, return_state=True)
    x = np.random.default_rng(1).normal(size=(2, 4, D_IN)).astype("float32")
    layer.build(x.shape)
    keras_stm.load_official_weights(layer, state)  # an STM layer loads through its cell
    alphas = shape_kwargs.get("alphas", (None, None, None))
    config = dict(
        num_queries=2,
        memory_size=4,
        alphas=[
            float(state[f"alpha{i + 1}0"][0]) if a is None else a for i, a in enumerate(alphas)
        ],
    )
    params = {k: v.astype("float64") for k, v in state.items()}
    outputs, _, item, relational = helper.reference_stm(params, config, x.astype("float64"))
    y, _, mi, mr = layer(x)
    helper.assert_close(helper.to_numpy([y, mi, mr]), [outputs, item, relational], 1e-4)


def test_missing_extra_and_misshaped_weights_are_all_named():
    cell = built_cell()
    before = cell_values(cell)
    state = random_state(official_shapes())

    missing = {k: v for k, v in state.items() if k not in ("rel_projector.weight", "alpha20")}
    with pytest.raises(ValueError, match=r"missing weights: \['alpha20', 'rel_projector.weight'\]"):
        keras_stm.load_official_weights(cell, missing)

    extra = dict(state, **{"layernorm2.weight": np.ones(5), "decoder.bias": np.zeros(3)})
    with pytest.raises(
        ValueError, match=r"unexpected weights: \['decoder.bias', 'layernorm2.weight'\]"
    ):
        keras_stm.load_official_weights(cell, extra)

    misshaped = dict(state)
    misshaped["input_projector.fc1.weight"] = state["input_projector.fc1.weight"].T  # (3, 4)
    misshaped["rel_memory_state_bias"] = np.zeros((2, 4, 5), "float32")
    with pytest.raises(ValueError) as error:
        keras_stm.load_official_weights(cell, misshaped)
    message = str(error.value)
    assert "'input_projector.fc1.weight' has shape (3, 4), expected (4, 3)" in message
    assert "'rel_memory_state_bias' has shape (2, 4, 5), expected (2, 4, 4)" in message

    everything = dict(missing, **{"decoder.bias": np.zeros(3)})
    everything["out.bias"] = np.zeros(4, "float32")
    with pytest.raises(ValueError) as error:
        keras_stm.load_official_weights(cell, everything)
    message = str(error.value)
    for name in ("rel_projector.weight", "alpha20", "decoder.bias", "out.bias"):
        assert name in message
    # a failed load assigns nothing
    after = cell_values(cell)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_alpha_scalars_accept_official_and_scalar_shapes():
    cell = built_cell()
    state = random_state(official_shapes())
    state["alpha10"] = np.float32(0.25)  # () instead of (1,)
    keras_stm.load_official_weights(cell, state)
    assert float(ops.convert_to_numpy(cell._coefficient("relational_carry"))) == 0.25
    state["alpha10"] = np.zeros((2,), "float32")
    with pytest.raises(ValueError, match="'alpha10' has shape"):
        keras_stm.load_official_weights(cell, state)


def test_unbuilt_cell_or_layer_and_bad_state_dict():
    with pytest.raises(ValueError, match="`cell` must be built"):
        keras_stm.load_official_weights(keras_stm.STMCell(**CELL), random_state(official_shapes()))
    with pytest.raises(ValueError, match="`cell` must be built"):
        keras_stm.load_official_weights(keras_stm.STM(**CELL), random_state(official_shapes()))
    with pytest.raises(ValueError, match="`state_dict` must be a mapping"):
        keras_stm.load_official_weights(built_cell(), [1, 2, 3])


def test_shared_copies_for_several_sam_steps():
    """With `step` 2 the official module repeats the shared SAM weights and alphas under index 1:
    equal copies are accepted, a different copy is rejected by name."""
    cell = built_cell(sam_steps=2)
    state = random_state(official_shapes(step=2))
    for name in list(state):
        for stem in ("qkv_projector.1.", "qkv_layernorm.1."):
            if name.startswith(stem):
                state[name] = state[name.replace(".1.", ".0.")]
        if name.startswith("alpha") and name.endswith("1"):
            state[name] = state[name[:-1] + "0"]
    keras_stm.load_official_weights(cell, state)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(cell.self_attentive_memory.kernel), state["qkv_projector.0.weight"].T
    )
    for name in ("qkv_projector.1.weight", "qkv_layernorm.1.bias", "alpha21"):
        bad = dict(state)
        bad[name] = state[name] + 1.0
        first = name.replace(".1.", ".0.") if "." in name else name[:-1] + "0"
        with pytest.raises(ValueError, match=f"'{name}' differs from '{first}'"):
            keras_stm.load_official_weights(cell, bad)
    # without a first copy, index 1 is simply unexpected
    orphan = {k: v for k, v in state.items() if k != "qkv_projector.0.bias"}
    with pytest.raises(ValueError) as error:
        keras_stm.load_official_weights(cell, orphan)
    assert "missing weights: ['qkv_projector.0.bias']" in str(error.value)
    assert "unexpected weights: ['qkv_projector.1.bias']" in str(error.value)


def test_cell_config_from_official():
    full = dict(
        input_size=64,
        output_size=64,
        step=2,
        num_slot=20,
        mlp_size=32,
        slot_size=90,
        rel_size=96,
        out_att_size=48,
        rd=False,
        init_alphas=[1, None, 0],
        learn_init_mem=False,
        mlp_hid=80,
    )
    assert keras_stm.cell_config_from_official(full) == dict(
        num_queries=20,
        memory_size=90,
        relation_size=96,
        readout_size=48,
        head_units=64,
        head_hidden_units=32,
        gated_write=False,
        sam_steps=2,
        relational_carry=1.0,
        relational_read="learned",
        relational_transfer=0.0,
        projector_hidden_units=80,
        learn_initial_memory=False,
    )
    defaults = keras_stm.cell_config_from_official({"output_size": 10})
    assert defaults == dict(
        num_queries=8,
        memory_size=96,
        relation_size=96,
        readout_size=64,
        head_units=10,
        head_hidden_units=128,
        gated_write=True,
        sam_steps=1,
        relational_carry="learned",
        relational_read="learned",
        relational_transfer="learned",
        projector_hidden_units=None,
        learn_initial_memory=True,
    )
    assert (
        keras_stm.cell_config_from_official({"output_size": 3, "alphas": [None, 0.5, None]})[
            "relational_read"
        ]
        == 0.5
    )
    assert (
        keras_stm.cell_config_from_official({"output_size": 3, "mlp_hid": -1})[
            "projector_hidden_units"
        ]
        is None
    )
    with pytest.raises(ValueError, match="`output_size`"):
        keras_stm.cell_config_from_official({"num_slot": 2})
    with pytest.raises(ValueError, match="`alphas`"):
        keras_stm.cell_config_from_official({"output_size": 3, "init_alphas": [None, None]})
    # the translated config builds a cell that takes the official state_dict
    config = keras_stm.cell_config_from_official(OFFICIAL_CONFIG)
    assert config == {**keras_stm.cell_config_from_official({"output_size": 3}), **CELL}
    cell = keras_stm.STMCell(**config)
    cell.build((None, OFFICIAL_CONFIG["input_size"]))
    keras_stm.load_official_weights(cell, random_state(official_shapes()))


def test_pth_file_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    state = random_state(official_shapes(hidden=7), seed=3)
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    path = tmp_path / "stm.pth"
    torch.save(tensors, path)
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": tensors, "epoch": 3}, wrapped)

    from_dict = built_cell(projector_hidden_units=7)
    keras_stm.load_official_weights(from_dict, state)
    expected = [ops.convert_to_numpy(w.value) for w in from_dict.weights]
    for source in (path, str(path), wrapped, tensors):  # pathlib, str, {"state_dict": ...}, torch
        cell = built_cell(projector_hidden_units=7)
        keras_stm.load_official_weights(cell, source)
        for value, want in zip((ops.convert_to_numpy(w.value) for w in cell.weights), expected):
            np.testing.assert_array_equal(value, want)
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        keras_stm.load_official_weights(built_cell(), missing)


class _Payload:
    """Pickled into a `.pth`, it would run code when unpickled
    (`torch.load(weights_only=False)`)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pth_files_are_read_safely_and_named(tmp_path):
    """Issue 24, finding 3: `weights_only=True` (no pickled code runs); every unreadable file
    is named in the error."""
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v) for k, v in random_state(official_shapes()).items()}
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({**state, "payload": _Payload(str(marker))}, evil)
    with pytest.raises(ValueError, match="evil.pth.*weights_only"):
        keras_stm.load_official_weights(built_cell(), evil)
    assert not marker.exists()
    good = tmp_path / "good.pth"
    torch.save(state, good)
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(2000))
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("cut.pth", "random.pth", "empty.pth"):
        with pytest.raises(ValueError, match=name):
            keras_stm.load_official_weights(built_cell(), tmp_path / name)
    keras_stm.load_official_weights(built_cell(), good)


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "is None"),
        ("abc", "not numeric"),
        (np.array([object(), 1]), "not numeric"),
        ({"a": 1}, "not numeric"),
    ],
)
def test_none_and_non_numeric_values_are_refused_by_name(value, message):
    state = random_state(official_shapes())
    state["rel_projector.bias"] = value
    with pytest.raises(ValueError, match=f"'rel_projector.bias'.*{message}"):
        keras_stm.load_official_weights(built_cell(), state)


def test_reshapeable_but_misshaped_values_are_refused():
    state = random_state(official_shapes())
    state["input_gate_projector.bias"] = np.zeros((2, 4), "float32")  # (8,) expected
    state["alpha10"] = np.zeros((1, 1), "float32")  # one element: accepted as the scalar
    with pytest.raises(
        ValueError, match=r"'input_gate_projector.bias' has shape \(2, 4\)"
    ) as error:
        keras_stm.load_official_weights(built_cell(), state)
    assert "alpha10" not in str(error.value)
