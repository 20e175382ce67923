"""Training parity: the library's task models train along the authors' own training runs.

`tests/fixtures/training/*.npz` (README beside them) hold short float64 runs of the authors'
PyTorch code: their initial weights, their batches, the loss before every step and the final
weights. Each test builds the task's model with the library's builder, loads the initial
weights through the official-weight loader, and trains on the stored batches with the
optimiser and clipping of the task's example script (`training.make_optimizer` with the
task's registry defaults) and the task's loss, in float64, under the current backend.
"""

import argparse
import json
import pathlib

import keras
import numpy as np
import pytest

import keras_stm
from keras_stm.experiments import training
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import copy as copy_data
from keras_stm.weights import official_weight_map
from tests.backend_utils import float64_mode

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "training"

# fixture preset -> (task of the registry, whether the model reads token ids)
PRESETS = {"nar": "associative_retrieval", "copy": "copy", "nfar": "nth_farthest"}
EARLY_STEPS = 10
EARLY_RTOL = 1e-6
ALL_RTOL = 1e-2
FINAL_WEIGHTS_RTOL = 1e-2


def load_run(preset):
    data = np.load(FIXTURES / f"train_{preset}_small.npz")
    meta = json.loads(str(data["meta"]))
    init = {k[len("param_init/") :]: data[k] for k in data.files if k.startswith("param_init/")}
    final = {k[len("param_final/") :]: data[k] for k in data.files if k.startswith("param_final/")}
    steps = meta["steps"]
    batches = [(data[f"inputs/{k}"], data[f"targets/{k}"]) for k in range(steps)]
    return meta, init, final, batches, data["losses"]


def task_flags(task):
    """The example script's optimiser flags: the task's registry defaults, parsed."""
    parser = training.argument_parser("parity", **task_configs.training_defaults(task))
    return parser.parse_args([])


def check_optimizer_matches_fixture(args, meta):
    """The registry's optimiser settings are the ones of the authors' run."""
    wanted = meta["optimizer"]
    assert args.optimizer == wanted["name"]
    assert args.learning_rate == pytest.approx(wanted["lr"])
    assert args.clip_value == pytest.approx(meta["clip_value"])
    if wanted["name"] == "rmsprop":
        assert args.momentum == pytest.approx(wanted["momentum"])
        assert args.rmsprop_rho == pytest.approx(wanted["alpha"])


def build_task_model(preset, meta, init):
    """The task's model (library builder) with the authors' initial weights loaded."""
    config = keras_stm.cell_config_from_official(meta["config"])
    output_size = config.pop("head_units")
    input_size = meta["config"]["input_size"]
    if preset == "nar":
        vocabulary_size = init["emb.weight"].shape[0]
        model = build_sequence_model(
            input_size,
            output_size,
            stm_config=config,
            vocabulary_size=vocabulary_size,
            embedding_size=input_size,
        )
        model.get_layer("embedding").embeddings.assign(init["emb.weight"])
    else:
        model = build_sequence_model(
            input_size, output_size, stm_config=config, return_sequences=preset == "copy"
        )
    stm = model.get_layer("stm")
    keras_stm.load_official_weights(stm, {k: v for k, v in init.items() if k != "emb.weight"})
    return model, stm


def task_loss(preset):
    """The loss of the task's example script."""
    if preset == "copy":  # training.run_bit_error_task
        return keras.losses.BinaryCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        )
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def task_batch(preset, inputs, targets):
    """A stored batch in the form the example feeds it (copy: the zero-input decoding phase)."""
    if preset == "copy":
        x, y, weight = copy_data.with_decoding_phase(inputs, targets)
        return x.astype("float64"), y.astype("float64"), weight.astype("float64")
    if preset == "nar":
        return inputs.astype("int32"), targets.astype("int32"), None
    return inputs.astype("float64"), targets.astype("int32"), None


