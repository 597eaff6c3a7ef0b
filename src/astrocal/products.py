"""Calibration products of a fit: the solution files other software reads.

From a saved posterior (:func:`astrocal.model.result.load_posterior`), per filter:

- ``astromet_<filter>.fits``: AstroMet FITS (XMM-OM CCF layout) of the posterior-mean field
  with ``RAWX_OFF_ERR``/``RAWY_OFF_ERR`` from the posterior draws;
- ``wcs_sip_<filter>.hdr``: a FITS WCS header with TAN-SIP of the posterior-mean field
  (its polynomial);
- with a residual field beyond the polynomial (:mod:`astrocal.field.residual`),
  ``wcs_lookup_<filter>.fits``: the same TAN-SIP header completed by distortion look-up
  tables of the residual (``CPDIS``/``DP``, ``WCSDVARR`` extensions;
  :mod:`astrocal.formats.lookup`), so that astropy.wcs and drizzlepac apply the full field;
- for METIS imagers, ``<B>_DISTORTION_TABLE_<filter>.fits`` and
  ``<B>_DISTORTION_MAP_<filter>.fits`` with ``<B>`` = ``LM`` or ``N``: the products of the
  METIS pipeline recipe ``metis_<b>_img_distortion`` (:func:`write_metis_products`).

The 1-sigma of the offsets at a detector position is the posterior spread of the
linear-grid position there, ``M (G(p) - G(b))`` (see :mod:`astrocal.solution`), from the
exact draws of the field.

Every product says whether its plate scale is measured (``HIERARCH ASTROCAL SCALE
MEASURED``: false for a sky-only fit, whose field scale the priors set) and, with sky data,
each sky dataset's on-sky pixel scale and position angle (``HIERARCH ASTROCAL SKY<k>
SCALE``, ``PA`` and their ``ERR``; :func:`astrocal.model.onsky.product_cards`).

Every product states the astrocal version, the sha256 of the campaign file and the input
files (the campaign and the measured source tables, as recorded by the fit).

METIS product definitions (names, ``PRO.CATG``, OCA keywords ``PRO.CATG`` and
``DRS.FILTER``, primary keywords ``DPR.CATG/TECH/TYPE``, QC parameters
``QC {LM,N} DISTORT RMS`` [pixels, ``%.3f``] and ``QC {LM,N} DISTORT NSOURCE`` [int]) follow
the METIS Data Reduction Library Design (E-REP-AST-MET-1006, LaTeX source
AstarVienna/METIS_DRLD @ f34cc9a3298f450b7bb7b47ac9910d59e110ea1e: Recipes_Imaging_LM.tex,
CalDB_data_items.tex, 12_0-QC_parameters.tex, IMG_data_items.tex). The DRLD defines no
columns for the distortion table; the layout here is astrocal's and is stated in the
files' headers.
"""
from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits

from . import __version__
from .atomic import atomic_path
from .field import design_matrix
from .model import draws
from .model.onsky import product_cards
from .model.quality import fit_quality, quality_cards
from .field.basis import flat_to_square, legendre_1d, legendre_to_monomial, square_to_flat, terms
from .formats.astromet import write_astromet
from .formats.lookup import write_wcs_lookup
from .formats.sip import sip_header, write_sip_header
from .image.headers import set_card
from .pixels import to_fits
from .solution import Solution

log = logging.getLogger(__name__)

#: the DRLD's raw-frame classification of distortion frames, copied into the products
#: (Recipes_Imaging_LM.tex / IMG_data_items.tex: LM_DISTORTION_RAW, N_DISTORTION_RAW)
DPR = {"LM": {"CATG": "CALIB", "TECH": "IMAGE,LM", "TYPE": "DISTORTION"},
       "N": {"CATG": "CALIB", "TECH": "IMAGE,N", "TYPE": "DISTORTION"}}

#: METIS pipeline recipe that defines the products of each band
RECIPE = {"LM": "metis_lm_img_distortion", "N": "metis_n_img_distortion"}


def eso(dotted):
    """``"QC.LM.DISTORT.RMS"`` -> ``"HIERARCH ESO QC LM DISTORT RMS"``."""
    return "HIERARCH ESO " + dotted.replace(".", " ")


