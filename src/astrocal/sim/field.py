"""Simulated instrument distortion fields, written as solution files with their truth.

:func:`simulate_field` draws a smooth field for an instrument (plate scale from the
instrument's facts, a few pixels of non-linear distortion at the corners) and writes it in
every format astrocal reads, measuring the accuracy of each conversion so that a user sees
what the formats preserve.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write_text, check_writable
from ..errors import SimulationOptionError
from ..field import DistortionField, invert, local_geometry, nonlinear_part
from ..field.synthetic import smooth_field
from ..formats.astromet import read_astromet, write_astromet
from ..formats.convert import read_solutions
from ..formats.siaf import read_siaf, write_siaf
from ..formats.sip import read_sip_header, write_sip_header
from ..instruments import Instrument, get_instrument
from ..pixels import detector_domain
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


def instrument_field(instrument: str = "metis-lm", degree: int = 5, corner_px: float = 3.0,
                     rotation_deg: float = 0.2, seed: int | None = None) -> tuple[Instrument, DistortionField]:
    """A smooth field with the instrument's detector and nominal pixel scale.

    Parameters
    ----------
    instrument : str
        Instrument preset name.
    degree : int
        Polynomial degree of the field.
    corner_px : float
        Non-linear distortion at the detector's corners, pixels.
    rotation_deg : float
        Rotation of the field, degrees.
    seed : int, optional
        Seed of the field's shape (None: the fixed default field of
        :func:`astrocal.field.synthetic.smooth_field`).

    Returns
    -------
    inst : Instrument
        The instrument.
    field : DistortionField
        The field (0-based pixels -> focal-plane arcsec).
    """
    inst = get_instrument(instrument)
    return inst, smooth_field(shape=inst.detector_shape, pixel_scale_mas=inst.pixel_scale_mas,
                              corner_px=corner_px, degree=degree, rotation_deg=rotation_deg,
                              rng=seed)


def _max_px(sol, other, x, y):
    u1, v1 = sol.field(x, y)
    u2, v2 = other.field(x, y)
    return float(np.max(np.hypot(u1 - u2, v1 - v2)) / sol.plate_scale)


def simulate_field(out: str | os.PathLike, instrument: str = "metis-lm", degree: int = 5, corner_px: float = 3.0,
                   rotation_deg: float = 0.2, seed: int | None = None, filter_id: str | None = None,
                   overwrite: bool = False) -> FieldFiles:
    """Draw a field and write it in every solution format.

    ``distortion_truth.fits`` (AstroMet, double precision), ``distortion_truth.hdr``
    (TAN-SIP), ``distortion_truth.ecsv`` (SIAF) and ``distortion_truth.json`` (the figures)
    into ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        Output directory.
    instrument, degree, corner_px, rotation_deg, seed
        The field, as :func:`instrument_field`.
    filter_id : str, optional
        Filter id of the solutions (default: the instrument's default filter).
    overwrite : bool
        Replace existing files (else an existing file is an error, checked before writing).

    Returns
    -------
    FieldFiles
        The paths written and the figures measured on them.
    """
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


def field_from_file(path: str | os.PathLike, filter_name: str, shape: tuple[int, int]) -> DistortionField:
    """The instrument field of a solution file, for one filter and one detector.

    Parameters
    ----------
    path : str or os.PathLike
        A solution file (AstroMet FITS, SIP header or FITS, SIAF ECSV).
    filter_name : str
        The filter whose solution is used; a file with one solution gives it for any filter.
    shape : tuple of int
        Detector shape ``(ny, nx)``: the field's domain must be this detector's.

    Returns
    -------
    DistortionField
        The field (0-based pixels -> focal-plane arcsec).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    SimulationOptionError
        If the file holds no solution for the filter, cannot be read, or its domain is not the
        detector's (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"distortion file not found: {path}")
    try:
        sols = read_solutions(path)
    except (OSError, ValueError) as exc:
        msg = str(exc)
        raise SimulationOptionError(msg if str(path) in msg else f"{path}: {msg}") from None
    except Exception as exc:
        raise SimulationOptionError(f"{path}: cannot read a distortion solution ({type(exc).__name__}: {exc})") from None
    if not sols:
        raise SimulationOptionError(f"{path}: no distortion solution in the file")
    if filter_name in sols:
        sol = sols[filter_name]
    elif len(sols) == 1:
        sol = next(iter(sols.values()))
        if sol.filter != filter_name:
            log.info("%s: using its only solution (filter %s) for filter %s", path, sol.filter, filter_name)
    else:
        raise SimulationOptionError(f"{path}: no solution for filter {filter_name!r}; the file has {sorted(sols)}")
    field = sol.field
    want = detector_domain(shape)
    if not np.allclose(field.domain, want, atol=1e-6):
        raise SimulationOptionError(f"{path}: the field's domain {tuple(field.domain)} is not the detector's "
                         f"{want} (detector shape {shape}); use a field made for this detector")
    return field


def central_window(field: DistortionField, full_shape: tuple[int, int],
                   shape: tuple[int, int]) -> DistortionField:
    """The field seen by a smaller detector at the centre of the full one (same optics).

    ``G_w(p) = G(p + c)``, ``c`` the offset of the window; exact (a polynomial of the same
    degree, fitted through more samples than terms).

    Parameters
    ----------
    field : DistortionField
        The field of the full detector (0-based pixels -> focal-plane arcsec).
    full_shape : tuple of int
        The full detector's shape ``(ny, nx)``.
    shape : tuple of int
        The window's shape ``(ny, nx)``, centred on the full detector.

    Returns
    -------
    DistortionField
        The window's field on its own 0-based pixels (``meta["window"]``: the offset ``c``, px).

    Raises
    ------
    SimulationOptionError
        If the window is larger than the detector.
    """
    (ny, nx), (my, mx) = full_shape, shape
    if my > ny or mx > nx:
        raise SimulationOptionError(f"detector_shape {shape} is larger than the instrument's {full_shape}")
    cx, cy = (nx - mx) / 2.0, (ny - my) / 2.0
    dom = detector_domain(shape)
    n = 3 * (field.degree + 2)
    x, y = np.meshgrid(np.linspace(dom[0], dom[1], n), np.linspace(dom[2], dom[3], n))
    u, v = field(x + cx, y + cy)
    return DistortionField.fit(x, y, u, v, field.degree, dom, unit=field.unit,
                               input_unit=field.input_unit, meta=dict(field.meta, window=[cx, cy]))
