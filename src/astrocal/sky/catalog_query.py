"""Reference catalogues looked up with astroquery, through an on-disk cache.

:func:`query_gaia` and :func:`query_vizier` fetch with astroquery and keep the raw result
in an on-disk cache (:func:`default_cache_dir`); a later call with the same query reads
the cache and needs no network. ``offline=True`` (or the environment variable
``ASTROCAL_OFFLINE=1``) never touches the network. A failed query raises
:class:`~astrocal.sky.catalog.CatalogQueryError`, which says so and names the cache
option. The results are :class:`~astrocal.sky.catalog.Catalog` objects.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import astropy.units as u
from astropy.table import Table
from astropy.time import Time

from ..atomic import atomic_path
from .catalog import Catalog, CatalogError, CatalogQueryError, CatalogWarning, as_angle, as_center, parse_epoch

__all__ = ["CACHE_ENV", "OFFLINE_ENV", "GAIA_COLUMNS", "default_cache_dir", "query_gaia", "query_vizier"]

log = logging.getLogger(__name__)

CACHE_ENV = "ASTROCAL_CATALOG_CACHE"
OFFLINE_ENV = "ASTROCAL_OFFLINE"


def default_cache_dir() -> Path:
    """Folder of the astroquery cache.

    ``$ASTROCAL_CATALOG_CACHE`` if set; else ``catalogs/cache/`` of the astrocal source
    checkout when the package runs from one (editable install); else
    ``~/.cache/astrocal/catalogs``.

    Returns
    -------
    pathlib.Path
        The cache folder (not created).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve()
    if len(here.parents) > 3:
        repo = here.parents[3]
        if (repo / "catalogs" / "README.md").is_file() and (repo / "pyproject.toml").is_file():
            return repo / "catalogs" / "cache"
    return Path.home() / ".cache" / "astrocal" / "catalogs"


