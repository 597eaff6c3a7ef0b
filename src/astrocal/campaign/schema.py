"""The campaign's schema: what a loaded campaign holds (:func:`astrocal.campaign.load_campaign`).

Frozen dataclasses, one per section of the TOML file: :class:`InstrumentSpec`
(``[instrument]``), :class:`LabDataset` and :class:`SkyDataset` (``[[lab]]``, ``[[sky]]``)
with their :class:`Exposure` s, :class:`LmsDataset` (``[lms]``) with its
:class:`LmsFrameSpec` s, :class:`MeasureSettings`, :class:`FitSettings`,
:class:`EarthSettings`, and the whole :class:`Campaign`; and :class:`CampaignError`, the
error of an invalid file. Paths in them are resolved (absolute); values are plain numbers
in the units their names give.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Optional

from .. import earth
from ..errors import AstrocalError
from ..model.flexure import FlexureBasis


class CampaignError(AstrocalError, ValueError):
    """A campaign file is invalid; the message names the file, the key and the line."""


# --------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class InstrumentSpec:
    """``[instrument]``: the imager and its nominal scales (priors only).

    How its frames' headers are read (raw, background and flat frames alike;
    :class:`astrocal.image.headers.HeaderRules`): ``header_keywords`` (``{entry: [FITS
    keyword, ...]}``, the campaign's ``[instrument.header_keywords]``: entries of
    :data:`astrocal.instruments.HEADER_FIELDS` replacing the preset's or the generic
    keywords), and the values a header does not give: ``gain_e_per_adu`` (e-/ADU),
    ``read_noise_e`` (e- per DIT), ``exptime_s`` (s, total) or None.

    ``mask_scale_mm_per_arcsec`` (the plate scale at the pinhole mask) is needed by lab
    datasets only: ``None`` in a campaign without ``[[lab]]`` that does not give it.
    """

    name: str
    detector_shape: tuple
    pixel_scale_mas: float
    mask_scale_mm_per_arcsec: Optional[float]
    preset: Optional[str] = None
    header_keywords: dict = dc_field(default_factory=dict)
    gain_e_per_adu: Optional[float] = None
    read_noise_e: Optional[float] = None
    exptime_s: Optional[float] = None


@dataclass(frozen=True)
class Exposure:
    """One exposure of a dataset: an image (FITS) or a measured source table (ECSV/FITS).

    ``offset_arcsec`` is the commanded mask (chopper) offset, ``offset_sigma_mas`` its
    1-sigma accuracy; ``None`` where not given (read from the header when measuring).

    ``extra``: the other keys of the exposure. For ``[[sky]]`` exposures they are
    validated and converted: ``time`` (str, ISO UTC; mid-exposure), ``clock_time`` (False,
    present only when the time is an epoch: a decimal year, ``"J1995.439"`` or a date),
    ``ra``, ``dec`` (float, deg, ICRS pointing), ``position_angle_deg`` or
    ``rotator_angle_deg`` (float, deg), ``parity`` (int, +1 or -1),
    ``zenith_distance_deg``, ``parallactic_angle_deg`` (float, deg: checks with a clock
    time, the refraction's geometry without one), ``refraction`` (bool, false: off),
    ``pressure_hpa``, ``temperature_c`` (float), ``humidity`` (float, relative humidity as
    a fraction 0..1), ``wavelength_um`` (float), ``header`` (str: a FITS file whose headers
    give what the campaign does not, for a star list), and for an observatory in space
    ``velocity_aberration_scale`` (float) or ``observer_velocity_km_s`` (3 floats).
    """

    file: Path
    offset_arcsec: Optional[tuple] = None
    offset_sigma_mas: Optional[float] = None
    extra: dict = dc_field(default_factory=dict)


@dataclass(frozen=True)
class LabDataset:
    """``[[lab]]``: exposures of a pinhole mask.

    ``flat_normalised``: the flat is a relative gain map normalised to ~1 (True) or a frame
    in counts (False); None: detected from its median
    (:func:`astrocal.image.reduce.flat_normalisation`).
    """

    name: str
    mask: Path
    filter: str
    exposures: tuple
    background: Optional[Path] = None
    flat: Optional[Path] = None
    flat_normalised: Optional[bool] = None  # None: detected from the flat's median


@dataclass(frozen=True)
class SkyDataset:
    """``[[sky]]``: exposures of an asterism with a reference catalogue.

    ``catalog`` the resolved path, ``catalog_given`` the path as written in the campaign.
    Exposures are images (FITS) or star lists (anything else; read with
    :func:`astrocal.sky.starlist.read_star_list` using ``x_col``, ``y_col``, ``flux_col``,
    ``mag_col`` (a magnitude column: brightness ranks, never taken as a flux),
    ``sigma_x_col``, ``sigma_y_col`` (names, or 0-based column indices) and
    ``one_based``). ``background``, ``flat``: optional calibration frames for the images
    (reduced as lab frames). ``band``: the catalogue magnitude column (``mag_<band>``)
    used by the matching's flux checks (None: positions only). ``strehl``: the Strehl
    ratio of the model PSF of the images (None: the measure stage's stated default).
    ``site``: the :class:`astrocal.sky.sites.Site` (:func:`load_campaign` resolves the
    campaign's name or position; a name is accepted where a dataset is built by hand), or a
    :class:`astrocal.sky.sites.SpaceSite` for an observatory in space (``site = "space"``,
    ``"hst"``, ``"jwst"``, ``"none"``): its exposures take no atmosphere or horizon keys but
    ``velocity_aberration_scale`` or ``observer_velocity_km_s``.
    """

    name: str
    catalog: Path
    exposures: tuple
    site: object = "armazones"
    filter: Optional[str] = None
    catalog_given: Optional[str] = None
    background: Optional[Path] = None
    flat: Optional[Path] = None
    x_col: object = None
    y_col: object = None
    flux_col: object = None
    mag_col: object = None
    sigma_x_col: object = None
    sigma_y_col: object = None
    one_based: Optional[bool] = None
    band: Optional[str] = None
    strehl: Optional[float] = None


LMS_FRAME_KINDS = ("laser", "grid", "slices", "background")
"""Kinds of LMS frames: WCU grid lit by the lasers, by the black body, mask open (lit slices), background."""


@dataclass(frozen=True)
class LmsFrameSpec:
    """One ``[[lms.frames]]`` entry: a raw LMS frame (FITS, ``DET1.DATA`` .. ``DET4.DATA``).

    ``kind``: one of :data:`LMS_FRAME_KINDS`; ``lam_c_um``: the central wavelength of its
    echelle setting [um] (one of ``[[lms.settings]]``); ``offset_arcsec``: the commanded
    chopper offset (field frame: along, across the slices) [arcsec], given for ``laser`` and
    ``grid`` frames; ``lines_um``: the laser lines lit [um] (``laser`` frames);
    ``background``: the background frame subtracted (same setting and DIT) or None.
    """

    file: Path
    kind: str
    lam_c_um: float
    offset_arcsec: Optional[tuple] = None
    lines_um: tuple = ()
    background: Optional[Path] = None


@dataclass(frozen=True)
class LmsDataset:
    """``[lms]``: a calibration data set of the LM integral-field spectrograph.

    ``mask``: the WCU mask table; ``mask_scale_mm_per_arcsec``: its plate scale;
    ``orientation``: the mask relative to the slicer (:class:`astrocal.lms.FieldOrientation`);
    ``truth_direction``: the optical model's exact direction (``"forward"``/``"inverse"``);
    ``degree``: of the per-slice corrections; ``reference_detector``: the chip without
    placement parameters (1..4, or None); ``offset_sigma_mas``: the chopper offsets' accuracy
    per axis [mas]; ``across_px_per_mas``: how far along the dispersion a laser spot moves
    per mas of hole offset across the slice [px/mas] (the fit's prior on that shift per
    exposure); ``gain_e_per_adu``, ``read_noise_e``: used where a frame's header lacks them;
    ``settings``: the :class:`~astrocal.lms.EchelleSetting` s in parameter order; ``frames``:
    :class:`LmsFrameSpec` s; ``residual_m``: the per-slice residual beyond the polynomial
    (functions per dimension, 0 = none; :class:`astrocal.lms.DeviationLayout`);
    ``hole_error_um``: the mask's manufacturing tolerance, rms per hole and axis [um] (the prior
    of the hole errors the fit integrates; 0 = the table's positions are exact);
    ``hole_errors_from``: an imager fit's result (its output directory of one filter, or its
    ``posterior.h5``) whose posterior of the shared holes is the prior instead
    (:mod:`astrocal.lms.hole_prior`); checked when the fit reads it.
    """

    name: str
    mask: Path
    mask_scale_mm_per_arcsec: float
    orientation: object
    truth_direction: str
    degree: int
    reference_detector: Optional[int]
    offset_sigma_mas: float
    across_px_per_mas: float
    settings: tuple
    frames: tuple
    gain_e_per_adu: Optional[float] = None
    read_noise_e: Optional[float] = None
    residual_m: int = 0
    hole_error_um: float = 0.5
    hole_errors_from: Optional[Path] = None

    def frames_of(self, kind: str) -> tuple:
        """The frames of one kind, in campaign order.

        Parameters
        ----------
        kind : str
            One of :data:`LMS_FRAME_KINDS`.

        Returns
        -------
        tuple of LmsFrameSpec
        """
        return tuple(f for f in self.frames if f.kind == kind)


@dataclass(frozen=True)
class MeasureSettings:
    """``[measure]``: where measured tables and reduced images go, and how."""

    output: Path
    psf: str = "model"  # "model" (instrument PSF) or "epsf" (built from the frames)


@dataclass(frozen=True)
class FitSettings:
    """``[fit]``: the joint fit.

    ``field_prior``: the prior width of the field's non-linear coefficients
    (:class:`astrocal.model.priors.Priors`: ``"curved"``, ``"decay"``, ``"per_degree"`` or
    ``"fixed"``). ``degree_choice``: with ``degree = "auto"``, the posterior median degree
    (``"median"``) or the largest evidence (``"best"``; :func:`astrocal.model.selection.choose_degree`).
    Flexure model of the sky data (:class:`astrocal.model.flexure.FlexureBasis`):
    ``flexure_degree`` (1..5), ``flexure_functions`` (names of
    :data:`~astrocal.model.flexure.ZENITH_FUNCTIONS`), ``flexure_radius_arcsec`` (the
    normalisation radius; default half the detector's field of view).
    """

    output: Path
    degree: object = "auto"  # "auto" or an int
    degree_range: tuple = (3, 8)
    walkers: int = 32
    steps: int = 15000
    seed: Optional[int] = None
    hole_errors: bool = True
    flexure_degree: int = 2
    flexure_functions: tuple = ("1", "cos_z", "sin_z")
    flexure_radius_arcsec: float = 5.0
    field_prior: str = "curved"
    degree_choice: str = "median"
    mask_affine_sigma_ppm: Optional[float] = None
    residual: str = "auto"

    @property
    def flexure(self) -> FlexureBasis:
        """The :class:`~astrocal.model.flexure.FlexureBasis` of these settings."""
        return FlexureBasis(self.flexure_degree, tuple(self.flexure_functions),
                            float(self.flexure_radius_arcsec))


@dataclass(frozen=True)
class EarthSettings:
    """``[earth]``: the Earth-orientation and leap-second tables (:mod:`astrocal.earth`).

    ``iers_file``: a local IERS-A (``finals2000A.*``) or IERS-B (EOP C04) file;
    ``leap_second_file``: a local ``Leap_Second.dat`` or ``leap-seconds.list``; both
    absolute or relative to the campaign file, None for astropy's bundled tables.
    ``allow_download``: let astropy download the current tables once (default: never).
    """

    iers_file: Optional[Path] = None
    leap_second_file: Optional[Path] = None
    allow_download: bool = False

    def apply(self, campaign_path: str | Path | None = None) -> earth.Policy:
        """Make these the process's tables (:func:`astrocal.earth.configure`).

        A campaign without ``[earth]`` settings leaves the process's policy as it is (the
        default one, or what :func:`astrocal.earth.configure` set).

        Parameters
        ----------
        campaign_path : str or Path, optional
            The campaign file, named in errors (which name the file and the key,
            ``earth.iers_file``...).

        Returns
        -------
        astrocal.earth.Policy
            The process's policy after the call.
        """
        if self == EarthSettings():
            return earth.policy()
        key = f"{campaign_path}: earth" if campaign_path else "earth"
        return earth.configure(self.iers_file, self.leap_second_file, self.allow_download, key=key)


@dataclass(frozen=True)
class Campaign:
    """A loaded, validated campaign (:func:`load_campaign`).

    ``path``: the campaign file (absolute); ``instrument``: :class:`InstrumentSpec`;
    ``lab``, ``sky``: tuples of :class:`LabDataset` and :class:`SkyDataset` (paths resolved
    against the file's directory); ``measure``: :class:`MeasureSettings`; ``fit``:
    :class:`FitSettings`; ``sha256``: hash of the file's bytes (recorded in every product);
    ``earth``: :class:`EarthSettings`; ``lms``: :class:`LmsDataset` (``[lms]``) or None.
    """

    path: Path
    instrument: InstrumentSpec
    lab: tuple
    sky: tuple
    measure: MeasureSettings
    fit: FitSettings
    sha256: str
    earth: EarthSettings = EarthSettings()
    lms: Optional[LmsDataset] = None

    @property
    def directory(self) -> Path:
        """The directory of the campaign file (relative paths start there)."""
        return self.path.parent

