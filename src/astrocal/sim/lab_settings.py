"""The settings of a simulated lab campaign: :class:`LabSimSettings` and the effects it
switches.

Units: arcsec (offsets, insertion offset), mas (offset accuracy), um (hole errors),
degrees (rotations), seconds, kelvin.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from astropy.time import Time

from ..errors import SimulationOptionError
from .radiometry import WCU

__all__ = ["DETECTOR_EFFECTS", "SCENE_EFFECTS", "NOISE_EFFECTS", "LabSimSettings"]

#: detector effects, switched by the :class:`LabSimSettings` fields of the same name
#: (passed to :func:`astrocal.sim.detector.simulate_frame`)
DETECTOR_EFFECTS = ("reference_pixels", "flat", "dark", "bad_pixels", "photon_noise",
                    "cosmic_rays", "saturation", "read_noise")
#: scene effects, switched by the :class:`LabSimSettings` fields of the same name
SCENE_EFFECTS = ("distortion", "hole_errors", "offset_errors", "pose_errors", "pinhole",
                 "spiders", "vignetting", "thermal")
#: the noise effects (``noiseless`` switches these off)
NOISE_EFFECTS = ("photon_noise", "read_noise", "cosmic_rays")



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

    def replace(self, **changes: Any) -> LabSimSettings:
        """The same settings with some fields changed.

        Parameters
        ----------
        **changes
            Field name -> new value.

        Returns
        -------
        LabSimSettings
            The new settings (validated).
        """
        return dataclasses.replace(self, **changes)

    def noiseless(self) -> LabSimSettings:
        """The same campaign without photon noise, read noise and cosmic rays.

        Returns
        -------
        LabSimSettings
            The new settings.
        """
        return self.replace(**{k: False for k in NOISE_EFFECTS})

    def ideal(self) -> LabSimSettings:
        """Frames that are the bare render: no detector effect and no thermal background
        (the frame is the expected electrons of the spots divided by the gain).

        Returns
        -------
        LabSimSettings
            The new settings.
        """
        return self.replace(thermal=False, **{k: False for k in DETECTOR_EFFECTS})

    def to_dict(self) -> dict:
        """The settings as plain data (tuples as lists), as written to ``truth.json``.

        Returns
        -------
        dict
            Field name -> value.
        """
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        return d

