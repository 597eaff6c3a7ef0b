"""Benchmark: time and size of the LMS products and report page of one fit.

Builds a fit result by hand (deviations drawn once from the prior, ``--draws`` posterior draws
scattered by 0.01 px about them; no simulator, no sampler) for the settings ``--settings``,
writes the products (:func:`astrocal.lms.products.write_lms_products`, images every ``--step``
pixel) and the report page (:func:`astrocal.lms.report.write_lms_report`) into a temporary
directory, and prints the wall time of each, the file sizes and the load average before and
after (the machine is shared).

    python benchmarks/bench_lms_products.py --settings 4.73 --step 1
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table


def hand_fit(settings, n_draws=400, seed=3):
    from astrocal.lms import DeviationLayout, echelle_setting
    from astrocal.lms.fit import ExposureTerms, LmsFit, LmsFitSettings

    lay = DeviationLayout(tuple(echelle_setting(s) for s in settings))
    rng = np.random.default_rng(seed)
    p0 = rng.normal(0.0, 0.3 * lay.prior_sigma())
    sd = np.full(lay.n_params, 0.01)
    sd[lay.blocks["placement"]] = np.tile([0.01, 0.01, 1e-6], 3)
    sd[lay.blocks["settings"]] = np.tile([0.01, 0.01, 1e-5], len(settings))
    theta = p0 + rng.normal(size=(n_draws, lay.n_params)) * sd
    return LmsFit(lay, "forward", ExposureTerms.build([]), theta, None, np.zeros((n_draws, 1)), np.zeros(1),
                  ("log_tau_px",), None, None, None, None, LmsFitSettings())


def main(argv=None):
    from astrocal.lms.products import write_lms_products
    from astrocal.lms.report import write_lms_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", type=float, nargs="+", default=[4.73])
    ap.add_argument("--step", type=int, default=1)
    ap.add_argument("--draws", type=int, default=400)
    args = ap.parse_args(argv)
    fit = hand_fit(args.settings, args.draws)
    residuals = Table({"kind": ["spots"] * 2, "row_index": [0, 0], "axis": ["col", "row"], "slice": [6, 6],
                       "det": [3, 3], "setting": [0, 0], "line_um": [4.70, 4.70], "normalised": [0.1, 0.2],
                       "residual_px": [0.01, 0.02]})
    with tempfile.TemporaryDirectory(prefix="bench_lms_products_") as tmp:
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        paths, qc = write_lms_products(fit, tmp, residuals, step=args.step)
        t1 = time.perf_counter()
        write_lms_report(fit, tmp, residuals, qc, paths)
        t2 = time.perf_counter()
        load1 = os.getloadavg()
        sizes = {Path(p).name: round(Path(p).stat().st_size / 1e6, 2) for p in paths.values()}
    print(f"settings {args.settings}, image step {args.step}, {args.draws} draws: products {t1 - t0:.1f} s, "
          f"report {t2 - t1:.1f} s; sizes MB {sizes}; load average before {load0[0]:.2f} {load0[1]:.2f} "
          f"{load0[2]:.2f}, after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
