"""Plots: learning curves, run comparisons, and the memories and attention of a trained STM.

Two kinds of figures:

* from files: `plot_history` (a run's `history.csv`), `plot_results` (several runs'
  `results.json`, side by side);
* from a model: `trace_memories` runs a trained STM over a sequence one step at a time and
  records its item memory, relational memory and the OPA scores `tanh(q_i ⊙ k_j)` of every step;
  `plot_item_memory`, `plot_relational_memory` and `plot_attention` draw that trace.

Everything writes a PNG through matplotlib's object API (`matplotlib.figure.Figure` drawn on an
Agg canvas): no display is needed, and pyplot's global state and back end, which a user's own
code may rely on, are left alone. Plotting needs matplotlib (`pip install "keras-stm[plots]"`;
without it the plot functions raise a ModuleNotFoundError saying so); `read_history`,
`read_results` and `trace_memories` do not. The model computations use `keras.ops` only, so
tracing works under jax, torch and tensorflow.
"""

import csv
import json
import os

import numpy as np


def new_figure(**kwargs):
    """A new `matplotlib.figure.Figure` on its own Agg canvas (no pyplot, no global back end).

    The figure is not registered with pyplot, so it needs no closing; `figure.savefig(path)`
    writes it.

    Args:
        **kwargs: arguments of `matplotlib.figure.Figure` (`figsize`, `layout`, ...).

    Returns:
        The `Figure`.

    Raises:
        ModuleNotFoundError: without matplotlib, naming the `plots` extra.

    Example:

    >>> import os, tempfile
    >>> from keras_stm.experiments import visualize
    >>> figure = visualize.new_figure(figsize=(3, 2))
    >>> _ = figure.subplots().plot([0, 1], [1, 0])
    >>> figure.savefig(os.path.join(tempfile.mkdtemp(), "line.png"))
    """
    from keras_stm.experiments._optional import require

    require("matplotlib", "plots", "Plotting (keras_stm.experiments.visualize)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


# ---------------------------------------------------------------------------- learning curves
def read_history(path):
    """Read a Keras `CSVLogger` file into `{column: [values]}` (numbers as floats).

    Args:
        path: str, the CSV file written by `keras.callbacks.CSVLogger`.

    Returns:
        dict mapping every column name to its list of float values (non-numeric cells, and
        cells of a row longer than the header, skipped).

    Raises:
        FileNotFoundError: if `path` does not exist.

    Example:

    >>> import tempfile, os
    >>> from keras_stm.experiments import visualize
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> _ = open(path, "w").write("epoch,loss\\n0,1.5\\n1,0.5\\n")
    >>> visualize.read_history(path)["loss"]
    [1.5, 0.5]
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"No history file at {path!r}.")
    columns = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key is None:
                    continue  # cells past the header (a session that logged more columns)
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    continue
    return columns


def plot_history(history, path, title=None, metrics=None):
    """Plot every metric of a training history (one panel per metric, train and validation).

    Args:
        history: a `CSVLogger` file path or a `{name: [values]}` dict.
        path: str, the PNG to write.
        title: optional figure title.
        metrics: optional list of metric names to plot (default: all but `epoch`,
            `learning_rate` and `epoch_seconds`).

    Returns:
        The path written.

    Example:

    >>> import tempfile, os
    >>> from keras_stm.experiments import visualize
    >>> out = os.path.join(tempfile.mkdtemp(), "curve.png")
    >>> visualize.plot_history({"epoch": [0, 1], "loss": [1.0, 0.5]}, out) == out
    True
    """
    columns = read_history(history) if isinstance(history, (str, os.PathLike)) else dict(history)
    names = metrics or [
        k
        for k in columns
        if k not in ("epoch", "learning_rate", "epoch_seconds") and not k.startswith("val_")
    ]
    names = [n for n in names if n in columns] or ["loss"]
    fig = new_figure(figsize=(4.5 * len(names), 3.4))
    axes = fig.subplots(1, len(names), squeeze=False)
    steps = list(range(1, 1 + max((len(v) for v in columns.values()), default=0)))
    for ax, name in zip(axes[0], names):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in columns and columns[key]:
                ax.plot(
                    steps[: len(columns[key])], columns[key], marker="o", markersize=2, label=label
                )
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------- run comparison
def _load_results(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No results file at {path!r}.")
    try:
        with open(path) as f:
            results = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"Results file {path!r} is not valid JSON: {error}") from error
    if not isinstance(results, dict):
        raise ValueError(
            f"Results file {path!r} must hold a JSON object, got {type(results).__name__}."
        )
    return results


def _run_label(results, path):
    """`task / model / backend (folder)` for a run, from whatever of those the file records."""
    parts = [str(results[k]) for k in ("task", "model") if k in results]
    environment = results.get("environment")
    if isinstance(environment, dict) and environment.get("backend"):
        parts.append(str(environment["backend"]))
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    folder = os.path.basename(folder)
    if name.endswith(".results.json"):  # runs collected into one folder: name the file
        folder = name[: -len(".results.json")]
    if not parts:
        return folder or os.fspath(path)
    return " / ".join(parts) + (f" ({folder})" if folder else "")


def _history_beside(path):
    """The `history.csv` of a results file: `<run>.history.csv` or the folder's `history.csv`."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    if name.endswith(".results.json"):
        named = os.path.join(folder, name[: -len(".results.json")] + ".history.csv")
        if os.path.exists(named):
            return named
    return os.path.join(folder, "history.csv")


def read_results(results_json_paths, metric=None):
    """Collect the test metric and learning curve of several runs (the data of `plot_results`).

    Each path is a `results.json` written by `keras_stm.experiments.training.run`; its run's
    learning curve
    is read from the `history.csv` in the same folder, or, for a file named `<run>.results.json`
    (runs collected into one folder), from `<run>.history.csv` beside it, when there is one.

    Args:
        results_json_paths: list of paths to `results.json` files (at least one).
        metric: str or None, the name of the test metric to compare (a key of the files'
            `"test"` object). None (default): the runs' `"paper_metric"` when they all have it in
            `"test"`, else the first `"test"` key common to all runs.

    Returns:
        dict with `"metric"` (the name used, or None if the runs share no test metric) and
        `"runs"`: one dict per path, in order, with `"path"`, `"label"`, `"value"` (float or
        None), `"iterations"` (list: the training iteration at the end of each epoch, or empty)
        and `"loss"` (the training loss at those points, or empty).

    Raises:
        FileNotFoundError: if a results file is missing.
        ValueError: if the list is empty, a file is not a JSON object, or `metric` is given and
            missing from a run's `"test"`.

    Example:

    >>> import json, os, tempfile
    >>> from keras_stm.experiments import visualize
    >>> path = os.path.join(tempfile.mkdtemp(), "results.json")
    >>> json.dump({"task": "copy", "model": "stm", "test": {"loss": 0.1}}, open(path, "w"))
    >>> visualize.read_results([path])["runs"][0]["value"]
    0.1
    """
    if isinstance(results_json_paths, (str, os.PathLike)):
        results_json_paths = [results_json_paths]
    paths = list(results_json_paths)
    if not paths:
        raise ValueError("`results_json_paths` must name at least one results.json file.")
    loaded = [_load_results(p) for p in paths]
    tests = [r.get("test") if isinstance(r.get("test"), dict) else {} for r in loaded]
    if metric is None:
        paper = {r.get("paper_metric") for r in loaded}
        if len(paper) == 1 and None not in paper and all(next(iter(paper)) in t for t in tests):
            metric = next(iter(paper))
        else:
            common = [k for k in tests[0] if all(k in t for t in tests[1:])]
            metric = common[0] if common else None
    else:
        for p, t in zip(paths, tests):
            if metric not in t:
                raise ValueError(
                    f"`metric` {metric!r} is not in the test results of {os.fspath(p)!r} "
                    f"(it has {sorted(t)})."
                )
    runs = []
    for p, results, test in zip(paths, loaded, tests):
        history_path = _history_beside(p)
        iterations, loss = [], []
        if os.path.exists(history_path):
            history = read_history(history_path)
            loss = history.get("loss", [])
            flags = results.get("flags") if isinstance(results.get("flags"), dict) else {}
            per_epoch = flags.get("steps_per_epoch") or 1
            iterations = [per_epoch * (i + 1) for i in range(len(loss))]
        value = test.get(metric) if metric is not None else None
        runs.append(
            {
                "path": os.fspath(p),
                "label": _run_label(results, p),
                "value": None if value is None else float(value),
                "iterations": iterations,
                "loss": loss,
            }
        )
    return {"metric": metric, "runs": runs}


def plot_results(results_json_paths, path, metric=None, title=None):
    """Compare runs: their training-loss curves and a bar chart of one test metric.

    Args:
        results_json_paths: list of `results.json` paths (see `read_results`).
        path: str, the PNG to write.
        metric: str or None, the test metric to compare (see `read_results` for the default).
        title: optional figure title.

    Returns:
        The path written.

    Raises:
        FileNotFoundError, ValueError: as `read_results`.

    Example:

    >>> import json, os, tempfile
    >>> from keras_stm.experiments import visualize
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "results.json")
    >>> json.dump({"task": "copy", "model": "stm", "test": {"loss": 0.1}}, open(path, "w"))
    >>> out = os.path.join(folder, "compare.png")
    >>> visualize.plot_results([path], out) == out
    True
    """
    table = read_results(results_json_paths, metric)
    runs = table["runs"]
    fig = new_figure(figsize=(11, 3.8))
    curves, bars = fig.subplots(1, 2)
    for run in runs:
        if run["loss"]:
            curves.plot(run["iterations"], run["loss"], label=run["label"])
    curves.set_xlabel("training iterations")
    curves.set_ylabel("training loss")
    curves.set_title("learning curves")
    curves.grid(alpha=0.3)
    if any(run["loss"] for run in runs):
        curves.legend(fontsize=7)
    else:
        curves.text(
            0.5, 0.5, "no history.csv", ha="center", va="center", transform=curves.transAxes
        )
    values = [np.nan if run["value"] is None else run["value"] for run in runs]
    positions = np.arange(len(runs))
    bars.bar(positions, values, color=[f"C{i % 10}" for i in range(len(runs))])
    for x, value in zip(positions, values):
        if np.isfinite(value):
            bars.annotate(f"{value:.4g}", (x, value), ha="center", va="bottom", fontsize=8)
    bars.set_xticks(positions)
    bars.set_xticklabels([run["label"] for run in runs], rotation=20, ha="right", fontsize=7)
    bars.set_title(f"test {table['metric']}" if table["metric"] else "no common test metric")
    bars.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


# ---------------------------------------------------------------------------- memory traces
def _find_cell(model):
    """Returns `(cell, feature_fn)`: the STMCell and a function mapping inputs to its inputs."""
    import keras

    from keras_stm.layers.stm import STM
    from keras_stm.layers.stm import stm_layers
    from keras_stm.layers.stm_cell import STMCell

    if isinstance(model, STMCell):
        return model, None
    if isinstance(model, STM):
        return model.cell, None
    if isinstance(model, keras.Model):
        found = stm_layers(model)
        if len(found) != 1:
            raise ValueError(
                f"`model` must contain exactly one keras_stm.STM layer, found {len(found)}."
            )
        layer = found[0]
        inputs = model.inputs
        if len(inputs) == 1 and layer.input is inputs[0]:
            return layer.cell, None
        try:
            features = keras.Model(inputs[0] if len(inputs) == 1 else inputs, layer.input)
        except Exception as error:
            raise ValueError(
                "Cannot compute the STM layer's input from `model`'s inputs (is it a functional "
                f"model?): {error}"
            ) from error
        return layer.cell, lambda x: features(x, training=False)
    raise ValueError(
        f"`model` must be a keras_stm.STMCell, a keras_stm.STM layer or a keras.Model containing "
        f"one, got {type(model).__name__}."
    )


def trace_memories(model, sequence):
    """Run a trained STM over a sequence one step at a time and record its memories and OPA.

    The step is the cell's own (`STMCell.update_memories`, then `read_out` and `head`), from the
    cell's initial state (the learned initial memories when it has them). For every step the
    input `S` of the SAM operator (`STMCell.update_memories(..., return_sam_inputs=True)`), its
    queries, keys and
    values (`SelfAttentiveMemory.queries_keys_values`) and the OPA scores
    (`SelfAttentiveMemory(S, return_attention_scores=True)`) are recorded: `tanh(q_i ⊙ k_j)`
    (the weights of `v_j` in `SAM(S)_i = sum_j tanh(q_i ⊙ k_j) ⊗ v_j`). With `sam_steps > 1`
    the last SAM iteration of each step is recorded.

    Args:
        model: a built `keras_stm.STMCell` or `keras_stm.STM` layer, or a `keras.Model` holding
            exactly one `STM` layer (e.g. from
            `keras_stm.experiments.models.build_sequence_model`); layers
            before it (an embedding) are applied first.
        sequence: array. For a cell or STM layer: `(T, input_size)` or
            `(batch, T, input_size)`. For a model: one batch of the model's input
            (e.g. `(batch, T, input_size)`, or token ids `(batch, T)`).

    Returns:
        dict of numpy arrays, `B` = batch, `T` = steps, `d` = memory size, `nq` = queries:
        `"item_memory"` `(B, T, d, d)` (Mi after each step), `"relational_memory"`
        `(B, T, nq, d, d)` (Mr after each step, `[i, p, c]` = slot i), `"initial_item_memory"`
        `(B, d, d)`, `"initial_relational_memory"` `(B, nq, d, d)`, `"sam_input"` `(B, T, d, d)`,
        `"queries"`, `"keys"`, `"values"` `(B, T, nq, d)`, `"attention"` `(B, T, nq, nq, d)` with
        `attention[b, t, i, j, p] = tanh(q_i[p] k_j[p])`, and `"outputs"` `(B, T, output_size)`
        (the cell's per-step output: logits when it has a head).

    Raises:
        ValueError: if `model` holds no (or several) STM layers, the cell is not built, or the
            sequence has the wrong rank or width.

    Example:

    >>> import numpy as np, keras_stm
    >>> from keras_stm.experiments import visualize
    >>> stm = keras_stm.STM(num_queries=2, memory_size=4, relation_size=4, readout_size=4)
    >>> _ = stm(np.zeros((1, 3, 5), "float32"))
    >>> trace = visualize.trace_memories(stm, np.ones((3, 5), "float32"))
    >>> trace["relational_memory"].shape, trace["attention"].shape
    ((1, 3, 2, 4, 4), (1, 3, 2, 2, 4))
    """
    from keras import ops

    cell, features = _find_cell(model)
    if not getattr(cell, "built", False):
        raise ValueError("The STM cell must be built (call the model or layer on data first).")
    if features is not None:
        sequence = features(np.asarray(sequence))
    sequence = ops.convert_to_tensor(sequence, dtype=cell.compute_dtype)
    if len(sequence.shape) == 2:
        sequence = ops.expand_dims(sequence, 0)
    if len(sequence.shape) != 3:
        raise ValueError(
            f"`sequence` must be (T, input_size) or (batch, T, input_size), got shape "
            f"{tuple(sequence.shape)}."
        )
    if sequence.shape[-1] != cell.input_size:
        raise ValueError(
            f"`sequence` has {sequence.shape[-1]} features per step; the cell expects "
            f"{cell.input_size}."
        )
    batch, steps = int(sequence.shape[0]), int(sequence.shape[1])
    state = cell.get_initial_state(batch_size=batch)
    item, relational = cell.unflatten_memories(state[1], state[2])
    record = {
        name: []
        for name in (
            "item_memory",
            "relational_memory",
            "sam_input",
            "queries",
            "keys",
            "values",
            "attention",
            "outputs",
        )
    }
    initial_item, initial_relational = item, relational
    sam = cell.self_attentive_memory
    for t in range(steps):
        item, relational, sam_inputs = cell.update_memories(
            sequence[:, t], item, relational, return_sam_inputs=True
        )
        record["item_memory"].append(item)
        record["relational_memory"].append(relational)
        record["outputs"].append(cell.head(cell.read_out(relational)))
        sam_input = sam_inputs[-1]  # the last SAM iteration of the step
        query, key, value = sam.queries_keys_values(sam_input)
        _, attention = sam(sam_input, return_attention_scores=True)  # [b, i, j, p]
        record["sam_input"].append(sam_input)
        record["queries"].append(query)
        record["keys"].append(key)
        record["values"].append(value)
        record["attention"].append(attention)
    trace = {
        name: np.stack([np.asarray(ops.convert_to_numpy(v)) for v in values], axis=1)
        for name, values in record.items()
    }
    trace["initial_item_memory"] = np.asarray(ops.convert_to_numpy(initial_item))
    trace["initial_relational_memory"] = np.asarray(ops.convert_to_numpy(initial_relational))
    return trace


def _check_trace(trace, keys, example):
    if not isinstance(trace, dict) or any(k not in trace for k in keys):
        raise ValueError(
            f"`trace` must be the dict returned by `trace_memories` (with keys {list(keys)})."
        )
    batch = trace[keys[0]].shape[0]
    if (
        isinstance(example, bool)
        or not isinstance(example, (int, np.integer))
        or not -batch <= example < batch
    ):
        raise ValueError(
            f"`example` must be an index into the trace's batch of {batch}, got {example!r}."
        )
    return int(example) % batch


def _check_steps(steps, total):
    if steps is None:
        return list(range(total))
    chosen = list(steps)
    if not chosen or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not -total <= s < total
        for s in chosen
    ):
        raise ValueError(
            f"`steps` must be a non-empty list of step indices in [0, {total}), got {steps!r}."
        )
    return [int(s) % total for s in chosen]


