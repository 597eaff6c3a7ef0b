"""The collapsed linear model of the joint fit: exact marginal likelihood over the linear parameters.

Model (see ``docs/model.md``): for lab exposure ``e`` and hole ``h``,

    G(p_eh) = m_h + delta_h + s_e m_h + theta_e R90 m_h + t_e + noise,
    t_e = o_e + (zeta_s + zeta_r R90) o_e + eps_e

with ``G`` the instrument field (Legendre coefficients ``c``), ``m_h`` the nominal hole
position (arcsec), ``delta_h`` the hole's manufacturing error, ``(s_e, theta_e, t_e)`` the
mask pose of exposure ``e`` (scale, rotation, translation) relative to the reference
exposure, whose pose is fixed (the gauge of position and rotation), ``o_e`` the commanded
chopper offset, ``zeta`` the scale and rotation of the chopper's frame relative to the mask
frame (global, broad prior) and ``eps_e`` the offset error (prior: the stated offset
accuracy). For sky exposure ``e`` and star ``s``,

    G(p_es) = x_es + J_e d_s + Delta_e(u_es, v_es) + s_e x_es + theta_e R90 x_es + t_e + noise

with ``x_es`` the star's apparent position in the instrument frame (arcsec), ``d_s`` its
catalogue error (true minus catalogue, standard coordinates; prior: the catalogue's
covariance), ``J_e`` the Jacobian of standard coordinates into the instrument frame,
``Delta_e`` the telescope flexure (:mod:`astrocal.model.flexure`, coefficients linear, prior
widths hyperparameters) and ``(s_e, theta_e, t_e)`` the exposure's pointing, position-angle
and plate-scale terms. Noise of covariance ``kappa**2 J C J^T + sigma_d**2 I`` (``C`` the
centroid covariance, ``J`` the Jacobian of ``G``, ``sigma_d`` the jitter of dataset ``d``;
with the residual field, ``sigma_d**2 + t**2``, ``t**2`` the residual's spectral tail beyond
its basis, :meth:`JointModel.residual_tail_variance`).

Everything but the hyperparameters ``phi = (log sigma_d..., log kappa, log sigma_delta,
log sigma_flex...)`` enters linearly with Gaussian priors, so ``p(y | phi)`` is Gaussian and
exact. The per-source blocks (``delta_h``, ``d_s``) are eliminated by a Schur complement
(cost linear in the number of holes and stars), the hole-error patterns that mimic a
linear map (translation and the four linear terms: the scale gauge) are removed by exact
Gaussian conditioning, and the walkers of an emcee step are evaluated together (leading
axis ``K``): the linear algebra is :mod:`astrocal.model.linear` (and its fast path
:mod:`astrocal.model.expansion`), which reads the model through its public interface (the
design arrays, :meth:`JointModel.weights`, :meth:`JointModel.noise_scales`,
:meth:`JointModel.global_prior`, :meth:`JointModel.add_block_prior`,
:meth:`JointModel.segment_sum`, :meth:`JointModel.work_buffer`); the prior settings are
:class:`astrocal.model.priors.Priors`.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import solve_triangular

from ..field import DistortionField, design_matrix
from ..field.basis import flat_to_square, n_terms, terms
from ..field.residual import ResidualBasis
from . import draws, expansion, linear
from .data import DataError, Points
from .flexure import FlexureBasis
from .linear import Conditional
from .priors import MASK_AFFINE_NAMES, Priors, fit_width_law, gauge_patterns, mask_affine_patterns, width_law

if TYPE_CHECKING:
    from .expansion import Expansion

log = logging.getLogger(__name__)

MB_LIMIT_BYTES = 300e6  # precompute per-point basis outer products below this size
BUFFER_LIMIT_BYTES = 256e6  # largest work array the likelihood keeps between calls


class JointModel:
    """Exact collapsed likelihood of lab and sky points for a field of total ``degree``.

    Parameters
    ----------
    points : Points
        Lab points, sky points or both (:func:`astrocal.model.data.join_points`).
    degree : int
        The field's total degree.
    hole_errors : bool
        Include the per-hole manufacturing errors (self-calibration of the mask). Stars'
        catalogue errors are always included (their prior is the catalogue's covariance).
    jacobian_field : DistortionField, optional
        Field whose Jacobian pushes the centroid covariances into the focal plane (the
        result of a preliminary fit); default: the nominal scale times the identity.
    reference : int or None
        Index of the reference exposure (its pose fixes position and rotation); default:
        the first lab exposure, or none when there are only sky exposures (every sky pose
        is then free within its prior, and what the data leave unconstrained is reported).
    priors : Priors
        The prior settings (default ``Priors()``).
    excluded : bool array, optional
        Points left out (flagged outliers).
    flexure : FlexureBasis, optional
        The telescope flexure field of sky exposures (default: degree 2 in 1, cos z, sin z,
        normalised to half the detector's field of view).
    """

    def __init__(self, points: Points, degree: int, hole_errors: bool = True,
                 jacobian_field: DistortionField | None = None, reference: int | None = None,
                 priors: Priors | None = None, excluded: ArrayLike | None = None,
                 flexure: FlexureBasis | None = None) -> None:
        self.priors = priors or Priors()
        self.jacobian_field = jacobian_field
        self.degree = int(degree)
        self._select_points(points, hole_errors, excluded)
        self._set_sky_terms(flexure)
        non_ref = self._check_exposures(reference)
        self._set_mask_affine()
        self._set_noise(jacobian_field)
        self._set_layout(non_ref)
        flex_groups, field_groups = self._set_global_prior(non_ref)
        self._centre_on_reference()
        self._set_source_blocks()
        self._set_names(non_ref, flex_groups, field_groups)

    # ------------------------------------------------------------------ construction
    def _select_points(self, points, hole_errors, excluded):
        """The model's points: the kept ones (not ``excluded``), those without a source
        block first, then block by block."""
        self.all_points = points
        self.excluded = np.zeros(points.n_points, bool) if excluded is None else np.asarray(excluded, bool)
        holes_present = bool(np.any(points.source_kind == 0))
        self.hole_errors = bool(hole_errors) and holes_present
        # sources with an error block: holes (if hole errors are fitted) and every star
        self.source_block_flag = (points.source_kind == 1) | (self.hole_errors & (points.source_kind == 0))
        # the model's points: the kept ones, those without a block first, then block by block
        keep = np.flatnonzero(~self.excluded)
        key = self.source_block_flag[points.hole[keep]].astype(int) * (points.n_holes + 1) + points.hole[keep]
        keep = keep[np.argsort(key, kind="stable")]
        pts = points.take(keep)
        self.points = pts
        nt = n_terms(self.degree)
        self.nt = nt

    def _set_sky_terms(self, flexure):
        """The telescope flexure of sky exposures and the residual field's basis."""
        pts = self.points
        is_sky = pts.is_sky
        self.has_sky = bool(is_sky.any())
        # the telescope flexure acts on the sky exposures of a ground telescope (a finite zenith
        # distance); a space observatory's exposures (zenith distance NaN) have none
        self.flexure_points = is_sky & np.isfinite(pts.exposure_zenith_deg[pts.exposure])
        self.has_flexure = bool(self.flexure_points.any())
        if self.has_flexure:
            self.flexure = flexure or FlexureBasis(
                radius_arcsec=0.25 * pts.pixel_scale * ((pts.domain[1] - pts.domain[0]) + (pts.domain[3] - pts.domain[2])))
            self.n_flex = self.flexure.n_params
        else:
            self.flexure = None
            self.n_flex = 0
        if self.priors.residual not in ("none", "matern52"):
            raise ValueError(f"Priors.residual must be 'none' or 'matern52', got {self.priors.residual!r}")
        if self.priors.residual == "matern52":
            self.residual = ResidualBasis(pts.domain, self.degree, m=self.priors.residual_basis,
                                          boundary=self.priors.residual_boundary)
            self.n_res = 2 * self.residual.size
        else:
            self.residual = None
            self.n_res = 0

    def _check_exposures(self, reference):
        """The reference exposure and the checks of the data's coverage (every exposure and
        dataset has points, enough points for the parameters, lab exposures at more than one
        commanded position with hole errors); returns the other exposures (their poses are
        free)."""
        pts, nt, n = self.points, self.nt, self.points.n_points
        # reference exposure
        lab_exp = np.flatnonzero(pts.exposure_kind == 0)
        if reference is None:
            reference = int(lab_exp[0]) if lab_exp.size else None
        elif pts.exposure_kind[int(reference)] != 0:
            raise DataError(f"the reference exposure {pts.exposure_names[int(reference)]} is not a lab exposure")
        self.reference = None if reference is None else int(reference)
        non_ref = [e for e in range(pts.n_exposures) if e != self.reference]
        n_par = 2 * nt + 4 * len(non_ref) + self.n_flex
        if 2 * n < n_par:
            raise DataError(
                f"{n} points cannot constrain a degree-{self.degree} field ({2 * nt} coefficients), "
                f"{len(non_ref)} exposure poses and {self.n_flex} flexure terms; lower the degree or add data"
            )
        counts = np.bincount(pts.exposure, minlength=pts.n_exposures)
        if np.any(counts == 0):
            empty = [pts.exposure_names[k] for k in np.flatnonzero(counts == 0)]
            raise DataError(f"exposure(s) {', '.join(empty)} have no identified points")
        ds_counts = np.bincount(pts.dataset, minlength=pts.n_datasets)
        if np.any(ds_counts == 0):
            empty = [pts.dataset_names[k] for k in np.flatnonzero(ds_counts == 0)]
            raise DataError(f"dataset(s) {', '.join(empty)} have no identified points")
        self.same_position = False
        if self.hole_errors:
            lab_off = pts.offsets[lab_exp]
            spread = np.ptp(lab_off, axis=0).max() if lab_exp.size > 1 else 0.0
            if spread == 0.0:
                log.warning("GaugeWarning: every exposure is at the same commanded position; with "
                            "hole errors free, the hole errors and the distortion are not separable "
                            "(only the priors tell them apart)")
                self.same_position = True
        return non_ref

    def _set_mask_affine(self):
        """The mask's net scale and shear (``Priors.mask_affine_sigma_ppm``)."""
        pts = self.points
        holes_present = bool(np.any(self.all_points.source_kind == 0))
        mask_ppm = self.priors.mask_affine_sigma_ppm
        if mask_ppm is not None and (not np.isfinite(float(mask_ppm)) or float(mask_ppm) < 0):
            raise ValueError(f"Priors.mask_affine_sigma_ppm must be None or a number >= 0, got {mask_ppm!r}")
        lab_pt = pts.source_kind[pts.hole] == 0
        wanted = holes_present and lab_pt.any() and (
            (mask_ppm is None and self.hole_errors) or (mask_ppm is not None and float(mask_ppm) > 0))
        self.n_mask = 3 if wanted else 0
        self.mask_learnt = bool(wanted and mask_ppm is None)
        if wanted:
            seen = np.unique(pts.hole[lab_pt])
            self.mask_centre = pts.hole_xy[seen].mean(axis=0)
            pat = mask_affine_patterns(pts.hole_xy[seen] - self.mask_centre)
            self.mask_pattern_norm = np.sqrt(np.sum(pat**2, axis=(0, 1)))  # (3,) arcsec

    def _set_noise(self, jacobian_field):
        """The field's basis at the points and the focal-plane noise, ``C = J Cp J^T``
        diagonalised once."""
        pts, nt, n = self.points, self.nt, self.points.n_points
        self.B = design_matrix(pts.x, pts.y, self.degree, pts.domain)
        self.MB = None
        self.tri = np.triu_indices(nt)
        if n * len(self.tri[0]) * 8 < MB_LIMIT_BYTES:
            # upper triangles of the per-point outer products B_i B_i^T
            self.MB = self.B[:, self.tri[0]] * self.B[:, self.tri[1]]

        # focal-plane noise: C = J Cp J^T, diagonalised once
        if jacobian_field is None:
            jac = np.broadcast_to(np.eye(2) * pts.pixel_scale, (n, 2, 2))
        else:
            _, _, jac = jacobian_field.jacobian(pts.x, pts.y)
        cfp = jac @ pts.cov @ np.swapaxes(jac, 1, 2)
        lam, vec = np.linalg.eigh(cfp)
        self.lam = np.maximum(lam, 1e-30)  # (N, 2) arcsec**2
        self.U = vec  # columns are eigenvectors
        self.dataset = pts.dataset

    def _set_layout(self, non_ref):
        """Observations, extra global columns (chopper frame, mask affine, flexure, residual
        field), the pose design and the global parameters' column layout."""
        pts, nt = self.points, self.nt
        self.y, self.E, self.Q, self.Lp = self._point_design(pts)
        self.ne = self.E.shape[2]
        self.pose_slot = -np.ones(pts.n_exposures, int)
        self.pose_slot[non_ref] = np.arange(len(non_ref))
        self.exposure_points = [np.flatnonzero(pts.exposure == e) for e in non_ref]
        self.n_pose = 4 * len(non_ref)
        self.p0 = 2 * nt + self.ne  # first pose parameter
        self.mask_cols = np.arange(2 * nt + 2, 2 * nt + 2 + self.n_mask)
        self.f0 = 2 * nt + 2 + self.n_mask  # first flexure parameter
        self.res_cols = np.arange(self.f0 + self.n_flex, self.f0 + self.n_flex + self.n_res)
        self.G = self.p0 + self.n_pose

    def _set_global_prior(self, non_ref):
        """The prior on the global parameters (the widths of the flexure, the mask affine
        and the field's non-linear coefficients are hyperparameters); returns the names of
        the flexure's and the field's width hyperparameters."""
        pts, nt = self.points, self.nt
        mask_ppm = self.priors.mask_affine_sigma_ppm
        p = self.priors
        sd_c = np.full(nt, p.distortion_px * pts.pixel_scale)
        for k, (i, j) in enumerate(terms(self.degree)):
            if i + j <= 1:
                sd_c[k] = p.linear_sigma
        g0 = np.zeros(self.G)
        mask_sd = np.ones(self.n_mask) if self.mask_learnt else np.full(self.n_mask, float(mask_ppm or 0) * 1e-6)
        sd = np.concatenate([sd_c, sd_c, np.full(2, p.offset_frame_sigma), mask_sd, np.ones(self.n_flex),
                             np.ones(self.n_res), np.zeros(self.n_pose)])
        for e in non_ref:
            s = self.p0 + 4 * self.pose_slot[e]
            if pts.exposure_kind[e] == 1:
                sd[s:s + 4] = [p.sky_pose_scale_sigma, p.sky_pose_rot_sigma, pts.offset_sigma[e], pts.offset_sigma[e]]
            else:
                sd[s:s + 4] = [p.pose_scale_sigma, p.pose_rot_sigma, pts.offset_sigma[e], pts.offset_sigma[e]]
        self.flex_cols = np.arange(self.f0, self.f0 + self.n_flex)
        if self.priors.flexure_scales not in ("shared", "per_function"):
            raise ValueError(f"Priors.flexure_scales must be 'shared' or 'per_function', got {self.priors.flexure_scales!r}")
        per_function = self.priors.flexure_scales == "per_function"
        if not self.has_flexure:
            self.flex_function = np.zeros(0, int)
            flex_groups = []
        elif per_function:
            self.flex_function = self.flexure.function_of_param()
            flex_groups = [f"log_flex_sigma[{f}]" for f in self.flexure.functions]
        else:
            self.flex_function = np.zeros(self.n_flex, int)
            flex_groups = ["log_flex_sigma"]
        if p.field_prior not in ("fixed", "decay", "curved", "per_degree"):
            raise ValueError("Priors.field_prior must be 'fixed', 'decay', 'curved' or 'per_degree', "
                             f"got {p.field_prior!r}")
        deg = np.array([i + j for i, j in terms(self.degree)])
        nl = np.flatnonzero(deg >= 2)
        if p.field_prior == "fixed" or nl.size == 0:
            self.field_cols = np.zeros(0, int)
            field_groups = []
        else:
            self.field_cols = np.r_[nl, nt + nl]
            if p.field_prior == "per_degree":
                field_groups = [f"log_field_sigma[{k}]" for k in range(2, self.degree + 1)]
            elif p.field_prior == "curved":  # degree 2 its own; the law from degree 3
                field_groups = (["log_field_sigma[2]", "log_field_sigma[3]", "log_field_decay",
                                 "field_curvature"][:self.degree - 1])
            else:  # "decay"
                field_groups = ["log_field_sigma", "log_field_decay"]
        self.field_col_degree = np.r_[deg[nl], deg[nl]] if self.field_cols.size else np.zeros(0, int)
        static = np.ones(self.G, bool)
        static[self.flex_cols] = False
        static[self.res_cols] = False
        if self.mask_learnt:
            static[self.mask_cols] = False
        static[self.field_cols] = False
        self.static_cols = np.flatnonzero(static)
        self.g0, self.g_sd = g0, sd
        self.prior_precision = np.where(static, 1.0 / sd**2, 0.0)
        self.logdet_prior = 2 * np.sum(np.log(sd[static]))
        self.prior_quad = float(np.sum(g0**2 * self.prior_precision))
        return flex_groups, field_groups

    def _centre_on_reference(self):
        """The likelihood is computed about a reference solution (see
        :meth:`_reference_solution`)."""
        self.g_ref = self._reference_solution()
        self._yc = self.y - self._global_prediction(self.g_ref)
        self._g0c = self.g0 - self.g_ref

    def _set_source_blocks(self):
        """Source blocks (hole errors, star catalogue errors): points sorted by block for
        segment sums, the points without a block first; the blocks' priors and the hole
        errors' gauge patterns."""
        pts, nt, n = self.points, self.nt, self.points.n_points
        src_block = -np.ones(pts.n_holes, int)
        blocks = np.flatnonzero(self.source_block_flag)  # sources without points keep their prior
        src_block[blocks] = np.arange(blocks.size)
        self.source_block = src_block
        self.block_sources = blocks
        self.H = blocks.size
        self.has_blocks = self.H > 0
        block_pt = src_block[pts.hole]
        self.nb0 = int(np.sum(block_pt < 0))  # first point with a block
        self.block_kind = pts.source_kind[blocks]
        self.hole_blocks = np.flatnonzero(self.block_kind == 0)
        self.star_blocks = np.flatnonzero(self.block_kind == 1)
        bprec = np.zeros((self.H, 2, 2))
        logdet_star = 0.0
        if self.star_blocks.size:
            c = pts.source_cov[blocks[self.star_blocks]]
            bprec[self.star_blocks] = np.linalg.inv(c)
            logdet_star = float(np.sum(np.linalg.slogdet(c)[1]))
        self.block_prior_precision = bprec  # stars; holes get 1/hsig**2 per phi
        self.logdet_star_prior = logdet_star
        self.block_lp_is_unit = bool(np.all(self.Lp[self.nb0:] == -np.eye(2)))
        if self.has_blocks:
            bsl = slice(self.nb0, n)
            hs = block_pt[bsl]
            self.block_of_point = hs
            self.pose_points = np.flatnonzero(self.pose_slot[pts.exposure[bsl]] >= 0)
            self.pose_hole_index = hs[self.pose_points]
            self.pose_slot_index = self.pose_slot[pts.exposure[bsl][self.pose_points]]
            # padded per-block layout (H, M): slot j of block h holds its j-th point, so
            # per-block sums of per-point products become one batched matrix product
            cnt = np.bincount(hs, minlength=self.H)
            self.M = int(max(cnt.max(), 1))
            first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
            self.pad_index = hs * self.M + (np.arange(hs.size) - first[hs])
            self.B_pad = np.zeros((self.H * self.M, nt))
            self.B_pad[self.pad_index] = self.B[bsl]
            self.B_pad = self.B_pad.reshape(self.H, self.M, nt)
            self.hole_start = np.flatnonzero(np.r_[True, hs[1:] != hs[:-1]])
            self.hole_of_segment = hs[self.hole_start]
            pairs = pts.hole[bsl] * pts.n_exposures + pts.exposure[bsl]
            if np.unique(pairs).size != pairs.size:
                raise DataError("a hole or star appears more than once in one exposure")
        if self.hole_errors and self.hole_blocks.size:
            v = np.zeros((self.H, 2, 6))
            hb = self.hole_blocks
            v[hb] = gauge_patterns(pts.hole_xy[blocks[hb]]).reshape(hb.size, 2, 6)
            self.V = v
        else:
            self.V = None

    def _set_names(self, non_ref, flex_groups, field_groups):
        """The names of the hyperparameters and of the global parameters."""
        pts = self.points
        self.hyper_names = [f"log_jitter[{d}]" for d in pts.dataset_names] + ["log_kappa"]
        self.i_hole = None
        if self.V is not None:
            self.i_hole = len(self.hyper_names)
            self.hyper_names.append("log_hole_sigma")
        self.i_flex = np.arange(len(self.hyper_names), len(self.hyper_names) + len(flex_groups))
        self.hyper_names += flex_groups
        self.i_field = np.arange(len(self.hyper_names), len(self.hyper_names) + len(field_groups))
        self.hyper_names += field_groups
        res_groups = []
        if self.n_res:
            if self.priors.residual_lengths not in ("per_axis", "isotropic"):
                raise ValueError(f"Priors.residual_lengths must be 'per_axis' or 'isotropic', "
                                 f"got {self.priors.residual_lengths!r}")
            # per axis: the geometric mean length and the aspect a = log(l_x / l_y) / 2
            res_groups = ["log_residual_rms", "log_residual_length"] + (
                ["residual_aspect"] if self.priors.residual_lengths == "per_axis" else [])
        self.i_res = np.arange(len(self.hyper_names), len(self.hyper_names) + len(res_groups))
        self.hyper_names += res_groups
        if self.priors.scale_prior not in ("uniform", "log-uniform"):
            raise ValueError(f"Priors.scale_prior must be 'uniform' or 'log-uniform', got {self.priors.scale_prior!r}")
        # the scale hyperparameters (jitters, hole-error scale, flexure and field widths):
        # every one but kappa and the field widths' decay ratio
        self.i_scale = np.array([k for k, name in enumerate(self.hyper_names)
                                 if k != pts.n_datasets and name not in ("log_field_decay", "field_curvature",
                                                                         "log_residual_length", "residual_aspect")], int)
        self.param_names = ([f"cu[{i},{j}]" for i, j in terms(self.degree)]
                            + [f"cv[{i},{j}]" for i, j in terms(self.degree)]
                            + ["offset_frame_scale", "offset_frame_rot"] + list(MASK_AFFINE_NAMES[:self.n_mask]))
        if self.has_flexure:
            self.param_names += self.flexure.names
        if self.n_res:
            jk = [(j, k) for j in range(1, self.residual.m + 1) for k in range(1, self.residual.m + 1)]
            self.param_names += [f"res_u[{j},{k}]" for j, k in jk] + [f"res_v[{j},{k}]" for j, k in jk]
        for e in non_ref:
            name = pts.exposure_names[e]
            self.param_names += [f"pose_scale[{name}]", f"pose_rot[{name}]",
                                 f"pose_tx[{name}]", f"pose_ty[{name}]"]

    def _global_prediction(self, g, B=None, E=None, Q=None, exposure=None):
        """``A g`` (N, 2) arcsec: points predicted by the global parameters ``g``, from
        their design (field basis ``B``, extra columns ``E``, pose design ``Q``, exposure
        index); default: the model's own points."""
        if B is None:
            B, E, Q, exposure = self.B, self.E, self.Q, self.points.exposure
        nt = self.nt
        pred = np.column_stack([B @ g[:nt], B @ g[nt:2 * nt]]) + E @ g[2 * nt:self.p0]
        slot = self.pose_slot[exposure]
        has = slot >= 0
        pose = g[self.p0 + 4 * slot[has][:, None] + np.arange(4)]
        pred[has] += np.einsum("nab,nb->na", Q[has], pose)
        return pred

    def _reference_solution(self, max_points=20000, whole_field=False):
        """A least-squares solution (unit weights) of the field and pose parameters.

        The data are positions of a few arcsec measured to microarcseconds, so ``y^T W y``
        and the quadratic form of the posterior mean are each ~1e15 and their difference,
        the likelihood, ~1e3: computed directly it loses a fraction of a unit to rounding
        (enough to stall a quasi-Newton search and spoil a numerical Hessian). The model is
        exactly invariant under ``y -> y - A g_ref``, ``g0 -> g0 - g_ref`` (posterior means
        shifted back by ``g_ref``), so the likelihood is computed about this reference,
        where the residuals are at the noise level. Any ``g_ref`` is exact; this one only
        needs to be close: the flexure and chopper-frame columns are left at zero (their
        prior means stay zero), and at most ``max_points`` evenly spaced points are used.

        The columns whose prior width is a hyperparameter (the field's non-linear
        coefficients with learnt widths, the flexure) are also left at their prior mean,
        zero: a walker may give them widths of 1e-15 arcsec, and a prior mean ``-g_ref``
        at such a width would put terms of 1e25 into the sums, whose difference, the
        likelihood, would then be lost to rounding. The residuals about this reference are
        the field's non-linear part (a few pixels, so ``y^T W y`` ~1e9 and the rounding
        ~1e-7). ``whole_field``: fit every field coefficient (a rough field, e.g. to start
        the learnt widths from).
        """
        n, nt = self.points.n_points, self.nt
        take = np.unique(np.linspace(0, n - 1, min(n, max_points)).astype(int))
        fitted = np.ones(2 * nt, bool)
        if not whole_field:
            fitted[self.field_cols] = False
        cols = np.r_[np.flatnonzero(fitted), np.arange(self.p0, self.G)]
        A = np.zeros((take.size, 2, self.G))
        A[:, 0, :nt] = self.B[take]
        A[:, 1, nt:2 * nt] = self.B[take]
        row = np.full(n, -1)
        row[take] = np.arange(take.size)
        for slot, idx in enumerate(self.exposure_points):
            sel = row[idx]
            sel = sel[sel >= 0]
            s = self.p0 + 4 * slot
            A[sel, :, s:s + 4] = self.Q[take[sel]]
        A = A.reshape(-1, self.G)[:, cols]
        norm = np.sqrt(np.sum(A**2, axis=0))
        norm[norm == 0] = 1.0
        sol, *_ = np.linalg.lstsq(A / norm, self.y[take].ravel(), rcond=1e-12)
        g_ref = np.zeros(self.G)
        g_ref[cols] = sol / norm
        return g_ref

    def _point_design(self, pts):
        """Per-point arrays of the observation equation ``y = A g + Lp delta + noise``.

        Returns ``y`` (N, 2) arcsec (nominal position plus commanded offset), the extra
        global columns ``E`` (N, 2, 2 + n_mask + n_flex + n_res) (chopper frame, the mask's
        net scale and shear, flexure, residual field), the pose design
        ``Q`` (N, 2, 4) and the source-error design ``Lp`` (N, 2, 2) (minus the source
        Jacobian: the model predicts ``G(p) = nominal + J delta + ...``).
        """
        n = pts.n_points
        m = pts.ref_xy
        o = pts.offsets[pts.exposure]
        y = m + o
        f0 = 2 + self.n_mask
        ext = np.zeros((n, 2, f0 + self.n_flex + self.n_res))  # zeta, -mask affine, -flexure, residual
        ext[:, 0, 0], ext[:, 0, 1] = -o[:, 0], o[:, 1]
        ext[:, 1, 0], ext[:, 1, 1] = -o[:, 1], -o[:, 0]
        if self.n_mask:
            lab = pts.source_kind[pts.hole] == 0
            ext[lab, :, 2:f0] = -mask_affine_patterns(pts.hole_xy[pts.hole[lab]] - self.mask_centre)
        sky = pts.is_sky & np.isfinite(pts.exposure_zenith_deg[pts.exposure])  # ground telescopes
        if self.n_flex and sky.any():
            e = pts.exposure[sky]
            ext[sky, :, f0:f0 + self.n_flex] = -self.flexure.design(pts.uv[sky, 0], pts.uv[sky, 1], pts.exposure_zenith_deg[e],
                                                   pts.exposure_rotator_deg[e], pts.exposure_parity[e])
        if self.n_res:  # the residual field is part of G: + Phi(p) in each component
            r0, mr = f0 + self.n_flex, self.residual.size
            phi = self.residual.design(pts.x, pts.y)
            ext[:, 0, r0:r0 + mr] = phi
            ext[:, 1, r0 + mr:r0 + 2 * mr] = phi
        q = np.zeros((n, 2, 4))
        q[:, 0, 0], q[:, 0, 1], q[:, 0, 2] = -m[:, 0], m[:, 1], -1.0
        q[:, 1, 0], q[:, 1, 1], q[:, 1, 3] = -m[:, 1], -m[:, 0], -1.0
        return y, ext, q, -pts.source_jacobian

    # ------------------------------------------------------------------ hyperparameters
    @property
    def ndim(self) -> int:
        """The number of hyperparameters."""
        return len(self.hyper_names)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The prior box of the hyperparameters.

        Returns
        -------
        tuple of numpy.ndarray
            (low, high) of each hyperparameter (natural log of arcsec or dimensionless).
        """
        p = self.priors
        nd = self.points.n_datasets
        lo = [np.log(p.jitter_mas[0] / 1e3)] * nd + [-5 * p.kappa_log_sigma]
        hi = [np.log(p.jitter_mas[1] / 1e3)] * nd + [5 * p.kappa_log_sigma]
        if self.i_hole is not None:
            conv = 1e-3 / self.points.mask_scale  # um -> arcsec
            lo.append(np.log(p.hole_error_um[0] * conv))
            hi.append(np.log(p.hole_error_um[1] * conv))
        for _ in self.i_flex:
            lo.append(np.log(p.flexure_sigma_mas[0] / 1e3))
            hi.append(np.log(p.flexure_sigma_mas[1] / 1e3))
        for name in np.array(self.hyper_names)[self.i_field]:
            if name == "log_field_decay":
                lo.append(np.log(p.field_decay[0]))
                hi.append(np.log(p.field_decay[1]))
            elif name == "field_curvature":
                lo.append(p.field_curvature[0])
                hi.append(p.field_curvature[1])
            else:
                lo.append(np.log(p.field_sigma_px[0] * self.points.pixel_scale))
                hi.append(np.log(p.field_sigma_px[1] * self.points.pixel_scale))
        if self.n_res:
            width = self.points.domain[1] - self.points.domain[0]
            lo += [np.log(p.residual_rms_px[0] * self.points.pixel_scale), np.log(p.residual_length[0] * width)]
            hi += [np.log(p.residual_rms_px[1] * self.points.pixel_scale), np.log(p.residual_length[1] * width)]
            if len(self.i_res) > 2:  # the aspect, uniform: log(l_x / l_y) within +-2 log(ratio)
                lo.append(-0.5 * np.log(p.residual_aspect_max))
                hi.append(0.5 * np.log(p.residual_aspect_max))
        return np.array(lo), np.array(hi)

    def log_prior(self, phi: ArrayLike) -> np.ndarray:
        """Normalised log prior density of the hyperparameters.

        Normalised over the bounds, so that evidences of models with different sets of
        hyperparameters (the curved field widths' ratio from degree 4 and curvature from
        degree 5, the per-degree widths) compare: ``log kappa`` normal (truncated at 5 sigma,
        the truncation ignored); a scale uniform in itself, ``p(log s) = s / (s_hi - s_lo)`` (or
        log-uniform, ``scale_prior``); the decay ratio log-uniform; the curvature uniform.

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).

        Returns
        -------
        numpy.ndarray
            (K,); ``-inf`` outside the bounds.
        """
        phi = np.atleast_2d(phi)
        lo, hi = self.bounds()
        inside = np.all((phi >= lo) & (phi <= hi), axis=1)
        nd = self.points.n_datasets
        ks = self.priors.kappa_log_sigma
        lp = -0.5 * (phi[:, nd] / ks) ** 2 - 0.5 * np.log(2 * np.pi * ks**2)
        rest = np.setdiff1d(np.arange(self.ndim), np.r_[nd, self.i_scale])  # uniform in phi
        lp = lp - np.sum(np.log(hi[rest] - lo[rest]))
        if self.priors.scale_prior == "uniform":  # p(log s) = s p(s), p(s) constant
            lp = lp + phi[:, self.i_scale].sum(axis=1) - np.sum(np.log(np.exp(hi[self.i_scale]) - np.exp(lo[self.i_scale])))
        else:
            lp = lp - np.sum(np.log(hi[self.i_scale] - lo[self.i_scale]))
        return np.where(inside, lp, -np.inf)

    def initial_guess(self, known: dict | None = None) -> np.ndarray:
        """Where the MAP search over the hyperparameters starts.

        ``known`` where it names a hyperparameter, else defaults (0.01 px of jitter, kappa 1,
        0.3 um of hole errors, 1 mas of flexure; the residual field's rms 0.01 px and length a
        quarter of the detector); the field widths come from the data
        (:meth:`_field_width_guess`) unless all of them are known. Clipped just inside the prior
        box.

        Parameters
        ----------
        known : dict, optional
            ``{name: value}``, e.g. the MAP of the degree below.

        Returns
        -------
        numpy.ndarray
            (ndim,).
        """
        lo, hi = self.bounds()
        nd = self.points.n_datasets
        phi = np.empty(self.ndim)
        phi[:nd] = np.log(0.01 * self.points.pixel_scale)  # 0.01 px of jitter
        phi[nd] = 0.0
        if self.i_hole is not None:
            phi[self.i_hole] = np.log(0.3e-3 / self.points.mask_scale)  # 0.3 um
        phi[self.i_flex] = np.log(1e-3)  # 1 mas
        if self.n_res:  # 0.01 px, a quarter of the detector (along each axis)
            phi[self.i_res] = ([np.log(0.01 * self.points.pixel_scale),
                                np.log(0.25 * (self.points.domain[1] - self.points.domain[0]))]
                               + [0.0] * (len(self.i_res) - 2))  # isotropic
        names = list(self.hyper_names)
        have = np.array([name in (known or {}) for name in names])
        phi[have] = [known[name] for name in np.array(names)[have]]
        if self.i_field.size and not have[self.i_field].all():
            phi[self.i_field] = self._field_width_guess(np.clip(phi, lo + 1e-6, hi - 1e-6))
        return np.clip(phi, lo + 1e-6, hi - 1e-6)

    def _field_width_guess(self, phi):
        """Field-width hyperparameters from the data: the rms, per total degree, of the
        field's conditional mean with the broad width ``distortion_px`` (other
        hyperparameters at ``phi``). A starting point for the MAP search; starting from
        tiny widths instead can leave the search in a local mode where the jitter and the
        flexure absorb a shrunk field."""
        broad = phi.copy()
        lo, hi = self.bounds()
        width = np.log(self.priors.distortion_px * self.points.pixel_scale)
        broad[self.i_field] = [0.0 if name in ("log_field_decay", "field_curvature") else width
                               for name in np.array(self.hyper_names)[self.i_field]]
        broad = np.clip(broad, lo, hi)
        try:
            c = self.conditional(broad).mean[:2 * self.nt]
        except np.linalg.LinAlgError:
            c = self._reference_solution(whole_field=True)[:2 * self.nt]
        deg = np.arange(2, self.degree + 1)
        rms = np.array([np.sqrt(np.mean(c[self.field_cols][self.field_col_degree == k] ** 2)) for k in deg])
        rms = np.maximum(rms, 1e-3 * self.points.pixel_scale)
        if self.priors.field_prior == "per_degree":
            return np.log(rms)
        if self.priors.field_prior == "curved":  # degree 2 alone, then the law from degree 3
            return np.r_[np.log(rms[0]), fit_width_law(np.log(rms[1:]), self.i_field.size - 1)]
        return fit_width_law(np.log(rms), 2)

    def _unpack(self, phi):
        """``(jitter, kappa, hole sigma)`` at the rows of ``phi``; the jitter (K, datasets)
        is the points' white noise beyond the centroid errors, arcsec: the dataset's own
        jitter and, with the residual field, its spectral tail in quadrature
        (:meth:`residual_tail_variance`)."""
        nd = self.points.n_datasets
        jit = np.exp(phi[:, :nd])
        if self.n_res:
            jit = np.sqrt(jit**2 + self.residual_tail_variance(phi)[:, None])
        kappa = np.exp(phi[:, nd])
        hsig = np.exp(phi[:, self.i_hole]) if self.i_hole is not None else None
        return jit, kappa, hsig

    def flexure_sigma(self, phi: ArrayLike) -> np.ndarray:
        """Prior widths of the flexure coefficients.

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).

        Returns
        -------
        numpy.ndarray
            (K, n_flex), arcsec.
        """
        phi = np.atleast_2d(phi)
        return np.exp(phi[:, self.i_flex])[:, self.flex_function]

    def field_sigma(self, phi: ArrayLike) -> np.ndarray:
        """Prior widths of the field's non-linear coefficients ``field_cols``.

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).

        Returns
        -------
        numpy.ndarray
            (K, len(field_cols)), arcsec.
        """
        phi = np.atleast_2d(phi)
        if not self.field_cols.size:  # fixed widths
            return np.zeros((phi.shape[0], 0))
        k = self.field_col_degree
        if self.priors.field_prior == "per_degree":
            return np.exp(phi[:, self.i_field])[:, k - 2]
        if self.priors.field_prior == "decay":
            return np.exp(width_law(phi[:, self.i_field], k - 2))
        # curved: degree 2 its own width, the law from degree 3
        own = np.broadcast_to(phi[:, self.i_field[0], None], (phi.shape[0], k.size))
        if self.i_field.size == 1:  # degree 2
            return np.exp(own)
        return np.exp(np.where(k == 2, own, width_law(phi[:, self.i_field[1:]], k - 3)))

    def mask_affine_sigma(self, phi: ArrayLike) -> np.ndarray:
        """Prior widths of the mask's net scale and shears: the hole errors' scale over each
        pattern's norm, or the metrology's fixed width.

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).

        Returns
        -------
        numpy.ndarray
            (K, n_mask), relative.
        """
        phi = np.atleast_2d(phi)
        if not self.n_mask:
            return np.zeros((phi.shape[0], 0))
        if not self.mask_learnt:
            return np.broadcast_to(self.g_sd[self.mask_cols], (phi.shape[0], self.n_mask))
        return np.exp(phi[:, self.i_hole])[:, None] / self.mask_pattern_norm[None]

    def residual_sigma(self, phi: ArrayLike) -> np.ndarray:
        """Prior widths of the residual field's coefficients: the Matérn spectral density at each
        basis function's frequency, both components.

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).

        Returns
        -------
        numpy.ndarray
            (K, n_res), arcsec.
        """
        phi = np.atleast_2d(phi)
        if not self.n_res:
            return np.zeros((phi.shape[0], 0))
        sd = self.residual.prior_sd_for_rms(*draws.residual_hyperparameters(phi, self.hyper_names))
        return np.hstack([sd, sd])

    def residual_tail_variance(self, phi: ArrayLike) -> np.ndarray:
        """The residual field's variance beyond its basis's band.

        White per position, it adds to every point's noise like a jitter common to the datasets
        (:meth:`~astrocal.field.residual.ResidualBasis.tail_variance_for_rms`).

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).

        Returns
        -------
        numpy.ndarray
            (K,), arcsec**2 per component; zeros without the residual field.
        """
        phi = np.atleast_2d(phi)
        if not self.n_res:
            return np.zeros(phi.shape[0])
        return draws.residual_tail_variance(phi, self.hyper_names, self.residual)

    def _learnt_widths(self, phi, field=True):
        """The global parameters whose prior width is a hyperparameter and their widths
        at ``phi``: (columns, (K, columns) arcsec or relative): the flexure's, the mask's
        net scale and shears (when derived from the hole errors), then (``field``) the
        field's non-linear coefficients."""
        cols, tau = [self.flex_cols], [self.flexure_sigma(phi)]
        if self.mask_learnt:
            cols.append(self.mask_cols)
            tau.append(self.mask_affine_sigma(phi))
        if self.n_res:
            cols.append(self.res_cols)
            tau.append(self.residual_sigma(phi))
        if field:
            cols.append(self.field_cols)
            tau.append(self.field_sigma(phi))
        return np.concatenate(cols), np.concatenate(tau, axis=1)

    def prior_sd(self, phi: ArrayLike, broad_field: bool = False) -> np.ndarray:
        """Prior width of every global parameter at ``phi`` (the flexure's and the field's from
        ``phi``).

        Parameters
        ----------
        phi : array_like
            The hyperparameters (ndim,) (or one row).
        broad_field : bool
            The field's non-linear coefficients get the broad width ``distortion_px`` instead of
            their learnt one (the yardstick for "did the data measure it": a width learnt from
            the data is no independent prior).

        Returns
        -------
        numpy.ndarray
            (G,), arcsec or relative.
        """
        sd = np.array(self.g_sd, float)
        cols, tau = self._learnt_widths(phi, field=not broad_field)
        sd[cols] = tau[0]
        return sd

    # ------------------------------------------------------------------ linear algebra interface
    # what astrocal.model.linear and astrocal.model.expansion read of the model
    @property
    def y_centred(self) -> np.ndarray:
        """The observations about the reference solution, ``y - A g_ref`` (N, 2) arcsec."""
        return self._yc

    @property
    def g0_centred(self) -> np.ndarray:
        """The global prior mean about the reference solution, ``g0 - g_ref`` (G,)."""
        return self._g0c

    def noise_scales(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The noise scales at the rows of ``phi``.

        Parameters
        ----------
        phi : numpy.ndarray
            Hyperparameter rows (K, ndim).

        Returns
        -------
        tuple
            ``(jitter, kappa, hole sigma)``: the jitter (K, datasets) is the points' white noise
            beyond the centroid errors, arcsec: the dataset's own jitter and, with the residual
            field, its spectral tail in quadrature (:meth:`residual_tail_variance`); kappa (K,)
            the centroid errors' scale; the hole errors' sd (K,), arcsec, or None without hole
            errors.
        """
        nd = self.points.n_datasets
        jit = np.exp(phi[:, :nd])
        if self.n_res:
            jit = np.sqrt(jit**2 + self.residual_tail_variance(phi)[:, None])
        kappa = np.exp(phi[:, nd])
        hsig = np.exp(phi[:, self.i_hole]) if self.i_hole is not None else None
        return jit, kappa, hsig


    def weights(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The points' noise weights at the rows of ``phi``.

        Parameters
        ----------
        phi : numpy.ndarray
            Hyperparameter rows (K, ndim).

        Returns
        -------
        tuple of numpy.ndarray
            ``w`` (K, N, 2), the inverse variances along the centroid covariance's eigenvectors
            ``U``, and ``W`` (K, N, 2, 2), the weight matrices, arcsec**-2.
        """
        jit, kappa, _ = self.noise_scales(phi)
        w = 1.0 / (kappa[:, None, None] ** 2 * self.lam[None] + jit[:, self.dataset, None] ** 2)
        u = self.U
        wxx = u[:, 0, 0] ** 2 * w[..., 0] + u[:, 0, 1] ** 2 * w[..., 1]
        wxy = u[:, 0, 0] * u[:, 1, 0] * w[..., 0] + u[:, 0, 1] * u[:, 1, 1] * w[..., 1]
        wyy = u[:, 1, 0] ** 2 * w[..., 0] + u[:, 1, 1] ** 2 * w[..., 1]
        W = np.empty(w.shape[:2] + (2, 2))
        W[..., 0, 0], W[..., 0, 1], W[..., 1, 0], W[..., 1, 1] = wxx, wxy, wxy, wyy
        return w, W

    def global_prior(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The global parameters' prior at ``phi``.

        Parameters
        ----------
        phi : numpy.ndarray
            Hyperparameter rows (K, ndim).

        Returns
        -------
        tuple of numpy.ndarray
            Precisions (K, G) (zero where the prior is flat), ``log det`` of the covariance and
            the quadratic form of the prior mean about the reference solution (K,).
        """
        prec = np.broadcast_to(self.prior_precision, (phi.shape[0], self.G)).copy()
        cols, tau = self._learnt_widths(phi)
        prec[:, cols] = 1.0 / tau**2
        logdet_prior = self.logdet_prior + 2 * np.sum(np.log(tau), axis=1)
        return prec, logdet_prior, prec @ self.g0_centred**2

    def system(self, phi: np.ndarray, weak: ArrayLike | None = None, reuse: bool = False,
               direct: bool = False) -> dict:
        """Normal equations of the global block after eliminating the source blocks.

        From the weights' components (:meth:`expansion`,
        :func:`astrocal.model.expansion.system`) where they pay, unless ``direct``, else from
        the per-point sums (:func:`astrocal.model.linear.normal_equations`).

        Parameters
        ----------
        phi : numpy.ndarray
            Hyperparameter rows (K, ndim).
        weak : array_like, optional
            Bool over the global parameters whose prior is left out (the data's own
            information, for :func:`astrocal.model.identifiability.inseparable_directions`).
        reuse : bool
            The block arrays may live in the model's work buffers (only for a caller that does
            not keep them).
        direct : bool
            From the per-point sums.

        Returns
        -------
        dict
            ``S``, ``r`` (the Schur complement and right-hand side) and, with source blocks,
            ``Pgd``, ``hd``, ``Dinv``, ``Y``, ``Dinv_hd``; only the direct path also returns the
            likelihood's constant (``const``).
        """
        ex = None if direct else self.expansion()
        if ex is not None:
            return expansion.system(self, ex, phi, weak)
        return linear.normal_equations(self, phi, weak, reuse)

    def segment_sum(self, a: np.ndarray) -> np.ndarray:
        """Sum an array with a point axis (axis 1, the block points) over each block.

        Blocks without points (all their points flagged) get zeros: their errors keep their
        prior.

        Parameters
        ----------
        a : numpy.ndarray
            (K, block points, ...).

        Returns
        -------
        numpy.ndarray
            (K, H, ...).
        """
        sums = np.add.reduceat(a, self.hole_start, axis=1)
        if self.hole_of_segment.size == self.H:
            return sums
        out = np.zeros(a.shape[:1] + (self.H,) + a.shape[2:])
        out[:, self.hole_of_segment] = sums
        return out

    def block_point_start(self) -> np.ndarray:
        """Index of each block's first point (absolute).

        Returns
        -------
        numpy.ndarray
            (H + 1,): block ``b`` holds the points ``start[b]:start[b + 1]`` (the points are
            sorted by block).
        """
        start = self.__dict__.get("_block_point_start")
        if start is None:
            cnt = np.bincount(self.block_of_point, minlength=self.H)
            start = self.nb0 + np.r_[0, np.cumsum(cnt)]
            self._block_point_start = start
        return start

    def add_block_prior(self, D: np.ndarray, hsig: np.ndarray | None) -> np.ndarray:
        """Add the source blocks' prior precisions to their data precisions, in place.

        Parameters
        ----------
        D : numpy.ndarray
            The blocks' data precisions (K, H, 2, 2).
        hsig : numpy.ndarray or None
            The hole errors' sd (K,), arcsec (stars: the catalogue's covariance).

        Returns
        -------
        numpy.ndarray
            The log-determinant of the blocks' prior covariance (K,).
        """
        D += self.block_prior_precision
        logdet_prior = np.full(D.shape[0], self.logdet_star_prior)
        if self.hole_errors and self.hole_blocks.size:
            hb = self.hole_blocks
            D[:, hb, 0, 0] += 1.0 / hsig[:, None] ** 2
            D[:, hb, 1, 1] += 1.0 / hsig[:, None] ** 2
            logdet_prior = logdet_prior + 4 * hb.size * np.log(hsig)
        return logdet_prior

    def work_buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A work array kept between likelihood calls (never handed out of them).

        Arrays above ``BUFFER_LIMIT_BYTES`` (e.g. a Hessian's large batch) are not kept.

        Parameters
        ----------
        name : str
            The buffer's name.
        shape : tuple of int
            Its shape.

        Returns
        -------
        numpy.ndarray
            Uninitialised, float.
        """
        if np.prod(shape) * 8 > BUFFER_LIMIT_BYTES:
            return np.empty(shape)
        buffers = self.__dict__.setdefault("_buffers", {})
        b = buffers.get(name)
        if b is None or b.shape != shape:
            b = buffers[name] = np.empty(shape)
        return b

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_buffers", None)
        state.pop("_expansion", None)  # large; formed again on first use
        return state
    # ------------------------------------------------------------------ public API
    def expansion(self) -> Expansion | None:
        """The fixed components of the likelihood's sums (:mod:`astrocal.model.expansion`),
        formed on first use.

        Returns
        -------
        Expansion or None
            None where the direct evaluation is used.
        """
        if "_expansion" not in self.__dict__:
            self._expansion = expansion.build_expansion(self)
        return self._expansion

    def log_likelihood(self, phi: ArrayLike, direct: bool = False) -> np.ndarray:
        """Exact ``log p(y | phi)`` for a batch of hyperparameter vectors.

        Evaluated from the weights' fixed components (:meth:`expansion`) where they pay, else
        (or with ``direct``) from the per-point sums. A row whose factorisation fails gets
        ``-inf`` (the other rows are evaluated alone).

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).
        direct : bool
            From the per-point sums.

        Returns
        -------
        numpy.ndarray
            (K,).
        """
        phi = np.atleast_2d(np.asarray(phi, float))
        ex = None if direct else self.expansion()
        try:
            if ex is not None:
                return expansion.log_likelihood(self, ex, phi)
            sys = self.system(phi, reuse=True, direct=True)
            L, logdet, mu = linear.solve(sys)
        except np.linalg.LinAlgError:
            # one row's failure must not reject the whole batch (a MAP gradient's or the
            # walkers' other rows): evaluate row by row, -inf only where it fails
            if phi.shape[0] == 1:
                return np.full(1, -np.inf)
            return np.concatenate([self.log_likelihood(row[None], direct) for row in phi])
        ll = -0.5 * (sys["const"] + logdet - np.einsum("kg,kg->k", sys["r"], mu))
        if self.V is not None:
            _, _, saa, _, mu_a = linear.gauge_conditioning(self, sys, L, mu)
            hsig = self.noise_scales(phi)[2]
            sign, ldet = np.linalg.slogdet(saa)
            quad = np.einsum("ki,ki->k", mu_a, np.linalg.solve(saa, mu_a[..., None])[..., 0])
            ll += -0.5 * (ldet + quad) + 0.5 * 6 * np.log(hsig**2)
        return ll

    def log_posterior(self, phi: ArrayLike) -> np.ndarray:
        """``log p(phi | y)`` up to the evidence: the log prior plus the log likelihood.

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).

        Returns
        -------
        numpy.ndarray
            (K,); ``-inf`` outside the prior box.
        """
        phi = np.atleast_2d(np.asarray(phi, float))
        lp = self.log_prior(phi)
        out = np.full(phi.shape[0], -np.inf)
        ok = np.isfinite(lp)
        if ok.any():
            out[ok] = lp[ok] + self.log_likelihood(phi[ok])
        return out

    def conditional(self, phi: ArrayLike) -> Conditional:
        """The Gaussian posterior of the linear parameters for one ``phi``.

        Parameters
        ----------
        phi : array_like
            The hyperparameters (ndim,) (or the first row of a batch).

        Returns
        -------
        Conditional
            The gauge-fixed mean and covariance of the global parameters and what is needed to
            draw exact samples of everything.
        """
        phi = np.atleast_2d(np.asarray(phi, float))[:1]
        sys = self.system(phi)
        L, _, mu = linear.solve(sys)
        cov = np.linalg.inv(sys["S"][0])
        cond = Conditional(self, phi[0], sys, L[0], mu[0], cov)
        if self.V is not None:
            xg, xd, saa, mu_d, mu_a = linear.gauge_conditioning(self, sys, L, mu)
            cond.set_gauge(xg[0], xd[0], saa[0], mu_d[0], mu_a[0])
        elif self.has_blocks:
            cond.set_blocks(sys)
        return cond

    def sample_linear(self, phi: ArrayLike, rng: np.random.Generator,
                      per_phi: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
        """Exact draws of the linear parameters, ``per_phi`` for each row of ``phi``.

        Drawn from the Gaussian conditional given each ``phi`` and conditioned on the gauge;
        the draws of one ``phi`` are consecutive. One Cholesky factorisation serves all draws of
        a ``phi``, so extra draws cost little.

        Parameters
        ----------
        phi : array_like
            Hyperparameter rows (K, ndim) (or one row).
        rng : numpy.random.Generator
            The random numbers.
        per_phi : int
            Draws per row.

        Returns
        -------
        tuple
            ``g`` (K * per_phi, G) and ``delta`` (K * per_phi, H, 2) (``None`` without source
            blocks), arcsec.
        """
        phi = np.atleast_2d(np.asarray(phi, float))
        K, M = phi.shape[0], int(per_phi)
        sys = self.system(phi)
        L, _, mu = linear.solve(sys)
        z = rng.standard_normal((K, self.G, M))
        g = np.empty((K, M, self.G))
        for k in range(K):
            g[k] = (mu[k][:, None] + solve_triangular(L[k], z[k], lower=True, trans="T",
                                                      check_finite=False)).T
        if not self.has_blocks:
            return g.reshape(K * M, self.G) + self.g_ref, None
        Dinv, Pgd, hd = sys["Dinv"], sys["Pgd"], sys["hd"]
        pg = np.einsum("kahg,kmg->kmha", Pgd, g)
        rhs = hd[:, None] - pg
        mean_d = np.stack([Dinv[:, None, :, 0, 0] * rhs[..., 0] + Dinv[:, None, :, 0, 1] * rhs[..., 1],
                           Dinv[:, None, :, 1, 0] * rhs[..., 0] + Dinv[:, None, :, 1, 1] * rhs[..., 1]], -1)
        # Cholesky of each 2x2 Dinv, written out
        l00 = np.sqrt(Dinv[..., 0, 0])[:, None]
        l10 = (Dinv[..., 1, 0] / np.sqrt(Dinv[..., 0, 0]))[:, None]
        l11 = np.sqrt(np.maximum(Dinv[..., 1, 1] - (Dinv[..., 1, 0] ** 2 / Dinv[..., 0, 0]), 0.0))[:, None]
        e = rng.standard_normal((K, M, self.H, 2))
        delta = mean_d + np.stack([l00 * e[..., 0], l10 * e[..., 0] + l11 * e[..., 1]], -1)
        if self.V is None:
            return g.reshape(K * M, self.G) + self.g_ref, delta.reshape(K * M, self.H, 2)
        xg, xd, saa, _, _ = linear.gauge_conditioning(self, sys, L, mu)
        alpha = np.einsum("haj,kmha->kmj", self.V, delta)
        coef = np.linalg.solve(saa[:, None], alpha[..., None])[..., 0]  # (K, M, 6)
        g = g - np.einsum("kgj,kmj->kmg", xg, coef)
        delta = delta - np.einsum("khaj,kmj->kmha", xd, coef)
        return g.reshape(K * M, self.G) + self.g_ref, delta.reshape(K * M, self.H, 2)

    def residuals(self, g: np.ndarray, block_mean: np.ndarray | None, points: Points) -> np.ndarray:
        """Model minus observation, ``A g + Lp delta - y``, for ``points``.

        For a lab point this is ``G(p)`` minus where the model expects the hole.

        Parameters
        ----------
        g : numpy.ndarray
            A global parameter vector (G,).
        block_mean : numpy.ndarray or None
            The source errors per block (H, 2), arcsec.
        points : Points
            Points sharing the model's exposures and sources (e.g. all points, flagged ones
            included).

        Returns
        -------
        numpy.ndarray
            (N, 2), arcsec.
        """
        y, E, Q, Lp = self._point_design(points)
        B = design_matrix(points.x, points.y, self.degree, points.domain)
        pred = self._global_prediction(g, B, E, Q, points.exposure)
        if block_mean is not None:
            blk = self.source_block[points.hole]
            ok = blk >= 0
            pred[ok] += np.einsum("nab,nb->na", Lp[ok], block_mean[blk[ok]])
        return pred - y

    def field_from(self, g: np.ndarray) -> DistortionField:
        """The :class:`DistortionField` of a global parameter vector.

        Parameters
        ----------
        g : numpy.ndarray
            (G,); its first ``2 nt`` entries are the field's coefficients, arcsec.

        Returns
        -------
        DistortionField
            Pixels to arcsec, on the points' domain.
        """
        nt = self.nt
        return DistortionField(flat_to_square(g[:nt], self.degree), flat_to_square(g[nt:2 * nt], self.degree),
                               self.points.domain, unit="arcsec", input_unit="pixel")

# the name this module's model class had before issue 20 (it also holds sky data): kept for
# one release, with a DeprecationWarning
from .._moved import renamed  # noqa: E402

__getattr__ = renamed(__name__, {"LabModel": "JointModel"})
