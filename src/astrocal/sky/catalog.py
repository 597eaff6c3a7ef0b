"""Reference catalogues: the catalogue type, its checks, and the shipped extracts.

A reference catalogue is an astropy :class:`~astropy.table.Table` (ECSV on disk) with one
row per star, wrapped by :class:`Catalog`, which checks it and gives plain arrays. Two
kinds of positions exist:

``absolute``
    ``ra``, ``dec`` (deg, ICRS) at the star's epoch;
``offsets``
    ``x_east``, ``y_north`` (arcsec): standard (gnomonic tangent-plane) coordinates about a
    *reference* position -- ``x`` increases to the EAST, ``y`` to the north -- at the star's
    epoch, relative to where the reference is at that epoch. The reference (name, RA/Dec
    at its epoch, its own proper motion, the source of those numbers) is in
    ``meta["reference"]``. The Galactic Center list is of this kind, about Sgr A*.

Columns (canonical names; files may use the Gaia / VizieR aliases in :data:`ALIASES`):

=================  ========  ==================================================================
column             unit      meaning
=================  ========  ==================================================================
name               --        star identifier, unique (generated ``row<i>`` when absent)
ra, dec            deg       absolute ICRS position at ``epoch``          (absolute kind)
x_east, y_north    arcsec    offsets from the reference at ``epoch``      (offsets kind)
epoch              yr        Julian epoch of the position (decimal year, ``J2016.0`` = 2016.0);
                             a column, or ``meta["epoch"]`` for all rows
ra_err, dec_err    mas       1-sigma position errors at ``epoch``: EAST (``ra_err`` includes
                             cos dec, as Gaia's ``ra_error``) and north components
ra_dec_corr        --        optional correlation of the two
pmra, pmdec        mas/yr    proper motion, east (mu_alpha* = mu_alpha cos dec) and north;
                             NaN = not measured. Offsets kind: relative to the reference
pmra_err,          mas/yr    1-sigma proper-motion errors
pmdec_err
pmra_pmdec_corr    --        optional correlation
parallax           mas       optional
mag_<band>         mag       magnitudes, NaN (or masked) when not measured
variable           --        optional bool
=================  ========  ==================================================================

Missing error columns are allowed but flagged by a :class:`CatalogWarning` (the catalogue
then adds nothing to the point covariances). Metadata keys used: ``name``, ``short_name``,
``description``, ``reference``, ``epoch``, ``pm_dispersion_mas_yr`` (per-axis proper-motion
dispersion of the stars, used to inflate the errors of stars without proper motion, see
:func:`astrocal.sky.astrometry.propagate`), ``bands``, ``errors``, ``provenance``.

Shipped catalogues (package data ``astrocal/data/catalogs/``, identical copies in the
project's ``catalogs/``): ``galactic_center`` (107 stars, KAI ``photo_calib.dat``) and
``gaia_47tuc`` (Gaia DR3 around 47 Tuc); :func:`get_catalog` loads them by name;
:mod:`astrocal.sky.catalog_builders` made them from the original files.

Look-ups: :func:`~astrocal.sky.catalog_query.query_gaia` and
:func:`~astrocal.sky.catalog_query.query_vizier` (:mod:`astrocal.sky.catalog_query`) fetch
with astroquery through an on-disk cache; a failed query raises
:class:`CatalogQueryError`, which says so and names the cache option.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord, Angle
from astropy.table import Table, MaskedColumn
from astropy.time import Time
from numpy.typing import ArrayLike

from astrocal import earth

from .._moved import moved_module
from ..atomic import atomic_path
from ..errors import AstrocalError
from .projection import inverse_gnomonic

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogQueryError",
    "CatalogWarning",
    "Reference",
    "SGR_A_STAR",
    "CLUSTER_47TUC_CENTER",
    "ALIASES",
    "load_catalog",
    "get_catalog",
    "list_catalogs",
    "catalog_path",
    "catalog_from_arrays",
    "parse_epoch",
]

log = logging.getLogger(__name__)

#: names that moved (issue 20): the astroquery look-ups to :mod:`astrocal.sky.catalog_query`, the
#: builders of the shipped files to :mod:`astrocal.sky.catalog_builders`; the old path warns
_MOVED_TO = {
    "astrocal.sky.catalog_query": ("CACHE_ENV", "OFFLINE_ENV", "GAIA_COLUMNS", "default_cache_dir", "query_gaia",
                                   "query_vizier"),
    "astrocal.sky.catalog_builders": ("KAI_BANDS", "read_kai_photo_calib", "read_gaia_extract"),
}
_forward = {name: moved_module(__name__, target) for target, names in _MOVED_TO.items() for name in names}


def __getattr__(name: str) -> Any:
    """Names that moved to :mod:`astrocal.sky.catalog_query` and
    :mod:`astrocal.sky.catalog_builders` (one release, with a DeprecationWarning)."""
    if name in _forward:
        return _forward[name](name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CatalogError(AstrocalError, ValueError):
    """A catalogue file or table that cannot be used; the message names file and column."""


class CatalogKeyError(CatalogError, KeyError):
    """A catalogue name that is not shipped, or a band a catalogue does not have (also a
    ``KeyError``)."""


class CatalogQueryError(AstrocalError, RuntimeError):
    """A catalogue look-up (Gaia, VizieR) failed and no cached result could replace it."""


class CatalogWarning(UserWarning):
    """Something in a catalogue that is usable but deserves attention (missing errors...)."""


# --------------------------------------------------------------------------- columns
#: canonical columns: unit (None: dimensionless) and description (written to ECSV)
COLUMNS = {
    "name": (None, "star identifier"),
    "ra": (u.deg, "right ascension, ICRS, at epoch"),
    "dec": (u.deg, "declination, ICRS, at epoch"),
    "x_east": (u.arcsec, "offset from the reference, standard coordinate increasing to the EAST, at epoch"),
    "y_north": (u.arcsec, "offset from the reference, standard coordinate increasing to the north, at epoch"),
    "epoch": (u.yr, "Julian epoch of the position (decimal year)"),
    "ra_err": (u.mas, "1-sigma position error, east component (includes cos dec), at epoch"),
    "dec_err": (u.mas, "1-sigma position error, north component, at epoch"),
    "ra_dec_corr": (None, "correlation of the east and north position errors"),
    "pmra": (u.mas / u.yr, "proper motion, east component (mu_alpha cos dec); NaN: not measured"),
    "pmdec": (u.mas / u.yr, "proper motion, north component; NaN: not measured"),
    "pmra_err": (u.mas / u.yr, "1-sigma error of pmra"),
    "pmdec_err": (u.mas / u.yr, "1-sigma error of pmdec"),
    "pmra_pmdec_corr": (None, "correlation of the proper-motion errors"),
    "parallax": (u.mas, "parallax"),
    "parallax_err": (u.mas, "1-sigma error of the parallax"),
}

_FLOAT_COLUMNS = [c for c in COLUMNS if c not in ("name", "epoch")]

#: alternative column names (lower case) accepted on input -> canonical name
ALIASES = {
    # Gaia archive
    "source_id": "name", "designation": "name",
    "ra_error": "ra_err", "dec_error": "dec_err",
    "pmra_error": "pmra_err", "pmdec_error": "pmdec_err",
    "parallax_error": "parallax_err", "ref_epoch": "epoch",
    "phot_g_mean_mag": "mag_G", "phot_bp_mean_mag": "mag_BP", "phot_rp_mean_mag": "mag_RP",
    # VizieR conventions
    "ra_icrs": "ra", "de_icrs": "dec", "raj2000": "ra", "dej2000": "dec", "radeg": "ra", "dedeg": "dec",
    "e_ra_icrs": "ra_err", "e_de_icrs": "dec_err", "e_raj2000": "ra_err", "e_dej2000": "dec_err",
    "pmde": "pmdec", "e_pmra": "pmra_err", "e_pmde": "pmdec_err",
    "plx": "parallax", "e_plx": "parallax_err", "ep": "epoch",
    "source": "name", "id": "name", "star": "name",
}
# Deliberately not mapped: bare "x", "y" (pixels? arcsec? which sign?) -- ambiguous.

EPOCH_RANGE = (1800.0, 2300.0)


# --------------------------------------------------------------------------- reference
@dataclass(frozen=True)
class Reference:
    """The reference position of an ``offsets`` catalogue.

    ``ra_deg``, ``dec_deg`` (ICRS) at Julian epoch ``epoch``, its proper motion
    ``pmra``/``pmdec`` (mas/yr, east/north) with errors, position errors (mas) and the
    ``source`` of the numbers.
    """

    name: str
    ra_deg: float
    dec_deg: float
    epoch: float
    pmra: float = 0.0
    pmdec: float = 0.0
    ra_err: float = float("nan")
    dec_err: float = float("nan")
    pmra_err: float = float("nan")
    pmdec_err: float = float("nan")
    source: str = ""

    def coord(self) -> SkyCoord:
        """The reference as a sky position.

        Returns
        -------
        astropy.coordinates.SkyCoord
            ICRS at its epoch (``obstime``), with its proper motion.
        """
        return SkyCoord(ra=self.ra_deg * u.deg, dec=self.dec_deg * u.deg,
                        pm_ra_cosdec=self.pmra * u.mas / u.yr, pm_dec=self.pmdec * u.mas / u.yr,
                        obstime=Time(self.epoch, format="jyear", scale="tt"), frame="icrs")

    def position_at(self, epochs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The reference's position at given epochs, with its proper motion.

        Parameters
        ----------
        epochs : array_like
            Julian epochs (decimal years).

        Returns
        -------
        tuple of numpy.ndarray
            RA, Dec (deg, ICRS), one per epoch.
        """
        epochs = np.atleast_1d(np.asarray(epochs, dtype=float))
        if self.pmra == 0 and self.pmdec == 0:
            return np.full(epochs.shape, self.ra_deg), np.full(epochs.shape, self.dec_deg)
        with earth.leap_seconds_applied(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*distance overridden.*")
            moved = self.coord().apply_space_motion(new_obstime=Time(epochs, format="jyear", scale="tt"))
        return moved.ra.to_value(u.deg), moved.dec.to_value(u.deg)

    def to_meta(self) -> dict:
        """The reference as plain data, for ``meta["reference"]``.

        Returns
        -------
        dict
            Its fields.
        """
        return {k: getattr(self, k) for k in ("name", "ra_deg", "dec_deg", "epoch", "pmra", "pmdec",
                                              "ra_err", "dec_err", "pmra_err", "pmdec_err", "source")}

    @classmethod
    def from_meta(cls, meta: Mapping, source: str = "<table>") -> "Reference":
        """The reference of a catalogue's ``meta["reference"]``, checked.

        Parameters
        ----------
        meta : mapping
            ``ra_deg``, ``dec_deg`` (ICRS) and ``epoch`` required; ``name``, ``source``,
            ``pmra``, ``pmdec`` and the errors optional.
        source : str, optional
            Names the catalogue in errors.

        Returns
        -------
        Reference
            The reference.

        Raises
        ------
        CatalogError
            Not a mapping, a missing or non-numeric key, or an invalid position.
        """
        if not isinstance(meta, Mapping):
            raise CatalogError(f"{source}: meta 'reference' must be a mapping, got {type(meta).__name__}")
        missing = [k for k in ("ra_deg", "dec_deg", "epoch") if k not in meta]
        if missing:
            raise CatalogError(f"{source}: meta 'reference' lacks {missing}; an offsets catalogue needs the "
                               "reference's ra_deg, dec_deg (ICRS) and epoch")
        kwargs = {"name": str(meta.get("name", "reference")), "source": str(meta.get("source", ""))}
        for key in ("ra_deg", "dec_deg", "pmra", "pmdec", "ra_err", "dec_err", "pmra_err", "pmdec_err"):
            if key in meta and meta[key] is not None:
                try:
                    kwargs[key] = float(meta[key])
                except (TypeError, ValueError):
                    raise CatalogError(f"{source}: meta 'reference.{key}' must be a number, got {meta[key]!r}") from None
        kwargs["epoch"] = parse_epoch(meta["epoch"], f"{source}: meta 'reference.epoch'")
        ref = cls(**kwargs)
        if not (np.isfinite(ref.ra_deg) and -90 <= ref.dec_deg <= 90):
            raise CatalogError(f"{source}: meta 'reference' has an invalid position ({ref.ra_deg}, {ref.dec_deg})")
        return ref


def _hms_deg(ra_hms: str, dec_dms: str) -> tuple[float, float]:
    return (float(Angle(ra_hms, unit=u.hourangle).to_value(u.deg)), float(Angle(dec_dms, unit=u.deg).to_value(u.deg)))


_SGR_RA, _SGR_DEC = _hms_deg("17h45m40.034047s", "-29d00m28.21601s")

#: Sgr A*: ICRF3 position at epoch 2015.0 and proper motion from VLBA absolute astrometry
#: (Gordon, de Witt & Jacobs 2023, AJ 165, 49; arXiv:2212.00632): RA 17h45m40.034047s
#: +- 0.000018s, Dec -29d00m28.21601s +- 0.00044", pm (-3.128 +- 0.042, -5.584 +- 0.075)
#: mas/yr (east, north).
SGR_A_STAR = Reference(
    name="Sgr A*",
    ra_deg=_SGR_RA,
    dec_deg=_SGR_DEC,
    epoch=2015.0,
    pmra=-3.128,
    pmdec=-5.584,
    ra_err=round(0.000018 * 15e3 * np.cos(np.radians(_SGR_DEC)), 4),
    dec_err=0.44,
    pmra_err=0.042,
    pmdec_err=0.075,
    source="Gordon, de Witt & Jacobs 2023, AJ 165, 49 (doi:10.3847/1538-3881/aca65b, arXiv:2212.00632): "
           "ICRF3 position at epoch 2015.0, RA 17h45m40.034047s +- 0.000018s, Dec -29d00m28.21601s "
           "+- 0.00044 arcsec; proper motion -3.128 +- 0.042 mas/yr (RA, includes cos dec), "
           "-5.584 +- 0.075 mas/yr (Dec)",
)

#: centre of 47 Tuc (NGC 104), J2000: Harris (1996; 2010 edition) catalogue of Milky Way
#: globular clusters, RA 00h24m05.67s, Dec -72d04m52.6s
CLUSTER_47TUC_CENTER = _hms_deg("00h24m05.67s", "-72d04m52.6s")


# --------------------------------------------------------------------------- epochs
def parse_epoch(value: float | str | Time, what: str = "epoch") -> float:
    """Julian epoch (decimal year) from a number, ``"J2016.0"``, an ISO date or a Time.

    Numbers are Julian years and must lie in 1800..2300. UTC dates use astrocal's leap
    seconds (:mod:`astrocal.earth`).

    Parameters
    ----------
    value : float, str or astropy.time.Time
        The epoch.
    what : str, optional
        Names the value in errors.

    Returns
    -------
    float
        The Julian epoch (TT).

    Raises
    ------
    CatalogError
        Anything else (naming ``what`` and the value).
    """
    with earth.leap_seconds_applied():
        return _parse_epoch(value, what)


def _parse_epoch(value, what):
    if isinstance(value, Time):
        try:
            out = float(np.asarray(value.tt.jyear))
        except Exception as exc:  # noqa: BLE001
            raise CatalogError(f"{what}: cannot convert {value!r} to a Julian epoch ({exc})") from None
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        out = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"[+-]?\d+(\.\d*)?", text):
                out = float(text)
            elif re.fullmatch(r"[JB]\d+(\.\d*)?", text):
                out = float(Time(text, scale="tt").tt.jyear)
            else:
                out = float(Time(text, scale="utc").tt.jyear)
        except Exception:  # noqa: BLE001 -- astropy raises ValueError or others
            raise CatalogError(
                f"{what}: cannot parse {value!r} as an epoch (expected a Julian year such as 2016.0 "
                "or 'J2016.0', or an ISO date such as '2016-01-01T00:00:00')"
            ) from None
    else:
        raise CatalogError(f"{what}: cannot parse {value!r} ({type(value).__name__}) as an epoch")
    if not np.isfinite(out) or not EPOCH_RANGE[0] <= out <= EPOCH_RANGE[1]:
        raise CatalogError(f"{what}: epoch {value!r} is outside {EPOCH_RANGE[0]:g}..{EPOCH_RANGE[1]:g} "
                           "(Julian years expected; MJD or JD are not accepted as bare numbers)")
    return out


