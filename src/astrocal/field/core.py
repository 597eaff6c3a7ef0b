"""The distortion field: a 2-D vector polynomial in a Legendre basis.

A :class:`DistortionField` maps input coordinates ``(x, y)`` (for the instrument's field:
0-based detector pixels) to output coordinates ``(u, v)`` (for the instrument's field:
undistorted focal-plane coordinates in arcsec).  It is stored as Legendre coefficients on
the input coordinates normalised to ``[-1, 1]`` over a stated rectangular ``domain`` (the
detector, edges included), which keeps every degree from 1 to 12 well conditioned and
makes the best affine approximation over the domain simply the degree <= 1 coefficients.

Evaluation and the Jacobian are vectorised over any number of points: the Legendre
series are rewritten once as power series in the normalised coordinates (exactly, up to
rounding) and evaluated by one matrix product over the powers of ``t`` and Horner's scheme
in ``s``, without forming a design matrix; large inputs are processed in chunks (bounded
memory) on a small thread pool (numpy releases the GIL).
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field as dc_field

import numpy as np
from numpy.typing import ArrayLike
from threadpoolctl import ThreadpoolController

from ..errors import FieldError
from . import basis

#: points per chunk in evaluation (the unit of work of the thread pool)
CHUNK = 1 << 15
#: points per block within a chunk: the work arrays of a block (at degree 7 and with the
#: Jacobian, 42 rows of BLOCK doubles, 2.8 MB) stay in the CPU's L2/L3 cache, and numpy's
#: per-call overhead is spread over many points
BLOCK = 1 << 13
#: the block's matrix product always has a multiple of this many columns (short inputs
#: are padded): BLAS computes the columns of a partial tile, or of a very narrow product,
#: by other kernels whose rounding differs; with whole tiles, and BLAS on one thread, a
#: point's result does not depend on which or how many points are evaluated with it
WIDTH_STEP = 16


def as_domain(domain: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A checked domain.

    Parameters
    ----------
    domain : sequence of 4 floats
        ``(xmin, xmax, ymin, ymax)``, input units.

    Returns
    -------
    tuple of float
        The domain as floats.

    Raises
    ------
    FieldError
        When it is not four finite numbers with ``xmax > xmin`` and ``ymax > ymin``.
    """
    try:
        xmin, xmax, ymin, ymax = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise FieldError(f"domain must be (xmin, xmax, ymin, ymax), got {domain!r}") from None
    if not (np.isfinite([xmin, xmax, ymin, ymax]).all() and xmax > xmin and ymax > ymin):
        raise FieldError(f"domain must be finite with xmax > xmin and ymax > ymin, got {domain!r}")
    return (xmin, xmax, ymin, ymax)


def _threads():
    return max(1, min(2, os.cpu_count() or 1))


@functools.lru_cache(maxsize=None)
def _blas_controller():
    return ThreadpoolController()


