"""Benchmark: map error of our posterior mean versus the peers a team would run, on the same points.

The same identified positions (a simulated METIS IMG_LM lab campaign: FP mask #5, 10
dithered exposures, hole errors ``--hole-um`` rms, centroid noise 0.005-0.03 px; a
polynomial field of the degree fitted) are fitted

* by ``fit_joint`` at the true degree (posterior mean of the field), as ``astrocal fit`` runs it;
* **the headline peer** (``wls``): a weighted linear least-squares self-calibration of the
  same Legendre polynomial, what a competent team calibrating a mask without astrocal would
  run (``bench_foreign_coverage.peer_fit`` with ``conformal_quadratic=True``, its ``peer_q``):
  free per-exposure similarity poses (scale, rotation, translation; the reference exposure
  fixed at the identity plus its commanded offset), a free error per hole with the six
  affine and the two conformal-quadratic hole-error patterns constrained to zero (the
  patterns the poses and the field's affine part cannot tell from the holes), weights from
  the stated centroid covariances. Its own 1-sigma is the formal covariance of the
  coefficients (and the same scaled by ``sqrt(chi2/dof)``);
* (secondary, the former headline) ``astropy.wcs.utils.fit_wcs_from_points(xy, world,
  proj_point=(0, 0), projection="TAN", sip_degree=degree)``, with the world coordinates of
  every spot = nominal mask position of its hole + the commanded offset of its exposure
  (unweighted, no per-exposure terms, the commanded offsets taken as exact: not what anyone
  calibrating a mask would do), and the same on the reference exposure alone.

  Pixel convention: the docstring of ``fit_wcs_from_points`` asks for 1-based pixels, but
  (astropy 8.0.2) its SIP branch mixes 0- and 1-based positions (``all_world2pix(..., 0)``
  against a 1-based CRPIX; see astropy PR #20383, open), so a WCS fitted to 1-based pixels
  and evaluated 1-based is off by exactly one pixel (5.46 mas).  We pass 0-based pixels and
  evaluate with ``origin=0``, the self-consistent use that reproduces its input points.

All maps are compared with the truth in the fit's gauge (``gauge_truth``) over a 33x33 grid
of pixel centres spanning the detector: rms map error per component (mas), the same with
the best affine map removed from each error map (the frame choices, which an affine can
absorb: the peer takes the mask's nominal scale and shears as exact, astrocal samples
them), and the ratios ours / peer. The map's 68 % / 95 % intervals (ours: the posterior's
quantiles; the peer: +-1 / +-1.96 of its formal sigma) are checked against the truth at
the grid's pixels inside the data footprint. Target (issue 17): ours <= 1.0 of the WLS
peer's on the polynomial family (here) and <= 0.7 on fields outside it
(``bench_foreign_coverage.py``, ``ratio_to_peer_q``).

Cost (issue 21): both fits are timed the same way (wall and CPU time of the call, best of
``--timing-repeats``, BLAS on ``--blas-threads`` for both) and the summary prints astrocal's
cost as a multiple of the WLS peer's, and of the WLS peer choosing its degree by BIC among
3-8 (``wls_bic``); ``--ours-degree auto`` lets astrocal choose its degree from the evidence
as ``astrocal fit`` does by default.  Use ``--processes 1`` for the timings.

Run:    python benchmarks/bench_model_peer.py --degrees 3 5 7 --seeds 5 --processes 2 \
            --out benchmarks/results/peer.json
Cost:   python benchmarks/bench_model_peer.py --degrees 3 5 7 --seeds 3 --processes 1 \
            --out benchmarks/results/peer_cost.json
Quick:  python benchmarks/bench_model_peer.py --degrees 3 --seeds 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model_coverage import (detector_grid, gauge_truth, interval_hits, make_campaign,  # noqa: E402
                                  quiet_logs, remove_affine, rms2)
from bench_foreign_coverage import peer_fit, peer_map  # noqa: E402

import numpy as np  # noqa: E402


def tangent_wcs():
    """Plain TAN WCS at (0, 0): 'pixel' coordinates = tangent-plane arcsec (0-based origin)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [0.0, 0.0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [1.0 / 3600, 1.0 / 3600]
    w.wcs.cunit = ["deg", "deg"]
    return w


def astropy_fit(pts, degree):
    """fit_wcs_from_points on nominal + commanded positions; returns (wcs, seconds)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import fit_wcs_from_points

    ref = tangent_wcs()
    world = pts.hole_xy[pts.hole] + pts.offsets[pts.exposure]  # arcsec
    lon, lat = ref.wcs_pix2world(world[:, 0], world[:, 1], 0)
    sky = SkyCoord(lon * u.deg, lat * u.deg, frame="icrs")
    t0 = time.perf_counter()
    w = fit_wcs_from_points((pts.x, pts.y), sky,  # 0-based: see the module docstring
                            proj_point=SkyCoord(0 * u.deg, 0 * u.deg, frame="icrs"),
                            projection="TAN", sip_degree=int(degree))
    return w, time.perf_counter() - t0


def astropy_map(w, x, y):
    """The astropy WCS as a map pixel (0-based) -> tangent-plane arcsec."""
    ref = tangent_wcs()
    lon, lat = w.all_pix2world(x, y, 0)
    u, v = ref.wcs_world2pix(lon, lat, 0)
    return u, v


def timed(func, repeats):
    """Best wall time of ``repeats`` calls, the CPU time of that call, and its result; the
    same for astrocal and the WLS peer."""
    best = (np.inf, np.inf, None)
    for _ in range(max(1, int(repeats))):
        t0, c0 = time.perf_counter(), time.process_time()
        out = func()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu, out)
    return best


def wls_bic(pts, degrees=range(3, 9)):
    """The WLS peer choosing its own degree by BIC (what a team without the true degree
    would run; the counterpart of ``degree="auto"``): the fit at the chosen degree."""
    fits = [peer_fit(pts.x, pts.y, pts.cov, pts.exposure, pts.hole, pts.hole_xy, pts.offsets, n,
                     conformal_quadratic=True) for n in degrees]
    return min(fits, key=lambda f: f["chi2"] + f["n_params"] * np.log(f["n_obs"]))


def run_one(task):
    quiet_logs()
    from threadpoolctl import threadpool_limits

    from astrocal.model.inference import FitSettings, fit_joint

    seed, degree, a = task["seed"], task["degree"], task["args"]
    truth, pts, _ = make_campaign(seed, degree, corner_px=3.0, hole_error_um=a["hole_um"],
                                  sigma_px=(0.005, 0.03), rotation_deg=0.2)
    ours_degree = degree if a["ours_degree"] == "true" else "auto"
    reps = a["timing_repeats"]
    # the same timing for both: wall and CPU time of the call (best of `reps`), BLAS on
    # `blas_threads` threads for both
    with threadpool_limits(a["blas_threads"], "blas"):
        ours_s, ours_cpu, fit = timed(
            lambda: fit_joint(pts, FitSettings(degree=ours_degree, seed=seed + 1, progress=False)), reps)
        peer_s, peer_cpu, peer = timed(
            lambda: peer_fit(pts.x, pts.y, pts.cov, pts.exposure, pts.hole, pts.hole_xy, pts.offsets,
                             degree, conformal_quadratic=True), reps)
        bic_s, bic_cpu, pbic = timed(lambda: wls_bic(pts), reps)
        w, astro_s = astropy_fit(pts, degree)
        w0, _ = astropy_fit(pts.subset(pts.exposure == 0), degree)
    gt = gauge_truth(truth, pts.hole_ids)
    x, y = detector_grid(33)
    ut, vt = gt.field(x, y)
    uo, vo = fit.mean_field()(x, y)
    up, vp, sup, svp = peer_map(peer, x, y)
    ub, vb, _, _ = peer_map(pbic, x, y)
    inside = np.asarray(fit.inside_footprint(x, y), bool)
    # interval coverage inside the footprint: ours (posterior quantiles), the peer's formal sigma
    su, sv = fit.field_samples(x, y)
    in68, in95 = interval_hits(np.hstack([su, sv]), np.concatenate([ut, vt]))
    sel = np.tile(inside, 2)
    zp = np.concatenate([(up - ut) / sup, (vp - vt) / svp])[sel]
    scale = np.sqrt(peer["chi2"] / peer["dof"])
    ua, va = astropy_map(w, x, y)
    u0, v0 = astropy_map(w0, x, y)
    # the astropy fit's own residuals at the points (how well it fits its input), mas
    ra = np.column_stack(astropy_map(w, pts.x, pts.y)) - (pts.hole_xy[pts.hole] + pts.offsets[pts.exposure])
    rec = {"seed": seed, "degree": degree, "n_points": int(pts.n_points),
           "ours_degree": int(fit.degree), "ours_degree_setting": str(ours_degree),
           "ours_seconds": ours_s, "ours_cpu_seconds": ours_cpu, "astropy_seconds": astro_s,
           "wls_cpu_seconds": peer_cpu, "wls_bic_seconds": bic_s, "wls_bic_cpu_seconds": bic_cpu,
           "wls_bic_degree": int(pbic["degree"]), "wls_bic_rms_mas": 1e3 * rms2(ub - ut, vb - vt),
           "ours_rms_mas": 1e3 * rms2(uo - ut, vo - vt),
           "astropy_rms_mas": 1e3 * rms2(ua - ut, va - vt),
           "ours_rms_noaffine_mas": 1e3 * rms2(*remove_affine(x, y, uo - ut, vo - vt)),
           "astropy_rms_noaffine_mas": 1e3 * rms2(*remove_affine(x, y, ua - ut, va - vt)),
           "astropy_ref_rms_mas": 1e3 * rms2(u0 - ut, v0 - vt),
           "astropy_ref_rms_noaffine_mas": 1e3 * rms2(*remove_affine(x, y, u0 - ut, v0 - vt)),
           "ours_sigma_rms_mas": 1e3 * rms2(*fit.map_uncertainty(x, y)),
           "astropy_point_residual_rms_mas": 1e3 * rms2(ra[:, 0], ra[:, 1]),
           "wls_seconds": peer_s,
           "wls_rms_mas": 1e3 * rms2(up - ut, vp - vt),
           "wls_rms_noaffine_mas": 1e3 * rms2(*remove_affine(x, y, up - ut, vp - vt)),
           "wls_sigma_rms_mas": 1e3 * rms2(sup, svp),
           "wls_chi2_dof": float(peer["chi2"] / peer["dof"]),
           "ours_in68": float(in68[sel].mean()), "ours_in95": float(in95[sel].mean()),
           "wls_in68": float(np.mean(np.abs(zp) <= 1.0)), "wls_in95": float(np.mean(np.abs(zp) <= 1.959964)),
           "wls_in68_scaled": float(np.mean(np.abs(zp / scale) <= 1.0)),
           "wls_in95_scaled": float(np.mean(np.abs(zp / scale) <= 1.959964))}
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--degrees", type=int, nargs="+", default=[3, 5, 7])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=300)
    ap.add_argument("--hole-um", type=float, default=0.5)
    ap.add_argument("--processes", type=int, default=2,
                    help="campaigns fitted in parallel (timings: use 1 on a shared machine)")
    ap.add_argument("--ours-degree", choices=["true", "auto"], default="true",
                    help="astrocal at the true degree (like the WLS peer) or choosing it from the "
                         "evidence as `astrocal fit` does by default")
    ap.add_argument("--timing-repeats", type=int, default=1,
                    help="timing of both astrocal and the WLS peer: best of N calls")
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads, for both")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    a = {"hole_um": args.hole_um, "ours_degree": args.ours_degree,
         "timing_repeats": args.timing_repeats, "blas_threads": args.blas_threads}
    tasks = [{"seed": args.first_seed + 10 * d + k, "degree": d, "args": a}
             for d in args.degrees for k in range(args.seeds)]
    if args.processes > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(args.processes) as pool:
            recs = pool.map(run_one, tasks, chunksize=1)
    else:
        recs = [run_one(t) for t in tasks]
    print(f"map error vs truth (rms per component over a 33x33 pixel grid, mas; 1 px = 5.47 mas); "
          f"hole errors {args.hole_um} um, 10 dithered exposures; the peers at the true degree, "
          f"astrocal at {'the true degree' if args.ours_degree == 'true' else 'the degree it chooses'}")
    print(f"{'deg':>3s} {'seed':>5s} | {'ours':>7s} {'WLS':>7s} {'ratio':>6s} | {'ours-aff':>8s} {'WLS-aff':>8s} "
          f"{'ratio':>6s} | 68% in: {'ours':>5s} {'WLS':>5s} {'WLSsc':>5s} | {'astropy':>8s} {'ratio':>6s} "
          f"{'ref-only':>8s} {'ratio':>6s}")
    for r in recs:
        print(f"{r['degree']:3d} {r['seed']:5d} | {r['ours_rms_mas']:7.3f} {r['wls_rms_mas']:7.3f} "
              f"{r['ours_rms_mas'] / r['wls_rms_mas']:6.3f} | {r['ours_rms_noaffine_mas']:8.3f} "
              f"{r['wls_rms_noaffine_mas']:8.3f} {r['ours_rms_noaffine_mas'] / r['wls_rms_noaffine_mas']:6.3f} | "
              f"        {r['ours_in68']:5.2f} {r['wls_in68']:5.2f} {r['wls_in68_scaled']:5.2f} | "
              f"{r['astropy_rms_mas']:8.3f} {r['ours_rms_mas'] / r['astropy_rms_mas']:6.3f} "
              f"{r['astropy_ref_rms_mas']:8.3f} {r['ours_rms_mas'] / r['astropy_ref_rms_mas']:6.3f}")
    summ = {}
    for d in args.degrees:
        rs = [r for r in recs if r["degree"] == d]

        def ratio(a, b):
            return float(np.mean([r[a] for r in rs]) / np.mean([r[b] for r in rs]))

        summ[d] = {"ratio_wls_full": ratio("ours_rms_mas", "wls_rms_mas"),
                   "ratio_wls_noaffine": ratio("ours_rms_noaffine_mas", "wls_rms_noaffine_mas"),
                   "worst_wls_full": max(r["ours_rms_mas"] / r["wls_rms_mas"] for r in rs),
                   "ours_in68": float(np.mean([r["ours_in68"] for r in rs])),
                   "ours_in95": float(np.mean([r["ours_in95"] for r in rs])),
                   "wls_in68": float(np.mean([r["wls_in68"] for r in rs])),
                   "wls_in95": float(np.mean([r["wls_in95"] for r in rs])),
                   "wls_in68_scaled": float(np.mean([r["wls_in68_scaled"] for r in rs])),
                   "wls_in95_scaled": float(np.mean([r["wls_in95_scaled"] for r in rs])),
                   "ratio_astropy_full": ratio("ours_rms_mas", "astropy_rms_mas"),
                   "ratio_astropy_noaffine": ratio("ours_rms_noaffine_mas", "astropy_rms_noaffine_mas"),
                   "ratio_ref_only_full": ratio("ours_rms_mas", "astropy_ref_rms_mas"),
                   "ratio_wls_bic_full": ratio("ours_rms_mas", "wls_bic_rms_mas"),
                   "ours_seconds": float(np.mean([r["ours_seconds"] for r in rs])),
                   "ours_cpu_seconds": float(np.mean([r["ours_cpu_seconds"] for r in rs])),
                   "wls_seconds": float(np.mean([r["wls_seconds"] for r in rs])),
                   "wls_cpu_seconds": float(np.mean([r["wls_cpu_seconds"] for r in rs])),
                   "wls_bic_seconds": float(np.mean([r["wls_bic_seconds"] for r in rs])),
                   "cost_ours_over_wls": ratio("ours_seconds", "wls_seconds"),
                   "cost_ours_over_wls_cpu": ratio("ours_cpu_seconds", "wls_cpu_seconds"),
                   "cost_ours_over_wls_bic": ratio("ours_seconds", "wls_bic_seconds")}
        m = summ[d]
        print(f"degree {d}: ours/WLS {m['ratio_wls_full']:.3f} (full map), {m['ratio_wls_noaffine']:.3f} "
              f"(affine removed), worst {m['worst_wls_full']:.3f} [target <= 1.0]; 68/95 % inside the "
              f"footprint: ours {m['ours_in68']:.2f}/{m['ours_in95']:.2f}, WLS formal {m['wls_in68']:.2f}/"
              f"{m['wls_in95']:.2f} (scaled by sqrt(chi2/dof) {m['wls_in68_scaled']:.2f}/{m['wls_in95_scaled']:.2f}); "
              f"ours/astropy {m['ratio_astropy_full']:.3f}, ours/astropy ref-only {m['ratio_ref_only_full']:.3f}")
    print(f"\nfit cost, the same timing for both (wall and CPU time of the call, best of "
          f"{args.timing_repeats}; BLAS on {args.blas_threads} thread(s); {args.processes} campaign(s) "
          f"at a time on {os.cpu_count()} shared cores):")
    for d in args.degrees:
        m = summ[d]
        print(f"degree {d}: ours {m['ours_seconds']:.2f} s ({m['ours_cpu_seconds']:.2f} s CPU; full "
              f"posterior) vs WLS {1e3 * m['wls_seconds']:.1f} ms ({1e3 * m['wls_cpu_seconds']:.1f} ms CPU; "
              f"point estimate + formal covariance): ours costs {m['cost_ours_over_wls']:.0f}x the WLS fit "
              f"({m['cost_ours_over_wls_cpu']:.0f}x in CPU time); WLS choosing its degree by BIC over 3-8: "
              f"{1e3 * m['wls_bic_seconds']:.0f} ms ({m['cost_ours_over_wls_bic']:.0f}x), its map error "
              f"ours/WLS-BIC {m['ratio_wls_bic_full']:.3f}")
    print(f"astropy fit_wcs_from_points: {np.mean([r['astropy_seconds'] for r in recs]):.2f} s (mean)")
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    print(f"total wall time {wall:.0f} s; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)},
                                        "records": recs, "summary": summ, "wall_seconds": wall,
                                        "load_start": load0, "load_end": load1},
                                       indent=1, default=str))


if __name__ == "__main__":
    main()
