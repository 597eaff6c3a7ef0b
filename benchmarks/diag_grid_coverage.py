"""Where the grid family's map intervals are too narrow (issue 17), at the MAP of the scan's
model (degree 5, the residual field refined as the fit does; MAP hyperparameters and 400
exact linear draws, the bench's test pixels inside the data footprint, as
``diag_residual_basis.py``). Two modes, one JSON line per campaign on stdout:

* ``scale``: the MAP hole-error scale against the truth's (um); the fraction of the map
  error's variance that lies on the ripple's own plane wave (least squares of the error on
  ``cos``/``sin`` of the ripple's phase, per component); and the 68 / 95 % coverage, the map
  error (px) and the change of the log posterior (nats) when the residual's rms is scaled by
  1.5 / 2 / 3 (``rmsx*``) or the hole-error scale by 2 / 0.5 (``holex*``), the other
  hyperparameters held at the MAP: ``[in68, in95, error, delta log posterior]``.
* ``band``: the same with the residual's prior sd multiplied by ``f`` = 1, 2, 4, 8 only for
  the basis functions whose frequency lies in the band the mask offsets cannot tell from
  hole errors (periods beyond ``dither_separation.half_period_px``, ``astrocal.model.dithers``):
  ``f<f>: [in68, in95, error, sd rms, delta log posterior]``.

Run:  python benchmarks/diag_grid_coverage.py MODE SEED[,SEED...] [CAMPAIGN_OPTIONS [PRIORS]]
(``PRIORS``: a JSON object of ``Priors`` overrides, e.g. ``'{"residual_lengths": "isotropic"}'``
for the residual field of one correlation length, the model before 2026-12-07)
(results of the 2026-12-07 runs: ``results/diag_grid_{scale,band}.jsonl``, summary in
``results/diag_grid_coverage.txt``).
"""
import json
import os
import sys
from dataclasses import replace

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_foreign_coverage as bfc  # noqa: E402
import diag_residual_basis as drb  # noqa: E402
from astrocal.model import draws  # noqa: E402
from astrocal.model.dithers import dither_separation  # noqa: E402
from astrocal.model.footprint import convex_footprint, inside_footprint  # noqa: E402
from astrocal.model.inference import draw_linear  # noqa: E402
from astrocal.model.joint import JointModel  # noqa: E402
from astrocal.model.outliers import find_outliers, preliminary_field  # noqa: E402
from astrocal.model.refinement import fit_variant  # noqa: E402

BOOST = {"f": 1.0, "wcut": 0.0}
_residual_sigma = JointModel.residual_sigma


def _boosted(self, phi):
    """The residual's prior widths with those below ``BOOST["wcut"]`` (rad/px) times ``BOOST["f"]``."""
    sd = _residual_sigma(self, phi)
    if BOOST["f"] != 1.0 and self.n_res:
        fac = np.where(self.residual.frequencies() < BOOST["wcut"], BOOST["f"], 1.0)
        sd = sd * np.r_[fac, fac][None]
    return sd


def cover(model, phi, points, x, y, truth_uv, inside, n_draws=400):
    """z, error (px) and sd (px) of the map at the pixels inside the footprint (u then v)."""
    g, _ = draw_linear(model, np.repeat(phi[None], n_draws, 0), np.random.default_rng(1))
    resid = (model.residual, int(model.res_cols[0])) if model.n_res else None
    un = draws.unresolved_sd(np.repeat(phi[None], n_draws, 0), model.hyper_names, model.residual)
    u, v = draws.field_samples(g, model.degree, points.domain, x, y, resid, un)
    s, t = np.hstack([u, v]), np.concatenate(truth_uv)
    m, sd = s.mean(0), s.std(0, ddof=1)
    ins = np.tile(inside, 2)
    return ((m - t) / sd)[ins], ((m - t) / points.pixel_scale)[ins], (sd / points.pixel_scale)[ins]


def summary(z, e, sd=None, dlp=0.0):
    out = [float(np.mean(np.abs(z) < 1)), float(np.mean(np.abs(z) < 1.959964)), float(np.sqrt(np.mean(e**2)))]
    return out + ([float(np.sqrt(np.mean(sd**2)))] if sd is not None else []) + [float(dlp)]


