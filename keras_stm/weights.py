"""Load the authors' PyTorch `state_dict` into an `STMCell`."""

import os

import numpy as np

from keras_stm.layers.stm_cell import COEFFICIENTS
from keras_stm.layers.stm_cell import LEARNED

# official alpha name stem -> our coefficient
_ALPHAS = dict(zip(("alpha1", "alpha2", "alpha3"), COEFFICIENTS))
_PROJECTORS = {"input_projector": "write", "input_projector2": "read", "input_projector3": "slot"}


def _to_numpy(name, value):
    """One state_dict value as a numeric numpy array; a ValueError naming the weight if not."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if value is None:
        raise ValueError(f"Weight {name!r} of the state_dict is None, not an array.")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Weight {name!r} of the state_dict is not an array ({error}).") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"Weight {name!r} of the state_dict is not numeric (dtype "
            f"{array.dtype}, value {value!r:.80})."
        )
    return array


def _read_state_dict(state_dict):
    if isinstance(state_dict, (str, os.PathLike)):
        path = os.fspath(state_dict)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No checkpoint file at {path!r}.")
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                f"Reading {path!r} needs PyTorch "
                f'(`pip install "keras-stm[torch]"`); or pass the state_dict '
                "as a mapping of names to numpy arrays."
            ) from error
        try:
            # weights_only: tensors, numbers and containers only; never code pickled in the file.
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip, EOF and OS errors, torch's own RuntimeErrors
            raise ValueError(
                f"Cannot read {path!r} as a PyTorch state_dict ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}). The file is read with "
                "torch.load(weights_only=True): it must be a complete torch.save file of "
                "tensors, numbers and containers (a file that needs code to load is refused; "
                "load it yourself only if you trust it, and pass its state_dict)."
            ) from None
        if (
            isinstance(loaded, dict)
            and "state_dict" in loaded
            and isinstance(loaded["state_dict"], dict)
        ):
            loaded = loaded["state_dict"]
        state_dict = loaded
    if not hasattr(state_dict, "items"):
        raise ValueError(
            f"`state_dict` must be a mapping of names to arrays or a path, got {type(state_dict)}."
        )
    return {str(k): _to_numpy(str(k), v) for k, v in state_dict.items()}


def official_weight_map(cell):
    """Map each official parameter name of the authors' `STM` to `(variable, transpose)`.

    The authors' module creates every parameter whatever its configuration; the cell creates
    none for a path its configuration never runs (e.g. the gates with `gated_write=False`):
    those names are not in the map (`load_official_weights` skips them).

    Args:
        cell: a built `keras_stm.STMCell`.

    Returns:
        dict `{official_name: (keras_variable, transpose)}`; `transpose` is True for linear
        weights (PyTorch stores `(out, in)`, Keras kernels `(in, out)`).
    """
    return {name: entry for name, entry in _official_entries(cell).items() if entry[0] is not None}


def _official_entries(cell):
    """`official_weight_map`, with `(None, transpose)` for each official parameter of a path
    that the cell's configuration never runs (the cell has no weight for it)."""
    mapping = {}

    def linear(prefix, kernel_bias):
        kernel, bias = kernel_bias
        mapping[f"{prefix}.weight"] = (kernel, True)
        mapping[f"{prefix}.bias"] = (bias, False)

    for stem, name in _ALPHAS.items():
        if getattr(cell, name) == LEARNED:
            mapping[f"{stem}0"] = (getattr(cell, f"{name}_weight"), False)
        elif getattr(cell, name) == 0.0:
            # A path fixed off; the authors' RL module (`Mr` not carried) still has its alpha.
            mapping[f"{stem}0"] = (None, False)
    mapping["forget_bias"] = (cell.forget_gate_offset, False)
    mapping["input_bias"] = (cell.input_gate_offset, False)
    if cell.learn_initial_memory:
        mapping["item_memory_state_bias"] = (cell.initial_item_memory, False)
        mapping["rel_memory_state_bias"] = (cell.initial_relational_memory, False)
    sam = cell.self_attentive_memory
    linear("qkv_projector.0", (sam.kernel, sam.bias))
    mapping["qkv_layernorm.0.weight"] = (sam.gamma, False)
    mapping["qkv_layernorm.0.bias"] = (sam.beta, False)
    for official, ours in _PROJECTORS.items():
        layers = getattr(cell, f"{ours}_projector")
        if len(layers) == 1:
            linear(f"{official}.fc1", layers[0])
        else:
            linear(f"{official}.fc1", layers[0])
            linear(f"{official}.fc2h.0", layers[1])
            linear(f"{official}.fc3", layers[2])
    linear("input_gate_projector", (cell.gate_input_kernel, cell.gate_input_bias))
    linear("memory_gate_projector", (cell.gate_memory_kernel, cell.gate_memory_bias))
    linear("rel_projector", (cell.slot_readout_kernel, cell.slot_readout_bias))
    linear("rel_projector2", (cell.transfer_kernel, cell.transfer_bias))
    linear("rel_projector3", (cell.readout_kernel, cell.readout_bias))
    if cell.readout_normalization:
        mapping["layernorm2.weight"] = (cell.readout_gamma, False)
        mapping["layernorm2.bias"] = (cell.readout_beta, False)
    if cell.head_units is not None:
        linear("mlp.0", cell.head_hidden_1)
        linear("mlp.2", cell.head_hidden_2)
        linear("out", cell.head_output)
    return mapping


