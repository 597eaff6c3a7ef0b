"""All calibration products of a fit, per filter (:func:`write_fit_products`): the AstroMet
file, the TAN-SIP header, with a residual field the WCS look-up tables, and for a METIS
imager the METIS distortion table and map."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..formats.astromet import write_astromet
from ..formats.lookup import write_wcs_lookup
from ..formats.sip import sip_header, write_sip_header
from ..model.onsky import product_cards
from ..model.quality import fit_quality, quality_cards
from .metis import metis_band, write_metis_products
from .provenance import earth_orientation_keys
from .result_files import load_residuals
from .uncertainty import posterior_solution

if TYPE_CHECKING:
    from astropy.table import Table

    from ..model.result import Posterior


def _merged_inputs(inputs, posterior):
    seen, merged = set(), []
    for p in list(inputs) + list(posterior.info.get("inputs", []) or []):
        if str(p) not in seen:
            seen.add(str(p))
            merged.append(str(p))
    return merged


def write_fit_products(posterior: Posterior, out: str | os.PathLike, filter_id: str, instrument: str = "",
                       campaign_sha256: str = "", inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
                       band: str | None = None, residuals: Table | None = None) -> dict[str, Path]:
    """Write the products of a fit into ``out``: the AstroMet file, the TAN-SIP header,
    with a residual field the WCS look-up tables and, for a METIS imager, the METIS
    distortion table and map.

    Parameters
    ----------
    posterior : astrocal.model.result.Posterior
        The saved posterior (:func:`astrocal.products.result_files.load_posterior`).
    out : str or os.PathLike
        The output directory.
    filter_id : str
        The filter (in the file names).
    instrument : str, optional
        The instrument's name (in the AstroMet file; its METIS band, if any).
    campaign_sha256 : str, optional
        The campaign file's sha256.
    inputs : iterable of str or os.PathLike, optional
        Input files, added to those the fit recorded (``posterior.info``).
    overwrite : bool, optional
        Whether existing files may be replaced.
    band : {"LM", "N"}, optional
        The METIS band; default: the one of ``instrument`` (no METIS products for other
        instruments).
    residuals : astropy.table.Table, optional
        The fit's residual table for the METIS QC parameters; default: ``out/residuals.ecsv``.

    Returns
    -------
    dict of str to pathlib.Path
        ``{name: path}``: ``astromet``, ``sip``, and when written ``wcs_lookup``,
        ``distortion_table``, ``distortion_map``.
    """
    out = Path(out)
    inputs = _merged_inputs(inputs, posterior)
    provenance = {"creator": f"astrocal {__version__}", "campaign_sha256": campaign_sha256,
                  "degree": posterior.degree, "n_draws": len(posterior.g)}
    for k, path in enumerate(inputs):
        provenance[f"input{k}"] = str(path)
    provenance.update(earth_orientation_keys(posterior.info.get("earth_orientation")))
    # the quality flags; whether the plate scale is measured and each sky dataset's on-sky
    # scale and position angle (astrocal.model.onsky)
    cards = quality_cards(fit_quality(posterior.info)) + product_cards(posterior.info)
    meta = {"creator": f"astrocal {__version__}", "campaign_sha256": campaign_sha256}
    meta.update({f"input{k}": str(p) for k, p in enumerate(inputs)})
    sol = posterior_solution(posterior, filter_id, meta=meta)
    paths = {
        "astromet": write_astromet(out / f"astromet_{filter_id}.fits", sol, instrument=instrument,
                                   overwrite=overwrite, provenance=provenance, cards=cards),
        "sip": write_sip_header(out / f"wcs_sip_{filter_id}.hdr", sol, overwrite=overwrite, cards=cards),
    }
    if sol.residual is not None:
        header = sip_header(sol)
        for key, value, comment in cards:
            header[key] = (value, comment)
        paths["wcs_lookup"], _ = write_wcs_lookup(out / f"wcs_lookup_{filter_id}.fits", header, sol.residual,
                                                  sol.detector_shape, jacobian=sol.field.jacobian,
                                                  overwrite=overwrite)
    band = band or metis_band(instrument)
    if band:
        if residuals is None:
            residuals = load_residuals(out)
        paths.update(write_metis_products(posterior, out, filter_id, band, residuals,
                                          campaign_sha256=campaign_sha256, inputs=inputs,
                                          overwrite=overwrite, cards=cards))
    return paths
