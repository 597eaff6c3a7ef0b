"""Calibration products of a fit: the solution files other software reads.

From a saved posterior (:func:`astrocal.model.result.load_posterior`), per filter:

- ``astromet_<filter>.fits``: AstroMet FITS (XMM-OM CCF layout) of the posterior-mean field
  with ``RAWX_OFF_ERR``/``RAWY_OFF_ERR`` from the posterior draws;
- ``wcs_sip_<filter>.hdr``: a FITS WCS header with TAN-SIP of the posterior-mean field.

The 1-sigma of the offsets at a detector position is the posterior spread of the
linear-grid position there, ``M (G(p) - G(b))`` (see :mod:`astrocal.solution`), from the
exact draws of the field.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import __version__
from .field import design_matrix
from .formats.astromet import write_astromet
from .formats.sip import write_sip_header
from .solution import Solution


def posterior_solution(posterior, filter_id, detector_shape=None, meta=None):
    """A :class:`Solution` of the posterior-mean field with the posterior's uncertainty."""
    field = posterior.mean_field()
    sol = Solution(field, filter=filter_id, detector_shape=detector_shape, meta=meta or {})
    b = sol.boresight
    m = sol.linear_matrix
    nt = posterior.nt
    gu, gv = posterior.g[:, :nt], posterior.g[:, nt:2 * nt]
    bb = design_matrix([b[0]], [b[1]], posterior.degree, posterior.domain)[0]

    def sigma(x, y):
        x = np.ravel(np.asarray(x, float))
        y = np.ravel(np.asarray(y, float))
        out_x = np.empty(x.size)
        out_y = np.empty(x.size)
        for lo in range(0, x.size, 2048):
            B = design_matrix(x[lo:lo + 2048], y[lo:lo + 2048], posterior.degree, posterior.domain) - bb
            du, dv = gu @ B.T, gv @ B.T  # (n_samples, n)
            lx = m[0, 0] * du + m[0, 1] * dv
            ly = m[1, 0] * du + m[1, 1] * dv
            out_x[lo:lo + 2048] = lx.std(axis=0, ddof=1)
            out_y[lo:lo + 2048] = ly.std(axis=0, ddof=1)
        return out_x, out_y

    return Solution(field, filter=filter_id, detector_shape=detector_shape, sigma=sigma,
                    meta=meta or {}, boresight=b, plate_scale=sol.plate_scale,
                    rotation=sol.rotation, parity=sol.parity)


def write_fit_products(posterior, out, filter_id, instrument="", campaign_sha256="",
                       inputs=(), overwrite=False):
    """Write the AstroMet file and the TAN-SIP header of a fit into ``out``."""
    out = Path(out)
    provenance = {"creator": f"astrocal {__version__}", "campaign_sha256": campaign_sha256,
                  "degree": posterior.degree, "n_draws": len(posterior.g)}
    for k, path in enumerate(inputs):
        provenance[f"input{k}"] = str(path)
    sol = posterior_solution(posterior, filter_id, meta={"campaign_sha256": campaign_sha256})
    paths = {
        "astromet": write_astromet(out / f"astromet_{filter_id}.fits", sol, instrument=instrument,
                                   overwrite=overwrite, provenance=provenance),
        "sip": write_sip_header(out / f"wcs_sip_{filter_id}.hdr", sol, overwrite=overwrite),
    }
    return paths
