"""Load an example script (`examples/<name>.py`) as a module, for tests that call its `main`."""

import importlib.util
import os

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    """The module of `examples/<name>.py` (its `main(argv)` runs the script in-process)."""
    return load_script(os.path.join(EXAMPLES, f"{name}.py"), f"example_{name}")


def load_script(path, module_name=None):
    """The module of the Python file `path` (an example, script or benchmark), loaded afresh."""
    module_name = module_name or os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
