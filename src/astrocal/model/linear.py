"""The linear algebra of the collapsed likelihood: normal equations, block elimination, gauge
conditioning and the Gaussian conditional of the linear parameters.

The model (:mod:`astrocal.model.joint`) is linear in every parameter but the hyperparameters
``phi``, with Gaussian priors, so ``p(y | phi)`` is Gaussian and exact. For a batch of ``phi``
(leading axis ``K``, the walkers of an emcee step) this module forms the normal equations of
the global parameters from the per-point sums (:func:`normal_equations`; the faster sums of
fixed components are :mod:`astrocal.model.expansion`), eliminates the per-source blocks
(hole errors, stars' catalogue errors) by a Schur complement (:func:`eliminate_blocks`,
:func:`schur`; cost linear in the number of holes and stars), factorises the result
(:func:`solve`) and conditions on the hole-error patterns that mimic a linear map being zero
(:func:`gauge_conditioning`: the scale gauge). :class:`Conditional` is the resulting Gaussian
posterior of the linear parameters for one ``phi``, with exact draws.

What the linear algebra needs of the model is its public interface: the design arrays
(``B``, ``MB``, ``tri``, ``E``, ``Q``, ``Lp``, ``U``, ``lam``, ``dataset``, the block layout
``nb0``, ``M``, ``pad_index``, ``B_pad``, ``pose_points``, ...), the data about the reference
solution (:attr:`~astrocal.model.joint.JointModel.y_centred`,
:attr:`~astrocal.model.joint.JointModel.g0_centred`) and the methods
:meth:`~astrocal.model.joint.JointModel.weights`,
:meth:`~astrocal.model.joint.JointModel.noise_scales`,
:meth:`~astrocal.model.joint.JointModel.global_prior`,
:meth:`~astrocal.model.joint.JointModel.add_block_prior`,
:meth:`~astrocal.model.joint.JointModel.segment_sum` and
:meth:`~astrocal.model.joint.JointModel.work_buffer`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotrs

if TYPE_CHECKING:
    from .joint import JointModel

LOG2PI = np.log(2 * np.pi)
OUTER_CHUNK = 4096  # points per chunk when they are formed on the fly


def normal_equations(model: JointModel, phi: np.ndarray, weak: ArrayLike | None = None,
                     reuse: bool = False) -> dict:
    """Normal equations of the global block after eliminating the source blocks, from the
    per-point sums (the direct path of :meth:`astrocal.model.joint.JointModel.system`).

    Parameters
    ----------
    model : JointModel
        The model (its public interface, module notes).
    phi : numpy.ndarray
        Hyperparameter rows (K, ndim).
    weak : array_like, optional
        Bool over the global parameters whose prior is left out (the data's own information,
        for :func:`astrocal.model.identifiability.inseparable_directions`).
    reuse : bool
        The block arrays may live in the model's work buffers (only for a caller that does
        not keep them).

    Returns
    -------
    dict
        The global block ``P``, ``h`` and, after the blocks' elimination, the Schur
        complement ``S`` and right-hand side ``r`` (with the blocks: ``Pgd``, ``hd``, ``Dinv``,
        ``Y``, ``Dinv_hd``); the weights ``W``, ``Wy``, ``WE``, ``WQ``; and the likelihood's
        constant ``const`` (K,).
    """
    K = phi.shape[0]
    nt, G, N = model.nt, model.G, model.points.n_points
    B = model.B
    w, W = model.weights(phi)
    y = model.y_centred
    Wy = np.empty((K, N, 2))
    Wy[..., 0] = W[..., 0, 0] * y[:, 0] + W[..., 0, 1] * y[:, 1]
    Wy[..., 1] = W[..., 1, 0] * y[:, 0] + W[..., 1, 1] * y[:, 1]
    P = np.zeros((K, G, G))
    iu, ju = model.tri
    for a, b, comp in ((0, 0, W[..., 0, 0]), (0, 1, W[..., 0, 1]), (1, 1, W[..., 1, 1])):
        if model.MB is not None:
            blk = np.empty((K, nt, nt))
            upper = comp @ model.MB
            blk[:, iu, ju] = upper
            blk[:, ju, iu] = upper
        else:
            # too many points to keep the outer products: form them chunk by chunk
            upper = np.zeros((K, iu.size))
            for lo in range(0, N, OUTER_CHUNK):
                bc = B[lo:lo + OUTER_CHUNK]
                upper += comp[:, lo:lo + OUTER_CHUNK] @ (bc[:, iu] * bc[:, ju])
            blk = np.empty((K, nt, nt))
            blk[:, iu, ju] = upper
            blk[:, ju, iu] = upper
        P[:, a * nt:(a + 1) * nt, b * nt:(b + 1) * nt] = blk
        if a != b:
            P[:, b * nt:(b + 1) * nt, a * nt:(a + 1) * nt] = np.swapaxes(blk, 1, 2)
    h = np.zeros((K, G))
    h[:, :nt] = Wy[..., 0] @ B
    h[:, nt:2 * nt] = Wy[..., 1] @ B
    # extra global columns (dense over the points): W E per point, then reductions
    x0, x1 = 2 * nt, model.p0
    WE = _mul22(W, model.E)  # (K, N, 2, ne)
    Bt = B.T
    for comp in range(2):
        blk = Bt @ WE[:, :, comp, :]  # (K, nt, ne)
        P[:, comp * nt:(comp + 1) * nt, x0:x1] = blk
        P[:, x0:x1, comp * nt:(comp + 1) * nt] = np.swapaxes(blk, 1, 2)
    e2 = model.E.reshape(2 * N, model.ne)
    P[:, x0:x1, x0:x1] = e2.T @ WE.reshape(K, 2 * N, model.ne)
    h[:, x0:x1] = Wy.reshape(K, 2 * N) @ e2
    WQ = _mul22(W, model.Q)  # (K, N, 2, 4)
    for slot, idx in enumerate(model.exposure_points):
        s = model.p0 + 4 * slot
        Be = Bt[:, idx]
        cu = Be @ WQ[:, idx, 0, :]
        cv = Be @ WQ[:, idx, 1, :]
        P[:, :nt, s:s + 4] = cu
        P[:, nt:2 * nt, s:s + 4] = cv
        P[:, s:s + 4, :nt] = np.swapaxes(cu, 1, 2)
        P[:, s:s + 4, nt:2 * nt] = np.swapaxes(cv, 1, 2)
        q2 = model.Q[idx].reshape(-1, 4)
        xe = q2.T @ WE[:, idx].reshape(K, -1, model.ne)
        P[:, s:s + 4, x0:x1] = xe
        P[:, x0:x1, s:s + 4] = np.swapaxes(xe, 1, 2)
        P[:, s:s + 4, s:s + 4] = q2.T @ WQ[:, idx].reshape(K, -1, 4)
        h[:, s:s + 4] = Wy[:, idx].reshape(K, -1) @ q2
    idx = np.arange(G)
    prec, logdet_prior, prior_quad = model.global_prior(phi)
    if weak is not None:
        prec[:, np.asarray(weak, bool)] = 0.0
    P[:, idx, idx] += prec
    h += model.g0_centred * prec
    const = (2 * N * LOG2PI - np.sum(np.log(w), axis=(1, 2))
             + (Wy.reshape(K, 2 * N) @ y.reshape(2 * N)) + logdet_prior + prior_quad)
    sys = {"P": P, "h": h, "W": W, "Wy": Wy, "const": const, "WE": WE, "WQ": WQ, "reuse": reuse}
    if model.has_blocks:
        eliminate_blocks(model, phi, sys)
    else:
        sys["S"], sys["r"] = P, h
    return sys

def eliminate_blocks(model: JointModel, phi: np.ndarray, sys: dict) -> None:
    """Schur complement of the source blocks (hole errors, star catalogue errors), into ``sys``.

    A block point ``i`` of source ``b`` enters as ``Lp_i delta_b``; with ``WL = W Lp``
    the cross terms are ``sum A_i^T WL_i``, the block precision
    ``sum Lp_i^T WL_i + prior`` and the block's right-hand side ``sum WL_i^T y_i``.

    Parameters
    ----------
    model : JointModel
        The model (its public interface, module notes).
    phi : numpy.ndarray
        Hyperparameter rows (K, ndim).
    sys : dict
        The normal equations of :func:`normal_equations` before the elimination; updated in
        place (``S``, ``r``, ``Dinv``, ``Y``, ``Dinv_hd``, ``Pgd``, ``hd`` and ``const``).
    """
    K = phi.shape[0]
    nt, G, H = model.nt, model.G, model.H
    bsl = slice(model.nb0, model.points.n_points)
    W, P, h = sys["W"][:, bsl], sys["P"], sys["h"]
    _, _, hsig = model.noise_scales(phi)
    Lp = model.Lp[bsl]
    # holes enter with Lp = -I: then W Lp, Lp^T W Lp and the cross terms with the extra
    # and pose columns are (minus) products already formed for the global block
    unit = model.block_lp_is_unit
    WL = -W if unit else _mul22(W, Lp)  # (K, n, 2, 2)
    n, M = WL.shape[1], model.M
    # block-major layout (K, c, H, G): every per-block operation runs along contiguous G.
    # In the likelihood the two big arrays are reused from call to call (a fresh array
    # of ~100 MB costs more in page faults than the arithmetic on it)
    reuse = sys.get("reuse", False)
    Pgd = model.work_buffer("Pgd", (K, 2, H, G)) if reuse else np.empty((K, 2, H, G))
    wpad = np.zeros((H * M, K, 4))
    wpad[model.pad_index] = np.swapaxes(WL.reshape(K, n, 4), 0, 1)
    wpad = wpad.reshape(H, M, 4 * K)
    t = np.swapaxes(wpad, 1, 2) @ model.B_pad  # (H, [K, comp, c], nt)
    t = t.reshape(H, K, 2, 2, nt)
    Pgd[..., :2 * nt] = np.transpose(t, (1, 3, 0, 2, 4)).reshape(K, 2, H, 2 * nt)
    if unit:  # extra columns: E^T W Lp = -(W E)^T per point
        np.negative(np.swapaxes(model.segment_sum(sys["WE"][:, bsl]), 1, 2), out=Pgd[..., 2 * nt:model.p0])
    else:
        T = _mul22t(model.E[bsl], WL)  # (K, n, ne, 2)
        Pgd[..., 2 * nt:model.p0] = np.transpose(model.segment_sum(T), (0, 3, 1, 2))
    Pgd[..., model.p0:] = 0.0
    if model.n_pose:
        i = model.pose_points
        if unit:  # Q^T W Lp = -(W Q)^T per point, laid out (K, c, n, 4)
            T = -np.swapaxes(sys["WQ"][:, bsl][:, i], 1, 2)
        else:
            T = np.transpose(_mul22t(model.Q[bsl][i], WL[:, i]), (0, 3, 1, 2))
        # one point per hole and exposure: each (hole, pose slot) is written once
        poses = Pgd[..., model.p0:].reshape(K, 2, H, model.n_pose // 4, 4)
        poses[:, :, model.pose_hole_index, model.pose_slot_index] = T
    D = model.segment_sum(W if unit else _mul22t(Lp, WL))  # (K, H, 2, 2)
    logdet_prior = model.add_block_prior(D, hsig)
    yb = model.y_centred[bsl]
    hd = model.segment_sum(WL[..., 0, :] * yb[None, :, 0, None] + WL[..., 1, :] * yb[None, :, 1, None])
    blocks = schur(model, P, h, Pgd, D, hd, reuse)
    quad, logdet_d = blocks.pop("quad"), blocks.pop("logdet_D")
    sys.update(blocks, Pgd=Pgd, hd=hd, const=sys["const"] + logdet_prior + logdet_d - quad)

def schur(model: JointModel, P: np.ndarray, h: np.ndarray, Pgd: np.ndarray, D: np.ndarray, hd: np.ndarray,
          reuse: bool = False) -> dict:
    """Eliminate the source blocks from the global block ``P``, ``h``.

    The Schur complement ``S = P - Pgd^T D^-1 Pgd``, ``r = h - Pgd^T D^-1 hd``.

    Parameters
    ----------
    model : JointModel
        The model (its public interface, module notes).
    P : numpy.ndarray
        The global block (K, G, G).
    h : numpy.ndarray
        Its right-hand side (K, G).
    Pgd : numpy.ndarray
        The blocks' cross terms (K, c, H, G).
    D : numpy.ndarray
        The blocks' precisions, prior included (K, H, 2, 2).
    hd : numpy.ndarray
        The blocks' right-hand sides (K, H, 2).
    reuse : bool
        ``Y`` may live in the work buffers.

    Returns
    -------
    dict
        ``S``, ``r``, ``Dinv``, ``Y = Pgd D^-1`` (layout (K, c, H, G) like ``Pgd``),
        ``Dinv_hd``, and the likelihood's ``logdet_D`` and ``quad = hd^T D^-1 hd`` (K,).
    """
    K, _, H, G = Pgd.shape
    det = D[..., 0, 0] * D[..., 1, 1] - D[..., 0, 1] * D[..., 1, 0]
    Dinv = np.empty_like(D)
    Dinv[..., 0, 0], Dinv[..., 1, 1] = D[..., 1, 1] / det, D[..., 0, 0] / det
    Dinv[..., 0, 1], Dinv[..., 1, 0] = -D[..., 0, 1] / det, -D[..., 1, 0] / det
    Y = model.work_buffer("Y", Pgd.shape) if reuse else np.empty_like(Pgd)
    tmp = model.work_buffer("tmp", Pgd.shape[:1] + Pgd.shape[2:]) if reuse else np.empty_like(Pgd[:, 0])
    for c in range(2):
        np.multiply(Pgd[:, 0], Dinv[..., 0, c, None], out=Y[:, c])
        np.multiply(Pgd[:, 1], Dinv[..., 1, c, None], out=tmp)
        Y[:, c] += tmp
    Y2t = np.swapaxes(Y.reshape(K, 2 * H, G), 1, 2)  # (K, G, [c, H])
    S = P - Y2t @ Pgd.reshape(K, 2 * H, G)
    r = h - (Y2t @ np.swapaxes(hd, 1, 2).reshape(K, 2 * H, 1))[..., 0]
    dh0 = Dinv[..., 0, 0] * hd[..., 0] + Dinv[..., 0, 1] * hd[..., 1]
    dh1 = Dinv[..., 1, 0] * hd[..., 0] + Dinv[..., 1, 1] * hd[..., 1]
    quad = np.sum(hd[..., 0] * dh0 + hd[..., 1] * dh1, axis=1)
    return {"S": S, "r": r, "Dinv": Dinv, "Y": Y, "Dinv_hd": np.stack([dh0, dh1], -1),
            "logdet_D": np.sum(np.log(det), axis=1), "quad": quad}

def solve(sys: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cholesky of the Schur complement, its log-determinant and the posterior mean.

    Parameters
    ----------
    sys : dict
        The normal equations (``S``, ``r``).

    Returns
    -------
    tuple of numpy.ndarray
        ``L`` (K, G, G), ``log det S`` (K,) and the mean (K, G) about the reference solution.

    Raises
    ------
    numpy.linalg.LinAlgError
        ``S`` is not positive definite.
    """
    S = sys["S"]
    L = np.linalg.cholesky(S)
    logdet = 2 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
    mu = _cho_solve(L, sys["r"][..., None])[..., 0]
    return L, logdet, mu

