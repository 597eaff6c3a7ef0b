"""Dense space fields against a Gaia-like catalogue: the match, and the on-sky scale's coverage.

Part 1 (``--fields N``, default 10): :func:`astrocal.sky.match.match_stars` on simulated
space fields of ``--sources`` (10,000) detector sources against ``--catalog`` (2,000)
catalogue stars (``benchmarks/space_fields.py``: written with numpy only; magnitudes in
another band, both parities, any rotation, scale within 5 %, an offset up to a quarter of
the field, 2 % spurious sources), as ``astrocal measure`` calls it for a star list whose
catalogue has magnitudes in any band (brightness ranks, no flux checks). Printed per field
and in all: matched fraction of the catalogue stars on the list, wrong matches (target 0),
time against the target (10 s) and their ratio; then the reverse (catalogue denser than the
list) and, for reference, the same fields with positions only (the match before brightness
ranks were used without a declared band).

Part 2 (``--coverage N``): N HST-like sky-only campaigns (``write_space_campaign``: a
Gaia-like catalogue, a third without proper motions, an hst1pass list, a header file with
the time, ORIENTAT and VAFACTOR) through ``astrocal measure`` and ``astrocal fit``, with
astrocal's default chain settings unless ``--steps``/``--walkers`` are given: the fraction
of fields whose on-sky pixel scale, and whose position angle of the detector +y axis, lie
within 1 and 2 sd of the truth (of the affine map from the true pixels to the catalogue's
tangent plane over the stars the fit used, as the fit takes it over them: its catalogue
mas per pixel and the angle of its conformal part; ``space_fields.truth_over``; also over
all catalogue stars on the list, for reference), target 68 +- 3 / 95 +- 2 % (with
N = 100 the binomial sd alone is 4.7 / 2.2 %); the chains' convergence, the fit's wall
time and the load average per field. Beside astrocal, on the same stars of the same
fields: a reference that knows the generator's exact error model (weighted least squares
of the same polynomial, ``space_fields.reference_fit``, numpy only), its coverage and the
ratio of astrocal's sd to its sd: what coverage the fields themselves allow, and how much
wider astrocal's posterior is for not knowing that the list's errors are exact (its
per-dataset jitter and centroid-error scale are free). ``--first K`` starts at field K
(seed 5000 + K); ``--quick`` times and covers ``astrocal fit --quick`` instead. Written to
``results/<--out>.json`` (summary) and ``.jsonl`` (a line per field, as each ends;
``--resume`` continues a cut run).

Run with ``nice``: ``nice -n 5 python benchmarks/bench_space_match.py --fields 10`` and
``nice -n 5 python benchmarks/bench_space_match.py --fields 0 --coverage 100``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from space_fields import reference_fit, space_field, truth_over, write_space_campaign  # noqa: E402

TARGET_S = 10.0


def match_field(f, positions_only=False):
    from astrocal.sky.match import MatchError, match_stars

    stars = Table({"x": f.xy[:, 0], "y": f.xy[:, 1]})
    ref = Table({"x": f.ref[:, 0], "y": f.ref[:, 1]})
    kw = {}
    if not positions_only:
        stars["flux"] = 10 ** (-0.4 * (f.mag - 25))
        ref["mag"] = f.ref_mag
        kw = dict(ref_mag_col="mag", mag_tolerance=None, flux_check="off")
    t0 = time.perf_counter()
    try:
        r = match_stars(stars, ref, pixel_scale_mas=f.pixel_scale_mas, detector_shape=f.shape, **kw)
    except MatchError as exc:
        return {"ok": False, "seconds": time.perf_counter() - t0, "error": str(exc)[:200]}
    dt = time.perf_counter() - t0
    n_true = int(np.count_nonzero(f.truth >= 0))
    # right: the source's own catalogue star (a pair with a blend of catalogue stars closer
    # than the blend radius is reported with the blend's brightest member, flagged: right if
    # the source's star is one of the members)
    right = np.array([f.truth[s] == q or f.truth[s] in set(m.tolist())
                      for s, q, m in zip(r.star_index, r.ref_index, r.blend_members)], bool)
    return {"ok": True, "seconds": dt, "n_true": n_true, "n_matched": int(r.n_matched),
            "wrong": int(np.count_nonzero(~right)), "wrong_unflagged": int(np.count_nonzero(~right & ~r.blend)),
            "fraction": float(np.count_nonzero(right) / max(n_true, 1))}


def part_match(args):
    rows = {}
    cases = [("list denser", args.sources, args.catalog, False), ("catalogue denser", args.catalog, args.sources, False)]
    if args.positions_only:
        cases.append(("positions only", args.sources, args.catalog, True))
    for name, ns, nc, pos in cases:
        out = []
        for k in range(args.fields if not pos else min(args.fields, 2)):
            f = space_field(np.random.default_rng(1000 + k), n_sources=ns, n_catalog=nc)
            r = match_field(f, positions_only=pos)
            out.append(r)
            print(f"  {name} field {k}: " + (f"matched {r['n_matched']} ({r['fraction']:.3f} of {r['n_true']} "
                                              f"catalogue stars on the list), wrong {r['wrong']}, {r['seconds']:.2f} s"
                                              if r["ok"] else f"FAILED in {r['seconds']:.1f} s: {r['error']}"),
                  flush=True)
        ok = [r for r in out if r["ok"]]
        t_max = max(r["seconds"] for r in out)
        print(f"{name} ({ns} sources x {nc} catalogue stars, {len(out)} fields): {len(ok)} matched; "
              f"matched fraction min {min((r['fraction'] for r in ok), default=float('nan')):.3f}, "
              f"wrong matches {sum(r['wrong'] for r in ok)} (target 0; not flagged as blends "
              f"{sum(r['wrong_unflagged'] for r in ok)}); slowest {t_max:.2f} s vs target "
              f"{TARGET_S:g} s (ratio {t_max / TARGET_S:.3f})", flush=True)
        rows[name] = out
    return rows


#: the pulls summarised: (key in the summary, column of the rows, what it is)
PULLS = (("scale", "scale_pull", "on-sky scale"), ("pa", "pa_pull", "position angle"),
         ("scale_all_listed", "scale_pull_all_listed", "on-sky scale, truth over all listed catalogue stars"),
         ("pa_all_listed", "pa_pull_all_listed", "position angle, truth over all listed catalogue stars"),
         ("scale_reference", "scale_pull_reference",
          "on-sky scale of the reference (weighted least squares, the generator's exact errors, same stars)"),
         ("pa_reference", "pa_pull_reference", "position angle of the reference (same stars)"))


def _coverage_summary(rows):
    """Coverage, pull rms, times, loads and convergence of the per-field rows."""
    out = {"n": len(rows)}
    for key, col, _ in PULLS:
        z = np.array([r[col] for r in rows if col in r], float)
        a = np.abs(z)
        out[key] = ({"n": int(z.size), "within_1sd": float(np.mean(a < 1)), "within_2sd": float(np.mean(a < 2)),
                     "pull_mean": float(np.mean(z)), "pull_rms": float(np.sqrt(np.mean(z ** 2))),
                     "max_abs_pull": float(a.max())} if z.size else None)
    ratio = [(r["scale_sd"] / r["scale_sd_reference"], r["pa_sd"] / r["pa_sd_reference"])
             for r in rows if "scale_sd_reference" in r]
    if ratio:
        out["sd_over_reference_median"] = [float(v) for v in np.median(np.array(ratio), axis=0)]
    if rows:
        fit_s = np.array([r["fit_seconds"] for r in rows])
        load = np.array([r["load_1min"] for r in rows])
        steps = np.array([r["steps"] for r in rows])
        out.update(converged=int(sum(bool(r["converged"]) for r in rows)),
                   steps_min=int(steps.min()), steps_max=int(steps.max()), walkers=sorted({r["walkers"] for r in rows}),
                   fit_seconds_median=float(np.median(fit_s)), fit_seconds_max=float(fit_s.max()),
                   load_1min_min=float(load.min()), load_1min_max=float(load.max()),
                   load_1min_mean=float(load.mean()))
    return out


def _print_coverage(s):
    if not s["n"]:
        print("no coverage field done")
        return
    for key, _, name in PULLS:
        c = s[key]
        if c is None:
            continue
        print(f"{name} coverage over {c['n']} fields: {100 * c['within_1sd']:.1f} % within 1 sd (target 68 +- 3), "
              f"{100 * c['within_2sd']:.1f} % within 2 sd (target 95 +- 2); ratios {c['within_1sd'] / 0.6827:.3f} / "
              f"{c['within_2sd'] / 0.9545:.3f}; pull mean {c['pull_mean']:+.3f}, rms {c['pull_rms']:.3f}, "
              f"largest |pull| {c['max_abs_pull']:.2f}")
    if s.get("sd_over_reference_median"):
        print("astrocal's sd over the reference's (median over fields): on-sky scale "
              f"{s['sd_over_reference_median'][0]:.3f}, position angle {s['sd_over_reference_median'][1]:.3f}")
    print(f"chains: {s['converged']}/{s['n']} converged, {s['steps_min']}-{s['steps_max']} steps x walkers "
          f"{s['walkers']}; fit {s['fit_seconds_median']:.1f} s median, {s['fit_seconds_max']:.1f} s max (wall), "
          f"load average (1 min) {s['load_1min_min']:.2f}-{s['load_1min_max']:.2f}, mean {s['load_1min_mean']:.2f}")


def part_coverage(args):
    """``--coverage N`` HST-like campaigns (seeds 5000 + k), one JSON line per field in
    ``results/<--out>.jsonl`` as it ends (``--resume`` skips the fields there), the summary
    rewritten to ``results/<--out>.json`` after every field."""
    from astrocal.cli import main

    res = Path(__file__).resolve().parent / "results"
    lines, summary = res / f"{args.out}.jsonl", res / f"{args.out}.json"
    rows = []
    if args.resume and lines.exists():
        rows = [json.loads(x) for x in lines.read_text().splitlines() if x.strip()]
    if not args.resume:
        lines.write_text("")
    done = {r["field"] for r in rows}
    chain = {"walkers": args.walkers, "steps": args.steps, "quick": args.quick}
    print(f"coverage: {args.coverage} fields from field {args.first} (seed {5000 + args.first}), chain {chain} "
          "(None: astrocal's default)", flush=True)
    fit_dir = ("out", "quick", "sky") if args.quick else ("out", "sky")
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.first, args.first + args.coverage):
            if k in done:
                continue
            d = Path(tmp) / f"f{k}"
            truth = write_space_campaign(d, np.random.default_rng(5000 + k), steps=args.steps, walkers=args.walkers)
            load = os.getloadavg()[0]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                if main(["-q", "measure", str(d / "campaign.toml")]) != 0:
                    print(f"  field {k}: measure failed", flush=True)
                    continue
                t1 = time.perf_counter()
                rc = main(["-q", "fit", str(d / "campaign.toml")] + (["--quick"] if args.quick else []))
                t2 = time.perf_counter()
            if rc != 0:
                print(f"  field {k}: fit failed (exit {rc})", flush=True)
                continue
            info = json.loads(d.joinpath(*fit_dir, "fit.json").read_text())
            ds = info["on_sky"]["datasets"][0]
            sc, pa = ds["pixel_scale_mas"], ds["position_angle_deg"]
            # the fit takes the affine part over the stars it used: so does the truth
            res = Table.read(d.joinpath(*fit_dir, "residuals.ecsv"))
            used_names = [str(n) for n, o in zip(res["source"], res["outlier"]) if not o]
            used = truth_over(truth, used_names)
            ref = reference_fit(d, truth, used_names)  # the exact error model's least squares, same stars

            def pulls(t):
                dpa = (pa["mean"] - t["position_angle_deg"] + 180.0) % 360.0 - 180.0
                return (sc["mean"] - t["on_sky_mas"]) / sc["sd"], dpa / pa["sd"]

            diag = info["diagnostics"]
            (z_s, z_pa), (z_s_all, z_pa_all) = pulls(used), pulls(truth)
            row = {"field": k, "seed": 5000 + k, "scale_mean": sc["mean"], "scale_sd": sc["sd"],
                   "scale_truth": used["on_sky_mas"], "scale_pull": z_s,
                   "pa_mean": pa["mean"], "pa_sd": pa["sd"], "pa_truth": used["position_angle_deg"],
                   "pa_pull": z_pa, "n_stars_used": used["n_stars"],
                   "scale_truth_all_listed": truth["on_sky_mas"], "scale_pull_all_listed": z_s_all,
                   "pa_truth_all_listed": truth["position_angle_deg"], "pa_pull_all_listed": z_pa_all,
                   "n_catalog_on_list": truth["n_catalog_on_list"],
                   "scale_reference": ref["on_sky_mas"], "scale_sd_reference": ref["on_sky_sd"],
                   "scale_pull_reference": ref["scale_pull"], "pa_sd_reference": ref["position_angle_sd"],
                   "pa_pull_reference": ref["pa_pull"],
                   "converged": bool(diag["converged"]) if diag["converged"] is not None else None, "steps": int(diag["steps"]),
                   "walkers": int(info.get("settings", {}).get("walkers") or args.walkers or 0),
                   "tau_max": max((float(t) for t in diag["tau"] if t is not None), default=None), "measure_seconds": t1 - t0, "fit_seconds": t2 - t1,
                   "load_1min": load}
            rows.append(row)
            with lines.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            s = _coverage_summary(rows)
            summary.write_text(json.dumps({"chain": chain, "fields_asked": args.coverage, "summary": s}, indent=1))
            print(f"  field {k}: on-sky {sc['mean']:.5f} +- {sc['sd']:.5f} mas/px, truth {used['on_sky_mas']:.5f}, "
                  f"pull {z_s:+.2f}; PA {pa['mean']:.5f} +- {pa['sd']:.5f} deg, truth "
                  f"{used['position_angle_deg']:.5f}, pull {z_pa:+.2f} (over the {used['n_stars']} stars used; over "
                  f"all {truth['n_catalog_on_list']} listed {z_s_all:+.2f} / {z_pa_all:+.2f}); {row['steps']} steps "
                  f"({'converged' if row['converged'] else 'NOT converged'}), fit {row['fit_seconds']:.1f} s, "
                  f"load {load:.2f}", flush=True)
    s = _coverage_summary(rows)
    _print_coverage(s)
    return s


def main_():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fields", type=int, default=10)
    p.add_argument("--sources", type=int, default=10000)
    p.add_argument("--catalog", type=int, default=2000)
    p.add_argument("--positions-only", action="store_true", help="also the same fields without brightness")
    p.add_argument("--coverage", type=int, default=0, help="campaigns for the on-sky scale's coverage")
    p.add_argument("--steps", type=int, default=None,
                   help="emcee steps of each coverage fit (default: the campaign default, which stops once converged)")
    p.add_argument("--walkers", type=int, default=None, help="emcee walkers of each coverage fit (default: astrocal's)")
    p.add_argument("--first", type=int, default=0, help="first coverage field (its seed is 5000 + FIRST)")
    p.add_argument("--quick", action="store_true", help="coverage of `astrocal fit --quick` (MAP + Laplace)")
    p.add_argument("--out", default="space_coverage", help="results/<OUT>.json(l) of the coverage")
    p.add_argument("--resume", action="store_true", help="keep the fields already in results/<OUT>.jsonl")
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.fields:
        res = Path(__file__).resolve().parent / "results" / "space_match.json"
        res.write_text(json.dumps({"match": part_match(args)}, indent=1))
    if args.coverage:
        part_coverage(args)


if __name__ == "__main__":
    main_()
