"""Old import paths of modules that moved (issue 20's reorganisation): each old module
forwards every name to the new one with a ``DeprecationWarning``, for one release."""
from __future__ import annotations

import importlib
import warnings


def moved_module(old: str, new: str):
    """A module ``__getattr__`` for ``old`` that returns ``new``'s attribute of the same
    name (PEP 562), warning once per name that ``old`` is deprecated."""
    def __getattr__(name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        target = importlib.import_module(new)
        value = getattr(target, name)  # AttributeError as the new module gives it
        warnings.warn(f"{old} moved to {new}; import {name} from {new} (the old path will be "
                      "removed in the next release)", DeprecationWarning, stacklevel=2)
        return value

    __getattr__.moved_to = new
    return __getattr__