def gauge_conditioning(model: JointModel, sys: dict, L: np.ndarray,
                       mu_g: np.ndarray) -> tuple[np.ndarray, ...]:
    """Conditioning on the hole-error affine patterns being zero (the scale gauge).

    Parameters
    ----------
    model : JointModel
        The model (its public interface, module notes).
    sys : dict
        The normal equations (``Y``, ``Dinv``, ``Dinv_hd``).
    L : numpy.ndarray
        The Cholesky factors of the Schur complement (K, G, G).
    mu_g : numpy.ndarray
        The global parameters' mean (K, G).

    Returns
    -------
    tuple of numpy.ndarray
        ``xg`` (K, G, 6), the covariance of the global parameters with the patterns'
        amplitudes; ``xd`` (K, H, 2, 6), that of the blocks; ``saa`` (K, 6, 6), the
        amplitudes' covariance; ``mu_d`` (K, H, 2), the blocks' mean; ``mu_a`` (K, 6), the
        amplitudes' mean.
    """
    Y, Dinv = sys["Y"], sys["Dinv"]  # Y: (K, c, H, G)
    K, G = Y.shape[0], Y.shape[3]
    H = model.H
    V = model.V
    V2 = V.reshape(2 * H, 6)  # [H, c] order
    Y2 = Y.reshape(K, 2 * H, G)  # [c, H] order
    xg = -_cho_solve(L, np.swapaxes(Y2, 1, 2) @ np.swapaxes(V, 0, 1).reshape(2 * H, 6))  # Cov(g, alpha)
    dv = np.empty((K, H, 2, 6))
    dv[:, :, 0] = Dinv[..., 0, 0, None] * V[:, 0] + Dinv[..., 0, 1, None] * V[:, 1]
    dv[:, :, 1] = Dinv[..., 1, 0, None] * V[:, 0] + Dinv[..., 1, 1, None] * V[:, 1]
    xd = dv - np.swapaxes((Y2 @ xg).reshape(K, 2, H, 6), 1, 2)  # (K, H, 2, 6)
    saa = V2.T @ xd.reshape(K, 2 * H, 6)
    mu_d = sys["Dinv_hd"] - np.swapaxes((Y2 @ mu_g[..., None]).reshape(K, 2, H), 1, 2)
    mu_a = mu_d.reshape(K, 2 * H) @ V2
    return xg, xd, saa, mu_d, mu_a

