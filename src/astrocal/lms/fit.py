"""The LMS geometry fit: linear deviations integrated exactly, emcee over a few hyperparameters.

The data (:mod:`astrocal.lms.measure`'s tables) are

- **laser spots**: (col, row) with their 2 x 2 covariance, of a known (slice, xi, lam);
- **pinhole traces**: the row of the centre line of a hole's trace (slice, xi) at a column;
- **slice edges**: the row of a slice end (xi = +-0.4485") at a column.

The model (:class:`~astrocal.lms.LmsGeometry`) is exactly linear in the deviation parameters
``p``: ``(col, row) = nominal(s, xi, lam) + D(s, xi, lam) p``. Besides ``p`` every exposure with
the mask in the beam has its chopper error along the slice, ``dxi`` [mas] (prior
``offset_sigma_mas``), moving its spots and traces by ``d(col, row)/dxi``, and every laser
exposure a shift of its spots along the dispersion, ``dcol`` [px] (prior
``across_px_per_mas * offset_sigma_mas``: a hole off the slice centre moves its line; 1 mas
~ 0.03-0.04 px; by default ``across_px_per_mas`` is a hyperparameter, sampled: the exposures
that see the same slices measure the differences of their shifts, and so the shifts' scale).
A trace or edge point is linear in ``p`` at the wavelength where the curve reaches its column;
that wavelength is found with a reference geometry and the fit is re-linearised about its
posterior mean (twice), leaving errors far below 1e-3 px.

With a prior of the WCU mask's hole manufacturing errors (:class:`HoleTerms`,
:mod:`astrocal.lms.hole_prior`: the mask's tolerance, or the imager fit's posterior of the holes
both instruments see) every hole the data see has its error ``(dx, dy)`` [um, mask frame] as
two more linear parameters: it moves the hole along the slice (its spots and traces by
``d(col, row)/dxi``) and across (its spots along the dispersion by ``across_px_per_mas``) in
every exposure. Their prior is a full Gaussian ``N(mu, C)``; the fit integrates them through
the whitened parameters ``z = L^-1 (delta - mu)`` (``C = L L^T``), which have unit priors like
the others, and reports ``delta``.

All these linear parameters ``theta`` have zero-mean Gaussian priors
(:meth:`~astrocal.lms.DeviationLayout.prior_sigma`): the per-slice parts have width ``tau``, a
hyperparameter. The measured covariances are multiplied by an error scale ``s_g**2`` per kind
of data (spots, traces, edges), also hyperparameters. Given the hyperparameters ``phi = (log tau,
log s_g ...)`` the posterior of ``theta`` is Gaussian and the evidence ``p(y | phi)`` exact
(:class:`CollapsedLms`). With a per-slice residual beyond the polynomial (the layout's
``residual_m``, :mod:`astrocal.lms.deviations`) its coefficients are linear parameters too, with
prior widths set by more hyperparameters (by default, ``LmsFitSettings.residual_ard``, per axis its
rms [px] and a correlation length along xi and along lambda: six; else one rms and one isotropic
length), so they are integrated exactly in the same blocks. emcee samples ``phi`` (:func:`astrocal.model.sampling.run_emcee`) and
``theta`` is drawn exactly for each kept sample. The block structure (a data point involves
one slice's coefficients and the shared ones) makes each evaluation a batch of 12 x 12
(with a residual of ``m x m`` functions, ``12 + 2 m**2``) Cholesky factorisations and one of the
shared block; a slice's data involve only a few of the shared parameters (the exposures that see
it), so its triangular solve and its part of the shared block's Schur complement involve only
those (:mod:`astrocal.lms.elimination`). The fit runs in one BLAS thread (the blocks are small).

Units: px (0-based pixel centres on each chip), arcsec for xi (mas for the chopper errors), um.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike
from astropy.table import Table, vstack
from scipy import optimize, sparse

from ..model import inference, laplace, sampling
from .coverage import coverage_notes, laser_coverage
from .deviations import DeviationLayout, Hyperparameters
from .elimination import BlockArrow, cholesky_solve
from .geometry import LmsGeometry
from .hole_prior import HolePrior
from .slicer import DEFAULT_ORIENTATION, FieldOrientation
from .traces import N_SLICES, SLICE_HALF_LENGTH_ARCSEC, SettingLike

__all__ = ["GROUPS", "ExposureTerms", "HoleTerms", "Observations", "linearise", "CollapsedLms", "LmsFitSettings",
           "LmsFit", "fit_lms", "usable"]

log = logging.getLogger(__name__)

GROUPS = ("spots", "traces", "edges")
"""The kinds of data, each with its own error scale."""
TAU_BOUNDS_PX = (1e-3, 5.0)
SCALE_BOUNDS = (0.1, 10.0)
RESIDUAL_RMS_BOUNDS_PX = (1e-4, 1.0)
RESIDUAL_LENGTH_MAX = 8.0
RESIDUAL_LENGTH_MIN_FACTOR = 0.25
ACROSS_BOUNDS_PX_PER_MAS = (0.01, 0.2)
"""Bounds of the sampled along-dispersion shift of a laser spot per mas of chopper error across the
slice [px/mas] (log-uniform): the spot is the PSF cut by the 20.7-mas slice, ~2.7 px long along the
dispersion, so the light can move by at most ~0.13 px per mas (a PSF far narrower than the slice)
and by little when the PSF is far wider than the slice."""
"""Bounds of the per-slice residual's rms [px] and largest correlation length (normalised
slice units; the shortest is ``RESIDUAL_LENGTH_MIN_FACTOR`` (a quarter) of the basis's :attr:`~astrocal.field.residual.ResidualBasis.min_length`:
below that length the basis's prior is no longer close to the Matérn's, but it is still a valid
prior with its variance at the basis's highest frequencies, and on a simulated wave along the
slice the wider range gave intervals closer to their rate)."""
_XI_END = SLICE_HALF_LENGTH_ARCSEC


def usable(table: Table) -> np.ndarray:
    """Rows of a spots/traces/edges table that enter the fit: no flag, finite position.

    Parameters
    ----------
    table : Table
        A spots, traces or edges table (``flags``, ``row``, for spots ``col``).

    Returns
    -------
    ndarray of bool
    """
    ok = (np.asarray(table["flags"]) == 0) & np.isfinite(np.asarray(table["row"], float))
    if "col" in table.colnames:
        ok &= np.isfinite(np.asarray(table["col"], float))
    return ok


@dataclass(frozen=True)
class ExposureTerms:
    """The per-exposure linear parameters: ``names`` and, per exposure (by its stem), the
    index of its ``dxi`` [mas] and ``dcol`` [px] parameter among them (-1: none)."""

    stems: tuple
    dxi: tuple
    dcol: tuple
    names: tuple

    @classmethod
    def build(cls, exposures: Sequence[tuple[str, str]]) -> ExposureTerms:
        """The terms of a list of exposures: ``dxi`` for every one, ``dcol`` for laser ones.

        Parameters
        ----------
        exposures : sequence of (str, str)
            (stem, kind) with kind ``laser`` or ``grid``.

        Returns
        -------
        ExposureTerms
        """
        names, dxi, dcol = [], [], []
        for stem, kind in exposures:
            dxi.append(len(names))
            names.append(f"{stem}.dxi_mas")
            if kind == "laser":
                dcol.append(len(names))
                names.append(f"{stem}.dcol_px")
            else:
                dcol.append(-1)
        return cls(tuple(s for s, _ in exposures), tuple(dxi), tuple(dcol), tuple(names))

    def prior_sigma(self, offset_sigma_mas: float, across_px_per_mas: float) -> np.ndarray:
        """Prior widths of the terms.

        Parameters
        ----------
        offset_sigma_mas : float
            The chopper offsets' accuracy [mas] (the ``dxi`` terms).
        across_px_per_mas : float
            The spot's shift along the dispersion per mas across the slice [px/mas] (the ``dcol``
            terms: ``across_px_per_mas * offset_sigma_mas``).

        Returns
        -------
        ndarray
            One per name [mas, px].
        """
        sig = np.empty(len(self.names))
        sig[list(self.dxi)] = offset_sigma_mas
        k = [i for i in self.dcol if i >= 0]
        sig[k] = across_px_per_mas * offset_sigma_mas
        return sig


@dataclass(frozen=True)
class HoleTerms:
    """The mask's hole errors as linear parameters of the fit.

    Parameters
    ----------
    prior : HolePrior
        Their Gaussian prior in the mask frame [um] (:mod:`astrocal.lms.hole_prior`).
    to_slicer : ndarray (2, 2)
        ``(dxi [arcsec], deta [mas])`` of a hole per ``(dx, dy)`` [um] of its error: the mask's
        plate scale and the mask's orientation relative to the slicer (linear part).
    across_px_per_mas : float
        How far a laser spot moves along the dispersion per mas across the slice [px/mas] (as
        the per-exposure ``dcol`` term's prior scale, :class:`LmsFitSettings`).
    """

    prior: HolePrior
    to_slicer: np.ndarray
    across_px_per_mas: float

    @classmethod
    def build(cls, prior: HolePrior, mask_scale_mm_per_arcsec: float = 3.319,
              orientation: FieldOrientation = DEFAULT_ORIENTATION, across_px_per_mas: float = 0.05) -> HoleTerms:
        """From the mask's plate scale [mm/arcsec] and a :class:`~astrocal.lms.FieldOrientation`.

        Parameters
        ----------
        prior : HolePrior
            The hole errors' prior.
        mask_scale_mm_per_arcsec : float
            The mask's plate scale [mm/arcsec].
        orientation : FieldOrientation
            The mask's orientation in the slicer field (its linear part is used).
        across_px_per_mas : float
            [px/mas], as :attr:`across_px_per_mas`.

        Returns
        -------
        HoleTerms
        """
        o = np.array(orientation.to_slicer(0.0, 0.0), float)
        J = np.stack([np.array(orientation.to_slicer(1.0, 0.0), float) - o,
                      np.array(orientation.to_slicer(0.0, 1.0), float) - o], axis=1)   # d(xi, eta)/d(a, b)
        m = J / (float(mask_scale_mm_per_arcsec) * 1e3)                                # arcsec per um
        m[1] *= 1e3                                                                    # eta in mas
        return cls(prior, m, float(across_px_per_mas))

    @property
    def names(self) -> tuple:
        """The parameter names (:meth:`HolePrior.names`)."""
        return self.prior.names()

    def index(self, hole: ArrayLike) -> np.ndarray:
        """Position of each hole id in the prior.

        Parameters
        ----------
        hole : array_like of int
            Hole ids.

        Returns
        -------
        ndarray of int
            Their positions (-1: not there).
        """
        where = {int(h): k for k, h in enumerate(np.asarray(self.prior.hole_ids, int))}
        return np.array([where.get(int(h), -1) for h in np.ravel(hole)], int)


def data_holes(data: dict[str, Table]) -> np.ndarray:
    """Ids of the mask holes in the usable spots and traces of ``data`` (sorted).

    Parameters
    ----------
    data : dict of Table
        The stacked tables by group.

    Returns
    -------
    ndarray of int
    """
    out = []
    for g in ("spots", "traces"):
        t = data.get(g)
        if t is not None and len(t) and "hole" in t.colnames:
            h = np.asarray(t["hole"], int)[usable(t)]
            out.append(h[h >= 0])
    return np.unique(np.concatenate(out)) if out else np.zeros(0, int)


@dataclass(frozen=True)
class Observations:
    """Whitened linearised data: per group ``A`` (n, T) and ``y`` (n,) with ``y = A theta + e``,
    ``e ~ N(0, s_g^2 I)``; ``logdet`` the log-determinant of the stated covariance of the group;
    ``rows`` per group the table row of each whitened row (spots: 2 per spot). :func:`linearise`
    gives ``A`` as ``scipy.sparse`` CSR matrices (a row involves ~100 of the ~2500 parameters);
    :class:`CollapsedLms` also takes dense arrays."""

    A: dict
    y: dict
    logdet: dict
    rows: dict
    n_theta: int


def _whiten_spots(A0, A1, y, cov):
    """Spots' rows whitened by the Cholesky factor ``L`` of their covariance: ``L^-1 (col, row)``
    by forward substitution, rows interleaved (col, row per spot); and the log-determinant."""
    L = np.linalg.cholesky(cov)
    l00, l10, l11 = L[:, 0, 0], L[:, 1, 0], L[:, 1, 1]
    x0 = _divide_rows(A0, l00)
    x1 = _divide_rows(A1 - sparse.diags(l10) @ x0, l11)
    y0 = y[:, 0] / l00
    y1 = (y[:, 1] - l10 * y0) / l11
    n = len(y)
    order = np.arange(2 * n).reshape(2, n).T.ravel()               # spot i: rows 2i (col), 2i + 1 (row)
    return (sparse.vstack([x0, x1], format="csr")[order], np.stack([y0, y1], axis=1).ravel(),
            float(2 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)))))


def _divide_rows(a, d):
    """The rows of the sparse matrix ``a`` divided by ``d`` (CSR)."""
    a = sparse.csr_matrix(a, copy=True)
    a.data /= np.repeat(np.asarray(d, float), np.diff(a.indptr))
    return a


class _Entries:
    """Entries (row, column, value) of a sparse matrix, collected part by part."""

    def __init__(self):
        self.parts = []

    def add(self, rows, cols, values):
        rows = np.asarray(rows)
        self.parts.append((rows, np.broadcast_to(cols, rows.shape), np.broadcast_to(values, rows.shape)))

    def add_matrix(self, m, rows):
        """The entries of the sparse ``m`` with its row ``i`` as row ``rows[i]``."""
        m = m.tocoo()
        self.add(np.asarray(rows)[m.row], m.col, m.data)

    def csr(self, shape):
        if not self.parts:
            return sparse.csr_matrix(shape)
        r, c, v = (np.concatenate([p[i] for p in self.parts]) for i in range(3))
        return sparse.csr_matrix((v.astype(float), (r, c)), shape=shape)


def _lam_at_col(geometry, s, xi, setting, det, col, lam0, iterations=6):
    """Wavelength at which the curve (s, xi) reaches column ``col`` on chip ``det`` (Newton)."""
    lam = np.asarray(lam0, float).copy()
    for _ in range(iterations):
        c, r, jac = geometry.chip_position(s, xi, lam, setting, det)
        lam = lam - (c - col) / jac[:, 0, 1]
    c, r, jac = geometry.chip_position(s, xi, lam, setting, det)
    return lam, r, jac


def linearise(geometry: LmsGeometry, data: dict, terms: ExposureTerms, holes: HoleTerms | None = None) -> Observations:
    """The data linearised about ``geometry`` (its ``params`` = p0).

    The parameters are the deviations, the exposure terms and (with ``holes``) the hole errors
    [um] in that order.

    Parameters
    ----------
    geometry : LmsGeometry
        The point of linearisation.
    data : dict of Table
        ``{"spots": Table, "traces": Table, "edges": Table}`` (any may be missing), each with a
        ``setting`` column (index into the layout) and, for spots and traces, ``exposure``
        (index into ``terms``) and ``hole`` (with ``holes``); only :func:`usable` rows are used.
    terms : ExposureTerms
        The per-exposure terms.
    holes : HoleTerms, optional
        The hole errors' terms.

    Returns
    -------
    Observations
        Whitened design matrices (``scipy.sparse`` CSR) and data per group.
    """
    lay = geometry.layout
    P = lay.n_params
    PH = P + len(terms.names)
    T = PH + (2 * holes.prior.n_holes if holes is not None else 0)
    p0 = np.asarray(geometry.params)
    nominal = geometry.with_params(lay.zeros())
    A, Y, LD, ROWS = {}, {}, {}, {}
    t = data.get("spots")
    if t is not None and len(t):
        idx = np.flatnonzero(usable(t))
        a = (_Entries(), _Entries())                   # d col, d row
        y = np.zeros((len(idx), 2))
        for e in np.unique(np.asarray(t["setting"])[idx]):
            m = idx[np.asarray(t["setting"])[idx] == e]
            k = np.searchsorted(idx, m)
            s, xi, lam, det = (np.asarray(t[c])[m] for c in ("slice", "xi_arcsec", "line_um", "det"))
            c0, r0, _ = nominal.chip_position(s, xi, lam, e, det)
            _, _, jac = geometry.chip_position(s, xi, lam, e, det)
            for ax, d in enumerate(geometry.design_sparse(s, xi, lam, e, det=det)):
                a[ax].add_matrix(d, k)
            ex = np.asarray(t["exposure"])[m]
            kx = np.array(terms.dxi)[ex] + P
            kc = np.array(terms.dcol)[ex] + P
            along = np.stack([np.ones(len(m)), jac[:, 1, 1] / jac[:, 0, 1]], axis=1)
            for ax in (0, 1):
                a[ax].add(k, kx, jac[:, ax, 0] / 1e3)
                a[ax].add(k[kc >= P], kc[kc >= P], along[kc >= P, ax])
            if holes is not None:
                j = holes.index(np.asarray(t["hole"])[m])
                on = j >= 0
                m2 = holes.to_slicer
                for hx in (0, 1):                       # the hole's dx, dy [um]
                    col = jac[:, :, 0] * m2[0, hx] + along * holes.across_px_per_mas * m2[1, hx]
                    for ax in (0, 1):
                        a[ax].add(k[on], PH + 2 * j[on] + hx, col[on, ax])
            y[k] = np.stack([np.asarray(t["col"])[m] - c0, np.asarray(t["row"])[m] - r0], axis=1)
        cov = np.asarray(t["cov"], float)[idx]
        A["spots"], Y["spots"], LD["spots"] = _whiten_spots(a[0].csr((len(idx), T)), a[1].csr((len(idx), T)), y, cov)
        ROWS["spots"] = np.repeat(idx, 2)
    for g in ("traces", "edges"):
        t = data.get(g)
        if t is None or not len(t):
            continue
        idx = np.flatnonzero(usable(t))
        a = _Entries()
        y = np.zeros(len(idx))
        for e in np.unique(np.asarray(t["setting"])[idx]):
            m = idx[np.asarray(t["setting"])[idx] == e]
            k = np.searchsorted(idx, m)
            s, det, col = (np.asarray(t[c])[m] for c in ("slice", "det", "col"))
            xi = np.clip(np.asarray(t["xi_arcsec"], float)[m], -_XI_END, _XI_END)
            lam, r0, jac = _lam_at_col(geometry, s, xi, e, det, col, np.asarray(t["lam_nominal_um"], float)[m])
            slope = jac[:, 1, 1] / jac[:, 0, 1]
            d_col, d_row = geometry.design_sparse(s, xi, lam, e, det=det)
            deff = d_row - sparse.diags(slope) @ d_col            # d(row - slope col)/d(params)
            a.add_matrix(deff, k)
            y[k] = np.asarray(t["row"], float)[m] - r0 + deff @ p0
            if g == "traces":
                kx = np.array(terms.dxi)[np.asarray(t["exposure"])[m]] + P
                a.add(k, kx, (jac[:, 1, 0] - slope * jac[:, 0, 0]) / 1e3)
                if holes is not None:
                    j = holes.index(np.asarray(t["hole"])[m])
                    on = j >= 0
                    for ax in (0, 1):
                        a.add(k[on], PH + 2 * j[on] + ax,
                              ((jac[:, 1, 0] - slope * jac[:, 0, 0]) * holes.to_slicer[0, ax])[on])
        sig = np.asarray(t["sigma_row"], float)[idx]
        A[g], Y[g], LD[g] = _divide_rows(a.csr((len(idx), T)), sig), y / sig, float(2 * np.sum(np.log(sig)))
        ROWS[g] = idx
    return Observations(A, Y, LD, ROWS, T)


def whiten_holes(obs: Observations, n_first: int, mean: np.ndarray, chol: np.ndarray) -> Observations:
    """The observations in the whitened hole parameters ``z`` (``delta = mean + chol z``):
    columns ``n_first:`` (the hole errors) times ``chol``, and ``y - A_h mean``. Exact: the
    model is linear, so a fit of ``z`` with unit priors is the fit of ``delta ~ N(mean, chol chol^T)``.

    Parameters
    ----------
    obs : Observations
        :func:`linearise`'s observations.
    n_first : int
        Columns before the hole errors.
    mean : ndarray (2H,)
        The hole errors' prior mean [um].
    chol : ndarray (2H, 2H)
        Its covariance's Cholesky factor [um].

    Returns
    -------
    Observations
    """
    A, Y = {}, {}
    for g, a in obs.A.items():
        a = sparse.csr_matrix(a)
        ah = a[:, n_first:]
        A[g] = sparse.hstack([a[:, :n_first], sparse.csr_matrix(ah @ chol)], format="csr")
        Y[g] = obs.y[g] - ah @ mean
    return Observations(A, Y, obs.logdet, obs.rows, obs.n_theta)


class CollapsedLms:
    """``log p(phi | y)`` with the linear parameters integrated out, vectorised over rows of phi.

    The interface :func:`astrocal.model.sampling.run_emcee` uses: ``ndim``, ``hyper_names``,
    ``bounds()``, ``log_posterior(phi)`` ((n, ndim) -> (n,)), ``initial_guess()``.

    Parameters
    ----------
    obs : Observations
    prior_sigma_fixed : ndarray (T,)
        Prior widths of every linear parameter; the per-slice ones (``slice_index``) are
        replaced by ``tau``.
    slice_index : ndarray of int (28, K)
        The columns of each slice's coefficients (K = 2 x terms, plus the residual's).
    residual : (is_residual (K,) bool, prior_sd, (length_lo, length_hi)[, "ard"]), optional
        With a per-slice residual beyond the polynomial: which of a slice's columns are its
        coefficients (col then row, R each), their prior sd as a function of the hyperparameters
        (arrays (W,) -> (W, R)), and the lengths' bounds. Isotropic (3 items): ``prior_sd(rms,
        length)``, one rms [px] and one correlation length for both axes, the hyperparameters
        ``log_residual_rms_px``, ``log_residual_length`` after ``log_tau_px``. ARD (4th item
        ``"ard"``): ``prior_sd(rms, length_xi, length_w)``, per axis (col, row) its own rms and a
        length per dimension, the six hyperparameters ``log_residual_<axis>_rms_px``,
        ``log_residual_<axis>_length_xi``, ``log_residual_<axis>_length_w``.
    across : (index (D,) int, sigma_mas, start_px_per_mas), optional
        With a sampled scale of the laser exposures' along-dispersion shifts: their columns
        (shared parameters), the chopper's accuracy across the slice [mas] and the scale's
        starting value [px/mas]; their prior sd is ``exp(log_across_px_per_mas) * sigma_mas``,
        the hyperparameter (log-uniform within :data:`ACROSS_BOUNDS_PX_PER_MAS`) after the
        residual's. None: their widths are fixed in ``prior_sigma_fixed``.
    """

    def __init__(self, obs: Observations, prior_sigma_fixed, slice_index, residual=None, across=None):
        self.groups = tuple(g for g in GROUPS if g in obs.A)
        self.residual = residual
        self.across = across
        self.ard = residual is not None and len(residual) > 3 and residual[3] == "ard"
        if self.ard:
            res_names = tuple(f"log_residual_{a}_{h}" for a in ("col", "row") for h in ("rms_px", "length_xi", "length_w"))
        else:
            res_names = ("log_residual_rms_px", "log_residual_length") if residual is not None else ()
        self.n_res_hyper = len(res_names)
        across_names = ("log_across_px_per_mas",) if across is not None else ()
        self.n_mid = self.n_res_hyper + len(across_names)
        self.hyper_names = ("log_tau_px",) + res_names + across_names + tuple(f"log_scale_{g}" for g in self.groups)
        self.ndim = len(self.hyper_names)
        T = obs.n_theta
        sl = np.asarray(slice_index)
        glob = np.setdiff1d(np.arange(T), sl.ravel())
        self.slice_index, self.global_index = sl, glob
        if across is not None:
            k = np.asarray(across[0], int)
            if not np.all(np.isin(k, glob)):
                raise ValueError("across: the shifted columns must be shared (not per-slice) parameters")
            self.across_pos = np.searchsorted(glob, k)
        self.n_slice_params = sl.size
        self.sigma_global = np.asarray(prior_sigma_fixed, float)[glob]
        self.prior_sigma_fixed = np.asarray(prior_sigma_fixed, float)
        F, b, c, n, ld = [], [], [], [], []
        for g in self.groups:
            a, y = sparse.csr_matrix(obs.A[g]), obs.y[g]
            F.append((a.T @ a).toarray())
            b.append(a.T @ y)
            c.append(float(y @ y))
            n.append(len(y))
            ld.append(obs.logdet[g])
        self.F, self.b = np.array(F), np.array(b)
        self.c, self.n, self.logdet_c0 = np.array(c), np.array(n, float), float(np.sum(ld))
        self.blocks = BlockArrow(self.F[:, sl[:, :, None], sl[:, None, :]],       # (G, S, K, K)
                                 self.F[:, sl[:, :, None], glob[None, None, :]],  # (G, S, K, Q)
                                 self.F[:, glob[:, None], glob[None, :]],         # (G, Q, Q)
                                 self.b[:, sl], self.b[:, glob])
        self.n_theta = T

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of log phi: ``log tau``, the residual's ``log rms``, ``log length`` (if any; ARD:
        per axis ``log rms``, ``log length_xi``, ``log length_w``), and the groups' ``log s_g``.

        Returns
        -------
        lo, hi : ndarray (ndim,)
        """
        lo, hi = [np.log(TAU_BOUNDS_PX[0])], [np.log(TAU_BOUNDS_PX[1])]
        if self.residual is not None:
            n_len = 2 if self.ard else 1
            for _ in range(2 if self.ard else 1):
                lo += [np.log(RESIDUAL_RMS_BOUNDS_PX[0])] + [np.log(self.residual[2][0])] * n_len
                hi += [np.log(RESIDUAL_RMS_BOUNDS_PX[1])] + [np.log(self.residual[2][1])] * n_len
        if self.across is not None:
            lo.append(np.log(ACROSS_BOUNDS_PX_PER_MAS[0]))
            hi.append(np.log(ACROSS_BOUNDS_PX_PER_MAS[1]))
        lo = np.array(lo + [np.log(SCALE_BOUNDS[0])] * len(self.groups))
        hi = np.array(hi + [np.log(SCALE_BOUNDS[1])] * len(self.groups))
        return lo, hi

    def initial_guess(self) -> np.ndarray:
        """Starting log phi of the optimiser (tau 0.3 px, residual rms 0.01 px, scales 1).

        Returns
        -------
        ndarray (ndim,)
        """
        res = []
        if self.residual is not None:
            one = [np.log(0.01)] + [np.log(max(1.0, 1.2 * self.residual[2][0]))] * (2 if self.ard else 1)
            res = one * (2 if self.ard else 1)
        if self.across is not None:
            res = res + [float(np.log(np.clip(self.across[2], *ACROSS_BOUNDS_PX_PER_MAS)))]
        return np.array([np.log(0.3)] + res + [0.0] * len(self.groups))

    def _slice_prior_var(self, phi):
        """Prior variances of a slice block's columns, (W, K), for rows of phi."""
        K = self.slice_index.shape[1]
        d2 = np.repeat(np.exp(2 * phi[:, :1]), K, axis=1)
        if self.residual is not None:
            is_res, sd = self.residual[:2]
            e = np.exp(phi[:, 1:1 + self.n_res_hyper])
            if self.ard:
                c = sd(e[:, 0], e[:, 1], e[:, 2]).reshape(len(phi), -1)     # (W, R) col, then row
                r = sd(e[:, 3], e[:, 4], e[:, 5]).reshape(len(phi), -1)
            else:
                c = r = sd(e[:, 0], e[:, 1]).reshape(len(phi), -1)
            d2[:, is_res] = np.concatenate([c, r], axis=1) ** 2
        return d2

    def _weights(self, phi):
        """1 / s_g^2 per group, (W, G)."""
        return np.exp(-2 * phi[:, 1 + self.n_mid:])

    def _global_prior_var(self, phi):
        """Prior variances of the shared parameters, (W, Q): fixed, but for the laser exposures'
        along-dispersion shifts with a sampled ``across`` scale (``(exp(phi_a) sigma_mas)**2``)."""
        v = np.repeat(self.sigma_global[None] ** 2, len(phi), axis=0)
        if self.across is not None:
            a = np.exp(phi[:, 1 + self.n_res_hyper]) * float(self.across[1])
            v[:, self.across_pos] = (a**2)[:, None]
        return v

    def prior_sigma(self, phi: ArrayLike) -> np.ndarray:
        """Prior widths of all linear parameters at one phi.

        Parameters
        ----------
        phi : array_like (ndim,)
            Log hyperparameters.

        Returns
        -------
        ndarray (T,)
        """
        sig = self.prior_sigma_fixed.copy()
        phi = np.atleast_2d(np.asarray(phi, float))
        d = np.sqrt(self._slice_prior_var(phi)[0])
        sig[self.slice_index] = d[None, :]
        sig[self.global_index] = np.sqrt(self._global_prior_var(phi)[0])
        return sig

    def log_posterior(self, phi: ArrayLike) -> np.ndarray:
        """``log p(phi | y)`` up to a constant (-inf outside :meth:`bounds`).

        Parameters
        ----------
        phi : array_like (n, ndim) or (ndim,)
            Rows of log hyperparameters.

        Returns
        -------
        ndarray (n,)
        """
        phi = np.atleast_2d(np.asarray(phi, float))
        lo, hi = self.bounds()
        out = np.full(len(phi), -np.inf)
        ok = np.all((phi >= lo) & (phi <= hi) & np.isfinite(phi), axis=1)
        if ok.any():
            out[ok] = self._log_evidence(phi[ok])
        return out

    def _eliminate(self, phi):
        """The slice blocks eliminated (:meth:`BlockArrow.eliminate`) for rows of phi, with
        ``w`` (W, G) = 1 / s_g^2, the slice blocks' prior variances (W, K) and the shared ones'
        (W, Q); raises LinAlgError."""
        d2, w, g2 = self._slice_prior_var(phi), self._weights(phi), self._global_prior_var(phi)
        return self.blocks.eliminate(w, d2, g2), w, d2, g2

    def evidence_terms(self, phi: ArrayLike) -> dict[str, np.ndarray]:
        """The parts of ``log p(y | phi)`` for rows of phi (inside the bounds).

        ``log p = -(chi2 - quad + logdet_noise + logdet_prior + logdet_precision + n log 2 pi) / 2``
        with ``chi2 = y^T N^-1 y``, ``quad = b^T M^-1 b`` (``M`` the linear parameters' posterior
        precision, ``b = A^T N^-1 y``), the log-determinants of the noise covariance ``N``, of the
        prior covariance and of ``M``. ``chi2`` and ``quad`` are large and nearly equal (data
        far from the prior mean, zero, measured to a fraction of a pixel): their difference is
        known to ~1e-16 of ``chi2`` whatever the method.

        Parameters
        ----------
        phi : array_like (n, ndim)
            Log hyperparameters.

        Returns
        -------
        dict of ndarray (n,)
            ``chi2``, ``quad``, ``logdet_noise``, ``logdet_prior``, ``logdet_precision``; raises
            numpy.linalg.LinAlgError where a block is not positive definite. The rows are
            eliminated a few at a time (:attr:`BlockArrow.rows_per_chunk`).
        """
        phi = np.atleast_2d(np.asarray(phi, float))
        parts = []
        step = self.blocks.rows_per_chunk
        for a in range(0, len(phi), step):
            el, w, d2, g2 = self._eliminate(phi[a:a + step])
            z = cholesky_solve(el.schur, el.bS[..., None])[..., 0]       # schur's lower triangle: L_S
            LS = el.schur
            parts.append({"chi2": w @ self.c,
                          "quad": el.quad_slices + np.einsum("wq,wq->w", z, z),
                          "logdet_noise": self.logdet_c0 - (np.log(w) @ self.n),
                          "logdet_prior": N_SLICES * np.sum(np.log(d2), axis=1) + np.sum(np.log(g2), axis=1),
                          "logdet_precision": el.logdet_slices
                          + 2 * np.sum(np.log(np.diagonal(LS, axis1=-2, axis2=-1)), axis=1)})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _log_evidence(self, phi):
        try:
            t = self.evidence_terms(phi)
        except np.linalg.LinAlgError:
            return np.full(len(phi), -np.inf)
        ntot = float(np.sum(self.n))
        return -0.5 * (t["chi2"] - t["quad"] + t["logdet_noise"] + t["logdet_prior"] + t["logdet_precision"]
                       + ntot * np.log(2 * np.pi))

    def precision(self, phi: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The posterior precision of the linear parameters at one phi: mean ``M^-1 b``,
        covariance ``M^-1``.

        Parameters
        ----------
        phi : array_like (ndim,)
            Log hyperparameters.

        Returns
        -------
        M : ndarray (T, T)
        b : ndarray (T,)
        """
        w = self._weights(np.atleast_2d(np.asarray(phi, float)))[0]
        M = np.einsum("g,gij->ij", w, self.F) + np.diag(1.0 / self.prior_sigma(phi) ** 2)
        return M, w @ self.b

    def conditional_mean(self, phi: ArrayLike) -> np.ndarray:
        """The posterior mean of the linear parameters at one phi.

        Parameters
        ----------
        phi : array_like (ndim,)
            Log hyperparameters.

        Returns
        -------
        ndarray (T,)
        """
        M, b = self.precision(phi)
        return np.linalg.solve(M, b)

    def draw(self, phi_samples: ArrayLike, rng: np.random.Generator, per_phi: int = 1,
             batch: int = 16) -> np.ndarray:
        """Exact draws of the linear parameters: ``per_phi`` for each row of ``phi_samples``
        (consecutive). The shared block is drawn from its marginal (precision: the Schur
        complement), then each slice block given it.

        Parameters
        ----------
        phi_samples : array_like (n, ndim)
            Log hyperparameters.
        rng : numpy.random.Generator
            The random numbers.
        per_phi : int
            Draws per row of ``phi_samples``.
        batch : int
            Rows of ``phi_samples`` handled at once.

        Returns
        -------
        ndarray (n x per_phi, T)
        """
        phi_samples = np.atleast_2d(phi_samples)
        out = np.empty((len(phi_samples) * per_phi, self.n_theta))
        sl, gl = self.slice_index, self.global_index
        for a in range(0, len(phi_samples), batch):
            el, _, _, _ = self._eliminate(phi_samples[a:a + batch])
            W, Q = el.bS.shape
            LS = np.linalg.cholesky(el.schur)
            mu_g = np.linalg.solve(el.schur, el.bS[..., None])                               # (W, Q, 1)
            zg = rng.standard_normal((W * per_phi, Q)).reshape(W, per_phi, Q)
            g = mu_g + np.linalg.solve(np.swapaxes(LS, -1, -2), np.swapaxes(zg, 1, 2))      # L^-T z: (W, Q, P)
            g = np.swapaxes(g, 1, 2)                                                          # (W, P, Q)
            zb = rng.standard_normal((W * per_phi,) + el.Z.shape[1:-1]).reshape((W, per_phi) + el.Z.shape[1:-1])
            b = self.blocks.slice_solutions(el, g, zb)                                        # (W, P, S, K)
            rows = slice(a * per_phi, (a + W) * per_phi)
            blk = out[rows]
            blk[:, gl] = g.reshape(-1, Q)
            blk[:, sl.ravel()] = b.reshape(W * per_phi, -1)
            out[rows] = blk
        return out


@dataclass
class LmsFitSettings:
    """Settings of :func:`fit_lms`. ``hyper``: the fixed prior widths (its ``tau_px`` is the
    starting value; tau is sampled); ``offset_sigma_mas``, ``across_px_per_mas``: the
    per-exposure priors; ``relinearise``: passes about the posterior mean; the emcee settings
    (``walkers``, ``steps``, ``seed``, ``n_draws``, ...) as :class:`astrocal.model.inference.FitSettings`;
    ``holes``: the prior of the mask's hole errors (:class:`~astrocal.lms.hole_prior.HolePrior`;
    None: the mask table's positions are exact) with the mask's plate scale [mm/arcsec] and
    orientation relative to the slicer, which map a hole's error onto the slicer;
    ``residual_ard``: with a per-slice residual (the layout's ``residual_m``), per axis its own
    rms and a correlation length per dimension (six hyperparameters, :class:`CollapsedLms`);
    ``sample_across``: the scale of the laser exposures' along-dispersion shifts
    (``across_px_per_mas`` its starting value) is a hyperparameter, log-uniform within
    :data:`ACROSS_BOUNDS_PX_PER_MAS` (False: fixed at ``across_px_per_mas``; the hole terms'
    across effect uses ``across_px_per_mas`` either way)
    instead of one rms and one isotropic length."""

    hyper: Hyperparameters = Hyperparameters()
    offset_sigma_mas: float = 1.0
    across_px_per_mas: float = 0.05
    relinearise: int = 2
    walkers: int = 16
    steps: int = 3000
    min_steps: int = 300
    target_neff: int = 400
    check_every: int = 100
    seed: int = 1
    n_draws: int = 400
    progress: object = False
    backend_path: object = None
    resume: bool = False
    chain_record: dict = None
    holes: HolePrior | None = None
    mask_scale_mm_per_arcsec: float = 3.319
    orientation: object = DEFAULT_ORIENTATION
    residual_ard: bool = True
    sample_across: bool = True


@dataclass
class LmsFit:
    """Result of :func:`fit_lms`.

    ``layout``; ``truth`` (optical-model direction); ``terms`` the exposure parameters;
    ``theta_samples`` (K, T) exact draws of all linear parameters (``[:layout.n_params]`` the
    deviations); ``phi_chain`` (steps, walkers, ndim), ``phi_samples`` (K, ndim),
    ``phi_map``; ``hyper_names``; ``diagnostics`` (:class:`astrocal.model.sampling.Diagnostics`);
    ``data`` the tables fitted; ``observations`` the final linearisation; ``reference`` the
    geometry it was linearised about; ``holes`` the hole-error terms (None: not fitted), their
    draws [um] the last columns of ``theta_samples`` (:attr:`hole_samples`); ``coverage`` the
    laser exposures reaching each slice per setting and ``coverage_notes`` what that leaves to
    the priors (:mod:`astrocal.lms.coverage`).
    """

    layout: DeviationLayout
    truth: str
    terms: ExposureTerms
    theta_samples: np.ndarray
    phi_chain: np.ndarray
    phi_samples: np.ndarray
    phi_map: np.ndarray
    hyper_names: tuple
    diagnostics: object
    data: dict
    observations: Observations
    reference: LmsGeometry
    settings: LmsFitSettings = field(default_factory=LmsFitSettings)
    holes: HoleTerms | None = None
    coverage: list = field(default_factory=list)
    coverage_notes: list = field(default_factory=list)

    @property
    def param_samples(self) -> np.ndarray:
        """Draws of the deviation parameters, (K, P)."""
        return self.theta_samples[:, :self.layout.n_params]

    @property
    def names(self) -> tuple:
        """The linear parameters' names: deviations, exposure terms, hole errors."""
        return tuple(self.layout.names) + tuple(self.terms.names) + (self.holes.names if self.holes else ())

    @property
    def hole_samples(self) -> np.ndarray | None:
        """Draws of the hole errors [um, mask frame], (K, H, 2) in ``holes.prior.hole_ids``
        order; None without hole terms."""
        if self.holes is None:
            return None
        n0 = self.layout.n_params + len(self.terms.names)
        return self.theta_samples[:, n0:].reshape(len(self.theta_samples), -1, 2)

    def geometry(self) -> LmsGeometry:
        """The geometry at the posterior mean of the deviations.

        Returns
        -------
        LmsGeometry
        """
        return LmsGeometry(self.layout, self.param_samples.mean(axis=0), self.truth)

    def position_samples(self, slice_number: ArrayLike, xi: ArrayLike, lam: ArrayLike, setting: SettingLike,
                         det: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draws of (col, row) [px] of given (slice, xi, lam).

        Parameters
        ----------
        slice_number, xi, lam : array_like
            Slice 1..28, position along the slice [arcsec], wavelength [um].
        setting : int, float or EchelleSetting
            Index, :class:`~astrocal.lms.EchelleSetting` or central wavelength [um].
        det : array_like of int, optional
            The chip of each point (default: where the posterior-mean geometry puts it).

        Returns
        -------
        positions : ndarray (K, N, 2)
            [px].
        det : ndarray (N,)
            The chips.
        """
        g = self.geometry()
        if det is None:
            det = g.forward(slice_number, xi, lam, setting).det
        nominal = g.with_params(self.layout.zeros())
        c0, r0, _ = nominal.chip_position(slice_number, xi, lam, setting, det)
        D = g.design_matrix(slice_number, xi, lam, setting, det=det)
        return np.stack([c0, r0], axis=1)[None] + np.einsum("nkp,sp->snk", D, self.param_samples), det

    def pixel_geometry(self, det: ArrayLike, col: ArrayLike, row: ArrayLike, setting: SettingLike,
                       chunk: int = 20000) -> dict[str, np.ndarray]:
        """(slice, xi [arcsec], lam [um]) at detector pixels with their posterior sd.

        The posterior-mean geometry's inverse gives slice, xi and lam; their sd is the exact
        linear propagation of the deviation draws: ``d(xi, lam) = -J^-1 D dp`` (``J`` =
        d(col, row)/d(xi, lam)). Pixels on no slice get slice 0 and NaN.

        Parameters
        ----------
        det, col, row : array_like
            Chip 1..4 and 0-based pixel-centre coordinates [px].
        setting : int, float or EchelleSetting
            Index, :class:`~astrocal.lms.EchelleSetting` or central wavelength [um].
        chunk : int
            Pixels handled at once.

        Returns
        -------
        dict of ndarray
            ``slice``, ``xi``, ``lam``, ``sigma_xi``, ``sigma_lam``, ``cov_xi_lam``.
        """
        g = self.geometry()
        det, col, row = (np.ravel(np.asarray(a)) for a in np.broadcast_arrays(det, col, row))
        out = {k: np.full(det.size, np.nan) for k in ("xi", "lam", "sigma_xi", "sigma_lam", "cov_xi_lam")}
        out["slice"] = np.zeros(det.size, int)
        dp = self.param_samples - self.param_samples.mean(axis=0)
        for a in range(0, det.size, chunk):
            sl = slice(a, a + chunk)
            sp = g.inverse(det[sl], col[sl], row[sl], setting, on_miss="mask")
            on = np.flatnonzero(sp.slice > 0)
            if not on.size:
                continue
            s, xi, lam, d = sp.slice[on], sp.xi[on], sp.lam[on], det[sl][on]
            _, _, jac = g.chip_position(s, xi, lam, setting, d)
            D = g.design_matrix(s, np.clip(xi, -_XI_END, _XI_END), lam, setting, det=d)
            G = -np.linalg.solve(jac, D)                               # (n, 2, P)
            dv = np.einsum("nkp,sp->snk", G, dp)                       # (K, n, 2)
            cov = np.einsum("snk,snl->nkl", dv, dv) / (len(dp) - 1)
            idx = np.arange(det.size)[sl][on]
            out["slice"][idx] = s
            out["xi"][idx], out["lam"][idx] = xi, lam
            out["sigma_xi"][idx], out["sigma_lam"][idx] = np.sqrt(cov[:, 0, 0]), np.sqrt(cov[:, 1, 1])
            out["cov_xi_lam"][idx] = cov[:, 0, 1]
        return out

    def detector_maps(self, setting: SettingLike, det: int, step: int = 8
                      ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Images of slice, xi, lam and their sd on chip ``det`` at every ``step``-th pixel.

        Parameters
        ----------
        setting : int, float or EchelleSetting
            Index, :class:`~astrocal.lms.EchelleSetting` or central wavelength [um].
        det : int
            Chip 1..4.
        step : int
            Sampling [px] (``step=1``: every pixel; costs ~1 s per 1e5 pixels).

        Returns
        -------
        maps : dict of 2-D ndarray
            As :meth:`pixel_geometry`.
        cols, rows : ndarray
            The sampled columns and rows [px].
        """
        cols = np.arange(0, 2048, step, dtype=float)
        rows = np.arange(0, 2048, step, dtype=float)
        cc, rr = np.meshgrid(cols, rows)
        pg = self.pixel_geometry(np.full(cc.size, det), cc.ravel(), rr.ravel(), setting)
        return {k: v.reshape(cc.shape) for k, v in pg.items()}, cols, rows

    def residuals(self) -> dict:
        """Per group the residuals ``y - A theta_mean`` of the whitened data (in sigma).

        Returns
        -------
        dict of ndarray
            By group, one per whitened row (spots: 2 per spot; :func:`~astrocal.lms.fit_campaign.pixel_residuals`
            gives them in pixels).
        """
        theta = self.theta_samples.mean(axis=0)
        out = {}
        for g, a in self.observations.A.items():
            out[g] = self.observations.y[g] - a @ theta
        return out


def _slice_index(layout: DeviationLayout):
    k = 2 * layout.slice_width
    return layout.blocks["slices"].start + np.arange(N_SLICES)[:, None] * k + np.arange(k)[None, :]


def _residual_spec(layout: DeviationLayout, ard: bool = False):
    """The :class:`CollapsedLms` ``residual`` argument of a layout (None without a residual);
    ``ard``: per-axis rms and a length per dimension (:meth:`DeviationLayout.residual_prior_sd_ard`)."""
    if not layout.residual_m:
        return None
    rb = layout.residual_basis
    bounds = (RESIDUAL_LENGTH_MIN_FACTOR * rb.min_length, RESIDUAL_LENGTH_MAX)
    if ard:
        return layout.slice_block_is_residual(), layout.residual_prior_sd_ard, bounds, "ard"
    return layout.slice_block_is_residual(), layout.residual_prior_sd, bounds


MAP_STEP = 1e-4
"""The step of :func:`map_hyperparameters`'s central-difference gradient [log units]. The collapsed
log posterior is a sum of tens of thousands of nats whose round-off is a few 1e-6 nats, so a
step of 1e-8 (scipy's default forward difference) gives gradients off by hundreds and the
search stops far from the maximum; at 1e-4 the round-off adds ~0.05 to a gradient and the
truncation error (h**2 times the third derivative) is smaller still."""


def map_hyperparameters(model: CollapsedLms, phi0: ArrayLike) -> tuple[np.ndarray, float]:
    """The maximum of ``model.log_posterior`` (L-BFGS-B within the bounds).

    The gradient is a central difference of step :data:`MAP_STEP` (one-sided at a bound),
    all ``2 ndim + 1`` points evaluated in one batched call, and the search minimises the log
    posterior relative to its value at the start (so that L-BFGS-B's relative stopping test
    acts on what is left to gain, not on the tens of thousands of nats of the constant).

    Parameters
    ----------
    model : CollapsedLms
        The collapsed posterior.
    phi0 : array_like (ndim,)
        Starting log hyperparameters (moved inside the bounds).

    Returns
    -------
    phi : ndarray (ndim,)
        The maximum.
    log_posterior : float
        Its value.
    """
    lo, hi = model.bounds()
    h = MAP_STEP
    x0 = np.clip(np.asarray(phi0, float), lo + 2 * h, hi - 2 * h)
    n = x0.size
    f0 = float(model.log_posterior(x0)[0])

    def value_and_gradient(x):
        up, dn = np.minimum(x + h, hi), np.maximum(x - h, lo)
        v = model.log_posterior(np.vstack([x, x + np.diag(up - x), x - np.diag(x - dn)]))
        if not np.isfinite(v[0]):
            return 1e300, np.zeros(n)
        g = (v[1:n + 1] - v[n + 1:]) / (up - dn)
        return -(v[0] - f0), -np.where(np.isfinite(g), g, 0.0)

    res = optimize.minimize(value_and_gradient, x0, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)))
    phi = np.clip(res.x, lo, hi)
    return phi, float(model.log_posterior(phi)[0])


def fit_lms(data: dict, layout: DeviationLayout, terms: ExposureTerms, settings: LmsFitSettings | None = None,
            truth: str = "forward") -> LmsFit:
    """Fit the LMS geometry to measured spots, traces and edges (see the module docstring).

    Parameters
    ----------
    data : dict of Table
        ``{"spots", "traces", "edges"}`` tables with ``setting`` (index into
        ``layout.settings``) and, for spots and traces, ``exposure`` (index into ``terms``).
    layout : DeviationLayout
        The settings and the deviation parameters.
    terms : ExposureTerms
        The per-exposure terms.
    settings : LmsFitSettings, optional
        The prior widths, the chain and the hole prior (default: :class:`LmsFitSettings`).
    truth : {"forward", "inverse"}
        The optical model's exact direction.

    Returns
    -------
    LmsFit
    """
    from threadpoolctl import threadpool_limits

    # the blocks are small (tens of rows): more BLAS threads only contend on a shared machine
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_lms(data, layout, terms, settings or LmsFitSettings(), truth)


def _fit_lms(data, layout, terms, settings, truth):

    prior_fixed = np.concatenate([layout.prior_sigma(settings.hyper),
                                  terms.prior_sigma(settings.offset_sigma_mas, settings.across_px_per_mas)])
    holes = None
    if settings.holes is not None:
        holes = HoleTerms.build(settings.holes, settings.mask_scale_mm_per_arcsec, settings.orientation,
                                settings.across_px_per_mas)
        h_mean, h_chol = np.asarray(settings.holes.mean_um, float).ravel(), settings.holes.cholesky()
        prior_fixed = np.concatenate([prior_fixed, np.ones(h_mean.size)])      # z ~ N(0, 1)
    n_first = len(prior_fixed) - (2 * holes.prior.n_holes if holes else 0)
    geometry = LmsGeometry(layout, truth=truth)
    sl = _slice_index(layout)
    dcol = [layout.n_params + i for i in terms.dcol if i >= 0]
    across = (np.array(dcol, int), settings.offset_sigma_mas, settings.across_px_per_mas) \
        if settings.sample_across and dcol and settings.offset_sigma_mas > 0 else None
    phi = None
    for it in range(settings.relinearise + 1):
        obs = linearise(geometry, data, terms, holes)
        fitted = whiten_holes(obs, n_first, h_mean, h_chol) if holes else obs
        model = CollapsedLms(fitted, prior_fixed, sl, _residual_spec(layout, settings.residual_ard), across)
        phi, lp = map_hyperparameters(model, model.initial_guess() if phi is None else phi)
        theta = model.conditional_mean(phi)
        log.info("LMS fit pass %d: hyperparameters %s at MAP, log posterior %.1f", it,
                 dict(zip(model.hyper_names, np.round(np.exp(phi), 4))), lp)
        if it < settings.relinearise:
            geometry = geometry.with_params(theta[:layout.n_params])
    es = inference.FitSettings(walkers=settings.walkers, steps=settings.steps, min_steps=settings.min_steps,
                               target_neff=settings.target_neff, check_every=settings.check_every,
                               seed=settings.seed, progress=settings.progress, backend_path=settings.backend_path,
                               resume=settings.resume, chain_record=settings.chain_record)
    _, hess = laplace.laplace_evidence(model, phi, lp)
    chain, sampler = sampling.run_emcee(model, phi, es, hessian=hess)
    diag = sampling.diagnostics(chain, sampler, es)
    flat = chain[diag.n_burn:].reshape(-1, model.ndim)
    rng = np.random.default_rng(settings.seed)
    pick = flat[np.linspace(0, len(flat) - 1, min(settings.n_draws, len(flat))).astype(int)]
    theta_samples = model.draw(pick, rng)
    if holes:
        theta_samples[:, n_first:] = h_mean[None, :] + theta_samples[:, n_first:] @ h_chol.T     # z -> um
    coverage = laser_coverage(data.get("spots"), [st.lam_c_um for st in layout.settings])
    across = settings.across_px_per_mas       # the sampled scale's posterior median where it is sampled
    if "log_across_px_per_mas" in model.hyper_names:
        across = float(np.exp(np.median(pick[:, list(model.hyper_names).index("log_across_px_per_mas")])))
    notes = coverage_notes(coverage, across, settings.offset_sigma_mas)
    for note in notes:
        log.warning("LMS laser coverage: %s", note)
    return LmsFit(layout, truth, terms, theta_samples, chain, pick, phi, model.hyper_names, diag, data, obs,
                  geometry, settings, holes, coverage, notes)


def stack_tables(tables: Sequence[tuple[Table, int, int]], kind: str) -> Table | None:
    """Join the per-frame tables of one kind, keeping the columns the fit needs.

    Parameters
    ----------
    tables : sequence of (Table, int, int)
        (table, setting index, exposure index) per frame.
    kind : {"spots", "traces", "edges"}
        Their kind.

    Returns
    -------
    Table or None
        With ``setting`` and ``exposure`` columns; None without tables.
    """
    cols = {"spots": ["hole", "slice", "line_um", "xi_arcsec", "det", "col", "row", "cov", "flags"],
            "traces": ["hole", "slice", "xi_arcsec", "det", "col", "row", "sigma_row", "lam_nominal_um", "flags"],
            "edges": ["slice", "xi_arcsec", "det", "col", "row", "sigma_row", "lam_nominal_um", "flags"]}[kind]
    if kind == "spots" and all({"fwhm_col_px", "fwhm_row_px"} <= set(t.colnames) for t, _, _ in tables):
        cols = cols + ["fwhm_col_px", "fwhm_row_px"]             # for the products' QC only
    parts = []
    for t, setting, exposure in tables:
        u = Table({c: t[c] for c in cols})
        u["setting"] = np.full(len(t), setting, int)
        u["exposure"] = np.full(len(t), exposure, int)
        parts.append(u)
    return vstack(parts, metadata_conflicts="silent") if parts else None


def replace_settings(settings: LmsFitSettings, **kw: object) -> LmsFitSettings:
    """A copy of ``settings`` with fields replaced (:func:`dataclasses.replace`).

    Parameters
    ----------
    settings : LmsFitSettings
        The settings.
    **kw : object
        The fields to replace.

    Returns
    -------
    LmsFitSettings
    """
    return replace(settings, **kw)
