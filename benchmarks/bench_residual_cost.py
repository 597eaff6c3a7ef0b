"""Benchmark: the cost of one likelihood evaluation with the residual field.

``JointModel.log_likelihood`` (degree 7, hole errors on) for a square grid of 100, 400, 1600
and 6400 holes observed in each of 10 exposures (the campaigns of
``bench_model_speed.likelihood_cost``), without the residual field and with it at each basis
of the fit's ladder: ``M x M`` functions per component for ``M`` = 8 (the default basis),
12 and 16 (the refinements, ``Priors.residual_refine``). The walkers of a step are
evaluated together (K = 12 rows of phi per call); the figures are per call and per walker
(best of ``--repeat`` calls, BLAS single-threaded), with the slope of log(cost) versus
log(holes) per basis (1 = linear in holes). The machine (2 cores) is shared: the load
average is printed beside every row.

Run:    python benchmarks/bench_residual_cost.py --out benchmarks/results/residual_cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model_coverage import quiet_logs  # noqa: E402
from bench_model_speed import likelihood_cost, load  # noqa: E402

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--degree", type=int, default=7)
    ap.add_argument("--holes", type=int, nargs="+", default=[100, 400, 1600, 6400])
    ap.add_argument("--basis", type=int, nargs="+", default=[0, 8, 12, 16],
                    help="residual basis sizes M (0: the polynomial alone)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--direct", action="store_true",
                    help="also time the per-point (direct) evaluation (slow with a large basis)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    quiet_logs()
    t_all = time.perf_counter()
    out = {"degree": args.degree, "cpu_count": os.cpu_count(), "rows": [], "slopes": {}}
    print(f"one likelihood evaluation, degree {args.degree}, hole errors on, 10 exposures, K = 12 walkers "
          f"per call, BLAS 1 thread, best of {args.repeat}; load average now {load():.1f}", flush=True)
    print(f"{'basis':>6s} {'holes':>6s} {'points':>7s} {'model s':>8s} {'ms/call':>9s} {'ms/walker':>10s} "
          f"{'load':>5s}")
    for m in args.basis:
        rows = []
        for h in args.holes:
            r = likelihood_cost(h, args.degree, args.repeat, residual=m, direct=args.direct)
            r["basis"] = m
            rows.append(r)
            print(f"{(str(m) + 'x' + str(m)) if m else 'none':>6s} {r['holes']:6d} {r['points']:7d} "
                  f"{r['build_seconds']:8.2f} {r['call_ms']:9.2f} {r['per_walker_ms']:10.3f} {r['load']:5.1f}",
                  flush=True)
        out["rows"] += rows
        if len(rows) >= 2:
            slope = float(np.polyfit(np.log([r["holes"] for r in rows]), np.log([r["call_ms"] for r in rows]), 1)[0])
            out["slopes"][str(m)] = slope
            print(f"       slope of log(cost) vs log(holes): {slope:.2f}", flush=True)
    out["wall_seconds"] = time.perf_counter() - t_all
    print(f"total wall time {out['wall_seconds']:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
