"""Detector model for the lab simulator: noise, cosmetics, cosmic rays, saturation, ADU.

The input is an *expected-electron image*: the mean number of photo-electrons per
pixel in one DIT from the source plus the thermal background, for a perfectly uniform
detector (i.e. before flat-field and pixel-defect effects), as a numpy array of shape
``(ny, nx)`` (numpy axis 0 = y, axis 1 = x) or a scalar.  :func:`simulate_frame`
applies, each switchable, in this order:

1. ``reference_pixels``: the reference-pixel border (``border_px``) receives no light
   and no dark current;
2. ``flat``: multiplication by the flat-field pattern (large-scale illumination / QE
   variation times pixel-to-pixel variation), :func:`flat_field`;
3. ``dark``: dark current ``dark_current_e_per_s * exptime``, plus the extra rate of
   the hot pixels when ``bad_pixels`` is on;
4. ``bad_pixels``: dead pixels collect no charge (hot pixels: see 3);
5. ``photon_noise``: Poisson noise of everything collected (source, thermal
   background, dark); above ``poisson_threshold_e`` electrons its Gaussian
   approximation (same mean and variance) for speed;
6. ``cosmic_rays``: charge deposited along cosmic-ray tracks during the exposure;
7. ``saturation``: clipping at the full well;
8. ``read_noise``: Gaussian read noise;
9. ``adu``: division by the gain (e/ADU) and addition of ``bias_adu``;
   ``quantize`` rounds to integers.

With ``ndit > 1`` the output is the average of ``ndit`` DITs of ``exptime`` seconds
each (as ScopeSim's ``ExposureOutput(mode="average")``): photon noise of the sum,
read noise divided by sqrt(ndit), cosmic rays over the total time, saturation applied
to the per-DIT mean (an approximation).

Fixed patterns (flat field, dead and hot pixels) belong to the detector: they are drawn
from ``DetectorModel.seed`` (not from the per-exposure generator), so that every frame
of a campaign sees the same pattern and tests can compare with the truth
(:func:`flat_field`, :func:`bad_pixel_maps`, :func:`bad_pixel_mask`).  The random noise
of each frame comes from the ``numpy.random.Generator`` passed in.

Units: electrons (e), seconds, ADU; arrays are float32.
Performance: a 2048x2048 frame through all effects takes ~0.1-0.4 s on one core (exact
Poisson draws dominate at low signal); the
fixed patterns are computed once per detector model and cached (read-only arrays).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import astropy.units as u
from numpy.typing import ArrayLike
from scipy import ndimage

from ..instruments import Instrument, get_instrument

__all__ = [
    "DetectorModel",
    "BadPixels",
    "FrameTruth",
    "flat_field",
    "bad_pixel_maps",
    "bad_pixel_mask",
    "cosmic_ray_image",
    "simulate_frame",
    "background_frame",
    "flat_frame",
]

_STREAM_FLAT = 1
_STREAM_BADPIX = 2


@dataclass(frozen=True)
class DetectorModel:
    """Parameters of one detector (defaults: METIS IMG_LM H2RG, slow mode).

    Attributes (units in the names): ``shape`` (ny, nx); ``gain_e_per_adu``;
    ``read_noise_e`` per read (CDS); ``dark_current_e_per_s``; ``full_well_e``;
    ``bias_adu`` added to the output; ``border_px`` reference-pixel border
    (left, right, bottom, top) in pixels; ``dead_fraction``, ``hot_fraction`` of all
    pixels; ``hot_dark_range_e_per_s`` (hot-pixel dark rates are log-uniform in this
    range); ``flat_large_scale_rms`` (rms of the smooth illumination/QE pattern) and
    ``flat_pixel_rms`` (pixel-to-pixel); ``cosmic_ray_rate_per_cm2_s``;
    ``cosmic_ray_e_per_um`` (charge per micrometre of path in the absorber);
    ``absorber_thickness_um``; ``seed`` of the fixed patterns.
    """

    shape: tuple[int, int] = (2048, 2048)
    pixel_size_um: float = 18.0
    gain_e_per_adu: float = 2.5
    read_noise_e: float = 15.0
    dark_current_e_per_s: float = 0.05
    full_well_e: float = 1.0e5
    bias_adu: float = 0.0
    border_px: tuple[int, int, int, int] = (0, 0, 0, 0)
    dead_fraction: float = 1e-3
    hot_fraction: float = 5e-4
    hot_dark_range_e_per_s: tuple[float, float] = (10.0, 1000.0)
    flat_large_scale_rms: float = 0.03
    flat_pixel_rms: float = 0.01
    cosmic_ray_rate_per_cm2_s: float = 0.04
    cosmic_ray_e_per_um: float = 1000.0
    absorber_thickness_um: float = 8.0
    seed: int = 0
    name: str = ""

    def __post_init__(self):
        ny, nx = (int(v) for v in self.shape)
        if ny <= 0 or nx <= 0:
            raise ValueError(f"DetectorModel.shape must be positive, got {self.shape}")
        object.__setattr__(self, "shape", (ny, nx))
        object.__setattr__(self, "border_px", tuple(int(v) for v in self.border_px))
        object.__setattr__(self, "hot_dark_range_e_per_s", tuple(float(v) for v in self.hot_dark_range_e_per_s))
        for f in ("gain_e_per_adu", "full_well_e", "pixel_size_um"):
            if not getattr(self, f) > 0:
                raise ValueError(f"DetectorModel.{f} must be positive, got {getattr(self, f)}")
        for f in ("read_noise_e", "dark_current_e_per_s", "dead_fraction", "hot_fraction",
                  "flat_large_scale_rms", "flat_pixel_rms", "cosmic_ray_rate_per_cm2_s"):
            if getattr(self, f) < 0:
                raise ValueError(f"DetectorModel.{f} must be >= 0, got {getattr(self, f)}")

    @property
    def area_cm2(self) -> float:
        """The detector's area, cm^2."""
        ny, nx = self.shape
        return nx * ny * (self.pixel_size_um * 1e-4) ** 2

    @classmethod
    def from_instrument(cls, instrument: str | Instrument = "metis-lm", mode: str | None = None,
                        **overrides: Any) -> DetectorModel:
        """Model for an instrument of :mod:`astrocal.instruments` and a readout mode.

        Parameters
        ----------
        instrument : str or Instrument
            The instrument (key or object).
        mode : str, optional
            Readout mode (default: the detector's default mode).
        **overrides
            Replace any field (e.g. ``seed=3``, ``cosmic_ray_rate_per_cm2_s=0``).

        Returns
        -------
        DetectorModel
            The model.

        Raises
        ------
        TypeError
            For an unknown field in ``overrides``.
        """
        inst = get_instrument(instrument) if isinstance(instrument, str) else instrument
        det = inst.detector
        m = det.mode(mode)
        values = dict(
            shape=det.shape, pixel_size_um=det.pixel_size_um, gain_e_per_adu=m.gain_e_per_adu,
            read_noise_e=m.read_noise_e, dark_current_e_per_s=m.dark_current_e_per_s,
            full_well_e=m.full_well_e, border_px=det.border_px,
            dead_fraction=det.dead_pixel_fraction, hot_fraction=det.hot_pixel_fraction,
            hot_dark_range_e_per_s=det.hot_dark_range_e_per_s,
            flat_large_scale_rms=det.flat_large_scale_rms, flat_pixel_rms=det.flat_pixel_rms,
            cosmic_ray_rate_per_cm2_s=det.cosmic_ray_rate_per_cm2_s,
            cosmic_ray_e_per_um=det.cosmic_ray_e_per_um,
            absorber_thickness_um=det.absorber_thickness_um,
            name=f"{inst.name} {m.name}",
        )
        known = {f.name for f in fields(cls)}
        bad = set(overrides) - known
        if bad:
            raise TypeError(f"unknown DetectorModel field(s) {sorted(bad)}")
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> DetectorModel:
        """A copy with some fields changed.

        Parameters
        ----------
        **changes
            Field name -> new value.

        Returns
        -------
        DetectorModel
            The copy.
        """
        return replace(self, **changes)


