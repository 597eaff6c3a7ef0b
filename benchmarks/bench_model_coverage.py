"""Benchmark: calibration of the lab model's credible intervals over many simulated campaigns.

For each of ``--campaigns`` simulated lab campaigns (METIS IMG_LM, FP mask #5, 10 dithered
exposures; every campaign draws its own seed, distortion field (``smooth_field`` with a
random seed, degree 3-7, corner displacement 1-5 px, small rotation), centroid noise level
and hole-error rms 0.1-1 um), the campaign is fitted with ``fit_joint`` at its TRUE degree
(default settings otherwise), and the 68 % and 95 % central credible intervals (quantiles
of the exact posterior draws) are checked against the truth expressed in the fit's gauge
(``gauge_truth``) for

(a) the map at a fixed 5x5 grid of test pixels spanning the whole detector (pixel centres
    0 ... 2047), both components (50 intervals per campaign);
(b) the pixel scale (areal scale of the field's best affine part, ``pixel_scale_samples``);
(c) every hole's manufacturing error, both components.

The map's coverage is also split by whether a test pixel lies inside the data footprint
(the convex hull of the measured positions, ``Fit.inside_footprint``: the map
interpolates) or beyond it (the detector's edges past the outermost holes: the map is
extrapolated), overall and by true degree.

The fractions are printed with two standard errors: the plain binomial one (intervals
treated as independent) and a campaign-level one (spread of the per-campaign fractions /
sqrt(campaigns)), which is the honest one when the intervals of one campaign are
correlated.  Targets: 68 +/- 3 % and 95 +/- 2 %.

A second pass fits the first ``--auto`` campaigns with ``degree="auto"`` (evidence over
degrees 3-8) and reports the same fractions and the chosen versus the true degree;
``--only-auto`` skips the fits at the true degree (the default fit alone).
``--field-prior`` sets ``Priors.field_prior`` (default: the model's); ``--residual``
``Priors.residual`` (the residual field beyond the polynomial: ``none``, ``matern52`` or
``auto``, the evidence's choice; default: the model's); ``--residual-lengths``
``Priors.residual_lengths`` (``per_axis``, the default, or ``isotropic``: the residual field of
one correlation length, the model before 2026-12-07).

Run (the default fit over 200 campaigns, ~50 min on 2 idle cores):
    python benchmarks/bench_model_coverage.py --campaigns 200 --auto 200 --only-auto \
        --processes 2 --first-seed 1000 --out benchmarks/results/coverage_auto.json
At the true degree as well (~1-2 h):
    python benchmarks/bench_model_coverage.py --campaigns 200 --auto 40 --processes 2 \
        --out benchmarks/results/coverage.json
Quick:
    python benchmarks/bench_model_coverage.py --campaigns 6 --auto 2 --processes 2

Per-campaign records are appended to ``<out>.jsonl`` as campaigns finish; ``--summarise``
re-prints the summary from that file (e.g. after an interrupted run).

This module also holds the simulation helpers that the other ``bench_model_*`` scripts
import (they run with ``benchmarks/`` on ``sys.path``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from astrocal.field.synthetic import smooth_field  # noqa: E402
from astrocal.instruments import get_instrument  # noqa: E402
from astrocal.lab.mask import get_mask  # noqa: E402
from astrocal.sim.lab_truth import draw_lab_truth, gauge_truth, observe_points  # noqa: E402
from astrocal.model.priors import Priors  # noqa: E402

INSTRUMENT = "metis-lm"
MASK = "metis_wcu_fp_mask5"


# --------------------------------------------------------------------------- shared helpers
def quiet_logs():
    """Keep the fits' GaugeWarning / ConvergenceWarning log lines out of the benchmark output
    (they are counted from the fit results instead)."""
    logging.getLogger("astrocal").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


def campaign_params(seed, degree=None, hole_error_um=None):
    """Random but reproducible settings of campaign ``seed``."""
    rng = np.random.default_rng([20250, int(seed)])
    level = float(np.exp(rng.uniform(np.log(0.004), np.log(0.04))))  # px, centroid noise level
    p = {
        "seed": int(seed),
        "degree": int(rng.integers(3, 8)) if degree is None else int(degree),
        "corner_px": float(rng.uniform(1.0, 5.0)),
        "rotation_deg": float(rng.normal(0.0, 0.3)),
        "sigma_px": (0.5 * level, 1.5 * level),
        "hole_error_um": float(rng.uniform(0.1, 1.0)) if hole_error_um is None else float(hole_error_um),
        "n_exposures": 10,
        "offset_sigma_mas": 2.0,
    }
    return p


def make_mask(name=MASK):
    m = get_mask(name)
    return m.hole_id, m.xy_mm, float(m.mask_scale.value)


def make_campaign(seed, degree, corner_px=3.0, sigma_px=(0.005, 0.03), hole_error_um=0.5,
                  n_exposures=10, rotation_deg=0.0, offsets=None, offset_sigma_mas=2.0,
                  mask=None, **_):
    """Simulate a lab campaign: returns ``(truth, points, true_xy)``.

    ``mask`` is ``(hole_id, xy_mm, mask_scale)`` (default: METIS FP mask #5).
    """
    inst = get_instrument(INSTRUMENT)
    hole_id, xy_mm, ms = mask if mask is not None else make_mask()
    rng = np.random.default_rng([int(seed), 7])
    field = smooth_field(shape=inst.detector_shape, pixel_scale_mas=inst.pixel_scale_mas,
                         corner_px=corner_px, degree=degree, rng=int(rng.integers(1 << 31)),
                         rotation_deg=rotation_deg)
    truth = draw_lab_truth(field, hole_id, xy_mm / ms, ms, rng, n_exposures=n_exposures,
                           offsets=offsets, hole_error_um=hole_error_um,
                           offset_sigma_mas=offset_sigma_mas)
    pts, true_xy = observe_points(truth, rng, sigma_px=tuple(sigma_px))
    return truth, pts, true_xy


def detector_grid(n, shape=(2048, 2048), inset=0.0):
    """An ``n x n`` grid of pixel centres over the detector (flattened x, y)."""
    ny, nx = shape
    gx = np.linspace(inset, nx - 1 - inset, n)
    gy = np.linspace(inset, ny - 1 - inset, n)
    xx, yy = np.meshgrid(gx, gy)
    return xx.ravel(), yy.ravel()


def affine_scale(cx, cy, domain):
    """Areal pixel scale of the best affine part of Legendre coefficients (same formula as
    ``Fit.pixel_scale_samples``)."""
    xmin, xmax, ymin, ymax = domain
    hx, hy = 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)
    a, b = cx[1, 0] / hx, cx[0, 1] / hy
    c, d = cy[1, 0] / hx, cy[0, 1] / hy
    return float(np.sqrt(abs(a * d - b * c)))


def remove_affine(x, y, du, dv):
    """Residual of an error map after its least-squares affine part is removed."""
    a = np.column_stack([np.ones_like(x), x, y])
    cu, *_ = np.linalg.lstsq(a, du, rcond=None)
    cv, *_ = np.linalg.lstsq(a, dv, rcond=None)
    return du - a @ cu, dv - a @ cv


def rms2(du, dv):
    """rms of a 2-D error (per component pooled: sqrt(mean(du**2 + dv**2) / 2))."""
    return float(np.sqrt(0.5 * np.mean(np.asarray(du) ** 2 + np.asarray(dv) ** 2)))


def interval_hits(samples, truth):
    """For samples (S, M) and truth (M,): booleans (M,) inside the 68 % and 95 % central
    intervals."""
    q = np.quantile(samples, [0.025, 0.16, 0.84, 0.975], axis=0)
    t = np.asarray(truth)
    return (q[1] <= t) & (t <= q[2]), (q[0] <= t) & (t <= q[3])


def binomial(k, n):
    p = k / n if n else np.nan
    return p, float(np.sqrt(p * (1 - p) / n)) if n else np.nan


# --------------------------------------------------------------------------- one campaign
def run_campaign(task):
    """Simulate and fit one campaign; returns a JSON-able record."""
    quiet_logs()
    from astrocal.model.inference import FitSettings, fit_joint

    seed, fit_degree = task["seed"], task["fit_degree"]
    p = campaign_params(seed)
    rec = dict(p, fit_degree=fit_degree, field_prior=task.get("field_prior"), residual=task.get("residual"),
               sampler=task.get("sampler", "emcee"), residual_lengths=task.get("residual_lengths"))
    try:
        truth, pts, _ = make_campaign(**p)
    except Exception as exc:  # a simulation failure is recorded, not fatal
        rec.update(error=f"simulation: {type(exc).__name__}: {exc}")
        return rec
    t0 = time.perf_counter()
    c0 = time.process_time()
    rec.update(n_points=int(pts.n_points), n_holes=int(pts.n_holes))
    try:
        priors = Priors(field_prior=task.get("field_prior") or Priors().field_prior,
                        residual=task.get("residual") or Priors().residual,
                        residual_lengths=task.get("residual_lengths") or Priors().residual_lengths)
        fit = fit_joint(pts, FitSettings(degree=fit_degree, seed=int(seed) + 1, progress=False, priors=priors,
                                       sampler=task.get("sampler", "emcee")))
    except Exception as exc:  # record and go on: a failed fit is a finding
        rec.update(error=f"{type(exc).__name__}: {exc}")
        return rec
    rec["fit_seconds"] = time.perf_counter() - t0
    rec["fit_cpu_seconds"] = time.process_time() - c0
    gt = gauge_truth(truth, pts.hole_ids)
    # (a) the map at the test pixels
    x, y = detector_grid(5)
    u, v = fit.field_samples(x, y)
    ut, vt = gt.field(x, y)
    s = np.hstack([u, v])
    t = np.concatenate([ut, vt])
    in68, in95 = interval_hits(s, t)
    z = (s.mean(0) - t) / s.std(0, ddof=1)
    # (b) pixel scale
    ps = fit.pixel_scale_samples()
    ps_true = affine_scale(gt.field.cx, gt.field.cy, gt.field.domain)
    p68, p95 = interval_hits(ps[:, None], [ps_true])
    # (c) hole errors
    hs = fit.hole_samples.reshape(len(fit.hole_samples), -1)
    ht = gt.hole_errors.ravel()
    h68, h95 = interval_hits(hs, ht)
    hz = (hs.mean(0) - ht) / hs.std(0, ddof=1)
    d = fit.diagnostics
    rec.update(
        chosen_degree=int(fit.degree),
        evidence={int(e["degree"]): float(e["log_evidence"]) for e in fit.evidence},
        map_in68=in68.tolist(), map_in95=in95.tolist(), map_z=z.tolist(),
        map_inside=np.tile(fit.inside_footprint(x, y), 2).tolist(),
        scale_in68=bool(p68[0]), scale_in95=bool(p95[0]),
        scale_z=float((ps.mean() - ps_true) / ps.std(ddof=1)),
        holes_in68=int(h68.sum()), holes_in95=int(h95.sum()), holes_n=int(h68.size),
        holes_rms_z=float(np.sqrt(np.mean(hz**2))),
        n_outliers=int(fit.outliers.sum()),
        tau_max=float(np.nanmax(d.tau)), n_steps=int(d.n_steps),
        n_eff_min=float(np.min(d.n_effective)), converged=bool(d.converged),
        acceptance=float(d.acceptance), unconstrained=list(fit.unconstrained),
    )
    return rec


# --------------------------------------------------------------------------- summary
def summarise(records, label):
    good = [r for r in records if "error" not in r]
    bad = [r for r in records if "error" in r]
    print(f"\n== {label}: {len(good)} campaigns fitted, {len(bad)} failed ==")
    for r in bad:
        print(f"   failed seed {r['seed']}: {r['error']}")
    if not good:
        return {}
    out = {"campaigns": len(good), "failed": len(bad)}
    rows = []

    def add(name, k68, k95, n, per68, per95):
        p68, se68 = binomial(k68, n)
        p95, se95 = binomial(k95, n)
        c68 = float(np.std(per68, ddof=1) / np.sqrt(len(per68))) if len(per68) > 1 else np.nan
        c95 = float(np.std(per95, ddof=1) / np.sqrt(len(per95))) if len(per95) > 1 else np.nan
        rows.append((name, n, p68, se68, c68, p95, se95, c95))
        out[name] = {"n_intervals": int(n), "cover68": p68, "se68_binomial": se68,
                     "se68_campaign": c68, "cover95": p95, "se95_binomial": se95,
                     "se95_campaign": c95}

    m68 = np.array([np.mean(r["map_in68"]) for r in good])
    m95 = np.array([np.mean(r["map_in95"]) for r in good])
    nm = sum(len(r["map_in68"]) for r in good)
    add("map (5x5 pixels, u and v)", sum(sum(r["map_in68"]) for r in good),
        sum(sum(r["map_in95"]) for r in good), nm, m68, m95)
    s68 = np.array([r["scale_in68"] for r in good], float)
    s95 = np.array([r["scale_in95"] for r in good], float)
    add("pixel scale", s68.sum(), s95.sum(), len(good), s68, s95)
    h68 = np.array([r["holes_in68"] / r["holes_n"] for r in good])
    h95 = np.array([r["holes_in95"] / r["holes_n"] for r in good])
    add("hole errors (x and y)", sum(r["holes_in68"] for r in good),
        sum(r["holes_in95"] for r in good), sum(r["holes_n"] for r in good), h68, h95)
    print(f"{'quantity':28s} {'n':>6s}  {'68% cover':>10s} {'+/-bin':>7s} {'+/-camp':>7s}  "
          f"{'95% cover':>10s} {'+/-bin':>7s} {'+/-camp':>7s}")
    for name, n, p68, se68, c68, p95, se95, c95 in rows:
        print(f"{name:28s} {n:6d}  {100 * p68:9.1f}% {100 * se68:6.1f}% {100 * c68:6.1f}%  "
              f"{100 * p95:9.1f}% {100 * se95:6.1f}% {100 * c95:6.1f}%")
    z = np.concatenate([r["map_z"] for r in good])
    sz = np.array([r["scale_z"] for r in good])
    print(f"map z-scores: mean {z.mean():+.3f}, rms {np.sqrt(np.mean(z**2)):.3f}; "
          f"pixel-scale z: mean {sz.mean():+.3f}, rms {np.sqrt(np.mean(sz**2)):.3f}; "
          f"hole rms z (median over campaigns) {np.median([r['holes_rms_z'] for r in good]):.3f}")
    out["map_z_mean"], out["map_z_rms"] = float(z.mean()), float(np.sqrt(np.mean(z**2)))
    out["scale_z_mean"], out["scale_z_rms"] = float(sz.mean()), float(np.sqrt(np.mean(sz**2)))
    # by degree and by test pixel (corners versus inside)
    print("map 68 / 95 % coverage by true degree:")
    for deg in sorted({r["degree"] for r in good}):
        sel = [r for r in good if r["degree"] == deg]
        a = np.mean([np.mean(r["map_in68"]) for r in sel])
        b = np.mean([np.mean(r["map_in95"]) for r in sel])
        print(f"   degree {deg}: {len(sel):3d} campaigns  {100 * a:5.1f} %  {100 * b:5.1f} %")
    if all("map_inside" in r for r in good):
        # inside the data footprint (the convex hull of the measured positions: the map
        # interpolates) and beyond it (the detector's edges past the outermost holes: the
        # map extrapolates on the learnt widths of the highest degrees)
        print("map 68 / 95 % coverage inside / beyond the data footprint (test pixels):")
        for deg in [None] + sorted({r["degree"] for r in good}):
            sel = [r for r in good if deg is None or r["degree"] == deg]
            row = {}
            for side, want in (("inside", True), ("beyond", False)):
                m = [np.asarray(r["map_inside"]) == want for r in sel]
                a68 = np.concatenate([np.asarray(r["map_in68"])[k] for r, k in zip(sel, m)])
                a95 = np.concatenate([np.asarray(r["map_in95"])[k] for r, k in zip(sel, m)])
                zz = np.concatenate([np.asarray(r["map_z"])[k] for r, k in zip(sel, m)])
                row[side] = [int(a68.size), float(a68.mean()) if a68.size else np.nan,
                             float(a95.mean()) if a95.size else np.nan,
                             float(np.sqrt(np.mean(zz**2))) if zz.size else np.nan]
            label = "all degrees" if deg is None else f"degree {deg}"
            print(f"   {label:12s} inside {row['inside'][0]:5d}: {100 * row['inside'][1]:5.1f} % "
                  f"{100 * row['inside'][2]:5.1f} % (z rms {row['inside'][3]:.2f});  beyond "
                  f"{row['beyond'][0]:5d}: {100 * row['beyond'][1]:5.1f} % {100 * row['beyond'][2]:5.1f} % "
                  f"(z rms {row['beyond'][3]:.2f})")
            out[f"map_footprint_{'all' if deg is None else deg}"] = row
    if any(r["fit_degree"] == "auto" for r in good):
        pairs = [(r["degree"], r["chosen_degree"]) for r in good]
        right = sum(a == b for a, b in pairs)
        print(f"degree chosen by the evidence = true degree in {right}/{len(pairs)} campaigns; "
              f"(true, chosen): {sorted(pairs)}")
        out["degree_right"] = right
        for part, sel in (("at or above the true degree", [b >= a for a, b in pairs]),
                          ("below the true degree", [b < a for a, b in pairs])):
            sub = [r for r, k in zip(good, sel) if k]
            if sub:
                m68 = 100 * np.mean([np.mean(r["map_in68"]) for r in sub])
                m95 = 100 * np.mean([np.mean(r["map_in95"]) for r in sub])
                print(f"map coverage {part} ({len(sub)} campaigns): {m68:.1f} % / {m95:.1f} %")
                out[f"map_{part.replace(' ', '_')}"] = [len(sub), m68, m95]
    t = np.array([r["fit_seconds"] for r in good])
    conv = sum(r["converged"] for r in good)
    print(f"fit wall time per campaign: median {np.median(t):.1f} s, max {t.max():.1f} s; "
          f"chains >= 50 tau: {conv}/{len(good)}; min n_eff (median) "
          f"{np.median([r['n_eff_min'] for r in good]):.0f}; campaigns with outliers flagged "
          f"(none injected): {sum(r['n_outliers'] > 0 for r in good)}")
    out["fit_seconds_median"] = float(np.median(t))
    return out


def run(tasks, processes, jsonl, job=None, progress=None, maxtasksperchild=10):
    """Run ``job`` (default :func:`run_campaign`) on every task, in ``processes`` forked
    workers; each record is appended to ``jsonl`` and reported by ``progress`` (default
    :func:`_progress`) as it finishes. Also used by the other ``bench_*coverage`` scripts."""
    job = job or run_campaign
    progress = progress or _progress
    records = []
    fh = open(jsonl, "a") if jsonl else None
    t0 = time.perf_counter()
    if processes > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(processes, maxtasksperchild=maxtasksperchild) as pool:
            for k, rec in enumerate(pool.imap_unordered(job, tasks), 1):
                records.append(rec)
                progress(k, len(tasks), rec, t0, fh)
    else:
        for k, task in enumerate(tasks, 1):
            rec = job(task)
            records.append(rec)
            progress(k, len(tasks), rec, t0, fh)
    if fh:
        fh.close()
    return records


def _progress(k, n, rec, t0, fh):
    if fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
    msg = rec.get("error") or (f"deg {rec['degree']}->{rec['chosen_degree']} "
                               f"map68 {np.mean(rec['map_in68']):.2f} fit {rec['fit_seconds']:.0f} s")
    print(f"[{k}/{n}] seed {rec['seed']} ({rec['fit_degree']}): {msg}  "
          f"elapsed {time.perf_counter() - t0:.0f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", type=int, default=200)
    ap.add_argument("--auto", type=int, default=40, help="campaigns also fitted with degree 'auto'")
    ap.add_argument("--only-auto", action="store_true", help="fit only with degree 'auto' (the default fit)")
    ap.add_argument("--field-prior", default=None, help="Priors.field_prior of the fits (default: the model's)")
    ap.add_argument("--residual", default=None, choices=("none", "matern52", "auto"),
                    help="Priors.residual of the fits (default: the model's)")
    ap.add_argument("--residual-lengths", default=None, choices=("per_axis", "isotropic"),
                    help="Priors.residual_lengths of the fits (default: the model's)")
    ap.add_argument("--sampler", default="emcee", choices=("emcee", "laplace"),
                    help="FitSettings.sampler: emcee (the default fit) or laplace (astrocal fit --quick)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="summary JSON (records in <out>.jsonl)")
    ap.add_argument("--summarise", action="store_true", help="only summarise <out>.jsonl")
    args = ap.parse_args()
    jsonl = args.out.with_suffix(".jsonl") if args.out else None
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.summarise:
        records = [json.loads(line) for line in open(jsonl)]
    else:
        if jsonl and jsonl.exists():
            jsonl.unlink()
        seeds = range(args.first_seed, args.first_seed + args.campaigns)
        tasks = [] if args.only_auto else [{"seed": s, "fit_degree": campaign_params(s)["degree"]} for s in seeds]
        tasks += [{"seed": s, "fit_degree": "auto"} for s in list(seeds)[:args.auto]]
        for t in tasks:
            t["field_prior"] = args.field_prior or Priors().field_prior
            t["residual"] = args.residual or Priors().residual
            t["sampler"] = args.sampler
            t["residual_lengths"] = args.residual_lengths or Priors().residual_lengths
        print(f"{len(tasks)} fits on {args.processes} processes (machine shared with other "
              "developers: wall times are indicative)", flush=True)
        records = run(tasks, args.processes, jsonl)
    fixed = [r for r in records if r["fit_degree"] != "auto"]
    auto = [r for r in records if r["fit_degree"] == "auto"]
    summary = {"true_degree": summarise(fixed, "fitted at the true degree")}
    if auto:
        summary["auto_degree"] = summarise(auto, "fitted with degree 'auto' (evidence, 3-8)")
    summary["wall_seconds"] = time.perf_counter() - t0
    print(f"\ntotal wall time {summary['wall_seconds']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
