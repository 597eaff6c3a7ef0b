"""Campaign files: the TOML a user runs (instrument, datasets, fit settings).

A campaign names the instrument, one or more lab datasets (pinhole-mask exposures), zero
or more sky datasets and the fit settings. Paths are relative to the campaign file. The
file is validated on load: an unknown key, a missing file, a wrong unit, a value of the
wrong type or a dataset with no exposures is a :class:`CampaignError` that names the file,
the key and the line.

Values with units may be written as numbers in the unit the key names
(``offset_arcsec = [0.35, -0.12]``) or as strings with a unit
(``offset_arcsec = ["350 mas", "-0.12 arcsec"]``), converted with astropy.

A ``[[sky]]`` dataset's ``site`` (a name of astrocal's site table, or a position) is
resolved here to an :class:`astrocal.sky.sites.Site`, which the measure stage and the fit
use and record. ``[[sky]]`` exposures are validated here too (the time parses, the angles and the weather
are in range, at most one of ``position_angle_deg`` / ``rotator_angle_deg``; an epoch
without a clock time has ``zenith_distance_deg`` and ``parallactic_angle_deg`` or
``refraction = false``); their values are kept, converted to plain numbers in the units of
the key names, in :attr:`Exposure.extra` (``time`` as an ISO UTC string, ``clock_time``
false for an epoch: a decimal year, ``"J1995.439"`` or a date). ``[fit]`` holds the flexure model
of the sky data (``flexure_degree``, ``flexure_functions``, ``flexure_radius_arcsec``).

The schema is documented in ``docs/campaign.md`` (every section and key, with an example
per job and the errors; a test loads its examples) and ``docs/sky_measure.md``.
"""
from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Optional

import astropy.units as u
import numpy as np

from .errors import AstrocalError
from .instruments import get_instrument


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

    def frames_of(self, kind):
        """The frames of one kind, in campaign order."""
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
    (:class:`astrocal.model.linear.Priors`: ``"curved"``, ``"decay"``, ``"per_degree"`` or
    ``"fixed"``). ``degree_choice``: with ``degree = "auto"``, the posterior median degree
    (``"median"``) or the largest evidence (``"best"``; :func:`astrocal.model.inference.choose_degree`).
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
    def flexure(self):
        """The :class:`~astrocal.model.flexure.FlexureBasis` of these settings."""
        from .model.flexure import FlexureBasis

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

    def apply(self, campaign_path=None):
        """Make these the process's tables (:func:`astrocal.earth.configure`); errors name
        the file and the key (``earth.iers_file``...) and, when given, the campaign file.
        A campaign without ``[earth]`` settings leaves the process's policy as it is (the
        default one, or what :func:`astrocal.earth.configure` set). Returns the policy."""
        from . import earth

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
    def directory(self):
        """The directory of the campaign file (relative paths start there)."""
        return self.path.parent


# --------------------------------------------------------------------------- helpers
class _Context:
    """The file being read and its text, to name keys and lines in errors."""

    def __init__(self, path, text):
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, dotted):
        """Best line number (1-based) for a dotted key like ``lab[0].exposures[2].file``."""
        parts = [p for p in re.split(r"[.\[\]]", dotted) if p and not p.isdigit()]
        if not parts:
            return None
        last = parts[-1]
        pattern = re.compile(rf"(^|[\s{{,]){re.escape(last)}\s*=")
        section = re.compile(rf"^\s*\[\[?\s*{re.escape(last)}\s*\]\]?")
        # the n-th occurrence for list indices of the first table array
        index = re.search(r"\[(\d+)\]", dotted)
        hits = [i + 1 for i, line in enumerate(self.lines) if pattern.search(line) or section.search(line)]
        if not hits:
            return None
        if index and len(parts) > 1:
            # for ``lab[1].mask``, find the mask key after the 2nd [[lab]] header (and for
            # ``lms.frames[1].file`` after the 2nd [[lms.frames]] header)
            top = dotted.split("[")[0]
            inner = [p for p in re.split(r"[.\[\]]", dotted[len(top):]) if p and not p.isdigit()]
            headers = [i + 1 for i, line in enumerate(self.lines)
                       if re.match(rf"^\s*\[\[\s*{re.escape(top)}\s*\]\]", line)]
            k = int(index.group(1))
            if k < len(headers):
                start = headers[k]
                end = headers[k + 1] if k + 1 < len(headers) else len(self.lines) + 1
                inside = [h for h in hits if start <= h < end]
                if inside and len(inner) > 1:
                    # a key of a table inside the dataset (``sky[0].site.name``): on the line of
                    # ``site = { ... }`` or after a ``[sky.site]`` header, not the dataset's own ``name``
                    parent = re.escape(parts[-2])
                    inline = re.compile(rf"(^|[\s{{,]){parent}\s*=\s*\{{")
                    header = re.compile(rf"^\s*\[\s*{re.escape(top)}\s*\.\s*{parent}\s*\]")
                    preferred = [h for h in inside if inline.search(self.lines[h - 1])]
                    subs = [i + 1 for i in range(start - 1, end - 1) if header.match(self.lines[i])]
                    if not preferred and subs:
                        preferred = [h for h in inside if h > subs[0]]
                    inside = preferred or inside
                if inside:
                    sub = re.findall(r"\[(\d+)\]", dotted)
                    if len(sub) > 1 and len(inside) > int(sub[1]):
                        return inside[int(sub[1])]
                    return inside[0]
                return start
        return hits[0]

    def error(self, key, message, at=None):
        """A CampaignError naming the file, ``key`` and the line of ``at`` (default ``key``;
        a missing key is reported at the line of its table)."""
        line = self.line_of(at or key)
        where = f"{self.path}" + (f", line {line}" if line else "")
        return CampaignError(f"{where}: key '{key}': {message}")


def _check_keys(ctx, table, allowed, prefix):
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=2, cutoff=0.6)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ctx.error(f"{prefix}{key}", f"unknown key{hint}; allowed: {', '.join(sorted(allowed))}")


def _require(ctx, table, key, prefix):
    if key not in table:
        raise ctx.error(f"{prefix}{key}", "missing required key")
    return table[key]