def _shared_copy_of(name):
    """For `step > 1` the official state_dict repeats the shared SAM weights and alphas under
    index k (`qkv_projector.1.weight`, `alpha11`): return the index-0 name, or None."""
    parts = name.split(".")
    if parts[0] in ("qkv_projector", "qkv_layernorm") and len(parts) == 3 and parts[1].isdigit():
        if parts[1] != "0":
            return f"{parts[0]}.0.{parts[2]}"
    if name[:-1] in _ALPHAS and name[-1].isdigit() and name[-1] != "0":
        return f"{name[:-1]}0"
    return None


def load_official_weights(cell, state_dict):
    """Load the authors' PyTorch STM weights into a built `STMCell` (or the cell of an `STM`).

    Every official parameter is matched by name (see `official_weight_map`), linear weights are
    transposed into Keras kernels, and shapes are checked. Copies that the official module
    repeats for `step > 1` (shared weights) must equal their first copy. Parameters of a path
    that the cell's configuration never runs, for which it has no weight (e.g. the gates with
    `gated_write=False`), are skipped unchecked, present or not.

    Args:
        cell: a built `keras_stm.STMCell`, or a built `keras_stm.STM` layer.
        state_dict: mapping of official names to arrays (numpy or torch tensors), or a path to
            a `.pth` file saved with `torch.save` (needs PyTorch).

    Raises:
        FileNotFoundError: if `state_dict` is a path to no file.
        ValueError: naming every missing, unexpected or mis-shaped weight (only a one-element
            weight may change shape, `(1,)` to `()`); naming a None or non-numeric value; or
            naming a `.pth` file that cannot be read (truncated, not a `torch.save` file, or
            holding pickled code: it is loaded with `torch.load(weights_only=True)`).

    Example:

    >>> import numpy as np, keras_stm
    >>> cell = keras_stm.STMCell(num_queries=2, memory_size=4, relation_size=4,
    ...                          readout_size=4, head_units=3, head_hidden_units=5)
    >>> cell.build((None, 6))
    >>> mapping = keras_stm.weights.official_weight_map(cell)
    >>> state = {k: (np.zeros(v.shape[::-1]) if t else np.zeros(v.shape))
    ...          for k, (v, t) in mapping.items()}
    >>> keras_stm.load_official_weights(cell, state)
    """
    from keras_stm.layers.stm import STM

    if isinstance(cell, STM):
        cell = cell.cell
    if not getattr(cell, "built", False):
        raise ValueError(
            "`cell` must be built before loading weights: call it on data or "
            "`cell.build((None, input_size))`."
        )
    state = _read_state_dict(state_dict)
    entries = _official_entries(cell)  # with the skipped parameters of unused paths
    mapping = official_weight_map(cell)
    problems = []
    extra = []
    for name, value in state.items():
        if name in entries:
            continue
        first = _shared_copy_of(name)
        if first is not None and first in state:
            if first in mapping and not np.array_equal(state[first], value):
                problems.append(
                    f"{name!r} differs from {first!r} (the official module shares them)"
                )
            continue
        extra.append(name)
    missing = sorted(set(mapping) - set(state))
    for name in sorted(set(mapping) & set(state)):
        variable, transpose = mapping[name]
        value = state[name]
        if transpose:
            value = value.T
        expected = tuple(variable.shape)
        if value.shape != expected:
            if int(np.prod(value.shape)) == 1 and int(np.prod(expected)) == 1:
                continue  # (1,) alphas vs our () scalars: the only reshape allowed
            problems.append(
                f"{name!r} has shape {tuple(state[name].shape)}, expected "
                f"{expected[::-1] if transpose else expected}"
            )
    if missing or extra or problems:
        lines = []
        if missing:
            lines.append(f"missing weights: {missing}")
        if extra:
            lines.append(
                f"unexpected weights: {sorted(extra)} (does the cell's configuration match the "
                "checkpoint's, e.g. head_units, projector_hidden_units, fixed coefficients?)"
            )
        lines.extend(problems)
        raise ValueError("Cannot load the official state_dict: " + "; ".join(lines))
    for name, (variable, transpose) in mapping.items():
        value = state[name].T if transpose else state[name]
        variable.assign(np.reshape(value, tuple(variable.shape)).astype(variable.dtype))