def train_like_the_authors(preset):
    meta, init, final, batches, losses = load_run(preset)
    task = PRESETS[preset]
    args = task_flags(task)
    check_optimizer_matches_fixture(args, meta)
    model, stm = build_task_model(preset, meta, init)
    # Eager on torch/tensorflow keeps the test quick (one compile per copy length otherwise).
    model.compile(
        optimizer=training.make_optimizer(args),
        loss=task_loss(preset),
        jit_compile=keras.backend.backend() == "jax",
    )
    seen = []
    for inputs, targets in batches:
        x, y, weight = task_batch(preset, inputs, targets)
        seen.append(float(model.train_on_batch(x, y, sample_weight=weight)))
    return np.asarray(seen), losses, stm, final


@pytest.fixture
def float64_keras():
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        with float64_mode():
            yield
    finally:
        keras.config.set_floatx(previous)


def relative_error(actual, expected):
    return np.abs(actual - expected) / np.abs(expected)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_losses_follow_the_authors_run(preset, float64_keras):
    """The first 10 losses to 1e-6 relative, all 30 to 1e-2."""
    seen, losses, _, _ = train_like_the_authors(preset)
    assert seen.shape == losses.shape
    early = relative_error(seen[:EARLY_STEPS], losses[:EARLY_STEPS])
    assert early.max() <= EARLY_RTOL, (
        f"{preset}: first losses {seen[:EARLY_STEPS]} vs {losses[:EARLY_STEPS]}"
    )
    assert relative_error(seen, losses).max() <= ALL_RTOL, f"{preset}: {seen} vs {losses}"


def test_nth_farthest_final_weights(float64_keras):
    """After 30 Adam steps every weight the model uses matches the authors' to 1e-2 of its scale."""
    _, _, stm, final = train_like_the_authors("nfar")
    mapping = official_weight_map(stm.cell)
    compared = 0
    for name, (variable, transpose) in mapping.items():
        expected = final[name].T if transpose else final[name]
        expected = np.reshape(expected, tuple(variable.shape))
        actual = keras.ops.convert_to_numpy(variable.value)
        scale = max(float(np.abs(expected).max()), 1e-12)
        np.testing.assert_allclose(
            actual, expected, rtol=FINAL_WEIGHTS_RTOL, atol=FINAL_WEIGHTS_RTOL * scale, err_msg=name
        )
        compared += 1
    assert compared == len(mapping)


def test_keras_rmsprop_does_not_follow_the_authors_run(float64_keras):
    """Why the library has TorchRMSprop: Keras' RMSprop leaves the authors' losses at step 2."""
    meta, init, _, batches, losses = load_run("nar")
    model, _ = build_task_model("nar", meta, init)
    args = task_flags("associative_retrieval")
    model.compile(
        optimizer=keras.optimizers.RMSprop(
            learning_rate=args.learning_rate,
            rho=args.rmsprop_rho,
            momentum=args.momentum,
            epsilon=1e-8,
            clipvalue=args.clip_value,
        ),
        loss=task_loss("nar"),
        jit_compile=keras.backend.backend() == "jax",
    )
    seen = []
    for inputs, targets in batches[:3]:
        x, y, _ = task_batch("nar", inputs, targets)
        seen.append(float(model.train_on_batch(x, y)))
    assert relative_error(seen[0], losses[0]) <= EARLY_RTOL  # same weights, same first loss
    assert relative_error(seen[1], losses[1]) > 1e-5


def test_make_optimizer_uses_the_torch_update():
    args = argparse.Namespace(
        optimizer="rmsprop",
        learning_rate=1e-4,
        rmsprop_rho=0.99,
        momentum=0.9,
        clip_value=10.0,
        clip_norm=None,
        adam_beta_2=0.999,
    )
    optimizer = training.make_optimizer(args)
    assert isinstance(optimizer, keras_stm.TorchRMSprop)
    assert optimizer.epsilon == 1e-8 and optimizer.clipvalue == 10.0
