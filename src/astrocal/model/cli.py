"""``astrocal fit CAMPAIGN.toml``: the joint Bayesian fit of a campaign's identified points."""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.table import Table

from ..atomic import ProductExistsError
from ..campaign import load_campaign
from ..errors import AstrocalError
from ..lab.mask import check_mask_scale, load_mask
from ..resultset import check_result_dir as _check_result_dir
from ..sources import MEASURED_COLUMNS
from ..resultset import confined, inputs_sha256, mark_incomplete, remove_partial_files, write_manifest, writer_lock
from .data import DataError, join_points, lab_points_from_tables, sky_points_from_tables
from .inference import FitSettings, fit_lab
from .linear import Priors
from .result import save_fit

log = logging.getLogger(__name__)

#: commanded offsets with no stated accuracy get this prior width (i.e. barely known)
UNKNOWN_OFFSET_SIGMA_MAS = 1000.0

#: prior width (arcsec) of a sky exposure's pointing (its pose translation)
SKY_POINTING_SIGMA_ARCSEC = 2.0


def source_table_path(campaign, exposure_file, dataset=None):
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




def measured_table_kind(path):
    """``"lab"``, ``"sky"`` or None: what kind of measured source table ``path`` is.

    A lab table is an ECSV table with the columns ``hole_id, x, y, sigma_x, sigma_y`` (the
    measure stage's, or a user's table in that layout); a sky table one with ``star, x, y,
    sigma_x, sigma_y`` and ``kind: sky`` in its metadata, as the sky measure stage writes it
    (:func:`astrocal.sky.measure.measure_sky_exposure`). Anything else (an image, a star
    list in any format, a missing file) is None.
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


def lab_points_for(campaign, datasets):
    """:class:`LabPoints` of lab datasets that share a filter (one field)."""
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
    return points, inputs


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


def sky_exposure_settings(table, exposure, path, space=False):
    """Keyword arguments of :func:`astrocal.sky.astrometry.apparent_positions` for one sky
    exposure: the campaign's exposure keys first, then the measured table's metadata. An
    epoch without a clock time (``clock_time`` false) gets the ``horizon`` the measure stage
    placed the field at; ``refraction = false`` is pressure 0. ``space``: the observatory is
    in space: no weather, horizon or wavelength, and the velocity aberration the measure
    stage used (``meta["velocity_aberration"]``) unless the campaign gives one."""
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
            from ..sky.measure import UNKNOWN_HORIZON

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


def sky_points_for(campaign, datasets, orientation=None, frames=None):
    """Sky points (:func:`~astrocal.model.data.sky_points_from_tables`) of sky datasets:
    their measured tables and the catalogue's apparent positions in every exposure.

    ``orientation``, a list, receives one record per exposure of what the Earth-orientation
    table's uncertainty costs it (``FocalPlanePositions.meta["earth_orientation"]``, with
    the exposure's name). ``frames``, a list, receives one record per exposure of its
    nominal frame (``exposure``, ``dataset``, ``position_angle_deg``, ``parity``: what
    :func:`astrocal.model.onsky.on_sky_record` needs)."""
    from ..sky.astrometry import EpochGapWarning, apparent_positions
    from ..sky.catalog import load_catalog
    from ..sky.sites import is_space

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


def mask_affine_sigma(fit_settings, lab_sets):
    """The metrology of the mask's net scale and shears for a fit (ppm, or None: derived
    from the hole errors): ``[fit] mask_affine_sigma_ppm``, else the mask table's
    ``affine_sigma_ppm``."""
    if fit_settings.mask_affine_sigma_ppm is not None:
        return float(fit_settings.mask_affine_sigma_ppm)
    if not lab_sets:
        return None
    return load_mask(lab_sets[0].mask).affine_sigma_ppm


def earth_orientation_record(costs):
    """What ``fit.json`` records of the Earth orientation of a fit's sky exposures: the
    tables and policy (:func:`astrocal.earth.provenance`), each exposure's cost
    (:func:`astrocal.sky.astrometry.orientation_cost`) and the largest (``worst``)."""
    from .. import earth

    record = earth.provenance()
    record["exposures"] = list(costs)
    if costs:
        record["worst"] = {"centre_mas": max(float(c.get("centre_mas", 0.0)) for c in costs),
                           "differential_mas": max(float(c.get("differential_mas", 0.0)) for c in costs),
                           "stale_exposures": int(sum(bool(c.get("stale")) for c in costs))}
    return record


def fit_groups(campaign):
    """The fits a campaign asks for: ``{filter: (lab datasets, sky datasets)}``.

    Lab and sky datasets of the same filter are fitted jointly; a sky dataset without a
    filter joins the lab filter when there is exactly one, else it is fitted on its own
    under the name ``sky``.
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


