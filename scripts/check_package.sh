#!/usr/bin/env bash
# The package as a user gets it: build the wheel and the sdist, install the wheel with the [jax]
# extra alone in a fresh virtual environment, and with KERAS_BACKEND=jax import keras_stm (the
# library alone), train a small STM for one step, save it as .keras and load it back, import
# keras_stm.experiments; then add [tuning] and import keras_stm.experiments.tuning. Needs only
# the package index pip is configured with (versions pinned by requirements/ci.txt, used as
# constraints). About 2-3 minutes on 2 cores with a warm pip cache.
# Usage: scripts/check_package.sh [PYTHON]    (default python3; CI passes .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${1:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export KERAS_HOME="$work/keras-home"  # a fresh Keras config: no keras.json choosing a backend
pip_quiet=(-q --disable-pip-version-check)
step() { echo "=== check_package: $*"; }

step "build the sdist and the wheel (python -m build)"
"$python" -m venv "$work/build-env"
"$work/build-env/bin/python" -m pip install "${pip_quiet[@]}" build
"$work/build-env/bin/python" -m build --outdir "$work/dist" "$root" > "$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/keras_stm-*.whl)
sdist=$(ls "$work"/dist/keras_stm-*.tar.gz)
echo "$(basename "$wheel") $(basename "$sdist")"

step "the sdist: library, README, LICENSE; no tests (they need the repository)"
listing=$(tar tzf "$sdist")
for needed in LICENSE README.md pyproject.toml keras_stm/__init__.py keras_stm/layers/stm.py \
    keras_stm/experiments/__init__.py keras_stm/experiments/tasks/copy.py keras_stm/experiments/training.py; do
  grep -q "^keras_stm-[^/]*/$needed\$" <<< "$listing" || { echo "sdist lacks $needed"; exit 1; }
done
if grep -q "/tests/" <<< "$listing"; then echo "sdist carries tests/"; exit 1; fi

step "the wheel's metadata: license expression, license file, the version of keras_stm.__version__"
"$work/build-env/bin/python" - "$wheel" "$root" <<'PY'
import re, sys, zipfile
wheel, root = sys.argv[1], sys.argv[2]
names = zipfile.ZipFile(wheel).namelist()
meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
version = re.search(r'^__version__ = "([^"]+)"', open(f"{root}/keras_stm/__init__.py").read(), re.M).group(1)
assert f"\nVersion: {version}\n" in meta, "wheel version differs from keras_stm.__version__"
assert "\nLicense-Expression: MIT\n" in meta and any(n.endswith("licenses/LICENSE") for n in names)
assert not any(n.startswith("tests/") for n in names)
for module in ("keras_stm/experiments/__init__.py", "keras_stm/experiments/tasks/__init__.py",
               "keras_stm/experiments/models/__init__.py", "keras_stm/experiments/training.py",
               "keras_stm/experiments/pretrained.py", "keras_stm/_moved.py"):
    assert module in names, f"the wheel lacks {module}"
for extra in ("jax", "torch", "tensorflow", "experiments", "tuning", "plots"):
    assert f"\nProvides-Extra: {extra}\n" in meta, extra
print("ok:", version)
PY

step "a fresh environment with keras-stm[jax] only"
"$python" -m venv "$work/env"
py="$work/env/bin/python"
"$py" -m pip install "${pip_quiet[@]}" -c requirements/ci.txt "$wheel[jax]"
cd "$work"  # away from the checkout: keras_stm comes from the installed wheel
"$py" - <<'PY'
import importlib.util
for name in ("tensorflow", "torch", "matplotlib", "keras_tuner"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed; the check needs [jax] alone"
PY

step "without KERAS_BACKEND: Keras' default (tensorflow) is missing, and the error says what to do"
if env -u KERAS_BACKEND "$py" -c "import keras_stm" > "$work/no-backend.log" 2>&1; then
  echo "import keras_stm worked without a backend"; exit 1
fi
grep -q "KERAS_BACKEND is not set" "$work/no-backend.log" && grep -q 'pip install "keras-stm\[jax\]"' "$work/no-backend.log" \
  || { cat "$work/no-backend.log"; exit 1; }
tail -1 "$work/no-backend.log"

step "KERAS_BACKEND=jax: import, train one step, save and load .keras, optional parts"
KERAS_BACKEND=jax "$py" - <<'PY'
import os, tempfile, warnings
import numpy as np
import keras
import sys
import keras_stm
assert not [m for m in sys.modules if m.startswith("keras_stm.experiments")], "import keras_stm loaded the experiments"
from keras_stm.experiments import training, visualize

assert keras.backend.backend() == "jax"
assert "site-packages" in keras_stm.__file__, keras_stm.__file__
x = np.random.default_rng(0).random((4, 5, 6), dtype=np.float32)
y = np.random.default_rng(1).random((4, 3), dtype=np.float32)
model = keras.Sequential([keras.Input((None, 6)),
                          keras_stm.STM(num_queries=2, memory_size=8, relation_size=8,
                                        readout_size=8, head_units=3)])
model.compile(optimizer="adam", loss="mse")
loss = float(model.train_on_batch(x, y))
assert np.isfinite(loss)
path = os.path.join(tempfile.mkdtemp(), "stm.keras")
model.save(path)
again = keras.models.load_model(path)
np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
environment = training.environment()
assert environment["keras_stm"] == keras_stm.__version__ and environment["git_commit"] is None
# Without matplotlib: plotting names the extra, and a run's plot is skipped with a warning.
try:
    visualize.plot_history({"loss": [1.0]}, os.path.join(tempfile.mkdtemp(), "c.png"))
    raise AssertionError("plot_history worked without matplotlib")
except ModuleNotFoundError as error:
    assert 'pip install "keras-stm[plots]"' in str(error), error
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert training.plot_or_warn(visualize.plot_history, {"loss": [1.0]}, "c.png") is None
assert any("keras-stm[plots]" in str(w.message) for w in caught)
try:
    import keras_stm.experiments.tuning  # noqa: F401
    raise AssertionError("keras_stm.experiments.tuning imported without keras-tuner")
except ModuleNotFoundError as error:
    assert 'pip install "keras-stm[tuning]"' in str(error), error
print(f"ok: keras-stm {keras_stm.__version__}, keras {keras.__version__}, one step loss {loss:.4f}, "
      f"saved and reloaded {os.path.basename(path)}")
PY

step "keras-stm[tuning]: keras_stm.experiments.tuning imports (keras-tuner 1.4.8 needs six)"
"$py" -m pip install "${pip_quiet[@]}" -c "$root/requirements/ci.txt" "$wheel[jax,tuning]"
KERAS_BACKEND=jax "$py" -c "import keras_stm.experiments.tuning, keras_tuner; print('ok: keras_stm.experiments.tuning with keras-tuner', keras_tuner.__version__)"
step "passed"
