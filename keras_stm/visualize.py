"""Plots: learning curves from results files (memory plots are added by the visualisation work)."""

import csv
import os


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_history(path):
    """Read a Keras `CSVLogger` file into `{column: [values]}` (numbers as floats)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No history file at {path!r}.")
    columns = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
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
        metrics: optional list of metric names to plot (default: all but `epoch`).

    Returns:
        The path written.

    Example:

    >>> import tempfile, os
    >>> from keras_stm import visualize
    >>> out = os.path.join(tempfile.mkdtemp(), "curve.png")
    >>> visualize.plot_history({"epoch": [0, 1], "loss": [1.0, 0.5]}, out) == out
    True
    """
    columns = read_history(history) if isinstance(history, (str, os.PathLike)) else dict(history)
    names = metrics or [k for k in columns if k != "epoch" and not k.startswith("val_")]
    names = [n for n in names if n in columns and n not in ("learning_rate",)] or ["loss"]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.4), squeeze=False)
    steps = list(range(1, 1 + max((len(v) for v in columns.values()), default=0)))
    for ax, name in zip(axes[0], names):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in columns and columns[key]:
                ax.plot(steps[: len(columns[key])], columns[key], marker="o", markersize=2, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
