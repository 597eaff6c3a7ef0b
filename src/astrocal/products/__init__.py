"""Calibration products of a fit (the solution files other software reads) and the fit's
result files.

From a saved posterior (:func:`astrocal.products.result_files.load_posterior`), per filter
(:func:`~astrocal.products.write.write_fit_products`):

- ``astromet_<filter>.fits``: AstroMet FITS (XMM-OM CCF layout) of the posterior-mean field
  with ``RAWX_OFF_ERR``/``RAWY_OFF_ERR`` from the posterior draws;
- ``wcs_sip_<filter>.hdr``: a FITS WCS header with TAN-SIP of the posterior-mean field
  (its polynomial);
- with a residual field beyond the polynomial (:mod:`astrocal.field.residual`),
  ``wcs_lookup_<filter>.fits``: the same TAN-SIP header completed by distortion look-up
  tables of the residual (``CPDIS``/``DP``, ``WCSDVARR`` extensions;
  :mod:`astrocal.formats.lookup`), so that astropy.wcs and drizzlepac apply the full field;
- for METIS imagers, ``<B>_DISTORTION_TABLE_<filter>.fits`` and
  ``<B>_DISTORTION_MAP_<filter>.fits`` with ``<B>`` = ``LM`` or ``N``: the products of the
  METIS pipeline recipe ``metis_<b>_img_distortion``
  (:func:`~astrocal.products.metis.write_metis_products`).

The 1-sigma of the offsets at a detector position is the posterior spread of the
linear-grid position there, ``M (G(p) - G(b))`` (see :mod:`astrocal.solution`), from the
exact draws of the field (:mod:`astrocal.products.uncertainty`).

Every product says whether its plate scale is measured (``HIERARCH ASTROCAL SCALE
MEASURED``: false for a sky-only fit, whose field scale the priors set) and, with sky data,
each sky dataset's on-sky pixel scale and position angle (``HIERARCH ASTROCAL SKY<k>
SCALE``, ``PA`` and their ``ERR``; :func:`astrocal.model.onsky.product_cards`).

Every product states the astrocal version, the sha256 of the campaign file and the input
files (the campaign and the measured source tables, as recorded by the fit;
:mod:`astrocal.products.provenance`).

Modules:

- :mod:`~astrocal.products.result_files`: the fit's result files (``posterior.h5``,
  ``summary.ecsv``, ``fit.json``, ``residuals.ecsv``), written and read back;
- :mod:`~astrocal.products.uncertainty`: the posterior-mean solution with its 1-sigma;
- :mod:`~astrocal.products.scale`: the local pixel scale on grids and its draws;
- :mod:`~astrocal.products.coefficients`: the distortion's monomial coefficients;
- :mod:`~astrocal.products.provenance`: the provenance cards of every product;
- :mod:`~astrocal.products.metis`: the METIS distortion table and map;
- :mod:`~astrocal.products.write`: all products of a fit.

The public names of these modules are importable from ``astrocal.products`` itself.
"""
from __future__ import annotations

from .coefficients import distortion_coefficients
from .metis import DPR, RECIPE, eso, metis_band, qc_from_residuals, write_metis_products
from .provenance import earth_orientation_keys, provenance_cards
from .result_files import QUANTILES, load_chain, load_posterior, load_residuals, save_fit, summary_table
from .scale import local_scale_grid, local_scale_samples
from .uncertainty import posterior_solution
from .write import write_fit_products

__all__ = ["DPR", "QUANTILES", "RECIPE", "distortion_coefficients", "earth_orientation_keys", "eso",
           "load_chain", "load_posterior", "load_residuals", "local_scale_grid", "local_scale_samples",
           "metis_band", "posterior_solution", "provenance_cards", "qc_from_residuals", "save_fit",
           "summary_table", "write_fit_products", "write_metis_products"]
