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
the fit); :func:`~astrocal.sim.lab_files.load_lab_truth` rebuilds its :class:`~astrocal.sim.lab_truth.LabTruth` from
the files.  The physics (each effect switchable, see :class:`~astrocal.sim.lab_settings.LabSimSettings`):

* **distortion**: the default smooth field of :func:`astrocal.sim.field.instrument_field`
  (few px at the corners) or any solution file (``distortion_file``);
* **geometry**: chopper offsets (:func:`~astrocal.sim.lab_truth.chopper_series`), their
  errors and the chopper frame's scale/rotation error, the mask insertion rotation and
  offset, per-hole manufacturing errors;
* **PSF**: monochromatic diffraction by the ELT pupil (central obscuration, spiders) at the
  filter's centre wavelength, convolved with the pinhole disk, pixel-integrated
  (:func:`astrocal.image.psf.diffraction_psf`), rendered on stamps (``render_spots``);
* **radiometry** (:func:`~astrocal.sim.radiometry.wcu_radiometry`): a black body (1000 K) through the WCU
  integrating sphere and the pinholes, and the thermal background of the warm WCU
  (288 K, emissivity 1) through the same instrument;
* **illumination**: vignetting towards the edges of the illuminated field, a smooth WCU
  illumination pattern over the mask, hole-to-hole transmission scatter, lamp drift;
* **detector** (:mod:`astrocal.sim.detector`): flat field, dark current, dead/hot pixels,
  photon noise, cosmic rays, saturation, read noise, reference-pixel border, ADU;
* **exposure** (:func:`~astrocal.sim.radiometry.plan_exposure`): readout mode, DIT and NDIT chosen from the
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
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from astropy.table import Table
from astropy.time import Time, TimeDelta

from .. import __version__
from .._moved import moved_module
from ..atomic import atomic_path, atomic_write_table, atomic_write_text, check_writable
from ..errors import SimulationOptionError
from ..field import DistortionField, affine_part
from ..formats.astromet import write_astromet
from ..formats.siaf import write_siaf
from ..image.centroid import NoiseModel, cramer_rao_bound, flux_for_snr
from ..image.headers import make_raw_header
from ..image.psf import PixelPSF, diffraction_psf, pinhole_diameter_mas, render_spots
from ..instruments import Instrument, get_instrument
from ..lab.mask import MaskError, UnknownMaskError, load_mask, mask_path
from ..solution import Solution
from . import detector as _det
from .field import central_window, field_from_file, instrument_field
from .frames import run_frame_tasks, write_fits
from .lab_files import campaign_paths, lab_campaign_toml
from .lab_settings import DETECTOR_EFFECTS, LabSimSettings
from .lab_truth import LabTruth, chopper_series, draw_lab_truth
from .radiometry import ExposurePlan, Radiometry, plan_exposure, wcu_radiometry

__all__ = ["TRUTH_MARGIN_PX", "LabCampaign", "lab_psf", "illumination_factor", "simulate_lab"]

log = logging.getLogger(__name__)

#: positions closer than this to the detector edge are "not on the detector" (NaN) in the
#: truth, as in :func:`draw_lab_truth`'s default; their light is still rendered
TRUTH_MARGIN_PX = 8.0


# =========================================================================== PSF, illumination
def lab_psf(instrument: str | Instrument, filter_name: str | None = None, hole_diameter_um: float = 25.0,
            mask_scale_mm_per_arcsec: float | None = None, pinhole: bool = True, spiders: bool = True,
            pixel_scale_mas: float | None = None) -> PixelPSF:
    """Pixel-integrated diffraction PSF of a pinhole at the filter's centre wavelength.

    Parameters
    ----------
    instrument : str or Instrument
        The instrument (or its preset name).
    filter_name : str, optional
        The filter (default: the instrument's default).
    hole_diameter_um : float
        Pinhole diameter, um.
    mask_scale_mm_per_arcsec : float, optional
        Mask scale (default: the instrument's).
    pinhole : bool
        Convolve with the pinhole disk (else a point source).
    spiders : bool
        Spiders in the ELT pupil.
    pixel_scale_mas : float, optional
        Pixel scale (default: the instrument's), mas.

    Returns
    -------
    PixelPSF
        The PSF (:func:`astrocal.image.psf.diffraction_psf`).
    """
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


