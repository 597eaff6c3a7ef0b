"""Moved to :mod:`astrocal.cli.correct` (the command line's modules live in :mod:`astrocal.cli`); this
old import path keeps working for one release, with a ``DeprecationWarning``."""
from astrocal._moved import moved_module

__getattr__ = moved_module(__name__, "astrocal.cli.correct")
