"""``astrocal measure`` for a campaign's ``[lms]`` data set: spot, trace and edge tables per frame.

For every ``[[lms.frames]]`` entry (:class:`astrocal.campaign.LmsFrameSpec`) the frame is
reduced (its background subtracted, :func:`~astrocal.lms.frames.reduce_lms_frame`) and measured
with the *nominal* geometry of the campaign's settings (:class:`~astrocal.lms.LmsGeometry` with
all deviations zero) and the mask's holes at the commanded chopper offset:

- ``laser`` frames: the laser spots (:func:`~astrocal.lms.spots.measure_laser_spots`): hole,
  slice, line, detector, (col, row), their 2 x 2 covariance, flags;
- ``grid`` frames: the pinhole traces' centre lines (:func:`~astrocal.lms.continuum.measure_traces`);
- ``slices`` frames: the slice edges (:func:`~astrocal.lms.continuum.measure_slice_edges`);
- ``background`` frames: used by the others, nothing written.

Each table is written as ``<measure.output>/<frame stem>.ecsv`` with its meta (``lms_table`` =
``spots``/``traces``/``edges``, the frame, its setting, the commanded offset, the campaign's
SHA-256); the summary (``summary.ecsv``) gets one row per frame, kind ``lms_<kind>``.
A frame that cannot be measured (an astrocal error: a missing detector extension, a line not where
the setting puts it, ...) is reported ``failed`` with the message and the others are measured;
anything else is a bug (``INTERNAL ERROR``).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..atomic import atomic_write_table, check_writable
from ..errors import AstrocalError
from ..image.frame import exposure_stem, internal_error
from ..lab.mask import load_mask
from ..plain import to_plain
from ..resultset import confined
from .continuum import measure_slice_edges, measure_traces
from .deviations import DeviationLayout
from .errors import FrameMismatchError
from .frames import read_lms_frame, reduce_lms_frame
from .geometry import LmsGeometry
from .spots import SPOT_FLAGS, measure_laser_spots

if TYPE_CHECKING:  # hints only: astrocal.campaign imports astrocal.lms to resolve [lms]
    import astrocal.campaign

__all__ = ["TABLE_OF_KIND", "nominal_geometry", "mask_holes", "lms_stems", "measure_lms"]

log = logging.getLogger(__name__)

TABLE_OF_KIND = {"laser": "spots", "grid": "traces", "slices": "edges"}
"""The table each kind of LMS frame gives (``lms_table`` in its meta)."""


def nominal_geometry(lms: astrocal.campaign.LmsDataset) -> LmsGeometry:
    """The optical model (all deviations zero) of a campaign's LMS data set.

    Parameters
    ----------
    lms : LmsDataset
        The campaign's ``[lms]`` (:class:`~astrocal.campaign.LmsDataset`): its settings, degree,
        reference detector, residual functions and truth direction.

    Returns
    -------
    LmsGeometry
    """
    layout = DeviationLayout(tuple(lms.settings), degree=lms.degree, reference_detector=lms.reference_detector,
                             residual_m=getattr(lms, "residual_m", 0))
    return LmsGeometry(layout, truth=lms.truth_direction)


def mask_holes(lms: astrocal.campaign.LmsDataset) -> tuple[np.ndarray, np.ndarray]:
    """The mask's holes.

    Parameters
    ----------
    lms : LmsDataset
        The campaign's ``[lms]``: its mask table and plate scale.

    Returns
    -------
    ids : ndarray of int (N,)
        Hole ids.
    ab : ndarray (N, 2)
        Positions in the field frame [arcsec].
    """
    mask = load_mask(lms.mask)
    return np.asarray(mask.hole_id), np.asarray(mask.xy_arcsec(lms.mask_scale_mm_per_arcsec), float)


def lms_stems(lms: astrocal.campaign.LmsDataset, used: Iterable[str] = ()) -> list[str]:
    """Product stems of the LMS frames: the file's name, made unique against ``used`` (other stems).

    Parameters
    ----------
    lms : LmsDataset
        The campaign's ``[lms]``; a clash is resolved with its name (``<name>_<stem>``, then
        ``<name>_<stem>_<n>``).
    used : iterable of str
        Stems already taken.

    Returns
    -------
    list of str
        One per frame of ``lms.frames``.
    """
    seen, out = set(used), []
    for f in lms.frames:
        base = stem = exposure_stem(f.file)
        n = 1
        while stem in seen:
            n += 1
            stem = f"{lms.name}_{base}" if n == 2 else f"{lms.name}_{base}_{n}"
        seen.add(stem)
        out.append(stem)
    return out


def _off_centre_note(kind, table):
    """For a laser table, the spots flagged only as off their slice's centre (a slit-loss scan
    exposure: left out of the geometry, used for the slit loss), as text for the log."""
    if kind != "laser":
        return ""
    flags = np.asarray(table["flags"], np.int64)
    n = int(np.sum(flags == SPOT_FLAGS["off_centre"]))
    return f", {n} off their slice's centre (slit-loss scan: for the slit loss, not the geometry)" if n else ""


def _counts(kind, table):
    """Summary figures of one table (the lab summary's columns)."""
    flags = np.asarray(table["flags"], np.int64)
    good = flags == 0
    if kind == "laser":
        found = (flags & SPOT_FLAGS["not_found"]) == 0
        sig = np.hypot(np.asarray(table["sigma_col"], float), np.asarray(table["sigma_row"], float)) / np.sqrt(2)
        snr = np.asarray(table["snr"], float)
        d = np.hypot(np.asarray(table["col"] - table["col_pred"] - table["col_corr"], float),
                     np.asarray(table["row"] - table["row_pred"] - table["row_corr"], float))
        rms = float(np.sqrt(np.mean(d[good] ** 2))) if good.any() else np.nan
        return dict(n_detected=len(table), n_identified=int(found.sum()), n_good=int(good.sum()),
                    median_snr=float(np.median(snr[good])) if good.any() else np.nan,
                    median_sigma_px=float(np.median(sig[good])) if good.any() else np.nan, ident_rms_px=rms)
    sig = np.asarray(table["sigma_row"], float)
    found = np.isfinite(np.asarray(table["row"], float))
    snr = np.asarray(table["snr"], float) if "snr" in table.colnames else np.full(len(table), np.nan)
    return dict(n_detected=len(table), n_identified=int(found.sum()), n_good=int(good.sum()),
                median_snr=float(np.nanmedian(snr[good])) if good.any() and np.isfinite(snr[good]).any() else np.nan,
                median_sigma_px=float(np.median(sig[good])) if good.any() else np.nan, ident_rms_px=np.nan)


def _result(lms, frame, stem, status, message="", **kw):
    out = dict(dataset=lms.name, index=0, exposure=stem, file=str(frame.file), kind=f"lms_{frame.kind}",
               status=status, message=message, n_detected=0, n_identified=0, n_good=0, median_snr=np.nan,
               median_sigma_px=np.nan, ident_rms_px=np.nan, table=None, reduced=None, seconds=np.nan,
               pending=None, flags=[])
    out.update(kw)
    return out


def _reduce(frame, lms, backgrounds):
    defaults = dict(gain_e_per_adu=lms.gain_e_per_adu, read_noise_e=lms.read_noise_e)
    bg = None
    if frame.background is not None:
        key = str(frame.background)
        if key not in backgrounds:
            backgrounds[key] = read_lms_frame(frame.background, **defaults)
        bg = backgrounds[key]
    return reduce_lms_frame(read_lms_frame(frame.file, **defaults), bg)


def _measure_one(frame, lms, geometry, holes, backgrounds):
    ids, ab = holes
    red = _reduce(frame, lms, backgrounds)
    if abs(red.lam_c_um - frame.lam_c_um) > 1e-6:
        raise FrameMismatchError(f"{frame.file}: header setting ESO INS WLEN CEN = {red.lam_c_um} um, the campaign "
                                 f"says {frame.lam_c_um} um")
    common = dict(setting=frame.lam_c_um)
    if frame.kind == "laser":
        return measure_laser_spots(red, geometry, ab, frame.lines_um, offset_arcsec=frame.offset_arcsec,
                                   orientation=lms.orientation, hole_id=ids, **common)
    if frame.kind == "grid":
        return measure_traces(red, geometry, ab, offset_arcsec=frame.offset_arcsec, orientation=lms.orientation,
                              hole_id=ids, **common)
    return measure_slice_edges(red, geometry, **common)


def measure_lms(campaign: astrocal.campaign.Campaign, output: str | os.PathLike, *, overwrite: bool = False,
                used_stems: Iterable[str] = ()) -> list[dict]:
    """Measure every frame of ``campaign.lms``.

    Writes ``<output>/<stem>.ecsv`` per measured frame (never outside ``output``); an existing
    table raises :class:`~astrocal.atomic.ProductExistsError` in that frame's result unless
    ``overwrite``.

    Parameters
    ----------
    campaign : Campaign
        The campaign; its ``lms`` data set is measured.
    output : str or os.PathLike
        The directory of the tables.
    overwrite : bool
        Replace existing tables.
    used_stems : iterable of str
        Stems the other data sets already took (:func:`lms_stems`).

    Returns
    -------
    list of dict
        One result per frame (the lab summary's keys).
    """
    lms = campaign.lms
    output = Path(output)
    stems = lms_stems(lms, used_stems)
    geometry = nominal_geometry(lms)
    holes = mask_holes(lms)
    backgrounds = {}
    results = []
    for frame, stem in zip(lms.frames, stems):
        t0 = time.perf_counter()
        if frame.kind == "background":
            results.append(_result(lms, frame, stem, "ok", "background: subtracted from the frames naming it",
                                   seconds=0.0))
            continue
        path = confined(output / f"{stem}.ecsv", output)
        try:
            if not Path(frame.file).exists():
                raise FileNotFoundError(f"LMS frame not found: {frame.file}")
            check_writable(path, overwrite)
            table = _measure_one(frame, lms, geometry, holes, backgrounds)
            table.meta.update({"lms_table": TABLE_OF_KIND[frame.kind], "kind": frame.kind, "dataset": lms.name,
                               "exposure": stem, "file": str(frame.file),
                               "offset_arcsec": None if frame.offset_arcsec is None else list(frame.offset_arcsec),
                               "campaign": str(campaign.path), "campaign_sha256": campaign.sha256,
                               "creator": f"astrocal {__version__} measure"})
            table.meta = to_plain(table.meta)
            atomic_write_table(table, path, overwrite=overwrite, format="ascii.ecsv")
            counts = _counts(frame.kind, table)
            results.append(_result(lms, frame, stem, "ok", table=str(path), seconds=time.perf_counter() - t0,
                                   **counts))
            log.info("%s: %s, %d of %d found, %d good%s", Path(frame.file).name, TABLE_OF_KIND[frame.kind],
                     counts["n_identified"], counts["n_detected"], counts["n_good"], _off_centre_note(frame.kind, table))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a per-frame report
            msg = str(exc) or type(exc).__name__
            if str(frame.file) not in msg and Path(frame.file).name not in msg:
                msg = f"{frame.file}: {msg}"
            if not isinstance(exc, (AstrocalError, OSError)):
                msg = internal_error(msg, exc)
            results.append(_result(lms, frame, stem, "failed", msg, seconds=time.perf_counter() - t0))
    return results
