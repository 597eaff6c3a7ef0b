"""Simulated lab campaigns of the WCU pinhole grid: ``astrocal simulate lab``.

:func:`simulate_lab` writes a complete, self-contained lab campaign with its known truth::

    DIR/campaign.toml            the campaign (loads with astrocal.campaign.load_campaign)
    DIR/mask.ecsv                copy of the mask table used
    DIR/raw/grid_NN.fits         raw frames of the grid, one per chopper offset (float32 ADU)
    DIR/raw/background.fits      black-body shutter closed: thermal background + dark + noise
    DIR/raw/flat.fits            raw lamp flat (uniform illumination, same detector)
    DIR/truth/distortion_truth.ecsv   instrument field, SIAF-style (exact)
    DIR/truth/distortion_truth.fits   the same, AstroMet, double precision
    DIR/truth/holes.ecsv         per hole: nominal position, manufacturing error, transmission
    DIR/truth/exposures.ecsv     per exposure: commanded and applied offsets, pose, timing
    DIR/truth/spots.ecsv         per exposure and hole: true position (0-based), flux, CRB
    DIR/truth/truth.json         seed, settings, insertion pose, chopper frame, exposure plan,
                                 radiometry, exact Legendre coefficients of the field

The geometry is :func:`astrocal.sim.lab_truth.draw_lab_truth` (the truth model shared with
the fit); :func:`load_lab_truth` rebuilds its :class:`~astrocal.sim.lab_truth.LabTruth` from
the files.  The physics (each effect switchable, see :class:`LabSimSettings`):

* **distortion**: the default smooth field of :func:`astrocal.sim.field.instrument_field`
  (few px at the corners) or any solution file (``distortion_file``);
* **geometry**: chopper offsets (:func:`~astrocal.sim.lab_truth.chopper_series`), their
  errors and the chopper frame's scale/rotation error, the mask insertion rotation and
  offset, per-hole manufacturing errors;
* **PSF**: monochromatic diffraction by the ELT pupil (central obscuration, spiders) at the
  filter's centre wavelength, convolved with the pinhole disk, pixel-integrated
  (:func:`astrocal.image.psf.diffraction_psf`), rendered on stamps (``render_spots``);
* **radiometry** (:func:`wcu_radiometry`): a black body (1000 K) through the WCU
  integrating sphere and the pinholes, and the thermal background of the warm WCU
  (288 K, emissivity 1) through the same instrument;
* **illumination**: vignetting towards the edges of the illuminated field, a smooth WCU
  illumination pattern over the mask, hole-to-hole transmission scatter, lamp drift;
* **detector** (:mod:`astrocal.sim.detector`): flat field, dark current, dead/hot pixels,
  photon noise, cosmic rays, saturation, read noise, reference-pixel border, ADU;
* **exposure** (:func:`plan_exposure`): readout mode, DIT and NDIT chosen from the
  background so that the frames do not saturate; the black-body aperture is then set so
  that the brightest spot reaches ``snr_max``.

Units: arcsec (focal plane and mask positions), mm and um at the mask, pixels 0-based,
electrons per DIT, ADU, seconds, kelvin.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time, TimeDelta

from .. import __version__
from ..atomic import atomic_path, atomic_write_table, atomic_write_text, check_writable
from ..errors import SimulationOptionError
from ..field import DistortionField, affine_part
from ..formats.astromet import write_astromet
from ..formats.siaf import write_siaf
from ..instruments import get_instrument
from . import detector as _det
from ..image.centroid import NoiseModel, cramer_rao_bound, flux_for_snr
from ..image.headers import make_raw_header
from ..lab.mask import MaskError, UnknownMaskError, load_mask, mask_path
from ..image.psf import diffraction_psf, pinhole_diameter_mas, render_spots
from ..pixels import detector_domain
from ..solution import Solution
from .field import instrument_field
from .lab_truth import LabTruth, chopper_series, draw_lab_truth

__all__ = [
    "WCU",
    "PUPIL_TRANSMISSION",
    "NOISE_EFFECTS",
    "DETECTOR_EFFECTS",
    "SCENE_EFFECTS",
    "TRUTH_MARGIN_PX",
    "LabSimSettings",
    "Radiometry",
    "ExposurePlan",
    "LabCampaign",
    "photon_radiance",
    "wcu_radiometry",
    "plan_exposure",
    "lab_psf",
    "illumination_factor",
    "simulate_lab",
    "load_lab_truth",
    "campaign_paths",
]

log = logging.getLogger(__name__)

#: detector effects, switched by the :class:`LabSimSettings` fields of the same name
#: (passed to :func:`astrocal.sim.detector.simulate_frame`)
DETECTOR_EFFECTS = ("reference_pixels", "flat", "dark", "bad_pixels", "photon_noise",
                    "cosmic_rays", "saturation", "read_noise")
#: scene effects, switched by the :class:`LabSimSettings` fields of the same name
SCENE_EFFECTS = ("distortion", "hole_errors", "offset_errors", "pose_errors", "pinhole",
                 "spiders", "vignetting", "thermal")
#: the noise effects (``noiseless`` switches these off)
NOISE_EFFECTS = ("photon_noise", "read_noise", "cosmic_rays")

#: positions closer than this to the detector edge are "not on the detector" (NaN) in the
#: truth, as in :func:`draw_lab_truth`'s default; their light is still rendered
TRUTH_MARGIN_PX = 8.0

# physical constants (SI)
_H = 6.62607015e-34
_C = 2.99792458e8
_K = 1.380649e-23
MAS_TO_RAD = math.pi / 180.0 / 3600.0e3

#: METIS WCU facts, irdb METIS/metis_wcu_config.yaml and METIS_WCU.yaml (commit f0a5f306)
WCU = {
    "bb_temp_k": 1000.0,        # default black-body temperature
    "emiss_bb": 0.98,           # black-body emissivity (E-REP-MPIA-MET-1203)
    "diam_is_in_mm": 25.4,      # integrating-sphere entrance port
    "diam_is_mm": 250.0,        # integrating sphere
    "diam_is_out_mm": 100.0,    # integrating-sphere output port
    "rho_is": 0.95,             # sphere reflectivity
    "emiss_mask": 1.0,          # focal-plane mask emissivity
    "temperature_k": 288.15,    # WCU ambient: METIS_WCU.yaml 'temperature: 15' (Celsius)
}
#: transmission of the cold pupil masks w.r.t. the full ELT aperture (irdb METIS_WCU.yaml
#: PupilMaskWheel: PPS-LM 0.7509, PPS-N 0.7429)
PUPIL_TRANSMISSION = {"metis-lm": 0.7509, "metis-n": 0.7429, "metis-lms": 0.7342}
#: full ELT aperture used with the pupil transmission, m (the PSF model's outer diameter)
ELT_DIAMETER_M = 39.146


# =========================================================================== settings
@dataclass(frozen=True)
class LabSimSettings:
    """Everything that defines a simulated lab campaign (with ``seed``, the frames are
    reproducible bit for bit).

    Geometry: ``n_exposures`` (default offsets ``chopper_series(n_exposures,
    max_offset_arcsec)`` unless ``offsets`` (E, 2) arcsec are given), ``offset_sigma_mas``
    (stated accuracy of the offsets, also the rms of their true errors),
    ``hole_error_um`` (rms per coordinate of the manufacturing errors),
    ``insertion_rot_deg`` / ``insertion_offset_arcsec`` (rms of the mask insertion pose),
    ``chopper_scale`` / ``chopper_rot_deg`` (rms of the chopper frame's errors),
    ``pose_jitter`` (per-exposure scale and rotation, rms).

    Field: ``distortion_file`` (any solution file; the filter's solution, or the only one)
    or the default smooth field (``distortion_degree``, ``distortion_corner_px``,
    ``distortion_rotation_deg``, ``distortion_seed``: None = the fixed default field).

    Mask: a shipped mask name or an ECSV path. Detector: ``detector_shape`` (default the
    instrument's; smaller for quick runs: the central window of the detector, with the
    default field cropped accordingly), ``detector_seed`` (fixed patterns).

    Exposure: ``readout_mode``, ``dit_s``, ``ndit`` (default: planned, see
    :func:`plan_exposure`), ``exptime_s`` (wanted DIT x NDIT per frame), ``fill_fraction``
    (of the full well reached by background + brightest spot peak).

    Radiometry: ``bb_temp_k``, ``bb_aperture`` (default: set so that the brightest spot has
    ``snr_max``), ``wcu_temp_k``, ``wcu_emissivity``, ``efficiency`` (optics x filter x QE,
    assumed), ``pupil_transmission`` (default per instrument), ``nd_transmission`` (a
    neutral-density filter: attenuates background and spots alike, for bands whose
    thermal background saturates at the minimum DIT, e.g. M').

    Illumination: ``vignetting_edge`` (relative illumination at the edge of the illuminated
    field), ``vignetting_scale_px`` (1/e width of the roll-off), ``illumination_falloff``
    (WCU illumination drop at 8 arcsec from its centre), ``hole_transmission_rms``,
    ``lamp_stability`` (rms flux change between exposures).

    Switches (True = effect on): the :data:`SCENE_EFFECTS` and :data:`DETECTOR_EFFECTS`.
    They change the frames only, never the exposure plan or the random draws of the other
    effects.
    """

    instrument: str = "metis-lm"
    filter: Optional[str] = None
    seed: Optional[int] = None
    # geometry
    n_exposures: int = 10
    offsets: Optional[tuple] = None
    max_offset_arcsec: float = 3.0
    offset_sigma_mas: float = 2.0
    hole_error_um: float = 0.5
    insertion_rot_deg: float = 0.3
    insertion_offset_arcsec: float = 0.3
    chopper_scale: float = 2e-3
    chopper_rot_deg: float = 0.2
    pose_jitter: float = 1e-6
    # field
    distortion_file: Optional[str] = None
    distortion_degree: int = 5
    distortion_corner_px: float = 3.0
    distortion_rotation_deg: float = 0.2
    distortion_seed: Optional[int] = None
    # mask and detector
    mask: str = "metis_wcu_fp_mask5"
    detector_shape: Optional[tuple] = None
    detector_seed: int = 0
    # exposure
    readout_mode: Optional[str] = None
    dit_s: Optional[float] = None
    ndit: Optional[int] = None
    exptime_s: float = 30.0
    fill_fraction: float = 0.5
    snr_max: float = 3000.0
    # radiometry
    bb_temp_k: float = WCU["bb_temp_k"]
    bb_aperture: Optional[float] = None
    wcu_temp_k: float = WCU["temperature_k"]
    wcu_emissivity: float = WCU["emiss_mask"]
    efficiency: float = 0.35
    pupil_transmission: Optional[float] = None
    nd_transmission: float = 1.0
    # illumination
    vignetting_edge: float = 0.03
    vignetting_scale_px: float = 200.0
    illumination_falloff: float = 0.3
    illumination_centre_arcsec: tuple = (0.8, -0.5)
    hole_transmission_rms: float = 0.05
    lamp_stability: float = 0.003
    # timing
    date_obs: str = "2025-03-17T13:00:00"
    overhead_s: float = 20.0
    # scene switches
    distortion: bool = True
    hole_errors: bool = True
    offset_errors: bool = True
    pose_errors: bool = True
    pinhole: bool = True
    spiders: bool = True
    vignetting: bool = True
    thermal: bool = True
    # detector switches
    reference_pixels: bool = True
    flat: bool = True
    dark: bool = True
    bad_pixels: bool = True
    photon_noise: bool = True
    cosmic_rays: bool = True
    saturation: bool = True
    read_noise: bool = True

    def __post_init__(self):
        for name in SCENE_EFFECTS + DETECTOR_EFFECTS:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"switch {name} must be True or False, got {getattr(self, name)!r}")
        if self.offsets is not None:
            off = np.asarray(self.offsets, float)
            if off.ndim != 2 or off.shape[1] != 2 or len(off) < 1:
                raise SimulationOptionError(f"offsets must be (E, 2) arcsec, got shape {off.shape}")
            object.__setattr__(self, "offsets", tuple(map(tuple, off.tolist())))
            object.__setattr__(self, "n_exposures", len(off))
        if int(self.n_exposures) < 1:
            raise SimulationOptionError(f"a campaign needs at least one exposure, got {self.n_exposures}")
        object.__setattr__(self, "n_exposures", int(self.n_exposures))
        if self.detector_shape is not None:
            shape = tuple(int(v) for v in self.detector_shape)
            if len(shape) != 2 or min(shape) < 64:
                raise SimulationOptionError(f"detector_shape must be (ny, nx) >= 64 px, got {self.detector_shape}")
            object.__setattr__(self, "detector_shape", shape)
        if self.offsets is None and not (np.isfinite(self.max_offset_arcsec) and self.max_offset_arcsec > 0):
            raise SimulationOptionError(f"max_offset_arcsec (the largest chopper offset) must be > 0, got "
                             f"{self.max_offset_arcsec} (the exposures must be dithered)")
        if not self.offset_sigma_mas > 0:
            raise SimulationOptionError("offset_sigma_mas (stated accuracy of the chopper offsets) must be > 0; "
                             "use offset_errors=False for exact offsets")
        for name in ("hole_error_um", "insertion_rot_deg", "insertion_offset_arcsec", "pose_jitter",
                     "chopper_scale", "chopper_rot_deg", "hole_transmission_rms", "lamp_stability",
                     "illumination_falloff", "overhead_s"):
            if getattr(self, name) < 0:
                raise SimulationOptionError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("exptime_s", "snr_max", "bb_temp_k", "efficiency", "vignetting_scale_px"):
            if not getattr(self, name) > 0:
                raise SimulationOptionError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.nd_transmission <= 1:
            raise SimulationOptionError(f"nd_transmission must be in (0, 1], got {self.nd_transmission}")
        if not 0 < self.fill_fraction < 1:
            raise SimulationOptionError(f"fill_fraction must be in (0, 1), got {self.fill_fraction}")
        if not 0 < self.vignetting_edge <= 1:
            raise SimulationOptionError(f"vignetting_edge must be in (0, 1], got {self.vignetting_edge}")
        if self.bb_aperture is not None and not 0 < self.bb_aperture <= 1:
            raise SimulationOptionError(f"bb_aperture must be in (0, 1], got {self.bb_aperture}")
        if self.dit_s is not None and not self.dit_s > 0:
            raise SimulationOptionError(f"dit_s must be > 0, got {self.dit_s}")
        if self.ndit is not None and int(self.ndit) < 1:
            raise SimulationOptionError(f"ndit must be >= 1, got {self.ndit}")
        if self.wcu_temp_k < 0 or not 0 <= self.wcu_emissivity <= 1:
            raise SimulationOptionError("wcu_temp_k must be >= 0 K and wcu_emissivity in [0, 1]")
        Time(self.date_obs, scale="utc")  # raises on a bad date

    def replace(self, **changes) -> "LabSimSettings":
        return dataclasses.replace(self, **changes)

    def noiseless(self) -> "LabSimSettings":
        """The same campaign without photon noise, read noise and cosmic rays."""
        return self.replace(**{k: False for k in NOISE_EFFECTS})

    def ideal(self) -> "LabSimSettings":
        """Frames that are the bare render: no detector effect and no thermal background
        (the frame is the expected electrons of the spots divided by the gain)."""
        return self.replace(thermal=False, **{k: False for k in DETECTOR_EFFECTS})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        return d


# =========================================================================== radiometry
def photon_radiance(wavelength_um, temp_k):
    """Black-body photon spectral radiance, photons s^-1 m^-2 sr^-1 um^-1."""
    lam = np.asarray(wavelength_um, float) * 1e-6
    if temp_k <= 0:
        return np.zeros_like(lam)
    with np.errstate(over="ignore"):
        return 2.0 * _C / lam**4 / np.expm1(_H * _C / (lam * _K * float(temp_k))) * 1e-6


def band_radiance(lo_um, hi_um, temp_k, n=257):
    """Photon radiance integrated over a top-hat band, photons s^-1 m^-2 sr^-1."""
    w = np.linspace(lo_um, hi_um, n)
    return float(np.trapezoid(photon_radiance(w, temp_k), w))


def sphere_gain_factor():
    """Radiance of the integrating sphere's wall over that of a Lambertian source filling
    its entrance port: (A_in / A_sphere) * rho / (1 - rho (1 - f)), f = port fraction."""
    a_s = math.pi * WCU["diam_is_mm"] ** 2
    a_in = math.pi / 4 * WCU["diam_is_in_mm"] ** 2
    a_out = math.pi / 4 * WCU["diam_is_out_mm"] ** 2
    f = (a_in + a_out) / a_s
    rho = WCU["rho_is"]
    return a_in / a_s * rho / (1.0 - rho * (1.0 - f))


@dataclass(frozen=True)
class Radiometry:
    """Photon budget of a lab frame (rates in detected electrons per second).

    ``spot_e_per_s``: one pinhole of ``hole_diameter_um`` with the black-body aperture
    fully open; ``background_e_per_s``: thermal background per pixel; ``band_um``: the
    top-hat band used; the other fields record the assumptions.
    """

    spot_e_per_s: float
    background_e_per_s: float
    band_um: tuple
    wavelength_um: float
    hole_diameter_um: float
    bb_temp_k: float
    wcu_temp_k: float
    wcu_emissivity: float
    efficiency: float
    collecting_area_m2: float
    sphere_gain: float
    pixel_solid_angle_sr: float
    pinhole_solid_angle_sr: float
    notes: str = ""


def wcu_radiometry(instrument="metis-lm", filter_name=None, *, bb_temp_k=WCU["bb_temp_k"],
                   wcu_temp_k=WCU["temperature_k"], wcu_emissivity=WCU["emiss_mask"],
                   efficiency=0.35, pupil_transmission=None, hole_diameter_um=25.0,
                   mask_scale_mm_per_arcsec=None):
    """Spot and thermal-background rates of a WCU pinhole frame.

    The black body (emissivity 0.98) fills the integrating sphere's entrance port; the
    sphere wall (and so each pinhole) has ``sphere_gain_factor()`` (2.7 %) of the black body's
    radiance; a pinhole of angular diameter ``d`` (``hole_diameter_um`` at the mask scale)
    sends ``L * (pi/4) d^2 * A`` photons per second into the instrument, with ``A`` the
    full ELT aperture times the cold pupil mask's transmission. The thermal background is
    the warm mask/WCU at ``wcu_temp_k`` with ``wcu_emissivity`` over one pixel's solid
    angle and the same ``A``. Both are integrated over the filter as a top hat (centre
    +- width/2; 10 % of the centre where the instrument gives no width) and multiplied by
    ``efficiency`` (optics, filter peak and detector QE; an assumption, not in the METIS
    sources). The pinholes' own thermal emission equals the mask's and is part of the
    background.
    """
    inst = get_instrument(instrument) if isinstance(instrument, str) else instrument
    filt = inst.filter(filter_name)
    width = filt.width_um if filt.width_um else 0.1 * filt.center_um
    lo, hi = filt.center_um - width / 2, filt.center_um + width / 2
    pupil = PUPIL_TRANSMISSION.get(inst.key, 0.75) if pupil_transmission is None else float(pupil_transmission)
    area = math.pi / 4 * ELT_DIAMETER_M**2 * pupil
    scale = inst.mask_scale_mm_per_arcsec if mask_scale_mm_per_arcsec is None else float(mask_scale_mm_per_arcsec)
    d_rad = pinhole_diameter_mas(hole_diameter_um, scale) * MAS_TO_RAD
    omega_pin = math.pi / 4 * d_rad**2
    omega_pix = (inst.pixel_scale_mas * MAS_TO_RAD) ** 2
    gain = sphere_gain_factor()
    spot = band_radiance(lo, hi, bb_temp_k) * WCU["emiss_bb"] * gain * omega_pin * area * efficiency
    bg = band_radiance(lo, hi, wcu_temp_k) * wcu_emissivity * omega_pix * area * efficiency
    notes = ("top-hat band" + (" (width assumed 10 % of the centre)" if not filt.width_um else "")
             + "; efficiency (optics x filter x QE) assumed")
    return Radiometry(float(spot), float(bg), (lo, hi), filt.center_um, float(hole_diameter_um),
                      float(bb_temp_k), float(wcu_temp_k), float(wcu_emissivity), float(efficiency),
                      float(area), float(gain), float(omega_pix), float(omega_pin), notes)


# =========================================================================== exposure plan
@dataclass(frozen=True)
class ExposurePlan:
    """Readout mode, DIT and NDIT of the lab frames, and why."""

    mode: str
    dit_s: float
    ndit: int
    fill: float          # fraction of the full well reached by background + brightest peak
    reason: str

    @property
    def exptime_s(self):
        return self.dit_s * self.ndit


def _round_down(x, digits=2):
    if x <= 0:
        return x
    e = math.floor(math.log10(x)) - digits + 1
    return math.floor(x / 10**e) * 10**e


def plan_exposure(instrument, background_e_per_s, peak_e_per_s=0.0, *, mode=None, dit_s=None,
                  ndit=None, exptime_s=30.0, fill_fraction=0.5, max_fill=0.8, max_dit_s=10.0):
    """Choose the readout mode, DIT and NDIT of a lab frame.

    The DIT is the longest (up to ``max_dit_s`` and ``exptime_s``, two significant digits)
    at which thermal background + dark + the brightest spot's peak pixel
    (``peak_e_per_s``) fill ``fill_fraction`` of the full well. The mode is the one with
    the lowest read noise whose minimum DIT allows that DIT, or failing that, whose
    minimum DIT keeps the fill below ``max_fill`` (then at its minimum DIT); if none
    does, the mode with the lowest fill at its minimum DIT (a warning: the frames
    saturate above 90 %). NDIT = ``exptime_s`` / DIT (frames are the average of NDIT
    DITs). ``mode``, ``dit_s``, ``ndit`` override.
    """
    inst = get_instrument(instrument) if isinstance(instrument, str) else instrument
    det = inst.detector
    names = [mode] if mode else sorted(det.modes, key=lambda k: det.modes[k].read_noise_e)

    def rate(m):
        return background_e_per_s + det.mode(m).dark_current_e_per_s + peak_e_per_s

    chosen = None
    if dit_s is not None:
        chosen = names[0] if mode else None
        if chosen is None:  # lowest-noise mode that allows this DIT
            ok = [m for m in names if det.mode(m).min_dit_s <= dit_s]
            chosen = ok[0] if ok else min(names, key=lambda m: det.mode(m).min_dit_s)
        dit = float(dit_s)
        reason = f"DIT {dit:g} s given"
    else:
        for m in names:
            mm = det.mode(m)
            sat = fill_fraction * mm.full_well_e / rate(m)
            if sat >= mm.min_dit_s:
                chosen = m
                dit = max(mm.min_dit_s, _round_down(min(sat, max_dit_s, exptime_s)))
                reason = (f"'{m}' is the lowest-noise mode whose minimum DIT "
                          f"({mm.min_dit_s:g} s) allows filling {fill_fraction:.0%} of "
                          f"the full well with {rate(m):.3g} e/s/px")
                break
            if rate(m) * mm.min_dit_s <= max_fill * mm.full_well_e:
                chosen = m
                dit = mm.min_dit_s
                reason = (f"'{m}' is the lowest-noise mode whose minimum DIT ({mm.min_dit_s:g} s) "
                          f"keeps {rate(m):.3g} e/s/px below {max_fill:.0%} of the full well")
                break
        if chosen is None:
            chosen = min(names, key=lambda m: rate(m) * det.mode(m).min_dit_s / det.mode(m).full_well_e)
            dit = det.mode(chosen).min_dit_s
            reason = (f"{rate(chosen):.3g} e/s/px fills the full well faster than any mode's minimum "
                      f"DIT allows at {fill_fraction:.0%}: '{chosen}' at its minimum DIT")
    m = det.mode(chosen)
    if dit < m.min_dit_s:
        raise SimulationOptionError(f"DIT {dit:g} s is below the minimum DIT {m.min_dit_s:g} s of mode '{chosen}'")
    fill = rate(chosen) * dit / m.full_well_e
    if fill > 0.9:
        log.warning("readout mode '%s', DIT %g s: background + spot peak reach %.0f%% of the full "
                    "well; frames will saturate (use a neutral-density filter, a narrower filter "
                    "or a cooler WCU)", chosen, dit, 100 * fill)
    n = int(ndit) if ndit is not None else max(1, int(round(exptime_s / dit)))
    return ExposurePlan(chosen, float(dit), n, float(fill), reason)


# =========================================================================== PSF, illumination
def lab_psf(instrument, filter_name=None, hole_diameter_um=25.0, mask_scale_mm_per_arcsec=None,
            pinhole=True, spiders=True, pixel_scale_mas=None):
    """Pixel-integrated diffraction PSF of a pinhole at the filter's centre wavelength."""
    inst = get_instrument(instrument) if isinstance(instrument, str) else instrument
    filt = inst.filter(filter_name)
    scale = inst.mask_scale_mm_per_arcsec if mask_scale_mm_per_arcsec is None else mask_scale_mm_per_arcsec
    pin = pinhole_diameter_mas(hole_diameter_um, scale) if pinhole else None
    pix = inst.pixel_scale_mas if pixel_scale_mas is None else pixel_scale_mas
    return diffraction_psf(filt.center_um, pix, pinhole_mas=pin, spiders=spiders)


def _sensitive_area(shape, border):
    """(xmin, xmax, ymin, ymax) of the light-sensitive pixels' edges (0-based)."""
    ny, nx = shape
    left, right, bottom, top = border
    return (left - 0.5, nx - right - 0.5, bottom - 0.5, ny - top - 0.5)


def illumination_factor(x, y, shape, border=(0, 0, 0, 0), edge=0.03, scale_px=200.0):
    """Relative illumination at detector positions: 1 in the field, rolling off towards
    the edge of the illuminated (light-sensitive) area to ``edge`` with a 1/e width
    ``scale_px``: ``1 - (1 - edge) exp(-d / scale_px)``, ``d`` the distance to the edge."""
    x0, x1, y0, y1 = _sensitive_area(shape, border)
    d = np.minimum(np.minimum(np.asarray(x) - x0, x1 - np.asarray(x)),
                   np.minimum(np.asarray(y) - y0, y1 - np.asarray(y)))
    d = np.maximum(d, 0.0)
    return 1.0 - (1.0 - edge) * np.exp(-d / scale_px)


def _mask_illumination(hole_xy_arcsec, falloff, centre):
    """WCU illumination over the mask: 1 - falloff (r / 8 arcsec)^2 around ``centre``."""
    r2 = np.sum((np.asarray(hole_xy_arcsec) - np.asarray(centre)) ** 2, axis=1)
    return np.clip(1.0 - falloff * r2 / 64.0, 0.05, 1.0)


# =========================================================================== inputs
def _load_mask(spec):
    """(Mask, source path) from a shipped mask name or a path; errors name the file."""
    spec = str(spec)
    p = Path(spec)
    if p.is_file():
        try:
            return load_mask(p), p
        except MaskError:
            raise
        except Exception as exc:  # pragma: no cover - defensive
            raise MaskError(f"{p}: cannot read the mask table ({exc})") from None
    if "/" in spec or p.exists():
        raise FileNotFoundError(f"mask table not found: {p}")
    try:
        src = mask_path(spec)
    except KeyError as exc:
        if p.suffix.lower() == ".ecsv":
            raise FileNotFoundError(f"mask table not found: {p} (and no shipped mask of that "
                                    f"name)") from None
        raise UnknownMaskError(f"{exc.args[0]} (or give the path of an ECSV mask table)") from None
    return load_mask(src), src


def _field_from_file(path, filter_name, shape):
    from ..formats.convert import read_solutions

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"distortion file not found: {path}")
    try:
        sols = read_solutions(path)
    except (OSError, ValueError) as exc:
        msg = str(exc)
        raise SimulationOptionError(msg if str(path) in msg else f"{path}: {msg}") from None
    except Exception as exc:
        raise SimulationOptionError(f"{path}: cannot read a distortion solution ({type(exc).__name__}: {exc})") from None
    if not sols:
        raise SimulationOptionError(f"{path}: no distortion solution in the file")
    if filter_name in sols:
        sol = sols[filter_name]
    elif len(sols) == 1:
        sol = next(iter(sols.values()))
        if sol.filter != filter_name:
            log.info("%s: using its only solution (filter %s) for filter %s", path, sol.filter, filter_name)
    else:
        raise SimulationOptionError(f"{path}: no solution for filter {filter_name!r}; the file has {sorted(sols)}")
    field = sol.field
    want = detector_domain(shape)
    if not np.allclose(field.domain, want, atol=1e-6):
        raise SimulationOptionError(f"{path}: the field's domain {tuple(field.domain)} is not the detector's "
                         f"{want} (detector shape {shape}); use a field made for this detector")
    return field


def central_window(field, full_shape, shape):
    """The field seen by a smaller detector at the centre of the full one (same optics):
    ``G_w(p) = G(p + c)``, ``c`` the offset of the window; exact (a polynomial of the same
    degree, fitted through more samples than terms)."""
    (ny, nx), (my, mx) = full_shape, shape
    if my > ny or mx > nx:
        raise SimulationOptionError(f"detector_shape {shape} is larger than the instrument's {full_shape}")
    cx, cy = (nx - mx) / 2.0, (ny - my) / 2.0
    dom = detector_domain(shape)
    n = 3 * (field.degree + 2)
    x, y = np.meshgrid(np.linspace(dom[0], dom[1], n), np.linspace(dom[2], dom[3], n))
    u, v = field(x + cx, y + cy)
    return DistortionField.fit(x, y, u, v, field.degree, dom, unit=field.unit,
                               input_unit=field.input_unit, meta=dict(field.meta, window=[cx, cy]))


def _truth_field(s, inst, shape, filter_name):
    if s.distortion_file:
        field = _field_from_file(s.distortion_file, filter_name, shape)
        source = str(Path(s.distortion_file).resolve())
    else:
        _, field = instrument_field(inst.key, s.distortion_degree, s.distortion_corner_px,
                                    s.distortion_rotation_deg, s.distortion_seed)
        source = "default smooth field (astrocal.sim.field.instrument_field)"
        if tuple(shape) != tuple(inst.detector_shape):
            field = central_window(field, inst.detector_shape, shape)
            source += f", central {shape[1]}x{shape[0]} window"
    if not s.distortion:
        field = affine_part(field)
        source += ", affine part only (distortion switched off)"
    return field, source


def _filter_id(name):
    """A filter id AstroMet accepts (<= 9 letters, digits, '-', '_')."""
    fid = re.sub(r"[^A-Za-z0-9_-]", "_", str(name))[:9]
    return fid or "NONE"


# =========================================================================== paths
def campaign_paths(out, n_exposures):
    """All files :func:`simulate_lab` writes into ``out`` (a dict of Paths)."""
    out = Path(out)
    width = max(2, len(str(n_exposures - 1)))
    raw = out / "raw"
    truth = out / "truth"
    return {
        "campaign": out / "campaign.toml",
        "mask": out / "mask.ecsv",
        "frames": [raw / f"grid_{k:0{width}d}.fits" for k in range(n_exposures)],
        "background": raw / "background.fits",
        "flat": raw / "flat.fits",
        "distortion_ecsv": truth / "distortion_truth.ecsv",
        "distortion_fits": truth / "distortion_truth.fits",
        "holes": truth / "holes.ecsv",
        "exposures": truth / "exposures.ecsv",
        "spots": truth / "spots.ecsv",
        "truth_json": truth / "truth.json",
    }


def _all_paths(paths):
    for v in paths.values():
        if isinstance(v, list):
            yield from v
        else:
            yield v


# =========================================================================== result
@dataclass(frozen=True, eq=False)
class LabCampaign:
    """What :func:`simulate_lab` wrote and the figures of the run."""

    directory: Path
    campaign: Path
    frames: tuple
    background: Path
    flat: Path
    mask: Path
    truth_files: dict
    truth: LabTruth
    plan: ExposurePlan
    radiometry: Radiometry
    summary: dict


# =========================================================================== simulation
def _write_fits(path, data, header, overwrite):
    with atomic_path(path, overwrite) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp)


def _toml_str(s):
    return json.dumps(str(s))  # TOML basic strings accept JSON's escapes


def _campaign_toml(inst, shape, mask_scale, filter_name, paths, out, commanded, sigma_mas, seed):
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    lines = [
        "# lab campaign written by `astrocal simulate lab` "
        f"(astrocal {__version__}, seed {seed}); truth in truth/",
        "",
        "[instrument]",
        f"name = {_toml_str(inst.name)}",
        f"preset = {_toml_str(inst.key)}",
        f"detector_shape = [{shape[0]}, {shape[1]}]",
        f"pixel_scale_mas = {inst.pixel_scale_mas!r}",
        f"mask_scale_mm_per_arcsec = {float(mask_scale)!r}",
        "",
        "[[lab]]",
        'name = "grid"',
        f"mask = {_toml_str(rel(paths['mask']))}",
        f"filter = {_toml_str(filter_name)}",
        f"background = {_toml_str(rel(paths['background']))}",
        f"flat = {_toml_str(rel(paths['flat']))}",
        "exposures = [",
    ]
    for path, (ox, oy) in zip(paths["frames"], commanded):
        lines.append(f"  {{ file = {_toml_str(rel(path))}, offset_arcsec = [{float(ox)!r}, {float(oy)!r}], "
                     f"offset_sigma_mas = {float(sigma_mas)!r} }},")
    lines += ["]", "", "[measure]", 'output = "measured/"', "", "[fit]", 'output = "out/"', ""]
    return "\n".join(lines)


def _holes_in_reach(field, hole_xy, offsets, s, radius_px):
    """Holes whose image can come within ``radius_px`` of the detector in some exposure.

    Bound: the detector's footprint in the focal plane (its edges through the field),
    enlarged by the largest commanded offset plus 5 sigma of the offset errors and of the
    insertion offset, 5 sigma of the insertion rotation times the hole's distance from the
    mask centre, the render radius and 0.5 arcsec. Holes beyond it never touch the
    detector; leaving them out also keeps the field's Newton inversion (in
    :func:`draw_lab_truth`) away from far extrapolations, where it need not converge.
    """
    xmin, xmax, ymin, ymax = field.domain
    t = np.linspace(0.0, 1.0, 65)
    ex = np.concatenate([xmin + (xmax - xmin) * t, np.full(65, xmax), xmax - (xmax - xmin) * t,
                         np.full(65, xmin)])
    ey = np.concatenate([np.full(65, ymin), ymin + (ymax - ymin) * t, np.full(65, ymax),
                         ymax - (ymax - ymin) * t])
    u, v = field(ex, ey)
    _, _, jac = field.jacobian(*field.centre)
    scale = float(np.sqrt(abs(np.linalg.det(jac))))
    off = float(np.max(np.hypot(offsets[:, 0], offsets[:, 1]))) if len(offsets) else 0.0
    slack = (off * (1 + 5 * s.chopper_scale) + 5 * s.offset_sigma_mas / 1e3
             + 5 * s.insertion_offset_arcsec + radius_px * scale + 0.5)
    rot = math.radians(5 * s.insertion_rot_deg + 5 * s.chopper_rot_deg)
    reach = slack + rot * np.hypot(hole_xy[:, 0], hole_xy[:, 1])
    dx = np.maximum(np.maximum(u.min() - hole_xy[:, 0], hole_xy[:, 0] - u.max()), 0.0)
    dy = np.maximum(np.maximum(v.min() - hole_xy[:, 1], hole_xy[:, 1] - v.max()), 0.0)
    return np.hypot(dx, dy) <= reach


def _positions_with_margin(wide, domain, margin):
    xmin, xmax, ymin, ymax = domain
    px, py = wide[..., 0], wide[..., 1]
    with np.errstate(invalid="ignore"):
        inside = ((px > xmin + margin) & (px < xmax - margin)
                  & (py > ymin + margin) & (py < ymax - margin))
    out = np.full_like(wide, np.nan)
    out[inside] = wide[inside]
    return out


def run_frame_tasks(tasks, threads=1):
    """Run frame-writing callables, on up to ``threads`` threads (in order when 1).

    Each frame has its own random stream, so the result does not depend on the threads;
    an exception of any task is raised here.
    """
    n_threads = max(1, min(int(threads or 1), len(tasks)))
    if n_threads == 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for fut in [pool.submit(task) for task in tasks]:
            fut.result()


def simulate_lab(out, settings=None, *, overwrite=False, threads=2, **changes):
    """Simulate a lab campaign into directory ``out``; returns a :class:`LabCampaign`.

    ``settings`` is a :class:`LabSimSettings` (default: all defaults); keyword arguments
    replace its fields (``simulate_lab(out, seed=3, n_exposures=4)``). Nothing that exists
    is overwritten unless ``overwrite`` (checked for every file before anything is
    written); every file is written atomically. ``threads`` frames are made at once (the
    files do not depend on it).
    """
    t_start = time.perf_counter()
    s = (settings or LabSimSettings()).replace(**changes) if changes else (settings or LabSimSettings())
    out = Path(out)
    inst = get_instrument(s.instrument)
    filt = inst.filter(s.filter)
    shape = tuple(s.detector_shape or inst.detector_shape)
    mask, mask_src = _load_mask(s.mask)
    mask_scale = float(mask.mask_scale.to_value("mm/arcsec")) if mask.mask_scale is not None \
        else inst.mask_scale_mm_per_arcsec
    field, field_source = _truth_field(s, inst, shape, filt.name)
    paths = campaign_paths(out, s.n_exposures)
    for p in _all_paths(paths):
        check_writable(p, overwrite)
    same_mask = Path(mask_src).resolve() == paths["mask"].resolve()
    mask_bytes = Path(mask_src).read_bytes()

    seed = int(np.random.SeedSequence().entropy) if s.seed is None else int(s.seed)
    ss = np.random.SeedSequence(seed)
    ss_truth, ss_holes, ss_lamp, ss_bg, ss_flat, ss_frames = ss.spawn(6)
    ss_frame = ss_frames.spawn(s.n_exposures)

    # ---------------------------------------------------------------- PSF and radiometry
    diam = mask.diameter_um
    d_ref = float(np.median(diam))
    groups = np.round(diam, 1)
    psfs = {g: lab_psf(inst, filt.name, g, mask_scale, pinhole=s.pinhole, spiders=s.spiders)
            for g in np.unique(groups)}
    psf_ref = psfs[np.round(d_ref, 1)] if np.round(d_ref, 1) in psfs else \
        lab_psf(inst, filt.name, d_ref, mask_scale, pinhole=s.pinhole, spiders=s.spiders)
    radius = int(np.floor(max(p.half_width for p in psfs.values())))
    rad = wcu_radiometry(inst, filt.name, bb_temp_k=s.bb_temp_k, wcu_temp_k=s.wcu_temp_k,
                         wcu_emissivity=s.wcu_emissivity, efficiency=s.efficiency * s.nd_transmission,
                         pupil_transmission=s.pupil_transmission, hole_diameter_um=d_ref,
                         mask_scale_mm_per_arcsec=mask_scale)

    # ---------------------------------------------------------------- exposure plan, fluxes
    peak_frac = float(psf_ref.evaluate(0.0, 0.0))
    spot_rate_max = rad.spot_e_per_s * (s.bb_aperture if s.bb_aperture is not None else 1.0)
    peak_rate = 0.0 if s.bb_aperture is None else spot_rate_max * peak_frac
    plan = None
    for _ in range(6):
        plan = plan_exposure(inst, rad.background_e_per_s, peak_rate, mode=s.readout_mode,
                             dit_s=s.dit_s, ndit=s.ndit, exptime_s=s.exptime_s,
                             fill_fraction=s.fill_fraction)
        mode = inst.detector.mode(plan.mode)
        bg_e = (rad.background_e_per_s + mode.dark_current_e_per_s) * plan.dit_s
        noise = NoiseModel(gain=mode.gain_e_per_adu * plan.ndit,
                           read_noise=mode.read_noise_e * math.sqrt(plan.ndit))
        if s.bb_aperture is None:
            f_adu = flux_for_snr(psf_ref, s.snr_max, bg_e / mode.gain_e_per_adu, noise=noise)
            f_max = f_adu * mode.gain_e_per_adu
            aperture = f_max / (rad.spot_e_per_s * plan.dit_s)
            if aperture > 1.0:
                aperture = 1.0
                f_max = rad.spot_e_per_s * plan.dit_s
        else:
            aperture = float(s.bb_aperture)
            f_max = rad.spot_e_per_s * aperture * plan.dit_s
        new_peak = f_max * peak_frac / plan.dit_s
        if s.dit_s is not None or abs(new_peak - peak_rate) <= 0.01 * max(peak_rate, 1.0):
            peak_rate = new_peak
            break
        peak_rate = new_peak
    if s.bb_aperture is None and aperture >= 1.0:
        log.warning("the black body at %g K cannot give SNR %g in %g s: aperture fully open",
                    s.bb_temp_k, s.snr_max, plan.exptime_s)
    det = _det.DetectorModel.from_instrument(inst, plan.mode, shape=shape, seed=s.detector_seed)
    gain = det.gain_e_per_adu
    log.info("%s %s: %s, DIT %g s x NDIT %d; thermal background %.3g e/s/px; black-body "
             "aperture %.3g; brightest spot %.3g e per DIT", inst.name, filt.name, plan.mode,
             plan.dit_s, plan.ndit, rad.background_e_per_s, aperture, f_max)

    # ---------------------------------------------------------------- geometry (truth)
    offsets = chopper_series(s.n_exposures, s.max_offset_arcsec) if s.offsets is None \
        else np.asarray(s.offsets, float)
    reach = _holes_in_reach(field, mask.xy_arcsec(mask_scale), offsets, s, radius)
    if not np.any(reach):
        raise SimulationOptionError(f"{mask_src}: no hole of the mask can reach the detector")
    excluded = mask.hole_id[~reach]
    mask = mask.select(reach)
    diam = mask.diameter_um
    groups = np.round(diam, 1)
    hole_xy = mask.xy_arcsec(mask_scale)
    wide = draw_lab_truth(
        field, mask.hole_id, hole_xy, mask_scale, ss_truth, n_exposures=s.n_exposures,
        offsets=offsets, hole_error_um=s.hole_error_um if s.hole_errors else 0.0,
        offset_sigma_mas=s.offset_sigma_mas if s.offset_errors else 0.0,
        insertion_rot_deg=s.insertion_rot_deg if s.pose_errors else 0.0,
        insertion_offset_arcsec=s.insertion_offset_arcsec if s.pose_errors else 0.0,
        chopper_scale=s.chopper_scale if s.offset_errors else 0.0,
        chopper_rot_deg=s.chopper_rot_deg if s.offset_errors else 0.0,
        pose_jitter=s.pose_jitter if s.pose_errors else 0.0, margin_px=-float(radius))
    truth = dataclasses.replace(
        wide, positions=_positions_with_margin(wide.positions, field.domain, TRUTH_MARGIN_PX),
        offset_sigma=s.offset_sigma_mas / 1e3)

    # ---------------------------------------------------------------- illumination
    rng_h = np.random.default_rng(ss_holes)
    rng_l = np.random.default_rng(ss_lamp)
    t_hole = np.exp(rng_h.normal(0.0, s.hole_transmission_rms, len(mask)))
    lamp = 1.0 + rng_l.normal(0.0, s.lamp_stability, s.n_exposures)
    area = (diam / d_ref) ** 2
    if s.vignetting:
        hole_factor = area * t_hole * _mask_illumination(hole_xy, s.illumination_falloff,
                                                         s.illumination_centre_arcsec)
    else:
        hole_factor = area.copy()
        lamp = np.ones(s.n_exposures)
    hole_factor = np.asarray(hole_factor, float)

    # ---------------------------------------------------------------- timing
    t0 = Time(s.date_obs, scale="utc")
    step = plan.exptime_s + s.overhead_s
    t_flat = t0 - TimeDelta(3600.0, format="sec")
    t_bg = t0
    t_exp = [t0 + TimeDelta((k + 1) * step, format="sec") for k in range(s.n_exposures)]

    switches = {k: bool(getattr(s, k)) for k in DETECTOR_EFFECTS}
    kw = inst.keywords
    common_extra = {
        "BUNIT": ("ADU", "pixel unit (average of NDIT DITs)"),
        "ORIGIN": ("astrocal simulate lab", "simulated frame"),
        kw.nd_filter: ("open" if s.nd_transmission == 1 else f"ND_{s.nd_transmission:g}",
                       "neutral density filter"),
        "INS.OPTI19.ID": ("wcu-bb-aperture-mask", "WCU BB exit aperture"),
        "INS.WCU_BB.AMBIENTTEMP": (round(s.wcu_temp_k - 273.15, 3), "[C] WCU ambient temperature"),
    }

    # ---------------------------------------------------------------- frames
    background_e = bg_e if s.thermal else 0.0
    thermal_e = rad.background_e_per_s * plan.dit_s if s.thermal else 0.0
    e_idx, h_idx = np.nonzero(np.isfinite(wide.positions[..., 0]))
    spot_x = wide.positions[e_idx, h_idx, 0]
    spot_y = wide.positions[e_idx, h_idx, 1]
    vign = illumination_factor(spot_x, spot_y, shape, det.border_px, s.vignetting_edge,
                               s.vignetting_scale_px) if s.vignetting else np.ones(spot_x.size)
    spot_illum = hole_factor[h_idx] * vign * lamp[e_idx]
    spot_flux = f_max * spot_illum
    size = 2 * radius + 1
    chunk = max(1, int(64e6 // (size * size * 16 * 8)))
    def grid_frame(k):
        sel = e_idx == k
        img = np.full(shape, np.float32(thermal_e), dtype=np.float32)
        for g, psf in psfs.items():
            sg = sel & (groups[h_idx] == g)
            if np.any(sg):
                render_spots(shape, spot_x[sg], spot_y[sg], spot_flux[sg], psf, radius=radius,
                             image=img, chunk=chunk)
        # the PSF table dips to ~-4e-5 of the peak far out; the detector model needs >= 0
        np.maximum(img, 0.0, out=img)
        frame = _det.simulate_frame(img, det, np.random.default_rng(ss_frame[k]),
                                    exptime=plan.dit_s, ndit=plan.ndit, **switches)
        del img
        hdr = make_raw_header(
            inst, date_obs=t_exp[k], dit=plan.dit_s, ndit=plan.ndit, filter_name=filt.name,
            mask=mask, chopper_offset=offsets[k], detector_mode=plan.mode, dpr_catg="CALIB",
            dpr_type="DISTORTION", lamp="bb", bb_temp=s.bb_temp_k,
            extra={**common_extra,
                   "INS.OPTI19.POSNAME": (round(float(aperture), 6), "BB aperture (open fraction)"),
                   "HIERARCH ASTROCAL SIM EXPNO": (k, "exposure index in the campaign")})
        _write_fits(paths["frames"][k], frame, hdr, overwrite)
        log.debug("wrote %s", paths["frames"][k])

    def background_frame():
        bg = _det.background_frame(np.float32(thermal_e), det, np.random.default_rng(ss_bg),
                                   exptime=plan.dit_s, ndit=plan.ndit, **switches)
        hdr = make_raw_header(inst, date_obs=t_bg, dit=plan.dit_s, ndit=plan.ndit,
                              filter_name=filt.name, mask=mask, chopper_offset=offsets[0],
                              detector_mode=plan.mode, dpr_catg="CALIB", dpr_type="DARK,WCUOFF",
                              lamp="off", bb_temp=s.bb_temp_k,
                              extra={**common_extra, "INS.OPTI19.POSNAME": (0.0, "BB shutter closed")})
        _write_fits(paths["background"], bg, hdr, overwrite)

    flat_level = 0.5 * det.full_well_e

    def flat_frame():
        fl = _det.flat_frame(det, np.random.default_rng(ss_flat), level_e=flat_level,
                             exptime=plan.dit_s, ndit=plan.ndit, **switches)
        hdr = make_raw_header(inst, date_obs=t_flat, dit=plan.dit_s, ndit=plan.ndit,
                              filter_name=filt.name, mask="open", detector_mode=plan.mode,
                              dpr_catg="CALIB", dpr_type="FLAT,LAMP", lamp="bb", bb_temp=s.bb_temp_k,
                              extra={**common_extra,
                                     "HIERARCH ASTROCAL SIM FLATLEV": (flat_level, "[e] mean level per DIT")})
        _write_fits(paths["flat"], fl, hdr, overwrite)

    # the detector's fixed patterns are cached: build them once before the threads start
    if s.flat:
        _det.flat_field(det)
    if s.bad_pixels:
        _det.bad_pixel_maps(det)
    run_frame_tasks([lambda k=k: grid_frame(k) for k in range(s.n_exposures)] + [background_frame, flat_frame],
                    threads)

    # ---------------------------------------------------------------- truth tables
    on_det = np.isfinite(truth.positions[e_idx, h_idx, 0])
    x0, x1, y0, y1 = _sensitive_area(shape, det.border_px)
    sensitive = (spot_x > x0) & (spot_x < x1) & (spot_y > y0) & (spot_y < y1)
    crb = np.full((spot_x.size, 4), np.nan)
    bg_adu = bg_e / gain
    noise_raw = NoiseModel(gain=gain * plan.ndit, read_noise=det.read_noise_e * math.sqrt(plan.ndit))
    noise_sub = NoiseModel(gain=gain * plan.ndit, read_noise=det.read_noise_e * math.sqrt(2 * plan.ndit),
                           sky=2.0 * bg_e * plan.ndit)
    use = on_det & sensitive
    for g, psf in psfs.items():
        sg = use & (groups[h_idx] == g)
        if np.any(sg):
            c1 = cramer_rao_bound(psf, spot_x[sg], spot_y[sg], spot_flux[sg] / gain, bg_adu, noise=noise_raw)
            c2 = cramer_rao_bound(psf, spot_x[sg], spot_y[sg], spot_flux[sg] / gain, 0.0, noise=noise_sub)
            crb[sg, 0] = np.sqrt(c1[:, 0, 0])
            crb[sg, 1] = np.sqrt(c1[:, 1, 1])
            crb[sg, 2] = (spot_flux[sg] / gain) / np.sqrt(c1[:, 2, 2])
            crb[sg, 3] = np.sqrt(0.5 * (c2[:, 0, 0] + c2[:, 1, 1]))
    peak_e = spot_flux * peak_frac

    holes = Table()
    holes["hole_id"] = mask.hole_id
    holes["x_mm"] = mask.xy_mm[:, 0]
    holes["y_mm"] = mask.xy_mm[:, 1]
    holes["diameter_um"] = diam
    holes["x_arcsec"] = truth.hole_xy[:, 0]
    holes["y_arcsec"] = truth.hole_xy[:, 1]
    holes["dx_um"] = truth.hole_errors[:, 0] * mask_scale * 1e3
    holes["dy_um"] = truth.hole_errors[:, 1] * mask_scale * 1e3
    holes["dx_arcsec"] = truth.hole_errors[:, 0]
    holes["dy_arcsec"] = truth.hole_errors[:, 1]
    holes["transmission"] = hole_factor
    holes.meta = {
        "description": "truth per hole of a simulated lab campaign (astrocal simulate lab)",
        "columns": "x_mm, y_mm nominal (mask table); x_arcsec = x_mm / mask_scale; dx, dy: "
                   "manufacturing error (true - nominal) at the mask, um and arcsec; transmission: "
                   "relative spot flux of the hole (diameter^2, WCU illumination, hole scatter)",
        "mask_scale_mm_per_arcsec": mask_scale,
        "mask": mask.name,
        "holes_out_of_reach": [int(v) for v in excluded],
        "note": "holes that cannot reach the detector in any exposure (holes_out_of_reach) "
                "are not simulated and not listed",
    }
    exps = Table()
    exps["exposure"] = np.arange(s.n_exposures)
    exps["file"] = [Path(p).relative_to(out).as_posix() for p in paths["frames"]]
    exps["date_obs"] = [t.isot for t in t_exp]
    exps["commanded_x_arcsec"] = truth.commanded[:, 0]
    exps["commanded_y_arcsec"] = truth.commanded[:, 1]
    exps["applied_x_arcsec"] = truth.applied[:, 0]
    exps["applied_y_arcsec"] = truth.applied[:, 1]
    exps["pose_scale"] = truth.pose_scale
    exps["pose_rot_rad"] = truth.pose_rot
    exps["lamp_factor"] = lamp
    exps["n_spots_on_detector"] = np.isfinite(truth.positions[..., 0]).sum(axis=1)
    exps.meta = {
        "description": "truth per exposure: commanded chopper offset (header, campaign) and the "
                       "offset actually applied a_e; pose_scale s_e, pose_rot theta_e (radians)",
        "model": "f_eh = (1 + s_e) R(theta_ins + theta_e) (m_h + delta_h) + tau_ins + a_e; p_eh = G^-1(f_eh)",
        "dit_s": plan.dit_s, "ndit": plan.ndit, "readout_mode": plan.mode,
    }
    spots = Table()
    spots["exposure"] = e_idx
    spots["file"] = [exps["file"][k] for k in e_idx]
    spots["hole_id"] = mask.hole_id[h_idx]
    spots["x"] = spot_x
    spots["y"] = spot_y
    spots["on_detector"] = on_det
    spots["sensitive"] = sensitive
    spots["illumination"] = spot_illum
    spots["flux_e"] = spot_flux
    spots["flux_adu"] = spot_flux / gain
    spots["peak_e"] = peak_e
    spots["background_e"] = np.full(spot_x.size, background_e)
    spots["saturated"] = peak_e + background_e >= det.full_well_e
    spots["crb_sigma_x"] = crb[:, 0]
    spots["crb_sigma_y"] = crb[:, 1]
    spots["crb_snr"] = crb[:, 2]
    spots["crb_sigma_bgsub"] = crb[:, 3]
    spots.meta = {
        "description": "truth per exposure and hole: every rendered spot",
        "pixel_convention": "x, y: 0-based pixel positions (centre of the first pixel = 0.0)",
        "columns": (
            "on_detector: the position is in the LabTruth (more than "
            f"{TRUTH_MARGIN_PX:g} px inside the detector edge); sensitive: inside the light-sensitive "
            "area (not in the reference-pixel border); flux_e, flux_adu: total flux per DIT of the "
            "averaged frame in the infinite plane (the PSF model's normalisation, before the flat "
            "field); peak_e: expected electrons in the spot's brightest pixel; background_e: thermal "
            "background + dark per DIT; crb_*: Cramer-Rao bound (px) of a PSF fit with fitted local "
            "background on the raw frame (crb_snr = flux / sigma_flux), and the rms per axis after "
            "subtracting the background frame (crb_sigma_bgsub); NaN off the sensitive area"),
        "noise_model": (f"frames average NDIT={plan.ndit} DITs: use NoiseModel(gain={gain}*NDIT, "
                        f"read_noise={det.read_noise_e}*sqrt(NDIT))"),
    }

    # ---------------------------------------------------------------- write truth, campaign
    meta = {"creator": f"astrocal {__version__}", "simulated": "lab campaign truth field",
            "instrument": inst.name, "seed": str(seed)}
    fid = _filter_id(filt.name)
    sol = Solution(field, filter=fid, meta=meta)
    write_siaf(paths["distortion_ecsv"], sol, overwrite=overwrite)
    write_astromet(paths["distortion_fits"], sol, instrument=inst.name, overwrite=overwrite,
                   provenance=meta, precision="double")
    for name, table in (("holes", holes), ("exposures", exps), ("spots", spots)):
        atomic_write_table(table, paths[name], overwrite=overwrite, format="ascii.ecsv")

    snr = spots["crb_snr"][use]
    summary = {
        "instrument": inst.name,
        "filter": filt.name,
        "detector_shape": list(shape),
        "n_exposures": s.n_exposures,
        "readout_mode": plan.mode,
        "dit_s": plan.dit_s,
        "ndit": plan.ndit,
        "full_well_fill": plan.fill,
        "thermal_background_e_per_s_px": rad.background_e_per_s,
        "spot_e_per_s_open": rad.spot_e_per_s,
        "bb_aperture": aperture,
        "brightest_spot_e_per_dit": f_max,
        "spots_per_exposure": [int(v) for v in np.bincount(e_idx[use], minlength=s.n_exposures)],
        "snr_range": [float(np.min(snr)), float(np.max(snr))] if snr.size else [None, None],
        "snr_median": float(np.median(snr)) if snr.size else None,
        "crb_sigma_px_range": ([float(np.nanmin(crb[use, :2])), float(np.nanmax(crb[use, :2]))]
                               if snr.size else [None, None]),
    }
    info = {
        "creator": f"astrocal {__version__}",
        "seed": seed,
        "settings": s.to_dict(),
        "instrument": inst.key,
        "filter": filt.name,
        "filter_id_in_truth_files": fid,
        "wavelength_um": filt.center_um,
        "detector_shape": list(shape),
        "mask": {"name": mask.name, "short_name": mask.short_name, "source": str(mask_src),
                 "n_holes_simulated": len(mask), "holes_out_of_reach": [int(v) for v in excluded]},
        "mask_scale_mm_per_arcsec": mask_scale,
        "offset_sigma_arcsec": truth.offset_sigma,
        "reference": truth.reference,
        "insertion_rot_rad": truth.insertion_rot,
        "insertion_offset_arcsec": [float(v) for v in truth.insertion_offset],
        "chopper_frame": {"scale": float(truth.chopper_frame[0]), "rot_rad": float(truth.chopper_frame[1])},
        "truth_margin_px": TRUTH_MARGIN_PX,
        "field": {"source": field_source, "cx": field.cx.tolist(), "cy": field.cy.tolist(),
                  "domain": [float(v) for v in field.domain], "unit": field.unit,
                  "input_unit": field.input_unit},
        "exposure_plan": dataclasses.asdict(plan),
        "radiometry": dataclasses.asdict(rad),
        "detector": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in dataclasses.asdict(det).items()},
        "psf": {str(g): {k: v for k, v in p.meta.items()} for g, p in psfs.items()},
        "render_radius_px": radius,
        "illumination": {"hole_transmission_rms": s.hole_transmission_rms,
                         "lamp_factors": lamp.tolist(), "vignetting_edge": s.vignetting_edge,
                         "vignetting_scale_px": s.vignetting_scale_px,
                         "falloff_at_8_arcsec": s.illumination_falloff,
                         "centre_arcsec": list(s.illumination_centre_arcsec)},
        "dates": {"flat": t_flat.isot, "background": t_bg.isot, "first_exposure": t_exp[0].isot},
        "files": {k: ([Path(p).relative_to(out).as_posix() for p in v] if isinstance(v, list)
                      else Path(v).relative_to(out).as_posix()) for k, v in paths.items()},
        "summary": summary,
    }
    atomic_write_text(paths["truth_json"], json.dumps(info, indent=1, default=_json_default) + "\n",
                      overwrite=overwrite)
    if not same_mask:
        with atomic_path(paths["mask"], overwrite) as tmp:
            tmp.write_bytes(mask_bytes)
    toml = _campaign_toml(inst, shape, mask_scale, filt.name, paths, out, truth.commanded,
                          s.offset_sigma_mas, seed)
    atomic_write_text(paths["campaign"], toml, overwrite=overwrite)
    summary["seconds"] = time.perf_counter() - t_start
    return LabCampaign(out, paths["campaign"], tuple(paths["frames"]), paths["background"], paths["flat"],
                       paths["mask"], {k: paths[k] for k in ("distortion_ecsv", "distortion_fits", "holes",
                                                             "exposures", "spots", "truth_json")},
                       truth, plan, rad, summary)


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# =========================================================================== reading back
def load_lab_truth(directory) -> LabTruth:
    """Rebuild the :class:`~astrocal.sim.lab_truth.LabTruth` of a simulated campaign.

    ``directory`` is the campaign directory (or its ``truth/`` folder). The field comes
    from the exact Legendre coefficients in ``truth.json`` (or, if absent, from
    ``distortion_truth.ecsv``), holes from ``holes.ecsv``, poses from ``exposures.ecsv``
    and positions from the ``on_detector`` rows of ``spots.ecsv``.
    """
    d = Path(directory)
    tdir = d if (d / "truth.json").exists() else d / "truth"
    files = {k: tdir / n for k, n in (("json", "truth.json"), ("holes", "holes.ecsv"),
                                       ("exposures", "exposures.ecsv"), ("spots", "spots.ecsv"))}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"truth file not found: {path}")
    try:
        info = json.loads(files["json"].read_text())
    except json.JSONDecodeError as exc:
        raise SimulationOptionError(f"{files['json']}: not valid JSON ({exc})") from None
    tables = {}
    for key in ("holes", "exposures", "spots"):
        try:
            tables[key] = Table.read(files[key], format="ascii.ecsv")
        except Exception as exc:
            raise SimulationOptionError(f"{files[key]}: cannot read the truth table ({exc})") from None
    if "field" in info:
        f = info["field"]
        field = DistortionField(np.array(f["cx"]), np.array(f["cy"]), tuple(f["domain"]),
                                unit=f.get("unit", "arcsec"), input_unit=f.get("input_unit", "pixel"))
    else:
        from ..formats.siaf import read_siaf

        field = read_siaf(tdir / "distortion_truth.ecsv").field
    holes, exps, spots = tables["holes"], tables["exposures"], tables["spots"]
    ids = np.asarray(holes["hole_id"], dtype=np.int64)
    index = {int(h): k for k, h in enumerate(ids)}
    n_e = len(exps)
    pos = np.full((n_e, len(ids), 2), np.nan)
    rows = np.asarray(spots["on_detector"], bool)
    e = np.asarray(spots["exposure"], int)[rows]
    h = np.array([index[int(v)] for v in np.asarray(spots["hole_id"])[rows]], dtype=int)
    pos[e, h, 0] = np.asarray(spots["x"], float)[rows]
    pos[e, h, 1] = np.asarray(spots["y"], float)[rows]
    col = lambda t, *names: np.column_stack([np.asarray(t[n], float) for n in names])  # noqa: E731
    return LabTruth(
        field=field, hole_ids=ids, hole_xy=col(holes, "x_arcsec", "y_arcsec"),
        hole_errors=col(holes, "dx_arcsec", "dy_arcsec"),
        commanded=col(exps, "commanded_x_arcsec", "commanded_y_arcsec"),
        applied=col(exps, "applied_x_arcsec", "applied_y_arcsec"),
        pose_scale=np.asarray(exps["pose_scale"], float), pose_rot=np.asarray(exps["pose_rot_rad"], float),
        insertion_rot=float(info["insertion_rot_rad"]),
        insertion_offset=np.asarray(info["insertion_offset_arcsec"], float),
        chopper_frame=(float(info["chopper_frame"]["scale"]), float(info["chopper_frame"]["rot_rad"])),
        positions=pos, mask_scale=float(info["mask_scale_mm_per_arcsec"]),
        offset_sigma=float(info["offset_sigma_arcsec"]), reference=int(info.get("reference", 0)),
    )
