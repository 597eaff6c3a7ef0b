"""The noise weights as a short sum of fixed components: the fast path of the likelihood.

Point ``p`` has the focal-plane noise covariance ``kappa**2 C_p + sigma_d**2 I``, with
``C_p = U_p diag(lam_p) U_p^T`` fixed (:class:`astrocal.model.joint.JointModel`
diagonalises it once). Along its eigen-direction ``i`` the point is one *row*
``r = (p, i)`` of the observation equations: design ``a_r = U_pi^T A_p`` over the global
parameters, ``b_r = U_pi^T Lp_p`` over its source block, datum ``y_r = U_pi^T y_p``, and
the weight

    w_r(phi) = 1 / (kappa**2 lam_r + sigma_d**2).

Every sum of the normal equations is linear in these weights: the global block
``sum w a a^T``, the cross terms ``sum w b a^T`` and precisions ``sum w b b^T`` of the
source blocks, the right-hand sides and ``y^T W y``. With ``t = sigma_d**2 / kappa**2``
and ``u = log lam``,

    w_r = kappa**-2 lam_r**-1/2 F_t(u_r),     F_t(u) = e^(u/2) / (e^u + t),

and ``F_t`` is interpolated in ``u`` at ``m`` Chebyshev points ``u_k`` spanning the
dataset's ``lam``: ``F_t(u_r) ~ sum_k l_k(u_r) F_t(u_k)`` (``l_k`` the Lagrange basis).
So each sum is ``sum_k c_k(phi) S_k`` with ``c_k = kappa**-2 F_t(u_k)`` and ``S_k`` the
same sum with the fixed weights ``lam_r**-1/2 l_k(u_r)``, formed once: an evaluation
costs ``m`` instead of ``2 N`` times the size of each sum.

Accuracy: ``F_t`` is analytic but for poles at ``u = log t + i pi (2j + 1)``, the same
distance from the real axis for every ``t``, so the interpolation converges
geometrically and uniformly in ``t``. ``m`` is chosen per dataset so that the relative
error of the weights is below ``tol`` (``1e-11``) on a fine grid of ``u`` over the
dataset's range (2000 points, ~30 per oscillation of the interpolation error, so every
row's error is within a few per cent of the grid's maximum) and on the data's own values,
for ``t`` from 0 to e^25 times the largest variance (beyond, the error tends to its
``t -> infinity`` limit, also checked). The sums assembled are then exactly those of
weights ``w_r (1 + e_r)``, ``|e_r| ~< tol``: the exact likelihood of noise variances
perturbed by about ``tol`` relative, so no error is amplified by the Schur complement or
the Cholesky factorisations. The weights' log-determinant is summed exactly. Where the
interpolation would need too many points, the components would not be fewer than a third
of the rows, or they would take too much memory, :func:`build_expansion` returns ``None``
and the model uses its direct path.

The source blocks are eliminated with the Cholesky factor ``L_b`` of each 2x2 block
precision ``D_b``: ``Z_b = L_b^-1 Pgd_b``, so the Schur complement is
``S = P - sum_b Z_b^T Z_b`` and the gauge conditioning needs only ``Z^T L_b^-1 V_b``.

Cost per walker: ``J Ga**2`` for the global block, ``2 H Ga**2 / 2`` for the blocks' update
(one symmetric rank-``2 H_c`` update, BLAS ``dsyrk``, per chunk of ``H_c`` blocks, so the work
arrays stay small at any number of blocks) and ``G**3 / 3`` for the Cholesky factor (one
triangular solve gives the quadratic forms). The blocks' cross-term components
(``J 2 H Ga`` numbers) are kept when they fit in ``LIMIT_BYTES`` with the rest; otherwise
each call forms them again chunk by chunk from the rows (``J 2 N Ga`` operations per call,
shared by the walkers, a few per cent of the update): there is no cliff in cost or memory
at the limit, and both ways give the same sums.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse

from scipy.linalg.blas import dsyrk, dtrsm
from scipy.linalg.lapack import dpotrf

from .linear import LOG2PI, schur

if TYPE_CHECKING:
    from .joint import JointModel

TOL = 1e-11  # largest relative error of any weight
MAX_NODES = 64  # interpolation points per dataset
LIMIT_BYTES = 400e6  # largest size of the precomputed components
CHUNK = 4096  # points per chunk while the components are formed
CHUNK_BYTES = 8e6  # largest work array of one chunk of blocks in a call
STREAM_BYTES = 64e6  # components formed at a time when they are not kept
BAND = 64  # rows per band of the global block's lower triangle


def chebyshev_basis(u: ArrayLike, lo: float, hi: float, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange basis at ``u`` of the ``m`` Chebyshev points (second kind) on ``[lo, hi]``.

    Barycentric form, exact at the nodes.

    Parameters
    ----------
    u : array_like
        Where the basis is evaluated.
    lo, hi : float
        The interval.
    m : int
        The number of points.

    Returns
    -------
    tuple of numpy.ndarray
        ``(nodes (m,), basis (len(u), m))``.
    """
    u = np.asarray(u, float)
    if m == 1:
        return np.array([0.5 * (lo + hi)]), np.ones((u.size, 1))
    k = np.arange(m)
    nodes = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.pi * k / (m - 1))
    bw = (-1.0) ** k
    bw[[0, -1]] *= 0.5
    diff = u[:, None] - nodes[None]
    hit = diff == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = bw / diff
        basis = q / q.sum(axis=1, keepdims=True)
    rows = hit.any(axis=1)
    basis[rows] = hit[rows]
    return nodes, basis