def illumination_factor(x: ArrayLike, y: ArrayLike, shape: tuple[int, int], border: tuple = (0, 0, 0, 0),
                        edge: float = 0.03, scale_px: float = 200.0) -> np.ndarray:
    """Relative illumination at detector positions.

    1 in the field, rolling off towards the edge of the illuminated (light-sensitive) area
    to ``edge`` with a 1/e width ``scale_px``: ``1 - (1 - edge) exp(-d / scale_px)``, ``d``
    the distance to the edge.

    Parameters
    ----------
    x, y : array_like
        Detector positions, 0-based pixels.
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    border : tuple of int
        Reference-pixel border ``(left, right, bottom, top)``, pixels (not light-sensitive).
    edge : float
        Relative illumination at the edge.
    scale_px : float
        1/e width of the roll-off, pixels.

    Returns
    -------
    numpy.ndarray
        The relative illumination.
    """
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


def _truth_field(s, inst, shape, filter_name):
    if s.distortion_file:
        field = field_from_file(s.distortion_file, filter_name, shape)
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


@dataclass(frozen=True)
class _Inputs:
    """Step 1: what the campaign is made of (instrument, filter, detector, mask, field, files)."""

    out: Path
    inst: object
    filt: object
    shape: tuple
    mask: object
    mask_src: Path
    mask_scale: float
    field: DistortionField
    field_source: str
    paths: dict
    same_mask: bool
    mask_bytes: bytes


@dataclass(frozen=True)
class _Optics:
    """Step 2: the PSF of every hole diameter and the photon budget."""

    diam: np.ndarray
    d_ref: float
    groups: np.ndarray
    psfs: dict
    psf_ref: object
    radius: int
    rad: Radiometry


@dataclass(frozen=True)
class _Exposure:
    """Step 3: the exposure plan, the black-body aperture and the brightest spot's flux."""

    plan: ExposurePlan
    bg_e: float
    aperture: float
    f_max: float
    peak_frac: float


@dataclass(frozen=True)
class _Geometry:
    """Step 4: the holes that reach the detector and the truth drawn for them."""

    offsets: np.ndarray
    excluded: np.ndarray
    mask: object
    diam: np.ndarray
    groups: np.ndarray
    hole_xy: np.ndarray
    wide: LabTruth
    truth: LabTruth


@dataclass(frozen=True)
class _Spots:
    """Step 7: every rendered spot (exposure, hole, position, illumination, flux)."""

    e_idx: np.ndarray
    h_idx: np.ndarray
    x: np.ndarray
    y: np.ndarray
    illum: np.ndarray
    flux: np.ndarray


def _campaign_inputs(out, s, overwrite):
    """Step 1: instrument, filter, detector, mask, field and files (every file checked writable)."""
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
    return _Inputs(out, inst, filt, shape, mask, mask_src, mask_scale, field, field_source, paths, same_mask,
                   mask_bytes)


def _optics(s, inp):
    """Step 2: the PSF of every hole diameter and the photon budget of the median hole."""
    inst, filt, mask_scale = inp.inst, inp.filt, inp.mask_scale
    diam = inp.mask.diameter_um
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
    return _Optics(diam, d_ref, groups, psfs, psf_ref, radius, rad)


def _exposure(s, inst, optics):
    """Step 3: the exposure plan and the black-body aperture, iterated until the brightest peak
    they give is stable."""
    rad, psf_ref = optics.rad, optics.psf_ref
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
    return _Exposure(plan, bg_e, aperture, f_max, peak_frac)


def _geometry(s, inp, optics, ss_truth):
    """Step 4: the holes that can reach the detector and the truth drawn for them (``wide``: up
    to the render radius outside the detector; ``truth``: with the usual margin)."""
    field = inp.field
    offsets = chopper_series(s.n_exposures, s.max_offset_arcsec) if s.offsets is None \
        else np.asarray(s.offsets, float)
    reach = _holes_in_reach(field, inp.mask.xy_arcsec(inp.mask_scale), offsets, s, optics.radius)
    if not np.any(reach):
        raise SimulationOptionError(f"{inp.mask_src}: no hole of the mask can reach the detector")
    excluded = inp.mask.hole_id[~reach]
    mask = inp.mask.select(reach)
    diam = mask.diameter_um
    groups = np.round(diam, 1)
    hole_xy = mask.xy_arcsec(inp.mask_scale)
    wide = draw_lab_truth(
        field, mask.hole_id, hole_xy, inp.mask_scale, ss_truth, n_exposures=s.n_exposures,
        offsets=offsets, hole_error_um=s.hole_error_um if s.hole_errors else 0.0,
        offset_sigma_mas=s.offset_sigma_mas if s.offset_errors else 0.0,
        insertion_rot_deg=s.insertion_rot_deg if s.pose_errors else 0.0,
        insertion_offset_arcsec=s.insertion_offset_arcsec if s.pose_errors else 0.0,
        chopper_scale=s.chopper_scale if s.offset_errors else 0.0,
        chopper_rot_deg=s.chopper_rot_deg if s.offset_errors else 0.0,
        pose_jitter=s.pose_jitter if s.pose_errors else 0.0, margin_px=-float(optics.radius))
    truth = dataclasses.replace(
        wide, positions=_positions_with_margin(wide.positions, field.domain, TRUTH_MARGIN_PX),
        offset_sigma=s.offset_sigma_mas / 1e3)
    return _Geometry(offsets, excluded, mask, diam, groups, hole_xy, wide, truth)


