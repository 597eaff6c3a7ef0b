"""Pinhole-mask tables: loading, checking, unit conversion and field selection.

A mask table is an ECSV file (astropy :class:`~astropy.table.Table`) with one row per
hole and the columns

============  ======  ==========================================================
column        unit    meaning
============  ======  ==========================================================
hole_id       --      integer identifier, unique within the mask
x_mm, y_mm    mm      nominal hole centre in the mask plane
diameter_um   um      nominal hole diameter
group         --      optional: sub-pattern the hole belongs to (e.g. ``fine``)
============  ======  ==========================================================

and metadata (``table.meta``):

``name``
    human-readable mask name (``"METIS WCU FP mask #5"``);
``short_name``
    the registry name used by :func:`get_mask` (``"metis_wcu_fp_mask5"``);
``mask_scale_mm_per_arcsec``
    plate scale at the mask plane, mm per arcsec on the sky (3.319 for the METIS WCU);
``orientation_marker``
    ``None`` or a mapping with ``x_mm``, ``y_mm`` (and ``x_arcsec``, ``y_arcsec``,
    ``description``): the nominal position of a hole deliberately left out of a
    regular sub-grid, so that the pattern is not symmetric;
``pitches``
    mapping of grid pitches (``<grid>_mm`` and ``<grid>_arcsec``);
``provenance``
    mapping: source repository, commit, file, licence, authors, conversion.

Axes: ``x_mm``/``y_mm`` are the mask coordinates as given by the source; at zero
rotation and no mirror the identification (:mod:`astrocal.lab.identify`) maps mask +x
to detector +x (numpy axis 1) and mask +y to detector +y (numpy axis 0).

The shipped tables live in the package (``astrocal/data/masks/``, identical copies in
the project's ``lab/`` folder); :func:`list_masks` names them and :func:`get_mask`
loads one by name.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import astropy.units as u
from astropy.table import Table
from numpy.typing import ArrayLike

from ..errors import AstrocalError

__all__ = [
    "Mask",
    "MaskError",
    "UnknownMaskError",
    "REQUIRED_COLUMNS",
    "load_mask",
    "get_mask",
    "list_masks",
    "mask_path",
    "mask_from_arrays",
    "read_irdb_mask",
    "check_mask_scale",
]

#: required columns and the physical type of their unit (``None``: dimensionless int)
REQUIRED_COLUMNS = {
    "hole_id": None,
    "x_mm": u.mm,
    "y_mm": u.mm,
    "diameter_um": u.um,
}

#: key in the table meta holding the plate scale at the mask (mm per arcsec)
MASK_SCALE_KEY = "mask_scale_mm_per_arcsec"
#: metadata key of the metrology of the mask's net scale and shears (1-sigma, ppm)
AFFINE_SIGMA_KEY = "affine_sigma_ppm"

#: two holes closer than this (mm) are considered duplicates (1 um)
DUPLICATE_POSITION_TOLERANCE_MM = 1e-3

_PACKAGE_MASK_DIR = ("astrocal", "data", "masks")


class MaskError(AstrocalError, ValueError):
    """A mask table is malformed; the message names the file and the column or key."""


class UnknownMaskError(MaskError, KeyError):
    """A mask name that is not one of the shipped masks (also a ``KeyError``)."""


@dataclass(frozen=True, eq=False)
class Mask:
    """A checked pinhole-mask table.

    Attributes
    ----------
    table : astropy.table.Table
        Columns ``hole_id`` (int), ``x_mm``, ``y_mm`` (float, mm), ``diameter_um``
        (float, um), optionally ``group``; rows in file order.
    name : str
        Human-readable name (``meta['name']``, else the file stem).
    mask_scale : astropy.units.Quantity or None
        Plate scale at the mask plane in mm/arcsec (``meta['mask_scale_mm_per_arcsec']``),
        ``None`` when the file does not give it.
    source : str
        Where the table came from (file path or ``"<arrays>"``), used in error messages.
    """

    table: Table
    name: str
    mask_scale: u.Quantity | None = None
    source: str = "<arrays>"
    meta: Mapping[str, Any] = field(default_factory=dict)
    position_unit: str = "mm"  # the unit the file declared for x_mm, y_mm (converted to mm)

    @property
    def affine_sigma_ppm(self) -> float | None:
        """The metrology of the mask's net scale and shears (1-sigma, ppm;
        ``meta['affine_sigma_ppm']``), or ``None`` when the table does not give it (the fit
        then derives it from the hole errors, :class:`astrocal.model.priors.Priors`)."""
        value = self.meta.get(AFFINE_SIGMA_KEY)
        return None if value is None else float(value)

    # ---- plain-array views (mm) -------------------------------------------------
    def __len__(self) -> int:
        return len(self.table)

    @property
    def hole_id(self) -> np.ndarray:
        """Hole identifiers (int64 array)."""
        return np.asarray(self.table["hole_id"], dtype=np.int64)

    @property
    def xy_mm(self) -> np.ndarray:
        """Hole centres, shape (N, 2), plain floats in mm."""
        return np.column_stack(
            [np.asarray(self.table["x_mm"], float), np.asarray(self.table["y_mm"], float)]
        )

    @property
    def diameter_um(self) -> np.ndarray:
        """Hole diameters, plain floats in micrometres."""
        return np.asarray(self.table["diameter_um"], dtype=float)

    @property
    def short_name(self) -> str:
        """Short name for labels (``meta['short_name']``, else :attr:`name`)."""
        return str(self.meta.get("short_name", self.name))

    @property
    def orientation_marker_mm(self) -> np.ndarray | None:
        """Nominal (x, y) in mm of the orientation marker (a deliberately missing
        hole), or ``None`` if the mask has none."""
        marker = self.meta.get("orientation_marker")
        if not marker:
            return None
        return np.array([float(marker["x_mm"]), float(marker["y_mm"])])

    # ---- unit conversion --------------------------------------------------------
    def _scale_mm_per_arcsec(self, mask_scale=None) -> float:
        scale = self.mask_scale if mask_scale is None else mask_scale
        if scale is None:
            raise MaskError(
                f"{self.source}: no plate scale at the mask: the table meta has no "
                f"'{MASK_SCALE_KEY}' and none was passed (mask_scale=... mm/arcsec)"
            )
        return as_mm_per_arcsec(scale, what=f"{self.source}: mask_scale")

    def xy_arcsec(self, mask_scale: u.Quantity | float | None = None) -> np.ndarray:
        """Hole centres projected on the sky.

        ``arcsec = mm / (mm per arcsec)``.

        Parameters
        ----------
        mask_scale : Quantity or float, optional
            Plate scale (mm/arcsec; a float in mm/arcsec); overrides the table's own.

        Returns
        -------
        np.ndarray
            Shape (N, 2), plain floats in arcsec.

        Raises
        ------
        MaskError
            When there is no plate scale, or it is not a positive mm/arcsec.
        """
        return self.xy_mm / self._scale_mm_per_arcsec(mask_scale)

    def positions_arcsec(self, mask_scale: u.Quantity | float | None = None) -> u.Quantity:
        """Like :meth:`xy_arcsec` but as a Quantity.

        Parameters
        ----------
        mask_scale : Quantity or float, optional
            Plate scale (mm/arcsec); overrides the table's own.

        Returns
        -------
        Quantity
            Hole centres, arcsec, shape (N, 2).
        """
        return self.xy_arcsec(mask_scale) * u.arcsec

    def marker_arcsec(self, mask_scale: u.Quantity | float | None = None) -> np.ndarray | None:
        """Orientation marker position on the sky.

        Parameters
        ----------
        mask_scale : Quantity or float, optional
            Plate scale (mm/arcsec); overrides the table's own.

        Returns
        -------
        np.ndarray or None
            (x, y) in arcsec (plain floats), or ``None`` when the mask has no marker.
        """
        marker = self.orientation_marker_mm
        if marker is None:
            return None
        return marker / self._scale_mm_per_arcsec(mask_scale)

    # ---- selections -------------------------------------------------------------
    def select(self, rows: ArrayLike | slice) -> Mask:
        """A new Mask with the given rows of this one.

        Parameters
        ----------
        rows : array_like or slice
            Boolean mask or indices of the holes (rows of :attr:`table`).

        Returns
        -------
        Mask
            The selected holes, with this mask's name, scale, source and meta.
        """
        return dataclasses.replace(self, table=self.table[rows])

    def in_field(self, fov: u.Quantity, center: u.Quantity | None = None,
                 mask_scale: u.Quantity | float | None = None) -> Mask:
        """Holes whose centre falls inside a rectangular field of view.

        The boundary is inclusive.

        Parameters
        ----------
        fov : Quantity
            Full width of the field, an angle (scalar for a square field, or
            ``[width_x, width_y]``); a length (mm) is taken in the mask plane.
        center : Quantity, optional
            Field centre in the same kind of unit, default (0, 0).  Use it for the
            chopper offset of the mask.
        mask_scale : Quantity, optional
            mm/arcsec, overrides the table's plate scale (needed for angular fields).

        Returns
        -------
        Mask
            A new mask holding the selected holes.
        """
        fov = u.Quantity(fov)
        width = np.broadcast_to(np.atleast_1d(fov.value), (2,)).astype(float)
        if fov.unit.physical_type == "angle":
            pos = self.xy_arcsec(mask_scale)
            width = width * fov.unit.to(u.arcsec)
            unit = u.arcsec
        elif fov.unit.physical_type == "length":
            pos = self.xy_mm
            width = width * fov.unit.to(u.mm)
            unit = u.mm
        else:
            raise MaskError(f"{self.source}: field of view must be an angle or a length, got {fov!r}")
        if center is None:
            c = np.zeros(2)
        else:
            c = np.broadcast_to(np.atleast_1d(u.Quantity(center).to_value(unit)), (2,)).astype(float)
        # a tiny relative slack so that holes exactly on the nominal boundary count
        half = 0.5 * width * (1 + 1e-9)
        inside = np.all(np.abs(pos - c) <= half, axis=1)
        return self.select(inside)

    # ---- output -----------------------------------------------------------------
    def write(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the mask as ECSV (the shipped format).

        Parameters
        ----------
        path : str or os.PathLike
            Output file.
        overwrite : bool
            Replace an existing file.
        """
        t = self.table.copy(copy_data=True)
        t.meta = dict(self.meta)
        t.write(path, format="ascii.ecsv", overwrite=overwrite)


