"""``astrocal measure``: a campaign's frames to identified source tables.

For every exposure of every ``[[lab]]`` dataset (the steps of one lab frame are
:func:`astrocal.lab.measure.measure_frame`'s: reduce, detect, centroid, identify, write
its table), in parallel processes when asked, then, with ``[measure] psf = "epsf"``, a
second pass with the effective PSF built from the dataset's frames; the checks across a
dataset's frames (the positions' scatter against the stated sigmas:
:func:`scatter_check`; the commanded offsets against the measured shifts; frames with the
same content); the ``[[sky]]`` datasets (:func:`astrocal.sky.measure.measure_sky_datasets`)
and an ``[lms]`` data set (:func:`astrocal.lms.measure.measure_lms`); and the campaign's
``summary.ecsv`` (one row per exposure with its status and message).

A frame that fails is reported with a message naming its file and the others are still
measured; nothing that exists is overwritten unless ``overwrite``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import astropy.units as u
from astropy.table import Table
from astropy.time import Time

from .. import __version__
from ..campaign import Campaign, CampaignError, load_campaign
from ..errors import AstrocalError, MeasureError
from ..plain import to_plain
from ..atomic import ProductExistsError, atomic_write_table, check_writable
from ..resultset import confined
from ..sources import FLAGS_REJECT, LAB_FLAG_NAMES as FLAG_NAMES, read_source_table
from ..image import centroid as C
from ..image.frame import (dataset_calibration, exposure_kind, exposure_stem, fit_frame_spots,
                           frame_meta, header_rules, internal_error)
from ..image.epsf import build_epsf
from ..image.psf import render_spots
from ..image.reduce import (detector_params, read_frame, read_reduced, reduce_frame,
                            write_reduced)
from ..lab.checks import offset_check, same_content, saturation_note
from ..lab.mask import load_mask
from ..lab.measure import measure_frame, model_psf, source_table
from ..sky.measure import measure_sky_datasets

__all__ = ["MeasureReport", "measure_campaign", "scatter_check", "SCATTER_RATIO_HIGH", "MEASURED"]

log = logging.getLogger(__name__)

#: 1-sigma of the prior on the mask origin from the chopper offset (arcsec): the mask
#: insertion offset (~0.3 arcsec) and the distortion; only used to break ties
CENTER_SIGMA_ARCSEC = 0.5


#: statuses of an exposure whose table was written (``saturated``: flagged, see
#: :func:`astrocal.lab.checks.saturation_note`); the other status is ``failed``
MEASURED = ("ok", "saturated")

#: ... or when the stated sigmas exceed the scatter of the spots' positions between
#: exposures (an affine transformation removed) by more than this factor
SCATTER_RATIO_HIGH = 2.0


# =========================================================================== campaign plumbing
@dataclass
class _Job:
    """One exposure to measure (a plain, picklable record)."""

    dataset: str
    index: int
    file: Path
    kind: str
    stem: str
    table_path: Path
    reduced_path: Path | None
    offset_arcsec: tuple | None
    offset_sigma_mas: float | None
    overwrite: bool
    psf_mode: str
    campaign: str
    campaign_sha256: str
    missing: bool = False


@dataclass
class _Context:
    """What every exposure of a dataset needs (built once, shipped to the workers)."""

    name: str
    mask: object = None
    mask_path: str | None = None
    filter: str | None = None
    preset: str | None = None
    pixel_scale_mas: float | None = None
    mask_scale: float | None = None
    detector_shape: tuple | None = None
    psf: object = None
    calibration: object = None
    error: str | None = None
    rules: object = None  # HeaderRules of the campaign's instrument


_CONTEXTS: dict = {}


def _init_worker(contexts):
    global _CONTEXTS
    _CONTEXTS = contexts


def _center_guess(shape, offset_arcsec, pixel_scale_mas):
    if offset_arcsec is None:
        return None, None
    ny, nx = shape
    ox, oy = (float(v) for v in offset_arcsec)
    guess = ((nx - 1) / 2.0 + ox * 1e3 / pixel_scale_mas, (ny - 1) / 2.0 + oy * 1e3 / pixel_scale_mas)
    return guess, CENTER_SIGMA_ARCSEC * 1e3 / pixel_scale_mas


def _exposure_meta(job, ctx, em, params, reduced, warnings):
    offset = job.offset_arcsec
    offset_src = "campaign"
    if offset is None and getattr(em, "chopper_offset", None) is not None:
        offset = tuple(float(v) for v in em.chopper_offset.to_value(u.arcsec))
        offset_src = "header"
    meta = {
        "file": str(job.file),
        "exposure": job.stem,
        "dataset": job.dataset,
        "DATE-OBS": em.date_obs.isot if getattr(em, "date_obs", None) is not None else None,
        "MJD-OBS": float(em.date_obs.mjd) if getattr(em, "date_obs", None) is not None else None,
        "EXPTIME": float(em.exptime.to_value(u.s)),
        "DIT": float(em.dit.to_value(u.s)),
        "NDIT": int(em.ndit),
        "filter": ctx.filter,
        "filter_header": getattr(em, "filter", None),
        "instrument": getattr(em, "instrument", None) or ctx.preset,
        "mask": ctx.mask.name,
        "mask_file": ctx.mask_path,
        "mask_header": getattr(em, "mask_name", None) or getattr(em, "mask", None),
        "offset_arcsec": None if offset is None else [float(offset[0]), float(offset[1])],
        "offset_source": offset_src if offset is not None else None,
        "offset_sigma_mas": job.offset_sigma_mas,
        "chopper_offset_header_arcsec": (None if getattr(em, "chopper_offset", None) is None
                                         else [float(v) for v in em.chopper_offset.to_value(u.arcsec)]),
        "pixel_convention": "0-based: the centre of the first pixel is (0.0, 0.0); x along numpy "
                            "axis 1 (FITS x - 1)",
        "pixel_scale_mas": ctx.pixel_scale_mas,
        "mask_scale_mm_per_arcsec": ctx.mask_scale,
        "flag_bits": {name: bit for bit, name in FLAG_NAMES.items()},
        "reject_flags": FLAGS_REJECT,
        "noise_model": {"gain_eff_e_per_adu": params.gain_eff, "read_noise_eff_e": params.read_noise_eff,
                        "extra_variance": "BKGVAR extension of the reduced image",
                        "frame": "average of NDIT DITs"},
        "reduction": {k: v for k, v in reduced.meta.items() if k != "detector"},
        "detector": params.to_dict(),
        "header_values": dict(getattr(em, "provenance", None) or {}),
        "reduced_image": None if job.reduced_path is None else str(job.reduced_path),
        "psf": {"mode": job.psf_mode, **{k: v for k, v in ctx.psf.meta.items()}},
        "campaign": job.campaign,
        "campaign_sha256": job.campaign_sha256,
        "creator": f"astrocal {__version__} measure",
        "created": Time.now().isot,
        "warnings": warnings,
    }
    return meta


def _check_products(job):
    if job.overwrite:
        return
    for p in (job.table_path, job.reduced_path):
        if p is not None:
            check_writable(p, False)


def _result(job, status, message="", **kw):
    out = dict(dataset=job.dataset, index=job.index, exposure=job.stem, file=str(job.file),
               kind=job.kind, status=status, message=message, n_detected=0, n_identified=0,
               n_good=0, median_snr=np.nan, median_sigma_px=np.nan, ident_rms_px=np.nan,
               table=None, reduced=None, seconds=np.nan, pending=None, flags=[])
    out.update(kw)
    return out


def _counts(table):
    ident = np.asarray(table["hole_id"]) >= 0
    flags = np.asarray(table["flags"], np.int64)
    good = ident & ((flags & FLAGS_REJECT) == 0)
    sig = np.hypot(np.asarray(table["sigma_x"], float), np.asarray(table["sigma_y"], float)) / math.sqrt(2)
    snr = np.asarray(table["snr"], float)
    return dict(n_detected=len(table), n_identified=int(ident.sum()), n_good=int(good.sum()),
                median_snr=float(np.median(snr[good])) if good.any() else np.nan,
                median_sigma_px=float(np.median(sig[good])) if good.any() else np.nan)


def _measure_image(job, ctx):
    raw, header = read_frame(job.file, "exposure")
    em, note = frame_meta(header, job.file, ctx.rules if ctx.rules is not None else ctx.preset)
    warnings = [note] if note else []
    params = detector_params(em, ctx.preset, source=str(job.file))
    if ctx.detector_shape is not None and tuple(ctx.detector_shape) != raw.shape:
        # the fit would place the positions on the campaign's detector: refused, not warned
        raise MeasureError(f"{job.file}: frame shape {raw.shape} (ny, nx) differs from the campaign's "
                           f"detector_shape {tuple(ctx.detector_shape)}; set [instrument] detector_shape "
                           "to the frames' size")
    filt_h = getattr(em, "filter", None)
    if filt_h is not None and ctx.filter is not None and str(filt_h) != str(ctx.filter):
        warnings.append(f"header filter '{filt_h}' differs from the campaign's '{ctx.filter}'")
    mask_h = getattr(em, "mask_name", None)
    if mask_h and mask_h not in (ctx.mask.short_name, ctx.mask.name):
        warnings.append(f"header mask '{mask_h}' differs from the campaign's mask "
                        f"'{ctx.mask.short_name}'")
    reduced = reduce_frame(raw, ctx.calibration, params, psf=ctx.psf, source=str(job.file))
    del raw
    provenance = {"CAMPAIGN": (Path(job.campaign).name, "campaign file"),
                  "CAMPSHA": (job.campaign_sha256[:16], "sha256 of the campaign (first 16)"),
                  "DATASET": (job.dataset, "lab dataset")}
    offset = job.offset_arcsec
    if offset is None and getattr(em, "chopper_offset", None) is not None:
        offset = tuple(em.chopper_offset.to_value(u.arcsec))
    guess, gsig = _center_guess(reduced.data.shape, offset, ctx.pixel_scale_mas)
    try:
        table, res = measure_frame(reduced, ctx.psf, ctx.mask, pixel_scale_mas=ctx.pixel_scale_mas,
                                   mask_scale=ctx.mask_scale, center_guess=guess,
                                   center_sigma=gsig, source=str(job.file),
                                   provenance=getattr(em, "provenance", None))
    except Exception as failure:
        try:  # the reduced image is written also when the frame fails (to look at)
            write_reduced(job.reduced_path, reduced, header, overwrite=job.overwrite,
                          provenance=provenance)
        except Exception as exc:  # noqa: BLE001 - the measurement's error is the one to report
            log.debug("%s: reduced image not written: %s", job.file, exc)
        n_sat = int(reduced.meta.get("n_saturated_pixels") or 0)
        if n_sat:  # the likely cause of a failure: said with it
            level = reduced.meta.get("saturation_level_adu")
            raise MeasureError(
                f"{failure}; the frame is saturated: {n_sat} pixels ({100 * n_sat / reduced.data.size:.2g}% "
                f"of the frame) at or above the saturation level {level:.6g} ADU "
                f"({reduced.meta.get('saturation_source')}); shorten the DIT or dim the source") from failure
        raise
    # written after the fit: its DQ has the cosmic rays found in the fit residuals too
    write_reduced(job.reduced_path, reduced, header, overwrite=job.overwrite, provenance=provenance)
    warnings += table.meta.pop("frame_warnings", [])
    meta = _exposure_meta(job, ctx, em, params, reduced, warnings)
    meta.update(table.meta)
    table.meta = to_plain(meta)
    missing = _missing_on_valid_pixels(table.meta["identification"], ctx, reduced.dq)
    table.meta["identification"]["missing_on_valid_pixels"] = missing
    if missing:
        warnings.append(f"{len(missing)} hole(s) predicted on valid pixels without a spot: "
                        f"ids {missing[:20]}")
        table.meta["warnings"] = warnings
    return table, warnings


def _missing_on_valid_pixels(ident, ctx, dq):
    """Hole ids predicted in the field without a spot whose predicted position (the
    identification's affine pose) is on a valid pixel (not in the reference-pixel border
    or another masked area, where no spot is expected)."""
    ids = ident.get("missing_hole_ids") or []
    aff = ident.get("affine")
    if not ids or not aff:
        return list(ids)
    sel = np.isin(ctx.mask.hole_id, ids)
    xy = ctx.mask.xy_arcsec(ctx.mask_scale)[sel]
    p = np.asarray(aff["offset_px"]) + xy @ np.asarray(aff["matrix_px_per_arcsec"]).T
    ny, nx = dq.shape
    ix = np.rint(p[:, 0]).astype(np.int64)
    iy = np.rint(p[:, 1]).astype(np.int64)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ok = np.zeros(len(p), bool)
    ok[inside] = dq[iy[inside], ix[inside]] == 0
    return [int(h) for h in ctx.mask.hole_id[sel][ok]]


def _measure_job(job):
    """Measure (or validate) one exposure; never raises: failures are reported."""
    t0 = time.perf_counter()
    ctx = _CONTEXTS.get(job.dataset)
    try:
        if job.missing:
            raise FileNotFoundError(f"exposure file not found: {job.file}")
        if ctx is None or ctx.error:
            raise MeasureError(ctx.error if ctx is not None else f"dataset {job.dataset} not set up")
        _check_products(job)
        if job.kind == "table":
            table = read_source_table(job.file, ctx.mask)
            meta = dict(table.meta)
            meta.update({"file": str(job.file), "exposure": job.stem, "dataset": job.dataset,
                         "source": "source table given in the campaign (validated, passed on)",
                         "offset_arcsec": None if job.offset_arcsec is None else list(job.offset_arcsec),
                         "offset_sigma_mas": job.offset_sigma_mas, "mask": ctx.mask.name,
                         "filter": ctx.filter, "campaign": job.campaign,
                         "campaign_sha256": job.campaign_sha256,
                         "flag_bits": {name: bit for bit, name in FLAG_NAMES.items()},
                         "creator": f"astrocal {__version__} measure"})
            table.meta = to_plain(meta)
            same = job.table_path.resolve() == Path(job.file).resolve()
            if not same:
                atomic_write_table(table, job.table_path, overwrite=job.overwrite, format="ascii.ecsv")
            return _result(job, "ok", "source table validated" + (" (in place)" if same else ""),
                           table=str(job.table_path), seconds=time.perf_counter() - t0, **_counts(table))
        table, warnings = _measure_image(job, ctx)
        counts = _counts(table)
        ident = table.meta["identification"]
        saturated, note = saturation_note(table, table.meta.get("reduction") or {})
        if note:
            (log.warning if saturated else log.info)("%s: %s", job.file, note)
            warnings = [note] + list(warnings)
            table.meta["saturation"] = note
        out = _result(job, "saturated" if saturated else "ok", "; ".join(warnings),
                      reduced=str(job.reduced_path), ident_rms_px=float(ident.get("rms_px", np.nan)),
                      flags=["saturated"] if saturated else [], **counts)
        if job.psf_mode == "epsf":
            out["pending"] = table  # written after the ePSF pass
        else:
            atomic_write_table(table, job.table_path, overwrite=job.overwrite, format="ascii.ecsv")
            out["table"] = str(job.table_path)
        out["seconds"] = time.perf_counter() - t0
        return out
    except Exception as exc:  # noqa: BLE001 - every failure becomes a per-frame report
        msg = str(exc) if str(exc) else type(exc).__name__
        if str(job.file) not in msg and Path(job.file).name not in msg:
            msg = f"{job.file}: {msg}"
        if not isinstance(exc, (AstrocalError, OSError)):  # not bad input: a bug, said as one
            msg = internal_error(msg, exc)
        reduced = str(job.reduced_path) if job.reduced_path is not None and not isinstance(
            exc, ProductExistsError) and job.reduced_path.exists() else None
        return _result(job, "failed", msg, reduced=reduced, seconds=time.perf_counter() - t0)


# =========================================================================== ePSF pass
def _wings(shape, table, psf, size):
    """Light of every spot outside its own fitting stamp (the model PSF, first-pass fluxes
    and positions): the ePSF covers only the stamp, so neighbours' far wings on a spot's
    stamp are removed with the model before the ePSF is built and fitted."""
    x = np.asarray(table["x"], float)
    y = np.asarray(table["y"], float)
    f = np.asarray(table["flux"], float)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(f) & (f > 0)
    out = np.zeros(shape, dtype=np.float64)
    if not np.any(ok):
        return out.astype(np.float32)
    x, y, f = x[ok], y[ok], f[ok]
    render_spots(shape, x, y, f, psf, image=out)
    h = size // 2
    ny, nx = shape
    ar = np.arange(size)
    # each spot's own stamp, as the fit cuts it (first pixel x0, y0: outside the detector
    # where the edge cuts the stamp); its pixels on the detector keep the spot's own light
    x0 = np.rint(x).astype(np.int64) - h
    y0 = np.rint(y).astype(np.int64) - h
    rows = np.clip(y0[:, None] + ar[None, :], 0, ny - 1)
    cols = np.clip(x0[:, None] + ar[None, :], 0, nx - 1)
    own = psf.stamps(x, y, x0, y0, size) * f[:, None, None]
    inside = ((y0[:, None] + ar[None, :] == rows)[:, :, None]
              & (x0[:, None] + ar[None, :] == cols)[:, None, :])
    np.subtract.at(out, (np.broadcast_to(rows[:, :, None], own.shape)[inside],
                         np.broadcast_to(cols[:, None, :], own.shape)[inside]), own[inside])
    return out.astype(np.float32)


def _epsf_pass(results, ctx, jobs_by_key):
    """Build the ePSF of a dataset from its measured frames and refit every spot."""
    ok = [r for r in results if r["status"] in MEASURED and r.get("pending") is not None]
    if not ok:
        return
    frames, positions, noises, masks, tables = [], [], [], [], []
    for r in ok:
        red, _ = read_reduced(r["reduced"])
        t = r["pending"]
        flags = np.asarray(t["flags"], np.int64)
        use = (flags & (FLAGS_REJECT | C.FLAG_EDGE | C.FLAG_MASKED)) == 0
        red.data -= _wings(red.data.shape, t, ctx.psf, t.meta["psf_stamp_size"])
        frames.append(red)
        positions.append((np.asarray(t["x"], float)[use], np.asarray(t["y"], float)[use]))
        noises.append(red.noise_model(dtype=np.float32))
        masks.append(red.mask)
        tables.append(t)
    n_use = sum(len(p[0]) for p in positions)
    try:
        if n_use < 10:
            raise MeasureError(f"only {n_use} clean identified spots to build the ePSF from")
        fit = build_epsf([f.data for f in frames], positions, noise=noises, masks=masks)
    except Exception as exc:  # noqa: BLE001
        for r in ok:
            job = jobs_by_key[(r["dataset"], r["index"])]
            r.update(status="failed", pending=None,
                     message=f"{job.file}: ePSF of dataset '{ctx.name}' failed: {exc}")
        return
    epsf = fit.psf
    for r, red, t in zip(ok, frames, tables):
        job = jobs_by_key[(r["dataset"], r["index"])]
        try:
            res = fit_frame_spots(red, np.asarray(t["x_guess"], float), np.asarray(t["y_guess"], float), epsf,
                                  stamp_size=epsf.meta.get("stamp_size"))
            ids = np.asarray(t["hole_id"], np.int64)
            # keep the identification of the first pass; spots the ePSF fit lost stay listed
            new = source_table(res, ids, dict(t.meta))
            new.meta["psf"] = to_plain({"kind": "epsf", **epsf.meta, "model_first_pass": t.meta["psf"],
                                      "neighbour_wings": "light of the other spots outside their "
                                      "stamps subtracted with the model PSF (first-pass fits)",
                                      "build_history": fit.history})
            atomic_write_table(new, job.table_path, overwrite=job.overwrite, format="ascii.ecsv")
            r.update(table=str(job.table_path), pending=None, **_counts(new))
        except Exception as exc:  # noqa: BLE001
            r.update(status="failed", pending=None, message=f"{job.file}: ePSF refit failed: {exc}")


# =========================================================================== scatter check
def scatter_check(tables: Mapping[str, Table], min_common: int = 10) -> dict:
    """Stated sigmas against the scatter of the spots' positions between exposures.

    Each exposure's good identified spots are compared with those of the first exposure
    (the reference): an affine transformation (the offset of the mask, a rotation, the
    local change of scale) is fitted to the common holes and
    ``chi2 = sum r^2 / (sigma_ref^2 + sigma^2)`` over x and y of the residuals with
    ``2 n - 6`` degrees of freedom.  Distortion differences between the exposures only add
    scatter, so a ``stated_over_scatter = 1 / sqrt(chi2 / dof)`` well above 1 means sigmas
    that are too large (a wrong noise model).

    Parameters
    ----------
    tables : mapping of str to Table
        ``{exposure name: source table}`` of one dataset.
    min_common : int
        The fewest common holes for an exposure to be compared.

    Returns
    -------
    dict
        ``{exposure: {"n_common", "stated_over_scatter"}}`` for the exposures compared
        (none with fewer than two tables or ``min_common`` common holes).
    """
    def good(t):
        hid = np.asarray(t["hole_id"], np.int64)
        ok = (hid >= 0) & ((np.asarray(t["flags"], np.int64) & FLAGS_REJECT) == 0)
        return {int(h): (float(x), float(y), float(sx), float(sy)) for h, x, y, sx, sy in zip(
            hid[ok], np.asarray(t["x"], float)[ok], np.asarray(t["y"], float)[ok],
            np.asarray(t["sigma_x"], float)[ok], np.asarray(t["sigma_y"], float)[ok])}

    names = list(tables)
    out = {}
    if len(names) < 2:
        return out
    ref = good(tables[names[0]])
    for name in names[1:]:
        cur = good(tables[name])
        common = sorted(set(ref) & set(cur))
        if len(common) < min_common:
            continue
        a = np.array([ref[h] for h in common])
        b = np.array([cur[h] for h in common])
        design = np.column_stack([np.ones(len(common)), a[:, 0], a[:, 1]])
        resid = []
        for k in (0, 1):  # x and y of this exposure as affine functions of the reference's
            coef, *_ = np.linalg.lstsq(design, b[:, k], rcond=None)
            resid.append((b[:, k] - design @ coef) / np.hypot(a[:, 2 + k], b[:, 2 + k]))
        chi2 = float(np.sum(np.square(resid)))
        dof = 2 * len(common) - 6
        out[name] = {"reference": names[0], "n_common": len(common),
                     "stated_over_scatter": float(1.0 / math.sqrt(chi2 / dof)) if chi2 > 0 else float("inf")}
    return out


def _scatter_warnings(results, campaign):
    """Run :func:`scatter_check` per lab dataset on the measured tables; a warning is
    appended to the message of each exposure whose sigmas exceed the scatter by more than
    :data:`SCATTER_RATIO_HIGH`.  Returns ``{dataset: scatter_check result}``."""
    report = {}
    for ds in campaign.lab:
        tables = {}
        for r in results:
            if r["dataset"] != ds.name or r["status"] not in MEASURED or r["kind"] != "image":
                continue
            t = r.get("pending")
            if t is None and r.get("table"):
                t = Table.read(r["table"], format="ascii.ecsv")
            if t is not None:
                tables[r["exposure"]] = t
        check = scatter_check(tables)
        if not check:
            continue
        report[ds.name] = check
        for r in results:
            c = check.get(r["exposure"]) if r["dataset"] == ds.name else None
            if c is None or not c["stated_over_scatter"] > SCATTER_RATIO_HIGH:
                continue
            note = (f"{r['file']}: implausible noise model: the stated sigmas are "
                    f"{c['stated_over_scatter']:.3g} x the scatter of the {c['n_common']} spots' "
                    f"positions against exposure {c['reference']} (an affine transformation "
                    "removed). Likely cause: a normalised flat read as counts (the dataset's "
                    "flat_normalised), a wrong gain or read noise, or frames not in ADU")
            log.warning("%s", note)
            r["message"] = f"{r['message']}; {note}" if r["message"] else note
    return report


# =========================================================================== campaign checks
def _refuse_same_content(campaign):
    """The same frame under two names (equal SHA-256) would enter the fit twice as if
    independent: refused before anything is written, naming both exposures."""
    where = {}
    for kind, datasets in (("lab", campaign.lab), ("sky", campaign.sky)):
        for i, ds in enumerate(datasets):
            for k, e in enumerate(ds.exposures):
                where.setdefault(Path(e.file), f"{kind}[{i}].exposures[{k}] (dataset '{ds.name}')")
    pairs = same_content(list(where))
    if pairs:
        a, b, digest = pairs[0]
        raise CampaignError(f"{campaign.path}: {where[b]} {b} has the same content as {where[a]} {a} "
                            f"(SHA-256 {digest[:16]}...): the same frame under two names; list it once")


def _offset_warnings(results, jobs, campaign):
    """Run :func:`astrocal.lab.checks.offset_check` per lab dataset; an exposure whose
    measured shift disagrees with its commanded offset gets the flag ``offsets`` and a
    warning naming both exposures and both shifts.  Returns ``{dataset: check}``."""
    report = {}
    by_key = {(j.dataset, j.index): j for j in jobs}
    for ds in campaign.lab:
        tables, offs, sigmas, rows = {}, {}, {}, {}
        for r in results:
            if r["dataset"] != ds.name or r["status"] not in MEASURED:
                continue
            t = r.get("pending")
            if t is None and r.get("table"):
                t = Table.read(r["table"], format="ascii.ecsv")
            job = by_key.get((r["dataset"], r["index"]))
            if t is None or job is None:
                continue
            off = job.offset_arcsec if job.offset_arcsec is not None else t.meta.get("offset_arcsec")
            tables[r["exposure"]], rows[r["exposure"]] = t, r
            offs[r["exposure"]] = None if off is None else tuple(float(v) for v in off)
            sigmas[r["exposure"]] = job.offset_sigma_mas
        check = offset_check(tables, offs, sigmas, campaign.instrument.pixel_scale_mas)
        if not check:
            continue
        report[ds.name] = check
        for name, c in check.items():
            if not c["mismatch"]:
                continue
            r = rows[name]
            note = (f"commanded offset disagrees with the measured shift: {name} moved by "
                    f"({c['measured_px'][0]:.2f}, {c['measured_px'][1]:.2f}) px relative to "
                    f"{c['reference']} ({c['n_common']} common holes), the commanded offsets "
                    f"{offs[name]} and {offs[c['reference']]} arcsec give ({c['commanded_px'][0]:.2f}, "
                    f"{c['commanded_px'][1]:.2f}) px: {c['difference_px']:.2f} px apart (tolerance "
                    f"{c['tolerance_px']:.2f} px); are the offset_arcsec of dataset '{ds.name}' right?")
            log.warning("%s: %s", r["file"], note)
            r["message"] = f"{r['message']}; {note}" if r["message"] else note
            r["flags"] = list(r.get("flags") or []) + ["offsets"]
    return report


# =========================================================================== campaign
@dataclass
class MeasureReport:
    """What :func:`measure_campaign` did: ``summary`` (Table, one row per exposure),
    ``results`` (dicts), ``output`` directory, ``summary_path``, ``n_failed``, ``seconds``."""

    summary: Table
    results: list
    output: Path
    summary_path: Path | None
    n_failed: int
    seconds: float
    errors: list = field(default_factory=list)
    n_flagged: int = 0

    @property
    def ok(self) -> bool:
        """No exposure failed and no error was reported."""
        return self.n_failed == 0 and not self.errors

    @property
    def n_saturated(self) -> int:
        """Exposures measured but flagged ``saturated`` (status)."""
        return sum(r["status"] == "saturated" for r in self.results)


def _load_campaign_tolerant(path):
    """Load a campaign; exposures whose file is missing do not stop the others.

    Returns ``(campaign, missing)``: the campaign without those exposures and a list of
    (dataset name, exposure index, path, {"offset_arcsec": ...}).  Every other problem
    raises :class:`CampaignError`.
    """
    camp = load_campaign(path, missing_exposures="keep")
    missing, labs = [], []
    for ds in camp.lab:
        kept = []
        for k, e in enumerate(ds.exposures):
            if Path(e.file).exists():
                kept.append(e)
            else:
                off = list(e.offset_arcsec) if e.offset_arcsec is not None else None
                missing.append((ds.name, k, Path(e.file), {"offset_arcsec": off}))
        if kept:
            labs.append(dataclasses.replace(ds, exposures=tuple(kept)))
        else:
            log.error("%s: dataset '%s' has no exposure file that exists", camp.path, ds.name)
    return dataclasses.replace(camp, lab=tuple(labs)), missing


def _product_paths(jobs_spec, output):
    """Product stems: the exposure's name, prefixed by the dataset if names collide."""
    stems = [exposure_stem(f) for _, _, f in jobs_spec]
    dup = {s for s in stems if stems.count(s) > 1}
    out = []
    seen = set()
    for (ds, k, f), s in zip(jobs_spec, stems):
        stem = f"{ds}_{s}" if s in dup else s
        base, n = stem, 1
        while stem in seen:
            n += 1
            stem = f"{base}_{n}"
        seen.add(stem)
        out.append(stem)
    return out


