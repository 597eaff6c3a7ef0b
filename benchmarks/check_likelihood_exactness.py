"""Check: the likelihood of this source tree against another's on the same inputs.

For square grids of holes (10 exposures, degree 7, hole errors on, the campaigns of
``bench_model_speed.likelihood_cost``) with and without the residual field (``--basis``),
K = 12 rows of phi near the starting point are evaluated by this tree's
``JointModel.log_likelihood`` and by the reference tree's evaluation of the *same model
object*: its ``expansion`` module (``<reference>/astrocal/model/expansion.py``, loaded
beside this one) where its components exist, else this tree's per-point ("direct")
evaluation (``log_likelihood(direct=True)``, the code the reference used there). Printed
per case: the largest relative difference of the log-likelihoods, the reference's path
and both costs per walker (CPU time, BLAS single-threaded, best of ``--repeat``).

Run:    python benchmarks/check_likelihood_exactness.py --reference /path/to/old/src
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model_coverage import make_campaign, quiet_logs  # noqa: E402
from bench_model_speed import grid_mask, load, priors  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402


def reference_expansion(src):
    path = Path(src) / "astrocal" / "model" / "expansion.py"
    spec = importlib.util.spec_from_file_location("astrocal.model._reference_expansion", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def cpu_ms(f, repeat, K):
    f()
    best = np.inf
    for _ in range(repeat):
        t0 = time.process_time()
        f()
        best = min(best, time.process_time() - t0)
    return 1e3 * best / K


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="the reference tree's src directory")
    ap.add_argument("--holes", type=int, nargs="+", default=[100, 400, 1600])
    ap.add_argument("--basis", type=int, nargs="+", default=[0, 8, 12, 16])
    ap.add_argument("--degree", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    quiet_logs()
    from astrocal.model.joint import JointModel
    from astrocal.sim.lab_truth import chopper_series

    ref = reference_expansion(args.reference)
    K = 12
    print(f"log-likelihood of this tree against {args.reference} on the same models and phi (K = {K}); "
          f"load average {load():.1f}")
    print(f"{'basis':>6s} {'holes':>6s} {'reference path':>15s} {'max rel diff':>13s} "
          f"{'ref ms/walker':>14s} {'new ms/walker':>14s}")
    worst = 0.0
    with threadpool_limits(1, "blas"):
        for h in args.holes:
            n = int(round(np.sqrt(h)))
            _, pts, _ = make_campaign(900 + n, args.degree, corner_px=3.0, hole_error_um=0.5, mask=grid_mask(n, 4.7),
                                      offsets=chopper_series(10, max_arcsec=0.3))
            for m in args.basis:
                model = JointModel(pts, args.degree, hole_errors=True, priors=priors(m))
                rng = np.random.default_rng(0)
                lo, hi = model.bounds()
                phi = np.clip(model.initial_guess() + 0.1 * rng.standard_normal((K, model.ndim)), lo, hi)
                new = model.log_likelihood(phi)
                rex = ref.build_expansion(model)
                if rex is not None:
                    path = "components"
                    f = lambda: ref.log_likelihood(model, rex, phi)  # noqa: E731
                else:
                    path = "direct"
                    f = lambda: model.log_likelihood(phi, direct=True)  # noqa: E731
                old = f()
                diff = float(np.max(np.abs(new - old) / np.abs(old)))
                worst = max(worst, diff)
                t_ref = cpu_ms(f, 1 if path == "direct" else args.repeat, K)
                t_new = cpu_ms(lambda: model.log_likelihood(phi), args.repeat, K)
                label = f"{m}x{m}" if m else "none"
                print(f"{label:>6s} {h:6d} {path:>15s} {diff:13.2e} {t_ref:14.2f} {t_new:14.2f}", flush=True)
    print(f"largest relative difference {worst:.2e}; load average {load():.1f}")


if __name__ == "__main__":
    main()
