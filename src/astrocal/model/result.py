"""The result of a fit as the model sees it: the saved posterior (:class:`Posterior`) and
the posterior-mean residuals of every point (:func:`residual_table`).

Their files (``posterior.h5``, ``summary.ecsv``, ``fit.json``, ``residuals.ecsv``) are
written and read by :mod:`astrocal.products.result_files` (``save_fit``,
``load_posterior``, ``load_chain``, ``load_residuals``, ``summary_table``: those names moved
there; importing them from here still works for one release, with a DeprecationWarning).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike

from .._moved import moved_module
from ..errors import AstrocalError
from ..pixels import detector_shape
from ..field import DistortionField
from . import draws
from .footprint import inside_footprint
from ..field.basis import flat_to_square, n_terms, terms
from ..field.residual import ResidualBasis

if TYPE_CHECKING:
    from .data import Points
    from .inference import Fit


class ResultFileError(AstrocalError, ValueError):
    """A result file (``residuals.ecsv``, ``posterior.h5``) that lacks what is asked of it
    (a column, a group, the data footprint); the message names the file."""


def dataset_kinds(points: Points) -> list[str]:
    """Kind (``"lab"`` or ``"sky"``) of every dataset of ``points``, in dataset order.

    Parameters
    ----------
    points : astrocal.model.data.Points
        The fit's points; without one kind per dataset (``dataset_kinds``), every dataset
        counts as lab.

    Returns
    -------
    list of str
        One kind per dataset.
    """
    kinds = tuple(getattr(points, "dataset_kinds", ()) or ())
    if len(kinds) != points.n_datasets:
        kinds = ("lab",) * points.n_datasets
    return [str(k) for k in kinds]


#: columns of the residual table, their units and meaning (also written into its metadata)
RESIDUAL_COLUMNS = {
    "point_id": ("", "point id (source table row + 1e6 x exposure index, as in fit.json outliers)"),
    "dataset": ("", "dataset name"),
    "kind": ("", "dataset kind: lab or sky"),
    "exposure": ("", "exposure name"),
    "source": ("", "pinhole id or star name"),
    "x": ("pix", "measured x, 0-based pixels"),
    "y": ("pix", "measured y, 0-based pixels"),
    "dx_mas": ("mas", "focal-plane residual G(p) - model position, x (posterior means)"),
    "dy_mas": ("mas", "focal-plane residual G(p) - model position, y"),
    "dx_px": ("pix", "residual in detector pixels, J^-1 (G(p) - model): measured - predicted x"),
    "dy_px": ("pix", "residual in detector pixels: measured - predicted y"),
    "sigma_x_mas": ("mas", "1-sigma of the point's noise model along x (median hyperparameters)"),
    "sigma_y_mas": ("mas", "1-sigma of the point's noise model along y"),
    "zx": ("", "normalised residual dx_mas / sigma_x_mas"),
    "zy": ("", "normalised residual dy_mas / sigma_y_mas"),
    "chi2": ("", "r^T C^-1 r with the full 2x2 noise covariance (2 degrees of freedom)"),
    "outlier": ("", "flagged as a gross outlier by the mixture model and left out of the fit"),
    "dx_cat_mas": ("mas", "sky points: the residual against the catalogue position (the star's fitted "
                          "catalogue error not applied), x; NaN for lab points"),
    "dy_cat_mas": ("mas", "sky points: the residual against the catalogue position, y"),
}


def _source_error_mean(fit):
    """Posterior mean of the per-source errors in the model's layout, or None.

    A model with source blocks (holes with errors and stars: ``hole_blocks``,
    ``star_blocks``) takes one array over all blocks; the lab-only model one per hole.
    """
    holes = getattr(fit, "hole_samples", None)
    stars = getattr(fit, "star_samples", None)
    model = fit.model
    if hasattr(model, "hole_blocks"):
        if holes is None and stars is None:
            return None
        mean = np.zeros((model.H, 2))
        if holes is not None:
            mean[model.hole_blocks] = np.asarray(holes, float).mean(axis=0)
        if stars is not None:
            mean[model.star_blocks] = np.asarray(stars, float).mean(axis=0)
        return mean
    return None if holes is None else np.asarray(holes, float).mean(axis=0)


def residual_table(fit: Fit) -> Table:
    """Posterior-mean residuals of every point of a fit, outliers included and flagged.

    For every measured point ``p`` (0-based pixels) the residual is ``G(p) - E(p)``: the
    posterior-mean field at the point minus the model's position of its source in that
    exposure (pose, offsets, hole error or catalogue position at their posterior means), in
    the focal plane (mas), and ``J^-1 (G(p) - E(p))`` in detector pixels (``J`` the
    posterior-mean field's Jacobian at ``p``): to first order the measured minus the
    predicted pixel position. The noise model (centroid covariance through the Jacobian,
    times ``kappa**2``, plus the dataset's jitter) is evaluated at the posterior median of
    the hyperparameters; ``zx``, ``zy`` are the residuals in units of its per-axis sigma and
    ``chi2`` the 2-D Mahalanobis square (2 degrees of freedom for a point the model
    describes). Dataset names and kinds come from the fit's points.

    Parameters
    ----------
    fit : astrocal.model.inference.Fit
        The fit.

    Returns
    -------
    astropy.table.Table
        One row per point; columns, units and descriptions: :data:`RESIDUAL_COLUMNS`;
        ``meta["hyperparameters_median"]``: the hyperparameters at which the noise model
        was evaluated.
    """
    # lazy: model.outliers pulls scipy.optimize and the joint model, which reading a result does not need
    from .outliers import noise_covariance, residual_chi2

    points = fit.points
    g = np.asarray(fit.g_samples, float).mean(axis=0)
    phi = np.median(np.asarray(fit.phi_samples, float), axis=0)
    cond = SimpleNamespace(mean=g, hole_mean=_source_error_mean(fit), phi=phi)
    chi2, r = residual_chi2(fit.model, cond, points)
    cov = noise_covariance(fit.model, phi, points)
    _, _, jac = fit.mean_field().jacobian(points.x, points.y)
    r_px = np.linalg.solve(jac, r[:, :, None])[:, :, 0]
    kinds = dataset_kinds(points)
    ds = points.dataset
    t = Table()
    t["point_id"] = np.asarray(points.point_ids, dtype=np.int64)
    t["dataset"] = [str(points.dataset_names[d]) for d in ds]
    t["kind"] = [kinds[d] for d in ds]
    t["exposure"] = [str(points.exposure_names[e]) for e in points.exposure]
    t["source"] = [str(h) for h in np.asarray(points.hole_ids)[points.hole]]
    t["x"], t["y"] = points.x, points.y
    t["dx_mas"], t["dy_mas"] = r[:, 0] * 1e3, r[:, 1] * 1e3
    t["dx_px"], t["dy_px"] = r_px[:, 0], r_px[:, 1]
    sx, sy = np.sqrt(cov[:, 0, 0]), np.sqrt(cov[:, 1, 1])
    t["sigma_x_mas"], t["sigma_y_mas"] = sx * 1e3, sy * 1e3
    t["zx"], t["zy"] = r[:, 0] / sx, r[:, 1] / sy
    t["chi2"] = chi2
    t["outlier"] = np.asarray(fit.outliers, bool)
    r_cat = np.full_like(r, np.nan)
    sky = np.asarray(points.source_kind)[points.hole] == 1
    if sky.any():
        hole_mean = cond.hole_mean
        if hole_mean is not None and hasattr(fit.model, "star_blocks"):
            hole_mean = np.array(hole_mean, copy=True)
            hole_mean[fit.model.star_blocks] = 0.0  # the catalogue's positions as given
        r_cat[sky] = fit.model.residuals(g, hole_mean, points)[sky]
    t["dx_cat_mas"], t["dy_cat_mas"] = r_cat[:, 0] * 1e3, r_cat[:, 1] * 1e3
    for name, (unit, description) in RESIDUAL_COLUMNS.items():
        if unit:
            t[name].unit = unit
        t[name].description = description
    t.meta["hyperparameters_median"] = {n: float(v) for n, v in zip(fit.hyper_names, phi)}
    return t


def sky_residual_record(table: Table) -> list[dict]:
    """Per sky dataset of a residual table, the rms of its residuals two ways.

    Parameters
    ----------
    table : astropy.table.Table
        A residual table (:func:`residual_table`).

    Returns
    -------
    list of dict
        One dict per sky dataset: ``dataset``, ``n_points`` (outliers left out) and the rms
        (mas, per axis ``[x, y]``, outliers left out) of the residuals after the stars'
        fitted catalogue errors (``after_star_errors_mas``: the stars' own catalogue terms
        take part of the scatter) and against the catalogue as given
        (``against_catalog_mas``: what a comparison with the catalogue shows); ``[]``
        without sky data.
    """
    if "dx_cat_mas" not in table.colnames:
        return []
    out = []
    kind = np.asarray(table["kind"]).astype(str)
    names = np.asarray(table["dataset"]).astype(str)
    keep = ~np.asarray(table["outlier"], bool) & (kind == "sky")
    for name in dict.fromkeys(names[keep]):
        k = keep & (names == name)

        def rms(a, b):
            return [float(np.sqrt(np.mean(np.asarray(table[a], float)[k] ** 2))),
                    float(np.sqrt(np.mean(np.asarray(table[b], float)[k] ** 2)))]

        out.append({"dataset": str(name), "n_points": int(k.sum()),
                    "after_star_errors_mas": rms("dx_mas", "dy_mas"),
                    "against_catalog_mas": rms("dx_cat_mas", "dy_cat_mas")})
    return out


def residual_rms(table: Table, unit: str = "px", datasets: Iterable[str] | None = None,
                 include_outliers: bool = False) -> float:
    """RMS length of the 2-D residuals ``sqrt(mean(dx**2 + dy**2))`` of a residual table.

    Parameters
    ----------
    table : astropy.table.Table
        A residual table (:func:`residual_table`).
    unit : {"px", "mas"}, optional
        Detector pixels or focal-plane mas.
    datasets : iterable of str, optional
        Only the points of these dataset names.
    include_outliers : bool, optional
        Whether outliers count (by default they are left out).

    Returns
    -------
    float
        The rms length; NaN when no point is left.

    Raises
    ------
    ValueError
        An unknown ``unit``.
    """
    if unit not in ("px", "mas"):
        raise ValueError(f"unit must be 'px' or 'mas', got {unit!r}")
    keep = np.ones(len(table), bool)
    if not include_outliers:
        keep &= ~np.asarray(table["outlier"], bool)
    if datasets is not None:
        keep &= np.isin(np.asarray(table["dataset"], str), list(datasets))
    if not keep.any():
        return float("nan")
    dx = np.asarray(table[f"dx_{unit}"], float)[keep]
    dy = np.asarray(table[f"dy_{unit}"], float)[keep]
    return float(np.sqrt(np.mean(dx**2 + dy**2)))


@dataclass
class Posterior:
    """A saved posterior: draws of the field coefficients (and hole errors).

    Attributes
    ----------
    degree : int
        Total degree of the field's polynomials.
    domain : tuple
        ``(xmin, xmax, ymin, ymax)``, the detector domain (0-based pixels).
    g : np.ndarray
        ``(n, G)``: the draws of the linear parameters (field coefficients, translations,
        residual field coefficients; arcsec, radians).
    phi : np.ndarray
        ``(n, P)``: the hyperparameter sample of each draw.
    holes : np.ndarray or None
        ``(n, H, 2)``: the draws of the hole errors (arcsec), or None.
    param_names : list
        Names of the columns of ``g``.
    hyper_names : list
        Names of the columns of ``phi``.
    hole_ids : list
        Ids of the holes in ``holes``.
    info : dict
        The contents of ``fit.json``.
    residual_spec : dict or None
        The residual field's basis as plain data, or None for a polynomial fit.
    """

    degree: int
    domain: tuple
    g: np.ndarray
    phi: np.ndarray
    holes: object
    param_names: list
    hyper_names: list
    hole_ids: list
    info: dict
    residual_spec: dict = None

    @property
    def nt(self) -> int:
        """Number of polynomial terms per component (:func:`astrocal.field.basis.n_terms`)."""
        return n_terms(self.degree)

    @property
    def residual(self) -> tuple[ResidualBasis, int] | None:
        """``(ResidualBasis, first column)`` of the fit's residual field, or None."""
        spec = self.residual_spec
        if not spec:
            return None
        basis = ResidualBasis(self.domain, int(spec["degree"]), m=int(spec["m"]), boundary=float(spec["boundary"]))
        return basis, int(spec["first_column"])

    @property
    def unresolved(self) -> np.ndarray | None:
        """The unresolved field's sd per draw (arcsec; :func:`astrocal.model.draws.unresolved_sd`)."""
        res = self.residual
        return draws.unresolved_sd(self.phi, self.hyper_names, res[0] if res else None)

    def field_samples(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Field samples at points (:func:`astrocal.model.draws.field_samples`).

        Parameters
        ----------
        x, y : array_like
            0-based detector pixel positions, 1-D.

        Returns
        -------
        u, v : np.ndarray
            ``(n_samples, N)`` arcsec: the polynomial, the residual field when the fit has
            one, and the unresolved field's independent noise.
        """
        return draws.field_samples(self.g, self.degree, self.domain, x, y, self.residual, self.unresolved)

    def mean_residual_coefficients(self) -> tuple[ResidualBasis, np.ndarray, np.ndarray] | None:
        """``(ResidualBasis, wu, wv)``: the residual field's basis and the posterior means of
        its coefficients (u, v; arcsec), or None for a polynomial fit.

        Returns
        -------
        tuple or None
            ``(basis, wu, wv)``; None without a residual field.
        """
        res = self.residual
        if res is None:
            return None
        basis, r0 = res
        w = self.g[:, r0:r0 + 2 * basis.size].mean(axis=0)
        return basis, w[:basis.size], w[basis.size:]

    def mean_residual(self) -> Callable[[ArrayLike, ArrayLike], tuple[np.ndarray, np.ndarray]] | None:
        """The posterior-mean residual field as a callable ``r(x, y) -> (ru, rv)`` (arcsec, at
        0-based detector pixels), or None for a polynomial fit.

        Returns
        -------
        callable or None
            ``r(x, y) -> (ru, rv)``, in the shape of ``x``; None without a residual field.
        """
        coefficients = self.mean_residual_coefficients()
        if coefficients is None:
            return None
        basis, wu, wv = coefficients

        def residual(x, y):
            x = np.asarray(x, float)
            phi = basis.design(np.ravel(x), np.ravel(np.asarray(y, float)))
            return (phi @ wu).reshape(x.shape), (phi @ wv).reshape(x.shape)

        return residual

    def mean_field(self) -> DistortionField:
        """The posterior-mean polynomial field.

        Returns
        -------
        astrocal.field.DistortionField
            The mean of the draws' polynomial coefficients: 0-based detector pixels ->
            focal-plane arcsec (without the residual field: :meth:`mean_residual`).
        """
        g = self.g.mean(axis=0)
        nt = self.nt
        return DistortionField(flat_to_square(g[:nt], self.degree), flat_to_square(g[nt:2 * nt], self.degree),
                               self.domain, unit="arcsec", input_unit="pixel")

    def map_uncertainty(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """1-sigma of the field at points (:func:`astrocal.model.draws.map_uncertainty`).

        Parameters
        ----------
        x, y : array_like
            0-based detector pixel positions.

        Returns
        -------
        sigma_u, sigma_v : np.ndarray
            Arcsec, in the shape of ``x``: the sample sd (``ddof=1``) of the draws of the
            polynomial and residual field, with the unresolved field's mean variance in
            quadrature.
        """
        return draws.map_uncertainty(self.g, self.degree, self.domain, x, y, self.residual, self.unresolved)

    def pixel_scale_samples(self) -> np.ndarray:
        """Samples of the areal pixel scale of the field's best affine part
        (:func:`astrocal.model.draws.pixel_scale_samples`).

        Returns
        -------
        np.ndarray
            One scale per draw (arcsec/px).
        """
        return draws.pixel_scale_samples(self.g, self.degree, self.domain)

    def param_samples(self, names: Sequence[str]) -> np.ndarray:
        """Draws of the named linear parameters (columns of ``g``).

        Parameters
        ----------
        names : sequence of str
            Parameter names (:attr:`param_names`).

        Returns
        -------
        np.ndarray
            Shape (n, len(names)).

        Raises
        ------
        KeyError
            A name the posterior does not have.
        """
        index = {n: k for k, n in enumerate(self.param_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"posterior has no parameter(s) {missing[:5]}")
        return self.g[:, [index[n] for n in names]]

    @property
    def detector_shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the detector domain."""
        return detector_shape(self.domain)

    @property
    def footprint(self) -> np.ndarray | None:
        """Vertices (K, 2), pixels, of the fit's data footprint (``fit.json``; None for a
        result written before footprints were recorded)."""
        fp = self.info.get("footprint")
        return None if not fp else np.asarray(fp["vertices_px"], float)

    def inside_footprint(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """True where pixel ``(x, y)`` is inside the data footprint.

        Parameters
        ----------
        x, y : array_like
            0-based detector pixel positions.

        Returns
        -------
        np.ndarray
            Booleans in the shape of ``x``.

        Raises
        ------
        ResultFileError
            The result records no data footprint.
        """
        vertices = self.footprint
        if vertices is None:
            raise ResultFileError("this result records no data footprint (written by an earlier "
                             "astrocal, or its positions span no area)")
        return inside_footprint(vertices, x, y)


__all__ = ["Posterior", "RESIDUAL_COLUMNS", "ResultFileError", "dataset_kinds", "residual_rms", "residual_table",
           "sky_residual_record", "terms"]

#: the file I/O moved to astrocal.products.result_files (issue 20)
__getattr__ = moved_module(__name__, "astrocal.products.result_files")
