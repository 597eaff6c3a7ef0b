"""Point-spread functions of the lab (pinhole) and sky data paths.

Conventions
-----------
* Pixel positions are 0-based, the centre of the first pixel is (0.0, 0.0); ``x`` runs
  along numpy axis 1 (columns), ``y`` along axis 0 (rows).
* Every PSF here is a *pixel-integrated* PSF (what Anderson & King call an effective
  PSF): ``psf(dx, dy)`` is the fraction of the total flux of a point (or pinhole) source
  that falls in a whole detector pixel whose centre lies at offset ``(dx, dy)`` pixels
  from the source.  Summed over all pixels of the infinite plane it is 1, whatever the
  sub-pixel position of the source.  A finite stamp holds a little less; see
  :meth:`PixelPSF.fraction_in_stamp`.
* Angles are in milliarcseconds (``*_mas``), wavelengths in micrometres (``*_um``),
  pupil dimensions in metres (``*_m``); astropy quantities are accepted wherever a
  plain float with such a suffix is.

The objects used by the centroiding stage (:mod:`astrocal.image.centroid`) only need the
*stamp protocol*::

    values = psf.stamps(x, y, x0, y0, size)                        # (N, size, size)
    values, d_dx, d_dy = psf.stamps(x, y, x0, y0, size, derivatives=True)

giving, for N sources at ``(x[n], y[n])``, the pixel-integrated PSF on the ``size`` x
``size`` pixel stamp whose first (lowest-index) pixel is ``(x0[n], y0[n])`` (integers),
and its derivatives with respect to the source position ``x[n]``, ``y[n]``.
:class:`PixelPSF` (a tabulated, oversampled pixel-integrated PSF: diffraction model or
empirical ePSF) and :class:`AOStarPSF` (diffraction core plus seeing halo) implement it.

Diffraction model
-----------------
The optical transfer function (OTF) is the autocorrelation of the pupil, computed by FFT
of a zero-padded binary pupil.  It is multiplied by the transfer functions of the
pinhole (uniform disk), of optional Gaussian jitter and of the square pixel
(``sinc * sinc``), and transformed back to the image plane with a matrix Fourier
transform (Soummer et al. 2007, an exact DFT to an arbitrary output grid) onto a grid
oversampled ``oversampling`` times per detector pixel.  Because the OTF has compact
support (spatial frequencies up to D/lambda), the table is band-limited and a cubic
B-spline interpolates it to ~1e-7 of the peak at the default oversampling (8 per pixel;
derivatives to ~1e-5); the derivatives with respect to the source position are the exact
derivatives of that spline, so values and derivatives are consistent.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from astropy.units import Quantity
from numpy.typing import ArrayLike
from scipy import ndimage, special

__all__ = [
    "ELT_OUTER_DIAMETER_M",
    "ELT_CENTRAL_OBSCURATION_M",
    "ELT_SPIDER_WIDTH_M",
    "FILTER_WAVELENGTH_UM",
    "PIXEL_SCALE_MAS",
    "RAD_TO_MAS",
    "PixelPSF",
    "AOStarPSF",
    "StampPSF",
    "elt_pupil",
    "diffraction_psf",
    "diffraction_psf_direct",
    "pinhole_diameter_mas",
    "gaussian_psf",
    "airy_profile",
    "airy_encircled_energy",
    "render_spots",
    "moffat_fwhm_to_alpha",
]

#: Outer diameter of the ELT pupil, metres: ESO's figure (39.14634 m, the segmented M1
#: outline of the E-ELT Construction Proposal, as used by HCIPy's ``make_elt_aperture``).
ELT_OUTER_DIAMETER_M = 39.146
#: Diameter of the central obscuration, metres.  We adopt the ~11 m usually quoted for
#: the ELT's central obscuration (larger than the 9.41 m central hole of the segmented M1
#: in HCIPy's model, which leaves out the shadowing by the M2 unit and baffles); area
#: ratio 7.9 %.  Not checked against the current ESO pupil definition: a parameter.
ELT_CENTRAL_OBSCURATION_M = 11.0
#: Width of each of the six M2 spider arms, metres (approximate; HCIPy uses 0.4 m).  The
#: spiders barely change the core; they diffract ~4 % of the light into long spikes.
ELT_SPIDER_WIDTH_M = 0.5
#: Central wavelengths of the default METIS imager filters, micrometres.
FILTER_WAVELENGTH_UM = {"L": 3.8, "M": 4.8, "N": 11.3}
#: Nominal pixel scales of the METIS imagers, mas/px.
PIXEL_SCALE_MAS = {"IMG_LM": 5.47, "IMG_N": 6.79}
#: Radians to milliarcseconds.
RAD_TO_MAS = 180.0 / np.pi * 3600.0e3

# cubic B-spline prefilter margin (zeros added around a table before prefiltering)
_PAD = 8
# binary pupil samples per OTF grid step (see _transfer)
_PUPIL_OVERSAMPLE = 4


def _value(q, unit):
    """Plain float (or array) of ``q`` in ``unit``; plain numbers pass through unchanged."""
    if hasattr(q, "unit"):
        return q.to_value(unit)
    return q


def pinhole_diameter_mas(diameter_um: float | Quantity = 25.0,
                         mask_scale_mm_per_arcsec: float | Quantity = 3.319) -> float:
    """Angular diameter (mas) of a pinhole at the mask plate scale.

    25 um at 3.319 mm/arcsec (the METIS WCU) is 7.53 mas.

    Parameters
    ----------
    diameter_um : float or Quantity
        The pinhole's diameter (um).
    mask_scale_mm_per_arcsec : float or Quantity
        The plate scale at the mask (mm/arcsec).

    Returns
    -------
    float
        The angular diameter (mas).
    """
    d_um = _value(diameter_um, "um")
    scale = _value(mask_scale_mm_per_arcsec, "mm/arcsec")
    return float(d_um) * 1e-3 / float(scale) * 1e3


# --------------------------------------------------------------------------------------
# pupil and analytic references
# --------------------------------------------------------------------------------------
def elt_pupil(n: int = 256, *, diameter_m: float = ELT_OUTER_DIAMETER_M,
              obscuration_m: float = ELT_CENTRAL_OBSCURATION_M, spiders: bool = True,
              spider_width_m: float = ELT_SPIDER_WIDTH_M, spider_angle_deg: float = 0.0,
              supersample: int = 4) -> tuple[np.ndarray, float]:
    """Transmission of the ELT pupil on an ``n`` x ``n`` grid spanning the outer diameter.

    The pupil is approximated by a circle of ``diameter_m`` (the segmented hexagonal
    outline is not modelled: it changes the PSF only in the far wings), minus a central
    circular obscuration of ``obscuration_m`` and, if ``spiders``, six radial arms of
    width ``spider_width_m`` at 60 deg intervals starting at ``spider_angle_deg`` from the
    +x axis.  Edges are anti-aliased by averaging ``supersample**2`` sub-samples per cell.

    Parameters
    ----------
    n : int
        Grid samples across the outer diameter.
    diameter_m, obscuration_m : float
        Outer diameter and central obscuration diameter (m).
    spiders : bool
        Include the six spider arms.
    spider_width_m, spider_angle_deg : float
        Their width (m) and the angle of the first from the +x axis (deg).
    supersample : int
        Sub-samples per cell along each axis.

    Returns
    -------
    pupil : numpy.ndarray
        The transmission (floats in [0, 1], shape (n, n), centred on the point
        ``((n-1)/2, (n-1)/2)``).
    dx_m : float
        The grid step in metres.
    """
    n = int(n)
    dx = diameter_m / n
    s = int(supersample)
    # sub-sample coordinates (metres, centred)
    c = (np.arange(n * s) + 0.5) / s - n / 2.0
    xx, yy = np.meshgrid(c * dx, c * dx, indexing="xy")
    r = np.hypot(xx, yy)
    t = (r <= diameter_m / 2.0) & (r >= obscuration_m / 2.0)
    if spiders and spider_width_m > 0:
        for k in range(6):
            a = np.deg2rad(spider_angle_deg + 60.0 * k)
            along = xx * np.cos(a) + yy * np.sin(a)
            across = -xx * np.sin(a) + yy * np.cos(a)
            t &= ~((along > 0) & (np.abs(across) < spider_width_m / 2.0))
    pupil = t.reshape(n, s, n, s).mean(axis=(1, 3))
    return pupil, dx


def airy_profile(r_lambda_over_d: ArrayLike, obscuration_ratio: float = 0.0) -> np.ndarray:
    """Peak-normalised intensity of an (obscured) Airy pattern.

    The unobscured pattern has its FWHM at 1.029 lambda/D and its first dark ring at
    1.2197 lambda/D.

    Parameters
    ----------
    r_lambda_over_d : array_like
        The radius in units of lambda/D.
    obscuration_ratio : float
        The ratio of the central obscuration's diameter to D.

    Returns
    -------
    numpy.ndarray
        The intensity (1 at the centre).
    """
    v = np.pi * np.asarray(r_lambda_over_d, dtype=float)
    eps = float(obscuration_ratio)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(v == 0, 1.0, 2 * special.j1(v) / v)
        ev = eps * v
        b = np.where(ev == 0, 1.0, 2 * special.j1(ev) / np.where(ev == 0, 1, ev))
    amp = (a - eps**2 * b) / (1 - eps**2)
    return amp**2


def airy_encircled_energy(r_lambda_over_d: ArrayLike) -> np.ndarray:
    """Encircled energy of the unobscured Airy pattern, ``1 - J0(v)^2 - J1(v)^2``.

    Parameters
    ----------
    r_lambda_over_d : array_like
        The radius in units of lambda/D (``v = pi r``).

    Returns
    -------
    numpy.ndarray
        The fraction of the flux within the radius.
    """
    v = np.pi * np.asarray(r_lambda_over_d, dtype=float)
    return 1.0 - special.j0(v) ** 2 - special.j1(v) ** 2


# --------------------------------------------------------------------------------------
# cubic B-spline helpers (shared with the ePSF table)
# --------------------------------------------------------------------------------------
def bspline_weights(t: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline weights (and their derivatives) for fractional offsets ``t``.

    For a sample position ``k + t`` (``0 <= t < 1``) the interpolated value is
    ``sum_a w[..., a] * c[k - 1 + a]``, ``a = 0..3``.

    Parameters
    ----------
    t : array_like
        Fractional offsets.

    Returns
    -------
    w : numpy.ndarray
        The weights, shape ``t.shape + (4,)``.
    dw : numpy.ndarray
        Their derivatives with respect to ``t``, same shape.
    """
    t = np.asarray(t, dtype=float)
    t2 = t * t
    t3 = t2 * t
    omt = 1.0 - t
    w = np.stack([omt**3 / 6.0,
                  (3 * t3 - 6 * t2 + 4) / 6.0,
                  (-3 * t3 + 3 * t2 + 3 * t + 1) / 6.0,
                  t3 / 6.0], axis=-1)
    dw = np.stack([-0.5 * omt**2,
                   (3 * t2 - 4 * t) / 2.0,
                   (-3 * t2 + 2 * t + 1) / 2.0,
                   0.5 * t2], axis=-1)
    return w, dw