# --------------------------------------------------------------------------- checking
def float_values(col: Any) -> np.ndarray:
    """The values of a column as floats, masked entries NaN.

    Parameters
    ----------
    col : astropy.table.Column, MaskedColumn or array_like
        The column.

    Returns
    -------
    numpy.ndarray
        Its values (float), NaN where masked.
    """
    if isinstance(col, MaskedColumn) or np.ma.isMaskedArray(col):
        return np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)
    return np.asarray(col, dtype=float)


def _rename_aliases(t: Table, source: str) -> None:
    present = set(t.colnames)
    lower = {c.lower(): c for c in t.colnames}
    for alias, canonical in ALIASES.items():
        if canonical is None or alias not in lower:
            continue
        original = lower[alias]
        if original == canonical or canonical in present:
            continue
        t.rename_column(original, canonical)
        present.discard(original)
        present.add(canonical)
    # VizieR proper-motion spelling pmRA / pmDE
    for alias, canonical in (("pmRA", "pmra"), ("pmDE", "pmdec"), ("e_pmRA", "pmra_err"), ("e_pmDE", "pmdec_err")):
        if alias in t.colnames and canonical not in t.colnames:
            t.rename_column(alias, canonical)


def _check_table(t: Table, source: str) -> Table:
    """Check and normalise a catalogue table; raise :class:`CatalogError` naming the column.

    The steps: 1. canonical column names (:data:`ALIASES`), at least one row; 2. one kind
    of positions; 3. unique names (generated when absent); 4. numeric columns in their
    units; 5. their values (finite positions, dec, errors, correlations, proper motions in
    pairs); 6. magnitudes and the variable flag; 7. the epoch (a float column); 8. the
    reference of an offsets catalogue; 9. warnings for missing error columns.
    """
    out = Table(t, copy=True, masked=False)
    out.meta = dict(t.meta)
    _rename_aliases(out, source)
    if len(out) == 0:
        raise CatalogError(f"{source}: the catalogue has no rows")
    has_abs, has_off, pos = _position_kind(out, source)
    names = _check_names(out, source)
    _normalise_units(out, source)
    _check_values(out, source, names, pos, has_abs)
    _normalise_magnitudes(out, source)
    _normalise_epoch(out, source, names)
    if has_off:
        if "reference" not in out.meta:
            raise CatalogError(f"{source}: offsets catalogue (x_east, y_north) without meta 'reference' "
                               "(name, ra_deg, dec_deg, epoch, pmra, pmdec of the reference position)")
        Reference.from_meta(out.meta["reference"], source)
    _warn_missing_errors(out, source)
    return out


