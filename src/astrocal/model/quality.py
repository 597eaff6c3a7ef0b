"""A fit's quality flags: what every product, the report and the command say first.

:func:`fit_quality` reads them from a fit's ``fit.json`` contents (so a result written by
any astrocal version can be judged the same way):

* ``converged``: the hyperparameter chain meets its rule (at least 50 autocorrelation
  times long; :func:`astrocal.model.sampling.diagnostics`). A chain that does not is a
  posterior that may be too narrow or off-centre: its products are written, and marked.
* ``degree_at_top_of_range``: with ``degree = "auto"``, the degree chosen is the highest one
  tried. The evidence may want a higher degree, or structure that no polynomial of a modest
  degree holds; the map's 1-sigma then does not cover that misfit.

* ``consistent``: the data do not contradict the fit's assumptions (the pixel scale near its
  nominal value, lab residuals near the centroid errors, poses within their priors;
  :mod:`astrocal.model.consistency`). Contradicted data give a posterior with small error
  bars about a wrong answer: ``astrocal fit`` writes the products, marked, and ends with
  status 3.

* ``quick``: a quick look (``astrocal fit --quick``): the hyperparameters come from the
  Laplace approximation at their maximum a posteriori, not from an emcee chain; a first
  look after an intervention, not the reference calibration.

``problems`` holds one sentence per flag raised; ``ok`` is true when there is none. The
products carry the flags as QC keywords (``HIERARCH ASTROCAL QC CONVERGED``,
``HIERARCH ASTROCAL QC DEGREE AT TOP``, ``HIERARCH ASTROCAL QC CONSISTENT``,
``HIERARCH ASTROCAL QC QUICK``), ``fit.json`` as ``quality``, the report's first
line and the ``astrocal fit`` summary's first line as text.
"""
from __future__ import annotations

__all__ = ["fit_quality", "quality_cards", "QC_CONVERGED", "QC_DEGREE_AT_TOP", "QC_CONSISTENT", "QC_QUICK"]

#: FITS keywords of the flags (written as HIERARCH cards)
QC_CONVERGED = "HIERARCH ASTROCAL QC CONVERGED"
QC_DEGREE_AT_TOP = "HIERARCH ASTROCAL QC DEGREE AT TOP"
QC_CONSISTENT = "HIERARCH ASTROCAL QC CONSISTENT"
QC_QUICK = "HIERARCH ASTROCAL QC QUICK"


def fit_quality(info: dict) -> dict:
    """The quality flags of a fit from its ``fit.json`` dictionary (see the module notes).

    Parameters
    ----------
    info : dict
        The contents of ``fit.json``.

    Returns
    -------
    dict
        ``{"converged", "degree_at_top_of_range", "consistent", "quick", "problems", "ok"}``;
        ``converged`` and ``consistent`` are None for a result that recorded no diagnostics or
        no consistency checks.
    """
    diag = info.get("diagnostics") or {}
    converged = diag.get("converged")
    converged = None if converged is None else bool(converged)
    settings = info.get("settings") or {}
    rng = settings.get("degree_range")
    degree = info.get("degree")
    at_top = bool(settings.get("degree") == "auto" and rng and len(rng) == 2 and rng[0] < rng[1]
                  and degree is not None and int(degree) == int(rng[1]))
    checks = info.get("consistency")
    consistent = None if not checks else bool(checks.get("consistent", not checks.get("problems")))
    quick = settings.get("sampler") == "laplace"
    problems = []
    if quick:
        problems.append("QUICK LOOK: hyperparameters from the Laplace approximation at their maximum a "
                        "posteriori, not sampled by emcee (astrocal fit --quick); a first look, not the "
                        "reference calibration: run astrocal fit without --quick for that")
    if consistent is False:
        problems.append("DATA CONTRADICT THE FIT'S ASSUMPTIONS: " + "; ".join(checks.get("problems") or [])
                        + "; the products are marked and the error bars do not cover this")
    if converged is False:
        notes = [str(w).replace("ConvergenceWarning: ", "") for w in diag.get("warnings") or []]
        problems.append("NOT CONVERGED: the emcee chain does not meet its rule"
                        + (f" ({'; '.join(notes)})" if notes else "")
                        + "; the posterior may be too narrow: run longer (--steps, --resume)")
    if at_top:
        problems.append(f"DEGREE AT THE TOP OF THE RANGE: degree {int(degree)} is the highest of "
                        f"degree_range {list(rng)}; the field may need a higher degree or hold structure no "
                        "polynomial of this degree represents, which the map's 1-sigma does not cover: widen "
                        "[fit] degree_range")
    return {"converged": converged, "degree_at_top_of_range": at_top, "consistent": consistent,
            "quick": quick, "problems": problems, "ok": not problems}


def quality_cards(quality: dict) -> list:
    """The QC cards of a product.

    Parameters
    ----------
    quality : dict
        The flags of :func:`fit_quality`.

    Returns
    -------
    list of tuple
        ``[(keyword, value, comment)]``.
    """
    conv = quality.get("converged")
    return [(QC_CONVERGED, bool(conv) if conv is not None else "unknown", "emcee chain meets its rule"),
            (QC_DEGREE_AT_TOP, bool(quality.get("degree_at_top_of_range")), "auto degree = top of range"),
            (QC_CONSISTENT, bool(cons) if (cons := quality.get("consistent")) is not None else "unknown",
             "data agree with fit assumptions"),
            (QC_QUICK, bool(quality.get("quick")), "quick look: Laplace, not emcee")]
