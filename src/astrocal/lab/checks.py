"""Checks of the measure stage's inputs across exposures: the same frame under two names,
saturated frames, and commanded offsets that disagree with the measured shifts.

Plain functions on plain data (paths, tables, numbers); :mod:`astrocal.lab.measure` calls
them and reports what they find in the summary (status, ``flags`` and message columns).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..checksum import file_sha256
from ..sources import FLAGS_REJECT
from ..image import centroid as C

__all__ = ["same_content", "saturation_note", "offset_check", "SATURATED_SPOTS_FRACTION",
           "OFFSET_NSIGMA", "OFFSET_MIN_PX", "OFFSET_RELATIVE"]

#: an exposure whose identified spots are saturated in at least this fraction is flagged
#: ``saturated`` (its good spots are too few to trust; the frame needs a shorter DIT)
SATURATED_SPOTS_FRACTION = 0.5
#: a measured shift disagrees with the commanded one when the difference exceeds
#: OFFSET_NSIGMA x the offsets' stated sigma, OFFSET_MIN_PX pixels and OFFSET_RELATIVE x
#: the commanded shift (the field's distortion changes the shift over the field by a
#: fraction of itself: a few 1e-3 for the METIS imagers)
OFFSET_NSIGMA = 5.0
OFFSET_MIN_PX = 1.0
OFFSET_RELATIVE = 0.02


def same_content(files: Iterable[str | os.PathLike]) -> list[tuple[Path, Path, str]]:
    """Groups of files with the same bytes (SHA-256) among ``files``.

    Parameters
    ----------
    files : iterable of str or os.PathLike
        Paths; missing ones are skipped.  Iterated twice (give a list).

    Returns
    -------
    list of (Path, Path, str)
        ``(first, other, sha256)`` for each file with the same bytes as an earlier one,
        in the given order.
    """
    seen, out = {}, []
    by_size = {}
    for f in files:
        p = Path(f)
        if p.is_file():
            by_size.setdefault(p.stat().st_size, []).append(p)
    candidates = {p for group in by_size.values() if len(group) > 1 for p in group}
    for f in files:  # only files of equal size are hashed
        p = Path(f)
        if p not in candidates:
            continue
        digest = file_sha256(p)
        if digest in seen and seen[digest] != p:
            out.append((seen[digest], p, digest))
        seen.setdefault(digest, p)
    return out


def saturation_note(table: Table, reduction: Mapping) -> tuple[bool, str | None]:
    """Whether a measured frame is saturated, and a note saying how much.

    Parameters
    ----------
    table : Table
        The frame's source table (``hole_id``, ``flags``).
    reduction : Mapping
        The reduced frame's meta (``n_saturated_pixels``, ``saturation_level_adu``,
        ``saturation_source``).

    Returns
    -------
    flagged : bool
        True when at least :data:`SATURATED_SPOTS_FRACTION` of its identified spots have
        a saturated pixel.
    note : str or None
        The numbers (spots, pixels, the level in ADU and where it came from); None if no
        pixel is saturated.
    """
    n_pix = int(reduction.get("n_saturated_pixels") or 0)
    if n_pix == 0:
        return False, None
    ident = np.asarray(table["hole_id"]) >= 0
    sat = (np.asarray(table["flags"], np.int64) & C.FLAG_SATURATED) != 0
    n_ident, n_sat = int(ident.sum()), int((sat & ident).sum())
    frac = n_sat / n_ident if n_ident else 1.0
    level = reduction.get("saturation_level_adu")
    source = reduction.get("saturation_source") or "the detector's full well"
    where = f" (level {level:.6g} ADU, {source})" if level is not None else ""
    flagged = frac >= SATURATED_SPOTS_FRACTION
    note = (f"{'saturated frame: ' if flagged else ''}{n_sat} of {n_ident} identified spots "
            f"({100 * frac:.0f}%) have saturated pixels, {n_pix} pixels at or above the saturation "
            f"level{where}")
    if flagged:
        note += "; their positions are not used (shorten the DIT or dim the source)"
    return flagged, note


def offset_check(tables: Mapping[str, Table], offsets: Mapping[str, tuple[float, float] | None],
                 sigmas_mas: Mapping[str, float | None], pixel_scale_mas: float) -> dict[str, dict]:
    """Commanded offsets against the measured shifts of the identified holes.

    The measured shift is the median over the holes both exposures identified (good
    spots) of the position difference (px); the commanded one is the offsets' difference
    mapped to pixels with the reference's identified affine map (mask arcsec -> px; the
    nominal pixel scale when it has none).

    Parameters
    ----------
    tables : Mapping
        ``{exposure: source table}`` of one dataset (the first is the reference).
    offsets : Mapping
        ``{exposure: (x, y) arcsec or None}``.
    sigmas_mas : Mapping
        ``{exposure: stated sigma (mas) or None}``.
    pixel_scale_mas : float
        The nominal pixel scale, mas/px.

    Returns
    -------
    dict
        ``{exposure: {"reference", "n_common", "measured_px", "commanded_px",
        "difference_px", "tolerance_px", "mismatch"}}`` for the exposures compared
        (those with an offset and at least 3 holes in common with the reference).
    """
    names = [n for n in tables if offsets.get(n) is not None]
    if len(names) < 2:
        return {}

    def good(t):
        hid = np.asarray(t["hole_id"], np.int64)
        ok = (hid >= 0) & ((np.asarray(t["flags"], np.int64) & FLAGS_REJECT) == 0)
        return dict(zip(hid[ok].tolist(), np.column_stack([np.asarray(t["x"], float)[ok],
                                                            np.asarray(t["y"], float)[ok]])))

    ref = names[0]
    aff = (tables[ref].meta.get("identification") or {}).get("affine") or {}
    mirror = ((tables[ref].meta.get("identification") or {}).get("similarity") or {}).get("mirror")
    matrix = np.asarray(aff["matrix_px_per_arcsec"], float) if aff.get("matrix_px_per_arcsec") and not mirror \
        else np.eye(2) * 1e3 / pixel_scale_mas
    ref_xy = good(tables[ref])
    out = {}
    for name in names[1:]:
        cur = good(tables[name])
        common = sorted(set(ref_xy) & set(cur))
        if len(common) < 3:
            continue
        measured = np.median(np.array([cur[h] - ref_xy[h] for h in common]), axis=0)
        commanded = matrix @ (np.asarray(offsets[name], float) - np.asarray(offsets[ref], float))
        diff = float(np.hypot(*(measured - commanded)))
        s = [v for v in (sigmas_mas.get(name), sigmas_mas.get(ref)) if v is not None]
        sigma_px = math.sqrt(sum(v * v for v in s)) / pixel_scale_mas if len(s) == 2 else 0.0
        tol = max(OFFSET_NSIGMA * sigma_px, OFFSET_MIN_PX,
                  OFFSET_RELATIVE * float(np.hypot(*commanded)))
        out[name] = {"reference": ref, "n_common": len(common),
                     "measured_px": [float(v) for v in measured],
                     "commanded_px": [float(v) for v in commanded],
                     "difference_px": diff, "tolerance_px": tol, "mismatch": bool(diff > tol)}
    return out
