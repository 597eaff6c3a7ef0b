"""``astrocal demo``: the whole lab chain on simulated METIS IMG_LM data, start to finish.

Simulates a METIS IMG_LM lab campaign (10 exposures of WCU FP mask #5 with chopper offsets,
a background and a flat frame, the truth kept aside), measures it (reduction, detection,
centroiding, identification), fits the joint model (degree by evidence, emcee over the
hyperparameters, exact draws of everything else) and writes the calibration products;
then compares the fitted map with the simulated truth, the check a calibration scientist
would make first.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def run_demo(out="astrocal-demo", seed=1, overwrite=False, progress="auto"):
    """Run the demo into ``out``; returns a dict of figures and paths."""
    from .campaign import load_campaign
    from .lab.measure import measure_campaign
    from .model.cli import describe, fit_campaign
    from .sim.lab import load_lab_truth, simulate_lab
    from .sim.lab_truth import gauge_truth

    out = Path(out)
    t0 = time.perf_counter()
    lab_dir = out / "lab"
    print(f"[1/4] simulating a METIS IMG_LM lab campaign in {lab_dir} ...", flush=True)
    sim = simulate_lab(lab_dir, seed=seed, overwrite=overwrite)
    print(f"      {len(sim.frames)} frames, background, flat, campaign {sim.campaign} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print("[2/4] measuring (reduction, detection, centroiding, identification) ...", flush=True)
    report = measure_campaign(sim.campaign, overwrite=overwrite, processes=2)
    if report.n_failed:
        raise RuntimeError(f"{report.n_failed} frame(s) failed to measure; see "
                           f"{Path(load_campaign(sim.campaign).measure.output) / 'summary.ecsv'}")
    print(f"      done ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("[3/4] fitting the joint model (degree by evidence, emcee, exact draws) ...", flush=True)
    campaign = load_campaign(sim.campaign)
    results = fit_campaign(campaign, overwrite=overwrite, progress=progress)
    print("[4/4] comparing with the simulated truth ...", flush=True)
    truth = load_lab_truth(lab_dir)
    figures = {}
    for filt, (fit, fit_dir, products) in results.items():
        for line in describe(filt, fit, fit_dir, products):
            print("      " + line)
        gt = gauge_truth(truth, fit.model.points.hole_ids)
        xmin, xmax, ymin, ymax = fit.points.domain
        xx, yy = np.meshgrid(np.linspace(xmin + 0.5, xmax - 0.5, 17), np.linspace(ymin + 0.5, ymax - 0.5, 17))
        u, v = fit.field_samples(xx.ravel(), yy.ravel())
        ut, vt = gt.field(xx.ravel(), yy.ravel())
        err = np.hypot(u.mean(0) - ut, v.mean(0) - vt) * 1e3
        z = np.concatenate([(u.mean(0) - ut) / u.std(0, ddof=1), (v.mean(0) - vt) / v.std(0, ddof=1)])
        figures[filt] = {"map_error_rms_mas": float(np.sqrt(np.mean(err**2))),
                         "map_error_max_mas": float(err.max()),
                         "normalised_error_rms": float(np.sqrt(np.mean(z**2))),
                         "fraction_within_1sigma": float(np.mean(np.abs(z) < 1)),
                         "products": {k: str(p) for k, p in products.items()}}
        f = figures[filt]
        print(f"      map error vs truth: rms {f['map_error_rms_mas']:.4f} mas, max "
              f"{f['map_error_max_mas']:.4f} mas; normalised error rms {f['normalised_error_rms']:.2f} "
              f"({100 * f['fraction_within_1sigma']:.0f} % within 1 sigma)")
    print(f"done in {time.perf_counter() - t0:.0f} s; results in {out.resolve()}")
    return figures


def register(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="run the whole lab chain on simulated METIS data",
        description="Simulate a METIS IMG_LM lab campaign (raw frames, background, flat, "
        "campaign file and truth under OUT/lab/), measure it (OUT/lab/measured/), fit the "
        "joint model (OUT/lab/out/<filter>/: posterior, summaries, AstroMet file, TAN-SIP "
        "header) and compare the fitted map with the truth.",
    )
    p.add_argument("--out", default="astrocal-demo", help="output directory (default astrocal-demo)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the simulation")
    p.add_argument("--overwrite", action="store_true", help="replace the products of an earlier run")
    p.set_defaults(func=run)


def run(args):
    run_demo(args.out, seed=args.seed, overwrite=args.overwrite)
    return 0
