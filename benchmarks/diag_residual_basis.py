"""Diagnosis of a foreign campaign's map coverage without the chain: for each model
configuration, the MAP hyperparameters and Laplace evidence of the scan
(:func:`astrocal.model.refinement.fit_variant`, the residual basis refined by the ladder of
``Priors.residual_refine``), 400 exact linear draws at the MAP, and at the bench's test
pixels inside the data footprint (``bench_foreign_coverage.evaluation_pixels``): the
fraction of 68 % intervals holding the truth, the z rms and the 1-sigma rms (px), without
(``noU``) and with (``U``) the unresolved field; the jitter, the residual's rms and length,
the refinements tried ``[m, boundary, log Z]`` and the spectral tail's sd (px).

Run:  python benchmarks/diag_residual_basis.py SEED[,SEED...] '[{"degree": 3}, {"degree": 3, "residual_basis": 16,
      "residual_boundary": 1.2, "residual_refine": []}]' [FAMILY [OUT [CAMPAIGN_OPTIONS]]]
(each configuration: ``degree``, optional ``residual`` (default true) and any ``Priors`` keys;
``OUT``: records appended to ``OUT.jsonl``; ``CAMPAIGN_OPTIONS``: a JSON object of
:func:`foreign_fields.draw_params` overrides, e.g. ``'{"offset_range_arcsec": 3.0}'``
for wider chopper offsets, ``'{"ripple_amp_px": 0}'`` for a grid without its ripple; the
pooled coverage per configuration printed).
"""
import json
import os
import sys
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import foreign_fields as ff
import bench_foreign_coverage as bfc
from astrocal.campaign import load_campaign
from astrocal.stages.fit_inputs import lab_points_for, mask_affine_sigma
from astrocal.model.inference import FitSettings, draw_linear
from astrocal.model.outliers import find_outliers, preliminary_field
from astrocal.model.refinement import fit_variant
from astrocal.model.joint import JointModel
from astrocal.model.priors import Priors
from astrocal.model import draws
from astrocal.model.footprint import convex_footprint, inside_footprint
from threadpoolctl import threadpool_limits

def setup(seed, fam="grid", options=None):
    tmp = Path(tempfile.mkdtemp(prefix=f"diag_{seed}_"))
    info = ff.write_foreign_campaign(tmp, fam, seed, **{"mask": "metis", **(options or {})})
    campaign = load_campaign(info["campaign"])
    points, _ = lab_points_for(campaign, campaign.lab)
    fs = campaign.fit
    ppm = mask_affine_sigma(fs, campaign.lab)
    settings = FitSettings(degree="auto", degree_range=tuple(fs.degree_range), degree_choice=fs.degree_choice,
                           seed=int(fs.seed), progress=False,
                           priors=Priors(field_prior=fs.field_prior, mask_affine_sigma_ppm=ppm, residual="auto"))
    shutil.rmtree(tmp, ignore_errors=True)
    return info, points, settings

