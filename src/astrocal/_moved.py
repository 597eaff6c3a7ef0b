"""Old import paths of modules that moved (issue 20's reorganisation): each old module
forwards every name to the new one(s) with a ``DeprecationWarning``, for one release."""
from __future__ import annotations

import importlib
import sys
import warnings


def moved_module(old: str, new):
    """A module ``__getattr__`` for ``old`` that returns the attribute of the same name of
    ``new`` (a module name, or several: the first that has the name), warning that
    ``old`` is deprecated (PEP 562)."""
    targets = [new] if isinstance(new, str) else list(new)

    def __getattr__(name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        for target in targets:
            module = importlib.import_module(target)
            if hasattr(module, name):
                warnings.warn(f"{old} moved to {target}; import {name} from {target} (the old path will "
                              "be removed in the next release)", DeprecationWarning, stacklevel=2)
                return getattr(module, name)
        raise AttributeError(f"module {old!r} (moved to {', '.join(targets)}) has no attribute {name!r}")

    __getattr__.moved_to = targets
    return __getattr__


def renamed(module: str, names: dict):
    """A module ``__getattr__`` for ``module`` whose names ``{old: new}`` were renamed in
    it: the old name returns the new one's object, warning that it is deprecated."""
    def __getattr__(name):
        if name in names:
            warnings.warn(f"{module}.{name} is now {module}.{names[name]} (the old name will be removed in "
                          "the next release)", DeprecationWarning, stacklevel=2)
            return getattr(sys.modules[module], names[name])
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    __getattr__.renamed = dict(names)
    return __getattr__
