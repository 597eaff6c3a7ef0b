"""Regenerate the figures of the job walkthroughs (``docs/jobs/*.md``) in ``docs/_static/``.

Runs the three jobs on the demo's simulated METIS IMG_LM data, through the command line a
user runs, and copies a few report figures, made smaller, into ``docs/_static/``::

    python docs/make_figures.py [--work DIR] [--seed N] [--processes N] [--overwrite]

1. ``astrocal demo --out DIR`` (skipped if ``DIR/campaign.toml`` exists): simulates a lab
   campaign (``DIR/lab/``) and a Galactic Center night through the same instrument field
   (``DIR/sky/``), and runs the joint job on ``DIR/campaign.toml``: measure, fit, report
   (``DIR/out/Lp/``) — job 3.
2. Job 1, the lab-mask fit alone: ``astrocal measure``, ``astrocal fit``,
   ``astrocal report`` on ``DIR/lab/campaign.toml`` (``DIR/lab/out/Lp/``).
3. Job 2, the on-sky cross-check alone: the same on ``DIR/sky/campaign.toml``
   (``DIR/sky/out/Lp/``), the report ``--against`` the lab result.

Every step whose result exists is skipped, so an interrupted run continues. The figures
are resized to at most ``--width`` pixels wide and quantised until each is at most 150 kB
(``docs/_static`` must stay below 1.5 MB); existing figures are replaced only with
``--overwrite``. The key numbers of the three reports, and each job's field against the
simulated truth, are printed for the text of the walkthroughs. About 15 minutes on 2 free cores (the demo's fit is most of it).

This script is for the documentation's maintainers; the documentation build never runs it
(the figures are committed).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from astrocal.atomic import atomic_path

DOCS = Path(__file__).resolve().parent
STATIC = DOCS / "_static"
MAX_BYTES = 150_000
MAX_TOTAL = 1_500_000
FILTER = "Lp"

#: (job, report directory relative to the work directory, plot name) -> docs/_static name
FIGURES = [
    ("lab", "lab/out/Lp", "distortion_map"),
    ("lab", "lab/out/Lp", "uncertainty_map"),
    ("lab", "lab/out/Lp", "residuals_grid"),
    ("sky", "sky/out/Lp", "residuals_gc"),
    ("sky", "sky/out/Lp", "nonlinear_map"),
    ("sky", "sky/out/Lp", "difference_map"),
    ("joint", "out/Lp", "uncertainty_map"),
    ("joint", "out/Lp", "lab_vs_sky"),
    ("joint", "out/Lp", "pixel_scale_map"),
]


def astrocal(*args):
    """Run ``astrocal ARGS`` in a fresh interpreter (as a user would); stop on failure."""
    cmd = [sys.executable, "-m", "astrocal.cli", *map(str, args)]
    print("$", "astrocal", *map(str, args), flush=True)
    subprocess.run(cmd, check=True)


def run_jobs(work, seed, processes):
    """Run the demo (job 3) and jobs 1 and 2 on its data, skipping finished steps."""
    env_note = os.environ.get("OPENBLAS_NUM_THREADS")
    if env_note is None:
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if not (work / "campaign.toml").exists():
        astrocal("demo", "--out", work, "--seed", seed, "--processes", processes)
    for job, against in (("lab", None), ("sky", work / "lab" / "out" / FILTER)):
        campaign = work / job / "campaign.toml"
        result = work / job / "out" / FILTER
        if not (work / job / "measured" / "summary.ecsv").exists():
            astrocal("measure", campaign, "--processes", processes)
        if not (result / "fit.json").exists():
            astrocal("fit", campaign, "--processes", processes)
        if not (result / "report" / "report.json").exists():
            extra = ["--against", against] if against is not None else []
            astrocal("report", result, *extra)
    if not (work / "out" / FILTER / "report" / "report.json").exists():
        astrocal("report", work / "out" / FILTER)


def small_png(src, width):
    """The PNG ``src`` at most ``width`` pixels wide and at most MAX_BYTES long (bytes)."""
    image = Image.open(src).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)),
                             Image.Resampling.LANCZOS)
    for colours in (None, 256, 128, 64, 32):
        out = image if colours is None else image.quantize(colours, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        out.save(buf, format="PNG", optimize=True)
        if buf.tell() <= MAX_BYTES:
            return buf.getvalue()
    raise RuntimeError(f"{src}: cannot be made smaller than {MAX_BYTES} bytes at width {width}")


def copy_figures(work, width, overwrite):
    """Write the FIGURES into docs/_static as ``<job>_<plot>.png``; returns their sizes."""
    sizes = {}
    for job, result, plot in FIGURES:
        src = work / result / "report" / "plots" / f"{plot}.png"
        if not src.exists():
            raise FileNotFoundError(f"{src}: not written by the report (is the run complete?)")
        data = small_png(src, width)
        dest = STATIC / f"{job}_{plot}.png"
        with atomic_path(dest, overwrite) as tmp:
            tmp.write_bytes(data)
        sizes[dest.name] = len(data)
        print(f"{dest.relative_to(DOCS.parent)}: {len(data) / 1e3:.0f} kB")
    total = sum(sizes.values())
    print(f"total {total / 1e3:.0f} kB")
    if total > MAX_TOTAL:
        raise RuntimeError(f"the figures take {total} bytes, more than {MAX_TOTAL}: use a "
                           "smaller --width")
    return sizes


def key_numbers(work):
    """Print the numbers the walkthroughs quote, from the three report.json files."""
    for job, result in (("lab", "lab/out/Lp"), ("sky", "sky/out/Lp"), ("joint", "out/Lp")):
        r = json.loads((work / result / "report" / "report.json").read_text())
        acc, scale, conv = r["map_accuracy"], r["pixel_scale"], r["convergence"]
        ps = (f"{scale['mean_mas']:.6f} +/- {scale['sd_mas']:.2g} mas/px" if scale.get("mean_mas") is not None
              else "not measured")  # a sky-only result
        print(f"--- {job} ({work / result}): degree {r['degree']}; map 1-sigma rms "
              f"{acc['rms_mas']:.4f} mas, max {acc['max_mas']:.4f} mas at {acc['max_at_px']}; "
              f"pixel scale {ps}; "
              f"converged {conv['converged']}, steps {conv['steps']}, unconstrained "
              f"{conv.get('unconstrained')}")
        for d in r["residuals"]:
            print(f"    residuals {d['dataset']} ({d['kind']}): {d['n_used']}/{d['n_points']} "
                  f"points, rms {d['rms_mas']:.4f} mas = {d['rms_px']:.5f} px, mean chi2 "
                  f"{d['chi2_mean']:.2f}, sd of normalised {d['z_sd']:.2f}")
        print("    evidence:", ", ".join(f"{e['degree']}: {e['delta_log_evidence']:.1f}"
                                       for e in r["evidence"]))
        for q in r["requirements"]:
            print(f"    {q['id']}: {q['status']} (value {q.get('value')}, sd {q.get('sd')})")
        if r.get("stability"):
            st = r["stability"]
            print("    stability:", {k: st[k] for k in st if isinstance(st[k], (int, float))})


def truth_comparison(work, n=33):
    """Print how far each job's field is from the simulated truth (``DIR/lab/truth``).

    Reverse offsets ``D2(p) = p - L(p)`` (pixels, each solution relative to its own linear
    grid, POLYNOM_MAP2 of the AstroMet files) on an ``n`` x ``n`` grid of 0-based pixel
    positions from corner to corner; their difference to the truth's, and the same after
    removing the best affine map of the difference (what a sky-only fit cannot measure).
    """
    import numpy as np

    from astrocal.correct import open_solution

    truth_file = work / "lab" / "truth" / "distortion_truth.fits"
    ev = open_solution(truth_file, method="polynom_map2")
    ny, nx = ev.detector_shape
    xx, yy = (a.ravel() for a in np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n)))

    def offsets(evaluator):
        e = evaluator.evaluate(xx, yy)
        return np.stack([xx - e.lx, yy - e.ly])

    truth = offsets(ev)
    design = np.stack([np.ones_like(xx), xx - (nx - 1) / 2, yy - (ny - 1) / 2], axis=1)
    for job, result in (("lab", "lab/out/Lp"), ("sky", "sky/out/Lp"), ("joint", "out/Lp")):
        path = work / result / f"astromet_{FILTER}.fits"
        d = offsets(open_solution(path, method="polynom_map2")) - truth
        coef = np.linalg.lstsq(design, d.T, rcond=None)[0]
        rest = d - (design @ coef).T
        length, rest_length = np.hypot(*d), np.hypot(*rest)
        print(f"--- {job} vs truth: |D2 - D2_true| rms {np.sqrt(np.mean(length**2)):.4f} px, "
              f"max {length.max():.4f} px; affine removed: rms "
              f"{np.sqrt(np.mean(rest_length**2)):.4f} px, max {rest_length.max():.4f} px")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/astrocal-docs-figures"),
                   help="where the jobs run (default /tmp/astrocal-docs-figures)")
    p.add_argument("--seed", type=int, default=1, help="the demo's seed (default 1)")
    p.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--width", type=int, default=900, help="largest figure width, pixels")
    p.add_argument("--overwrite", action="store_true", help="replace existing figures")
    p.add_argument("--no-run", action="store_true",
                   help="only copy the figures of an earlier run in --work")
    args = p.parse_args(argv)
    work = args.work.resolve()
    if not args.no_run:
        run_jobs(work, args.seed, args.processes)
    copy_figures(work, args.width, args.overwrite)
    key_numbers(work)
    truth_comparison(work)


if __name__ == "__main__":
    main()
