"""Bad arguments and bad inputs raise a clear `ValueError` naming the argument."""

import keras
import numpy as np
import pytest

import keras_stm
from keras_stm.layers import OuterProductAttention
from keras_stm.layers import SelfAttentiveMemory

SMALL = dict(num_queries=2, memory_size=4, relation_size=3, readout_size=5, head_hidden_units=6)


def zeros(*shape):
    return np.zeros(shape, "float32")


# ------------------------------------------------------------------------------------------
# constructor arguments

SIZE_ARGUMENTS = [
    "num_queries",
    "memory_size",
    "relation_size",
    "readout_size",
    "head_units",
    "head_hidden_units",
    "sam_steps",
    "projector_hidden_units",
]


BAD_SIZES = [0, -3, 2.5, True, "8", None]
BAD_COEFFICIENTS = ["learnt", "Learned", "fixed", None, True, float("nan"), float("inf")]
BAD_FLAGS = [1, "yes", None]


@pytest.mark.parametrize("layer_class", [keras_stm.STMCell, keras_stm.STM], ids=["cell", "stm"])
def test_bad_constructor_arguments(layer_class):
    """Every size, coefficient, option and flag of the cell (and the layer passing them on)."""
    for argument in SIZE_ARGUMENTS:
        for value in BAD_SIZES:
            if value is None and argument in ("head_units", "projector_hidden_units"):
                continue  # None is valid for these (head off, one-layer projectors)
            with pytest.raises(ValueError, match=f"`{argument}` must be a positive integer"):
                layer_class(**{**SMALL, argument: value})
    for argument in ("relational_carry", "relational_read", "relational_transfer"):
        for value in BAD_COEFFICIENTS:
            with pytest.raises(ValueError, match=f"`{argument}` must be"):
                layer_class(**SMALL, **{argument: value})
    for value in ["batch", "Joint", "rows", None]:
        with pytest.raises(ValueError, match="`sam_normalization`"):
            layer_class(**SMALL, sam_normalization=value)
    for value in [0, -1e-5, "small"]:
        with pytest.raises(ValueError, match="`layer_norm_epsilon`"):
            layer_class(**SMALL, layer_norm_epsilon=value)
    for argument in ("gated_write", "learn_initial_memory", "readout_normalization"):
        for value in BAD_FLAGS:
            with pytest.raises(ValueError, match=f"`{argument}` must be a bool"):
                layer_class(**SMALL, **{argument: value})


def test_bad_self_attentive_memory_arguments():
    for value in BAD_SIZES:
        with pytest.raises(ValueError, match="`num_queries` must be a positive integer"):
            SelfAttentiveMemory(num_queries=value)
    for value in [0, -1e-5, "small"]:
        with pytest.raises(ValueError, match="`epsilon`"):
            SelfAttentiveMemory(num_queries=2, epsilon=value)
    for value in ["batch", "Joint", None]:
        with pytest.raises(ValueError, match="`normalization`"):
            SelfAttentiveMemory(num_queries=2, normalization=value)


def test_valid_coefficients_are_accepted():
    cell = keras_stm.STMCell(
        **SMALL, relational_carry=1, relational_read=0.0, relational_transfer="learned"
    )
    assert cell.relational_carry == 1.0 and isinstance(cell.relational_carry, float)
    assert cell.relational_read == 0.0 and cell.relational_transfer == "learned"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(loop="sparse"), "`loop` must be one of"),
        (dict(loop=True), "`loop` must be one of"),
        (dict(loop=None), "`loop` must be one of"),
    ],
    ids=["unknown", "bool", "none"],
)
def test_stm_loop_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_stm.STM(**SMALL, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(return_sequences=True), "return_sequences=False"),
        (dict(sam_steps=2), "sam_steps=1"),
        (dict(relational_carry=0.0, relational_read=0.0), "reads or carries"),
    ],
    ids=["return_sequences", "sam_steps", "no_relational_memory_read"],
)
def test_low_rank_loop_needs_what_it_uses(kwargs, match):
    layer = keras_stm.STM(**SMALL, loop="low_rank", **kwargs)
    with pytest.raises(ValueError, match=match):
        layer(zeros(2, 4, 3))


