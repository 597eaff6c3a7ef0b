"""The prior of the WCU mask's hole manufacturing errors in the LMS fit, and its joint with the imager.

The LMS and the imagers see the same WCU pinhole mask. A hole's manufacturing error
``delta_h = (dx, dy)`` [um, mask frame: the mask table's x_mm, y_mm axes] moves its image in
every exposure of every instrument, so the imager's lab fit, which estimates the errors of the
holes it sees (:mod:`astrocal.model.linear`, ``posterior.h5`` group ``linear``: ``holes``),
carries information the LMS fit can use. This module builds the Gaussian prior of the errors
of the holes the LMS data see:

- :func:`tolerance_prior`: independent ``N(0, sigma_um**2)`` per hole and axis (the mask's
  manufacturing tolerance; default :data:`DEFAULT_HOLE_ERROR_UM`, the imager simulator's
  default and the tolerance its docs quote);
- :func:`read_imager_hole_posterior` + :func:`lms_hole_prior`: the imager fit's posterior of the
  holes both fits see (mean and covariance of its exact draws, matched by hole id), the others
  with the tolerance prior.

The imager's gauge. The imager's likelihood depends on the hole errors only through their
part orthogonal to the six affine patterns over its observed holes (translation and rotation
are pure gauges there, the net scale and shears are its separate ``mask_*`` parameters, whose
posterior is their prior by design; docs/model.md, "Gauges"); its draws are that part
(conditioned on zero affine part). With independent hole errors of scale ``sigma`` the affine
part ``alpha = Q^T delta`` (``Q`` an orthonormal basis of the patterns over the imager's holes)
is independent of the orthogonal part a priori and untouched by the imager's data, so the
exact posterior of the holes given the imager's data is::

    delta | imager ~ N(mean_draws, cov_draws + sigma**2 Q Q^T),

which is what is transferred (``sigma``: the imager's fitted hole-error scale, the median of
its ``log_hole_sigma`` draws). A metrology prior on the imager's mask scale and shears is not
transferred (the tolerance model is used for them instead); over the LMS's field
(< 0.5" from the fine grid's centre, ~1.7 mm) a scale of 7 ppm moves a hole by ~0.01 um.

Units: um on the mask for the errors, mm for the mask positions.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ..checksum import file_sha256
from ..lab.mask import Mask, load_mask
from ..model.priors import gauge_patterns
from .errors import HolePriorFileError, MaskMismatchError, NoSharedHolesError

__all__ = ["DEFAULT_HOLE_ERROR_UM", "HolePrior", "ImagerHolePosterior", "tolerance_prior",
           "read_imager_hole_posterior", "lms_hole_prior", "affine_basis"]

DEFAULT_HOLE_ERROR_UM = 0.5
"""Default rms per axis of a hole's manufacturing error [um] (the imager simulator's default,
``astrocal simulate lab --hole-error-um``, and the tolerance docs/model.md quotes)."""
SAME_POSITION_MM = 1e-6
"""Two masks' holes of the same id agree when their positions differ by less than this [mm]."""


@dataclass(frozen=True)
class HolePrior:
    """Gaussian prior of hole errors in the mask frame.

    Parameters
    ----------
    hole_ids : ndarray of int (H,)
    mean_um : ndarray (H, 2)
        Prior mean of (dx, dy) per hole [um].
    cov_um2 : ndarray (2H, 2H)
        Prior covariance [um^2], hole-major order ``(dx_0, dy_0, dx_1, dy_1, ...)``.
    source : dict
        Where it comes from (``kind``: ``"tolerance"`` or ``"imager"``, and for the latter the
        file, its SHA-256 and time, the holes shared); written into ``lms_fit.json``.
    """

    hole_ids: np.ndarray
    mean_um: np.ndarray
    cov_um2: np.ndarray
    source: dict = field(default_factory=dict)

    @property
    def n_holes(self) -> int:
        """Number of holes H."""
        return len(self.hole_ids)

    def names(self) -> tuple[str, ...]:
        """Parameter names of the hole errors.

        Returns
        -------
        tuple of str
            ``hole<id>.dx_um``, ``hole<id>.dy_um`` in hole-major order.
        """
        return tuple(f"hole{int(h)}.{a}_um" for h in self.hole_ids for a in ("dx", "dy"))

    def cholesky(self) -> np.ndarray:
        """Lower Cholesky factor of ``cov_um2``.

        Returns
        -------
        ndarray (2H, 2H)
            [um], with a 1e-10 relative jitter on the diagonal (the sample covariance of the
            imager's draws may be near-singular).
        """
        c = np.asarray(self.cov_um2, float)
        jitter = 1e-10 * max(float(np.max(np.diag(c))), 1e-30)
        return np.linalg.cholesky(c + jitter * np.eye(len(c)))


