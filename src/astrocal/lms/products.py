"""The LMS calibration products of a fit: the pipeline's trace table and astrocal's full geometry.

Per echelle setting of a fit (:class:`~astrocal.lms.fit.LmsFit`), tag ``4p730`` for 4.730 um:

- ``IFU_DISTORTION_TABLE_<tag>.fits``: the METIS pipeline's ``IFU_DISTORTION_TABLE`` in the
  layout its recipes read today (METIS_Pipeline b75e7fa, ``metis_ifu_distortion`` writes it,
  ``metis_ifu_wavecal`` and ``metis_ifu_rsrf`` read it): an empty primary HDU and four binary
  tables ``DET1`` .. ``DET4``, 14 rows each (the slices on that chip, in increasing row), with
  the columns ``orders`` (5 doubles: the slice centre line's row as a 4th-order polynomial in
  the 0-based column, highest power first, ``row = o0 c^4 + o1 c^3 + o2 c^2 + o3 c + o4``) and
  ``column_range`` (2 doubles: first column and end column, end excluded). The centre line is
  ``xi = 0`` of the posterior-mean geometry.
- ``LMS_GEOMETRY_<tag>.fits``: astrocal's full product. Table ``SLICES``: one row per (slice,
  chip) where the slice reaches the chip, with the forward polynomials (col, row) of
  ``(U, W)`` and the inverse polynomials (xi, lam) of ``(C, R)``, each with the covariance of
  its coefficients (the exact linear propagation of the posterior draws of the deviations);
  images ``DETn.XI`` [arcsec], ``DETn.DLAM`` (``lam - LAMREF`` [um]) and ``DETn.SLICE``
  (0: no slice) at every ``step``-th pixel of each chip (default every pixel) and
  ``DETn.SIGMA_XI``, ``DETn.SIGMA_LAM`` at every ``sigma_step``-th (default 8), evaluated from
  the inverse polynomials and their covariance.

Both primary headers carry the DRLD's QC parameters (``QC IFU DISTORT RMS``, ``FWHM`` when the
spot tables measured widths, ``NSPOTS``), the fit's convergence flag
(``HIERARCH ASTROCAL QC CONVERGED``), the setting (``INS WLEN CEN`` and the echelle order and
angle) and provenance.

Polynomial conventions (``SLICES`` table, also written into its header):

- forward: ``U = xi / 0.4485``, ``W = (2 lam - (LAMLO + LAMHI)) / (LAMHI - LAMLO)``;
  ``col = sum_k FWD_COL[k] U^i W^j`` (and ``FWD_ROW``), ``k = i (FWDDEG + 1) + j``,
  ``0 <= i, j <= FWDDEG``. With ``truth_direction = "forward"`` the model is exactly such a
  polynomial on each chip; ``FWD_MAXERR`` [px] is the largest misfit on the fit grid.
- inverse: ``C = (col - 1023.5) / 1024``, ``R = (row - INV_ROW0) / INV_ROWSCL``;
  ``xi = sum_k INV_XI[k] C^i R^j`` (and ``INV_LAM`` [um]), ``k = i (INVDEG + 1) + j``,
  ``0 <= i, j <= INVDEG``; valid for the pixels of the slice's image on the chip
  (``|xi| <= 0.4485``, ``LAM_MIN - 1 % .. LAM_MAX + 1 %`` of the range); ``INV_MAXERR_XI``
  [arcsec] and ``INV_MAXERR_LAM`` [um] are the largest misfits on the fit grid.
- ``FWD_COV``: covariance of ``(FWD_COL, FWD_ROW)`` [px^2]; ``INV_COV`` of ``(INV_XI, INV_LAM)``.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from astropy.io import fits
from astropy.table import Row, Table

from .. import __version__
from ..atomic import atomic_path
from ..image.headers import set_card
from ..model.quality import QC_CONVERGED
from .traces import N_SLICES, SLICE_HALF_LENGTH_ARCSEC, SettingLike

if TYPE_CHECKING:  # hints only
    from .fit import LmsFit

__all__ = ["IFU_TRACE_DEGREE", "INVERSE_DEGREE", "SlicePolynomials", "slice_polynomials", "trace_table_rows",
           "pixel_maps", "lms_qc", "write_ifu_distortion_table", "write_lms_geometry", "write_lms_products",
           "setting_tag", "evaluate_inverse_poly", "evaluate_forward_poly"]

log = logging.getLogger(__name__)

#: degree of the pipeline's trace polynomial (``orders`` has 5 coefficients)
IFU_TRACE_DEGREE = 4
#: degree in C and in R of the inverse polynomials (misfit < 1e-5 px equivalent, measured)
INVERSE_DEGREE = 4
#: the DRLD's accuracy goal for the IFU distortion and wavelength solution [px]
DRLD_GOAL_PX = 0.1
_ROW_SCALE = 64.0
_COL_CENTRE, _COL_SCALE = 1023.5, 1024.0
_LAM_PAD = 0.01          # fraction of the setting's range beyond a slice's part on a chip


def setting_tag(lam_c_um: float) -> str:
    """The tag of a setting in the products' names (as in the simulated frames' names).

    Parameters
    ----------
    lam_c_um : float
        Central wavelength [um].

    Returns
    -------
    str
        ``4.73`` -> ``"4p730"``.
    """
    return f"{float(lam_c_um):.3f}".replace(".", "p")


def eso(dotted: str) -> str:
    """A FITS header keyword from an ESO dotted name.

    Parameters
    ----------
    dotted : str
        E.g. ``"QC.IFU.DISTORT.RMS"``.

    Returns
    -------
    str
        E.g. ``"HIERARCH ESO QC IFU DISTORT RMS"``.
    """
    return "HIERARCH ESO " + dotted.replace(".", " ")


def _bidegree_basis(a, b, degree):
    """Monomials ``a^i b^j`` (0 <= i, j <= degree), column ``k = i (degree + 1) + j``: (N, (degree+1)^2)."""
    a, b = np.ravel(np.asarray(a, float)), np.ravel(np.asarray(b, float))
    pa = np.ones((a.size, degree + 1))
    pb = np.ones((b.size, degree + 1))
    for k in range(1, degree + 1):
        pa[:, k] = pa[:, k - 1] * a
        pb[:, k] = pb[:, k - 1] * b
    return (pa[:, :, None] * pb[:, None, :]).reshape(a.size, -1)


def _left_inverse(B):
    """``(B^T B)^-1 B^T``: the least-squares solution operator of a full-rank basis (normal
    equations: the bases here are normalised to about -1..1, so ``B^T B`` is well conditioned)."""
    return np.linalg.solve(B.T @ B, B.T)


def _inverse_2x2(jac):
    """Inverses of (N, 2, 2) matrices."""
    det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
    inv = np.empty_like(jac)
    inv[:, 0, 0], inv[:, 1, 1] = jac[:, 1, 1] / det, jac[:, 0, 0] / det
    inv[:, 0, 1], inv[:, 1, 0] = -jac[:, 0, 1] / det, -jac[:, 1, 0] / det
    return inv


def evaluate_forward_poly(row: Row | Mapping, xi: ArrayLike, lam: ArrayLike,
                          lam_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(col, row) [px] from a ``SLICES`` row's forward polynomials at (xi [arcsec], lam [um]).

    Parameters
    ----------
    row : Row or mapping
        A row of the ``SLICES`` table (``FWD_COL``, ``FWD_ROW``).
    xi, lam : array_like
        Position along the slice [arcsec] and wavelength [um].
    lam_range : (2,)
        The table's (LAMLO, LAMHI) [um].

    Returns
    -------
    col, row : ndarray
        0-based pixel position [px] on the row's chip.
    """
    lo, hi = lam_range
    deg = int(round(np.sqrt(len(row["FWD_COL"])))) - 1
    B = _bidegree_basis(np.ravel(xi) / SLICE_HALF_LENGTH_ARCSEC, (2 * np.ravel(lam) - (lo + hi)) / (hi - lo), deg)
    return B @ np.asarray(row["FWD_COL"]), B @ np.asarray(row["FWD_ROW"])