@pytest.mark.parametrize(
    "name",
    [
        "torch_compile",
        "torch_compile_mode",
        "torch_compile_step",
        "relational_memory_loop",
        "loop_gradient",
        "carry_relational_memory",
    ],
)
def test_removed_arguments_are_refused(name):
    """Arguments removed in issue 22 are refused by the constructor (old configs still load:
    tests/test_unused_weights.py) and not in the config."""
    with pytest.raises((TypeError, ValueError), match=name):
        keras_stm.STM(**SMALL, **{name: None})
    assert name not in keras_stm.STM(**SMALL).get_config()


# ------------------------------------------------------------------------------------------
# inputs at call time


@pytest.mark.parametrize("shape", [(2, 3), (2, 5, 3, 1)], ids=["rank2", "rank4"])
def test_stm_input_rank(shape):
    with pytest.raises(ValueError, match="ndim=3|timesteps"):
        keras_stm.STM(**SMALL)(zeros(*shape))
    with pytest.raises(ValueError, match="ndim=3|timesteps"):
        keras_stm.STM(**SMALL)(keras.Input(shape[1:]))


def test_stm_feature_size_fixed_after_build():
    layer = keras_stm.STM(**SMALL)
    layer(zeros(2, 5, 3))
    with pytest.raises(ValueError, match="axis -1 of input shape to have value 3"):
        layer(zeros(2, 5, 4))
    with pytest.raises(ValueError, match="known input feature size"):
        keras_stm.STM(**SMALL).build((2, 5, None))


def test_cell_input_rank_and_feature_size():
    cell = keras_stm.STMCell(**SMALL)
    cell.build((None, 3))
    states = cell.get_initial_state(batch_size=2)
    with pytest.raises(ValueError, match="axis -1 of input shape to have value 3"):
        cell(zeros(2, 4), states)
    with pytest.raises(ValueError, match="min_ndim=2"):
        cell(zeros(3), states)
    with pytest.raises(ValueError, match="STMCell expects 3 states"):
        cell(zeros(2, 3), states[:2])
    with pytest.raises(ValueError, match="axis -1 of input shape to have value 3"):
        keras.layers.RNN(cell)(zeros(2, 5, 4))


def test_stm_initial_state_length_and_shapes():
    layer = keras_stm.STM(**SMALL, head_units=3)
    x = zeros(2, 5, 3)
    good = [zeros(2, 3), zeros(2, 4, 4), zeros(2, 2, 4, 4)]
    layer(x, initial_state=good)
    for states in (good[:2], good + [good[0]], good[:1]):
        with pytest.raises(
            ValueError, match=f"`initial_state` must hold 3 states.*got {len(states)}"
        ):
            layer(x, initial_state=states)
    with pytest.raises(ValueError, match=r"`initial_state\[1\]` must have shape"):
        layer(x, initial_state=[good[0], zeros(2, 5, 5), good[2]])
    with pytest.raises(ValueError, match=r"`initial_state\[2\]` must have shape"):
        layer(x, initial_state=[good[0], good[1], zeros(2, 4 * 4 * 3)])
    with pytest.raises(ValueError, match=r"`initial_state\[0\]` must have shape"):
        layer(x, initial_state=[zeros(2, 5), good[1], good[2]])


def test_outer_product_attention_mismatched_shapes():
    opa = OuterProductAttention()
    with pytest.raises(ValueError, match="`query` and `key` must have the same feature size"):
        opa(zeros(2, 3, 4), zeros(2, 2, 5), zeros(2, 2, 5))
    with pytest.raises(ValueError, match="`key` and `value` must hold the same number of items"):
        OuterProductAttention()(zeros(2, 3, 4), zeros(2, 2, 4), zeros(2, 3, 5))
    with pytest.raises(ValueError, match="`query` and `key` must have the same feature size"):
        OuterProductAttention()(keras.Input((3, 4)), keras.Input((2, 5)), keras.Input((2, 5)))
    with pytest.raises(ValueError, match="`query` must have rank >= 2"):
        keras_stm.ops.outer_product_attention(zeros(4), zeros(2, 4), zeros(2, 4))


