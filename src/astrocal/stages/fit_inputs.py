"""What ``astrocal fit`` fits: a campaign's measured source tables found, read and turned
into the model's points.

- :func:`fit_groups`: the fits a campaign asks for (one per filter: its lab and sky
  datasets);
- :func:`source_table_path`, :func:`measured_table_kind`: an exposure's measured source
  table (the file itself when it is one, else the measure stage's output for it, found
  through its ``summary.ecsv``), recognised by the columns of :mod:`astrocal.sources`;
- :func:`lab_points_for`, :func:`sky_points_for`: the points of a filter's lab datasets
  (hole positions on the mask, commanded offsets with their accuracy) and of its sky
  datasets (stars' apparent positions at each exposure's epoch, site and weather:
  :func:`sky_exposure_settings`), as :mod:`astrocal.model.data` takes them;
- :func:`mask_affine_sigma`: the metrology of the mask's net scale and shears;
- :func:`mask_record`: which mask a lab fit used, as ``fit.json`` records it.

Pixel positions are 0-based; offsets in arcsec, their accuracy in mas.
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from astropy.table import Table

from ..campaign import Campaign, Exposure, FitSettings, LabDataset, SkyDataset
from ..checksum import file_sha256
from ..lab.mask import check_mask_scale, load_mask
from ..model.data import DataError, Points, lab_points_from_tables, sky_points_from_tables
from ..sky.astrometry import EpochGapWarning, apparent_positions
from ..sky.catalog import load_catalog
from ..sky.exposure import UNKNOWN_HORIZON
from ..sky.sites import is_space
from ..sources import MEASURED_COLUMNS

log = logging.getLogger(__name__)

#: commanded offsets with no stated accuracy get this prior width (i.e. barely known)
UNKNOWN_OFFSET_SIGMA_MAS = 1000.0

#: prior width (arcsec) of a sky exposure's pointing (its pose translation)
SKY_POINTING_SIGMA_ARCSEC = 2.0


def fit_groups(campaign: Campaign) -> dict[str, tuple[list[LabDataset], list[SkyDataset]]]:
    """The fits a campaign asks for.

    Lab and sky datasets of the same filter are fitted jointly; a sky dataset without a
    filter joins the lab filter when there is exactly one, else it is fitted on its own
    under the name ``sky``.

    Parameters
    ----------
    campaign : Campaign
        The loaded campaign.

    Returns
    -------
    dict
        ``{filter: (lab datasets, sky datasets)}``.
    """
    groups = {}
    for d in campaign.lab:
        groups.setdefault(d.filter, ([], []))[0].append(d)
    for d in campaign.sky:
        filt = d.filter
        if filt is None:
            filt = next(iter(groups)) if len(groups) == 1 else "sky"
        groups.setdefault(filt, ([], []))[1].append(d)
    return groups


def source_table_path(campaign: Campaign, exposure_file: str | os.PathLike, dataset: str | None = None) -> Path:
    """The measured source table of an exposure: the file itself if it is one, else the
    measure stage's output for it.

    A measured table is recognised by its content (:func:`measured_table_kind`: an ECSV
    table with the columns and metadata the measure stage writes), not by its extension:
    a star list given as a sky exposure (ECSV, CSV, text, DAOPHOT, StarFinder) is raw input
    like an image, and its measured table is looked up. The measure stage's
    ``summary.ecsv`` (in ``[measure] output``) names the table of every exposure it
    measured (``<stem>.ecsv``, or ``<dataset>_<stem>.ecsv`` when two exposures share a file
    name); it is looked up by the exposure's file (and ``dataset``, a name). Without a
    summary the table is ``<stem>.ecsv``.

    Parameters
    ----------
    campaign : Campaign
        The loaded campaign.
    exposure_file : str or os.PathLike
        The exposure's file.
    dataset : str, optional
        The exposure's dataset name.

    Returns
    -------
    Path

    Raises
    ------
    DataError
        The exposure failed in the measure stage.
    FileNotFoundError
        There is no measured table for it.
    """
    path = Path(exposure_file)
    if measured_table_kind(path) is not None:
        return path
    out = Path(campaign.measure.output)
    named = _measured_tables(out / "summary.ecsv")
    want = path.resolve()
    table = next((t for (f, d), t in named.items() if f == want and (dataset is None or d in (None, dataset))),
                 f"{path.stem}.ecsv")
    if isinstance(table, MeasureFailure):  # no table: say why instead of looking for one
        raise DataError(f"{path}: exposure '{table.exposure}' of dataset '{table.dataset}' failed in "
                        f"'astrocal measure' ({out / 'summary.ecsv'}): {table.message}; fix it and run "
                        f"measure again, or remove the exposure from {campaign.path}")
    candidate = out / table
    if candidate.resolve() == want or not candidate.exists():
        raise FileNotFoundError(
            f"{candidate}: no measured source table for {path.name} (it is an image or a star list, "
            f"not a measured table); run 'astrocal measure {campaign.path}' first (or list measured "
            "source tables as exposures)")
    return candidate




def measured_table_kind(path: str | os.PathLike) -> str | None:
    """What kind of measured source table ``path`` is.

    A lab table is an ECSV table with the columns ``hole_id, x, y, sigma_x, sigma_y`` (the
    measure stage's, or a user's table in that layout); a sky table one with ``star, x, y,
    sigma_x, sigma_y`` and ``kind: sky`` in its metadata, as the sky measure stage writes it
    (:func:`astrocal.sky.measure.measure_sky_exposure`).

    Parameters
    ----------
    path : str or os.PathLike
        A file.

    Returns
    -------
    str or None
        ``"lab"``, ``"sky"``, or None for anything else (an image, a star list in any
        format, a missing file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if not head.lstrip().startswith(b"# %ECSV"):
        return None
    try:
        t = _cached_table(path.resolve(), path.stat().st_mtime_ns)
    except DataError:
        return None
    cols = set(t.colnames)
    if set(MEASURED_COLUMNS["lab"]) <= cols:
        return "lab"
    if set(MEASURED_COLUMNS["sky"]) <= cols and t.meta.get("kind") == "sky":
        return "sky"
    return None


@functools.lru_cache(maxsize=64)
def _cached_table(path, _mtime_ns):
    return _read_table(path)


def _measured_tables(summary):
    """``{(resolved exposure file, dataset or None): table name}`` of a measure stage's
    summary (empty without one), read once per version of the file."""
    summary = Path(summary)
    if not summary.exists():
        return {}
    return _read_summary(summary.resolve(), summary.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_summary(summary, _mtime_ns):
    try:
        t = Table.read(summary, format="ascii.ecsv")
    except Exception as exc:  # a damaged summary: say which file
        raise DataError(f"{summary}: cannot read the measure stage's summary ({exc})") from exc
    if not {"file", "table"} <= set(t.colnames):
        return {}

    def cell(row, name):  # an empty string is read back masked ("--"): no value
        if name not in t.colnames or np.ma.is_masked(row[name]):
            return ""
        return str(row[name]).strip()

    named = {}
    for row in t:
        ds = cell(row, "dataset") or None
        key = (Path(cell(row, "file")).resolve(), ds)
        if cell(row, "status") == "failed":
            named.setdefault(key, MeasureFailure(cell(row, "exposure"), ds, cell(row, "message")))
        elif cell(row, "table"):
            named.setdefault(key, cell(row, "table"))
            if cell(row, "status") not in ("", "ok") or cell(row, "flags"):  # measured, but flagged
                log.warning("%s: exposure '%s' was flagged by 'astrocal measure' (%s): %s", summary,
                            cell(row, "exposure"), cell(row, "flags") or cell(row, "status"),
                            cell(row, "message"))
    return named


class MeasureFailure(NamedTuple):
    """A summary row of an exposure that failed in the measure stage (no table)."""

    exposure: str
    dataset: str | None
    message: str


def lab_points_for(campaign: Campaign, datasets: Sequence[LabDataset]) -> tuple[Points, list[Path]]:
    """The points of lab datasets that share a filter (one field).

    Parameters
    ----------
    campaign : Campaign
        The loaded campaign.
    datasets : sequence of LabDataset
        Datasets of one filter, with the same mask.

    Returns
    -------
    points : astrocal.model.data.Points
        Hole positions on the mask, commanded offsets with their accuracy.
    inputs : list of Path
        The source tables read, then the mask table (the fit depends on its content: its hash is
        part of the chain's record, :func:`astrocal.stages.fit.chain_record`).
    """
    mask_path = {str(d.mask) for d in datasets}
    if len(mask_path) != 1:
        raise DataError(f"datasets {[d.name for d in datasets]} use different masks; fit them "
                        "separately or give them the same mask table")
    mask = load_mask(datasets[0].mask)
    inst = campaign.instrument
    tables, offsets, sigmas, ds_index, names, inputs = [], [], [], [], [], []
    for k, d in enumerate(datasets):
        for e, exp in enumerate(d.exposures):
            path = source_table_path(campaign, exp.file, d.name)
            t = _source_table(path)
            offset = exp.offset_arcsec
            if offset is None:
                offset = t.meta.get("offset_arcsec")
            if offset is None:
                raise DataError(f"{path}: no commanded offset (give offset_arcsec in the campaign "
                                "or in the table's metadata)")
            if not _finite_pair(offset):
                raise DataError(f"{path}: meta 'offset_arcsec' must be a pair of finite numbers "
                                f"(arcsec), got {offset!r}")
            sigma = exp.offset_sigma_mas
            if sigma is None:
                log.warning("%s: no offset accuracy given; the offset is taken as barely known "
                            "(%g mas)", path, UNKNOWN_OFFSET_SIGMA_MAS)
                sigma = UNKNOWN_OFFSET_SIGMA_MAS
            tables.append(t)
            offsets.append(offset)
            sigmas.append(sigma / 1e3)
            ds_index.append(k)
            names.append(f"{d.name}:{Path(exp.file).stem}")
            inputs.append(path)
    check_mask_scale(mask, inst.mask_scale_mm_per_arcsec, inst.pixel_scale_mas, tables)  # a mask in cm, um...
    ny, nx = inst.detector_shape
    points = lab_points_from_tables(
        tables, mask.xy_mm, mask.hole_id, inst.mask_scale_mm_per_arcsec,
        (-0.5, nx - 0.5, -0.5, ny - 0.5), inst.pixel_scale_mas / 1e3, offsets, sigmas,
        exposure_dataset=ds_index, dataset_names=[d.name for d in datasets], exposure_names=names)
    return points, [*inputs, Path(datasets[0].mask)]


def mask_record(campaign: Campaign, datasets: Sequence[LabDataset]) -> dict:
    """What ``fit.json`` records of the mask a filter's lab datasets share (``"mask"``).

    Read by the LMS fit that takes the imager's hole errors as its prior
    (:func:`astrocal.lms.hole_prior.read_imager_hole_posterior`): which mask, in which
    state, and the plate scale that turned its millimetres into the fit's arcseconds.

    Parameters
    ----------
    campaign : Campaign
        The loaded campaign.
    datasets : sequence of LabDataset
        Datasets of one filter, with the same mask (:func:`lab_points_for` checks it).

    Returns
    -------
    dict
        ``file`` (absolute path), ``sha256``, ``name`` (the mask's short name) and
        ``scale_mm_per_arcsec`` (``[instrument] mask_scale_mm_per_arcsec``).
    """
    path = Path(datasets[0].mask).resolve()
    return {"file": str(path), "sha256": file_sha256(path), "name": _mask_facts(path)[0],
            "scale_mm_per_arcsec": float(campaign.instrument.mask_scale_mm_per_arcsec)}


def _finite_pair(value):
    try:
        return len(value) == 2 and all(np.isfinite(float(v)) and not isinstance(v, bool) for v in value)
    except (TypeError, ValueError):
        return False


def _read_table(path):
    try:
        return Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # astropy raises several types for unreadable ECSV
        raise DataError(f"{path}: not a readable source table ({exc})") from None


#: columns of a measured source table that must hold numbers (when present)
NUMERIC_COLUMNS = ("hole_id", "x", "y", "sigma_x", "sigma_y", "cov_xy")


def _source_table(path):
    """A measured source table (:func:`_read_table`, read once with
    :func:`measured_table_kind`: a copy of the same read) whose position columns hold
    numbers; a column of text (a value the reader could not take as a number) is a
    :class:`DataError` naming the file and the column."""
    path = Path(path)
    t = _cached_table(path.resolve(), path.stat().st_mtime_ns).copy()
    for name in NUMERIC_COLUMNS:
        if name in t.colnames and t[name].dtype.kind not in "iuf":
            raise DataError(f"{path}: column '{name}' holds {t[name].dtype} values, not numbers")
    return t


def sky_exposure_settings(table: Table, exposure: Exposure, path: str | os.PathLike, space: bool = False) -> dict:
    """Keyword arguments of :func:`astrocal.sky.astrometry.apparent_positions` for one sky
    exposure: the campaign's exposure keys first, then the measured table's metadata.

    An epoch without a clock time (``clock_time`` false) gets the ``horizon`` the measure
    stage placed the field at; ``refraction = false`` is pressure 0.

    Parameters
    ----------
    table : Table
        The exposure's measured sky table.
    exposure : Exposure
        The campaign's exposure (its ``extra`` keys).
    path : str or os.PathLike
        The table's file, named in errors.
    space : bool
        The observatory is in space: no weather, horizon or wavelength, and the velocity
        aberration the measure stage used (``meta["velocity_aberration"]``) unless the
        campaign gives one.

    Returns
    -------
    dict
    """
    meta, extra = dict(table.meta), dict(exposure.extra or {})
    if space:
        return _space_settings(meta, extra, path)
    pick = _picker(extra, meta)
    time = pick("time")
    ra, dec = pick("ra", "ra_deg"), pick("dec", "dec_deg")
    if time is None or ra is None or dec is None:
        missing = [k for k, v in (("time", time), ("ra", ra), ("dec", dec)) if v is None]
        raise DataError(f"{path}: sky exposure without {', '.join(missing)} (give them in the campaign "
                        "or in the table's metadata)")
    kw = {"time": time, "pointing": (float(ra), float(dec))}
    pa, rot = pick("position_angle_deg"), pick("rotator_angle_deg")
    if (pa is None) == (rot is None):
        raise DataError(f"{path}: give exactly one of position_angle_deg and rotator_angle_deg")
    if pa is not None:
        kw["position_angle"] = float(pa)
    else:
        kw["rotator_angle"] = float(rot)
    wl = pick("wavelength_um")
    if wl is None:
        raise DataError(f"{path}: sky exposure without wavelength_um")
    kw["wavelength"] = float(wl)
    parity = pick("parity")
    kw["parity"] = int(parity) if parity is not None else 1
    weather = dict(meta.get("weather") or {})
    for key, name in (("pressure_hpa", "pressure_hpa"), ("temperature_c", "temperature_c"),
                      ("humidity", "relative_humidity")):
        if extra.get(key) is not None:
            weather[name] = float(extra[key])
    if extra.get("refraction") is False:
        weather["pressure_hpa"] = 0.0
    kw["weather"] = weather or None
    if extra.get("clock_time") is False or meta.get("clock_time") is False:
        # an epoch without a clock time: the field placed at the zenith distance and parallactic
        # angle the measure stage used (astrocal.sky.measure: given, or at the zenith with
        # refraction off), else the campaign's
        h = meta.get("horizon") or {}
        z = h.get("zenith_distance_deg", extra.get("zenith_distance_deg"))
        q = h.get("parallactic_angle_deg", extra.get("parallactic_angle_deg"))
        if z is None:
            if (weather.get("pressure_hpa") or 0.0) > 0:
                raise DataError(f"{path}: an epoch without a clock time and no zenith_distance_deg and "
                                "parallactic_angle_deg: give them, or refraction = false")
            z, q = UNKNOWN_HORIZON
        kw["horizon"] = (float(z), float(q or 0.0))
    return kw


def _picker(*sources):
    """``pick(*keys)``: the first of ``keys`` with a value in the first of ``sources`` that
    has one (the campaign's exposure keys, then the measured table's metadata), or None."""
    def pick(*keys):
        for source in sources:
            for k in keys:
                if source.get(k) is not None:
                    return source[k]
        return None
    return pick


def _space_settings(meta, extra, path):
    """:func:`sky_exposure_settings` of an exposure from space."""
    pick = _picker(extra, meta)
    time, ra, dec, pa = pick("time"), pick("ra", "ra_deg"), pick("dec", "dec_deg"), pick("position_angle_deg")
    missing = [k for k, v in (("time", time), ("ra", ra), ("dec", dec), ("position_angle_deg", pa)) if v is None]
    if missing:
        raise DataError(f"{path}: sky exposure from space without {', '.join(missing)} (give them in the campaign "
                        "or in the table's metadata)")
    kw = {"time": time, "pointing": (float(ra), float(dec)), "position_angle": float(pa),
          "parity": int(pick("parity") or 1)}
    wl = pick("wavelength_um")
    if wl is not None and np.isfinite(float(wl)):
        kw["wavelength"] = float(wl)
    if extra.get("observer_velocity_km_s") is not None:
        kw["aberration"] = {"velocity_km_s": list(extra["observer_velocity_km_s"]), "source": "campaign"}
    elif extra.get("velocity_aberration_scale") is not None:
        kw["aberration"] = {"scale": float(extra["velocity_aberration_scale"]), "source": "campaign"}
    else:
        used = meta.get("velocity_aberration") or {}
        if used.get("velocity_km_s") is not None:
            kw["aberration"] = {"velocity_km_s": list(used["velocity_km_s"]), "source": str(used.get("source"))}
        elif used.get("scale") is not None:
            kw["aberration"] = {"scale": float(used["scale"]), "source": str(used.get("source"))}
    return kw


def sky_points_for(campaign: Campaign, datasets: Sequence[SkyDataset], orientation: list | None = None,
                   frames: list | None = None) -> tuple[Points, list[Path]]:
    """Sky points (:func:`~astrocal.model.data.sky_points_from_tables`) of sky datasets:
    their measured tables and the catalogue's apparent positions in every exposure.

    Parameters
    ----------
    campaign : Campaign
        The loaded campaign.
    datasets : sequence of SkyDataset
        Datasets of one filter.
    orientation : list, optional
        Receives one record per exposure of what the Earth-orientation table's uncertainty
        costs it (``FocalPlanePositions.meta["earth_orientation"]``, with the exposure's
        name).
    frames : list, optional
        Receives one record per exposure of its nominal frame (``exposure``, ``dataset``,
        ``position_angle_deg``, ``parity``, ``aberration_scale``: what
        :func:`astrocal.model.onsky.on_sky_record` needs).

    Returns
    -------
    points : astrocal.model.data.Points
    inputs : list of Path
        The source tables and catalogues read.
    """
    inst = campaign.instrument
    tables, positions, ds_index, names, inputs = [], [], [], [], []
    for k, d in enumerate(datasets):
        catalog = load_catalog(d.catalog)
        said = set()
        for exp in d.exposures:
            path = source_table_path(campaign, exp.file, d.name)
            t = _source_table(path)
            site = d.site or t.meta.get("site") or "armazones"
            kw = sky_exposure_settings(t, exp, path, space=is_space(site))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                positions.append(apparent_positions(catalog, site=site, **kw))
            # the catalogue's own warnings (stars without proper motion, ...) repeat in
            # every exposure of a night: each distinct one is said once per dataset
            for w in caught:
                text = str(w.message)
                if issubclass(w.category, EpochGapWarning) and text in said:
                    continue
                said.add(text)
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            tables.append(t)
            ds_index.append(k)
            names.append(f"{d.name}:{Path(exp.file).stem}")
            inputs.append(path)
            if orientation is not None:
                orientation.append({"exposure": names[-1], **positions[-1].meta.get("earth_orientation", {})})
            if frames is not None:
                ab = positions[-1].meta.get("velocity_aberration") or {}  # in space
                frames.append({"exposure": names[-1], "dataset": d.name,
                               "position_angle_deg": float(positions[-1].position_angle_deg),
                               "parity": int(positions[-1].parity),
                               "aberration_scale": float(ab.get("scale") or 1.0)})
        inputs.append(Path(d.catalog))
    ny, nx = inst.detector_shape
    points = sky_points_from_tables(
        tables, positions, (-0.5, nx - 0.5, -0.5, ny - 0.5), inst.pixel_scale_mas / 1e3,
        SKY_POINTING_SIGMA_ARCSEC, exposure_dataset=ds_index, dataset_names=[d.name for d in datasets],
        exposure_names=names)
    return points, inputs


def mask_affine_sigma(fit_settings: FitSettings, lab_sets: Sequence[LabDataset]) -> float | None:
    """The metrology of the mask's net scale and shears for a fit.

    Parameters
    ----------
    fit_settings : astrocal.campaign.FitSettings
        The campaign's ``[fit]``.
    lab_sets : sequence of LabDataset
        The fit's lab datasets.

    Returns
    -------
    float or None
        ``[fit] mask_affine_sigma_ppm``, else the mask table's ``affine_sigma_ppm`` (ppm);
        None: derived from the hole errors.
    """
    if fit_settings.mask_affine_sigma_ppm is not None:
        return float(fit_settings.mask_affine_sigma_ppm)
    if not lab_sets:
        return None
    return _mask_facts(lab_sets[0].mask)[1]


def _mask_facts(path: str | os.PathLike) -> tuple[str, float | None]:
    """The mask table's short name and ``affine_sigma_ppm``; read once per file version (the
    fit asks for both after reading its holes)."""
    path = Path(path).resolve()
    st = path.stat() if path.is_file() else None
    return _mask_facts_of(str(path), st.st_mtime_ns if st else None, st.st_size if st else None)


@functools.lru_cache(maxsize=4)
def _mask_facts_of(path, mtime_ns, size):
    mask = load_mask(path)
    return mask.short_name, mask.affine_sigma_ppm
