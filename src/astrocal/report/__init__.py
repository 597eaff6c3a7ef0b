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

from pathlib import Path

from ..atomic import atomic_write_text, check_writable
from .build import build_report, load_result, report_json
from .figures import make_figures
from .html import render
from .requirements import load_requirements


def write_report(result_dir, against=None, requirements=None, out=None, overwrite=False,
                 band=None):
    """Write ``report.html``, ``report.json`` and ``plots/`` for one result directory.

    ``against``: an earlier result directory of the same filter; ``requirements``: a
    requirements file (default: the shipped one); ``out``: the output directory (default
    ``<result_dir>/report``); ``band`` overrides the METIS band. Nothing is overwritten
    unless ``overwrite``. Returns ``(paths, report)``.
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