def _one_blas_thread():
    """Context limiting BLAS to one thread (the controller is built once: ~0.1 ms a use)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@dataclass(frozen=True, eq=False)
class DistortionField:
    """A vector polynomial field ``(x, y) -> (u, v)`` of total degree ``n``.

    Attributes
    ----------
    cx, cy : ndarray, shape (n+1, n+1)
        Legendre coefficients of ``u`` and ``v``: ``u = sum cx[i, j] P_i(t) P_j(s)`` with
        ``t = (x - xc) / hx``, ``s = (y - yc) / hy``, ``(xc, yc)`` the domain centre and
        ``(hx, hy)`` its half-widths; entries with ``i + j > n`` are zero.
    domain : (xmin, xmax, ymin, ymax)
        Region of the input plane on which the field is defined, in ``input_unit``.  For a
        detector of ``nx x ny`` pixels (0-based centres) it is ``(-0.5, nx-0.5, -0.5, ny-0.5)``.
    unit, input_unit : str
        Units of the outputs and of the inputs (e.g. ``"arcsec"`` and ``"pixel"``).
    meta : dict
        Free-form provenance (kept through conversions where meaningful).
    """

    cx: np.ndarray
    cy: np.ndarray
    domain: tuple
    unit: str = "arcsec"
    input_unit: str = "pixel"
    meta: dict = dc_field(default_factory=dict)

    def __post_init__(self):
        cx = np.array(self.cx, dtype=float)
        cy = np.array(self.cy, dtype=float)
        if cx.ndim != 2 or cx.shape[0] != cx.shape[1] or cx.shape != cy.shape:
            raise FieldError(
                "Legendre coefficients must be two square arrays of equal shape (n+1, n+1), "
                f"got {np.shape(self.cx)} and {np.shape(self.cy)}"
            )
        degree = basis.check_degree(cx.shape[0] - 1)
        if not (np.isfinite(cx).all() and np.isfinite(cy).all()):
            raise FieldError("distortion coefficients contain NaN or infinite values")
        outside = ~basis.triangle_mask(degree)
        if np.any(cx[outside]) or np.any(cy[outside]):
            raise FieldError(f"coefficients with i + j > {degree} must be zero")
        cx.flags.writeable = False
        cy.flags.writeable = False
        object.__setattr__(self, "cx", cx)
        object.__setattr__(self, "cy", cy)
        object.__setattr__(self, "domain", as_domain(self.domain))
        object.__setattr__(self, "meta", dict(self.meta))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_coefficients(cls, coeffs_x: ArrayLike, coeffs_y: ArrayLike, degree: int,
                          domain: tuple[float, float, float, float], **kwargs: object) -> DistortionField:
        """From flat Legendre coefficient vectors in :func:`basis.terms` order.

        Parameters
        ----------
        coeffs_x, coeffs_y : array_like
            Flat Legendre coefficients of ``u`` and ``v``.
        degree : int
            Total degree.
        domain : tuple of float
            ``(xmin, xmax, ymin, ymax)``.
        **kwargs
            Other attributes (``unit``, ``input_unit``, ``meta``).

        Returns
        -------
        DistortionField
            The field.
        """
        return cls(basis.flat_to_square(coeffs_x, degree), basis.flat_to_square(coeffs_y, degree),
                   domain, **kwargs)

    @classmethod
    def identity(cls, domain: tuple[float, float, float, float], degree: int = 1, scale: float = 1.0,
                 unit: str = "pixel", input_unit: str = "pixel") -> DistortionField:
        """The field ``(u, v) = scale * (x, y)`` on ``domain``, stored at ``degree``.

        Parameters
        ----------
        domain : tuple of float
            ``(xmin, xmax, ymin, ymax)``.
        degree : int
            Degree of the coefficient arrays.
        scale : float
            Output units per input unit.
        unit, input_unit : str
            Output and input units.

        Returns
        -------
        DistortionField
            The field.
        """
        domain = as_domain(domain)
        xc, yc, hx, hy = centre_halfwidth(domain)
        cx = np.zeros((degree + 1, degree + 1))
        cy = np.zeros_like(cx)
        cx[0, 0], cx[1, 0] = scale * xc, scale * hx
        cy[0, 0], cy[0, 1] = scale * yc, scale * hy
        return cls(cx, cy, domain, unit=unit, input_unit=input_unit)

    @classmethod
    def from_monomials(cls, mx: ArrayLike, my: ArrayLike, domain: tuple[float, float, float, float],
                       origin: tuple[float, float] = (0.0, 0.0), **kwargs: object) -> DistortionField:
        """From monomial coefficients ``m[p, q]`` of ``(x - x0)**p (y - y0)**q``.

        Exact up to rounding.

        Parameters
        ----------
        mx, my : array_like
            Square ``(n+1, n+1)`` arrays (entries with ``p + q > n`` must be zero).
        domain : tuple of float
            ``(xmin, xmax, ymin, ymax)``.
        origin : tuple of float
            ``(x0, y0)``, in the input unit.
        **kwargs
            Other attributes (``unit``, ``input_unit``, ``meta``).

        Returns
        -------
        DistortionField
            The field.

        Raises
        ------
        FieldError
            For arrays that are not square, equal and finite with zeros above degree n.
        """
        mx = np.asarray(mx, dtype=float)
        my = np.asarray(my, dtype=float)
        if mx.ndim != 2 or mx.shape[0] != mx.shape[1] or mx.shape != my.shape:
            raise FieldError(
                f"monomial coefficients must be square arrays of equal shape, got {mx.shape} "
                f"and {my.shape}"
            )
        if not (np.isfinite(mx).all() and np.isfinite(my).all()):
            raise FieldError("monomial coefficients contain NaN or infinite values")
        outside = ~basis.triangle_mask(mx.shape[0] - 1)
        if np.any(mx[outside]) or np.any(my[outside]):
            raise FieldError(f"monomial coefficients with p + q > {mx.shape[0] - 1} must be zero")
        domain = as_domain(domain)
        xc, yc, hx, hy = centre_halfwidth(domain)
        cx = basis.monomial_to_legendre(mx, (xc, yc), (hx, hy), origin)
        cy = basis.monomial_to_legendre(my, (xc, yc), (hx, hy), origin)
        mask = basis.triangle_mask(mx.shape[0] - 1)
        return cls(np.where(mask, cx, 0.0), np.where(mask, cy, 0.0), domain, **kwargs)

    @classmethod
    def fit(cls, x: ArrayLike, y: ArrayLike, u: ArrayLike, v: ArrayLike, degree: int,
            domain: tuple[float, float, float, float], weights: ArrayLike | None = None,
            **kwargs: object) -> DistortionField:
        """Least-squares field of ``degree`` through samples ``(x, y) -> (u, v)``.

        Solved by a QR-based least squares on the Legendre design matrix (well
        conditioned on the domain).

        Parameters
        ----------
        x, y : array_like
            Sample positions, input units.
        u, v : array_like
            Their images, output units.
        degree : int
            Total degree.
        domain : tuple of float
            ``(xmin, xmax, ymin, ymax)``.
        weights : array_like, optional
            Multiply the squared residuals.
        **kwargs
            Other attributes (``unit``, ``input_unit``, ``meta``).

        Returns
        -------
        DistortionField
            The fitted field.

        Raises
        ------
        FieldError
            With fewer samples than terms.
        """
        degree = basis.check_degree(degree)
        domain = as_domain(domain)
        x, y, u, v = (np.ravel(np.asarray(a, dtype=float)) for a in (x, y, u, v))
        if not (x.size == y.size == u.size == v.size):
            raise ValueError("x, y, u, v must have the same number of samples")
        if x.size < basis.n_terms(degree):
            raise FieldError(
                f"a degree-{degree} fit needs at least {basis.n_terms(degree)} samples, "
                f"got {x.size}"
            )
        design = design_matrix(x, y, degree, domain)
        rhs = np.column_stack([u, v])
        if weights is not None:
            w = np.sqrt(np.ravel(np.asarray(weights, dtype=float)))
            design = design * w[:, None]
            rhs = rhs * w[:, None]
        sol, *_ = np.linalg.lstsq(design, rhs, rcond=None)
        return cls.from_coefficients(sol[:, 0], sol[:, 1], degree, domain, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def degree(self) -> int:
        """Total degree."""
        return self.cx.shape[0] - 1

    @property
    def n_terms(self) -> int:
        """Number of coefficients per output coordinate."""
        return basis.n_terms(self.degree)

    @property
    def coefficients(self) -> np.ndarray:
        """Flat Legendre coefficients, shape ``(2, n_terms)`` in :func:`basis.terms` order."""
        return np.vstack([basis.square_to_flat(self.cx), basis.square_to_flat(self.cy)])

    @property
    def centre(self) -> tuple[float, float]:
        """Centre ``(xc, yc)`` of the domain, input units."""
        xc, yc, _, _ = centre_halfwidth(self.domain)
        return (xc, yc)

    def normalise(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Input coordinates -> normalised ``(t, s)`` in ``[-1, 1]`` over the domain.

        Parameters
        ----------
        x, y : array_like
            Input coordinates (broadcast together).

        Returns
        -------
        t, s : np.ndarray
            Normalised coordinates.
        """
        xc, yc, hx, hy = centre_halfwidth(self.domain)
        return (np.asarray(x, dtype=float) - xc) / hx, (np.asarray(y, dtype=float) - yc) / hy

    def in_domain(self, x: ArrayLike, y: ArrayLike, margin: float = 0.0) -> np.ndarray:
        """Boolean mask of the points inside the domain grown by ``margin`` (input unit).

        Parameters
        ----------
        x, y : array_like
            Input coordinates (broadcast together).
        margin : float
            Growth of the domain on every side, input units.

        Returns
        -------
        np.ndarray
            Boolean, of the broadcast shape.
        """
        xmin, xmax, ymin, ymax = self.domain
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        return (x >= xmin - margin) & (x <= xmax + margin) & (y >= ymin - margin) & (y <= ymax + margin)

    # ------------------------------------------------------------------ evaluation
    def __call__(self, x, y):
        """Evaluate the field: returns ``(u, v)`` with the broadcast shape of ``x, y``."""
        return self._evaluate(x, y, jacobian=False)

    evaluate = __call__

    def jacobian(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Field and Jacobian.

        Parameters
        ----------
        x, y : array_like
            Input coordinates (broadcast together).

        Returns
        -------
        u, v : np.ndarray
            The field, of the broadcast shape.
        jac : np.ndarray
            Shape ``(..., 2, 2)``: ``jac[..., 0, :] = (du/dx, du/dy)`` and
            ``jac[..., 1, :] = (dv/dx, dv/dy)``, in output unit per input unit.
        """
        return self._evaluate(x, y, jacobian=True)

    @functools.cached_property
    def _power_series(self):
        """Power-series coefficients in the normalised ``(t, s)``: ``(u, v, du/dt, dv/dt)``,
        each ``(n+1, n+1)`` indexed ``[p, q]`` for ``t**p s**q`` (read-only)."""
        au, av = basis.legendre_to_power(self.cx), basis.legendre_to_power(self.cy)
        out = np.array([au, av, basis.power_derivative(au, 0), basis.power_derivative(av, 0)])
        out.flags.writeable = False
        return out

    def _evaluate(self, x, y, jacobian):
        x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        shape = x.shape
        x = x.ravel()
        y = y.ravel()
        npts = x.size
        n = self.degree
        xc, yc, hx, hy = centre_halfwidth(self.domain)
        # Every output is a polynomial in the normalised (t, s) in [-1, 1], written once as
        # a power series (exact conversion matrices, see basis.legendre_to_power; on
        # [-1, 1] the rounding differs from evaluating the Legendre series only in the last
        # digits).  Per block of points: t and s, the powers t**p (one multiplication
        # each), one matrix product giving the coefficients of s**q of u, v (and du/dt,
        # dv/dt for the Jacobian) at every point, then Horner in s for all of them at once
        # (with the derivatives in s carried along for the Jacobian).  No design matrix is
        # formed; the work arrays of a block are allocated once per chunk.
        nser = 4 if jacobian else 2
        # row block k of `stacked` is series k transposed: [q, p] multiplies t**p (-> s**q)
        stacked = np.ascontiguousarray(
            self._power_series[:nser].transpose(0, 2, 1).reshape(nser * (n + 1), n + 1))
        # rows of `out`: u, v[, du/dt, dv/dt, du/ds, dv/ds] (scaled to x, y at the end)
        out = np.empty((6 if jacobian else 2, npts))

        def work(lo, hi):
            m = -(-min(BLOCK, hi - lo) // WIDTH_STEP) * WIDTH_STEP
            tt, ss = np.zeros(m), np.empty(m)
            powers = np.empty((n + 1, m))
            powers[0] = 1.0
            q = np.empty((nser * (n + 1), m))
            for a in range(lo, hi, BLOCK):
                b = min(a + BLOCK, hi)
                k = b - a
                t, s = tt[:k], ss[:k]
                np.divide(np.subtract(x[a:b], xc, out=t), hx, out=t)
                np.divide(np.subtract(y[a:b], yc, out=s), hy, out=s)
                # the powers and the product always span the whole buffer (columns past k
                # hold stale finite values, unused): one BLAS call of one shape for every
                # block, so a point's result does not depend on where it falls in a block
                powers[1] = tt
                for p in range(1, n):
                    np.multiply(powers[p], tt, out=powers[p + 1])
                np.matmul(stacked, powers, out=q)
                q3 = q.reshape(nser, n + 1, m)[:, :, :k]
                acc = out[:nser, a:b]
                acc[...] = q3[:, n]
                if jacobian:
                    dacc = out[4:, a:b]  # d/ds of u, v by Horner's derivative
                    dacc[...] = 0.0
                for j in range(n - 1, -1, -1):
                    if jacobian:
                        dacc *= s
                        dacc += acc[:2]
                    acc *= s
                    acc += q3[:, j]
                if jacobian:
                    acc[2:] /= hx
                    dacc /= hy

        bounds = [(lo, min(lo + CHUNK, npts)) for lo in range(0, npts, CHUNK)] or [(0, 0)]
        # BLAS on one thread: our threads split the points (BLAS threads inside them would
        # only contend), and a product split among BLAS threads rounds its columns
        # differently; tiny products run on one thread anyway
        with _one_blas_thread() if npts > WIDTH_STEP else nullcontext():
            if len(bounds) > 2 and _threads() > 1:
                with ThreadPoolExecutor(_threads()) as pool:
                    list(pool.map(lambda b: work(*b), bounds))
            else:
                for b in bounds:
                    work(*b)
        u = out[0].reshape(shape)
        v = out[1].reshape(shape)
        if not jacobian:
            return u, v
        # out[2:6] = du/dx, dv/dx, du/dy, dv/dy -> jac[..., row(u, v), col(x, y)]
        jac = np.moveaxis(out[2:].reshape((2, 2) + shape), (0, 1), (-1, -2))
        return u, v, jac

    def design_matrix(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Basis functions at the points.

        Parameters
        ----------
        x, y : array_like
            Input coordinates (flattened).

        Returns
        -------
        np.ndarray
            ``B`` of shape ``(N, n_terms)``; ``u = B @ coefficients[0]``.
        """
        return design_matrix(x, y, self.degree, self.domain)

    # ------------------------------------------------------------------ conversions
    def to_monomials(self, origin: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """Monomial coefficients of the field.

        Parameters
        ----------
        origin : tuple of float
            ``(x0, y0)``, input units.

        Returns
        -------
        mx, my : np.ndarray
            ``m[p, q]`` of ``(x-x0)**p (y-y0)**q``, square ``(n+1, n+1)``.
        """
        xc, yc, hx, hy = centre_halfwidth(self.domain)
        mask = basis.triangle_mask(self.degree)
        mx = basis.legendre_to_monomial(self.cx, (xc, yc), (hx, hy), origin)
        my = basis.legendre_to_monomial(self.cy, (xc, yc), (hx, hy), origin)
        return np.where(mask, mx, 0.0), np.where(mask, my, 0.0)

    def with_degree(self, degree: int) -> DistortionField:
        """The same field stored at a higher degree (exact), or truncated to a lower one.

        Truncating in the Legendre basis gives the best approximation of the lower degree
        in the least-squares sense over the domain (orthogonality of the basis).

        Parameters
        ----------
        degree : int
            The new degree.

        Returns
        -------
        DistortionField
            The field at that degree.
        """
        degree = basis.check_degree(degree)
        cx = np.zeros((degree + 1, degree + 1))
        cy = np.zeros_like(cx)
        k = min(degree, self.degree) + 1
        cx[:k, :k] = self.cx[:k, :k]
        cy[:k, :k] = self.cy[:k, :k]
        mask = basis.triangle_mask(degree)
        return self.replace(cx=np.where(mask, cx, 0.0), cy=np.where(mask, cy, 0.0))

    def replace(self, **changes: object) -> DistortionField:
        """A copy with some attributes replaced (dataclasses.replace).

        Parameters
        ----------
        **changes
            New values of ``cx``, ``cy``, ``domain``, ``unit``, ``input_unit``, ``meta``.

        Returns
        -------
        DistortionField
            The copy (checked like a new field).
        """
        values = dict(cx=self.cx, cy=self.cy, domain=self.domain, unit=self.unit,
                      input_unit=self.input_unit, meta=self.meta)
        values.update(changes)
        return DistortionField(**values)

    def __add__(self, other):
        return self._combine(other, 1.0)

    def __sub__(self, other):
        return self._combine(other, -1.0)

    def _combine(self, other, sign):
        if not isinstance(other, DistortionField):
            return NotImplemented
        if other.domain != self.domain or other.unit != self.unit or other.input_unit != self.input_unit:
            raise ValueError("fields can only be combined on the same domain and units")
        n = max(self.degree, other.degree)
        a, b = self.with_degree(n), other.with_degree(n)
        return a.replace(cx=a.cx + sign * b.cx, cy=a.cy + sign * b.cy, meta={})

    def __mul__(self, factor):
        factor = float(factor)
        return self.replace(cx=self.cx * factor, cy=self.cy * factor)

    __rmul__ = __mul__

    def __repr__(self):
        return (f"DistortionField(degree={self.degree}, domain={self.domain}, "
                f"{self.input_unit} -> {self.unit})")


def centre_halfwidth(domain: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Centre and half widths of a domain.

    Parameters
    ----------
    domain : tuple of float
        ``(xmin, xmax, ymin, ymax)``.

    Returns
    -------
    tuple of float
        ``(xc, yc, hx, hy)``.
    """
    xmin, xmax, ymin, ymax = domain
    return 0.5 * (xmin + xmax), 0.5 * (ymin + ymax), 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)


def design_matrix(x: ArrayLike, y: ArrayLike, degree: int, domain: tuple[float, float, float, float],
                  derivatives: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Legendre basis functions ``P_i(t) P_j(s)`` at the points, in :func:`basis.terms` order.

    Parameters
    ----------
    x, y : array_like
        Input coordinates (flattened).
    degree : int
        Total degree.
    domain : tuple of float
        ``(xmin, xmax, ymin, ymax)``.
    derivatives : bool
        Also return the derivatives of each basis function with respect to ``x`` and
        ``y`` (input units).

    Returns
    -------
    np.ndarray or tuple of np.ndarray
        An ``(N, n_terms)`` array; with ``derivatives=True`` the triple (values,
        d/dx, d/dy), each of that shape.
    """
    domain = as_domain(domain)
    xc, yc, hx, hy = centre_halfwidth(domain)
    t = (np.ravel(np.asarray(x, dtype=float)) - xc) / hx
    s = (np.ravel(np.asarray(y, dtype=float)) - yc) / hy
    ii, jj = np.array(basis.terms(degree)).T
    if not derivatives:
        px = basis.legendre_1d(t, degree)
        py = basis.legendre_1d(s, degree)
        return (px[ii] * py[jj]).T
    px, dpx = basis.legendre_1d(t, degree, derivative=True)
    py, dpy = basis.legendre_1d(s, degree, derivative=True)
    return (px[ii] * py[jj]).T, (dpx[ii] * py[jj]).T / hx, (px[ii] * dpy[jj]).T / hy
