"""One row of the evidence scan: a model's MAP and Laplace evidence, with the residual
field's basis refined while the evidence asks for it.

The residual field (:mod:`astrocal.field.residual`) resolves structure down to about
:attr:`~astrocal.field.residual.ResidualBasis.min_length`; beyond its band it holds the
Matérn field's spectral tail as white noise only. A field with shorter structure (an
optical design's mid-frequency ripple, a ray-trace table) then leaves that structure to the
white tail and the jitter, and the map's intervals are too narrow between the points. So,
with the residual on, the scan fits the model with the basis of :class:`~astrocal.model.priors.Priors`
(``residual_basis`` functions per dimension, boundary ``residual_boundary``), then each
refinement of ``Priors.residual_refine`` in turn (``(m, boundary)``: more functions on a
tighter box), and keeps a refinement while its Laplace evidence exceeds the kept one's by
more than ``Priors.residual_refine_nats``; the first that does not stops the ladder. The
ladder starts only where the residual already earns its place: when the scan has fitted
the polynomial alone at the same degree (``baseline``), the residual variant's evidence
must exceed it by ``residual_refine_nats`` too (a field the polynomial holds costs no
refinement: the scan of a polynomial field stays as fast as before). The
evidences compare models of the same data with the same hyperparameters and priors, only
the basis differs; the threshold is the Occam margin a finer basis must earn (its cost in
time grows as the cube of the linear parameters' count). The scan
(:func:`astrocal.model.inference.fit_joint`) fits every row with the first basis
(``fit_variant(..., refine=False)``) and then refines (:func:`refine_variant`) the rows
that can matter, the most probable first.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .joint import JointModel
from .laplace import curvature_scale, laplace_evidence, map_hyperparameters, sqrt_curvature

if TYPE_CHECKING:
    from ..field import DistortionField
    from .data import Points
    from .inference import FitSettings
    from .priors import Priors

__all__ = ["VariantFit", "baseline_evidence", "fit_variant", "refine_variant"]


@dataclass
class VariantFit:
    """A model of the scan at its MAP: ``row`` (the evidence table's entries: ``log_evidence``,
    ``log_posterior_map``, ``phi_map`` and, with the residual, ``residual_basis``,
    ``residual_boundary`` and the ``residual_refinements`` tried), the MAP ``phi`` (of the
    hyperparameters ``hyper_names``), the Hessian ``hess`` of the log posterior there, the
    field ``jac_field`` for the final Jacobian and the ``priors`` (with the basis kept)."""

    row: dict
    phi: np.ndarray
    hess: np.ndarray
    jac_field: object
    priors: object
    hyper_names: list = None

    @property
    def curvature(self) -> dict[str, float]:
        """``{hyperparameter name: sqrt(H_ii)}`` of :attr:`hess` (where positive): the scale
        a neighbouring model's MAP search runs in."""
        return sqrt_curvature(self.hyper_names, self.hess)


def _fit_one(points, degree, priors, settings, jac_field, excluded, start=None, curvature=None):
    model = JointModel(points, degree, hole_errors=settings.hole_errors, jacobian_field=jac_field,
                     priors=priors, excluded=excluded, flexure=settings.flexure)
    scale = curvature_scale(model, curvature) if curvature else None
    phi, lp = map_hyperparameters(model, model.initial_guess(start), scale)
    logz, hess = laplace_evidence(model, phi, lp)
    try:
        jac_n = model.field_from(model.conditional(phi).mean)
    except np.linalg.LinAlgError:  # keep the preliminary field's Jacobian
        jac_n = jac_field
    return VariantFit({"log_evidence": logz, "log_posterior_map": lp, "phi_map": phi.tolist()},
                      phi, hess, jac_n, priors, list(model.hyper_names))


def baseline_evidence(evidence: list[dict], degree: int) -> float | None:
    """The log evidence of the polynomial alone at ``degree`` in the scan's table so far.

    Parameters
    ----------
    evidence : list of dict
        The table's rows (with ``degree``, ``residual`` and ``log_evidence``).
    degree : int
        The degree.

    Returns
    -------
    float or None
        The polynomial's log evidence, or None when the table has none at that degree.
    """
    for row in evidence:
        if row.get("degree") == degree and not row.get("residual", False) and np.isfinite(row.get("log_evidence", np.nan)):
            return float(row["log_evidence"])
    return None