def _mul22(W, A):
    """Per-point ``W @ A`` for W (K, N, 2, 2) and A (N, 2, m): (K, N, 2, m)."""
    out = np.empty(W.shape[:2] + (2, A.shape[2]))
    out[:, :, 0] = W[..., 0, 0, None] * A[:, 0] + W[..., 0, 1, None] * A[:, 1]
    out[:, :, 1] = W[..., 1, 0, None] * A[:, 0] + W[..., 1, 1, None] * A[:, 1]
    return out


def _mul22t(A, W):
    """Per-point ``A^T @ W`` for A (N, 2, m) and W (K, N, 2, 2): (K, N, m, 2)."""
    out = np.empty(W.shape[:2] + (A.shape[2], 2))
    out[..., 0] = A[:, 0] * W[..., 0, 0, None] + A[:, 1] * W[..., 1, 0, None]
    out[..., 1] = A[:, 0] * W[..., 0, 1, None] + A[:, 1] * W[..., 1, 1, None]
    return out


def _cho_solve(L, b):
    """Solve ``(L L^T) x = b`` for batched lower-triangular ``L`` (K, G, G), b (K, G, m).

    LAPACK ``dpotrs`` on each factor, called directly: the walkers' systems are small
    (G ~ 100), so the checks of the wrappers would cost as much as the solves."""
    out = np.empty(b.shape)
    for k in range(L.shape[0]):
        x, info = dpotrs(L[k], b[k], lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"dpotrs failed (info {info})")
        out[k] = x
    return out