def measure_campaign(campaign: str | os.PathLike | Campaign, *, overwrite: bool = False, processes: int = 1,
                     psf: str | None = None) -> MeasureReport:
    """Measure every lab and sky exposure of a campaign.

    The steps: (1) the lab jobs, one per exposure (a missing file is a failed job), their
    products under the output directory (:func:`_lab_jobs`); (2) per dataset, the mask,
    the model PSF and the calibration frames, built once (:func:`_dataset_contexts`);
    (3) the frames measured, in parallel processes when asked (:func:`_run_jobs`); (4) with
    ``psf = "epsf"`` the second pass, the checks across a dataset's frames, stale products
    removed (:func:`_lab_checks`); (5) the ``[[sky]]`` datasets, measured after the lab ones
    by :func:`astrocal.sky.measure.measure_sky_datasets` (one sky table per exposure; rows of
    kind ``sky_image`` / ``sky_list`` in the summary, ``n_identified`` = stars matched), and
    an ``[lms]`` data set (:func:`astrocal.lms.measure.measure_lms`); (6) the summary written.

    Parameters
    ----------
    campaign : str, os.PathLike or Campaign
        A path or a loaded :class:`~astrocal.campaign.Campaign`.
    overwrite : bool
        Replace existing products.
    processes : int
        Measure frames in parallel processes (>= 1).
    psf : {"model", "epsf"}, optional
        Overrides the campaign's ``[measure] psf``.

    Returns
    -------
    MeasureReport

    Raises
    ------
    CampaignError
        Campaign-level problems (invalid file, misspelt key).
    ProductExistsError
        An existing summary without ``overwrite``.

    Notes
    -----
    Problems of one frame or one dataset are reported in the summary (status ``failed``)
    and the others are measured.
    """
    t0 = time.perf_counter()
    missing = []
    if not isinstance(campaign, Campaign):
        campaign, missing = _load_campaign_tolerant(campaign)
    if campaign.sky:
        campaign.earth.apply(campaign.path)  # the campaign's Earth-orientation tables (astrocal.earth)
    processes = int(processes)
    if processes < 1:
        raise MeasureError(f"processes must be >= 1, got {processes}")
    mode = psf or campaign.measure.psf
    if mode not in ("model", "epsf"):
        raise ValueError(f"psf must be 'model' or 'epsf', got {mode!r}")
    _refuse_same_content(campaign)
    output = Path(campaign.measure.output)
    summary_path = output / "summary.ecsv"
    check_writable(summary_path, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    rules = header_rules(campaign.instrument)  # the keyword map and defaults of raw, background and flat frames

    jobs, stems = _lab_jobs(campaign, missing, output, overwrite, mode)
    contexts = _dataset_contexts(campaign, jobs, missing, rules)
    results = _run_jobs(jobs, contexts, processes)
    scatter, offsets = _lab_checks(results, jobs, contexts, campaign, mode, overwrite)

    # ---- [[sky]] datasets: stars measured and matched to the catalogue (astrocal.sky.measure)
    if campaign.sky:
        results += measure_sky_datasets(campaign, output=output, overwrite=overwrite, psf=mode,
                                        used_stems=stems, processes=processes)

    # ---- [lms]: laser spots, pinhole traces and slice edges per frame (astrocal.lms.measure)
    if campaign.lms is not None:
        # lazy: only an [lms] data set needs astrocal.lms (which imports astrocal.field)
        from ..lms.measure import measure_lms

        results += measure_lms(campaign, output, overwrite=overwrite,
                               used_stems=stems + [r["exposure"] for r in results])

    summary = _summary_table(results, jobs, campaign, mode, output, time.perf_counter() - t0,
                             processes)
    summary.meta["scatter_check"] = to_plain(scatter)
    summary.meta["offset_check"] = to_plain(offsets)
    atomic_write_table(summary, summary_path, overwrite=overwrite, format="ascii.ecsv")
    n_failed = sum(r["status"] == "failed" for r in results)
    n_flagged = sum(bool(r.get("flags")) for r in results)
    return MeasureReport(summary=summary, results=results, output=output,
                         summary_path=summary_path, n_failed=n_failed,
                         seconds=time.perf_counter() - t0, n_flagged=n_flagged)


def _lab_jobs(campaign, missing, output, overwrite, mode):
    """Step 1: one :class:`_Job` per lab exposure (``missing``: those whose file does not
    exist, failed jobs) and the product stems; every product path under ``output``."""
    spec = []  # (dataset, index, file, Exposure or None, offset of a missing one)
    for ds in campaign.lab:
        for k, e in enumerate(ds.exposures):
            spec.append((ds.name, k, e.file, e, None))
    for name, k, p, item in missing:
        off = item.get("offset_arcsec") if isinstance(item, dict) else None
        ok_off = isinstance(off, list) and len(off) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in off)
        spec.append((name, 1000 + k, p, None, tuple(float(v) for v in off) if ok_off else None))
    stems = _product_paths([(a, b, c) for a, b, c, _, _ in spec], output)
    jobs = []
    for (name, k, f, e, off), stem in zip(spec, stems):
        if e is None:  # named in the campaign, file missing
            jobs.append(_Job(name, k, Path(f), "image", stem, output / f"{stem}.ecsv", None, off,
                             None, overwrite, mode, str(campaign.path), campaign.sha256,
                             missing=True))
            continue
        kind = exposure_kind(f)
        jobs.append(_Job(name, k, Path(f), kind, stem, output / f"{stem}.ecsv",
                         output / f"{stem}_reduced.fits" if kind == "image" else None,
                         e.offset_arcsec, e.offset_sigma_mas, overwrite, mode,
                         str(campaign.path), campaign.sha256))
    for job in jobs:  # every product path under the output directory (names are checked at load too)
        for path in (job.table_path, job.reduced_path):
            if path is not None:
                confined(path, output)
    return jobs, stems