def _illumination(s, geo, d_ref, ss_holes, ss_lamp):
    """The relative flux of every hole and the lamp factor of every exposure."""
    rng_h = np.random.default_rng(ss_holes)
    rng_l = np.random.default_rng(ss_lamp)
    t_hole = np.exp(rng_h.normal(0.0, s.hole_transmission_rms, len(geo.mask)))
    lamp = 1.0 + rng_l.normal(0.0, s.lamp_stability, s.n_exposures)
    area = (geo.diam / d_ref) ** 2
    if s.vignetting:
        hole_factor = area * t_hole * _mask_illumination(geo.hole_xy, s.illumination_falloff,
                                                         s.illumination_centre_arcsec)
    else:
        hole_factor = area.copy()
        lamp = np.ones(s.n_exposures)
    return np.asarray(hole_factor, float), lamp


def _timing(s, plan):
    """Dates of the flat, the background and every exposure."""
    t0 = Time(s.date_obs, scale="utc")
    step = plan.exptime_s + s.overhead_s
    t_flat = t0 - TimeDelta(3600.0, format="sec")
    t_bg = t0
    t_exp = [t0 + TimeDelta((k + 1) * step, format="sec") for k in range(s.n_exposures)]
    return t_flat, t_bg, t_exp


def _spots(s, inp, geo, det, hole_factor, lamp, f_max):
    """Step 7: every rendered spot, its illumination and its flux per DIT."""
    wide = geo.wide
    e_idx, h_idx = np.nonzero(np.isfinite(wide.positions[..., 0]))
    spot_x = wide.positions[e_idx, h_idx, 0]
    spot_y = wide.positions[e_idx, h_idx, 1]
    vign = illumination_factor(spot_x, spot_y, inp.shape, det.border_px, s.vignetting_edge,
                               s.vignetting_scale_px) if s.vignetting else np.ones(spot_x.size)
    spot_illum = hole_factor[h_idx] * vign * lamp[e_idx]
    return _Spots(e_idx, h_idx, spot_x, spot_y, spot_illum, f_max * spot_illum)


