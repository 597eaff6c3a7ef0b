"""Effective PSF (Anderson & King 2000) built from the spots of the frames themselves.

Real frames come with a PSF nobody gives us exactly (aberrations, the real pupil, the
detector's charge diffusion and intra-pixel response).  An *effective* PSF (ePSF) is the
pixel-integrated PSF measured empirically: every spot samples it at the offsets of its
pixels from its centre, and spots at different sub-pixel phases sample it at different
offsets, so a few hundred spots map it on a grid finer than the pixels.

Method (:func:`build_epsf`)
---------------------------
The ePSF is a cubic B-spline on a grid ``oversampling`` times finer than the pixels (the
representation of :class:`astrocal.image.psf.PixelPSF`).  Starting from a pixel-integrated
Gaussian of the measured FWHM (or a PSF given by the caller) we alternate

1. fit position, flux and local background of every spot with the current ePSF
   (:func:`astrocal.image.centroid.fit_centroids`, model-weighted), and
2. with these fixed, solve for *all* B-spline coefficients at once by weighted linear
   least squares over every valid pixel of every stamp of every frame (the model is
   linear in the coefficients; a sparse system with a weak second-difference penalty
   that only matters where the data leave coefficients unconstrained),
3. normalise (unit integral over the table) and re-centre (the gauge: the ePSF's
   reference point is its centre of point symmetry, found by minimising the difference
   between the core of the ePSF and its 180-degree rotation; for a centro-symmetric PSF
   this is the true centre),

until the positions move by less than a small fraction of their errors.  This jointly
minimises one chi^2 over the ePSF and the spot parameters, so it converges to the
least-squares ePSF of the data and is unbiased whatever the sub-pixel phases.

Why not photutils' EPSFBuilder
------------------------------
:func:`build_epsf_photutils` wraps ``photutils.psf.EPSFBuilder`` (photutils 3.0) for
comparison (``benchmarks/bench_centroid.py --epsf``).  On simulated ELT/METIS L-band
pinhole frames (3 x 100 spots, SNR 3000) the positions fitted with its ePSF scatter ~100
times the Cramér-Rao bound with its default settings (oversampling 4, quartic smoothing
kernel; 65-240 x with other oversamplings and kernels: it drops every residual sample on
the *nearest* node of the oversampled grid and smooths, which leaves sub-pixel-phase
errors), but reach the bound (1.03-1.04 x at SNR 300 and 3000) with ``oversampling=3,
smoothing_kernel="quadratic"``.  Built that way and fitted with ``PSFPhotometry`` it took
14-20 s against 1.5-3 s for the least-squares builder here (also at the bound), which
needs no such tuning.  See ``docs/measurement.md``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, sparse
from scipy.sparse import linalg as splinalg

from .centroid import FLAGS_SEVERE, NoiseModel, cut_stamps, fit_centroids
from .psf import PixelPSF, StampPSF, bspline_weights, gaussian_psf

__all__ = [
    "EPSFFit",
    "build_epsf",
    "build_epsf_photutils",
    "annulus_background",
    "estimate_fwhm",
    "symmetric_center",
]


@dataclass(eq=False)
class EPSFFit:
    """Result of :func:`build_epsf`.

    Attributes
    ----------
    psf : PixelPSF
        The ePSF (pixel-integrated, unit integral over its table, centred on its centre
        of symmetry).
    results : list of CentroidResult
        The final fit of every spot of every frame with ``psf``, one per frame.
    n_iter : int
        Build iterations done.
    converged : bool
        Whether the positions settled (rms of change / error below ``tol``).
    history : list of dict
        Per iteration: rms position change (px), rms and max of change / error.
    """

    psf: PixelPSF
    results: list
    n_iter: int
    converged: bool
    history: list = field(default_factory=list)


def _as_lists(images, positions, noise, masks):
    if isinstance(images, np.ndarray) and images.ndim == 2:
        images = [images]
        positions = [positions]
        masks = [masks]
    images = [np.asarray(im, dtype=float) for im in images]
    positions = [(np.atleast_1d(np.asarray(p[0], float)), np.atleast_1d(np.asarray(p[1], float)))
                 for p in positions]
    if len(positions) != len(images):
        raise ValueError("need one (x, y) pair of arrays per image")
    if noise is None or isinstance(noise, NoiseModel):
        noise = [noise or NoiseModel()] * len(images)
    if masks is None:
        masks = [None] * len(images)
    if len(noise) != len(images) or len(masks) != len(images):
        raise ValueError("noise and masks must be given per image")
    return images, positions, list(noise), list(masks)


def estimate_fwhm(image: ArrayLike, x: ArrayLike, y: ArrayLike, *, box: int = 15) -> float:
    """Rough FWHM (px) of spots.

    The median over spots of ``2 sqrt(A / pi)``, with ``A`` the number of pixels above
    half the peak above the local background (stamp median).

    Parameters
    ----------
    image : array_like
        2-D frame (ADU).
    x, y : array_like
        Spot positions (px, 0-based).
    box : int
        Stamp size (px) around each spot (made odd: ``2 (box // 2) + 1``).

    Returns
    -------
    float
        The FWHM (px).
    """
    h = int(box) // 2
    x0 = np.rint(np.asarray(x, float)).astype(np.int64) - h
    y0 = np.rint(np.asarray(y, float)).astype(np.int64) - h
    st, inside = cut_stamps(np.asarray(image, float), x0, y0, 2 * h + 1)
    bg = np.nanmedian(np.where(inside, st, np.nan), axis=(1, 2))
    st = st - bg[:, None, None]
    peak = np.nanmax(st, axis=(1, 2))
    area = np.sum(st > 0.5 * peak[:, None, None], axis=(1, 2))
    return float(np.median(2.0 * np.sqrt(area / np.pi)))


def annulus_background(image: ArrayLike, x: ArrayLike, y: ArrayLike, r_in: int, r_out: int, *,
                       mask: ArrayLike | None = None) -> np.ndarray:
    """Median level in a square annulus around each spot.

    Parameters
    ----------
    image : array_like
        2-D frame (ADU).
    x, y : array_like
        Spot positions (px, 0-based).
    r_in, r_out : int
        The annulus: ``r_in < max(|dx|, |dy|) <= r_out`` (Chebyshev distance, px, from
        the pixel nearest to the spot).
    mask : array_like of bool or None
        True for pixels to leave out.

    Returns
    -------
    numpy.ndarray
        Median (ADU/px) per spot; NaN where no pixel is usable.
    """
    r_out = int(r_out)
    size = 2 * r_out + 1
    x0 = np.rint(np.asarray(x, float)).astype(np.int64) - r_out
    y0 = np.rint(np.asarray(y, float)).astype(np.int64) - r_out
    st, inside = cut_stamps(np.asarray(image, float), x0, y0, size)
    if mask is not None:
        bad, _ = cut_stamps(np.asarray(mask, bool), x0, y0, size, fill=True)
        st = np.where(bad, np.nan, st)
    ar = np.abs(np.arange(size) - r_out)
    ring = np.maximum(ar[:, None], ar[None, :]) > int(r_in)
    vals = np.where(ring[None] & inside, st, np.nan).reshape(st.shape[0], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(vals, axis=1)


def symmetric_center(psf: PixelPSF, radius: float | None = None) -> tuple[float, float]:
    """Centre of point symmetry ``(sx, sy)`` (px) of a tabulated PSF's core.

    Minimises ``sum_u [psf(s + u) - psf(s - u)]^2`` over offsets ``u`` within ``radius``
    on a 0.25 px grid.  ``psf.shifted(sx, sy)`` is then symmetric about the origin.

    Parameters
    ----------
    psf : PixelPSF
        The tabulated PSF.
    radius : float or None
        Radius (px) of the offsets compared; default 1.5 FWHM.

    Returns
    -------
    tuple of float
        ``(sx, sy)`` (px).
    """
    if radius is None:
        radius = 1.5 * psf.fwhm()
    g = np.arange(-np.ceil(radius), np.ceil(radius) + 0.25, 0.25)
    ux, uy = np.meshgrid(g, g)
    sel = np.hypot(ux, uy) <= radius
    ux, uy = ux[sel], uy[sel]
    peak = float(psf.table.max())

    def resid(s):
        return (psf.evaluate(s[0] + ux, s[1] + uy) - psf.evaluate(s[0] - ux, s[1] - uy)) / peak

    sol = optimize.least_squares(resid, np.zeros(2), x_scale=0.01, xtol=1e-12, ftol=1e-14)
    return float(sol.x[0]), float(sol.x[1])


def _second_difference_penalty(m):
    """Sparse operator stacking second differences along x and y of an (m, m) grid."""
    d1 = sparse.diags([np.ones(m - 2), -2 * np.ones(m - 2), np.ones(m - 2)], [0, 1, 2],
                      shape=(m - 2, m))
    eye = sparse.identity(m)
    return sparse.vstack([sparse.kron(eye, d1), sparse.kron(d1, eye)]).tocsr()


def _solve_table(stamps, oversampling, half_width, regularization):
    """Weighted least-squares B-spline ePSF from fixed spot parameters.

    ``stamps``: list of dicts with ``data`` (K, S, S), ``valid``, ``weight``, ``x``,
    ``y``, ``x0``, ``y0``, ``flux``, ``background`` (K,).  Returns the table values on
    the fine grid (odd, square, ``2 half_width oversampling + 1`` samples).
    """
    os_ = int(oversampling)
    c = int(round(half_width * os_))
    m = 2 * c + 3  # coefficients: nodes -1 .. 2c+1
    rows, cols, vals, rhs, wts = [], [], [], [], []
    n_rows = 0
    for st in stamps:
        k, s, _ = st["data"].shape
        ar = np.arange(s)
        # fine coordinate of pixel i of a stamp: u = c + os (x0 + i - x); node index
        # k0 = floor(u); taps k0-1 .. k0+2 -> coefficient index (k0 - 1 + a) + 1
        ux = c + os_ * (st["x0"][:, None] + ar[None, :] - st["x"][:, None])  # (K, S)
        uy = c + os_ * (st["y0"][:, None] + ar[None, :] - st["y"][:, None])
        kx = np.floor(ux)
        ky = np.floor(uy)
        wx, _ = bspline_weights(ux - kx)  # (K, S, 4)
        wy, _ = bspline_weights(uy - ky)
        kx = kx.astype(np.int64)
        ky = ky.astype(np.int64)
        ix = kx[:, :, None] + np.arange(4)  # coefficient index = k0 - 1 + a + 1
        iy = ky[:, :, None] + np.arange(4)
        ok_x = np.all((ix >= 0) & (ix < m), axis=2)  # (K, S)
        ok_y = np.all((iy >= 0) & (iy < m), axis=2)
        valid = st["valid"] & ok_y[:, :, None] & ok_x[:, None, :]
        kk, jj, ii = np.nonzero(valid)
        nr = kk.size
        f = st["flux"][kk]
        coef_idx = (iy[kk, jj][:, :, None] * m + ix[kk, ii][:, None, :]).reshape(nr, 16)
        coef_w = (wy[kk, jj][:, :, None] * wx[kk, ii][:, None, :]).reshape(nr, 16) * f[:, None]
        rows.append(np.repeat(np.arange(n_rows, n_rows + nr), 16))
        cols.append(coef_idx.ravel())
        vals.append(coef_w.ravel())
        rhs.append(st["data"][kk, jj, ii] - st["background"][kk])
        wts.append(st["weight"][kk, jj, ii])
        n_rows += nr
    a = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n_rows, m * m))
    w = np.concatenate(wts)
    y = np.concatenate(rhs)
    aw = a.T.multiply(w).tocsr()
    normal = (aw @ a).tocsc()
    b = aw @ y
    scale = float(np.median(normal.diagonal()[normal.diagonal() > 0]))
    pen = _second_difference_penalty(m)
    lhs = normal + regularization * scale * (pen.T @ pen) + 1e-9 * scale * sparse.identity(m * m)
    coef = splinalg.spsolve(lhs.tocsc(), b).reshape(m, m)
    # table values at the nodes: the B-spline at integer nodes is (1, 4, 1) / 6 per axis
    k1 = np.array([1.0, 4.0, 1.0]) / 6.0
    tab = (k1[0] * coef[:-2] + k1[1] * coef[1:-1] + k1[2] * coef[2:])
    tab = k1[0] * tab[:, :-2] + k1[1] * tab[:, 1:-1] + k1[2] * tab[:, 2:]
    return tab


def _epsf_stamps(im, res, nz, mk, bkg, psf, stamp_size, saturation):
    """The stamps of one frame's well-fitted spots for the ePSF table: data and valid
    pixels, weights (the inverse variance of the current model), positions, stamp origins,
    fluxes and the annulus backgrounds ``bkg``."""
    good = res.good(FLAGS_SEVERE) & np.isfinite(res.x) & np.isfinite(bkg)
    h = stamp_size // 2
    x, y = res.x[good], res.y[good]
    x0 = np.rint(x).astype(np.int64) - h
    y0 = np.rint(y).astype(np.int64) - h
    d, inside = cut_stamps(im, x0, y0, stamp_size)
    valid = inside & np.isfinite(d)
    if mk is not None:
        bad, _ = cut_stamps(np.asarray(mk, bool), x0, y0, stamp_size, fill=True)
        valid &= ~bad
    if saturation is not None:
        valid &= ~(d >= saturation)
    extra = nz.extra_variance
    if extra is not None and np.ndim(extra) == 2:
        extra, _ = cut_stamps(np.asarray(extra, float), x0, y0, stamp_size)
        valid &= np.isfinite(extra)
        extra = np.where(valid, extra, 0.0)
    elif extra is None:
        extra = 0.0
    model = (res.flux[good][:, None, None] * psf.stamps(x, y, x0, y0, stamp_size)
             + res.background[good][:, None, None])
    weight = np.where(valid, 1.0 / nz.variance(model, extra), 0.0)
    return dict(data=np.where(valid, d, 0.0), valid=valid, weight=weight, x=x, y=y, x0=x0,
                y0=y0, flux=res.flux[good], background=bkg[good])


def build_epsf(images: ArrayLike | Sequence[ArrayLike],
               positions: tuple[ArrayLike, ArrayLike] | Sequence[tuple[ArrayLike, ArrayLike]], *,
               noise: NoiseModel | Sequence[NoiseModel] | None = None,
               masks: Sequence[ArrayLike | None] | None = None, oversampling: int | None = None,
               stamp_size: int | None = None, max_iter: int = 10, tol: float = 0.05,
               regularization: float = 0.1, initial_psf: StampPSF | None = None,
               center: str | None = "symmetric", saturation: float | None = None) -> EPSFFit:
    """Build an effective PSF from the spots of one or more frames and fit every spot.

    Parameters
    ----------
    images : 2-D array or list of 2-D arrays
        Frames (ADU) holding isolated, unsaturated spots of the same PSF.
    positions : (x, y) or list of (x, y)
        First guesses of the spot positions in each frame (px, 0-based), ~0.5 px good.
    noise : NoiseModel or list of NoiseModel or None
        Noise model per frame (used for the weights of both steps); default
        ``NoiseModel()``.
    masks : None or list of bool arrays
        Bad-pixel masks per frame.
    oversampling : int or None
        ePSF grid points per pixel; default 4 when the FWHM is below 4 px (L band with
        IMG_LM), 3 below 6 px, else 2.
    stamp_size : odd int or None
        Fitting stamp (px), default ~4 FWHM; the ePSF table extends 2 px beyond it.
    max_iter : int
        Maximum build iterations.
    tol : float
        Stop when the rms over spots of (position change / error) falls below ``tol``.
    regularization : float
        Weight of the second-difference penalty relative to the median data weight of a
        coefficient.
    initial_psf : stamp-protocol PSF or None
        Starting model; default a pixel-integrated Gaussian of the measured FWHM.
    center : "symmetric" or None
        Gauge of the ePSF's reference point (see :func:`symmetric_center`); None keeps
        the least-squares solution's own (drifting) centre.
    saturation : float or None
        Passed to the fits: saturated pixels are excluded.

    Returns
    -------
    EPSFFit
    """
    images, positions, noises, masks = _as_lists(images, positions, noise, masks)
    if initial_psf is None or stamp_size is None or oversampling is None:
        fwhm = np.median([estimate_fwhm(im, *pos) for im, pos in zip(images, positions)])
    else:
        fwhm = initial_psf.fwhm()
    if oversampling is None:
        oversampling = 4 if fwhm < 4.0 else 3 if fwhm < 6.0 else 2
    if stamp_size is None:
        s = int(np.ceil(4.0 * fwhm))
        stamp_size = max(7, s + (s + 1) % 2)
    stamp_size = int(stamp_size)
    half_width = stamp_size // 2 + 1
    psf = initial_psf if initial_psf is not None else gaussian_psf(
        fwhm, oversampling=oversampling, half_width=half_width + 2)

    def fit_all(model, guesses):
        return [fit_centroids(im, gx, gy, model, noise=nz, mask=mk, stamp_size=stamp_size,
                              saturation=saturation)
                for im, (gx, gy), nz, mk in zip(images, guesses, noises, masks)]

    results = fit_all(psf, positions)
    # The ePSF's zero level is degenerate with the local backgrounds fitted on the same
    # stamps (psf + c, B - F c fit equally well); the table is therefore solved with
    # backgrounds measured *outside* the stamps, in a square annulus 1 to 5 px beyond
    # their edge (median), which fixes it to the data's.
    annulus_bg = [annulus_background(im, r.x_guess, r.y_guess, stamp_size // 2 + 1,
                                     stamp_size // 2 + 5, mask=mk)
                  for im, r, mk in zip(images, results, masks)]
    history = []
    converged = False
    it = 0
    for it in range(1, int(max_iter) + 1):
        stamps = [_epsf_stamps(im, res, nz, mk, bkg, psf, stamp_size, saturation)
                  for im, res, nz, mk, bkg in zip(images, results, noises, masks, annulus_bg)]
        table = _solve_table(stamps, oversampling, half_width, regularization)
        table /= table.sum() / oversampling**2
        new_psf = PixelPSF(table, oversampling, dict(kind="epsf", method="least-squares",
                                                     oversampling=oversampling))
        if center == "symmetric":
            sx, sy = symmetric_center(new_psf)
            new_psf = new_psf.shifted(sx, sy)
            new_psf.table /= new_psf.table.sum() / oversampling**2
            new_psf = PixelPSF(new_psf.table, oversampling, new_psf.meta)
        psf = new_psf
        guesses = [(r.x, r.y) for r in results]
        # spots whose previous fit failed restart from their first guess
        guesses = [(np.where(np.isfinite(gx), gx, px), np.where(np.isfinite(gy), gy, py))
                   for (gx, gy), (px, py) in zip(guesses, positions)]
        new_results = fit_all(psf, guesses)
        dx = np.concatenate([n.x - o.x for n, o in zip(new_results, results)])
        dy = np.concatenate([n.y - o.y for n, o in zip(new_results, results)])
        sx_ = np.concatenate([n.sigma_x for n in new_results])
        sy_ = np.concatenate([n.sigma_y for n in new_results])
        fin = np.isfinite(dx) & np.isfinite(dy) & np.isfinite(sx_) & np.isfinite(sy_)
        ratio = np.hypot(dx[fin] / sx_[fin], dy[fin] / sy_[fin])
        rms_ratio = float(np.sqrt(np.mean(ratio**2))) if ratio.size else np.nan
        history.append(dict(iteration=it,
                            rms_shift_px=float(np.sqrt(np.mean(dx[fin]**2 + dy[fin]**2))),
                            rms_shift_over_sigma=rms_ratio,
                            max_shift_over_sigma=float(ratio.max()) if ratio.size else np.nan,
                            n_spots=int(fin.sum())))
        results = new_results
        if rms_ratio < tol:
            converged = True
            break
    psf.meta.update(n_iter=it, converged=converged, stamp_size=stamp_size,
                    n_spots=int(sum(len(r) for r in results)))
    return EPSFFit(psf=psf, results=results, n_iter=it, converged=converged,
                   history=history)


def build_epsf_photutils(images: ArrayLike | Sequence[ArrayLike],
                         positions: tuple[ArrayLike, ArrayLike] | Sequence[tuple[ArrayLike, ArrayLike]],
                         *, background: float | Sequence[float] | None = None,
                         oversampling: int = 4, size: int | None = None, maxiters: int = 10,
                         **builder_kwargs: Any) -> PixelPSF:
    """ePSF from ``photutils.psf.EPSFBuilder`` (photutils >= 3.0), as a :class:`PixelPSF`.

    Kept for comparison (see the module docstring: slower, and far from the bound on our
    data with its default settings).

    Parameters
    ----------
    images : 2-D array or list of 2-D arrays
        Frames (ADU).
    positions : (x, y) or list of (x, y)
        Spot positions in each frame (px, 0-based).
    background : float or list of float or None
        Per-frame level (ADU/px) subtracted before extraction (default: the median of each
        frame).
    oversampling : int
        ePSF grid points per pixel.
    size : odd int or None
        Cut-out size (px); default 5 FWHM.
    maxiters : int
        Maximum iterations of ``EPSFBuilder``.
    **builder_kwargs
        Passed to ``EPSFBuilder`` (e.g. ``smoothing_kernel``).

    Returns
    -------
    PixelPSF
        The ePSF table (padded to a square of odd size), ``meta``: ``kind="epsf"``,
        ``method="photutils"``, ``iterations``, ``converged``.
    """
    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars

    images, positions, _, _ = _as_lists(images, positions, None, None)
    if background is None:
        background = [float(np.median(im)) for im in images]
    elif np.ndim(background) == 0:
        background = [float(background)] * len(images)
    if size is None:
        fwhm = np.median([estimate_fwhm(im, *pos) for im, pos in zip(images, positions)])
        s = int(np.ceil(5.0 * fwhm))
        size = s + (s + 1) % 2
    data = [NDData(im - bg) for im, bg in zip(images, background)]
    cats = [Table({"x": px, "y": py}) for px, py in positions]
    stars = extract_stars(data, cats, size=int(size))
    builder = EPSFBuilder(oversampling=int(oversampling), maxiters=int(maxiters),
                          progress_bar=False, **builder_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = builder(stars)
    epsf = res.epsf
    tab = np.asarray(epsf.data, float)
    # photutils' ImagePSF: value at offset d = data[origin + oversampling * d] (sum =
    # oversampling^2), i.e. the same convention as PixelPSF; pad to square odd shape
    ny, nx = tab.shape
    n = max(ny, nx) | 1
    tab = np.pad(tab, (((n - ny) // 2, n - ny - (n - ny) // 2),
                       ((n - nx) // 2, n - nx - (n - nx) // 2)))
    return PixelPSF(tab, int(oversampling), dict(kind="epsf", method="photutils",
                                                 iterations=int(res.iterations),
                                                 converged=bool(res.converged)))
