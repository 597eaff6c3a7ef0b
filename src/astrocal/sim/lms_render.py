"""Images of the LMS mosaic: laser spots, pinhole continuum traces and fully lit slices.

All renderers add expected electrons per second into a ``(4, 2048, 2048)`` array (chips
DET1..DET4 in that order, numpy axis 1 = row, axis 2 = col, 0-based pixel centres) through an
as-built :class:`~astrocal.lms.LmsGeometry`: every position comes from ``geometry.forward``.

**The slicer cuts the PSF.** A pinhole at slicer position ``(xi0, eta0)`` has the ELT's
diffraction-limited PSF (obscured Airy pattern, ``lambda/D`` with D = 39.146 m, central
obscuration 11 m, no spiders) in the slicer plane. Slice ``k`` passes the part with
``eta`` inside its width ``W = 0.0207"`` (and ``|xi| <= 0.4485"``); across the slit, ``eta`` acts
like a wavelength offset: light at ``eta`` lands where ``forward`` puts the wavelength
``lam + (eta - eta_k) lam / (R W)`` (``eta_k`` the slice centre, ``R`` the resolving power of a
slit-filling source, default 1e5 (DRLD); +eta towards higher slice numbers moves to +lam, a sign
no source gives). A laser spot is therefore a short segment (``~lam/(R dlam/dcol)`` ~ 2.7 px)
along the dispersion, ~2 px along the slice; the PSF's wings that cross into the neighbouring
slices make faint images there (``neighbours``). Rendered by sampling the PSF on a grid in
``(xi, eta)`` (0.25 px along the slice, 8 samples per slice width), mapping every sample with
``forward`` and depositing it bilinearly (cloud-in-cell): the light's centroid is the
weighted mean of the exact sample positions. No spectrograph blur beyond this is modelled.

**Continuum.** A pinhole lit by the black body gives a trace at fixed ``xi`` across the
mosaic: per detector column the flux ``L_lam dlam/dcol`` spread along rows by the PSF's profile
along the slice (within the slice's ``eta`` window). A fully lit slice (mask open) fills the rows
between the images of the slice ends ``xi = +-0.4485"``; the edges are blurred by a Gaussian of
``edge_sigma_px`` and integrated over the pixel.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from ..image.psf import ELT_CENTRAL_OBSCURATION_M, ELT_OUTER_DIAMETER_M, RAD_TO_MAS, airy_profile
from ..lms.traces import N_SLICES, SLICE_HALF_LENGTH_ARCSEC, SLICE_WIDTH_ARCSEC

if TYPE_CHECKING:  # only in hints: lms_response imports this module
    from ..lms import LmsGeometry
    from .lms_response import SlitProfile

__all__ = ["N_DET", "CHIP_SHAPE", "XI_STEP_PX", "PX_ARCSEC", "lambda_over_d_arcsec", "psf_weights",
           "xi_offsets", "eta_cells", "render_laser_spots", "render_pinhole_traces", "render_slices", "deposit"]

N_DET = 4
CHIP_SHAPE = (2048, 2048)
_EPS = ELT_CENTRAL_OBSCURATION_M / ELT_OUTER_DIAMETER_M
#: PSF samples along the slice, in 8.2-mas pixels (spots)
XI_STEP_PX = 0.25
_TRACE_STEP_PX = 0.5        # the same for continuum traces (deposited bilinearly along rows)
#: the detector pixel, arcsec
PX_ARCSEC = 0.0082
_N_ETA = 8                  # PSF samples across one slice width
_PSF_RADIUS_LD = 3.5        # PSF sampled out to this radius [lambda/D]
_XI_END = SLICE_HALF_LENGTH_ARCSEC - 1e-9


def lambda_over_d_arcsec(lam_um: ArrayLike) -> np.ndarray:
    """lambda/D of the ELT.

    Parameters
    ----------
    lam_um : array_like
        Wavelengths, um.

    Returns
    -------
    numpy.ndarray
        lambda/D, arcsec.
    """
    return np.asarray(lam_um, float) * 1e-6 / ELT_OUTER_DIAMETER_M * RAD_TO_MAS / 1e3


def psf_weights(dxi: ArrayLike, deta: ArrayLike, lam_um: float, cell_arcsec2: float) -> np.ndarray:
    """Fraction of a pinhole's light in cells at offsets (dxi, deta) from the PSF centre.

    The obscured Airy pattern normalised to 1 over the plane.

    Parameters
    ----------
    dxi, deta : array_like
        Offsets along and across the slice, arcsec.
    lam_um : float
        Wavelength, um.
    cell_arcsec2 : float
        The cells' area, arcsec^2.

    Returns
    -------
    numpy.ndarray
        The fractions.
    """
    ld = lambda_over_d_arcsec(lam_um)
    r = np.hypot(dxi, deta) / ld
    total = (4.0 / math.pi) / (1.0 - _EPS**2)          # integral of the peak-normalised pattern, (lambda/D)^2
    return airy_profile(r, _EPS) * cell_arcsec2 / (total * ld**2)


def deposit(image: np.ndarray, det: ArrayLike, col: ArrayLike, row: ArrayLike, weight: ArrayLike) -> np.ndarray:
    """Add ``weight`` at points (det 1..4, col, row) bilinearly into ``image``.

    Points with det 0 or NaN are skipped. Preserves the total and the weighted centroid of
    what lands inside the chips.

    Parameters
    ----------
    image : numpy.ndarray
        (4, ny, nx), added to in place.
    det : array_like of int
        Chips (1..4; 0: none).
    col, row : array_like
        Positions, pixels.
    weight : array_like
        The weights.

    Returns
    -------
    numpy.ndarray
        ``image``.
    """
    det, col, row, weight = (np.ravel(a) for a in np.broadcast_arrays(det, col, row, weight))
    ok = (det > 0) & np.isfinite(col) & np.isfinite(row) & (weight != 0)
    det, col, row, weight = det[ok] - 1, col[ok], row[ok], weight[ok]
    n_det, ny, nx = image.shape
    c0, r0 = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
    fc, fr = col - c0, row - r0
    flat = image.reshape(-1)
    for dc, dr, w in ((0, 0, (1 - fc) * (1 - fr)), (1, 0, fc * (1 - fr)), (0, 1, (1 - fc) * fr), (1, 1, fc * fr)):
        c, r = c0 + dc, r0 + dr
        inside = (c >= 0) & (c < nx) & (r >= 0) & (r < ny)
        idx = (det[inside] * ny + r[inside]) * nx + c[inside]
        if idx.size:
            lo = int(idx.min())
            add = np.bincount(idx - lo, weights=(weight * w)[inside])
            flat[lo:lo + add.size] += add
    return image


def xi_offsets(lam_um: float, step_px: float = XI_STEP_PX) -> np.ndarray:
    """PSF sample offsets along the slice, symmetric, ``step_px`` apart, out to 3.5 lambda/D.

    Parameters
    ----------
    lam_um : float
        Wavelength, um.
    step_px : float
        Sample step, detector pixels (:data:`PX_ARCSEC`).

    Returns
    -------
    numpy.ndarray
        The offsets, arcsec.
    """
    m = int(np.ceil(_PSF_RADIUS_LD * lambda_over_d_arcsec(lam_um) / (step_px * PX_ARCSEC)))
    return np.arange(-m, m + 1) * step_px * PX_ARCSEC


def eta_cells() -> np.ndarray:
    """Offsets of the samples across one slice from its centre (cell midpoints).

    Returns
    -------
    numpy.ndarray
        The offsets, arcsec.
    """
    return ((np.arange(_N_ETA) + 0.5) / _N_ETA - 0.5) * SLICE_WIDTH_ARCSEC


def _images(slice_number, eta_offset, neighbours):
    """(spot index, slice k, centre offset eta_k - eta_hole) of the slice images of each source."""
    s = np.asarray(slice_number, int)
    d = np.asarray(eta_offset, float)
    ks = (-1, 0, 1) if neighbours else (0,)
    out = [(np.arange(len(s)), s + dk, dk * SLICE_WIDTH_ARCSEC - d) for dk in ks]
    idx, k, c = (np.concatenate(a) for a in zip(*out))
    ok = (k >= 1) & (k <= N_SLICES)
    return idx[ok], k[ok], c[ok]


def render_laser_spots(image: np.ndarray, geometry: LmsGeometry, setting: int, slice_number: ArrayLike,
                       xi: ArrayLike, eta_offset: ArrayLike, lam_um: ArrayLike, flux: ArrayLike, *,
                       resolving_power: float = 1e5, neighbours: bool = True, response: Callable | None = None,
                       slit_profile: Callable | None = None) -> dict:
    """Add laser spots (pinhole x line) to ``image`` and return their truth.

    Parameters
    ----------
    image : ndarray (4, 2048, 2048)
        Expected signal, added to in place (units of ``flux``, e.g. e/s).
    geometry : LmsGeometry
        The as-built map; ``setting`` an index/setting of its layout.
    slice_number, xi, eta_offset : ndarray (N,)
        Hole positions in the slicer: slice 1..28, ``xi`` [arcsec], offset across the slice from
        its centre [arcsec].
    lam_um, flux : ndarray (N,)
        Laser line [um] and the pinhole's total flux at that line (before the slicer cut).
    response : callable, optional
        ``response(slice, lam) -> factor``: the relative spectral response of the slices
        (:class:`~astrocal.sim.lms_response.LmsResponseTruth` at this setting's order); None: 1.
    slit_profile : callable, optional
        ``slit_profile(u) -> t``: transmission across a slice at ``u`` slice widths from its centre
        (:class:`~astrocal.sim.lms_response.SlitProfile`); None: 1.

    Returns
    -------
    dict of ndarrays, one entry per slice image (source index ``source``, slice ``slice``,
    ``main`` (the hole's own slice), ``flux`` inside the samples on a chip, centroid ``det``, ``col``,
    ``row`` of the rendered light (NaN if none, det 0 if split over chips)).
    """
    lam_um = np.broadcast_to(np.asarray(lam_um, float), np.shape(xi))
    flux = np.broadcast_to(np.asarray(flux, float), np.shape(xi))
    idx, k, c = _images(slice_number, eta_offset, neighbours)
    lo, hi = geometry.wavelength_range(setting)
    dxi_all = [xi_offsets(lam_um[i]) for i in idx]
    m = max(len(a) for a in dxi_all)
    dxi = np.full((len(idx), m), np.nan)
    for j, a in enumerate(dxi_all):
        dxi[j, :len(a)] = a
    ec = eta_cells()
    # sample grid (images, xi samples, eta samples)
    dxi3 = dxi[:, :, None]
    deta3 = (c[:, None, None] + ec[None, None, :])           # from the PSF centre
    lam3 = lam_um[idx][:, None, None]
    cell = (XI_STEP_PX * PX_ARCSEC) * (SLICE_WIDTH_ARCSEC / _N_ETA)
    w = psf_weights(dxi3, deta3, lam3, cell) * flux[idx][:, None, None]
    if slit_profile is not None:
        w = w * slit_profile(ec / SLICE_WIDTH_ARCSEC)[None, None, :]
    xi_s = np.asarray(xi, float)[idx][:, None, None] + dxi3
    lam_s = lam3 + ec[None, None, :] * lam3 / (resolving_power * SLICE_WIDTH_ARCSEC)
    if response is not None:
        w = w * response(np.broadcast_to(k[:, None, None], lam_s.shape), lam_s)
    shape = np.broadcast_shapes(w.shape, xi_s.shape, lam_s.shape)
    w, xi_s, lam_s = (np.broadcast_to(a, shape).ravel() for a in (w, xi_s, lam_s))
    k_s = np.broadcast_to(k[:, None, None], shape).ravel()
    img = np.broadcast_to(np.arange(len(idx))[:, None, None], shape).ravel()
    ok = np.isfinite(xi_s) & (np.abs(xi_s) <= _XI_END) & (lam_s >= lo) & (lam_s <= hi) & (w > 0)
    pts = geometry.forward(k_s[ok], xi_s[ok], lam_s[ok], setting, on_gap="mask")
    deposit(image, pts.det, pts.col, pts.row, w[ok])
    # truth: light-weighted centroid of each image (bilinear deposit keeps it exactly)
    on = pts.det > 0
    wi, ii = w[ok][on], img[ok][on]
    n = len(idx)
    tot = np.bincount(ii, wi, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        col = np.bincount(ii, wi * pts.col[on], n) / tot
        row = np.bincount(ii, wi * pts.row[on], n) / tot
    dmin = np.full(n, 99)
    dmax = np.zeros(n, int)
    np.minimum.at(dmin, ii, pts.det[on])
    np.maximum.at(dmax, ii, pts.det[on])
    det = np.where((dmin == dmax) & (tot > 0), dmax, 0)
    col[det == 0] = np.nan
    row[det == 0] = np.nan
    return {"source": idx, "slice": k, "main": k == np.asarray(slice_number)[idx], "flux": tot,
            "det": det, "col": col, "row": row}


def _lam_grid(geometry, setting, n=240):
    lo, hi = geometry.wavelength_range(setting)
    return np.linspace(lo, hi, n)


def _per_column(det, col, row, lam, d):
    """Curves (n_curves, n_lam) sampled at the wavelengths ``lam`` -> their rows at the integer
    columns of chip ``d``: returns (cols, rows (n_curves, n_cols), lam (n_cols), |dlam/dcol| (n_cols)),
    or None where the curves do not cross the chip. Columns grow with wavelength within a chip."""
    on = np.all(det == d, axis=0) & np.all(np.isfinite(col), axis=0)
    if on.sum() < 2:
        return None
    cc = col[:, on].mean(axis=0)
    o = np.argsort(cc)
    cc, ll = cc[o], lam[on][o]
    cols = np.arange(int(np.ceil(cc[0])), int(np.floor(cc[-1])) + 1)
    cols = cols[(cols >= 0) & (cols < CHIP_SHAPE[1])]
    if cols.size == 0:
        return None
    rows = np.stack([np.interp(cols, col[j, on][o], row[j, on][o]) for j in range(len(col))])
    dl = np.abs(np.gradient(ll) / np.gradient(cc))
    return cols, rows, np.interp(cols, cc, ll), np.interp(cols, cc, dl)


def render_pinhole_traces(image: np.ndarray, geometry: LmsGeometry, setting: int, slice_number: ArrayLike,
                          xi: ArrayLike, eta_offset: ArrayLike, radiance: Callable, *, neighbours: bool = True,
                          n_lam: int = 120, response: Callable | None = None,
                          slit_profile: Callable | None = None) -> np.ndarray:
    """Add the continuum traces of pinholes to ``image``.

    ``radiance(lam_um)`` is the pinhole's photon rate per unit wavelength before the slicer
    [e s^-1 um^-1]. Per detector column the rate ``radiance * |dlam/dcol|`` is spread along the
    rows by the PSF's profile along the slice (the part inside the slice's eta window), each
    profile sample at the row ``forward`` gives for its ``xi``.

    Parameters
    ----------
    image : numpy.ndarray
        (4, 2048, 2048) expected signal, added to in place.
    geometry : LmsGeometry
        The as-built map.
    setting : int
        The setting's index in its layout.
    slice_number, xi, eta_offset : array_like
        Hole positions in the slicer: slice 1..28, ``xi`` and the offset across the slice,
        arcsec.
    radiance : callable
        ``radiance(lam_um)``: the pinhole's photon rate per unit wavelength before the slicer,
        e s^-1 um^-1.
    neighbours : bool
        Also the light cut into the neighbouring slices.
    n_lam : int
        Wavelengths sampled over the setting.
    response, slit_profile : callable, optional
        As in :func:`render_laser_spots`.

    Returns
    -------
    numpy.ndarray
        ``image``.
    """
    idx, k, c = _images(slice_number, eta_offset, neighbours)
    lam = _lam_grid(geometry, setting, n_lam)
    lam_mid = float(lam.mean())
    ec = eta_cells()
    cell = (_TRACE_STEP_PX * PX_ARCSEC) * (SLICE_WIDTH_ARCSEC / _N_ETA)
    dxi = xi_offsets(lam_mid, _TRACE_STEP_PX)
    xi_s = np.asarray(xi, float)[idx][:, None] + dxi[None, :]                           # (images, n_xi)
    tr = np.ones(len(ec)) if slit_profile is None else slit_profile(ec / SLICE_WIDTH_ARCSEC)
    prof = (psf_weights(dxi[None, :, None], (c[:, None] + ec[None, :])[:, None, :], lam_mid, cell)
            * tr[None, None, :]).sum(axis=2)
    prof = np.where(np.abs(xi_s) <= _XI_END, prof, 0.0)                                   # the slice ends cut
    xi_c = np.clip(xi_s, -_XI_END, _XI_END)
    shape = xi_s.shape + (len(lam),)
    kk = np.broadcast_to(k[:, None, None], shape).ravel()
    pts = geometry.forward(kk, np.broadcast_to(xi_c[:, :, None], shape).ravel(),
                           np.broadcast_to(lam, shape).ravel(), setting, on_gap="mask")
    det, col, row = (a.reshape(shape) for a in (pts.det, pts.col, pts.row))
    for j in range(len(idx)):
        for d in range(1, N_DET + 1):
            res = _per_column(det[j], col[j], row[j], lam, d)
            if res is None:
                continue
            cols, rows, lams, dl = res
            spec = radiance(lams) * dl
            if response is not None:
                spec = spec * response(np.full(lams.shape, k[j]), lams)
            wgt = prof[j][:, None] * spec[None, :]
            deposit(image, np.full(rows.shape, d), np.broadcast_to(cols, rows.shape).astype(float), rows, wgt)
    return image


def _pixel_step(edge_minus_r, sigma):
    """Integral over a pixel (centre r, width 1) of Phi((edge - t)/sigma) dt: 1 well below the edge,
    0 well above it (evaluated exactly within 0.5 + 8 sigma of the edge)."""
    def big(x):
        z = x / sigma
        return x * special.ndtr(z) + sigma * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    x = np.asarray(edge_minus_r, float)
    out = (x > 0).astype(float)
    near = np.abs(x) < 0.5 + 8 * sigma
    xn = x[near]
    out[near] = big(xn + 0.5) - big(xn - 0.5)
    return out


def render_slices(image: np.ndarray, geometry: LmsGeometry, setting: int, radiance_per_arcsec2: Callable, *,
                  edge_sigma_px: float = 0.5, n_lam: int = 120, slices: Sequence[int] | None = None,
                  response: Callable | None = None, slit_profile: SlitProfile | None = None) -> np.ndarray:
    """Add every slice fully lit by an extended uniform source (mask open) to ``image``.

    ``radiance_per_arcsec2(lam_um)``: rate per unit wavelength and solid angle before the slicer
    [e s^-1 um^-1 arcsec^-2]. A pixel of column c gets ``radiance * W * |dxi/drow| * |dlam/dcol|``
    times its overlap with the rows between the images of the slice ends (edges blurred by a
    Gaussian of ``edge_sigma_px``, pixel-integrated). ``response(slice, lam)`` multiplies the rate;
    ``slit_profile`` enters through its mean over the slice width (``slit_profile.mean()``).

    Parameters
    ----------
    image : numpy.ndarray
        (4, 2048, 2048) expected signal, added to in place.
    geometry : LmsGeometry
        The as-built map.
    setting : int
        The setting's index in its layout.
    radiance_per_arcsec2 : callable
        ``radiance_per_arcsec2(lam_um)``, e s^-1 um^-1 arcsec^-2.
    edge_sigma_px : float
        Blur of the slice edges, pixels.
    n_lam : int
        Wavelengths sampled over the setting.
    slices : sequence of int, optional
        The slices lit (default: all).
    response : callable, optional
        ``response(slice, lam) -> factor``.
    slit_profile : SlitProfile, optional
        The transmission across the slices.

    Returns
    -------
    numpy.ndarray
        ``image``.
    """
    lam = _lam_grid(geometry, setting, n_lam)
    sigma = max(float(edge_sigma_px), 1e-3)
    ks = np.array(list(range(1, N_SLICES + 1) if slices is None else slices), int)
    shape = (len(ks), 2, len(lam))
    pts = geometry.forward(np.broadcast_to(ks[:, None, None], shape).ravel(),
                           np.broadcast_to(np.array([-_XI_END, _XI_END])[None, :, None], shape).ravel(),
                           np.broadcast_to(lam, shape).ravel(), setting, on_gap="mask")
    det_all, col_all, row_all = (a.reshape(shape) for a in (pts.det, pts.col, pts.row))
    for i in range(len(ks)):
        det, col, row = det_all[i], col_all[i], row_all[i]
        for d in range(1, N_DET + 1):
            res = _per_column(det, col, row, lam, d)
            if res is None:
                continue
            cols, rows, lams, dl = res
            lo_e, hi_e = rows.min(axis=0), rows.max(axis=0)
            dxi_drow = 2 * _XI_END / (hi_e - lo_e)
            rate = radiance_per_arcsec2(lams) * SLICE_WIDTH_ARCSEC * dxi_drow * dl
            if response is not None:
                rate = rate * response(np.full(lams.shape, ks[i]), lams)
            if slit_profile is not None:
                rate = rate * slit_profile.mean()
            r0 = int(np.floor(lo_e.min() - 5 * sigma - 2))
            r1 = int(np.ceil(hi_e.max() + 5 * sigma + 2))
            rr = np.arange(max(r0, 0), min(r1, CHIP_SHAPE[0] - 1) + 1)
            if rr.size == 0:
                continue
            cover = (_pixel_step(hi_e[None, :] - rr[:, None], sigma) - _pixel_step(lo_e[None, :] - rr[:, None], sigma))
            image[d - 1][np.ix_(rr, cols)] += cover * rate[None, :]
    return image
