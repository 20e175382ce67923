"""The package's layout (issue 22): `import keras_stm` is the library alone; the paper's
experiments are `keras_stm.experiments`, imported explicitly; the 0.1.0 paths still import, with
a DeprecationWarning; examples, scripts and benchmarks import the installed package."""

import ast
import importlib
import json
import os
import pathlib
import subprocess
import sys
import tomllib
import warnings

import pytest

import keras_stm
from keras_stm import _moved

ROOT = pathlib.Path(__file__).resolve().parent.parent

EXPERIMENT_MODULES = [
    "keras_stm.experiments.tasks",
    "keras_stm.experiments.models",
    "keras_stm.experiments.training",
    "keras_stm.experiments.visualize",
    "keras_stm.experiments.pretrained",
]

_FRESH_IMPORT = r"""
import json, sys
import keras  # Keras itself imports matplotlib when it is installed (keras.src.visualization)
before = set(sys.modules)
import keras_stm
added = sorted(set(sys.modules) - before)
print(json.dumps({"added": added, "all": sorted(sys.modules), "file": keras_stm.__file__}))
"""


def _run(code, *args):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_keras_stm_loads_the_library_alone():
    report = _run(_FRESH_IMPORT)
    assert pathlib.Path(report["file"]).resolve().parent == ROOT / "keras_stm"
    ours = [name for name in report["added"] if name.split(".")[0] == "keras_stm"]
    assert "keras_stm.layers.stm" in ours and "keras_stm.weights" in ours
    assert not [name for name in ours if name.startswith("keras_stm.experiments")], ours
    for old in _moved.MOVED:  # nor the deprecated aliases
        assert not [name for name in ours if name == old or name.startswith(old + ".")], ours
    for heavy in ("matplotlib", "keras_tuner", "gymnasium", "ale_py", "sklearn"):
        assert not [name for name in report["added"] if name.split(".")[0] == heavy], heavy
    assert "keras_tuner" not in report["all"] and "gymnasium" not in report["all"]


def test_experiments_import_explicitly():
    experiments = importlib.import_module("keras_stm.experiments")
    assert pathlib.Path(experiments.__file__).parent == ROOT / "keras_stm" / "experiments"
    for name in EXPERIMENT_MODULES:
        assert importlib.import_module(name).__name__ == name
    from keras_stm.experiments.models import build_sequence_model

    model = build_sequence_model(
        4, 3, stm_config=dict(num_queries=2, memory_size=8, relation_size=8, readout_size=8)
    )
    assert model.count_params() > 0


def test_old_paths_are_deprecated_aliases_of_the_same_modules():
    code = r"""
import json, sys, warnings
import keras_stm
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import keras_stm.tasks.copy
    from keras_stm import training
    from keras_stm.models import build_sequence_model
import keras_stm.experiments.tasks.copy as copy
import keras_stm.experiments.training as new_training
import keras_stm.experiments.models as models
print(json.dumps({
    "same": [keras_stm.tasks.copy is copy, training is new_training,
             build_sequence_model is models.build_sequence_model,
             sys.modules["keras_stm.tasks.copy"] is copy],
    "spec": copy.__spec__.name,
    "warnings": [(w.category.__name__, str(w.message), w.filename) for w in caught]}))
"""
    report = _run(code)
    assert all(report["same"]), report
    assert report["spec"] == "keras_stm.experiments.tasks.copy"
    messages = [m for category, m, _ in report["warnings"] if category == "DeprecationWarning"]
    for old in (
        "keras_stm.tasks",
        "keras_stm.tasks.copy",
        "keras_stm.training",
        "keras_stm.models",
    ):
        assert any(m.startswith(f"{old} moved to keras_stm.experiments.") for m in messages), old
    assert all(filename == "<string>" for _, _, filename in report["warnings"])  # the importer


def test_registered_names_did_not_move():
    import keras

    from keras_stm.experiments.models import actor_critic
    from keras_stm.experiments.tasks import metrics

    for cls in (
        metrics.BitErrorPerSequence,
        keras_stm.STM,
        keras_stm.STMCell,
        keras_stm.TorchRMSprop,
    ):
        assert keras.saving.get_registered_name(cls) == f"keras_stm>{cls.__name__}"
    classes = [
        value
        for value in vars(actor_critic).values()
        if isinstance(value, type)
        and value.__module__ == actor_critic.__name__
        and issubclass(value, (keras.layers.Layer, keras.Model))
    ]
    assert classes
    for cls in classes:
        assert keras.saving.get_registered_name(cls) == f"keras_stm>{cls.__name__}"


def test_moved_names_map():
    assert _moved.new_name("keras_stm.tasks.geometry") == "keras_stm.experiments.tasks.geometry"
    assert _moved.new_name("keras_stm.training") == "keras_stm.experiments.training"
    assert _moved.new_name("keras_stm.trainingx") is None
    assert _moved.new_name("keras_stm.layers") is None


def test_wheel_finds_the_experiments_subpackage():
    from setuptools import find_packages

    with open(ROOT / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    found = find_packages(str(ROOT), **pyproject["tool"]["setuptools"]["packages"]["find"])
    for package in (
        "keras_stm",
        "keras_stm.layers",
        "keras_stm.experiments",
        "keras_stm.experiments.tasks",
        "keras_stm.experiments.models",
    ):
        assert package in found, found
    folders = {
        str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
        for p in (ROOT / "keras_stm").rglob("*.py")
    }
    assert folders <= set(found), folders - set(found)  # every folder of modules is a package
    extras = pyproject["project"]["optional-dependencies"]
    assert set(extras["experiments"]) == {"keras-stm[plots,atari,tuning]"}
    for backend in ("jax", "torch", "tensorflow"):
        assert backend in extras


def _script_files():
    for folder in ("examples", "scripts", "benchmarks", "docs/images"):
        yield from sorted((ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("path", list(_script_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_import_the_installed_package(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            raise AssertionError(f"{path.name}:{node.lineno} uses sys.path")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
            )
            for name in names:
                assert _moved.new_name(name) is None, f"{path.name}:{node.lineno} imports {name}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SyntaxWarning)
        compile(path.read_text(), str(path), "exec")