def fit_variant(points: Points, degree: int, priors: Priors, settings: FitSettings,
                jac_field: DistortionField | None, excluded: np.ndarray, baseline: float | None = None,
                start: dict | None = None, curvature: dict | None = None, refine: bool = True) -> VariantFit:
    """The :class:`VariantFit` of one model of the scan.

    With the residual, the basis is refined by ``priors.residual_refine`` while the evidence
    rises by more than ``priors.residual_refine_nats``, starting only when the residual's
    evidence exceeds ``baseline`` by as much (module docstring; :func:`refine_variant`).

    Parameters
    ----------
    points : Points
        The fit's points.
    degree : int
        The field's degree.
    priors : Priors
        With ``residual`` ``"none"`` or ``"matern52"``.
    settings : astrocal.model.inference.FitSettings
        The fit's settings (hole errors, flexure).
    jac_field : DistortionField or None
        The field whose Jacobian pushes the centroid covariances into the focal plane.
    excluded : numpy.ndarray
        Bool over the points: the outliers left out.
    baseline : float, optional
        The polynomial alone's evidence at that degree (:func:`baseline_evidence`); None: no
        such condition.
    start : dict, optional
        Where the MAP search starts (``{hyperparameter name: value}``, e.g. the MAP of the
        degree below; a refinement starts from the kept basis's MAP).
    curvature : dict, optional
        ``{hyperparameter name: sqrt(H_ii)}`` of a neighbouring model (the degree below), the
        scale the search runs in (:func:`~astrocal.model.laplace.map_hyperparameters`).
    refine : bool
        False: the basis of ``priors`` alone (the scan refines later, :func:`refine_variant`).

    Returns
    -------
    VariantFit
        The model at its MAP.

    Raises
    ------
    ValueError
        The model cannot be built (its message is the evidence row's note).
    """
    best = _fit_one(points, degree, priors, settings, jac_field, excluded, start, curvature)
    if priors.residual != "matern52":
        return best
    best.row.update(residual_basis=int(priors.residual_basis), residual_boundary=float(priors.residual_boundary),
                    residual_refinements=[[int(priors.residual_basis), float(priors.residual_boundary),
                                           float(best.row["log_evidence"])]])
    if not refine:
        return best
    return refine_variant(best, points, degree, settings, jac_field, excluded, baseline)


def refine_variant(base: VariantFit, points: Points, degree: int, settings: FitSettings,
                   jac_field: DistortionField | None, excluded: np.ndarray,
                   baseline: float | None = None) -> VariantFit:
    """The residual basis of a scan's model refined.

    The basis is refined by its priors' ``residual_refine`` while the evidence rises by more
    than ``residual_refine_nats``, when its evidence exceeds ``baseline`` by as much (module
    docstring).

    Parameters
    ----------
    base : VariantFit
        A model of :func:`fit_variant` with the residual, at degree ``degree``.
    points : Points
        The fit's points.
    degree : int
        The field's degree.
    settings : astrocal.model.inference.FitSettings
        The fit's settings.
    jac_field : DistortionField or None
        The field for the focal-plane covariances.
    excluded : numpy.ndarray
        Bool over the points: the outliers left out.
    baseline : float, optional
        The polynomial alone's evidence at that degree.

    Returns
    -------
    VariantFit
        The fit kept, its row recording every refinement tried.
    """
    priors = base.priors
    nats = float(priors.residual_refine_nats)
    tried = [list(r) for r in base.row["residual_refinements"]]
    ladder = priors.residual_refine or ()
    note = None
    if ladder and baseline is not None and not base.row["log_evidence"] > baseline + nats:
        ladder = ()
        note = (f"not tried: at the first basis its evidence is {base.row['log_evidence'] - baseline:.1f} nats from "
                f"the polynomial alone's at this degree, not more than {nats:g} (Priors.residual_refine_nats); "
                "a residual field with structure the first basis cannot hold may be worth more")
    best = base
    for m, boundary in ladder:
        finer = replace(priors, residual_basis=int(m), residual_boundary=float(boundary))
        try:
            cand = _fit_one(points, degree, finer, settings, jac_field, excluded,
                            dict(zip(best.hyper_names, best.phi)), best.curvature)
        except (ValueError, np.linalg.LinAlgError):
            break
        tried.append([int(m), float(boundary), float(cand.row["log_evidence"])])
        if not cand.row["log_evidence"] > best.row["log_evidence"] + nats:
            break
        best = cand
    best.row.update(residual_basis=int(best.priors.residual_basis),
                    residual_boundary=float(best.priors.residual_boundary), residual_refinements=tried)
    if note:
        best.row["residual_refinement"] = note
    return best
