"""Calibration of the lab model's credible intervals: the fast subset that runs in CI.

The full run (200 campaigns, ``benchmarks/bench_model_coverage.py``) checks 68 +/- 3 % and
95 +/- 2 %. Here a handful of simulated METIS campaigns (FP mask #5, 10 dithered exposures,
hole errors, random smooth fields and centroid noise) are fitted at their true degree and
the central credible intervals of the map (a 5x5 grid of test pixels, both components),
of the hole errors and of the pixel scale are checked against the truth in the fit's gauge.
With so few campaigns the bands are wider than the benchmark's (the intervals of one
campaign are correlated), but an over- or under-confident posterior by 20 % in width
leaves them. The same data fitted with the hole errors ignored, its map without the
unresolved field, must fail the map check: the test can fail.
"""
import logging
import warnings

import numpy as np
import pytest

from astrocal.field.synthetic import smooth_field
from astrocal.instruments import get_instrument
from astrocal.lab.mask import get_mask
from astrocal.model.inference import FitSettings, fit_joint
from astrocal.sim.lab_truth import draw_lab_truth, gauge_truth, observe_points

SEEDS = (11, 12, 13, 14, 15, 16)


def campaign(seed):
    """A simulated lab campaign: (truth, points, degree)."""
    rng = np.random.default_rng([seed, 3])
    inst = get_instrument("metis-lm")
    mask = get_mask("metis_wcu_fp_mask5")
    ms = float(mask.mask_scale.value)
    degree = int(rng.integers(3, 5))
    field = smooth_field(shape=inst.detector_shape, pixel_scale_mas=inst.pixel_scale_mas,
                         corner_px=float(rng.uniform(1, 5)), degree=degree,
                         rng=int(rng.integers(1 << 31)), rotation_deg=float(rng.normal(0, 0.3)))
    level = float(np.exp(rng.uniform(np.log(0.004), np.log(0.04))))
    truth = draw_lab_truth(field, mask.hole_id, mask.xy_mm / ms, ms, rng, n_exposures=10,
                           hole_error_um=float(rng.uniform(0.3, 1.0)))
    pts, _ = observe_points(truth, rng, sigma_px=(0.5 * level, 1.5 * level))
    return truth, pts, degree


def hits(samples, truth):
    q = np.quantile(samples, [0.025, 0.16, 0.84, 0.975], axis=0)
    t = np.asarray(truth)
    return (q[1] <= t) & (t <= q[2]), (q[0] <= t) & (t <= q[3])


def score(fit, truth, hole_ids=None, unresolved=True):
    """(map in68, map in95, hole in68, hole in95, pixel-scale z, map z) of one fit, against
    the truth in the gauge of the holes ``hole_ids`` (default: the fit's); map z: the
    normalised map errors (posterior mean minus truth over the posterior sd).
    ``unresolved=False``: the map's samples without the unresolved field (the jitter)."""
    from astrocal.model import draws

    gt = gauge_truth(truth, fit.hole_ids if hole_ids is None else hole_ids)
    g = np.linspace(0, 2047, 5)
    xx, yy = np.meshgrid(g, g)
    if unresolved:
        u, v = fit.field_samples(xx.ravel(), yy.ravel())
    else:
        u, v = draws.field_samples(fit.g_samples, fit.degree, fit.points.domain, xx.ravel(), yy.ravel(),
                                   fit.residual)
    ut, vt = gt.field(xx.ravel(), yy.ravel())
    s, t = np.hstack([u, v]), np.concatenate([ut, vt])
    m68, m95 = hits(s, t)
    out = [m68, m95]
    if fit.hole_samples is not None:
        h68, h95 = hits(fit.hole_samples.reshape(len(fit.hole_samples), -1), gt.hole_errors.ravel())
        out += [h68, h95]
    else:
        out += [None, None]
    cx, cy, (xmin, xmax, ymin, ymax) = gt.field.cx, gt.field.cy, gt.field.domain
    hx, hy = 0.5 * (xmax - xmin), 0.5 * (ymax - ymin)
    ps_true = np.sqrt(abs(cx[1, 0] / hx * cy[0, 1] / hy - cx[0, 1] / hy * cy[1, 0] / hx))
    ps = fit.pixel_scale_samples()
    out.append((ps.mean() - ps_true) / ps.std(ddof=1))
    out.append((s.mean(0) - t) / s.std(0, ddof=1))
    return out


@pytest.fixture(scope="module")
def fits():
    logger = logging.getLogger("astrocal")
    level = logger.level
    logger.setLevel(logging.ERROR)  # quiet while fitting; restored below for the tests that read the log
    res = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in SEEDS:
            truth, pts, degree = campaign(seed)
            settings = dict(degree=degree, seed=seed, progress=False, walkers=16, steps=600,
                            target_neff=400, n_draws=500, draws_per_phi=4)
            fit = fit_joint(pts, FitSettings(**settings))
            blind = fit_joint(pts, FitSettings(hole_errors=False, **settings))
            res.append((truth, fit, blind))
    logger.setLevel(level)
    return res


def test_intervals_hold_the_truth_at_their_level(fits):
    scores = [score(fit, truth) for truth, fit, _ in fits]
    m68 = np.concatenate([s[0] for s in scores]).mean()
    m95 = np.concatenate([s[1] for s in scores]).mean()
    h68 = np.concatenate([s[2] for s in scores]).mean()
    h95 = np.concatenate([s[3] for s in scores]).mean()
    z = np.array([s[4] for s in scores])
    # 300 map intervals in 6 correlated groups; ~1000 nearly independent hole intervals
    print(f"map {m68:.3f} / {m95:.3f}, holes {h68:.3f} / {h95:.3f}, pixel-scale z {z.round(2)}")
    assert 0.55 <= m68 <= 0.81, m68
    assert 0.88 <= m95 <= 0.995, m95
    assert 0.63 <= h68 <= 0.73, h68
    assert 0.92 <= h95 <= 0.98, h95
    assert np.sqrt(np.mean(z**2)) < 2.0, z


def test_ignoring_the_hole_errors_fails_the_same_check(fits):
    """The control: a model without the mask's errors, whose map leaves out the scatter they
    cause (the unresolved field), is overconfident on the same data: the check can fail.
    With the unresolved field in its map (the default) the same misspecified model's
    intervals widen back to honest ones: the scatter the jitter takes is not lost."""
    z = np.concatenate([score(fit, truth)[5] for truth, fit, _ in fits])
    blind = [score(blind, truth, fit.hole_ids, unresolved=False) for truth, fit, blind in fits]
    zb = np.concatenate([b[5] for b in blind])
    m68 = np.concatenate([b[0] for b in blind]).mean()
    zu = np.concatenate([score(blind, truth, fit.hole_ids)[5] for truth, fit, blind in fits])
    print(f"normalised map error rms {np.sqrt(np.mean(z**2)):.2f}; hole errors ignored: "
          f"{np.sqrt(np.mean(zb**2)):.2f}, 68 % intervals hold the truth {m68:.3f}; with the "
          f"unresolved field {np.sqrt(np.mean(zu**2)):.2f}")
    assert 0.75 <= np.sqrt(np.mean(z**2)) <= 1.3
    # measured: 0.92 against 1.52 (hole errors 0.3-1 um, 6 campaigns); 0.90 with the unresolved field
    assert np.sqrt(np.mean(zb**2)) > 1.35
    assert np.sqrt(np.mean(zb**2)) > 1.4 * np.sqrt(np.mean(z**2))
    assert np.sqrt(np.mean(zu**2)) < 1.3
