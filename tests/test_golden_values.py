"""Golden values: every public layer, with deterministic initializers on `np.arange`-based
inputs, against hard-coded numbers (as Keras' `lstm_test.py::test_correctness`), under each
backend.

How the numbers were obtained: computed once in float64 by the independent numpy references of
`tests/layer_test_helper` (`reference_opa`, `reference_sam`, `reference_stm`,
`reference_sentence_encoder`, `reference_tpr_inference`) from the float32 weights the layers
create here, and written with 8 significant digits. `python -m tests.test_golden_values`
prints them again. Every test checks the layer against the numbers to `rtol=1e-5` (relative to
the largest entry) and the reference against them to `1e-7`, so that a change in the layers,
in the references or in the numbers shows.

The initializers are deterministic but not constant (`Wave`): with Keras' constant initializers
every entry of an STM projection would be equal and SAM's LayerNorm would return zeros.
"""

import math

import keras
import numpy as np
from keras import ops

import keras_stm
from keras_stm.layers import OuterProductAttention
from keras_stm.layers import SelfAttentiveMemory
from keras_stm.layers import SentenceEncoder
from keras_stm.layers import TPRInference
from tests import layer_test_helper as helper


class Wave(keras.initializers.Initializer):
    """Entry `k` (row-major) of a weight is `scale * cos(0.7 k + phase)`, computed in float64
    numpy: the same values under every backend, different ones for weights of different sizes."""

    def __init__(self, scale, phase=0.0):
        self.scale, self.phase = scale, phase

    def __call__(self, shape, dtype=None):
        values = self.scale * np.cos(0.7 * np.arange(math.prod(shape)) + self.phase)
        dtype = keras.backend.standardize_dtype(dtype or keras.backend.floatx())
        return ops.convert_to_tensor(values.reshape(shape).astype(dtype))

    def get_config(self):
        return {"scale": self.scale, "phase": self.phase}


KERNEL, BIAS = Wave(0.5), Wave(0.1, phase=1.0)
# Small STM: nq 2, d 4, r 3, a 5, head 3 (hidden 6); fixed non-zero coefficients, so that the
# read, the transfer and the carry all run; zero initial memories (their initializer is random).
STM_CONFIG = dict(
    num_queries=2,
    memory_size=4,
    relation_size=3,
    readout_size=5,
    head_units=3,
    head_hidden_units=6,
    relational_carry=0.5,
    relational_read=0.3,
    relational_transfer=0.2,
    learn_initial_memory=False,
    kernel_initializer=KERNEL,
    bias_initializer=BIAS,
)


def arange_inputs(shape, modulus=7, scale=0.25):
    """`(arange % modulus - modulus // 2) * scale`, float32, of `shape`."""
    values = np.arange(math.prod(shape)) % modulus - modulus // 2
    return (values * scale).reshape(shape).astype("float32")


def check(actual, reference, expected):
    helper.assert_close(reference, expected, 1e-7, "numpy reference")
    helper.assert_close(actual, expected, 1e-5, "layer")


# ------------------------------------------------------------------------------------------
# the cases: (layer output, numpy reference), from the layers' own weights


def opa_case():
    q = arange_inputs((1, 2, 3), scale=0.5)
    k = arange_inputs((1, 2, 3), modulus=5, scale=0.6)
    v = arange_inputs((1, 2, 2), modulus=3, scale=0.7)
    actual = ops.convert_to_numpy(OuterProductAttention()(q, k, v))
    return actual, helper.reference_opa(q, k, v)


def sam_case():
    memory = arange_inputs((1, 3, 3))
    layer = SelfAttentiveMemory(num_queries=2, kernel_initializer=KERNEL, bias_initializer=BIAS)
    actual = ops.convert_to_numpy(layer(memory))
    params = {
        "qkv_projector.0.weight": ops.convert_to_numpy(layer.kernel).T,
        "qkv_projector.0.bias": ops.convert_to_numpy(layer.bias),
        "qkv_layernorm.0.weight": ops.convert_to_numpy(layer.gamma),
        "qkv_layernorm.0.bias": ops.convert_to_numpy(layer.beta),
    }
    params = {name: value.astype("float64") for name, value in params.items()}
    return actual, helper.reference_sam(params, memory.astype("float64"), 2)


def stm_reference(cell, x):
    config = dict(num_queries=2, memory_size=4, alphas=[0.5, 0.3, 0.2])
    params = helper.official_parameters(cell)
    return helper.reference_stm(params, config, x.astype("float64"))[0]


def stm_cell_case():
    x = arange_inputs((2, 4, 3))
    layer = keras.layers.RNN(keras_stm.STMCell(**STM_CONFIG))
    actual = ops.convert_to_numpy(layer(x))
    return actual, stm_reference(layer.cell, x)[:, -1]


def stm_case():
    x = arange_inputs((2, 4, 3))
    layer = keras_stm.STM(**STM_CONFIG, return_sequences=True)
    actual = ops.convert_to_numpy(layer(x))
    return actual, stm_reference(layer.cell, x)