def _write_frames(s, inp, optics, xp, geo, det, spots, times, seeds, overwrite, threads):
    """The grid frames, the background and the flat, on ``threads`` threads."""
    inst, filt, shape, paths, mask = inp.inst, inp.filt, inp.shape, inp.paths, geo.mask
    plan, psfs, radius, groups = xp.plan, optics.psfs, optics.radius, geo.groups
    t_flat, t_bg, t_exp = times
    ss_bg, ss_flat, ss_frame = seeds
    e_idx, h_idx, spot_x, spot_y, spot_flux = spots.e_idx, spots.h_idx, spots.x, spots.y, spots.flux
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
    thermal_e = optics.rad.background_e_per_s * plan.dit_s if s.thermal else 0.0
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
            mask=mask, chopper_offset=geo.offsets[k], detector_mode=plan.mode, dpr_catg="CALIB",
            dpr_type="DISTORTION", lamp="bb", bb_temp=s.bb_temp_k,
            extra={**common_extra,
                   "INS.OPTI19.POSNAME": (round(float(xp.aperture), 6), "BB aperture (open fraction)"),
                   "HIERARCH ASTROCAL SIM EXPNO": (k, "exposure index in the campaign")})
        write_fits(paths["frames"][k], frame, hdr, overwrite)
        log.debug("wrote %s", paths["frames"][k])

    def background_frame():
        bg = _det.background_frame(np.float32(thermal_e), det, np.random.default_rng(ss_bg),
                                   exptime=plan.dit_s, ndit=plan.ndit, **switches)
        hdr = make_raw_header(inst, date_obs=t_bg, dit=plan.dit_s, ndit=plan.ndit,
                              filter_name=filt.name, mask=mask, chopper_offset=geo.offsets[0],
                              detector_mode=plan.mode, dpr_catg="CALIB", dpr_type="DARK,WCUOFF",
                              lamp="off", bb_temp=s.bb_temp_k,
                              extra={**common_extra, "INS.OPTI19.POSNAME": (0.0, "BB shutter closed")})
        write_fits(paths["background"], bg, hdr, overwrite)

    flat_level = 0.5 * det.full_well_e

    def flat_frame():
        fl = _det.flat_frame(det, np.random.default_rng(ss_flat), level_e=flat_level,
                             exptime=plan.dit_s, ndit=plan.ndit, **switches)
        hdr = make_raw_header(inst, date_obs=t_flat, dit=plan.dit_s, ndit=plan.ndit,
                              filter_name=filt.name, mask="open", detector_mode=plan.mode,
                              dpr_catg="CALIB", dpr_type="FLAT,LAMP", lamp="bb", bb_temp=s.bb_temp_k,
                              extra={**common_extra,
                                     "HIERARCH ASTROCAL SIM FLATLEV": (flat_level, "[e] mean level per DIT")})
        write_fits(paths["flat"], fl, hdr, overwrite)

    # the detector's fixed patterns are cached: build them once before the threads start
    if s.flat:
        _det.flat_field(det)
    if s.bad_pixels:
        _det.bad_pixel_maps(det)
    run_frame_tasks([lambda k=k: grid_frame(k) for k in range(s.n_exposures)] + [background_frame, flat_frame],
                    threads)