def _position_kind(out, source):
    """Step 2 of :func:`_check_table`: ``(absolute, offsets, position columns)``."""
    has_abs = "ra" in out.colnames or "dec" in out.colnames
    has_off = "x_east" in out.colnames or "y_north" in out.colnames
    if has_abs and has_off:
        raise CatalogError(f"{source}: both absolute (ra/dec) and offset (x_east/y_north) columns are present; "
                           "keep one kind")
    if not has_abs and not has_off:
        raise CatalogError(f"{source}: no positions: a catalogue needs columns 'ra','dec' (deg, ICRS) or "
                           f"'x_east','y_north' (arcsec from meta 'reference'); found {out.colnames}")
    pos = ("ra", "dec") if has_abs else ("x_east", "y_north")
    for col in pos:
        if col not in out.colnames:
            raise CatalogError(f"{source}: column '{col}' missing (the other position column is present)")
    return has_abs, has_off, pos


def _check_names(out, source):
    """Step 3 of :func:`_check_table`: the names (stripped strings, unique; ``row<i>`` when
    the column is absent), put in ``out``."""
    if "name" not in out.colnames:
        out.add_column([f"row{i + 1}" for i in range(len(out))], name="name", index=0)
    names = np.array([str(v).strip() for v in np.ma.filled(np.ma.asarray(out["name"]).astype(str), "")])
    if np.any(names == ""):
        raise CatalogError(f"{source}: column 'name' has empty values (rows {np.flatnonzero(names == '')[:10].tolist()})")
    uniq, counts = np.unique(names, return_counts=True)
    if np.any(counts > 1):
        raise CatalogError(f"{source}: column 'name' has duplicates {uniq[counts > 1][:10].tolist()}")
    out.replace_column("name", names)
    return names


