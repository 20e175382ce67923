# The two commands of the README:
#   make demo   set up a jax venv; evaluate the committed associative-retrieval model on fresh
#               sequences, then train a small STM on the task (prints both accuracies)
#   make test   set up a venv with all three backends, check the code with ruff (lint and
#               format), run the suite once per backend (the
#               three pytest processes run side by side), then
#               build the documentation site in strict mode. Tests marked `large` (whole
#               programs across processes or sessions, committed models scored on real
#               data) are skipped: `make test-large` runs them alone; CI runs both
PYTHON ?= python3
VENV ?= .venv
BACKENDS ?= jax torch tensorflow
PY := $(VENV)/bin/python

.PHONY: demo test test-large test-setup demo-setup docs lint check-package clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

demo-setup: $(PY)
	$(PY) -m pip install -q -r requirements/demo.txt
	$(PY) -m pip install -q --no-deps -e .

demo: demo-setup
	KERAS_BACKEND=jax $(PY) examples/quickstart.py

test-setup: $(PY)
	$(PY) -m pip install -q -r requirements/ci.txt -r requirements/docs.txt
	$(PY) -m pip install -q --no-deps -e .

test: test-setup lint
	bash scripts/test_all_backends.sh $(PY) $(BACKENDS)
	$(MAKE) --no-print-directory docs

# The large tests alone, once per backend (side by side, as `make test`).
test-large: test-setup
	PYTEST_ARGS="-m large --run-large" bash scripts/test_all_backends.sh $(PY) $(BACKENDS)

# The wheel with [jax] alone in a fresh venv (CI runs it after `make test`; 1-2 minutes).
check-package: $(PY)
	bash scripts/check_package.sh $(PY)

# ruff (configured in pyproject.toml): the lint rules and the format, checked, never rewritten.
lint:
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --check --no-cache .

docs:
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site runs .pytest_cache
