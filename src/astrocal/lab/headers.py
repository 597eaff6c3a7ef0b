"""Moved to :mod:`astrocal.image.headers` (frames are shared by the lab and the sky data
paths); this old import path keeps working for one release, with a
``DeprecationWarning``."""
from astrocal._moved import moved_module

__getattr__ = moved_module(__name__, "astrocal.image.headers")
