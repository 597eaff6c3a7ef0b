"""Benchmark: speed of the lab fit and of one likelihood evaluation.

1. The nominal METIS IMG_LM lab campaign: 10 dithered exposures (default chopper spiral,
   up to 3 arcsec) of WCU FP mask #5, a degree-7 field (corner 3 px), hole errors 0.5 um,
   centroid noise 0.005-0.03 px; ``fit_joint`` at degree 7 with the default settings (stops
   once the chain is >= 50 tau and every hyperparameter has >= 1000 effective samples).
   Wall and CPU time of the whole call (preliminary fit, outlier EM, MAP, Laplace
   evidence, emcee, exact draws).  Target <= 30 s on 2 cores.
2. A dense 41x41 mask (1681 holes, pitch chosen so the grid fills the detector, built with
   ``astrocal.lab.mask.mask_from_arrays``), same 10 exposures and field: ``fit_joint`` time.
   Target <= 300 s.
3. The cost of one evaluation of ``JointModel.log_likelihood`` (degree 7, hole errors on) for
   a square grid of 100, 400, 1600 and 6400 holes observed in all of 10 exposures (small
   dithers, so every hole stays on the detector): the walkers of a step evaluated together
   (K = 12 rows of phi per call); printed per call and per walker (best of ``--repeat``
   calls), with the one-off times of the model and of its weight components (``m`` of
   them, :mod:`astrocal.model.expansion`), the per-point ("direct") evaluation's cost for
   comparison, and the slope of log(cost) versus log(holes) (1 = linear).

``fit_joint`` itself runs BLAS single-threaded (threadpoolctl); the likelihood timings here
are also taken under ``threadpool_limits(1)``.  The machine (2 cores) is shared with other
developers: the load average is printed next to the timings.

``--residual M`` adds the residual field beyond the polynomial (``Priors.residual =
"matern52"``, ``M x M`` basis functions per component) to every model: the cost of a
field that no polynomial holds (``docs/model.md``, "Beyond the polynomial").

Run:    python benchmarks/bench_model_speed.py --out benchmarks/results/speed.json
Quick:  python benchmarks/bench_model_speed.py --skip-dense --holes 100 400 --repeat 3
With the residual field:
        python benchmarks/bench_model_speed.py --residual 8 --out benchmarks/results/speed_residual.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model_coverage import make_campaign, quiet_logs  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

MASK_SCALE = 3.319  # mm per arcsec (METIS WCU)


def load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def grid_mask_table(n, half_arcsec):
    """The :class:`~astrocal.lab.mask.Mask` of an n x n grid of 25-um holes spanning
    +/- half_arcsec at the METIS WCU's mask scale."""
    from astrocal.lab.mask import mask_from_arrays

    g = np.linspace(-half_arcsec, half_arcsec, n) * MASK_SCALE
    xx, yy = np.meshgrid(g, g)
    return mask_from_arrays(xx.ravel(), yy.ravel(), 25.0, name=f"grid{n}x{n}", mask_scale=MASK_SCALE)


def grid_mask(n, half_arcsec):
    """(hole_id, xy_mm, mask_scale) of an n x n grid spanning +/- half_arcsec."""
    m = grid_mask_table(n, half_arcsec)
    return m.hole_id, m.xy_mm, float(m.mask_scale.value)


def priors(residual):
    from astrocal.model.priors import Priors

    return Priors(residual="matern52", residual_basis=residual) if residual else Priors()


