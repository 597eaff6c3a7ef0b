"""The files of a simulated on-sky campaign: its truth (written and read back) and its
campaign file.

:func:`write_sky_truth` writes ``out/truth/`` (the field, the true catalogue, the
catalogue errors, per exposure the plan, observed geometry and pose, per exposure and star
the chain of positions, the flexure); :func:`load_sky_truth` rebuilds the
:class:`~astrocal.sim.sky_truth.SkyTruth` from them; :func:`sky_campaign_toml` is the text
of a campaign file with one ``[[sky]]`` dataset.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table, vstack
from astropy.time import Time

from .. import __version__, earth
from ..atomic import atomic_write_table, atomic_write_text, check_writable
from ..errors import SimulationOptionError
from ..field import DistortionField
from ..formats.astromet import write_astromet
from ..formats.siaf import write_siaf
from ..instruments import Instrument
from ..model.flexure import FlexureBasis
from ..plain import to_plain
from ..sky.astrometry import FocalPlanePositions
from ..sky.catalog import Catalog, load_catalog
from ..sky.sites import Weather, get_site
from ..solution import Solution
from .sky_catalog import catalog_errors
from .sky_plan import SkyPlan
from .sky_truth import SkyExposureTruth, SkyTruth

__all__ = ["truth_paths", "write_sky_truth", "load_sky_truth", "sky_campaign_toml"]


def _exposures_table(truth) -> Table:
    t = truth.plan.to_table()
    for key in ("zenith_distance_deg", "hour_angle_deg"):
        t.rename_column(key, f"planned_{key}")
    e = truth.exposures
    t["zenith_distance_deg"] = [x.apparent.zenith_distance_deg for x in e]
    t["parallactic_angle_deg"] = [x.apparent.parallactic_angle_deg for x in e]
    t["rotator_angle_deg"] = [x.apparent.rotator_angle_deg for x in e]
    t["altitude_deg"] = [x.apparent.altitude_deg for x in e]
    t["azimuth_deg"] = [x.apparent.azimuth_deg for x in e]
    t["airmass"] = [x.apparent.airmass for x in e]
    for i in range(2):
        for j in range(2):
            t[f"jacobian_{i}{j}"] = [float(x.apparent.jacobian[i, j]) for x in e]
    t["pose_scale"] = truth.pose_scale
    t["pose_rot_rad"] = truth.pose_rotation
    t["pose_shift_x_arcsec"] = truth.pose_shift[:, 0]
    t["pose_shift_y_arcsec"] = truth.pose_shift[:, 1]
    t["n_stars"] = [len(x) for x in e]
    t["edge_stars"] = [",".join(x.edge_names) for x in e]
    t.meta["description"] = ("truth per sky exposure: plan (commanded pointing, PA, weather), the observed "
                             "geometry of the field centre (apparent_positions), jacobian_ij = d(x,y)_i / "
                             "d(xi,eta)_j, and the pose (s_e, theta_e [rad], t_e [arcsec])")
    t.meta["model"] = "X = x + Delta + s x + theta R90 x + t; p = G^-1(X); R90 (x, y) = (-y, x)"
    return t


def _stars_table(truth, extra_columns=None) -> Table:
    rows = []
    extra_columns = extra_columns or {}
    for k, e in enumerate(truth.exposures):
        a = e.apparent
        n = len(e)
        rows.append({
            "exposure": np.full(n, e.name), "star": np.asarray(a.names, str),
            "x_arcsec": a.x, "y_arcsec": a.y, "u_arcsec": a.u, "v_arcsec": a.v,
            "cov_xx": a.cov[:, 0, 0], "cov_yy": a.cov[:, 1, 1], "cov_xy": a.cov[:, 0, 1],
            "dt_yr": a.dt, "has_pm": a.has_pm, "inflated": a.inflated,
            "flex_x_arcsec": e.flexure[:, 0], "flex_y_arcsec": e.flexure[:, 1],
            "focal_x_arcsec": e.focal[:, 0], "focal_y_arcsec": e.focal[:, 1],
            "px": e.pixels[:, 0], "py": e.pixels[:, 1], "mag": e.mag,
            **{name: np.asarray(values[k]) for name, values in extra_columns.items()}})
    t = Table()
    for key in rows[0] if rows else []:
        t[key] = np.concatenate([r[key] for r in rows])
    t.meta = {"description": "truth per sky exposure and star on the detector",
              "columns": ("x, y: true apparent position, instrument frame; u, v: telescope frame (arcsec); "
                          "cov_*: the true catalogue's stated covariance mapped to the instrument frame (arcsec2); "
                          "flex: Delta; focal: X; px, py: true pixel position (0-based); mag: L-band magnitude"),
              "pixel_convention": "px, py: 0-based pixel positions (centre of the first pixel = 0.0)"}
    return t


def _flexure_table(truth) -> Table:
    b = truth.flexure
    t = Table()
    t["name"] = b.names
    t["function"] = [b.functions[i] for i in b.function_of_param()]
    t["term"] = [term for _ in b.functions for term in b.field_terms]
    t["coeff_arcsec"] = truth.flexure_coeffs * u.arcsec
    t.meta = {"basis": b.as_dict(), "description": "true flexure coefficients (astrocal.model.flexure.FlexureBasis)"}
    return t


def truth_paths(out: str | os.PathLike) -> dict[str, Path]:
    """The truth files of a simulated sky campaign.

    Parameters
    ----------
    out : str or os.PathLike
        The campaign directory.

    Returns
    -------
    dict
        ``{name: path}`` under ``out/truth/``.
    """
    d = Path(out) / "truth"
    return {"distortion_ecsv": d / "distortion_truth.ecsv", "distortion_fits": d / "distortion_truth.fits",
            "catalog_true": d / "catalog_true.ecsv", "catalog_errors": d / "catalog_errors.ecsv",
            "exposures": d / "exposures.ecsv", "stars": d / "stars.ecsv", "flexure": d / "flexure.ecsv",
            "truth_json": d / "truth.json"}


def write_sky_truth(out: str | os.PathLike, truth: SkyTruth, *, catalog_seen: Catalog | None = None,
                    extra: dict | None = None, instrument: str = "METIS IMG_LM", filter_id: str = "Lp",
                    star_columns: dict | None = None, star_columns_note: str = "",
                    overwrite: bool = False) -> dict[str, Path]:
    """Write the truth of a sky campaign into ``out/truth/``.

    ``distortion_truth.ecsv`` (SIAF) and ``distortion_truth.fits`` (AstroMet, double): the
    field ``G``; ``catalog_true.ecsv``: the true catalogue; ``catalog_errors.ecsv``: per
    star and exposure, the catalogue error ``d`` (seen minus true, east/north arcsec) when
    ``catalog_seen`` is given; ``exposures.ecsv``: plan, observed geometry and pose;
    ``stars.ecsv``: per exposure and star, ``x``, ``u``, ``Delta``, ``X``, ``p``;
    ``flexure.ecsv``: basis and coefficients; ``truth.json``: everything else (exact field
    coefficients, frame pose, settings, ``extra``).

    Parameters
    ----------
    out : str or os.PathLike
        The campaign directory.
    truth : SkyTruth
        The truth.
    catalog_seen : Catalog, optional
        The catalogue the fit sees (for ``catalog_errors.ecsv``; without it, no such file).
    extra : dict, optional
        More keys of ``truth.json``.
    instrument : str
        ``INSTRUME`` of the AstroMet file.
    filter_id : str
        Filter id of the field's solution files.
    star_columns : dict, optional
        More columns of ``stars.ecsv``: name -> one array per exposure.
    star_columns_note : str
        Their description (appended to the table's ``columns`` meta).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict
        ``{name: path}`` of the files written.
    """
    paths = truth_paths(out)
    for key, p in paths.items():
        if key != "catalog_errors" or catalog_seen is not None:
            check_writable(p, overwrite)
    paths["truth_json"].parent.mkdir(parents=True, exist_ok=True)
    field = truth.field
    meta = {"creator": f"astrocal {__version__}", "simulated": "sky campaign truth field"}
    sol = Solution(field, filter=filter_id, meta=meta)
    write_siaf(paths["distortion_ecsv"], sol, overwrite=overwrite)
    write_astromet(paths["distortion_fits"], sol, instrument=instrument, overwrite=overwrite, provenance=meta,
                   precision="double")
    truth.catalog.write(paths["catalog_true"], overwrite=overwrite)
    if catalog_seen is not None:
        rows = []
        for e, pe in zip(truth.exposures, truth.plan):
            d = catalog_errors(truth.catalog, catalog_seen, pe.time)
            index = {n: k for k, n in enumerate(d["star"])}
            k = np.array([index[str(n)] for n in e.names], int)
            sub = d[k] if len(k) else d[:0]
            sub.add_column(np.full(len(sub), e.name), name="exposure", index=0)
            rows.append(sub)
        errs = vstack(rows) if rows else Table()
        errs.meta = {"description": "catalogue error d = catalogue seen by the fit minus truth, at each exposure's "
                                    "epoch, (east, north) arcsec: x(seen) - x(true) = J d to first order"}
        atomic_write_table(errs, paths["catalog_errors"], overwrite=overwrite)
    else:
        paths.pop("catalog_errors")
    atomic_write_table(_exposures_table(truth), paths["exposures"], overwrite=overwrite)
    stars = _stars_table(truth, star_columns)
    if star_columns_note:
        stars.meta["columns"] += "; " + star_columns_note
    atomic_write_table(stars, paths["stars"], overwrite=overwrite)
    atomic_write_table(_flexure_table(truth), paths["flexure"], overwrite=overwrite)
    info = {
        "creator": f"astrocal {__version__}",
        "model": ("G(p) = x + Delta(u, v; z, r) + s x + theta R90 x + t - J d (catalogue error d); "
                  "the truth: X = x(true) + Delta + s x + theta R90 x + t, p = G^-1(X)"),
        "field": {"cx": field.cx.tolist(), "cy": field.cy.tolist(), "domain": [float(v) for v in field.domain],
                  "unit": field.unit, "input_unit": field.input_unit},
        "flexure": {**truth.flexure.as_dict(), "names": truth.flexure.names,
                    "coeffs_arcsec": truth.flexure_coeffs.tolist()},
        "frame": {"scale": truth.frame_scale, "rotation_rad": truth.frame_rotation,
                  "note": "the part of every exposure's pose common to the campaign"},
        "plan": {"center_ra_deg": truth.plan.center_ra_deg, "center_dec_deg": truth.plan.center_dec_deg,
                 "site": truth.plan.site, "parity": truth.plan.parity, "target": truth.plan.target},
        "margin_px": truth.margin_px,
        "earth_orientation": {**earth.provenance(),
                              "note": "the truth's apparent positions were computed with these tables; a fit "
                                      "with the same tables sees no Earth-orientation error"},
        "magnitudes": truth.magnitude_note,
        "settings": truth.settings,
        "files": {k: p.name for k, p in paths.items()},
        **(extra or {}),
    }
    atomic_write_text(paths["truth_json"], json.dumps(to_plain(info, nan_as_none=True), indent=1) + "\n",
                      overwrite=overwrite)
    return paths


def load_sky_truth(directory: str | os.PathLike) -> SkyTruth:
    """Rebuild the :class:`~astrocal.sim.sky_truth.SkyTruth` of a simulated sky campaign from its truth files.

    Nothing is recomputed: positions, poses and the observed geometry are read back as
    written.

    Parameters
    ----------
    directory : str or os.PathLike
        The campaign directory or its ``truth/`` folder.

    Returns
    -------
    SkyTruth
        The truth.

    Raises
    ------
    FileNotFoundError
        If a truth file is missing.
    SimulationOptionError
        If ``truth.json`` is not valid JSON or lacks a key (naming it).
    """
    d = Path(directory)
    tdir = d if (d / "truth.json").exists() else d / "truth"
    paths = truth_paths(tdir.parent)
    for key in ("truth_json", "catalog_true", "exposures", "stars", "flexure"):
        if not paths[key].is_file():
            raise FileNotFoundError(f"truth file not found: {paths[key]}")
    try:
        info = json.loads(paths["truth_json"].read_text())
    except json.JSONDecodeError as exc:
        raise SimulationOptionError(f"{paths['truth_json']}: not valid JSON ({exc})") from None
    for key in ("field", "flexure", "frame", "plan"):
        if key not in info:
            raise SimulationOptionError(f"{paths['truth_json']}: key {key!r} missing")
    f = info["field"]
    field = DistortionField(np.array(f["cx"]), np.array(f["cy"]), tuple(f["domain"]), unit=f.get("unit", "arcsec"),
                            input_unit=f.get("input_unit", "pixel"))
    fl = info["flexure"]
    basis = FlexureBasis(int(fl["degree"]), tuple(fl["functions"]), float(fl["radius_arcsec"]))
    coeffs = np.asarray(fl["coeffs_arcsec"], float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = load_catalog(paths["catalog_true"])
    exps = Table.read(paths["exposures"], format="ascii.ecsv")
    stars = Table.read(paths["stars"], format="ascii.ecsv")
    p = info["plan"]
    plan_t = exps.copy()
    for key in ("zenith_distance_deg", "hour_angle_deg"):
        plan_t.remove_column(key) if key in plan_t.colnames and f"planned_{key}" in plan_t.colnames else None
        if f"planned_{key}" in plan_t.colnames:
            plan_t.rename_column(f"planned_{key}", key)
    plan_t.meta.update(p)
    plan = SkyPlan.from_table(plan_t, str(paths["exposures"]))
    site = get_site(plan.site)
    out = []
    s_exp = np.asarray(stars["exposure"]).astype(str) if len(stars) else np.zeros(0, str)
    for row, pe in zip(exps, plan):
        sel = s_exp == pe.name
        s = stars[sel]
        col = lambda name: np.asarray(s[name], float) if len(s) else np.zeros(0)  # noqa: E731
        cov = np.zeros((len(s), 2, 2))
        cov[:, 0, 0], cov[:, 1, 1] = col("cov_xx"), col("cov_yy")
        cov[:, 0, 1] = cov[:, 1, 0] = col("cov_xy")
        w = pe.weather
        fp = FocalPlanePositions(
            names=np.asarray(s["star"]).astype(str) if len(s) else np.zeros(0, str), x=col("x_arcsec"),
            y=col("y_arcsec"), cov=cov, u=col("u_arcsec"), v=col("v_arcsec"), dt=col("dt_yr"),
            has_pm=np.asarray(s["has_pm"], bool) if len(s) else np.zeros(0, bool),
            inflated=np.asarray(s["inflated"], bool) if len(s) else np.zeros(0, bool),
            zenith_distance_deg=float(row["zenith_distance_deg"]),
            parallactic_angle_deg=float(row["parallactic_angle_deg"]),
            rotator_angle_deg=float(row["rotator_angle_deg"]), position_angle_deg=float(pe.position_angle_deg),
            altitude_deg=float(row["altitude_deg"]), azimuth_deg=float(row["azimuth_deg"]),
            time=Time(pe.time, scale="utc"), wavelength_um=pe.wavelength_um,
            weather=Weather(w["pressure_hpa"], w["temperature_c"], w["relative_humidity"]), site=site,
            parity=plan.parity,
            jacobian=np.array([[row["jacobian_00"], row["jacobian_01"]], [row["jacobian_10"], row["jacobian_11"]]],
                              float),
            pointing=SkyCoord(pe.ra_deg * u.deg, pe.dec_deg * u.deg), meta={"loaded_from": str(paths["stars"])})
        edge = tuple(v for v in str(row["edge_stars"]).split(",") if v) if "edge_stars" in exps.colnames else ()
        out.append(SkyExposureTruth(
            name=pe.name, apparent=fp, mag=col("mag"),
            flexure=np.column_stack([col("flex_x_arcsec"), col("flex_y_arcsec")]),
            focal=np.column_stack([col("focal_x_arcsec"), col("focal_y_arcsec")]),
            pixels=np.column_stack([col("px"), col("py")]), scale=float(row["pose_scale"]),
            rotation=float(row["pose_rot_rad"]),
            shift=np.array([row["pose_shift_x_arcsec"], row["pose_shift_y_arcsec"]], float), edge_names=edge))
    return SkyTruth(field=field, catalog=cat, plan=plan, flexure=basis, flexure_coeffs=coeffs,
                    frame_scale=float(info["frame"]["scale"]), frame_rotation=float(info["frame"]["rotation_rad"]),
                    exposures=tuple(out), margin_px=float(info.get("margin_px", 8.0)),
                    magnitude_note=str(info.get("magnitudes", "")), settings=dict(info.get("settings", {})))



def _toml_str(s):
    return json.dumps(str(s))


def sky_campaign_toml(inst: Instrument, shape: tuple[int, int], plan: SkyPlan, files: Sequence[str],
                      catalog_rel: str, *, dataset: str = "sky", filter_name: str = "Lp", comment: str = "",
                      fit_degree: int | str = "auto", seed: int | None = None, measure: bool = False,
                      background: str | None = None, flat: str | None = None, band: str | None = None,
                      flexure: FlexureBasis | None = None) -> str:
    """The text of a campaign file with one ``[[sky]]`` dataset.

    Parameters
    ----------
    inst : Instrument
        The instrument (``[instrument]``: name, preset, pixel scale).
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    plan : SkyPlan
        The exposures (time, pointing, PA, weather, wavelength).
    files : sequence of str
        Exposure paths relative to the campaign, one per planned exposure.
    catalog_rel : str
        The catalogue's path relative to the campaign.
    dataset : str
        The dataset's name.
    filter_name : str
        The filter.
    comment : str
        The file's first comment line.
    fit_degree : int or "auto"
        The ``[fit]`` degree.
    seed : int, optional
        The ``[fit]`` seed.
    measure : bool
        Write a ``[measure]`` section (output ``measured/``).
    background, flat : str, optional
        Frames, relative paths.
    band : str, optional
        The catalogue magnitude column for flux checks.
    flexure : FlexureBasis, optional
        Written as the ``[fit]`` flexure keys.

    Returns
    -------
    str
        The TOML text.
    """
    lines = [f"# {comment}" if comment else "# sky campaign written by astrocal", "",
             "[instrument]", f"name = {_toml_str(inst.name)}", f"preset = {_toml_str(inst.key)}",
             f"detector_shape = [{int(shape[0])}, {int(shape[1])}]", f"pixel_scale_mas = {inst.pixel_scale_mas!r}",
             "", "[[sky]]", f"name = {_toml_str(dataset)}", f"catalog = {_toml_str(catalog_rel)}",
             f"site = {_toml_str(plan.site)}", f"filter = {_toml_str(filter_name)}"]
    for key, value in (("background", background), ("flat", flat), ("band", band)):
        if value is not None:
            lines.append(f"{key} = {_toml_str(value)}")
    lines += ["# per exposure: mid-exposure time (UTC), commanded pointing (deg), position angle of +y (deg,",
              "# north through east), ground weather (pressure hPa, temperature C, relative humidity as a",
              "# FRACTION 0..1) and effective wavelength (um)",
              "exposures = ["]
    for path, e in zip(files, plan):
        w = e.weather
        lines.append(f"  {{ file = {_toml_str(path)}, time = {_toml_str(e.time)}, ra = {e.ra_deg!r}, "
                     f"dec = {e.dec_deg!r}, position_angle_deg = {e.position_angle_deg!r}, "
                     f"pressure_hpa = {float(w['pressure_hpa'])!r}, temperature_c = {float(w['temperature_c'])!r}, "
                     f"humidity = {float(w['relative_humidity'])!r}, wavelength_um = {e.wavelength_um!r} }},")
    lines += ["]", ""]
    if measure:
        lines += ["[measure]", 'output = "measured/"', ""]
    deg = '"auto"' if fit_degree == "auto" else str(int(fit_degree))
    lines += ["[fit]", f"degree = {deg}", 'output = "out/"']
    if flexure is not None:
        lines += [f"flexure_degree = {int(flexure.degree)}",
                  "flexure_functions = [" + ", ".join(_toml_str(f) for f in flexure.functions) + "]",
                  f"flexure_radius_arcsec = {float(flexure.radius_arcsec)!r}"]
    if seed is not None:
        lines.append(f"seed = {int(seed)}")
    lines.append("")
    return "\n".join(lines)


