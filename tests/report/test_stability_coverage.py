"""Coverage of the stability numbers: two fits of independent observations of the same truth
differ only by noise, so the reported scale change over its 1-sigma must be N(0, 1)."""
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from astrocal.field.synthetic import smooth_field
from astrocal.lab.mask import get_mask
from astrocal.model.inference import FitSettings, fit_joint
from astrocal.model.result import Posterior
from astrocal.products import posterior_solution
from astrocal.report.build import Result, stability
from astrocal.sim.lab_truth import draw_lab_truth, observe_points


def _result(fit, name):
    post = Posterior(fit.degree, tuple(fit.points.domain), fit.g_samples, fit.phi_samples,
                     fit.hole_samples, fit.param_names, fit.hyper_names, [], {})
    return Result(Path(name), post, None, None, {}, "L", "METIS IMG_LM", "LM",
                  posterior_solution(post, "L"))


@pytest.mark.slow
def test_scale_change_is_calibrated():
    mask = get_mask("metis_wcu_fp_mask5")
    ms = 3.319
    z = []
    for seed in range(15):
        rng = np.random.default_rng(1000 + seed)
        field = smooth_field(corner_px=3.0, degree=3, rng=seed, rotation_deg=rng.normal(0, 0.3))
        truth = draw_lab_truth(field, mask.hole_id, mask.xy_mm / ms, ms, rng, n_exposures=5)
        results = []
        for k in range(2):  # two independent observations of the same truth
            points, _ = observe_points(truth, rng)
            fit = fit_joint(points, FitSettings(degree=3, steps=600, walkers=12, seed=seed + 10 * k,
                                              progress=False, n_draws=500, draws_per_phi=2))
            results.append(_result(fit, f"fit{k}"))
        st = stability(results[0], results[1])
        z.append(st["scale_change_rel"] / st["scale_change_rel_sd"])
    z = np.array(z)
    # mean of z**2 is chi2(15)/15 when the sd is right: 99 % interval
    lo, hi = stats.chi2.ppf([0.005, 0.995], len(z)) / len(z)
    print(f"scale change / sd over {len(z)} pairs: mean {z.mean():.2f}, mean square {np.mean(z**2):.2f} "
          f"(99 % interval {lo:.2f}-{hi:.2f})")
    assert lo < np.mean(z**2) < hi, z
