"""The catalogues of a simulated on-sky campaign: the TRUE catalogue and the one the fit sees.

:func:`true_catalog` takes a stated catalogue as the truth (drawing the proper motions it
does not list from its stated dispersion); :func:`synthetic_cluster` makes a dense
cluster like the core of 47 Tuc; :func:`noisy_catalog` is the catalogue the fit sees
(truth plus errors drawn from the stated covariance), :func:`catalog_errors` the error of
every star at an epoch, :func:`band_magnitudes` the L-band magnitudes that set the fluxes.

Units: degrees (ra, dec), mas and mas/yr (catalogue errors, proper motions), arcsec
(catalogue errors at an epoch), magnitudes.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.time import Time

from .. import earth
from ..sky.astrometry import propagate
from ..sky.projection import gnomonic, inverse_gnomonic
from ..sky.catalog import CLUSTER_47TUC_CENTER, Catalog, CatalogError, catalog_from_arrays, get_catalog, load_catalog
from .sky_plan import target_key

__all__ = ["TUC47", "true_catalog", "synthetic_cluster", "band_magnitudes", "noisy_catalog",
           "with_band_magnitudes", "catalog_errors", "make_true_catalog"]


def true_catalog(catalog: Catalog | str | os.PathLike, rng: np.random.Generator | int | None, *,
                 pm_dispersion_mas_yr: float | None = None) -> Catalog:
    """The TRUE catalogue of a simulation, from a stated one (a Catalog, a file or a name).

    Positions and proper motions are the stated ones, taken as the truth. A star whose
    proper motion is not listed gets a true one drawn from the catalogue's per-axis
    dispersion (``meta["pm_dispersion_mas_yr"]`` or ``pm_dispersion_mas_yr``), its
    ``pmra_err``/``pmdec_err`` set to that dispersion (the uncertainty the catalogue
    effectively states), and the bool column ``pm_listed`` records which proper motions the
    catalogue lists (:func:`noisy_catalog` hides the others again).

    Parameters
    ----------
    catalog : Catalog, str or os.PathLike
        The stated catalogue (a Catalog, a file or a shipped catalogue's name).
    rng : numpy.random.Generator, int or None
        The random stream (or its seed).
    pm_dispersion_mas_yr : float, optional
        Per-axis dispersion of the unlisted proper motions, mas/yr (default: the
        catalogue's ``meta["pm_dispersion_mas_yr"]``).

    Returns
    -------
    Catalog
        The true catalogue.

    Raises
    ------
    CatalogError
        If proper motions are missing and no dispersion is stated.
    """
    cat = load_catalog(catalog)
    rng = np.random.default_rng(rng)
    t = cat.table.copy()
    t.meta = dict(cat.meta)
    listed = cat.has_pm
    if "pm_listed" in t.colnames:
        listed = listed & np.asarray(t["pm_listed"], bool)
    n_missing = int(np.sum(~listed))
    if n_missing:
        disp = pm_dispersion_mas_yr if pm_dispersion_mas_yr is not None else cat.meta.get("pm_dispersion_mas_yr")
        if disp is None:
            raise CatalogError(f"{cat.source}: {n_missing} star(s) without proper motion and no stated dispersion "
                               "(meta 'pm_dispersion_mas_yr') to draw their true motion from")
        disp = float(disp)
        for col in ("pmra", "pmdec", "pmra_err", "pmdec_err"):
            if col not in t.colnames:
                t[col] = np.full(len(t), np.nan)
                t[col].unit = u.mas / u.yr
        pm = rng.normal(0.0, disp, (n_missing, 2))
        for j, col in enumerate(("pmra", "pmdec")):
            values = np.asarray(t[col], float).copy()
            values[~listed] = pm[:, j]
            t[col] = values
            t[col].unit = u.mas / u.yr
            err = np.asarray(t[f"{col}_err"], float).copy()
            err[~listed] = disp
            t[f"{col}_err"] = err
            t[f"{col}_err"].unit = u.mas / u.yr
        t.meta["pm_dispersion_mas_yr"] = disp
    t["pm_listed"] = listed
    t["pm_listed"].description = ("the catalogue lists this star's proper motion; if False the truth has one "
                                  "drawn from the stated dispersion and the catalogue seen by the fit has NaN")
    t.meta["simulated_truth"] = (f"true catalogue of an astrocal simulation, built from {cat.name}: stated "
                                 f"positions and proper motions taken as the truth; {n_missing} unlisted proper "
                                 "motion(s) drawn from the stated dispersion")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Catalog(t, f"{cat.source} (simulated truth)")


#: facts of 47 Tuc used by :func:`synthetic_cluster` (each with its source)
TUC47 = {
    "center_deg": CLUSTER_47TUC_CENTER,  # Harris (1996; 2010 edition)
    "core_radius_arcsec": 21.6,          # Harris (2010 edition): r_c = 0.36 arcmin
    "concentration": 2.07,               # Harris (2010 edition): c = log10(r_t / r_c)
    "pm_mas_yr": (5.252, -2.551),        # Vasiliev & Baumgardt 2021, MNRAS 505, 5978 (Gaia EDR3)
    "distance_kpc": 4.52,                # Baumgardt & Vasiliev 2021, MNRAS 505, 5957
    "sigma_v_km_s": 12.0,                # central velocity dispersion, ~12 km/s (Baumgardt & Hilker 2018)
}


def synthetic_cluster(rng: np.random.Generator | int | None, *, n_stars: int = 400, radius_arcsec: float = 9.0,
                      center: tuple[float, float] | None = None, epoch: float = 2006.0,
                      mag_range: tuple[float, float] = (9.0, 19.0), lf_slope: float = 0.3,
                      pos_err_mas: tuple[float, float] = (0.1, 0.3),
                      pm_err_mas_yr: tuple[float, float] = (0.02, 0.06),
                      pm_dispersion_mas_yr: float | None = None) -> Catalog:
    """A synthetic dense cluster like the core of 47 Tuc, as an absolute (ra/dec) Catalog.

    ``n_stars`` stars within ``radius_arcsec`` of ``center`` (default the 47 Tuc centre),
    radii from a King (1962) profile (core radius 21.6 arcsec, concentration 2.07: nearly
    flat over a 10-arcsec field), L-band magnitudes ``mag_L`` from a power-law luminosity
    function ``dN/dm ~ 10**(lf_slope m)`` over ``mag_range``, positions at Julian
    ``epoch`` (HST-like), proper motions = the cluster's (Gaia EDR3, Vasiliev & Baumgardt
    2021) + an isotropic internal dispersion (default sigma_v / (4.74 d) = 0.56 mas/yr
    per axis), and HST-like errors: ``pos_err_mas`` and ``pm_err_mas_yr`` from the bright
    to the faint end. The positions and motions ARE the truth (``pm_listed`` all True).

    Parameters
    ----------
    rng : numpy.random.Generator, int or None
        The random stream (or its seed).
    n_stars : int
        Number of stars.
    radius_arcsec : float
        Radius of the field, arcsec.
    center : tuple of float, optional
        ``(ra, dec)`` of the centre, degrees (default the 47 Tuc centre).
    epoch : float
        Julian epoch of the positions.
    mag_range : tuple of float
        L-band magnitude range.
    lf_slope : float
        Slope of the luminosity function.
    pos_err_mas, pm_err_mas_yr : tuple of float
        Position (mas) and proper-motion (mas/yr) errors from the bright to the faint end.
    pm_dispersion_mas_yr : float, optional
        Internal dispersion per axis, mas/yr (default from :data:`TUC47`).

    Returns
    -------
    Catalog
        The cluster (absolute, ra/dec), brightest first.
    """
    rng = np.random.default_rng(rng)
    ra0, dec0 = TUC47["center_deg"] if center is None else center
    rc = TUC47["core_radius_arcsec"]
    rt = rc * 10 ** TUC47["concentration"]
    if pm_dispersion_mas_yr is None:
        pm_dispersion_mas_yr = TUC47["sigma_v_km_s"] / (4.74047 * TUC47["distance_kpc"])
    n = int(n_stars)
    # King (1962) surface density, sampled by inverse transform on a fine grid in R
    grid = np.linspace(0.0, float(radius_arcsec), 2001)
    sigma = (1 / np.sqrt(1 + (grid / rc) ** 2) - 1 / np.sqrt(1 + (rt / rc) ** 2)) ** 2
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (sigma[1:] * grid[1:] + sigma[:-1] * grid[:-1]) * np.diff(grid))])
    radius = np.interp(rng.uniform(0, cdf[-1], n), cdf, grid)
    angle = rng.uniform(0, 2 * np.pi, n)
    xe, yn = radius * np.sin(angle), radius * np.cos(angle)
    lon, lat = inverse_gnomonic(np.radians(xe / 3600.0), np.radians(yn / 3600.0), np.radians(ra0), np.radians(dec0))
    lo, hi = mag_range
    # power-law luminosity function: inverse transform of 10**(a m)
    q = rng.uniform(0, 1, n)
    mag = np.log10(10 ** (lf_slope * lo) + q * (10 ** (lf_slope * hi) - 10 ** (lf_slope * lo))) / lf_slope
    frac = (mag - lo) / (hi - lo)
    pos_err = pos_err_mas[0] + (pos_err_mas[1] - pos_err_mas[0]) * frac
    pm_err = pm_err_mas_yr[0] + (pm_err_mas_yr[1] - pm_err_mas_yr[0]) * frac
    pm = np.asarray(TUC47["pm_mas_yr"]) + rng.normal(0.0, pm_dispersion_mas_yr, (n, 2))
    order = np.argsort(mag)
    names = np.array([f"T{k:04d}" for k in range(n)])
    cat = catalog_from_arrays(
        name=names, ra=np.degrees(lon[order]) % 360.0, dec=np.degrees(lat[order]), epoch=float(epoch),
        pmra=pm[order, 0], pmdec=pm[order, 1], ra_err=np.round(pos_err[order], 4),
        dec_err=np.round(pos_err[order], 4), pmra_err=np.round(pm_err[order], 4),
        pmdec_err=np.round(pm_err[order], 4), mags={"L": mag[order]},
        meta={"name": "synthetic 47 Tuc core (astrocal simulation)", "short_name": "synthetic_47tuc",
              "description": (f"{n} synthetic stars within {radius_arcsec:g} arcsec of the 47 Tuc centre: King "
                              f"profile (r_c {rc:g} arcsec, c {TUC47['concentration']}), L-band luminosity function "
                              f"10^({lf_slope} m) over L = {lo:g}..{hi:g}, HST-like errors"),
              "epoch": float(epoch), "pm_dispersion_mas_yr": round(float(pm_dispersion_mas_yr), 4),
              "facts": {"center": "Harris (1996; 2010 edition): 00h24m05.67s -72d04m52.6s (J2000)",
                        "king_profile": "Harris (2010 edition): r_c = 0.36 arcmin, c = 2.07",
                        "proper_motion": "Vasiliev & Baumgardt 2021, MNRAS 505, 5978: (5.252, -2.551) mas/yr",
                        "internal_dispersion": "sigma_v ~ 12 km/s at 4.52 kpc (Baumgardt & Hilker 2018; "
                                               "Baumgardt & Vasiliev 2021): 0.56 mas/yr per axis",
                        "errors": "HST-like: positions 0.1-0.3 mas, proper motions 0.02-0.06 mas/yr per axis"},
              "bands": {"L": "synthetic L-band magnitude"}},
        source="<synthetic 47 Tuc>")
    cat.table["pm_listed"] = np.ones(n, bool)
    return cat


def band_magnitudes(catalog: Catalog | str | os.PathLike, band: str = "L") -> tuple[np.ndarray, str]:
    """L-band magnitudes of every star of ``catalog`` and how they were obtained.

    ``mag_L`` or ``mag_Lp*`` columns are used as they are; stars without them (most of the
    Galactic Center list) get a K-band magnitude (``mag_Kp*``, then ``mag_K*``, then
    ``mag_H*``) minus the median colour of the stars that have both; stars with no
    magnitude at all get the faintest magnitude + 0.5.

    Parameters
    ----------
    catalog : Catalog, str or os.PathLike
        The catalogue.
    band : str
        The band.

    Returns
    -------
    mags : numpy.ndarray
        One magnitude per star.
    note : str
        How they were obtained.

    Raises
    ------
    CatalogError
        If the catalogue has no band, K or H magnitude at all.
    """
    cat = load_catalog(catalog)
    cols = cat.table.colnames

    def pick(prefixes):
        out = np.full(len(cat), np.nan)
        used = []
        for prefix in prefixes:
            for col in cols:
                if col.startswith(prefix) and not col.endswith("_err"):
                    v = np.asarray(cat.table[col], float)
                    take = np.isnan(out) & np.isfinite(v)
                    if take.any():
                        out[take] = v[take]
                        used.append(col)
        return out, used

    mags, used = pick([f"mag_{band}_", f"mag_{band}p", f"mag_{band}"] if band else [])
    notes = [f"{', '.join(used)} as given"] if used else []
    for prefixes in (["mag_Kp", "mag_Ks"], ["mag_K"], ["mag_H"]):
        other, oused = pick(prefixes)
        both = np.isfinite(mags) & np.isfinite(other)
        fill = np.isnan(mags) & np.isfinite(other)
        if fill.any() and both.sum() >= 3:
            colour = float(np.median(other[both] - mags[both]))
            mags[fill] = other[fill] - colour
            notes.append(f"{int(fill.sum())} from {'/'.join(oused)} minus the median colour {colour:.2f} "
                         f"({int(both.sum())} stars)")
    missing = np.isnan(mags)
    if missing.all():
        raise CatalogError(f"{cat.source}: no {band}, K or H magnitudes to give the stars a flux")
    if missing.any():
        mags[missing] = np.nanmax(mags) + 0.5
        notes.append(f"{int(missing.sum())} without magnitude: faintest + 0.5")
    return mags, "; ".join(notes)


def noisy_catalog(catalog_true: Catalog | str | os.PathLike, rng: np.random.Generator | int | None, *,
                  error_scale: float = 1.0) -> Catalog:
    """The catalogue the fit sees: truth + errors drawn from its stated covariance.

    Position errors (``ra_err``, ``dec_err``, ``ra_dec_corr``; east/north, mas) are added in
    the tangent plane at each star (exactly, by inverse gnomonic projection for absolute
    catalogues; to the offsets for offsets catalogues), proper-motion errors likewise
    (``pmra_err``...). Stars whose ``pm_listed`` is False get NaN proper motions and
    errors. ``error_scale`` multiplies the drawn errors (0: the truth itself, except for
    the unlisted proper motions). :func:`catalog_errors` gives the errors per star at any
    epoch (the catalogue keeps no trace of them). The ``pm_listed`` column is dropped.

    Parameters
    ----------
    catalog_true : Catalog, str or os.PathLike
        The true catalogue (:func:`true_catalog`).
    rng : numpy.random.Generator, int or None
        The random stream (or its seed).
    error_scale : float
        Multiplies the drawn errors.

    Returns
    -------
    Catalog
        The catalogue the fit sees.
    """
    cat = load_catalog(catalog_true)
    rng = np.random.default_rng(rng)
    n = len(cat)
    t = cat.table.copy()
    t.meta = dict(cat.meta)
    listed = np.asarray(t["pm_listed"], bool) if "pm_listed" in t.colnames else cat.has_pm
    z = rng.standard_normal((n, 4))
    dpos = np.einsum("nij,nj->ni", _chol(cat.position_cov()), z[:, :2]) * error_scale  # mas
    dpm = np.einsum("nij,nj->ni", _chol(cat.pm_cov()), z[:, 2:]) * error_scale  # mas/yr
    dpm[~listed] = 0.0
    if cat.kind == "offsets":
        for j, col in enumerate(("x_east", "y_north")):
            t[col] = np.asarray(t[col], float) + dpos[:, j] / 1e3
            t[col].unit = u.arcsec
    else:
        ra, dec = inverse_gnomonic(np.radians(dpos[:, 0] / 3.6e6), np.radians(dpos[:, 1] / 3.6e6),
                                   np.radians(np.asarray(t["ra"], float)), np.radians(np.asarray(t["dec"], float)))
        t["ra"] = np.degrees(ra) % 360.0
        t["dec"] = np.degrees(dec)
        t["ra"].unit = t["dec"].unit = u.deg
    if "pmra" in t.colnames:
        for j, col in enumerate(("pmra", "pmdec")):
            v = np.asarray(t[col], float) + dpm[:, j]
            v[~listed] = np.nan
            t[col] = v
            t[col].unit = u.mas / u.yr
            err = np.asarray(t[f"{col}_err"], float).copy() if f"{col}_err" in t.colnames else np.full(n, np.nan)
            err[~listed] = np.nan
            t[f"{col}_err"] = err
            t[f"{col}_err"].unit = u.mas / u.yr
    if "pm_listed" in t.colnames:
        t.remove_column("pm_listed")
    t.meta.pop("simulated_truth", None)
    t.meta["simulated_errors"] = {
        "note": ("catalogue of an astrocal simulation: the true positions and proper motions plus errors drawn "
                 "from the stated covariance (east, north) times error_scale; proper motions the source does "
                 "not list are NaN. The drawn errors are in the simulation's truth, not here"),
        "error_scale": float(error_scale),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Catalog(t, cat.source.replace(" (simulated truth)", "") + " (simulated, with errors)")


def with_band_magnitudes(catalog_seen: Catalog, catalog_true: Catalog | str | os.PathLike, band: str = "L") -> Catalog:
    """``catalog_seen`` with a ``mag_<band>`` column.

    The magnitudes the simulation gives the stars (:func:`band_magnitudes` of the true
    catalogue), so that a measure stage can check fluxes against the catalogue (``band =
    "L"`` in the campaign).

    Parameters
    ----------
    catalog_seen : Catalog
        The catalogue the fit sees.
    catalog_true : Catalog, str or os.PathLike
        The true catalogue.
    band : str
        The band.

    Returns
    -------
    Catalog
        ``catalog_seen`` with the column (unchanged if the column exists).
    """
    col = f"mag_{band}"
    if col in catalog_seen.table.colnames:
        return catalog_seen
    mags, note = band_magnitudes(catalog_true, band)
    true_names = list(load_catalog(catalog_true).names)
    if list(catalog_seen.names) != true_names:
        index = {n: k for k, n in enumerate(true_names)}
        mags = mags[[index[n] for n in catalog_seen.names]]
    t = catalog_seen.table.copy()
    t.meta = dict(catalog_seen.meta)
    t[col] = mags
    t[col].unit = u.mag
    t[col].description = f"{band}-band magnitude of the simulation's fluxes ({note})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Catalog(t, catalog_seen.source)


def _chol(cov):
    out = np.zeros_like(cov)
    ok = cov[:, 0, 0] > 0
    out[~ok, 1, 1] = np.sqrt(np.maximum(cov[~ok, 1, 1], 0.0))
    if ok.any():
        c = cov[ok] + np.eye(2) * 1e-300
        out[ok, 0, 0] = np.sqrt(c[:, 0, 0])
        out[ok, 1, 0] = c[:, 1, 0] / out[ok, 0, 0]
        out[ok, 1, 1] = np.sqrt(np.maximum(c[:, 1, 1] - out[ok, 1, 0] ** 2, 0.0))
    return out


def catalog_errors(catalog_true: Catalog | str | os.PathLike, catalog_seen: Catalog | str | os.PathLike, epoch: float | str | Time) -> Table:
    """Catalogue error ``d_s`` of every star at ``epoch``: seen minus true, in the
    (east, north) axes, arcsec.

    Computed from the two catalogues (propagated to ``epoch`` with the same rules), so that
    ``x(seen) - x(true) = J d`` to first order; stars without a listed proper motion carry
    the part of their true motion that the catalogue misses.

    Parameters
    ----------
    catalog_true, catalog_seen : Catalog, str or os.PathLike
        The true catalogue and the one the fit sees.
    epoch : float, str or astropy.time.Time
        The epoch: a Time, an ISO string, ``"J2030.5"`` or a decimal year (as
        :func:`~astrocal.sky.astrometry.propagate` takes it).

    Returns
    -------
    astropy.table.Table
        Columns ``star``, ``d_east``, ``d_north`` (arcsec), ``epoch`` (Julian year).
    """
    true = load_catalog(catalog_true)
    seen = load_catalog(catalog_seen)
    with earth.orientation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = propagate(true, epoch, missing_pm="ignore")
        b = propagate(seen, epoch, missing_pm="ignore")
    index = {n: k for k, n in enumerate(a.names)}
    k = np.array([index[n] for n in b.names])
    # offsets of the seen star in the tangent plane at the true one
    xi, eta = gnomonic(np.radians(b.ra), np.radians(b.dec), np.radians(a.ra[k]), np.radians(a.dec[k]))
    t = Table()
    t["star"] = b.names
    t["d_east"] = np.degrees(xi) * 3600.0 * u.arcsec
    t["d_north"] = np.degrees(eta) * 3600.0 * u.arcsec
    t["epoch"] = np.full(len(t), float(a.epoch.tt.jyear)) * u.yr
    t.meta = {"note": "catalogue minus truth at the epoch (Julian year), east/north"}
    return t


def make_true_catalog(target: str, rng: np.random.Generator | int | None, **cluster: Any) -> Catalog:
    """The true catalogue of a target field.

    Parameters
    ----------
    target : str
        ``"gc"`` (the shipped Galactic Center list, unlisted proper motions drawn, see
        :func:`true_catalog`) or ``"47tuc"`` (:func:`synthetic_cluster`).
    rng : numpy.random.Generator, int or None
        The random stream (or its seed).
    **cluster
        Keyword arguments of :func:`synthetic_cluster`.

    Returns
    -------
    Catalog
        The true catalogue.
    """
    key = target_key(target)
    if key == "gc":
        return true_catalog(get_catalog("galactic_center"), rng)
    return synthetic_cluster(rng, **cluster)


