"""Laser spots on LMS frames: prediction, detection, identification and centroids with covariance.

A WCU laser frame shows one spot per (mask hole in the field, laser line): the diffraction PSF
cut by the slice (a ~2.7-px segment along the dispersion = columns, ~2 px FWHM along the slice
= rows), plus faint images (~13 %) of the PSF's wings in the neighbouring slices, ~130 px away
in rows.

:func:`predict_laser_spots` puts every (hole, line) on the mosaic with a geometry (the nominal
one, or any :class:`~astrocal.lms.LmsGeometry`), with the prior width of each predicted position
(``sqrt(diag(D Sigma D^T))`` from the deviation priors). :func:`measure_laser_spots` then

1. finds peaks (3 x 3 box-smoothed signal-to-noise above ``snr_min``) on each detector;
2. identifies them: a vote over all (prediction, peak) differences within ``window_nsigma``
   prior widths gives each detector's shift; an affine correction per detector fitted to the
   nearest matches follows; every prediction then takes the one peak within ``match_radius_px``;
3. centroids each identified spot in a box of ``2 box_half_cols + 1`` columns (flat weight: the
   light centroid along the dispersion, which an off-centre hole makes asymmetric) times a
   Gaussian window of ``row_window_sigma_px`` along the rows (the slice), iterated to its fixed
   point; the covariance is the exact linear propagation of the per-pixel variance through that
   fixed point.

Flags (bits, :data:`SPOT_FLAGS`): ``slice_end`` (the hole lies within ``edge_margin_arcsec`` of a
slice end: the slice cuts its PSF, centroid shifts up to ~5 px; drop), ``blend`` (another
predicted image, main or neighbour, within the box), ``chip_edge`` (box touches unusable pixels),
``saturated``, ``low_snr``, ``not_found`` (no peak: NaN position), ``ambiguous`` (two peaks within
the match radius). Not modelled here (the fit must): a hole off the slice centre moves its line
along the dispersion (a 1-mas chopper error ~0.03-0.04 px) and along the slice by
``drow_dxi * dxi`` (columns ``dcol_dxi``, ``drow_dxi`` give the partials).

Pixels: 0-based pixel centres on each detector (``det`` 1..4); positions in px, fluxes in
electrons per DIT.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from astropy.table import Table
from scipy import ndimage

from .deviations import Hyperparameters
from .errors import LineNotFoundError, LineOutsideSettingError
from .frames import ReducedLmsFrame
from .geometry import LmsGeometry
from .slicer import DEFAULT_ORIENTATION, FieldOrientation, field_to_slice
from .traces import SLICE_HALF_LENGTH_ARCSEC, SLICE_WIDTH_ARCSEC, SettingLike

__all__ = ["SPOT_FLAGS", "SPOT_FLAGS_SEVERE", "PIXEL_SCALE_ARCSEC", "prior_position_sigma", "holes_in_slicer",
           "predict_laser_spots", "find_peaks", "match_predictions", "windowed_centroids", "spot_widths",
           "measure_laser_spots", "decode_spot_flags"]

SPOT_FLAGS = {"slice_end": 1, "blend": 2, "chip_edge": 4, "saturated": 8, "low_snr": 16, "not_found": 32,
              "ambiguous": 64, "off_centre": 128}
"""Flag bits of a measured spot. ``off_centre``: the hole is commanded more than
:data:`OFF_CENTRE_TOLERANCE` slice widths from its slice's centre (a slit-loss scan exposure): its light
centroid along the dispersion depends on the slit loss, so the geometry fit leaves it out; the
slit-loss estimate (:mod:`astrocal.lms.response`) uses it."""
OFF_CENTRE_TOLERANCE = 0.1
"""Largest commanded offset of a hole from its slice centre [slice widths] for a spot the geometry uses."""
SPOT_FLAGS_SEVERE = sum(SPOT_FLAGS.values())
"""Flags that make a spot unusable for the fit (all of them)."""
PIXEL_SCALE_ARCSEC = 0.0082
"""Nominal LMS pixel scale along the slice [arcsec/px] (used only to size windows)."""
_ELT_D_M = 39.146


def decode_spot_flags(flags: int) -> list[str]:
    """Names of the bits set in one flag value.

    Parameters
    ----------
    flags : int
        A ``flags`` value of a spot table (:data:`SPOT_FLAGS`).

    Returns
    -------
    list of str
        The names of its bits, in the order of :data:`SPOT_FLAGS`.
    """
    return [n for n, b in SPOT_FLAGS.items() if int(flags) & b]


def prior_position_sigma(geometry: LmsGeometry, slice_number: ArrayLike, xi: ArrayLike, lam: ArrayLike,
                         setting: SettingLike, det: ArrayLike,
                         hyper: Hyperparameters = Hyperparameters()) -> tuple[np.ndarray, np.ndarray]:
    """Prior standard deviation of predicted positions [px]: ``sqrt(diag(D Sigma D^T))``.

    Parameters
    ----------
    geometry : LmsGeometry
        The map whose design matrix ``D`` is used.
    slice_number, xi, lam : array_like
        The points: slice 1..28, position along the slice [arcsec], wavelength [um].
    setting : int, float or EchelleSetting
        The echelle setting in ``geometry.layout``.
    det : array_like
        Detector of each point (1..4).
    hyper : Hyperparameters
        The deviation priors (``Sigma``).

    Returns
    -------
    sigma_col, sigma_row : ndarray
        [px], from :meth:`LmsGeometry.design_matrix` and ``layout.prior_sigma(hyper)``.
    """
    d = geometry.design_matrix(slice_number, xi, lam, setting, det=det)
    s2 = geometry.layout.prior_sigma(hyper) ** 2
    var = np.einsum("nkp,p->nk", d * d, s2)
    return np.sqrt(var[:, 0]), np.sqrt(var[:, 1])


def holes_in_slicer(hole_ab_arcsec: ArrayLike, offset_arcsec: ArrayLike = (0.0, 0.0),
                    orientation: FieldOrientation = DEFAULT_ORIENTATION
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mask holes in the slicer field at a chopper offset.

    Parameters
    ----------
    hole_ab_arcsec : ndarray (N, 2)
        Hole positions in the field (mask) frame [arcsec].
    offset_arcsec : (2,)
        Chopper offset in the field frame [arcsec] (commanded).
    orientation : FieldOrientation
        The mask's orientation in the slicer field.

    Returns
    -------
    index, slice, xi, eta_offset : ndarrays
        Rows of the holes inside the field, slice 1..28, ``xi`` [arcsec], offset across the slice
        from its centre [arcsec].
    """
    ab = np.asarray(hole_ab_arcsec, float).reshape(-1, 2) + np.asarray(offset_arcsec, float)[None, :]
    s, xi, deta = field_to_slice(ab[:, 0], ab[:, 1], orientation)
    idx = np.flatnonzero(s > 0)
    return idx, s[idx], xi[idx], deta[idx]


