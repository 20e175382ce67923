"""Shared checks run on every keras-stm layer, and a numpy reference of the STM recurrence.

`run_layer_test(layer_cls, init_kwargs, input_data=..., expected_output_shape=..., ...)`, named
and shaped like Keras' `TestCase.run_layer_test`, runs for one layer configuration: the config
round trip, a functional model (symbolic output shapes == `compute_output_shape` == the shapes
the test expects; the expected numbers of trainable and non-trainable weights), an eager call
(finite, equal to `expected_output` when given and to the model's compiled `predict`),
`.keras` save and load (same predictions), one `fit` step (finite loss, every trainable weight
moves; `jit_compile=True` on jax and tensorflow, eager on torch) and the `mixed_bfloat16`
policy (finite outputs of the expected dtype, float32 variables, one fit step with
`jit_compile="auto"`).

`check_cross_backend(cases, directory)` saves one model per case and loads them all in ONE
subprocess under another backend (jax -> torch -> tensorflow -> jax), which compares its
predictions with the numbers written by the parent (`python -m tests.layer_test_helper DIR`).

`reference_stm(params, config, inputs, ...)` is an independent float64 numpy implementation
of the STM recurrence written from the specification (official parameter names, PyTorch
`(out, in)` layouts, explicit loops over time), used to check the layers' numbers.
"""

import copy
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
from keras import ops

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKENDS = ("jax", "torch", "tensorflow")
JIT_BACKENDS = (
    "jax",
    "tensorflow",
)  # torch.compile is too slow for a unit test: torch fits eagerly


# ----------------------------------------------------------------------------------------------
# small utilities


def other_backend(backend=None):
    """The backend that loads files saved under `backend` (default: the current one).

    A cycle jax -> torch -> tensorflow -> jax, so that the three backend runs of a test file
    cover the three directed pairs once each.
    """
    backend = backend or keras.backend.backend()
    return BACKENDS[(BACKENDS.index(backend) + 1) % len(BACKENDS)]


def as_list(inputs):
    """`inputs` as a list of arrays (a single array becomes a one-element list)."""
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def to_numpy(outputs):
    """A tensor or (nested) list/tuple of tensors as a flat list of numpy arrays."""
    return [np.asarray(ops.convert_to_numpy(t)) for t in keras.tree.flatten(outputs)]


def dtype_name(tensor):
    """The standardized dtype name of a tensor (`"float32"`, `"bfloat16"`, ...)."""
    return keras.backend.standardize_dtype(tensor.dtype)


def assert_close(actual, expected, rtol=1e-5, what=""):
    """Assert two lists of arrays are equal to `rtol` relative to each array's largest entry."""
    actual, expected = as_list(actual), as_list(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} arrays vs {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        a = np.asarray(a, dtype="float64")
        e = np.asarray(e, dtype="float64")
        assert a.shape == e.shape, f"{what}[{i}]: shape {a.shape} vs {e.shape}"
        scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-12)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale, err_msg=f"{what}[{i}]")


def shape_list(shapes):
    """A shape, or a (nested) structure of shapes, as a flat list of tuples."""
    if isinstance(shapes, (list, tuple)) and all(s is None or isinstance(s, int) for s in shapes):
        return [tuple(shapes)]
    result = []
    for s in shapes:
        result.extend(shape_list(s))
    return result


def tensor_shapes(outputs):
    """Shapes of a tensor or of a (nested) structure of tensors, as a flat list of tuples."""
    return [tuple(t.shape) for t in keras.tree.flatten(outputs)]


def as_json(config):
    """A config as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(config))


def symbolic_inputs(inputs):
    """One `keras.Input` per array of `inputs` (batch axis left free)."""
    return [keras.Input(shape=x.shape[1:], dtype=str(x.dtype)) for x in as_list(inputs)]


def model_inputs(inputs):
    """`inputs` in the form a functional model takes (a list only when there are several)."""
    inputs = as_list(inputs)
    return inputs if len(inputs) > 1 else inputs[0]


def functional_model(layer, inputs, call_kwargs=None):
    """`keras.Model` applying `layer` to `keras.Input`s shaped like `inputs`."""
    tensors = symbolic_inputs(inputs)
    outputs = layer(*tensors, **(call_kwargs or {}))
    return keras.Model(tensors if len(tensors) > 1 else tensors[0], outputs)


def first_output(outputs):
    """The first tensor of a layer's result (the output proper when states are returned)."""
    return keras.tree.flatten(outputs)[0]


