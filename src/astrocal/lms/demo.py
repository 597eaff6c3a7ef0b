"""Moved to :mod:`astrocal.stages.demo_lms` (the demo is a stage: it runs the simulator,
the measure stage and the fit); this old import path keeps working for one release, with a
``DeprecationWarning``."""
from astrocal._moved import moved_module

__getattr__ = moved_module(__name__, "astrocal.stages.demo_lms")