def sentence_encoder_case():
    ids = (np.arange(2 * 3 * 4).reshape(2, 3, 4) % 7).astype("int32")
    layer = SentenceEncoder(
        vocabulary_size=7,
        max_sentence_length=5,
        embedding_size=3,
        embeddings_initializer=KERNEL,
        position_initializer=Wave(0.3, phase=0.5),
    )
    actual = ops.convert_to_numpy(layer(ids))
    reference = helper.reference_sentence_encoder(
        ops.convert_to_numpy(layer.embeddings), ops.convert_to_numpy(layer.position_weights), ids
    )
    return actual, reference


def tpr_inference_case():
    query = arange_inputs((2, 5))
    memory = arange_inputs((2, 2, 3, 3), modulus=5, scale=0.3)
    layer = TPRInference(
        vocabulary_size=4,
        entity_size=3,
        role_size=2,
        hidden_units=4,
        hops=2,
        kernel_initializer=KERNEL,
        output_initializer=Wave(0.4, phase=2.0),
    )
    actual = ops.convert_to_numpy(layer([query, memory]))
    weights = {w.name: ops.convert_to_numpy(w) for w in layer.weights}
    return actual, helper.reference_tpr_inference(weights, query, memory, hops=2)


# ------------------------------------------------------------------------------------------
# the numbers

EXPECTED = {
    "opa": np.array(
        [
            [
                [[-1.1641727, 0.50140851], [-0.95949293, 0.58355823], [0.3759347, -0.3759347]],
                [[0, 0], [0.57985354, -0.3759347], [-0.58355823, 0.58355823]],
            ]
        ]
    ),
    "sam": np.array(
        [
            [
                [
                    [0.020795162, 0.021464258, -0.085511446],
                    [0.019474089, 0.020159091, -0.084707668],
                    [-0.74214585, -0.74283353, 1.2140882],
                ],
                [
                    [0.067507216, 0.069677971, -0.27748997],
                    [0.05764729, 0.059674759, -0.25072994],
                    [-0.73918689, -0.74066111, 1.2717897],
                ],
            ]
        ]
    ),
    "stm_cell": np.array(
        [[0.098414081, 0.014477621, -0.076267891], [0.097968178, 0.014831957, -0.075279966]]
    ),
    "stm": np.array(
        [
            [
                [0.095358267, 0.014644078, -0.072957451],
                [0.095934926, 0.014685589, -0.07347061],
                [0.10044711, 0.013629577, -0.079598161],
                [0.098414081, 0.014477621, -0.076267891],
            ],
            [
                [0.095119362, 0.014626879, -0.072744854],
                [0.095783031, 0.014674655, -0.073335441],
                [0.096797011, 0.014747648, -0.074237765],
                [0.097968178, 0.014831957, -0.075279966],
            ],
        ]
    ),
    "sentence_encoder": np.array(
        [
            [
                [0.32782917, 0.23809189, 0.19015984],
                [0.12131692, 0.028899215, -0.020431276],
                [-0.073020046, -0.056342423, 0.03932539],
            ],
            [
                [-0.25875417, -0.075158556, 0.021183214],
                [-0.2541014, -0.18120338, -0.22986638],
                [-0.059966943, -0.1529243, -0.20086933],
            ],
        ]
    ),
    "tpr_inference": np.array(
        [
            [-0.36760941, -0.24328858, -0.0045453502, 0.23633567],
            [0.046261648, 0.1268044, 0.14770906, 0.099143841],
        ]
    ),
}


def test_outer_product_attention_golden_values():
    check(*opa_case(), EXPECTED["opa"])


def test_self_attentive_memory_golden_values():
    check(*sam_case(), EXPECTED["sam"])


def test_stm_cell_golden_values():
    check(*stm_cell_case(), EXPECTED["stm_cell"])


def test_stm_golden_values():
    check(*stm_case(), EXPECTED["stm"])


def test_sentence_encoder_golden_values():
    check(*sentence_encoder_case(), EXPECTED["sentence_encoder"])


def test_tpr_inference_golden_values():
    check(*tpr_inference_case(), EXPECTED["tpr_inference"])


CASES = {
    "opa": opa_case,
    "sam": sam_case,
    "stm_cell": stm_cell_case,
    "stm": stm_case,
    "sentence_encoder": sentence_encoder_case,
    "tpr_inference": tpr_inference_case,
}

if __name__ == "__main__":  # print the references' numbers, 8 significant digits
    for name, case in CASES.items():
        actual, reference = case()
        worst = np.max(np.abs(actual - reference)) / np.max(np.abs(reference))
        print(f"# {name}: layer vs reference {worst:.2e}")
        text = np.array2string(
            reference, separator=", ", formatter={"float_kind": lambda v: f"{v:.8g}"}
        )
        print(f'"{name}": np.array({text}),')