def weight_values(layer):
    """`{variable path: numpy value}` of a layer's trainable weights."""
    return {w.path: np.array(ops.convert_to_numpy(w.value)) for w in layer.trainable_weights}


def set_random_weights(layer, rng, scale=0.5):
    """Give every weight of a built layer N(0, scale^2) values (float32-rounded), in place."""
    for w in layer.weights:
        w.assign(
            rng.normal(0.0, scale, tuple(w.shape)).astype(keras.backend.standardize_dtype(w.dtype))
        )


# ----------------------------------------------------------------------------------------------
# the checks


def check_config_round_trip(layer_factory):
    """`from_config(get_config())` of a new layer gives an equal, JSON-serialisable config, and
    `keras.layers.serialize`/`deserialize` round-trips it (`run_layer_test` repeats the round trip
    on the built layer)."""
    layer = layer_factory()
    config = layer.get_config()
    json.dumps(config)
    # (deep copy: `keras.layers.RNN.from_config` pops "cell" out of the dict it is given)
    clone = layer.__class__.from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    assert clone.__class__ is layer.__class__
    restored = keras.layers.deserialize(json.loads(json.dumps(keras.layers.serialize(layer))))
    assert restored.__class__ is layer.__class__
    assert restored.get_config() == config
    return config


def _fit_once(model, inputs, target, jit_compile):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-2), loss="mse", jit_compile=jit_compile
    )
    batch = as_list(inputs)[0].shape[0]
    history = model.fit(
        model_inputs(inputs), target, batch_size=batch, epochs=1, shuffle=False, verbose=0
    )
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), f"fit loss is {loss}"
    return loss


def _training_model(layer, inputs, call_kwargs):
    """A model whose single output is the layer's first output. A weight-free layer gets a
    `Dense` in front of each input (same width), so that the fit step has weights to move and
    proves that gradients flow through the layer."""
    tensors = symbolic_inputs(inputs)
    fronts = []
    x = tensors
    if not layer.weights:
        fronts = [keras.layers.Dense(t.shape[-1], name=f"front_{i}") for i, t in enumerate(tensors)]
        x = [f(t) for f, t in zip(fronts, tensors)]
    out = first_output(layer(*x, **(call_kwargs or {})))
    return keras.Model(tensors if len(tensors) > 1 else tensors[0], out), fronts


def _factory(layer_cls, init_kwargs):
    """A callable with no argument returning a new layer: `layer_cls(**init_kwargs)`, or
    `layer_cls()` itself when `init_kwargs` is None (a class, or a zero-argument factory such as
    `lambda: keras.layers.RNN(STMCell(...))`)."""
    if init_kwargs is None:
        return layer_cls
    return lambda: layer_cls(**copy.deepcopy(init_kwargs))