def metis_band(instrument):
    """``"LM"`` or ``"N"`` for a METIS imager (campaign or registry name), else ``None``."""
    from .instruments import get_instrument

    if not instrument:
        return None
    try:
        inst = get_instrument(instrument)
    except KeyError:
        return None
    return {"IMG_LM": "LM", "IMG_N": "N"}.get(inst.keywords.ins_mode)


# =========================================================================== solution
def posterior_solution(posterior, filter_id, detector_shape=None, meta=None, sigma_part="auto"):
    """A :class:`Solution` of the posterior-mean field with the posterior's uncertainty.

    With a residual field (:mod:`astrocal.field.residual`) the solution's field is the
    posterior-mean polynomial and its ``residual`` the posterior-mean residual. Its
    ``sigma(x, y)`` is the posterior standard deviation of the linear-grid position
    ``M (G(p) + r(p) - G(b))`` (pixels) along x and y: exactly the sample standard deviation
    over the draws (``ddof=1``), computed from their covariance (linear in the
    coefficients), with the unresolved field's mean variance (:mod:`astrocal.model.draws`)
    added in quadrature.

    A fit whose pixel scale is not measured (sky-only: ``fit.json`` ``pixel_scale_mas``
    ``measured`` false) has its scale, rotation and position set by priors: its
    ``sigma`` is then that of the field's non-linear part alone (the degree <= 1 Legendre
    coefficients, the field's affine part, left out: each draw's own affine map taken as
    given), what the data measure; ``solution.meta["sigma_part"]`` says ``"non-linear"``.
    ``sigma_part``: ``"auto"`` (that rule), ``"full"`` or ``"non-linear"``.
    """
    field = posterior.mean_field()
    residual = posterior.mean_residual()
    sol = Solution(field, filter=filter_id, detector_shape=detector_shape, meta=meta or {}, residual=residual)
    b = sol.boresight
    m = sol.linear_matrix
    nt = posterior.nt
    res = posterior.residual
    # columns of each component's coefficients: its polynomial's, then its residual's
    cu, cv = np.arange(nt), np.arange(nt, 2 * nt)
    if res is not None:
        basis, r0 = res
        cu, cv = np.r_[cu, r0:r0 + basis.size], np.r_[cv, r0 + basis.size:r0 + 2 * basis.size]
    cov = np.atleast_2d(np.cov(posterior.g[:, np.r_[cu, cv]], rowvar=False))  # arcsec**2
    meta = dict(meta or {})
    if sigma_part not in ("auto", "full", "non-linear"):
        raise ValueError(f"sigma_part must be 'auto', 'full' or 'non-linear', got {sigma_part!r}")
    unmeasured = (posterior.info.get("pixel_scale_mas") or {}).get("measured", True) is False
    if sigma_part == "non-linear" or (sigma_part == "auto" and unmeasured):
        affine = np.array([i + j <= 1 for i, j in terms(posterior.degree)])
        drop = np.r_[affine, np.zeros(len(cu) - nt, bool)]
        drop = np.r_[drop, drop]
        cov[drop, :] = 0.0
        cov[:, drop] = 0.0
        meta["sigma_part"] = "non-linear"
    bb = design_matrix([b[0]], [b[1]], posterior.degree, posterior.domain)[0]
    # unresolved field: isotropic variance per component (arcsec**2), through M to pixels
    extra = draws.unresolved_variance(posterior.unresolved) * np.sum(m**2, axis=1)

    def sigma(x, y):
        x = np.ravel(np.asarray(x, float))
        y = np.ravel(np.asarray(y, float))
        out_x = np.empty(x.size)
        out_y = np.empty(x.size)
        for lo in range(0, x.size, 4096):
            xs, ys = x[lo:lo + 4096], y[lo:lo + 4096]
            B = design_matrix(xs, ys, posterior.degree, posterior.domain) - bb  # d(component)/d(its coefficients)
            if res is not None:
                B = np.hstack([B, res[0].design(xs, ys)])
            for row, out in ((0, out_x), (1, out_y)):
                a = np.hstack([m[row, 0] * B, m[row, 1] * B])  # d(linear-grid position)/d(g)
                out[lo:lo + 4096] = np.sqrt(np.maximum(np.einsum("na,ab,nb->n", a, cov, a), 0.0) + extra[row])
        return out_x, out_y

    return Solution(field, filter=filter_id, detector_shape=detector_shape, sigma=sigma,
                    meta=meta, boresight=b, plate_scale=sol.plate_scale,
                    rotation=sol.rotation, parity=sol.parity, residual=residual)


