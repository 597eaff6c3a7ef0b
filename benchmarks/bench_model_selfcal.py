"""Benchmark: self-calibration of the mask's hole errors (fitted versus ignored).

Lab campaigns with hole manufacturing errors of ``--hole-um`` (default 1 um rms per
coordinate) and 10 dithered exposures (the default chopper spiral up to 3 arcsec) of METIS
FP mask #5, degree-``--degree`` fields (corner 3 px), centroid noise 0.005-0.03 px.
Each campaign is fitted twice with ``fit_joint`` at the true degree: with the hole errors
fitted (``hole_errors=True``, the default) and with them ignored (``hole_errors=False``).

Printed per seed and fit: the map error = rms over the detector (33x33 grid of pixel
centres, both components) of posterior mean minus truth (in the fit's gauge), in mas and
pixels; the mean and rms of the z-score (error / posterior sigma) over the grid (mean z
is the bias in units of sigma; rms z should be ~1 when the uncertainty is right); and for
the hole-errors fit the rms error of the recovered hole errors against the truth's
(um, affine pattern removed as in the gauge).

Run:    python benchmarks/bench_model_selfcal.py --seeds 6 --processes 2 --out benchmarks/results/selfcal.json
Quick:  python benchmarks/bench_model_selfcal.py --seeds 1 --degree 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model_coverage import (detector_grid, gauge_truth, make_campaign, quiet_logs,  # noqa: E402
                                  rms2)

import numpy as np  # noqa: E402


def run_one(task):
    quiet_logs()
    from astrocal.model.inference import FitSettings, fit_joint

    seed, holes, a = task["seed"], task["hole_errors"], task["args"]
    truth, pts, _ = make_campaign(seed, a["degree"], corner_px=3.0, hole_error_um=a["hole_um"],
                                  sigma_px=(0.005, 0.03), n_exposures=a["exposures"])
    t0 = time.perf_counter()
    fit = fit_joint(pts, FitSettings(degree=a["degree"], hole_errors=holes, seed=seed + 1,
                                   progress=False))
    secs = time.perf_counter() - t0
    gt = gauge_truth(truth, pts.hole_ids)
    x, y = detector_grid(33)
    u, v = fit.field_samples(x, y)
    ut, vt = gt.field(x, y)
    du, dv = u.mean(0) - ut, v.mean(0) - vt
    z = np.concatenate([du / u.std(0, ddof=1), dv / v.std(0, ddof=1)])
    rec = {"seed": seed, "hole_errors": holes, "seconds": secs,
           "map_rms_mas": 1e3 * rms2(du, dv), "map_rms_px": rms2(du, dv) / pts.pixel_scale,
           "sigma_rms_mas": 1e3 * rms2(u.std(0, ddof=1), v.std(0, ddof=1)),
           "z_mean": float(z.mean()), "z_rms": float(np.sqrt(np.mean(z**2))),
           "z_mean_abs": float(np.mean(np.abs(z))),
           "truth_holes_rms_um": float(np.sqrt(np.mean(gt.hole_errors**2)) * pts.mask_scale * 1e3),
           "n_points": int(pts.n_points), "n_outliers": int(fit.outliers.sum()),
           "unconstrained": list(fit.unconstrained), "converged": bool(fit.diagnostics.converged)}
    if holes:
        err = fit.hole_samples.mean(0) - gt.hole_errors
        rec["holes_err_rms_um"] = float(np.sqrt(np.mean(err**2)) * pts.mask_scale * 1e3)
        hz = err / fit.hole_samples.std(0, ddof=1)
        rec["holes_z_rms"] = float(np.sqrt(np.mean(hz**2)))
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--degree", type=int, default=5)
    ap.add_argument("--hole-um", type=float, default=1.0)
    ap.add_argument("--exposures", type=int, default=10)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    a = {"degree": args.degree, "hole_um": args.hole_um, "exposures": args.exposures}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    tasks = [{"seed": s, "hole_errors": h, "args": a} for s in seeds for h in (True, False)]
    if args.processes > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(args.processes) as pool:
            recs = pool.map(run_one, tasks, chunksize=1)
    else:
        recs = [run_one(t) for t in tasks]
    by = {(r["seed"], r["hole_errors"]): r for r in recs}
    print(f"hole errors {args.hole_um} um rms, {args.exposures} dithered exposures, degree "
          f"{args.degree} fitted at the true degree; map over a 33x33 pixel grid")
    print(f"{'seed':>5s} | {'-- hole errors FITTED --':^44s} | {'-- hole errors IGNORED --':^36s}")
    print(f"{'':>5s} | {'rms mas':>8s} {'rms px':>7s} {'mean z':>7s} {'rms z':>6s} "
          f"{'holes err um':>12s} | {'rms mas':>8s} {'rms px':>7s} {'mean z':>7s} {'rms z':>6s}")
    for s in seeds:
        f, n = by[(s, True)], by[(s, False)]
        print(f"{s:5d} | {f['map_rms_mas']:8.3f} {f['map_rms_px']:7.4f} {f['z_mean']:+7.2f} "
              f"{f['z_rms']:6.2f} {f['holes_err_rms_um']:6.3f}/{f['truth_holes_rms_um']:5.3f} | "
              f"{n['map_rms_mas']:8.3f} {n['map_rms_px']:7.4f} {n['z_mean']:+7.2f} {n['z_rms']:6.2f}")
    summ = {}
    for h, name in ((True, "fitted"), (False, "ignored")):
        rs = [by[(s, h)] for s in seeds]
        summ[name] = {k: float(np.mean([r[k] for r in rs]))
                      for k in ("map_rms_mas", "map_rms_px", "z_mean", "z_rms", "sigma_rms_mas", "seconds")}
    f, n = summ["fitted"], summ["ignored"]
    print(f"{'mean':>5s} | {f['map_rms_mas']:8.3f} {f['map_rms_px']:7.4f} {f['z_mean']:+7.2f} "
          f"{f['z_rms']:6.2f} {'':12s} | {n['map_rms_mas']:8.3f} {n['map_rms_px']:7.4f} "
          f"{n['z_mean']:+7.2f} {n['z_rms']:6.2f}")
    print(f"map error ignored / fitted: {n['map_rms_mas'] / f['map_rms_mas']:.1f}x; posterior map "
          f"sigma (rms) {f['sigma_rms_mas']:.3f} mas fitted, {n['sigma_rms_mas']:.3f} mas ignored")
    print(f"fit wall time: {f['seconds']:.0f} s (fitted), {n['seconds']:.0f} s (ignored) per campaign, "
          "2 shared cores")
    wall = time.perf_counter() - t0
    print(f"total wall time {wall:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": a, "records": recs, "summary": summ,
                                        "wall_seconds": wall}, indent=1))


if __name__ == "__main__":
    main()