def run(seed, configs, fam="grid", options=None):
    info, points, settings = setup(seed, fam, options)
    truth = info["truth"]
    x, y, grid = bfc.evaluation_pixels(205.0)
    fp = convex_footprint(points.x, points.y)
    inside = np.asarray(inside_footprint(fp, x, y), bool)
    ut, vt = truth.field(x, y)
    jac = preliminary_field(points, 5, settings)
    excluded, *_ = find_outliers(points, 5, settings, jac)
    rng = np.random.default_rng(1)
    records = []
    print(f"seed {seed} params nodes {info['params'].get('grid_nodes')} ripple {info['params'].get('ripple_amp_px'):.3f} period {info['params'].get('grid_model',{}).get('ripple_period_px',0):.0f}", flush=True)
    for cfg in configs:
        n = cfg.pop("degree")
        res = cfg.pop("residual", True)
        if "residual_refine" in cfg:
            cfg["residual_refine"] = tuple(tuple(r) for r in cfg["residual_refine"])
        if "residual_length" in cfg:
            cfg["residual_length"] = tuple(cfg["residual_length"])
        pr = replace(settings.priors, residual="matern52" if res else "none", **cfg)
        t0 = time.perf_counter()
        vf = fit_variant(points, n, pr, settings, jac, excluded)
        phi, logz, pr = vf.phi, vf.row["log_evidence"], vf.priors
        model = JointModel(points, n, hole_errors=settings.hole_errors, jacobian_field=vf.jac_field, priors=pr,
                         excluded=excluded, flexure=settings.flexure)
        g, d = draw_linear(model, np.repeat(phi[None], 400, 0), rng)
        resid = (model.residual, int(model.res_cols[0])) if model.n_res else None
        unres = draws.unresolved_sd(np.repeat(phi[None], 400, 0), model.hyper_names, model.residual)
        out = {}
        for lab, un in (("noU", None), ("U", unres)):
            u, v = draws.field_samples(g, n, points.domain, x, y, resid, un)
            s = np.hstack([u, v]); t = np.concatenate([ut, vt])
            m, sd = s.mean(0), s.std(0, ddof=1)
            z = (m - t) / sd
            ins = np.tile(inside, 2)
            out[lab] = (np.mean(np.abs(z[ins]) < 1), np.sqrt(np.mean(z[ins]**2)), np.sqrt(np.mean(sd[ins]**2)) / points.pixel_scale)
            z_u = z
        err = np.sqrt(np.mean(((m - t)[ins] / points.pixel_scale) ** 2))
        names = model.hyper_names
        hp = {nm: round(float(np.exp(phi[k]) / (points.pixel_scale if 'jitter' in nm or 'rms' in nm else 1)), 4) for k, nm in enumerate(names) if 'jitter' in nm or 'residual' in nm}
        rec = {"seed": seed, "family": fam, "campaign_options": options or {}, "degree": n, "residual": res, "config": {k: v for k, v in cfg.items()},
               "log_evidence": float(logz), "err_rms_inside_px": float(err),
               "in68": float(np.mean(np.abs(z_u[ins]) < 1)), "in95": float(np.mean(np.abs(z_u[ins]) < 1.959964)),
               "n_inside": int(ins.sum()), "z_rms": float(out["U"][1]), "in68_without_unresolved": float(out["noU"][0]),
               "sd_rms_inside_px": float(out["U"][2]), "refinements": vf.row.get("residual_refinements"),
               "basis": [int(pr.residual_basis), float(pr.residual_boundary)] if res else None,
               "tail_px": float(np.sqrt(model.residual_tail_variance(phi)[0]) / points.pixel_scale),
               "hyper": hp, "seconds": time.perf_counter() - t0}
        records.append(rec)
        print(f"  deg {n} res {res} {cfg} logZ {logz:.1f} err {err:.4f} | noU in68 {out['noU'][0]:.2f} zrms {out['noU'][1]:.2f} sd {out['noU'][2]:.4f} | U in68 {out['U'][0]:.2f} zrms {out['U'][1]:.2f} sd {out['U'][2]:.4f} | {hp} ref {vf.row.get('residual_refinements')} tail {np.sqrt(model.residual_tail_variance(phi)[0])/points.pixel_scale:.4f} t {time.perf_counter()-t0:.0f}s", flush=True)
    return records

def summary(records, label):
    """Pooled coverage of the records (one per campaign and configuration)."""
    n = np.array([r["n_inside"] for r in records])
    c68 = np.sum([r["in68"] * k for r, k in zip(records, n)]) / n.sum()
    c95 = np.sum([r["in95"] * k for r, k in zip(records, n)]) / n.sum()
    se = np.std([r["in68"] for r in records], ddof=1) / np.sqrt(len(records)) if len(records) > 1 else np.nan
    z = np.sqrt(np.sum([r["z_rms"] ** 2 * k for r, k in zip(records, n)]) / n.sum())
    err = np.median([r["err_rms_inside_px"] for r in records])
    return (f"{label}: {len(records)} campaigns, inside the footprint 68 % {100 * c68:.1f} % (+/- {100 * se:.1f} "
            f"campaign se), 95 % {100 * c95:.1f} %, z rms {z:.2f}, map error median {err:.4f} px")


if __name__ == "__main__":
    configs = json.loads(sys.argv[2])
    fam = sys.argv[3] if len(sys.argv) > 3 else "grid"
    seeds = [int(s) for s in sys.argv[1].split(",")]
    out = Path(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    options = json.loads(sys.argv[5]) if len(sys.argv) > 5 else None
    allrec = []
    with threadpool_limits(limits=1, user_api="blas"):
        for seed in seeds:
            recs = run(seed, [dict(c) for c in configs], fam, options)
            allrec += recs
            if out:
                with open(out.with_suffix(".jsonl"), "a") as f:
                    for r in recs:
                        f.write(json.dumps(r) + "\n")
    for k, c in enumerate(configs):
        sel = allrec[k::len(configs)]
        print(summary(sel, f"config {c}"))