# =========================================================================== maps on grids
def _jacobian_grid(field, xs, ys):
    """``(du/dx, du/dy, dv/dx, dv/dy)`` of the polynomial ``field`` on the grid ``xs`` x
    ``ys``, each ``(len(ys), len(xs))``. The Legendre basis is separable, so the Jacobian
    on a grid is four small matrix products (exact)."""
    t, _ = field.normalise(np.asarray(xs, float), np.zeros(len(xs)))
    _, s = field.normalise(np.zeros(len(ys)), np.asarray(ys, float))
    n = field.degree
    xmin, xmax, ymin, ymax = field.domain
    hx, hy = 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)
    px, dpx = legendre_1d(t, n, derivative=True)
    py, dpy = legendre_1d(s, n, derivative=True)
    # u[y, x] = sum_ij c[i, j] P_j(s_y) P_i(t_x)
    return (py.T @ field.cx.T @ dpx / hx, dpy.T @ field.cx.T @ px / hy,
            py.T @ field.cy.T @ dpx / hx, dpy.T @ field.cy.T @ px / hy)


def local_scale_grid(field, xs, ys, residual=None):
    """Areal local pixel scale ``sqrt(|det J|)`` of ``field`` on the grid ``xs`` x ``ys``.

    ``xs``, ``ys``: 1-D 0-based pixel coordinates; returns an array ``(len(ys), len(xs))``
    in the field's output unit per pixel (arcsec/pixel for an instrument field), exact (the
    same values as :func:`astrocal.field.local_geometry` point by point). ``residual``:
    ``(ResidualBasis, wu, wv)``, a residual field's basis and its coefficients (u, v), added
    to the field (its raw eigenfunctions separable on the grid, its polynomial part
    subtracted from the field's coefficients).
    """
    if residual is not None:
        basis, wu, wv = residual
        poly = _minus_residual_polynomial(field, basis, wu, wv)
        a, b, c, d = _jacobian_grid(poly, xs, ys)
        _, rux, ruy = basis.raw_grid(wu, xs, ys)
        _, rvx, rvy = basis.raw_grid(wv, xs, ys)
        a, b, c, d = a + rux, b + ruy, c + rvx, d + rvy
    else:
        a, b, c, d = _jacobian_grid(field, xs, ys)
    return np.sqrt(np.abs(a * d - b * c))


def _minus_residual_polynomial(field, basis, wu, wv):
    """``field`` minus the polynomial part of the residual ``(wu, wv)`` on ``basis``
    (:meth:`ResidualBasis.polynomial_part`), stored at the higher of the two degrees."""
    degree = max(field.degree, basis.degree)
    f = field.with_degree(degree)
    pu = np.zeros((degree + 1, degree + 1))
    pv = np.zeros_like(pu)
    k = basis.degree + 1
    pu[:k, :k] = flat_to_square(basis.polynomial_part(wu), basis.degree)
    pv[:k, :k] = flat_to_square(basis.polynomial_part(wv), basis.degree)
    return f.replace(cx=f.cx - pu, cy=f.cy - pv)


def local_scale_samples(posterior, x, y, max_draws=1000, chunk=256):
    """Posterior draws of the areal local pixel scale at points (arcsec/pixel), of the
    polynomial plus the residual field when the fit has one.

    Returns ``(n_draws, N)``; at most ``max_draws`` draws, thinned evenly.
    """
    x = np.ravel(np.asarray(x, float))
    y = np.ravel(np.asarray(y, float))
    g = posterior.g
    if len(g) > max_draws:
        g = g[np.linspace(0, len(g) - 1, max_draws).astype(int)]
    nt = posterior.nt
    gu, gv = g[:, :nt], g[:, nt:2 * nt]
    res = posterior.residual
    out = np.empty((len(g), x.size))
    for lo in range(0, x.size, chunk):
        xs, ys = x[lo:lo + chunk], y[lo:lo + chunk]
        _, bx, by = design_matrix(xs, ys, posterior.degree, posterior.domain, derivatives=True)
        a, b = gu @ bx.T, gu @ by.T
        c, d = gv @ bx.T, gv @ by.T
        if res is not None:
            basis, r0 = res
            m = basis.size
            px, py = basis.design_derivatives(xs, ys)
            ru, rv = g[:, r0:r0 + m], g[:, r0 + m:r0 + 2 * m]
            a, b, c, d = a + ru @ px.T, b + ru @ py.T, c + rv @ px.T, d + rv @ py.T
        out[:, lo:lo + chunk] = np.sqrt(np.abs(a * d - b * c))
    return out