def timed_fit(pts, degree, seed, residual=0):
    from astrocal.model.inference import FitSettings, fit_joint

    l0 = load()
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_joint(pts, FitSettings(degree=degree, seed=seed, progress=False, priors=priors(residual)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    d = fit.diagnostics
    return fit, {"wall_seconds": wall, "cpu_seconds": cpu, "load_before": l0, "load_after": load(),
                 "n_points": int(pts.n_points), "n_holes": int(pts.n_holes),
                 "steps": int(d.n_steps), "walkers": int(fit.phi_chain.shape[1]),
                 "tau": d.tau.tolist(), "n_eff": d.n_effective.tolist(),
                 "n_eff_min": float(np.min(d.n_effective)), "converged": bool(d.converged),
                 "outliers_flagged": int(fit.outliers.sum())}


def report_fit(name, r, target):
    ok = "PASS" if r["wall_seconds"] <= target and r["n_eff_min"] >= 1000 else "MISS"
    print(f"{name}: {r['n_points']} points, {r['n_holes']} holes: wall {r['wall_seconds']:.1f} s "
          f"(CPU {r['cpu_seconds']:.1f} s), {r['steps']} steps x {r['walkers']} walkers, tau "
          f"{np.round(r['tau'], 1)}, min n_eff {r['n_eff_min']:.0f}, >= 50 tau: {r['converged']}; "
          f"load average {r['load_before']:.1f} -> {r['load_after']:.1f}  [target <= {target} s: {ok}]",
          flush=True)


def likelihood_cost(n_holes, degree, repeat, K=12, residual=0, direct=True):
    """One likelihood evaluation's cost (ms per call of ``K`` walkers and per walker, best and
    median of ``repeat`` calls); ``direct``: also the per-point ("direct") evaluation's."""
    from astrocal.model.joint import JointModel
    from astrocal.sim.lab_truth import chopper_series

    n = int(round(np.sqrt(n_holes)))
    mask = grid_mask(n, 4.7)
    _, pts, _ = make_campaign(900 + n, degree, corner_px=3.0, hole_error_um=0.5, mask=mask,
                              offsets=chopper_series(10, max_arcsec=0.3))
    with threadpool_limits(1, "blas"):
        t0 = time.perf_counter()
        model = JointModel(pts, degree, hole_errors=True, priors=priors(residual))
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        ex = model.expansion()
        build_ex = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        phi = model.initial_guess() + 0.1 * rng.standard_normal((K, model.ndim))

        def best(direct, n):
            model.log_likelihood(phi, direct=direct)  # warm-up (work buffers)
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                model.log_likelihood(phi, direct=direct)
                times.append(time.perf_counter() - t0)
            return 1e3 * min(times), 1e3 * float(np.median(times))

        call, median = best(False, repeat)
        direct = best(True, max(2, repeat // 3))[0] if direct else float("nan")
        components = None if ex is None else int(ex.J)
        streamed = None if ex is None else bool(ex.streamed)
    return {"holes": int(pts.n_holes), "points": int(pts.n_points), "build_seconds": build,
            "components": components, "components_streamed": streamed, "components_seconds": build_ex,
            "call_ms": call, "per_walker_ms": call / K, "call_ms_median": median,
            "direct_per_walker_ms": direct / K, "load": load()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--degree", type=int, default=7)
    ap.add_argument("--seed", type=int, default=700)
    ap.add_argument("--holes", type=int, nargs="+", default=[100, 400, 1600, 6400])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--skip-nominal", action="store_true")
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--residual", type=int, default=0, metavar="M",
                    help="add the residual field with M x M basis functions per component (0: none)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    quiet_logs()
    t_all = time.perf_counter()
    res = {"cpu_count": os.cpu_count()}
    print(f"machine: {os.cpu_count()} cores shared with other developers; load average now "
          f"{load():.1f}", flush=True)
    if not args.skip_nominal:
        _, pts, _ = make_campaign(args.seed, args.degree, corner_px=3.0, hole_error_um=0.5)
        _, r = timed_fit(pts, args.degree, args.seed, args.residual)
        res["nominal"] = r
        report_fit(f"nominal METIS IMG_LM campaign (FP mask #5, 10 exposures, degree {args.degree})", r, 30)
    if not args.skip_dense:
        mask = grid_mask(41, 5.45)
        _, pts, _ = make_campaign(args.seed + 1, args.degree, corner_px=3.0, hole_error_um=0.5, mask=mask)
        _, r = timed_fit(pts, args.degree, args.seed, args.residual)
        res["dense"] = r
        report_fit(f"dense 41x41 mask (1681 holes, 10 exposures, degree {args.degree})", r, 300)
    rows = []
    res["residual_basis"] = args.residual
    print(f"\none likelihood evaluation, degree {args.degree}, hole errors on"
          + (f", residual field {args.residual}x{args.residual}" if args.residual else "")
          + f", K = 12 walkers per call, BLAS 1 thread (best of {args.repeat}):")
    print(f"{'holes':>6s} {'points':>7s} {'model s':>8s} {'m':>4s} {'comp. s':>8s} {'ms/call':>9s} "
          f"{'ms/walker':>10s} {'median ms/call':>14s} {'direct ms/walker':>17s} {'ratio':>6s} {'load':>5s}")
    for h in args.holes:
        r = likelihood_cost(h, args.degree, args.repeat, residual=args.residual)
        rows.append(r)
        print(f"{r['holes']:6d} {r['points']:7d} {r['build_seconds']:8.2f} {r['components'] or 0:4d} "
              f"{r['components_seconds']:8.2f} {r['call_ms']:9.2f} {r['per_walker_ms']:10.3f} "
              f"{r['call_ms_median']:14.2f} {r['direct_per_walker_ms']:17.3f} "
              f"{r['direct_per_walker_ms'] / r['per_walker_ms']:6.1f} {r['load']:5.1f}", flush=True)
    res["likelihood"] = rows
    if len(rows) >= 2:
        lh = np.log([r["holes"] for r in rows])
        lc = np.log([r["call_ms"] for r in rows])
        slope = float(np.polyfit(lh, lc, 1)[0])
        steps = np.diff(lc) / np.diff(lh)
        print(f"slope of log(cost) vs log(holes): {slope:.2f} overall; between successive sizes "
              f"{np.round(steps, 2)}  (1 = linear)")
        res["slope"] = slope
        res["slopes_successive"] = steps.tolist()
    res["wall_seconds"] = time.perf_counter() - t_all
    print(f"total wall time {res['wall_seconds']:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