def _quantity(ctx, value, unit, key):
    """A number in ``unit``, from a number or a string with a unit."""
    if isinstance(value, bool):
        raise ctx.error(key, f"expected a number in {unit}, got {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            q = u.Quantity(value)
        except (TypeError, ValueError):
            raise ctx.error(key, f"cannot read {value!r} as a quantity in {unit}") from None
        try:
            out = float(q.to_value(unit))
        except u.UnitConversionError:
            raise ctx.error(key, f"wrong unit: {value!r} cannot be converted to {unit}") from None
    else:
        raise ctx.error(key, f"expected a number in {unit} (or a string with a unit), got {value!r}")
    if not np.isfinite(out):  # TOML has nan and inf; no key of a campaign takes them
        raise ctx.error(key, f"expected a finite number in {unit}, got {value!r}")
    return out


def _pair(ctx, value, unit, key):
    if not isinstance(value, list) or len(value) != 2:
        raise ctx.error(key, f"expected a pair [x, y] in {unit}, got {value!r}")
    return tuple(_quantity(ctx, v, unit, f"{key}") for v in value)


def _existing(ctx, base, value, key, kind="file"):
    if not isinstance(value, str) or not value:
        raise ctx.error(key, f"expected a path string, got {value!r}")
    path = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
    if not path.exists():
        raise ctx.error(key, f"{kind} not found: {path}")
    return path


def _string(ctx, value, key):
    if not isinstance(value, str):
        raise ctx.error(key, f"expected a string, got {value!r}")
    return value


#: names that become a file or directory name (dataset names, filters): no path separator,
#: no leading dot (so neither ".." nor a hidden file)
PATH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _path_name(ctx, value, key):
    """A string that becomes a path component of the outputs (a dataset's name, a filter):
    refused unless it is a plain name, so that nothing is written outside the output
    directory."""
    value = _string(ctx, value, key)
    if not PATH_NAME.match(value) or len(value) > 64:
        raise ctx.error(key, f"{value!r} names files and directories of the results: use 1-64 letters, "
                             "digits, '.', '_', '+' or '-', starting with a letter or digit (no '/', no '..')")
    return value


def _one_of(ctx, value, key, allowed):
    if value not in allowed:
        raise ctx.error(key, f"must be one of {', '.join(repr(v) for v in allowed)}, got {value!r}")
    return value


def _int(ctx, value, key, minimum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(key, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ctx.error(key, f"must be >= {minimum}, got {value}")
    return value


# --------------------------------------------------------------------------- sections
INSTRUMENT_KEYS = {"name", "preset", "detector_shape", "pixel_scale_mas", "mask_scale_mm_per_arcsec",
                   "header_keywords", "gain_e_per_adu", "read_noise_e", "exptime_s"}
LAB_KEYS = {"name", "mask", "filter", "background", "flat", "flat_normalised", "exposures"}
LAB_EXPOSURE_KEYS = {"file", "offset_arcsec", "offset_sigma_mas"}
SKY_KEYS = {"name", "catalog", "site", "filter", "exposures", "background", "flat", "x_col",
            "y_col", "flux_col", "mag_col", "sigma_x_col", "sigma_y_col", "one_based", "band", "strehl"}
SKY_EXPOSURE_KEYS = {"file", "time", "ra", "dec", "position_angle_deg", "rotator_angle_deg",
                     "parity", "zenith_distance_deg", "parallactic_angle_deg", "refraction",
                     "pressure_hpa", "temperature_c", "humidity", "wavelength_um", "header",
                     "velocity_aberration_scale", "observer_velocity_km_s"}
#: exposure keys that describe the atmosphere or the horizon: refused for a space observatory
GROUND_ONLY_KEYS = ("rotator_angle_deg", "zenith_distance_deg", "parallactic_angle_deg", "refraction",
                    "pressure_hpa", "temperature_c", "humidity")
#: exposure keys of an observatory in space only (a ground site's aberration is astropy's)
SPACE_ONLY_KEYS = ("velocity_aberration_scale", "observer_velocity_km_s")
#: a ``time`` that is a date without a time of day, or an epoch (decimal year, "J1995.439")
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
EPOCH_TEXT = re.compile(r"^[JB]?\d{4}(\.\d*)?$")
#: keys that are refused with an explanation (not an unknown-key error)
SKY_EXPOSURE_REFUSED = {
    "derotator_deg": "ambiguous: a derotator's mechanical angle is not the rotation of the "
                     "image; give rotator_angle_deg (angle of the instrument +y axis from the "
                     "direction of the zenith) or position_angle_deg (of +y, from north through "
                     "east)",
}
MEASURE_KEYS = {"output", "psf"}
FIT_KEYS = {"degree", "degree_range", "output", "walkers", "steps", "seed", "hole_errors", "mask_affine_sigma_ppm",
            "field_prior", "degree_choice", "residual", "flexure_degree", "flexure_functions", "flexure_radius_arcsec"}
FIELD_PRIORS = ("curved", "decay", "per_degree", "fixed")
DEGREE_CHOICES = ("median", "best")
RESIDUAL_CHOICES = ("none", "matern52", "auto")
EARTH_KEYS = {"iers_file", "leap_second_file", "allow_download"}
TOP_KEYS = {"instrument", "lab", "sky", "measure", "fit", "earth", "lms"}
LMS_KEYS = {"name", "mask", "mask_scale_mm_per_arcsec", "orientation", "truth_direction", "degree", "residual_m",
            "reference_detector", "offset_sigma_mas", "across_px_per_mas", "gain_e_per_adu", "read_noise_e",
            "settings", "frames", "hole_error_um", "hole_errors_from"}
LMS_ORIENTATION_KEYS = {"angle_deg", "flip", "offset_arcsec"}
LMS_SETTING_KEYS = {"lam_c_um", "order", "echelle_deg"}
LMS_FRAME_KEYS = {"file", "kind", "lam_c_um", "offset_arcsec", "lines_um", "background"}
#: the instrument of a campaign with [lms] and no [instrument] (the LMS's 8.2-mas pixels, 4 chips of 2048)
LMS_INSTRUMENT = dict(name="METIS LMS", detector_shape=(2048, 2048), pixel_scale_mas=8.2)

_PRESETS = {"metis img_lm": "metis-lm", "metis img_n": "metis-n", "metis-lm": "metis-lm",
            "metis-n": "metis-n"}


def _instrument(ctx, table, needs_mask=True):
    """``[instrument]``; ``needs_mask``: the campaign has lab datasets, which need the mask
    plate scale (a sky-only campaign does not)."""
    if not isinstance(table, dict):
        raise ctx.error("instrument", "must be a table [instrument]")
    _check_keys(ctx, table, INSTRUMENT_KEYS, "instrument.")
    name = _string(ctx, _require(ctx, table, "name", "instrument."), "instrument.name")
    preset = table.get("preset") or _PRESETS.get(name.strip().lower())
    defaults = {}
    if preset is not None:
        try:
            inst = get_instrument(preset)
        except (KeyError, ValueError) as exc:
            raise ctx.error("instrument.preset", str(exc)) from None
        defaults = {"detector_shape": tuple(inst.detector_shape),
                    "pixel_scale_mas": inst.pixel_scale_mas,
                    "mask_scale_mm_per_arcsec": inst.mask_scale_mm_per_arcsec}
    values = {}
    if "detector_shape" in table:
        shape = table["detector_shape"]
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
            raise ctx.error("instrument.detector_shape", f"expected [ny, nx] positive integers, got {shape!r}")
        values["detector_shape"] = tuple(shape)
    if "pixel_scale_mas" in table:
        values["pixel_scale_mas"] = _quantity(ctx, table["pixel_scale_mas"], u.mas, "instrument.pixel_scale_mas")
    if "mask_scale_mm_per_arcsec" in table:
        values["mask_scale_mm_per_arcsec"] = _quantity(
            ctx, table["mask_scale_mm_per_arcsec"], u.mm / u.arcsec, "instrument.mask_scale_mm_per_arcsec")
    values.update(_header_settings(ctx, table, preset))
    merged = {**defaults, **values}
    for key in ("detector_shape", "pixel_scale_mas", "mask_scale_mm_per_arcsec"):
        if key not in merged:
            if key == "mask_scale_mm_per_arcsec" and not needs_mask:
                merged[key] = None  # no [[lab]] dataset: no mask, no mask scale
                continue
            why = " and the campaign's [[lab]] datasets need it" if key == "mask_scale_mm_per_arcsec" else ""
            raise ctx.error(f"instrument.{key}", f"missing (no preset instrument supplies it{why})")
    for key in ("pixel_scale_mas", "mask_scale_mm_per_arcsec"):
        if merged[key] is not None and not merged[key] > 0:
            raise ctx.error(f"instrument.{key}", f"must be positive, got {merged[key]}")
    return InstrumentSpec(name=name, preset=preset, **merged)


def _header_settings(ctx, table, preset):
    """``[instrument.header_keywords]`` (validated against the keyword map's entries) and
    the defaults ``gain_e_per_adu``, ``read_noise_e``, ``exptime_s``."""
    from .instruments import HEADER_FIELDS, header_keywords

    out = {}
    mapping = table.get("header_keywords", {})
    if not isinstance(mapping, dict):
        raise ctx.error("instrument.header_keywords", "must be a table [instrument.header_keywords] "
                                                      'of entry = "KEYWORD" (or a list of keywords)')
    _check_keys(ctx, mapping, set(HEADER_FIELDS), "instrument.header_keywords.")
    for entry, value in mapping.items():
        names = [value] if isinstance(value, str) else value
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) and n.strip() for n in names)):
            raise ctx.error(f"instrument.header_keywords.{entry}",
                            f"expected a FITS keyword name or a list of names, got {value!r}")
    header_keywords(preset, mapping)  # the preset's map takes the entries
    out["header_keywords"] = dict(mapping)
    for key, unit, low in (("gain_e_per_adu", u.electron / u.adu, "positive"),
                           ("read_noise_e", u.electron, "non-negative"),
                           ("exptime_s", u.s, "positive")):
        if key in table:
            v = _quantity(ctx, table[key], unit, f"instrument.{key}")
            if not np.isfinite(v) or (v < 0 if low == "non-negative" else v <= 0):
                raise ctx.error(f"instrument.{key}", f"must be {low}, got {table[key]!r}")
            out[key] = v
    return out