def cell_config_from_official(config):
    """Translate the authors' `STM(...)` constructor arguments into `STMCell` arguments.

    Args:
        config: dict with the official names (`num_slot`, `slot_size`, `rel_size`,
            `out_att_size`, `output_size`, `mlp_size`, `step`, `rd`, `init_alphas` or `alphas`,
            `mlp_hid`, `learn_init_mem`); missing keys take the official defaults.

    Returns:
        dict of `STMCell` keyword arguments (the official cell always has its output head, so
        `head_units` is the official `output_size`).

    Example:

    >>> from keras_stm.weights import cell_config_from_official
    >>> cell_config_from_official({"output_size": 10, "num_slot": 2})["num_queries"]
    2
    """
    alphas = config.get("init_alphas", config.get("alphas", [None, None, None]))
    if len(alphas) != 3:
        raise ValueError(f"`alphas` must have 3 entries, got {alphas!r}.")
    if "output_size" not in config:
        raise ValueError("The official config needs `output_size` (the head's output size).")
    hidden = config.get("mlp_hid", -1)
    return {
        "num_queries": int(config.get("num_slot", 8)),
        "memory_size": int(config.get("slot_size", 96)),
        "relation_size": int(config.get("rel_size", 96)),
        "readout_size": int(config.get("out_att_size", 64)),
        "head_units": int(config["output_size"]),
        "head_hidden_units": int(config.get("mlp_size", 128)),
        "gated_write": bool(config.get("rd", True)),
        "sam_steps": int(config.get("step", 1)),
        "relational_carry": LEARNED if alphas[0] is None else float(alphas[0]),
        "relational_read": LEARNED if alphas[1] is None else float(alphas[1]),
        "relational_transfer": LEARNED if alphas[2] is None else float(alphas[2]),
        "projector_hidden_units": int(hidden) if hidden is not None and hidden > 0 else None,
        "learn_initial_memory": bool(config.get("learn_init_mem", True)),
    }
