"""The import paths of keras-stm 0.1.0 that moved to `keras_stm.experiments`, kept as aliases.

`import keras_stm.training` (or `keras_stm.tasks.copy`, `from keras_stm import tuning`, ...)
still works: it imports the module from its new place, registers it under the old name too
(the same module object, so classes and Keras registrations are not duplicated) and warns with a
`DeprecationWarning`. Nothing is imported before an old name is asked for.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    f"keras_stm.{name}": f"keras_stm.experiments.{name}"
    for name in ("tasks", "models", "training", "tuning", "visualize")
}
"""dict: old module path (and its submodules) -> new module path (`keras_stm.pretrained` came
after 0.1.0, in `keras_stm.experiments` already)."""


def new_name(fullname):
    """The new path of a moved module, or None if `fullname` did not move."""
    for old, new in MOVED.items():
        if fullname == old or fullname.startswith(old + "."):
            return new + fullname[len(old) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    """Loads an old name as the module at its new path (one module, two names)."""

    def __init__(self, target):
        self.target = target
        self.real_spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.real_spec  # the import system set it to the alias' spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the 0.1.0 paths of the modules now under `keras_stm.experiments`."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        warnings.warn(
            f"{fullname} moved to {new} after keras-stm 0.1.0: import it from there (the old path "
            f"will be removed in a later version).",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install():
    """Put the finder first in `sys.meta_path`, once.

    First: for `keras_stm.tasks.copy`, the standard finder would otherwise find `copy.py` on
    the aliased package's path and load a second copy of the module under the old name.
    """
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