@dataclass(frozen=True)
class BadPixels:
    """Truth of the fixed pixel defects (boolean maps, shape (ny, nx))."""

    dead: np.ndarray
    hot: np.ndarray
    hot_dark_e_per_s: np.ndarray   # extra dark rate, 0 except at hot pixels (float32)

    @property
    def mask(self) -> np.ndarray:
        """True where a pixel is dead or hot."""
        return self.dead | self.hot


@dataclass(frozen=True)
class FrameTruth:
    """What :func:`simulate_frame` did to one frame (for tests and diagnostics)."""

    saturated: np.ndarray          # bool, pixels clipped at the full well
    cosmic_e: np.ndarray | None    # float32 electrons deposited by cosmic rays (per DIT mean)
    n_cosmic_rays: int


# ---------------------------------------------------------------------------------
# fixed patterns (cached per detector model)
# ---------------------------------------------------------------------------------
def _readonly(a):
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=4)
def _flat_cached(det: DetectorModel) -> np.ndarray:
    ny, nx = det.shape
    rng = np.random.default_rng([det.seed, _STREAM_FLAT])
    flat = np.ones((ny, nx), dtype=np.float32)
    if det.flat_large_scale_rms > 0:
        # smooth pattern: a coarse 6x6 Gaussian field, cubic-interpolated to the detector
        coarse = rng.standard_normal((6, 6))
        big = ndimage.zoom(coarse, (ny / 6, nx / 6), order=3, mode="nearest", grid_mode=True)
        big = big[:ny, :nx]
        big = (big - big.mean()) / max(big.std(), 1e-12)
        flat += (det.flat_large_scale_rms * big).astype(np.float32)
    if det.flat_pixel_rms > 0:
        flat *= 1 + det.flat_pixel_rms * rng.standard_normal((ny, nx), dtype=np.float32)
    np.clip(flat, 0.0, None, out=flat)
    flat /= flat.mean(dtype=np.float64)
    return _readonly(flat)