@dataclass(frozen=True)
class ImagerHolePosterior:
    """The imager fit's posterior of its holes' errors (:func:`read_imager_hole_posterior`).

    ``hole_ids`` (H,); ``mean_um`` (H, 2); ``cov_um2`` (2H, 2H) the sample covariance of its
    draws (the part orthogonal to the affine patterns); ``affine_cov_um2`` (2H, 2H) the affine
    part's ``sigma**2 Q Q^T``; ``sigma_um`` the imager's hole-error scale; ``record`` the
    provenance (file, SHA-256, time, the imager's campaign and its SHA-256, mask, draws).
    """

    hole_ids: np.ndarray
    mean_um: np.ndarray
    cov_um2: np.ndarray
    affine_cov_um2: np.ndarray
    sigma_um: float
    record: dict


def tolerance_prior(hole_ids: ArrayLike, sigma_um: float = DEFAULT_HOLE_ERROR_UM) -> HolePrior:
    """Independent zero-mean errors of ``sigma_um`` [um] per hole and axis.

    Parameters
    ----------
    hole_ids : array_like of int
        The holes.
    sigma_um : float
        The manufacturing tolerance [um] (1 sigma per axis).

    Returns
    -------
    HolePrior
        ``source`` kind ``"tolerance"``.
    """
    ids = np.asarray(hole_ids, int)
    if not (np.isfinite(sigma_um) and sigma_um > 0):
        raise ValueError(f"hole error sigma must be a finite number > 0 um, got {sigma_um!r}")
    return HolePrior(ids, np.zeros((len(ids), 2)), float(sigma_um) ** 2 * np.eye(2 * len(ids)),
                     {"kind": "tolerance", "sigma_um": float(sigma_um), "n_holes": int(len(ids))})


def affine_basis(xy_mm: ArrayLike) -> np.ndarray:
    """Orthonormal basis of the affine patterns (translation x, y, rotation, scale, two shears)
    of hole errors.

    The imager's own gauge basis (:func:`astrocal.model.priors.gauge_patterns`; its span does
    not depend on the positions' unit or origin), so the part transferred is exactly the part
    the imager's fit removes.

    Parameters
    ----------
    xy_mm : array_like (H, 2)
        The holes' positions.

    Returns
    -------
    ndarray (2H, 6)
        Hole-major order; with fewer than 3 holes the patterns span every error (2H columns).
    """
    return gauge_patterns(np.asarray(xy_mm, float))


def _result_files(path):
    p = Path(path)
    if p.is_dir():
        return p / "posterior.h5", p / "fit.json"
    if p.name == "fit.json":
        return p.parent / "posterior.h5", p
    return p, p.parent / "fit.json"


def _imager_mask(fit_json, info):
    """(mask table path, plate scale [mm/arcsec], the imager's campaign or None) of the
    imager's fit, from ``fit.json``'s ``mask`` record
    (:func:`astrocal.stages.fit_inputs.mask_record`), whose table must still hold what the fit
    read (its SHA-256)."""
    inputs = info.get("inputs") or []
    rec = info.get("mask")
    if not (isinstance(rec, dict) and rec.get("file")):
        raise HolePriorFileError(f"{fit_json}: records no mask (no 'mask' entry: written by an older astrocal "
                                 "or not by a lab fit): cannot tell which mask the imager fit used; "
                                 "fit the imager's campaign again with this astrocal")
    mask = Path(rec["file"])
    if not mask.is_file():
        raise HolePriorFileError(f"{fit_json}: its mask table {mask} is missing: cannot match the holes")
    if rec.get("sha256") and file_sha256(mask) != rec["sha256"]:
        raise MaskMismatchError(f"{mask}: changed since the imager fit {fit_json} read it (sha256 "
                                f"{str(rec['sha256'])[:12]}... then): its hole errors may not be this mask's")
    try:
        scale = float(rec["scale_mm_per_arcsec"])
    except (KeyError, TypeError, ValueError):
        raise HolePriorFileError(f"{fit_json}: mask record without a plate scale "
                                 f"(scale_mm_per_arcsec = {rec.get('scale_mm_per_arcsec')!r})") from None
    return mask, scale, (Path(inputs[0]) if inputs else None)