def _normalise_units(out, source):
    """Step 4 of :func:`_check_table`: the numeric columns as floats in their units."""
    for col in _FLOAT_COLUMNS:
        if col not in out.colnames:
            continue
        unit = COLUMNS[col][0]
        c = out[col]
        if c.dtype.kind not in "fiub" and not (c.dtype.kind == "O"):
            raise CatalogError(f"{source}: column '{col}' must be numeric, got dtype {c.dtype}")
        try:
            values = float_values(c)
        except (TypeError, ValueError):
            raise CatalogError(f"{source}: column '{col}' must be numeric") from None
        cu = c.unit
        desc = c.description
        if unit is None:
            if cu not in (None, u.dimensionless_unscaled):
                raise CatalogError(f"{source}: column '{col}' must be dimensionless, got unit {cu}")
        else:
            if cu is None:
                raise CatalogError(f"{source}: column '{col}' has no unit; expected {unit} "
                                   "(or a convertible unit)")
            try:
                values = values * u.Unit(cu).to(unit)
            except u.UnitConversionError:
                raise CatalogError(f"{source}: column '{col}' has unit {cu}, not convertible to {unit}") from None
        out.replace_column(col, values)
        out[col].unit = unit
        out[col].description = desc or COLUMNS[col][1]


def _check_values(out, source, names, pos, has_abs):
    """Step 5 of :func:`_check_table`: finite positions, dec within -90..90 (ra wrapped to
    0..360), non-negative errors, correlations within -1..1 (NaN -> 0), proper motions in
    pairs."""
    for col in pos:
        bad = ~np.isfinite(out[col])
        if np.any(bad):
            raise CatalogError(f"{source}: column '{col}' has non-finite values for stars {names[bad][:10].tolist()}")
    if has_abs:
        dec = np.asarray(out["dec"])
        bad = np.abs(dec) > 90
        if np.any(bad):
            raise CatalogError(f"{source}: column 'dec' outside -90..90 deg for stars {names[bad][:10].tolist()}")
        desc = out["ra"].description
        out["ra"] = np.mod(np.asarray(out["ra"]), 360.0)
        out["ra"].unit = u.deg
        out["ra"].description = desc
    for col in ("ra_err", "dec_err", "pmra_err", "pmdec_err", "parallax_err"):
        if col in out.colnames:
            v = np.asarray(out[col])
            bad = v < 0
            if np.any(bad):
                raise CatalogError(f"{source}: column '{col}' has negative errors for stars {names[bad][:10].tolist()}")
    for col in ("ra_dec_corr", "pmra_pmdec_corr"):
        if col in out.colnames:
            v = np.asarray(out[col])
            bad = np.abs(v) > 1
            if np.any(bad):
                raise CatalogError(f"{source}: column '{col}' outside -1..1 for stars {names[bad][:10].tolist()}")
            out[col] = np.where(np.isfinite(v), v, 0.0)
    # proper motions: a star has one only if both components are finite
    if ("pmra" in out.colnames) != ("pmdec" in out.colnames):
        raise CatalogError(f"{source}: only one of 'pmra', 'pmdec' present; give both (NaN = not measured)")
    if "pmra" in out.colnames:
        half = np.isfinite(out["pmra"]) != np.isfinite(out["pmdec"])
        if np.any(half):
            warnings.warn(f"{source}: stars {names[half][:10].tolist()} have only one proper-motion component; "
                          "treated as having no proper motion", CatalogWarning, stacklevel=4)
            out["pmra"][half] = np.nan
            out["pmdec"][half] = np.nan


