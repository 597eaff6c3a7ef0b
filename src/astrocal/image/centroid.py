"""Fast PSF-fitting centroids of many spots, with their Cramér-Rao-limited covariance.

Conventions: pixel positions are 0-based, the centre of the first pixel is (0.0, 0.0),
``x`` is numpy axis 1 (column), ``y`` axis 0 (row).  Images are 2-D float arrays in
ADU; the :class:`NoiseModel` gives the gain (e-/ADU; 1 for images in electrons).

Model and noise
---------------
Each spot ``n`` is fitted on a ``size`` x ``size`` stamp around its first guess with

    m_n(p) = F_n * psf(p - (x_n, y_n)) + B_n              (ADU, per pixel p)

where ``psf`` is any object with the stamp protocol of :mod:`astrocal.image.psf` (the
pixel-integrated diffraction PSF, an AO star PSF, or an empirical ePSF from
:mod:`astrocal.image.epsf`), ``F_n`` the total flux (ADU in the infinite plane) and
``B_n`` a local constant background (ADU/px).  The per-pixel variance is

    V(p) = max(m(p), 0) / g + (dark + sky + read_noise^2) / g^2 + extra(p)    (ADU^2)

Poisson noise of the model counts (source + whatever background is left in the image)
plus the noise of levels that were subtracted from the image before the fit (``dark``,
``sky``, in e-/px, e.g. a background frame), read noise, and an optional extra variance
map.  The fit minimises ``sum w (d - m)^2`` with weights ``w = 1 / V`` computed *from the
model, never from the data*, re-evaluated at every iteration (iteratively re-weighted
least squares).  Its fixed point solves ``sum (d - m) / V * dm/dtheta = 0``, which for
``V = m + const`` is exactly the maximum-likelihood equation of the shifted-Poisson
approximation of Poisson + Gaussian read noise: unbiased at low SNR, unlike
data-weighted fits (whose weights correlate with the noise).

Optimiser: batched Levenberg-Marquardt on all stamps at once (arrays of shape
``(N, size, size)``); spots that have converged are frozen.  A spot whose fitted position
ends up more than half a pixel from its stamp centre has its stamp re-cut and refitted.
Spots whose neighbours' light reaches their stamp are then refitted with the neighbours'
fitted models subtracted (``deblend`` rounds; a block Gauss-Seidel joint fit).

Uncertainties: the inverse of the Fisher matrix ``J^T V^-1 J`` at the solution (the same
matrix as the Cramér-Rao bound, evaluated at the fitted rather than the true parameters),
for the four parameters (x, y, F, B).  ``chi2_ndof`` is reported separately; it is ~1
when the PSF and noise models are right.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import astropy.units as u
import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike
from scipy import optimize
from scipy.spatial import cKDTree

# the flag bits, their names and the severe set: the source-table contract
from ..sources import (CENTROID_FLAG_NAMES as FLAG_NAMES, FLAG_BAD_FIT, FLAG_CROWDED, FLAG_DIVERGED,
                       FLAG_EDGE, FLAG_MASKED, FLAG_NOT_CONVERGED, FLAG_SATURATED, FLAGS_SEVERE, decode_flags)
from .psf import StampPSF

__all__ = [
    "NoiseModel",
    "CentroidResult",
    "fit_centroids",
    "cramer_rao_bound",
    "flux_for_snr",
    "FLAG_SATURATED",
    "FLAG_MASKED",
    "FLAG_NOT_CONVERGED",
    "FLAG_EDGE",
    "FLAG_DIVERGED",
    "FLAG_BAD_FIT",
    "FLAG_CROWDED",
    "FLAG_NAMES",
    "FLAGS_SEVERE",
    "MIN_VARIANCE",
    "decode_flags",
]

#: variance floor (ADU^2), see NoiseModel.variance
MIN_VARIANCE = 1e-8


@dataclass(frozen=True, eq=False)
class NoiseModel:
    """Per-pixel noise of an image in ADU.

    Attributes
    ----------
    gain : float
        e-/ADU (1.0 when the image is in electrons).
    read_noise : float
        Read noise, e- rms per pixel.
    dark, sky : float
        Mean dark and sky/thermal-background counts per pixel (e-) that were *subtracted*
        from the image before fitting: their Poisson noise remains, their level does not
        appear in the image.  Levels still present in the image are part of the fitted
        local background and must not be given here (they would be counted twice).
    extra_variance : float or 2-D array or None
        Additional variance (ADU^2), a scalar or a map of the image's shape, e.g. the
        variance of a subtracted background frame.  Non-finite entries mask the pixel.
    poisson : bool
        Include the Poisson noise of the model counts (default True).
    """

    gain: float = 1.0
    read_noise: float = 0.0
    dark: float = 0.0
    sky: float = 0.0
    extra_variance: float | np.ndarray | None = None
    poisson: bool = True

    @property
    def static_variance(self) -> float:
        """Model-independent part of the variance, ADU^2 (scalar)."""
        g = float(self.gain)
        return (self.dark + self.sky + self.read_noise**2) / g**2

    def variance(self, model: ArrayLike, extra: float | ArrayLike = 0.0) -> np.ndarray:
        """Variance (ADU^2) of pixels whose expected value is ``model`` (ADU).

        Floored at ``MIN_VARIANCE`` (1e-8 ADU^2) so that noiseless pixels (pure Poisson
        noise of a zero model) do not get infinite weight.

        Parameters
        ----------
        model : array_like
            Expected pixel values (ADU).
        extra : float or array_like
            Additional variance (ADU^2), added to the static part.

        Returns
        -------
        numpy.ndarray
            The variance (ADU^2), of the broadcast shape of ``model`` and ``extra``.
        """
        v = self.static_variance + extra
        if self.poisson:
            v = v + np.maximum(model, 0.0) / float(self.gain)
        return np.maximum(v, MIN_VARIANCE)


@dataclass(eq=False)
class CentroidResult:
    """Fitted spots: one entry per input first guess, in input order.

    Units: positions and their errors in pixels (0-based, pixel-centre convention);
    ``flux`` the total PSF flux in ADU (infinite plane, i.e. corrected for the light
    outside the stamp by the PSF model), ``background`` ADU/px; ``snr = flux/flux_err``.
    ``cov_xy`` is the x-y covariance (px^2).  ``flags`` is the bitmask of ``FLAG_*``.
    """

    x: np.ndarray
    y: np.ndarray
    sigma_x: np.ndarray
    sigma_y: np.ndarray
    cov_xy: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    background: np.ndarray
    background_err: np.ndarray
    snr: np.ndarray
    chi2_ndof: np.ndarray
    npix: np.ndarray
    niter: np.ndarray
    flags: np.ndarray
    x_guess: np.ndarray
    y_guess: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self):
        return int(self.x.size)

    @property
    def cov(self) -> np.ndarray:
        """Position covariance matrices, shape (N, 2, 2), px^2."""
        c = np.empty((len(self), 2, 2))
        c[:, 0, 0] = self.sigma_x**2
        c[:, 1, 1] = self.sigma_y**2
        c[:, 0, 1] = c[:, 1, 0] = self.cov_xy
        return c

    def good(self, reject: int = FLAGS_SEVERE) -> np.ndarray:
        """Which spots have none of the ``reject`` flag bits set.

        Parameters
        ----------
        reject : int
            The flag bits that make a spot bad (default the severe ones).

        Returns
        -------
        numpy.ndarray of bool
            One per spot.
        """
        return (self.flags & int(reject)) == 0

    def to_table(self) -> Table:
        """The result as an astropy Table.

        Returns
        -------
        astropy.table.Table
            One column per field (units in the column metadata), ``meta``: the result's
            meta and ``flag_bits`` ({name: bit}).
        """
        units = dict(x=u.pix, y=u.pix, sigma_x=u.pix, sigma_y=u.pix, cov_xy=u.pix**2,
                     x_guess=u.pix, y_guess=u.pix)
        t = Table(meta=dict(self.meta))
        for f in fields(self):
            if f.name == "meta":
                continue
            t[f.name] = getattr(self, f.name)
            if f.name in units:
                t[f.name].unit = units[f.name]
        t.meta["flag_bits"] = {name: bit for bit, name in FLAG_NAMES.items()}
        return t


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _stamp_size(psf, stamp_size):
    if stamp_size is None:
        stamp_size = psf.default_stamp_size()
    stamp_size = int(stamp_size)
    if stamp_size < 3 or stamp_size % 2 == 0:
        raise ValueError(f"stamp_size must be odd and >= 3, got {stamp_size}")
    return stamp_size


def cut_stamps(image: np.ndarray, x0: np.ndarray, y0: np.ndarray, size: int,
               fill: float | bool = np.nan) -> tuple[np.ndarray, np.ndarray]:
    """Stamps ``image[y0+j, x0+i]`` of N spots.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image.
    x0, y0 : numpy.ndarray of int
        Column and row of each stamp's first pixel (N,).
    size : int
        Stamp side (px).
    fill : float or bool
        Value of the pixels outside the image.

    Returns
    -------
    stamps : numpy.ndarray
        (N, size, size).
    inside : numpy.ndarray of bool
        (N, size, size): which stamp pixels lie in the image.
    """
    ny, nx = image.shape
    ar = np.arange(size)
    cols = x0[:, None] + ar[None, :]
    rows = y0[:, None] + ar[None, :]
    cin = (cols >= 0) & (cols < nx)
    rin = (rows >= 0) & (rows < ny)
    st = image[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
    inside = rin[:, :, None] & cin[:, None, :]
    st = np.where(inside, st, fill)
    return st, inside


def _fisher(psf, x, y, flux, bg, x0, y0, size, noise, valid, extra, fit_background):
    """Fisher matrix (N, 4, 4) of (x, y, F, B) for stamps with model-based variance."""
    p, px, py = psf.stamps(x, y, x0, y0, size, derivatives=True)
    n = len(x)
    m = flux[:, None, None] * p + bg[:, None, None]
    w = np.where(valid, 1.0 / noise.variance(m, extra), 0.0).reshape(n, -1)
    jac = _jacobian(p, px, py, flux)
    a = np.matmul((jac * w[:, :, None]).transpose(0, 2, 1), jac)
    if not fit_background:
        _fix_background(a)
    return a


def _jacobian(p, px, py, flux):
    n = p.shape[0]
    return np.stack([flux[:, None] * px.reshape(n, -1), flux[:, None] * py.reshape(n, -1),
                     p.reshape(n, -1), np.ones((n, p[0].size))], axis=-1)


def _fix_background(a, g=None):
    a[:, 3, :] = 0.0
    a[:, :, 3] = 0.0
    a[:, 3, 3] = 1.0
    if g is not None:
        g[:, 3] = 0.0


def _safe_inv(a):
    """Batched inverse; singular or non-finite matrices give NaN and ok=False."""
    ok = np.all(np.isfinite(a), axis=(1, 2))
    out = np.full_like(a, np.nan)
    if np.any(ok):
        try:
            out[ok] = np.linalg.inv(a[ok])
        except np.linalg.LinAlgError:
            for k in np.flatnonzero(ok):
                try:
                    out[k] = np.linalg.inv(a[k])
                except np.linalg.LinAlgError:
                    ok[k] = False
    ok &= np.all(np.isfinite(out), axis=(1, 2)) & (out[:, 0, 0] > 0) & (out[:, 1, 1] > 0)
    return out, ok


# --------------------------------------------------------------------------------------
# the batched Levenberg-Marquardt solver
# --------------------------------------------------------------------------------------
def _normal_equations(p, px, py, prm, d, v, e, noise, fit_background):
    """Weights, residuals, chi^2, Fisher matrix and gradient at ``prm`` (N, 4).

    The weights are ``1 / V(model)`` (model-based, see the module docstring).
    """
    k = prm.shape[0]
    pf = p.reshape(k, -1)
    m = prm[:, 2:3] * pf + prm[:, 3:4]
    w = np.where(v, 1.0 / noise.variance(m, e), 0.0)
    r = np.where(v, d - m, 0.0)
    wr = w * r
    chi2 = np.einsum("np,np->n", wr, r)
    jac = _jacobian(p, px, py, prm[:, 2])  # (k, P, 4)
    wj = jac * w[:, :, None]
    a = np.matmul(wj.transpose(0, 2, 1), jac)
    g = np.matmul(jac.transpose(0, 2, 1), wr[:, :, None])[:, :, 0]
    if not fit_background:
        _fix_background(a, g)
    return w, chi2, a, g


def _lm(psf, data, valid, extra, x0, y0, size, params, noise, fit_background,
        max_iter, tol, start=None):
    """Fit all stamps by batched Levenberg-Marquardt.

    ``params`` (N, 4) = x, y, F, B are the starting values; ``start`` optionally the
    ``(p, px, py)`` stamps already computed there.  Weights are recomputed from the
    current model at every iteration; a step is accepted when it lowers chi^2 evaluated
    with the current weights; a spot is done when an accepted step is below ``tol``
    times the standard error of every parameter.

    Returns ``(params, converged, niter, (p, px, py))``, the last being the PSF stamps
    and derivatives at the returned parameters.
    """
    n = data.shape[0]
    params = params.copy()
    lam = np.full(n, 1e-3)
    converged = np.zeros(n, bool)
    niter = np.zeros(n, int)
    active = np.arange(n)
    dflat = data.reshape(n, -1)
    vflat = valid.reshape(n, -1)
    eflat = np.broadcast_to(extra, data.shape).reshape(n, -1) if np.ndim(extra) else extra
    if start is None:
        start = psf.stamps(params[:, 0], params[:, 1], x0, y0, size, derivatives=True)
    p_all, px_all, py_all = (np.array(a) for a in start)
    p, px, py = p_all, px_all, py_all
    eye = np.eye(4)
    for it in range(max_iter):
        if active.size == 0:
            break
        prm = params[active]
        d = dflat[active]
        v = vflat[active]
        e = eflat[active] if np.ndim(eflat) else eflat
        k = active.size
        w, chi2, a, g = _normal_equations(p, px, py, prm, d, v, e, noise, fit_background)
        diag = np.einsum("nii->ni", a)
        lhs = a + (lam[active][:, None] * diag)[:, :, None] * eye
        try:
            step = np.linalg.solve(lhs, g[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.zeros_like(g)
            for j in range(k):
                try:
                    step[j] = np.linalg.solve(lhs[j], g[j])
                except np.linalg.LinAlgError:
                    pass
        step = np.where(np.isfinite(step), step, 0.0)
        # keep steps sane: at most 1 px, flux stays positive
        sc = np.maximum(1.0, np.max(np.abs(step[:, :2]), axis=1))
        step[:, :2] /= sc[:, None]
        trial = prm + step
        bad_flux = trial[:, 2] <= 0
        trial[bad_flux, 2] = 0.5 * prm[bad_flux, 2]
        tp, tpx, tpy = psf.stamps(trial[:, 0], trial[:, 1], x0[active], y0[active], size,
                                  derivatives=True)
        tm = trial[:, 2:3] * tp.reshape(k, -1) + trial[:, 3:4]
        tr = np.where(v, d - tm, 0.0)
        tchi2 = np.einsum("np,np->n", w, tr * tr)
        accept = np.isfinite(tchi2) & (tchi2 <= chi2 * (1 + 1e-12) + 1e-300)
        niter[active] += 1
        lam_a = lam[active]
        lam_a = np.where(accept, np.maximum(lam_a * 0.3, 1e-7), np.minimum(lam_a * 10, 1e8))
        lam[active] = lam_a
        acc = active[accept]
        params[acc] = trial[accept]
        p_all[acc], px_all[acc], py_all[acc] = tp[accept], tpx[accept], tpy[accept]
        # convergence: an accepted step much smaller than the statistical error
        var = np.abs(np.einsum("nii->ni", _safe_inv(a)[0]))
        small = np.all(step * step <= tol * tol * var, axis=1)
        stalled = lam_a >= 1e8
        done = (accept & small) | stalled
        converged[active[done & ~stalled]] = True
        active = active[~done]
        p, px, py = p_all[active], px_all[active], py_all[active]
    return params, converged, niter, (p_all, px_all, py_all)


def fit_centroids(image: ArrayLike, x: ArrayLike, y: ArrayLike, psf: StampPSF, *,
                  noise: NoiseModel | None = None, mask: ArrayLike | None = None,
                  stamp_size: int | None = None, saturation: float | None = None,
                  background: float | ArrayLike | None = None, max_iter: int = 50,
                  tol: float = 1e-2, max_shift: float | None = None, recenter: int = 2,
                  deblend: int = 3) -> CentroidResult:
    """Fit the position, flux and local background of N spots with a PSF model.

    Parameters
    ----------
    image : 2-D float array (ny, nx)
        The image, ADU (electrons if ``noise.gain == 1``).  NaN/inf pixels are masked.
    x, y : arrays (N,)
        First guesses (px, 0-based, pixel-centre convention), good to ~1 px.
    psf : object with the stamp protocol (see :mod:`astrocal.image.psf`)
        :class:`~astrocal.image.psf.PixelPSF` (diffraction or ePSF) or
        :class:`~astrocal.image.psf.AOStarPSF`.
    noise : NoiseModel or None
        The noise model (default: Poisson only, gain 1).
    mask : 2-D bool array or None
        True for bad pixels, excluded from the fits.
    stamp_size : odd int or None
        Fitting box (px); default ``psf.default_stamp_size()`` (~4 FWHM: 15 px in L band
        with IMG_LM, 35 px in N band with IMG_N).
    saturation : float or None
        Pixels at or above this level (ADU) are excluded and the spot flagged.
    background : None, float or array (N,)
        None: fit a local constant background per spot.  A number: fixed background
        (ADU/px).
    max_iter : int
        Maximum Levenberg-Marquardt iterations per stamp cut.
    tol : float
        Convergence when every parameter step is below ``tol`` times its standard error.
    max_shift : float or None
        Spots whose fitted position is farther than this from the first guess (px) are
        flagged ``FLAG_DIVERGED``; default ``stamp_size / 2``.
    recenter : int
        Times a stamp may be re-cut around the fitted position when the fit lands more
        than half a pixel from the stamp centre.
    deblend : int
        Rounds of neighbour subtraction.  Spots closer than the PSF model's extent
        (``psf.half_width`` plus half a stamp) put light into each other's stamps and
        bias each other (on the METIS fine grid, 30 px pitch in L band: up to 3e-3 px,
        about 2 sigma at SNR 1000).  After a fit, the fitted models of the other spots
        are subtracted from every stamp (their Poisson noise is added to its variance)
        and all spots refitted; this converges to the joint fit of all spots.  Only
        spots with such neighbours cost anything; 0 disables.

    Returns
    -------
    CentroidResult
        One entry per first guess, in input order.
    """
    image = np.asarray(image, dtype=float)
    if image.ndim != 2:
        raise ValueError("image must be 2-D")
    x = np.atleast_1d(np.asarray(x, dtype=float)).copy()
    y = np.atleast_1d(np.asarray(y, dtype=float)).copy()
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D arrays of the same length")
    noise = NoiseModel() if noise is None else noise
    size = _stamp_size(psf, stamp_size)
    h = size // 2
    n = x.size
    finite = np.isfinite(x) & np.isfinite(y)
    pts = np.column_stack([np.where(finite, x, -1e9), np.where(finite, y, -1e9)])
    flags0 = np.zeros(n, dtype=np.int64)
    flags0[~finite] |= FLAG_BAD_FIT
    pairs = np.zeros((0, 2), dtype=np.int64)
    if n > 1:
        tree = cKDTree(pts)
        # crowding flag: a neighbour's core (2 FWHM) reaches into the stamp
        fwhm = psf.fwhm() if hasattr(psf, "fwhm") else 0.0
        close = tree.query_pairs(h + 2.0 * fwhm, p=np.inf, output_type="ndarray")
        if close.size:
            flags0[close.ravel()] |= FLAG_CROWDED
        if deblend:
            reach = float(getattr(psf, "half_width", h)) + h + 1.0
            pairs = tree.query_pairs(reach, p=np.inf, output_type="ndarray")
            pairs = np.concatenate([pairs, pairs[:, ::-1]]) if pairs.size else pairs
    kwargs = dict(noise=noise, mask=mask, size=size, saturation=saturation,
                  background=background, max_iter=max_iter, tol=tol,
                  max_shift=size / 2.0 if max_shift is None else float(max_shift),
                  recenter=recenter, flags0=flags0)
    res = _fit_centroids(image, x, y, x, y, psf, neighbours=None, **kwargs)
    involved = np.unique(pairs[:, 0]) if pairs.size else np.zeros(0, np.int64)
    rounds = 0
    for _ in range(int(deblend) if pairs.size else 0):
        ok = res.good(FLAG_BAD_FIT | FLAG_DIVERGED)
        use = ok[pairs[:, 1]]
        nb = (pairs[use, 0], pairs[use, 1], res.x, res.y, res.flux)
        # refit the spots that have neighbours, starting from the current solution
        sub = _fit_centroids(image, x[involved], y[involved],
                             np.where(ok, res.x, x)[involved], np.where(ok, res.y, y)[involved],
                             psf, neighbours=(nb, involved),
                             **dict(kwargs, flags0=flags0[involved]))
        moved = np.hypot((sub.x - res.x[involved]) / sub.sigma_x,
                         (sub.y - res.y[involved]) / sub.sigma_y)
        res = _merge(res, sub, involved)
        rounds += 1
        if not np.any(moved > 0.01):  # NaN (failed fits) compare False
            break
    res.meta["deblend_rounds"] = rounds
    return res


def _merge(res, sub, idx):
    out = CentroidResult(**{f.name: (np.array(getattr(res, f.name)) if f.name != "meta"
                                     else dict(res.meta)) for f in fields(res)})
    for f in fields(res):
        if f.name != "meta":
            getattr(out, f.name)[idx] = getattr(sub, f.name)
    return out


def _neighbour_light(psf, neighbours, idx, x0, y0, size):
    """Model light (ADU) of the neighbours of spots ``idx`` on their stamps (k, S, S).

    ``neighbours = ((i, j, x, y, flux), involved)``: spot ``i`` receives light from spot
    ``j`` at ``(x[j], y[j])`` with flux ``flux[j]`` (indices into the full spot list);
    ``involved[k]`` is the full index of the k-th spot of this call, and ``idx`` the
    positions (within this call) of the spots whose stamps are wanted.
    """
    (pi, pj, xs, ys, fs), involved = neighbours
    full = involved[idx]
    where = np.full(int(max(full.max(initial=-1), pi.max(initial=-1))) + 1, -1)
    where[full] = np.arange(full.size)
    sel = (pi < where.size)
    sel[sel] = where[pi[sel]] >= 0
    k = where[pi[sel]]
    j = pj[sel]
    out = np.zeros((full.size, size, size))
    if k.size:
        vals = psf.stamps(xs[j], ys[j], x0[k], y0[k], size) * fs[j][:, None, None]
        np.add.at(out, k, vals)
    return out


def _fit_centroids(image, xg, yg, xs, ys, psf, *, noise, mask, size, saturation,
                   background, max_iter, tol, max_shift, recenter, flags0, neighbours):
    """One fit of spots with first guesses (xg, yg) (for the shift check and the output)
    starting at (xs, ys); ``neighbours`` (see _neighbour_light) are subtracted."""
    h = size // 2
    n = xg.size
    fit_background = background is None

    flags = flags0.copy()
    finite_guess = np.isfinite(xs) & np.isfinite(ys)
    flags[~finite_guess] |= FLAG_BAD_FIT
    x = np.where(finite_guess, xs, 0.0)
    y = np.where(finite_guess, ys, 0.0)

    def cut(idx, xc, yc):
        return _cut_fit_stamps(image, psf, idx, xc, yc, size=size, noise=noise, mask=mask,
                               saturation=saturation, neighbours=neighbours)

    x0, y0, data, valid, extra, cflags = cut(np.arange(n), x, y)
    flags |= cflags
    npix = valid.sum(axis=(1, 2))
    usable = finite_guess & (npix >= 6 + (1 if fit_background else 0))

    # initial flux and background: unweighted linear least squares at the start
    p0, p0x, p0y = psf.stamps(x, y, x0, y0, size, derivatives=True)
    params = _initial_params(p0, x, y, data, valid, background)

    converged = np.zeros(n, bool)
    niter = np.zeros(n, int)
    todo = np.flatnonzero(usable)
    start = (p0[todo], p0x[todo], p0y[todo])
    for attempt in range(int(recenter) + 1):
        if todo.size == 0:
            break
        ex = extra[todo] if np.ndim(extra) else extra
        prm, conv, nit, st = _lm(psf, data[todo], valid[todo], ex, x0[todo], y0[todo],
                                 size, params[todo], noise, fit_background, max_iter, tol,
                                 start=start)
        params[todo] = prm
        converged[todo] = conv
        niter[todo] += nit
        p0[todo], p0x[todo], p0y[todo] = st
        # re-cut stamps that are off-centre by more than half a pixel
        off = ((np.abs(params[todo, 0] - (x0[todo] + h)) > 0.5)
               | (np.abs(params[todo, 1] - (y0[todo] + h)) > 0.5))
        off &= (np.abs(params[todo, 0] - xg[todo]) <= max_shift) & (
            np.abs(params[todo, 1] - yg[todo]) <= max_shift)
        off &= np.all(np.isfinite(params[todo]), axis=1)
        todo = todo[off]
        if todo.size == 0 or attempt == int(recenter):
            break
        nx0, ny0, nd, nv, ne, nfl = cut(todo, params[todo, 0], params[todo, 1])
        x0[todo], y0[todo], data[todo], valid[todo] = nx0, ny0, nd, nv
        if np.ndim(extra):
            extra[todo] = ne
        flags[todo] = (flags[todo] & ~(FLAG_EDGE | FLAG_MASKED | FLAG_SATURATED)) | nfl
        npix[todo] = nv.sum(axis=(1, 2))
        start = None

    return _centroid_result(psf, p0, p0x, p0y, params, data, valid, extra, npix, niter,
                            converged, usable, flags, xg, yg, noise=noise, size=size,
                            max_shift=max_shift, fit_background=fit_background)


def _cut_fit_stamps(image, psf, idx, xc, yc, *, size, noise, mask, saturation, neighbours):
    """Stamps of ``size`` px around (xc, yc) for the spots ``idx``: their origins
    ``x0, y0``, data (less the light of ``neighbours``, 0 where invalid), valid-pixel
    masks, extra variance (scalar or per pixel) and flags (edge, masked, saturated)."""
    h = size // 2
    extra_map = noise.extra_variance
    extra_is_map = extra_map is not None and np.ndim(extra_map) == 2
    x0 = np.rint(xc).astype(np.int64) - h
    y0 = np.rint(yc).astype(np.int64) - h
    d, inside = cut_stamps(image, x0, y0, size)
    valid = inside & np.isfinite(d)
    fl = np.where(~np.all(inside, axis=(1, 2)), FLAG_EDGE, 0)
    masked = inside & ~np.isfinite(d)
    if mask is not None:
        mk, _ = cut_stamps(np.asarray(mask, bool), x0, y0, size, fill=False)
        masked |= mk & inside
        valid &= ~mk
    if extra_is_map:
        ev, _ = cut_stamps(np.asarray(extra_map, float), x0, y0, size)
        masked |= inside & ~np.isfinite(ev)
        valid &= np.isfinite(ev)
        ev = np.where(valid, ev, 0.0)
    else:
        ev = 0.0 if extra_map is None else float(extra_map)
    fl = fl | np.where(np.any(masked, axis=(1, 2)), FLAG_MASKED, 0)
    if saturation is not None:
        sat = valid & (d >= saturation)
        valid &= ~sat
        fl = fl | np.where(np.any(sat, axis=(1, 2)), FLAG_SATURATED, 0)
    if neighbours is not None:
        light = _neighbour_light(psf, neighbours, idx, x0, y0, size)
        d = d - light
        if noise.poisson:
            ev = ev + np.maximum(light, 0.0) / float(noise.gain)
    ev = np.broadcast_to(ev, d.shape).copy() if np.ndim(ev) or neighbours is not None else ev
    d = np.where(valid, d, 0.0)
    return x0, y0, d, valid, ev, fl


def _initial_params(p0, x, y, data, valid, background):
    """Starting parameters ``(x, y, flux, background)`` per spot: flux and background by
    unweighted linear least squares on the stamps (the PSF stamps ``p0`` at the start);
    the background is fixed when ``background`` is given."""
    n = x.size
    vf = valid.reshape(n, -1).astype(float)
    pf = p0.reshape(n, -1) * vf
    df = data.reshape(n, -1)
    s_pp = (pf * pf).sum(1)
    s_p = pf.sum(1)
    s_1 = vf.sum(1)
    s_pd = (pf * df).sum(1)
    s_d = df.sum(1)
    if background is None:
        det = s_pp * s_1 - s_p**2
        with np.errstate(invalid="ignore", divide="ignore"):
            f_init = (s_1 * s_pd - s_p * s_d) / det
            b_init = (s_pp * s_d - s_p * s_pd) / det
    else:
        b_init = np.broadcast_to(np.asarray(background, float), (n,)).copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            f_init = (s_pd - b_init * s_p) / s_pp
    f_fallback = np.maximum(s_d - np.where(np.isfinite(b_init), b_init, 0) * s_1, 1e-3)
    f_init = np.where(np.isfinite(f_init) & (f_init > 0), f_init, f_fallback)
    b_init = np.where(np.isfinite(b_init), b_init, 0.0)
    return np.column_stack([x, y, f_init, b_init])


def _centroid_result(psf, p0, p0x, p0y, params, data, valid, extra, npix, niter, converged,
                     usable, flags, xg, yg, *, noise, size, max_shift, fit_background):
    """The :class:`CentroidResult` of the fitted ``params``: the covariance from the Fisher
    matrix at the solution, chi2 per degree of freedom, the flags of the fit's outcome;
    NaN values for the spots whose fit is bad."""
    n = xg.size
    # covariance from the Fisher matrix at the solution (model-based weights)
    _, chi2, a, _ = _normal_equations(
        p0, p0x, p0y, params, data.reshape(n, -1), valid.reshape(n, -1),
        extra.reshape(n, -1) if np.ndim(extra) else extra, noise, fit_background)
    cov, ok = _safe_inv(a)
    xs_, ys_, fs, bs = params.T
    ndof = npix - (4 if fit_background else 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        chi2_ndof = chi2 / ndof

    flags[usable & ~converged] |= FLAG_NOT_CONVERGED
    shift = np.hypot(xs_ - xg, ys_ - yg)
    flags[usable & ~(shift <= max_shift)] |= FLAG_DIVERGED
    bad = ~usable | ~ok | ~(fs > 0) | ~np.all(np.isfinite(params), axis=1)
    flags[bad] |= FLAG_BAD_FIT

    sx = np.sqrt(cov[:, 0, 0])
    sy = np.sqrt(cov[:, 1, 1])
    sf = np.sqrt(cov[:, 2, 2])
    sb = np.sqrt(cov[:, 3, 3]) if fit_background else np.zeros(n)

    def nan_bad(v):
        v = np.asarray(v, dtype=float).copy()
        v[bad] = np.nan
        return v

    with np.errstate(invalid="ignore", divide="ignore"):
        snr = fs / sf
    return CentroidResult(
        x=nan_bad(xs_), y=nan_bad(ys_), sigma_x=nan_bad(sx), sigma_y=nan_bad(sy),
        cov_xy=nan_bad(cov[:, 0, 1]), flux=nan_bad(fs), flux_err=nan_bad(sf),
        background=nan_bad(bs), background_err=nan_bad(sb), snr=nan_bad(snr),
        chi2_ndof=nan_bad(chi2_ndof), npix=npix.astype(int), niter=niter, flags=flags,
        x_guess=np.asarray(xg, float).copy(), y_guess=np.asarray(yg, float).copy(),
        meta=dict(stamp_size=size, gain=float(noise.gain), read_noise=float(noise.read_noise),
                  fit_background=fit_background, psf=dict(getattr(psf, "meta", {}))),
    )




# --------------------------------------------------------------------------------------
# Cramér-Rao bound
# --------------------------------------------------------------------------------------
def cramer_rao_bound(psf: StampPSF, x: ArrayLike, y: ArrayLike, flux: ArrayLike,
                     background: ArrayLike, *, noise: NoiseModel | None = None,
                     stamp_size: int | None = None, fit_background: bool = True) -> np.ndarray:
    """Cramér-Rao bound on (x, y, flux, background) of spots fitted on stamps.

    The Fisher information of a stamp whose pixels are independent with mean
    ``m = F psf(p - (x, y)) + B`` and variance ``V(m)`` of :class:`NoiseModel` is
    ``I = sum_p dm/dtheta dm/dtheta^T / V`` (for pure Poisson noise, V = m, this is the
    exact Poisson Fisher information; with read noise it is that of the shifted-Poisson
    approximation, and no information is credited to the variance's dependence on
    theta).  The stamp is the one :func:`fit_centroids` uses: ``stamp_size`` square,
    centred on the pixel nearest to the source.

    Parameters
    ----------
    psf : stamp-protocol PSF
        :class:`~astrocal.image.psf.PixelPSF` or :class:`~astrocal.image.psf.AOStarPSF`.
    x, y : float or arrays (N,)
        True positions (px).  Only their sub-pixel phase matters.
    flux, background : float or arrays (N,)
        Total flux (ADU) and background (ADU/px) present in the image.
    noise : NoiseModel or None
        The noise model (default: Poisson only, gain 1); a map of extra variance enters
        as its mean.
    stamp_size : odd int or None
        Fitting box (px); default ``psf.default_stamp_size()``.
    fit_background : bool
        If False, the background is known: the bound is for (x, y, flux) only (the
        background row/column of the result is then zero except a 1 on the diagonal).

    Returns
    -------
    cov : array (..., 4, 4)
        Inverse Fisher matrix, parameter order (x, y, flux, background); shape (4, 4) for
        scalar inputs.  ``sqrt(cov[..., 0, 0])`` is the bound on sigma_x (px).
    """
    noise = NoiseModel() if noise is None else noise
    size = _stamp_size(psf, stamp_size)
    h = size // 2
    scalar = np.ndim(x) == 0 and np.ndim(y) == 0 and np.ndim(flux) == 0 and np.ndim(
        background) == 0
    x, y, flux, background = (np.atleast_1d(np.asarray(v, dtype=float))
                              for v in np.broadcast_arrays(x, y, flux, background))
    x0 = np.rint(x).astype(np.int64) - h
    y0 = np.rint(y).astype(np.int64) - h
    valid = np.ones((x.size, size, size), bool)
    extra = noise.extra_variance
    extra = 0.0 if extra is None else float(np.nanmean(extra)) if np.ndim(extra) else float(extra)
    a = _fisher(psf, x, y, flux, background, x0, y0, size, noise, valid, extra,
                fit_background)
    cov = np.linalg.inv(a)
    if not fit_background:
        cov[:, 3, 3] = 0.0
    return cov[0] if scalar else cov


def flux_for_snr(psf: StampPSF, snr: float, background: float, *,
                 noise: NoiseModel | None = None, stamp_size: int | None = None,
                 x: float = 0.0, y: float = 0.0) -> float:
    """Total flux (ADU) at which the Cramér-Rao SNR ``flux / sigma_flux`` equals ``snr``.

    Parameters
    ----------
    psf : stamp-protocol PSF
        :class:`~astrocal.image.psf.PixelPSF` or :class:`~astrocal.image.psf.AOStarPSF`.
    snr : float
        The wanted SNR.
    background : float
        The level present in the image (ADU/px); the background is taken as fitted.
    noise : NoiseModel or None
        The noise model (default: Poisson only, gain 1).
    stamp_size : odd int or None
        Fitting box (px); default ``psf.default_stamp_size()``.
    x, y : float
        Position (px); only its sub-pixel phase matters, and little.

    Returns
    -------
    float
        The flux (ADU), by root finding between 1e-3 and 1e14 ADU.
    """
    def f(logflux):
        fl = np.exp(logflux)
        c = cramer_rao_bound(psf, x, y, fl, background, noise=noise, stamp_size=stamp_size)
        return np.log(fl / np.sqrt(c[2, 2])) - np.log(snr)

    return float(np.exp(optimize.brentq(f, np.log(1e-3), np.log(1e14), xtol=1e-10)))
