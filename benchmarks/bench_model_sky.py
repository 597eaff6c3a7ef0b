"""Benchmark: telescope flexure in the joint fit (lab + Galactic Center sky data).

For each of ``--campaigns`` simulated campaigns:

* a METIS IMG_LM lab campaign (FP mask #5, 10 dithered exposures, hole errors; the lab
  helpers of ``bench_model_coverage``: distortion field of degree 3-5, corner 1-5 px) and
* a Galactic Center sky campaign over one night through the SAME instrument field
  (``astrocal.sim.sky_points.write_sky_points_campaign``: 12 exposures at zenith distances
  5-60 deg, METIS field-stabilised so the rotator angle follows the parallactic angle,
  refraction for the night's weather, the shipped 107-star catalogue as truth and a
  catalogue with errors drawn from its stated precision, per-exposure pointing/PA/scale
  errors, a flexure field of degree 2 in (1, cos z, sin z) with coefficients drawn from
  N(0, ``--flexure-mas``)), point level (perfect detection and matching);

are fitted three ways at the field's true degree:

1. **joint** (lab + sky): the 68 % and 95 % central credible intervals of every flexure
   coefficient against the truth (coverage; target 68 +/- 3 %), and the map error (rms over
   a 9x9 grid of test pixels of posterior mean minus truth, in the lab gauge);
2. **lab only**: the same map error (target: joint <= lab-only);
3. **sky only** (the first ``--sky-only`` campaigns): the combinations it reports as not
   separable from the instrument (``Fit.inseparable``), printed by name, and whether
   the joint fit of the same data separates them.

Run (full; hours on 2 shared cores):
    python benchmarks/bench_model_sky.py --campaigns 40 --sky-only 3 --out benchmarks/results/sky.json
Quick:
    python benchmarks/bench_model_sky.py --campaigns 2 --sky-only 1

Per-campaign records are appended to ``<out>.jsonl``; ``--summarise`` re-prints the
summary from it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from bench_model_coverage import (binomial, campaign_params, detector_grid, interval_hits,  # noqa: E402
                                  make_campaign, quiet_logs, rms2)


def sky_points(field, seed, flexure_mas, tmp):
    """Point-level GC campaign through ``field``: (sky points, SkyTruth)."""
    from astrocal.campaign import load_campaign
    from astrocal.stages.fit_inputs import sky_points_for
    from astrocal.sim.sky_points import write_sky_points_campaign

    path, truth, _ = write_sky_points_campaign(Path(tmp) / f"sky{seed}", "gc", seed=int(seed),
                                               distortion=field, flexure_sigma_mas=flexure_mas)
    campaign = load_campaign(path)
    pts, _ = sky_points_for(campaign, campaign.sky)
    return pts, truth


def map_error(fit, gt, x, y):
    u, v = fit.field_samples(x, y)
    ut, vt = gt.field(x, y)
    return rms2(u.mean(0) - ut, v.mean(0) - vt) * 1e3  # mas


def run_campaign(task, tmp):
    quiet_logs()
    from astrocal.model.data import join_points
    from astrocal.model.inference import FitSettings, fit_joint
    from astrocal.sim.lab_truth import gauge_truth

    seed = task["seed"]
    p = campaign_params(seed, degree=3 + seed % 3)
    rec = {"seed": seed, "degree": p["degree"], "corner_px": p["corner_px"],
           "walkers": task.get("walkers", 24), "target_neff": task.get("target_neff", 1000)}
    truth, lab, _ = make_campaign(**p)
    sky, st = sky_points(truth.field, seed, task["flexure_mas"], tmp)
    rec.update(n_lab_points=int(lab.n_points), n_sky_points=int(sky.n_points),
               zenith_deg=[float(z) for z in sky.exposure_zenith_deg],
               rotator_deg=[float(r) for r in sky.exposure_rotator_deg])
    gt = gauge_truth(truth, lab.hole_ids)
    x, y = detector_grid(9)
    settings = dict(degree=p["degree"], seed=int(seed) + 1, progress=False, flexure=st.flexure,
                    walkers=task.get("walkers", 24), target_neff=task.get("target_neff", 1000))
    t0 = time.perf_counter()
    joint = fit_joint(join_points(lab, sky), FitSettings(**settings))
    rec["joint_seconds"] = time.perf_counter() - t0
    m = joint.model
    fs = joint.g_samples[:, m.flex_cols]
    in68, in95 = interval_hits(fs, st.flexure_coeffs)
    z = (fs.mean(0) - st.flexure_coeffs) / fs.std(0, ddof=1)
    rec.update(flex_in68=int(in68.sum()), flex_in95=int(in95.sum()), flex_n=int(in68.size),
               flex_z_rms=float(np.sqrt(np.mean(z**2))),
               flex_sd_mas=float(np.median(fs.std(0, ddof=1)) * 1e3),
               joint_map_err_mas=map_error(joint, gt, x, y),
               joint_inseparable=joint.inseparable, joint_unconstrained=joint.unconstrained,
               joint_converged=bool(joint.diagnostics.converged))
    t0 = time.perf_counter()
    lab_fit = fit_joint(lab, FitSettings(**settings))
    rec["lab_seconds"] = time.perf_counter() - t0
    rec["lab_map_err_mas"] = map_error(lab_fit, gt, x, y)
    su, sv = joint.map_uncertainty(x, y)
    lu, lv = lab_fit.map_uncertainty(x, y)
    rec["joint_map_sigma_mas"] = rms2(su, sv) * 1e3
    rec["lab_map_sigma_mas"] = rms2(lu, lv) * 1e3
    if task.get("sky_only"):
        t0 = time.perf_counter()
        sky_fit = fit_joint(sky, FitSettings(**settings))
        rec["sky_seconds"] = time.perf_counter() - t0
        rec["sky_inseparable"] = sky_fit.inseparable
        rec["sky_unconstrained"] = sky_fit.unconstrained
    return rec


def summarise(records):
    ok = [r for r in records if "error" not in r]
    print(f"\n{len(ok)} campaigns fitted ({len(records) - len(ok)} failed)")
    if not ok:
        return {}
    k68 = sum(r["flex_in68"] for r in ok)
    k95 = sum(r["flex_in95"] for r in ok)
    n = sum(r["flex_n"] for r in ok)
    f68, e68 = binomial(k68, n)
    f95, e95 = binomial(k95, n)
    per68 = np.array([r["flex_in68"] / r["flex_n"] for r in ok])
    per95 = np.array([r["flex_in95"] / r["flex_n"] for r in ok])
    c68 = per68.std(ddof=1) / np.sqrt(len(ok)) if len(ok) > 1 else np.nan
    c95 = per95.std(ddof=1) / np.sqrt(len(ok)) if len(ok) > 1 else np.nan
    print(f"flexure coefficients: 68 % interval holds the truth {100 * f68:.1f} % "
          f"(+/- {100 * e68:.1f} binomial, +/- {100 * c68:.1f} campaign-level) [target 68 +/- 3]")
    print(f"                      95 % interval holds the truth {100 * f95:.1f} % "
          f"(+/- {100 * e95:.1f} binomial, +/- {100 * c95:.1f} campaign-level) [target 95 +/- 2]")
    print(f"  z rms {np.mean([r['flex_z_rms'] for r in ok]):.3f}, posterior sd "
          f"{np.median([r['flex_sd_mas'] for r in ok]):.3f} mas (median)")
    j = np.array([r["joint_map_err_mas"] for r in ok])
    lab = np.array([r["lab_map_err_mas"] for r in ok])
    print(f"map error rms over the detector: joint {np.sqrt(np.mean(j**2)):.4f} mas, lab only "
          f"{np.sqrt(np.mean(lab**2)):.4f} mas (ratio {np.sqrt(np.mean(j**2) / np.mean(lab**2)):.3f}; "
          f"joint <= lab in {int(np.sum(j <= lab))}/{len(ok)} campaigns)")
    js = np.array([r["joint_map_sigma_mas"] for r in ok])
    ls = np.array([r["lab_map_sigma_mas"] for r in ok])
    print(f"map 1-sigma rms: joint {np.mean(js):.4f} mas, lab only {np.mean(ls):.4f} mas")
    print(f"times: joint {np.median([r['joint_seconds'] for r in ok]):.0f} s, lab only "
          f"{np.median([r['lab_seconds'] for r in ok]):.0f} s (median wall, shared machine)")
    for r in ok:
        if "sky_inseparable" in r:
            print(f"seed {r['seed']}: sky-only fit reports {len(r['sky_inseparable'])} inseparable "
                  "combinations:")
            for d in r["sky_inseparable"]:
                print(f"    {d}")
            print(f"  the joint fit of the same data reports {len(r['joint_inseparable'])}:")
            for d in r["joint_inseparable"]:
                print(f"    {d}")
    return {"flex_68": f68, "flex_95": f95, "n": n, "campaigns": len(ok),
            "joint_map_err_mas": float(np.sqrt(np.mean(j**2))), "lab_map_err_mas": float(np.sqrt(np.mean(lab**2)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaigns", type=int, default=2)
    ap.add_argument("--sky-only", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--flexure-mas", type=float, default=0.5)
    ap.add_argument("--walkers", type=int, default=24, help="emcee walkers of every fit")
    ap.add_argument("--target-neff", type=int, default=1000,
                    help="effective samples of every hyperparameter to stop at (the chain is "
                         "still run to >= 50 autocorrelation times)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--summarise", action="store_true")
    a = ap.parse_args()
    jsonl = Path(str(a.out) + "l") if a.out else None
    if a.summarise:
        recs = [json.loads(line) for line in open(jsonl)]
        summary = summarise(recs)
    else:
        recs = []
        with tempfile.TemporaryDirectory() as tmp:
            for k in range(a.campaigns):
                seed = a.first_seed + k
                t0 = time.perf_counter()
                try:
                    rec = run_campaign({"seed": seed, "flexure_mas": a.flexure_mas, "sky_only": k < a.sky_only,
                                    "walkers": a.walkers, "target_neff": a.target_neff}, tmp)
                except Exception as exc:  # a failure is a finding: record it
                    rec = {"seed": seed, "error": f"{type(exc).__name__}: {exc}"}
                rec["wall_seconds"] = time.perf_counter() - t0
                recs.append(rec)
                print(f"[{k + 1}/{a.campaigns}] seed {seed}: " + (rec.get("error") or
                      f"flexure 68 % {rec['flex_in68']}/{rec['flex_n']}, map err joint "
                      f"{rec['joint_map_err_mas']:.4f} lab {rec['lab_map_err_mas']:.4f} mas, "
                      f"{rec['wall_seconds']:.0f} s"), flush=True)
                if jsonl:
                    with open(jsonl, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
        summary = summarise(recs)
    if a.out:
        a.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