def test_self_attentive_memory_rank_and_size():
    with pytest.raises(ValueError, match=r"memory of shape \(batch, rows, cols\)"):
        SelfAttentiveMemory(num_queries=2)(zeros(2, 4))
    with pytest.raises(ValueError, match=r"memory of shape \(batch, rows, cols\)"):
        SelfAttentiveMemory(num_queries=2)(keras.Input((4,)))
    with pytest.raises(ValueError, match="known rows and cols"):
        SelfAttentiveMemory(num_queries=2).build((None, None, 4))
    sam = SelfAttentiveMemory(num_queries=2)
    sam(zeros(2, 4, 4))
    with pytest.raises(ValueError, match="axis -1 of input shape to have value 4"):
        sam(zeros(2, 4, 5))


# ------------------------------------------------------------------------------------------
# issue 24, finding 6: the smaller points


@pytest.mark.parametrize("layer_class", [keras_stm.STMCell, keras_stm.STM], ids=["cell", "stm"])
def test_non_finite_epsilon_absurd_coefficients_and_int_policies_are_refused(layer_class):
    for value in [float("nan"), float("inf"), -float("inf")]:
        with pytest.raises(ValueError, match="`layer_norm_epsilon` must be a positive finite"):
            layer_class(**SMALL, layer_norm_epsilon=value)
    for argument in ("relational_carry", "relational_read", "relational_transfer"):
        for value in [1e30, -11.0, np.bool_(True)]:
            with pytest.raises(ValueError, match=f"`{argument}` must be"):
                layer_class(**SMALL, **{argument: value})
    for dtype in ["int32", "int64", "bool"]:
        with pytest.raises(ValueError, match=f"float one.*{dtype}"):
            layer_class(**SMALL, dtype=dtype)
    with pytest.raises(ValueError, match="`epsilon` must be a positive finite"):
        SelfAttentiveMemory(num_queries=2, epsilon=float("nan"))


@pytest.mark.parametrize("layer_class", [keras_stm.STMCell, keras_stm.STM], ids=["cell", "stm"])
def test_numpy_numbers_are_accepted(layer_class):
    layer = layer_class(
        **{**SMALL, "num_queries": np.int64(2), "memory_size": np.int32(4)},
        relational_carry=np.float32(0.5),
        layer_norm_epsilon=np.float64(1e-5),
    )
    cell = layer if layer_class is keras_stm.STMCell else layer.cell
    assert type(cell.num_queries) is int and cell.num_queries == 2
    assert type(cell.relational_carry) is float and cell.relational_carry == 0.5
    with pytest.raises(ValueError, match="`num_queries` must be a positive integer"):
        layer_class(**{**SMALL, "num_queries": np.bool_(True)})


def test_zero_features_and_zero_timesteps_are_named():
    with pytest.raises(ValueError, match="positive input feature size"):
        keras_stm.STM(**SMALL)(zeros(2, 3, 0))
    with pytest.raises(ValueError, match="positive input feature size"):
        keras_stm.STMCell(**SMALL).build((None, 0))
    with pytest.raises(ValueError, match="at least one timestep"):
        keras_stm.STM(**SMALL)(zeros(2, 0, 3))


@pytest.mark.parametrize("options", [{}, {"unroll": True}], ids=["loop", "unrolled"])
@pytest.mark.parametrize("length", [2, 5])
def test_mask_of_another_length_is_refused(options, length):
    layer = keras_stm.STM(**SMALL, **options)
    with pytest.raises(ValueError, match=r"`mask` must have shape \(batch, timesteps\)"):
        layer(zeros(2, 3, 3), mask=np.ones((2, length), bool))
    layer(zeros(2, 3, 3), mask=np.ones((2, 3), bool))  # the right length still works
