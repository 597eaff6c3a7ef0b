"""``astrocal demo --lms``: the LMS chain on simulated METIS LMS data, start to finish.

Simulates an LMS calibration campaign (:func:`astrocal.sim.lms.simulate_lms` with its
defaults: the WCU grid mask lit by the lasers and the black body at chopper offsets along
and across the slices, lit-slice and background frames, two echelle settings, on the 4-chip
mosaic, through an as-built geometry drawn from the prior), measures every frame (laser
spots, slice edges, traces), fits the geometry (:func:`astrocal.lms.fit_campaign.fit_lms_campaign`:
the collapsed model, emcee over the hyperparameters), writes the products and the report
page, and compares the fitted geometry with the simulated truth at random (slice, xi,
lambda) on the detectors (:func:`astrocal.sim.lms_points.compare_with_truth`): the error
of (column, row) in pixels and how often the truth lies in the 68 % / 95 % intervals.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..campaign import load_campaign
from ..lms.fit_campaign import describe_lms_fit, fit_lms_campaign
from ..sim.lms import LmsSimSettings, simulate_lms
from ..sim.lms_points import compare_with_truth
from .demo import measure_all

__all__ = ["run_lms_demo"]

#: test points per slice and setting of the comparison with the truth
COMPARE_PER_SLICE = 60


def _step(k, n, text, t0):
    print(f"[{k}/{n}] {text} ({time.perf_counter() - t0:.0f} s)", flush=True)


def run_lms_demo(out: str | os.PathLike = "astrocal-demo-lms", seed: int = 1, overwrite: bool = False,
                 progress: str | bool = "auto", processes: int = 2, sim: LmsSimSettings | None = None) -> dict:
    """Run the LMS demo into ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        The demo's directory.
    seed : int
        The simulation's seed (and the comparison's).
    overwrite : bool
        Replace existing files.
    progress : str or bool
        The fit's progress bar (``"auto"``: on a terminal).
    processes : int
        Frames measured in parallel.
    sim : astrocal.sim.lms.LmsSimSettings, optional
        The simulated campaign's settings (default: its defaults with ``seed``).

    Returns
    -------
    dict
        Figures and paths: ``rms_px`` (column, row) rms error of the posterior mean against
        the truth, ``rms_lit_px`` the same over the slices with laser spots (``n_lit``
        points), ``coverage68`` and ``coverage95`` (column, row), ``n_points`` compared,
        ``result``, ``report``, ``seconds``.
    """
    out = Path(out)
    t0 = time.perf_counter()
    n = 4
    _step(1, n, f"simulating a METIS LMS calibration campaign in {out}", t0)
    sim = simulate_lms(out, sim or LmsSimSettings(seed=seed), overwrite=overwrite)
    campaign_path = out / "campaign.toml"
    _step(2, n, "measuring every frame (laser spots, slice edges, traces)", t0)
    measure_all(campaign_path, overwrite=overwrite, processes=processes)
    _step(3, n, "fitting the LMS geometry (emcee over the hyperparameters, exact draws), products, report", t0)
    fit, fit_dir = fit_lms_campaign(load_campaign(campaign_path), overwrite=overwrite, progress=progress)
    for line in describe_lms_fit(fit, fit_dir):
        print("      " + line)
    _step(4, n, "comparing with the simulated truth", t0)
    c = compare_with_truth(fit, sim.geometry, n_per_slice=COMPARE_PER_SLICE, seed=seed)
    spots = fit.data["spots"]
    good = spots["flags"] == 0
    lit = np.zeros(len(c["err"]), bool)
    for e in np.unique(c["setting"]):
        lit |= (c["setting"] == e) & np.isin(c["slice"], spots["slice"][good & (spots["setting"] == e)])
    figures = {"rms_px": [float(v) for v in c["rms"]],
               "rms_lit_px": [float(v) for v in np.sqrt(np.mean(c["err"][lit] ** 2, axis=0))] if lit.any() else None,
               "n_lit": int(lit.sum()),
               "coverage68": [float(v) for v in c["coverage68"]],
               "coverage95": [float(v) for v in c["coverage95"]],
               "n_points": int(len(c["err"])), "result": str(fit_dir),
               "report": str(Path(fit_dir) / "report" / "report.html")}
    print(f"      geometry vs truth at {figures['n_points']} random (slice, xi, lambda): rms error "
          f"column {figures['rms_px'][0]:.4f} px, row {figures['rms_px'][1]:.4f} px; truth within the 68 % "
          f"interval {100 * np.mean(figures['coverage68']):.0f} %, within the 95 % interval "
          f"{100 * np.mean(figures['coverage95']):.0f} %")
    if figures["rms_lit_px"] is not None:
        print(f"      in the slices with laser spots ({figures['n_lit']} of the points): rms error column "
              f"{figures['rms_lit_px'][0]:.4f} px, row {figures['rms_lit_px'][1]:.4f} px (the others rest on "
              "the traces, the edges and the slices' common prior)")
    figures["seconds"] = time.perf_counter() - t0
    print(f"done in {figures['seconds']:.0f} s; results in {out.resolve()}")
    print(f"report: {Path(figures['report']).resolve()}")
    return figures
