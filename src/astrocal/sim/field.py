"""Simulated instrument distortion fields, written as solution files with their truth.

:func:`simulate_field` draws a smooth field for an instrument (plate scale from the
instrument's facts, a few pixels of non-linear distortion at the corners) and writes it in
every format astrocal reads, measuring the accuracy of each conversion so that a user sees
what the formats preserve.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write_text, check_writable
from ..field import invert, local_geometry, nonlinear_part
from ..field.synthetic import smooth_field
from ..formats.astromet import read_astromet, write_astromet
from ..formats.siaf import read_siaf, write_siaf
from ..formats.sip import read_sip_header, write_sip_header
from ..instruments import get_instrument
from ..solution import Solution

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldFiles:
    """Paths written by :func:`simulate_field` and the figures measured on them."""

    astromet: Path
    sip: Path
    siaf: Path
    summary: Path
    figures: dict


def instrument_field(instrument="metis-lm", degree=5, corner_px=3.0, rotation_deg=0.2, seed=None):
    """A smooth field with the instrument's detector and nominal pixel scale."""
    inst = get_instrument(instrument)
    return inst, smooth_field(shape=inst.detector_shape, pixel_scale_mas=inst.pixel_scale_mas,
                              corner_px=corner_px, degree=degree, rotation_deg=rotation_deg,
                              rng=seed)


def _max_px(sol, other, x, y):
    u1, v1 = sol.field(x, y)
    u2, v2 = other.field(x, y)
    return float(np.max(np.hypot(u1 - u2, v1 - v2)) / sol.plate_scale)


def simulate_field(out, instrument="metis-lm", degree=5, corner_px=3.0, rotation_deg=0.2,
                   seed=None, filter_id=None, overwrite=False):
    """Draw a field and write ``distortion_truth.fits`` (AstroMet, double precision),
    ``distortion_truth.hdr`` (TAN-SIP), ``distortion_truth.ecsv`` (SIAF) and
    ``distortion_truth.json`` (the figures) into ``out``."""
    out = Path(out)
    names = {k: out / f"distortion_truth.{ext}" for k, ext in
             (("astromet", "fits"), ("sip", "hdr"), ("siaf", "ecsv"), ("summary", "json"))}
    for path in names.values():
        check_writable(path, overwrite)
    inst, field = instrument_field(instrument, degree, corner_px, rotation_deg, seed)
    filter_id = filter_id or inst.default_filter
    meta = {"creator": f"astrocal {__version__}", "simulated": "truth field",
            "instrument": inst.name, "seed": "none" if seed is None else int(seed)}
    sol = Solution(field, filter=filter_id, meta=meta)
    write_astromet(names["astromet"], sol, instrument=inst.name, overwrite=overwrite,
                   provenance=meta, precision="double")
    write_sip_header(names["sip"], sol, overwrite=overwrite)
    write_siaf(names["siaf"], sol, overwrite=overwrite)

    rng = np.random.default_rng(12345)
    ny, nx = inst.detector_shape
    x = rng.uniform(-0.5, nx - 0.5, 20000)
    y = rng.uniform(-0.5, ny - 0.5, 20000)
    inv = invert(field)
    corners_x = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5])
    corners_y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    nlu, nlv = nonlinear_part(field)(corners_x, corners_y)
    geom = local_geometry(field, x, y)
    am = read_astromet(names["astromet"])[filter_id]
    figures = {
        "instrument": inst.name,
        "filter": filter_id,
        "degree": field.degree,
        "plate_scale_mas_per_px": sol.plate_scale * 1e3,
        "rotation_deg": sol.rotation,
        "pixel_scale_range_mas": [float(geom.scale.min() * 1e3), float(geom.scale.max() * 1e3)],
        "nonlinear_at_corners_px": float(np.max(np.hypot(nlu, nlv)) / sol.plate_scale),
        "reverse_field_degree": inv.field.degree,
        "reverse_max_roundtrip_px": inv.max_roundtrip_error,
        "astromet_polynom_map_max_error_px": float(am.header["POLYERR"]),
        "astromet_polynom_map2_max_error_px": float(am.header["POLY2ERR"]),
        "astromet_file_vs_truth_max_px": _max_px(sol, am.solution(), x, y),
        "sip_file_vs_truth_max_px": _max_px(sol, read_sip_header(names["sip"]), x, y),
        "siaf_file_vs_truth_max_px": _max_px(sol, read_siaf(names["siaf"]), x, y),
    }
    atomic_write_text(names["summary"], json.dumps(figures, indent=2) + "\n", overwrite=overwrite)
    return FieldFiles(names["astromet"], names["sip"], names["siaf"], names["summary"], figures)