def _dataset_contexts(campaign, jobs, missing, rules):
    """Step 2: per dataset, its :class:`_Context` (mask, PSF, calibration), built once; the
    PSF table is computed in a thread while the calibration frames are read (both release
    the GIL). A dataset that cannot be set up carries its error."""
    inst = campaign.instrument
    contexts = {}
    with ThreadPoolExecutor(max_workers=1) as threads:
        for ds in campaign.lab:
            ctx = _Context(name=ds.name, filter=ds.filter, preset=inst.preset, rules=rules,
                           pixel_scale_mas=inst.pixel_scale_mas,
                           mask_scale=inst.mask_scale_mm_per_arcsec,
                           detector_shape=tuple(inst.detector_shape), mask_path=str(ds.mask))
            contexts[ds.name] = ctx
            try:
                ctx.mask = load_mask(ds.mask)
                needs_images = any(j.dataset == ds.name and j.kind == "image" and not j.missing
                                   for j in jobs)
                if needs_images:
                    future = threads.submit(model_psf, inst.preset, ds.filter, ctx.mask,
                                            pixel_scale_mas=inst.pixel_scale_mas,
                                            mask_scale=inst.mask_scale_mm_per_arcsec)
                    try:
                        if ds.background is not None or ds.flat is not None:
                            ctx.calibration = dataset_calibration(
                                ds.background, ds.flat, rules, getattr(ds, "flat_normalised", None))
                    finally:
                        ctx.psf = future.result()
            except Exception as exc:  # noqa: BLE001 - the dataset fails, others go on
                ctx.error = f"dataset '{ds.name}' ({campaign.path}): {exc}"
                log.error("%s", ctx.error)
    for name, _, _, _ in missing:
        contexts.setdefault(name, _Context(name=name, error=f"dataset '{name}' has no usable exposure"))
    return contexts


