"""Builders of the shipped catalogues from their original files.

:func:`read_kai_photo_calib` reads the Galactic Center reference list of the KAI pipeline
(``galactic_center``), :func:`read_gaia_extract` the Gaia DR3 extract around 47 Tuc
(``gaia_47tuc``); ``catalogs/README.md`` says how the shipped files were made with them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table

from ..checksum import file_sha256
from .catalog import (CLUSTER_47TUC_CENTER, COLUMNS, SGR_A_STAR, Catalog, CatalogError, Reference, as_center,
                      float_values)

__all__ = ["KAI_BANDS", "read_kai_photo_calib", "read_gaia_extract"]

#: columns of KAI ``photo_calib.dat`` after the 7 astrometric ones: (column name, band
#: key in the source header, description)
KAI_BANDS = (
    ("mag_K_blum96", "K band (Blum et al. 1996)"),
    ("mag_Kp_keck", "K' band estimated from Keck data"),
    ("mag_Lp_wright", "L' band (Wright et al. in prep)"),
    ("mag_H_blum96", "H band (Blum et al. 1996)"),
    ("mag_Ms_hornstein", "Ms band (Hornstein et al. in prep)"),
    ("mag_K_rafelski", "K band (Rafelski et al. calibrated from Blum et al. 1996)"),
    ("mag_Kp_abhimat", "K' band (Abhimat 20170127)"),
)


def read_kai_photo_calib(path: str | os.PathLike, *, reference: Reference = SGR_A_STAR, pos_err_mas: float = 1.0,
                         pm_err_mas_yr: float = 0.1, provenance: Optional[Mapping] = None,
                         licence_text: Optional[str] = None) -> Catalog:
    """Read the Galactic Center reference list ``photo_calib.dat`` of the KAI pipeline.

    Columns of the source: name, x (arcsec, increasing to the EAST), y (arcsec, north),
    vx, vy (mas/yr), t0 (year), variable flag, then seven magnitude columns (see
    :data:`KAI_BANDS`). Conversion: offsets are read as standard coordinates about
    ``reference`` (Sgr A*) at each star's t0; t0 as a Julian epoch; magnitudes of 0.00
    mean "not measured" (NaN); vx = vy = 0.000 means "no proper motion measured" (NaN).
    The source gives no errors: ``pos_err_mas`` and ``pm_err_mas_yr`` (per axis) are
    ASSUMED values, recorded as such in ``meta["errors"]``.

    Parameters
    ----------
    path : str or os.PathLike
        The ``photo_calib.dat`` file.
    reference : Reference, optional
        The position the offsets are about (default Sgr A*).
    pos_err_mas : float, optional
        Assumed position error per axis (mas).
    pm_err_mas_yr : float, optional
        Assumed proper-motion error per axis (mas/yr).
    provenance : mapping, optional
        Added to ``meta["provenance"]``.
    licence_text : str, optional
        The source's licence, kept in ``meta["licence_text"]``.

    Returns
    -------
    Catalog
        The offsets catalogue (``x_east``, ``y_north`` about ``reference``).

    Raises
    ------
    CatalogError
        No data rows, or rows with the wrong number of fields.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    header = [ln for ln in lines if ln.startswith("#")]
    rows = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not rows:
        raise CatalogError(f"{path}: no data rows")
    bad = [i for i, r in enumerate(rows) if len(r) != 7 + len(KAI_BANDS)]
    if bad:
        raise CatalogError(f"{path}: rows {bad[:10]} do not have {7 + len(KAI_BANDS)} fields")
    names = [r[0] for r in rows]
    num = np.array([[float(v) for v in r[1:]] for r in rows])
    x, y, vx, vy, t0, var = (num[:, i] for i in range(6))
    no_pm = (vx == 0) & (vy == 0)
    t = Table()
    t["name"] = names
    t["x_east"] = np.round(x, 6) * u.arcsec
    t["y_north"] = np.round(y, 6) * u.arcsec
    t["epoch"] = t0
    t["ra_err"] = np.full(len(rows), float(pos_err_mas)) * u.mas
    t["dec_err"] = np.full(len(rows), float(pos_err_mas)) * u.mas
    t["pmra"] = np.where(no_pm, np.nan, vx) * u.mas / u.yr
    t["pmdec"] = np.where(no_pm, np.nan, vy) * u.mas / u.yr
    t["pmra_err"] = np.where(no_pm, np.nan, float(pm_err_mas_yr)) * u.mas / u.yr
    t["pmdec_err"] = np.where(no_pm, np.nan, float(pm_err_mas_yr)) * u.mas / u.yr
    t["variable"] = var.astype(bool)
    bands_meta = {}
    defaults = {}
    for line in header:
        m = re.match(r"#\s*(\d+)\s*--\s*(.*?)\s*--\s*(.*)$", line)
        if m and int(m.group(1)) >= 8:
            defaults[int(m.group(1))] = (m.group(2).strip(), m.group(3).strip())
    for k, (col, desc) in enumerate(KAI_BANDS):
        values = num[:, 6 + k]
        t[col] = np.where(values == 0, np.nan, values) * u.mag
        src_desc, calibrators = defaults.get(8 + k, (desc, ""))
        t[col].description = f"{src_desc}; 0.00 in the source -> NaN (not measured)"
        bands_meta[col[4:]] = {"source_column": 8 + k, "description": src_desc,
                               "default_calibrators": calibrators}
    for col, desc in (("x_east", COLUMNS["x_east"][1]), ("y_north", COLUMNS["y_north"][1])):
        t[col].description = desc + " (about Sgr A*)"
    t["ra_err"].description = "ASSUMED 1-sigma position error, east (the source gives none; see meta errors)"
    t["dec_err"].description = "ASSUMED 1-sigma position error, north (the source gives none; see meta errors)"
    t["pmra"].description = "proper motion relative to Sgr A*, east; NaN: not measured (0,0 in the source)"
    t["pmdec"].description = "proper motion relative to Sgr A*, north; NaN: not measured (0,0 in the source)"
    t["pmra_err"].description = "ASSUMED 1-sigma error of pmra (the source gives none; see meta errors)"
    t["pmdec_err"].description = "ASSUMED 1-sigma error of pmdec (the source gives none; see meta errors)"
    t["variable"].description = "variable star flag of the source (column 7)"
    t["epoch"].description = "t0 of the source: epoch of the position (decimal year, read as Julian epoch)"
    has = ~no_pm
    disp = float(np.round(np.sqrt(0.5 * (np.var(vx[has]) + np.var(vy[has]))), 1))
    t.meta = {
        "name": "Galactic Center reference list (KAI photo_calib.dat)",
        "short_name": "galactic_center",
        "description": (f"{len(rows)} stars within {np.hypot(x, y).max():.0f} arcsec of Sgr A*: offsets from Sgr A* "
                        "(x increasing to the EAST), proper motions relative to Sgr A*, reference epoch per star, "
                        "K, K', L', H, Ms photometry"),
        "reference": reference.to_meta(),
        "offsets": ("x_east, y_north are standard (gnomonic tangent-plane) coordinates about Sgr A* at each star's "
                    "epoch; the source's X increases to the East ('X position (arcsec, increasing to the East)')"),
        "pm_dispersion_mas_yr": disp,
        "pm_dispersion_note": (f"per-axis dispersion of the {int(has.sum())} measured proper motions "
                               f"(std vx {np.std(vx[has]):.2f}, vy {np.std(vy[has]):.2f} mas/yr); used to inflate "
                               f"the errors of the {int(no_pm.sum())} stars without proper motion "
                               f"({', '.join(np.asarray(names)[no_pm])}) when propagated in time"),
        "errors": {
            "status": "ASSUMED: photo_calib.dat gives no astrometric errors",
            "position_mas_per_axis": float(pos_err_mas),
            "pm_mas_yr_per_axis": float(pm_err_mas_yr),
            "rationale": ("positions are listed to 1 mas (rounding alone 0.29 mas rms) and are IR astrometry "
                          "of bright stars in the Sgr A* frame; 1 mas and 0.1 mas/yr per axis are conservative "
                          "round values, not published errors. Replace them when a catalogue with errors is used."),
            "reference_position": "Sgr A*'s own position error is a shift of the whole field and is not added",
        },
        "bands": bands_meta,
        "provenance": {
            "source_file": "photo_calib.dat (Galactic Center photometric/astrometric calibrator list)",
            "repository": "Keck AO Imaging (KAI) data-reduction pipeline, "
                          "https://github.com/Keck-DataReductionPipelines/KAI (file read by kai/reduce/calibrate.py)",
            "commit": "not recorded with the copy used (sha256 of that copy below)",
            "sha256": file_sha256(path),
            "licence": "BSD-3-Clause, Copyright 2021 J.R. Lu, A. Gautam, T. Do (full text in meta licence_text)",
            "built_by": "astrocal.sky.catalog.read_kai_photo_calib",
            "conversion": ("x -> x_east, y -> y_north (arcsec); vx, vy -> pmra, pmdec (mas/yr, relative to Sgr A*); "
                           "vx = vy = 0.000 -> NaN (not measured); t0 -> epoch; var? -> variable; "
                           "magnitude 0.00 -> NaN; errors ASSUMED (meta errors)"),
            **dict(provenance or {}),
        },
        "source_header": header,
    }
    if licence_text:
        t.meta["licence_text"] = licence_text
    return Catalog(t, str(path))


