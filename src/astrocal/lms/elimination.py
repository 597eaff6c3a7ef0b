"""The block-arrow elimination of the LMS fit's linear parameters, for many hyperparameter rows at once.

The posterior precision of the LMS fit's linear parameters (:class:`astrocal.lms.fit.CollapsedLms`)
is block-arrow shaped: per slice ``s`` a ``K x K`` block ``B_s`` (its polynomial and residual
coefficients), the shared ``Q x Q`` block ``E`` (mean polynomial, chip placement, setting shifts,
exposure terms, hole errors) and the cross terms ``C_s`` (``K x Q``). Every block is a sum over the
kinds of data ``g`` of fixed normal-equation blocks ``F_g`` weighted by ``w_g = 1 / s_g**2``, plus
the prior precisions on the diagonal; the right-hand sides ``b = sum_g w_g b_g`` likewise.

A slice's data involve only a few of the shared parameters (the exposures whose holes fall on
it, its chip's placement, its setting): ``C_s`` has ``q_s`` non-zero columns, ~30 of 118 in a
campaign of 32 chopper offsets, and they are the same for every hyperparameter row (a zero column
of every ``F_g`` is zero at any weights). With the Cholesky factor ``B_s = L_s L_s^T`` and, over
those columns only, ``[z_s, Zc_s] = L_s^-1 [b_s, C_s]``::

    b^T M^-1 b = sum_s z_s^T z_s + bS^T S^-1 bS,
    log det M  = sum_s log det B_s + log det S,
    S  = E - sum_s Zc_s^T Zc_s,        bS = b_E - sum_s Zc_s^T z_s,

(``S`` the Schur complement of the slice blocks; ``M`` the whole precision). The slices whose
columns are the same (slices under the same exposures) are summed in one product: one Gram
matrix ``[z, Zc]^T [z, Zc]`` over their stacked rows gives their ``sum z_s^T z_s``, their part
of ``bS`` and of ``S``.

Cost per hyperparameter row, ``S = 28`` slices of ``K = 84`` (``residual_m = 6``): the Cholesky
factors (``S K**3 / 3``, ~5.5 Mflop), one triangular solve with ``1 + q_s`` right-hand sides
(``S K**2 (1 + q_s)``, ~6 Mflop) and the Gram matrices (``2 S K (1 + q_s)**2``, ~5 Mflop),
against ~130 Mflop for LU solves of ``B_s`` with all ``Q + 1`` right-hand sides and the dense
``C^T B^-1 C``. The Cholesky factors and the triangular solves are LAPACK ``dpotrf`` and BLAS
``dtrsm`` per block (:func:`cholesky_solve`), in place on views that need no copy.
:class:`~astrocal.lms.fit.CollapsedLms` eliminates the rows a few at a time (:data:`WORK_BYTES`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import dtrsm
from scipy.linalg.lapack import dpotrf

__all__ = ["SliceCoupling", "Elimination", "BlockArrow", "cholesky_solve", "WORK_BYTES"]

WORK_BYTES = 30e6
"""Size of the slice blocks and right-hand sides of the rows eliminated at once [bytes]
(:attr:`BlockArrow.rows_per_chunk`; 13 rows at ``residual_m = 6``, so emcee's half-ensembles of 12
go in one): work arrays below glibc's largest mmap threshold (32 MB) are reused by the allocator
from call to call, where larger ones are mapped and faulted in again at every call (measured: 0.34
against 0.17 ms per row to form the blocks of 24 rows at once rather than 12)."""


def cholesky_solve(B: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Cholesky factors ``B = L L^T`` and ``L^-1 R`` for stacks of blocks, both in place.

    LAPACK ``dpotrf`` then BLAS ``dtrsm`` per block, on views that need no copy: a C-ordered
    ``B`` is its Fortran-ordered transpose (the same, symmetric), whose upper factor ``L^T`` is
    the C-ordered lower triangle; ``L^-1 R`` is solved from the right as ``R^T L^-T``.

    Parameters
    ----------
    B : ndarray (..., K, K)
        Symmetric positive definite blocks, C-contiguous; their lower triangle is overwritten by
        ``L``, the strict upper triangle is left as it was (not zeroed).
    R : ndarray (..., K, n)
        Right-hand sides, C-contiguous; overwritten by ``L^-1 R``.

    Returns
    -------
    ndarray (..., K, n)
        ``R``, holding ``L^-1 R``.

    Raises
    ------
    numpy.linalg.LinAlgError
        A block is not positive definite.
    ValueError
        ``B`` or ``R`` is not C-contiguous.
    """
    if not (B.flags.c_contiguous and R.flags.c_contiguous):
        raise ValueError("cholesky_solve needs C-contiguous B and R (both are overwritten in place)")
    K, n = R.shape[-2:]
    for a, b in zip(B.reshape(-1, K, K), R.reshape(-1, K, n)):
        _, info = dpotrf(a.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"a block is not positive definite (dpotrf info {info})")
        dtrsm(1.0, a.T, b.T, side=1, lower=0, overwrite_b=1)
    return R