# --------------------------------------------------------------------------------------
# the tabulated pixel-integrated PSF
# --------------------------------------------------------------------------------------
@dataclass(eq=False)
class PixelPSF:
    """A pixel-integrated PSF tabulated on an oversampled grid.

    ``table[j, i]`` is the flux fraction in a detector pixel centred at offset
    ``dx = (i - c) / oversampling``, ``dy = (j - c) / oversampling`` pixels from the
    source, with ``c = (table.shape[0] - 1) / 2`` (the table is square and odd-sized, its
    central sample is the source position).  Values in between are given by cubic
    B-spline interpolation; beyond the table the PSF is taken as zero.

    ``meta`` records how the table was made (wavelength, pixel scale, pupil, ...).
    """

    table: np.ndarray
    oversampling: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        table = np.asarray(self.table, dtype=float)
        if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] % 2 != 1:
            raise ValueError(f"PSF table must be square and odd-sized, got {table.shape}")
        if not np.all(np.isfinite(table)):
            raise ValueError("PSF table has non-finite values")
        self.table = table
        self.oversampling = int(self.oversampling)
        padded = np.pad(table, _PAD)
        self._coef = ndimage.spline_filter(padded, order=3, mode="mirror")
        # flat coefficients with one extra exact zero at the end, read by taps that fall
        # outside the table
        self._coef_flat = np.append(self._coef.ravel(), 0.0)
        # index of the source position in the padded coefficient array
        self._c = (table.shape[0] - 1) // 2 + _PAD

    # ---- geometry -------------------------------------------------------------------
    @property
    def half_width(self) -> float:
        """Half-width of the table in detector pixels."""
        return (self.table.shape[0] - 1) / 2.0 / self.oversampling

    @property
    def table_sum(self) -> float:
        """Flux fraction represented by the table: the integral of the tabulated PSF.

        For the diffraction model this is the flux inside the table's square; the
        remainder is in the far wings, which are cut off.
        """
        return float(self.table.sum()) / self.oversampling**2

    def default_stamp_size(self) -> int:
        """Odd stamp size (px) of about four FWHM, at least 7 px: used by the fitter.

        Returns
        -------
        int
            The size, at most what the table's half-width less 2 px allows.
        """
        s = int(np.ceil(4.0 * self.fwhm()))
        s = max(7, s + (s + 1) % 2)
        return min(s, 2 * int(self.half_width - 2) + 1)

    def fwhm(self) -> float:
        """Full width at half maximum along x through the peak of the table.

        Returns
        -------
        float
            The FWHM (px), interpolated linearly between samples; NaN if the profile does
            not fall below half the peak within the table.
        """
        c = (self.table.shape[0] - 1) // 2
        prof = self.table[c]
        peak = prof[c]
        right = prof[c:]
        k = int(np.argmax(right < peak / 2))
        if k == 0:
            return float("nan")
        # linear interpolation between samples k-1 and k
        f = (right[k - 1] - peak / 2) / (right[k - 1] - right[k])
        return 2.0 * (k - 1 + f) / self.oversampling

    # ---- evaluation -----------------------------------------------------------------
    def evaluate(self, dx: ArrayLike, dy: ArrayLike) -> np.ndarray:
        """Pixel-integrated PSF at arbitrary offsets.

        Parameters
        ----------
        dx, dy : array_like
            Offsets of the pixel from the source (px), any shape (broadcast).

        Returns
        -------
        numpy.ndarray
            The PSF values (0 beyond the table).
        """
        dx, dy = np.broadcast_arrays(np.asarray(dx, dtype=float), np.asarray(dy, dtype=float))
        u = self._c + dx * self.oversampling
        v = self._c + dy * self.oversampling
        out = ndimage.map_coordinates(self._coef, [v.ravel(), u.ravel()], order=3,
                                      mode="constant", cval=0.0, prefilter=False)
        return out.reshape(dx.shape)

    def _pattern(self, size):
        """Flat-index offsets of the 4x4 taps of every pixel of a stamp: (size*size, 16)."""
        cache = self.__dict__.setdefault("_pattern_cache", {})
        if size not in cache:
            os_ = self.oversampling
            ncol = self._coef.shape[1]
            j = np.arange(size)[:, None, None, None]
            i = np.arange(size)[None, :, None, None]
            a = np.arange(4)[None, None, :, None]
            b = np.arange(4)[None, None, None, :]
            pat = (os_ * j + a) * ncol + (os_ * i + b)
            cache[size] = pat.reshape(size * size, 16).astype(np.int64)
        return cache[size]

    def _phase(self, pos, origin):
        """First tap index (into the padded coefficients) and B-spline weights per source.

        Pixel ``origin + i`` of a stamp sits at offset ``origin + i - pos`` from the
        source, i.e. at fine coordinate ``u0 + os * i`` with ``u0 = c + os * (origin -
        pos)``; the fractional part ``t`` of ``u0`` is the same for every pixel of the
        stamp, so the weights are per source, shape (N, 4).  Returns ``(k0 - 1, w,
        dw/dpos)``.
        """
        os_ = self.oversampling
        u0 = self._c + os_ * (origin - pos)
        k0 = np.floor(u0)
        w, dw = bspline_weights(u0 - k0)
        return k0.astype(np.int64) - 1, w, dw * (-os_)  # dt/dpos = -os

    def stamps(self, x: ArrayLike, y: ArrayLike, x0: ArrayLike, y0: ArrayLike, size: int,
               derivatives: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PSF (and derivatives wrt the source position) on N pixel stamps.

        Parameters
        ----------
        x, y : array (N,)
            Source positions (px, 0-based, pixel-centre convention).
        x0, y0 : int array (N,)
            Pixel indices (column, row) of the first pixel of each stamp.
        size : int
            Stamp size (px); stamps are ``size`` x ``size``.
        derivatives : bool
            Also return the derivatives with respect to ``x`` and ``y``.

        Returns
        -------
        values : numpy.ndarray
            (N, size, size), ``values[n, j, i]`` for pixel ``(x0+i, y0+j)``; pixels beyond
            the table get 0.  Alone unless ``derivatives``.
        d_dx, d_dy : numpy.ndarray
            If ``derivatives``: of the same shape (per pixel of source displacement).
        """
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        x0 = np.atleast_1d(np.asarray(x0)).astype(np.int64)
        y0 = np.atleast_1d(np.asarray(y0)).astype(np.int64)
        size = int(size)
        n = x.size
        kx, wx, dwx = self._phase(x, x0)
        ky, wy, dwy = self._phase(y, y0)
        nrow, ncol = self._coef.shape
        coef = self._coef_flat
        pat = self._pattern(size)
        span = self.oversampling * (size - 1) + 3
        inside = (kx >= 0) & (ky >= 0) & (kx + span < ncol) & (ky + span < nrow)
        base = ky * ncol + kx
        if np.all(inside):
            sub = np.take(coef, base[:, None, None] + pat[None])  # (N, S*S, 16)
        else:
            # some taps fall outside the (zero-padded) table: clip them to a zero sample
            os_ = self.oversampling
            taps = os_ * np.arange(size)[None, :, None] + np.arange(4)[None, None, :]
            rows = ky[:, None, None] + taps  # (N, S, 4)
            cols = kx[:, None, None] + taps
            flat = (rows[:, :, None, :, None] * ncol + cols[:, None, :, None, :])
            out = ((rows < 0) | (rows >= nrow))[:, :, None, :, None] | (
                (cols < 0) | (cols >= ncol))[:, None, :, None, :]
            flat = np.where(out, coef.size - 1, flat)  # the appended exact zero
            sub = np.take(coef, flat.reshape(n, size * size, 16))
        wxy = (wy[:, :, None] * wx[:, None, :]).reshape(n, 16)
        if not derivatives:
            return np.einsum("npk,nk->np", sub, wxy, optimize=True).reshape(n, size, size)
        w = np.stack([wxy, (wy[:, :, None] * dwx[:, None, :]).reshape(n, 16),
                      (dwy[:, :, None] * wx[:, None, :]).reshape(n, 16)], axis=-1)
        out = np.einsum("npk,nkc->cnp", sub, w, optimize=True).reshape(3, n, size, size)
        return out[0], out[1], out[2]

    def fraction_in_stamp(self, size: int, dx: float = 0.0, dy: float = 0.0) -> float:
        """Flux fraction inside a stamp centred on the pixel nearest to a source.

        Parameters
        ----------
        size : int
            Stamp side (px).
        dx, dy : float
            The source's sub-pixel offset from that pixel's centre (px).

        Returns
        -------
        float
            The fraction.
        """
        h = int(size) // 2
        v = self.stamps(np.array([dx]), np.array([dy]), np.array([-h]), np.array([-h]),
                        int(size))
        return float(v.sum())

    def shifted(self, dx: float, dy: float) -> PixelPSF:
        """A copy of this PSF whose reference point is moved by ``(dx, dy)`` px.

        Parameters
        ----------
        dx, dy : float
            The shift (px).

        Returns
        -------
        PixelPSF
            Its table satisfies ``new(u, v) = old(u + dx, v + dy)``: a source fitted with
            the new PSF is reported ``(dx, dy)`` further along than with the old one.
        """
        n = self.table.shape[0]
        c = (n - 1) / 2
        j, i = np.mgrid[0:n, 0:n].astype(float)
        new = self.evaluate((i - c) / self.oversampling + dx,
                            (j - c) / self.oversampling + dy)
        return PixelPSF(new, self.oversampling, dict(self.meta))


# --------------------------------------------------------------------------------------
# diffraction model
# --------------------------------------------------------------------------------------
def _mft(otf, freq, xs, ys):
    """``sum_k otf[k] exp(2 pi i (fx_k x + fy_k y))`` on the grid ``ys`` x ``xs``.

    ``otf`` is indexed (fy, fx) on the 1-D frequency grid ``freq`` (cycles/px); the result
    is indexed (y, x) and is real for a Hermitian ``otf`` (real part returned).
    """
    ex = np.exp(2j * np.pi * np.outer(np.asarray(xs, float), freq))  # (n_x, n_f)
    ey = np.exp(2j * np.pi * np.outer(np.asarray(ys, float), freq))  # (n_y, n_f)
    return (ey @ otf @ ex.T).real


@functools.lru_cache(maxsize=16)
def _transfer(wavelength_um, pixel_scale_mas, diameter_m, obscuration_m, spiders,
              spider_width_m, spider_angle_deg, pinhole_mas, jitter_mas, pixel_integrated,
              n_pupil):
    """Total transfer function (OTF x pinhole x jitter x pixel) on its frequency grid.

    Returns ``(transfer * df**2, freq)``: the weights of the image-plane Fourier sum and
    the 1-D frequency grid in cycles per detector pixel.
    """
    # Binary pupil sampled _PUPIL_OVERSAMPLE times finer than the OTF grid: a binary
    # (not grey-edged) pupil keeps OTF(0) = area exactly (grey edges would act as partial
    # amplitude transmission and sharpen the PSF by ~0.2 %).
    ovs = _PUPIL_OVERSAMPLE
    pupil, dpf = elt_pupil(n_pupil * ovs, diameter_m=diameter_m, obscuration_m=obscuration_m,
                           spiders=spiders, spider_width_m=spider_width_m,
                           spider_angle_deg=spider_angle_deg, supersample=1)
    n_f = 2 * n_pupil
    # OTF = autocorrelation of the pupil, zero padded by 2 (no wrap-around); exact at the
    # fine lags, of which every ovs-th is kept (lags -n_pupil .. n_pupil-1 coarse steps)
    fp = np.fft.rfft2(pupil, s=(n_f * ovs, n_f * ovs))
    otf = np.fft.fftshift(np.fft.irfft2(np.abs(fp) ** 2, s=(n_f * ovs, n_f * ovs)))
    otf = otf[::ovs, ::ovs]
    otf /= otf[n_pupil, n_pupil]  # OTF(0) = 1 <=> unit total flux
    dp = dpf * ovs
    # frequency (cycles per detector pixel) of the OTF samples
    lam_m = wavelength_um * 1e-6
    pix_rad = pixel_scale_mas / RAD_TO_MAS
    df = dp / lam_m * pix_rad
    freq = (np.arange(n_f) - n_pupil) * df
    fx, fy = np.meshgrid(freq, freq, indexing="xy")
    rho = np.hypot(fx, fy)
    transfer = otf
    if pinhole_mas > 0:
        d = pinhole_mas / pixel_scale_mas  # pinhole diameter in px
        arg = np.pi * d * rho
        safe = np.where(arg == 0, 1.0, arg)
        transfer = transfer * np.where(arg == 0, 1.0, 2 * special.j1(safe) / safe)
    if jitter_mas > 0:
        s = jitter_mas / pixel_scale_mas
        transfer = transfer * np.exp(-2 * np.pi**2 * s**2 * rho**2)
    if pixel_integrated:
        transfer = transfer * np.sinc(fx) * np.sinc(fy)
    weights = transfer * df**2
    weights.setflags(write=False)
    freq.setflags(write=False)
    return weights, freq


@functools.lru_cache(maxsize=16)
def _diffraction_table(oversampling, half_width, *transfer_args):
    weights, freq = _transfer(*transfer_args)
    n_half = int(round(half_width * oversampling))
    coords = np.arange(-n_half, n_half + 1) / oversampling
    table = _mft(weights, freq, coords, coords)
    table.setflags(write=False)
    return table


def _diffraction_args(wavelength_um, pixel_scale_mas, pinhole_mas, diameter_m,
                      obscuration_m, spiders, spider_width_m, spider_angle_deg,
                      jitter_mas, pixel_integrated, n_pupil):
    lam = float(_value(wavelength_um, "um"))
    pix = float(_value(pixel_scale_mas, "mas"))
    pin = 0.0 if pinhole_mas is None else float(_value(pinhole_mas, "mas"))
    jit = float(_value(jitter_mas, "mas"))
    return (lam, pix, float(diameter_m), float(obscuration_m), bool(spiders),
            float(spider_width_m), float(spider_angle_deg), pin, jit,
            bool(pixel_integrated), int(n_pupil))


def diffraction_psf_direct(xs: ArrayLike, ys: ArrayLike,
                           wavelength_um: float | Quantity = FILTER_WAVELENGTH_UM["L"],
                           pixel_scale_mas: float | Quantity = PIXEL_SCALE_MAS["IMG_LM"], *,
                           pinhole_mas: float | Quantity | None = None,
                           diameter_m: float = ELT_OUTER_DIAMETER_M,
                           obscuration_m: float = ELT_CENTRAL_OBSCURATION_M,
                           spiders: bool = True, spider_width_m: float = ELT_SPIDER_WIDTH_M,
                           spider_angle_deg: float = 0.0, jitter_mas: float | Quantity = 0.0,
                           pixel_integrated: bool = True, n_pupil: int = 256) -> np.ndarray:
    """Reference evaluation of the diffraction PSF by direct Fourier summation.

    Without any table or interpolation.  Slow for large grids; used to validate the
    tabulated model.

    Parameters
    ----------
    xs, ys : array_like
        1-D offsets (px) of the grid.
    wavelength_um, pixel_scale_mas, pinhole_mas, diameter_m, obscuration_m, spiders, spider_width_m, spider_angle_deg, jitter_mas, pixel_integrated, n_pupil
        As :func:`diffraction_psf` takes them.

    Returns
    -------
    numpy.ndarray
        The PSF (same definition as :func:`diffraction_psf`) on the grid ``ys`` x ``xs``,
        indexed ``[y, x]``.
    """
    args = _diffraction_args(wavelength_um, pixel_scale_mas, pinhole_mas, diameter_m,
                             obscuration_m, spiders, spider_width_m, spider_angle_deg,
                             jitter_mas, pixel_integrated, n_pupil)
    weights, freq = _transfer(*args)
    return _mft(weights, freq, xs, ys)


def diffraction_psf(wavelength_um: float | Quantity = FILTER_WAVELENGTH_UM["L"],
                    pixel_scale_mas: float | Quantity = PIXEL_SCALE_MAS["IMG_LM"], *,
                    pinhole_mas: float | Quantity | None = None, oversampling: int = 8,
                    half_width: float | None = None, diameter_m: float = ELT_OUTER_DIAMETER_M,
                    obscuration_m: float = ELT_CENTRAL_OBSCURATION_M, spiders: bool = True,
                    spider_width_m: float = ELT_SPIDER_WIDTH_M, spider_angle_deg: float = 0.0,
                    jitter_mas: float | Quantity = 0.0, pixel_integrated: bool = True,
                    n_pupil: int = 256) -> PixelPSF:
    """Diffraction-limited, pixel-integrated PSF of the ELT (optionally of a pinhole).

    Parameters
    ----------
    wavelength_um : float or Quantity
        Monochromatic wavelength (um); ``FILTER_WAVELENGTH_UM`` has L 3.8, M 4.8, N 11.3.
    pixel_scale_mas : float or Quantity
        Detector pixel scale (mas/px): IMG_LM 5.47, IMG_N 6.79.
    pinhole_mas : float or Quantity or None
        Angular diameter (mas) of the source, a uniform disk (a WCU pinhole: 25 um at
        3.319 mm/arcsec = 7.53 mas, see :func:`pinhole_diameter_mas`).  ``None`` or 0: a
        point source.
    oversampling : int
        Table samples per detector pixel (default 8: ~29 samples per lambda/D in L).
    half_width : float or None
        Half-width of the table (px); default ``max(16, 10 lambda/D)``.  The flux
        fraction inside the table is :attr:`PixelPSF.table_sum` (about 0.95 in L band with the spiders, 0.98 without).
    diameter_m, obscuration_m : float
        Outer pupil diameter and central obscuration diameter (m); 39.146 and 11.0 by
        default (see the module constants).  ``obscuration_m=0`` and ``spiders=False``
        give the Airy pattern of a filled circular pupil.
    spiders, spider_width_m, spider_angle_deg : bool, float, float
        The six M2 support arms (switchable), their width (m) and orientation (deg from
        the +x axis).
    jitter_mas : float or Quantity
        RMS per axis of a Gaussian image motion (mas) convolved with the PSF.
    pixel_integrated : bool
        Integrate over the (square, 100 % fill factor) pixel.  ``False`` tabulates the
        optical PSF itself (intensity per px^2 sampled at points), for tests and plots.
    n_pupil : int
        Pupil samples across ``diameter_m`` (the PSF is periodic with a period of
        ``n_pupil * lambda/D``, far outside the table).

    Returns
    -------
    PixelPSF
        Normalised to total flux 1 in the infinite plane; ``meta`` holds the parameters
        and ``lambda_over_d_px``.
    """
    args = _diffraction_args(wavelength_um, pixel_scale_mas, pinhole_mas, diameter_m,
                             obscuration_m, spiders, spider_width_m, spider_angle_deg,
                             jitter_mas, pixel_integrated, n_pupil)
    lam, pix, pin, jit = args[0], args[1], args[7], args[8]
    lod_px = lam * 1e-6 / diameter_m * RAD_TO_MAS / pix
    if half_width is None:
        half_width = max(16.0, np.ceil(10.0 * lod_px))
    table = _diffraction_table(int(oversampling), float(half_width), *args)
    meta = dict(kind="diffraction", wavelength_um=lam, pixel_scale_mas=pix,
                pinhole_mas=pin, jitter_mas=jit, diameter_m=float(diameter_m),
                obscuration_m=float(obscuration_m), spiders=bool(spiders),
                spider_width_m=float(spider_width_m), pixel_integrated=bool(pixel_integrated),
                lambda_over_d_px=lod_px, lambda_over_d_mas=lod_px * pix)
    return PixelPSF(np.array(table), int(oversampling), meta)


def gaussian_psf(fwhm_px: float, *, oversampling: int = 4,
                 half_width: float | None = None) -> PixelPSF:
    """Pixel-integrated circular Gaussian PSF.

    A smooth stand-in (e.g. the starting point of the ePSF iteration); exact pixel
    integration with error functions, unit total flux in the infinite plane.

    Parameters
    ----------
    fwhm_px : float
        Full width at half maximum (px).
    oversampling : int
        Table samples per pixel.
    half_width : float or None
        Half-width of the table (px); default ``max(8, ceil(5 sigma) + 2)``.

    Returns
    -------
    PixelPSF
        ``meta``: ``kind="gaussian"``, ``fwhm_px``.
    """
    sigma = float(fwhm_px) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    if half_width is None:
        half_width = max(8.0, np.ceil(5.0 * sigma) + 2)
    n_half = int(round(half_width * oversampling))
    u = np.arange(-n_half, n_half + 1) / oversampling
    s2 = np.sqrt(2.0) * sigma
    prof = 0.5 * (special.erf((u + 0.5) / s2) - special.erf((u - 0.5) / s2))
    return PixelPSF(np.outer(prof, prof), int(oversampling),
                    dict(kind="gaussian", fwhm_px=float(fwhm_px)))


# --------------------------------------------------------------------------------------
# AO-corrected star PSF
# --------------------------------------------------------------------------------------
def moffat_fwhm_to_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width ``alpha`` for a given FWHM and power ``beta``.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum.
    beta : float
        The Moffat power.

    Returns
    -------
    float
        ``alpha``, in the unit of ``fwhm``.
    """
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


# 2x2 Gauss-Legendre nodes on a pixel (offsets from its centre): exact for cubics
_GL = 0.5 / np.sqrt(3.0)


@dataclass(eq=False)
class AOStarPSF:
    """AO-corrected star PSF: ``strehl * core + (1 - strehl) * halo``.

    ``core`` is a diffraction :class:`PixelPSF` (point source, no pinhole); the halo is a
    normalised circular Moffat profile ``(beta - 1) / (pi alpha^2) (1 + r^2/alpha^2)^-beta``
    of FWHM ``halo_fwhm_px``, integrated over the pixel with a 2x2 Gauss-Legendre rule
    (exact to third order; the halo is tens of pixels wide).  Both parts have unit
    integral, so the whole PSF does and ``strehl`` is the fraction of the flux in the
    diffraction core; the peak ratio to the perfect PSF, the usual Strehl ratio, is
    ``strehl`` plus the halo's negligible (< 1e-3 relative) contribution at the peak.

    Use :meth:`from_seeing` for a halo given by the seeing.  This is deliberately simple:
    it does not model the AO control radius, the anisoplanatism or the residual
    low-order aberrations.
    """

    core: PixelPSF
    strehl: float
    halo_fwhm_px: float
    beta: float = 2.5

    @classmethod
    def from_seeing(cls, core: PixelPSF, strehl: float, seeing_arcsec: float | Quantity = 0.7,
                    seeing_wavelength_um: float | Quantity = 0.5, beta: float = 2.5) -> AOStarPSF:
        """An AO star PSF whose halo FWHM is the seeing scaled by lambda^-1/5.

        Parameters
        ----------
        core : PixelPSF
            The diffraction core; its ``meta`` gives ``wavelength_um`` and
            ``pixel_scale_mas``.
        strehl : float
            Fraction of the flux in the core.
        seeing_arcsec : float or Quantity
            The seeing FWHM (arcsec) at ``seeing_wavelength_um``.
        seeing_wavelength_um : float or Quantity
            Its wavelength (um).
        beta : float
            The halo's Moffat power.

        Returns
        -------
        AOStarPSF
        """
        lam = core.meta["wavelength_um"]
        pix = core.meta["pixel_scale_mas"]
        fwhm_mas = (float(_value(seeing_arcsec, "arcsec")) * 1e3
                    * (lam / float(_value(seeing_wavelength_um, "um"))) ** -0.2)
        return cls(core, float(strehl), fwhm_mas / pix, float(beta))

    def __post_init__(self):
        if not 0.0 <= self.strehl <= 1.0:
            raise ValueError("strehl must be in [0, 1]")
        self.meta = dict(self.core.meta, kind="ao_star", strehl=self.strehl,
                         halo_fwhm_px=self.halo_fwhm_px, beta=self.beta)
        self.half_width = self.core.half_width

    def fwhm(self) -> float:
        """The core's FWHM (px, :meth:`PixelPSF.fwhm`).

        Returns
        -------
        float
        """
        return self.core.fwhm()

    def default_stamp_size(self) -> int:
        """The core's stamp size (px, :meth:`PixelPSF.default_stamp_size`).

        Returns
        -------
        int
        """
        return self.core.default_stamp_size()

    def _halo(self, dx, dy, derivatives):
        """Pixel-integrated Moffat at offsets dx, dy (and derivatives wrt the source)."""
        a = moffat_fwhm_to_alpha(self.halo_fwhm_px, self.beta)
        b = self.beta
        norm = (b - 1.0) / (np.pi * a * a)
        val = 0.0
        ddx = 0.0
        ddy = 0.0
        for sx in (-_GL, _GL):
            for sy in (-_GL, _GL):
                u = dx + sx
                v = dy + sy
                q = 1.0 + (u * u + v * v) / (a * a)
                f = norm * q ** (-b)
                val = val + 0.25 * f
                if derivatives:
                    # d f / d(source x) = -d f / du
                    g = 0.25 * norm * b * q ** (-b - 1.0) * 2.0 / (a * a)
                    ddx = ddx + g * u
                    ddy = ddy + g * v
        return val, ddx, ddy

    def evaluate(self, dx: ArrayLike, dy: ArrayLike) -> np.ndarray:
        """Pixel-integrated PSF at arbitrary offsets.

        Parameters
        ----------
        dx, dy : array_like
            Offsets of the pixel from the source (px).

        Returns
        -------
        numpy.ndarray
            ``strehl * core + (1 - strehl) * halo``.
        """
        dx = np.asarray(dx, dtype=float)
        dy = np.asarray(dy, dtype=float)
        h, _, _ = self._halo(dx, dy, False)
        return self.strehl * self.core.evaluate(dx, dy) + (1.0 - self.strehl) * h

    def stamps(self, x: ArrayLike, y: ArrayLike, x0: ArrayLike, y0: ArrayLike, size: int,
               derivatives: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PSF (and derivatives wrt the source position) on N pixel stamps.

        Parameters
        ----------
        x, y, x0, y0, size, derivatives
            As :meth:`PixelPSF.stamps` takes them.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            As :meth:`PixelPSF.stamps` returns them.
        """
        x = np.atleast_1d(np.asarray(x, dtype=float))
        y = np.atleast_1d(np.asarray(y, dtype=float))
        x0 = np.atleast_1d(np.asarray(x0)).astype(np.int64)
        y0 = np.atleast_1d(np.asarray(y0)).astype(np.int64)
        idx = np.arange(int(size))
        dx = (x0 - x)[:, None, None] + idx[None, None, :]
        dy = (y0 - y)[:, None, None] + idx[None, :, None]
        s = self.strehl
        h, hx, hy = self._halo(dx, dy, derivatives)
        if not derivatives:
            return s * self.core.stamps(x, y, x0, y0, size) + (1 - s) * h
        c, cx, cy = self.core.stamps(x, y, x0, y0, size, derivatives=True)
        return s * c + (1 - s) * h, s * cx + (1 - s) * hx, s * cy + (1 - s) * hy

    def fraction_in_stamp(self, size: int, dx: float = 0.0, dy: float = 0.0) -> float:
        """Flux fraction inside a stamp centred on the pixel nearest to a source.

        Parameters
        ----------
        size : int
            Stamp side (px).
        dx, dy : float
            The source's sub-pixel offset from that pixel's centre (px).

        Returns
        -------
        float
            The fraction.
        """
        h = int(size) // 2
        v = self.stamps(np.array([dx]), np.array([dy]), np.array([-h]), np.array([-h]),
                        int(size))
        return float(v.sum())


#: a PSF model with the stamp protocol (``fwhm``, ``evaluate``, ``stamps``,
#: ``fraction_in_stamp``, ``default_stamp_size``), as the centroider and detection take it
StampPSF = PixelPSF | AOStarPSF


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------
def render_spots(shape: tuple[int, int], x: ArrayLike, y: ArrayLike, flux: ArrayLike,
                 psf: StampPSF, *, radius: int | None = None, image: np.ndarray | None = None,
                 chunk: int = 256) -> np.ndarray:
    """Add N sources to an image: ``image += sum_n flux[n] * psf(pixel - (x[n], y[n]))``.

    Parameters
    ----------
    shape : (ny, nx)
        Image shape (ignored if ``image`` is given).
    x, y, flux : arrays (N,)
        Source positions (px, 0-based pixel-centre convention) and total fluxes (the
        image's unit, e.g. electrons).
    psf : object with the stamp protocol (:class:`PixelPSF`, :class:`AOStarPSF`)
        The PSF model.
    radius : int or None
        Each source is drawn on a ``2 radius + 1`` square stamp around its nearest pixel;
        flux beyond is dropped (see ``psf.fraction_in_stamp``).  Default: the PSF table's
        half-width (the whole model: 37 px in L band with IMG_LM).
    image : 2-D float array or None
        Image to add to (in place); a new zero image otherwise.
    chunk : int
        Sources rendered per vectorised batch (bounds the memory used).

    Returns
    -------
    image : (ny, nx) float array
        The image (``image`` itself when given).
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    flux = np.broadcast_to(np.asarray(flux, dtype=float), x.shape)
    if image is None:
        image = np.zeros(shape, dtype=float)
    ny, nx = image.shape
    if radius is None:
        radius = int(np.floor(psf.half_width))
    radius = int(radius)
    size = 2 * radius + 1
    ar = np.arange(size)
    flat = image.reshape(-1)  # view (image is contiguous when created here)
    if not image.flags.c_contiguous:
        raise ValueError("image must be C-contiguous")
    for s in range(0, x.size, int(chunk)):
        sl = slice(s, s + int(chunk))
        xs, ys, fs = x[sl], y[sl], flux[sl]
        x0 = np.rint(xs).astype(np.int64) - radius
        y0 = np.rint(ys).astype(np.int64) - radius
        vals = psf.stamps(xs, ys, x0, y0, size) * fs[:, None, None]
        cols = x0[:, None, None] + ar[None, None, :]
        rows = y0[:, None, None] + ar[None, :, None]
        inside = (cols >= 0) & (cols < nx) & (rows >= 0) & (rows < ny)
        inside = np.broadcast_to(inside, vals.shape)
        idx = np.broadcast_to(rows * nx + cols, vals.shape)[inside]
        flat += np.bincount(idx, weights=vals[inside], minlength=flat.size)
    return image
