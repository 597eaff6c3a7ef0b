"""``astrocal demo``: the whole chain on simulated METIS IMG_LM data, start to finish.

Simulates a METIS IMG_LM lab campaign (10 exposures of WCU FP mask #5 with chopper offsets,
a background and a flat frame) and a Galactic Center sky campaign over one night through
the SAME instrument field (exposures at several zenith distances and rotator angles, with
telescope flexure, refraction, an AO PSF and thermal background), joins them in one
campaign file, measures every frame (reduction, detection, centroiding, identification of
the pinholes, matching of the stars to the catalogue), fits the joint model (instrument
field shared, flexure and sky poses separated; emcee over the hyperparameters, exact draws
of everything else), writes the calibration products and the accuracy-budget report, and
compares the fit with the simulated truth -- the check a calibration scientist would make
first.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..campaign import load_campaign
from ..errors import AstrocalError, MeasureError
from ..model.inference import Fit
from ..report import write_report
from ..sim.joint import joint_campaign_toml
from ..sim.lab import simulate_lab
from ..sim.lab_files import load_lab_truth
from ..sim.lab_truth import GaugeTruth, gauge_truth
from ..sim.sky import SkySimSettings, simulate_sky
from ..sim.sky_files import load_sky_truth
from ..sim.sky_truth import SkyTruth
from .fit import describe, fit_campaign
from .measure import MeasureReport, measure_campaign

#: sky exposures of the demo (a night of the Galactic Center from 60 deg zenith distance
#: through transit and back)
DEMO_SKY_EXPOSURES = 8


def _step(k, n, text, t0):
    print(f"[{k}/{n}] {text} ({time.perf_counter() - t0:.0f} s)", flush=True)


def run_demo(out: str | os.PathLike = "astrocal-demo", seed: int = 1, overwrite: bool = False,
             progress: str | bool = "auto", sky: bool = True, processes: int = 2) -> dict:
    """Run the demo into ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        The demo's directory.
    seed : int
        The simulations' seed (the fit's is ``seed + 1``).
    overwrite : bool
        Replace existing files.
    progress : str or bool
        The fit's progress bar (``"auto"``: on a terminal).
    sky : bool
        ``False`` runs the lab chain only (no sky campaign, no flexure).
    processes : int
        Processes of the measure stage and the fit.

    Returns
    -------
    dict
        Per filter, the comparison with the truth (:func:`compare_with_truth`) with the
        paths of the ``products`` and the ``report``.
    """
    out = Path(out)
    t0 = time.perf_counter()
    n = 6
    lab_dir, sky_dir = out / "lab", out / "sky"
    _step(1, n, f"simulating a METIS IMG_LM lab campaign in {lab_dir}", t0)
    sim = simulate_lab(lab_dir, seed=seed, overwrite=overwrite)
    print(f"      {len(sim.frames)} frames, background, flat", flush=True)
    if sky:
        _step(2, n, f"simulating a Galactic Center night through the same field in {sky_dir}", t0)
        sky_sim = simulate_sky(sky_dir, SkySimSettings(target="gc", seed=seed, n_exposures=DEMO_SKY_EXPOSURES,
                                                       distortion_file=str(lab_dir)), overwrite=overwrite)
        campaign_path = joint_campaign_toml(sim.campaign, sky_sim.campaign, out / "campaign.toml",
                                            fit_lines=['degree = "auto"', "degree_range = [4, 6]", 'output = "out/"',
                                                       f"seed = {seed + 1}"],
                                            overwrite=overwrite)
        print(f"      {DEMO_SKY_EXPOSURES} exposures; joint campaign {campaign_path}", flush=True)
    else:
        campaign_path = sim.campaign
    _step(3, n, "measuring every frame (reduction, detection, centroiding, identification, matching)", t0)
    measure_all(campaign_path, overwrite=overwrite, processes=processes)
    _step(4, n, "fitting the joint model (degree by evidence, emcee, exact draws)", t0)
    campaign = load_campaign(campaign_path)
    results = fit_campaign(campaign, overwrite=overwrite, progress=progress, processes=processes)
    _step(5, n, "writing the accuracy-budget report", t0)
    reports = {}
    for filt, (fit, fit_dir, products) in results.items():
        paths, _ = write_report(fit_dir, overwrite=overwrite)
        reports[filt] = paths["html"]
    _step(6, n, "comparing with the simulated truth", t0)
    truth = load_lab_truth(lab_dir)
    sky_truth = None
    if sky:
        sky_truth = load_sky_truth(sky_dir)
    figures = {}
    for filt, (fit, fit_dir, products) in results.items():
        for line in describe(filt, fit, fit_dir, products):
            print("      " + line)
        f = compare_with_truth(fit, gauge_truth(truth, fit.hole_ids), sky_truth)
        f["products"] = {k: str(p) for k, p in products.items()}
        f["report"] = str(reports[filt])
        figures[filt] = f
        print(f"      map error vs truth: rms {f['map_error_rms_mas']:.4f} mas, max "
              f"{f['map_error_max_mas']:.4f} mas; normalised error rms {f['normalised_error_rms']:.2f} "
              f"({100 * f['fraction_within_1sigma']:.0f} % within 1 sigma)")
        if "flexure_z_rms" in f:
            print(f"      telescope flexure vs truth: {f['flexure_within_1sigma']} of {f['flexure_n']} "
                  f"coefficients within 1 sigma (normalised error rms {f['flexure_z_rms']:.2f})")
    print(f"done in {time.perf_counter() - t0:.0f} s; results in {out.resolve()}")
    for filt, path in reports.items():
        print(f"report ({filt}): {Path(path).resolve()}")
    return figures


def measure_all(campaign_path: str | os.PathLike, overwrite: bool = False, processes: int = 2) -> MeasureReport:
    """``astrocal measure`` of a demo's campaign.

    Parameters
    ----------
    campaign_path : str or os.PathLike
        The campaign file.
    overwrite : bool
        Replace existing products.
    processes : int
        Frames measured in parallel.

    Returns
    -------
    MeasureReport

    Raises
    ------
    MeasureError
        Naming the summary table, if any frame failed (a demo goes on only with every frame).
    """
    report = measure_campaign(campaign_path, overwrite=overwrite, processes=processes)
    if report.n_failed:
        raise MeasureError(f"{report.n_failed} frame(s) failed to measure; see "
                           f"{Path(load_campaign(campaign_path).measure.output) / 'summary.ecsv'}")
    return report


def compare_with_truth(fit: Fit, gauge_field_truth: GaugeTruth, sky_truth: SkyTruth | None = None,
                       n: int = 17) -> dict:
    """Map error of a fit against the truth (in the fit's gauge), and the flexure
    coefficients against the sky truth.

    Parameters
    ----------
    fit : astrocal.model.inference.Fit
        The fit.
    gauge_field_truth : astrocal.sim.lab_truth.GaugeTruth
        The simulated field in the fit's gauge (:func:`astrocal.sim.lab_truth.gauge_truth`).
    sky_truth : astrocal.sim.sky_truth.SkyTruth, optional
        The sky simulation's truth (its flexure coefficients).
    n : int
        The comparison grid is ``n x n`` positions over the fit's domain.

    Returns
    -------
    dict
        ``map_error_rms_mas``, ``map_error_max_mas`` (mas), ``normalised_error_rms``,
        ``fraction_within_1sigma``; with sky truth and flexure, ``flexure_z_rms``,
        ``flexure_n``, ``flexure_within_1sigma``.
    """
    xmin, xmax, ymin, ymax = fit.points.domain
    xx, yy = np.meshgrid(np.linspace(xmin + 0.5, xmax - 0.5, n), np.linspace(ymin + 0.5, ymax - 0.5, n))
    u, v = fit.field_samples(xx.ravel(), yy.ravel())
    ut, vt = gauge_field_truth.field(xx.ravel(), yy.ravel())
    err = np.hypot(u.mean(0) - ut, v.mean(0) - vt) * 1e3
    z = np.concatenate([(u.mean(0) - ut) / u.std(0, ddof=1), (v.mean(0) - vt) / v.std(0, ddof=1)])
    out = {"map_error_rms_mas": float(np.sqrt(np.mean(err**2))), "map_error_max_mas": float(err.max()),
           "normalised_error_rms": float(np.sqrt(np.mean(z**2))),
           "fraction_within_1sigma": float(np.mean(np.abs(z) < 1))}
    m = fit.model
    if sky_truth is not None and getattr(m, "n_flex", 0):
        if m.flexure.as_dict() != sky_truth.flexure.as_dict():
            raise ValueError(f"the fit's flexure basis {m.flexure.as_dict()} is not the simulated one "
                             f"{sky_truth.flexure.as_dict()}: the coefficients cannot be compared")
        fs = fit.g_samples[:, m.flex_cols]
        zf = (fs.mean(0) - sky_truth.flexure_coeffs) / fs.std(0, ddof=1)
        out.update(flexure_z_rms=float(np.sqrt(np.mean(zf**2))), flexure_n=int(zf.size),
                   flexure_within_1sigma=int(np.sum(np.abs(zf) < 1)))
    return out


class DemoOptionError(AstrocalError, ValueError):
    """Options of ``astrocal demo`` that cannot go together."""