@dataclass(frozen=True)
class SliceCoupling:
    """Which shared parameters each slice's data involve.

    Attributes
    ----------
    columns : ndarray of int (S, qmax)
        Per slice its coupled shared columns (positions among the ``Q`` shared parameters,
        ascending), padded with ``Q`` (a column of zeros appended to the shared ones).
    groups : tuple of (ndarray, ndarray)
        ``(slices, cols)``: the slices (positions 0..S-1) whose coupled columns are ``cols``.
    n_shared : int
        ``Q``.
    """

    columns: np.ndarray
    groups: tuple
    n_shared: int

    @classmethod
    def from_cross(cls, FC: np.ndarray) -> SliceCoupling:
        """From the cross blocks of the normal equations.

        Parameters
        ----------
        FC : ndarray (G, S, K, Q)
            Per kind of data the slice x shared blocks.

        Returns
        -------
        SliceCoupling
        """
        G, S, K, Q = FC.shape
        nz = np.any(FC != 0, axis=(0, 2))                      # (S, Q)
        sets = {}
        for s in range(S):
            sets.setdefault(tuple(np.flatnonzero(nz[s])), []).append(s)
        qmax = max([len(c) for c in sets] + [0])
        columns = np.full((S, qmax), Q, int)
        groups = []
        for cols, slices in sets.items():
            columns[slices, :len(cols)] = cols
            groups.append((np.array(slices, int), np.array(cols, int)))
        return cls(columns, tuple(groups), Q)

    def gather(self, FC: np.ndarray, bB: np.ndarray) -> np.ndarray:
        """The right-hand sides of the slices' solves: ``[b_s, C_s (coupled columns)]``.

        Parameters
        ----------
        FC : ndarray (G, S, K, Q)
            The cross blocks per kind of data.
        bB : ndarray (G, S, K)
            The slices' right-hand sides per kind of data.

        Returns
        -------
        ndarray (G, S, K, 1 + qmax)
            Column 0 ``b_s``, then the coupled columns of ``C_s`` (zeros where padded).
        """
        FCx = np.concatenate([FC, np.zeros(FC.shape[:-1] + (1,))], axis=-1)
        cross = np.take_along_axis(FCx, self.columns[None, :, None, :], axis=-1)
        return np.concatenate([bB[..., None], cross], axis=-1)


@dataclass
class Elimination:
    """The slice blocks eliminated for W hyperparameter rows.

    Attributes
    ----------
    LB : ndarray (W, S, K, K)
        The slice blocks' Cholesky factors in their lower triangles (the strict upper triangles
        hold the blocks' values: :func:`cholesky_solve`).
    Z : ndarray (W, S, K, 1 + qmax)
        ``L_s^-1 [b_s, C_s]`` over each slice's coupled columns (:class:`SliceCoupling`).
    schur : ndarray (W, Q, Q)
        ``S = E - sum_s C_s^T B_s^-1 C_s``.
    bS : ndarray (W, Q)
        ``b_E - sum_s C_s^T B_s^-1 b_s``.
    quad_slices : ndarray (W,)
        ``sum_s b_s^T B_s^-1 b_s``.
    logdet_slices : ndarray (W,)
        ``sum_s log det B_s``.
    """

    LB: np.ndarray
    Z: np.ndarray
    schur: np.ndarray
    bS: np.ndarray
    quad_slices: np.ndarray
    logdet_slices: np.ndarray


