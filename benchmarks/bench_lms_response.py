"""Benchmark: the LMS relative spectral response per slice and slit loss against the truth, over N campaigns.

For each of ``--campaigns`` simulated campaigns (seeds from ``--first-seed``; one echelle setting,
``--lines`` QCL lines, one chopper offset plus a slit-loss scan ``--scan`` across the slices,
black-body slices frame and background; noise, chopper errors, the per-slice response and the slit
profile all on, each campaign drawing its own response):

* the slices frame is reduced and :func:`astrocal.lms.response.extract_slice_spectra` sums the
  slices with the **truth** geometry (isolating the estimator; the command path uses the fitted
  geometry), :func:`~astrocal.lms.response.estimate_rsrf` gives the RSRF per slice (``--bins``
  bins) and each slice over the mean of the slices;
* the laser frames are measured as ``astrocal measure`` does (nominal geometry,
  :func:`astrocal.lms.spots.measure_laser_spots`) and
  :func:`~astrocal.lms.response.estimate_slit_throughput` gives ``T(u)/T(0)`` per line and position;
* both are compared with the truth (:func:`astrocal.sim.lms_response.rsrf_truth`, ``slit_truth``):
  normalised errors ``z = (estimate - truth) / sigma`` and the fraction inside 1 / 2 sigma (the
  68.3 / 95.4 % intervals of a Gaussian).

``--efficiency`` sets the black body's brightness: at the simulator's default (0.1) the RSRF's
photon noise per bin (~5e-5) is below the simulator's own rendering accuracy for the lit slices
(~1e-4: the dispersion is taken on the mean of the slice ends), so the coverage is measured at a
lower brightness (default 0.01) where the noise dominates; the rms of ``estimate/truth - 1`` is
reported either way. One JSON line per campaign goes to ``--out`` as it finishes; the aggregate is
printed and written beside it (``.summary.json``), with figures (``--figures`` prefix).

    nice python benchmarks/bench_lms_response.py --campaigns 50 --out benchmarks/results/lms_response.jsonl
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run_campaign(seed, args, workdir):
    from astropy.table import Table, vstack

    from astrocal.lab.mask import load_mask
    from astrocal.lms.frames import reduce_lms_frame
    from astrocal.lms.response import estimate_rsrf, estimate_slit_throughput, extract_slice_spectra
    from astrocal.lms.spots import measure_laser_spots
    from astrocal.sim.lms import LmsSimSettings, simulate_lms
    from astrocal.sim.lms_response import rsrf_truth, slit_truth

    t0 = time.perf_counter()
    d = Path(workdir) / f"c{seed}"
    qcl = tuple(np.round(np.linspace(4.70, 4.76, args.lines), 2)) if args.lines > 1 else (4.74,)
    s = LmsSimSettings(seed=seed, settings_um=(args.setting,), n_offsets=1, qcl_lines_um=qcl,
                       slit_scan=tuple(args.scan), efficiency=args.efficiency)
    res = simulate_lms(d, s)
    t_sim = time.perf_counter() - t0
    geo = res.geometry
    nominal = geo.with_params(geo.layout.zeros())
    tag = f"{args.setting:.3f}".replace(".", "p")
    bg = d / "raw" / f"lms_background_{tag}.fits"
    red = reduce_lms_frame(d / "raw" / f"lms_slices_{tag}.fits", bg)
    rsrf = estimate_rsrf(extract_slice_spectra(red, geo, 0), s.bb_temp_k, n_bins=args.bins)
    tr = rsrf_truth(rsrf, res.response, geo.layout.settings[0].order)
    mask = load_mask(d / "mask.ecsv")
    ab, ids = np.asarray(mask.xy_arcsec(), float), np.asarray(mask.hole_id)
    tabs = []
    for i, row in enumerate(res.exposures):
        if row["kind"] != "laser":
            continue
        t = measure_laser_spots(reduce_lms_frame(d / row["file"], bg), nominal, ab, json.loads(row["lines_um"]),
                                offset_arcsec=(row["offset_cmd_a"], row["offset_cmd_b"]), hole_id=ids)
        t.meta = {}
        t["exposure"] = i
        t["setting"] = 0
        tabs.append(t)
    slit = estimate_slit_throughput(vstack(tabs), offset_sigma_mas=s.offset_sigma_mas)
    st = slit_truth(slit, res.spots, res.exposures)
    shutil.rmtree(d)
    r = np.asarray(rsrf["RSRF"], float)
    rel = np.asarray(rsrf["REL_SLICE"], float)
    ok = np.isfinite(rel)
    return {
        "seed": seed, "seconds": time.perf_counter() - t0, "seconds_simulate": t_sim,
        "rsrf_z": np.round((r - tr["rsrf"]) / np.asarray(rsrf["SIGMA"]), 3).tolist(),
        "rsrf_relerr_ms": float(np.mean((r / tr["rsrf"] - 1) ** 2)),
        "rsrf_sigma_median": float(np.median(rsrf["SIGMA"])),
        "rel_z": np.round((rel[ok] - tr["rel_slice"][ok]) / np.asarray(rsrf["SIGMA_REL"])[ok], 3).tolist(),
        "rel_relerr_ms": float(np.mean((rel[ok] / tr["rel_slice"][ok] - 1) ** 2)),
        "slit_u": np.asarray(slit["U"], float).tolist(), "slit_line": np.asarray(slit["LINE"], float).tolist(),
        "slit_t": np.asarray(slit["T_REL"], float).tolist(), "slit_truth": st.tolist(),
        "slit_sigma": np.asarray(slit["SIGMA_T"], float).tolist(),
        "slit_chi2dof": float(np.nanmedian(slit["CHI2DOF"])) if len(slit) else None,
    }


def coverage(z):
    z = np.asarray(z, float)
    z = z[np.isfinite(z)]
    return {"n": int(z.size), "rms_z": float(np.sqrt(np.mean(z**2))), "mean_z": float(z.mean()),
            "in1sigma": float(np.mean(np.abs(z) < 1)), "in2sigma": float(np.mean(np.abs(z) < 2))}


def summarise(rows):
    slit_z = np.concatenate([(np.array(r["slit_t"]) - np.array(r["slit_truth"])) / np.array(r["slit_sigma"])
                             for r in rows])
    return {
        "campaigns": len(rows),
        "rsrf": coverage(np.concatenate([r["rsrf_z"] for r in rows])),
        "rsrf_rms_relerr": float(np.sqrt(np.mean([r["rsrf_relerr_ms"] for r in rows]))),
        "rsrf_sigma_median": float(np.median([r["rsrf_sigma_median"] for r in rows])),
        "rel_slice": coverage(np.concatenate([r["rel_z"] for r in rows])),
        "rel_rms_relerr": float(np.sqrt(np.mean([r["rel_relerr_ms"] for r in rows]))),
        "slit": coverage(slit_z),
        "slit_rms_err": float(np.sqrt(np.nanmean(np.concatenate(
            [np.array(r["slit_t"]) - np.array(r["slit_truth"]) for r in rows]) ** 2))),
        "slit_sigma_median": float(np.median(np.concatenate([r["slit_sigma"] for r in rows]))),
        "seconds_median": float(np.median([r["seconds"] for r in rows])),
    }


def figures(rows, prefix):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    x = np.linspace(-4, 4, 200)
    for ax, key, title in zip(axes, ("rsrf_z", "rel_z", None), ("RSRF", "slice / mean of slices", "T(u)/T(0)")):
        if key:
            z = np.concatenate([r[key] for r in rows])
        else:
            z = np.concatenate([(np.array(r["slit_t"]) - np.array(r["slit_truth"])) / np.array(r["slit_sigma"])
                                for r in rows])
        z = z[np.isfinite(z)]
        ax.hist(np.clip(z, -4, 4), bins=40, range=(-4, 4), density=True, color="0.6")
        ax.plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), "r-", lw=1)
        ax.set_title(f"{title}: |z|<1 {np.mean(np.abs(z) < 1):.3f}, <2 {np.mean(np.abs(z) < 2):.3f} (n={z.size})",
                     fontsize=9)
        ax.set_xlabel("(estimate - truth) / sigma")
    fig.savefig(f"{prefix}_z.png", dpi=110)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        u, t, tt = (np.array(r[k]) for k in ("slit_u", "slit_t", "slit_truth"))
        ax.plot(u, tt, "k.", ms=3, alpha=0.4)
        ax.plot(u + 0.01, t, "b.", ms=3, alpha=0.4)
    ax.plot([], [], "k.", label="truth (at the true chopper offsets)")
    ax.plot([], [], "b.", label="estimate (shifted +0.01 for clarity)")
    ax.set_xlabel("commanded position across the slice u [slice widths]")
    ax.set_ylabel("T(u) / T(0)")
    ax.set_title(f"slit loss over {len(rows)} campaigns")
    ax.legend(fontsize=8)
    fig.savefig(f"{prefix}_slit.png", dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--campaigns", type=int, default=50)
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--setting", type=float, default=4.73)
    p.add_argument("--lines", type=int, default=3, help="QCL lines (4.70..4.76 um)")
    p.add_argument("--scan", type=float, nargs="+", default=[-0.4, -0.2, 0.2, 0.4])
    p.add_argument("--bins", type=int, default=32)
    p.add_argument("--efficiency", type=float, default=0.01)
    p.add_argument("--out", default="benchmarks/results/lms_response.jsonl")
    p.add_argument("--figures", default=None, help="prefix of the figures (default: --out without .jsonl)")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    if out.exists():
        rows = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    done = {r["seed"] for r in rows}
    with tempfile.TemporaryDirectory(dir=args.workdir) as wd:
        for seed in range(args.first_seed, args.first_seed + args.campaigns):
            if seed in done:
                continue
            r = run_campaign(seed, args, wd)
            rows.append(r)
            with out.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            zs = (np.array(r["slit_t"]) - np.array(r["slit_truth"])) / np.array(r["slit_sigma"])
            print(f"seed {seed}: {r['seconds']:.1f} s, rsrf rms z {np.sqrt(np.mean(np.square(r['rsrf_z']))):.2f}, "
                  f"slit z {np.round(zs, 2)}", flush=True)
    s = summarise(rows)
    s["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "figures", "workdir")}
    out.with_suffix(".summary.json").write_text(json.dumps(s, indent=1) + "\n")
    figures(rows, args.figures or str(out.with_suffix("")))
    print(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