def register(subparsers):
    p = subparsers.add_parser(
        "fit",
        help="fit the joint Bayesian distortion model to a campaign",
        description="Fit the joint distortion model to the identified pinhole positions and "
        "matched stars of a campaign: lab and sky datasets of the same filter share one "
        "instrument field; sky exposures add their pointing, position-angle and scale terms "
        "and, at a ground site, the telescope flexure ([fit] flexure_degree, flexure_functions; an "
        "observatory in space has none). Reads "
        "CAMPAIGN.toml, the source tables of its exposures (the measure stage's "
        "<measure.output>/<exposure>.ecsv for images and star lists, or measured tables listed "
        "directly as exposures, recognised by their columns and metadata) and the "
        "sky datasets' catalogues. With sky data it reports each sky dataset's on-sky pixel "
        "scale and position angle over its stars (fit.json on_sky) and its residuals after the stars' "
        "fitted catalogue errors and against the catalogue (fit.json sky_residuals); without lab data the instrument's own "
        "pixel scale and the map 1-sigma in mas are not measured, and said so. "
        "Writes, per filter, into <fit.output>/<filter>/: posterior.h5 (emcee chain and exact "
        "draws of the linear parameters), summary.ecsv (every parameter's mean, sd, "
        "quantiles) and fit.json (degree and evidence table, diagnostics, outliers, "
        "unconstrained and inseparable directions), residuals.ecsv (per point residuals with "
        "outlier flags), astromet_<filter>.fits (AstroMet file of the posterior-mean "
        "field with its 1-sigma), wcs_sip_<filter>.hdr (TAN-SIP header), with a residual "
        "field beyond the polynomial ([fit] residual, chosen by the evidence by default) "
        "wcs_lookup_<filter>.fits (TAN-SIP plus distortion look-up tables) and, for METIS "
        "imagers, LM_/N_DISTORTION_TABLE and _MAP with QC keywords; manifest.json, written last, "
        "marks the set complete. A campaign's [lms] data set (the LM integral-field spectrograph) is "
        "fitted with its own model (docs/lms.md): <fit.output>/<lms name>/ gets posterior.h5, "
        "lms_params.ecsv, lms_draws.fits, lms_residuals.ecsv, lms_fit.json, per setting "
        "IFU_DISTORTION_TABLE_<tag>.fits and LMS_GEOMETRY_<tag>.fits with QC keywords, report/ and "
        "manifest.json. Exit status: 0 done; 1 an error of the input (nothing "
        "complete written); 3 done, but the data contradict the fit's assumptions (pixel scale "
        "far from nominal, residuals far above the centroid errors, poses far outside their "
        "priors): products written and marked QC CONSISTENT = F.",
    )
    p.add_argument("campaign", metavar="CAMPAIGN.toml")
    p.add_argument("--degree", help="total degree of the field, or 'auto' (evidence); "
                   "default: the campaign's [fit] degree")
    p.add_argument("--steps", type=int, help="most emcee steps (the chain stops once converged)")
    p.add_argument("--walkers", type=int, help="emcee walkers (default: the campaign's [fit] "
                   "walkers, 32; at least 8)")
    p.add_argument("--seed", type=int, help="random seed (default: the campaign's, else 1)")
    p.add_argument("--no-hole-errors", action="store_true",
                   help="do not fit the holes' manufacturing errors")
    p.add_argument("--resume", action="store_true", help="continue an interrupted chain")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result")
    p.add_argument("--quick", action="store_true",
                   help="a quick look: the hyperparameters' MAP and the Laplace approximation over them "
                   "with exact draws of the linear parameters, no emcee chain; written into "
                   "<fit.output>/quick/<filter>/ and marked QC QUICK (fit.json quality, the report's and "
                   "the summary's first line); emcee stays the reference")
    p.add_argument("--processes", type=_processes, default="auto", metavar="N",
                   help="worker processes: several filters are fitted in parallel; a single "
                   "filter's emcee walkers are split over them. Default 'auto': one process, "
                   "except that a filter with at least 4000 points (a dense mask) splits its evidence scan's "
                   "variants and its walkers over the CPUs available (at most 4). The result is the same "
                   "either way")
    p.set_defaults(func=run)


