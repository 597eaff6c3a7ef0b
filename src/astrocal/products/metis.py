"""The METIS products of a fit: ``<B>_DISTORTION_TABLE_<filter>.fits`` and
``<B>_DISTORTION_MAP_<filter>.fits`` with ``<B>`` = ``LM`` or ``N``, the products of the
METIS pipeline recipe ``metis_<b>_img_distortion`` (:func:`write_metis_products`).

METIS product definitions (names, ``PRO.CATG``, OCA keywords ``PRO.CATG`` and
``DRS.FILTER``, primary keywords ``DPR.CATG/TECH/TYPE``, QC parameters
``QC {LM,N} DISTORT RMS`` [pixels, ``%.3f``] and ``QC {LM,N} DISTORT NSOURCE`` [int]) follow
the METIS Data Reduction Library Design (E-REP-AST-MET-1006, LaTeX source
AstarVienna/METIS_DRLD @ f34cc9a3298f450b7bb7b47ac9910d59e110ea1e: Recipes_Imaging_LM.tex,
CalDB_data_items.tex, 12_0-QC_parameters.tex, IMG_data_items.tex). The DRLD defines no
columns for the distortion table; the layout here is astrocal's and is stated in the
files' headers.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from ..atomic import atomic_path
from ..image.headers import set_card
from ..instruments import get_instrument
from ..model.quality import fit_quality, quality_cards
from ..model.result import residual_rms
from ..pixels import to_fits
from .coefficients import distortion_coefficients
from .provenance import provenance_cards
from .scale import local_scale_grid, local_scale_samples
from .uncertainty import posterior_solution

if TYPE_CHECKING:
    from astropy.table import Table

    from ..model.result import Posterior

#: the DRLD's raw-frame classification of distortion frames, copied into the products
#: (Recipes_Imaging_LM.tex / IMG_data_items.tex: LM_DISTORTION_RAW, N_DISTORTION_RAW)
DPR = {"LM": {"CATG": "CALIB", "TECH": "IMAGE,LM", "TYPE": "DISTORTION"},
       "N": {"CATG": "CALIB", "TECH": "IMAGE,N", "TYPE": "DISTORTION"}}

#: METIS pipeline recipe that defines the products of each band
RECIPE = {"LM": "metis_lm_img_distortion", "N": "metis_n_img_distortion"}


def eso(dotted: str) -> str:
    """The FITS keyword of an ESO dotted keyword name.

    Parameters
    ----------
    dotted : str
        E.g. ``"QC.LM.DISTORT.RMS"``.

    Returns
    -------
    str
        E.g. ``"HIERARCH ESO QC LM DISTORT RMS"``.
    """
    return "HIERARCH ESO " + dotted.replace(".", " ")


def metis_band(instrument: str | None) -> str | None:
    """The METIS imager band of an instrument.

    Parameters
    ----------
    instrument : str or None
        A campaign's or the registry's instrument name (:func:`astrocal.instruments.get_instrument`).

    Returns
    -------
    str or None
        ``"LM"`` or ``"N"`` for a METIS imager, else None (also for an empty or unknown
        name).
    """
    if not instrument:
        return None
    try:
        inst = get_instrument(instrument)
    except KeyError:
        return None
    return {"IMG_LM": "LM", "IMG_N": "N"}.get(inst.keywords.ins_mode)


def _metis_primary(band, filter_id, pro_catg, qc_rms, nsource, provenance, cards=()):
    h = fits.Header()
    h["INSTRUME"] = ("METIS", "instrument")
    h["TELESCOP"] = ("ESO-ELT", "telescope")
    set_card(h, eso("PRO.CATG"), pro_catg, "product category")
    set_card(h, eso("DRS.FILTER"), str(filter_id), "filter")
    for key, value in DPR[band].items():
        set_card(h, eso(f"DPR.{key}"), value, "of the input frames")
    set_card(h, eso(f"QC.{band}.DISTORT.RMS"), float(f"{qc_rms:.3f}"),
           "[pixel] rms of fit residuals")
    set_card(h, eso(f"QC.{band}.DISTORT.NSOURCE"), int(nsource), "positions used in the fit")
    for key, value, comment in cards:
        set_card(h, key, value, comment)
    h["COMMENT"] = (f"product {pro_catg} of METIS recipe {RECIPE[band]} (METIS DRLD), "
                    "written by astrocal")
    h["COMMENT"] = (f"QC {band} DISTORT RMS: sqrt(mean(dx**2 + dy**2)) of the posterior-mean "
                    "residuals (measured - predicted, detector pixels) of the positions used "
                    "in the fit (outliers left out)")
    h["COMMENT"] = (f"QC {band} DISTORT NSOURCE: number of measured positions used in the fit, "
                    "over all exposures")
    provenance_cards(h, **provenance)
    return h


def qc_from_residuals(residuals: Table) -> tuple[float, int]:
    """The METIS QC parameters from a residual table.

    Parameters
    ----------
    residuals : astropy.table.Table
        A fit's residual table (:func:`astrocal.model.result.residual_table`).

    Returns
    -------
    rms_px : float
        The rms length of the 2-D pixel residuals of the points used in the fit (outliers
        left out; :func:`astrocal.model.result.residual_rms`).
    nsource : int
        The number of those points.
    """
    used = ~np.asarray(residuals["outlier"], bool)
    return residual_rms(residuals, "px"), int(used.sum())


# =========================================================================== writers
def write_metis_products(posterior: Posterior, out: str | os.PathLike, filter_id: str, band: str,
                         residuals: Table, campaign_sha256: str = "", inputs: Iterable[str | os.PathLike] = (),
                         overwrite: bool = False, err_step: int = 64,
                         cards: Sequence[tuple[str, Any, str]] | None = None) -> dict[str, Path]:
    """Write ``<B>_DISTORTION_TABLE_<filter>.fits`` and ``<B>_DISTORTION_MAP_<filter>.fits``.

    Distortion table: primary header (``PRO.CATG``, ``DRS.FILTER``, ``DPR.*``, QC,
    provenance) and a binary table ``TABLE`` with one row per polynomial term ``X**i
    Y**j`` (``X, Y``: pixel position minus the boresight; the same in 0- and 1-based
    pixels): ``XPOW``, ``YPOW``, ``DX``, ``DY`` (reverse offsets, pixels: measured minus
    linear-grid position) with ``DX_ERR``, ``DY_ERR`` (posterior sd) and ``U``, ``V`` (the
    field, focal-plane arcsec) with ``U_ERR``, ``V_ERR``. Its header holds the linear grid
    (``BORESX``/``BORESY`` FITS 1-based, ``PLTSCALE``, ``LINROT``, ``PARITY``) and the
    convention.

    Distortion map: the primary image is the areal local pixel scale ``sqrt(|det J|)`` of
    the posterior-mean field at every detector pixel (mas/pixel, float32, FITS pixel
    ``(i, j)`` = 0-based detector pixel ``(i - 1, j - 1)``); extension ``SCALE_ERR`` holds its
    posterior 1-sigma on a grid every ``err_step`` pixels, with a linear WCS from its
    pixels to FITS 1-based detector pixels.

    Parameters
    ----------
    posterior : astrocal.model.result.Posterior
        The saved posterior.
    out : str or os.PathLike
        The output directory.
    filter_id : str
        The filter (in the file names and ``DRS.FILTER``).
    band : {"LM", "N"}
        The METIS imager band.
    residuals : astropy.table.Table
        The fit's residual table (for the QC parameters, :func:`qc_from_residuals`).
    campaign_sha256 : str, optional
        The campaign file's sha256.
    inputs : iterable of str or os.PathLike, optional
        The input files (provenance).
    overwrite : bool, optional
        Whether existing files may be replaced.
    err_step : int, optional
        Sampling step (pixels) of the map's ``SCALE_ERR``.
    cards : sequence of (keyword, value, comment), optional
        Cards for both primary headers; default: the fit's quality flags
        (:func:`astrocal.model.quality.quality_cards`).

    Returns
    -------
    dict of str to pathlib.Path
        ``{"distortion_table": path, "distortion_map": path}``.

    Raises
    ------
    ValueError
        ``band`` is not ``"LM"`` or ``"N"``.
    """
    if band not in DPR:
        raise ValueError(f"METIS band must be 'LM' or 'N', got {band!r}")
    out = Path(out)
    provenance = {"campaign_sha256": campaign_sha256, "inputs": inputs,
                  "settings": {"degree": posterior.degree, "n_draws": len(posterior.g)}}
    qc_rms, nsource = qc_from_residuals(residuals)
    cards = quality_cards(fit_quality(posterior.info)) if cards is None else cards
    sol = posterior_solution(posterior, filter_id)
    paths = {}

    # ---- table
    cat = f"{band}_DISTORTION_TABLE"
    coef = distortion_coefficients(posterior, sol)
    cols = [fits.Column("XPOW", "I", array=coef["i"]), fits.Column("YPOW", "I", array=coef["j"])]
    for name, unit in (("dx", "pixel"), ("dy", "pixel"), ("u", "arcsec"), ("v", "arcsec")):
        cols.append(fits.Column(name.upper(), "D", unit=unit, array=coef[name]))
        cols.append(fits.Column(f"{name.upper()}_ERR", "D", unit=unit, array=coef[f"{name}_err"]))
    table = fits.BinTableHDU.from_columns(cols, name="TABLE")
    th = table.header
    b = sol.boresight
    th["BORESX"] = (float(to_fits(b[0])), "[pixel] boresight x, FITS 1-based")
    th["BORESY"] = (float(to_fits(b[1])), "[pixel] boresight y, FITS 1-based")
    th["PLTSCALE"] = (sol.plate_scale, "[arcsec/pixel] linear-grid plate scale")
    th["LINROT"] = (sol.rotation, "[deg] detector x axis in focal plane")
    th["PARITY"] = (sol.parity, "-1 if the detector image is flipped")
    u0, v0 = sol.reference_position
    th["FPREFU"] = (u0, "[arcsec] focal-plane u of boresight")
    th["FPREFV"] = (v0, "[arcsec] focal-plane v of boresight")
    th["POLYDEG"] = (posterior.degree, "total degree of the polynomials")
    th["RESIDUAL"] = (posterior.residual is not None, "field holds a residual beyond these terms")
    ny, nx = posterior.detector_shape
    th["DETNAXI1"] = (nx, "[pixel] detector size along x")
    th["DETNAXI2"] = (ny, "[pixel] detector size along y")
    th["COMMENT"] = "row k: coefficient of X**XPOW * Y**YPOW, X, Y = pixel position - boresight"
    th["COMMENT"] = ("DX, DY: reverse offsets D2 = measured - linear-grid position (pixels); "
                     "linear-grid position = measured - D2")
    th["COMMENT"] = ("linear grid: b + M (G(p) - G(b)), M = R(-LINROT) diag(1, PARITY) / PLTSCALE")
    th["COMMENT"] = "U, V: the field G, detector pixel -> focal plane (arcsec)"
    th["COMMENT"] = "*_ERR: posterior standard deviation over the exact draws of the fit"
    primary = fits.PrimaryHDU(header=_metis_primary(band, filter_id, cat, qc_rms, nsource, provenance, cards))
    path = out / f"{cat}_{filter_id}.fits"
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList([primary, table]).writeto(tmp)
    paths["distortion_table"] = path

    # ---- map
    cat = f"{band}_DISTORTION_MAP"
    field = posterior.mean_field()
    full = posterior.mean_residual_coefficients()
    scale = local_scale_grid(field, np.arange(nx), np.arange(ny), residual=full, factor=1e3, dtype=np.float32)
    ph = _metis_primary(band, filter_id, cat, qc_rms, nsource, provenance, cards)
    ph["BUNIT"] = ("mas/pixel", "areal local pixel scale sqrt|det J|")
    ph["COMMENT"] = ("image: local pixel scale of the posterior-mean field at each detector "
                     "pixel centre; FITS pixel (i, j) = 0-based detector pixel (i-1, j-1)")
    if full is not None:
        ph["COMMENT"] = ("the field is the polynomial plus the residual field beyond it (the table "
                         "holds the polynomial part)")
    primary = fits.PrimaryHDU(data=scale, header=ph)
    ex = np.arange(0, nx, err_step, dtype=float)
    ey = np.arange(0, ny, err_step, dtype=float)
    if ex[-1] != nx - 1:
        ex = np.append(ex, nx - 1)
    if ey[-1] != ny - 1:
        ey = np.append(ey, ny - 1)
    yy, xx = np.meshgrid(ey, ex, indexing="ij")
    err = local_scale_samples(posterior, xx, yy).std(axis=0, ddof=1).reshape(xx.shape) * 1e3
    eh = fits.ImageHDU(data=err.astype(np.float32), name="SCALE_ERR")
    eh.header["BUNIT"] = ("mas/pixel", "posterior 1-sigma of the local pixel scale")
    for axis, grid in ((1, ex), (2, ey)):
        eh.header[f"CTYPE{axis}"] = ("LINEAR", "FITS 1-based detector pixel")
        eh.header[f"CRPIX{axis}"] = 1.0
        eh.header[f"CRVAL{axis}"] = (float(to_fits(grid[0])), "detector pixel of the first sample")
        eh.header[f"CDELT{axis}"] = (float(err_step), "[pixel] sampling step")
    eh.header["COMMENT"] = ("samples every CDELT pixels; the last row/column is the detector's "
                            "last pixel (closer than CDELT when the size is not a multiple)")
    path = out / f"{cat}_{filter_id}.fits"
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList([primary, eh]).writeto(tmp)
    paths["distortion_map"] = path
    return paths
