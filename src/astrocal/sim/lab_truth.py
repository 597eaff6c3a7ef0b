"""The truth of a simulated lab campaign: mask poses, hole errors, spot positions.

The physical chain, for hole ``h`` (nominal mask position ``m_h``, arcsec at the mask plate
scale) with manufacturing error ``delta_h``, in exposure ``e``::

    f_eh = (1 + s_e) R(theta_ins + theta_e) (m_h + delta_h) + tau_ins + a_e
    a_e  = (1 + zeta_s) R(zeta_r) o_e + eps_e
    p_eh = G^-1(f_eh)

``theta_ins, tau_ins`` are the rotation and offset of the mask insertion (one per campaign),
``o_e`` the commanded chopper offset and ``a_e`` the offset actually applied (the chopper's
frame has a small scale and rotation error ``zeta`` and each offset an error ``eps_e`` of
the stated accuracy), ``s_e, theta_e`` tiny per-exposure scale and rotation jitter, and
``G`` the instrument field (detector pixels -> focal plane arcsec).

:func:`gauge_truth` expresses this truth in the gauge of the fit (the reference exposure's
pose is the identity, hole errors carry no affine pattern), so that fitted and true maps,
scales and hole errors can be compared directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numpy.typing import ArrayLike

from ..field import DistortionField, invert
from ..field.inverse import solve
from ..model.data import Points


def chopper_series(n: int, max_arcsec: float = 3.0) -> np.ndarray:
    """Default commanded offsets: the origin, then a spiral whose radius grows from a
    fraction of the fine pitch to ``max_arcsec``, at golden-angle steps.

    Parameters
    ----------
    n : int
        Number of exposures (>= 1).
    max_arcsec : float
        The largest offset, arcsec.

    Returns
    -------
    numpy.ndarray
        (n, 2) offsets, arcsec (rounded to 0.1 mas).
    """
    if n < 1:
        raise ValueError("a campaign needs at least one exposure")
    out = np.zeros((n, 2))
    if n == 1:
        return out
    radii = np.geomspace(0.04, max_arcsec, n - 1)
    angles = np.arange(1, n) * np.pi * (3 - np.sqrt(5))
    out[1:, 0] = radii * np.cos(angles)
    out[1:, 1] = radii * np.sin(angles)
    return np.round(out, 4)


@dataclass(frozen=True, eq=False)
class LabTruth:
    """Known truth of a simulated lab campaign (units: arcsec, radians, pixels 0-based)."""

    field: DistortionField
    hole_ids: np.ndarray
    hole_xy: np.ndarray          # (H, 2) nominal, arcsec
    hole_errors: np.ndarray      # (H, 2) arcsec
    commanded: np.ndarray        # (E, 2) arcsec
    applied: np.ndarray          # (E, 2) arcsec, a_e
    pose_scale: np.ndarray       # (E,) s_e
    pose_rot: np.ndarray         # (E,) theta_e, radians
    insertion_rot: float         # radians
    insertion_offset: np.ndarray  # (2,) arcsec
    chopper_frame: tuple         # (zeta_s, zeta_r)
    positions: np.ndarray        # (E, H, 2) detector pixels, NaN where not on the detector
    mask_scale: float            # mm per arcsec
    offset_sigma: float          # arcsec, stated accuracy of the offsets
    reference: int = 0

    def focal_plane(self, e: int) -> np.ndarray:
        """``f_eh`` of exposure ``e`` for every hole.

        Parameters
        ----------
        e : int
            The exposure.

        Returns
        -------
        numpy.ndarray
            (H, 2) focal-plane positions, arcsec.
        """
        th = self.insertion_rot + self.pose_rot[e]
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        actual = self.hole_xy + self.hole_errors  # arcsec at the mask plate scale
        return (1 + self.pose_scale[e]) * actual @ rot.T + self.insertion_offset + self.applied[e]


def draw_lab_truth(field: DistortionField, hole_ids: ArrayLike, hole_xy: ArrayLike, mask_scale: float,
                   rng: np.random.Generator | int | None, n_exposures: int = 10, offsets: ArrayLike | None = None,
                   hole_error_um: float = 0.5, offset_sigma_mas: float = 2.0, insertion_rot_deg: float = 0.3,
                   insertion_offset_arcsec: float = 0.3, chopper_scale: float = 2e-3, chopper_rot_deg: float = 0.2,
                   pose_jitter: float = 1e-6, margin_px: float = 8.0) -> LabTruth:
    """Draw the truth of a campaign and the detector position of every hole.

    Drawn, in this order from ``rng``: the chopper frame's scale and rotation, the offsets'
    errors, the hole errors, the per-exposure pose jitter (scale, rotation), the mask
    insertion rotation and offset.

    Parameters
    ----------
    field : DistortionField
        The instrument field (0-based pixels -> focal-plane arcsec).
    hole_ids : array_like
        The holes' ids.
    hole_xy : array_like
        (H, 2) nominal hole positions, arcsec.
    mask_scale : float
        Mask scale, mm per arcsec.
    rng : numpy.random.Generator, int or None
        The random stream (or its seed).
    n_exposures : int
        Exposures, when ``offsets`` is not given (:func:`chopper_series`).
    offsets : array_like, optional
        (E, 2) commanded offsets, arcsec.
    hole_error_um : float
        Rms of each coordinate of the manufacturing errors, um at the mask.
    offset_sigma_mas : float
        Accuracy of the chopper offsets, mas.
    insertion_rot_deg, insertion_offset_arcsec : float
        Rms of the mask insertion rotation (deg) and offset (arcsec).
    chopper_scale, chopper_rot_deg : float
        Rms of the chopper frame's scale and rotation (deg).
    pose_jitter : float
        Rms of the per-exposure scale and rotation.
    margin_px : float
        Positions closer than this to the detector edge are NaN (not on the detector);
        negative: kept up to that far outside.

    Returns
    -------
    LabTruth
        The truth.
    """
    rng = np.random.default_rng(rng)
    hole_xy = np.asarray(hole_xy, float)
    h = len(hole_xy)
    offsets = chopper_series(n_exposures) if offsets is None else np.asarray(offsets, float)
    e = len(offsets)
    sig = offset_sigma_mas / 1e3
    zeta = (rng.normal(0, chopper_scale), np.radians(rng.normal(0, chopper_rot_deg)))
    zrot = np.array([[np.cos(zeta[1]), -np.sin(zeta[1])], [np.sin(zeta[1]), np.cos(zeta[1])]])
    applied = (1 + zeta[0]) * offsets @ zrot.T + rng.normal(0, sig, (e, 2))
    truth = LabTruth(
        field=field, hole_ids=np.asarray(hole_ids), hole_xy=hole_xy,
        hole_errors=rng.normal(0, hole_error_um * 1e-3 / mask_scale, (h, 2)),
        commanded=offsets, applied=applied,
        pose_scale=rng.normal(0, pose_jitter, e), pose_rot=rng.normal(0, pose_jitter, e),
        insertion_rot=np.radians(rng.normal(0, insertion_rot_deg)),
        insertion_offset=rng.normal(0, insertion_offset_arcsec, 2),
        chopper_frame=zeta, positions=np.full((e, h, 2), np.nan), mask_scale=float(mask_scale),
        offset_sigma=sig,
    )
    xmin, xmax, ymin, ymax = field.domain
    guess = invert(field, tol=1e-3).field
    for k in range(e):
        f = truth.focal_plane(k)
        gx, gy = guess(f[:, 0], f[:, 1])
        # holes far off the detector are not inverted (the polynomial need not be
        # invertible there); those that do not converge are off the detector too
        near = guess.in_domain(f[:, 0], f[:, 1], margin=0.25 * (guess.domain[1] - guess.domain[0]))
        px = np.full(len(f), np.nan)
        py = np.full(len(f), np.nan)
        if near.any():
            px[near], py[near] = solve(field, f[near, 0], f[near, 1], guess=(gx[near], gy[near]),
                                       on_failure="nan")
        with np.errstate(invalid="ignore"):
            inside = ((px > xmin + margin_px) & (px < xmax - margin_px)
                      & (py > ymin + margin_px) & (py < ymax - margin_px))
        truth.positions[k, inside, 0] = px[inside]
        truth.positions[k, inside, 1] = py[inside]
    return truth


def draw_centroid_errors(sigma_px: ArrayLike, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per-point centroid covariances around typical sigmas, and an error drawn from each.

    Each point's covariance is slightly anisotropic and correlated: axis sigmas
    ``sigma_px`` times independent factors uniform in 0.85-1.15, correlation uniform in
    +-0.3 (the lab and the sky point simulators' centroid model).

    Parameters
    ----------
    sigma_px : array_like
        (n,) typical sigma of each point, pixels.
    rng : numpy.random.Generator
        The random stream (drawn from in this order: the x factors, the y factors, the
        correlations, then the errors).

    Returns
    -------
    sx, sy, rho : numpy.ndarray
        (n,) the sigmas along x and y (pixels) and the correlation.
    cov : numpy.ndarray
        (n, 2, 2) the covariances, pixels**2.
    errors : numpy.ndarray
        (n, 2) the errors drawn, pixels.
    """
    s = np.asarray(sigma_px, float)
    n = s.size
    sx = s * rng.uniform(0.85, 1.15, n)
    sy = s * rng.uniform(0.85, 1.15, n)
    rho = rng.uniform(-0.3, 0.3, n)
    cov = np.empty((n, 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = sx**2, sy**2
    cov[:, 0, 1] = cov[:, 1, 0] = rho * sx * sy
    errors = np.einsum("nab,nb->na", np.linalg.cholesky(cov), rng.standard_normal((n, 2))) if n else np.zeros((0, 2))
    return sx, sy, rho, cov, errors


def observe_points(truth: LabTruth, rng: np.random.Generator | int | None,
                   sigma_px: tuple[float, float] = (0.005, 0.03), pixel_scale: float | None = None,
                   dataset_name: str = "lab") -> tuple[Points, np.ndarray]:
    """Point-level observations of a truth: every visible spot with Gaussian centroid noise.

    Each spot gets its own sigma (uniform in ``sigma_px``, slightly anisotropic and
    correlated), and its measured position is drawn from that covariance.

    Parameters
    ----------
    truth : LabTruth
        The truth.
    rng : numpy.random.Generator, int or None
        The random stream (or its seed).
    sigma_px : tuple of float
        Range of the centroid sigmas, pixels.
    pixel_scale : float, optional
        The points' pixel scale, arcsec (default: the field's at its centre).
    dataset_name : str
        The dataset's name.

    Returns
    -------
    points : Points
        The observations (:class:`~astrocal.model.data.Points`).
    true : numpy.ndarray
        (N, 2) noise-free positions, in the same order, pixels.
    """
    rng = np.random.default_rng(rng)
    e_idx, h_idx = np.nonzero(np.isfinite(truth.positions[..., 0]))
    true = truth.positions[e_idx, h_idx]
    n = true.shape[0]
    *_, cov, noise = draw_centroid_errors(rng.uniform(*sigma_px, n), rng)
    meas = true + noise
    used = np.unique(h_idx)
    remap = -np.ones(len(truth.hole_ids), int)
    remap[used] = np.arange(used.size)
    if pixel_scale is None:
        xc, yc = truth.field.centre
        _, _, jac = truth.field.jacobian(xc, yc)
        pixel_scale = float(np.sqrt(abs(np.linalg.det(jac))))
    pts = Points(
        x=meas[:, 0], y=meas[:, 1], cov=cov, exposure=e_idx, hole=remap[h_idx],
        offsets=truth.commanded, offset_sigma=np.full(len(truth.commanded), truth.offset_sigma),
        exposure_dataset=np.zeros(len(truth.commanded), int), hole_ids=truth.hole_ids[used],
        hole_xy=truth.hole_xy[used], domain=truth.field.domain, pixel_scale=pixel_scale,
        mask_scale=truth.mask_scale, dataset_names=(dataset_name,),
    )
    return pts, true


@dataclass(frozen=True, eq=False)
class GaugeTruth:
    """The truth in the fit's gauge, for the holes a fit saw.

    ``mask_affine``: the true net scale and shears of the mask over those holes
    (``mask_scale``, ``mask_shear_plus``, ``mask_shear_cross``, relative; zeros when they
    were folded into the field)."""

    field: DistortionField   # G' = M^-1 T_0^-1 G
    hole_errors: np.ndarray  # (H', 2) arcsec, affine pattern removed
    hole_ids: np.ndarray
    mask_affine: np.ndarray = None


def _affine_field(field, a, b):
    """Field composed with the affine output map ``x -> a @ x + b``."""
    cx = a[0, 0] * field.cx + a[0, 1] * field.cy
    cy = a[1, 0] * field.cx + a[1, 1] * field.cy
    cx = np.array(cx)
    cy = np.array(cy)
    cx[0, 0] += b[0]
    cy[0, 0] += b[1]
    return field.replace(cx=cx, cy=cy, meta={})


def gauge_truth(truth: LabTruth, hole_ids: ArrayLike | None = None, mask_affine: bool = True) -> GaugeTruth:
    """Express the truth in the fit's gauge for the holes ``hole_ids`` (default: all).

    The reference exposure's pose becomes the identity plus its commanded offset, and the
    hole errors lose their least-squares affine pattern over those holes, exactly as
    :class:`~astrocal.model.joint.JointModel` fixes its gauge: the pattern's translation and
    rotation are folded into the field (gauges); its scale and shears are the mask's net
    scale and shears, real, which the field keeps (``mask_affine``, the default fit's
    ``Priors.mask_affine_sigma_ppm``) or, with ``mask_affine=False`` (a fit with the mask
    fixed at its nominal table: ``mask_affine_sigma_ppm = 0`` or no hole errors), which
    are folded into the field too.

    Parameters
    ----------
    truth : LabTruth
        The truth.
    hole_ids : array_like, optional
        The holes the fit saw (default: all).
    mask_affine : bool
        Keep the mask's net scale and shears (else fold them into the field).

    Returns
    -------
    GaugeTruth
        The truth in the fit's gauge.
    """
    if hole_ids is None:
        sel = np.arange(len(truth.hole_ids))
    else:
        index = {int(h): k for k, h in enumerate(truth.hole_ids)}
        sel = np.array([index[int(h)] for h in hole_ids])
    r = truth.reference
    th = truth.insertion_rot + truth.pose_rot[r]
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    t0_lin = (1 + truth.pose_scale[r]) * rot
    t0_off = truth.insertion_offset + truth.applied[r]
    # T_0^-1(f) = t0_lin^-1 (f - t0_off); then the model's reference pose adds o_ref
    inv0 = np.linalg.inv(t0_lin)
    g1 = _affine_field(truth.field, inv0, -inv0 @ t0_off + truth.commanded[r])
    # affine pattern of the hole errors over the selected holes
    m = truth.hole_xy[sel]
    d = truth.hole_errors[sel]
    design = np.column_stack([np.ones(len(m)), m])
    coef, *_ = np.linalg.lstsq(design, d, rcond=None)  # d ~ a + m @ A^T
    a = coef[0]
    amat = coef[1:].T
    net = np.zeros(3)
    if mask_affine:
        # keep the symmetric part (scale, shears) about the holes' centroid: the gauge is
        # the translation and the rotation only
        w = 0.5 * (amat[1, 0] - amat[0, 1])
        rot = np.array([[0.0, -w], [w, 0.0]])
        sym = amat - rot
        net = np.array([0.5 * (sym[0, 0] + sym[1, 1]), 0.5 * (sym[0, 0] - sym[1, 1]), 0.5 * (sym[0, 1] + sym[1, 0])])
        a = a + sym @ m.mean(axis=0)
        amat = rot
    # m + delta = M(m) + delta_perp (+ the net scale and shears) with M(m) = (I + A) m + a;
    # G' = M^-1 o (T_0^-1 G)
    mlin = np.eye(2) + amat
    minv = np.linalg.inv(mlin)
    # shift by o_ref before and after so the reference offset is kept: M acts on mask coords
    o = truth.commanded[r]
    g2 = _affine_field(g1, minv, -minv @ (a + o) + o)
    d_perp = d - design @ coef
    return GaugeTruth(g2, d_perp @ minv.T, truth.hole_ids[sel], net)