def _check_lines(geometry, setting, lines_um):
    lines = np.atleast_1d(np.asarray(lines_um, float))
    lo, hi = geometry.wavelength_range(setting)
    bad = ~np.isfinite(lines) | (lines < lo) | (lines > hi)
    if lines.size == 0:
        raise LineOutsideSettingError("no laser line given")
    if bad.any():
        st = geometry.layout.settings[geometry.layout.setting_index(setting)]
        raise LineOutsideSettingError(
            f"laser line(s) {lines[bad].tolist()} um outside the range {lo:.5f}..{hi:.5f} um of the echelle "
            f"setting lam_c = {st.lam_c_um} um (order {st.order}): not on the detectors in this setting")
    return lines


def predict_laser_spots(geometry: LmsGeometry, setting: SettingLike, hole_ab_arcsec: ArrayLike, lines_um: ArrayLike,
                        *, offset_arcsec: ArrayLike = (0.0, 0.0), orientation: FieldOrientation = DEFAULT_ORIENTATION,
                        hole_id: ArrayLike | None = None, hyper: Hyperparameters = Hyperparameters(),
                        edge_margin_arcsec: float = 0.1) -> Table:
    """Where the laser spots (main images) and their neighbour-slice images fall.

    Parameters
    ----------
    geometry : LmsGeometry
        The map used (nominal for a first measurement).
    setting : int, EchelleSetting or float
        The frame's echelle setting in ``geometry.layout``.
    hole_ab_arcsec : ndarray (N, 2)
        Mask holes in the field frame [arcsec]; ``hole_id`` (N,) their ids (default 1..N).
    lines_um : array_like
        The lit laser lines [um].
    offset_arcsec : (2,)
        Commanded chopper offset [arcsec].
    orientation : FieldOrientation
        The mask's orientation in the slicer field.
    hyper : Hyperparameters
        The deviation priors that give the prior widths.
    edge_margin_arcsec : float
        Holes within this of a slice end [arcsec] are ``slice_end``.

    Returns
    -------
    Table
        One row per image on a detector: ``hole``, ``slice`` (of the image), ``hole_slice``,
        ``main``, ``line_um``, ``xi_arcsec``, ``eta_offset_arcsec``, ``det``, ``col_pred``,
        ``row_pred`` [px] and, for main images, ``sigma_pred_col``/``sigma_pred_row`` [px] (prior
        width) and ``slice_end`` (the hole within ``edge_margin_arcsec`` of a slice end).

    Raises
    ------
    LineOutsideSettingError
        A line outside the setting's wavelength range.
    """
    lines = _check_lines(geometry, setting, lines_um)
    ab = np.asarray(hole_ab_arcsec, float).reshape(-1, 2)
    ids = np.arange(1, len(ab) + 1) if hole_id is None else np.asarray(hole_id)
    idx, sl, xi, deta = holes_in_slicer(ab, offset_arcsec, orientation)
    nh, nl = len(idx), len(lines)
    h = np.repeat(idx, nl)
    s0, x0, e0 = np.repeat(sl, nl), np.repeat(xi, nl), np.repeat(deta, nl)
    lam = np.tile(lines, nh)
    rows = []
    for dk in (0, -1, 1):
        s = s0 + dk
        ok = (s >= 1) & (s <= 28)
        pts = geometry.forward(s[ok], x0[ok], lam[ok], setting, on_gap="mask")
        rows.append(dict(hole=ids[h[ok]], slice=s[ok], hole_slice=s0[ok], main=np.full(ok.sum(), dk == 0),
                         line_um=lam[ok], xi_arcsec=x0[ok], eta_offset_arcsec=e0[ok],
                         det=pts.det, col_pred=pts.col, row_pred=pts.row))
    cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    on = cols["det"] > 0
    t = Table({k: v[on] for k, v in cols.items()})
    m = np.asarray(t["main"])
    sc, sr = np.full(len(t), np.nan), np.full(len(t), np.nan)
    if m.any():
        sc[m], sr[m] = prior_position_sigma(geometry, t["slice"][m], t["xi_arcsec"][m], t["line_um"][m], setting,
                                            t["det"][m], hyper)
    t["sigma_pred_col"], t["sigma_pred_row"] = sc, sr
    t["slice_end"] = np.abs(t["xi_arcsec"]) > SLICE_HALF_LENGTH_ARCSEC - edge_margin_arcsec
    for c, u, d in (("xi_arcsec", "arcsec", "hole position along the slice (commanded offset)"),
                    ("eta_offset_arcsec", "arcsec", "hole offset across the slice from its centre"),
                    ("line_um", "um", "laser line"), ("col_pred", "pix", "predicted column (0-based)"),
                    ("row_pred", "pix", "predicted row (0-based)"),
                    ("sigma_pred_col", "pix", "prior width of the predicted column"),
                    ("sigma_pred_row", "pix", "prior width of the predicted row")):
        t[c].unit, t[c].description = u, d
    return t