# =========================================================================== coefficients
def distortion_coefficients(posterior, solution):
    """Monomial coefficients of the distortion with their posterior means and sd.

    Returns a dict of arrays in :func:`astrocal.field.basis.terms` order: ``i``, ``j``
    (powers of ``X = x - x_b`` and ``Y = y - y_b``, pixels, ``b`` the boresight),
    ``dx``, ``dy`` (+ ``_err``): the reverse offsets ``D2(p) = p - L(p)`` (pixels; subtract
    them from a measured position to get its linear-grid position) relative to the
    linear grid of ``solution`` (its boresight, plate scale, rotation and parity held
    fixed for every draw), and ``u``, ``v`` (+ ``_err``): the field ``G`` itself
    (focal-plane arcsec). Means are of the draws, ``_err`` their standard deviations.
    """
    degree = posterior.degree
    nt = posterior.nt
    xmin, xmax, ymin, ymax = posterior.domain
    centre = (0.5 * (xmin + xmax), 0.5 * (ymin + ymax))
    half = (0.5 * (xmax - xmin), 0.5 * (ymax - ymin))
    b = solution.boresight
    mu = legendre_to_monomial(flat_to_square(posterior.g[:, :nt], degree), centre, half, b)
    mv = legendre_to_monomial(flat_to_square(posterior.g[:, nt:2 * nt], degree), centre, half, b)
    mu, mv = square_to_flat(mu), square_to_flat(mv)  # (n, nt) in terms() order
    m = solution.linear_matrix
    dx = -(m[0, 0] * mu + m[0, 1] * mv)
    dy = -(m[1, 0] * mu + m[1, 1] * mv)
    ij = terms(degree)
    k10, k01 = ij.index((1, 0)), ij.index((0, 1))
    dx[:, 0] = dy[:, 0] = 0.0  # D2(b) = 0 by construction of the linear grid
    dx[:, k10] += 1.0
    dy[:, k01] += 1.0
    out = {"i": np.array([i for i, _ in ij]), "j": np.array([j for _, j in ij])}
    for name, values in (("dx", dx), ("dy", dy), ("u", mu), ("v", mv)):
        out[name] = values.mean(axis=0)
        out[f"{name}_err"] = values.std(axis=0, ddof=1)
    return out


# =========================================================================== headers
def provenance_cards(header, campaign_sha256="", inputs=(), settings=None):
    """Write astrocal's provenance into ``header``: software version, the campaign file's
    sha256 (``CAMPHASH``), the input files (``INPUT<k>``, long strings continued) and the
    fit settings (``HISTORY``)."""
    set_card(header, "CREATOR", f"astrocal {__version__}", "software that wrote the file")
    set_card(header, "DATE", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
           "UTC creation date")
    set_card(header, "CAMPHASH", str(campaign_sha256), "sha256 of the campaign file")
    inputs = [str(p) for p in inputs]
    header["NINPUTS"] = (len(inputs), "number of input files (INPUT<k>)")
    for k, path in enumerate(inputs, start=1):
        header[f"INPUT{k}"] = path
    for key, value in (settings or {}).items():
        header.add_history(f"{key} = {value}")


