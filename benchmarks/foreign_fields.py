"""Foreign lab campaigns: distortion fields outside astrocal's model family, made without
astrocal's simulators.

:func:`write_foreign_campaign` writes a complete point-level (or, family ``rendered``,
image-level) lab campaign that ``astrocal fit`` (``astrocal measure`` first for rendered
frames) reads, and its truth; :func:`load_truth` reads the truth back, with
``truth.field(x, y) -> (u, v)`` arcsec at any pixels. Only numpy, scipy and astropy are
used to make the data; from astrocal only the shipped mask table is read
(``astrocal.lab.mask.mask_path``).

Conventions (they make the truth directly comparable with a fit, no gauge transform):

* detector 2048 x 2048 px, 0-based pixels (centre of the first pixel 0.0, ``x`` along
  numpy axis 1), domain ``(-0.5, 2047.5)`` on both axes; nominal pixel scale 5.47 mas/px;
  mask plate scale 3.319 mm/arcsec; nominal hole positions ``m_h = xy_mm / 3.319`` arcsec.
* the field ``G_true(p) = u0 + s_nom R(phi) [(p - c) + d(p)]`` (arcsec) with ``c`` the
  detector centre (1023.5, 1023.5), ``s_nom`` the nominal scale, ``phi`` a rotation of up
  to 0.3 deg, ``u0`` a small offset (~0.1 arcsec) and ``d`` the distortion in pixels (the
  family's; it has linear terms too, so the affine part is free).
* exposure ``e``: ``f_eh = m_h + delta_h + s_e m_h + theta_e R90 m_h + o_e + eps_e``,
  ``R90 = [[0, -1], [1, 0]]``, ``o_e`` the commanded offset (``o_0 = 0``, the others
  uniform in +-1 arcsec, rounded to 0.1 mas), ``eps_e ~ N(0, 2 mas)``,
  ``s_e, theta_e ~ N(0, 2e-5)``; exposure 0 is the reference: ``s_0 = theta_0 = eps_0 = 0``.
* hole errors ``delta_h`` i.i.d. ``N(0, sigma_h^2)`` per axis (``sigma_h`` 0.1-1 um at the
  mask), with the translation and rotation of their least-squares affine pattern over the
  holes observed in at least one exposure removed (about those holes' centroid). The
  rotation is the antisymmetric part of the full six-parameter affine least-squares fit
  (the model's gauge: its hole errors carry none of the six patterns, its mask parameters
  are the net scale and the two shears, and the remaining directions, translation and
  rotation, are the gauge); a three-parameter (translation + rotation only) fit differs
  from it when the observed holes' second moments are not isotropic.
  Family ``mask-affine``: the i.i.d. part then loses its scale and shears too and the drawn
  net scale ``s``, shears ``p`` (``(x, -y)``) and ``c`` (``(y, x)``), each ``N(0, sigma_m^2)``
  with ``sigma_m`` in [2, 20] ppm, are added about the observed holes' centroid, so the
  mask's net scale and shears are exactly the drawn ones (the mask's metrology, written
  as ``affine_sigma_ppm`` in the mask table, is then the right prior for them).
* pixel positions ``p = G_true^-1(f)`` by Newton iterations (to < 1e-9 px), kept inside
  ``[-0.5 + margin, 2047.5 - margin]`` (margin 0.5 px), then Gaussian noise of a per-point
  sigma drawn log-uniform in [0.004, 0.04] px (``sigma_x = sigma_y``, ``cov_xy = 0``).

Families:

``poly+grf``      random polynomial distortion (monomials of the normalised coordinates,
                  total degree 2..n, n in 3-5, corner displacement 1-5 px, plus a small
                  linear anamorphism/shear) plus a Gaussian random field in both
                  components (random Fourier features of a squared-exponential kernel:
                  correlation length 1/10-1/4 of the detector, rms 0.005-0.05 px);
``grid``          an optical-like model (radial r^3 and r^5 terms about an off-centre
                  point, a tilt/keystone term, a mid-frequency ripple) tabulated on a
                  17 x 17 or 33 x 33 grid of nodes over the detector (plus one ring of
                  nodes beyond its edges), interpolated with scipy's cubic
                  ``RectBivariateSpline``: the interpolant is the truth;
``mask-affine``   the polynomial of ``poly+grf`` (no random field unless ``grf=True``) and a
                  mask with a net scale and shears (above), metrology ``affine_sigma_ppm``;
``rendered``      the field of ``poly+grf`` (or ``base="grid"``), and instead of tables
                  raw FITS frames ``raw/grid_NN.fits`` rendered with an obscured Airy PSF
                  (D 39 m, obscuration 0.28, 3.8 um), photon and read noise, generic
                  headers (EXPTIME, GAIN, RDNOISE, FILTER, DATE-OBS); the campaign asks for
                  ``[measure] psf = "epsf"``. The true positions are in the truth.

``mask="dense"`` (any family) uses a 21 x 21 grid of holes over +-5.5 arcsec instead of
METIS FP mask #5.

Self-check: ``python benchmarks/foreign_fields.py --selftest`` (also run by
``tests/benchmarks_foreign``).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
from astropy.table import Table

# --------------------------------------------------------------------------- detector facts
NX = NY = 2048
DOMAIN = (-0.5, NX - 0.5, -0.5, NY - 0.5)
XC, YC = 0.5 * (DOMAIN[0] + DOMAIN[1]), 0.5 * (DOMAIN[2] + DOMAIN[3])   # 1023.5
HX, HY = 0.5 * (DOMAIN[1] - DOMAIN[0]), 0.5 * (DOMAIN[3] - DOMAIN[2])   # 1024.0
PIXEL_SCALE = 5.47e-3     # arcsec / px, nominal
MASK_SCALE = 3.319        # mm / arcsec
FILTER = "Lp"
METIS_MASK = "metis_wcu_fp_mask5"
FAMILIES = ("poly+grf", "grid", "mask-affine", "rendered")
R90 = np.array([[0.0, -1.0], [1.0, 0.0]])


# --------------------------------------------------------------------------- distortion parts
def _norm(x, y):
    return (np.asarray(x, float) - XC) / HX, (np.asarray(y, float) - YC) / HY


class PolyPart:
    """Polynomial displacement (px): ``d = sum a[i, j] t^i s^j`` in the normalised
    coordinates ``t = (x - 1023.5) / 1024``, ``s`` likewise (monomials)."""

    kind = "poly"

    def __init__(self, ax, ay):
        self.ax, self.ay = np.asarray(ax, float), np.asarray(ay, float)
        from numpy.polynomial import polynomial as P
        self._P = P
        self._dax = (P.polyder(self.ax, axis=0) / HX, P.polyder(self.ax, axis=1) / HY)
        self._day = (P.polyder(self.ay, axis=0) / HX, P.polyder(self.ay, axis=1) / HY)

    def __call__(self, x, y):
        t, s = _norm(x, y)
        return self._P.polyval2d(t, s, self.ax), self._P.polyval2d(t, s, self.ay)

    def jac(self, x, y):
        t, s = _norm(x, y)
        v = self._P.polyval2d
        return (v(t, s, self._dax[0]), v(t, s, self._dax[1]),
                v(t, s, self._day[0]), v(t, s, self._day[1]))

    def arrays(self):
        return {"ax": self.ax, "ay": self.ay}


class FourierPart:
    """Smooth Gaussian random field (px) by random Fourier features: each component
    ``d_k(x) = sum_j a_kj cos(w_j . x + phi_kj)`` (``x`` in pixels, ``w`` in rad/px)."""

    kind = "fourier"
    CHUNK = 4096

    def __init__(self, omega, phase, amp):
        self.omega = np.asarray(omega, float)   # (K, 2)
        self.phase = np.asarray(phase, float)   # (2, K)
        self.amp = np.asarray(amp, float)       # (2, K)

    def _eval(self, x, y, deriv):
        x, y = np.ravel(np.asarray(x, float)), np.ravel(np.asarray(y, float))
        out = np.empty((6 if deriv else 2, x.size))
        for a in range(0, x.size, self.CHUNK):
            b = min(a + self.CHUNK, x.size)
            arg = np.outer(x[a:b], self.omega[:, 0]) + np.outer(y[a:b], self.omega[:, 1])
            for k in range(2):
                ph = arg + self.phase[k]
                out[k, a:b] = np.cos(ph) @ self.amp[k]
                if deriv:
                    sn = np.sin(ph) * self.amp[k]
                    out[2 + 2 * k, a:b] = -(sn @ self.omega[:, 0])
                    out[3 + 2 * k, a:b] = -(sn @ self.omega[:, 1])
        return out

    def __call__(self, x, y):
        shape = np.shape(x)
        o = self._eval(x, y, False)
        return o[0].reshape(shape), o[1].reshape(shape)

    def jac(self, x, y):
        shape = np.shape(x)
        o = self._eval(x, y, True)
        return tuple(o[k].reshape(shape) for k in (2, 3, 4, 5))

    def arrays(self):
        return {"omega": self.omega, "phase": self.phase, "amp": self.amp}


class GridPart:
    """Displacement (px) tabulated at nodes ``xs`` x ``ys`` and interpolated with scipy's
    cubic ``RectBivariateSpline`` (``s = 0``): the interpolant is the field. ``zx[i, j]`` is
    the x displacement at ``(xs[i], ys[j])``. Beyond the outermost nodes scipy clamps."""

    kind = "grid"

    def __init__(self, xs, ys, zx, zy):
        from scipy.interpolate import RectBivariateSpline
        self.xs, self.ys = np.asarray(xs, float), np.asarray(ys, float)
        self.zx, self.zy = np.asarray(zx, float), np.asarray(zy, float)
        self.sx = RectBivariateSpline(self.xs, self.ys, self.zx, kx=3, ky=3, s=0)
        self.sy = RectBivariateSpline(self.xs, self.ys, self.zy, kx=3, ky=3, s=0)

    def __call__(self, x, y):
        shape = np.shape(x)
        x, y = np.ravel(np.asarray(x, float)), np.ravel(np.asarray(y, float))
        return self.sx.ev(x, y).reshape(shape), self.sy.ev(x, y).reshape(shape)

    def jac(self, x, y):
        shape = np.shape(x)
        x, y = np.ravel(np.asarray(x, float)), np.ravel(np.asarray(y, float))
        return (self.sx.ev(x, y, dx=1).reshape(shape), self.sx.ev(x, y, dy=1).reshape(shape),
                self.sy.ev(x, y, dx=1).reshape(shape), self.sy.ev(x, y, dy=1).reshape(shape))

    def arrays(self):
        return {"xs": self.xs, "ys": self.ys, "zx": self.zx, "zy": self.zy}


PART_TYPES = {c.kind: c for c in (PolyPart, FourierPart, GridPart)}


class ForeignField:
    """``G(p) = offset + matrix @ [(p - c) + d(p)]``: detector pixels -> focal plane arcsec,
    ``d`` the sum of the parts' displacements (px), ``c`` the detector centre."""

    def __init__(self, offset, matrix, parts):
        self.offset = np.asarray(offset, float)
        self.matrix = np.asarray(matrix, float)
        self.parts = list(parts)

    def displacement(self, x, y):
        dx = np.zeros(np.shape(x))
        dy = np.zeros(np.shape(x))
        for p in self.parts:
            a, b = p(x, y)
            dx += a
            dy += b
        return dx, dy

    def __call__(self, x, y):
        x, y = np.asarray(x, float), np.asarray(y, float)
        dx, dy = self.displacement(x, y)
        X, Y = x - XC + dx, y - YC + dy
        m = self.matrix
        return self.offset[0] + m[0, 0] * X + m[0, 1] * Y, self.offset[1] + m[1, 0] * X + m[1, 1] * Y

    def jacobian(self, x, y):
        """(..., 2, 2) arcsec/px: rows u, v; columns x, y."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        j = np.zeros(np.shape(x) + (2, 2))
        j[..., 0, 0] = 1.0
        j[..., 1, 1] = 1.0
        for p in self.parts:
            a, b, c, d = p.jac(x, y)
            j[..., 0, 0] += a
            j[..., 0, 1] += b
            j[..., 1, 0] += c
            j[..., 1, 1] += d
        return self.matrix @ j

    def inverse(self, u, v, tol_px=1e-11, max_iter=60):
        """Pixels ``(x, y)`` with ``G(x, y) = (u, v)`` by Newton iterations from the affine
        inverse; NaN where the iteration does not converge to ``tol_px``."""
        u, v = np.asarray(u, float), np.asarray(v, float)
        minv = np.linalg.inv(self.matrix)
        w = np.stack([u - self.offset[0], v - self.offset[1]], -1) @ minv.T
        x, y = w[..., 0] + XC, w[..., 1] + YC
        done = np.zeros(np.shape(u), bool)
        for _ in range(max_iter):
            gu, gv = self(x, y)
            r = np.stack([gu - u, gv - v], -1)
            step = np.linalg.solve(self.jacobian(x, y), r[..., None])[..., 0]
            x, y = x - step[..., 0], y - step[..., 1]
            done = np.hypot(step[..., 0], step[..., 1]) < tol_px
            if done.all():
                break
        gu, gv = self(x, y)
        resid = np.hypot(gu - u, gv - v) / PIXEL_SCALE
        bad = ~(done & (resid < 1e-9)) | ~np.isfinite(resid)
        x, y = np.where(bad, np.nan, x), np.where(bad, np.nan, y)
        return x, y

    def arrays(self):
        out = {"field_offset": self.offset, "field_matrix": self.matrix}
        for k, p in enumerate(self.parts):
            for name, a in p.arrays().items():
                out[f"part{k}_{name}"] = a
        return out

    @property
    def kinds(self):
        return [p.kind for p in self.parts]

    @classmethod
    def from_arrays(cls, arrays, kinds):
        parts = []
        for k, kind in enumerate(kinds):
            pre = f"part{k}_"
            kw = {name[len(pre):]: arrays[name] for name in arrays if name.startswith(pre)}
            parts.append(PART_TYPES[kind](**kw))
        return cls(arrays["field_offset"], arrays["field_matrix"], parts)


# --------------------------------------------------------------------------- truth quantities
def _quadrature_1d(lo, hi, breaks=(), max_step=64.0, order=4):
    """Composite Gauss-Legendre rule on ``[lo, hi]``: ``order`` points on every interval
    between the ``breaks`` (e.g. a spline's nodes) subdivided to at most ``max_step``."""
    b = np.unique(np.concatenate([[lo, hi], [v for v in breaks if lo < v < hi]]))
    g, w = np.polynomial.legendre.leggauss(order)
    xs, ws = [], []
    for a, c in zip(b[:-1], b[1:]):
        n = int(np.ceil((c - a) / max_step))
        edges = np.linspace(a, c, n + 1)
        for e0, e1 in zip(edges[:-1], edges[1:]):
            xs.append(0.5 * (e0 + e1) + 0.5 * (e1 - e0) * g)
            ws.append(0.5 * (e1 - e0) * w)
    return np.concatenate(xs), np.concatenate(ws)


def gauss_legendre_affine(field, max_step=64.0):
    """The L2 projection of ``field`` onto the degree-1 Legendre terms over the detector
    domain: the 2 x 2 matrix ``A`` (arcsec/px; rows u, v, columns x, y) of the terms
    ``c_10 P_1(t) + c_01 P_1(s)`` in pixels, ``c_ij = (2i+1)(2j+1)/4 * integral of G P_i(t)
    P_j(s) over [-1, 1]^2``. Composite Gauss-Legendre quadrature (4 points per interval of
    at most ``max_step`` px, intervals broken at the nodes of a tabulated part): exact for
    the piecewise cubic spline of family ``grid``, converged to rounding for the others."""
    bx, by = [], []
    for part in field.parts:
        if part.kind == "grid":
            bx += list(part.xs)
            by += list(part.ys)
    qx, wx = _quadrature_1d(DOMAIN[0], DOMAIN[1], bx, max_step)
    qy, wy = _quadrature_1d(DOMAIN[2], DOMAIN[3], by, max_step)
    X, Y = np.meshgrid(qx, qy, indexing="ij")
    W = np.outer(wx, wy) / (HX * HY)          # weights of dt ds
    T, S = (X - XC) / HX, (Y - YC) / HY
    u, v = field(X, Y)
    a = np.empty((2, 2))
    for r, comp in enumerate((u, v)):
        a[r, 0] = 0.75 * np.sum(W * comp * T) / HX
        a[r, 1] = 0.75 * np.sum(W * comp * S) / HY
    return a


def true_pixel_scale(field, max_step=64.0):
    """Areal pixel scale ``sqrt|det A|`` of the L2 projection of ``field`` on the degree-1
    Legendre terms over the detector domain ``(-0.5, 2047.5)^2`` (:func:`gauss_legendre_affine`;
    for a polynomial these are its degree-1 Legendre coefficients, the definition of
    ``Fit.pixel_scale_samples``)."""
    return float(np.sqrt(abs(np.linalg.det(gauss_legendre_affine(field, max_step)))))


def affine_patterns(m, centre=None):
    """The six affine patterns of hole errors at positions ``m`` (H, 2) about ``centre``
    (default their centroid): (H, 2, 6) = translation x, translation y, rotation
    ``R90 (m - c)``, scale ``m - c``, shear plus ``(x, -y)``, shear cross ``(y, x)``."""
    m = np.asarray(m, float)
    c = m.mean(axis=0) if centre is None else np.asarray(centre, float)
    x, y = (m - c).T
    p = np.zeros((len(m), 2, 6))
    p[:, 0, 0] = 1.0
    p[:, 1, 1] = 1.0
    p[:, 0, 2], p[:, 1, 2] = -y, x
    p[:, 0, 3], p[:, 1, 3] = x, y
    p[:, 0, 4], p[:, 1, 4] = x, -y
    p[:, 0, 5], p[:, 1, 5] = y, x
    return p


def affine_decomposition(m, delta):
    """Least-squares coefficients of hole errors ``delta`` (H, 2) in the six patterns of
    :func:`affine_patterns` (about the centroid of ``m``): ``(tx, ty, rot, scale,
    shear_plus, shear_cross)``; the last four dimensionless."""
    p = affine_patterns(m).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(p, np.asarray(delta, float).ravel(), rcond=None)
    return coef


# --------------------------------------------------------------------------- the truth
@dataclass
class ForeignTruth:
    """Truth of a foreign campaign (arcsec, radians, pixels 0-based).

    ``positions`` (E, H, 2): noise-free pixel positions, NaN where the hole is not on the
    detector (not observed); ``observed`` (H,): seen in at least one exposure;
    ``hole_errors`` (H, 2): ``delta_h`` as in the observation equation (gauge: no
    translation or rotation over the observed holes); ``mask_affine``: the net scale and
    shears added (family ``mask-affine``; zeros otherwise); ``params``: the family's
    parameters and settings."""

    field: ForeignField
    family: str
    params: dict
    hole_ids: np.ndarray
    hole_xy: np.ndarray
    hole_errors: np.ndarray
    commanded: np.ndarray
    offset_error: np.ndarray
    pose_scale: np.ndarray
    pose_rot: np.ndarray
    positions: np.ndarray
    observed: np.ndarray
    mask_affine: np.ndarray = dc_field(default_factory=lambda: np.zeros(3))

    def focal_plane(self, e, hole_errors=None):
        """``f_eh`` (H, 2) of exposure ``e`` for every hole, arcsec."""
        d = self.hole_errors if hole_errors is None else hole_errors
        m = self.hole_xy
        return (m + d + self.pose_scale[e] * m + self.pose_rot[e] * (m @ R90.T)
                + self.commanded[e] + self.offset_error[e])

    def hole_errors_perp(self, hole_ids=None):
        """The hole errors of ``hole_ids`` (default the observed holes) with all six affine
        patterns over those holes removed: what the fit's ``hole_samples`` estimate."""
        sel = self._select(hole_ids)
        m, d = self.hole_xy[sel], self.hole_errors[sel]
        p = affine_patterns(m).reshape(-1, 6)
        coef, *_ = np.linalg.lstsq(p, d.ravel(), rcond=None)
        return (d.ravel() - p @ coef).reshape(-1, 2)

    def net_mask_affine(self, hole_ids=None):
        """The mask's net scale and shears over ``hole_ids`` (default the observed holes):
        the fit's ``mask_scale``, ``mask_shear_plus``, ``mask_shear_cross``."""
        sel = self._select(hole_ids)
        return affine_decomposition(self.hole_xy[sel], self.hole_errors[sel])[3:]

    def _select(self, hole_ids):
        if hole_ids is None:
            return np.flatnonzero(self.observed)
        index = {int(h): k for k, h in enumerate(self.hole_ids)}
        return np.array([index[int(h)] for h in hole_ids])

    def pixel_scale(self, max_step=64.0):
        return true_pixel_scale(self.field, max_step)


# --------------------------------------------------------------------------- field families
def _corner_scale(part, corner_px):
    """Factor that makes the largest corner displacement of ``part`` equal ``corner_px``."""
    cx = np.array([DOMAIN[0], DOMAIN[1], DOMAIN[0], DOMAIN[1]])
    cy = np.array([DOMAIN[2], DOMAIN[2], DOMAIN[3], DOMAIN[3]])
    dx, dy = part(cx, cy)
    return corner_px / np.max(np.hypot(dx, dy))


def make_poly_part(rng, degree, corner_px, linear_px=0.3):
    """Random monomial polynomial of total degree 2..``degree`` (coefficients ~ 1/k^1.5 at
    degree k) scaled to ``corner_px`` at the worst corner, plus a linear anamorphism /
    shear of ~``linear_px`` at the edge."""
    ax = np.zeros((degree + 1, degree + 1))
    ay = np.zeros((degree + 1, degree + 1))
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            k = i + j
            if k >= 2:
                ax[i, j], ay[i, j] = rng.normal(0, 1.0 / k**1.5, 2)
    f = _corner_scale(PolyPart(ax, ay), corner_px)
    ax, ay = ax * f, ay * f
    a, b = rng.normal(0, linear_px, 2)   # anamorphism (t, -s) and shear (s, t), px at the edge
    ax[1, 0] += a
    ay[0, 1] -= a
    ax[0, 1] += b
    ay[1, 0] += b
    return PolyPart(ax, ay)


def make_fourier_part(rng, length_px, rms_px, n_features=400):
    """Random Fourier features of a squared-exponential kernel of length ``length_px``,
    both components independent, rescaled to the realised rms ``rms_px`` per component
    over a 64 x 64 grid of the detector."""
    omega = rng.normal(0, 1.0 / length_px, (n_features, 2))
    phase = rng.uniform(0, 2 * np.pi, (2, n_features))
    amp = rng.normal(0, np.sqrt(2.0 / n_features), (2, n_features))
    part = FourierPart(omega, phase, amp)
    g = np.linspace(DOMAIN[0], DOMAIN[1], 64)
    gx, gy = np.meshgrid(g, g)
    dx, dy = part(gx, gy)
    amp = amp * np.array([rms_px / np.sqrt(np.mean(dx**2)), rms_px / np.sqrt(np.mean(dy**2))])[:, None]
    return FourierPart(omega, phase, amp)


def optical_displacement(x, y, p):
    """The analytic optical-like model of family ``grid`` (px): radial ``r^3`` and
    ``r^5`` about ``(x0, y0)``, a tilt (keystone) term, a ripple. ``p`` holds its
    parameters (normalised units: lengths / 1024 px)."""
    rx, ry = (np.asarray(x, float) - p["x0"]) / HX, (np.asarray(y, float) - p["y0"]) / HY
    r2 = rx**2 + ry**2
    rad = p["k3"] * r2 + p["k5"] * r2**2
    tilt = p["tilt"][0] * rx + p["tilt"][1] * ry
    dx = HX * p["scale"] * (rad * rx + tilt * rx)
    dy = HX * p["scale"] * (rad * ry + tilt * ry)
    ph = 2 * np.pi * (np.cos(p["ripple_dir"]) * x + np.sin(p["ripple_dir"]) * y) / p["ripple_period_px"] \
        + p["ripple_phase"]
    dx = dx + p["ripple_amp_px"] * np.cos(p["ripple_pol"]) * np.sin(ph)
    dy = dy + p["ripple_amp_px"] * np.sin(p["ripple_pol"]) * np.sin(ph)
    return dx, dy


def make_grid_part(rng, corner_px, nodes, ripple_amp_px):
    """Family ``grid``: the optical model at ``nodes`` x ``nodes`` nodes spanning the
    detector's pixel edges, plus one ring of nodes beyond them, as a cubic spline."""
    p = {"x0": XC + rng.uniform(-0.25, 0.25) * HX, "y0": YC + rng.uniform(-0.25, 0.25) * HY,
         "k3": rng.normal(0, 1.0), "k5": rng.normal(0, 0.3), "tilt": rng.normal(0, 0.3, 2).tolist(),
         "scale": 1.0, "ripple_amp_px": 0.0, "ripple_dir": rng.uniform(0, np.pi),
         "ripple_pol": rng.uniform(0, 2 * np.pi), "ripple_phase": rng.uniform(0, 2 * np.pi)}
    step = (DOMAIN[1] - DOMAIN[0]) / (nodes - 1)
    p["ripple_period_px"] = float(rng.uniform(4, 8) * step)
    cx = np.array([DOMAIN[0], DOMAIN[1], DOMAIN[0], DOMAIN[1]])
    cy = np.array([DOMAIN[2], DOMAIN[2], DOMAIN[3], DOMAIN[3]])
    dx, dy = optical_displacement(cx, cy, p)
    p["scale"] = float(corner_px / np.max(np.hypot(dx, dy)))
    p["ripple_amp_px"] = float(ripple_amp_px)
    xs = DOMAIN[0] + step * np.arange(-1, nodes + 1)
    ys = DOMAIN[2] + step * np.arange(-1, nodes + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    zx, zy = optical_displacement(X, Y, p)
    return GridPart(xs, ys, zx, zy), p


# --------------------------------------------------------------------------- masks
def dense_mask_table(n=21, half_arcsec=5.5, diameter_um=25.0):
    """A ``n`` x ``n`` grid of holes over +-``half_arcsec`` in the mask-table layout."""
    g = np.linspace(-half_arcsec, half_arcsec, n) * MASK_SCALE
    xx, yy = np.meshgrid(g, g)
    t = Table()
    t["hole_id"] = np.arange(1, n * n + 1, dtype=np.int64)
    t["x_mm"] = np.round(xx.ravel(), 6)
    t["x_mm"].unit = "mm"
    t["y_mm"] = np.round(yy.ravel(), 6)
    t["y_mm"].unit = "mm"
    t["diameter_um"] = np.full(n * n, float(diameter_um))
    t["diameter_um"].unit = "um"
    t.meta["name"] = f"dense {n}x{n} grid"
    t.meta["mask_scale_mm_per_arcsec"] = MASK_SCALE
    t.meta["description"] = (f"benchmark mask: {n} x {n} holes at a pitch of "
                             f"{2 * half_arcsec / (n - 1):g} arcsec (benchmarks/foreign_fields.py)")
    return t


def mask_table(mask):
    if mask == "dense":
        return dense_mask_table()
    if mask in ("metis", METIS_MASK):
        from astrocal.lab.mask import mask_path
        return Table.read(mask_path(METIS_MASK), format="ascii.ecsv")
    raise ValueError(f"unknown mask {mask!r}: 'metis' or 'dense'")


# --------------------------------------------------------------------------- parameters
def draw_params(family, seed, **options):
    """The family's random parameters for ``seed``; any key may be overridden by
    ``options``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    rng = np.random.default_rng([20251, int(seed), FAMILIES.index(family)])
    p = {
        "family": family, "seed": int(seed), "mask": "metis", "noise": True,
        "n_exposures": 10, "offset_range_arcsec": 1.0, "offset_sigma_mas": 2.0, "pose_sigma": 2e-5,
        "hole_error_um": float(rng.uniform(0.1, 1.0)),
        "sigma_range_px": [0.004, 0.04], "margin_px": 0.5,
        "rotation_deg": float(rng.uniform(-0.3, 0.3)),
        "field_offset_arcsec": rng.normal(0, 0.1, 2).tolist(),
        "corner_px": float(rng.uniform(1.0, 5.0)),
        "poly_degree": int(rng.integers(3, 6)),
        "linear_px": 0.3,
        "grf": family in ("poly+grf", "rendered"),
        "grf_length_frac": float(rng.uniform(0.1, 0.25)),
        "grf_rms_px": float(np.exp(rng.uniform(np.log(0.005), np.log(0.05)))),
        "grid_nodes": int(rng.choice([17, 33])),
        "ripple_amp_px": float(rng.uniform(0.01, 0.05)),
        "affine_sigma_ppm": float(rng.uniform(2.0, 20.0)) if family == "mask-affine" else None,
        "base": "poly+grf",
        # rendered frames
        "flux_e": float(np.exp(rng.uniform(np.log(1.5e4), np.log(3e5)))),
        "background_e": 200.0, "read_noise_e": 10.0, "gain": 2.0, "exptime_s": 1.0,
        "calibration_frames": False, "render_radius_px": 24,
        "fit_seed": int(seed) + 1,
        "rng_state": None,
    }
    unknown = set(options) - set(p)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}")
    p.update(options)
    p["rng_state"] = [20251, int(seed), FAMILIES.index(family), 1]
    return p


def build_field(p, rng):
    """The family's :class:`ForeignField` (and extra parameters to record)."""
    phi = np.radians(p["rotation_deg"])
    matrix = PIXEL_SCALE * np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    fam = p["family"] if p["family"] != "rendered" else p["base"]
    extra = {}
    if fam in ("poly+grf", "mask-affine"):
        parts = [make_poly_part(rng, p["poly_degree"], p["corner_px"], p["linear_px"])]
        if p["grf"]:
            parts.append(make_fourier_part(rng, p["grf_length_frac"] * 2 * HX, p["grf_rms_px"]))
    elif fam == "grid":
        part, extra = make_grid_part(rng, p["corner_px"], p["grid_nodes"], p["ripple_amp_px"])
        parts = [part]
    else:
        raise ValueError(f"unknown field family {fam!r}")
    return ForeignField(p["field_offset_arcsec"], matrix, parts), extra


# --------------------------------------------------------------------------- the campaign
def _positions(field, truth, e, margin):
    """Noise-free pixel positions of exposure ``e`` (H, 2), NaN off the detector."""
    f = truth.focal_plane(e)
    minv = np.linalg.inv(field.matrix)
    lin = (f - field.offset) @ minv.T + [XC, YC]
    near = ((lin[:, 0] > DOMAIN[0] - 64) & (lin[:, 0] < DOMAIN[1] + 64)
            & (lin[:, 1] > DOMAIN[2] - 64) & (lin[:, 1] < DOMAIN[3] + 64))
    out = np.full((len(f), 2), np.nan)
    if near.any():
        x, y = field.inverse(f[near, 0], f[near, 1])
        out[near, 0], out[near, 1] = x, y
    with np.errstate(invalid="ignore"):
        inside = ((out[:, 0] >= DOMAIN[0] + margin) & (out[:, 0] <= DOMAIN[1] - margin)
                  & (out[:, 1] >= DOMAIN[2] + margin) & (out[:, 1] <= DOMAIN[3] - margin))
    out[~inside] = np.nan
    return out


def make_truth(p):
    """Draw the truth of a campaign with parameters ``p`` (:func:`draw_params`)."""
    rng = np.random.default_rng(p["rng_state"])
    field, extra = build_field(p, rng)
    mt = mask_table(p["mask"])
    hole_ids = np.asarray(mt["hole_id"], np.int64)
    hole_xy = np.column_stack([np.asarray(mt["x_mm"], float), np.asarray(mt["y_mm"], float)]) / MASK_SCALE
    n_e, n_h = int(p["n_exposures"]), len(hole_ids)
    commanded = np.zeros((n_e, 2))
    commanded[1:] = np.round(rng.uniform(-p["offset_range_arcsec"], p["offset_range_arcsec"], (n_e - 1, 2)), 4)
    eps = np.zeros((n_e, 2))
    eps[1:] = rng.normal(0, p["offset_sigma_mas"] / 1e3, (n_e - 1, 2))
    s = np.zeros(n_e)
    th = np.zeros(n_e)
    s[1:] = rng.normal(0, p["pose_sigma"], n_e - 1)
    th[1:] = rng.normal(0, p["pose_sigma"], n_e - 1)
    delta0 = rng.normal(0, p["hole_error_um"] * 1e-3 / MASK_SCALE, (n_h, 2))
    mask_affine = np.zeros(3)
    if p["affine_sigma_ppm"] is not None and p["family"] == "mask-affine":
        mask_affine = rng.normal(0, p["affine_sigma_ppm"] * 1e-6, 3)
    params = dict(p)
    if extra:
        params["grid_model"] = extra
    truth = ForeignTruth(field, p["family"], params, hole_ids, hole_xy, delta0.copy(), commanded, eps,
                         s, th, np.full((n_e, n_h, 2), np.nan), np.zeros(n_h, bool), mask_affine)
    # the observed set depends (barely) on the hole errors, whose gauge depends on the
    # observed set: iterate to a fixed point
    pos = np.stack([_positions(field, truth, e, p["margin_px"]) for e in range(n_e)])
    seen = np.isfinite(pos[..., 0]).any(axis=0)
    for _ in range(10):
        if seen.sum() < 4:
            raise RuntimeError("fewer than 4 holes on the detector")
        m = hole_xy[seen]
        coef = affine_decomposition(m, delta0[seen])
        drop = [0, 1, 2] if p["family"] != "mask-affine" else [0, 1, 2, 3, 4, 5]
        allpat = affine_patterns(hole_xy, centre=m.mean(axis=0))
        delta = delta0 - allpat[:, :, drop] @ coef[drop]
        if p["family"] == "mask-affine":
            delta = delta + allpat[:, :, 3:] @ mask_affine
        truth.hole_errors = delta
        pos = np.stack([_positions(field, truth, e, p["margin_px"]) for e in range(n_e)])
        new = np.isfinite(pos[..., 0]).any(axis=0)
        if np.array_equal(new, seen):
            break
        seen = new
    else:
        raise RuntimeError("the observed holes did not settle")
    truth.positions = pos
    truth.observed = seen
    return truth, rng


def _toml_float(x):
    return repr(float(x))


def write_foreign_campaign(out_dir, family, seed, overwrite=False, **options):
    """Write a foreign lab campaign into ``out_dir``; returns a dict with the campaign's
    path, its parameters and counts. Options: any key of :func:`draw_params` (e.g.
    ``mask="dense"``, ``noise=False``, ``corner_px=3``, ``grf=True``, ``base="grid"``)."""
    out = Path(out_dir)
    if (out / "campaign.toml").exists() and not overwrite:
        raise FileExistsError(f"{out / 'campaign.toml'} exists (overwrite=True to replace)")
    out.mkdir(parents=True, exist_ok=True)
    p = draw_params(family, seed, **options)
    truth, rng = make_truth(p)
    noise_rng = np.random.default_rng([20251, int(seed), FAMILIES.index(family), 2])

    # mask table: the shipped file copied as it is, or with the metrology added (mask-affine),
    # or the dense grid
    if p["mask"] in ("metis", METIS_MASK) and p["family"] != "mask-affine":
        import shutil
        from astrocal.lab.mask import mask_path
        shutil.copyfile(mask_path(METIS_MASK), out / "mask.ecsv")
    else:
        mt = mask_table(p["mask"])
        if p["family"] == "mask-affine":
            mt.meta["affine_sigma_ppm"] = float(p["affine_sigma_ppm"])
        mt.write(out / "mask.ecsv", format="ascii.ecsv", overwrite=True)

    n_e = len(truth.commanded)
    exposures = []
    n_points = 0
    measured = {}
    if family != "rendered":
        (out / "tables").mkdir(exist_ok=True)
        lo, hi = np.log(p["sigma_range_px"][0]), np.log(p["sigma_range_px"][1])
        for e in range(n_e):
            k = np.flatnonzero(np.isfinite(truth.positions[e, :, 0]))
            true = truth.positions[e, k]
            sig = np.exp(noise_rng.uniform(lo, hi, k.size))
            noise = noise_rng.standard_normal((k.size, 2)) * sig[:, None]
            meas = true + noise if p["noise"] else true.copy()
            t = Table()
            t["hole_id"] = truth.hole_ids[k].astype(np.int64)
            t["x"], t["y"] = meas[:, 0], meas[:, 1]
            t["sigma_x"], t["sigma_y"] = sig, sig.copy()
            t["cov_xy"] = np.zeros(k.size)
            t["flags"] = np.zeros(k.size, np.int64)
            t.meta["offset_arcsec"] = truth.commanded[e].tolist()
            name = f"tables/grid_{e:02d}.ecsv"
            t.write(out / name, format="ascii.ecsv", overwrite=True)
            exposures.append(name)
            measured[e] = meas
            n_points += k.size
    else:
        (out / "raw").mkdir(exist_ok=True)
        for e in range(n_e):
            name = f"raw/grid_{e:02d}.fits"
            render_frame(out / name, truth, e, p, noise_rng)
            exposures.append(name)
            n_points += int(np.isfinite(truth.positions[e, :, 0]).sum())
        if p["calibration_frames"]:
            write_calibration_frames(out, p, noise_rng)

    lines = ["[instrument]", 'name = "METIS IMG_LM"', 'preset = "metis-lm"', "",
             "[[lab]]", 'mask = "mask.ecsv"', f'filter = "{FILTER}"']
    if family == "rendered" and p["calibration_frames"]:
        lines += ['background = "raw/background.fits"', 'flat = "raw/flat.fits"']
    lines.append("exposures = [")
    for e, name in enumerate(exposures):
        o = truth.commanded[e]
        lines.append(f'  {{ file = "{name}", offset_arcsec = [{_toml_float(o[0])}, {_toml_float(o[1])}], '
                     f"offset_sigma_mas = {_toml_float(p['offset_sigma_mas'])} }},")
    lines += ["]", ""]
    if family == "rendered":
        lines += ["[measure]", 'output = "measured/"', 'psf = "epsf"', ""]
    lines += ["[fit]", 'degree = "auto"', 'output = "out/"', f"seed = {int(p['fit_seed'])}", ""]
    (out / "campaign.toml").write_text("\n".join(lines))

    # truth
    arrays = truth.field.arrays()
    arrays.update(hole_ids=truth.hole_ids, hole_xy=truth.hole_xy, hole_errors=truth.hole_errors,
                  commanded=truth.commanded, offset_error=truth.offset_error,
                  pose_scale=truth.pose_scale, pose_rot=truth.pose_rot, positions=truth.positions,
                  observed=truth.observed, mask_affine=truth.mask_affine)
    np.savez(out / "truth.npz", **arrays)
    info = {
        "family": family, "seed": int(seed), "field_parts": truth.field.kinds,
        "params": _jsonable(truth.params),
        "pixel_scale_arcsec": truth.pixel_scale(),
        "n_points": int(n_points), "n_observed_holes": int(truth.observed.sum()),
        "hole_error_rms_um": float(np.sqrt(np.mean(truth.hole_errors[truth.observed] ** 2)) * MASK_SCALE * 1e3),
        "mask_affine_drawn": truth.mask_affine.tolist(),
        "mask_affine_net": truth.net_mask_affine().tolist(),
        "conventions": "pixels 0-based (first pixel centre 0.0, x along numpy axis 1); field "
                       "G(p) = field_offset + field_matrix @ [(p - (1023.5, 1023.5)) + d(p)] arcsec; "
                       "f_eh = m_h + delta_h + s_e m_h + theta_e R90 m_h + o_e + eps_e; exposure 0 "
                       "is the reference (s = theta = eps = 0)",
    }
    (out / "truth.json").write_text(json.dumps(info, indent=1))
    return {"campaign": out / "campaign.toml", "dir": out, "params": truth.params, "truth": truth,
            "n_points": int(n_points), "n_observed_holes": int(truth.observed.sum()),
            "measured": measured}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def load_truth(out_dir):
    """The :class:`ForeignTruth` of a campaign written by :func:`write_foreign_campaign`."""
    out = Path(out_dir)
    info = json.loads((out / "truth.json").read_text())
    with np.load(out / "truth.npz") as z:
        a = {k: z[k] for k in z.files}
    field = ForeignField.from_arrays(a, info["field_parts"])
    return ForeignTruth(field, info["family"], info["params"], a["hole_ids"], a["hole_xy"],
                        a["hole_errors"], a["commanded"], a["offset_error"], a["pose_scale"],
                        a["pose_rot"], a["positions"], a["observed"].astype(bool), a["mask_affine"])


# --------------------------------------------------------------------------- rendering
#: ELT-like pupil and the L' wavelength of family ``rendered``
TELESCOPE_D_M = 39.0
OBSCURATION = 0.28
WAVELENGTH_M = 3.8e-6


def airy_pixel_fractions(dx, dy, sub=4):
    """Fraction of a point source's flux in whole pixels at offsets ``dx, dy`` (px) from
    the source: the obscured Airy pattern (``TELESCOPE_D_M``, ``OBSCURATION``,
    ``WAVELENGTH_M``) integrated over the pixel by a ``sub`` x ``sub`` Gauss-Legendre rule."""
    from scipy.special import j1
    g, w = np.polynomial.legendre.leggauss(sub)
    g, w = 0.5 * g, 0.5 * w
    theta_px = PIXEL_SCALE / 206264.80624709636     # rad per pixel
    eps = OBSCURATION
    k = np.pi * TELESCOPE_D_M * theta_px / WAVELENGTH_M   # v per pixel
    peak = np.pi / 4 * (TELESCOPE_D_M * theta_px / WAVELENGTH_M) ** 2 * (1 - eps**2)
    acc = np.zeros(np.shape(dx))
    for gi, wi in zip(g, w):
        for gj, wj in zip(g, w):
            v = k * np.hypot(dx + gi, dy + gj)
            vs = np.where(v > 1e-8, v, 1.0)
            a1 = np.where(v > 1e-8, 2 * j1(vs) / vs, 1.0)
            ve = eps * vs
            a2 = np.where(v > 1e-8, 2 * j1(ve) / ve, 1.0)
            amp = (a1 - eps**2 * a2) / (1 - eps**2)
            acc += wi * wj * amp**2
    return peak * acc


def render_frame(path, truth, e, p, rng):
    """Render exposure ``e`` (spots at the true positions) with photon and read noise and
    write it with generic FITS keywords."""
    from astropy.io import fits
    img = np.full((NY, NX), float(p["background_e"]))
    pos = truth.positions[e]
    ok = np.isfinite(pos[:, 0])
    hole_rng = np.random.default_rng([int(p["seed"]), 99])   # per-hole brightness, fixed per campaign
    bright = hole_rng.uniform(0.7, 1.3, len(pos))
    rad = int(p["render_radius_px"])
    off = np.arange(-rad, rad + 1)
    for k in np.flatnonzero(ok):
        x0, y0 = pos[k]
        ix, iy = int(round(x0)), int(round(y0))
        xs, ys = ix + off, iy + off
        sx = (xs >= 0) & (xs < NX)
        sy = (ys >= 0) & (ys < NY)
        X, Y = np.meshgrid(xs[sx], ys[sy])
        frac = airy_pixel_fractions(X - x0, Y - y0)
        img[np.ix_(ys[sy], xs[sx])] += p["flux_e"] * bright[k] * frac
    counts = rng.poisson(img).astype(float) + rng.normal(0, p["read_noise_e"], img.shape)
    adu = (counts / p["gain"]).astype(np.float32)
    h = fits.Header()
    h["EXPTIME"] = (float(p["exptime_s"]), "[s] exposure time")
    h["GAIN"] = (float(p["gain"]), "[e/ADU]")
    h["RDNOISE"] = (float(p["read_noise_e"]), "[e] read noise")
    h["FILTER"] = (FILTER, "filter")
    h["DATE-OBS"] = (f"2025-06-01T12:{e:02d}:00.000", "start of exposure (UTC)")
    fits.PrimaryHDU(adu, header=h).writeto(path, overwrite=True)


def write_calibration_frames(out, p, rng):
    """A background frame (the same level, no spots) and a flat (uniform lamp at half the
    well), generic headers: to reproduce issue 18's calibration-header failure."""
    from astropy.io import fits
    for name, level in (("background", p["background_e"]), ("flat", 3.0e4)):
        img = rng.poisson(np.full((NY, NX), float(level))).astype(float) + rng.normal(0, p["read_noise_e"], (NY, NX))
        h = fits.Header()
        h["EXPTIME"] = float(p["exptime_s"])
        h["GAIN"] = float(p["gain"])
        h["RDNOISE"] = float(p["read_noise_e"])
        h["FILTER"] = FILTER
        h["DATE-OBS"] = "2025-06-01T11:00:00.000"
        fits.PrimaryHDU((img / p["gain"]).astype(np.float32), header=h).writeto(out / "raw" / f"{name}.fits",
                                                                                 overwrite=True)


# --------------------------------------------------------------------------- self-check
def check_campaign(out_dir, tol_px=1e-9):
    """Check a campaign written with ``noise=False``: raises ``AssertionError`` on a
    violation; returns the largest deviations found.

    * every table row's position maps through ``G_true`` onto ``f_eh`` of its hole and
      exposure (forward evaluation, independent of the inversion) to < ``tol_px``;
    * exposure 0 is the reference: commanded offset 0, ``s = theta = eps = 0``;
    * the hole errors carry no translation or rotation over the observed holes (the holes
      in the tables), and for ``mask-affine`` their net scale and shears equal the drawn;
    * the truth's pixel scale quadrature has converged (intervals of 64 against 32 px).
    """
    out = Path(out_dir)
    truth = load_truth(out)
    rep = {}
    assert truth.commanded[0].tolist() == [0.0, 0.0]
    assert truth.pose_scale[0] == 0.0 and truth.pose_rot[0] == 0.0
    assert np.all(truth.offset_error[0] == 0.0)
    seen = set()
    worst = 0.0
    for e in range(len(truth.commanded)):
        t = Table.read(out / "tables" / f"grid_{e:02d}.ecsv", format="ascii.ecsv")
        assert list(t.meta["offset_arcsec"]) == truth.commanded[e].tolist()
        index = {int(h): k for k, h in enumerate(truth.hole_ids)}
        k = np.array([index[int(h)] for h in t["hole_id"]])
        f = truth.focal_plane(e)[k]
        u, v = truth.field(np.asarray(t["x"], float), np.asarray(t["y"], float))
        dev = np.hypot(u - f[:, 0], v - f[:, 1]) / PIXEL_SCALE
        worst = max(worst, float(dev.max()))
        assert np.all(np.asarray(t["x"]) >= DOMAIN[0]) and np.all(np.asarray(t["x"]) <= DOMAIN[1])
        assert np.all(np.asarray(t["y"]) >= DOMAIN[2]) and np.all(np.asarray(t["y"]) <= DOMAIN[3])
        seen |= set(int(h) for h in t["hole_id"])
    rep["forward_residual_px"] = worst
    assert worst < tol_px, f"G_true(table position) differs from f by {worst:.3g} px"
    obs = set(int(h) for h in truth.hole_ids[truth.observed])
    assert obs == seen, "observed holes of the truth differ from the holes in the tables"
    m, d = truth.hole_xy[truth.observed], truth.hole_errors[truth.observed]
    coef = affine_decomposition(m, d)
    sig = np.sqrt(np.mean(d**2))
    rep["translation_rotation"] = [float(coef[0] / sig), float(coef[1] / sig),
                                   float(coef[2] * np.sqrt(np.mean(np.sum((m - m.mean(0)) ** 2, 1))) / sig)]
    assert np.all(np.abs(rep["translation_rotation"]) < 1e-10), rep["translation_rotation"]
    if truth.family == "mask-affine":
        rep["mask_affine_diff"] = (coef[3:] - truth.mask_affine).tolist()
        assert np.allclose(coef[3:], truth.mask_affine, rtol=1e-9, atol=1e-13), rep["mask_affine_diff"]
        mt = Table.read(out / "mask.ecsv", format="ascii.ecsv")
        assert float(mt.meta["affine_sigma_ppm"]) == float(truth.params["affine_sigma_ppm"])
    s64, s32 = true_pixel_scale(truth.field, 64.0), true_pixel_scale(truth.field, 32.0)
    rep["pixel_scale_quadrature_rel"] = abs(s64 / s32 - 1)
    assert rep["pixel_scale_quadrature_rel"] < 1e-12, rep["pixel_scale_quadrature_rel"]
    return rep


def selftest(families=("poly+grf", "grid", "mask-affine"), seeds=(1, 2), masks=("metis", "dense"),
             base=None, verbose=True):
    """Write noise-free campaigns of ``families`` into temporary directories and check them
    (:func:`check_campaign`); also check that astrocal loads them as a fit would."""
    import tempfile
    from astrocal.campaign import load_campaign
    from astrocal.stages.fit_inputs import lab_points_for, mask_affine_sigma

    reports = []
    for fam in families:
        for seed in seeds:
            for mask in masks:
                with tempfile.TemporaryDirectory() as tmp:
                    info = write_foreign_campaign(tmp, fam, seed, mask=mask, noise=False)
                    rep = check_campaign(tmp)
                    c = load_campaign(Path(tmp) / "campaign.toml")
                    pts, _ = lab_points_for(c, c.lab)
                    assert pts.n_points == info["n_points"], (pts.n_points, info["n_points"])
                    assert pts.n_holes == info["n_observed_holes"]
                    ppm = mask_affine_sigma(c.fit, c.lab)
                    if fam == "mask-affine":
                        assert ppm == info["params"]["affine_sigma_ppm"]
                    else:
                        assert ppm is None
                    rep.update(family=fam, seed=seed, mask=mask, n_points=info["n_points"],
                               n_holes=info["n_observed_holes"])
                    reports.append(rep)
                    if verbose:
                        print(f"ok {fam:12s} seed {seed} {mask:6s}: {info['n_points']:5d} points, "
                              f"{info['n_observed_holes']:3d} holes; |G(p) - f| max "
                              f"{rep['forward_residual_px']:.1e} px; T/R of delta "
                              f"{max(abs(v) for v in rep['translation_rotation']):.1e} (rel)"
                              + (f"; net scale/shears - drawn {max(abs(v) for v in rep['mask_affine_diff']):.1e}"
                                 if "mask_affine_diff" in rep else ""), flush=True)
    return reports


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path, help="campaign directory to write")
    ap.add_argument("--family", default="poly+grf", choices=FAMILIES)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mask", default="metis", choices=("metis", "dense"))
    ap.add_argument("--no-noise", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--selftest", action="store_true", help="write noise-free campaigns and check them")
    args = ap.parse_args()
    if args.selftest:
        selftest()
        print("selftest passed")
        return
    if args.out is None:
        ap.error("give a directory (or --selftest)")
    info = write_foreign_campaign(args.out, args.family, args.seed, mask=args.mask,
                                  noise=not args.no_noise, overwrite=args.overwrite)
    print(f"wrote {info['campaign']}: {info['n_points']} points, {info['n_observed_holes']} holes")


if __name__ == "__main__":
    main()
