"""Moved: the fit stage's orchestration to :mod:`astrocal.stages.fit`, its inputs to
:mod:`astrocal.stages.fit_inputs` and the command's arguments to :mod:`astrocal.cli.fit`;
this old import path keeps working for one release, with a ``DeprecationWarning``."""
from astrocal._moved import moved_module

__getattr__ = moved_module(__name__, ("astrocal.stages.fit", "astrocal.stages.fit_inputs", "astrocal.cli.fit"))
