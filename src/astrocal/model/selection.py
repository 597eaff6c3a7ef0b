"""Model choice: the evidence scan over degrees and residual variants, and the choice
from its table.

:func:`scan_variants` fits the scan's models (each degree, with and without the residual
field; the quick look's :func:`quick_scan_variants` cuts the residual variant short when the
data do not ask for it), :func:`refine_residual_rows` refines the residual basis of the rows that can matter,
and :func:`choose_model` / :func:`choose_degree` choose from the table's probabilities
(:func:`degree_probabilities`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import refinement
from .data import DataError
from .priors import with_residual
from .refinement import baseline_evidence, fit_variant
from .sampling import pool_size, usable_cpus

if TYPE_CHECKING:
    from ..field import DistortionField
    from .data import Points
    from .inference import FitSettings
    from .priors import Priors

log = logging.getLogger(__name__)



def degree_probabilities(evidence: list[dict]) -> np.ndarray:
    """Posterior probability of each row of the evidence table, equal prior odds over the rows.

    Written into every row as ``probability`` (NaN for a row without a finite evidence).

    Parameters
    ----------
    evidence : list of dict
        The evidence table's rows (with ``degree``, ``log_evidence`` and, when the variants
        differ, ``residual``).

    Returns
    -------
    numpy.ndarray
        The probabilities (rows,).
    """
    logz = np.array([e["log_evidence"] for e in evidence], float)
    ok = np.isfinite(logz)
    prob = np.full(logz.size, np.nan)
    if ok.any():
        w = np.exp(logz[ok] - logz[ok].max())
        prob[ok] = w / w.sum()
    for e, p in zip(evidence, prob):
        e["probability"] = float(p)
    return prob


def choose_model(evidence: list[dict], rule: str = "median") -> tuple[int, bool]:
    """The degree and variant to fit from an evidence table whose rows may also differ by
    ``residual`` (polynomial alone, or with the residual field: ``Priors.residual = "auto"``).

    Every row gets its ``probability`` (equal prior odds over the rows). The degree is chosen
    by ``rule`` from the probabilities summed over the variants of each degree
    (:func:`choose_degree`'s rules); the variant is the more probable one at that degree
    (``"best"``: the single most probable row).

    Parameters
    ----------
    evidence : list of dict
        The evidence table's rows (with ``degree``, ``log_evidence`` and, when the variants
        differ, ``residual``).
    rule : str
        ``"median"`` or ``"best"``.

    Returns
    -------
    tuple
        ``(degree, residual)``.

    Raises
    ------
    DataError
        No row has a finite evidence.
    """
    check_rule(rule)
    prob = degree_probabilities(evidence)
    ok = np.isfinite(prob)
    if not ok.any():
        raise DataError("no degree has a finite evidence")
    deg = np.array([e["degree"] for e in evidence])
    res = np.array([bool(e.get("residual", False)) for e in evidence])
    if rule == "best":
        k = np.flatnonzero(ok)[np.argmax(prob[ok])]
        return int(deg[k]), bool(res[k])
    degrees = np.unique(deg[ok])
    per_degree = np.array([prob[ok & (deg == d)].sum() for d in degrees])
    d = int(degrees[np.searchsorted(np.cumsum(per_degree), 0.5 - 1e-12)])
    rows = np.flatnonzero(ok & (deg == d))
    return d, bool(res[rows[np.argmax(prob[rows])]])


def choose_degree(evidence: list[dict], rule: str = "median") -> int:
    """The degree to fit from the evidence table.

    Adds every row's ``probability`` (:func:`degree_probabilities`). ``rule``: ``"median"``
    (the default) is the posterior median degree, the smallest whose cumulative probability
    reaches 1/2; ``"best"`` the largest evidence. With the learnt field widths a degree
    nests every lower one (widths that shrink to zero), so a degree above the field's costs
    little but one below leaves terms out of the map's intervals; the evidence of the
    degrees above a field's true one is nearly flat (each adds a little Occam cost), and
    when its true high-order terms are small against the noise the largest single evidence
    is often a degree too low while the degrees above it together hold more probability.
    The median follows that mass (``docs/model.md``, "Inference"). The degree of
    :func:`choose_model` (one row per degree: its degree alone).

    Parameters
    ----------
    evidence : list of dict
        The evidence table's rows (with ``degree``, ``log_evidence`` and, when the variants
        differ, ``residual``).
    rule : str
        ``"median"`` or ``"best"``.

    Returns
    -------
    int
        The degree.
    """
    return choose_model(evidence, rule)[0]


def _scan_variant(points, settings, jac_field, excluded, degrees, residual):
    """The scan's models of one residual variant, degree after degree: ``[(VariantFit, None)
    or (None, note)]``. Each MAP search starts from the degree below's MAP, in the scale of
    its curvature; the residual's basis is refined later, once every row is known
    (:func:`refine_residual_rows`). A variant's models depend on nothing of the other's."""
    priors = with_residual(settings.priors, residual)
    out, start, curvature = [], None, None
    for n in degrees:
        try:
            vf = fit_variant(points, n, priors, settings, jac_field, excluded, start=start,
                             curvature=curvature, refine=False)
        except ValueError as exc:
            out.append((None, str(exc)))
            continue
        start, curvature = dict(zip(vf.hyper_names, vf.phi)), vf.curvature
        out.append((vf, None))
    return out


def _on_one_blas_thread(job):
    """``func(*args)`` for ``job = (func, args)`` on one BLAS thread: a worker of the scan's
    processes (the numbers do not depend on which process computes them)."""
    from threadpoolctl import threadpool_limits

    func, args = job
    with threadpool_limits(limits=1, user_api="blas"):
        return func(*args)


def scan_variants(points: Points, settings: FitSettings, jac_field: DistortionField | None, excluded: np.ndarray,
                  degrees: Sequence[int], variants: Sequence[bool]) -> dict:
    """The scan's models of every residual variant, degree after degree.

    One variant after the other, or each in its own process when the fit splits its work
    (:func:`~astrocal.model.sampling.pool_size` of ``settings.processes`` above one and more
    than one variant). The models are the same either way, bit for bit. Each MAP search starts
    from the degree below's MAP, in the scale of its curvature; the residual's basis is
    refined later (:func:`refine_residual_rows`).

    Parameters
    ----------
    points : Points
        The fit's points.
    settings : astrocal.model.inference.FitSettings
        The fit's settings.
    jac_field : DistortionField or None
        The field for the focal-plane covariances.
    excluded : numpy.ndarray
        Bool over the points: the outliers left out.
    degrees : sequence of int
        The degrees of the scan.
    variants : sequence of bool
        The residual variants (:func:`residual_variants`).

    Returns
    -------
    dict
        ``{residual: [(VariantFit, None) or (None, note)] per degree}``.
    """
    args = [(points, settings, jac_field, excluded, degrees, res) for res in variants]
    n_pool = min(pool_size(settings.processes, points.n_points), len(variants))
    if n_pool <= 1:
        return {res: _scan_variant(*a) for res, a in zip(variants, args)}
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    log.info("the evidence scan's %d variants in %d processes", len(variants), n_pool)
    with ctx.Pool(n_pool) as pool:
        return dict(zip(variants, pool.map(_on_one_blas_thread, [(_scan_variant, a) for a in args])))


#: The quick look (``FitSettings.sampler == "laplace"``) with ``residual = "auto"`` fits the
#: residual variant first at the lowest degree and at the polynomial's most probable one, and
#: at the other degrees only when one of the two comes within this many nats of the most
#: probable polynomial (:func:`quick_scan_variants`).
QUICK_RESIDUAL_MARGIN_NATS = 5.0


def quick_scan_variants(points: Points, settings: FitSettings, jac_field: DistortionField | None,
                        excluded: np.ndarray, degrees: Sequence[int], variants: Sequence[bool]) -> dict:
    """The quick look's scan: :func:`scan_variants`, the residual variant cut short when the
    data do not ask for it.

    With both variants (``residual = "auto"``) and more than one degree, the polynomial alone
    is fitted at every degree first; then the residual variant at the lowest degree (where a
    residual field has the most to hold: on fields beyond the polynomial its evidence is
    highest there and falls with the degree) and at the polynomial's most probable degree
    ``d`` (where it is highest on polynomial fields), each MAP search started from the
    polynomial's MAP at that degree. When both are more than
    :data:`QUICK_RESIDUAL_MARGIN_NATS` below the most probable polynomial, the residual
    variant's other degrees are not fitted (their rows carry a note saying so, and no
    evidence); otherwise every degree is fitted, as :func:`scan_variants` does. The two
    probes run side by side, one in a forked process, where two CPUs are available
    (:func:`probe_processes`; the same models bit for bit). A fit
    that splits its work over processes (:func:`~astrocal.model.sampling.pool_size` above one)
    runs :func:`scan_variants` itself, its two variants side by side; so does the full fit
    (emcee). Measured: the same model as the full scan on the benchmarks' own and foreign
    campaigns (``docs/model.md``, "The quick look").

    Parameters
    ----------
    points : Points
        The fit's points.
    settings : astrocal.model.inference.FitSettings
        The fit's settings.
    jac_field : DistortionField or None
        The field for the focal-plane covariances.
    excluded : numpy.ndarray
        Bool over the points: the outliers left out.
    degrees : sequence of int
        The degrees of the scan.
    variants : sequence of bool
        The residual variants (:func:`residual_variants`).

    Returns
    -------
    dict
        ``{residual: [(VariantFit, None) or (None, note)] per degree}``, as
        :func:`scan_variants`.
    """
    if (list(variants) != [False, True] or len(degrees) < 2
            or pool_size(settings.processes, points.n_points) > 1):
        return scan_variants(points, settings, jac_field, excluded, degrees, variants)
    poly = _scan_variant(points, settings, jac_field, excluded, degrees, False)
    logz = np.array([vf.row["log_evidence"] if vf is not None else -np.inf for vf, _ in poly], float)
    logz[~np.isfinite(logz)] = -np.inf
    if not np.isfinite(logz.max()):
        return {False: poly, True: _scan_variant(points, settings, jac_field, excluded, degrees, True)}
    best = int(np.argmax(logz))
    at = sorted({0, best})
    probes = _residual_probes(points, settings, jac_field, excluded, degrees, poly, at)
    for k in at:
        vf = probes[k]
        if vf is None or not vf.row["log_evidence"] < logz[best] - QUICK_RESIDUAL_MARGIN_NATS:
            return {False: poly, True: _scan_variant(points, settings, jac_field, excluded, degrees, True)}
    gaps = ", ".join(f"{logz[best] - vf.row['log_evidence']:.1f} at degree {degrees[k]}" for k, vf in probes.items())
    note = (f"not fitted by the quick look: with the residual field the evidence was below the most probable "
            f"polynomial (degree {degrees[best]}) by {gaps} nats, more than {QUICK_RESIDUAL_MARGIN_NATS:g}")
    log.info("quick look: the residual field below the polynomial alone by %s nats; its other degrees not fitted",
             gaps)
    return {False: poly, True: [(probes[j], None) if j in probes else (None, note) for j in range(len(degrees))]}


def _residual_probe(points, settings, jac_field, excluded, degree, base):
    """The residual variant at ``degree``, its MAP search started from the polynomial's fit
    there (``base``, a VariantFit or None); None when it cannot be fitted."""
    start = dict(zip(base.hyper_names, base.phi)) if base is not None else None
    try:
        return fit_variant(points, degree, with_residual(settings.priors, True), settings, jac_field, excluded,
                           start=start, curvature=base.curvature if base is not None else None, refine=False)
    except ValueError:
        return None


def probe_processes(processes: int | str) -> int:
    """Processes for the quick look's two residual probes (:func:`quick_scan_variants`).

    Parameters
    ----------
    processes : int or str
        ``FitSettings.processes``: ``"auto"`` (the CPUs this process may use, at most 2) or
        an integer (1: one after the other).

    Returns
    -------
    int
        1 or 2; 1 in a daemonic process (a pool's worker may not start processes).
    """
    import multiprocessing as mp

    if mp.current_process().daemon:
        return 1
    if processes == "auto":
        return 2 if usable_cpus() >= 2 else 1
    return 2 if int(processes) >= 2 else 1


def _residual_probes(points, settings, jac_field, excluded, degrees, poly, at):
    """The residual probes at the scan positions ``at`` (:func:`quick_scan_variants`):
    ``{k: VariantFit or None}``. Two probes run side by side, the first in a forked process,
    when :func:`probe_processes` allows two; each is computed alone on one BLAS thread, so the
    models are the same either way, bit for bit."""
    args = {k: (points, settings, jac_field, excluded, degrees[k], poly[k][0]) for k in at}
    import multiprocessing as mp

    if len(at) < 2 or probe_processes(settings.processes) < 2 or "fork" not in mp.get_all_start_methods():
        # one BLAS thread either way: the same numbers as side by side
        return {k: _on_one_blas_thread((_residual_probe, a)) for k, a in args.items()}
    with mp.get_context("fork").Pool(1) as pool:
        first = pool.apply_async(_on_one_blas_thread, ((_residual_probe, args[at[0]]),))
        second = _on_one_blas_thread((_residual_probe, args[at[1]]))
        return {at[0]: first.get(), at[1]: second}


def residual_variants(priors: Priors) -> list[bool]:
    """The residual-field variants a fit compares (``Priors.residual``).

    Parameters
    ----------
    priors : Priors
        The fit's priors.

    Returns
    -------
    list of bool
        ``[False]`` (polynomial alone), ``[True]`` (with the residual field) or both
        (``"auto"``).

    Raises
    ------
    ValueError
        ``Priors.residual`` is not ``"none"``, ``"matern52"`` or ``"auto"``.
    """
    mode = priors.residual
    if mode not in ("none", "matern52", "auto"):
        raise ValueError(f"Priors.residual must be 'none', 'matern52' or 'auto', got {mode!r}")
    return {"none": [False], "matern52": [True], "auto": [False, True]}[mode]



def check_rule(rule: str) -> None:
    """Check the rule of the degree choice (``FitSettings.degree_choice``).

    Parameters
    ----------
    rule : str
        ``"median"`` or ``"best"``.

    Raises
    ------
    ValueError
        Any other rule.
    """
    if rule not in ("median", "best"):
        raise ValueError(f"FitSettings.degree_choice must be 'median' or 'best', got {rule!r}")



#: the scan refines the residual basis of a row (:func:`~astrocal.model.refinement.refine_variant`)
#: unless its evidence is more than this many nats, plus the largest rise any refinement
#: gave so far, below the best row's (probability below e**-10 of the best's either way)
REFINE_MARGIN_NATS = 10.0


def refine_residual_rows(points: Points, settings: FitSettings, jac_field: DistortionField | None,
                         excluded: np.ndarray, evidence: list[dict], fitted: dict, rows: dict) -> None:
    """Refine the residual basis of the scan's rows with the residual, the most probable first,
    in place.

    A row whose evidence is more than :data:`REFINE_MARGIN_NATS` plus the largest rise any
    refinement gave below the best row's is left at its first basis: to matter, its
    refinement would have to raise it by more than the margin beyond any rise seen (on the
    benchmarks' campaigns the degree and variant chosen are those of the scan that refined
    every row); its row says so (``residual_refinement``).

    Parameters
    ----------
    points : Points
        The fit's points.
    settings : astrocal.model.inference.FitSettings
        The fit's settings.
    jac_field : DistortionField or None
        The field for the focal-plane covariances.
    excluded : numpy.ndarray
        Bool over the points: the outliers left out.
    evidence : list of dict
        The evidence table (updated in place).
    fitted : dict
        The rows' :class:`~astrocal.model.refinement.VariantFit` by ``(degree, residual)``
        (updated in place).
    rows : dict
        Their positions in ``evidence`` by ``(degree, residual)``.
    """
    keys = sorted((k for k in fitted if k[1]), key=lambda k: -np.nan_to_num(evidence[rows[k]]["log_evidence"], nan=-np.inf))
    gain = 0.0
    for key in keys:
        row = evidence[rows[key]]
        base = float(row["log_evidence"])
        best = max(float(e["log_evidence"]) for e in evidence if np.isfinite(e["log_evidence"]))
        if base + gain + REFINE_MARGIN_NATS < best:
            row["residual_refinement"] = (f"not tried: {best - base:.1f} nats below the best model, more than "
                                          f"{REFINE_MARGIN_NATS:g} + {gain:.1f} (the largest rise a refinement gave)")
            continue
        vf = refinement.refine_variant(fitted[key], points, key[0], settings, jac_field, excluded,
                            baseline_evidence(evidence, key[0]))
        gain = max(gain, float(vf.row["log_evidence"]) - base)
        fitted[key] = vf
        row.update(vf.row)