def _symmetric_limit(values):
    limit = float(np.max(np.abs(values))) if np.size(values) else 1.0
    return limit if limit > 0 else 1.0


def plot_item_memory(trace, path, example=0, steps=None, title=None):
    """Draw the item memory `Mi` (d x d) after each step of a trace, one panel per step.

    The first panel is the initial memory (learned, or zeros); all panels share one colour
    scale, symmetric about 0 (red positive, blue negative).

    Args:
        trace: the dict returned by `trace_memories`.
        path: str, the PNG to write.
        example: int, which sequence of the traced batch. Defaults to 0.
        steps: optional list of step indices to draw (default: every step).
        title: optional figure title.

    Returns:
        The path written.

    Raises:
        ValueError: on a trace without item memories, or a bad `example` / `steps`.

    Example:

    >>> import os, tempfile, numpy as np, keras_stm
    >>> from keras_stm.experiments import visualize
    >>> stm = keras_stm.STM(num_queries=2, memory_size=4, relation_size=4, readout_size=4)
    >>> _ = stm(np.zeros((1, 3, 5), "float32"))
    >>> trace = visualize.trace_memories(stm, np.ones((1, 3, 5), "float32"))
    >>> out = os.path.join(tempfile.mkdtemp(), "mi.png")
    >>> visualize.plot_item_memory(trace, out) == out
    True
    """
    b = _check_trace(trace, ("item_memory", "initial_item_memory"), example)
    memories = trace["item_memory"][b]
    chosen = _check_steps(steps, memories.shape[0])
    panels = [("initial", trace["initial_item_memory"][b])] + [
        (f"after step {t + 1}", memories[t]) for t in chosen
    ]
    limit = _symmetric_limit(np.stack([p for _, p in panels]))
    cols = len(panels)
    fig = new_figure(figsize=(1.9 * cols + 0.8, 2.5), layout="constrained")
    axes = fig.subplots(1, cols, squeeze=False)
    image = None
    for ax, (name, panel) in zip(axes[0], panels):
        image = ax.imshow(panel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title or "item memory Mi", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_relational_memory(trace, path, example=0, steps=None, title=None):
    """Draw the relational memory `Mr` of a trace: one row per step, one column per slot.

    Slot `i` is the d x d matrix `SAM(...)_i` (plus the carried memory when the carry
    coefficient is non-zero): rows index the query/key feature `p`, columns the value feature
    `c`. One colour scale, symmetric about 0, for the whole figure.

    Args:
        trace: the dict returned by `trace_memories`.
        path: str, the PNG to write.
        example: int, which sequence of the traced batch. Defaults to 0.
        steps: optional list of step indices (default: every step).
        title: optional figure title.

    Returns:
        The path written.

    Raises:
        ValueError: on a trace without relational memories, or a bad `example` / `steps`.

    Example:

    >>> import os, tempfile, numpy as np, keras_stm
    >>> from keras_stm.experiments import visualize
    >>> stm = keras_stm.STM(num_queries=2, memory_size=4, relation_size=4, readout_size=4)
    >>> _ = stm(np.zeros((1, 3, 5), "float32"))
    >>> trace = visualize.trace_memories(stm, np.ones((1, 3, 5), "float32"))
    >>> out = os.path.join(tempfile.mkdtemp(), "mr.png")
    >>> visualize.plot_relational_memory(trace, out) == out
    True
    """
    b = _check_trace(trace, ("relational_memory",), example)
    memories = trace["relational_memory"][b]
    chosen = _check_steps(steps, memories.shape[0])
    slots = memories.shape[1]
    limit = _symmetric_limit(memories[chosen])
    fig = new_figure(figsize=(1.7 * slots + 1.0, 1.7 * len(chosen) + 0.6), layout="constrained")
    axes = fig.subplots(len(chosen), slots, squeeze=False)
    image = None
    for row, t in enumerate(chosen):
        for i in range(slots):
            ax = axes[row, i]
            image = ax.imshow(memories[t, i], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"slot {i + 1}", fontsize=8)
            if i == 0:
                ax.set_ylabel(f"step {t + 1}", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    fig.suptitle(title or "relational memory Mr", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_attention(trace, path, example=0, steps=None, title=None):
    """Draw the OPA scores `tanh(q_i ⊙ k_j)` of a trace, one column per step.

    Top row: the score of query `i` (rows) for key `j` (columns), averaged over the feature
    axis `p`: an nq x nq summary of which keys each query draws on (numbered from 1, like the
    slots of `plot_relational_memory`: query `i` builds slot `i`). Bottom row: every score,
    query-key pair `(i, j)` as a row (ordered i-major) and feature `p` as a column, i.e. the
    weights with which each feature of `v_j` enters slot `i` of the relational memory.
    Scores lie in [-1, 1]; red positive, blue negative.

    Args:
        trace: the dict returned by `trace_memories`.
        path: str, the PNG to write.
        example: int, which sequence of the traced batch. Defaults to 0.
        steps: optional list of step indices (default: every step).
        title: optional figure title.

    Returns:
        The path written.

    Raises:
        ValueError: on a trace without attention scores, or a bad `example` / `steps`.

    Example:

    >>> import os, tempfile, numpy as np, keras_stm
    >>> from keras_stm.experiments import visualize
    >>> stm = keras_stm.STM(num_queries=2, memory_size=4, relation_size=4, readout_size=4)
    >>> _ = stm(np.zeros((1, 3, 5), "float32"))
    >>> trace = visualize.trace_memories(stm, np.ones((1, 3, 5), "float32"))
    >>> out = os.path.join(tempfile.mkdtemp(), "opa.png")
    >>> visualize.plot_attention(trace, out) == out
    True
    """
    b = _check_trace(trace, ("attention",), example)
    scores = trace["attention"][b]  # (T, nq, nq, d)
    chosen = _check_steps(steps, scores.shape[0])
    nq, d = scores.shape[1], scores.shape[3]
    cols = len(chosen)
    fig = new_figure(figsize=(1.9 * cols + 1.0, 4.6), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False, gridspec_kw={"height_ratios": [1, 1.6]})
    image = None
    for col, t in enumerate(chosen):
        top, bottom = axes[0, col], axes[1, col]
        image = top.imshow(scores[t].mean(axis=-1), cmap="RdBu_r", vmin=-1, vmax=1)
        top.set_title(f"step {t + 1}", fontsize=8)
        top.set_xticks(range(nq), [str(k + 1) for k in range(nq)])  # 1-based, as the slots
        top.set_yticks(range(nq), [str(k + 1) for k in range(nq)])
        top.tick_params(labelsize=6)
        bottom.imshow(scores[t].reshape(nq * nq, d), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        bottom.set_xticks([])
        bottom.set_yticks([])
        if col == 0:
            top.set_ylabel("query i\n(mean over p)", fontsize=7)
            top.set_xlabel("key j", fontsize=7)
            bottom.set_ylabel("pair (i, j)", fontsize=7)
            bottom.set_xlabel("feature p", fontsize=7)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    fig.suptitle(title or "OPA scores tanh(q_i ⊙ k_j)", fontsize=10)
    fig.savefig(path, dpi=110)
    return path
