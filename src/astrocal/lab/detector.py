"""Moved to :mod:`astrocal.sim.detector` (the detector model of the simulators); this old
import path keeps working for one release, with a ``DeprecationWarning``."""
from astrocal._moved import moved_module

__getattr__ = moved_module(__name__, "astrocal.sim.detector")