def _metis_primary(band, filter_id, pro_catg, qc_rms, nsource, provenance, cards=()):
    h = fits.Header()
    h["INSTRUME"] = ("METIS", "instrument")
    h["TELESCOP"] = ("ESO-ELT", "telescope")
    set_card(h, eso("PRO.CATG"), pro_catg, "product category")
    set_card(h, eso("DRS.FILTER"), str(filter_id), "filter")
    for key, value in DPR[band].items():
        set_card(h, eso(f"DPR.{key}"), value, "of the input frames")
    set_card(h, eso(f"QC.{band}.DISTORT.RMS"), float(f"{qc_rms:.3f}"),
           "[pixel] rms of fit residuals")
    set_card(h, eso(f"QC.{band}.DISTORT.NSOURCE"), int(nsource), "positions used in the fit")
    for key, value, comment in cards:
        set_card(h, key, value, comment)
    h["COMMENT"] = (f"product {pro_catg} of METIS recipe {RECIPE[band]} (METIS DRLD), "
                    "written by astrocal")
    h["COMMENT"] = (f"QC {band} DISTORT RMS: sqrt(mean(dx**2 + dy**2)) of the posterior-mean "
                    "residuals (measured - predicted, detector pixels) of the positions used "
                    "in the fit (outliers left out)")
    h["COMMENT"] = (f"QC {band} DISTORT NSOURCE: number of measured positions used in the fit, "
                    "over all exposures")
    provenance_cards(h, **provenance)
    return h


def qc_from_residuals(residuals):
    """``(rms_px, nsource)``: the QC parameters from a residual table
    (:func:`astrocal.model.result.residual_table`): the rms length of the 2-D pixel
    residuals of the points used in the fit (outliers left out) and their number."""
    from .model.result import residual_rms

    used = ~np.asarray(residuals["outlier"], bool)
    return residual_rms(residuals, "px"), int(used.sum())