# --------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------
def as_mm_per_arcsec(scale: u.Quantity | float, what: str = "mask_scale") -> float:
    """Plate scale as a plain float in mm/arcsec.

    Parameters
    ----------
    scale : Quantity or float
        A Quantity in length/angle, or a float in mm/arcsec.
    what : str
        What the value is, for the error message.

    Returns
    -------
    float
        The plate scale, mm/arcsec.

    Raises
    ------
    MaskError
        When it is not a length per angle, or a float that is not finite and positive.
    """
    if isinstance(scale, u.Quantity):
        try:
            return float(scale.to_value(u.mm / u.arcsec))
        except u.UnitConversionError as exc:
            raise MaskError(f"{what}: expected a plate scale in mm/arcsec, got {scale!r}") from exc
    value = float(scale)
    if not np.isfinite(value) or value <= 0:
        raise MaskError(f"{what}: plate scale must be positive, got {scale!r}")
    return value


def _check_table(t: Table, source: str) -> Table:
    """Check columns, units, values and uniqueness; return a normalised copy.

    Normalised: columns in mm / um (converted if given in another length unit),
    hole_id int64.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in t.colnames]
    if missing:
        raise MaskError(
            f"{source}: missing required column(s) {missing}; a mask table needs "
            f"{list(REQUIRED_COLUMNS)} (found {t.colnames})"
        )
    if len(t) == 0:
        raise MaskError(f"{source}: the mask table has no rows")
    out = t.copy(copy_data=True)

    ids = np.asarray(out["hole_id"])
    if ids.dtype.kind not in "iu":
        if ids.dtype.kind == "f" and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids)):
            ids = ids.astype(np.int64)
        else:
            raise MaskError(f"{source}: column 'hole_id' must hold integers, got dtype {ids.dtype}")
    out["hole_id"] = np.asarray(ids, dtype=np.int64)
    if out["hole_id"].unit not in (None, u.dimensionless_unscaled):
        raise MaskError(f"{source}: column 'hole_id' must have no unit, got {out['hole_id'].unit}")

    for name, unit in REQUIRED_COLUMNS.items():
        if unit is None:
            continue
        col = out[name]
        if col.unit is None:
            raise MaskError(f"{source}: column '{name}' has no unit; expected {unit} (or another length)")
        try:
            factor = u.Unit(col.unit).to(unit)
        except u.UnitConversionError as exc:
            raise MaskError(f"{source}: column '{name}' has unit {col.unit}, expected a length ({unit})") from exc
        if col.dtype.kind not in "iuf":
            raise MaskError(f"{source}: column '{name}' must hold numbers, got dtype {col.dtype}")
        values = np.asarray(col, dtype=float) * factor
        bad = ~np.isfinite(values)
        if np.any(bad):
            raise MaskError(
                f"{source}: column '{name}' has non-finite values for hole_id "
                f"{out['hole_id'][bad].tolist()}"
            )
        out[name] = values
        out[name].unit = unit
    if np.any(out["diameter_um"] <= 0):
        bad = out["hole_id"][out["diameter_um"] <= 0].tolist()
        raise MaskError(f"{source}: column 'diameter_um' must be positive (hole_id {bad})")

    uniq, counts = np.unique(out["hole_id"], return_counts=True)
    dup = uniq[counts > 1]
    if dup.size:
        raise MaskError(f"{source}: column 'hole_id' has duplicate ids {dup.tolist()}")

    xy = np.column_stack([out["x_mm"], out["y_mm"]])
    if len(xy) > 1:
        from scipy.spatial import cKDTree

        pairs = cKDTree(xy).query_pairs(DUPLICATE_POSITION_TOLERANCE_MM, output_type="ndarray")
        if len(pairs):
            ids = [(int(out["hole_id"][i]), int(out["hole_id"][j])) for i, j in pairs[:10]]
            declared = u.Unit(t["x_mm"].unit)
            hint = ""
            if declared != u.mm and len(pairs) > 0.1 * len(xy):  # many: the unit, not two holes
                hint = (f"; the columns are declared in {declared} (so divided by "
                        f"{1 / declared.to(u.mm):g} to give mm): are the numbers in mm? Then declare "
                        "unit mm")
            raise MaskError(
                f"{source}: columns 'x_mm','y_mm': holes at the same position "
                f"(within {DUPLICATE_POSITION_TOLERANCE_MM * 1e3:g} um), hole_id pairs {ids}{hint}"
            )
    return out


def _mask_from_table(t: Table, source: str) -> Mask:
    meta = dict(t.meta)
    table = _check_table(t, source)
    table.meta = {}
    scale = meta.get(MASK_SCALE_KEY)
    mask_scale = None
    if scale is not None:
        mask_scale = as_mm_per_arcsec(scale, what=f"{source}: meta '{MASK_SCALE_KEY}'") * u.mm / u.arcsec
    marker = meta.get("orientation_marker")
    if marker:
        for key in ("x_mm", "y_mm"):
            if key not in marker:
                raise MaskError(f"{source}: meta 'orientation_marker' lacks key '{key}'")
        mxy = np.array([float(marker["x_mm"]), float(marker["y_mm"])])
        d = np.hypot(table["x_mm"] - mxy[0], table["y_mm"] - mxy[1])
        if np.any(d < DUPLICATE_POSITION_TOLERANCE_MM):
            raise MaskError(
                f"{source}: meta 'orientation_marker' is at the position of hole_id "
                f"{int(table['hole_id'][np.argmin(d)])}; the marker must be a missing hole"
            )
    if meta.get(AFFINE_SIGMA_KEY) is not None:
        value = meta[AFFINE_SIGMA_KEY]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise MaskError(f"{source}: meta '{AFFINE_SIGMA_KEY}' must be a number >= 0 (ppm), got {value!r}")
    name = str(meta.get("name") or Path(source).stem)
    unit = str(t["x_mm"].unit) if getattr(t["x_mm"], "unit", None) is not None else "mm"
    return Mask(table=table, name=name, mask_scale=mask_scale, source=source, meta=meta,
                position_unit=unit)


# --------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------
#: the measured hole spacings may differ from the mask's (at the nominal scales) by this
#: factor before the mask's positions are refused as in another unit (the distortion and
#: the nominal pixel scale's error are a few per cent)
MASK_SCALE_TOLERANCE = 1.5
_LENGTH_UNITS = (("nm", u.nm), ("um", u.um), ("mm", u.mm), ("cm", u.cm), ("m", u.m))


def check_mask_scale(mask: Mask, mask_scale: float, pixel_scale_mas: float, tables: Iterable[Table],
                     source: str | None = None) -> float:
    """Refuse a mask whose positions are in another unit than declared (cm or um written as
    mm, mm declared as um...), from the identified spots of measured source tables.

    For every table, the distances between pairs of identified holes in pixels are
    compared with the mask's distances (mm) at ``mask_scale`` and ``pixel_scale_mas``;
    their median ratio should be ~1 (the distortion and the nominal scales' errors:
    :data:`MASK_SCALE_TOLERANCE`).

    Parameters
    ----------
    mask : Mask
        The mask table.
    mask_scale : float
        Plate scale at the mask, mm/arcsec.
    pixel_scale_mas : float
        Nominal pixel scale, mas/px.
    tables : iterable of Table
        Measured source tables (``hole_id``, ``x``, ``y`` in pixels).
    source : str, optional
        The name to give in the error (default the mask's source).

    Returns
    -------
    float
        The median ratio (NaN when no table has 3 identified holes).

    Raises
    ------
    MaskError
        When the ratio is outside the tolerance (e.g. near a power of ten): names the
        file, the factor and the likely unit of the numbers.
    """
    px_per_mm = 1e3 / (float(pixel_scale_mas) * float(mask_scale))
    index = {int(h): k for k, h in enumerate(mask.hole_id)}
    ratios = []
    for t in tables:
        hid = np.asarray(t["hole_id"], np.int64)
        x, y = np.asarray(t["x"], float), np.asarray(t["y"], float)
        ok = (hid >= 0) & np.isfinite(x) & np.isfinite(y) & np.isin(hid, mask.hole_id)
        if ok.sum() < 3:
            continue
        k = np.array([index[int(h)] for h in hid[ok]])[:200]
        p = np.column_stack([x[ok], y[ok]])[:200]
        m = mask.xy_mm[k] * px_per_mm
        i, j = np.triu_indices(len(k), 1)
        dm = np.hypot(*(m[i] - m[j]).T)
        use = dm > 0
        ratios.append(np.median(np.hypot(*(p[i] - p[j]).T)[use] / dm[use]))
    if not ratios:
        return float("nan")
    ratio = float(np.median(ratios))
    if 1 / MASK_SCALE_TOLERANCE <= ratio <= MASK_SCALE_TOLERANCE:
        return ratio
    declared = u.Unit(mask.position_unit)
    likely = [name for name, unit in _LENGTH_UNITS
              if abs(math.log10(unit.to(u.mm) / (declared.to(u.mm) * ratio))) < math.log10(MASK_SCALE_TOLERANCE)]
    guess = (f": the numbers look like {likely[0]}, not {declared} (declare the columns' unit "
             f"{likely[0]}, or convert them)") if likely else ""
    raise MaskError(
        f"{source or mask.source}: the holes' spacings on the detector are {ratio:.3g} x those of the mask "
        f"table's x_mm, y_mm (declared in {declared}) at mask_scale_mm_per_arcsec = {mask_scale:g} and "
        f"pixel_scale_mas = {pixel_scale_mas:g}{guess}")

def load_mask(path: str | os.PathLike) -> Mask:
    """Read and check a mask table (ECSV).

    Parameters
    ----------
    path : str or os.PathLike
        The ECSV file.

    Returns
    -------
    Mask
        The checked mask (positions converted to mm).

    Raises
    ------
    MaskError
        (a ``ValueError``) naming the file and the offending column, key or hole ids
        when a required column is missing, a unit is missing or not a length,
        ``hole_id`` is not integer or not unique, two holes share a position, or values
        are not finite.
    FileNotFoundError
        If the file is absent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask table not found: {path}")
    try:
        t = Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # astropy raises several kinds for malformed ECSV
        raise MaskError(f"{path}: cannot read as an ECSV table: {exc}") from exc
    return _mask_from_table(t, str(path))


def mask_from_arrays(x_mm: ArrayLike, y_mm: ArrayLike, diameter_um: ArrayLike = 25.0, *,
                     hole_id: ArrayLike | None = None, name: str = "mask",
                     mask_scale: u.Quantity | float | None = None, meta: Mapping | None = None) -> Mask:
    """Build a checked :class:`Mask` from plain arrays (mm, um).

    Parameters
    ----------
    x_mm, y_mm : array_like
        Hole centres in the mask plane, mm.
    diameter_um : array_like
        Hole diameters (um; a scalar for all).
    hole_id : array_like, optional
        Hole identifiers (default 1, 2, ...).
    name : str
        The mask's name.
    mask_scale : Quantity or float, optional
        Plate scale, a Quantity (mm/arcsec) or float in mm/arcsec.
    meta : Mapping, optional
        Extra metadata (e.g. ``orientation_marker``).

    Returns
    -------
    Mask
        The checked mask.

    Raises
    ------
    MaskError
        When the arrays do not make a valid mask (shapes, unique ids, finite values).
    """
    x = np.atleast_1d(np.asarray(x_mm, dtype=float))
    y = np.atleast_1d(np.asarray(y_mm, dtype=float))
    if x.shape != y.shape:
        raise MaskError(f"{name}: x_mm and y_mm have different shapes {x.shape} and {y.shape}")
    d = np.broadcast_to(np.asarray(diameter_um, dtype=float), x.shape)
    ids = np.arange(1, x.size + 1) if hole_id is None else np.asarray(hole_id)
    t = Table()
    t["hole_id"] = ids
    t["x_mm"] = x * u.mm
    t["y_mm"] = y * u.mm
    t["diameter_um"] = np.array(d) * u.um
    t.meta = dict(meta or {})
    t.meta.setdefault("name", name)
    if mask_scale is not None:
        t.meta[MASK_SCALE_KEY] = as_mm_per_arcsec(mask_scale, what=f"{name}: mask_scale")
    return _mask_from_table(t, f"<{name}>")


def read_irdb_mask(path: str | os.PathLike, mask_scale: u.Quantity | float = 3.319, *, start_id: int = 1,
                   name: str | None = None) -> Mask:
    """Convert a ScopeSim/IRDB focal-plane mask file (``x y diam`` in arcsec) to a Mask.

    The IRDB WCU mask files (e.g. ``METIS/wcu/fp_mask_grid_lm.dat``) list the holes
    projected on the sky in arcsec; the mask-plane positions are
    ``mm = arcsec * mask_scale`` (mm/arcsec, 3.319 for the METIS WCU).  Holes are
    numbered ``start_id, start_id + 1, ...`` in file order (blank lines skipped).  The
    ``# key : value`` header lines are kept in ``meta['irdb_header']``.  Positions are
    rounded to 1 nm and diameters to 1 nm to remove floating-point noise.

    This is a conversion helper for updating the shipped tables; astrocal itself reads
    only ECSV mask tables at run time.

    Parameters
    ----------
    path : str or os.PathLike
        The IRDB mask file.
    mask_scale : Quantity or float
        Plate scale at the mask, mm/arcsec.
    start_id : int
        Identifier of the first hole.
    name : str, optional
        The mask's name (default the header's ``name``, else the file stem).

    Returns
    -------
    Mask
        The mask, positions in mm.

    Raises
    ------
    MaskError
        Naming the file (and line) when a row, the column header or a unit is not as
        expected.
    """
    path = Path(path)
    scale = as_mm_per_arcsec(mask_scale, what=f"{path}: mask_scale")
    header: dict[str, str] = {}
    rows = []
    colnames = None
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            s = line.strip()
            if not s:
                continue
            if s.startswith("#"):
                body = s.lstrip("#").strip()
                if ":" in body and not body.startswith("-"):
                    k, v = body.split(":", 1)
                    header[k.strip()] = v.strip()
                continue
            parts = s.split()
            if colnames is None:
                colnames = parts
                continue
            try:
                rows.append([float(p) for p in parts[:3]])
            except ValueError as exc:
                raise MaskError(f"{path}:{lineno}: cannot parse hole row {s!r}") from exc
    if colnames is None or [c.lower() for c in colnames[:3]] != ["x", "y", "diam"]:
        raise MaskError(f"{path}: expected the column header 'x y diam', got {colnames}")
    for key in ("x_unit", "y_unit", "diam_unit"):
        if header.get(key, "arcsec") != "arcsec":
            raise MaskError(f"{path}: header key '{key}' is {header[key]!r}, expected 'arcsec'")
    a = np.array(rows, dtype=float)
    x_mm = np.round(a[:, 0] * scale, 6)
    y_mm = np.round(a[:, 1] * scale, 6)
    d_um = np.round(a[:, 2] * scale * 1e3, 3)
    ids = np.arange(start_id, start_id + len(a))
    meta = {"irdb_header": header}
    return mask_from_arrays(x_mm, y_mm, d_um, hole_id=ids, name=name or header.get("name", path.stem),
                            mask_scale=scale, meta=meta)


def _mask_dir():
    return resources.files("astrocal").joinpath("data", "masks")


def list_masks() -> list[str]:
    """Names of the mask tables shipped with astrocal.

    Returns
    -------
    list of str
        File stems, sorted.
    """
    d = _mask_dir()
    try:
        entries = list(d.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name[: -len(".ecsv")] for e in entries if e.name.endswith(".ecsv"))


def mask_path(name: str) -> Path:
    """Path of a shipped mask table by name.

    Parameters
    ----------
    name : str
        A name of :func:`list_masks` (with or without ``.ecsv``).

    Returns
    -------
    Path
        The table's path.

    Raises
    ------
    UnknownMaskError
        When no shipped mask has that name (the message lists them).
    """
    names = list_masks()
    key = name[:-5] if name.endswith(".ecsv") else name
    if key not in names:
        raise UnknownMaskError(f"unknown mask {name!r}; shipped masks: {names}")
    return Path(str(_mask_dir().joinpath(key + ".ecsv")))


def get_mask(name: str) -> Mask:
    """Load a shipped mask table by name, e.g. ``get_mask("metis_wcu_fp_mask5")``.

    Parameters
    ----------
    name : str
        A name of :func:`list_masks`.

    Returns
    -------
    Mask
        The checked mask.
    """
    return load_mask(mask_path(name))