class Conditional:
    """Posterior of the linear parameters given ``phi`` (gauge-conditioned).

    Made by :meth:`astrocal.model.joint.JointModel.conditional`. Attributes: ``model``,
    ``phi`` (ndim,); ``mean`` (G,) and ``cov`` (G, G), the global parameters' mean and
    covariance (arcsec, gauge-conditioned); ``hole_mean`` (H, 2), the source blocks' mean
    (arcsec), or None without blocks.
    """

    def __init__(self, model, phi, sys, chol, mean_unc, cov_unc):
        self.model = model
        self.phi = phi
        self._sys = sys
        self._chol = chol
        self._mu_unc = mean_unc  # about the model's reference solution g_ref
        self.mean = mean_unc + model.g_ref
        self.cov = cov_unc
        self._gauge = None
        self.hole_mean = None

    def set_blocks(self, sys: dict) -> None:
        """Set the posterior means of the source blocks (no gauge conditioning).

        Parameters
        ----------
        sys : dict
            The normal equations of one ``phi`` (``Dinv_hd``, ``Y``).
        """
        mu_d = sys["Dinv_hd"][0] - np.einsum("ahg,g->ha", sys["Y"][0], self._mu_unc)
        self.hole_mean = mu_d

    def set_gauge(self, xg: np.ndarray, xd: np.ndarray, saa: np.ndarray, mu_d: np.ndarray, mu_a: np.ndarray) -> None:
        """Condition the mean, covariance and block means on the gauge.

        Parameters
        ----------
        xg, xd, saa, mu_d, mu_a : numpy.ndarray
            One row of :func:`gauge_conditioning`'s results.
        """
        self._gauge = (xg, xd, saa)
        sinv = np.linalg.inv(saa)
        self.mean = self._mu_unc - xg @ sinv @ mu_a + self.model.g_ref
        self.cov = self.cov - xg @ sinv @ xg.T
        self.hole_mean = mu_d - np.einsum("haj,j->ha", xd, sinv @ mu_a)

    def sample(self, rng: np.random.Generator, n: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
        """Exact draws of the linear parameters.

        Parameters
        ----------
        rng : numpy.random.Generator
            The random numbers.
        n : int
            Draws.

        Returns
        -------
        tuple
            ``g`` (n, G) and ``delta`` (n, H, 2), arcsec, or None without source blocks.
        """
        m = self.model
        z = rng.standard_normal((m.G, n))
        g = self._mu_unc[:, None] + solve_triangular(self._chol.T, z, lower=False)
        g = g.T
        if not m.has_blocks:
            return g + m.g_ref, None
        sys = self._sys
        Dinv, Pgd, hd = sys["Dinv"][0], sys["Pgd"][0], sys["hd"][0]
        mean_d = np.einsum("hab,nhb->nha", Dinv, hd[None] - np.einsum("ahg,ng->nha", Pgd, g))
        Ld = np.linalg.cholesky(Dinv)
        delta = mean_d + np.einsum("hab,nhb->nha", Ld, rng.standard_normal((n, m.H, 2)))
        if self._gauge is None:
            return g + m.g_ref, delta
        xg, xd, saa = self._gauge
        alpha = np.einsum("haj,nha->nj", m.V, delta)
        coef = np.linalg.solve(saa, alpha.T).T  # (n, 6)
        g = g - coef @ xg.T
        delta = delta - np.einsum("haj,nj->nha", xd, coef)
        return g + m.g_ref, delta



# the model and its priors moved to astrocal.model.joint and astrocal.model.priors (issue 20):
# kept for one release, with a DeprecationWarning (LabModel, JointModel's name before issue 20,
# through astrocal.model.joint's own forwarding)
from .._moved import moved_module  # noqa: E402

__getattr__ = moved_module(__name__, ("astrocal.model.priors", "astrocal.model.joint"))
