"""Benchmark: the LMS fit's recovered geometry and the coverage of its intervals, over N campaigns.

For each of ``--campaigns`` campaigns (seeds from ``--first-seed``):

* ``--level points`` (default, fast): the measured tables are drawn straight from a truth
  geometry (:func:`astrocal.sim.lms_points.simulate_lms_points`: spots 0.015 px, traces
  0.02 px, edges 0.004 px, 1-mas chopper errors, 0.035 px of spot shift along the dispersion
  per mas across the slice) and fitted with :func:`astrocal.lms.fit.fit_lms`;
* ``--level frames``: ``astrocal simulate lms`` writes the frames (noise, PSF, neighbours,
  chopper errors), ``astrocal measure`` measures them and ``astrocal fit``'s LMS fit
  (:func:`astrocal.lms.fit_campaign.fit_lms_campaign`) fits them, in a temporary directory.

``--extra AMP`` adds to the truth a smooth term that the model's polynomials do not hold
(:class:`astrocal.lms.SliceWaves`, in the truth geometry; at the frames level ``simulate lms
--slice-waves AMP``): per slice ``(dcol, drow) = AMP * (a_s sin(3 pi w / 2 + phi_s), b_s sin(5
xi_n))`` with ``a_s, b_s ~ N(0, 1)`` (``w`` the wavelength normalised over the setting, ``xi_n =
xi / 0.4485``). ``--residual-m M`` gives the fit the per-slice residual beyond the polynomial
(:class:`astrocal.lms.DeviationLayout` ``residual_m``: a reduced-rank Matérn-5/2 field, M x M
functions per slice and axis, rms and lengths sampled; ``--residual-prior ard``, the default:
per axis an rms and a length per dimension, ``isotropic``: one rms and one length;
``--residual-boundary C`` the eigenfunctions' box, default the layout's).

``--hole-error-um U`` (points level) gives the mask's holes manufacturing errors ``N(0, U**2)``
[um] per hole and axis (the truth), and ``--hole-prior`` says what the fit knows of them:
``none`` (the table's positions exact: the fit before the joint), ``tolerance`` (independent
``N(0, U**2)``: the campaign default) or ``imager`` (an imager-like posterior of every hole the
LMS sees: the truth plus ``N(0, S**2)`` as its mean and ``S**2 I`` as its covariance,
``--imager-sd-um S``, drawn from seed 20000 + seed; or, with ``--imager-result DIR``, a real
imager fit's posterior read by :func:`astrocal.lms.hole_prior.read_imager_hole_posterior`, the
truth then the table ``--hole-errors-from`` of its simulation). At the frames level the hole errors
are simulated by ``astrocal simulate lms`` (``--hole-error-um``; with ``--imager-lab`` the lab
campaign's table, ``--hole-errors-from``) and the fit's prior set through the campaign's ``[lms]
hole_error_um`` / ``hole_errors_from``; ``--frames-dir DIR`` keeps the measured campaigns for the
other priors. ``--imager-lab DIR`` does the
joint end to end: per campaign a lab campaign of the imager through the same mask
(:func:`astrocal.sim.points_campaign.write_points_campaign`, seed 30000 + seed, METIS LM, 10
exposures, hole errors ``--hole-error-um``), fitted by ``astrocal fit`` (degree 5) into
``DIR/lab_<seed>`` (kept: the three ``--hole-prior`` runs share it); its true hole errors are the
LMS truth's and its posterior is the ``imager`` prior. The JSON line adds the rms error and the
z rms of the fitted hole errors along x and y (mask axes: x along the slices).

The fitted geometry is compared with the truth at 60 random (xi, lam) per slice and setting
(:func:`astrocal.sim.lms_points.compare_with_truth`): the rms error of (col, row) [px], over all
slices and over the slices with laser spots, and the fraction of points whose truth lies in
the central 68 / 95 % interval of the posterior draws. One JSON line per campaign goes to
``--out`` (JSONL) as it finishes; the end prints the aggregates, each figure against its target
(0.02 px rms; coverage 68 +- 3 / 95 +- 2 %) with the ratio.

    python benchmarks/bench_lms_coverage.py --campaigns 20 --offsets 12 --across 6 --out results/lms_cov.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from astropy.table import Table

from astrocal.sim.lms_truth import QCL_LINES_UM


def _waves(amp, seed):
    """The non-polynomial truth term of campaign ``seed`` (:class:`astrocal.lms.SliceWaves`, its
    amplitudes and phases from seed 10000 + seed), or None."""
    from astrocal.lms import SliceWaves

    return SliceWaves.draw(np.random.default_rng(10_000 + seed), amp) if amp else None


def run_points(seed, args):
    from astrocal.lms.fit import LmsFitSettings, fit_lms
    from astrocal.sim.lms_points import compare_with_truth, simulate_lms_points
    from astrocal.sim.lms_truth import draw_lms_geometry

    from astrocal.lms import DeviationLayout, LmsGeometry

    truth = draw_lms_geometry(tuple(args.settings), np.random.default_rng(seed))
    truth = LmsGeometry(truth.layout, truth.params, truth.truth, _waves(args.extra, seed))
    kw = {} if args.residual_boundary is None else {"residual_boundary": args.residual_boundary}
    layout = DeviationLayout(truth.layout.settings, degree=truth.layout.degree, residual_m=args.residual_m, **kw)
    c = simulate_lms_points(tuple(args.settings), seed=seed, truth=truth, n_offsets=args.offsets,
                            max_across_slices=args.across, grid_all_offsets=not args.grid_first_only,
                            lines_um=tuple(args.lines), hole_error_um=args.hole_error_um,
                            hole_errors_um=_hole_table(args, seed))
    holes = _hole_prior(c, seed, args)
    fit = fit_lms(c.data, layout, c.terms, LmsFitSettings(steps=args.steps, walkers=args.walkers, seed=seed,
                                                          n_draws=args.draws, across_px_per_mas=args.fit_across,
                                                          min_steps=min(args.steps, 300), holes=holes,
                                                          residual_ard=args.residual_prior == "ard",
                                                          sample_across=not args.fixed_across))
    fit.hole_truth = c
    lit = {e: np.unique(c.data["spots"]["slice"][c.data["spots"]["setting"] == e]) for e in range(len(args.settings))}
    return fit, compare_with_truth(fit, truth, n_per_slice=60, seed=seed), lit


def _imager_lab(seed, args):
    """(true hole table, imager fit directory) of campaign ``seed``'s imager lab campaign under
    ``--imager-lab``, written and fitted unless already there."""
    import subprocess

    from astrocal.sim.points_campaign import write_points_campaign

    d = Path(args.imager_lab) / f"lab_{seed}"
    done = list(d.glob("out/*/manifest.json"))
    if not done:
        camp, _, _ = write_points_campaign(d, seed=30_000 + seed, hole_error_um=args.hole_error_um or 0.5,
                                           fit_degree=5, overwrite=True)
        subprocess.run([sys.executable, "-m", "astrocal", "fit", str(camp), "--overwrite"], check=True,
                       stdout=subprocess.DEVNULL)
        done = list(d.glob("out/*/manifest.json"))
    return d / "truth" / "holes.ecsv", done[0].parent


def _hole_table(args, seed=None):
    """The true hole errors (N, 2) [um] of the mask from ``--hole-errors-from`` or the imager
    lab campaign (None: drawn)."""
    path = args.hole_errors_from
    if args.imager_lab is not None:
        path = _imager_lab(seed, args)[0]
    if path is None:
        return None
    from astropy.table import Table

    from astrocal.lab.mask import load_mask, mask_path

    t = Table.read(path, format="ascii.ecsv")
    row = {int(h): k for k, h in enumerate(t["hole_id"])}
    k = [row[int(h)] for h in load_mask(mask_path("metis_wcu_fp_mask5")).hole_id]
    return np.stack([np.asarray(t["dx_um"], float)[k], np.asarray(t["dy_um"], float)[k]], axis=1)


def _hole_prior(c, seed, args):
    """The fit's hole-error prior of ``--hole-prior`` for the holes the campaign's data see."""
    from astrocal.lms.fit import data_holes
    from astrocal.lms.hole_prior import HolePrior, lms_hole_prior, read_imager_hole_posterior

    if args.hole_prior == "none":
        return None
    ids = data_holes(c.data)
    sigma = args.hole_error_um or 0.5
    if args.hole_prior == "tolerance":
        return lms_hole_prior(ids, sigma)
    result = _imager_lab(seed, args)[1] if args.imager_lab is not None else args.imager_result
    if result is not None:
        from astrocal.lab.mask import load_mask, mask_path

        return lms_hole_prior(ids, sigma, read_imager_hole_posterior(result, load_mask(mask_path("metis_wcu_fp_mask5"))))
    where = {int(h): k for k, h in enumerate(c.hole_ids)}
    true = c.hole_errors_um[[where[int(h)] for h in ids]]
    rng = np.random.default_rng(20_000 + seed)
    sd = args.imager_sd_um
    return HolePrior(ids, true + rng.normal(0.0, sd, true.shape), sd**2 * np.eye(2 * len(ids)),
                     {"kind": "imager", "synthetic_sd_um": sd})


def _hole_scores(fit):
    """rms error [um] and z rms of the fitted hole errors along x and y, or None."""
    c = getattr(fit, "hole_truth", None)
    if fit.holes is None or c is None:
        return None
    where = {int(h): k for k, h in enumerate(c.hole_ids)}
    true = c.hole_errors_um[[where[int(h)] for h in fit.holes.prior.hole_ids]]
    hs = fit.hole_samples
    err = hs.mean(axis=0) - true
    z = err / hs.std(axis=0, ddof=1)
    return {"rms_um": np.sqrt(np.mean(err**2, axis=0)).tolist(), "z_rms": np.sqrt(np.mean(z**2, axis=0)).tolist(),
            "n_holes": int(len(true))}


def run_frames(seed, args):
    from astrocal.campaign import load_campaign
    from astrocal.stages.measure import measure_campaign
    from astrocal.lms.fit_campaign import fit_lms_campaign
    from astrocal.sim.lms import LmsSimSettings, simulate_lms
    from astrocal.sim.lms_points import compare_with_truth
    from astrocal.sim.lms_truth import load_lms_truth

    with tempfile.TemporaryDirectory(prefix="bench_lms_") as tmp:
        out = Path(args.frames_dir) / f"lms_{seed}" if args.frames_dir else Path(tmp) / "camp"
        if not (out / "measured" / "summary.ecsv").exists():
            holes = dict(hole_errors=bool(args.hole_error_um or args.imager_lab), hole_error_um=args.hole_error_um or 0.5)
            if args.imager_lab is not None:
                holes["hole_errors_from"] = str(_imager_lab(seed, args)[0])
            simulate_lms(out, LmsSimSettings(seed=seed, settings_um=tuple(args.settings), n_offsets=args.offsets,
                                             max_across_slices=args.across, grid_all_offsets=not args.grid_first_only,
                                             qcl_lines_um=tuple(args.lines), slice_waves_px=args.extra, **holes),
                         overwrite=True)
            report = measure_campaign(out / "campaign.toml")
            if report.n_failed:
                raise RuntimeError(f"seed {seed}: {report.n_failed} frame(s) failed to measure")
        # the fit's hole prior through the campaign's keys, one result directory per prior
        text = (out / "campaign.toml").read_text().replace('output = "out/"', f'output = "out_{args.hole_prior}/"')
        key = {"none": "hole_error_um = 0.0\n", "tolerance": ""}.get(args.hole_prior)
        if key is None:
            result = _imager_lab(seed, args)[1] if args.imager_lab is not None else args.imager_result
            key = f'hole_errors_from = "{Path(result).resolve()}"\n'
        text = "\n".join(line for line in text.splitlines() if not line.startswith("hole_error_um")) + "\n"
        text = text.replace("[lms]\n", "[lms]\n" + key + ("" if key.startswith("hole_error_um") else
                                                          f"hole_error_um = {args.hole_error_um or 0.5}\n"), 1)
        camp = out / f"campaign_{args.hole_prior}.toml"
        camp.write_text(text)
        fit, _ = fit_lms_campaign(load_campaign(camp), steps=args.steps, walkers=args.walkers, seed=seed,
                                  progress=False, map_step=16, overwrite=True)   # products' images coarse: not used here
        truth_holes = Table.read(out / "truth" / "holes.ecsv", format="ascii.ecsv")
        fit.hole_truth = SimpleNamespace(hole_ids=np.asarray(truth_holes["hole_id"]),
                                         hole_errors_um=np.stack([truth_holes["dx_um"], truth_holes["dy_um"]], axis=1))
        spots = fit.data["spots"]
        lit = {e: np.unique(spots["slice"][(spots["setting"] == e) & (spots["flags"] == 0)])
               for e in range(len(args.settings))}
        return fit, compare_with_truth(fit, load_lms_truth(out), n_per_slice=60, seed=seed), lit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--campaigns", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--level", choices=("points", "frames"), default="points")
    ap.add_argument("--settings", type=float, nargs="+", default=[4.73])
    ap.add_argument("--lines", type=float, nargs="+", default=list(QCL_LINES_UM),
                    help="laser lines lit [um] (default: the simulator's, the QCL's 4.68-4.78 in 0.01 steps)")
    ap.add_argument("--offsets", type=int, default=12, help="chopper offsets per setting (default 12)")
    ap.add_argument("--across", type=int, default=6, help="largest offset across, in slices (default 6: all 28 slices)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--walkers", type=int, default=16)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--extra", type=float, default=0.0, help="amplitude [px] of a non-polynomial truth term (SliceWaves; default 0: none)")
    ap.add_argument("--fit-across", type=float, default=0.05,
                    help="the fit's across_px_per_mas (points level; default 0.05 as a campaign's; the truth is 0.035)")
    ap.add_argument("--fixed-across", action="store_true",
                    help="points level: the fit's across_px_per_mas fixed (the fit before 2026-12-07) instead of "
                    "sampled with --fit-across as its start")
    ap.add_argument("--residual-m", type=int, default=0,
                    help="the fit's per-slice residual beyond the polynomial: eigenfunctions per dimension (0: none)")
    ap.add_argument("--residual-prior", choices=("ard", "isotropic"), default="ard",
                    help="points level: the residual's prior, per axis an rms and a length per dimension (ard, the "
                    "default) or one rms and one length (isotropic)")
    ap.add_argument("--residual-boundary", type=float, default=None,
                    help="points level: the residual's eigenfunction box factor (default: DeviationLayout's)")
    ap.add_argument("--grid-first-only", action="store_true",
                    help="black-body grid frames at the first offset only (points level; default: at every offset)")
    ap.add_argument("--hole-error-um", type=float, default=0.0,
                    help="truth: rms of the mask holes' manufacturing errors per axis, um (points level; default 0)")
    ap.add_argument("--hole-errors-from", default=None,
                    help="truth: the hole errors from this table (truth/holes.ecsv of 'simulate lab'; points level)")
    ap.add_argument("--hole-prior", choices=("none", "tolerance", "imager"), default="none",
                    help="the fit's prior of the hole errors (points level; default none: the table exact)")
    ap.add_argument("--imager-sd-um", type=float, default=0.1,
                    help="sd of the synthetic imager posterior of each hole, um (--hole-prior imager; default 0.1)")
    ap.add_argument("--imager-result", default=None,
                    help="a real imager fit's output directory for --hole-prior imager (instead of the synthetic one)")
    ap.add_argument("--frames-dir", default=None, metavar="DIR",
                    help="frames level: keep the simulated and measured campaigns in DIR/lms_<seed> and reuse them "
                    "(one result directory out_<hole prior> per --hole-prior; default: a temporary directory)")
    ap.add_argument("--imager-lab", default=None, metavar="DIR",
                    help="the joint end to end: per campaign an imager lab campaign (points) through the same mask, "
                    "fitted by astrocal fit into DIR/lab_<seed> (kept), its hole errors the truth, its posterior the prior")
    ap.add_argument("--out", type=Path, default=None, help="JSONL file, one line per campaign")
    ap.add_argument("--summarise", action="store_true",
                    help="print the aggregates of the campaigns already in --out, run none")
    args = ap.parse_args(argv)
    rows = []
    if args.summarise:
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        args.campaigns = 0
    for seed in range(args.first_seed, args.first_seed + args.campaigns):
        t0 = time.perf_counter()
        fit, r, lit = (run_points if args.level == "points" else run_frames)(seed, args)
        m = np.zeros(len(r["slice"]), bool)
        for e, sl in lit.items():
            m |= (r["setting"] == e) & np.isin(r["slice"], sl)
        row = {"seed": seed, "level": args.level, "extra": args.extra, "fit_across": args.fit_across, "seconds": time.perf_counter() - t0,
               "rms": r["rms"].tolist(), "rms_lit": np.sqrt(np.mean(r["err"][m] ** 2, axis=0)).tolist(),
               "sd_rms": np.sqrt(np.mean(r["sd"] ** 2, axis=0)).tolist(), "n_lit_slices": int(sum(map(len, lit.values()))),
               "coverage68": r["coverage68"].tolist(), "coverage95": r["coverage95"].tolist(),
               "z_rms": np.sqrt(np.mean((r["err"] / r["sd"]) ** 2, axis=0)).tolist(),
               "tau_px": float(np.median(np.exp(fit.phi_samples[:, 0]))), "residual_m": args.residual_m,
               "residual_prior": args.residual_prior if args.residual_m else None,
               "residual_boundary": fit.layout.residual_boundary if args.residual_m else None,
               "offsets": args.offsets,
               "hyper_median": {n: float(np.median(np.exp(fit.phi_samples[:, k])))
                                for k, n in enumerate(fit.hyper_names)},
               "hole_error_um": args.hole_error_um, "hole_prior": args.hole_prior,
               "imager_sd_um": (args.imager_sd_um if args.hole_prior == "imager" and not (args.imager_lab or args.imager_result)
                                else None),
               "imager_lab": args.imager_lab is not None,
               "holes": _hole_scores(fit),
               "n_steps": int(fit.phi_chain.shape[0]) if fit.phi_chain is not None else None,
               "converged": bool(fit.diagnostics.converged) if fit.diagnostics is not None else None,
               "tau_max": (float(np.nanmax(fit.diagnostics.tau)) if fit.diagnostics is not None
                           and fit.diagnostics.tau is not None else None),
               "acceptance": (float(fit.diagnostics.acceptance) if fit.diagnostics is not None else None),
               "sample_across": bool(getattr(fit.settings, "sample_across", False))}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    n = len(rows)
    arr = {k: np.array([r[k] for r in rows]) for k in ("rms", "rms_lit", "coverage68", "coverage95", "z_rms")}
    conv = [r.get("converged") for r in rows]
    print(f"\n{args.out}: chains converged (>= 50 tau, >= target effective samples) in {sum(bool(c) for c in conv)} "
          f"of {n}; median {np.median([r['seconds'] for r in rows]):.1f} s per campaign")
    if args.summarise:
        r0 = rows[0]
        print(f"{n} campaigns (as run; seeds {min(r['seed'] for r in rows)}-{max(r['seed'] for r in rows)}, "
              f"{r0.get('offsets', '?')} offsets, extra {r0['extra']} px, fit across_px_per_mas {r0['fit_across']}, "
              f"residual_m {r0.get('residual_m', 0)})")
    else:
        print(f"\n{n} campaigns ({args.level}, settings {args.settings}, {args.offsets} offsets, across +-{args.across}, "
              f"extra {args.extra} px, fit across_px_per_mas {args.fit_across}, residual_m {args.residual_m}, "
              f"hole errors {args.hole_error_um} um, hole prior {args.hole_prior})")
    for ax, name in enumerate(("col", "row")):
        rms = float(np.sqrt(np.mean(arr["rms"][:, ax] ** 2)))
        lit = float(np.sqrt(np.mean(arr["rms_lit"][:, ax] ** 2)))
        c68, c95 = arr["coverage68"][:, ax], arr["coverage95"][:, ax]
        se68, se95 = c68.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan, c95.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        print(f"{name}: rms error {rms:.4f} px (slices with laser spots {lit:.4f}) vs target 0.02 px: ratio "
              f"{rms / 0.02:.2f} ({lit / 0.02:.2f}); coverage 68 %: {100 * c68.mean():.1f} +- {100 * se68:.1f} % "
              f"(ratio to 68: {c68.mean() / 0.68:.3f}); 95 %: {100 * c95.mean():.1f} +- {100 * se95:.1f} % "
              f"(ratio to 95: {c95.mean() / 0.95:.3f}); z rms {np.sqrt(np.mean(arr['z_rms'][:, ax] ** 2)):.2f}")
    hs = [r["holes"] for r in rows if r.get("holes")]
    if hs:
        e = np.array([h["rms_um"] for h in hs])
        z = np.array([h["z_rms"] for h in hs])
        print(f"hole errors: rms error x {np.sqrt(np.mean(e[:, 0] ** 2)):.3f} um, y {np.sqrt(np.mean(e[:, 1] ** 2)):.3f} "
              f"um; z rms x {np.sqrt(np.mean(z[:, 0] ** 2)):.2f}, y {np.sqrt(np.mean(z[:, 1] ** 2)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