def _run_jobs(jobs, contexts, processes):
    """Step 3: the jobs measured (:func:`_measure_job`), in ``processes`` forked processes
    when more than one; the results in job order."""
    todo = list(jobs)
    if processes > 1 and len(todo) > 1:
        mpctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=min(processes, len(todo)), mp_context=mpctx,
                                 initializer=_init_worker, initargs=(contexts,)) as pool:
            return list(pool.map(_measure_job, todo))
    _init_worker(contexts)
    return [_measure_job(j) for j in todo]


def _lab_checks(results, jobs, contexts, campaign, mode, overwrite):
    """Step 4: with ``mode = "epsf"`` the second pass; the checks across a dataset's
    frames; stale products of frames that failed now removed when overwriting; each
    frame's outcome logged. Returns ``(scatter check, offset check)`` for the summary."""
    if mode == "epsf":
        by_key = {(j.dataset, j.index): j for j in jobs}
        for ds in campaign.lab:
            _epsf_pass([r for r in results if r["dataset"] == ds.name], contexts[ds.name], by_key)

    # stated sigmas against the scatter of the positions between the exposures of a dataset
    scatter = _scatter_warnings(results, campaign)
    # commanded offsets against the measured shifts of the holes
    offsets = _offset_warnings(results, jobs, campaign)

    # stale products of frames that failed now are removed when overwriting
    if overwrite:
        for r, j in zip(results, jobs):
            if r["status"] == "failed" and j.table_path.exists() and j.kind == "image":
                log.info("removing stale %s", j.table_path)
                j.table_path.unlink()

    for r in results:
        if r["status"] == "failed":
            log.error("%s", r["message"])
        else:
            log.info("%s: %d spots, %d identified, %d good; median SNR %.0f, median sigma %.2g px%s",
                     Path(r["file"]).name, r["n_detected"], r["n_identified"], r["n_good"],
                     r["median_snr"], r["median_sigma_px"],
                     f" ({r['message']})" if r["message"] else "")
    return scatter, offsets


