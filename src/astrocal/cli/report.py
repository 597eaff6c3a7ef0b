"""``astrocal report RESULT_DIR [--against OLDER_RESULT]``: the accuracy-budget report."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` and its arguments to the ``astrocal`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The parser's subcommands (:func:`astrocal.cli.build_parser`).
    """
    p = subparsers.add_parser(
        "report",
        help="accuracy-budget report of a fit (HTML page and JSON)",
        description="Write the accuracy-budget report of a fit result: a self-contained HTML "
        "page (figures embedded) and a JSON file with the same numbers: the map's 1-sigma "
        "(rms and maximum over the field, mas and pixels), the pixel scale and its "
        "uncertainty, residual rms per dataset, outliers, the degree and evidence table, "
        "convergence diagnostics and every requirement of the requirements file with pass or "
        "fail; with --against, the changes of scale and distortion since an earlier result. "
        "A sky-only result (no lab dataset, so no gauge of scale, rotation and position) gets "
        "its map 1-sigma and distortion change from the non-linear part of the field, and its "
        "pixel scale and scale requirements marked 'not measured'. "
        "RESULT_DIR is a filter's result directory of 'astrocal fit' (<fit.output>/<filter>/) "
        "or the fit output holding several (one report per filter). Writes "
        "<RESULT_DIR>/report/report.html, report.json and plots/*.png|pdf. An [lms] data set's "
        "result (<fit.output>/<lms name>/, which astrocal fit already gives its page) gets the LMS "
        "page again (docs/lms.md): the DRLD's 1/10-pixel requirement, QC, maps per detector, "
        "residuals per slice and line.",
    )
    p.add_argument("result", metavar="RESULT_DIR")
    p.add_argument("--against", metavar="OLDER_RESULT",
                   help="an earlier result (same layout) to check stability against; with "
                   "several filters, matched by directory name")
    p.add_argument("--requirements", metavar="FILE",
                   help="requirements file (TOML, see docs/report.md); default: the one "
                   "shipped with astrocal (METIS requirements)")
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default: RESULT_DIR/report; with several filters, "
                   "DIR/<filter>)")
    p.add_argument("--band", choices=("LM", "N"),
                   help="METIS band of the result (default: from the instrument it records)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(func=run)


def _footprint_text(ma):
    """The printed line's part on the data footprint (empty for a result without one)."""
    if "extrapolated_fraction" not in ma:
        return ""
    ins = ma.get("inside_footprint")
    inside = f": max {ins['max_mas']:.4g} mas" if ins else ": no grid position inside"
    return f" (inside the data footprint, {100 * (1 - ma['extrapolated_fraction']):.0f} % of the detector{inside})"


def run(args: argparse.Namespace) -> int:
    """``astrocal report``: the report of every result at ``args.result``: prints each one's figures.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status: 0.
    """
    # `astrocal --help` registers every subcommand: the report's plotting (matplotlib, ~2 s) is
    # lazy: imported only when the command runs, to keep --help fast
    from ..report import write_report
    # lazy: as above (astrocal.report imports matplotlib)
    from ..report.build import find_results, is_result_dir
    # lazy: the LMS report (astrocal.lms and its plots), imported only when the command runs
    from ..lms.report import is_lms_result, write_lms_report_from_dir

    results = find_results(args.result)
    single = len(results) == 1 and Path(results[0]) == Path(args.result)
    for path in results:
        if is_lms_result(path):  # an [lms] data set's fit: its own page (docs/lms.md, "Products")
            out = (Path(args.out) if single else Path(args.out) / path.name) if args.out else None
            paths, report = write_lms_report_from_dir(path, out, overwrite=args.overwrite)
            print(f"lms {path.name}: requirements: " + ", ".join(f"{r['id']} {r['status']} ({r['value']:.3g} px)"
                                                               for r in report["requirements"])
                  + f"; QC IFU DISTORT RMS {report['qc']['rms_px']:.3f} px")
            print(f"wrote {paths['report.html']} and {paths['report.json']}")
            continue
        against = None
        if args.against:
            base = Path(args.against)
            if single or is_result_dir(base):
                against = base
            else:
                against = base / path.name
                if not is_result_dir(against):
                    raise FileNotFoundError(f"{against}: no earlier result for filter {path.name} "
                                            f"in {base}")
            if not is_result_dir(against):
                raise FileNotFoundError(f"{against}: not a fit result (no posterior.h5)")
        out = None
        if args.out:
            out = Path(args.out) if single else Path(args.out) / path.name
        paths, report = write_report(path, against=against, requirements=args.requirements,
                                     out=out, overwrite=args.overwrite, band=args.band)
        failed = [r["id"] for r in report["requirements"] if r["status"] == "fail"]
        passed = [r["id"] for r in report["requirements"] if r["status"] == "pass"]
        unmeasured = [r["id"] for r in report["requirements"] if r["status"] == "not measured"]
        ma, ps = report["map_accuracy"], report["pixel_scale"]
        part = " (non-linear part)" if ma.get("part") == "non-linear" else ""
        scale = (f"{ps['mean_mas']:.6f} +/- {ps['sd_mas']:.2g} mas/px" if ps.get("measured", True)
                 else "not measured")
        for problem in report.get("quality", {}).get("problems", []):
            print(f"filter {report['filter']}: {problem}")
        print(f"filter {report['filter']} ({report['case']['case']}): map 1-sigma{part} max "
              f"{ma['max_mas']:.4g} mas ({ma['max_px']:.3g} px), rms {ma['rms_mas']:.4g} mas"
              + _footprint_text(ma)
              + "; pixel "
              f"scale {scale}; requirements: {len(passed)} pass, {len(failed)} fail"
              + (f" ({', '.join(failed)})" if failed else "")
              + (f", {len(unmeasured)} not measured" if unmeasured else ""))
        print(f"wrote {paths['html']} and {paths['json']}")
    return 0