def run_layer_test(
    layer_cls,
    init_kwargs=None,
    *,
    input_data,
    expected_output_shape,
    expected_output=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    call_kwargs=None,
    run_training_check=True,
    run_mixed_precision_check=True,
    tmp_path,
    static_weights=(),
    mixed_precision_dtypes="bfloat16",
    rtol=1e-5,
    expected_output_rtol=1e-5,
):
    """Run the shared layer checks on one layer configuration, after Keras'
    `keras.src.testing.TestCase.run_layer_test`.

    Args:
        layer_cls: the layer class, built as `layer_cls(**init_kwargs)`; or, with `init_kwargs`
            None, any callable with no argument returning a new, unbuilt layer (e.g.
            `lambda: keras.layers.RNN(STMCell(...))`). It is called several times (fresh
            layers for each check, one under the `mixed_bfloat16` policy).
        init_kwargs: dict of constructor arguments, or None (see `layer_cls`).
        input_data: numpy array, or list of arrays for a layer taking several positional
            inputs (`OuterProductAttention`); the first axis is the batch.
        expected_output_shape: the hand-computed output shape(s) with batch `None`: a tuple, or
            a list of tuples for a layer returning several tensors.
        expected_output: array (or list of arrays, one per output) the eager call on
            `input_data` must give, to `expected_output_rtol`; None skips the comparison.
        expected_num_trainable_weights: number of trainable weights of the built layer, or
            None (not checked).
        expected_num_non_trainable_weights: number of non-trainable weights of the built layer,
            or None (not checked).
        call_kwargs: dict of extra keyword arguments for the layer call.
        run_training_check: bool, run one `fit` step (finite loss, every trainable weight
            moves; `jit_compile=True` on jax and tensorflow, eager on torch).
        run_mixed_precision_check: bool, run the `mixed_bfloat16` checks.
        tmp_path: `pathlib.Path` of a directory where the `.keras` file is written.
        static_weights: substrings of variable paths allowed NOT to change during the fit step
            (weights whose gradient is legitimately zero in that configuration).
        mixed_precision_dtypes: the documented dtype of every output under `mixed_bfloat16`:
            one name for all outputs, or a list with one name per output.
        rtol: tolerance of the comparisons between two evaluations of the same weights.
        expected_output_rtol: tolerance of the comparison with `expected_output`, relative to
            each output's largest entry.

    Returns:
        dict with the float32 `model` (functional; trained one step if `run_training_check`),
        its `layer`, and the eager `outputs` (list of numpy arrays) before training.
    """
    layer_factory = _factory(layer_cls, init_kwargs)
    inputs = as_list(input_data)
    call_kwargs = call_kwargs or {}
    expected = shape_list(expected_output_shape)
    batch = inputs[0].shape[0]

    # 1. config round trip
    check_config_round_trip(layer_factory)

    # 2. symbolic call: shapes == compute_output_shape == the hand-computed ones; weight counts
    layer = layer_factory()
    tensors = symbolic_inputs(inputs)
    symbolic = layer(*tensors, **call_kwargs)
    input_shapes = [tuple(t.shape) for t in tensors]
    assert tensor_shapes(symbolic) == expected, (tensor_shapes(symbolic), expected)
    assert shape_list(layer.compute_output_shape(*input_shapes)) == expected
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, [
            w.path for w in layer.trainable_weights
        ]
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, [
            w.path for w in layer.non_trainable_weights
        ]
    model = keras.Model(tensors if len(tensors) > 1 else tensors[0], symbolic)
    config = layer.get_config()
    assert layer.__class__.from_config(copy.deepcopy(config)).get_config() == config  # built too

    # 3. eager call: finite, concrete shapes, equal to the model's call and compiled predict,
    #    and to `expected_output` when given
    eager = layer(*[ops.convert_to_tensor(x) for x in inputs], **call_kwargs)
    concrete = [(batch,) + s[1:] for s in expected]
    assert tensor_shapes(eager) == concrete
    assert shape_list(layer.compute_output_shape(*[x.shape for x in inputs])) == concrete
    outputs = to_numpy(eager)
    for out in outputs:
        assert np.all(np.isfinite(out))
    if expected_output is not None:
        assert_close(outputs, expected_output, expected_output_rtol, "expected_output")
    assert_close(to_numpy(model(model_inputs(inputs))), outputs, rtol, "model call")
    assert_close(
        to_numpy(model.predict(model_inputs(inputs), batch_size=batch, verbose=0)),
        outputs,
        1e-4,
        "predict",
    )

    # 4. `.keras` save and load (same process): same config, same predictions
    path = pathlib.Path(tmp_path) / f"{layer.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_layer = loaded.get_layer(layer.name)
    assert loaded_layer.__class__ is layer.__class__
    assert as_json(loaded_layer.get_config()) == as_json(layer.get_config())
    assert_close(to_numpy(loaded(model_inputs(inputs))), outputs, rtol, "after load")

    # 5. one fit step: finite loss, every trainable weight moves
    if run_training_check:
        check_training(layer, inputs, call_kwargs, static_weights, outputs[0].shape)

    # 6. mixed_bfloat16: finite outputs of the documented dtype, a fit step runs
    if run_mixed_precision_check:
        check_mixed_precision(
            layer_factory,
            inputs,
            call_kwargs,
            mixed_precision_dtypes,
            len(expected),
            outputs[0].shape,
        )
    return {"model": model, "layer": layer, "outputs": outputs}


def check_training(layer, inputs, call_kwargs, static_weights, target_shape):
    """One `fit` step of a model around the built `layer` (jit on jax and tensorflow, eager on
    torch): finite loss, every trainable weight moves (but those matching `static_weights`)."""
    jit = keras.backend.backend() in JIT_BACKENDS
    train_model, fronts = _training_model(layer, inputs, call_kwargs)
    watched = fronts if fronts else [layer]
    before = {k: v for w in watched for k, v in weight_values(w).items()}
    assert before, "nothing to train"
    target = np.random.default_rng(0).normal(size=target_shape).astype("float32")
    _fit_once(train_model, inputs, target, jit_compile=jit)
    after = {k: v for w in watched for k, v in weight_values(w).items()}
    unchanged = [
        k
        for k in before
        if np.array_equal(before[k], after[k]) and not any(s in k for s in static_weights)
    ]
    assert not unchanged, f"weights not updated by the fit step: {unchanged}"
    for value in after.values():
        assert np.all(np.isfinite(value))


