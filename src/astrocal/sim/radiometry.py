"""Photon budgets of the simulated frames and the exposure planned from them.

:func:`wcu_radiometry` gives the spot and thermal-background rates of a WCU pinhole frame
(black body, integrating sphere, pinholes, the ELT aperture through the cold pupil mask);
:func:`plan_exposure` chooses the readout mode, DIT and NDIT from the rates (used by the
lab and the sky simulators).

Units: um (wavelengths), K, photons or detected electrons per second, m^2, sr, seconds.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import SimulationOptionError
from ..image.psf import pinhole_diameter_mas
from ..instruments import Instrument, get_instrument

__all__ = ["WCU", "PUPIL_TRANSMISSION", "ELT_DIAMETER_M", "MAS_TO_RAD", "photon_radiance", "band_radiance",
           "sphere_gain_factor", "Radiometry", "wcu_radiometry", "ExposurePlan", "plan_exposure"]

log = logging.getLogger(__name__)

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


def photon_radiance(wavelength_um: ArrayLike, temp_k: float) -> np.ndarray:
    """Black-body photon spectral radiance.

    Parameters
    ----------
    wavelength_um : array_like
        Wavelengths, um.
    temp_k : float
        Temperature, K (<= 0: no emission).

    Returns
    -------
    numpy.ndarray
        Photons s^-1 m^-2 sr^-1 um^-1.
    """
    lam = np.asarray(wavelength_um, float) * 1e-6
    if temp_k <= 0:
        return np.zeros_like(lam)
    with np.errstate(over="ignore"):
        return 2.0 * _C / lam**4 / np.expm1(_H * _C / (lam * _K * float(temp_k))) * 1e-6


def band_radiance(lo_um: float, hi_um: float, temp_k: float, n: int = 257) -> float:
    """Black-body photon radiance integrated over a top-hat band.

    Parameters
    ----------
    lo_um, hi_um : float
        The band's edges, um.
    temp_k : float
        Temperature, K.
    n : int
        Wavelengths of the trapezoidal integration.

    Returns
    -------
    float
        Photons s^-1 m^-2 sr^-1.
    """
    w = np.linspace(lo_um, hi_um, n)
    return float(np.trapezoid(photon_radiance(w, temp_k), w))


def sphere_gain_factor() -> float:
    """Radiance of the integrating sphere's wall over that of a Lambertian source filling
    its entrance port.

    Returns
    -------
    float
        ``(A_in / A_sphere) * rho / (1 - rho (1 - f))``, ``f`` the port fraction (the
        :data:`WCU` facts).
    """
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


def wcu_radiometry(instrument: str | Instrument = "metis-lm", filter_name: str | None = None, *,
                   bb_temp_k: float = WCU["bb_temp_k"], wcu_temp_k: float = WCU["temperature_k"],
                   wcu_emissivity: float = WCU["emiss_mask"], efficiency: float = 0.35,
                   pupil_transmission: float | None = None, hole_diameter_um: float = 25.0,
                   mask_scale_mm_per_arcsec: float | None = None) -> Radiometry:
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

    Parameters
    ----------
    instrument : str or Instrument
        The instrument (or its preset name).
    filter_name : str, optional
        The filter (default: the instrument's default).
    bb_temp_k : float
        Black-body temperature, K.
    wcu_temp_k : float
        Temperature of the WCU and the mask, K.
    wcu_emissivity : float
        Their emissivity.
    efficiency : float
        Optics x filter x QE (assumed).
    pupil_transmission : float, optional
        Cold pupil mask's transmission (default: :data:`PUPIL_TRANSMISSION` of the
        instrument, else 0.75).
    hole_diameter_um : float
        Pinhole diameter, um.
    mask_scale_mm_per_arcsec : float, optional
        Mask scale (default: the instrument's).

    Returns
    -------
    Radiometry
        The rates (detected electrons per second) and the assumptions.
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
    def exptime_s(self) -> float:
        """DIT x NDIT, s."""
        return self.dit_s * self.ndit


def _round_down(x, digits=2):
    if x <= 0:
        return x
    e = math.floor(math.log10(x)) - digits + 1
    return math.floor(x / 10**e) * 10**e


def plan_exposure(instrument: str | Instrument, background_e_per_s: float, peak_e_per_s: float = 0.0, *,
                  mode: str | None = None, dit_s: float | None = None, ndit: int | None = None,
                  exptime_s: float = 30.0, fill_fraction: float = 0.5, max_fill: float = 0.8,
                  max_dit_s: float = 10.0) -> ExposurePlan:
    """Choose the readout mode, DIT and NDIT of a lab frame.

    The DIT is the longest (up to ``max_dit_s`` and ``exptime_s``, two significant digits)
    at which thermal background + dark + the brightest spot's peak pixel
    (``peak_e_per_s``) fill ``fill_fraction`` of the full well. The mode is the one with
    the lowest read noise whose minimum DIT allows that DIT, or failing that, whose
    minimum DIT keeps the fill below ``max_fill`` (then at its minimum DIT); if none
    does, the mode with the lowest fill at its minimum DIT (a warning: the frames
    saturate above 90 %). NDIT = ``exptime_s`` / DIT (frames are the average of NDIT
    DITs). ``mode``, ``dit_s``, ``ndit`` override.

    Parameters
    ----------
    instrument : str or Instrument
        The instrument (or its preset name).
    background_e_per_s : float
        Thermal background per pixel, e/s.
    peak_e_per_s : float
        The brightest spot's peak pixel, e/s.
    mode : str, optional
        Readout mode.
    dit_s : float, optional
        DIT, s.
    ndit : int, optional
        NDIT.
    exptime_s : float
        Wanted DIT x NDIT, s.
    fill_fraction : float
        Fraction of the full well to fill.
    max_fill : float
        Largest fill accepted at a mode's minimum DIT.
    max_dit_s : float
        Longest DIT, s.

    Returns
    -------
    ExposurePlan
        Mode, DIT, NDIT, fill and the reason.

    Raises
    ------
    SimulationOptionError
        If the DIT is below the mode's minimum DIT.
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


