"""Shared pytest configuration: one pytest process per `KERAS_BACKEND`.

Settings that only serve the tests (set before Keras and its backend are imported, and passed on
to the scripts the tests run in subprocesses, which inherit the environment):

- one compute thread per process (`OMP_NUM_THREADS`, TensorFlow's intra/inter-op pools, XLA's
  Eigen pool): `make test` runs the three backends' pytest processes side by side on a 2-core
  machine, where several threads per process only fight over the cores;
- XLA's cheaper CPU code generation (`--xla_backend_optimization_level=0`): the tests' models are
  tiny and compiling them dominates; the programs compute the same thing (the parity tests still
  hold to their float64 references). `JAX_DISABLE_MOST_OPTIMIZATIONS` asks jax for the same
  cheaper compilation in the subprocesses that set `XLA_FLAGS` themselves (the XLA-flags check
  runs its plain, flagged and float64 children with `XLA_FLAGS` of their own; all three get it
  alike, so their comparison is unchanged).

Any of these already set in the environment is left as it is.

Large tests (`@pytest.mark.large`, as in keras-hub): those that run a whole program across
processes or sessions (the tuning launcher, a killed and resumed run, a search resumed, the
XLA-flags check's three processes, the ahead-of-time compilation in a child process) or score
a committed model on real data. They are skipped unless pytest gets `--run-large`:
`make test` leaves them out, `make test-large` runs them alone, CI (`.ci/run`) runs both.
"""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
for _name in (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
):
    os.environ.setdefault(_name, "1")
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true",
)
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--run-large",
        action="store_true",
        default=False,
        help="also run the tests marked `large` (make test-large; CI runs them)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "large: runs a whole program across processes or sessions, or scores a committed "
        "model; skipped unless --run-large",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large test: run with --run-large (make test-large)")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


def pytest_collection_finish(session):
    # Every test module is imported: what exists now (the backend's modules, the tests'
    # globals) lives to the end. Frozen, Python's collector no longer walks it at every full
    # collection.
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    # free_memory=False: no `gc.collect()` before every test. A full collection walks every
    # object the process holds (the backend's modules, traced functions, earlier tests' models),
    # so its cost grew through the session to seconds per test (more than half of a backend's
    # time); Python's own collector still frees reference cycles as they accumulate.
    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")
