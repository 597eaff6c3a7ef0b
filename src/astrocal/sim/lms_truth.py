"""The truth of a simulated LMS campaign: the as-built geometry, the WCU lasers and the mask holes.

* :func:`draw_lms_geometry`: the as-built LMS (:class:`astrocal.lms.LmsGeometry`) with its
  deviation parameters drawn from their prior (``p ~ N(0, prior_sigma)``), or the optical model;
* :func:`write_lms_truth` / :func:`load_lms_truth`: the geometry as ``truth.json`` (layout, seed,
  hyperparameters, orientation, every parameter by name, the non-polynomial ``slice_waves`` if any) and ``deviations.ecsv`` (name, value,
  prior sigma), read back into an equal :class:`~astrocal.lms.LmsGeometry`;
* :data:`LASERS` and :func:`laser_lines`: the WCU laser lines;
* :func:`chopper_offsets`: the default chopper offsets along and across the slices;
* :func:`holes_in_field`: the mask holes that an offset puts into the slicer's field.

Conventions as in :mod:`astrocal.lms`: slices 1..28, ``xi`` along the slice [arcsec], ``eta``
across [arcsec], wavelengths in um, detectors 1..4, 0-based pixel centres. Field (mask) positions
``(a, b)`` [arcsec] map to the slicer frame by a :class:`~astrocal.lms.FieldOrientation`; the
chopper offset is added in the field frame (it moves the image of the mask).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike

from ..atomic import atomic_write_table, atomic_write_text
from ..errors import SimulationOptionError
from ..lms import (DeviationLayout, FieldOrientation, Hyperparameters, LmsGeometry, LmsGeometryError,
                   SliceWaves, echelle_setting, field_to_slice)
from ..lms.traces import SLICE_WIDTH_ARCSEC

__all__ = ["LASERS", "QCL_LINES_UM", "laser_lines", "chopper_offsets", "draw_lms_geometry",
           "holes_in_field", "write_lms_truth", "load_lms_truth"]

QCL_LINES_UM = tuple(round(4.68 + 0.01 * k, 2) for k in range(11))
"""QCL lines [um]: 4.68..4.78 in 0.01 steps (ScopeSim's WCU source; DRLD: tunable 4.68-4.78)."""

LASERS = {"laser1": (3.39,), "qcl": QCL_LINES_UM, "laser3": (5.26,)}
"""WCU lasers and their lines [um] (DRLD template ``METIS_ifu_cal_InternalWave``: a fixed laser at
3.39 um, the QCL tunable 4.68-4.78 um, a fixed laser at 5.26 um). Header names LASER1/2/3."""


def laser_lines(enabled: Sequence[str] = ("laser1", "qcl", "laser3"),
                qcl_lines_um: Sequence[float] = QCL_LINES_UM) -> list[tuple[str, float]]:
    """The lit laser lines.

    Parameters
    ----------
    enabled : sequence of str
        The lasers on (keys of :data:`LASERS`).
    qcl_lines_um : sequence of float
        The QCL's lines, um.

    Returns
    -------
    list of (str, float)
        ``[(laser, lam_um), ...]`` in wavelength order.

    Raises
    ------
    SimulationOptionError
        For an unknown laser.
    """
    out = []
    for name in enabled:
        if name not in LASERS:
            raise SimulationOptionError(f"unknown laser {name!r}; lasers are {sorted(LASERS)}")
        lines = qcl_lines_um if name == "qcl" else LASERS[name]
        out += [(name, float(lam)) for lam in lines]
    return sorted(out, key=lambda t: t[1])


def chopper_offsets(n: int, max_along_arcsec: float = 0.08, max_across_slices: int = 3) -> np.ndarray:
    """Default chopper offsets (n, 2) [arcsec] in the field frame: (along, across) the slices.

    Offset 0 is (0, 0). Offset k moves the mask by ``max_along * sin(2.4 k)`` along the slices and
    by a whole number of slice widths across them (``+-1, +-2, ...`` up to ``max_across_slices``,
    cycling), so that the fine-grid holes (at slice centres) stay at slice centres and reach
    other slices.

    Parameters
    ----------
    n : int
        Number of offsets (>= 1).
    max_along_arcsec : float
        Largest offset along the slices, arcsec.
    max_across_slices : int
        Largest offset across the slices, slice widths.

    Returns
    -------
    numpy.ndarray
        (n, 2) offsets (along, across), arcsec.
    """
    n = int(n)
    if n < 1:
        raise SimulationOptionError(f"need at least one chopper offset, got {n}")
    k = np.arange(n)
    along = max_along_arcsec * np.sin(2.4 * k)
    m = max(int(max_across_slices), 0)
    steps = ((k + 1) // 2) * np.where(k % 2 == 1, 1, -1)
    if m:
        steps = np.sign(steps) * ((np.abs(steps) - 1) % m + 1) * (steps != 0)
    else:
        steps = 0 * steps
    return np.stack([along, steps * SLICE_WIDTH_ARCSEC], axis=1)


def draw_lms_geometry(lam_c_um: Sequence[float], rng: np.random.Generator | None = None, *, deviations: bool = True,
                      degree: int = 2, reference_detector: int | None = 1,
                      hyper: Hyperparameters = Hyperparameters(), truth: str = "forward",
                      waves_px: float = 0.0) -> LmsGeometry:
    """The as-built LMS for the echelle settings ``lam_c_um`` (central wavelengths [um]).

    With ``deviations`` every parameter is drawn from its prior ``N(0, layout.prior_sigma(hyper))``
    (one ``rng.normal`` call of length P, so a seed fixes it); otherwise all are zero (the optical
    model). ``waves_px > 0`` adds a per-slice term no parameter holds, of that amplitude
    (:class:`~astrocal.lms.SliceWaves`, drawn from ``rng`` after the parameters, so the
    parameters of a seed are the same with and without it).

    Parameters
    ----------
    lam_c_um : sequence of float
        Central wavelengths of the echelle settings, um.
    rng : numpy.random.Generator, optional
        The random stream (default: a fresh one).
    deviations : bool
        Draw the deviations (else the optical model).
    degree : int
        Degree of the deviation polynomials.
    reference_detector : int or None
        The detector fixed as reference.
    hyper : Hyperparameters
        The prior's hyperparameters.
    truth : str
        ``"forward"`` or ``"inverse"``: which optical-model polynomials are exact (see
        :mod:`astrocal.lms.nominal`).
    waves_px : float
        Amplitude of the per-slice waves, pixels (0: none).

    Returns
    -------
    LmsGeometry
        The as-built geometry.

    Raises
    ------
    EchelleSettingError
        For a central wavelength outside 2.70-5.30 um (:class:`~astrocal.lms.EchelleSettingError`).
    """
    layout = DeviationLayout(tuple(echelle_setting(float(l)) for l in lam_c_um), degree=degree,
                             reference_detector=reference_detector)
    sigma = layout.prior_sigma(hyper)
    if deviations:
        rng = np.random.default_rng() if rng is None else rng
        params = rng.normal(0.0, 1.0, layout.n_params) * sigma
    else:
        params = layout.zeros()
    waves = None
    if waves_px:
        if not (float(waves_px) > 0 and np.isfinite(waves_px)):
            raise SimulationOptionError(f"waves_px must be a finite amplitude >= 0 px, got {waves_px}")
        rng = np.random.default_rng() if rng is None else rng
        waves = SliceWaves.draw(rng, waves_px)
    return LmsGeometry(layout, params, truth, waves)


def holes_in_field(hole_ab_arcsec: ArrayLike, offset_arcsec: ArrayLike,
                   orientation: FieldOrientation = FieldOrientation()
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where mask holes fall in the slicer for one chopper offset.

    Parameters
    ----------
    hole_ab_arcsec : ndarray (N, 2)
        Hole positions in the field (mask) frame [arcsec].
    offset_arcsec : (2,)
        True chopper offset (field frame) [arcsec].
    orientation : FieldOrientation
        The field's orientation on the slicer.

    Returns
    -------
    index, slice, xi, eta_offset : ndarrays
        Rows of the holes inside the field (slice 1..28, ``|xi| <= 0.4485"``), their slice, ``xi``
        [arcsec] and offset across the slice from its centre [arcsec].
    """
    ab = np.asarray(hole_ab_arcsec, float) + np.asarray(offset_arcsec, float)[None, :]
    s, xi, deta = field_to_slice(ab[:, 0], ab[:, 1], orientation)
    idx = np.flatnonzero(s > 0)
    return idx, s[idx], xi[idx], deta[idx]


def _hyper_dict(h: Hyperparameters) -> dict:
    return dataclasses.asdict(h)


def write_lms_truth(directory: str | os.PathLike, geometry: LmsGeometry, *, hyper: Hyperparameters,
                    seed: int | None, orientation: FieldOrientation, extra: dict | None = None,
                    overwrite: bool = False) -> dict[str, Path]:
    """Write ``truth.json`` and ``deviations.ecsv`` of an as-built geometry into ``directory``.

    Parameters
    ----------
    directory : str or os.PathLike
        The truth directory (made if missing).
    geometry : LmsGeometry
        The as-built geometry.
    hyper : Hyperparameters
        The hyperparameters its deviations were drawn with.
    seed : int or None
        The simulation's seed.
    orientation : FieldOrientation
        The field's orientation on the slicer.
    extra : dict, optional
        More keys of ``truth.json``.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict
        The paths ``{"truth_json", "deviations"}``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    lay = geometry.layout
    sigma = lay.prior_sigma(hyper)
    info = {
        "kind": "lms",
        "seed": seed,
        "truth_direction": geometry.truth,
        "layout": {"settings": [{"lam_c_um": s.lam_c_um, "order": int(s.order), "echelle_deg": float(s.echelle_deg),
                                 "predisperser_deg": float(s.predisperser_deg)} for s in lay.settings],
                   "degree": int(lay.degree), "reference_detector": lay.reference_detector,
                   "n_params": int(lay.n_params)},
        "hyperparameters": _hyper_dict(hyper),
        "orientation": {"angle_deg": orientation.angle_deg, "flip": bool(orientation.flip),
                        "offset_arcsec": list(map(float, orientation.offset_arcsec))},
        "params": {n: float(v) for n, v in zip(lay.names, geometry.params)},
        "slice_waves": None if geometry.waves is None else geometry.waves.to_dict(),
    }
    info.update(extra or {})
    paths = {"truth_json": d / "truth.json", "deviations": d / "deviations.ecsv"}
    atomic_write_text(paths["truth_json"], json.dumps(info, indent=1) + "\n", overwrite)
    t = Table({"name": list(lay.names), "value": geometry.params, "prior_sigma": sigma})
    t["value"].description = "as-built deviation parameter (px, rad for DETn.rot, deg for settingN.dtheta)"
    t["prior_sigma"].description = "prior standard deviation it was drawn with (0-mean Gaussian)"
    t.meta.update({"truth_direction": geometry.truth, "degree": int(lay.degree),
                   "settings_lam_c_um": [s.lam_c_um for s in lay.settings]})
    atomic_write_table(t, paths["deviations"], overwrite, format="ascii.ecsv")
    return paths


def load_lms_truth(directory: str | os.PathLike) -> LmsGeometry:
    """The as-built :class:`~astrocal.lms.LmsGeometry` written by :func:`write_lms_truth`.

    Parameters
    ----------
    directory : str or os.PathLike
        The truth directory or the campaign directory holding ``truth/``.

    Returns
    -------
    LmsGeometry
        The geometry.

    Raises
    ------
    LmsGeometryError
        If the parameter names do not match the layout they name.
    """
    d = Path(directory)
    if not (d / "truth.json").is_file() and (d / "truth" / "truth.json").is_file():
        d = d / "truth"
    info = json.loads((d / "truth.json").read_text())
    lay_info = info["layout"]
    layout = DeviationLayout(tuple(echelle_setting(s["lam_c_um"]) for s in lay_info["settings"]),
                             degree=lay_info["degree"], reference_detector=lay_info["reference_detector"])
    if list(layout.names) != list(info["params"]):
        raise LmsGeometryError(f"{d / 'truth.json'}: parameter names do not match the layout they name")
    waves = info.get("slice_waves")
    return LmsGeometry(layout, np.array(list(info["params"].values()), float), info["truth_direction"],
                       None if waves is None else SliceWaves.from_dict(waves))
