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

# Leap seconds offline from the start: astropy installs its leap-second table at the first
# UTC conversion of a process and, once its bundled file has expired (by the wall clock),
# tries to download a new one first. astrocal does that installation here, under its own
# policy (astrocal.earth: no download unless allowed, an expired table used as it is), so
# no later time arithmetic anywhere in astrocal depends on the date or the network.
from . import earth as _earth  # noqa: E402

_earth.ensure_leap_seconds()
