"""Simulated LMS calibration campaigns: ``astrocal simulate lms``.

:func:`simulate_lms` writes the raw frames of the METIS LM integral-field spectrograph (LMS)
that the distortion and wavelength templates take, with their known truth::

    DIR/campaign.toml                     the campaign, ``[lms]`` layout (docs/campaign.md)
    DIR/mask.ecsv                         copy of the WCU mask table
    DIR/raw/lms_laser_S_NN.fits           setting S, chopper offset NN: grid mask lit by the lasers
    DIR/raw/lms_grid_S_NN.fits            grid mask lit by the black body (continuum traces)
    DIR/raw/lms_slices_S.fits             mask open, black body: every slice lit (slice edges)
    DIR/raw/lms_background_S.fits         black-body shutter closed, lasers off
    DIR/truth/truth.json, deviations.ecsv the as-built geometry (:func:`~astrocal.sim.lms_truth.load_lms_truth`)
    DIR/truth/spots.ecsv                  every laser-spot image: hole, line, slice, position, flux
    DIR/truth/exposures.ecsv              every frame: kind, setting, commanded and true offset, lasers
    DIR/truth/response.ecsv               the per-slice relative spectral response (switch ``rsrf``)
    DIR/truth/holes.ecsv                  per mask hole: nominal position, manufacturing error (switch ``hole_errors``)

A frame is a FITS file with a primary header (ESO DPR/INS/SEQ/DET3 keywords) and four image
extensions ``DET1.DATA`` .. ``DET4.DATA`` (2048 x 2048 float32 ADU, the average of NDIT DITs,
``ESO DET3 CHIP ...`` keywords). The geometry is :func:`~astrocal.sim.lms_truth.draw_lms_geometry`;
the images are :mod:`astrocal.sim.lms_render`. Every effect is switchable (:class:`LmsSimSettings`).

Units: arcsec (field and slicer), um (wavelength), px (0-based pixel centres), electrons, ADU,
seconds, kelvin.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time, TimeDelta

from .. import __version__
from ..atomic import atomic_path, atomic_write_table, atomic_write_text, check_writable
from ..image.headers import set_card, eso_key
from ..errors import SimulationOptionError
from ..lab.mask import Mask, load_mask, mask_path
from ..image.psf import pinhole_diameter_mas
from ..lms import FieldOrientation, Hyperparameters
from ..lms.mosaic import REFERENCE_BORDERS, load_mosaic
from ..lms.traces import SLICE_WIDTH_ARCSEC
from . import lms_render as R
from .radiometry import ELT_DIAMETER_M, PUPIL_TRANSMISSION, WCU, photon_radiance, sphere_gain_factor
from .lms_response import SlitProfile, draw_response
from .lms_truth import (LASERS, QCL_LINES_UM, chopper_offsets, draw_lms_geometry, holes_in_field, laser_lines,
                        write_lms_truth)

__all__ = ["LMS_DETECTOR", "LMS_SWITCHES", "LmsSimSettings", "LmsCampaign", "simulate_lms", "lms_radiometry"]

LMS_DETECTOR = {"gain_e_per_adu": 2.0, "read_noise_e": 70.0, "dark_e_per_s": 0.1, "full_well_e": 1e5,
                "min_dit_s": 1.3, "chip_id": "metis_lms_detector_array"}
"""The LMS H2RG chips (irdb ``METIS_DET_IFU.yaml`` @ f0a5f306; same for all four)."""

LMS_SWITCHES = ("deviations", "offset_errors", "neighbours", "laser1", "qcl", "laser3", "continuum",
                "background", "thermal", "dark", "noise", "reference_pixels", "saturation", "rsrf", "slit_loss",
                "hole_errors")
"""Effects of :class:`LmsSimSettings`, each on by default."""

_MAS2_TO_SR = (math.pi / 180 / 3600e3) ** 2


@dataclass(frozen=True)
class LmsSimSettings:
    """Everything that defines a simulated LMS campaign (with ``seed``, bit-identical files).

    Parameters
    ----------
    settings_um : tuple of float
        Central wavelengths [um] of the echelle settings (default 3.40 and 4.73: the 3.39-um laser
        and the QCL lines; 5.27 holds the 5.26-um laser).
    n_offsets : int
        Chopper offsets per setting (:func:`~astrocal.sim.lms_truth.chopper_offsets`), unless
        ``offsets`` ((E, 2) arcsec, field frame: along, across the slices) are given.
    max_along_arcsec, max_across_slices :
        Range of the default offsets.
    offset_sigma_mas : float
        Accuracy of the chopper offsets: the true offsets differ by N(0, sigma) per axis.
    grid_all_offsets : bool
        Black-body grid frames at every offset (default: at the first offset only).
    qcl_lines_um : tuple
        Lines of the QCL [um] (default 4.68..4.78 in 0.01 steps).
    laser_rate_e_per_s : dict
        Rate of one pinhole at one line of each laser before the slicer cut [e/s] (assumed; no
        source gives it).
    dit_s, ndit :
        Exposure (frames are the average of NDIT DITs).
    bb_temp_k, wcu_temp_k, efficiency :
        Black body, WCU ambient (thermal emission of the mask, emissivity 1), optics x QE (assumed).
    resolving_power : float
        Of a slit-filling source; sets how the slice width maps onto the dispersion direction.
    edge_sigma_px : float
        Blur of the slice edges in the lit-slice frames.
    slice_waves_px : float
        Amplitude [px] of a smooth per-slice term of the as-built instrument that the model's
        per-slice polynomials do not hold (:class:`~astrocal.lms.SliceWaves`: a wave along the
        dispersion in col, one along the slice in row); 0 (default) = none. Not a draw from the
        fit's prior; written into ``truth/truth.json`` (``slice_waves``).
    degree, reference_detector, hyper, truth :
        The deviation model (:class:`~astrocal.lms.DeviationLayout`, prior widths
        :class:`~astrocal.lms.Hyperparameters`, ``"forward"``/``"inverse"``).
    orientation : FieldOrientation
        Mask relative to the slicer.
    slit_scan : tuple of float
        Extra laser exposures (at no offset along the slices) with the mask moved across the slices
        by these fractions of a slice width (each in (-0.5, 0.5), e.g. ``(-0.4, -0.2, 0.2, 0.4)``): the
        holes then sit off their slice centres, which measures the slit loss
        (:mod:`astrocal.lms.response`). Default none.
    hole_error_um : float
        rms per axis of the mask holes' manufacturing errors [um] (switch ``hole_errors``; default
        0.5, the imager simulator's), drawn per hole of the mask table from the campaign's seed
        (a stream of its own), unless ``hole_errors_from`` is given.
    hole_errors_from : str, optional
        A table of the errors to use instead (ECSV with ``hole_id``, ``dx_um``, ``dy_um`` and,
        to check it is the same mask, ``x_mm``, ``y_mm``): ``truth/holes.ecsv`` of ``astrocal
        simulate lab`` of the same mask, so that both simulations share one realisation.
    slit_edge_loss, slit_edge_power :
        The slit profile ``t(u) = 1 - edge_loss |2u|^power`` across a slice (switch ``slit_loss``;
        :class:`~astrocal.sim.lms_response.SlitProfile`).
    rsrf_sigma_gain, rsrf_sigma_slope, rsrf_sigma_curv, blaze_kappa :
        The per-slice relative spectral response drawn per campaign (switch ``rsrf``;
        :func:`~astrocal.sim.lms_response.draw_response`).
    Switches :
        :data:`LMS_SWITCHES`: ``deviations`` (off: the optical model), ``offset_errors``,
        ``neighbours`` (PSF light cut into the adjacent slices), ``laser1``/``qcl``/``laser3``,
        ``continuum`` (black-body grid and lit-slice frames), ``background`` (the background
        frame), ``thermal`` (the WCU's thermal emission in every frame), ``dark``, ``noise``
        (photon and read noise), ``reference_pixels`` (unlit borders), ``saturation`` (full well),
        ``rsrf`` (the per-slice relative spectral response and the echelle blaze, in every frame),
        ``slit_loss`` (the transmission profile across each slice; the PSF's cut by the slice is
        always there), ``hole_errors`` (the mask holes' manufacturing errors; off: the table's
        positions are exact).
    """

    seed: Optional[int] = None
    settings_um: tuple = (3.40, 4.73)
    n_offsets: int = 3
    offsets: Optional[tuple] = None
    max_along_arcsec: float = 0.08
    max_across_slices: int = 3
    offset_sigma_mas: float = 1.0
    grid_all_offsets: bool = False
    mask: str = "metis_wcu_fp_mask5"
    qcl_lines_um: tuple = QCL_LINES_UM
    laser_rate_e_per_s: tuple = (("laser1", 5e4), ("qcl", 5e4), ("laser3", 5e4))
    dit_s: float = 5.0
    ndit: int = 1
    bb_temp_k: float = WCU["bb_temp_k"]
    wcu_temp_k: float = WCU["temperature_k"]
    efficiency: float = 0.1
    resolving_power: float = 1e5
    edge_sigma_px: float = 0.5
    slice_waves_px: float = 0.0
    degree: int = 2
    reference_detector: Optional[int] = 1
    hyper: Hyperparameters = Hyperparameters()
    truth: str = "forward"
    orientation: FieldOrientation = FieldOrientation()
    slit_scan: tuple = ()
    slit_edge_loss: float = 0.2
    slit_edge_power: float = 4.0
    rsrf_sigma_gain: float = 0.05
    rsrf_sigma_slope: float = 0.05
    rsrf_sigma_curv: float = 0.03
    blaze_kappa: float = 0.8
    date_obs: str = "2025-03-18T13:00:00"
    overhead_s: float = 20.0
    deviations: bool = True
    offset_errors: bool = True
    neighbours: bool = True
    laser1: bool = True
    qcl: bool = True
    laser3: bool = True
    continuum: bool = True
    background: bool = True
    thermal: bool = True
    dark: bool = True
    noise: bool = True
    reference_pixels: bool = True
    saturation: bool = True
    rsrf: bool = True
    slit_loss: bool = True
    hole_error_um: float = 0.5
    hole_errors_from: Optional[str] = None
    hole_errors: bool = True

    def __post_init__(self):
        for name in LMS_SWITCHES + ("grid_all_offsets",):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"switch {name} must be True or False, got {getattr(self, name)!r}")
        lam = tuple(float(v) for v in np.atleast_1d(self.settings_um))
        if not lam or len(set(lam)) != len(lam):
            raise ValueError(f"settings_um: one or more different central wavelengths needed, got {self.settings_um}")
        object.__setattr__(self, "settings_um", lam)
        object.__setattr__(self, "laser_rate_e_per_s", tuple(dict(self.laser_rate_e_per_s).items()))
        for name, rate in self.laser_rate_e_per_s:
            if name not in LASERS or not rate >= 0:
                raise ValueError(f"laser_rate_e_per_s: {name}: must be a laser ({sorted(LASERS)}) with a rate >= 0")
        if self.offsets is not None:
            off = np.asarray(self.offsets, float)
            if off.ndim != 2 or off.shape[1] != 2 or len(off) < 1 or not np.all(np.isfinite(off)):
                raise ValueError(f"offsets must be (E, 2) finite arcsec, got shape {off.shape}")
            object.__setattr__(self, "offsets", tuple(map(tuple, off.tolist())))
            object.__setattr__(self, "n_offsets", len(off))
        if int(self.n_offsets) != self.n_offsets or self.n_offsets < 1:
            raise ValueError(f"n_offsets must be an integer >= 1, got {self.n_offsets}")
        if not (np.isfinite(self.slice_waves_px) and self.slice_waves_px >= 0):
            raise ValueError(f"slice_waves_px must be a finite amplitude >= 0 px, got {self.slice_waves_px}")
        object.__setattr__(self, "qcl_lines_um", tuple(float(v) for v in self.qcl_lines_um))
        scan = tuple(float(v) for v in np.atleast_1d(np.asarray(self.slit_scan, float)))
        if any(not (np.isfinite(v) and abs(v) < 0.5) for v in scan) or len(set(scan)) != len(scan):
            raise ValueError(f"slit_scan: distinct fractions of a slice width in (-0.5, 0.5) needed, "
                             f"got {self.slit_scan}")
        object.__setattr__(self, "slit_scan", scan)
        SlitProfile(self.slit_edge_loss, self.slit_edge_power)
        for name in ("rsrf_sigma_gain", "rsrf_sigma_slope", "rsrf_sigma_curv", "blaze_kappa"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.hole_errors_from is not None:
            object.__setattr__(self, "hole_errors_from", str(self.hole_errors_from))
        for name in ("max_along_arcsec", "offset_sigma_mas", "edge_sigma_px", "overhead_s", "wcu_temp_k",
                     "hole_error_um"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        for name in ("dit_s", "bb_temp_k", "efficiency", "resolving_power"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if self.dit_s < LMS_DETECTOR["min_dit_s"]:
            raise ValueError(f"dit_s must be >= the minimum DIT {LMS_DETECTOR['min_dit_s']} s, got {self.dit_s}")
        if int(self.ndit) != self.ndit or self.ndit < 1:
            raise ValueError(f"ndit must be an integer >= 1, got {self.ndit}")
        if self.truth not in ("forward", "inverse"):
            raise ValueError(f"truth must be 'forward' or 'inverse', got {self.truth!r}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")
        Time(self.date_obs, scale="utc")

    def replace(self, **changes: Any) -> LmsSimSettings:
        """The same settings with some fields changed.

        Parameters
        ----------
        **changes
            Field name -> new value.

        Returns
        -------
        LmsSimSettings
            The new settings (validated).
        """
        return dataclasses.replace(self, **changes)

    def commanded_offsets(self) -> np.ndarray:
        """The commanded chopper offsets.

        Returns
        -------
        numpy.ndarray
            (n, 2) offsets (along, across the slices), arcsec: ``offsets``, or
            :func:`~astrocal.sim.lms_truth.chopper_offsets` of ``n_offsets``,
            ``max_along_arcsec``, ``max_across_slices``.
        """
        if self.offsets is not None:
            return np.asarray(self.offsets, float)
        return chopper_offsets(self.n_offsets, self.max_along_arcsec, self.max_across_slices)

    def scan_offsets(self) -> np.ndarray:
        """The slit-scan offsets.

        Returns
        -------
        numpy.ndarray
            (n, 2) arcsec: 0 along, ``f W`` across for ``f`` in ``slit_scan``.
        """
        f = np.asarray(self.slit_scan, float)
        return np.stack([np.zeros(f.size), f * SLICE_WIDTH_ARCSEC], axis=1)

    def slit_profile(self) -> SlitProfile | None:
        """The transmission across the slices.

        Returns
        -------
        SlitProfile or None
            The :class:`~astrocal.sim.lms_response.SlitProfile` (None with ``slit_loss`` off).
        """
        return SlitProfile(self.slit_edge_loss, self.slit_edge_power) if self.slit_loss else None

    def lasers_on(self) -> tuple:
        """The lasers switched on.

        Returns
        -------
        tuple of str
            Among ``"laser1"``, ``"qcl"``, ``"laser3"``.
        """
        return tuple(n for n in ("laser1", "qcl", "laser3") if getattr(self, n))

    def to_dict(self) -> dict:
        """The settings as plain data, as written to ``truth.json``.

        Returns
        -------
        dict
            Field name -> value (tuples as lists, other objects as strings).
        """
        d = dataclasses.asdict(self)
        d["laser_rate_e_per_s"] = dict(self.laser_rate_e_per_s)
        return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def lms_radiometry(s: LmsSimSettings) -> dict:
    """Rate functions of the WCU sources [e/s per um, per arcsec^2 where extended].

    ``bb_pinhole(lam)``: one 25-um pinhole lit by the black body through the integrating sphere
    (emissivity 0.98, sphere gain :func:`astrocal.sim.radiometry.sphere_gain_factor`), [e s^-1 um^-1];
    ``bb_open(lam)``: the sphere's exit with the mask open [e s^-1 um^-1 arcsec^-2];
    ``thermal(lam)``: the warm mask (emissivity 1) [e s^-1 um^-1 arcsec^-2]. All through the ELT
    aperture times the LMS cold-pupil transmission and ``efficiency``.

    Parameters
    ----------
    s : LmsSimSettings
        The settings (``bb_temp_k``, ``wcu_temp_k``, ``efficiency``).

    Returns
    -------
    dict
        ``bb_pinhole``, ``bb_open``, ``thermal``: functions of the wavelength (um).
    """
    area = math.pi / 4 * ELT_DIAMETER_M**2 * PUPIL_TRANSMISSION["metis-lms"] * s.efficiency
    arcsec2 = 1e6 * _MAS2_TO_SR
    gain = sphere_gain_factor() * WCU["emiss_bb"]
    pin_mas = pinhole_diameter_mas(25.0, 3.319)
    omega_pin = math.pi / 4 * pin_mas**2 * _MAS2_TO_SR
    return {
        "bb_pinhole": lambda lam: photon_radiance(lam, s.bb_temp_k) * gain * omega_pin * area,
        "bb_open": lambda lam: photon_radiance(lam, s.bb_temp_k) * gain * arcsec2 * area,
        "thermal": lambda lam: photon_radiance(lam, s.wcu_temp_k) * arcsec2 * area,
    }


@dataclass(frozen=True)
class LmsCampaign:
    """What :func:`simulate_lms` wrote: paths, the truth geometry and a summary; ``response``
    (:class:`~astrocal.sim.lms_response.LmsResponseTruth`, None with ``rsrf`` off) and
    ``slit_profile`` (:class:`~astrocal.sim.lms_response.SlitProfile`, None with ``slit_loss`` off)."""

    directory: Path
    campaign: Path
    frames: tuple
    truth_files: dict
    geometry: object
    spots: Table
    exposures: Table
    summary: dict
    response: object = None
    slit_profile: object = None


def hole_errors_for(s: LmsSimSettings, mask: Mask, rng: np.random.Generator) -> np.ndarray:
    """The true manufacturing errors of the mask's holes.

    Zeros with ``hole_errors`` off; read from ``hole_errors_from`` (matched by ``hole_id``,
    the positions checked against the mask to 1 nm); else ``N(0, hole_error_um**2)`` from
    ``rng``.

    Parameters
    ----------
    s : LmsSimSettings
        The settings (``hole_errors``, ``hole_errors_from``, ``hole_error_um``).
    mask : Mask
        The mask table.
    rng : numpy.random.Generator
        The random stream.

    Returns
    -------
    numpy.ndarray
        (N, 2) errors, um in the mask frame, in the table's order.

    Raises
    ------
    SimulationOptionError
        The table is missing or unreadable, lacks a column or a hole of the mask, or is of
        another mask.
    """
    n = len(mask.hole_id)
    if not s.hole_errors:
        return np.zeros((n, 2))
    if s.hole_errors_from is None:
        return rng.normal(0.0, s.hole_error_um, (n, 2))
    path = Path(s.hole_errors_from)
    try:
        t = Table.read(path, format="ascii.ecsv")
    except (OSError, ValueError) as exc:
        raise SimulationOptionError(f"hole_errors_from {path}: cannot be read: {exc}") from None
    missing = [c for c in ("hole_id", "dx_um", "dy_um") if c not in t.colnames]
    if missing:
        raise SimulationOptionError(f"hole_errors_from {path}: lacks column(s) {', '.join(missing)}")
    row = {int(h): k for k, h in enumerate(t["hole_id"])}
    absent = [int(h) for h in mask.hole_id if int(h) not in row]
    if absent:
        raise SimulationOptionError(f"hole_errors_from {path}: no row for hole(s) {absent[:10]} of the mask "
                                    f"{mask.short_name}")
    k = np.array([row[int(h)] for h in mask.hole_id])
    if {"x_mm", "y_mm"} <= set(t.colnames):
        xy = np.stack([np.asarray(t["x_mm"], float)[k], np.asarray(t["y_mm"], float)[k]], axis=1)
        bad = np.flatnonzero(np.max(np.abs(xy - mask.xy_mm), axis=1) > 1e-6)
        if bad.size:
            raise SimulationOptionError(f"hole_errors_from {path}: holes {mask.hole_id[bad][:10].tolist()} are not at "
                                        f"the positions of the mask {mask.short_name}: another mask")
    return np.stack([np.asarray(t["dx_um"], float)[k], np.asarray(t["dy_um"], float)[k]], axis=1)


def _plan(s: LmsSimSettings, geometry):
    """The frames: list of dicts (kind, setting index, offset index, lines)."""
    lines = laser_lines(s.lasers_on(), s.qcl_lines_um)
    plan = []
    for e, lam_c in enumerate(s.settings_um):
        lo, hi = geometry.wavelength_range(e)
        here = [(n, l) for n, l in lines if lo <= l <= hi]
        for k in range(s.n_offsets + len(s.slit_scan)):
            if here:
                plan.append(dict(kind="laser", setting=e, offset=k, lines=here))
        if s.continuum:
            for k in range(s.n_offsets if s.grid_all_offsets else 1):
                plan.append(dict(kind="grid", setting=e, offset=k, lines=[]))
            plan.append(dict(kind="slices", setting=e, offset=None, lines=[]))
        if s.background:
            plan.append(dict(kind="background", setting=e, offset=None, lines=[]))
    if not plan:
        raise ValueError("simulate lms: nothing to simulate: no laser line falls in the settings "
                         f"{list(s.settings_um)} um and continuum and background frames are off")
    return plan


def _name(p, s):
    tag = f"{s.settings_um[p['setting']]:.3f}".replace(".", "p")
    if p["offset"] is None:
        return f"lms_{p['kind']}_{tag}.fits"
    return f"lms_{p['kind']}_{tag}_{p['offset']:02d}.fits"


def _primary_header(s, geometry, p, t_start, offset_cmd):
    st = geometry.layout.settings[p["setting"]]
    lo, hi = geometry.wavelength_range(p["setting"])
    h = fits.Header()
    exptime = s.dit_s * s.ndit
    set_card(h, "DATE-OBS", t_start.isot, "start of exposure (UTC)")
    set_card(h, "MJD-OBS", float(t_start.mjd), "start of exposure (MJD, UTC)")
    set_card(h, "EXPTIME", exptime, "[s] total integration time DIT x NDIT")
    set_card(h, "INSTRUME", "METIS", "instrument")
    set_card(h, "TELESCOP", "ELT", "telescope")
    dpr = {"laser": "WAVE", "grid": "DISTORTION", "slices": "RSRF", "background": "WCU_OFF"}[p["kind"]]
    set_card(h, eso_key("DPR.CATG"), "CALIB", "data category")
    set_card(h, eso_key("DPR.TYPE"), dpr, "data type")
    set_card(h, eso_key("DPR.TECH"), "IFU", "observation technique")
    set_card(h, eso_key("INS.MODE"), "LMS", "instrument mode")
    set_card(h, eso_key("INS.LMS.MODE"), "Nominal", "LMS mode")
    set_card(h, eso_key("DET3.DIT"), s.dit_s, "[s] detector integration time")
    set_card(h, eso_key("DET3.NDIT"), int(s.ndit), "number of DITs")
    set_card(h, eso_key("DET3.CUBE.MODE"), False, "")
    set_card(h, eso_key("INS.WLEN.CEN"), st.lam_c_um, "Central wavelength [um]")
    set_card(h, eso_key("INS.WLEN.START"), round(lo, 6), "Start wavelength [um]")
    set_card(h, eso_key("INS.WLEN.END"), round(hi, 6), "End wavelength [um]")
    set_card(h, eso_key("INS.OPTI7.POS"), st.predisperser_deg, "LMS-PRA position [deg]")
    set_card(h, eso_key("INS.OPTI8.POS"), st.echelle_deg, "LMS-MSA position [deg]")
    set_card(h, eso_key("INS.OPTI8.ORDER"), int(st.order), "Spectral order (non-ESO keyword)")
    mask = "open" if p["kind"] in ("slices", "background") else "grid_lm"
    set_card(h, eso_key("INS.OPTI20.ID"), "wcu-fp2-1", "WCU FP2.1 mask wheel")
    set_card(h, eso_key("INS.OPTI20.POSNAME"), mask, "WCU focal-plane mask")
    if mask != "open":
        set_card(h, eso_key("INS.OPTI20.NAME"), s.mask, "mask table")
        set_card(h, eso_key("SEQ.CHOPNOD.OFFSCHOP.X"), float(offset_cmd[0]), "[arcsec] chopper offset x")
        set_card(h, eso_key("SEQ.CHOPNOD.OFFSCHOP.Y"), float(offset_cmd[1]), "[arcsec] chopper offset y")
    lasers = {n for n, _ in p["lines"]}
    for i, n in enumerate(("laser1", "qcl", "laser3"), 1):
        set_card(h, eso_key(f"SEQ.WCU.LASER{i}"), "ON" if n in lasers else "OFF", f"WCU laser {i}")
    qcl = [l for n, l in p["lines"] if n == "qcl"]
    if qcl:
        set_card(h, eso_key("SEQ.WCU.LASER2.WAVE"), qcl[0], "[um] QCL line (first)")
        set_card(h, eso_key("SEQ.WCU.LASER2.NLINES"), len(qcl), "QCL lines in this exposure (astrocal)")
    lamp = {"laser": "laser", "grid": "bb", "slices": "bb", "background": "off"}[p["kind"]]
    set_card(h, eso_key("SEQ.WCU.LAMP.NAME"), lamp, "WCU lamp")
    set_card(h, eso_key("SEQ.WCU_BB_TEMP"), s.bb_temp_k, "[K] WCU black-body temperature")
    set_card(h, "ORIGIN", f"astrocal {__version__} simulate lms", "")
    return h


def _chip_header(d):
    h = fits.Header()
    h["EXTNAME"] = f"DET{d}.DATA"
    set_card(h, "BUNIT", "ADU", "")
    set_card(h, eso_key("DET3.CHIP.NUM"), d, "chip number")
    set_card(h, eso_key("DET3.CHIP.ID"), LMS_DETECTOR["chip_id"], "")
    set_card(h, eso_key("DET3.CHIP.MINDIT"), LMS_DETECTOR["min_dit_s"], "[s]")
    set_card(h, eso_key("DET3.CHIP.FULLWELL"), LMS_DETECTOR["full_well_e"], "[e]")
    set_card(h, eso_key("DET3.CHIP.RON"), LMS_DETECTOR["read_noise_e"], "[e] per CDS readout")
    set_card(h, eso_key("DET3.CHIP.DARK"), LMS_DETECTOR["dark_e_per_s"], "[e/s]")
    set_card(h, eso_key("DET3.CHIP.GAIN"), LMS_DETECTOR["gain_e_per_adu"], "[e/ADU]")
    set_card(h, eso_key("DET3.CHIP.REFPIX"), " ".join(map(str, REFERENCE_BORDERS[d])), "b l t r")
    return h


@lru_cache(maxsize=1)
def _illuminated():
    """(4, 2048, 2048) bool: pixels outside the reference-pixel borders."""
    m = load_mosaic()
    out = np.zeros((R.N_DET,) + R.CHIP_SHAPE, bool)
    for d, (b, l, t, r) in REFERENCE_BORDERS.items():
        out[d - 1, b:m.ny - t, l:m.nx - r] = True
    return out


def _detector(rate, s: LmsSimSettings, rng):
    """Expected rate [e/s] -> frame [ADU, float32]: dark, borders, NDIT-averaged photon noise,
    full well, read noise, gain."""
    e = rate * s.dit_s
    if s.dark:
        e += LMS_DETECTOR["dark_e_per_s"] * s.dit_s
    if s.reference_pixels:
        e *= _illuminated()
    if s.noise:
        e = rng.poisson(np.maximum(e, 0) * s.ndit).astype(np.float32)
        if s.ndit > 1:
            e /= s.ndit
    e = e.astype(np.float32, copy=False)
    if s.saturation:
        np.minimum(e, np.float32(LMS_DETECTOR["full_well_e"]), out=e)
    if s.noise:
        e += rng.standard_normal(e.shape, dtype=np.float32) * np.float32(LMS_DETECTOR["read_noise_e"] / math.sqrt(s.ndit))
    e /= np.float32(LMS_DETECTOR["gain_e_per_adu"])
    return e


def _toml(v):
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if v is None:
        return '"none"'
    return repr(float(v)) if isinstance(v, float) else str(v)


def _campaign_toml(s, geometry, rows, seed):
    o = s.orientation
    lines = [f"# LMS campaign written by `astrocal simulate lms` (astrocal {__version__}, seed {seed}); truth in truth/",
             "# [lms]: the LMS campaign layout (docs/campaign.md); astrocal measure and astrocal fit read it.",
             "", "[lms]",
             'mask = "mask.ecsv"',
             f"mask_scale_mm_per_arcsec = {3.319!r}",
             f"orientation = {{ angle_deg = {float(o.angle_deg)!r}, flip = {_toml(bool(o.flip))}, "
             f"offset_arcsec = {_toml([float(v) for v in o.offset_arcsec])} }}",
             f"truth_direction = {_toml(s.truth)}",
             f"degree = {int(s.degree)}",
             f"reference_detector = {_toml(s.reference_detector if s.reference_detector else 'none')}",
             f"offset_sigma_mas = {float(s.offset_sigma_mas)!r}",
             f"hole_error_um = {float(s.hole_error_um) if s.hole_error_um else 0.5!r}   # the mask's tolerance: "
             "the prior of the hole errors the fit integrates",
             f"gain_e_per_adu = {LMS_DETECTOR['gain_e_per_adu']!r}",
             f"read_noise_e = {LMS_DETECTOR['read_noise_e']!r}",
             ""]
    for e, st in enumerate(geometry.layout.settings):
        lines += ["[[lms.settings]]", f"lam_c_um = {st.lam_c_um!r}", f"order = {int(st.order)}",
                  f"echelle_deg = {float(st.echelle_deg)!r}", ""]
    for r in rows:
        lines += ["[[lms.frames]]", f"file = {_toml(r['file'])}", f"kind = {_toml(r['kind'])}",
                  f"lam_c_um = {r['lam_c_um']!r}"]
        if r["kind"] in ("laser", "grid"):
            lines.append(f"offset_arcsec = {_toml([r['offset_cmd_a'], r['offset_cmd_b']])}")
        if r["kind"] == "laser":
            lines.append(f"lines_um = {_toml([float(v) for v in json.loads(r['lines_um'])])}")
        if r["background"]:
            lines.append(f"background = {_toml(r['background'])}")
        lines.append("")
    lines += ["[measure]", 'output = "measured/"', "", "[fit]", 'output = "out/"', ""]
    return "\n".join(lines)


def simulate_lms(out: str | os.PathLike, settings: LmsSimSettings | None = None, *, overwrite: bool = False,
                 **changes: Any) -> LmsCampaign:
    """Write a simulated LMS campaign into directory ``out`` (see the module docstring).

    Parameters
    ----------
    out : str or os.PathLike
        The campaign directory.
    settings : LmsSimSettings, optional
        The settings (default :class:`LmsSimSettings`).
    overwrite : bool
        Replace existing files (else they raise :class:`~astrocal.atomic.ProductExistsError`).
    **changes
        Fields of ``settings`` to replace.

    Returns
    -------
    LmsCampaign
        What was written.
    """
    t0 = time.perf_counter()
    s = (settings or LmsSimSettings()).replace(**changes) if changes else (settings or LmsSimSettings())
    out = Path(out)
    seed = s.seed if s.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
    ss = np.random.SeedSequence(seed)
    rng_geo, rng_off, rng_noise, rng_resp, rng_holes = (np.random.default_rng(c) for c in ss.spawn(5))
    geometry = draw_lms_geometry(s.settings_um, rng_geo, deviations=s.deviations, degree=s.degree,
                                 reference_detector=s.reference_detector, hyper=s.hyper, truth=s.truth,
                                 waves_px=s.slice_waves_px if s.deviations else 0.0)
    mask_file = Path(s.mask) if s.mask.endswith(".ecsv") and Path(s.mask).is_file() else mask_path(s.mask)
    mask = load_mask(mask_file)
    hole_ab = np.asarray(mask.xy_arcsec(), float)
    hole_err_um = hole_errors_for(s, mask, rng_holes)
    hole_ab_true = hole_ab + hole_err_um / (mask._scale_mm_per_arcsec() * 1e3)        # where the holes are
    cmd = np.concatenate([s.commanded_offsets(), s.scan_offsets()])
    err = rng_off.normal(0.0, s.offset_sigma_mas / 1e3, cmd.shape)
    response = (draw_response(rng_resp, s.rsrf_sigma_gain, s.rsrf_sigma_slope, s.rsrf_sigma_curv, s.blaze_kappa)
                if s.rsrf else None)
    profile = s.slit_profile()
    orders = [st.order for st in geometry.layout.settings]

    def resp(e):
        if response is None:
            return None
        return lambda k, lam, m=orders[e]: response.factor(k, lam, m)

    true_off = cmd + (err if s.offset_errors else 0.0)
    plan = _plan(s, geometry)
    paths = [out / "raw" / _name(p, s) for p in plan]
    for p in paths + [out / "campaign.toml", out / "mask.ecsv", out / "truth" / "truth.json"]:
        check_writable(p, overwrite)
    rates = dict(s.laser_rate_e_per_s)
    rad = lms_radiometry(s)
    bg_file = {p["setting"]: f"raw/{_name(p, s)}" for p in plan if p["kind"] == "background"}
    spot_rows, exp_rows, thermal = [], [], {}
    t_obs = Time(s.date_obs, scale="utc")
    for i, (p, path) in enumerate(zip(plan, paths)):
        e = p["setting"]
        rate = np.zeros((R.N_DET,) + R.CHIP_SHAPE)
        if s.thermal:
            if e not in thermal:
                thermal[e] = R.render_slices(np.zeros_like(rate, dtype=np.float32), geometry, e, rad["thermal"],
                                             edge_sigma_px=s.edge_sigma_px, response=resp(e), slit_profile=profile)
            rate += thermal[e]
        k = p["offset"]
        off_c = cmd[k] if k is not None else np.zeros(2)
        off_t = true_off[k] if k is not None else np.zeros(2)
        if p["kind"] in ("laser", "grid"):
            hidx, sl, xi, deta = holes_in_field(hole_ab_true, off_t, s.orientation)
        if p["kind"] == "laser":
            lam = np.array([l for _, l in p["lines"]])
            flux = np.array([rates[n] for n, _ in p["lines"]])
            n_h, n_l = len(hidx), len(lam)
            src = dict(s=np.repeat(sl, n_l), xi=np.repeat(xi, n_l), deta=np.repeat(deta, n_l),
                       lam=np.tile(lam, n_h), flux=np.tile(flux, n_h), hole=np.repeat(hidx, n_l),
                       laser=np.tile([n for n, _ in p["lines"]], n_h))
            tr = R.render_laser_spots(rate, geometry, e, src["s"], src["xi"], src["deta"], src["lam"], src["flux"],
                                      resolving_power=s.resolving_power, neighbours=s.neighbours,
                                      response=resp(e), slit_profile=profile)
            j = tr["source"]
            r_line = (np.ones(len(j)) if response is None
                      else response.factor(tr["slice"], src["lam"][j], orders[e]))
            model = geometry.forward(tr["slice"], src["xi"][j], src["lam"][j], e, on_gap="mask")
            for q in range(len(j)):
                spot_rows.append(dict(
                    file=f"raw/{path.name}", setting=e, lam_c_um=s.settings_um[e], offset=k,
                    hole_id=int(mask.hole_id[src["hole"][j[q]]]), laser=str(src["laser"][j[q]]),
                    lam_um=float(src["lam"][j[q]]), hole_slice=int(src["s"][j[q]]), slice=int(tr["slice"][q]),
                    main=bool(tr["main"][q]), xi_arcsec=float(src["xi"][j[q]]), eta_offset_arcsec=float(src["deta"][j[q]]),
                    det_model=int(model.det[q]), col_model=float(model.col[q]), row_model=float(model.row[q]),
                    det=int(tr["det"][q]), col=float(tr["col"][q]), row=float(tr["row"][q]),
                    flux_e=float(tr["flux"][q] * s.dit_s), source_e=float(src["flux"][j[q]] * s.dit_s),
                    response=float(r_line[q]), throughput=float(tr["flux"][q] / src["flux"][j[q]] / r_line[q]),
                    u_true=float(src["deta"][j[q]] / SLICE_WIDTH_ARCSEC)))
        elif p["kind"] == "grid":
            R.render_pinhole_traces(rate, geometry, e, sl, xi, deta, rad["bb_pinhole"], neighbours=s.neighbours,
                                    response=resp(e), slit_profile=profile)
        elif p["kind"] == "slices":
            R.render_slices(rate, geometry, e, rad["bb_open"], edge_sigma_px=s.edge_sigma_px, response=resp(e),
                            slit_profile=profile)
        t_start = t_obs + TimeDelta(i * (s.dit_s * s.ndit + s.overhead_s), format="sec")
        frame = _detector(rate, s, rng_noise)
        hdus = [fits.PrimaryHDU(header=_primary_header(s, geometry, p, t_start, off_c))]
        hdus += [fits.ImageHDU(frame[d - 1], header=_chip_header(d)) for d in range(1, R.N_DET + 1)]
        with atomic_path(path, overwrite) as tmp:
            fits.HDUList(hdus).writeto(tmp)
        exp_rows.append(dict(file=f"raw/{path.name}", kind=p["kind"], setting=e, lam_c_um=s.settings_um[e],
                             offset=-1 if k is None else k, slit_scan=k is not None and k >= s.n_offsets, offset_cmd_a=float(off_c[0]), offset_cmd_b=float(off_c[1]),
                             offset_true_a=float(off_t[0]), offset_true_b=float(off_t[1]),
                             lasers=",".join(sorted({n for n, _ in p["lines"]})),
                             lines_um=json.dumps([l for _, l in p["lines"]]),
                             background=bg_file.get(e, "") if p["kind"] != "background" else "",
                             date_obs=t_start.isot, max_e=float(rate.max() * s.dit_s)))
    spots = Table(rows=spot_rows) if spot_rows else Table(names=["file"], dtype=[str])
    exposures = Table(rows=exp_rows)
    truth_dir = out / "truth"
    summary = _summary(s, plan, spots, exposures, seed, time.perf_counter() - t0)
    resp_info = {"rsrf": response is not None,
                 "slit_profile": None if profile is None else {"edge_loss": profile.edge_loss, "power": profile.power},
                 "orders": [int(m) for m in orders]}
    hole_info = {"on": bool(s.hole_errors), "rms_um": float(s.hole_error_um) if s.hole_errors else 0.0,
                 "from": s.hole_errors_from if s.hole_errors else None, "file": "holes.ecsv",
                 "units": "um at the mask, mask frame (x_mm, y_mm axes)"}
    truth_files = write_lms_truth(truth_dir, geometry, hyper=s.hyper, seed=seed, orientation=s.orientation,
                                  extra={"settings": s.to_dict(), "summary": summary, "response": resp_info,
                                         "hole_errors": hole_info},
                                  overwrite=overwrite)
    truth_files["holes"] = truth_dir / "holes.ecsv"
    atomic_write_table(_holes_table(mask, hole_err_um, hole_ab_true, hole_info), truth_files["holes"], overwrite,
                       format="ascii.ecsv")
    if response is not None:
        truth_files["response"] = truth_dir / "response.ecsv"
        atomic_write_table(response.table(), truth_files["response"], overwrite, format="ascii.ecsv")
    truth_files["spots"] = truth_dir / "spots.ecsv"
    truth_files["exposures"] = truth_dir / "exposures.ecsv"
    atomic_write_table(spots, truth_files["spots"], overwrite, format="ascii.ecsv")
    atomic_write_table(exposures, truth_files["exposures"], overwrite, format="ascii.ecsv")
    atomic_write_text(out / "mask.ecsv", Path(mask_file).read_text(), overwrite)
    campaign = out / "campaign.toml"
    atomic_write_text(campaign, _campaign_toml(s, geometry, exp_rows, seed), overwrite)
    summary["seconds"] = time.perf_counter() - t0
    return LmsCampaign(out, campaign, tuple(paths), truth_files, geometry, spots, exposures, summary, response,
                       profile)


def _holes_table(mask, err_um, ab_true, info):
    """``truth/holes.ecsv``: per mask hole its nominal position [mm], manufacturing error [um]
    and true position in the field [arcsec] (the columns ``astrocal simulate lab`` writes)."""
    t = Table()
    t["hole_id"] = mask.hole_id
    t["x_mm"], t["y_mm"] = mask.xy_mm[:, 0], mask.xy_mm[:, 1]
    t["dx_um"], t["dy_um"] = err_um[:, 0], err_um[:, 1]
    t["x_arcsec"], t["y_arcsec"] = ab_true[:, 0], ab_true[:, 1]
    for c, unit in (("x_mm", "mm"), ("y_mm", "mm"), ("dx_um", "um"), ("dy_um", "um"), ("x_arcsec", "arcsec"),
                    ("y_arcsec", "arcsec")):
        t[c].unit = unit
    t["dx_um"].description = "manufacturing error of the hole along the mask's x (true - table)"
    t["dy_um"].description = "manufacturing error along y"
    t["x_arcsec"].description = "true position in the field frame (table position + error, at the table's plate scale)"
    t.meta = {"mask": mask.short_name, **info}
    return t


def _summary(s, plan, spots, exposures, seed, seconds):
    kinds = {k: sum(p["kind"] == k for p in plan) for k in ("laser", "grid", "slices", "background")}
    per_det = {}
    if len(spots) and "main" in spots.colnames:
        main = spots[spots["main"] & (spots["det"] > 0)]
        for e, lam_c in enumerate(s.settings_um):
            n_laser = sum(p["kind"] == "laser" and p["setting"] == e for p in plan)
            if n_laser:
                m = main[main["setting"] == e]
                per_det[f"{lam_c:g}"] = {f"DET{d}": round(float(np.sum(m["det"] == d)) / n_laser, 1)
                                         for d in range(1, 5)}
    return {"seed": seed, "settings_um": list(s.settings_um), "frames": kinds, "n_frames": len(plan),
            "spots_per_laser_frame_by_detector": per_det, "n_spot_images": len(spots),
            "max_e_per_dit": float(np.max(exposures["max_e"])) if len(exposures) else 0.0,
            "seconds": seconds}
