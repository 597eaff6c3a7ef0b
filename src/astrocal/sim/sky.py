"""Simulated on-sky campaigns: ``astrocal simulate sky``.

:func:`simulate_sky` writes a self-contained METIS IMG_LM sky campaign of a dense field
(the Galactic Center or the core of 47 Tuc) observed over one night at Cerro Armazones,
with its known truth::

    DIR/campaign.toml            [instrument] preset, one [[sky]] dataset (exposures with time,
                                 pointing, position angle, weather, wavelength; band "L",
                                 background, flat), [measure], [fit] (with the flexure basis)
    DIR/catalog.ecsv             the reference catalogue the fit sees: truth + errors drawn
                                 from its stated covariance (the synthetic 47 Tuc cluster is
                                 written here as a catalogue file too)
    DIR/raw/<field>_NN.fits      raw frames, one per exposure (float32 ADU, average of NDIT DITs)
    DIR/raw/flat.fits            a raw lamp flat of the same detector ([[sky]] flat)
    DIR/raw/background.fits      a sky-offset frame (thermal background only, mid-night;
                                 [[sky]] background)
    DIR/tables/<field>_NN.ecsv   with points_only=True instead of the images: the measured
                                 tables of perfect detection (astrocal.sim.sky_points)
    DIR/truth/...                the truth (astrocal.sim.sky_files.write_sky_truth): field G,
                                 true catalogue, catalogue errors, poses, flexure, per star x,
                                 u, Delta, X and p, plus flux, peak, saturation and the
                                 Cramer-Rao bound of every star in the images; truth.json

The geometry is :mod:`astrocal.sim.sky_truth` (the truth model shared with the fit):
``X = x + Delta + s x + theta R90 x + t``, ``p = G^-1(X)``. The images add:

* **PSF** (:class:`astrocal.image.psf.AOStarPSF`): per exposure a Strehl ratio in
  ``strehl_range`` (0.6-0.9 in L) falling with the seeing (drawn in ``seeing_range_arcsec``
  at 0.5 um at zenith, times airmass^0.6), i.e. a monochromatic diffraction core of the
  ELT pupil (central obscuration, spiders) at the filter's centre wavelength plus a Moffat
  seeing halo (FWHM = seeing x (lambda / 0.5 um)^-0.2); the core is rendered on stamps,
  the halo by FFT convolution of the stars' fluxes (deposited bilinearly, which keeps each
  star's centroid exact) with the pixel-integrated halo;
* **radiometry** (:func:`sky_radiometry`): stars from their L-band magnitudes with Vega's
  flux density (248 Jy at 3.754 um for MKO L', Tokunaga & Vacca 2005, PASP 117, 421,
  scaled as lambda^-2 across the band) through the ELT aperture and the cold pupil mask,
  an assumed telescope throughput (0.8), instrument efficiency (0.35, as the lab
  simulator) and atmospheric extinction (0.1 mag per airmass); a thermal background of a
  grey body of emissivity 0.2 (sky + telescope, assumed) at the night's mean ambient
  temperature (or each exposure's, ``background_drift``) -- about 1.2e5 e/s/px in L',
  i.e. L' = 3.9 mag/arcsec^2;
* **exposure** (:func:`astrocal.sim.radiometry.plan_exposure`): readout mode and DIT such that
  the background and the peak of the ``saturate_brightest + 1``-th brightest star fill
  half the full well (the brightest few may saturate, as in real Galactic Center frames),
  NDIT = ``exptime_s`` / DIT;
* **detector** (:mod:`astrocal.sim.detector`): flat field, dark, bad pixels, photon and
  read noise, cosmic rays, saturation, reference pixels, ADU (each switchable).

Not modelled: anisoplanatism and field-dependent PSFs, chromatic (differential) effects
across the band beyond the refraction at the effective wavelength, light from stars more
than the core radius outside the detector, variable stars.

Units: arcsec, mas, degrees (plans, headers), pixels 0-based inside the code (FITS
headers: CRPIX is 1-based and says so), electrons per DIT, ADU, seconds.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike
from astropy.time import Time, TimeDelta
from scipy.signal import oaconvolve

from .. import __version__
from ..errors import SimulationOptionError
from ..atomic import atomic_write_table, atomic_write_text, check_writable
from ..formats.convert import read_solutions
from ..instruments import Instrument, get_instrument
from . import detector as _det
from ..image.centroid import NoiseModel, cramer_rao_bound
from ..image.headers import make_raw_header
from ..field import DistortionField
from ..image.psf import AOStarPSF, PixelPSF, diffraction_psf, render_spots
from ..model.flexure import FlexureBasis
from ..pixels import detector_domain, detector_shape
from ..plain import to_plain
from ..sky.sites import get_site
from .frames import run_frame_tasks, write_fits
from .lab_files import load_lab_truth
from .radiometry import ELT_DIAMETER_M, MAS_TO_RAD, PUPIL_TRANSMISSION, band_radiance, plan_exposure
from .sky_catalog import make_true_catalog, noisy_catalog, with_band_magnitudes
from .sky_files import sky_campaign_toml, truth_paths, write_sky_truth
from .sky_plan import FIELDS, field_center, plan_night, target_key
from .sky_points import observe_sky_points
from .sky_truth import SkyTruth, default_sky_field, draw_sky_truth, restrict_to_detector

__all__ = [
    "SKY_DETECTOR_EFFECTS",
    "VEGA_LP_JY",
    "SkySimSettings",
    "SkyRadiometry",
    "SkyCampaign",
    "sky_radiometry",
    "sky_psf",
    "render_sky",
    "load_distortion",
    "simulate_sky",
    "sky_campaign_paths",
]

log = logging.getLogger(__name__)

#: detector effects, switched by the :class:`SkySimSettings` fields of the same name
SKY_DETECTOR_EFFECTS = ("reference_pixels", "flat", "dark", "bad_pixels", "photon_noise", "cosmic_rays",
                        "saturation", "read_noise")
NOISE_EFFECTS = ("photon_noise", "read_noise", "cosmic_rays")

#: Vega's flux density in MKO L' (Jy) and the isophotal wavelength (um): Tokunaga & Vacca
#: 2005, PASP 117, 421 (F_nu = 2.48e-23 erg s-1 cm-2 Hz-1 at 3.754 um)
VEGA_LP_JY = 248.0
VEGA_LP_UM = 3.754

#: pixels closer than this to the detector edge are not measured (truth margin, as the lab)
TRUTH_MARGIN_PX = 8.0

_H = 6.62607015e-34


# =========================================================================== settings
@dataclass(frozen=True)
class SkySimSettings:
    """Everything that defines a simulated sky campaign (with ``seed``, reproducible bit for bit).

    Field and night: ``target`` (``"gc"`` or ``"47tuc"``), ``n_exposures``,
    ``zenith_range`` (deg, planned, default per target), ``night`` (``YYYY-MM-DD``, default
    per target), ``position_angles`` (deg, cycled over the exposures; METIS is
    field-stabilised), ``dither_arcsec``.

    Truth (see :func:`astrocal.sim.sky_truth.draw_sky_truth`): ``flexure_degree``,
    ``flexure_functions``, ``flexure_radius_arcsec``, ``flexure_sigma_mas`` (rms of each
    flexure coefficient), ``pointing_sigma_arcsec``, ``rotation_sigma_deg``,
    ``scale_sigma``, ``frame_rotation_deg``, ``frame_scale`` (poses),
    ``catalog_error_scale`` (1: the stated catalogue errors; 0: a perfect catalogue).

    Instrument field: ``distortion_file`` (a solution file, AstroMet/SIP/SIAF, or a lab
    campaign directory: its truth field) or the default smooth field of the lab simulator;
    ``detector_shape`` (a central window, quick runs; default the detector's, or the
    field's domain).

    47 Tuc: ``cluster_stars`` (within ``cluster_radius_arcsec``), ``cluster_mag_range`` (L).

    Images: ``strehl_range``, ``seeing_range_arcsec`` (0.5 um, zenith), ``spiders``,
    ``exptime_s`` (DIT x NDIT per frame), ``readout_mode``, ``dit_s``, ``ndit`` (default:
    planned), ``saturate_brightest``, ``efficiency``, ``telescope_throughput``,
    ``extinction_mag_per_airmass``, ``background_emissivity``, ``background_drift`` (the
    thermal background follows each exposure's temperature; default: the night's mean
    temperature for every exposure, so that the one background frame matches them all, as
    chopping would), ``detector_seed`` and the switches :data:`SKY_DETECTOR_EFFECTS`,
    ``thermal``. ``points_only``: write the measured
    tables of perfect detection (``sigma_px``) instead of images.
    """

    target: str = "gc"
    instrument: str = "metis-lm"
    filter: Optional[str] = None
    seed: Optional[int] = None
    # night
    n_exposures: int = 12
    zenith_range: Optional[tuple] = None
    night: Optional[str] = None
    position_angles: tuple = (0.0,)
    dither_arcsec: float = 0.3
    # truth
    flexure_degree: int = 2
    flexure_functions: tuple = ("1", "cos_z", "sin_z")
    flexure_radius_arcsec: float = 5.0
    flexure_sigma_mas: float = 0.5
    pointing_sigma_arcsec: float = 0.1
    rotation_sigma_deg: float = 0.01
    scale_sigma: float = 5e-5
    frame_rotation_deg: float = 0.05
    frame_scale: float = 3e-4
    catalog_error_scale: float = 1.0
    # instrument field and detector
    distortion_file: Optional[str] = None
    detector_shape: Optional[tuple] = None
    detector_seed: int = 0
    # 47 Tuc
    cluster_stars: int = 400
    cluster_radius_arcsec: float = 9.0
    cluster_mag_range: tuple = (9.0, 19.0)
    # PSF
    strehl_range: tuple = (0.6, 0.9)
    seeing_range_arcsec: tuple = (0.5, 0.9)
    spiders: bool = True
    # exposure and radiometry
    exptime_s: float = 60.0
    readout_mode: Optional[str] = None
    dit_s: Optional[float] = None
    ndit: Optional[int] = None
    saturate_brightest: int = 3
    efficiency: float = 0.35
    telescope_throughput: float = 0.8
    extinction_mag_per_airmass: float = 0.1
    background_emissivity: float = 0.2
    background_drift: bool = False
    # points
    points_only: bool = False
    sigma_px: tuple = (0.01, 0.05)
    # switches
    thermal: bool = True
    reference_pixels: bool = True
    flat: bool = True
    dark: bool = True
    bad_pixels: bool = True
    photon_noise: bool = True
    cosmic_rays: bool = True
    saturation: bool = True
    read_noise: bool = True

    def __post_init__(self):
        object.__setattr__(self, "target", target_key(self.target))
        if self.instrument != "metis-lm":
            raise SimulationOptionError(f"the sky simulator knows METIS IMG_LM only (instrument 'metis-lm'), got "
                             f"{self.instrument!r}")
        if int(self.n_exposures) < 1:
            raise SimulationOptionError(f"a sky campaign needs at least one exposure, got {self.n_exposures}")
        object.__setattr__(self, "n_exposures", int(self.n_exposures))
        for name in ("zenith_range", "strehl_range", "seeing_range_arcsec", "sigma_px", "cluster_mag_range"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(float(x) for x in v)
                if len(v) != 2 or not v[0] <= v[1]:
                    raise SimulationOptionError(f"{name} must be (low, high) with low <= high, got {getattr(self, name)}")
                object.__setattr__(self, name, v)
        if not 0 < self.strehl_range[0] <= self.strehl_range[1] <= 1:
            raise SimulationOptionError(f"strehl_range must lie in (0, 1], got {self.strehl_range}")
        if not self.seeing_range_arcsec[0] > 0:
            raise SimulationOptionError(f"seeing_range_arcsec must be positive, got {self.seeing_range_arcsec}")
        object.__setattr__(self, "position_angles", tuple(float(v) for v in np.atleast_1d(self.position_angles)))
        object.__setattr__(self, "flexure_functions", tuple(self.flexure_functions))
        try:
            FlexureBasis(int(self.flexure_degree), self.flexure_functions, float(self.flexure_radius_arcsec))
        except ValueError as exc:
            raise SimulationOptionError(str(exc)) from None
        if self.detector_shape is not None:
            shape = tuple(int(v) for v in self.detector_shape)
            if len(shape) != 2 or min(shape) < 64:
                raise SimulationOptionError(f"detector_shape must be (ny, nx) >= 64 px, got {self.detector_shape}")
            object.__setattr__(self, "detector_shape", shape)
        for name in ("flexure_sigma_mas", "pointing_sigma_arcsec", "rotation_sigma_deg", "scale_sigma",
                     "frame_rotation_deg", "frame_scale", "catalog_error_scale", "dither_arcsec",
                     "extinction_mag_per_airmass", "saturate_brightest"):
            if getattr(self, name) < 0:
                raise SimulationOptionError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("exptime_s", "efficiency", "telescope_throughput", "cluster_radius_arcsec"):
            if not getattr(self, name) > 0:
                raise SimulationOptionError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.background_emissivity <= 1:
            raise SimulationOptionError(f"background_emissivity must be in [0, 1], got {self.background_emissivity}")
        if int(self.cluster_stars) < 1:
            raise SimulationOptionError(f"cluster_stars must be >= 1, got {self.cluster_stars}")
        if self.dit_s is not None and not self.dit_s > 0:
            raise SimulationOptionError(f"dit_s must be > 0, got {self.dit_s}")
        if self.ndit is not None and int(self.ndit) < 1:
            raise SimulationOptionError(f"ndit must be >= 1, got {self.ndit}")
        for name in SKY_DETECTOR_EFFECTS + ("thermal", "spiders", "points_only", "background_drift"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"switch {name} must be True or False, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> SkySimSettings:
        """The same settings with some fields changed.

        Parameters
        ----------
        **changes
            Field name -> new value.

        Returns
        -------
        SkySimSettings
            The new settings (validated).
        """
        return dataclasses.replace(self, **changes)

    def noiseless(self) -> SkySimSettings:
        """The same campaign without photon noise, read noise and cosmic rays.

        Returns
        -------
        SkySimSettings
            The new settings.
        """
        return self.replace(**{k: False for k in NOISE_EFFECTS})

    def ideal(self) -> SkySimSettings:
        """Frames that are the bare render of the stars (no detector effect, no background).

        Returns
        -------
        SkySimSettings
            The new settings.
        """
        return self.replace(thermal=False, **{k: False for k in SKY_DETECTOR_EFFECTS})

    @property
    def flexure_basis(self) -> FlexureBasis:
        """The flexure basis of ``flexure_degree``, ``flexure_functions``, ``flexure_radius_arcsec``."""
        return FlexureBasis(int(self.flexure_degree), self.flexure_functions, float(self.flexure_radius_arcsec))

    def to_dict(self) -> dict:
        """The settings as plain data, as written to ``truth.json``.

        Returns
        -------
        dict
            Field name -> value.
        """
        return to_plain(dataclasses.asdict(self))


# =========================================================================== radiometry
@dataclass(frozen=True)
class SkyRadiometry:
    """Photon budget of a sky frame (detected electrons per second).

    ``zero_point_e_per_s``: a star of magnitude 0 above the atmosphere; ``background_e_per_s``:
    thermal background per pixel (grey body of ``emissivity`` at ``temperature_c``);
    ``band_um``: the top-hat band; the other fields record the assumptions.
    """

    zero_point_e_per_s: float
    background_e_per_s: float
    band_um: tuple
    wavelength_um: float
    temperature_c: float
    emissivity: float
    efficiency: float
    telescope_throughput: float
    collecting_area_m2: float
    pixel_solid_angle_sr: float
    notes: str = ""

    def star_e_per_s(self, mag: ArrayLike, airmass: float = 1.0,
                     extinction_mag_per_airmass: float = 0.0) -> np.ndarray:
        """Detected electrons per second of stars of magnitude ``mag`` at ``airmass``.

        Parameters
        ----------
        mag : array_like
            Magnitudes above the atmosphere.
        airmass : float
            The airmass.
        extinction_mag_per_airmass : float
            Extinction, magnitudes per airmass.

        Returns
        -------
        numpy.ndarray
            Detected electrons per second.
        """
        m = np.asarray(mag, float) + extinction_mag_per_airmass * float(airmass)
        return self.zero_point_e_per_s * 10.0 ** (-0.4 * m)


def sky_radiometry(instrument: str | Instrument = "metis-lm", filter_name: str | None = None, *,
                   temperature_c: float = 8.0, emissivity: float = 0.2, efficiency: float = 0.35,
                   telescope_throughput: float = 0.8, pupil_transmission: float | None = None) -> SkyRadiometry:
    """Star zero point and thermal background of a sky frame (see the module notes).

    Stars: Vega's F_nu (:data:`VEGA_LP_JY` at :data:`VEGA_LP_UM`, scaled as lambda^-2)
    integrated over the filter as a top hat, photons per second through the full ELT
    aperture times the cold pupil mask's transmission, ``telescope_throughput`` and
    ``efficiency`` (stars have Vega colours: magnitudes in any LM filter are the L ones).
    Background: ``emissivity`` x black body at ``temperature_c`` over one pixel's solid
    angle, the same area and ``efficiency``.

    Parameters
    ----------
    instrument : str or Instrument
        The instrument (or its preset name).
    filter_name : str, optional
        The filter (default: the instrument's default).
    temperature_c : float
        Temperature of the emitting sky and telescope, C.
    emissivity : float
        Their emissivity.
    efficiency : float
        Instrument efficiency (assumed).
    telescope_throughput : float
        Telescope throughput (assumed).
    pupil_transmission : float, optional
        Cold pupil mask's transmission (default per instrument, else 0.75).

    Returns
    -------
    SkyRadiometry
        The zero point and the background (detected electrons per second).
    """
    inst = get_instrument(instrument) if isinstance(instrument, str) else instrument
    filt = inst.filter(filter_name)
    width = filt.width_um if filt.width_um else 0.1 * filt.center_um
    lo, hi = filt.center_um - width / 2, filt.center_um + width / 2
    pupil = PUPIL_TRANSMISSION.get(inst.key, 0.75) if pupil_transmission is None else float(pupil_transmission)
    area = math.pi / 4 * ELT_DIAMETER_M**2 * pupil
    # photons s-1 m-2: integral of F_nu / (h nu) dnu = F_nu(lambda) / h dlambda / lambda
    w = np.linspace(lo, hi, 257)
    fnu = VEGA_LP_JY * 1e-26 * (w / VEGA_LP_UM) ** 2  # Rayleigh-Jeans: F_nu ~ nu^2
    photons = float(np.trapezoid(fnu / _H / w, w))
    zp = photons * area * telescope_throughput * efficiency
    omega = (inst.pixel_scale_mas * MAS_TO_RAD) ** 2
    bg = band_radiance(lo, hi, temperature_c + 273.15) * emissivity * omega * area * efficiency
    notes = ("Vega 248 Jy at 3.754 um (MKO L', Tokunaga & Vacca 2005) scaled as lambda^-2, top-hat band; "
             "telescope throughput, instrument efficiency and background emissivity assumed")
    return SkyRadiometry(float(zp), float(bg), (lo, hi), filt.center_um, float(temperature_c), float(emissivity),
                         float(efficiency), float(telescope_throughput), float(area), float(omega), notes)


# =========================================================================== PSF and rendering
def sky_psf(core: PixelPSF, strehl: float, seeing_arcsec: float, beta: float = 2.5) -> AOStarPSF:
    """The AO star PSF of one exposure.

    ``strehl`` x ``core`` + a Moffat halo of FWHM ``seeing_arcsec`` (at 0.5 um) x
    (lambda / 0.5 um)^-0.2.

    Parameters
    ----------
    core : PixelPSF
        The diffraction core (:class:`~astrocal.image.psf.PixelPSF`).
    strehl : float
        Strehl ratio (the core's fraction of the light).
    seeing_arcsec : float
        Seeing FWHM at 0.5 um, arcsec.
    beta : float
        The Moffat index.

    Returns
    -------
    AOStarPSF
        The PSF.
    """
    return AOStarPSF.from_seeing(core, strehl, seeing_arcsec=seeing_arcsec, beta=beta)


def _halo_kernel(psf, half):
    """Pixel-integrated halo on a (2 half + 1)^2 grid centred on a source at a pixel centre."""
    halo_only = AOStarPSF(psf.core, 0.0, psf.halo_fwhm_px, psf.beta)
    ax = np.arange(-half, half + 1, dtype=float)
    return halo_only.evaluate(ax[None, :], ax[:, None])


def render_sky(shape: tuple[int, int], x: ArrayLike, y: ArrayLike, flux: ArrayLike, psf: AOStarPSF, *,
               pad: int = 0, halo_half_width: int | None = None) -> tuple[np.ndarray, float]:
    """Expected electrons of stars at ``(x, y)`` (px, 0-based) with total ``flux`` each.

    The diffraction core (``psf.strehl`` of the flux) is rendered on stamps of the core's
    half width (:func:`~astrocal.image.psf.render_spots`); the halo (the rest) by FFT
    convolution of the fluxes, deposited on the four nearest pixels with bilinear weights
    (exact first moment), with the pixel-integrated halo out to ``halo_half_width`` px
    (default 3 halo FWHM, at most 256). Stars up to ``pad`` px outside the image
    contribute their halo.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    x, y : array_like
        Star positions, 0-based pixels.
    flux : array_like
        Total flux of each star, electrons.
    psf : AOStarPSF
        The PSF.
    pad : int
        Stars up to this far outside the image contribute their halo, pixels.
    halo_half_width : int, optional
        Half width of the halo kernel, pixels.

    Returns
    -------
    image : numpy.ndarray
        Expected electrons per pixel.
    halo_fraction_kept : float
        The fraction of the halo inside its kernel.
    """
    ny, nx = (int(v) for v in shape)
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    flux = np.asarray(flux, float)
    img = render_spots((ny, nx), x, y, flux * psf.strehl, psf.core)
    if psf.strehl >= 1.0 or x.size == 0:
        return img, 1.0
    half = int(min(256, math.ceil(3 * psf.halo_fwhm_px))) if halo_half_width is None else int(halo_half_width)
    pad = int(max(0, pad))
    canvas = np.zeros((ny + 2 * pad, nx + 2 * pad))
    xp, yp = x + pad, y + pad
    ix, iy = np.floor(xp).astype(int), np.floor(yp).astype(int)
    fx, fy = xp - ix, yp - iy
    w = flux * (1.0 - psf.strehl)
    for dx, dy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cx, cy = ix + dx, iy + dy
        ok = (cx >= 0) & (cx < canvas.shape[1]) & (cy >= 0) & (cy < canvas.shape[0])
        np.add.at(canvas, (cy[ok], cx[ok]), (w * ww)[ok])
    kernel = _halo_kernel(psf, half)
    halo = oaconvolve(canvas, kernel, mode="same")[pad:pad + ny, pad:pad + nx]
    img += np.maximum(halo, 0.0)
    return img, float(kernel.sum())


# =========================================================================== the field
def load_distortion(spec: str | os.PathLike, filter_name: str = "Lp",
                    shape: tuple[int, int] | None = None) -> tuple[DistortionField, str]:
    """The instrument field from a solution file or a lab campaign directory.

    Parameters
    ----------
    spec : str or os.PathLike
        A solution file (AstroMet, SIP, SIAF) or a lab campaign directory (its ``truth/``:
        the field the lab simulator used).
    filter_name : str
        The filter whose solution is used (a file with one solution gives it for any filter).
    shape : tuple of int, optional
        ``(ny, nx)`` of the detector the field must cover (default: the field's own domain).

    Returns
    -------
    field : DistortionField
        The field.
    source : str
        Where it came from.

    Raises
    ------
    FileNotFoundError
        If ``spec`` does not exist.
    SimulationOptionError
        If it holds no usable solution or its domain is not the detector's.
    """
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"distortion file not found: {path}")
    if path.is_dir():
        tdir = path if (path / "truth.json").exists() else path / "truth"
        if not (tdir / "truth.json").is_file():
            raise SimulationOptionError(f"{path}: a directory given as distortion must be a lab campaign (with "
                             "truth/truth.json) written by `astrocal simulate lab`")
        field = load_lab_truth(path).field
        source = f"lab campaign truth {tdir.resolve()}"
    else:
        sols = read_solutions(path)
        if not sols:
            raise SimulationOptionError(f"{path}: no distortion solution in the file")
        field = sols[filter_name].field if filter_name in sols else next(iter(sols.values())).field
        if filter_name not in sols and len(sols) > 1:
            raise SimulationOptionError(f"{path}: no solution for filter {filter_name!r}; the file has {sorted(sols)}")
        source = str(path.resolve())
    if shape is not None:
        want = detector_domain(shape)
        if not np.allclose(field.domain, want, atol=1e-6):
            raise SimulationOptionError(f"{path}: the field's domain {tuple(field.domain)} is not the detector's {want} "
                             f"(detector shape {tuple(shape)}); use a field made for this detector")
    return field, source


def _rms_mas(arrays):
    v = np.concatenate([np.ravel(a) for a in arrays] + [np.zeros(0)])
    return float(np.sqrt(np.mean(v**2)) * 1e3) if v.size else 0.0


# =========================================================================== paths, result
def sky_campaign_paths(out: str | os.PathLike, names: Sequence[str], points_only: bool = False) -> dict:
    """Every file :func:`simulate_sky` writes.

    Parameters
    ----------
    out : str or os.PathLike
        The campaign directory.
    names : sequence of str
        The exposures' names.
    points_only : bool
        Tables instead of frames.

    Returns
    -------
    dict
        Name -> Path (``frames`` or ``tables``: a list).
    """
    out = Path(out)
    paths = {"campaign": out / "campaign.toml", "catalog": out / "catalog.ecsv"}
    if points_only:
        paths["tables"] = [out / "tables" / f"{n}.ecsv" for n in names]
    else:
        paths["frames"] = [out / "raw" / f"{n}.fits" for n in names]
        paths["flat"] = out / "raw" / "flat.fits"
        paths["background"] = out / "raw" / "background.fits"
    paths.update(truth_paths(out))
    return paths


@dataclass(frozen=True, eq=False)
class SkyCampaign:
    """What :func:`simulate_sky` wrote and the figures of the run."""

    directory: Path
    campaign: Path
    catalog: Path
    exposures: tuple          # raw frames (or tables with points_only)
    flat: Optional[Path]
    background: Optional[Path]
    truth_files: dict
    truth: SkyTruth
    summary: dict


def _wcs_cards(shape, pointing, pa_deg, parity, scale_mas):
    """Nominal TAN WCS (nominal scale, no distortion, no pose): CRPIX is 1-based (FITS)."""
    ny, nx = shape
    s = scale_mas / 3.6e6
    th = math.radians(pa_deg)
    # columns: sky (east, north) direction of +x and +y pixel axes
    cd = s * np.array([[-parity * math.cos(th), math.sin(th)], [parity * math.sin(th), math.cos(th)]])
    return {"WCSAXES": 2, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
            "CRPIX1": ((nx - 1) / 2.0 + 1.0, "1-based (FITS): detector centre"),
            "CRPIX2": ((ny - 1) / 2.0 + 1.0, "1-based (FITS): detector centre"),
            "CRVAL1": (float(pointing[0]), "[deg] commanded pointing RA (ICRS)"),
            "CRVAL2": (float(pointing[1]), "[deg] commanded pointing Dec (ICRS)"),
            "CD1_1": float(cd[0, 0]), "CD1_2": float(cd[0, 1]), "CD2_1": float(cd[1, 0]), "CD2_2": float(cd[1, 1]),
            "RADESYS": "ICRS"}


# =========================================================================== simulation
@dataclass(frozen=True)
class _SkyScene:
    """Steps 3-4 of :func:`simulate_sky`: the truth (``wide``: with the stars whose light reaches
    the detector; ``truth``: those measured), the catalogue seen, the core PSF and its radius."""

    core: object
    radius: int
    wide: SkyTruth
    truth: SkyTruth
    seen: object


@dataclass(frozen=True)
class _SkyLight:
    """Steps 6-7 of :func:`simulate_sky`: seeing, Strehl and PSF per exposure, the radiometry,
    the star rates (e/s, ``wide`` stars) and the exposure plan."""

    airmass: np.ndarray
    seeing: np.ndarray
    seeing_eff: np.ndarray
    strehl: np.ndarray
    psfs: list
    rads: list
    rates: list
    bg_rate: float
    xp: object


def _sky_field(s, inst, filt):
    """Step 1: the instrument field and where it comes from."""
    if s.distortion_file:
        field, field_source = load_distortion(s.distortion_file, filt.name, s.detector_shape)
    else:
        field = default_sky_field(inst.key, s.detector_shape)
        field_source = "default smooth field of the lab simulator (astrocal.sim.field.instrument_field)"
        if s.detector_shape and tuple(s.detector_shape) != tuple(inst.detector_shape):
            field_source += f", central {s.detector_shape[1]}x{s.detector_shape[0]} window"
    return field, field_source


def _sky_scene(s, inst, filt, field, plan, ss_cat, ss_truth, ss_noise):
    """Steps 3-4: the true catalogue, the truth and the catalogue the fit sees."""
    cat_true = make_true_catalog(s.target, np.random.default_rng(ss_cat), n_stars=s.cluster_stars,
                                 radius_arcsec=s.cluster_radius_arcsec, mag_range=s.cluster_mag_range) \
        if s.target == "47tuc" else make_true_catalog(s.target, np.random.default_rng(ss_cat))
    core = diffraction_psf(filt.center_um, inst.pixel_scale_mas, spiders=s.spiders)
    radius = int(math.floor(core.half_width))
    wide = draw_sky_truth(field, cat_true, plan, np.random.default_rng(ss_truth), flexure=s.flexure_basis,
                          flexure_sigma_mas=s.flexure_sigma_mas, pointing_sigma_arcsec=s.pointing_sigma_arcsec,
                          rotation_sigma_deg=s.rotation_sigma_deg, scale_sigma=s.scale_sigma,
                          frame_rotation_deg=s.frame_rotation_deg, frame_scale=s.frame_scale,
                          margin_px=-float(radius))
    truth = restrict_to_detector(wide, TRUTH_MARGIN_PX)
    seen = with_band_magnitudes(noisy_catalog(truth.catalog, np.random.default_rng(ss_noise),
                                              error_scale=s.catalog_error_scale), truth.catalog)
    return _SkyScene(core, radius, wide, truth, seen)


def _write_points_only(s, out, paths, inst, filt, shape, plan, spec, scene, seed, info_extra, summary, ss_obs,
                       overwrite):
    """Step 5 (``points_only``): the measured tables of perfect detection, the catalogue, the
    truth and the campaign file; returns the table paths."""
    truth, seen = scene.truth, scene.seen
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    tables = observe_sky_points(truth, np.random.default_rng(ss_obs), sigma_px=s.sigma_px, dataset=s.target,
                                catalog="catalog.ecsv")
    out.mkdir(parents=True, exist_ok=True)
    seen.write(paths["catalog"], overwrite=overwrite)
    for t, p in zip(tables, paths["tables"]):
        atomic_write_table(t, p, overwrite=overwrite)
    files = paths["tables"]
    write_sky_truth(out, truth, catalog_seen=seen, instrument=inst.name, filter_id=filt.name, overwrite=overwrite,
                    extra={**info_extra, "kind": "point-level sky campaign (simulate sky --points-only)",
                           "summary": summary})
    toml = sky_campaign_toml(inst, shape, plan, [rel(p) for p in files], "catalog.ecsv", dataset=s.target,
                             filter_name=filt.name, seed=seed + 1, band="L", flexure=s.flexure_basis,
                             comment=f"point-level sky campaign ({spec['name']}) written by `astrocal simulate "
                                     f"sky --points-only` (astrocal {__version__}, seed {seed}); truth in truth/")
    atomic_write_text(paths["campaign"], toml, overwrite=overwrite)
    return files


def _sky_light(s, inst, filt, plan, scene, ss_psf):
    """Steps 6-7: the PSF of every exposure (seeing drawn from ``ss_psf``), the radiometry and
    the exposure plan."""
    truth, wide, core = scene.truth, scene.wide, scene.core
    rng_psf = np.random.default_rng(ss_psf)
    airmass = np.array([e.apparent.airmass for e in truth.exposures])
    seeing = rng_psf.uniform(*s.seeing_range_arcsec, s.n_exposures)
    seeing_eff = seeing * airmass**0.6
    lo_s, hi_s = s.seeing_range_arcsec[0], s.seeing_range_arcsec[1] * max(float(airmass.max()), 1.0) ** 0.6
    frac = np.clip((seeing_eff - lo_s) / max(hi_s - lo_s, 1e-9), 0.0, 1.0)
    strehl = s.strehl_range[1] - (s.strehl_range[1] - s.strehl_range[0]) * frac
    psfs = [sky_psf(core, strehl[k], seeing_eff[k]) for k in range(s.n_exposures)]

    # ---------------------------------------------------------------- radiometry and exposure plan
    t_mean = float(np.mean([pe.weather["temperature_c"] for pe in plan]))
    rads = [sky_radiometry(inst, filt.name,
                           temperature_c=pe.weather["temperature_c"] if s.background_drift else t_mean,
                           emissivity=s.background_emissivity if s.thermal else 0.0, efficiency=s.efficiency,
                           telescope_throughput=s.telescope_throughput) for pe in plan]
    rates = [rads[k].star_e_per_s(e.mag, airmass[k], s.extinction_mag_per_airmass)
             for k, e in enumerate(wide.exposures)]
    peak_frac = float(core.evaluate(0.0, 0.0))
    peaks = np.sort(np.concatenate([r * peak_frac * strehl[k] for k, r in enumerate(rates)]))[::-1]
    k_sat = int(s.saturate_brightest) * s.n_exposures  # the brightest few per exposure may saturate
    peak_rate = float(peaks[min(k_sat, peaks.size - 1)]) if peaks.size else 0.0
    bg_rate = max(r.background_e_per_s for r in rads)
    fastest = min(inst.detector.modes.values(), key=lambda m: m.min_dit_s)
    if (s.dit_s is None and s.readout_mode is None
            and (bg_rate + peak_rate) * fastest.min_dit_s > 0.9 * fastest.full_well_e):
        # even the shortest DIT saturates more than the brightest few: take it (brighter
        # stars saturate, as in real frames of the field)
        xp = plan_exposure(inst, bg_rate, 0.0, mode=fastest.name, dit_s=fastest.min_dit_s, ndit=s.ndit,
                           exptime_s=s.exptime_s)
        xp = dataclasses.replace(xp, reason=(
            f"the {int(s.saturate_brightest) + 1}-th brightest star per exposure saturates even at the shortest "
            f"DIT ({fastest.min_dit_s:g} s, mode '{fastest.name}'): that DIT, the brighter stars saturate"))
    else:
        xp = plan_exposure(inst, bg_rate, peak_rate, mode=s.readout_mode, dit_s=s.dit_s, ndit=s.ndit,
                           exptime_s=s.exptime_s, fill_fraction=0.5, max_dit_s=s.exptime_s)

    return _SkyLight(airmass, seeing, seeing_eff, strehl, psfs, rads, rates, bg_rate, xp)


def _write_sky_frames(s, out, paths, inst, filt, shape, plan, scene, light, det, seed, ss_frames, ss_bg, ss_flat,
                      overwrite, threads):
    """Step 8: the exposures, the background and the flat, on ``threads`` threads; returns
    ``(frame_info, t_start_obs)``: per exposure the halo fraction kept and the background,
    and the exposures' start times."""
    wide, truth, radius = scene.wide, scene.truth, scene.radius
    xp, psfs, rads, rates, strehl, seeing = light.xp, light.psfs, light.rads, light.rates, light.strehl, light.seeing
    switches = {k: getattr(s, k) for k in SKY_DETECTOR_EFFECTS}
    t_mid = [Time(pe.time, scale="utc") for pe in plan]
    t_start_obs = [t - TimeDelta(xp.exptime_s / 2.0, format="sec") for t in t_mid]
    site = get_site(plan.site)
    ss_frame = ss_frames.spawn(s.n_exposures)
    common = {"BUNIT": ("ADU", "pixel unit (average of NDIT DITs)"),
              "ORIGIN": ("astrocal simulate sky", "simulated frame"),
              "HIERARCH ASTROCAL SIM SEED": (str(seed), "random seed of the simulation"),
              "HIERARCH ESO TEL GEOLAT": (site.latitude_deg, "[deg] site latitude"),
              "HIERARCH ESO TEL GEOLON": (site.longitude_deg, "[deg] site longitude"),
              "HIERARCH ESO TEL GEOELEV": (site.height_m, "[m] site height"),
              "HIERARCH ESO OBS TARG NAME": (s.target, "target"),
              "HIERARCH ASTROCAL SITE": (site.name, "site (astrocal.sky.sites)"),
              "HIERARCH ASTROCAL PARITY": (int(plan.parity), "+1: +x west at PA 0 (sky orientation)"),
              "HIERARCH ASTROCAL WAVELEN": (filt.center_um, "[um] effective wavelength (refraction)")}

    frame_info = [None] * s.n_exposures

    def exposure_frame(k):
        e_w, e_t, pe, psf, rad = wide.exposures[k], truth.exposures[k], plan[k], psfs[k], rads[k]
        flux = rates[k] * xp.dit_s
        img, kept = render_sky(shape, e_w.pixels[:, 0], e_w.pixels[:, 1], flux, psf, pad=radius)
        bg_e = rad.background_e_per_s * xp.dit_s
        img += bg_e
        frame = _det.simulate_frame(img.astype(np.float32), det, np.random.default_rng(ss_frame[k]),
                                    exptime=xp.dit_s, ndit=xp.ndit, **switches)
        a = e_t.apparent
        w = pe.weather
        extra = {**common,
                 "HIERARCH ASTROCAL SIM EXPNO": (k, "exposure number (0-based)"),
                 "RA": (pe.ra_deg, "[deg] commanded pointing (ICRS)"),
                 "DEC": (pe.dec_deg, "[deg] commanded pointing (ICRS)"),
                 "HIERARCH ESO ADA POSANG": (pe.position_angle_deg, "[deg] PA of +y, north through east"),
                 "HIERARCH ESO TEL ALT": (a.altitude_deg, "[deg] altitude at mid-exposure"),
                 "HIERARCH ESO TEL AZ": (a.azimuth_deg, "[deg] azimuth N through E, mid-exposure"),
                 "HIERARCH ESO TEL AIRM START": (a.airmass, "airmass (mid-exposure value)"),
                 "HIERARCH ESO TEL AIRM END": (a.airmass, "airmass (mid-exposure value)"),
                 "HIERARCH ESO TEL PARANG START": (a.parallactic_angle_deg, "[deg] parallactic angle (mid)"),
                 "HIERARCH ESO TEL PARANG END": (a.parallactic_angle_deg, "[deg] parallactic angle (mid)"),
                 "HIERARCH ESO TEL AMBI PRES START": (w["pressure_hpa"], "[hPa] ambient pressure"),
                 "HIERARCH ESO TEL AMBI PRES END": (w["pressure_hpa"], "[hPa] ambient pressure"),
                 "HIERARCH ESO TEL AMBI TEMP": (w["temperature_c"], "[C] ambient temperature"),
                 "HIERARCH ESO TEL AMBI RHUM": (round(100.0 * w["relative_humidity"], 2),
                                                "[%] relative humidity (per cent)"),
                 "HIERARCH ESO TEL AMBI FWHM START": (round(float(seeing[k]), 3), "[arcsec] seeing at 0.5 um"),
                 "HIERARCH ESO TEL AMBI FWHM END": (round(float(seeing[k]), 3), "[arcsec] seeing at 0.5 um"),
                 "HIERARCH ASTROCAL MIDTIME": (pe.time, "mid-exposure, UTC (the time of the astrometry)"),
                 "HIERARCH ASTROCAL ZD": (a.zenith_distance_deg, "[deg] observed zenith distance, mid"),
                 "HIERARCH ASTROCAL ROTANG": (a.rotator_angle_deg, "[deg] rotator angle: +y from zenith"),
                 "HIERARCH ASTROCAL SIM STREHL": (round(float(strehl[k]), 4), "Strehl ratio (core fraction)"),
                 "HIERARCH ASTROCAL SIM HALOFWHM": (round(float(psf.halo_fwhm_px), 3), "[px] halo FWHM"),
                 "HIERARCH ASTROCAL SIM BACKGRND": (bg_e, "[e] thermal background per DIT"),
                 **_wcs_cards(shape, (pe.ra_deg, pe.dec_deg), pe.position_angle_deg, plan.parity,
                              inst.pixel_scale_mas)}
        hdr = make_raw_header(inst, date_obs=t_start_obs[k], dit=xp.dit_s, ndit=xp.ndit, filter_name=filt.name,
                              detector_mode=xp.mode, dpr_catg="CALIB", dpr_type="ASTROMETRY", lamp="off",
                              bb_temp=None, extra=extra)
        hdr.add_comment("WCS: nominal pixel scale and commanded pointing/PA only (no distortion, no flexure, "
                        "no pose): an approximation for display and matching")
        write_fits(paths["frames"][k], frame, hdr, overwrite)
        frame_info[k] = {"halo_fraction_kept": kept, "background_e_per_dit": bg_e}

    def background_frame():
        k = int(np.argmin(np.abs(np.arange(s.n_exposures) - (s.n_exposures - 1) / 2.0)))
        bg_e = rads[k].background_e_per_s * xp.dit_s
        fr = _det.background_frame(np.float32(bg_e), det, np.random.default_rng(ss_bg), exptime=xp.dit_s,
                                   ndit=xp.ndit, **switches)
        hdr = make_raw_header(inst, date_obs=t_start_obs[k] + TimeDelta(60.0, format="sec"), dit=xp.dit_s,
                              ndit=xp.ndit, filter_name=filt.name, detector_mode=xp.mode, dpr_catg="CALIB",
                              dpr_type="SKY", lamp="off", bb_temp=None,
                              extra={**common, "HIERARCH ASTROCAL SIM BACKGRND": (bg_e, "[e] thermal background "
                                                                                        "per DIT")})
        write_fits(paths["background"], fr, hdr, overwrite)

    def flat_frame():
        level = 0.5 * det.full_well_e
        fl = _det.flat_frame(det, np.random.default_rng(ss_flat), level_e=level, exptime=xp.dit_s, ndit=xp.ndit,
                             **switches)
        hdr = make_raw_header(inst, date_obs=t_start_obs[0] - TimeDelta(3600.0, format="sec"), dit=xp.dit_s,
                              ndit=xp.ndit, filter_name=filt.name, detector_mode=xp.mode, dpr_catg="CALIB",
                              dpr_type="FLAT,LAMP", lamp="bb", bb_temp=None,
                              extra={**common, "HIERARCH ASTROCAL SIM FLATLEV": (level, "[e] mean level per DIT")})
        write_fits(paths["flat"], fl, hdr, overwrite)

    out.mkdir(parents=True, exist_ok=True)
    if s.flat:
        _det.flat_field(det)
    if s.bad_pixels:
        _det.bad_pixel_maps(det)
    run_frame_tasks([lambda k=k: exposure_frame(k) for k in range(s.n_exposures)] + [background_frame, flat_frame],
                    threads)
    return frame_info, t_start_obs


def _star_truth(s, shape, scene, light, det):
    """Step 9: per exposure and measured star, its flux, peak, saturation, place on the
    sensitive area and Cramer-Rao bound; returns ``(per_star, figures for the summary)``."""
    wide, truth = scene.wide, scene.truth
    xp, psfs, rads, rates, bg_rate = light.xp, light.psfs, light.rads, light.rates, light.bg_rate
    strehl, seeing = light.strehl, light.seeing
    gain = det.gain_e_per_adu
    per_star = {"flux_e": [], "peak_e": [], "saturated": [], "sensitive": [], "crb_sigma_x": [], "crb_sigma_y": [],
                "crb_snr": []}
    noise = NoiseModel(gain=gain * xp.ndit, read_noise=det.read_noise_e * math.sqrt(xp.ndit))
    left, right, bottom, top = det.border_px
    x0, x1, y0, y1 = left - 0.5, shape[1] - right - 0.5, bottom - 0.5, shape[0] - top - 0.5
    on_det = [np.isin(w.names, e.names) for w, e in zip(wide.exposures, truth.exposures)]
    for k, e in enumerate(truth.exposures):
        f = rates[k][on_det[k]] * xp.dit_s
        bg_e = rads[k].background_e_per_s * xp.dit_s + (det.dark_current_e_per_s * xp.dit_s if s.dark else 0.0)
        peak = f * float(psfs[k].evaluate(0.0, 0.0))
        per_star["flux_e"].append(f)
        per_star["peak_e"].append(peak)
        per_star["saturated"].append(peak + bg_e >= det.full_well_e)
        px, py = e.pixels[:, 0], e.pixels[:, 1]
        sens = (px > x0) & (px < x1) & (py > y0) & (py < y1) if s.reference_pixels else np.ones(len(e), bool)
        per_star["sensitive"].append(sens)
        crb = np.full((len(e), 3), np.nan)
        if sens.any():
            c = cramer_rao_bound(psfs[k], px[sens], py[sens], f[sens] / gain, bg_e / gain, noise=noise)
            c = c.reshape(-1, 4, 4)
            crb[sens] = np.column_stack([np.sqrt(c[:, 0, 0]), np.sqrt(c[:, 1, 1]),
                                         (f[sens] / gain) / np.sqrt(c[:, 2, 2])])
        per_star["crb_sigma_x"].append(crb[:, 0])
        per_star["crb_sigma_y"].append(crb[:, 1])
        per_star["crb_snr"].append(crb[:, 2])
    cat = lambda key: np.concatenate(per_star[key]) if per_star[key] else np.zeros(0)  # noqa: E731
    sat = cat("saturated").astype(bool)
    use = cat("sensitive").astype(bool) & ~sat
    snr, crb = cat("crb_snr")[use], np.concatenate([cat("crb_sigma_x")[use], cat("crb_sigma_y")[use]])
    return per_star, {
        "readout_mode": xp.mode, "dit_s": xp.dit_s, "ndit": xp.ndit, "full_well_fill": xp.fill,
        "background_e_per_s_px": bg_rate, "zero_point_e_per_s": rads[0].zero_point_e_per_s,
        "strehl": [float(v) for v in strehl], "seeing_arcsec": [float(v) for v in seeing],
        "n_saturated": int(sat.sum()), "n_in_reference_border": int(np.sum(~cat("sensitive").astype(bool))),
        "snr_range": [float(snr.min()), float(snr.max())] if snr.size else [None, None],
        "snr_median": float(np.median(snr)) if snr.size else None,
        "crb_sigma_px_range": [float(crb.min()), float(crb.max())] if crb.size else [None, None],
    }


def simulate_sky(out: str | os.PathLike, settings: SkySimSettings | None = None, *, overwrite: bool = False,
                 threads: int = 2, **changes: Any) -> SkyCampaign:
    """Simulate a sky campaign into directory ``out``.

    Nothing that exists is overwritten unless ``overwrite`` (every destination is checked
    before anything is written); every file is written atomically, ``campaign.toml`` last.

    The steps: (1) the instrument field; (2) the night plan and the files, checked writable;
    (3) the true catalogue and the truth; (4) the catalogue the fit sees; (5) with
    ``points_only``, the measured tables and the campaign, and stop; else (6) the PSF of
    every exposure; (7) the radiometry and the exposure plan; (8) the frames; (9) the truth
    of every star in the images; (10) the truth files, the catalogue and the campaign file.

    Parameters
    ----------
    out : str or os.PathLike
        The campaign directory.
    settings : SkySimSettings, optional
        The settings (default: all defaults).
    overwrite : bool
        Replace existing files.
    threads : int
        Frames made at once (the files do not depend on it).
    **changes
        Fields of ``settings`` to replace (``simulate_sky(out, target="47tuc", seed=3)``).

    Returns
    -------
    SkyCampaign
        What was written and the figures of the run.
    """
    t_start = time.perf_counter()
    s = (settings or SkySimSettings()).replace(**changes) if changes else (settings or SkySimSettings())
    out = Path(out)
    inst = get_instrument(s.instrument)
    filt = inst.filter(s.filter)
    spec = FIELDS[s.target]
    field, field_source = _sky_field(s, inst, filt)
    shape = detector_shape(field.domain)

    seed = int(np.random.SeedSequence().entropy) if s.seed is None else int(s.seed)
    ss = np.random.SeedSequence(seed)
    ss_cat, ss_plan, ss_truth, ss_noise, ss_obs, ss_psf, ss_bg, ss_flat, ss_frames = ss.spawn(9)
    plan = plan_night(field_center(s.target), s.n_exposures, zenith_range=s.zenith_range or spec["zenith_range"],
                      night=s.night or spec["night"], position_angles=s.position_angles,
                      dither_arcsec=s.dither_arcsec, wavelength_um=filt.center_um,
                      rng=np.random.default_rng(ss_plan), prefix=s.target, target=s.target)
    paths = sky_campaign_paths(out, plan.names, s.points_only)
    for key, p in paths.items():
        for q in (p if isinstance(p, list) else [p]):
            check_writable(q, overwrite)

    scene = _sky_scene(s, inst, filt, field, plan, ss_cat, ss_truth, ss_noise)
    truth, seen = scene.truth, scene.seen
    summary = {"target": s.target, "field": spec["name"], "instrument": inst.name, "filter": filt.name,
               "detector_shape": list(shape), "n_exposures": s.n_exposures,
               "stars_per_exposure": [len(e) for e in truth.exposures],
               "zenith_distance_deg": [e.apparent.zenith_distance_deg for e in truth.exposures],
               "rotator_angle_deg": [e.apparent.rotator_angle_deg for e in truth.exposures],
               "flexure_rms_mas": _rms_mas([e.flexure for e in truth.exposures]),
               "n_catalog_stars": len(seen)}
    info_extra = {"seed": seed, "settings": s.to_dict(), "target": s.target, "field_source": field_source,
                  "instrument": inst.key, "filter": filt.name, "detector_shape": list(shape),
                  "truth_margin_px": TRUTH_MARGIN_PX}
    if s.points_only:
        files = _write_points_only(s, out, paths, inst, filt, shape, plan, spec, scene, seed, info_extra, summary,
                                   ss_obs, overwrite)
        summary["seconds"] = time.perf_counter() - t_start
        return SkyCampaign(out, paths["campaign"], paths["catalog"], tuple(files), None, None,
                           {k: v for k, v in paths.items() if k in truth_paths(out)}, truth, summary)

    light = _sky_light(s, inst, filt, plan, scene, ss_psf)
    xp = light.xp
    det = _det.DetectorModel.from_instrument(inst, xp.mode, shape=shape, seed=s.detector_seed)
    log.info("%s %s: %s, DIT %g s x NDIT %d; background %.3g e/s/px", inst.name, filt.name, xp.mode, xp.dit_s,
             xp.ndit, light.bg_rate)
    frame_info, t_start_obs = _write_sky_frames(s, out, paths, inst, filt, shape, plan, scene, light, det, seed,
                                                ss_frames, ss_bg, ss_flat, overwrite, threads)
    per_star, figures = _star_truth(s, shape, scene, light, det)
    summary.update(figures)
    core, radius, psfs, rads = scene.core, scene.radius, light.psfs, light.rads
    strehl, seeing, seeing_eff = light.strehl, light.seeing, light.seeing_eff
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    out_paths = write_sky_truth(
        out, truth, catalog_seen=seen, instrument=inst.name, filter_id=filt.name, overwrite=overwrite,
        star_columns=per_star,
        star_columns_note=("flux_e: total electrons per DIT of the averaged frame (before the flat field); peak_e: "
                           "expected electrons per DIT in the brightest pixel (star centred on a pixel); saturated: "
                           "peak + background >= full well; sensitive: not in the reference-pixel border (no light there); "
                           "crb_*: Cramer-Rao bound (px) of a PSF fit with a fitted "
                           "local background on the raw frame, crb_snr = flux / sigma_flux (NaN in the border)"),
        extra={**info_extra, "kind": "sky campaign (simulate sky)",
               "exposure_plan": dataclasses.asdict(xp),
               "radiometry": [dataclasses.asdict(r) for r in rads],
               "psf": {"core": {k: v for k, v in core.meta.items()}, "strehl": strehl.tolist(),
                       "seeing_arcsec_zenith": seeing.tolist(), "seeing_arcsec_effective": seeing_eff.tolist(),
                       "halo_fwhm_px": [p.halo_fwhm_px for p in psfs], "beta": psfs[0].beta if psfs else None,
                       "halo_fraction_kept": [fi["halo_fraction_kept"] for fi in frame_info],
                       "render_radius_px": radius},
               "detector": to_plain(dataclasses.asdict(det)),
               "timing": {"mid_exposure_utc": [pe.time for pe in plan],
                          "date_obs_utc": [t.isot for t in t_start_obs]},
               "files": {"frames": [rel(p) for p in paths["frames"]], "flat": rel(paths["flat"]),
                         "background": rel(paths["background"]), "catalog": rel(paths["catalog"])},
               "summary": summary})
    seen.write(paths["catalog"], overwrite=overwrite)
    toml = sky_campaign_toml(inst, shape, plan, [rel(p) for p in paths["frames"]], "catalog.ecsv",
                             dataset=s.target, filter_name=filt.name, measure=True, band="L",
                             background=rel(paths["background"]), flat=rel(paths["flat"]), flexure=s.flexure_basis,
                             comment=f"sky campaign ({spec['name']}) written by `astrocal simulate sky` "
                                     f"(astrocal {__version__}, seed {seed}); truth in truth/")
    atomic_write_text(paths["campaign"], toml, overwrite=overwrite)
    summary["seconds"] = time.perf_counter() - t_start
    return SkyCampaign(out, paths["campaign"], paths["catalog"], tuple(paths["frames"]), paths["flat"],
                       paths["background"], {k: v for k, v in out_paths.items()}, truth, summary)
