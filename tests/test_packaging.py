"""Packaging and presentation: metadata in one place, optional imports that name their extra,
plots that never fail a run or switch a user's matplotlib back end, the run's provenance in
`results.json`. (Building and installing the wheel in a fresh environment is
`scripts/check_package.sh`, run by CI after the test suite.)"""

import importlib
import os
import pathlib
import re
import subprocess
import sys
import tomllib
import warnings

import pytest

import keras_stm
from keras_stm.experiments import _optional
from keras_stm.experiments import training
from keras_stm.experiments import visualize

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_metadata_license_and_single_version():
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "keras_stm.__version__"
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+", keras_stm.__version__)
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert any(req.startswith("setuptools>=77") for req in _pyproject()["build-system"]["requires"])
    assert project["authors"] and project["keywords"] and project["classifiers"]
    assert any(c.startswith("License ::") for c in project["classifiers"]) is False  # PEP 639


def test_extras_cover_the_optional_imports():
    extras = _pyproject()["project"]["optional-dependencies"]
    for name in ("jax", "torch", "tensorflow", "experiments", "plots", "tuning", "atari"):
        assert name in extras
    assert extras["experiments"] == ["keras-stm[plots,atari,tuning]"]
    assert "six" in extras["tuning"]  # keras-tuner 1.4.8 imports it without declaring it
    assert any(r.startswith("matplotlib") for r in extras["plots"])
    assert {r.split(">")[0] for r in extras["atari"]} == {"gymnasium", "ale-py"}


def test_changelog_is_keep_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    assert headings[:2] == ["Unreleased", keras_stm.__version__]


def test_require_names_the_extra():
    with pytest.raises(ModuleNotFoundError, match=r'pip install "keras-stm\[plots\]"') as info:
        _optional.require("keras_stm_no_such_module", "plots", "Plotting")
    assert info.value.name == "keras_stm_no_such_module"
    assert _optional.require("json", "plots", "x") is importlib.import_module("json")


def test_missing_matplotlib_names_the_extra_and_never_fails_a_run(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    out = tmp_path / "curve.png"
    history = {"epoch": [0, 1], "loss": [1.0, 0.5]}
    with pytest.raises(ModuleNotFoundError, match=r"keras-stm\[plots\]"):
        visualize.plot_history(history, str(out))
    with pytest.warns(RuntimeWarning, match=r"plot_history skipped: .*keras-stm\[plots\]"):
        assert training.plot_or_warn(visualize.plot_history, history, str(out)) is None
    assert not out.exists()
    assert visualize.read_history  # reading needs no matplotlib


def test_plot_or_warn_passes_other_errors_through(tmp_path):
    def broken(*args):
        raise ModuleNotFoundError("No module named 'something_else'", name="something_else")

    with pytest.raises(ModuleNotFoundError, match="something_else"):
        training.plot_or_warn(broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = str(tmp_path / "c.png")
        assert training.plot_or_warn(visualize.plot_history, {"loss": [1.0, 0.5]}, path) == path


def test_visualize_leaves_pyplot_and_the_backend_alone(monkeypatch, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")

    def forbidden(*args, **kwargs):
        raise AssertionError("keras_stm.experiments.visualize must not call matplotlib.use")

    monkeypatch.setattr(matplotlib, "use", forbidden)
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    figures = sys.modules["matplotlib.pyplot"].get_fignums() if pyplot_loaded else None
    out = visualize.plot_history(
        {"loss": [1.0, 0.5], "val_loss": [1.1, 0.6]}, str(tmp_path / "h.png")
    )
    assert os.path.getsize(out) > 0
    figure = visualize.new_figure(figsize=(2, 2))
    assert type(figure.canvas).__name__ == "FigureCanvasAgg"
    if pyplot_loaded:  # no figure left registered with pyplot
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures
    else:
        assert "matplotlib.pyplot" not in sys.modules


@pytest.mark.parametrize(
    "module, missing, extra",
    [
        ("keras_stm.experiments.tuning", "keras_tuner", "tuning"),
        ("keras_stm.experiments.tuning", "six", "tuning"),
        ("keras_stm.experiments.tasks.atari", "gymnasium", "atari"),
    ],
)
def test_optional_modules_name_their_extra(monkeypatch, module, missing, extra):
    monkeypatch.setitem(sys.modules, missing, None)
    if missing == "six":  # keras_tuner imports six: make it import afresh
        for name in [n for n in sys.modules if n == "keras_tuner" or n.startswith("keras_tuner.")]:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ModuleNotFoundError, match=rf'pip install "keras-stm\[{extra}\]"') as info:
        importlib.import_module(module)
    assert info.value.name == missing


def test_environment_records_version_and_commit(monkeypatch):
    info = training.environment()
    assert info["keras_stm"] == keras_stm.__version__
    package_root = pathlib.Path(keras_stm.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(package_root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        top = subprocess.run(
            ["git", "-C", str(package_root), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = top = None
    if top and pathlib.Path(top).resolve() == package_root:
        assert info["git_commit"] == head and isinstance(info["git_dirty"], bool)
    else:
        assert info["git_commit"] is None and info["git_dirty"] is None

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    info = training.environment()
    assert info["git_commit"] is None and info["git_dirty"] is None
    assert info["keras_stm"] == keras_stm.__version__


class _Terminal:
    def isatty(self):
        return True


def test_progress_verbosity_plain_lines_off_a_terminal(capsys):
    import io

    import keras
    import numpy as np

    assert training.progress_verbosity(_Terminal()) == 1
    assert training.progress_verbosity(io.StringIO()) == 2
    assert training.progress_verbosity(object()) == 2
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    capsys.readouterr()  # (Keras 3.15's verbose=1 writes escape codes here too, off a terminal)
    model.fit(x, y, epochs=2, batch_size=4, verbose=training.progress_verbosity())
    plain = capsys.readouterr().out
    assert "Epoch 2/2" in plain and "loss" in plain
    assert not any(code in plain for code in ("\x1b", "\b", "\r")), repr(plain)


def test_missing_backend_says_how_to_choose_one(tmp_path):
    """`import keras_stm` with Keras' default backend (tensorflow) missing names KERAS_BACKEND."""
    code = "import sys; sys.modules['tensorflow'] = None; import keras_stm"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path)  # no keras.json choosing another backend
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode != 0
    assert (
        "KERAS_BACKEND is not set" in done.stderr and 'pip install "keras-stm[jax]"' in done.stderr
    ), done.stderr[-2000:]