def read_imager_hole_posterior(path: str | os.PathLike, lms_mask: Mask) -> ImagerHolePosterior:
    """The posterior of the hole errors of an imager fit (``astrocal fit``'s output directory of
    one filter, its ``posterior.h5`` or its ``fit.json``), in the mask frame [um].

    Reads ``posterior.h5`` group ``linear``: ``holes`` (draws, (n, H, 2) arcsec in the imager's
    focal-plane = mask frame), attributes ``hole_ids``, ``hyper_names`` and dataset ``phi``
    (``log_hole_sigma``, arcsec); and ``fit.json``'s ``mask`` record for the mask table (which
    must hold what the fit read: its SHA-256) and the plate scale (arcsec -> um). The imager's mask must be ``lms_mask``
    (:class:`astrocal.lab.mask.Mask`): every hole id of the imager's posterior in the LMS mask at
    the same position (to 1 nm).

    Parameters
    ----------
    path : str or os.PathLike
        The imager fit's output directory, ``posterior.h5`` or ``fit.json``.
    lms_mask : Mask
        The LMS campaign's mask.

    Returns
    -------
    ImagerHolePosterior
        The holes' posterior mean and covariances [um], with its provenance.

    Raises
    ------
    HolePriorFileError
        The file is missing or unreadable, holds no hole errors, or its ``fit.json`` records no
        mask.
    MaskMismatchError
        The imager's mask is another one, or its table changed since the imager fit.
    """
    import h5py

    h5, fit_json = _result_files(path)
    if not h5.is_file():
        raise HolePriorFileError(f"{h5}: the imager's fit result is missing (hole_errors_from = {str(path)!r})")
    try:
        with h5py.File(h5, "r") as f:
            if "linear" not in f or "holes" not in f["linear"]:
                raise HolePriorFileError(f"{h5}: holds no hole errors (group 'linear', dataset 'holes'): "
                                         "the imager fit ran without hole errors or did not finish")
            lin = f["linear"]
            holes = np.array(lin["holes"][...], float)
            ids = np.asarray(json.loads(lin.attrs["hole_ids"]), int)
            hyper = json.loads(lin.attrs["hyper_names"]) if "hyper_names" in lin.attrs else []
            phi = np.array(lin["phi"][...], float) if "phi" in lin else None
            camp_sha = str(lin.attrs.get("campaign_sha256", ""))
            version = str(lin.attrs.get("astrocal_version", ""))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise HolePriorFileError(f"{h5}: cannot be read as an imager fit's posterior: {exc}") from None
    if holes.ndim != 3 or holes.shape[1:] != (len(ids), 2) or len(holes) < 2:
        raise HolePriorFileError(f"{h5}: 'linear/holes' has shape {holes.shape}, expected (draws >= 2, "
                                 f"{len(ids)}, 2) for its {len(ids)} hole ids")
    if not fit_json.is_file():
        raise HolePriorFileError(f"{fit_json}: missing beside {h5.name}: cannot tell which mask the imager fit used")
    try:
        info = json.loads(fit_json.read_text())
    except (OSError, ValueError) as exc:
        raise HolePriorFileError(f"{fit_json}: cannot be read: {exc}") from None
    mask_file, scale, camp = _imager_mask(fit_json, info)
    try:
        imask = load_mask(mask_file)
    except (OSError, ValueError) as exc:
        raise HolePriorFileError(f"{mask_file}: the imager's mask table cannot be read: {exc}") from None
    pos_i = dict(zip(imask.hole_id.tolist(), imask.xy_mm))
    pos_l = dict(zip(lms_mask.hole_id.tolist(), lms_mask.xy_mm))
    missing = [int(h) for h in ids if int(h) not in pos_i]
    if missing:
        raise MaskMismatchError(f"{h5}: hole ids {missing[:10]} of the imager's posterior are not in its mask "
                                f"{mask_file}")
    other = [int(h) for h in ids
             if int(h) not in pos_l or np.max(np.abs(pos_l[int(h)] - pos_i[int(h)])) > SAME_POSITION_MM]
    if other:
        raise MaskMismatchError(f"{h5}: the imager fit used the mask {mask_file} ({imask.short_name}), whose holes "
                                f"{other[:10]}{' ...' if len(other) > 10 else ''} are not at the LMS mask's "
                                f"({lms_mask.short_name}) positions: a different mask")
    um = holes * scale * 1e3                                        # arcsec -> um at the mask
    flat = um.reshape(len(um), -1)                                  # hole-major (dx, dy)
    cov = np.cov(flat, rowvar=False, ddof=1)
    sigma_um = None
    if phi is not None and "log_hole_sigma" in hyper:
        sigma_um = float(np.median(np.exp(phi[:, hyper.index("log_hole_sigma")]))) * scale * 1e3
    if not sigma_um or not np.isfinite(sigma_um):
        sigma_um = DEFAULT_HOLE_ERROR_UM
    Q = affine_basis(np.array([pos_i[int(h)] for h in ids]))
    mtime = datetime.fromtimestamp(h5.stat().st_mtime, tz=timezone.utc).isoformat(timespec="seconds")
    record = {"file": str(h5.resolve()), "sha256": file_sha256(h5), "modified_utc": mtime,
              "fit_json": str(fit_json.resolve()), "imager_campaign": str(camp) if camp else None, "imager_campaign_sha256": camp_sha,
              "imager_astrocal_version": version, "mask": str(mask_file), "mask_name": imask.short_name,
              "mask_scale_mm_per_arcsec": scale, "n_draws": int(len(holes)), "n_imager_holes": int(len(ids)),
              "sigma_um_imager": sigma_um}
    return ImagerHolePosterior(ids, flat.mean(axis=0).reshape(-1, 2), cov, sigma_um**2 * (Q @ Q.T), sigma_um, record)