class BlockArrow:
    """The normal equations of the LMS fit in block-arrow form, eliminated for many weights at once.

    Parameters
    ----------
    FB : ndarray (G, S, K, K)
        Per kind of data ``g`` the slice blocks of ``A_g^T A_g``.
    FC : ndarray (G, S, K, Q)
        The slice x shared blocks.
    FE : ndarray (G, Q, Q)
        The shared block.
    bB : ndarray (G, S, K)
        The slices' parts of ``A_g^T y_g``.
    bE : ndarray (G, Q)
        The shared part.
    """

    def __init__(self, FB: np.ndarray, FC: np.ndarray, FE: np.ndarray, bB: np.ndarray, bE: np.ndarray):
        self.coupling = SliceCoupling.from_cross(FC)
        self.FB, self.FE, self.bE = FB, FE, bE
        self.FR = self.coupling.gather(FC, bB)                     # (G, S, K, 1 + qmax)

    @property
    def rows_per_chunk(self) -> int:
        """Hyperparameter rows whose slice blocks and right-hand sides fit in :data:`WORK_BYTES`."""
        G, S, K, n = self.FR.shape
        return max(1, int(WORK_BYTES // (8 * S * K * (K + n))))

    def eliminate(self, w: np.ndarray, slice_prior_var: np.ndarray, shared_prior_var: np.ndarray) -> Elimination:
        """Factor the slice blocks and form the Schur complement for rows of weights and priors.

        Parameters
        ----------
        w : ndarray (W, G)
            The weights ``1 / s_g**2`` of the kinds of data.
        slice_prior_var : ndarray (W, K)
            The prior variances of a slice block's parameters (the same for every slice).
        shared_prior_var : ndarray (W, Q)
            The shared parameters' prior variances.

        Returns
        -------
        Elimination

        Raises
        ------
        numpy.linalg.LinAlgError
            A slice block is not positive definite (in any row).
        """
        G, S, K, _ = self.FB.shape
        W, Q = len(w), self.FE.shape[-1]
        B = (w @ self.FB.reshape(G, -1)).reshape(W, S, K, K)
        B[..., np.arange(K), np.arange(K)] += 1.0 / slice_prior_var[:, None, :]
        Z = (w @ self.FR.reshape(G, -1)).reshape(W, S, K, -1)
        schur = (w @ self.FE.reshape(G, -1)).reshape(W, Q, Q)
        schur[:, np.arange(Q), np.arange(Q)] += 1.0 / shared_prior_var
        bS = w @ self.bE
        cholesky_solve(B, Z)
        LB = B                                                         # lower triangle: L
        quad = np.zeros(W)
        for slices, cols in self.coupling.groups:
            n = 1 + len(cols)
            Zg = Z[:, slices, :, :n].reshape(W, -1, n)
            U = np.swapaxes(Zg, 1, 2) @ Zg                             # (W, n, n)
            quad += U[:, 0, 0]
            bS[:, cols] -= U[:, 0, 1:]
            schur[:, cols[:, None], cols[None, :]] -= U[:, 1:, 1:]
        logdet = 2 * np.sum(np.log(np.diagonal(LB, axis1=-2, axis2=-1)), axis=(1, 2))
        return Elimination(LB, Z, schur, bS, quad, logdet)

    def slice_solutions(self, el: Elimination, shared: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """The slice blocks given the shared parameters: ``B_s^-1 (b_s - C_s g) + L_s^-T n_s``.

        Parameters
        ----------
        el : Elimination
            The elimination (W rows).
        shared : ndarray (W, P, Q)
            ``P`` values of the shared parameters ``g`` per row.
        noise : ndarray (W, P, S, K), optional
            Standard normal numbers ``n_s`` (draws from the conditional posterior); None: the
            conditional means.

        Returns
        -------
        ndarray (W, P, S, K)
        """
        W, P, _ = shared.shape
        g = np.concatenate([shared, np.zeros((W, P, 1))], axis=2)[:, :, self.coupling.columns]   # (W, P, S, qmax)
        v = el.Z[:, None, :, :, 0] - np.einsum("wskq,wpsq->wpsk", el.Z[..., 1:], g)
        if noise is not None:
            v = v + noise
        x = np.linalg.solve(np.swapaxes(np.tril(el.LB), -1, -2), np.moveaxis(v, 1, -1))   # (W, S, K, P)
        return np.moveaxis(x, -1, 1)