def _normalise_magnitudes(out, source):
    """Step 6 of :func:`_check_table`: ``mag_<band>`` columns as floats (mag), ``variable``
    as bool."""
    for col in out.colnames:
        if col.startswith("mag_"):
            c = out[col]
            if c.dtype.kind not in "fiuO":
                raise CatalogError(f"{source}: column '{col}' must be numeric, got dtype {c.dtype}")
            if c.unit not in (None, u.dimensionless_unscaled, u.mag):
                raise CatalogError(f"{source}: column '{col}' has unit {c.unit}; magnitudes expected")
            values = float_values(c)
            desc = c.description
            out.replace_column(col, values)
            out[col].unit = u.mag
            out[col].description = desc
    if "variable" in out.colnames:
        desc = out["variable"].description
        out["variable"] = np.asarray(np.ma.filled(np.ma.asarray(out["variable"]), False), dtype=bool)
        out["variable"].description = desc


def _normalise_epoch(out, source, names):
    """Step 7 of :func:`_check_table`: the ``epoch`` column as Julian years (from a column of
    numbers or dates, or ``meta["epoch"]``)."""
    if "epoch" in out.colnames:
        c = out["epoch"]
        if c.dtype.kind in "fiu":
            if c.unit not in (None, u.dimensionless_unscaled, u.yr, u.year):
                raise CatalogError(f"{source}: column 'epoch' has unit {c.unit}; Julian years (yr) expected")
            values = float_values(c)
            bad = ~np.isfinite(values) | (values < EPOCH_RANGE[0]) | (values > EPOCH_RANGE[1])
            if np.any(bad):
                i = int(np.flatnonzero(bad)[0])
                parse_epoch(float(values[i]), f"{source}: column 'epoch', row {i} (star {str(names[i])!r})")
        else:
            strings = [str(v) for v in np.ma.filled(np.ma.asarray(c).astype(str), "")]
            cache: dict = {}
            values = np.empty(len(out))
            for i, s in enumerate(strings):
                if s not in cache:
                    cache[s] = parse_epoch(s, f"{source}: column 'epoch', row {i} (star {str(names[i])!r})")
                values[i] = cache[s]
        desc = c.description
        out.replace_column("epoch", values)
        out["epoch"].description = desc
    elif "epoch" in out.meta:
        value = parse_epoch(out.meta["epoch"], f"{source}: meta 'epoch'")
        out.add_column(np.full(len(out), value), name="epoch")
    else:
        raise CatalogError(f"{source}: no epoch: add a column 'epoch' (Julian years, or dates) or "
                           "'epoch' in the metadata (e.g. 2016.0 for Gaia DR3)")
    out["epoch"].unit = u.yr
    out["epoch"].description = out["epoch"].description or COLUMNS["epoch"][1]


def _warn_missing_errors(out, source):
    """Step 9 of :func:`_check_table`: a :class:`CatalogWarning` for missing position errors,
    and for proper motions without errors."""
    missing = [c for c in ("ra_err", "dec_err") if c not in out.colnames]
    if missing:
        warnings.warn(f"{source}: no position-error columns {missing}: the catalogue adds nothing to the "
                      "point covariances", CatalogWarning, stacklevel=4)
    if "pmra" in out.colnames and np.isfinite(out["pmra"]).any():
        pm_missing = [c for c in ("pmra_err", "pmdec_err") if c not in out.colnames]
        if pm_missing:
            warnings.warn(f"{source}: proper motions without error columns {pm_missing}: epoch propagation "
                          "will not grow the position errors", CatalogWarning, stacklevel=4)