def flat_field(det: DetectorModel) -> np.ndarray:
    """The detector's true flat-field pattern.

    Parameters
    ----------
    det : DetectorModel
        The detector model.

    Returns
    -------
    numpy.ndarray
        The pattern (ny, nx), float32, mean 1, read-only (cached).
    """
    return _flat_cached(det)


@functools.lru_cache(maxsize=4)
def _badpix_cached(det: DetectorModel) -> BadPixels:
    ny, nx = det.shape
    n = nx * ny
    rng = np.random.default_rng([det.seed, _STREAM_BADPIX])
    n_dead = int(round(det.dead_fraction * n))
    n_hot = int(round(det.hot_fraction * n))
    idx = rng.choice(n, size=n_dead + n_hot, replace=False)
    dead = np.zeros(n, bool)
    hot = np.zeros(n, bool)
    dead[idx[:n_dead]] = True
    hot[idx[n_dead:]] = True
    lo, hi = det.hot_dark_range_e_per_s
    rate = np.zeros(n, np.float32)
    if n_hot:
        rate[idx[n_dead:]] = np.exp(rng.uniform(np.log(lo), np.log(hi), n_hot))
    return BadPixels(dead=_readonly(dead.reshape(ny, nx)), hot=_readonly(hot.reshape(ny, nx)),
                     hot_dark_e_per_s=_readonly(rate.reshape(ny, nx)))


