"""The identified points that enter the joint model, as plain arrays.

:class:`Points` holds every identified point of every exposure: its measured pixel
position (0-based) and 2x2 centroid covariance (pixel**2), the exposure and the *source*
it belongs to -- a pinhole of a lab mask or a star of a reference catalogue -- and per
exposure the commanded mask offset (arcsec) with its 1-sigma accuracy (sky exposures:
zero offset, the pointing accuracy as its sigma). Holes carry their nominal mask-plane
positions converted to arcsec with the mask plate scale; the mask frame is the
focal-plane frame of the model. Sky points carry their star's apparent position in the
instrument frame for that exposure (``ref_xy``), its telescope-frame position (``uv``)
and the Jacobian of the catalogue's standard coordinates into the instrument frame.

:func:`lab_points_from_tables` builds the lab part from measured source tables (one per
exposure, columns ``hole_id, x, y, sigma_x, sigma_y, cov_xy``) and a mask;
:func:`sky_points_from_tables` the sky part from measured sky tables (column ``star``)
and the stars' apparent positions; :func:`join_points` joins the two.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field as dc_field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ..errors import AstrocalError
from ..sources import FLAG_BLEND, FLAGS_REJECT

if TYPE_CHECKING:
    from astropy.table import Table

    from ..sky.astrometry import FocalPlanePositions


#: flag bits that make a measured position unusable when a table does not state its own
#: (``meta["reject_flags"]``): :data:`astrocal.sources.FLAGS_REJECT` (not converged,
#: diverged, bad fit, saturated, unidentified, low coverage)
DEFAULT_REJECT_FLAGS = FLAGS_REJECT

#: sky tables also reject blends (:data:`astrocal.sources.FLAG_BLEND`) unless their
#: metadata states the rejecting bits (``reject_flags``)
SKY_BLEND_FLAG = FLAG_BLEND


class DataError(AstrocalError, ValueError):
    """The points cannot enter the model (NaN, non-positive errors, empty datasets...)."""


@dataclass(frozen=True, eq=False)
class Points:
    """Identified points (pinhole spots and stars) of one or more datasets.

    Arrays of length ``N`` (points): ``x``, ``y`` (pixels, 0-based), ``cov`` (N, 2, 2)
    pixel**2, ``exposure`` (index into the exposures), ``hole`` (index into the holes).
    Arrays of length ``E`` (exposures): ``offsets`` (E, 2) commanded mask offsets in
    arcsec, ``offset_sigma`` (E,) their 1-sigma accuracy in arcsec, ``exposure_dataset``
    (E,) dataset index, ``exposure_names``.
    Arrays of length ``H`` (holes): ``hole_ids``, ``hole_xy`` (H, 2) nominal positions in
    arcsec (mask millimetres divided by the mask plate scale).
    ``domain`` is the detector domain (0-based pixel edges); ``pixel_scale`` the nominal
    scale in arcsec/pixel (a prior only); ``mask_scale`` mm per arcsec.

    Sources ("holes" in the names) may be stars: ``source_kind`` (H,) is 0 for a hole and
    1 for a star, ``source_cov`` (H, 2, 2) the prior covariance of a star's catalogue
    position error (true minus catalogue, standard coordinates xi east / eta north,
    arcsec**2; unused for holes). Per point, ``ref_xy`` (N, 2) is the source's nominal
    position in the focal plane (arcsec; default the hole's ``hole_xy``), ``uv`` (N, 2) the
    telescope-frame position (arcsec; NaN for lab points) and ``source_jacobian``
    (N, 2, 2) the derivative of the focal-plane position with respect to the source's
    error (identity for holes). Per exposure, ``exposure_kind`` (E,) is 0 (lab) or 1
    (sky) and ``exposure_zenith_deg``, ``exposure_rotator_deg``, ``exposure_parity`` the
    zenith distance, rotator angle and frame parity of sky exposures (see
    :mod:`astrocal.sky.astrometry`). ``dataset_kinds`` names each dataset's kind.
    """

    x: np.ndarray
    y: np.ndarray
    cov: np.ndarray
    exposure: np.ndarray
    hole: np.ndarray
    offsets: np.ndarray
    offset_sigma: np.ndarray
    exposure_dataset: np.ndarray
    hole_ids: np.ndarray
    hole_xy: np.ndarray
    domain: tuple
    pixel_scale: float
    mask_scale: float
    dataset_names: tuple = ("lab",)
    exposure_names: tuple = ()
    point_ids: np.ndarray = None
    meta: dict = dc_field(default_factory=dict)
    ref_xy: np.ndarray = None
    uv: np.ndarray = None
    source_jacobian: np.ndarray = None
    source_kind: np.ndarray = None
    source_cov: np.ndarray = None
    exposure_kind: np.ndarray = None
    exposure_zenith_deg: np.ndarray = None
    exposure_rotator_deg: np.ndarray = None
    exposure_parity: np.ndarray = None
    dataset_kinds: tuple = ()

    def __post_init__(self):
        n = len(self.x)
        h, e = len(self.hole_ids), len(self.offsets)
        defaults = {
            "ref_xy": lambda: np.asarray(self.hole_xy, float)[np.asarray(self.hole, int)].reshape(n, 2),
            "uv": lambda: np.full((n, 2), np.nan),
            "source_jacobian": lambda: np.broadcast_to(np.eye(2), (n, 2, 2)).copy(),
            "source_kind": lambda: np.zeros(h, int),
            "source_cov": lambda: np.zeros((h, 2, 2)),
            "exposure_kind": lambda: np.zeros(e, int),
            "exposure_zenith_deg": lambda: np.full(e, np.nan),
            "exposure_rotator_deg": lambda: np.full(e, np.nan),
            "exposure_parity": lambda: np.ones(e),
        }
        for name, make in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, make())
        if not self.dataset_kinds:
            object.__setattr__(self, "dataset_kinds", tuple("lab" for _ in self.dataset_names))
        for name, shape in (("ref_xy", (n, 2)), ("uv", (n, 2)), ("source_jacobian", (n, 2, 2)),
                            ("source_kind", (h,)), ("source_cov", (h, 2, 2)), ("exposure_kind", (e,)),
                            ("exposure_zenith_deg", (e,)), ("exposure_rotator_deg", (e,)),
                            ("exposure_parity", (e,))):
            if np.shape(getattr(self, name)) != shape:
                raise DataError(f"points: {name} must have shape {shape}, got {np.shape(getattr(self, name))}")
        if len(self.dataset_kinds) != len(self.dataset_names):
            raise DataError("points: dataset_kinds must have one entry per dataset")
        stars = np.asarray(self.source_kind) == 1
        if stars.any():
            c = self.source_cov[stars]
            det = c[:, 0, 0] * c[:, 1, 1] - c[:, 0, 1] * c[:, 1, 0]
            if not (np.isfinite(c).all() and np.all(c[:, 0, 0] > 0) and np.all(det > 0)):
                raise DataError("points: every star needs a positive-definite catalogue covariance")
        for name in ("y", "exposure", "hole"):
            if len(getattr(self, name)) != n:
                raise DataError(f"points: {name} has {len(getattr(self, name))} entries, x has {n}")
        if self.cov.shape != (n, 2, 2):
            raise DataError(f"points: cov must have shape ({n}, 2, 2), got {self.cov.shape}")
        if not (np.isfinite(self.x).all() and np.isfinite(self.y).all()):
            bad = np.flatnonzero(~(np.isfinite(self.x) & np.isfinite(self.y)))
            raise DataError(f"points: {bad.size} position(s) are NaN or infinite (first: point {bad[0]})")
        var = np.stack([self.cov[:, 0, 0], self.cov[:, 1, 1]], axis=1)
        det = self.cov[:, 0, 0] * self.cov[:, 1, 1] - self.cov[:, 0, 1] * self.cov[:, 1, 0]
        bad = ~np.isfinite(self.cov).all(axis=(1, 2)) | (var <= 0).any(axis=1) | (det <= 0)
        if bad.any():
            raise DataError(
                f"points: {int(bad.sum())} point(s) have zero, negative or NaN uncertainties "
                f"(first: point {int(np.flatnonzero(bad)[0])}); the centroid covariance must be "
                "positive definite"
            )
        e = len(self.offsets)
        if self.offset_sigma.shape != (e,) or self.exposure_dataset.shape != (e,):
            raise DataError("points: offsets, offset_sigma and exposure_dataset must have one entry per exposure")
        if np.any(self.offset_sigma <= 0):
            raise DataError("points: offset uncertainties must be positive")
        if n and (self.exposure.min() < 0 or self.exposure.max() >= e):
            raise DataError("points: exposure index out of range")
        if n and (self.hole.min() < 0 or self.hole.max() >= len(self.hole_ids)):
            raise DataError("points: hole index out of range")
        if self.point_ids is None:
            object.__setattr__(self, "point_ids", np.arange(n))
        if not self.exposure_names:
            object.__setattr__(self, "exposure_names", tuple(f"exp{k}" for k in range(e)))

    @property
    def n_points(self) -> int:
        """The number of points."""
        return len(self.x)

    @property
    def n_exposures(self) -> int:
        """The number of exposures."""
        return len(self.offsets)

    @property
    def n_holes(self) -> int:
        """The number of sources (holes and stars)."""
        return len(self.hole_ids)

    @property
    def n_datasets(self) -> int:
        """The number of datasets."""
        return len(self.dataset_names)

    @property
    def dataset(self) -> np.ndarray:
        """Dataset index of every point."""
        return self.exposure_dataset[self.exposure]

    @property
    def is_sky(self) -> np.ndarray:
        """Boolean per point: the point is a star of a sky exposure."""
        return self.exposure_kind[self.exposure] == 1

    @property
    def n_lab_exposures(self) -> int:
        """The number of lab exposures."""
        return int(np.sum(self.exposure_kind == 0))

    @property
    def n_sky_exposures(self) -> int:
        """The number of sky exposures."""
        return int(np.sum(self.exposure_kind == 1))

    def take(self, index: ArrayLike) -> Points:
        """The points at integer positions ``index`` (in that order).

        Parameters
        ----------
        index : array_like
            Integer positions.

        Returns
        -------
        Points
            The same exposures and sources, those points.
        """
        index = np.asarray(index, int)
        return Points(self.x[index], self.y[index], self.cov[index], self.exposure[index],
                         self.hole[index], self.offsets, self.offset_sigma, self.exposure_dataset,
                         self.hole_ids, self.hole_xy, self.domain, self.pixel_scale,
                         self.mask_scale, self.dataset_names, self.exposure_names,
                         self.point_ids[index], dict(self.meta), self.ref_xy[index], self.uv[index],
                         self.source_jacobian[index], self.source_kind, self.source_cov,
                         self.exposure_kind, self.exposure_zenith_deg, self.exposure_rotator_deg,
                         self.exposure_parity, self.dataset_kinds)

    def subset(self, keep: ArrayLike) -> Points:
        """The points selected by a boolean mask (exposures and holes kept).

        Parameters
        ----------
        keep : array_like
            Bool over the points.

        Returns
        -------
        Points
            The points kept.
        """
        return self.take(np.flatnonzero(np.asarray(keep, bool)))


def lab_points_from_tables(tables: Sequence[Table | dict], mask_xy_mm: ArrayLike, mask_hole_ids: ArrayLike,
                           mask_scale: float, domain: Sequence[float], pixel_scale: float,
                           offsets_arcsec: ArrayLike, offset_sigma_arcsec: ArrayLike,
                           exposure_dataset: ArrayLike | None = None, dataset_names: Sequence[str] = ("lab",),
                           exposure_names: Sequence[str] | None = None) -> Points:
    """Assemble :class:`Points` from one source table per exposure.

    Rows with ``hole_id < 0`` (unidentified) or with a flag bit of the table's
    ``reject_flags`` metadata (default: the measure stage's ``FLAGS_REJECT``: fit failed,
    saturated, unidentified, low coverage) are left out. Holes never seen in any exposure
    are dropped.

    Parameters
    ----------
    tables : sequence of Table or dict
        astropy Tables (or dicts of arrays) with columns ``hole_id``, ``x``, ``y``,
        ``sigma_x``, ``sigma_y`` and optionally ``cov_xy`` and ``flags`` (pixels, 0-based).
    mask_xy_mm : array_like
        The mask's nominal hole positions (H, 2), mm.
    mask_hole_ids : array_like
        Their ids (H,).
    mask_scale : float
        The mask's scale, mm per arcsec.
    domain : sequence of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.
    pixel_scale : float
        The nominal pixel scale, arcsec per pixel.
    offsets_arcsec : array_like
        The commanded offset of each exposure (E, 2), arcsec.
    offset_sigma_arcsec : array_like
        Their accuracy (E,), arcsec.
    exposure_dataset : array_like, optional
        The dataset index of each exposure (default: all in dataset 0).
    dataset_names : sequence of str
        The datasets' names.
    exposure_names : sequence of str, optional
        The exposures' names (default: ``exp0``, ``exp1``...).

    Returns
    -------
    Points
        The lab points.

    Raises
    ------
    DataError
        A table without ``hole_id``, ids not in the mask, or no exposures.
    """
    mask_hole_ids = np.asarray(mask_hole_ids)
    index = {int(h): k for k, h in enumerate(mask_hole_ids)}
    xs, ys, covs, exps, holes, pids = [], [], [], [], [], []
    for e, t in enumerate(tables):
        name = exposure_names[e] if exposure_names else f"exposure {e}"
        columns = set(t.colnames if hasattr(t, "colnames") else t)
        if "hole_id" not in columns:  # the others: _table_cov
            raise DataError(f"{name}: source table has no column hole_id")
        hid = np.asarray(t["hole_id"], dtype=int)
        keep = hid >= 0
        if "flags" in columns:
            reject = t.meta.get("reject_flags", DEFAULT_REJECT_FLAGS) if hasattr(t, "meta") else DEFAULT_REJECT_FLAGS
            keep &= (np.asarray(t["flags"], dtype=int) & int(reject)) == 0
        unknown = [int(h) for h in hid[keep] if int(h) not in index]
        if unknown:
            raise DataError(f"{name}: hole_id(s) {unknown[:5]} are not in the mask")
        x, y, cov = _table_cov(t, keep, name, domain)
        xs.append(x)
        ys.append(y)
        covs.append(cov)
        exps.append(np.full(x.size, e))
        holes.append(np.array([index[int(h)] for h in hid[keep]], dtype=int))
        pids.append(np.flatnonzero(keep) + 1_000_000 * e)
    if not tables:
        raise DataError("no exposures given")
    hole = np.concatenate(holes)
    used = np.unique(hole)
    remap = -np.ones(len(mask_hole_ids), int)
    remap[used] = np.arange(used.size)
    xy_mm = np.asarray(mask_xy_mm, float)[used]
    n_exp = len(tables)
    if exposure_dataset is None:
        exposure_dataset = np.zeros(n_exp, int)
    return Points(
        x=np.concatenate(xs), y=np.concatenate(ys), cov=np.concatenate(covs),
        exposure=np.concatenate(exps), hole=remap[hole],
        offsets=np.asarray(offsets_arcsec, float).reshape(n_exp, 2),
        offset_sigma=np.asarray(offset_sigma_arcsec, float).reshape(n_exp),
        exposure_dataset=np.asarray(exposure_dataset, int),
        hole_ids=mask_hole_ids[used], hole_xy=xy_mm / float(mask_scale),
        domain=tuple(domain), pixel_scale=float(pixel_scale), mask_scale=float(mask_scale),
        dataset_names=tuple(dataset_names),
        exposure_names=tuple(exposure_names) if exposure_names else (),
        point_ids=np.concatenate(pids),
    )


#: how far beyond the detector's edge (pixels) a measured position may lie
EDGE_MARGIN_PX = 10.0


def _table_cov(t, keep, name, domain):
    """Positions and covariances of the kept rows of a source table, validated as the measure
    stage writes them: finite positions on the detector (``domain`` grown by
    :data:`EDGE_MARGIN_PX`), finite positive sigmas, a positive-definite covariance. Errors
    name the table and its first bad row (0-based)."""
    columns = set(t.colnames if hasattr(t, "colnames") else t)
    for col in ("x", "y", "sigma_x", "sigma_y"):
        if col not in columns:
            raise DataError(f"{name}: source table has no column {col}")
    rows = np.flatnonzero(keep)
    x, y = np.asarray(t["x"], float)[keep], np.asarray(t["y"], float)[keep]
    sx = np.asarray(t["sigma_x"], float)[keep]
    sy = np.asarray(t["sigma_y"], float)[keep]
    cxy = np.asarray(t["cov_xy"], float)[keep] if "cov_xy" in columns else np.zeros_like(sx)
    for label, value, bad in (("sigma_x", sx, ~(np.isfinite(sx) & (sx > 0))),
                              ("sigma_y", sy, ~(np.isfinite(sy) & (sy > 0))),
                              ("cov_xy", cxy, ~np.isfinite(cxy) | (cxy**2 >= sx**2 * sy**2))):
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(f"{name}: row {rows[k]}: {label} = {value[k]:.6g} ({int(bad.sum())} such row(s)); "
                            "sigmas must be finite and positive and the covariance positive definite")
    xmin, xmax, ymin, ymax = domain
    m = EDGE_MARGIN_PX
    bad = ~(np.isfinite(x) & np.isfinite(y)) | (x < xmin - m) | (x > xmax + m) | (y < ymin - m) | (y > ymax + m)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}: row {rows[k]}: position ({x[k]:.6g}, {y[k]:.6g}) px is not on the detector "
                        f"{tuple(float(v) for v in domain)} ({int(bad.sum())} such "
                        f"row(s); {EDGE_MARGIN_PX:g} px of margin): a table of another detector, or 1-based "
                        "pixels?")
    cov = np.empty((sx.size, 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = sx**2, sy**2
    cov[:, 0, 1] = cov[:, 1, 0] = cxy
    return x, y, cov


def sky_points_from_tables(tables: Sequence[Table | dict], positions: Sequence[FocalPlanePositions],
                           domain: Sequence[float], pixel_scale: float, pointing_sigma_arcsec: float = 2.0,
                           exposure_dataset: ArrayLike | None = None, dataset_names: Sequence[str] = ("sky",),
                           exposure_names: Sequence[str] | None = None) -> Points:
    """Assemble the sky points of one or more sky datasets.

    Rows with an empty ``star`` or a rejecting flag are left out. A star's catalogue
    covariance is taken back to standard coordinates (``J^-1 C J^-T``) from its first
    exposure. Sky exposures get a zero commanded offset with ``pointing_sigma_arcsec`` as its
    accuracy (the pose translation's prior).

    Parameters
    ----------
    tables : sequence of Table or dict
        One measured sky table per exposure (columns ``star``, ``x``, ``y``, ``sigma_x``,
        ``sigma_y``, optionally ``cov_xy`` and ``flags``; pixels, 0-based).
    positions : sequence of FocalPlanePositions
        The matching :class:`astrocal.sky.astrometry.FocalPlanePositions` of the catalogue
        for each exposure (apparent instrument-frame and telescope-frame positions, arcsec).
    domain : sequence of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.
    pixel_scale : float
        The nominal pixel scale, arcsec per pixel.
    pointing_sigma_arcsec : float
        The pointing accuracy, arcsec.
    exposure_dataset : array_like, optional
        The dataset index of each exposure (default: all in dataset 0).
    dataset_names : sequence of str
        The datasets' names.
    exposure_names : sequence of str, optional
        The exposures' names.

    Returns
    -------
    Points
        The sky points.

    Raises
    ------
    DataError
        Tables and positions that do not match, a table without ``star``, or stars not in
        the catalogue positions.
    """
    if len(tables) != len(positions):
        raise DataError(f"{len(tables)} sky tables but {len(positions)} sets of catalogue positions")
    if not tables:
        raise DataError("no sky exposures given")
    star_index, star_cov = {}, []
    xs, ys, covs, exps, srcs, refs, uvs, jacs, pids = [], [], [], [], [], [], [], [], []
    zen, rot, par = [], [], []
    for e, (t, fp) in enumerate(zip(tables, positions)):
        name = exposure_names[e] if exposure_names else f"sky exposure {e}"
        columns = set(t.colnames if hasattr(t, "colnames") else t)
        if "star" not in columns:
            raise DataError(f"{name}: sky table has no column star (the matched catalogue name)")
        col = t["star"]
        if hasattr(col, "filled"):  # ECSV reads empty strings back as masked entries
            col = col.filled("")
        stars = np.array([str(v).strip() for v in np.asarray(col)], dtype=object)
        keep = stars != ""
        if "flags" in columns:
            default = DEFAULT_REJECT_FLAGS | SKY_BLEND_FLAG
            reject = t.meta.get("reject_flags", default) if hasattr(t, "meta") else default
            keep &= (np.asarray(t["flags"], dtype=int) & int(reject)) == 0
        where = {str(n): k for k, n in enumerate(fp.names)}
        unknown = [s for s in stars[keep] if s not in where]
        if unknown:
            raise DataError(f"{name}: star(s) {unknown[:5]} are not in the catalogue positions")
        x, y, cov = _table_cov(t, keep, name, domain)
        rows = np.array([where[s] for s in stars[keep]], dtype=int)
        if np.unique(rows).size != rows.size:
            raise DataError(f"{name}: a star is matched to more than one source")
        jac = np.asarray(fp.jacobian, float)
        jinv = np.linalg.inv(jac)
        for s, r in zip(stars[keep], rows):
            if s not in star_index:
                star_index[s] = len(star_index)
                star_cov.append(jinv @ fp.cov[r] @ jinv.T)
        xs.append(x)
        ys.append(y)
        covs.append(cov)
        exps.append(np.full(x.size, e))
        srcs.append(np.array([star_index[s] for s in stars[keep]], dtype=int))
        refs.append(np.column_stack([fp.x[rows], fp.y[rows]]))
        uvs.append(np.column_stack([fp.u[rows], fp.v[rows]]))
        jacs.append(np.broadcast_to(jac, (x.size, 2, 2)))
        pids.append(np.flatnonzero(keep) + 1_000_000 * e)
        zen.append(fp.zenith_distance_deg)
        rot.append(fp.rotator_angle_deg)
        par.append(fp.parity)
    n_exp = len(tables)
    if exposure_dataset is None:
        exposure_dataset = np.zeros(n_exp, int)
    names = np.array(list(star_index), dtype=object)
    return Points(
        x=np.concatenate(xs), y=np.concatenate(ys), cov=np.concatenate(covs),
        exposure=np.concatenate(exps), hole=np.concatenate(srcs),
        offsets=np.zeros((n_exp, 2)), offset_sigma=np.full(n_exp, float(pointing_sigma_arcsec)),
        exposure_dataset=np.asarray(exposure_dataset, int), hole_ids=names,
        hole_xy=np.zeros((names.size, 2)), domain=tuple(domain), pixel_scale=float(pixel_scale),
        mask_scale=np.nan, dataset_names=tuple(dataset_names),
        exposure_names=tuple(exposure_names) if exposure_names else tuple(f"sky{k}" for k in range(n_exp)),
        point_ids=np.concatenate(pids), ref_xy=np.concatenate(refs), uv=np.concatenate(uvs),
        source_jacobian=np.concatenate(jacs), source_kind=np.ones(names.size, int),
        source_cov=np.array(star_cov).reshape(-1, 2, 2), exposure_kind=np.ones(n_exp, int),
        exposure_zenith_deg=np.array(zen, float), exposure_rotator_deg=np.array(rot, float),
        exposure_parity=np.array(par, float), dataset_kinds=tuple("sky" for _ in dataset_names),
    )


def join_points(*parts: Points) -> Points:
    """Join points of several sets (e.g. lab and sky) into one :class:`Points`.

    Exposures, datasets and sources are concatenated in the order given (source indices
    and point ids shifted); the detector domains must agree and the nominal pixel scales
    (a prior only) agree to 1 %; the first set's is kept. The mask scale is the first
    finite one (sky sets have none).

    Parameters
    ----------
    *parts : Points
        The sets, in order.

    Returns
    -------
    Points
        All of them.

    Raises
    ------
    DataError
        No sets, or domains or pixel scales that disagree.
    """
    parts = [p for p in parts if p is not None]
    if not parts:
        raise DataError("no points to join")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for p in parts[1:]:
        if tuple(p.domain) != tuple(first.domain):
            raise DataError(f"points to join have different detector domains: {first.domain} and {p.domain}")
        if not np.isclose(p.pixel_scale, first.pixel_scale, rtol=1e-2):
            raise DataError(f"points to join have nominal pixel scales {first.pixel_scale} and "
                            f"{p.pixel_scale} arcsec/px (more than 1 % apart): not the same instrument?")
    e_off = np.cumsum([0] + [p.n_exposures for p in parts[:-1]])
    h_off = np.cumsum([0] + [p.n_holes for p in parts[:-1]])
    d_off = np.cumsum([0] + [p.n_datasets for p in parts[:-1]])
    pid_off = np.cumsum([0] + [int(p.point_ids.max()) + 1 if p.n_points else 0 for p in parts[:-1]])
    scales = [p.mask_scale for p in parts if np.isfinite(p.mask_scale)]
    cat = np.concatenate
    ids = np.empty(sum(p.n_holes for p in parts), dtype=object)
    ids[:] = [v for p in parts for v in np.asarray(p.hole_ids).tolist()]
    return Points(
        x=cat([p.x for p in parts]), y=cat([p.y for p in parts]), cov=cat([p.cov for p in parts]),
        exposure=cat([p.exposure + o for p, o in zip(parts, e_off)]),
        hole=cat([p.hole + o for p, o in zip(parts, h_off)]),
        offsets=cat([p.offsets for p in parts]), offset_sigma=cat([p.offset_sigma for p in parts]),
        exposure_dataset=cat([p.exposure_dataset + o for p, o in zip(parts, d_off)]),
        hole_ids=ids, hole_xy=cat([p.hole_xy for p in parts]), domain=tuple(first.domain),
        pixel_scale=first.pixel_scale, mask_scale=scales[0] if scales else np.nan,
        dataset_names=tuple(n for p in parts for n in p.dataset_names),
        exposure_names=tuple(n for p in parts for n in p.exposure_names),
        point_ids=cat([p.point_ids + o for p, o in zip(parts, pid_off)]), meta=dict(first.meta),
        ref_xy=cat([p.ref_xy for p in parts]), uv=cat([p.uv for p in parts]),
        source_jacobian=cat([p.source_jacobian for p in parts]),
        source_kind=cat([p.source_kind for p in parts]), source_cov=cat([p.source_cov for p in parts]),
        exposure_kind=cat([p.exposure_kind for p in parts]),
        exposure_zenith_deg=cat([p.exposure_zenith_deg for p in parts]),
        exposure_rotator_deg=cat([p.exposure_rotator_deg for p in parts]),
        exposure_parity=cat([p.exposure_parity for p in parts]),
        dataset_kinds=tuple(k for p in parts for k in p.dataset_kinds),
    )


# the names this module's model classes and functions had before issue 20 (they also hold
# sky data): kept for one release, with a DeprecationWarning
from .._moved import renamed  # noqa: E402

__getattr__ = renamed(__name__, {'LabPoints': 'Points'})
