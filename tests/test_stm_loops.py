"""The loop forms of `keras_stm.STM` (`keras_stm.layers._stm_loop`) against the portable one.

The dense form (carrying `Mr`) is checked against `keras.layers.RNN(STMCell)` and the numpy
recurrence in `tests/test_stm_rnn.py`; here the low-rank form (no `Mr` inside the loop, the
pending reads updated in blocks) is checked against the dense form, and `_plan`, the one place
that chooses a form, is checked for what it chooses."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_stm
from keras_stm.layers import _stm_loop
from tests import layer_test_helper as helper
from tests.backend_utils import float64_mode
from tests.backend_utils import gradients
from tests.test_stm_rnn import CELL
from tests.test_stm_rnn import NQ
from tests.test_stm_rnn import STEPS
from tests.test_stm_rnn import D
from tests.test_stm_rnn import masked_results
from tests.test_stm_rnn import numpy_list
from tests.test_stm_rnn import padded_ids
from tests.test_stm_rnn import random_weights
from tests.test_stm_rnn import with_weights

FEATURES = 3

# Coefficient sets: all learned (backwards too); bAbI's (carry 1, no transfer); a carry without
# a read; the additive write.
LOW_RANK_CASES = {
    "learned_go_backwards": dict(go_backwards=True),
    "babi_coefficients": dict(relational_carry=1.0, relational_transfer=0.0),
    "carry_without_read": dict(relational_read=0.0),
    "additive_write": dict(gated_write=False),
}
CELL_KEYS = ("relational_carry", "relational_read", "relational_transfer", "gated_write")


@pytest.fixture
def blocks_of_two(monkeypatch):
    """Blocks of 2 steps over T = 5: blocks inside the sequence and an uneven last block."""
    monkeypatch.setattr(_stm_loop, "_LOW_RANK_BLOCK", 2)


def low_rank_and_dense(values, options, **flags):
    return [
        with_weights(keras_stm.STM(**CELL, **options, loop=loop, **flags), values)
        for loop in ("low_rank", "dense")
    ]


def state_loss(layer, seed):
    """`sum(output^2) + sum(Mi^2) + sum(Mr * probe)` of `layer` (with return_state)."""
    probe = ops.convert_to_tensor(np.random.default_rng(seed).normal(size=(3, NQ, D, D)))

    def compute(t):
        output, _, item, relational = layer(t)
        return ops.sum(output**2) + ops.sum(item**2) + ops.sum(relational * probe)

    return compute


@pytest.mark.parametrize("case", sorted(LOW_RANK_CASES))
def test_low_rank_loop_matches_dense(case, blocks_of_two):
    """In float64 the low-rank loop gives the dense loop's last output, final memories and
    gradients (w.r.t. every weight and the inputs), to round-off: the same sums in another
    order."""
    options = LOW_RANK_CASES[case]
    values = random_weights(seed=11, **{k: v for k, v in options.items() if k in CELL_KEYS})
    with float64_mode():
        layers = low_rank_and_dense(values, options, return_state=True, dtype="float64")
        x = np.random.default_rng(0).normal(size=(3, STEPS, FEATURES))
        results = [numpy_list(*layer(x)) for layer in layers]
        helper.assert_close(results[0], results[1], 1e-10, "low-rank vs dense")
        grads = [gradients(state_loss(layer, seed=12), layer.weights, x) for layer in layers]
    helper.assert_close(
        list(grads[0][1]) + [grads[0][2]],
        list(grads[1][1]) + [grads[1][2]],
        1e-9,
        "gradients, low-rank vs dense",
    )


def test_low_rank_loop_with_mask(blocks_of_two):
    """Masked samples (one all masked, padding inside a block and across blocks) get the dense
    loop's numbers."""
    values = random_weights(seed=24)
    layers = low_rank_and_dense(values, {}, return_state=True)
    results, _ = masked_results(layers, padded_ids([5, 0, 2, 4, 3]), seed=25)
    helper.assert_close(results[0], results[1], 1e-5, "masked, low-rank vs dense")


