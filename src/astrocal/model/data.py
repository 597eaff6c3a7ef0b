"""The identified points that enter the joint model, as plain arrays.

:class:`LabPoints` holds every identified spot of every lab exposure: its measured pixel
position (0-based) and 2x2 centroid covariance (pixel**2), the exposure and the hole it
belongs to, and per exposure the commanded mask offset (arcsec) with its 1-sigma
accuracy. Holes carry their nominal mask-plane positions converted to arcsec with the
mask plate scale; the mask frame is the focal-plane frame of the model.

:func:`lab_points_from_tables` builds it from measured source tables (one per exposure,
columns ``hole_id, x, y, sigma_x, sigma_y, cov_xy``) and a mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field

import numpy as np


#: flag bits that make a measured position unusable (astrocal.lab.measure.FLAGS_REJECT:
#: not converged 4, diverged 16, bad fit 32, saturated 1, unidentified 128, low coverage 256)
DEFAULT_REJECT_FLAGS = 4 | 16 | 32 | 1 | 128 | 256


class DataError(ValueError):
    """The points cannot enter the model (NaN, non-positive errors, empty datasets...)."""


@dataclass(frozen=True, eq=False)
class LabPoints:
    """Identified pinhole spots of one or more lab datasets.

    Arrays of length ``N`` (points): ``x``, ``y`` (pixels, 0-based), ``cov`` (N, 2, 2)
    pixel**2, ``exposure`` (index into the exposures), ``hole`` (index into the holes).
    Arrays of length ``E`` (exposures): ``offsets`` (E, 2) commanded mask offsets in
    arcsec, ``offset_sigma`` (E,) their 1-sigma accuracy in arcsec, ``exposure_dataset``
    (E,) dataset index, ``exposure_names``.
    Arrays of length ``H`` (holes): ``hole_ids``, ``hole_xy`` (H, 2) nominal positions in
    arcsec (mask millimetres divided by the mask plate scale).
    ``domain`` is the detector domain (0-based pixel edges); ``pixel_scale`` the nominal
    scale in arcsec/pixel (a prior only); ``mask_scale`` mm per arcsec.
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

    def __post_init__(self):
        n = len(self.x)
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
    def n_points(self):
        return len(self.x)

    @property
    def n_exposures(self):
        return len(self.offsets)

    @property
    def n_holes(self):
        return len(self.hole_ids)

    @property
    def n_datasets(self):
        return len(self.dataset_names)

    @property
    def dataset(self):
        """Dataset index of every point."""
        return self.exposure_dataset[self.exposure]

    def take(self, index):
        """The points at integer positions ``index`` (in that order)."""
        index = np.asarray(index, int)
        return LabPoints(self.x[index], self.y[index], self.cov[index], self.exposure[index],
                         self.hole[index], self.offsets, self.offset_sigma, self.exposure_dataset,
                         self.hole_ids, self.hole_xy, self.domain, self.pixel_scale,
                         self.mask_scale, self.dataset_names, self.exposure_names,
                         self.point_ids[index], dict(self.meta))

    def subset(self, keep):
        """The points selected by the boolean mask ``keep`` (exposures and holes kept)."""
        return self.take(np.flatnonzero(np.asarray(keep, bool)))


def lab_points_from_tables(tables, mask_xy_mm, mask_hole_ids, mask_scale, domain, pixel_scale,
                           offsets_arcsec, offset_sigma_arcsec, exposure_dataset=None,
                           dataset_names=("lab",), exposure_names=None):
    """Assemble :class:`LabPoints` from one source table per exposure.

    ``tables`` are astropy Tables (or dicts of arrays) with columns ``hole_id``, ``x``,
    ``y``, ``sigma_x``, ``sigma_y`` and optionally ``cov_xy`` and ``flags``; rows with
    ``hole_id < 0`` (unidentified) or with a flag bit of the table's ``reject_flags``
    metadata (default: the measure stage's ``FLAGS_REJECT``: fit failed, saturated,
    unidentified, low coverage) are left out. Holes never seen in any exposure are dropped.
    """
    mask_hole_ids = np.asarray(mask_hole_ids)
    index = {int(h): k for k, h in enumerate(mask_hole_ids)}
    xs, ys, covs, exps, holes, pids = [], [], [], [], [], []
    for e, t in enumerate(tables):
        name = exposure_names[e] if exposure_names else f"exposure {e}"
        columns = set(t.colnames if hasattr(t, "colnames") else t)
        for col in ("hole_id", "x", "y", "sigma_x", "sigma_y"):
            if col not in columns:
                raise DataError(f"{name}: source table has no column {col}")
        hid = np.asarray(t["hole_id"], dtype=int)
        keep = hid >= 0
        if "flags" in columns:
            reject = t.meta.get("reject_flags", DEFAULT_REJECT_FLAGS) if hasattr(t, "meta") else DEFAULT_REJECT_FLAGS
            keep &= (np.asarray(t["flags"], dtype=int) & int(reject)) == 0
        unknown = [int(h) for h in hid[keep] if int(h) not in index]
        if unknown:
            raise DataError(f"{name}: hole_id(s) {unknown[:5]} are not in the mask")
        sx = np.asarray(t["sigma_x"], float)[keep]
        sy = np.asarray(t["sigma_y"], float)[keep]
        cxy = np.asarray(t["cov_xy"], float)[keep] if "cov_xy" in columns else np.zeros_like(sx)
        cov = np.empty((sx.size, 2, 2))
        cov[:, 0, 0], cov[:, 1, 1] = sx**2, sy**2
        cov[:, 0, 1] = cov[:, 1, 0] = cxy
        xs.append(np.asarray(t["x"], float)[keep])
        ys.append(np.asarray(t["y"], float)[keep])
        covs.append(cov)
        exps.append(np.full(sx.size, e))
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
    return LabPoints(
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