# =========================================================================== writers
def write_metis_products(posterior, out, filter_id, band, residuals, campaign_sha256="",
                         inputs=(), overwrite=False, err_step=64, cards=None):
    """Write ``<B>_DISTORTION_TABLE_<filter>.fits`` and ``<B>_DISTORTION_MAP_<filter>.fits``.

    ``band`` is ``"LM"`` or ``"N"``; ``residuals`` the fit's residual table (for the QC
    parameters); ``cards`` (default: the fit's quality flags,
    :func:`astrocal.model.quality.quality_cards`) go into both primary headers. Returns
    ``{"distortion_table": path, "distortion_map": path}``.

    Distortion table: primary header (``PRO.CATG``, ``DRS.FILTER``, ``DPR.*``, QC,
    provenance) and a binary table ``TABLE`` with one row per polynomial term ``X**i
    Y**j`` (``X, Y``: pixel position minus the boresight; the same in 0- and 1-based
    pixels): ``XPOW``, ``YPOW``, ``DX``, ``DY`` (reverse offsets, pixels: measured minus
    linear-grid position) with ``DX_ERR``, ``DY_ERR`` (posterior sd) and ``U``, ``V`` (the
    field, focal-plane arcsec) with ``U_ERR``, ``V_ERR``. Its header holds the linear grid
    (``BORESX``/``BORESY`` FITS 1-based, ``PLTSCALE``, ``LINROT``, ``PARITY``) and the
    convention.

    Distortion map: the primary image is the areal local pixel scale ``sqrt(|det J|)`` of
    the posterior-mean field at every detector pixel (mas/pixel, float32, FITS pixel
    ``(i, j)`` = 0-based detector pixel ``(i - 1, j - 1)``); extension ``SCALE_ERR`` holds its
    posterior 1-sigma on a grid every ``err_step`` pixels, with a linear WCS from its
    pixels to FITS 1-based detector pixels.
    """
    if band not in DPR:
        raise ValueError(f"METIS band must be 'LM' or 'N', got {band!r}")
    out = Path(out)
    provenance = {"campaign_sha256": campaign_sha256, "inputs": inputs,
                  "settings": {"degree": posterior.degree, "n_draws": len(posterior.g)}}
    qc_rms, nsource = qc_from_residuals(residuals)
    cards = quality_cards(fit_quality(posterior.info)) if cards is None else cards
    sol = posterior_solution(posterior, filter_id)
    paths = {}

    # ---- table
    cat = f"{band}_DISTORTION_TABLE"
    coef = distortion_coefficients(posterior, sol)
    cols = [fits.Column("XPOW", "I", array=coef["i"]), fits.Column("YPOW", "I", array=coef["j"])]
    for name, unit in (("dx", "pixel"), ("dy", "pixel"), ("u", "arcsec"), ("v", "arcsec")):
        cols.append(fits.Column(name.upper(), "D", unit=unit, array=coef[name]))
        cols.append(fits.Column(f"{name.upper()}_ERR", "D", unit=unit, array=coef[f"{name}_err"]))
    table = fits.BinTableHDU.from_columns(cols, name="TABLE")
    th = table.header
    b = sol.boresight
    th["BORESX"] = (float(to_fits(b[0])), "[pixel] boresight x, FITS 1-based")
    th["BORESY"] = (float(to_fits(b[1])), "[pixel] boresight y, FITS 1-based")
    th["PLTSCALE"] = (sol.plate_scale, "[arcsec/pixel] linear-grid plate scale")
    th["LINROT"] = (sol.rotation, "[deg] detector x axis in focal plane")
    th["PARITY"] = (sol.parity, "-1 if the detector image is flipped")
    u0, v0 = sol.reference_position
    th["FPREFU"] = (u0, "[arcsec] focal-plane u of boresight")
    th["FPREFV"] = (v0, "[arcsec] focal-plane v of boresight")
    th["POLYDEG"] = (posterior.degree, "total degree of the polynomials")
    th["RESIDUAL"] = (posterior.residual is not None, "field holds a residual beyond these terms")
    ny, nx = posterior.detector_shape
    th["DETNAXI1"] = (nx, "[pixel] detector size along x")
    th["DETNAXI2"] = (ny, "[pixel] detector size along y")
    th["COMMENT"] = "row k: coefficient of X**XPOW * Y**YPOW, X, Y = pixel position - boresight"
    th["COMMENT"] = ("DX, DY: reverse offsets D2 = measured - linear-grid position (pixels); "
                     "linear-grid position = measured - D2")
    th["COMMENT"] = ("linear grid: b + M (G(p) - G(b)), M = R(-LINROT) diag(1, PARITY) / PLTSCALE")
    th["COMMENT"] = "U, V: the field G, detector pixel -> focal plane (arcsec)"
    th["COMMENT"] = "*_ERR: posterior standard deviation over the exact draws of the fit"
    primary = fits.PrimaryHDU(header=_metis_primary(band, filter_id, cat, qc_rms, nsource, provenance, cards))
    path = out / f"{cat}_{filter_id}.fits"
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList([primary, table]).writeto(tmp)
    paths["distortion_table"] = path

    # ---- map
    cat = f"{band}_DISTORTION_MAP"
    field = posterior.mean_field()
    full = posterior.mean_residual_coefficients()
    scale = (local_scale_grid(field, np.arange(nx), np.arange(ny), residual=full) * 1e3).astype(np.float32)
    ph = _metis_primary(band, filter_id, cat, qc_rms, nsource, provenance, cards)
    ph["BUNIT"] = ("mas/pixel", "areal local pixel scale sqrt|det J|")
    ph["COMMENT"] = ("image: local pixel scale of the posterior-mean field at each detector "
                     "pixel centre; FITS pixel (i, j) = 0-based detector pixel (i-1, j-1)")
    if full is not None:
        ph["COMMENT"] = ("the field is the polynomial plus the residual field beyond it (the table "
                         "holds the polynomial part)")
    primary = fits.PrimaryHDU(data=scale, header=ph)
    ex = np.arange(0, nx, err_step, dtype=float)
    ey = np.arange(0, ny, err_step, dtype=float)
    if ex[-1] != nx - 1:
        ex = np.append(ex, nx - 1)
    if ey[-1] != ny - 1:
        ey = np.append(ey, ny - 1)
    yy, xx = np.meshgrid(ey, ex, indexing="ij")
    err = local_scale_samples(posterior, xx, yy).std(axis=0, ddof=1).reshape(xx.shape) * 1e3
    eh = fits.ImageHDU(data=err.astype(np.float32), name="SCALE_ERR")
    eh.header["BUNIT"] = ("mas/pixel", "posterior 1-sigma of the local pixel scale")
    for axis, grid in ((1, ex), (2, ey)):
        eh.header[f"CTYPE{axis}"] = ("LINEAR", "FITS 1-based detector pixel")
        eh.header[f"CRPIX{axis}"] = 1.0
        eh.header[f"CRVAL{axis}"] = (float(to_fits(grid[0])), "detector pixel of the first sample")
        eh.header[f"CDELT{axis}"] = (float(err_step), "[pixel] sampling step")
    eh.header["COMMENT"] = ("samples every CDELT pixels; the last row/column is the detector's "
                            "last pixel (closer than CDELT when the size is not a multiple)")
    path = out / f"{cat}_{filter_id}.fits"
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList([primary, eh]).writeto(tmp)
    paths["distortion_map"] = path
    return paths