def _exposures(ctx, base, items, prefix, allowed, keep_missing=False, refused=None):
    refused = refused or {}
    if not isinstance(items, list):
        raise ctx.error(f"{prefix}exposures", "must be a list of tables { file = ... }")
    if not items:
        raise ctx.error(f"{prefix}exposures", "the dataset has no exposures")
    out = []
    for k, item in enumerate(items):
        key = f"{prefix}exposures[{k}]"
        if not isinstance(item, dict):
            raise ctx.error(key, f"expected a table {{ file = ... }}, got {item!r}")
        for bad in item:
            if bad in refused:
                raise ctx.error(f"{key}.{bad}", refused[bad])
        _check_keys(ctx, item, allowed, f"{key}.")
        value = _require(ctx, item, "file", f"{key}.")
        if keep_missing and isinstance(value, str) and value:
            path = Path(value) if Path(value).is_absolute() else (base / value).resolve()
        else:
            path = _existing(ctx, base, value, f"{key}.file")
        offset = sigma = None
        if "offset_arcsec" in item:
            offset = _pair(ctx, item["offset_arcsec"], u.arcsec, f"{key}.offset_arcsec")
        if "offset_sigma_mas" in item:
            sigma = _quantity(ctx, item["offset_sigma_mas"], u.mas, f"{key}.offset_sigma_mas")
            if sigma <= 0:
                raise ctx.error(f"{key}.offset_sigma_mas", f"must be positive, got {sigma}")
        extra = {k2: v for k2, v in item.items() if k2 not in ("file", "offset_arcsec", "offset_sigma_mas")}
        out.append(Exposure(path, offset, sigma, extra))
    return tuple(out)


def _refuse_repeated_files(ctx, datasets):
    """The same exposure file listed twice (in one dataset or two) would enter the fit twice
    as if independent (and, with other offsets, contradict itself): refused, naming both
    exposures and their lines."""
    seen = {}
    for kind, items in datasets:
        for i, ds in enumerate(items):
            for k, e in enumerate(ds.exposures):
                key = f"{kind}[{i}].exposures[{k}].file"
                first = seen.setdefault(Path(e.file).resolve(), key)
                if first != key:
                    line = ctx.line_of(first)
                    raise ctx.error(key, f"{e.file} is listed twice: also as '{first}'"
                                         + (f" (line {line})" if line else "")
                                         + "; list each frame once")


def _lab(ctx, base, items, keep_missing=False):
    if not isinstance(items, list):
        raise ctx.error("lab", "must be an array of tables [[lab]]")
    out = []
    for i, table in enumerate(items):
        prefix = f"lab[{i}]."
        _check_keys(ctx, table, LAB_KEYS, prefix)
        mask = _existing(ctx, base, _require(ctx, table, "mask", prefix), f"{prefix}mask")
        filt = _path_name(ctx, _require(ctx, table, "filter", prefix), f"{prefix}filter")
        exposures = _exposures(ctx, base, _require(ctx, table, "exposures", prefix), prefix,
                               LAB_EXPOSURE_KEYS, keep_missing)
        background = _existing(ctx, base, table["background"], f"{prefix}background") if "background" in table else None
        flat = _existing(ctx, base, table["flat"], f"{prefix}flat") if "flat" in table else None
        name = _path_name(ctx, table.get("name", f"lab{i}"), f"{prefix}name")
        normalised = table.get("flat_normalised")
        if normalised is not None and not isinstance(normalised, bool):
            raise ctx.error(f"{prefix}flat_normalised", f"expected true or false, got {normalised!r}")
        if normalised is not None and flat is None:
            raise ctx.error(f"{prefix}flat_normalised", "the dataset has no flat")
        out.append(LabDataset(name, mask, filt, exposures, background, flat, normalised))
    return tuple(out)