def bad_pixel_maps(det: DetectorModel) -> BadPixels:
    """The detector's dead and hot pixels (truth, reproducible from ``det.seed``).

    Parameters
    ----------
    det : DetectorModel
        The detector model.

    Returns
    -------
    BadPixels
        The maps (read-only, cached).
    """
    return _badpix_cached(det)


def bad_pixel_mask(det: DetectorModel) -> np.ndarray:
    """The dead or hot pixels (truth).

    Parameters
    ----------
    det : DetectorModel
        The detector model.

    Returns
    -------
    numpy.ndarray
        Boolean map (ny, nx), True for dead or hot pixels.
    """
    return bad_pixel_maps(det).mask


@functools.lru_cache(maxsize=4)
def _border_mask(det: DetectorModel) -> np.ndarray | None:
    left, right, bottom, top = det.border_px
    if not any(det.border_px):
        return None
    ny, nx = det.shape
    m = np.zeros((ny, nx), bool)
    if left:
        m[:, :left] = True
    if right:
        m[:, nx - right:] = True
    if bottom:
        m[:bottom, :] = True
    if top:
        m[ny - top:, :] = True
    return _readonly(m)


# ---------------------------------------------------------------------------------
# cosmic rays
# ---------------------------------------------------------------------------------
def cosmic_ray_image(det: DetectorModel, exptime: float | u.Quantity, rng: np.random.Generator,
                     rate_per_cm2_s: float | None = None, max_length_px: float = 200.0) -> tuple[np.ndarray, int]:
    """Electrons deposited by cosmic rays during ``exptime`` seconds.

    Events arrive as a Poisson process of ``rate_per_cm2_s`` (default the model's) over
    the detector area, at uniform positions; the zenith angle follows the cos^2 law of
    sea-level muons, the azimuth is uniform; the track crosses the absorber
    (``absorber_thickness_um``) so its projected length is ``thickness * tan(zenith)``
    (capped at ``max_length_px``) and it deposits ``cosmic_ray_e_per_um`` per
    micrometre of path (times a log-normal factor of width 0.4 for the Landau-like
    fluctuations), spread evenly along the track.

    Parameters
    ----------
    det : DetectorModel
        The detector model.
    exptime : float or astropy.units.Quantity
        Exposure time, s.
    rng : numpy.random.Generator
        The random stream.
    rate_per_cm2_s : float, optional
        Event rate, per cm^2 and s (default the model's).
    max_length_px : float
        Longest projected track, pixels.

    Returns
    -------
    image : numpy.ndarray
        Float32 electrons (ny, nx).
    n_events : int
        The number of events.
    """
    t = _seconds(exptime)
    rate = det.cosmic_ray_rate_per_cm2_s if rate_per_cm2_s is None else float(rate_per_cm2_s)
    ny, nx = det.shape
    img = np.zeros(ny * nx, dtype=np.float32)
    n = int(rng.poisson(rate * det.area_cm2 * t)) if rate > 0 and t > 0 else 0
    if n == 0:
        return img.reshape(ny, nx), 0
    x0 = rng.uniform(-0.5, nx - 0.5, n)
    y0 = rng.uniform(-0.5, ny - 0.5, n)
    cos_z = rng.uniform(0.0, 1.0, n) ** (1.0 / 3.0)           # pdf ~ cos^2 z sin z
    cos_z = np.clip(cos_z, 1e-3, 1.0)
    tan_z = np.sqrt(1.0 - cos_z ** 2) / cos_z
    phi = rng.uniform(0, 2 * np.pi, n)
    length = np.minimum(det.absorber_thickness_um * tan_z / det.pixel_size_um, max_length_px)
    charge = (det.cosmic_ray_e_per_um * det.absorber_thickness_um / cos_z
              * rng.lognormal(0.0, 0.4, n))
    # the charge is capped with the track: a capped track keeps its per-pixel deposit
    charge *= np.where(length >= max_length_px,
                       max_length_px / np.maximum(det.absorber_thickness_um * tan_z / det.pixel_size_um, 1e-9),
                       1.0)
    nseg = np.maximum(1, np.ceil(length * 4).astype(np.int64))
    ev = np.repeat(np.arange(n), nseg)
    start = np.cumsum(nseg) - nseg
    k = np.arange(ev.size) - start[ev]
    frac = (k + 0.5) / nseg[ev] - 0.5
    xs = x0[ev] + frac * length[ev] * np.cos(phi[ev])
    ys = y0[ev] + frac * length[ev] * np.sin(phi[ev])
    ix = np.rint(xs).astype(np.int64)
    iy = np.rint(ys).astype(np.int64)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    w = (charge[ev] / nseg[ev])[ok]
    img += np.bincount(iy[ok] * nx + ix[ok], weights=w, minlength=nx * ny).astype(np.float32)
    return img.reshape(ny, nx), n