def _processes(text):
    """``--processes``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return n


def fit_campaign(campaign, degree=None, steps=None, walkers=None, seed=None, hole_errors=True,
                 resume=False, overwrite=False, progress="auto", processes=1, quick=False):
    """Fit every filter of a loaded campaign; returns ``{filter: (LabFit, output dir, products)}``.

    Refuses (``ProductExistsError``) to replace an existing result unless ``overwrite``;
    ``resume`` continues an interrupted chain in ``<fit.output>/<filter>/posterior.h5``.
    ``processes``: with several filters, that many fits run in parallel; with one, the
    walkers of each emcee step are split over that many processes; ``"auto"``: the filters
    one after the other, each splitting its walkers as
    :func:`~astrocal.model.inference.pool_size` decides (only fits of many points).
    ``quick``: the quick look
    (no emcee chain: :func:`~astrocal.model.inference.laplace_draws`), written into
    ``<fit.output>/quick/<filter>``.
    """
    fs = campaign.fit
    if quick and resume:
        raise FitOptionError("--quick runs no chain: there is nothing to --resume")
    degree = degree if degree is not None else fs.degree
    if degree != "auto":
        degree = int(degree)
    groups = fit_groups(campaign)
    if campaign.sky:
        campaign.earth.apply(campaign.path)  # the campaign's Earth-orientation tables (astrocal.earth)
    outs = {}
    for filt in groups:  # refuse early, before any work
        out = _output_dir(fs, filt, quick)
        _check_result_dir(out, resume, overwrite)
        outs[filt] = out
    processes = "auto" if processes == "auto" else max(int(processes or 1), 1)
    parallel = processes != "auto" and processes > 1 and len(groups) > 1
    opts = dict(degree=degree, steps=steps, walkers=walkers, seed=seed, hole_errors=hole_errors,
                resume=resume, quick=quick, overwrite=overwrite, progress=False if parallel else progress,
                processes=1 if parallel else processes)
    jobs = [(campaign, filt, lab_sets, sky_sets, opts) for filt, (lab_sets, sky_sets) in groups.items()]
    if not parallel:
        return {job[1]: _fit_group(*job) for job in jobs}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    log.info("fitting %d filters in %d processes", len(jobs), min(processes, len(jobs)))
    with ProcessPoolExecutor(min(processes, len(jobs)), mp_context=ctx) as pool:
        futures = {job[1]: pool.submit(_fit_group, *job) for job in jobs}
        return {filt: f.result() for filt, f in futures.items()}


class FitOptionError(AstrocalError, ValueError):
    """Options of ``astrocal fit`` that cannot go together."""


def _output_dir(fs, filt, quick=False):
    """Where a filter's result goes: ``<fit.output>/<filter>``, or for a quick look
    ``<fit.output>/quick/<filter>`` (never over the reference fit)."""
    return confined(Path(fs.output) / "quick" / filt if quick else Path(fs.output) / filt, fs.output)


def chain_record(campaign, settings, inputs):
    """What a chain depends on besides its walkers and hyperparameters (recorded with it,
    compared on resume): the campaign file's and the input tables' SHA-256, the seed and
    the model's settings. The number of steps is not part of it (``--resume --steps N``
    continues a chain further)."""
    pr = settings.priors
    return {"campaign_sha256": campaign.sha256, "inputs_sha256": inputs_sha256(inputs), "seed": int(settings.seed),
            "walkers": int(settings.walkers), "degree": settings.degree,
            "degree_range": [int(d) for d in settings.degree_range], "degree_choice": settings.degree_choice,
            "hole_errors": bool(settings.hole_errors), "field_prior": str(pr.field_prior),
            "residual": str(pr.residual), "mask_affine_sigma_ppm": pr.mask_affine_sigma_ppm}


def _fit_group(campaign, filt, lab_sets, sky_sets, opts):
    """Fit one filter's lab and sky datasets jointly and write its result set
    (:mod:`astrocal.resultset`). The inputs are read and checked first, so a refused input
    writes nothing; then, under the directory's lock, the chain, the draws, the products
    and, last, the manifest.

    Linear algebra runs on one thread throughout, the products' least-squares fits as well
    as the fit (:func:`~astrocal.model.inference.fit_lab`): their matrices (10^4 rows, tens
    of columns) gain nothing from threaded BLAS and lose several times over on a shared
    machine (the reverse SIP's fits: 0.3 s each threaded under load, 15 ms on one thread)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_and_write(campaign, filt, lab_sets, sky_sets, opts)


def _fit_and_write(campaign, filt, lab_sets, sky_sets, opts):
    from ..products import write_fit_products
    from .result import load_posterior

    fs = campaign.fit
    quick = opts.get("quick", False)
    out = _output_dir(fs, filt, quick)
    h5 = out / "posterior.h5"
    overwrite, resume = opts["overwrite"], opts["resume"]
    parts, inputs = [], []
    if lab_sets:
        lab, lab_inputs = lab_points_for(campaign, lab_sets)
        parts.append(lab)
        inputs += lab_inputs
    orientation = None
    frames = []
    sites = None
    if sky_sets:
        from ..sky.sites import get_site

        sites = {d.name: get_site(d.site).as_dict() for d in sky_sets}
        costs = []
        sky, sky_inputs = sky_points_for(campaign, sky_sets, orientation=costs, frames=frames)
        parts.append(sky)
        inputs += sky_inputs
        orientation = earth_orientation_record(costs)
    points = join_points(*parts)
    seed = opts["seed"]
    settings = FitSettings(
        degree=opts["degree"], degree_range=tuple(fs.degree_range), degree_choice=fs.degree_choice,
        hole_errors=fs.hole_errors and opts["hole_errors"],
        walkers=opts["walkers"] or max(fs.walkers, 8),
        steps=opts["steps"] or fs.steps,
        seed=seed if seed is not None else (fs.seed if fs.seed is not None else 1),
        priors=Priors(field_prior=fs.field_prior, mask_affine_sigma_ppm=mask_affine_sigma(fs, lab_sets),
                      residual=fs.residual),
        backend_path=None if quick else h5, resume=resume, progress=opts["progress"],
        sampler="laplace" if quick else "emcee",
        flexure=getattr(fs, "flexure", None), processes=opts["processes"],
    )
    settings.chain_record = chain_record(campaign, settings, inputs)
    with writer_lock(out):
        _check_result_dir(out, resume, overwrite, locked=True)  # again, now under the lock
        mark_incomplete(out)  # from here on the directory is not a complete result
        remove_partial_files(out)
        if h5.exists() and overwrite and not resume:
            h5.unlink()
        log.info("fitting filter %s: %d points, %d holes and stars, %d exposures (%d lab, %d sky)", filt,
                 points.n_points, points.n_holes, points.n_exposures, points.n_lab_exposures,
                 points.n_sky_exposures)
        fit = fit_lab(points, settings)
        rewrite = overwrite or resume
        save_fit(fit, out, campaign.sha256, inputs=[campaign.path, *inputs], overwrite=rewrite,
                 instrument=campaign.instrument.name, earth_orientation=orientation, sky_frames=frames,
                 sites=sites)
        try:
            products = write_fit_products(load_posterior(out), out, filt, instrument=campaign.instrument.name,
                                          campaign_sha256=campaign.sha256, inputs=[campaign.path],
                                          overwrite=rewrite)
        except ValueError as exc:
            if _contradicted(out):  # the products fail because the data contradict the model: say that
                problems = json.loads((out / "fit.json").read_text())["consistency"]["problems"]
                raise DataError(f"filter {filt}: the data contradict the fit's assumptions: "
                                f"{'; '.join(problems)}; no products could be made from this fit ({exc}); "
                                f"{out} holds fit.json and residuals.ecsv to look at, and no manifest "
                                "(not a result)") from exc
            raise
        names = ["posterior.h5", "fit.json", "summary.ecsv", "residuals.ecsv",
                 *(Path(p).name for p in products.values())]
        write_manifest(out, names, {"campaign_sha256": campaign.sha256, "seed": int(settings.seed)})
    return fit, out, products


def describe(filt, fit, out, products):
    """Lines summarising a filter's fit for the terminal.

    The field's pixel scale and its map 1-sigma are absolute figures only with a lab gauge;
    a sky-only fit states them as not measured and gives what the sky measures instead: each
    sky dataset's on-sky pixel scale and position angle (``fit.json`` ``on_sky``, written by
    :func:`~astrocal.model.result.save_fit`), and the map 1-sigma of the field's non-linear
    part in pixels."""

    points = fit.points
    ps = fit.pixel_scale_samples() * 1e3
    written = Path(out) / "fit.json"
    info_json = json.loads(written.read_text()) if written.exists() else {}
    measured = (info_json.get("pixel_scale_mas") or {}).get("measured", True)
    from .quality import fit_quality

    info = {"diagnostics": {"converged": fit.diagnostics.converged, "warnings": fit.diagnostics.warnings},
            "settings": {"degree": fit.settings.degree, "degree_range": list(fit.settings.degree_range),
                         "sampler": getattr(fit.settings, "sampler", "emcee")},
            "degree": fit.degree}
    quality = info_json.get("quality") or fit_quality(info)
    lines = [f"filter {filt}: {problem}" for problem in quality["problems"]]
    field = f"degree {fit.degree}" + (" + residual field" if getattr(fit, "residual", None) is not None else "")
    if measured:
        x = np.linspace(points.domain[0], points.domain[1], 33)
        xx, yy = np.meshgrid(x, x)
        su, sv = fit.map_uncertainty(xx, yy)
        sig = np.hypot(su, sv) * 1e3
        lines += [f"filter {filt}: {field}, pixel scale {ps.mean():.6f} +/- "
                  f"{ps.std(ddof=1):.6f} mas/px, map 1-sigma rms {np.sqrt(np.mean(sig**2)):.4f} mas "
                  f"(max {sig.max():.4f}), {int(fit.outliers.sum())} outliers flagged"]
    else:
        lines += [f"filter {filt}: {field}, sky only: instrument pixel scale not measured and map "
                  f"1-sigma in mas not measured (no lab gauge: the sky exposures' free scales take "
                  f"the field's); {_nonlinear_sigma_text(fit)}, {int(fit.outliers.sum())} outliers flagged"]
    on_sky = info_json.get("on_sky") or {}
    for d in on_sky.get("datasets", []):
        text = (f"sky {d['name']}: on-sky pixel scale {d['pixel_scale_mas']['mean']:.5f} +/- "
                f"{d['pixel_scale_mas']['sd']:.5f} mas/px")
        if d.get("position_angle_deg"):
            text += (f", position angle of detector +y {d['position_angle_deg']['mean']:.4f} +/- "
                     f"{d['position_angle_deg']['sd']:.4f} deg")
        else:
            text += (f", rotation from the nominal position angles {d['rotation_from_nominal_deg']['mean']:.4f}"
                     f" +/- {d['rotation_from_nominal_deg']['sd']:.4f} deg (per exposure in fit.json)")
        if d.get("sky_over_lab"):
            text += (f"; sky/lab scale ratio {d['sky_over_lab']['mean']:.6f} +/- "
                     f"{d['sky_over_lab']['sd']:.6f} (the telescope's)")
        lines.append(text)
    for r in info_json.get("sky_residuals") or []:
        a, c = r["after_star_errors_mas"], r["against_catalog_mas"]
        lines.append(f"sky {r['dataset']}: residual rms x/y {a[0]:.3g} / {a[1]:.3g} mas after the stars' fitted "
                     f"catalogue errors, {c[0]:.3g} / {c[1]:.3g} mas against the catalogue ({r['n_points']} points)")
    if fit.diagnostics.converged:  # else the notes are in the first line
        lines += [f"warning: {note}" for note in fit.diagnostics.warnings]
    lines += [f"warning: not constrained by the data: {name}" for name in fit.unconstrained]
    lines += [f"warning: not separated by the data: {desc}" for desc in getattr(fit, "inseparable", [])]
    names = ", ".join(Path(p).name for p in products.values())
    lines.append(f"wrote {out} (posterior.h5, summary.ecsv, fit.json, residuals.ecsv, {names})")
    return lines


def _nonlinear_sigma_text(fit):
    """The map 1-sigma of the field's non-linear part (each draw minus its own best affine
    map, in that draw's pixels; :func:`astrocal.report.build.nonlinear_draws`) as text."""
    from ..field import design_matrix
    from ..field.basis import n_terms, terms
    from .draws import affine_matrices

    g, deg, dom = fit.g_samples, fit.degree, fit.points.domain
    nt = n_terms(deg)
    keep = np.array([i + j >= 2 for i, j in terms(deg)])
    if not keep.any():
        return f"no non-linear part at degree {deg}"
    a = affine_matrices(g, deg, dom)
    n = np.stack([g[:, :nt] * keep, g[:, nt:2 * nt] * keep], axis=1)
    d = -np.linalg.solve(a, n)  # (draws, 2, nt): pixels
    x = np.linspace(dom[0], dom[1], 33)
    xx, yy = np.meshgrid(x, np.linspace(dom[2], dom[3], 33))
    B = design_matrix(xx.ravel(), yy.ravel(), deg, dom)
    sx, sy = (d[:, 0] @ B.T).std(axis=0, ddof=1), (d[:, 1] @ B.T).std(axis=0, ddof=1)
    sig = np.hypot(sx, sy)
    return f"map 1-sigma of the non-linear part rms {np.sqrt(np.mean(sig**2)):.4f} px (max {sig.max():.4f})"


def run(args):
    campaign = load_campaign(args.campaign)
    if campaign.lms is not None:  # the LMS data set: its own model (astrocal.lms.fit)
        from ..lms.fit_campaign import describe_lms_fit, fit_lms_campaign

        lms_fit, lms_out = fit_lms_campaign(campaign, steps=args.steps, walkers=args.walkers, seed=args.seed,
                                            resume=args.resume, overwrite=args.overwrite)
        print("\n".join(describe_lms_fit(lms_fit, lms_out)))
        if not campaign.lab and not campaign.sky:
            return 0
    results = fit_campaign(campaign, degree=args.degree, steps=args.steps, walkers=args.walkers,
                           seed=args.seed, hole_errors=not args.no_hole_errors,
                           resume=args.resume, overwrite=args.overwrite, processes=args.processes,
                           quick=args.quick)
    contradicted = []
    for filt, (fit, out, products) in results.items():
        print("\n".join(describe(filt, fit, out, products)))
        if _contradicted(out):
            contradicted.append(filt)
    if contradicted:
        print(f"astrocal: error: the data of filter(s) {', '.join(contradicted)} contradict the fit's "
              "assumptions (see the first lines above); products written and marked "
              "(QC CONSISTENT = F)", file=sys.stderr)
        return EXIT_CONTRADICTED
    return 0


#: exit status of ``astrocal fit`` when the data contradict the fit's assumptions
EXIT_CONTRADICTED = 3


def _contradicted(out):
    """True when the result in ``out`` records data that contradict the fit's assumptions."""
    path = Path(out) / "fit.json"
    if not path.exists():
        return False
    return (json.loads(path.read_text()).get("quality") or {}).get("consistent") is False