def built_cell(**overrides):
    cell = keras_stm.STMCell(**{**CELL, **overrides})
    cell.build((None, FEATURES))
    return cell


def test_plan(monkeypatch):
    """`_plan(cell, steps, loop, unroll, return_sequences) -> (form, unroll)`."""
    cell, factored = built_cell(), built_cell(relational_carry=0.0, relational_read=0.0)
    monkeypatch.setattr(_stm_loop, "_on_jax_gpu", lambda: False)
    monkeypatch.setattr(_stm_loop, "_on_torch", lambda: False)
    assert _stm_loop._plan(cell, STEPS, "auto", False, False) == ("dense", False)
    assert _stm_loop._plan(cell, STEPS, "auto", True, False) == ("dense", True)
    assert _stm_loop._plan(factored, STEPS, "auto", False, False) == ("factored", False)
    assert _stm_loop._plan(cell, STEPS, "low_rank", False, False) == ("low_rank", True)
    assert _stm_loop._plan(cell, STEPS, "dense", False, False) == ("dense", False)
    for args, match in (
        ((factored, STEPS, "low_rank", False, False), "reads or carries"),
        ((cell, STEPS, "low_rank", False, True), "return_sequences"),
        ((cell, None, "low_rank", False, False), "known number"),
    ):
        with pytest.raises(ValueError, match=match):
            _stm_loop._plan(*args)
    # On a jax GPU `auto` unrolls a known number of steps and takes the low-rank loop up to
    # T = 2d for a last output with one SAM iteration.
    monkeypatch.setattr(_stm_loop, "_on_jax_gpu", lambda: True)
    assert _stm_loop._plan(cell, 2 * D, "auto", False, False) == ("low_rank", True)
    assert _stm_loop._plan(cell, 2 * D + 1, "auto", False, False) == ("dense", True)
    assert _stm_loop._plan(cell, STEPS, "auto", False, True) == ("dense", True)
    assert _stm_loop._plan(built_cell(sam_steps=2), STEPS, "auto", False, False) == ("dense", True)
    assert _stm_loop._plan(factored, STEPS, "auto", False, False) == ("factored", True)
    assert _stm_loop._plan(cell, None, "auto", False, False) == ("dense", False)
    assert _stm_loop._plan(cell, STEPS, "dense", False, False) == ("dense", False)
    # Under torch `auto` takes the low-rank loop for a last output up to T = d/4 (unrolled: it
    # is a Python loop), the dense loop as asked above that.
    monkeypatch.setattr(_stm_loop, "_on_jax_gpu", lambda: False)
    monkeypatch.setattr(_stm_loop, "_on_torch", lambda: True)
    wide = built_cell(memory_size=4 * STEPS)
    assert _stm_loop._plan(wide, STEPS, "auto", False, False) == ("low_rank", True)
    assert _stm_loop._plan(wide, STEPS + 1, "auto", False, False) == ("dense", False)
    assert _stm_loop._plan(wide, STEPS, "auto", False, True) == ("dense", False)
    assert _stm_loop._plan(wide, None, "auto", False, False) == ("dense", False)
    assert _stm_loop._plan(wide, STEPS, "dense", False, False) == ("dense", False)
    assert _stm_loop._plan(cell, STEPS, "auto", False, False) == ("dense", False)  # T > d/4


def test_loop_is_one_choice_not_saved():
    """`loop` is checked, and not saved in the config (like `keras.layers.LSTM`'s
    `use_cudnn`)."""
    with pytest.raises(ValueError, match="`loop` must be one of"):
        keras_stm.STM(**CELL, loop="fast")
    for removed in ("torch_compile", "relational_memory_loop", "loop_gradient"):
        with pytest.raises((TypeError, ValueError)):
            keras_stm.STM(**CELL, **{removed: None})
    assert "loop" not in keras_stm.STM(**CELL, loop="low_rank").get_config()
    assert not hasattr(keras_stm.STM, "low_rank_block_size")
    assert keras.backend.backend() in ("jax", "torch", "tensorflow")