# ---------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------
def _seconds(t) -> float:
    if isinstance(t, u.Quantity):
        return float(t.to_value(u.s))
    value = float(t)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"exposure time must be >= 0 s, got {t!r}")
    return value


def _photon_noise(e, ndit, rng, threshold):
    """Poisson noise of the sum of ndit DITs, returned as the per-DIT mean (float32)."""
    lam = e * np.float32(ndit) if ndit > 1 else e
    high = lam > threshold
    n_high = int(np.count_nonzero(high))
    if n_high == 0:
        out = rng.poisson(lam).astype(np.float32)
    elif n_high == lam.size:
        out = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
    else:
        out = np.empty_like(lam)
        low = ~high
        out[low] = rng.poisson(lam[low])
        lh = lam[high]
        out[high] = lh + np.sqrt(lh) * rng.standard_normal(n_high, dtype=np.float32)
    if ndit > 1:
        out *= np.float32(1.0 / ndit)
    return out


def simulate_frame(expected_e: ArrayLike, det: DetectorModel, rng: np.random.Generator, *,
                   exptime: float | u.Quantity,
                   ndit: int = 1, reference_pixels: bool = True, flat: bool = True,
                   dark: bool = True, bad_pixels: bool = True, photon_noise: bool = True,
                   cosmic_rays: bool = True, saturation: bool = True, read_noise: bool = True,
                   adu: bool = True, quantize: bool = False, return_truth: bool = False,
                   poisson_threshold_e: float = 1000.0) -> np.ndarray | tuple[np.ndarray, FrameTruth]:
    """Turn an expected-electron image into a raw frame.

    Parameters
    ----------
    expected_e : array (ny, nx) or scalar
        Mean photo-electrons per pixel per DIT from source + thermal background, for a
        uniform detector.  Negative values are an error.
    det : DetectorModel
        The detector model.
    rng : numpy.random.Generator
        Source of the per-frame randomness (photon noise, read noise, cosmic rays).
    exptime : float or Quantity
        DIT in seconds (dark current and cosmic rays scale with it).
    ndit : int
        Number of DITs averaged into the output frame.
    reference_pixels, flat, dark, bad_pixels, photon_noise, cosmic_rays, saturation, read_noise, adu : bool
        Switch each effect (see the module docstring); ``adu=False`` returns electrons.
    quantize : bool
        Round the output to integers.
    return_truth : bool
        Also return a :class:`FrameTruth`.
    poisson_threshold_e : float
        Pixels expecting more than this many electrons (summed over the DITs) get the
        Gaussian approximation of the Poisson distribution (same mean and variance,
        skewness below 3 %), which is several times faster; ``inf`` for exact Poisson
        everywhere.

    Returns
    -------
    frame : numpy.ndarray (float32)
        In ADU (or electrons with ``adu=False``); with ``return_truth`` a tuple
        ``(frame, FrameTruth)``.
    """
    t = _seconds(exptime)
    ndit = int(ndit)
    if ndit < 1:
        raise ValueError(f"ndit must be >= 1, got {ndit}")
    ny, nx = det.shape
    e = np.array(np.broadcast_to(np.asarray(expected_e, dtype=np.float32), (ny, nx)), dtype=np.float32)
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("expected_e must be finite and >= 0 electrons")
    border = _border_mask(det) if reference_pixels else None
    if flat:
        e *= flat_field(det)
    if dark:
        e += np.float32(det.dark_current_e_per_s * t)
    bp = bad_pixel_maps(det) if bad_pixels else None
    if bp is not None:
        if dark:
            e += bp.hot_dark_e_per_s * np.float32(t)
        e[bp.dead] = 0.0
    if border is not None:
        e[border] = 0.0
    if photon_noise:
        e = _photon_noise(e, ndit, rng, poisson_threshold_e)
    n_cr = 0
    cr = None
    if cosmic_rays:
        cr, n_cr = cosmic_ray_image(det, t * ndit, rng)
        if ndit > 1:
            cr /= ndit
        if bp is not None:
            cr[bp.dead] = 0.0
        if border is not None:
            cr[border] = 0.0
        e += cr
    sat = None
    if saturation:
        sat = e >= det.full_well_e
        np.minimum(e, np.float32(det.full_well_e), out=e)
    if read_noise and det.read_noise_e > 0:
        e += rng.standard_normal((ny, nx), dtype=np.float32) * np.float32(det.read_noise_e / np.sqrt(ndit))
    if adu:
        e *= np.float32(1.0 / det.gain_e_per_adu)
        if det.bias_adu:
            e += np.float32(det.bias_adu)
    if quantize:
        np.rint(e, out=e)
    if return_truth:
        truth = FrameTruth(saturated=sat if sat is not None else np.zeros((ny, nx), bool),
                           cosmic_e=cr, n_cosmic_rays=n_cr)
        return e, truth
    return e