# --------------------------------------------------------------------------- the type
class Catalog:
    """A checked reference catalogue (see the module documentation for columns and kinds).

    ``Catalog(table, source=...)`` checks and normalises ``table`` (canonical names, units,
    NaN for missing values, a float ``epoch`` column); errors raise :class:`CatalogError`
    naming ``source`` and the column. ``table`` holds the normalised copy.
    """

    def __init__(self, table: Table, source: str = "<table>"):
        self.source = str(source)
        self.table = _check_table(table, self.source)

    # ----- description
    @property
    def meta(self) -> dict:
        """The table's metadata."""
        return self.table.meta

    @property
    def name(self) -> str:
        """Short name: ``meta["short_name"]``, else ``meta["name"]``, else the file's stem."""
        return str(self.meta.get("short_name") or self.meta.get("name") or Path(self.source).stem)

    @property
    def kind(self) -> str:
        """``"absolute"`` (ra/dec) or ``"offsets"`` (x_east/y_north from the reference)."""
        return "offsets" if "x_east" in self.table.colnames else "absolute"

    @property
    def reference(self) -> Optional[Reference]:
        """The reference position of an offsets catalogue (None for an absolute one)."""
        ref = self.meta.get("reference")
        return None if ref is None else Reference.from_meta(ref, self.source)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (f"<Catalog {self.name!r}: {len(self)} stars, {self.kind}, epochs "
                f"{self.epoch.min():.3f}..{self.epoch.max():.3f}, bands {self.bands}>")

    # ----- arrays
    def _col(self, name, default=np.nan) -> np.ndarray:
        if name in self.table.colnames:
            return np.asarray(self.table[name], dtype=float)
        return np.full(len(self), default, dtype=float)

    @property
    def names(self) -> np.ndarray:
        """The star names (str)."""
        return np.asarray(self.table["name"]).astype(str)

    @property
    def epoch(self) -> np.ndarray:
        """Julian epoch of each star's position (decimal years)."""
        return np.asarray(self.table["epoch"], dtype=float)

    @property
    def pmra(self) -> np.ndarray:
        """Proper motion east (mas/yr, includes cos dec); NaN where not measured."""
        return self._col("pmra")

    @property
    def pmdec(self) -> np.ndarray:
        """Proper motion north (mas/yr); NaN where not measured."""
        return self._col("pmdec")

    @property
    def has_pm(self) -> np.ndarray:
        """True where the star has a measured proper motion (both components finite)."""
        return np.isfinite(self.pmra) & np.isfinite(self.pmdec)

    @property
    def bands(self) -> list[str]:
        """The bands with magnitudes (columns ``mag_<band>``)."""
        return [c[4:] for c in self.table.colnames if c.startswith("mag_") and not c.endswith("_err")]

    def mag(self, band: str) -> np.ndarray:
        """Magnitudes in a band.

        Parameters
        ----------
        band : str
            The band (column ``mag_<band>``).

        Returns
        -------
        numpy.ndarray
            Magnitudes (mag), NaN where not measured.

        Raises
        ------
        CatalogKeyError
            No such band.
        """
        col = f"mag_{band}"
        if col not in self.table.colnames:
            raise CatalogKeyError(f"{self.source}: no band {band!r}; bands are {self.bands}")
        return np.asarray(self.table[col], dtype=float)

    def position_cov(self) -> np.ndarray:
        """Position covariance at each star's epoch.

        Missing errors (no column, or NaN) count as zero.

        Returns
        -------
        numpy.ndarray
            (N, 2, 2), mas**2, (east, north) axes.
        """
        return _cov2(self._col("ra_err", 0.0), self._col("dec_err", 0.0), self._col("ra_dec_corr", 0.0))

    def pm_cov(self) -> np.ndarray:
        """Proper-motion covariance; 0 where missing.

        Returns
        -------
        numpy.ndarray
            (N, 2, 2), (mas/yr)**2, (east, north) axes.
        """
        return _cov2(self._col("pmra_err", 0.0), self._col("pmdec_err", 0.0), self._col("pmra_pmdec_corr", 0.0))

    # ----- positions
    def absolute(self) -> "Catalog":
        """This catalogue with absolute ICRS ``ra``/``dec`` (an absolute one is returned as is).

        Offsets are de-projected (exact inverse gnomonic) about the reference's position
        *at each star's epoch*; proper motions become the relative ones plus the
        reference's. The reference's own position error is common to all stars (a shift
        of the whole field) and is not added to the stars' errors.

        Returns
        -------
        Catalog
            The absolute catalogue (``meta["frame_pm_mas_yr"]``: the reference's proper
            motion, which stars without one move with).
        """
        if self.kind == "absolute":
            return self

        ref = self.reference
        ra0, dec0 = ref.position_at(self.epoch)
        xi = np.radians(np.asarray(self.table["x_east"], float) / 3600.0)
        eta = np.radians(np.asarray(self.table["y_north"], float) / 3600.0)
        ra, dec = inverse_gnomonic(xi, eta, np.radians(ra0), np.radians(dec0))
        t = self.table.copy()
        t.meta = dict(t.meta)
        t.remove_columns(["x_east", "y_north"])
        t.add_column(np.degrees(ra) % 360.0, name="ra", index=1)
        t.add_column(np.degrees(dec), name="dec", index=2)
        t["ra"].unit = t["dec"].unit = u.deg
        if "pmra" in t.colnames:
            t["pmra"] = np.asarray(t["pmra"], float) + ref.pmra
            t["pmdec"] = np.asarray(t["pmdec"], float) + ref.pmdec
            t["pmra"].unit = t["pmdec"].unit = u.mas / u.yr
        t.meta["frame_pm_mas_yr"] = [ref.pmra, ref.pmdec]
        t.meta["converted_from_offsets"] = (
            f"offsets about {ref.name} de-projected at each star's epoch; proper motions = relative + "
            f"{ref.name}'s ({ref.pmra}, {ref.pmdec}) mas/yr (east components added: exact to "
            "~5e-5 of the reference's motion over 20 arcsec); stars without a proper motion keep NaN and "
            "move with the reference (meta frame_pm_mas_yr)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CatalogWarning)  # already said once for this catalogue
            return Catalog(t, self.source)

    def radec(self) -> tuple[np.ndarray, np.ndarray]:
        """Absolute positions at each star's own epoch.

        Returns
        -------
        tuple of numpy.ndarray
            RA, Dec (deg, ICRS).
        """
        cat = self.absolute()
        return np.asarray(cat.table["ra"], float), np.asarray(cat.table["dec"], float)

    def skycoord(self) -> SkyCoord:
        """ICRS SkyCoord at each star's epoch (``obstime``) with proper motions.

        Stars without proper motion get 0 (absolute catalogues) or the reference's motion
        (converted offsets catalogues, ``meta["frame_pm_mas_yr"]``).

        Returns
        -------
        astropy.coordinates.SkyCoord
            One per star.
        """
        cat = self.absolute()
        ra, dec = cat.radec()
        frame_pm = cat.meta.get("frame_pm_mas_yr") or (0.0, 0.0)
        pmra = np.where(cat.has_pm, cat.pmra, float(frame_pm[0]))
        pmdec = np.where(cat.has_pm, cat.pmdec, float(frame_pm[1]))
        return SkyCoord(ra=ra * u.deg, dec=dec * u.deg, pm_ra_cosdec=pmra * u.mas / u.yr,
                        pm_dec=pmdec * u.mas / u.yr, obstime=Time(cat.epoch, format="jyear", scale="tt"),
                        frame="icrs")

    # ----- selections and output
    def select(self, index: ArrayLike) -> "Catalog":
        """A catalogue of some rows.

        Parameters
        ----------
        index : array_like
            Boolean mask or integer indices.

        Returns
        -------
        Catalog
            The rows, with this catalogue's meta.
        """
        t = self.table[index]
        t.meta = dict(self.table.meta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CatalogWarning)
            return Catalog(t, self.source)

    def separation_from(self, center: Any) -> np.ndarray:
        """Angular distance of each star (at its own epoch) from a centre.

        Parameters
        ----------
        center : SkyCoord, (ra_deg, dec_deg) or str
            The centre (:func:`as_center`).

        Returns
        -------
        numpy.ndarray
            Distances (arcsec).
        """
        c0 = as_center(center)
        ra, dec = self.radec()
        return SkyCoord(ra * u.deg, dec * u.deg).separation(c0).to_value(u.arcsec)

    def within(self, center: Any, radius: u.Quantity | float) -> "Catalog":
        """The stars closer than a radius to a centre.

        Parameters
        ----------
        center : SkyCoord, (ra_deg, dec_deg) or str
            The centre (:func:`as_center`).
        radius : Quantity or float
            Angle, or arcsec.

        Returns
        -------
        Catalog
            The stars within.

        Raises
        ------
        CatalogError
            No star within.
        """
        r = as_angle(radius).to_value(u.arcsec)
        keep = self.separation_from(center) <= r
        if not keep.any():
            raise CatalogError(f"{self.source}: no star within {r:g} arcsec of {as_center(center).to_string('hmsdms')}")
        return self.select(keep)

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the catalogue as ECSV, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The file.
        overwrite : bool, optional
            Replace an existing file (else refused).

        Returns
        -------
        pathlib.Path
            The file written.
        """
        path = Path(path)
        with atomic_path(path, overwrite=overwrite) as tmp:
            self.table.write(tmp, format="ascii.ecsv")
        return path


def _cov2(sx, sy, rho) -> np.ndarray:
    sx = np.where(np.isfinite(sx), sx, 0.0)
    sy = np.where(np.isfinite(sy), sy, 0.0)
    rho = np.where(np.isfinite(rho), rho, 0.0)
    cov = np.zeros((sx.size, 2, 2))
    cov[:, 0, 0] = sx**2
    cov[:, 1, 1] = sy**2
    cov[:, 0, 1] = cov[:, 1, 0] = rho * sx * sy
    return cov


def as_angle(value: u.Quantity | float) -> u.Quantity:
    """An angle as a Quantity in arcsec.

    Parameters
    ----------
    value : Quantity or float
        An angle Quantity, or a number of arcsec.

    Returns
    -------
    Quantity
        The angle (arcsec).
    """
    if isinstance(value, u.Quantity):
        return value.to(u.arcsec)
    return float(value) * u.arcsec


def as_center(center: Any) -> SkyCoord:
    """A sky position as an ICRS SkyCoord.

    Parameters
    ----------
    center : SkyCoord, (ra, dec) or str
        A SkyCoord (converted to ICRS), ``(ra_deg, dec_deg)`` (numbers or Quantities) or
        ``"hh:mm:ss +dd:mm:ss"``.

    Returns
    -------
    astropy.coordinates.SkyCoord
        The position (ICRS).

    Raises
    ------
    CatalogError
        Anything else.
    """
    if isinstance(center, SkyCoord):
        return center.icrs if center.frame.name != "icrs" else center
    if isinstance(center, str):
        return SkyCoord(center, unit=(u.hourangle, u.deg), frame="icrs")
    try:
        ra, dec = center
    except (TypeError, ValueError):
        raise CatalogError(f"centre must be a SkyCoord, 'hh:mm:ss +dd:mm:ss' or (ra_deg, dec_deg), got {center!r}") from None
    ra = ra.to_value(u.deg) if isinstance(ra, u.Quantity) else float(ra)
    dec = dec.to_value(u.deg) if isinstance(dec, u.Quantity) else float(dec)
    return SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")


def catalog_from_arrays(*, name: ArrayLike | None = None, ra: ArrayLike | None = None, dec: ArrayLike | None = None,
                        x_east: ArrayLike | None = None, y_north: ArrayLike | None = None, epoch: ArrayLike,
                        pmra: ArrayLike | None = None, pmdec: ArrayLike | None = None,
                        ra_err: ArrayLike | None = None, dec_err: ArrayLike | None = None,
                        pmra_err: ArrayLike | None = None, pmdec_err: ArrayLike | None = None,
                        mags: Mapping[str, ArrayLike] | None = None,
                        reference: Optional[Reference] = None, meta: Optional[Mapping] = None,
                        source: str = "<arrays>") -> Catalog:
    """Build a :class:`Catalog` from plain arrays in the canonical units.

    Positions: ``ra``/``dec`` (deg) or ``x_east``/``y_north`` (arcsec, with ``reference``);
    ``epoch`` (Julian year, scalar or per star); errors in mas and mas/yr; ``mags`` a
    mapping band -> array.

    Parameters
    ----------
    name : array_like of str, optional
        Star names (default ``row<i>``).
    ra, dec : array_like, optional
        Absolute ICRS positions (deg).
    x_east, y_north : array_like, optional
        Offsets from ``reference`` (arcsec).
    epoch : array_like
        Julian epoch of the positions (scalar or per star).
    pmra, pmdec : array_like, optional
        Proper motions east (includes cos dec) and north (mas/yr).
    ra_err, dec_err : array_like, optional
        Position errors east and north (mas).
    pmra_err, pmdec_err : array_like, optional
        Proper-motion errors (mas/yr).
    mags : mapping, optional
        Band -> magnitudes.
    reference : Reference, optional
        The reference of offsets.
    meta : mapping, optional
        The table's metadata.
    source : str, optional
        Names the catalogue in errors.

    Returns
    -------
    Catalog
        The checked catalogue.
    """
    n = len(np.atleast_1d(ra if ra is not None else x_east))
    t = Table()
    if name is not None:
        t["name"] = np.asarray(name).astype(str)
    for key, value, unit in (("ra", ra, u.deg), ("dec", dec, u.deg), ("x_east", x_east, u.arcsec),
                             ("y_north", y_north, u.arcsec), ("pmra", pmra, u.mas / u.yr),
                             ("pmdec", pmdec, u.mas / u.yr), ("ra_err", ra_err, u.mas),
                             ("dec_err", dec_err, u.mas), ("pmra_err", pmra_err, u.mas / u.yr),
                             ("pmdec_err", pmdec_err, u.mas / u.yr)):
        if value is not None:
            t[key] = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
            t[key].unit = unit
    t["epoch"] = np.broadcast_to(np.asarray(epoch, dtype=float), (n,)).copy()
    for band, values in (mags or {}).items():
        t[f"mag_{band}"] = np.broadcast_to(np.asarray(values, dtype=float), (n,)).copy()
    t.meta = dict(meta or {})
    if reference is not None:
        t.meta["reference"] = reference.to_meta()
    return Catalog(t, source)


# --------------------------------------------------------------------------- loading
_SHIPPED = {
    "galactic_center": "galactic_center.ecsv",
    "gaia_47tuc": "gaia_dr3_47tuc.ecsv",
}
_NAME_ALIASES = {"gc": "galactic_center", "galactic_centre": "galactic_center", "sgra": "galactic_center",
                 "47tuc": "gaia_47tuc", "gaia_dr3_47tuc": "gaia_47tuc", "47_tuc": "gaia_47tuc",
                 "ngc104": "gaia_47tuc"}


def list_catalogs() -> list[str]:
    """Names of the shipped catalogues (for :func:`get_catalog`).

    Returns
    -------
    list of str
        Sorted names.
    """
    return sorted(_SHIPPED)


def catalog_path(name: str) -> Path:
    """Path of a shipped catalogue file (package data).

    Parameters
    ----------
    name : str
        A shipped catalogue's name or alias (case-insensitive).

    Returns
    -------
    pathlib.Path
        The file.

    Raises
    ------
    CatalogKeyError
        An unknown name.
    """
    key = _NAME_ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _SHIPPED:
        raise CatalogKeyError(f"unknown catalogue {name!r}; shipped catalogues: {list_catalogs()}")
    return Path(str(resources.files("astrocal").joinpath("data", "catalogs", _SHIPPED[key])))


def get_catalog(name: str) -> Catalog:
    """Load a shipped catalogue.

    Parameters
    ----------
    name : str
        ``"galactic_center"`` (alias ``"gc"``) or ``"gaia_47tuc"``.

    Returns
    -------
    Catalog
        The catalogue.
    """
    return load_catalog(catalog_path(name))


def load_catalog(path_or_name: str | os.PathLike | Catalog) -> Catalog:
    """Load and check a catalogue file (ECSV, FITS, VOTable...) or a shipped catalogue by name.

    Parameters
    ----------
    path_or_name : str, os.PathLike or Catalog
        A file, a shipped catalogue's name, or a Catalog (returned as is).

    Returns
    -------
    Catalog
        The checked catalogue.

    Raises
    ------
    CatalogError
        No such file, unreadable, or a bad column (naming the file and the column).
    """
    if isinstance(path_or_name, Catalog):
        return path_or_name
    text = str(path_or_name)
    path = Path(text)
    if not path.exists():
        key = _NAME_ALIASES.get(text.strip().lower(), text.strip().lower())
        if key in _SHIPPED and os.sep not in text and not path.suffix:
            return get_catalog(key)
        raise CatalogError(f"{path}: catalogue file not found (shipped catalogues by name: {list_catalogs()})")
    if path.is_dir():
        raise CatalogError(f"{path}: is a directory, not a catalogue file")
    try:
        fmt = "ascii.ecsv" if path.suffix.lower() == ".ecsv" else None
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # noqa: BLE001 -- astropy raises many kinds
        raise CatalogError(f"{path}: cannot read the catalogue ({type(exc).__name__}: {exc})") from None
    return Catalog(table, str(path))