def _f(u, t):
    """``F_t(u) = e^(u/2) / (e^u + t)`` for ``u`` (n,) and ``t`` (T,): (T, n)."""
    return np.exp(0.5 * u)[None] / (np.exp(u)[None] + t[:, None])


#: the last few :func:`interpolation_nodes` results by their inputs' digest (the degree scan
#: builds a model per degree and variant with the same row variances)
_NODES_CACHE = {}
_NODES_CACHE_SIZE = 4


def interpolation_nodes(lam: ArrayLike, tol: float = TOL, max_nodes: int = MAX_NODES,
                        n_check: int = 2000) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Interpolation points for the weights of rows with variances ``lam`` (> 0).

    :func:`_interpolation_nodes`, remembered for the last few distinct inputs (the same
    arrays are returned again: callers must not modify them).

    Parameters
    ----------
    lam : array_like
        The rows' variances, arcsec**2.
    tol : float
        The largest relative error of any weight.
    max_nodes : int
        Nodes at most.
    n_check : int
        Values of ``log lam`` the error is checked at (over the range, and of the rows').

    Returns
    -------
    tuple or None
        ``(log_nodes, basis, error)``: the nodes in ``log lam``, the basis at every row
        (len(lam), m) and the largest relative error measured; None if ``max_nodes`` do not
        reach ``tol``.
    """
    lam = np.ascontiguousarray(lam, float)
    key = (hashlib.sha1(lam.tobytes()).hexdigest(), lam.shape, tol, max_nodes, n_check)
    if key not in _NODES_CACHE:
        if len(_NODES_CACHE) >= _NODES_CACHE_SIZE:
            _NODES_CACHE.pop(next(iter(_NODES_CACHE)))
        _NODES_CACHE[key] = _interpolation_nodes(lam, tol, max_nodes, n_check)
    return _NODES_CACHE[key]


def _interpolation_nodes(lam, tol=TOL, max_nodes=MAX_NODES, n_check=2000):
    """Interpolation points for the weights of rows with variances ``lam`` (> 0).

    Returns ``(log_nodes, basis, error)``: the nodes in ``log lam``, the basis at every row
    (len(lam), m) and the largest relative error of ``1 / (lam + t)`` over ``n_check``
    evenly spaced values of ``log lam`` spanning the rows' range and ``n_check`` of the
    rows' own values (spread over the sorted values), for ``t`` in
    ``{0} U [lam_min e^-25, lam_max e^25]``. ``None`` if ``max_nodes`` do not reach
    ``tol``.
    """
    u = np.log(np.asarray(lam, float))
    lo, hi = float(u.min()), float(u.max())
    if hi - lo <= tol:
        nodes, basis = chebyshev_basis(u, lo, hi, 1)
        return nodes, basis, hi - lo
    srt = np.sort(u)
    check = np.r_[np.linspace(lo, hi, n_check),
                  srt[np.unique(np.linspace(0, srt.size - 1, min(srt.size, n_check)).astype(int))]]
    t = np.r_[0.0, np.exp(np.linspace(lo - 25, hi + 25, 401))]
    exact = _f(check, t)
    # every 16th check value first: a node count whose error there already exceeds the
    # tolerance (with a margin far above rounding) fails on all of them, so the full check
    # runs only for the counts that may pass; the result is the same
    some = slice(None, None, 16)
    exact_some = exact[:, some]
    for m in range(4, max_nodes + 1, 2):
        nodes, cb = chebyshev_basis(check, lo, hi, m)
        fn = _f(nodes, t)
        if float(np.max(np.abs((fn @ cb[some].T) / exact_some - 1.0))) > tol * (1.0 + 1e-6):
            continue
        err = float(np.max(np.abs((fn @ cb.T) / exact - 1.0)))
        if err <= tol:
            return nodes, chebyshev_basis(u, lo, hi, m)[1], err
    return None


@dataclass
class Expansion:
    """The fixed components of a model's sums (see the module docstring).

    ``J`` components, dataset ``d`` owning ``slices[d]`` with the variances of its nodes
    ``variances[d]`` (arcsec**2). The arrays are *bordered*: ``Ga = G + 1`` columns (``G + 7`` with the
    hole-error gauge), the global parameters, then the data, then the six gauge patterns.
    ``P``: the global block ``[[P, h], [h^T, y^T W y]]`` (zero gauge rows), its lower
    triangle as row bands: for each ``(i0, i1)`` of ``bands`` an array (J, (i1 - i0) i1),
    rows ``i0:i1`` and columns ``0:i1`` (about ``Ga**2 / 2`` numbers in all);
    ``Pgd`` (J, H*2*Ga), layout (H, c, Ga): each source block's cross terms with the
    global parameters, then its right-hand side (the gauge columns are zero, filled per
    call), or ``None`` when they are formed per call (``Lw``, ``yr``: the rows' fixed
    weights (2N, J) and data (2N,) they are formed from); ``D`` (J, H*4): the blocks'
    precisions (``None`` without blocks). ``lam`` holds each dataset's row variances for
    the exact log-determinant; ``error`` the largest relative weight error measured;
    ``chunk``: blocks per chunk of a call's work arrays.
    """

    variances: list
    slices: list
    P: np.ndarray
    Pgd: object
    D: object
    lam: list
    error: float
    Ga: int
    chunk: int = 1
    Lw: object = None
    yr: object = None
    bands: tuple = ()

    @property
    def J(self) -> int:
        """The number of components (all datasets')."""
        return self.slices[-1].stop

    @property
    def streamed(self) -> bool:
        """True when the blocks' cross-term components are formed per call."""
        return self.Pgd is None and self.D is not None


def _bands(Ga, band=BAND):
    """Row bands ``(i0, i1)`` of ``band`` rows covering ``0:Ga``."""
    return tuple((i0, min(Ga, i0 + band)) for i0 in range(0, Ga, band))


def _chunk_blocks(J, Ga, K=12, limit=None):
    """Blocks per chunk so that a chunk's components (J) and work array (K walkers) of
    ``2 Ga`` numbers per block stay below ``limit`` bytes (default ``CHUNK_BYTES``)."""
    limit = CHUNK_BYTES if limit is None else limit
    return max(1, int(limit // (8.0 * 2 * Ga * max(J, K, 1))))


def build_expansion(model: JointModel, tol: float = TOL, max_nodes: int = MAX_NODES,
                    limit_bytes: float | None = None) -> Expansion | None:
    """The :class:`Expansion` of a :class:`~astrocal.model.joint.JointModel`.

    The blocks' cross-term components are kept when everything fits in ``limit_bytes``, else
    formed per call (:attr:`Expansion.streamed`).

    Parameters
    ----------
    model : JointModel
        The model.
    tol : float
        The largest relative error of any weight.
    max_nodes : int
        Interpolation nodes per dataset at most.
    limit_bytes : float, optional
        The largest size of the global block's components and the rows' weights (default
        ``LIMIT_BYTES``).

    Returns
    -------
    Expansion or None
        None when the direct evaluation is the better one (more than ``max_nodes`` nodes, not
        fewer components than a third of the rows, or more than ``limit_bytes``).
    """
    limit_bytes = LIMIT_BYTES if limit_bytes is None else limit_bytes
    pts = model.points
    n, G, H = pts.n_points, model.G, model.H
    lam_rows = model.lam.reshape(2 * n)  # row r = 2 p + i
    ds_rows = np.repeat(model.dataset, 2)
    fits, slices, lams, j0 = [], [], [], 0
    for d in range(pts.n_datasets):
        sel = np.flatnonzero(ds_rows == d)
        fit = interpolation_nodes(lam_rows[sel], tol, max_nodes)
        if fit is None:
            return None
        fits.append((sel, fit))
        m = fit[0].size
        slices.append(slice(j0, j0 + m))
        lams.append(lam_rows[sel])
        j0 += m
    J = j0
    Ga = G + (7 if model.V is not None else 1)
    blocks = model.has_blocks
    # the global block's and the blocks' precisions' components, the row weights and data
    fixed = 8.0 * J * (Ga * (Ga + BAND) / 2 + (4 * H if blocks else 0) + 2 * n) + 16.0 * n
    cross = 8.0 * J * 2 * H * Ga if blocks else 0.0
    if 3 * J >= 2 * n or fixed > limit_bytes:
        return None
    store = fixed + cross <= limit_bytes
    # fixed row weights: lam_r**-1/2 l_k(u_r) in the columns of the row's dataset
    Lw = np.zeros((2 * n, J))
    for (sel, (_, basis, _)), sl in zip(fits, slices):
        Lw[sel, sl] = basis / np.sqrt(lam_rows[sel])[:, None]
    u = np.swapaxes(model.U, 1, 2)  # u[p, i] is the eigenvector of row (p, i)
    yr = np.einsum("pia,pa->pi", u, model.y_centred).reshape(2 * n)
    P = np.zeros((J, Ga, Ga))
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        A = np.zeros((2 * (hi - lo), G + 1))
        A[:, :G] = _row_design(model, u, lo, hi)
        A[:, G] = yr[2 * lo:2 * hi]
        lw = Lw[2 * lo:2 * hi]
        for j in range(J):
            _add_weighted_gram(P[j], A, lw[:, j])
    error = max(fit[2] for _, fit in fits)
    bands = _bands(Ga)
    ex = Expansion([np.exp(fit[0]) for _, fit in fits], slices,
                   [P[:, i0:i1, :i1].reshape(J, -1).copy() for i0, i1 in bands], None, None,
                   lams, error, Ga, chunk=_chunk_blocks(J, Ga), Lw=Lw, yr=yr, bands=bands)
    del P
    if blocks:
        D = np.zeros((J, H, 2, 2))
        Pgd = np.zeros((J, H, 2, Ga)) if store else None
        for h0, h1 in _block_ranges(model, ex):
            pc, dc = _block_components(model, ex, h0, h1, cross=store)
            D[:, h0:h1] = dc
            if store:
                Pgd[:, h0:h1] = pc
        ex.D = D.reshape(J, 4 * H)
        if store:
            ex.Pgd = Pgd.reshape(J, H * 2 * Ga)
            ex.Lw = ex.yr = None
    else:
        ex.Lw = ex.yr = None
    return ex


def _add_weighted_gram(out, A, w):
    """``out[:m, :m] += A^T diag(w) A`` in its lower triangle (``A`` (rows, m), signed
    weights ``w``): two symmetric rank updates (BLAS ``dsyrk``), the rows of positive and of
    negative weight, half the operations of the general product."""
    m = A.shape[1]
    acc = np.zeros((m, m))  # C-ordered; the F-ordered view's upper triangle is its lower
    for sign, sel in ((1.0, w > 0), (-1.0, w < 0)):
        if sel.any():
            a = A[sel] * np.sqrt(np.abs(w[sel]))[:, None]
            acc = dsyrk(sign, a.T, beta=1.0, c=acc.T, lower=0, overwrite_c=1).T
    out[:m, :m] += np.tril(acc)


def _block_ranges(model, ex):
    """``(h0, h1)`` of each chunk of blocks (:attr:`Expansion.chunk` blocks each)."""
    return [(h0, min(model.H, h0 + ex.chunk)) for h0 in range(0, model.H, ex.chunk)]


def _block_components(model, ex, h0, h1, cross=True):
    """Components of the blocks ``h0:h1``: their cross terms ``(J, h1 - h0, 2, Ga)`` (the
    gauge columns zero; ``None`` unless ``cross``) and precisions ``(J, h1 - h0, 2, 2)``,
    from the rows' fixed weights ``ex.Lw`` and data ``ex.yr``."""
    J, G, Ga, Hc = ex.J, model.G, ex.Ga, h1 - h0
    start = model.block_point_start()
    p0, p1 = int(start[h0]), int(start[h1])
    pc = np.zeros((J, Hc, 2, Ga)) if cross else None
    dc = np.zeros((J, Hc, 2, 2))
    if p1 == p0:
        return pc, dc
    u = np.swapaxes(model.U[p0:p1], 1, 2)
    br = np.einsum("pia,pab->pib", u, model.Lp[p0:p1]).reshape(-1, 2)
    blk = np.repeat(model.block_of_point[p0 - model.nb0:p1 - model.nb0] - h0, 2)
    lw = ex.Lw[2 * p0:2 * p1]
    cols = np.repeat(np.arange(blk.size), J)
    rows = (np.arange(J)[None] * Hc + blk[:, None]).ravel()
    if cross:
        A = np.empty((blk.size, G + 1))
        A[:, :G] = _row_design(model, np.swapaxes(model.U, 1, 2), p0, p1)
        A[:, G] = ex.yr[2 * p0:2 * p1]
    for c in range(2):
        # (component, block) x rows: the per-block sums of every component at once
        M = sparse.csr_matrix(((lw * br[:, c, None]).ravel(), (rows, cols)), shape=(J * Hc, blk.size))
        if cross:
            pc[:, :, c, :G + 1] = (M @ A).reshape(J, Hc, G + 1)
        dc[:, :, c] = (M @ br).reshape(J, Hc, 2)
    return pc, dc


def _weighted_cross(model, ex, c, work=None):
    """The blocks' cross terms ``[Pgd_b, hd_b, 0]`` at the coefficients ``c`` (K, J), chunk
    by chunk of ``ex.chunk`` blocks: ``(h0, h1, (K, h1 - h0, 2, Ga))`` (the gauge columns
    zero). From the kept components (``c @ Pgd``, into ``work`` if given), or formed from
    the rows (``STREAM_BYTES`` at a time): each row's weight at ``c`` (``Lw c``, the same
    interpolated weights) times its design, summed per block by one batched product over
    the blocks' rows laid out ``2 M`` per block."""
    K, G, Ga = c.shape[0], model.G, ex.Ga
    if ex.Pgd is not None:
        for h0, h1 in _block_ranges(model, ex):
            n = K * (h1 - h0) * 2 * Ga
            out = None if work is None else work[:n].reshape(K, n // K)
            yield h0, h1, np.matmul(c, ex.Pgd[:, h0 * 2 * Ga:h1 * 2 * Ga], out=out).reshape(K, h1 - h0, 2, Ga)
        return
    R = 2 * model.M  # rows per block, padded
    step = int(STREAM_BYTES // (8.0 * (R * (G + 1 + 2 * K) + 4 * K * Ga)))
    step = max(ex.chunk, step // ex.chunk * ex.chunk)
    start = model.block_point_start()
    rows_design = np.swapaxes(model.U, 1, 2)
    for s0 in range(0, model.H, step):
        s1 = min(model.H, s0 + step)
        hs = s1 - s0
        p0, p1 = int(start[s0]), int(start[s1])
        out = np.zeros((K, hs, 2, Ga))
        if p1 > p0:
            b = model.block_of_point[p0 - model.nb0:p1 - model.nb0]
            rb = np.repeat(b - s0, 2)
            rs = (2 * (np.arange(p0, p1) - start[b])[:, None] + np.arange(2)).ravel()
            A = np.zeros((hs, R, G + 1))
            A[rb, rs, :G] = _row_design(model, rows_design, p0, p1)
            A[rb, rs, G] = ex.yr[2 * p0:2 * p1]
            u = np.swapaxes(model.U[p0:p1], 1, 2)
            br = np.einsum("pia,pab->pib", u, model.Lp[p0:p1]).reshape(-1, 2)
            w = ex.Lw[2 * p0:2 * p1] @ c.T  # (rows, K)
            wb = np.zeros((hs, R, K, 2))
            wb[rb, rs] = w[:, :, None] * br[:, None, :]
            prod = np.swapaxes(wb.reshape(hs, R, 2 * K), 1, 2) @ A  # (hs, [K, c], G + 1)
            out[..., :G + 1] = np.swapaxes(prod.reshape(hs, K, 2, G + 1), 0, 1)
        for h0 in range(s0, s1, ex.chunk):
            h1 = min(s1, h0 + ex.chunk)
            yield h0, h1, out[:, h0 - s0:h1 - s0]


def _row_design(model, u, lo, hi):
    """Global design ``a_r`` of the rows of points ``lo:hi``: (2 (hi - lo), G)."""
    nt, G = model.nt, model.G
    B = model.B[lo:hi]
    uc = u[lo:hi]
    A = np.zeros((hi - lo, 2, G))
    A[:, :, :nt] = uc[:, :, 0, None] * B[:, None]
    A[:, :, nt:2 * nt] = uc[:, :, 1, None] * B[:, None]
    A[:, :, 2 * nt:model.p0] = np.einsum("pia,pae->pie", uc, model.E[lo:hi])
    slot = model.pose_slot[model.points.exposure[lo:hi]]
    has = np.flatnonzero(slot >= 0)
    cols = model.p0 + 4 * slot[has][:, None] + np.arange(4)
    A[has[:, None, None], np.arange(2)[None, :, None], cols[:, None, :]] = \
        np.einsum("pia,pab->pib", uc[has], model.Q[lo:hi][has])
    return A.reshape(2 * (hi - lo), G)


def log_likelihood(model: JointModel, ex: Expansion, phi: np.ndarray) -> np.ndarray:
    """``log p(y | phi)`` for a batch of hyperparameters from the components ``ex``.

    The same value as the model's direct evaluation, to the weights' relative error
    ``ex.error``.

    Parameters
    ----------
    model : JointModel
        The model.
    ex : Expansion
        Its components (:func:`build_expansion`).
    phi : numpy.ndarray
        Hyperparameter rows (K, ndim).

    Returns
    -------
    numpy.ndarray
        (K,).

    Raises
    ------
    numpy.linalg.LinAlgError
        A factorisation fails.
    """
    K = phi.shape[0]
    G, H, Ga = model.G, model.H, ex.Ga
    jit, kappa, hsig = model.noise_scales(phi)
    # rows with the same noise scales (e.g. a finite-difference step in a prior width) share
    # the weights, the source blocks' elimination and the global block's data part: those
    # are formed once per distinct row (``rep``) and the rows' prior precisions added after
    rep, inv = _distinct_rows(np.column_stack([jit, kappa] + ([hsig] if hsig is not None else [])))
    jit, kappa = jit[rep], kappa[rep]
    hsig_rows, hsig = hsig, (hsig[rep] if hsig is not None else None)
    c = _coefficients(ex, jit, kappa)
    k2 = kappa**2
    shared = np.zeros(rep.size)
    for d, lam in enumerate(ex.lam):  # the weights' log-determinant, exactly
        shared += lam.size * LOG2PI + np.sum(np.log(k2[:, None] * lam[None] + jit[:, d, None] ** 2), axis=1)
    S, B = _global_block(model, ex, c)
    if model.has_blocks:
        D = (c @ ex.D).reshape(rep.size, H, 2, 2)
        shared += model.add_block_prior(D, hsig)
        # Cholesky of each block's 2x2 precision, D = L L^T with L = [[l11, 0], [l21, l22]],
        # applied to the block's bordered row [cross terms, right-hand side, gauge patterns]
        with np.errstate(invalid="ignore", divide="ignore"):  # checked just below
            l11 = np.sqrt(D[..., 0, 0])
            l21 = D[..., 1, 0] / l11
            l22 = np.sqrt(D[..., 1, 1] - l21**2)
        if not (np.all(l11 > 0) and np.all(l22 > 0)):  # also catches NaN
            raise np.linalg.LinAlgError("a source block's precision is not positive definite")
        shared += 2 * np.sum(np.log(l11) + np.log(l22), axis=1)
        _update_blocks(model, ex, c, S, B, l11, l21, l22)
    if rep.size < K:
        S, B, shared = S[inv], B[inv], shared[inv]
    prec, logdet_prior, prior_quad = model.global_prior(phi)
    _add_global_prior(model, S, B, prec)
    const = shared + logdet_prior + prior_quad
    # lower triangles: S the global block's posterior precision (K, G, G); B the border
    # (K, Ga - G, Ga): B[:, 0, :G] its right-hand side r, B[:, 0, G] = y^T W y - |L_b^-1 hd|^2,
    # B[:, 1:, :G] = -Vt^T Z (Vt = L_b^-1 V)
    logdet = np.empty(K)
    Q = np.empty((K, Ga - G, Ga - G))
    for k in range(K):
        # in place on the F-ordered view (upper triangle = S[k]'s lower): S = U^T U
        u, info = dpotrf(S[k].T, lower=0, overwrite_a=1, clean=0)
        d = np.diagonal(u)
        if info != 0 or not np.all(d > 0):  # also catches NaN
            raise np.linalg.LinAlgError("the Schur complement is not positive definite")
        logdet[k] = 2 * np.sum(np.log(d))
        x = dtrsm(1.0, u, B[k, :, :G].T, lower=0, trans_a=1)  # U^-T R: R^T S^-1 R = x^T x
        Q[k] = x.T @ x
    ll = -0.5 * (const + B[:, 0, G] + logdet - Q[:, 0, 0])
    if model.V is not None:
        # conditioning on the gauge patterns' amplitudes a = V^T delta being zero:
        # Cov(a) = Vt^T Vt + ZV^T S^-1 ZV and E(a) = Vt^T hz - ZV^T mu, with ZV = Z^T Vt
        low = np.tril(B[:, 1:, G + 1:])
        saa = Q[:, 1:, 1:] - (low + np.swapaxes(np.tril(low, -1), 1, 2))
        mu_a = Q[:, 1:, 0] - B[:, 1:, G]
        sign, ldet = np.linalg.slogdet(saa)
        if not np.all(sign > 0):
            raise np.linalg.LinAlgError("the gauge patterns' covariance is not positive definite")
        quad = np.einsum("ki,ki->k", mu_a, np.linalg.solve(saa, mu_a[..., None])[..., 0])
        ll += -0.5 * (ldet + quad) + 6 * np.log(hsig_rows)
    return ll


def _update_blocks(model, ex, c, S, B, l11, l21, l22):
    """Subtract ``sum_b Z_b^T Z_b`` in place from the lower triangles of the global block
    ``S`` (K, G, G) and its border ``B`` (K, Ga - G, Ga) (:func:`_global_block`), with
    ``Z_b = L_b^-1 [Pgd_b, hd_b, V_b]`` and the blocks' Cholesky factors
    ``[[l11, 0], [l21, l22]]`` (K, H): chunk by chunk of blocks, one symmetric rank update
    (BLAS ``dsyrk``) per walker and chunk."""
    K, G, Ga = c.shape[0], model.G, ex.Ga
    work = model.work_buffer("Z", (K * ex.chunk * 2 * Ga,))
    tmp = model.work_buffer("Ztmp", (K * ex.chunk * Ga,))
    r11, r22 = 1.0 / l11, 1.0 / l22
    a21 = l21 * r22
    for h0, h1, Z in _weighted_cross(model, ex, c, work):
        hc = h1 - h0
        if model.V is not None:
            Z[..., G + 1:] = model.V[h0:h1]
        # Z_b = L_b^-1 [Pgd_b, hd_b, V_b]: row 0 / l11, then (row 1 - l21 row 0) / l22
        z0, z1, t = Z[:, :, 0], Z[:, :, 1], tmp[:K * hc * Ga].reshape(K, hc, Ga)
        z0 *= r11[:, h0:h1, None]
        z1 *= r22[:, h0:h1, None]
        z1 -= np.multiply(z0, a21[:, h0:h1, None], out=t)
        Z = Z.reshape(K, 2 * hc, Ga)
        for k in range(K):
            # on the F-ordered view, S[k].T -= Z^T Z in its upper triangle (S[k]'s lower)
            zg = Z[k, :, :G]
            out = dsyrk(-1.0, zg.T, beta=1.0, c=S[k].T, lower=0, overwrite_c=1)
            if not np.shares_memory(out, S[k]):  # pragma: no cover - f2py made a copy
                S[k] = out.T
        B -= np.swapaxes(Z[:, :, G:], 1, 2) @ Z


def system(model: JointModel, ex: Expansion, phi: np.ndarray, weak: ArrayLike | None = None) -> dict:
    """The normal equations after eliminating the source blocks, from the components ``ex``.

    For the conditional posterior and its exact draws (without the likelihood's constant).

    Parameters
    ----------
    model : JointModel
        The model.
    ex : Expansion
        Its components (:func:`build_expansion`).
    phi : numpy.ndarray
        Hyperparameter rows (K, ndim).
    weak : array_like, optional
        Bool over the global parameters whose prior is left out.

    Returns
    -------
    dict
        The same dictionary as :meth:`JointModel.system
        <astrocal.model.joint.JointModel.system>` (``S``, ``r``, ``Pgd``, ``Dinv``, ``Y``,
        ``hd``, ``Dinv_hd``).
    """
    K = phi.shape[0]
    G, H = model.G, model.H
    jit, kappa, hsig = model.noise_scales(phi)
    c = _coefficients(ex, jit, kappa)
    prec = model.global_prior(phi)[0]
    if weak is not None:
        prec[:, np.asarray(weak, bool)] = 0.0
    P, Bd = _global_block(model, ex, c, prec)
    P = np.tril(P)
    P += np.swapaxes(np.tril(P, -1), 1, 2)  # symmetric
    h = np.ascontiguousarray(Bd[:, 0, :G])
    if not model.has_blocks:
        return {"S": P, "r": h}
    D = (c @ ex.D).reshape(K, H, 2, 2)
    model.add_block_prior(D, hsig)
    Pgd = np.empty((K, 2, H, G))
    hd = np.empty((K, H, 2))
    for h0, h1, Pa in _weighted_cross(model, ex, c):
        Pgd[:, :, h0:h1] = np.swapaxes(Pa[..., :G], 1, 2)
        hd[:, h0:h1] = Pa[..., G]
    sys = schur(model, P, h, Pgd, D, hd)
    del sys["quad"], sys["logdet_D"]
    sys.update(Pgd=Pgd, hd=hd)
    return sys


def _global_block(model, ex, c, prec=None):
    """The bordered global block ``[[P + prior, h + prior], [., y^T W y]]`` from the
    components' coefficients ``c`` (K, J) and the global prior precisions ``prec`` (K, G)
    (None: the data's part alone, :func:`_add_global_prior` adds the prior), its lower
    triangle in two arrays: ``S`` (K, G, G), the global parameters' block (above the
    diagonal: anything), and ``B`` (K, Ga - G, Ga), the rows of the data and the gauge
    patterns (as the components give them)."""
    G, Ga, K = model.G, ex.Ga, c.shape[0]
    S = np.zeros((K, G, G))
    B = np.zeros((K, Ga - G, Ga))
    for (i0, i1), comp in zip(ex.bands, ex.P):
        band = (c @ comp).reshape(K, i1 - i0, i1)
        if i1 <= G:
            S[:, i0:i1, :i1] = band
        else:  # the band crosses the border (B's rows hold only what is below the diagonal)
            g1 = max(i0, G)
            if i0 < G:
                S[:, i0:G, :G] = band[:, :G - i0, :G]
            B[:, g1 - G:i1 - G, :i1] = band[:, g1 - i0:]
    if prec is not None:
        _add_global_prior(model, S, B, prec)
    return S, B


def _add_global_prior(model, S, B, prec):
    """Add the global parameters' prior precisions ``prec`` (K, G) to the bordered global
    block's lower triangles ``S`` and ``B`` (:func:`_global_block`), in place: the diagonal
    and the right-hand side's prior term."""
    ii = np.arange(model.G)
    S[:, ii, ii] += prec
    B[:, 0, :model.G] += model.g0_centred * prec


def _distinct_rows(a):
    """The distinct rows of ``a`` (K, m), exactly equal values: ``(rep, inv)``, the first row
    of each distinct one in their order (U,) and each row's position in ``rep`` (K,), so
    ``a[rep][inv] == a``."""
    K = a.shape[0]
    if K < 2:
        return np.arange(K), np.arange(K)
    _, first, inv = np.unique(np.ascontiguousarray(a), axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # the distinct rows in the order they first occur
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[np.ravel(inv)]


def _coefficients(ex, jit, kappa):
    """The components' coefficients ``c_k = kappa**-2 F_t(u_k)`` at the hyperparameters
    (jitters (K, datasets), kappa (K,)): (K, J)."""
    k2 = kappa**2
    c = np.empty((kappa.size, ex.J))
    for d, (sl, lam_k) in enumerate(zip(ex.slices, ex.variances)):
        t = (jit[:, d] ** 2 / k2)[:, None]
        c[:, sl] = np.sqrt(lam_k)[None] / (lam_k[None] + t) / k2[:, None]
    return c