def _merged_inputs(inputs, posterior):
    seen, merged = set(), []
    for p in list(inputs) + list(posterior.info.get("inputs", []) or []):
        if str(p) not in seen:
            seen.add(str(p))
            merged.append(str(p))
    return merged


def earth_orientation_keys(record) -> dict:
    """Provenance entries of a product for the Earth-orientation record of ``fit.json``
    (none for a fit without sky data): the IERS table's file and dates, the leap-second
    table's expiry, and the largest cost over the sky exposures (mas)."""
    if not record:
        return {}
    table, leap = record.get("iers_table") or {}, record.get("leap_seconds") or {}
    out = {"iers_table": Path(str(table.get("path", ""))).name, "iers_source": table.get("source", ""),
           "iers_measured_to": table.get("last_observed", ""), "iers_predicted_to": table.get("end", ""),
           "leap_seconds_expire": leap.get("expires", "")}
    worst = record.get("worst")
    if worst:
        out["eop_centre_mas"] = float(worst["centre_mas"])
        out["eop_differential_mas"] = float(worst["differential_mas"])
    return out


def write_fit_products(posterior, out, filter_id, instrument="", campaign_sha256="",
                       inputs=(), overwrite=False, band=None, residuals=None):
    """Write the products of a fit into ``out``: the AstroMet file, the TAN-SIP header and,
    for a METIS imager, the METIS distortion table and map.

    ``inputs`` are added to the input files the fit recorded (``posterior.info``);
    ``band`` (``"LM"``/``"N"``) defaults to the one of ``instrument`` (no METIS products
    for other instruments); ``residuals`` defaults to ``out/residuals.ecsv``.
    Returns ``{name: path}``.
    """
    out = Path(out)
    inputs = _merged_inputs(inputs, posterior)
    provenance = {"creator": f"astrocal {__version__}", "campaign_sha256": campaign_sha256,
                  "degree": posterior.degree, "n_draws": len(posterior.g)}
    for k, path in enumerate(inputs):
        provenance[f"input{k}"] = str(path)
    provenance.update(earth_orientation_keys(posterior.info.get("earth_orientation")))
    # the quality flags; whether the plate scale is measured and each sky dataset's on-sky
    # scale and position angle (astrocal.model.onsky)
    cards = quality_cards(fit_quality(posterior.info)) + product_cards(posterior.info)
    meta = {"creator": f"astrocal {__version__}", "campaign_sha256": campaign_sha256}
    meta.update({f"input{k}": str(p) for k, p in enumerate(inputs)})
    sol = posterior_solution(posterior, filter_id, meta=meta)
    paths = {
        "astromet": write_astromet(out / f"astromet_{filter_id}.fits", sol, instrument=instrument,
                                   overwrite=overwrite, provenance=provenance, cards=cards),
        "sip": write_sip_header(out / f"wcs_sip_{filter_id}.hdr", sol, overwrite=overwrite, cards=cards),
    }
    if sol.residual is not None:
        header = sip_header(sol)
        for key, value, comment in cards:
            header[key] = (value, comment)
        paths["wcs_lookup"], _ = write_wcs_lookup(out / f"wcs_lookup_{filter_id}.fits", header, sol.residual,
                                                  sol.detector_shape, jacobian=sol.field.jacobian,
                                                  overwrite=overwrite)
    band = band or metis_band(instrument)
    if band:
        if residuals is None:
            from .model.result import load_residuals

            residuals = load_residuals(out)
        paths.update(write_metis_products(posterior, out, filter_id, band, residuals,
                                          campaign_sha256=campaign_sha256, inputs=inputs,
                                          overwrite=overwrite, cards=cards))
    return paths
