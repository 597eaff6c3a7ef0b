"""astrocal: Bayesian geometric-distortion calibration of astronomical imagers.

Coordinate convention used throughout the package: pixel positions are 0-based, the
centre of the first pixel is (0.0, 0.0), ``x`` runs along numpy axis 1 (columns) and
``y`` along axis 0 (rows).  Products that follow FITS use 1-based positions and say so
in their headers; the conversion lives in :mod:`astrocal.pixels`.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("astrocal")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