def _summary_table(results, jobs, campaign, mode, output, seconds, processes):
    def rel(p):
        if p is None:
            return ""
        try:
            return Path(p).resolve().relative_to(output.resolve()).as_posix()
        except ValueError:
            return str(p)

    t = Table()
    t["dataset"] = [r["dataset"] for r in results]
    t["exposure"] = [r["exposure"] for r in results]
    t["file"] = [r["file"] for r in results]
    t["kind"] = [r["kind"] for r in results]
    t["status"] = [r["status"] for r in results]
    t["n_detected"] = np.array([r["n_detected"] for r in results], np.int64)
    t["n_identified"] = np.array([r["n_identified"] for r in results], np.int64)
    t["n_good"] = np.array([r["n_good"] for r in results], np.int64)
    t["median_snr"] = np.array([r["median_snr"] for r in results], float)
    t["median_sigma_px"] = np.array([r["median_sigma_px"] for r in results], float)
    t["ident_rms_px"] = np.array([r["ident_rms_px"] for r in results], float)
    offs = [j.offset_arcsec for j in jobs] + [None] * (len(results) - len(jobs))  # sky rows last
    t["offset_x_arcsec"] = np.array([np.nan if o is None else o[0] for o in offs], float)
    t["offset_y_arcsec"] = np.array([np.nan if o is None else o[1] for o in offs], float)
    t["table"] = [rel(r["table"]) for r in results]
    t["reduced"] = [rel(r["reduced"]) for r in results]
    t["seconds"] = np.array([r["seconds"] for r in results], float)
    t["flags"] = [",".join(r.get("flags") or []) for r in results]
    t["message"] = [r["message"] or "" for r in results]
    t.meta = to_plain({
        "description": "astrocal measure: one row per exposure (status ok/saturated/failed, flags "
                       "of the checks: saturated, offsets; message)",
        "campaign": str(campaign.path),
        "campaign_sha256": campaign.sha256,
        "psf": mode,
        "n_exposures": len(results),
        "n_failed": int(sum(r["status"] == "failed" for r in results)),
        "processes": processes,
        "seconds": seconds,
        "creator": f"astrocal {__version__} measure",
        "created": Time.now().isot,
        "good_definition": "no flag of reject_flags (identified, converged, not saturated, "
                           "enough valid pixels)",
        "reject_flags": FLAGS_REJECT,
    })
    return t