def _offline(offline) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _cache_file(cache_dir, service: str, label: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{service}_{_slug(label)}_{digest}.ecsv"


def _query_failed(service: str, what: str, exc: Optional[BaseException], cache_file: Path, hint: str) -> CatalogQueryError:
    reason = "offline mode (offline=True or ASTROCAL_OFFLINE=1)" if exc is None else f"{type(exc).__name__}: {exc}"
    return CatalogQueryError(
        f"{service} query for {what} failed ({reason}) and there is no cached result "
        f"{cache_file.name} in {cache_file.parent}. Run it once with network access to fill the cache, "
        f"or point cache_dir= (or the {CACHE_ENV} environment variable) to a folder that holds the cached "
        f"result; without network, use a shipped catalogue ({hint})."
    )


def _write_cache(table: Table, cache_file: Path, meta: dict) -> None:
    out = Table(table, copy=True)
    for col in out.colnames:  # object columns (e.g. bytes) do not round-trip through ECSV
        if out[col].dtype.kind == "O":
            out[col] = np.asarray([str(v) for v in out[col]])
    out.meta = {**{k: v for k, v in dict(table.meta).items() if isinstance(v, (str, int, float))}, **meta}
    try:
        with atomic_path(cache_file, overwrite=True) as tmp:
            out.write(tmp, format="ascii.ecsv")
    except OSError as exc:
        warnings.warn(f"could not write the catalogue cache {cache_file}: {exc}", CatalogWarning, stacklevel=3)


def _read_cache(cache_file: Path) -> Table:
    try:
        return Table.read(cache_file, format="ascii.ecsv")
    except Exception as exc:  # noqa: BLE001
        raise CatalogError(f"{cache_file}: cached catalogue unreadable ({type(exc).__name__}: {exc}); "
                           "delete it or query again with refresh=True") from None


GAIA_COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "ra_dec_corr", "pmra", "pmdec",
                "pmra_error", "pmdec_error", "pmra_pmdec_corr", "parallax", "parallax_error", "ref_epoch",
                "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "ruwe")


def _gaia_service():
    """The astroquery Gaia service (imported lazily: importing it contacts the archive)."""
    from astroquery.gaia import Gaia

    return Gaia


def query_gaia(center: Any, radius: u.Quantity | float, *, cache_dir: str | os.PathLike | None = None,
               table: str = "gaiadr3.gaia_source", columns: Sequence[str] = GAIA_COLUMNS, mag_limit: Optional[float] = None, refresh: bool = False,
               offline: Optional[bool] = None) -> Catalog:
    """Gaia stars within ``radius`` of ``center``, through the on-disk cache.

    ``center``: SkyCoord, ``(ra_deg, dec_deg)`` or ``"hh:mm:ss +dd:mm:ss"``; ``radius``:
    angle Quantity or arcsec. The ADQL query (cone, optional ``phot_g_mean_mag <
    mag_limit``) runs with ``astroquery.gaia.Gaia.launch_job_async``; the raw result is
    cached under ``cache_dir`` (default :func:`default_cache_dir`) with the query in its
    metadata, and later identical calls read it without network (``refresh=True`` asks
    again). Positions are at Gaia's ``ref_epoch`` (J2016.0 for DR3).

    Parameters
    ----------
    center : SkyCoord, (ra_deg, dec_deg) or str
        Centre of the cone.
    radius : Quantity or float
        Radius of the cone (angle, or arcsec).
    cache_dir : str or os.PathLike, optional
        The cache folder (default :func:`default_cache_dir`).
    table : str, optional
        The Gaia archive table.
    columns : sequence of str, optional
        The columns selected.
    mag_limit : float, optional
        Only stars with ``phot_g_mean_mag`` below this.
    refresh : bool, optional
        Query again even when the result is cached.
    offline : bool, optional
        Never touch the network (default: ``ASTROCAL_OFFLINE``).

    Returns
    -------
    Catalog
        The stars (``source_id`` as ``"Gaia DR3 <id>"``), the query in its meta.

    Raises
    ------
    CatalogQueryError
        The query failed (or offline) and nothing is cached.
    CatalogError
        A non-positive radius, or an unreadable cache file.
    """
    c0 = as_center(center)
    r_deg = as_angle(radius).to_value(u.deg)
    if not r_deg > 0:
        raise CatalogError(f"query_gaia: radius must be positive, got {radius!r}")
    cols = ", ".join(columns)
    where = (f"1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {c0.ra.deg:.9f}, {c0.dec.deg:.9f}, "
             f"{r_deg:.9f}))")
    if mag_limit is not None:
        where += f" AND phot_g_mean_mag < {float(mag_limit):g}"
    adql = f"SELECT {cols} FROM {table} WHERE {where}"
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    label = f"{table}-ra{c0.ra.deg:.4f}-dec{c0.dec.deg:+.4f}-r{r_deg * 3600:.1f}as"
    cache_file = _cache_file(cache_dir, "gaia", label, adql)
    if cache_file.is_file() and not refresh:
        log.info("Gaia: using cached result %s", cache_file)
        raw = _read_cache(cache_file)
    else:
        if _offline(offline):
            raise _query_failed("Gaia", label, None, cache_file, "get_catalog('gaia_47tuc')")
        try:
            job = _gaia_service().launch_job_async(adql)
            raw = job.get_results()
        except Exception as exc:  # noqa: BLE001 -- network errors come in many types
            raise _query_failed("Gaia", label, exc, cache_file, "get_catalog('gaia_47tuc')") from exc
        raw = Table(raw)
        raw.rename_columns(raw.colnames, [c.lower() for c in raw.colnames])
        _write_cache(raw, cache_file, {"service": "Gaia archive (astroquery.gaia)", "query": adql,
                                        "retrieved_utc": Time.now().utc.isot, "astroquery": _astroquery_version()})
        log.info("Gaia: %d rows cached in %s", len(raw), cache_file)
    return _gaia_catalog(raw, str(cache_file), adql)


def _astroquery_version() -> str:
    try:
        import astroquery

        return str(astroquery.__version__)
    except Exception:  # noqa: BLE001
        return "unknown"


def _gaia_catalog(raw: Table, source: str, query: str) -> Catalog:
    t = Table(raw, copy=True)
    if "source_id" in t.colnames:
        t["source_id"] = np.asarray([f"Gaia DR3 {v}" for v in np.asarray(t["source_id"])])
    for col, unit in (("ra", u.deg), ("dec", u.deg), ("ra_error", u.mas), ("dec_error", u.mas),
                      ("pmra", u.mas / u.yr), ("pmdec", u.mas / u.yr), ("pmra_error", u.mas / u.yr),
                      ("pmdec_error", u.mas / u.yr), ("parallax", u.mas), ("parallax_error", u.mas)):
        if col in t.colnames and t[col].unit is None:
            t[col].unit = unit  # units of the Gaia archive columns
    if "ref_epoch" in t.colnames:
        t["ref_epoch"].unit = None
    for col in ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"):
        if col in t.colnames:
            t[col].unit = None
    t.meta = {"name": "Gaia query", "short_name": "gaia_query", "query": query,
              **{k: v for k, v in dict(raw.meta).items() if k in ("service", "retrieved_utc", "astroquery")}}
    return Catalog(t, source)


def _vizier_class():
    from astroquery.vizier import VizierClass

    return VizierClass


def query_vizier(catalog_id: str, center: Any, radius: u.Quantity | float, *,
                 cache_dir: str | os.PathLike | None = None, columns: Sequence[str] = ("**",),
                 column_map: Optional[Mapping[str, str]] = None, epoch: Any = None, units: Optional[Mapping] = None,
                 row_limit: int = -1, refresh: bool = False, offline: Optional[bool] = None) -> Catalog:
    """Rows of VizieR table ``catalog_id`` within ``radius`` of ``center``, through the cache.

    Uses ``astroquery.vizier.VizierClass(columns=..., row_limit=...).query_region``. Column
    names are mapped to the canonical ones with ``column_map`` (VizieR name -> canonical
    name) and then the standard VizieR aliases (``RA_ICRS``, ``pmRA``, ``e_pmRA``...).
    ``epoch``: the epoch of the positions (Julian year or ``"J2000"``...), required unless
    the table has an epoch column -- VizieR tables use many epochs and guessing one
    silently would be wrong. ``units``: column -> unit for columns VizieR leaves without.

    Parameters
    ----------
    catalog_id : str
        The VizieR table id (``"J/ApJ/.../table"``).
    center : SkyCoord, (ra_deg, dec_deg) or str
        Centre of the region.
    radius : Quantity or float
        Radius of the region (angle, or arcsec).
    cache_dir : str or os.PathLike, optional
        The cache folder (default :func:`default_cache_dir`).
    columns : sequence of str, optional
        The VizieR columns (``"**"``: all).
    column_map : mapping, optional
        VizieR name -> canonical name.
    epoch : float, str or Time, optional
        Epoch of the positions (required without an epoch column).
    units : mapping, optional
        Column -> unit for columns without one.
    row_limit : int, optional
        Most rows (-1: all).
    refresh : bool, optional
        Query again even when the result is cached.
    offline : bool, optional
        Never touch the network (default: ``ASTROCAL_OFFLINE``).

    Returns
    -------
    Catalog
        The rows, the query in its meta.

    Raises
    ------
    CatalogQueryError
        The query failed (or offline) and nothing is cached, or it returned no rows.
    CatalogError
        A bad ``catalog_id``, radius, ``column_map`` or ``units``, or no epoch.
    """
    if not isinstance(catalog_id, str) or not catalog_id.strip():
        raise CatalogError(f"query_vizier: catalog_id must be a VizieR table id such as 'J/ApJ/.../table', got {catalog_id!r}")
    c0 = as_center(center)
    r = as_angle(radius)
    if not r.value > 0:
        raise CatalogError(f"query_vizier: radius must be positive, got {radius!r}")
    key = f"{catalog_id}|{c0.ra.deg:.9f}|{c0.dec.deg:.9f}|{r.to_value(u.arcsec):.6f}|{list(columns)}|{row_limit}"
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    label = f"{catalog_id}-ra{c0.ra.deg:.4f}-dec{c0.dec.deg:+.4f}-r{r.to_value(u.arcsec):.1f}as"
    cache_file = _cache_file(cache_dir, "vizier", label, key)
    hint = "get_catalog('galactic_center') or get_catalog('gaia_47tuc')"
    if cache_file.is_file() and not refresh:
        log.info("VizieR: using cached result %s", cache_file)
        raw = _read_cache(cache_file)
    else:
        if _offline(offline):
            raise _query_failed("VizieR", label, None, cache_file, hint)
        try:
            viz = _vizier_class()(columns=list(columns), row_limit=row_limit)
            result = viz.query_region(c0, radius=r, catalog=catalog_id)
        except Exception as exc:  # noqa: BLE001
            raise _query_failed("VizieR", label, exc, cache_file, hint) from exc
        if result is None or len(result) == 0 or len(result[0]) == 0:
            raise CatalogQueryError(f"VizieR query for {label} returned no rows (wrong catalog_id, or no star "
                                    "in the region); nothing cached")
        raw = Table(result[0])
        _write_cache(raw, cache_file, {"service": "VizieR (astroquery.vizier)", "catalog_id": catalog_id,
                                        "query": key, "retrieved_utc": Time.now().utc.isot,
                                        "astroquery": _astroquery_version()})
        log.info("VizieR: %d rows cached in %s", len(raw), cache_file)
    t = Table(raw, copy=True)
    for src, dst in (column_map or {}).items():
        if src not in t.colnames:
            raise CatalogError(f"{cache_file}: column_map names {src!r}, which the VizieR table lacks "
                               f"(columns: {t.colnames})")
        t.rename_column(src, dst)
    for col, unit in (units or {}).items():
        if col not in t.colnames:
            raise CatalogError(f"{cache_file}: units names column {col!r}, which the table lacks")
        t[col].unit = u.Unit(unit)
    has_epoch_col = any(c.lower() in ("epoch", "ref_epoch", "ep") for c in t.colnames)
    t.meta = {"name": f"VizieR {catalog_id}", "short_name": _slug(catalog_id), "catalog_id": catalog_id,
              "query": key}
    if epoch is not None:
        t.meta["epoch"] = parse_epoch(epoch, f"query_vizier({catalog_id!r}): epoch")
    elif not has_epoch_col:
        raise CatalogError(f"{cache_file}: the VizieR table {catalog_id} has no epoch column; give epoch= "
                           "(the epoch of its positions, e.g. 2006.0 or 'J2000') -- it is not guessed")
    return Catalog(t, str(cache_file))
