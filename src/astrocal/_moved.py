"""Old import paths of modules that moved (issue 20's reorganisation): each old module
forwards every name to the new one(s) with a ``DeprecationWarning``, for one release."""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Callable, Iterable


def moved_module(old: str, new: str | Iterable[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a module whose names moved (PEP 562).

    Parameters
    ----------
    old : str
        The old module's dotted name (named in the warning).
    new : str or iterable of str
        The new module's dotted name, or several: a name is taken from the first that
        has it.

    Returns
    -------
    callable
        ``__getattr__(name)``: the attribute ``name`` of the new module, with a
        ``DeprecationWarning`` that ``old`` is deprecated; ``AttributeError`` for a name
        that no new module has (and for dunder names).  Its ``moved_to`` attribute lists
        the new modules.
    """
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


def renamed(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for a module some of whose names were renamed (PEP 562).

    Parameters
    ----------
    module : str
        The module's dotted name.
    names : dict of str to str
        ``{old name: new name}`` within ``module``.

    Returns
    -------
    callable
        ``__getattr__(name)``: for an old name, the new name's object, with a
        ``DeprecationWarning``; ``AttributeError`` otherwise.  Its ``renamed`` attribute
        holds a copy of ``names``.
    """
    def __getattr__(name):
        if name in names:
            warnings.warn(f"{module}.{name} is now {module}.{names[name]} (the old name will be removed in "
                          "the next release)", DeprecationWarning, stacklevel=2)
            return getattr(sys.modules[module], names[name])
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    __getattr__.renamed = dict(names)
    return __getattr__