def check_mixed_precision(layer_factory, inputs, call_kwargs, dtypes, num_outputs, target_shape):
    """Under `mixed_bfloat16`: outputs finite with dtypes `dtypes` (symbolic and eager), float32
    variables, one fit step (`jit_compile="auto"`: jit on jax, a graph on tensorflow, eager on
    torch) with a finite loss. The global policy is restored afterwards."""
    if isinstance(dtypes, str):
        dtypes = [dtypes] * num_outputs
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = layer_factory()
        assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"
        model = functional_model(layer, inputs, call_kwargs)
        assert [dtype_name(t) for t in keras.tree.flatten(model.outputs)] == list(dtypes)
        result = model(model_inputs(inputs))
        assert [dtype_name(t) for t in keras.tree.flatten(result)] == list(dtypes)
        for out in to_numpy(result):
            assert np.all(np.isfinite(out.astype("float32")))
        for w in layer.weights:
            assert dtype_name(w) == "float32", w.path
        train_model, _ = _training_model(layer, inputs, call_kwargs)
        target = np.zeros(target_shape, "float32")
        _fit_once(train_model, inputs, target, jit_compile="auto")
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ----------------------------------------------------------------------------------------------
# cross-backend loading


def check_cross_backend(cases, directory, rtol=1e-5, timeout=300):
    """Save one functional model per case; load them all in one subprocess under another backend.

    Args:
        cases: dict `{name: (layer_factory, inputs)}` (inputs as `run_layer_test`'s
            `input_data`).
        directory: `pathlib.Path`, an empty directory for the `.keras` files and numbers.
        rtol: tolerance of the loaded predictions, relative to each output's largest entry.
        timeout: seconds allowed to the subprocess.

    Returns:
        The subprocess' report `{name: max relative difference}`.
    """
    directory = pathlib.Path(directory)
    rng = np.random.default_rng(7)
    for name, (factory, inputs) in cases.items():
        layer = factory()
        model = functional_model(layer, inputs)
        for w in layer.weights:  # non-default values, so that a mis-loaded weight shows
            noise = rng.normal(0.0, 0.1, tuple(w.shape)).astype("float32")
            w.assign(ops.convert_to_numpy(w.value) + noise)
        outputs = to_numpy(model(model_inputs(inputs)))
        model.save(directory / f"{name}.keras")
        arrays = {f"input_{i}": x for i, x in enumerate(as_list(inputs))}
        arrays.update({f"output_{i}": y for i, y in enumerate(outputs)})
        np.savez(directory / f"{name}.npz", **arrays)
    (directory / "cases.json").write_text(json.dumps(sorted(cases)))
    target = other_backend()
    env = dict(os.environ, KERAS_BACKEND=target, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "tests.layer_test_helper", str(directory), str(rtol)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"loading under {target} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    )
    report = json.loads((directory / "report.json").read_text())
    assert report["backend"] == target
    assert sorted(report["differences"]) == sorted(cases)
    return report["differences"]


def _load_and_compare(directory, rtol):
    """Subprocess side of `check_cross_backend`: load the `.keras` files listed in `cases.json`,
    predict on the saved inputs, compare with the saved outputs; write `report.json`."""
    import keras_stm  # noqa: F401  (registers the classes)

    directory = pathlib.Path(directory)
    differences = {}
    failures = []
    for name in json.loads((directory / "cases.json").read_text()):
        path = directory / f"{name}.keras"
        data = np.load(path.with_suffix(".npz"))
        inputs = [
            data[f"input_{i}"] for i in range(sum(k.startswith("input_") for k in data.files))
        ]
        expected = [
            data[f"output_{i}"] for i in range(sum(k.startswith("output_") for k in data.files))
        ]
        model = keras.saving.load_model(path)
        actual = to_numpy(model(model_inputs(inputs)))
        worst = 0.0
        for a, e in zip(actual, expected):
            scale = max(float(np.max(np.abs(e))), 1e-12)
            worst = max(worst, float(np.max(np.abs(a - e))) / scale)
        differences[path.stem] = worst
        if len(actual) != len(expected) or worst > rtol:
            failures.append(f"{path.name}: {len(actual)} outputs, max relative difference {worst}")
    (directory / "report.json").write_text(
        json.dumps({"backend": keras.backend.backend(), "differences": differences})
    )
    if failures:
        raise SystemExit("; ".join(failures))


# ----------------------------------------------------------------------------------------------
# numpy reference of the STM recurrence (spec section 3.4), float64, official names


def official_parameters(cell):
    """`{official name: float64 numpy array}` in the official PyTorch layouts, from a built cell."""
    from keras_stm.weights import official_weight_map

    params = {}
    for name, (variable, transpose) in official_weight_map(cell).items():
        value = np.array(ops.convert_to_numpy(variable.value), dtype="float64")
        params[name] = value.T if transpose else value
    return params


def _linear(params, prefix, x):
    return x @ params[f"{prefix}.weight"].T + params[f"{prefix}.bias"]


def _projector(params, prefix, x):
    if f"{prefix}.fc2h.0.weight" in params:  # linear 3-layer stack, no activation
        return _linear(
            params,
            f"{prefix}.fc3",
            _linear(params, f"{prefix}.fc2h.0", _linear(params, f"{prefix}.fc1", x)),
        )
    return _linear(params, f"{prefix}.fc1", x)


def _layer_norm(x, axes, gamma, beta, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_sam(params, memory, num_queries, normalization="joint", eps=1e-5):
    """SAM(S) with explicit per-query loops: `(B, rows, cols) -> (B, nq, rows, rows)`."""
    nq = num_queries
    p = (
        memory @ params["qkv_projector.0.weight"].T + params["qkv_projector.0.bias"]
    )  # (B, rows, 3nq)
    axes = (1, 2) if normalization == "joint" else (2,)
    p = _layer_norm(p, axes, params["qkv_layernorm.0.weight"], params["qkv_layernorm.0.bias"], eps)
    q, k, v = p[..., :nq], p[..., nq : 2 * nq], p[..., 2 * nq :]  # (B, rows, nq) each
    batch, rows = memory.shape[:2]
    out = np.zeros((batch, nq, rows, rows))
    for i in range(nq):
        for j in range(nq):  # A_i += tanh(q_i * k_j) (outer) v_j
            out[:, i] += np.tanh(q[:, :, i] * k[:, :, j])[:, :, None] * v[:, None, :, j]
    return out


def reference_opa(q, k, v):
    """OPA in float64 numpy: `A[..., i, p, c] = sum_j tanh(q[..., i, p] k[..., j, p]) v[..., j, c]`
    (one product, where `tests/test_layers.brute_force_opa` loops)."""
    q, k, v = (np.asarray(t, dtype="float64") for t in (q, k, v))
    scores = np.tanh(q[..., :, None, :] * k[..., None, :, :])  # [..., i, j, p]
    return np.einsum("...ijp,...jc->...ipc", scores, v)


def reference_sentence_encoder(embeddings, positions, ids):
    """`SentenceEncoder` in float64 numpy: `s = sum_w P[w] E[ids[w]]` over the last axis."""
    embeddings, positions = (np.asarray(t, dtype="float64") for t in (embeddings, positions))
    ids = np.asarray(ids)
    return np.sum(embeddings[ids] * positions[: ids.shape[-1]], axis=-2)


def reference_tpr_inference(weights, query, memory, hops, eps=1e-12):
    """`TPRInference` in float64 numpy, from `{weight name: array}` (the layer's own names):
    `i_k = LN_k(sum_{e,r} i_{k-1}[e] r_k[r] M[r, e, :])` (`i_0` = the entity MLP), logits
    `(i_1 + ... + i_hops) Z`."""
    w = {name: np.asarray(value, dtype="float64") for name, value in weights.items()}

    def mlp(name, x):
        x = np.tanh(x @ w[f"{name}_kernel_1"] + w[f"{name}_bias_1"])
        return np.tanh(x @ w[f"{name}_kernel_2"] + w[f"{name}_bias_2"])

    query = np.asarray(query, dtype="float64")
    memory = np.asarray(memory, dtype="float64")  # [b, r, e, f]
    entity, total = mlp("entity", query), 0.0
    for k in range(1, hops + 1):
        hop = np.einsum("be,br,bref->bf", entity, mlp(f"role_{k}", query), memory)
        hop = _layer_norm(hop, (-1,), w[f"norm_{k}_gamma"], w[f"norm_{k}_beta"], eps)
        total, entity = total + hop, hop
    return total @ w["output_embedding"]


def reference_stm(params, config, inputs, item_memory=None, relational_memory=None, mask=None):
    """The STM recurrence in float64 numpy, one explicit loop over time.

    Args:
        params: `{official name: array}` (e.g. from `official_parameters`); alphas are read from
            `config["alphas"]`, not from `params`.
        config: dict with `num_queries`, `memory_size`, `alphas` (three floats: carry, read,
            transfer), and optionally `gated_write` (True), `sam_steps` (1), `sam_normalization`
            ("joint"), `readout_normalization` (False), `carry_relational_memory` (True),
            `eps` (1e-5).
        inputs: `(B, T, D)` array.
        item_memory, relational_memory: initial memories `(B, d, d)`, `(B, nq, d, d)`; default:
            the learned ones in `params`, else zeros.
        mask: optional boolean `(B, T)`; a masked step keeps both memories, and its output is
            computed from the kept memory (so it repeats the previous output).

    Returns:
        `(outputs (B, T, out), read-outs (B, T, a), Mi_T, Mr_T)`.
    """
    nq, d = config["num_queries"], config["memory_size"]
    a1, a2, a3 = config["alphas"]
    eps = config.get("eps", 1e-5)
    batch, steps = inputs.shape[:2]
    if item_memory is None:
        base = params.get("item_memory_state_bias", np.zeros((d, d)))
        item_memory = np.broadcast_to(base, (batch, d, d))
    if relational_memory is None:
        base = params.get("rel_memory_state_bias", np.zeros((nq, d, d)))
        relational_memory = np.broadcast_to(base, (batch, nq, d, d))
    mi = np.array(item_memory, dtype="float64")
    mr = np.array(relational_memory, dtype="float64")
    outputs, readouts = [], []
    for t in range(steps):
        x = np.asarray(inputs[:, t], dtype="float64")
        u = _projector(params, "input_projector", x)
        written = u[:, :, None] * u[:, None, :]
        if config.get("gated_write", True):
            gates = _linear(params, "input_gate_projector", u)[:, None, :] + _linear(
                params, "memory_gate_projector", np.tanh(mi)
            )
            in_gate = _sigmoid(gates[..., :d] + params["input_bias"])
            forget = _sigmoid(gates[..., d:] + params["forget_bias"])
            new_mi = in_gate * np.tanh(written) + forget * mi
        else:  # (a cell with an additive write has no gate weights)
            new_mi = mi + written
        carry = config.get("carry_relational_memory", True)
        shift = 0.0
        if carry and a2 != 0.0:  # (a cell that never reads Mr has no read / slot projectors)
            w = _projector(params, "input_projector2", x)
            s = _projector(params, "input_projector3", x)
            pi = np.exp(s - s.max(-1, keepdims=True))
            pi /= pi.sum(-1, keepdims=True)
            v = np.einsum("bn,bp,bnpc->bc", pi, w, mr)
            shift = a2 * v[:, :, None] * w[:, None, :]
        new_mr = mr
        for _ in range(config.get("sam_steps", 1)):
            relation = reference_sam(
                params, new_mi + shift, nq, config.get("sam_normalization", "joint"), eps
            )
            flat = relation.transpose(0, 3, 1, 2).reshape(batch, d, nq * d)  # [c, i*d + p]
            if a3 != 0.0:  # (a cell with a transfer fixed at 0 has no transfer weights)
                new_mi = new_mi + a3 * _linear(params, "rel_projector2", flat)
            new_mr = a1 * new_mr + relation if carry else relation
        if mask is not None:  # a masked step keeps both memories
            keep = np.asarray(mask[:, t], bool)
            new_mi = np.where(keep[:, None, None], new_mi, mi)
            new_mr = np.where(keep[:, None, None, None], new_mr, mr)
        mi, mr = new_mi, new_mr
        slots = _linear(params, "rel_projector", mr.reshape(batch, nq, d * d))
        readout = _linear(params, "rel_projector3", slots.reshape(batch, -1))
        if config.get("readout_normalization", False):
            readout = _layer_norm(
                readout, (1,), params["layernorm2.weight"], params["layernorm2.bias"], eps
            )
        out = readout
        if "out.weight" in params:
            h = np.maximum(_linear(params, "mlp.0", readout), 0.0)
            h = np.maximum(_linear(params, "mlp.2", h), 0.0)
            out = _linear(params, "out", h)
        outputs.append(out)
        readouts.append(readout)
    return np.stack(outputs, 1), np.stack(readouts, 1), mi, mr


if __name__ == "__main__":
    _load_and_compare(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1e-5)