def background_frame(thermal_e: ArrayLike, det: DetectorModel, rng: np.random.Generator, *,
                     exptime: float | u.Quantity, ndit: int = 1,
                     **switches: bool) -> np.ndarray | tuple[np.ndarray, FrameTruth]:
    """A background frame with the WCU black-body shutter closed.

    The frame gets dark current, noise, cosmetics and cosmic rays like any other.

    Parameters
    ----------
    thermal_e : array_like
        Expected thermal-background electrons per pixel per DIT (array or scalar).
    det : DetectorModel
        The detector model.
    rng : numpy.random.Generator
        The frame's random stream.
    exptime : float or astropy.units.Quantity
        DIT, s.
    ndit : int
        Number of DITs averaged.
    **switches
        As in :func:`simulate_frame`.

    Returns
    -------
    numpy.ndarray or tuple
        As :func:`simulate_frame`.
    """
    return simulate_frame(thermal_e, det, rng, exptime=exptime, ndit=ndit, **switches)


def flat_frame(det: DetectorModel, rng: np.random.Generator, *, level_e: float | None = None,
               exptime: float | u.Quantity = 1.0, ndit: int = 1,
               **switches: bool) -> np.ndarray | tuple[np.ndarray, FrameTruth]:
    """A flat-field exposure: uniform illumination through the detector's flat-field pattern.

    Parameters
    ----------
    det : DetectorModel
        The detector model.
    rng : numpy.random.Generator
        The frame's random stream.
    level_e : float, optional
        Electrons per pixel per DIT (default half the full well).
    exptime : float or astropy.units.Quantity
        DIT, s.
    ndit : int
        Number of DITs averaged.
    **switches
        As in :func:`simulate_frame`.

    Returns
    -------
    numpy.ndarray or tuple
        As :func:`simulate_frame`.
    """
    level = 0.5 * det.full_well_e if level_e is None else float(level_e)
    return simulate_frame(np.float32(level), det, rng, exptime=exptime, ndit=ndit, **switches)