def _truth_tables(s, inp, optics, xp, geo, det, spots, hole_factor, lamp, t_exp):
    """The truth tables ``holes``, ``exposures`` and ``spots`` (with the Cramer-Rao bound of
    every spot); returns ``(holes, exposures, spots, crb, use)``, ``use`` the spots on the
    sensitive area of the detector."""
    out, shape, paths, mask_scale = inp.out, inp.shape, inp.paths, inp.mask_scale
    truth, mask, diam, excluded, groups = geo.truth, geo.mask, geo.diam, geo.excluded, geo.groups
    e_idx, h_idx, spot_x, spot_y, spot_flux, spot_illum = (spots.e_idx, spots.h_idx, spots.x, spots.y,
                                                            spots.flux, spots.illum)
    plan, bg_e, peak_frac, psfs = xp.plan, xp.bg_e, xp.peak_frac, optics.psfs
    gain = det.gain_e_per_adu
    background_e = bg_e if s.thermal else 0.0
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
    spot_table = Table()
    spot_table["exposure"] = e_idx
    spot_table["file"] = [exps["file"][k] for k in e_idx]
    spot_table["hole_id"] = mask.hole_id[h_idx]
    spot_table["x"] = spot_x
    spot_table["y"] = spot_y
    spot_table["on_detector"] = on_det
    spot_table["sensitive"] = sensitive
    spot_table["illumination"] = spot_illum
    spot_table["flux_e"] = spot_flux
    spot_table["flux_adu"] = spot_flux / gain
    spot_table["peak_e"] = peak_e
    spot_table["background_e"] = np.full(spot_x.size, background_e)
    spot_table["saturated"] = peak_e + background_e >= det.full_well_e
    spot_table["crb_sigma_x"] = crb[:, 0]
    spot_table["crb_sigma_y"] = crb[:, 1]
    spot_table["crb_snr"] = crb[:, 2]
    spot_table["crb_sigma_bgsub"] = crb[:, 3]
    spot_table.meta = {
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

    return holes, exps, spot_table, crb, use


def _write_truth_and_campaign(s, seed, inp, optics, xp, geo, det, tables, crb, use, e_idx, lamp, times,
                              overwrite):
    """The truth files, the mask copy and the campaign file; returns the run's summary."""
    out, inst, filt, shape, paths, field = inp.out, inp.inst, inp.filt, inp.shape, inp.paths, inp.field
    mask_scale, mask_src, field_source = inp.mask_scale, inp.mask_src, inp.field_source
    truth, mask, excluded = geo.truth, geo.mask, geo.excluded
    plan, rad, aperture, f_max = xp.plan, optics.rad, xp.aperture, xp.f_max
    psfs, radius = optics.psfs, optics.radius
    holes, exps, spots = tables
    t_flat, t_bg, t_exp = times
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
    if not inp.same_mask:
        with atomic_path(paths["mask"], overwrite) as tmp:
            tmp.write_bytes(inp.mask_bytes)
    toml = lab_campaign_toml(inst, shape, mask_scale, filt.name, paths, out, truth.commanded,
                             s.offset_sigma_mas, seed)
    atomic_write_text(paths["campaign"], toml, overwrite=overwrite)
    return summary


def simulate_lab(out: str | os.PathLike, settings: LabSimSettings | None = None, *, overwrite: bool = False,
                 threads: int = 2, **changes: Any) -> LabCampaign:
    """Simulate a lab campaign into directory ``out``.

    Nothing that exists is overwritten unless ``overwrite`` (checked for every file before
    anything is written); every file is written atomically.

    The steps: (1) the inputs (instrument, mask, field, files, checked writable); (2) the
    PSFs and the photon budget; (3) the exposure plan and the brightest spot's flux; (4) the
    geometry: the holes in reach and the truth drawn for them; (5) the illumination of the
    holes and the lamp; (6) the dates; (7) the spots and the frames; (8) the truth tables;
    (9) the truth files and the campaign file.

    Parameters
    ----------
    out : str or os.PathLike
        The campaign directory.
    settings : LabSimSettings, optional
        The settings (default: all defaults).
    overwrite : bool
        Replace existing files.
    threads : int
        Frames made at once (the files do not depend on it).
    **changes
        Fields of ``settings`` to replace (``simulate_lab(out, seed=3, n_exposures=4)``).

    Returns
    -------
    LabCampaign
        What was written and the figures of the run.
    """
    t_start = time.perf_counter()
    s = (settings or LabSimSettings()).replace(**changes) if changes else (settings or LabSimSettings())
    inp = _campaign_inputs(Path(out), s, overwrite)
    seed = int(np.random.SeedSequence().entropy) if s.seed is None else int(s.seed)
    ss = np.random.SeedSequence(seed)
    ss_truth, ss_holes, ss_lamp, ss_bg, ss_flat, ss_frames = ss.spawn(6)
    ss_frame = ss_frames.spawn(s.n_exposures)

    optics = _optics(s, inp)
    xp = _exposure(s, inp.inst, optics)
    plan = xp.plan
    det = _det.DetectorModel.from_instrument(inp.inst, plan.mode, shape=inp.shape, seed=s.detector_seed)
    log.info("%s %s: %s, DIT %g s x NDIT %d; thermal background %.3g e/s/px; black-body "
             "aperture %.3g; brightest spot %.3g e per DIT", inp.inst.name, inp.filt.name, plan.mode,
             plan.dit_s, plan.ndit, optics.rad.background_e_per_s, xp.aperture, xp.f_max)
    geo = _geometry(s, inp, optics, ss_truth)
    hole_factor, lamp = _illumination(s, geo, optics.d_ref, ss_holes, ss_lamp)
    times = _timing(s, plan)
    spots = _spots(s, inp, geo, det, hole_factor, lamp, xp.f_max)
    _write_frames(s, inp, optics, xp, geo, det, spots, times, (ss_bg, ss_flat, ss_frame), overwrite, threads)
    holes, exps, spot_table, crb, use = _truth_tables(s, inp, optics, xp, geo, det, spots, hole_factor, lamp,
                                                      times[2])
    summary = _write_truth_and_campaign(s, seed, inp, optics, xp, geo, det, (holes, exps, spot_table), crb, use,
                                        spots.e_idx, lamp, times, overwrite)
    summary["seconds"] = time.perf_counter() - t_start
    paths = inp.paths
    return LabCampaign(inp.out, paths["campaign"], tuple(paths["frames"]), paths["background"], paths["flat"],
                       paths["mask"], {k: paths[k] for k in ("distortion_ecsv", "distortion_fits", "holes",
                                                             "exposures", "spots", "truth_json")},
                       geo.truth, plan, optics.rad, summary)


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




def _all_paths(paths):
    for v in paths.values():
        if isinstance(v, list):
            yield from v
        else:
            yield v


#: the names that moved to the modules of the settings, the radiometry, the frames, the
#: fields and the files (issue 20) keep working from here for one release, with a
#: DeprecationWarning
__getattr__ = moved_module(__name__, ["astrocal.sim.radiometry", "astrocal.sim.lab_settings",
                                      "astrocal.sim.lab_files", "astrocal.sim.frames", "astrocal.sim.field"])