def run(mode, seed, options=None, priors=None):
    info, points, settings = drb.setup(seed, "grid", options)
    settings = replace(settings, priors=replace(settings.priors, **(priors or {})))
    gm = info["params"]["grid_model"]
    x, y, _ = bfc.evaluation_pixels(205.0)
    inside = np.asarray(inside_footprint(convex_footprint(points.x, points.y), x, y), bool)
    truth_uv = info["truth"].field(x, y)
    jac = preliminary_field(points, 5, settings)
    excluded, *_ = find_outliers(points, 5, settings, jac)
    BOOST["f"] = 1.0
    vf = fit_variant(points, 5, replace(settings.priors, residual="matern52"), settings, jac, excluded)
    phi, pr = vf.phi, vf.priors
    model = JointModel(points, 5, hole_errors=settings.hole_errors, jacobian_field=vf.jac_field, priors=pr,
                       excluded=excluded, flexure=settings.flexure)
    lp0 = float(model.log_posterior(phi[None])[0])
    ds = dither_separation(points, periods_px=(gm["ripple_period_px"],))
    rec = {"seed": seed, "campaign_options": options or {}, "ripple_period_px": gm["ripple_period_px"],
           "ripple_amp_px": gm["ripple_amp_px"], "ripple_dir_rad": gm["ripple_dir"],
           "separable_at_period": ds["separable_fraction"][0], "basis": [pr.residual_basis, pr.residual_boundary],
           "hyper": {n: float(phi[k]) for k, n in enumerate(model.hyper_names) if "residual" in n}}
    z, e, sd = cover(model, phi, points, x, y, truth_uv, inside)
    rec["map"] = summary(z, e, sd)
    if mode == "scale":
        conv_um = points.mask_scale / 1e-3
        rec["hole_um_true"] = info["params"]["hole_error_um"]
        rec["hole_um_map"] = float(np.exp(phi[model.i_hole]) * conv_um)
        xi, yi = x[inside], y[inside]
        ph = 2 * np.pi * (np.cos(gm["ripple_dir"]) * xi + np.sin(gm["ripple_dir"]) * yi) / gm["ripple_period_px"]
        a = np.column_stack([np.cos(ph), np.sin(ph)])
        n_in, on_wave = len(xi), 0.0
        for c in range(2):
            ec = e[c * n_in:(c + 1) * n_in]
            coef, *_ = np.linalg.lstsq(a, ec, rcond=None)
            on_wave += np.sum((a @ coef) ** 2)
        rec["error_fraction_on_ripple_wave"] = float(on_wave / np.sum(e**2))
        for lab, idx, f in (("rms", model.i_res[0], 1.5), ("rms", model.i_res[0], 2.0), ("rms", model.i_res[0], 3.0),
                            ("hole", model.i_hole, 2.0), ("hole", model.i_hole, 0.5)):
            p2 = phi.copy()
            p2[idx] += np.log(f)
            z2, e2, _ = cover(model, p2, points, x, y, truth_uv, inside)
            rec[f"{lab}x{f:g}"] = summary(z2, e2, None, float(model.log_posterior(p2[None])[0]) - lp0)
    else:
        rec["half_period_px"] = dither_separation(points)["half_period_px"]
        BOOST["wcut"] = 2 * np.pi / rec["half_period_px"]
        rec["n_band"] = int(np.sum(model.residual.frequencies() < BOOST["wcut"]))
        JointModel.residual_sigma = _boosted
        try:
            for f in (1.0, 2.0, 4.0, 8.0):
                BOOST["f"] = f
                z2, e2, sd2 = cover(model, phi, points, x, y, truth_uv, inside)
                rec[f"f{f:g}"] = summary(z2, e2, sd2, float(model.log_posterior(phi[None])[0]) - lp0)
        finally:
            JointModel.residual_sigma = _residual_sigma
            BOOST["f"] = 1.0
    return rec


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode not in ("scale", "band"):
        raise SystemExit("MODE must be 'scale' or 'band'")
    opts = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    prs = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    with threadpool_limits(limits=1, user_api="blas"):
        for s in sys.argv[2].split(","):
            print(json.dumps(run(mode, int(s), opts, prs)), flush=True)