def evaluate_inverse_poly(row: Row | Mapping, col: ArrayLike, rowpix: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(xi [arcsec], lam [um]) from a ``SLICES`` row's inverse polynomials at detector pixels.

    Parameters
    ----------
    row : Row or mapping
        A row of the ``SLICES`` table (``INV_XI``, ``INV_LAM``, ``INV_ROW0``, ``INV_ROWSCL``).
    col, rowpix : array_like
        0-based pixel position [px] on the row's chip.

    Returns
    -------
    xi, lam : ndarray
        [arcsec], [um].
    """
    deg = int(round(np.sqrt(len(row["INV_XI"])))) - 1
    B = _bidegree_basis((np.ravel(col) - _COL_CENTRE) / _COL_SCALE,
                        (np.ravel(rowpix) - row["INV_ROW0"]) / row["INV_ROWSCL"], deg)
    return B @ np.asarray(row["INV_XI"]), B @ np.asarray(row["INV_LAM"])


@dataclass
class SlicePolynomials:
    """The polynomials of one setting: ``table`` (the ``SLICES`` rows, see the module notes),
    ``lam_range`` (LAMLO, LAMHI) [um], ``forward_degree``, ``inverse_degree``."""

    table: Table
    lam_range: tuple
    forward_degree: int
    inverse_degree: int = INVERSE_DEGREE


def _param_covariance(fit):
    dp = fit.param_samples - fit.param_samples.mean(axis=0)
    return dp.T @ dp / max(len(dp) - 1, 1)


def _chip_part(geo, s, det, setting, lo, hi, n_lam=801):
    """λ range [um] and footprint of slice ``s`` on chip ``det`` (any xi): None when it misses the chip."""
    lam = np.linspace(lo, hi, n_lam)
    u = np.linspace(-1.0, 1.0, 5)
    L, U = np.meshgrid(lam, u)
    c, r, _ = geo.chip_position(np.full(L.size, s), U.ravel() * SLICE_HALF_LENGTH_ARCSEC, L.ravel(), setting, det)
    on = geo.mosaic.on_chip(c, r)
    if not on.any():
        return None
    return float(L.ravel()[on].min()), float(L.ravel()[on].max())


def slice_polynomials(fit: LmsFit, setting: SettingLike) -> SlicePolynomials:
    """Forward and inverse polynomials, with their covariance, of every (slice, chip) of a setting.

    Parameters
    ----------
    fit : LmsFit
        The fit (:class:`~astrocal.lms.fit.LmsFit`): its posterior-mean geometry and the draws of
        its deviations.
    setting : int, float or EchelleSetting
        Index, :class:`~astrocal.lms.EchelleSetting` or central wavelength [um].

    Returns
    -------
    SlicePolynomials
        The ``SLICES`` table and its degrees and wavelength range.
    """
    geo = fit.geometry()
    e = fit.layout.setting_index(setting)
    lo, hi = geo.wavelength_range(e)
    cov_p = _param_covariance(fit)
    fdeg = max(3, fit.layout.degree)
    ideg = INVERSE_DEGREE
    rows = []
    for s in range(1, N_SLICES + 1):
        for det in ((3, 4) if s <= N_SLICES // 2 else (1, 2)):
            part = _chip_part(geo, s, det, e, lo, hi)
            if part is None:
                continue
            # forward: a (U, W) grid over the whole slice and range, positions on this chip's frame
            u = np.cos(np.pi * (np.arange(2 * fdeg + 3) + 0.5) / (2 * fdeg + 3))
            w = np.cos(np.pi * (np.arange(4 * fdeg + 5) + 0.5) / (4 * fdeg + 5))
            W, U = np.meshgrid(w, u)
            U, W = U.ravel(), W.ravel()
            xi, lam = U * SLICE_HALF_LENGTH_ARCSEC, 0.5 * (lo + hi) + 0.5 * (hi - lo) * W
            sl = np.full(U.size, s)
            c, r, _ = geo.chip_position(sl, xi, lam, e, det)
            D = geo.design_matrix(sl, xi, lam, e, det=np.full(U.size, det))
            B = _bidegree_basis(U, W, fdeg)
            pinv = _left_inverse(B)
            fc, fr = pinv @ c, pinv @ r
            ferr = max(np.abs(B @ fc - c).max(), np.abs(B @ fr - r).max())
            M = np.concatenate([pinv @ D[:, 0, :], pinv @ D[:, 1, :]])
            fcov = M @ cov_p @ M.T
            # inverse: pairs (col, row) <-> (xi, lam) over the slice's part on the chip
            pad = _LAM_PAD * (hi - lo)
            l0, l1 = max(lo, part[0] - pad), min(hi, part[1] + pad)
            u = np.linspace(-1.0, 1.0, 4 * ideg + 1)
            lam = np.linspace(l0, l1, 16 * ideg + 1)
            L, U = np.meshgrid(lam, u)
            xi, lam = U.ravel() * SLICE_HALF_LENGTH_ARCSEC, L.ravel()
            sl = np.full(xi.size, s)
            c, r, jac = geo.chip_position(sl, xi, lam, e, det)
            row0 = float(np.mean(r))
            B = _bidegree_basis((c - _COL_CENTRE) / _COL_SCALE, (r - row0) / _ROW_SCALE, ideg)
            pinv = _left_inverse(B)
            ix, il = pinv @ xi, pinv @ lam
            D = geo.design_matrix(sl, xi, lam, e, det=np.full(xi.size, det))
            G = -np.einsum("nij,njp->nip", _inverse_2x2(jac), D)          # d(xi, lam)/dp at fixed pixel
            M = np.concatenate([pinv @ G[:, 0, :], pinv @ G[:, 1, :]])
            icov = M @ cov_p @ M.T
            rows.append({"SLICE": s, "DET": det, "LAM_MIN": part[0], "LAM_MAX": part[1],
                         "COL_MIN": float(c.min()), "COL_MAX": float(c.max()),
                         "ROW_MIN": float(r.min()), "ROW_MAX": float(r.max()),
                         "FWD_COL": fc, "FWD_ROW": fr, "FWD_COV": fcov, "FWD_MAXERR": float(ferr),
                         "INV_ROW0": row0, "INV_ROWSCL": _ROW_SCALE, "INV_XI": ix, "INV_LAM": il, "INV_COV": icov,
                         "INV_MAXERR_XI": float(np.abs(B @ ix - xi).max()),
                         "INV_MAXERR_LAM": float(np.abs(B @ il - lam).max())})
    t = Table(rows=rows, names=list(rows[0]))
    units = {"LAM_MIN": "um", "LAM_MAX": "um", "COL_MIN": "pix", "COL_MAX": "pix", "ROW_MIN": "pix",
             "ROW_MAX": "pix", "FWD_COL": "pix", "FWD_ROW": "pix", "FWD_COV": "pix2", "FWD_MAXERR": "pix",
             "INV_ROW0": "pix", "INV_ROWSCL": "pix", "INV_XI": "arcsec", "INV_LAM": "um",
             "INV_MAXERR_XI": "arcsec", "INV_MAXERR_LAM": "um"}
    for k, v in units.items():
        t[k].unit = v
    return SlicePolynomials(t, (lo, hi), fdeg, ideg)


def trace_table_rows(fit: LmsFit, setting: SettingLike, det: int, degree: int = IFU_TRACE_DEGREE,
                     n_lam: int = 4001) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 14 trace rows of chip ``det`` for the pipeline's table: per slice on the chip (in
    increasing row) the centre line's polynomial ``row(col)`` (highest power first), its column
    range ``[start, end)`` (the illuminated columns the centre line reaches) and the largest
    misfit of the polynomial to the model [px].

    Parameters
    ----------
    fit : LmsFit
        The fit (:class:`~astrocal.lms.fit.LmsFit`): its posterior-mean geometry and the draws of
        its deviations.
    setting : int, float or EchelleSetting
        Index, :class:`~astrocal.lms.EchelleSetting` or central wavelength [um].
    det : int
        Chip 1..4.
    degree : int
        Degree of the polynomials.
    n_lam : int
        Wavelengths sampled along each centre line.

    Returns
    -------
    slices : ndarray (14,)
        Slice numbers.
    orders : ndarray (14, 5)
        Polynomial coefficients, highest power first.
    column_range : ndarray (14, 2)
        ``[start, end)`` [px].
    maxerr : ndarray (14,)
        [px].

    Raises
    ------
    ValueError
        A centre line reaches the chip at fewer than ``degree + 1`` points.
    """
    geo = fit.geometry()
    e = fit.layout.setting_index(setting)
    lo, hi = geo.wavelength_range(e)
    slices = np.arange(1, N_SLICES // 2 + 1) + (0 if det in (3, 4) else N_SLICES // 2)
    orders, ranges, errs = [], [], []
    lam = np.linspace(lo, hi, n_lam)
    for s in slices:
        c, r, _ = geo.chip_position(np.full(lam.size, s), np.zeros(lam.size), lam, e, det)
        on = geo.mosaic.on_chip(c, r) & geo.mosaic.illuminated(np.full(lam.size, det), c, r)
        if on.sum() < degree + 1:
            raise ValueError(f"slice {s}: its centre line reaches DET{det} at fewer than {degree + 1} points")
        cc, rr = c[on], r[on]
        x0 = 0.5 * (cc.min() + cc.max())
        # fitted about the centre for conditioning, then expanded to powers of the column itself
        q = np.polynomial.polynomial.polyfit(cc - x0, rr, degree)
        mono = np.polynomial.polynomial.Polynomial(q)(np.polynomial.polynomial.Polynomial([-x0, 1.0])).coef
        mono = np.pad(mono, (0, degree + 1 - len(mono)))
        orders.append(mono[::-1])
        errs.append(float(np.abs(np.polyval(mono[::-1], cc) - rr).max()))
        ranges.append([float(np.ceil(cc.min())), float(np.floor(cc.max())) + 1.0])
    return slices, np.array(orders), np.array(ranges), np.array(errs)


def pixel_maps(poly: SlicePolynomials, det: int, step: int = 1, shape: tuple[int, int] = (2048, 2048),
               sigma: bool = True) -> tuple[dict, np.ndarray, np.ndarray]:
    """Images of one chip from the inverse polynomials: ``slice`` (0: none), ``xi`` [arcsec],
    ``lam`` [um], ``sigma_xi``, ``sigma_lam`` at pixels ``(row, col) = (j*step, i*step)``.

    A pixel belongs to a slice where that slice's inverse polynomial gives ``|xi| <= 0.4485``
    and a wavelength inside the part of the range it was fitted on.

    Parameters
    ----------
    poly : SlicePolynomials
        The setting's polynomials (:func:`slice_polynomials`).
    det : int
        Chip 1..4.
    step : int
        Sampling step [px].
    shape : (2,)
        The chip's (rows, cols).
    sigma : bool
        False leaves the sigma images out.

    Returns
    -------
    maps : dict of ndarray
        The images by name.
    cols, rows : ndarray
        The sampled detector columns and rows [px].
    """
    cols = np.arange(0, shape[1], step, dtype=float)
    rows = np.arange(0, shape[0], step, dtype=float)
    out = {"slice": np.zeros((rows.size, cols.size), np.int16)}
    for k in ("xi", "lam") + (("sigma_xi", "sigma_lam") if sigma else ()):
        out[k] = np.full((rows.size, cols.size), np.nan)
    t = poly.table
    lo, hi = poly.lam_range
    pad = _LAM_PAD * (hi - lo)
    for row in t[t["DET"] == det]:
        ri = np.flatnonzero((rows >= row["ROW_MIN"] - 3) & (rows <= row["ROW_MAX"] + 3))
        ci = np.flatnonzero((cols >= row["COL_MIN"] - 3) & (cols <= row["COL_MAX"] + 3))
        if not ri.size or not ci.size:
            continue
        RR, CC = np.meshgrid(rows[ri], cols[ci], indexing="ij")
        deg = int(round(np.sqrt(len(row["INV_XI"])))) - 1
        B = _bidegree_basis((CC.ravel() - _COL_CENTRE) / _COL_SCALE, (RR.ravel() - row["INV_ROW0"]) / row["INV_ROWSCL"],
                            deg)
        xi, lam = B @ np.asarray(row["INV_XI"]), B @ np.asarray(row["INV_LAM"])
        on = ((np.abs(xi) <= SLICE_HALF_LENGTH_ARCSEC) & (lam >= max(lo, row["LAM_MIN"] - pad))
              & (lam <= min(hi, row["LAM_MAX"] + pad)))
        if not on.any():
            continue
        jj, ii = np.unravel_index(np.flatnonzero(on), CC.shape)
        J, I = ri[jj], ci[ii]
        out["slice"][J, I] = row["SLICE"]
        out["xi"][J, I], out["lam"][J, I] = xi[on], lam[on]
        if sigma:
            n = len(row["INV_XI"])
            C = np.asarray(row["INV_COV"])
            Bo = B[on]
            out["sigma_xi"][J, I] = np.sqrt(np.maximum(np.sum((Bo @ C[:n, :n]) * Bo, axis=1), 0.0))
            out["sigma_lam"][J, I] = np.sqrt(np.maximum(np.sum((Bo @ C[n:, n:]) * Bo, axis=1), 0.0))
    return out, cols, rows


# ======================================================================================= QC
def lms_qc(residuals: Table, spots: Table | None = None, converged: bool | None = None) -> dict:
    """The QC parameters of the products.

    Parameters
    ----------
    residuals : Table
        The fit's residual table (``lms_residuals.ecsv``: ``kind``, ``row_index``, ``axis``,
        ``residual_px``).
    spots : Table, optional
        The fitted spot table (for ``fwhm_col_px`` / ``fwhm_row_px`` when measured).
    converged : bool, optional
        The chain's flag.

    Returns
    -------
    dict
        ``rms_px`` (sqrt(mean(dcol^2 + drow^2)) of the posterior-mean residuals of the laser spots
        used), ``nspots``, ``fwhm_px`` (median FWHM of the spots used, mean of the two axes; None
        when the tables have no widths), ``converged``.

    Raises
    ------
    ValueError
        The residual table has no ``residual_px`` column.
    """
    t = residuals[np.asarray(residuals["kind"]) == "spots"]
    if "residual_px" not in t.colnames:
        raise ValueError("the residual table has no 'residual_px' column (written by astrocal >= this "
                         "version): fit again")
    d = np.asarray(t["residual_px"], float)
    nspots = len(np.unique(np.asarray(t["row_index"])))
    rms = float(np.sqrt(np.sum(d ** 2) / nspots)) if nspots else float("nan")
    fwhm = None
    if spots is not None and {"fwhm_col_px", "fwhm_row_px"} <= set(spots.colnames):
        idx = np.unique(np.asarray(t["row_index"]))
        f = 0.5 * (np.asarray(spots["fwhm_col_px"], float)[idx] + np.asarray(spots["fwhm_row_px"], float)[idx])
        f = f[np.isfinite(f)]
        fwhm = float(np.median(f)) if f.size else None
    return {"rms_px": rms, "nspots": int(nspots), "fwhm_px": fwhm, "converged": converged}


def _primary(pro_catg, setting, qc, provenance):
    h = fits.Header()
    h["INSTRUME"] = ("METIS", "instrument")
    h["TELESCOP"] = ("ESO-ELT", "telescope")
    set_card(h, eso("PRO.CATG"), pro_catg, "product category")
    set_card(h, eso("DRS.IFU"), "Nominal", "IFU mode (INS.OPTI6.NAME)")
    for key, value in (("CATG", "CALIB"), ("TECH", "IFU"), ("TYPE", "DISTORTION")):
        set_card(h, eso(f"DPR.{key}"), value, "of the input frames")
    set_card(h, eso("INS.WLEN.CEN"), float(setting.lam_c_um), "[um] central wavelength of the setting")
    set_card(h, "HIERARCH ASTROCAL LMS ORDER", int(setting.order), "echelle order")
    set_card(h, "HIERARCH ASTROCAL LMS ECHELLE", float(setting.echelle_deg), "[deg] echelle angle (model)")
    if np.isfinite(qc["rms_px"]):
        set_card(h, eso("QC.IFU.DISTORT.RMS"), float(f"{qc['rms_px']:.3f}"), "[pixel] rms of spot residuals")
    if qc.get("fwhm_px") is not None:
        set_card(h, eso("QC.IFU.DISTORT.FWHM"), float(f"{qc['fwhm_px']:.3f}"), "[pixel] median FWHM of spots")
    set_card(h, eso("QC.IFU.DISTORT.NSPOTS"), int(qc["nspots"]), "number of identified spots used")
    conv = qc.get("converged")
    set_card(h, QC_CONVERGED, bool(conv) if conv is not None else "unknown", "emcee chain meets its rule")
    h["COMMENT"] = (f"product {pro_catg} of METIS recipe metis_ifu_distortion (METIS DRLD), written by "
                    "astrocal from its Bayesian fit of the LMS geometry (docs/lms.md)")
    h["COMMENT"] = ("QC IFU DISTORT RMS: sqrt(mean(dcol**2 + drow**2)) of the posterior-mean residuals "
                    "(measured - predicted, pixels) of the laser spots used in the fit, all settings")
    h["COMMENT"] = "QC IFU DISTORT NSPOTS: number of identified laser spots used in the fit, all settings"
    if qc.get("fwhm_px") is not None:
        h["COMMENT"] = "QC IFU DISTORT FWHM: median over those spots of the mean of the col and row FWHM"
    else:
        h["COMMENT"] = "QC IFU DISTORT FWHM: not written, the spot tables hold no widths"
    set_card(h, "CREATOR", f"astrocal {__version__}", "software that wrote the file")
    set_card(h, "DATE", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC creation date")
    set_card(h, "CAMPHASH", str(provenance.get("campaign_sha256") or ""), "sha256 of the campaign file")
    inputs = [str(p) for p in provenance.get("inputs", ())]
    h["NINPUTS"] = (len(inputs), "number of input files (INPUT<k>)")
    for k, path in enumerate(inputs, start=1):
        h[f"INPUT{k}"] = path
    h["TRUTHDIR"] = (str(provenance.get("truth", "")), "optical-model direction taken as exact")
    _hole_prior_cards(h, provenance.get("hole_prior"))
    return h


def _hole_prior_cards(h, hp):
    """The hole-error prior of the fit (``provenance['hole_prior']``,
    :func:`astrocal.lms.fit_campaign._hole_prior_header`): ``HIERARCH ASTROCAL LMS HOLEPRIOR``
    (none, tolerance, imager), the holes fitted and shared, the imager's posterior's SHA-256, and
    a HISTORY line saying it."""
    if not hp:
        return
    set_card(h, "HIERARCH ASTROCAL LMS HOLEPRIOR", str(hp.get("kind", "none")),
           "mask hole errors: none, tolerance or imager (joint)")
    set_card(h, "HIERARCH ASTROCAL LMS HOLES", int(hp.get("n_holes", 0)), "mask holes whose errors were fitted")
    set_card(h, "HIERARCH ASTROCAL LMS HOLESHARED", int(hp.get("n_shared", 0)), "of them, prior from the imager fit")
    if hp.get("sha256"):
        set_card(h, "HIERARCH ASTROCAL LMS HOLESHA", str(hp["sha256"])[:40], "sha256 of the imager posterior.h5")
    if hp.get("line"):
        h["HISTORY"] = str(hp["line"])


# ================================================================================== writers
def write_ifu_distortion_table(fit: LmsFit, setting: SettingLike, path: str | os.PathLike, qc: dict,
                               provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Write the pipeline's ``IFU_DISTORTION_TABLE`` of one setting (see the module notes).

    Parameters
    ----------
    fit : LmsFit
        The fit (:class:`~astrocal.lms.fit.LmsFit`): its posterior-mean geometry and the draws of
        its deviations.
    setting : int, float or EchelleSetting
        Index, :class:`~astrocal.lms.EchelleSetting` or central wavelength [um].
    path : str or os.PathLike
        The file written.
    qc : dict
        :func:`lms_qc`'s parameters.
    provenance : dict, optional
        ``campaign_sha256``, ``inputs``, ``hole_prior`` for the primary header.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.
    """
    provenance = dict(provenance or {}, truth=fit.truth)
    st = fit.layout.settings[fit.layout.setting_index(setting)]
    hdus = [fits.PrimaryHDU(header=_primary("IFU_DISTORTION_TABLE", st, qc, provenance))]
    for det in (1, 2, 3, 4):
        slices, orders, ranges, errs = trace_table_rows(fit, setting, det)
        hdu = fits.BinTableHDU.from_columns([fits.Column("orders", "5D", array=orders),
                                             fits.Column("column_range", "2D", array=ranges)], name=f"DET{det}")
        h = hdu.header
        h["SLICE1"] = (int(slices[0]), "slice (1..28) of row 1; then one up per row")
        h["FITMAX"] = (float(f"{errs.max():.3e}"), "[pixel] largest misfit of the polynomials")
        h["COMMENT"] = ("row k: the centre line (xi = 0) of slice SLICE1 + k - 1 of the posterior-mean "
                        "geometry: row = sum orders[i] * col**(4 - i), 0-based pixels; columns "
                        "column_range[0] <= col < column_range[1] (illuminated, reached by the line)")
        hdus.append(hdu)
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def _sampled_image(data, name, step, unit, comment):
    im = fits.ImageHDU(data, name=name)
    if unit:
        im.header["BUNIT"] = unit
    for axis in (1, 2):
        im.header[f"CTYPE{axis}"] = ("LINEAR", "0-based detector pixel")
        im.header[f"CRPIX{axis}"] = 1.0
        im.header[f"CRVAL{axis}"] = (0.0, "0-based detector pixel of image pixel 1")
        im.header[f"CDELT{axis}"] = (float(step), "[pixel] sampling step")
    im.header["COMMENT"] = comment
    return im


def write_lms_geometry(fit: LmsFit, setting: SettingLike, path: str | os.PathLike, qc: dict,
                       provenance: dict | None = None, overwrite: bool = False, step: int = 1, sigma_step: int = 8,
                       poly: SlicePolynomials | None = None) -> Path:
    """Write astrocal's full LMS geometry product of one setting (see the module notes).

    In every image, image pixel ``(i, j)`` (1-based) is the 0-based detector pixel
    ``((i - 1) CDELT1, (j - 1) CDELT2)``. ``DLAM`` is ``lam - LAMREF`` (float32 keeps
    2e-4 px there; ``LAMREF`` = the setting's central wavelength).

    Parameters
    ----------
    fit : LmsFit
        The fit (:class:`~astrocal.lms.fit.LmsFit`): its posterior-mean geometry and the draws of
        its deviations.
    setting : int, float or EchelleSetting
        Index, :class:`~astrocal.lms.EchelleSetting` or central wavelength [um].
    path : str or os.PathLike
        The file written.
    qc : dict
        :func:`lms_qc`'s parameters.
    provenance : dict, optional
        ``campaign_sha256``, ``inputs``, ``hole_prior`` for the primary header.
    overwrite : bool
        Replace an existing file.
    step : int
        The ``XI``, ``DLAM`` and ``SLICE`` images sample every ``step``-th pixel (1: every pixel).
    sigma_step : int
        The same for ``SIGMA_XI`` and ``SIGMA_LAM`` (smooth).
    poly : SlicePolynomials, optional
        The setting's polynomials if already computed (default: :func:`slice_polynomials`).

    Returns
    -------
    Path
        ``path``.
    """
    provenance = dict(provenance or {}, truth=fit.truth)
    e = fit.layout.setting_index(setting)
    st = fit.layout.settings[e]
    poly = poly or slice_polynomials(fit, e)
    ph = _primary("LMS_GEOMETRY", st, qc, provenance)
    ph["COMMENT"] = "astrocal's full LMS geometry product (not a METIS pipeline category); docs/lms.md"
    ph["NDRAWS"] = (int(len(fit.param_samples)), "posterior draws behind the covariances")
    hdus = [fits.PrimaryHDU(header=ph)]
    th = fits.table_to_hdu(poly.table)
    th.name = "SLICES"
    lo, hi = poly.lam_range
    h = th.header
    h["LAMLO"] = (lo, "[um] W = -1")
    h["LAMHI"] = (hi, "[um] W = +1")
    h["XISCALE"] = (SLICE_HALF_LENGTH_ARCSEC, "[arcsec] U = xi / XISCALE")
    h["FWDDEG"] = (poly.forward_degree, "forward: powers 0..FWDDEG of U and of W")
    h["INVDEG"] = (poly.inverse_degree, "inverse: powers 0..INVDEG of C and of R")
    h["COLCEN"] = (_COL_CENTRE, "[pixel] C = (col - COLCEN) / COLSCL, 0-based")
    h["COLSCL"] = (_COL_SCALE, "[pixel]")
    h["COMMENT"] = "W = (2 lam - (LAMLO + LAMHI)) / (LAMHI - LAMLO); R = (row - INV_ROW0) / INV_ROWSCL"
    h["COMMENT"] = ("FWD_COL, FWD_ROW: col, row = sum_k c[k] U**i W**j, k = i*(FWDDEG+1) + j, on chip DET; "
                    "INV_XI, INV_LAM: xi, lam = sum_k c[k] C**i R**j, k = i*(INVDEG+1) + j")
    h["COMMENT"] = ("FWD_COV: covariance of (FWD_COL, FWD_ROW); INV_COV: of (INV_XI, INV_LAM); "
                    "exact linear propagation of the posterior draws of the deviations")
    h["COMMENT"] = "pixel coordinates are 0-based pixel centres of the chip DET"
    hdus.append(th)
    lamref = float(st.lam_c_um)
    for det in (1, 2, 3, 4):
        maps, _, _ = pixel_maps(poly, det, step, sigma=False)
        sig, _, _ = pixel_maps(poly, det, sigma_step)
        note = "from the inverse polynomials of SLICES; NaN (SLICE 0) off the slices"
        hdus.append(_sampled_image(maps["xi"].astype(np.float32), f"DET{det}.XI", step, "arcsec", note))
        dl = _sampled_image((maps["lam"] - lamref).astype(np.float32), f"DET{det}.DLAM", step, "um",
                            note + "; lam = DLAM + LAMREF")
        dl.header["LAMREF"] = (lamref, "[um] lam = DLAM + LAMREF")
        hdus.append(dl)
        hdus.append(_sampled_image(maps["slice"].astype(np.uint8), f"DET{det}.SLICE", step, "",
                                   "slice number 1..28 of each pixel, 0: none"))
        for key, name in (("sigma_xi", "SIGMA_XI"), ("sigma_lam", "SIGMA_LAM")):
            hdus.append(_sampled_image(sig[key].astype(np.float32), f"DET{det}.{name}", sigma_step,
                                       "arcsec" if key == "sigma_xi" else "um",
                                       "posterior 1-sigma at fixed pixel (exact propagation of the draws)"))
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def write_lms_products(fit: LmsFit, out: str | os.PathLike, residuals: Table, spots: Table | None = None,
                       provenance: dict | None = None, overwrite: bool = False, step: int = 1,
                       sigma_step: int = 8) -> tuple[dict[str, Path], dict]:
    """Write both products of every setting into ``out``.

    Parameters
    ----------
    fit : LmsFit
        The fit (:class:`~astrocal.lms.fit.LmsFit`): its posterior-mean geometry and the draws of
        its deviations.
    out : str or os.PathLike
        The result directory.
    residuals, spots : Table
        The fit's residual table and fitted spot table (:func:`lms_qc`).
    provenance : dict, optional
        ``campaign_sha256``, ``inputs``, ``hole_prior`` for the primary headers.
    overwrite : bool
        Replace existing files.
    step, sigma_step : int
        Sampling of the geometry product's images (:func:`write_lms_geometry`).

    Returns
    -------
    paths : dict
        ``{name: path}`` (names ``ifu_distortion_table_<tag>``, ``lms_geometry_<tag>``).
    qc : dict
        :func:`lms_qc`'s parameters.
    """
    out = Path(out)
    conv = getattr(fit.diagnostics, "converged", None) if fit.diagnostics is not None else None
    qc = lms_qc(residuals, spots, conv)
    paths = {}
    for e, st in enumerate(fit.layout.settings):
        tag = setting_tag(st.lam_c_um)
        paths[f"ifu_distortion_table_{tag}"] = write_ifu_distortion_table(
            fit, e, out / f"IFU_DISTORTION_TABLE_{tag}.fits", qc, provenance, overwrite)
        paths[f"lms_geometry_{tag}"] = write_lms_geometry(fit, e, out / f"LMS_GEOMETRY_{tag}.fits", qc, provenance,
                                                          overwrite, step, sigma_step)
    return paths, qc