def find_peaks(data: np.ndarray, variance: np.ndarray, valid: np.ndarray, snr_min: float = 10.0,
               size: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of the 3 x 3 box-smoothed signal with signal-to-noise above ``snr_min``.

    Parameters
    ----------
    data, variance : ndarray (ny, nx)
        One detector's signal and variance [e, e^2].
    valid : ndarray (ny, nx) of bool
        Its usable pixels.
    snr_min : float
        Detection threshold on the signal-to-noise of the 3 x 3 sum.
    size : int
        A peak is the maximum of the ``size`` x ``size`` box about it.

    Returns
    -------
    col, row : ndarray of int
        Peak pixels (0-based).
    snr : ndarray
        Signal-to-noise of the 3 x 3 sum there.
    """
    d = np.where(valid, data, 0.0).astype(np.float32)
    v = np.where(valid, variance, 0.0).astype(np.float32)
    s = ndimage.uniform_filter(d, 3, mode="constant") * 9
    sv = ndimage.uniform_filter(v, 3, mode="constant") * 9
    n_valid = ndimage.uniform_filter(valid.astype(np.float32), 3, mode="constant") * 9
    snr = np.where((sv > 0) & (n_valid > 8.5), s / np.sqrt(np.maximum(sv, 1e-30)), 0.0)
    peak = (s == ndimage.maximum_filter(s, size, mode="constant")) & (snr > snr_min)
    row, col = np.nonzero(peak)
    return col, row, snr[row, col]


def _vote_shift(pc, pr, qc, qr, wc, wr, cluster=3):
    """Most common (peak - prediction) difference within +-(wc, wr) [px]; and its support.

    Votes are counted in 1-px bins and summed over ``2 cluster + 1`` bins per axis (the
    residual variation over a detector after a common shift: rotation, per-slice terms), so that
    the true shift, matched by all spots, outvotes the aliases of the grid's regular spacing."""
    dc = qc[None, :] - pc[:, None]
    dr = qr[None, :] - pr[:, None]
    ok = (np.abs(dc) <= wc) & (np.abs(dr) <= wr)
    if not ok.any():
        return 0.0, 0.0, 0
    nc, nr = int(np.ceil(wc)), int(np.ceil(wr))
    hist, _, _ = np.histogram2d(dc[ok], dr[ok], bins=[2 * nc + 1, 2 * nr + 1],
                                range=[[-nc - 0.5, nc + 0.5], [-nr - 0.5, nr + 0.5]])
    k = 2 * cluster + 1
    sm = ndimage.uniform_filter(hist, k, mode="constant") * k * k
    i, j = np.unravel_index(np.argmax(sm), sm.shape)
    c0, r0 = i - nc, j - nr
    near = ok & (np.abs(dc - c0) <= cluster + 0.5) & (np.abs(dr - r0) <= cluster + 0.5)
    return float(np.median(dc[near])), float(np.median(dr[near])), int(near.sum())


def _nearest(pc, pr, qc, qr, radius):
    """Index of the nearest peak within ``radius`` of each prediction (-1: none) and the count there."""
    if len(qc) == 0:
        return np.full(len(pc), -1), np.zeros(len(pc), int)
    d2 = (qc[None, :] - pc[:, None]) ** 2 + (qr[None, :] - pr[:, None]) ** 2
    j = np.argmin(d2, axis=1)
    best = d2[np.arange(len(pc)), j]
    n = np.sum(d2 <= radius**2, axis=1)
    return np.where(best <= radius**2, j, -1), n


def match_predictions(pc: ArrayLike, pr: ArrayLike, qc: ArrayLike, qr: ArrayLike, window_col: float,
                      window_row: float, match_radius: float = 6.0,
                      affine_radius: float = 6.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identify peaks with predictions on one detector.

    Parameters
    ----------
    pc, pr : array_like
        Predicted (col, row) [px].
    qc, qr : array_like
        The peaks (col, row) [px].
    window_col, window_row : float
        Half-widths [px] of the search for the detector's common shift (from the prior widths).
    match_radius : float
        A corrected prediction takes the nearest peak within this radius [px].
    affine_radius : float
        Radius [px] of the nearest matches (after the shift) used to fit the affine correction.

    Returns
    -------
    match : ndarray of int
        Index of the peak taken by each prediction (-1: none).
    n_within : ndarray of int
        Peaks within ``match_radius`` of the corrected prediction (> 1: ambiguous).
    correction : ndarray (N, 2)
        The shift + affine correction applied to the predictions [px].
    """
    pc, pr, qc, qr = (np.asarray(a, float) for a in (pc, pr, qc, qr))
    sc, sr, support = _vote_shift(pc, pr, qc, qr, window_col, window_row)
    corr = np.tile([sc, sr], (len(pc), 1))
    if support == 0:
        return np.full(len(pc), -1), np.zeros(len(pc), int), corr
    j, _ = _nearest(pc + corr[:, 0], pr + corr[:, 1], qc, qr, affine_radius)
    ok = j >= 0
    if ok.sum() >= 6:
        a = np.stack([np.ones(ok.sum()), (pc[ok] - 1023.5) / 1024, (pr[ok] - 1023.5) / 1024], axis=1)
        res = np.stack([qc[j[ok]] - pc[ok], qr[j[ok]] - pr[ok]], axis=1)
        keep = np.ones(ok.sum(), bool)
        for _ in range(2):
            coef, *_ = np.linalg.lstsq(a[keep], res[keep], rcond=None)
            r = np.hypot(*(res - a @ coef).T)
            keep = r <= max(3 * np.median(r[keep]) * 1.4826, 1.0)
            if keep.sum() < 6:
                break
        if keep.sum() >= 6:
            full = np.stack([np.ones(len(pc)), (pc - 1023.5) / 1024, (pr - 1023.5) / 1024], axis=1)
            corr = full @ coef
    j, n = _nearest(pc + corr[:, 0], pr + corr[:, 1], qc, qr, match_radius)
    return j, n, corr


def windowed_centroids(data: np.ndarray, variance: np.ndarray, valid: np.ndarray, col0: ArrayLike,
                       row0: ArrayLike, half_cols: int = 4, half_rows: int = 8, row_sigma: float = 2.0,
                       n_iter: int = 30
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centroids of stamps: flat weight over columns, a Gaussian window along rows, with covariance.

    The estimate ``c`` solves ``sum_i w_i (x_i - c) I_i = 0`` with ``w_i = exp(-(r_i - c_row)^2 /
    (2 row_sigma^2))`` inside the box ``col0 +- half_cols``, ``row0 +- half_rows`` (integer centre):
    the light centroid along the columns and the centre of symmetry along the rows. The
    covariance is ``J^-1 A J^-T`` with ``A = sum_i var_i a_i a_i^T``, ``a_i = w_i (x_i - c)`` and
    ``J`` the derivative of the estimating equations with respect to ``c``.

    Parameters
    ----------
    data, variance, valid : ndarray (ny, nx)
        One detector [e, e^2, bool].
    col0, row0 : ndarray of int (N,)
        Box centres (peak pixels).
    half_cols, half_rows : int
        Half-sizes of the box [px].
    row_sigma : float
        Width of the Gaussian window along the rows [px].
    n_iter : int
        Fixed-point iterations at most.

    Returns
    -------
    col, row : ndarray (N,)
        [px]; NaN where it did not converge or the weight vanished.
    cov : ndarray (N, 2, 2)
        [px^2] (col, row).
    flux, flux_var : ndarray (N,)
        Unweighted box sum [e] and its variance.
    n_bad : ndarray (N,)
        Unusable pixels in the box.
    """
    col0, row0 = np.asarray(col0, int), np.asarray(row0, int)
    n = len(col0)
    dc = np.arange(-half_cols, half_cols + 1)
    dr = np.arange(-half_rows, half_rows + 1)
    cc = col0[:, None, None] + dc[None, None, :]
    rr = row0[:, None, None] + dr[None, :, None]
    ny, nx = data.shape
    inside = (cc >= 0) & (cc < nx) & (rr >= 0) & (rr < ny)
    cci, rri = np.clip(cc, 0, nx - 1), np.clip(rr, 0, ny - 1)
    ok = inside & valid[rri, cci]
    img = np.where(ok, data[rri, cci], 0.0).astype(float)
    var = np.where(ok, variance[rri, cci], 0.0).astype(float)
    x = np.broadcast_to(cc, img.shape).astype(float)
    y = np.broadcast_to(rr, img.shape).astype(float)
    flux = img.sum(axis=(1, 2))
    flux_var = var.sum(axis=(1, 2))
    n_bad = (~ok).sum(axis=(1, 2))
    c_col = col0.astype(float)
    c_row = row0.astype(float)
    for _ in range(n_iter):
        w = np.exp(-0.5 * ((y - c_row[:, None, None]) / row_sigma) ** 2)
        s = (w * img).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            new_c = (w * img * x).sum(axis=(1, 2)) / s
            new_r = (w * img * y).sum(axis=(1, 2)) / s
        step = np.abs(new_r - c_row)
        c_col, c_row = new_c, np.clip(new_r, row0 - half_rows, row0 + half_rows)
        if np.all(~np.isfinite(step) | (step < 1e-6)):
            break
    w = np.exp(-0.5 * ((y - c_row[:, None, None]) / row_sigma) ** 2)
    ux, uy = x - c_col[:, None, None], y - c_row[:, None, None]
    wi = w * img
    j = np.zeros((n, 2, 2))
    j[:, 0, 0] = -wi.sum(axis=(1, 2))
    j[:, 0, 1] = (wi * uy * ux).sum(axis=(1, 2)) / row_sigma**2
    j[:, 1, 1] = (wi * (uy * uy / row_sigma**2 - 1)).sum(axis=(1, 2))
    a = np.zeros((n, 2, 2))
    a[:, 0, 0] = (w * w * var * ux * ux).sum(axis=(1, 2))
    a[:, 0, 1] = a[:, 1, 0] = (w * w * var * ux * uy).sum(axis=(1, 2))
    a[:, 1, 1] = (w * w * var * uy * uy).sum(axis=(1, 2))
    cov = np.full((n, 2, 2), np.nan)
    good = np.isfinite(c_col) & np.isfinite(c_row) & (np.abs(np.linalg.det(j)) > 0)
    if good.any():
        ji = np.linalg.inv(j[good])
        cov[good] = ji @ a[good] @ np.transpose(ji, (0, 2, 1))
    bad = ~good | (np.abs(c_row - row0) >= half_rows) | (np.abs(c_col - col0) > half_cols)
    c_col, c_row = np.where(bad, np.nan, c_col), np.where(bad, np.nan, c_row)
    return c_col, c_row, cov, flux, flux_var, n_bad


def spot_widths(data: np.ndarray, valid: np.ndarray, col: ArrayLike, row: ArrayLike, half_cols: int = 4,
                half_rows: int = 8, row_sigma: float = 2.0) -> np.ndarray:
    """FWHM [px] of spots along columns and rows, from second moments in the centroid's box.

    Along the rows, the Gaussian-windowed second moment ``m`` of the light about ``row`` is
    corrected for the window (exact for a Gaussian profile: ``s^2 = m w^2 / (w^2 - m)``,
    ``w = row_sigma``); along the columns (the slice-cut segment of the line, not Gaussian) the
    flat-weighted second moment under the same row window. Both are given as ``2.3548 s``
    (a Gaussian's FWHM for its rms width): a quality indicator (the DRLD's QC IFU DISTORT FWHM),
    not a fitted width. NaN where the moment is not positive or the window correction fails.

    Parameters
    ----------
    data, valid : ndarray (ny, nx)
        One detector [e] and its usable pixels.
    col, row : ndarray (N,)
        Centroids [px] (NaN: none).
    half_cols, half_rows : int
        Half-sizes of the box [px].
    row_sigma : float
        Width of the Gaussian row window [px] (``w``).

    Returns
    -------
    ndarray (N, 2)
        FWHM along (columns, rows) [px].
    """
    col, row = np.asarray(col, float), np.asarray(row, float)
    out = np.full((len(col), 2), np.nan)
    ok = np.isfinite(col) & np.isfinite(row)
    if not ok.any():
        return out
    c0, r0 = np.round(col[ok]).astype(int), np.round(row[ok]).astype(int)
    dc = np.arange(-half_cols, half_cols + 1)
    dr = np.arange(-half_rows, half_rows + 1)
    cc = c0[:, None, None] + dc[None, None, :]
    rr = r0[:, None, None] + dr[None, :, None]
    ny, nx = data.shape
    inside = (cc >= 0) & (cc < nx) & (rr >= 0) & (rr < ny)
    cci, rri = np.clip(cc, 0, nx - 1), np.clip(rr, 0, ny - 1)
    img = np.where(inside & valid[rri, cci], data[rri, cci], 0.0).astype(float)
    ux = cc - col[ok][:, None, None]
    uy = rr - row[ok][:, None, None]
    wi = np.exp(-0.5 * (uy / row_sigma) ** 2) * img
    with np.errstate(invalid="ignore", divide="ignore"):
        s = wi.sum(axis=(1, 2))
        mc = (wi * ux * ux).sum(axis=(1, 2)) / s
        mr = (wi * uy * uy).sum(axis=(1, 2)) / s
        w2 = row_sigma ** 2
        vr = np.where((mr > 0) & (mr < w2), mr * w2 / (w2 - mr), np.nan)
        vc = np.where(mc > 0, mc, np.nan)
    out[ok, 0] = 2.3548 * np.sqrt(vc)
    out[ok, 1] = 2.3548 * np.sqrt(vr)
    return out


def _dxi_partials(geometry, setting, slice_number, xi, lam, h=2e-3):
    """d(col, row)/d(xi) [px/arcsec] by central differences (one-sided at the slice ends)."""
    lim = SLICE_HALF_LENGTH_ARCSEC
    x1, x2 = np.minimum(xi + h, lim), np.maximum(xi - h, -lim)
    p1 = geometry.forward(slice_number, x1, lam, setting, on_gap="mask")
    p2 = geometry.forward(slice_number, x2, lam, setting, on_gap="mask")
    same = p1.det == p2.det
    with np.errstate(invalid="ignore", divide="ignore"):
        dc = np.where(same, (p1.col - p2.col) / (x1 - x2), np.nan)
        dr = np.where(same, (p1.row - p2.row) / (x1 - x2), np.nan)
    return dc, dr


def measure_laser_spots(reduced: ReducedLmsFrame, geometry: LmsGeometry, hole_ab_arcsec: ArrayLike,
                        lines_um: ArrayLike, *, setting: SettingLike | None = None,
                        offset_arcsec: ArrayLike | None = None, orientation: FieldOrientation = DEFAULT_ORIENTATION,
                        hole_id: ArrayLike | None = None, hyper: Hyperparameters = Hyperparameters(),
                        edge_margin_arcsec: float = 0.1, snr_min: float = 10.0, window_nsigma: float = 4.0,
                        match_radius_px: float = 6.0, box_half_cols: int = 4, box_half_rows: int = 8,
                        row_window_sigma_px: float | None = None, min_found_fraction: float = 0.5) -> Table:
    """Find, identify and centroid the laser spots of one reduced laser frame.

    Parameters
    ----------
    reduced : ReducedLmsFrame
        The background-subtracted frame (:func:`~astrocal.lms.frames.reduce_lms_frame`).
    geometry : LmsGeometry
        The map that predicts the spots (the nominal one: ``LmsGeometry(layout)``).
    hole_ab_arcsec, hole_id : array_like
        The mask's holes in the field frame [arcsec] (N, 2) and their ids (default 1..N).
    lines_um : array_like
        The lit laser lines [um] (from the campaign; the header names only the first QCL line).
    setting : int, float or EchelleSetting, optional
        The frame's setting in ``geometry.layout`` (default: its ``ESO INS WLEN CEN``).
    offset_arcsec : (2,)
        Commanded chopper offset [arcsec] (default: from the header).
    orientation : FieldOrientation
        The mask's orientation in the slicer field.
    hyper : Hyperparameters
        The deviation priors that give the prior widths of the predictions.
    edge_margin_arcsec : float
        Holes within this of a slice end [arcsec] are ``slice_end``.
    snr_min : float
        Peak detection threshold (3 x 3 sum); spots below it are ``low_snr``.
    window_nsigma : float
        Search window for each detector's shift, in prior widths of the predicted positions.
    match_radius_px : float
        A prediction (after the detector's correction) takes the peak within this radius [px].
    box_half_cols, box_half_rows, row_window_sigma_px : int, int, float
        Centroid box and the Gaussian row window [px] (default 0.8 lambda/D in px).
    min_found_fraction : float
        Of the usable predicted spots of each line (not ``slice_end``, box on the chip), at least
        this fraction must be found, else :class:`LineNotFoundError`.

    Returns
    -------
    Table
        One row per predicted main image on a detector: ``hole``, ``slice``, ``line_um``,
        ``xi_arcsec``, ``eta_offset_arcsec``, ``det``, ``col``, ``row``, ``sigma_col``,
        ``sigma_row``, ``cov`` (2 x 2, px^2, (col, row)), ``flux_e``, ``snr``, ``fwhm_col_px``, ``fwhm_row_px``
        (:func:`spot_widths`), ``col_pred``,
        ``row_pred`` (this geometry), ``sigma_pred_col/row`` (prior widths), ``lam_nominal_um``
        (the geometry's wavelength at the measured position), ``dcol_dxi``, ``drow_dxi``
        [px/arcsec], ``flags`` (:data:`SPOT_FLAGS`). Meta: file, setting, offset, lines,
        per-detector corrections.

    Raises
    ------
    LineOutsideSettingError, LineNotFoundError, EchelleSettingError
    """
    fr = reduced.frame
    setting = geometry.layout.setting_index(fr.lam_c_um if setting is None else setting)
    if offset_arcsec is None:
        offset_arcsec = fr.offset_arcsec if fr.offset_arcsec is not None else (0.0, 0.0)
    pred = predict_laser_spots(geometry, setting, hole_ab_arcsec, lines_um, offset_arcsec=offset_arcsec,
                               orientation=orientation, hole_id=hole_id, hyper=hyper,
                               edge_margin_arcsec=edge_margin_arcsec)
    if row_window_sigma_px is None:
        lam_mid = float(np.mean(geometry.wavelength_range(setting)))
        row_window_sigma_px = 0.8 * lam_mid * 1e-6 / _ELT_D_M * 206264.806 / PIXEL_SCALE_ARCSEC
    main = pred[pred["main"]]
    n = len(main)
    out = {k: np.full(n, np.nan) for k in ("col", "row", "sigma_col", "sigma_row", "flux_e", "snr", "fwhm_col_px",
                                           "fwhm_row_px")}
    out["cov"] = np.full((n, 2, 2), np.nan)
    flags = np.where(main["slice_end"], SPOT_FLAGS["slice_end"], 0).astype(np.int32)
    corr_all = np.zeros((n, 2))
    meta_corr = {}
    box = (box_half_cols, box_half_rows, row_window_sigma_px)
    for d in range(1, 5):
        on = np.flatnonzero(main["det"] == d)
        if on.size == 0:
            continue
        data, var, valid = reduced.data[d - 1], reduced.variance[d - 1], reduced.valid[d - 1]
        qc, qr, j, corr = _identify_on_detector(main, on, data, var, valid, flags, snr_min=snr_min,
                                                window_nsigma=window_nsigma, match_radius_px=match_radius_px)
        corr_all[on] = corr
        meta_corr[f"DET{d}"] = [float(np.mean(corr[:, 0])), float(np.mean(corr[:, 1]))]
        found = j >= 0
        if not found.any():
            continue
        _centroid_on_detector(on[found], qc[j[found]], qr[j[found]], data, var, valid, reduced.saturated[d - 1],
                              box, snr_min, out, flags)
    if n:
        _flag_blends(main, pred, box, flags)
    t = _spot_table(main, out, corr_all)
    t["lam_nominal_um"] = _nominal_wavelengths(geometry, setting, t)
    if n:
        t["dcol_dxi"], t["drow_dxi"] = _dxi_partials(geometry, setting, np.asarray(t["slice"]),
                                                     np.asarray(t["xi_arcsec"]), np.asarray(t["line_um"]))
    else:
        t["dcol_dxi"], t["drow_dxi"] = np.zeros(0), np.zeros(0)
    if n:
        off = np.abs(np.asarray(t["eta_offset_arcsec"], float)) > OFF_CENTRE_TOLERANCE * SLICE_WIDTH_ARCSEC
        flags[off] |= SPOT_FLAGS["off_centre"]
    t["flags"] = flags
    _describe(t)
    _check_found(t, lines_um, min_found_fraction)
    t.meta.update({"file": reduced.path, "background": reduced.background, "setting": int(setting),
                   "lam_c_um": float(fr.lam_c_um), "offset_arcsec": [float(v) for v in offset_arcsec],
                   "lines_um": [float(v) for v in np.atleast_1d(lines_um)], "detector_correction_px": meta_corr,
                   "row_window_sigma_px": float(row_window_sigma_px), "flag_bits": dict(SPOT_FLAGS)})
    return t


def _identify_on_detector(main, on, data, var, valid, flags, *, snr_min, window_nsigma, match_radius_px):
    """Steps 1 and 2 of :func:`measure_laser_spots` on one detector: find the peaks and identify them
    with the predicted main images ``main[on]``; sets ``not_found`` and ``ambiguous`` in ``flags``.

    Returns the peaks ``qc``, ``qr`` [px], the index ``j`` of the peak each prediction took (-1: none)
    and the detector's correction (N, 2) [px]."""
    qc, qr, _ = find_peaks(data, var, valid, snr_min)
    pc, pr = np.asarray(main["col_pred"][on]), np.asarray(main["row_pred"][on])
    wc = window_nsigma * float(np.nanmax(main["sigma_pred_col"][on]))
    wr = window_nsigma * float(np.nanmax(main["sigma_pred_row"][on]))
    j, nwithin, corr = match_predictions(pc, pr, qc, qr, wc, wr, match_radius_px)
    flags[on[j < 0]] |= SPOT_FLAGS["not_found"]
    flags[on[nwithin > 1]] |= SPOT_FLAGS["ambiguous"]
    return qc, qr, j, corr


def _centroid_on_detector(k, qc, qr, data, var, valid, saturated, box, snr_min, out, flags):
    """Step 3 of :func:`measure_laser_spots` on one detector: centroid the spots ``k`` (rows of the
    main images) at their peaks ``qc``, ``qr`` [px]; fills ``out`` and sets ``chip_edge``,
    ``saturated`` and ``low_snr`` in ``flags``. ``box`` is ``(half_cols, half_rows, row_sigma)``."""
    box_half_cols, box_half_rows, row_window_sigma_px = box
    c, r, cv, fl, flv, nbad = windowed_centroids(data, var, valid, qc, qr, box_half_cols, box_half_rows,
                                                 row_window_sigma_px)
    out["col"][k], out["row"][k], out["cov"][k] = c, r, cv
    out["flux_e"][k] = fl
    with np.errstate(invalid="ignore", divide="ignore"):
        out["snr"][k] = fl / np.sqrt(flv)
    out["sigma_col"][k], out["sigma_row"][k] = np.sqrt(cv[:, 0, 0]), np.sqrt(cv[:, 1, 1])
    fw = spot_widths(data, valid, c, r, box_half_cols, box_half_rows, row_window_sigma_px)
    out["fwhm_col_px"][k], out["fwhm_row_px"][k] = fw[:, 0], fw[:, 1]
    flags[k[nbad > 0]] |= SPOT_FLAGS["chip_edge"]
    cc = np.clip(qc, 0, data.shape[1] - 1)
    rr = np.clip(qr, 0, data.shape[0] - 1)
    sat_box = ndimage.maximum_filter(saturated.astype(np.uint8), (2 * box_half_rows + 1, 2 * box_half_cols + 1))
    flags[k[sat_box[rr, cc] > 0]] |= SPOT_FLAGS["saturated"]
    flags[k[~np.isfinite(c) | (out["snr"][k] < snr_min)]] |= SPOT_FLAGS["low_snr"]


def _flag_blends(main, others, box, flags):
    """Set ``blend`` in ``flags`` where another predicted image (main or neighbour, of ``others``)
    falls inside a main image's centroid box (after the correction)."""
    box_half_cols, box_half_rows, row_window_sigma_px = box
    det_o = np.asarray(others["det"])
    key = np.stack([np.asarray(others["hole"]), np.asarray(others["slice"]),
                    np.round(np.asarray(others["line_um"]) * 1e6).astype(np.int64)], axis=1)
    mkey = np.stack([np.asarray(main["hole"]), np.asarray(main["slice"]),
                     np.round(np.asarray(main["line_um"]) * 1e6).astype(np.int64)], axis=1)
    for d in range(1, 5):
        on = np.flatnonzero(main["det"] == d)
        oo = np.flatnonzero(det_o == d)
        if on.size == 0 or oo.size < 2:
            continue
        dcol = np.abs(others["col_pred"][oo][None, :] - main["col_pred"][on][:, None])
        drow = np.abs(others["row_pred"][oo][None, :] - main["row_pred"][on][:, None])
        same = np.all(key[oo][None, :, :] == mkey[on][:, None, :], axis=2)
        near = (dcol < 2 * box_half_cols + 2) & (drow < box_half_rows + 3 * row_window_sigma_px) & ~same
        flags[on[near.any(axis=1)]] |= SPOT_FLAGS["blend"]


def _spot_table(main, out, corr_all):
    """The measured spots' table: the predicted main images' identity and predictions, the
    measurements ``out`` and the detector corrections ``corr_all`` (N, 2) [px]."""
    t = Table()
    t["hole"] = main["hole"]
    t["slice"] = main["slice"]
    t["line_um"] = main["line_um"]
    t["xi_arcsec"] = main["xi_arcsec"]
    t["eta_offset_arcsec"] = main["eta_offset_arcsec"]
    t["det"] = main["det"]
    for name in ("col", "row", "sigma_col", "sigma_row"):
        t[name] = out[name]
    t["cov"] = out["cov"]
    t["flux_e"] = out["flux_e"]
    t["snr"] = out["snr"]
    t["fwhm_col_px"], t["fwhm_row_px"] = out["fwhm_col_px"], out["fwhm_row_px"]
    t["col_pred"], t["row_pred"] = main["col_pred"], main["row_pred"]
    t["sigma_pred_col"], t["sigma_pred_row"] = main["sigma_pred_col"], main["sigma_pred_row"]
    t["col_corr"], t["row_corr"] = corr_all[:, 0], corr_all[:, 1]
    return t


def _nominal_wavelengths(geometry, setting, t):
    """The geometry's wavelength [um] at each measured (col, row) on the chip in its slice (NaN elsewhere)."""
    lam_nom = np.full(len(t), np.nan)
    got = np.isfinite(t["col"]) & np.isfinite(t["row"])
    if got.any():
        inside = got & (t["col"] > -0.5) & (t["col"] < 2047.5) & (t["row"] > -0.5) & (t["row"] < 2047.5)
        if inside.any():
            sp = geometry.inverse(t["det"][inside], t["col"][inside], t["row"][inside], setting,
                                  slice_number=t["slice"][inside], on_miss="mask")
            lam_nom[inside] = sp.lam
    return lam_nom


def _check_found(t, lines_um, min_found_fraction=0.5):
    usable = (t["flags"] & (SPOT_FLAGS["slice_end"] | SPOT_FLAGS["chip_edge"])) == 0
    missing = []
    for lam in np.atleast_1d(lines_um):
        m = usable & np.isclose(t["line_um"], lam, atol=1e-9, rtol=0)
        if not m.any():
            continue
        found = m & ((t["flags"] & SPOT_FLAGS["not_found"]) == 0)
        if found.sum() < min_found_fraction * m.sum():
            missing.append(f"{float(lam)} um ({int(found.sum())} of {int(m.sum())} spots found)")
    if missing:
        raise LineNotFoundError(f"laser line(s) not where the setting puts them: {'; '.join(missing)}; "
                                "check the lines lit, the echelle setting and the mask orientation")


def _describe(t):
    info = {"hole": (None, "mask hole id"), "slice": (None, "slice 1..28 of the image (the hole's)"),
            "line_um": ("um", "laser line wavelength"), "xi_arcsec": ("arcsec", "hole along the slice (commanded)"),
            "eta_offset_arcsec": ("arcsec", "hole across the slice from its centre (commanded)"),
            "det": (None, "detector 1..4"), "col": ("pix", "measured column (0-based pixel centre)"),
            "row": ("pix", "measured row (0-based pixel centre)"), "sigma_col": ("pix", "1-sigma of col"),
            "sigma_row": ("pix", "1-sigma of row"), "cov": ("pix2", "covariance of (col, row)"),
            "flux_e": ("electron", "box sum per DIT"), "snr": (None, "signal-to-noise of flux_e"),
            "fwhm_col_px": ("pix", "FWHM along columns (2.3548 x rms width in the box)"),
            "fwhm_row_px": ("pix", "FWHM along rows (window-corrected second moment)"),
            "col_pred": ("pix", "column predicted by the geometry"), "row_pred": ("pix", "row predicted by the geometry"),
            "sigma_pred_col": ("pix", "prior width of col_pred"), "sigma_pred_row": ("pix", "prior width of row_pred"),
            "col_corr": ("pix", "detector's shift + affine correction used to identify"),
            "row_corr": ("pix", "detector's shift + affine correction used to identify"),
            "lam_nominal_um": ("um", "the geometry's wavelength at (col, row) in this slice"),
            "dcol_dxi": ("pix / arcsec", "d col / d xi of the geometry"),
            "drow_dxi": ("pix / arcsec", "d row / d xi of the geometry"),
            "flags": (None, "bits: " + ", ".join(f"{k}={v}" for k, v in SPOT_FLAGS.items()))}
    for c, (u, d) in info.items():
        if c in t.colnames:
            if u:
                t[c].unit = u
            t[c].description = d
