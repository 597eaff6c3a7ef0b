"""The accuracy-budget report of a fit: ``astrocal report RESULT_DIR [--against OLDER]``.

- :mod:`astrocal.report.build`: the numbers (map accuracy, pixel scale, residuals,
  outliers, degree and evidence, convergence, stability, requirements) as a plain dict;
- :mod:`astrocal.report.requirements`: the requirements file and the pass/fail rule;
- :mod:`astrocal.report.figures`: the figures (:mod:`astrocal.plots`) saved as PNG and PDF;
- :mod:`astrocal.report.html`: the self-contained HTML page;
- the command, ``astrocal report``: :mod:`astrocal.cli.report`.

:func:`write_report` does it all for one result directory.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_write_text, check_writable
from .build import build_report, load_result, report_json
from .figures import make_figures
from .html import render
from .requirements import load_requirements


def write_report(result_dir: str | os.PathLike, against: str | os.PathLike | None = None,
                 requirements: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                 overwrite: bool = False, band: str | None = None) -> tuple[dict, dict]:
    """Write ``report.html``, ``report.json`` and ``plots/`` for one result directory.

    Nothing is overwritten unless ``overwrite``.

    Parameters
    ----------
    result_dir : str or os.PathLike
        The result directory (one filter of ``astrocal fit``).
    against : str or os.PathLike, optional
        An earlier result directory of the same filter.
    requirements : str or os.PathLike, optional
        A requirements file (default: the shipped one).
    out : str or os.PathLike, optional
        The output directory (default ``<result_dir>/report``).
    overwrite : bool
        Replace existing files.
    band : str, optional
        Overrides the METIS band.

    Returns
    -------
    paths : dict
        ``{"json": path, "html": path}``.
    report : dict
        The report (:func:`~astrocal.report.build.build_report`) with its ``figures``.
    """
    result_dir = Path(result_dir)
    out = Path(out) if out is not None else result_dir / "report"
    reqs = load_requirements(requirements)
    for name in ("report.html", "report.json"):
        check_writable(out / name, overwrite)
    result = load_result(result_dir, band=band)
    older = load_result(against, band=band or result.band) if against is not None else None
    report = build_report(result, older, reqs)
    figures = make_figures(result, older, out / "plots", overwrite=overwrite)
    report["figures"] = [{k: (str(Path(v).relative_to(out)) if k in ("png", "pdf") else v)
                          for k, v in f.items()} for f in figures]
    paths = {"json": atomic_write_text(out / "report.json", report_json(report), overwrite=overwrite),
             "html": atomic_write_text(out / "report.html", render(report, figures), overwrite=overwrite)}
    return paths, report


__all__ = ["build_report", "load_requirements", "load_result", "make_figures", "render",
           "write_report"]