def lms_hole_prior(hole_ids: ArrayLike, sigma_um: float = DEFAULT_HOLE_ERROR_UM,
                   imager: ImagerHolePosterior | None = None) -> HolePrior:
    """The prior of the errors of the holes ``hole_ids`` that the LMS data see.

    Without ``imager``: :func:`tolerance_prior`. With it: the holes it shares with the imager's
    posterior get that posterior (its mean; its draws' covariance plus the affine part's, see the
    module docstring), the others the tolerance prior, independent of them.

    Parameters
    ----------
    hole_ids : array_like of int
        The holes the LMS data see.
    sigma_um : float
        The tolerance [um] (1 sigma per axis).
    imager : ImagerHolePosterior, optional
        The imager fit's posterior of the hole errors.

    Returns
    -------
    HolePrior
        Over the unique ``hole_ids``, sorted.

    Raises
    ------
    NoSharedHolesError
        ``imager`` given but no hole in common.
    """
    ids = np.unique(np.asarray(hole_ids, int))
    if imager is None:
        return tolerance_prior(ids, sigma_um)
    where = {int(h): k for k, h in enumerate(imager.hole_ids)}
    shared = np.array([h for h in ids if int(h) in where], int)
    if not shared.size:
        raise NoSharedHolesError(f"{imager.record['file']}: the imager's posterior ({len(imager.hole_ids)} holes) "
                                 f"shares no hole with the LMS data (holes {ids.tolist()}): nothing to join")
    H = len(ids)
    mean = np.zeros((H, 2))
    cov = float(sigma_um) ** 2 * np.eye(2 * H)
    pos = np.flatnonzero(np.isin(ids, shared))                      # rows in ids
    src = np.array([where[int(h)] for h in ids[pos]])               # rows in the imager's
    ip = np.stack([2 * src, 2 * src + 1], axis=1).ravel()
    lp = np.stack([2 * pos, 2 * pos + 1], axis=1).ravel()
    mean[pos] = imager.mean_um[src]
    cov[np.ix_(lp, lp)] = (imager.cov_um2 + imager.affine_cov_um2)[np.ix_(ip, ip)]
    source = {"kind": "imager", **imager.record, "n_shared": int(shared.size),
              "shared_hole_ids": shared.tolist(), "n_tolerance": int(H - shared.size),
              "sigma_um": float(sigma_um),
              "transferred": "imager posterior mean and covariance of the shared holes (mask frame, um) plus the "
                             "affine part (translation, rotation, scale, shears over the imager's holes) at the "
                             "imager's hole-error scale; the LMS does not feed back into the imager's fit"}
    return HolePrior(ids, mean, cov, source)
