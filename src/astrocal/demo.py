"""Moved: the demo's stage to :mod:`astrocal.stages.demo` and the command's arguments to
:mod:`astrocal.cli.demo`; this old import path keeps working for one release, with a
``DeprecationWarning``."""
from astrocal._moved import moved_module

__getattr__ = moved_module(__name__, ("astrocal.stages.demo", "astrocal.cli.demo"))