def _column_choice(ctx, table, key, prefix):
    """A star-list column: a name (str) or a 0-based index (int >= 0); None if absent."""
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ctx.error(f"{prefix}{key}", f"expected a column name or a 0-based column index, "
                                          f"got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ctx.error(f"{prefix}{key}", f"a column index is 0-based and >= 0, got {value}")
    return value


def _angle(ctx, value, key, *, hours=False):
    """An angle in degrees from a number (deg) or a string ("266.4 deg", "17h45m40s",
    "-29:00:28" -- colons are hours for ``hours=True``, degrees otherwise)."""
    from astropy.coordinates import Angle

    if isinstance(value, bool):
        raise ctx.error(key, f"expected an angle, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            unit = None
            if not any(c.isalpha() for c in text):
                unit = u.hourangle if hours else u.deg
            return float(Angle(text, unit=unit).to_value(u.deg))
        except (ValueError, u.UnitsError, TypeError):
            raise ctx.error(key, f"cannot read {value!r} as an angle (a number in deg, or e.g. "
                                 "'17h45m40.04s', '-29d00m28.2s', '266.4 deg')") from None
    raise ctx.error(key, f"expected an angle (deg or a string), got {value!r}")


def _sky_exposure_values(ctx, item, key, space=False):
    """Validate and convert the values of one [[sky]] exposure (see Exposure.extra); ``space``:
    the dataset's site is in space (no atmosphere, no horizon; its velocity aberration keys)."""
    from .sky.astrometry import (ABERRATION_SCALE_RANGE, MAX_OBSERVER_SPEED_KM_S, AstrometryError,
                                 parse_time)

    for name in (GROUND_ONLY_KEYS if space else SPACE_ONLY_KEYS):
        if name in item:
            why = ("the dataset's site is in space: no atmosphere (refraction, weather) and no horizon "
                   "(zenith distance, parallactic and rotator angle); give position_angle_deg" if space else
                   "for an observatory in space only (site = \"space\", \"hst\", \"jwst\"); at a ground site "
                   "the Earth's motion is part of the apparent positions")
            raise ctx.error(f"{key}.{name}", why)

    out = {}
    if "time" in item:
        value = item["time"]
        clock = True
        try:
            if isinstance(value, bool):
                raise AstrometryError("a boolean is not a time")
            if hasattr(value, "isoformat") and not hasattr(value, "hour"):  # a TOML date
                value, clock = value.isoformat(), False
            if isinstance(value, (int, float)):  # a decimal (Julian) year: an epoch
                clock = False
            elif isinstance(value, str) and (DATE_ONLY.match(value.strip()) or EPOCH_TEXT.match(value.strip())):
                clock = False
                if EPOCH_TEXT.match(value.strip()) and value.strip()[0] not in "JB":
                    value = float(value)
            t = parse_time(value, "time")
        except (AstrometryError, ValueError) as exc:
            raise ctx.error(f"{key}.time", f"cannot parse {value!r} as a time: {exc}") from None
        out["time"] = t.utc.isot
        if not clock:
            out["clock_time"] = False
    for name, hours, lo, hi in (("ra", True, 0.0, 360.0), ("dec", False, -90.0, 90.0)):
        if name in item:
            v = _angle(ctx, item[name], f"{key}.{name}", hours=hours)
            if not (lo <= v < hi if name == "ra" else lo <= v <= hi):
                raise ctx.error(f"{key}.{name}", f"must be in {lo:g}..{hi:g} deg, got {v:g}")
            out[name] = v
    if ("ra" in out) != ("dec" in out):
        missing = "dec" if "ra" in out else "ra"
        raise ctx.error(f"{key}.{missing}", "the pointing needs both ra and dec")
    angles = [k for k in ("position_angle_deg", "rotator_angle_deg") if k in item]
    if len(angles) > 1:
        raise ctx.error(f"{key}.rotator_angle_deg", "give at most one of position_angle_deg and "
                                                   "rotator_angle_deg (the other follows from the "
                                                   "time, pointing and site)")
    for name in angles:
        out[name] = _quantity(ctx, item[name], u.deg, f"{key}.{name}")
    if "parity" in item:
        p = item["parity"]
        if isinstance(p, bool) or p not in (1, -1):
            raise ctx.error(f"{key}.parity", f"must be +1 or -1, got {p!r}")
        out["parity"] = int(p)
    if "zenith_distance_deg" in item:
        z = _quantity(ctx, item["zenith_distance_deg"], u.deg, f"{key}.zenith_distance_deg")
        if not 0.0 <= z < 90.0:
            raise ctx.error(f"{key}.zenith_distance_deg", f"must be in 0..90 deg, got {z:g}")
        out["zenith_distance_deg"] = z
    if "parallactic_angle_deg" in item:
        if "zenith_distance_deg" not in item:
            raise ctx.error(f"{key}.parallactic_angle_deg", "a parallactic angle needs the zenith distance "
                                                            "(zenith_distance_deg) too")
        out["parallactic_angle_deg"] = _quantity(ctx, item["parallactic_angle_deg"], u.deg,
                                                 f"{key}.parallactic_angle_deg")
    if "refraction" in item:
        if not isinstance(item["refraction"], bool):
            raise ctx.error(f"{key}.refraction", f"expected true or false, got {item['refraction']!r}")
        out["refraction"] = item["refraction"]
    if "pressure_hpa" in item:
        pr = _quantity(ctx, item["pressure_hpa"], u.hPa, f"{key}.pressure_hpa")
        if not 0.0 <= pr <= 1200.0:
            raise ctx.error(f"{key}.pressure_hpa", f"must be in 0..1200 hPa, got {pr:g}")
        out["pressure_hpa"] = pr
    if "temperature_c" in item:
        out["temperature_c"] = _temperature(ctx, item["temperature_c"], f"{key}.temperature_c")
    if "humidity" in item:
        out["humidity"] = _humidity(ctx, item["humidity"], f"{key}.humidity")
    if "wavelength_um" in item:
        wl = _quantity(ctx, item["wavelength_um"], u.um, f"{key}.wavelength_um")
        if not wl > 0:
            raise ctx.error(f"{key}.wavelength_um", f"must be positive, got {wl:g}")
        out["wavelength_um"] = wl
    if out.get("refraction") is False and out.get("pressure_hpa", 0.0) > 0:
        raise ctx.error(f"{key}.refraction", f"refraction = false contradicts pressure_hpa = "
                                             f"{out['pressure_hpa']:g} (refraction off is pressure 0)")
    if "velocity_aberration_scale" in item:
        f = _quantity(ctx, item["velocity_aberration_scale"], u.dimensionless_unscaled,
                      f"{key}.velocity_aberration_scale")
        if not abs(f - 1.0) <= ABERRATION_SCALE_RANGE:
            raise ctx.error(f"{key}.velocity_aberration_scale", f"a velocity aberration scale factor (HST "
                            f"VAFACTOR, JWST VA_SCALE) is 1 within {ABERRATION_SCALE_RANGE:g}, got {f!r}")
        out["velocity_aberration_scale"] = f
    if "observer_velocity_km_s" in item:
        v = item["observer_velocity_km_s"]
        if not isinstance(v, list) or len(v) != 3:
            raise ctx.error(f"{key}.observer_velocity_km_s", f"expected [vx, vy, vz] (barycentric, ICRS axes, "
                                                              f"km/s), got {v!r}")
        vel = [_quantity(ctx, c, u.km / u.s, f"{key}.observer_velocity_km_s") for c in v]
        if float(np.linalg.norm(vel)) > MAX_OBSERVER_SPEED_KM_S:
            raise ctx.error(f"{key}.observer_velocity_km_s", f"a barycentric speed of {np.linalg.norm(vel):.1f} "
                                                              f"km/s (more than {MAX_OBSERVER_SPEED_KM_S:g}): not km/s?")
        if "velocity_aberration_scale" in out:
            raise ctx.error(f"{key}.observer_velocity_km_s", "give one of observer_velocity_km_s and "
                                                              "velocity_aberration_scale")
        out["observer_velocity_km_s"] = vel
    if space:
        return out
    if out.get("clock_time") is False:
        off = out.get("refraction") is False or out.get("pressure_hpa") == 0.0
        if not off and not ("zenith_distance_deg" in out and "parallactic_angle_deg" in out):
            raise ctx.error(f"{key}.time", "an epoch without a clock time: refraction needs the field's "
                                           "zenith_distance_deg and parallactic_angle_deg (give both), or "
                                           "switch it off with refraction = false (its differential part "
                                           "across the field is then not corrected)")
    return out


SITE_KEYS = {"name", "latitude_deg", "longitude_deg", "height_m", "pressure_hpa", "temperature_c", "humidity"}


def _site(ctx, value, key):
    """A [[sky]] dataset's ``site``: a name or alias of astrocal's site table, or a table
    with ``latitude_deg``, ``longitude_deg``, ``height_m`` (optional ``name`` and typical
    weather ``pressure_hpa``, ``temperature_c``, ``humidity``), or a table with a known
    ``name`` and weather keys only (that site's typical weather replaced). Returns the
    :class:`astrocal.sky.sites.Site`."""
    from .sky.sites import (HEIGHT_RANGE, LATITUDE_RANGE, LONGITUDE_RANGE, SiteError, custom_site, get_site,
                            is_space)

    if isinstance(value, str):
        try:
            return get_site(value)
        except KeyError as exc:
            raise ctx.error(key, str(exc)) from None
    if isinstance(value, dict) and is_space(str(value.get("name", ""))):
        raise ctx.error(key, f"{value['name']!r} is an observatory in space: it has no position and no weather; "
                             f"write site = \"{value['name']}\"")
    if not isinstance(value, dict):
        raise ctx.error(key, f"expected a site name (e.g. \"armazones\", \"keck\") or a table "
                             f"{{ latitude_deg = ..., longitude_deg = ..., height_m = ... }}, got {value!r}")
    _check_keys(ctx, value, SITE_KEYS, f"{key}.")
    name = _string(ctx, value["name"], f"{key}.name").strip() if "name" in value else None
    if name == "":
        raise ctx.error(f"{key}.name", "must not be empty")
    weather = {}
    if "pressure_hpa" in value:
        weather["pressure_hpa"] = _quantity(ctx, value["pressure_hpa"], u.hPa, f"{key}.pressure_hpa")
    if "temperature_c" in value:
        weather["temperature_c"] = _temperature(ctx, value["temperature_c"], f"{key}.temperature_c")
    if "humidity" in value:
        weather["relative_humidity"] = _humidity(ctx, value["humidity"], f"{key}.humidity")
    try:
        if not any(k in value for k in ("latitude_deg", "longitude_deg", "height_m")):
            if name is None:
                raise ctx.error(f"{key}.latitude_deg", "missing: a site table gives a position (latitude_deg, "
                                                       "longitude_deg, height_m) or the name of a known site",
                                at=key)
            try:
                site = get_site(name)
            except KeyError as exc:
                raise ctx.error(f"{key}.name", str(exc)) from None
            return site.with_weather(**weather, source=f"campaign {ctx.path.name}")
        for k in ("latitude_deg", "longitude_deg", "height_m"):
            if k not in value:
                raise ctx.error(f"{key}.{k}", "missing: a site's position needs latitude_deg, longitude_deg "
                                              "and height_m", at=key)
        lat = _angle(ctx, value["latitude_deg"], f"{key}.latitude_deg")
        lon = _angle(ctx, value["longitude_deg"], f"{key}.longitude_deg")
        height = _quantity(ctx, value["height_m"], u.m, f"{key}.height_m")
        for k, v, (lo, hi), unit in (("latitude_deg", lat, LATITUDE_RANGE, "deg"),
                                     ("longitude_deg", lon, LONGITUDE_RANGE, "deg (east)"),
                                     ("height_m", height, HEIGHT_RANGE, "m")):
            if not lo <= v <= hi:
                raise ctx.error(f"{key}.{k}", f"must be in {lo:g}..{hi:g} {unit}, got {v:g}")
        return custom_site(lat, lon, height, name=name or "custom", source=f"campaign {ctx.path.name}",
                           **weather)
    except SiteError as exc:
        field_key = {"relative_humidity": "humidity"}.get(exc.key, exc.key or "name")
        raise ctx.error(f"{key}.{field_key}", str(exc)) from None


def _temperature(ctx, value, key):
    """A temperature in deg C from a number (C) or a string with a unit ("281 K")."""
    if isinstance(value, str):
        try:
            tc = float(u.Quantity(value).to_value(u.deg_C, equivalencies=u.temperature()))
        except (TypeError, ValueError, u.UnitsError):
            raise ctx.error(key, f"cannot read {value!r} as a temperature (a number in deg C, or e.g. "
                                 "'281 K')") from None
    else:
        tc = _quantity(ctx, value, u.deg_C, key)
    if not -90.0 <= tc <= 60.0:
        raise ctx.error(key, f"must be in -90..60 C, got {tc:g}")
    return tc


def _humidity(ctx, value, key):
    """A relative humidity as a fraction 0..1 (a number, or a string such as "15 %")."""
    h = _quantity(ctx, value, u.dimensionless_unscaled, key)
    if not 0.0 <= h <= 1.0:
        hint = " (per cent? write e.g. \"15 %\" or 0.15)" if 1.0 < h <= 100.0 else ""
        raise ctx.error(key, f"relative humidity is a fraction 0..1, got {h:g}{hint}")
    return h


def _sky(ctx, base, items, keep_missing=False):
    import dataclasses

    if not isinstance(items, list):
        raise ctx.error("sky", "must be an array of tables [[sky]]")
    out = []
    for i, table in enumerate(items):
        prefix = f"sky[{i}]."
        _check_keys(ctx, table, SKY_KEYS, prefix)
        given = _require(ctx, table, "catalog", prefix)
        catalog = _existing(ctx, base, given, f"{prefix}catalog")
        exposures = _exposures(ctx, base, _require(ctx, table, "exposures", prefix), prefix,
                               SKY_EXPOSURE_KEYS, keep_missing, refused=SKY_EXPOSURE_REFUSED)
        site = _site(ctx, table.get("site", "armazones"), f"{prefix}site")
        converted = []
        for k, (e, item) in enumerate(zip(exposures, table["exposures"])):
            values = _sky_exposure_values(ctx, item, f"{prefix}exposures[{k}]", space=site.is_space)
            if "header" in item:
                values["header"] = str(_existing(ctx, base, item["header"], f"{prefix}exposures[{k}].header"))
            converted.append(dataclasses.replace(e, extra=values))
        filt = _path_name(ctx, table["filter"], f"{prefix}filter") if "filter" in table else None
        name = _path_name(ctx, table.get("name", f"sky{i}"), f"{prefix}name")
        background = _existing(ctx, base, table["background"], f"{prefix}background") if "background" in table else None
        flat = _existing(ctx, base, table["flat"], f"{prefix}flat") if "flat" in table else None
        cols = {c: _column_choice(ctx, table, c, prefix)
                for c in ("x_col", "y_col", "flux_col", "mag_col", "sigma_x_col", "sigma_y_col")}
        if (cols["sigma_x_col"] is None) != (cols["sigma_y_col"] is None):
            given, missing = (("sigma_x_col", "sigma_y_col") if cols["sigma_y_col"] is None
                              else ("sigma_y_col", "sigma_x_col"))
            raise ctx.error(f"{prefix}{given}", f"position errors need both sigma_x_col and "
                                                f"sigma_y_col ({missing} is missing)")
        one_based = table.get("one_based")
        if one_based is not None and not isinstance(one_based, bool):
            raise ctx.error(f"{prefix}one_based", f"expected true or false, got {one_based!r}")
        band = _string(ctx, table["band"], f"{prefix}band") if "band" in table else None
        strehl = None
        if "strehl" in table:
            strehl = _quantity(ctx, table["strehl"], u.dimensionless_unscaled, f"{prefix}strehl")
            if not 0.0 < strehl <= 1.0:
                raise ctx.error(f"{prefix}strehl", f"must be in (0, 1], got {strehl:g}")
        out.append(SkyDataset(name, catalog, tuple(converted), site, filt, catalog_given=given,
                              background=background, flat=flat, one_based=one_based, band=band,
                              strehl=strehl, **cols))
    return tuple(out)



def _measure(ctx, base, table):
    _check_keys(ctx, table, MEASURE_KEYS, "measure.")
    output = base / _string(ctx, table.get("output", "measured/"), "measure.output")
    psf = _string(ctx, table.get("psf", "model"), "measure.psf")
    if psf not in ("model", "epsf"):
        raise ctx.error("measure.psf", f"must be 'model' or 'epsf', got {psf!r}")
    return MeasureSettings(output=output, psf=psf)


def _flexure(ctx, table, instrument):
    """flexure_degree, flexure_functions, flexure_radius_arcsec, validated by FlexureBasis."""
    from .model.flexure import DEFAULT_FUNCTIONS, FlexureBasis

    degree = _int(ctx, table.get("flexure_degree", 2), "fit.flexure_degree", minimum=1)
    if degree > 5:
        raise ctx.error("fit.flexure_degree", f"must be an integer 1..5, got {degree}")
    functions = table.get("flexure_functions", list(DEFAULT_FUNCTIONS))
    if (not isinstance(functions, list) or not functions
            or not all(isinstance(f, str) for f in functions)):
        raise ctx.error("fit.flexure_functions", f"expected a non-empty list of names, got {functions!r}")
    if "flexure_radius_arcsec" in table:
        radius = _quantity(ctx, table["flexure_radius_arcsec"], u.arcsec, "fit.flexure_radius_arcsec")
    else:  # half the detector's field of view
        radius = 0.5 * max(instrument.detector_shape) * instrument.pixel_scale_mas / 1e3
    try:
        FlexureBasis(degree, tuple(functions), radius)
    except ValueError as exc:
        key = ("fit.flexure_radius_arcsec" if "radius" in str(exc) else "fit.flexure_functions")
        raise ctx.error(key, str(exc)) from None
    return degree, tuple(functions), float(radius)


def _fit(ctx, base, table, instrument):
    _check_keys(ctx, table, FIT_KEYS, "fit.")
    degree = table.get("degree", "auto")
    if degree != "auto":
        degree = _int(ctx, degree, "fit.degree", minimum=1)
        if degree > 12:
            raise ctx.error("fit.degree", f"must be 'auto' or 1..12, got {degree}")
    rng = table.get("degree_range", [3, 8])
    if (not isinstance(rng, list) or len(rng) != 2 or not all(isinstance(v, int) for v in rng)
            or not 1 <= rng[0] <= rng[1] <= 12):
        raise ctx.error("fit.degree_range", f"expected [low, high] with 1 <= low <= high <= 12, got {rng!r}")
    output = base / _string(ctx, table.get("output", "out/"), "fit.output")
    walkers = _int(ctx, table.get("walkers", 32), "fit.walkers", minimum=4)
    steps = _int(ctx, table.get("steps", 15000), "fit.steps", minimum=1)
    seed = table.get("seed")
    if seed is not None:
        seed = _int(ctx, seed, "fit.seed", minimum=0)
    hole_errors = table.get("hole_errors", True)
    if not isinstance(hole_errors, bool):
        raise ctx.error("fit.hole_errors", f"expected true or false, got {hole_errors!r}")
    field_prior = _one_of(ctx, table.get("field_prior", "curved"), "fit.field_prior", FIELD_PRIORS)
    choice = _one_of(ctx, table.get("degree_choice", "median"), "fit.degree_choice", DEGREE_CHOICES)
    fdeg, ffun, frad = _flexure(ctx, table, instrument)
    mask_ppm = table.get("mask_affine_sigma_ppm")
    if mask_ppm is not None:
        mask_ppm = _quantity(ctx, mask_ppm, u.dimensionless_unscaled, "fit.mask_affine_sigma_ppm")
        if not np.isfinite(mask_ppm) or mask_ppm < 0:
            raise ctx.error("fit.mask_affine_sigma_ppm", f"must be a number >= 0 (ppm), got {mask_ppm!r}")
    residual = _one_of(ctx, table.get("residual", FitSettings.residual), "fit.residual", RESIDUAL_CHOICES)
    return FitSettings(output, degree, tuple(rng), walkers, steps, seed, hole_errors,
                       flexure_degree=fdeg, flexure_functions=ffun, flexure_radius_arcsec=frad,
                       field_prior=field_prior, degree_choice=choice, mask_affine_sigma_ppm=mask_ppm,
                       residual=residual)


def _earth(ctx, base, table):
    if not isinstance(table, dict):
        raise ctx.error("earth", f"expected a table [earth], got {table!r}")
    _check_keys(ctx, table, EARTH_KEYS, "earth.")
    files = {k: _existing(ctx, base, table[k], f"earth.{k}") if table.get(k) is not None else None
             for k in ("iers_file", "leap_second_file")}
    for k, path in files.items():
        if path is not None and not path.is_file():
            raise ctx.error(f"earth.{k}", f"not a file: {path}")
    allow = table.get("allow_download", False)
    if not isinstance(allow, bool):
        raise ctx.error("earth.allow_download", f"expected true or false, got {allow!r}")
    return EarthSettings(files["iers_file"], files["leap_second_file"], allow)


def _lms_float(ctx, table, key, unit, prefix, default=None, positive=False):
    if key not in table:
        return default
    v = _quantity(ctx, table[key], unit, f"{prefix}{key}")
    if v < 0 or (positive and v == 0):
        raise ctx.error(f"{prefix}{key}", f"must be {'> 0' if positive else '>= 0'}, got {v:g}")
    return v


def _lms_settings(ctx, items):
    """``[[lms.settings]]``: central wavelengths, each checked against the order and echelle
    angle given (the setting astrocal's optical model chooses for that wavelength)."""
    from .lms import echelle_setting
    from .lms.errors import EchelleSettingError

    if not isinstance(items, list) or not items:
        raise ctx.error("lms.settings", "expected one or more [[lms.settings]] tables (lam_c_um = ...)")
    out = []
    for k, item in enumerate(items):
        prefix = f"lms.settings[{k}]."
        if not isinstance(item, dict):
            raise ctx.error(f"lms.settings[{k}]", f"expected a table, got {item!r}")
        _check_keys(ctx, item, LMS_SETTING_KEYS, prefix)
        lam = _quantity(ctx, _require(ctx, item, "lam_c_um", prefix), u.um, f"{prefix}lam_c_um")
        try:
            st = echelle_setting(lam)
        except EchelleSettingError as exc:
            raise ctx.error(f"{prefix}lam_c_um", str(exc)) from None
        if "order" in item and _int(ctx, item["order"], f"{prefix}order") != st.order:
            raise ctx.error(f"{prefix}order", f"central wavelength {lam} um is echelle order {st.order} in the "
                                              f"optical model, not {item['order']}")
        if "echelle_deg" in item:
            ang = _quantity(ctx, item["echelle_deg"], u.deg, f"{prefix}echelle_deg")
            if abs(ang - st.echelle_deg) > 1e-6:
                raise ctx.error(f"{prefix}echelle_deg", f"central wavelength {lam} um has the echelle angle "
                                                        f"{st.echelle_deg:.6f} deg in the optical model, not {ang}")
        if any(o.lam_c_um == st.lam_c_um for o in out):
            raise ctx.error(f"{prefix}lam_c_um", f"setting {lam} um listed twice")
        out.append(st)
    return tuple(out)


def _lms_frames(ctx, base, items, settings, truth, keep_missing):
    """``[[lms.frames]]``: files, kinds, settings, offsets, laser lines (inside the setting's
    wavelength range), backgrounds."""
    from .lms import NominalMap

    if not isinstance(items, list) or not items:
        raise ctx.error("lms.frames", "expected one or more [[lms.frames]] tables (file = ..., kind = ...)")
    lams = [st.lam_c_um for st in settings]
    out = []
    for k, item in enumerate(items):
        prefix = f"lms.frames[{k}]."
        if not isinstance(item, dict):
            raise ctx.error(f"lms.frames[{k}]", f"expected a table, got {item!r}")
        _check_keys(ctx, item, LMS_FRAME_KEYS, prefix)
        given = _require(ctx, item, "file", prefix)
        if keep_missing:
            if not isinstance(given, str) or not given:
                raise ctx.error(f"{prefix}file", f"expected a path string, got {given!r}")
            file = (base / given).resolve() if not Path(given).is_absolute() else Path(given)
        else:
            file = _existing(ctx, base, given, f"{prefix}file")
        kind = _one_of(ctx, _require(ctx, item, "kind", prefix), f"{prefix}kind", LMS_FRAME_KINDS)
        lam = _quantity(ctx, _require(ctx, item, "lam_c_um", prefix), u.um, f"{prefix}lam_c_um")
        if lam not in lams:
            raise ctx.error(f"{prefix}lam_c_um", f"{lam} um is not one of the [[lms.settings]] ({lams})")
        offset = None
        if kind in ("laser", "grid"):
            offset = _pair(ctx, _require(ctx, item, "offset_arcsec", prefix), u.arcsec, f"{prefix}offset_arcsec")
        elif "offset_arcsec" in item:
            raise ctx.error(f"{prefix}offset_arcsec", f"a {kind} frame has no mask in the beam: no offset")
        lines = ()
        if kind == "laser":
            raw = _require(ctx, item, "lines_um", prefix)
            if not isinstance(raw, list) or not raw:
                raise ctx.error(f"{prefix}lines_um", f"expected a list of laser lines [um], got {raw!r}")
            lines = tuple(_quantity(ctx, v, u.um, f"{prefix}lines_um") for v in raw)
            lo, hi = NominalMap(settings[lams.index(lam)], truth).wavelength_range
            bad = [v for v in lines if not lo <= v <= hi]
            if bad:
                raise ctx.error(f"{prefix}lines_um", f"laser line(s) {bad} um outside the wavelength range "
                                                     f"{lo:.4f}..{hi:.4f} um of the setting {lam} um")
        elif "lines_um" in item:
            raise ctx.error(f"{prefix}lines_um", f"only laser frames have laser lines, this is a {kind} frame")
        background = None
        if "background" in item:
            if kind == "background":
                raise ctx.error(f"{prefix}background", "a background frame has no background")
            background = _existing(ctx, base, item["background"], f"{prefix}background")
        out.append(LmsFrameSpec(file, kind, lam, offset, lines, background))
    seen = {}
    for k, f in enumerate(out):
        first = seen.setdefault(Path(f.file).resolve(), k)
        if first != k:
            raise ctx.error(f"lms.frames[{k}].file", f"{f.file} is listed twice (also lms.frames[{first}]); "
                                                     "list each frame once")
    return tuple(out)


def _lms(ctx, base, table, keep_missing=False):
    """``[lms]``: the LMS data set (see :class:`LmsDataset`, docs/campaign.md)."""
    from .lms import FieldOrientation

    if not isinstance(table, dict):
        raise ctx.error("lms", "must be a table [lms]")
    _check_keys(ctx, table, LMS_KEYS, "lms.")
    name = _path_name(ctx, table.get("name", "lms"), "lms.name")
    mask = _existing(ctx, base, _require(ctx, table, "mask", "lms."), "lms.mask")
    scale = _lms_float(ctx, table, "mask_scale_mm_per_arcsec", u.mm / u.arcsec, "lms.", 3.319, positive=True)
    o = table.get("orientation", {})
    if not isinstance(o, dict):
        raise ctx.error("lms.orientation", "expected a table { angle_deg = ..., flip = ..., offset_arcsec = [..] }")
    _check_keys(ctx, o, LMS_ORIENTATION_KEYS, "lms.orientation.")
    flip = o.get("flip", False)
    if not isinstance(flip, bool):
        raise ctx.error("lms.orientation.flip", f"expected true or false, got {flip!r}")
    angle = _quantity(ctx, o["angle_deg"], u.deg, "lms.orientation.angle_deg") if "angle_deg" in o else 0.0
    off = _pair(ctx, o["offset_arcsec"], u.arcsec, "lms.orientation.offset_arcsec") if "offset_arcsec" in o \
        else (0.0, 0.0)
    truth = _one_of(ctx, table.get("truth_direction", "forward"), "lms.truth_direction", ("forward", "inverse"))
    degree = _int(ctx, table.get("degree", 2), "lms.degree", minimum=0)
    if degree > 5:
        raise ctx.error("lms.degree", f"must be 0..5, got {degree}")
    residual_m = _int(ctx, table.get("residual_m", 0), "lms.residual_m", minimum=0)
    if residual_m > 10:
        raise ctx.error("lms.residual_m", f"must be 0 (none) .. 10 functions per dimension, got {residual_m}")
    ref = table.get("reference_detector", 1)
    if ref == "none":
        ref = None
    elif isinstance(ref, bool) or ref not in (1, 2, 3, 4):
        raise ctx.error("lms.reference_detector", f"must be 1..4 or \"none\", got {ref!r}")
    sigma = _lms_float(ctx, table, "offset_sigma_mas", u.mas, "lms.", 1.0)
    across = _lms_float(ctx, table, "across_px_per_mas", u.pix / u.mas, "lms.", 0.05)
    hole_um = _lms_float(ctx, table, "hole_error_um", u.um, "lms.", 0.5)
    src = table.get("hole_errors_from")
    if src is not None:
        if not isinstance(src, str) or not src:
            raise ctx.error("lms.hole_errors_from", f"expected a path string (an imager fit's output directory or "
                                                    f"its posterior.h5), got {src!r}")
        src = (base / src).resolve() if not Path(src).is_absolute() else Path(src)
        if hole_um == 0:
            raise ctx.error("lms.hole_errors_from", "given with hole_error_um = 0 (hole errors off): drop one")
    gain = _lms_float(ctx, table, "gain_e_per_adu", u.electron / u.adu, "lms.", positive=True)
    ron = _lms_float(ctx, table, "read_noise_e", u.electron, "lms.")
    settings = _lms_settings(ctx, _require(ctx, table, "settings", "lms."))
    frames = _lms_frames(ctx, base, _require(ctx, table, "frames", "lms."), settings, truth, keep_missing)
    if not any(f.kind == "laser" for f in frames):
        raise ctx.error("lms.frames", "no laser frame: the LMS fit needs laser spots (kind = \"laser\")")
    return LmsDataset(name, mask, scale, FieldOrientation(angle, flip, off), truth, degree, ref, sigma, across,
                      settings, frames, gain, ron, residual_m, hole_um, src)


def load_campaign(path, missing_exposures="error"):
    """Read and validate a campaign TOML file; returns a :class:`Campaign`.

    ``missing_exposures="keep"`` accepts lab and sky exposures whose file does not exist
    (so a stage can process the others and report those); everything else is still checked.
    """
    if missing_exposures not in ("error", "keep"):
        raise ValueError(f"missing_exposures must be 'error' or 'keep', got {missing_exposures!r}")
    path = Path(path).resolve()
    if not path.exists():
        raise CampaignError(f"{path}: campaign file not found")
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: not valid TOML: {exc}") from None
    ctx = _Context(path, text)
    base = path.parent
    _check_keys(ctx, data, TOP_KEYS, "")
    lms = _lms(ctx, base, data["lms"], keep_missing=missing_exposures == "keep") if "lms" in data else None
    if "instrument" in data or lms is None:
        instrument = _instrument(ctx, _require(ctx, data, "instrument", ""), needs_mask=bool(data.get("lab")))
    else:  # an LMS campaign: the imager's [instrument] is needed only with [[lab]] or [[sky]] datasets
        if data.get("lab") or data.get("sky"):
            raise ctx.error("instrument", "missing required key: the [[lab]] and [[sky]] datasets need the "
                                          "imager's [instrument]")
        instrument = InstrumentSpec(**LMS_INSTRUMENT, mask_scale_mm_per_arcsec=lms.mask_scale_mm_per_arcsec)
    lab = _lab(ctx, base, data.get("lab", []), keep_missing=missing_exposures == "keep")
    sky = _sky(ctx, base, data.get("sky", []), keep_missing=missing_exposures == "keep")
    if not lab and not sky and lms is None:
        raise CampaignError(f"{path}: the campaign has no [[lab]] and no [[sky]] dataset (and no [lms])")
    _refuse_repeated_files(ctx, (("lab", lab), ("sky", sky)))
    names = [d.name for d in lab + sky] + ([lms.name] if lms else [])
    if len(set(names)) != len(names):
        raise CampaignError(f"{path}: dataset names must be distinct, got {names}")
    measure = _measure(ctx, base, data.get("measure", {}))
    fit = _fit(ctx, base, data.get("fit", {}), instrument)
    earth = _earth(ctx, base, data.get("earth", {}))
    return Campaign(path, instrument, lab, sky, measure, fit, hashlib.sha256(raw).hexdigest(), earth, lms)