def read_gaia_extract(path: str | os.PathLike, *, center: Any = CLUSTER_47TUC_CENTER, radius_arcmin: float = 8.0,
                      pos_err_ratio: float = 0.8, provenance: Optional[Mapping] = None) -> Catalog:
    """Cut a Gaia DR3 CSV extract (columns of the 47 Tuc query) to a circle, as a Catalog.

    Keeps every star within ``radius_arcmin`` of ``center`` (no quality cut), with ra,
    dec (rounded to 1e-10 deg = 0.36 uas), parallax, pmra, pmdec and their errors, G, BP,
    RP and ``astrometric_excess_noise``. The extract has no position errors: ``ra_err`` and
    ``dec_err`` are ESTIMATED as ``pos_err_ratio`` x the proper-motion errors (the ratio of
    typical Gaia (E)DR3 position-at-J2016.0 to proper-motion uncertainties, about 0.7-0.8
    at G = 17-21), recorded as such in ``meta["errors"]``. Names are ``row<k>``: the data
    row of the source file (1-based), since the extract has no source_id.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV extract.
    center : SkyCoord, (ra_deg, dec_deg) or str, optional
        Centre of the cut (default the centre of 47 Tuc; :func:`~astrocal.sky.catalog.as_center`).
    radius_arcmin : float, optional
        Radius of the cut (arcmin).
    pos_err_ratio : float, optional
        Position errors as this fraction of the proper-motion errors.
    provenance : mapping, optional
        Added to ``meta["provenance"]``.

    Returns
    -------
    Catalog
        The absolute catalogue (ICRS ``ra``, ``dec`` at J2016.0).

    Raises
    ------
    CatalogError
        A needed column is missing.
    """
    path = Path(path)
    raw = Table.read(path, format="ascii.csv")
    need = ["ra", "dec", "parallax", "pmra", "pmdec", "pmra_error", "pmdec_error", "phot_g_mean_mag"]
    missing = [c for c in need if c not in raw.colnames]
    if missing:
        raise CatalogError(f"{path}: Gaia extract lacks columns {missing}")
    c0 = as_center(center)
    sep = SkyCoord(float_values(raw["ra"]) * u.deg, float_values(raw["dec"]) * u.deg).separation(c0).to_value(u.arcmin)
    keep = np.flatnonzero(sep <= radius_arcmin)
    r = raw[keep]
    t = Table()
    t["name"] = [f"row{k + 1}" for k in keep]
    t["ra"] = np.round(float_values(r["ra"]), 10) * u.deg
    t["dec"] = np.round(float_values(r["dec"]), 10) * u.deg
    pmra_err = float_values(r["pmra_error"])
    pmdec_err = float_values(r["pmdec_error"])
    t["ra_err"] = np.round(pos_err_ratio * pmra_err, 4) * u.mas
    t["dec_err"] = np.round(pos_err_ratio * pmdec_err, 4) * u.mas
    t["pmra"] = np.round(float_values(r["pmra"]), 4) * u.mas / u.yr
    t["pmdec"] = np.round(float_values(r["pmdec"]), 4) * u.mas / u.yr
    t["pmra_err"] = np.round(pmra_err, 4) * u.mas / u.yr
    t["pmdec_err"] = np.round(pmdec_err, 4) * u.mas / u.yr
    t["parallax"] = np.round(float_values(r["parallax"]), 4) * u.mas
    for col, src in (("mag_G", "phot_g_mean_mag"), ("mag_BP", "phot_bp_mean_mag"), ("mag_RP", "phot_rp_mean_mag")):
        t[col] = np.round(float_values(r[src]), 4) * u.mag
        t[col].description = f"Gaia DR3 {src}; NaN: not available"
    if "astrometric_excess_noise" in r.colnames:
        t["astrometric_excess_noise"] = np.round(float_values(r["astrometric_excess_noise"]), 4) * u.mas
        t["astrometric_excess_noise"].description = "Gaia DR3 astrometric_excess_noise (mas)"
    for col in ("ra", "dec", "pmra", "pmdec", "pmra_err", "pmdec_err", "parallax"):
        t[col].description = COLUMNS[col][1]
    t["ra_err"].description = f"ESTIMATED position error, east = {pos_err_ratio} x pmra_err (see meta errors)"
    t["dec_err"].description = f"ESTIMATED position error, north = {pos_err_ratio} x pmdec_err (see meta errors)"
    t.meta = {
        "name": "Gaia DR3 extract around 47 Tuc (NGC 104)",
        "short_name": "gaia_dr3_47tuc",
        "description": (f"{len(t)} Gaia DR3 stars within {radius_arcmin:g} arcmin of the centre of 47 Tuc, ICRS at "
                        "epoch J2016.0; sparse in the core (crowding and the parallax cut of the source query): "
                        "for arcminute-scale work, not for a 10-arcsec field"),
        "epoch": 2016.0,
        "cut": {"center_ra_deg": round(float(c0.ra.deg), 8), "center_dec_deg": round(float(c0.dec.deg), 8),
                "center_source": "Harris (1996; 2010 edition) catalogue of Milky Way globular clusters: "
                                 "00h24m05.67s -72d04m52.6s (J2000)",
                "radius_arcmin": float(radius_arcmin),
                "rows_in_source": len(raw), "rows_kept": len(t),
                "selection": "all rows of the source within the radius, no further quality cut"},
        "errors": {
            "status": "positions: ESTIMATED (the extract has no ra_error/dec_error); proper motions: Gaia DR3",
            "pos_err_ratio": float(pos_err_ratio),
            "rationale": ("ra_err = ratio x pmra_err, dec_err = ratio x pmdec_err: typical Gaia (E)DR3 position "
                          "uncertainties at J2016.0 are 0.7-0.8 times the proper-motion ones (e.g. 0.05 mas vs "
                          "0.07 mas/yr at G=17, 0.4 mas vs 0.5 mas/yr at G=20; Gaia Collaboration, Brown et al. "
                          "2021, A&A 649, A1). Formal errors are optimistic in the crowded core."),
        },
        "provenance": {
            "data": "ESA Gaia DR3, table gaiadr3.gaia_source",
            "repository": "xVilas/globular-cluster-age-47tuc (https://github.com/xVilas/globular-cluster-age-47tuc)",
            "commit": "4d3c6a1a6467b4e8178eb4d0a81e4035ded2c588",
            "file": "data/raw/original_stellar_data.csv",
            "sha256": file_sha256(path),
            "source_query": ("SELECT ra, dec, parallax, pmra, pmdec, pmra_error, pmdec_error, radial_velocity, "
                             "phot_*_mean_mag, ... FROM gaiadr3.gaia_source WHERE parallax BETWEEN 0.202 AND 0.262 "
                             "AND ra BETWEEN 5 AND 7 AND dec BETWEEN -74 AND -70 (14,530 rows)"),
            "licence": ("Gaia data: CC BY-SA 3.0 IGO (ESA Gaia terms of use); the source repository states no "
                        "licence for its files"),
            "acknowledgement": ("This work has made use of data from the European Space Agency (ESA) mission Gaia "
                                "(https://www.cosmos.esa.int/gaia), processed by the Gaia Data Processing and "
                                "Analysis Consortium (DPAC, https://www.cosmos.esa.int/web/gaia/dpac/consortium)."),
            "built_by": "astrocal.sky.catalog.read_gaia_extract",
            "conversion": ("cut to the circle; ra, dec rounded to 1e-10 deg; other values to 1e-4; "
                           "name = row<k> (data row of the source file, 1-based); position errors estimated"),
            **dict(provenance or {}),
        },
    }
    return Catalog(t, str(path))
