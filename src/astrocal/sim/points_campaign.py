"""A lab campaign of measured source tables (no images): the fast path for fit tests.

:func:`write_points_campaign` draws a lab truth (:mod:`astrocal.sim.lab_truth`), observes
every visible spot with Gaussian centroid noise and writes one ECSV source table per
exposure plus a campaign TOML that lists the tables as exposures, and the truth.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..atomic import atomic_write_table, atomic_write_text, check_writable
from ..field.synthetic import smooth_field
from ..formats.siaf import write_siaf
from ..instruments import get_instrument
from ..lab.mask import load_mask, mask_path
from ..model.data import Points
from ..solution import Solution
from .lab_truth import LabTruth, draw_lab_truth, observe_points


def write_points_campaign(out: str | os.PathLike, instrument: str = "metis-lm", seed: int = 0,
                          n_exposures: int = 10, degree: int = 5, corner_px: float = 3.0,
                          hole_error_um: float = 0.5, sigma_px: tuple[float, float] = (0.005, 0.03),
                          offset_sigma_mas: float = 2.0, outlier_fraction: float = 0.0,
                          mask: str | os.PathLike = "metis_wcu_fp_mask5", fit_degree: int | str = "auto",
                          overwrite: bool = False) -> tuple[Path, LabTruth, Points]:
    """Write a point-level lab campaign into ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        Output directory.
    instrument : str
        Instrument preset.
    seed : int
        Random seed (field, truth, noise, outliers).
    n_exposures : int
        Exposures (chopper offsets).
    degree, corner_px
        The smooth field's degree and its non-linear distortion at the corners, pixels.
    hole_error_um : float
        Rms of the hole manufacturing errors per axis, um.
    sigma_px : tuple of float
        Range of the centroid sigmas, pixels (:func:`~astrocal.sim.lab_truth.observe_points`).
    offset_sigma_mas : float
        Stated accuracy of the chopper offsets, mas.
    outlier_fraction : float
        Fraction of the points made outliers: moved by 0.5-20 px in a random direction.
    mask : str or os.PathLike
        The name of a shipped mask table, or the path of a mask table (ECSV, e.g. one
        written by :meth:`astrocal.lab.mask.Mask.write`).
    fit_degree : int or "auto"
        The ``[fit]`` degree.
    overwrite : bool
        Replace an existing campaign file.

    Returns
    -------
    path : pathlib.Path
        The campaign file.
    truth : LabTruth
        The truth.
    points : Points
        The observed points.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out / "campaign.toml", overwrite)
    rng = np.random.default_rng(seed)
    inst = get_instrument(instrument)
    source = Path(mask) if Path(str(mask)).suffix == ".ecsv" and Path(str(mask)).is_file() else mask_path(mask)
    m = load_mask(source)
    ms = inst.mask_scale_mm_per_arcsec
    field = smooth_field(shape=inst.detector_shape, pixel_scale_mas=inst.pixel_scale_mas,
                         corner_px=corner_px, degree=degree, rng=rng.integers(1 << 31),
                         rotation_deg=rng.normal(0, 0.3))
    truth = draw_lab_truth(field, m.hole_id, m.xy_mm / ms, ms, rng, n_exposures=n_exposures,
                           hole_error_um=hole_error_um, offset_sigma_mas=offset_sigma_mas)
    points, true_xy = observe_points(truth, rng, sigma_px=sigma_px)
    x, y = points.x.copy(), points.y.copy()
    bad = np.zeros(points.n_points, bool)
    if outlier_fraction > 0:
        k = rng.choice(points.n_points, int(round(outlier_fraction * points.n_points)), replace=False)
        shift = rng.uniform(0.5, 20.0, k.size)
        ang = rng.uniform(0, 2 * np.pi, k.size)
        x[k] += shift * np.cos(ang)
        y[k] += shift * np.sin(ang)
        bad[k] = True
    shutil.copyfile(source, out / "mask.ecsv") if not (out / "mask.ecsv").exists() or overwrite else None
    (out / "tables").mkdir(exist_ok=True)
    lines = ["[instrument]", f'name = "{inst.name}"', f'preset = "{instrument}"', "",
             "[[lab]]", 'mask = "mask.ecsv"', f'filter = "{inst.default_filter}"', "exposures = ["]
    for e in range(truth.commanded.shape[0]):
        sel = points.exposure == e
        t = Table()
        t["hole_id"] = points.hole_ids[points.hole[sel]]
        t["x"], t["y"] = x[sel], y[sel]
        t["sigma_x"] = np.sqrt(points.cov[sel, 0, 0])
        t["sigma_y"] = np.sqrt(points.cov[sel, 1, 1])
        t["cov_xy"] = points.cov[sel, 0, 1]
        t["flags"] = np.zeros(sel.sum(), int)
        t["true_x"], t["true_y"] = true_xy[sel, 0], true_xy[sel, 1]
        t["injected_outlier"] = bad[sel]
        t.meta["offset_arcsec"] = truth.commanded[e].tolist()
        name = f"grid_{e:02d}.ecsv"
        atomic_write_table(t, out / "tables" / name, overwrite=overwrite)
        o = truth.commanded[e]
        lines.append(f'  {{ file = "tables/{name}", offset_arcsec = [{o[0]:.6f}, {o[1]:.6f}], '
                     f"offset_sigma_mas = {offset_sigma_mas} }},")
    deg = f'"{fit_degree}"' if fit_degree == "auto" else str(int(fit_degree))
    lines += ["]", "", "[fit]", f"degree = {deg}", 'output = "out/"', f"seed = {int(seed) + 1}", ""]
    atomic_write_text(out / "campaign.toml", "\n".join(lines), overwrite=overwrite)
    (out / "truth").mkdir(exist_ok=True)
    write_siaf(out / "truth" / "distortion_truth.ecsv", Solution(field, filter=inst.default_filter),
               overwrite=overwrite)
    holes = Table({"hole_id": truth.hole_ids, "dx_um": truth.hole_errors[:, 0] * ms * 1e3,
                   "dy_um": truth.hole_errors[:, 1] * ms * 1e3})
    atomic_write_table(holes, out / "truth" / "holes.ecsv", overwrite=overwrite)
    info = {"seed": int(seed), "insertion_rot": truth.insertion_rot,
            "insertion_offset": truth.insertion_offset.tolist(),
            "applied": truth.applied.tolist(), "commanded": truth.commanded.tolist(),
            "pose_scale": truth.pose_scale.tolist(), "pose_rot": truth.pose_rot.tolist(),
            "chopper_frame": list(truth.chopper_frame)}
    atomic_write_text(out / "truth" / "truth.json", json.dumps(info, indent=1), overwrite=overwrite)
    return out / "campaign.toml", truth, points
