"""Benchmark: the default fit's credible intervals on lab campaigns whose distortion field is
NOT in the model's family, made without astrocal's simulators (``foreign_fields.py``).

For each of ``--campaigns`` campaigns (seeds from ``--first-seed``) of ``--family``
(``poly+grf``, ``grid``, ``mask-affine``, ``rendered``; several separated by commas, or
``all``), the campaign is written into a temporary directory by
:func:`foreign_fields.write_foreign_campaign` (``--mask dense`` for the 21 x 21 grid),
measured with ``astrocal measure`` first when it is made of frames (``rendered``), loaded
with ``astrocal.campaign.load_campaign``, its points assembled with
``astrocal.stages.fit_inputs.lab_points_for`` and fitted with ``fit_joint`` as ``astrocal fit`` runs
it (``degree = "auto"``, the campaign's ``[fit]`` settings, the mask's metrology from
``mask_affine_sigma``). Recorded per campaign (one JSON line in ``<out>.jsonl`` as each
finishes):

* **map coverage**: the 68 % / 95 % central intervals of ``fit.field_samples`` (u and v)
  against ``G_true`` at a 5 x 5 grid of test pixels spanning the whole detector (pixel
  centres 0 ... 2047) and a 9 x 9 grid inside it (inset ``--inner-inset`` px, default 205
  = 10 %), split by ``fit.inside_footprint`` (inside / beyond the data footprint), and the
  z-scores ``(posterior mean - truth) / posterior sd``;
* **pixel scale**: ``fit.pixel_scale_samples()`` against the truth's areal pixel scale,
  DEFINED as ``sqrt|det A|`` of the 2 x 2 matrix ``A`` (arcsec/px) of the L2 projection of
  ``G_true`` onto the degree-1 Legendre terms ``P_1(t)``, ``P_1(s)`` over the detector
  domain ``(-0.5, 2047.5) x (-0.5, 2047.5)`` (``t, s`` normalised to [-1, 1]), computed by
  composite Gauss-Legendre quadrature (``foreign_fields.true_pixel_scale``). For a
  polynomial field this is exactly its degree-1 Legendre coefficients, which is what
  ``pixel_scale_samples`` reads from each draw;
* **map error**: rms over the test pixels inside the footprint of ``|posterior mean -
  truth|`` (the vector's length), in pixels (divided by the nominal 5.47 mas/px); also
  over all test pixels, and the posterior's own 1-sigma there;
* hole errors (68 / 95 % against the truth with its six affine patterns removed), the
  mask's net scale and shears (``mask_scale``, ``mask_shear_plus``, ``mask_shear_cross``
  against the truth's), the chosen degree and whether it is the top of the range, whether
  the fit kept a residual field (when the model offers one), convergence
  (``fit.diagnostics``), outliers flagged, fit time;
* **the peer**: what a competent team would run without astrocal: a weighted linear
  least-squares fit of the same polynomial (Legendre, same degree as astrocal chose, same
  domain) with free per-exposure poses (scale, rotation, translation x and y; the
  reference exposure fixed at the identity plus its commanded offset) and hole
  self-calibration (a free error per hole, with the six affine hole-error patterns
  constrained to zero, i.e. the nominal mask's scale and shears taken as exact), weights
  from the stated sigmas (centroid covariance times the nominal pixel scale squared). Its
  map error at the same inside pixels, its own 1-sigma from its covariance (formal, and
  scaled by sqrt(chi2/dof)) and that sigma's coverage; astrocal's map error over the
  peer's (the ratio; < 1: astrocal is closer to the truth). Also the peer's error with
  the noise-free true positions (the misfit floor of a polynomial of that degree with
  that mask and those constraints, which no noise level removes).

  That peer is nearly singular: with similarity poses and translation dithers, the
  field's two conformal quadratic terms ``c z^2`` (``z = x + i y``, complex ``c``) are
  degenerate with the poses and the hole errors to first order (``c (z + o)^2 - c z^2 =
  2 c o z + c o^2`` is a similarity of ``z``), so its formal 1-sigma in those two modes is
  pixels and the noise (and, for a non-polynomial field, the misfit) lands there. Two
  variants are therefore run too: ``peer_q`` also constrains the two conformal quadratic
  hole-error patterns to zero (the competent fix: 8 constraints), ``peer_t`` keeps the six
  constraints with translation-only poses (the true scale and rotation jitter, 2e-5, then
  biases it). Each peer's numbers and ratio are recorded (``peer_*``, ``peer_q_*``,
  ``peer_t_*``, ``ratio_to_<peer>``). Because astrocal's degree need not suit the peer
  (e.g. a low degree plus astrocal's residual field), ``peer_q`` is also run at degrees
  3-8: at the degree its BIC prefers (``peer_q_bic``) and at the degree closest to the
  truth (``peer_q_oracle``, an oracle: the best any degree of it reaches).

The field families are foreign: a polynomial plus a smooth Gaussian random field
(correlation length 1/10-1/4 of the detector), a ray-trace-like table interpolated by a
cubic spline, a mask with a real net scale and shears (with its metrology as the prior),
and rendered frames measured by astrocal. Fields of these families are not polynomials, so
the intervals are expected to hold the truth only as far as the polynomial (or residual
field) represents it; this benchmark measures how far that is.

``--residual none|matern52|auto`` sets ``Priors.residual`` (the residual field beyond the
polynomial; default: the campaign's ``[fit] residual``, i.e. the fit ``astrocal fit`` runs).

Run (smoke):
    python benchmarks/bench_foreign_coverage.py --family poly+grf --campaigns 3 --processes 1
All families, more campaigns (each fit ~10-30 s on one core):
    python benchmarks/bench_foreign_coverage.py --family all --campaigns 40 --processes 2 \
        --first-seed 1000 --out benchmarks/results/foreign_coverage.json
Re-print a summary:
    python benchmarks/bench_foreign_coverage.py --summarise --out benchmarks/results/foreign_coverage.json
A long run in instalments (``--resume`` keeps ``<out>.jsonl``'s records and fits only the
campaigns it lacks):
    python benchmarks/bench_foreign_coverage.py --family grid --campaigns 100 --resume \
        --out benchmarks/results/foreign_coverage_grid100.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foreign_fields as ff  # noqa: E402

NOMINAL_SCALE = ff.PIXEL_SCALE
HERE = Path(__file__).resolve().parent


# the shared helpers of the coverage benchmarks (the GENERATOR above stays independent of
# astrocal's simulators; the benchmark may share plain helpers)
from bench_model_coverage import binomial, detector_grid, interval_hits, quiet_logs  # noqa: E402


# --------------------------------------------------------------------------- small helpers
def evaluation_pixels(inner_inset):
    """The 5 x 5 grid over the whole detector, then the 9 x 9 grid inside; the grid of
    each pixel (5 or 9)."""
    x5, y5 = detector_grid(5)
    x9, y9 = detector_grid(9, inset=inner_inset)
    return (np.concatenate([x5, x9]), np.concatenate([y5, y9]),
            np.concatenate([np.full(x5.size, 5), np.full(x9.size, 9)]))


def source_state():
    """The astrocal source the fits ran on: commit and whether ``src/`` had changes."""
    try:
        root = HERE.parent
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return {"commit": head, "src_modified": bool(dirty),
                "src_changes": dirty.splitlines()[:20]}
    except Exception as exc:  # not a git checkout
        return {"error": str(exc)}


# --------------------------------------------------------------------------- the peer
def legendre_design(x, y, degree):
    """Legendre basis ``P_i(t) P_j(s)`` over the detector domain in astrocal's term order
    (total degree, then decreasing power of x), written with numpy alone."""
    from numpy.polynomial import legendre as L
    t, s = ff._norm(x, y)
    vt, vs = L.legvander(np.ravel(t), degree), L.legvander(np.ravel(s), degree)
    terms = [(d - j, j) for d in range(degree + 1) for j in range(d + 1)]
    return np.column_stack([vt[:, i] * vs[:, j] for i, j in terms])


def hole_constraint_patterns(m, conformal_quadratic=False):
    """The hole-error patterns a peer constrains to zero, (2H, K): the six affine ones
    (about the holes' centroid) and, with ``conformal_quadratic``, the two conformal
    quadratic ones ``c (z - zbar)^2`` (complex ``c``; ``z = x + i y``)."""
    pat = ff.affine_patterns(m).reshape(2 * len(m), 6)
    if not conformal_quadratic:
        return pat
    x, y = (np.asarray(m, float) - np.mean(m, axis=0)).T
    q = np.zeros((len(m), 2, 2))
    q[:, 0, 0], q[:, 1, 0] = x**2 - y**2, 2 * x * y      # z^2
    q[:, 0, 1], q[:, 1, 1] = -2 * x * y, x**2 - y**2     # i z^2
    return np.hstack([pat, q.reshape(2 * len(m), 2)])


def peer_fit(x, y, cov, exposure, hole, hole_xy, offsets, degree, reference=0, poses="similarity",
             conformal_quadratic=False):
    """Weighted linear least squares of ``G(p) = m + delta + s m + theta R m + t`` with a
    Legendre ``G`` of ``degree``, free poses for every exposure but the reference (fixed at
    the identity plus its commanded offset; ``poses="similarity"``: scale, rotation and
    translation, ``"translation"``: translation only) and free hole errors with their six
    affine patterns (and, with ``conformal_quadratic``, the two conformal quadratic ones)
    constrained to zero. Returns a dict with the coefficients ``cu, cv``, their
    covariance (formal), chi2 and dof. ``hole`` indexes ``hole_xy`` (arcsec).

    With similarity poses and translation dithers the conformal quadratic field terms
    ``c z^2`` are degenerate with the poses and the hole errors to first order
    (``c (z + o)^2 - c z^2 = 2 c o z + c o^2`` is a similarity): only the field's departure
    from an affine map and the poses' action on the hole errors break it. Without a
    constraint on them (the peer as specified) their formal 1-sigma is of order pixels."""
    n = len(x)
    nt = (degree + 1) * (degree + 2) // 2
    used = np.unique(hole)
    remap = -np.ones(len(hole_xy), int)
    remap[used] = np.arange(used.size)
    hl = remap[hole]
    m_all = np.asarray(hole_xy, float)[used]
    H = used.size
    # the hole errors: delta = N beta, N spanning the complement of the constrained patterns
    pat = hole_constraint_patterns(m_all, conformal_quadratic)
    q, _ = np.linalg.qr(pat, mode="complete")
    N = q[:, pat.shape[1]:]                              # (2H, 2H - K)
    exps = [e for e in range(len(offsets)) if e != reference]
    slot = {e: k for k, e in enumerate(exps)}
    per = 4 if poses == "similarity" else 2
    npose = per * len(exps)
    P = 2 * nt + npose + N.shape[1]
    X = np.zeros((n, 2, P))
    B = legendre_design(x, y, degree)
    X[:, 0, :nt] = B
    X[:, 1, nt:2 * nt] = B
    m = m_all[hl]
    for e in exps:
        sel = exposure == e
        c = 2 * nt + per * slot[e]
        X[sel, 0, c] = -1.0                                           # translation x
        X[sel, 1, c + 1] = -1.0                                       # translation y
        if poses == "similarity":
            X[sel, 0, c + 2], X[sel, 1, c + 2] = -m[sel, 0], -m[sel, 1]  # scale
            X[sel, 0, c + 3], X[sel, 1, c + 3] = m[sel, 1], -m[sel, 0]   # rotation: -theta R m
    X[:, 0, 2 * nt + npose:] = -N[2 * hl]
    X[:, 1, 2 * nt + npose:] = -N[2 * hl + 1]
    b = m.copy()
    ref = exposure == reference
    b[ref] += np.asarray(offsets, float)[reference]
    # whiten: focal-plane covariance = nominal scale^2 x centroid covariance
    cf = np.asarray(cov, float) * NOMINAL_SCALE**2
    L = np.linalg.cholesky(cf)
    Xw = np.linalg.solve(L, X)                            # (n, 2, P)
    bw = np.linalg.solve(L, b[..., None])[..., 0]
    A = Xw.reshape(2 * n, P)
    rhs = bw.reshape(2 * n)
    Q, R = np.linalg.qr(A)
    beta = np.linalg.solve(R, Q.T @ rhs)
    Rinv = np.linalg.inv(R)
    covb = Rinv @ Rinv.T
    resid = rhs - A @ beta
    dof = 2 * n - P
    return {"cu": beta[:nt], "cv": beta[nt:2 * nt], "cov": covb[:2 * nt, :2 * nt], "nt": nt,
            "chi2": float(resid @ resid), "dof": int(dof), "degree": int(degree), "n_params": int(P),
            "n_obs": int(2 * n),
            "delta": (N @ beta[2 * nt + npose:]).reshape(H, 2), "hole_index": used}


def peer_map(peer, x, y):
    """The peer's map ``(u, v)`` and its formal 1-sigma ``(su, sv)`` at pixels."""
    B = legendre_design(x, y, peer["degree"])
    nt = peer["nt"]
    u, v = B @ peer["cu"], B @ peer["cv"]
    cu, cv = peer["cov"][:nt, :nt], peer["cov"][nt:, nt:]
    su = np.sqrt(np.einsum("ij,jk,ik->i", B, cu, B))
    sv = np.sqrt(np.einsum("ij,jk,ik->i", B, cv, B))
    return u, v, su, sv


# --------------------------------------------------------------------------- measure stage
def run_measure(campaign_path):
    """``astrocal measure`` on a campaign (a process, as a user runs it); returns
    ``(ok, seconds, message)``."""
    exe = shutil.which("astrocal")
    cmd = [exe] if exe else [sys.executable, "-c", "from astrocal.cli import main; main()"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd + ["measure", str(campaign_path)], capture_output=True, text=True,
                       cwd=Path(campaign_path).parent, timeout=3600)
    dt = time.perf_counter() - t0
    text = (r.stdout + r.stderr).strip()
    lines = text.splitlines()
    failed = [ln for ln in lines if ln.startswith("FAILED") or "ERROR" in ln]
    return r.returncode == 0, dt, "\n".join(failed[:5]) if failed else (lines[-1] if lines else "")


def measured_pulls(out_dir, truth):
    """Measured positions against the true ones (rendered campaigns): bias, rms of the
    error and of error / sigma, counts, over the spots the fit uses (flags outside
    ``astrocal.model.data.DEFAULT_REJECT_FLAGS``, as ``lab_points_for`` reads them); the
    spots it leaves out (``n_rejected``: partial spots at the detector's edges...) apart,
    with the rms of their error (``rejected_rms_px``)."""
    from astropy.table import Table
    from astrocal.model.data import DEFAULT_REJECT_FLAGS
    idx = {int(h): k for k, h in enumerate(truth.hole_ids)}
    dx, dy, sx, sy, n_id, n_vis, rej = [], [], [], [], 0, 0, []
    for e in range(len(truth.commanded)):
        path = Path(out_dir) / "measured" / f"grid_{e:02d}.ecsv"
        n_vis += int(np.isfinite(truth.positions[e, :, 0]).sum())
        if not path.exists():
            continue
        t = Table.read(path, format="ascii.ecsv")
        t = t[np.asarray(t["hole_id"]) >= 0]
        n_id += len(t)
        k = np.array([idx[int(h)] for h in t["hole_id"]], int)
        tp = truth.positions[e, k]
        used = (np.asarray(t["flags"], int) & DEFAULT_REJECT_FLAGS) == 0
        bad = np.isfinite(tp[:, 0]) & ~used
        rej.append(np.hypot(np.asarray(t["x"], float)[bad] - tp[bad, 0], np.asarray(t["y"], float)[bad] - tp[bad, 1]))
        ok = np.isfinite(tp[:, 0]) & used
        dx.append(np.asarray(t["x"], float)[ok] - tp[ok, 0])
        dy.append(np.asarray(t["y"], float)[ok] - tp[ok, 1])
        sx.append(np.asarray(t["sigma_x"], float)[ok])
        sy.append(np.asarray(t["sigma_y"], float)[ok])
    if not dx:
        return {"n_identified": 0, "n_visible": n_vis}
    dx, dy, sx, sy, rej = map(np.concatenate, (dx, dy, sx, sy, rej))
    return {"n_identified": n_id, "n_visible": n_vis,
            "bias_px": [float(dx.mean()), float(dy.mean())],
            "rms_px": float(np.sqrt(0.5 * np.mean(dx**2 + dy**2))),
            "pull_rms": float(np.sqrt(0.5 * np.mean((dx / sx) ** 2 + (dy / sy) ** 2))),
            "median_sigma_px": float(np.median(np.concatenate([sx, sy]))),
            "n_rejected": int(len(rej)),
            "rejected_rms_px": float(np.sqrt(0.5 * np.mean(rej**2))) if len(rej) else None}


# --------------------------------------------------------------------------- one campaign
RECORDED_PARAMS = ("mask", "corner_px", "poly_degree", "grf", "grf_rms_px", "grf_length_frac",
                   "grid_nodes", "ripple_amp_px", "hole_error_um", "affine_sigma_ppm", "rotation_deg",
                   "flux_e", "base")


def run_campaign(task):
    """Write, (measure,) fit and evaluate one campaign; returns a JSON-able record."""
    quiet_logs()
    from astrocal.campaign import load_campaign
    from astrocal.stages.fit_inputs import lab_points_for, mask_affine_sigma
    from astrocal.model.dithers import dither_separation
    from astrocal.model.inference import FitSettings, fit_joint
    from astrocal.model.priors import Priors

    fam, seed = task["family"], int(task["seed"])
    rec = {"family": fam, "seed": seed, "mask": task.get("mask", "metis"), "source": task.get("source")}
    if task.get("campaign_options"):
        rec["campaign_options"] = task["campaign_options"]
    tmp = Path(tempfile.mkdtemp(prefix=f"foreign_{fam.replace('+', '_')}_{seed}_"))
    try:
        t0 = time.perf_counter()
        try:
            info = ff.write_foreign_campaign(tmp, fam, seed, **{"mask": task.get("mask", "metis"),
                                                                **(task.get("campaign_options") or {})})
        except Exception as exc:
            rec["error"] = f"generator: {type(exc).__name__}: {exc}"
            return rec
        truth = info["truth"]
        rec.update({k: info["params"].get(k) for k in RECORDED_PARAMS})
        rec["write_seconds"] = time.perf_counter() - t0
        rec["n_points_true"], rec["n_holes_true"] = info["n_points"], info["n_observed_holes"]
        if fam == "rendered":
            ok, dt, msg = run_measure(info["campaign"])
            rec["measure_seconds"], rec["measure_ok"] = dt, ok
            if not ok:
                rec["measure_message"] = msg
            rec["measured"] = measured_pulls(tmp, truth)
            if not ok and not rec["measured"].get("n_identified"):
                rec["error"] = f"astrocal measure failed: {msg}"
                return rec
        try:
            campaign = load_campaign(info["campaign"])
            points, _ = lab_points_for(campaign, campaign.lab)
            rec["dither_half_period_px"] = (dither_separation(points) or {}).get("half_period_px")
            fs = campaign.fit
            ppm = mask_affine_sigma(fs, campaign.lab)
            settings = FitSettings(degree="auto", degree_range=tuple(task.get("degree_range") or fs.degree_range),
                                   degree_choice=fs.degree_choice, seed=int(fs.seed), progress=False,
                                   sampler=task.get("sampler") or "emcee",
                                   priors=Priors(field_prior=fs.field_prior, mask_affine_sigma_ppm=ppm,
                                                 residual=task.get("residual") or fs.residual,
                                                 **({"residual_basis": int(task["residual_basis"])}
                                                    if task.get("residual_basis") else {}),
                                                 **({"residual_lengths": task["residual_lengths"]}
                                                    if task.get("residual_lengths") else {})))
        except Exception as exc:
            rec["error"] = f"loading: {type(exc).__name__}: {exc}"
            return rec
        rec["mask_affine_sigma_ppm_prior"] = ppm
        rec["residual_setting"] = settings.priors.residual if hasattr(settings.priors, "residual") else None
        rec["sampler"] = settings.sampler
        rec.update(n_points=int(points.n_points), n_holes=int(points.n_holes))
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            fit = fit_joint(points, settings)
        except Exception as exc:  # a failed fit is a finding
            rec["error"] = f"fit: {type(exc).__name__}: {exc}"
            return rec
        rec["fit_seconds"] = time.perf_counter() - t0
        rec["fit_cpu_seconds"] = time.process_time() - c0
        rec.update(evaluate(fit, truth, points, task.get("inner_inset", 205.0)))
        return rec
    finally:
        if task.get("keep"):
            dest = Path(task["keep"]) / tmp.name
            shutil.copytree(tmp, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.fits"))
        shutil.rmtree(tmp, ignore_errors=True)


#: the peers: the one specified (similarity poses, six affine hole patterns fixed), the
#: same with the two conformal quadratic hole patterns fixed too (what removes its
#: degeneracy), and translation-only poses (six affine patterns fixed)
PEERS = {"peer": {}, "peer_q": {"conformal_quadratic": True}, "peer_t": {"poses": "translation"}}


def evaluate_peers(degree, points, truth, x, y, inside, ut, vt):
    """Every peer's map error, formal 1-sigma and its coverage at the test pixels inside
    the footprint, and its error on the noise-free true positions (the misfit floor)."""
    out = {}
    pin = inside
    idx = {int(h): k for k, h in enumerate(truth.hole_ids)}
    hk = np.array([idx[int(h)] for h in np.asarray(points.hole_ids)[points.hole]])
    tp = truth.positions[points.exposure, hk]
    for name, kw in PEERS.items():
        try:
            peer = peer_fit(points.x, points.y, points.cov, points.exposure, points.hole, points.hole_xy,
                            points.offsets, degree, **kw)
            pu, pv, psu, psv = peer_map(peer, x, y)
            pe = np.hypot(pu - ut, pv - vt) / NOMINAL_SCALE
            zz = np.concatenate([((pu - ut) / psu)[pin], ((pv - vt) / psv)[pin]])
            scale = np.sqrt(peer["chi2"] / peer["dof"]) if peer["dof"] > 0 else np.nan
            floor = None
            if np.isfinite(tp).all():
                pf = peer_fit(tp[:, 0], tp[:, 1], points.cov, points.exposure, points.hole, points.hole_xy,
                              points.offsets, degree, **kw)
                fu, fv, _, _ = peer_map(pf, x, y)
                floor = float(np.sqrt(np.mean((np.hypot(fu - ut, fv - vt) / NOMINAL_SCALE)[pin] ** 2)))
            has = bool(pin.any())
            out.update({
                f"{name}_err_rms_inside_px": float(np.sqrt(np.mean(pe[pin] ** 2))) if has else None,
                f"{name}_err_rms_all_px": float(np.sqrt(np.mean(pe**2))),
                f"{name}_sd_rms_inside_px": float(np.sqrt(np.mean(np.concatenate([psu[pin], psv[pin]]) ** 2))
                                                  / NOMINAL_SCALE) if has else None,
                f"{name}_in68": float(np.mean(np.abs(zz) <= 1.0)) if has else None,
                f"{name}_in95": float(np.mean(np.abs(zz) <= 1.959964)) if has else None,
                f"{name}_z_rms": float(np.sqrt(np.mean(zz**2))) if has else None,
                f"{name}_in68_scaled": float(np.mean(np.abs(zz / scale) <= 1.0)) if has else None,
                f"{name}_in95_scaled": float(np.mean(np.abs(zz / scale) <= 1.959964)) if has else None,
                f"{name}_chi2_dof": float(peer["chi2"] / peer["dof"]) if peer["dof"] > 0 else None,
                f"{name}_noisefree_err_rms_inside_px": floor,
            })
        except Exception as exc:
            out[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
    # peer_q at a degree of its own: by BIC (what a team could do), and the degree closest
    # to the truth (an oracle: the best any degree of it reaches)
    try:
        rows = []
        for n in range(3, 9):
            pq = peer_fit(points.x, points.y, points.cov, points.exposure, points.hole, points.hole_xy,
                          points.offsets, n, conformal_quadratic=True)
            pu, pv, _, _ = peer_map(pq, x, y)
            pe = np.hypot(pu - ut, pv - vt) / NOMINAL_SCALE
            bic = pq["chi2"] + pq["n_params"] * np.log(pq["n_obs"])
            rows.append((n, bic, float(np.sqrt(np.mean(pe[pin] ** 2))) if pin.any() else np.nan))
        kb = int(np.argmin([r[1] for r in rows]))
        ko = int(np.nanargmin([r[2] for r in rows]))
        out.update(peer_q_bic_degree=rows[kb][0], peer_q_bic_err_rms_inside_px=rows[kb][2],
                   peer_q_oracle_degree=rows[ko][0], peer_q_oracle_err_rms_inside_px=rows[ko][2],
                   peer_q_err_by_degree={str(r[0]): r[2] for r in rows})
    except Exception as exc:
        out["peer_q_bic_error"] = f"{type(exc).__name__}: {exc}"
    return out


def evaluate(fit, truth, points, inner_inset):
    """The record's numbers for one fit against its truth."""
    out = {}
    x, y, grid = evaluation_pixels(inner_inset)
    inside = np.asarray(fit.inside_footprint(x, y), bool)
    ut, vt = truth.field(x, y)
    u, v = fit.field_samples(x, y)
    s = np.hstack([u, v])
    t = np.concatenate([ut, vt])
    in68, in95 = interval_hits(s, t)
    mean, sd = s.mean(0), s.std(0, ddof=1)
    z = (mean - t) / sd
    npx = x.size
    err_vec = np.hypot(mean[:npx] - ut, mean[npx:] - vt) / NOMINAL_SCALE       # px, per pixel
    out.update(map_in68=in68.tolist(), map_in95=in95.tolist(), map_z=z.tolist(),
               map_inside=np.tile(inside, 2).tolist(), map_grid=np.tile(grid, 2).tolist(),
               map_sd_px=(sd / NOMINAL_SCALE).tolist(),
               map_err_rms_inside_px=float(np.sqrt(np.mean(err_vec[inside] ** 2))) if inside.any() else None,
               map_err_rms_all_px=float(np.sqrt(np.mean(err_vec**2))),
               map_sd_rms_inside_px=float(np.sqrt(np.mean(np.concatenate([sd[:npx][inside], sd[npx:][inside]]) ** 2))
                                          / NOMINAL_SCALE) if inside.any() else None)
    # pixel scale
    ps = fit.pixel_scale_samples()
    ps_true = truth.pixel_scale()
    p68, p95 = interval_hits(ps[:, None], [ps_true])
    out.update(scale_true=ps_true, scale_mean=float(ps.mean()), scale_sd=float(ps.std(ddof=1)),
               scale_in68=bool(p68[0]), scale_in95=bool(p95[0]),
               scale_z=float((ps.mean() - ps_true) / ps.std(ddof=1)),
               scale_err_ppm=float((ps.mean() / ps_true - 1) * 1e6))
    # hole errors and the mask's net scale and shears, over the holes the fit used
    hole_ids = np.asarray(fit.hole_ids)
    fit_set = set(int(h) for h in hole_ids)
    true_set = set(int(h) for h in truth.hole_ids[truth.observed])
    out["gauge_holes_match"] = fit_set == true_set
    if fit.hole_samples is not None and len(hole_ids):
        hs = np.asarray(fit.hole_samples).reshape(len(fit.hole_samples), -1)
        ht = truth.hole_errors_perp(hole_ids).ravel()
        h68, h95 = interval_hits(hs, ht)
        hz = (hs.mean(0) - ht) / hs.std(0, ddof=1)
        out.update(holes_in68=int(h68.sum()), holes_in95=int(h95.sum()), holes_n=int(h68.size),
                   holes_rms_z=float(np.sqrt(np.mean(hz**2))))
    names = list(fit.param_names)
    want = ["mask_scale", "mask_shear_plus", "mask_shear_cross"]
    if all(w in names for w in want) and fit.g_samples.shape[1] >= len(names):
        cols = [names.index(w) for w in want]
        ms = fit.g_samples[:, cols]
        mt = truth.net_mask_affine(hole_ids)
        a68, a95 = interval_hits(ms, mt)
        out.update(mask_affine_true=mt.tolist(), mask_affine_mean=ms.mean(0).tolist(),
                   mask_affine_sd=ms.std(0, ddof=1).tolist(), mask_affine_in68=a68.tolist(),
                   mask_affine_in95=a95.tolist())
    # degree, residual field, convergence
    d = fit.diagnostics
    rng = tuple(fit.settings.degree_range)
    out.update(
        chosen_degree=int(fit.degree),
        degree_at_top=bool(fit.settings.degree == "auto" and fit.degree == rng[1]),
        degree_range=list(rng),
        residual_field=bool(getattr(fit, "residual", None) is not None),
        evidence=[{k: (bool(e[k]) if k == "residual" else (float(e[k]) if k != "degree" else int(e[k])))
                   for k in ("degree", "residual", "log_evidence", "probability") if k in e}
                  for e in fit.evidence],
        n_outliers=int(np.sum(fit.outliers)), converged=bool(d.converged),
        tau_max=float(np.nanmax(d.tau)), n_steps=int(d.n_steps), n_eff_min=float(np.min(d.n_effective)),
        acceptance=float(d.acceptance), unconstrained=[str(u_) for u_ in fit.unconstrained],
    )
    # the peers, at astrocal's degree, on the same points (all of them: no outlier model)
    out.update(evaluate_peers(fit.degree, points, truth, x, y, inside, ut, vt))
    if out.get("map_err_rms_inside_px") is not None:
        for name in list(PEERS) + ["peer_q_bic", "peer_q_oracle"]:
            pe = out.get(f"{name}_err_rms_inside_px")
            if pe:
                out[f"ratio_to_{name}"] = out["map_err_rms_inside_px"] / pe
    return out


# --------------------------------------------------------------------------- summary
def _cov_row(records, select, label):
    """(label, n intervals, 68 %, campaign se, 95 %, campaign se, z rms) over the test-pixel
    intervals where ``select(record) -> bool array`` holds."""
    a68, a95, zz, per68, per95 = [], [], [], [], []
    for r in records:
        k = select(r)
        if not k.any():
            continue
        h68 = np.asarray(r["map_in68"])[k]
        h95 = np.asarray(r["map_in95"])[k]
        a68.append(h68)
        a95.append(h95)
        zz.append(np.asarray(r["map_z"])[k])
        per68.append(h68.mean())
        per95.append(h95.mean())
    if not a68:
        return (label, 0, np.nan, np.nan, np.nan, np.nan, np.nan)
    a68, a95, zz = map(np.concatenate, (a68, a95, zz))
    c68 = float(np.std(per68, ddof=1) / np.sqrt(len(per68))) if len(per68) > 1 else np.nan
    c95 = float(np.std(per95, ddof=1) / np.sqrt(len(per95))) if len(per95) > 1 else np.nan
    return (label, int(a68.size), float(a68.mean()), c68, float(a95.mean()), c95, float(np.sqrt(np.mean(zz**2))))


def summarise(records, label):
    good = [r for r in records if "error" not in r]
    bad = [r for r in records if "error" in r]
    print(f"\n== {label}: {len(good)} campaigns fitted, {len(bad)} failed ==")
    for r in bad:
        print(f"   failed seed {r['seed']}: {r['error']}")
    if not good:
        return {"campaigns": 0, "failed": len(bad), "errors": [r["error"] for r in bad]}
    out = {"campaigns": len(good), "failed": len(bad)}
    rows = [
        _cov_row(good, lambda r: np.asarray(r["map_inside"], bool), "map inside footprint"),
        _cov_row(good, lambda r: ~np.asarray(r["map_inside"], bool), "map beyond footprint"),
        _cov_row(good, lambda r: np.ones(len(r["map_in68"]), bool), "map all test pixels"),
        _cov_row(good, lambda r: np.asarray(r["map_grid"]) == 5, "map 5x5 (whole detector)"),
        _cov_row(good, lambda r: (np.asarray(r["map_grid"]) == 5) & np.asarray(r["map_inside"], bool),
                 "  5x5 inside"),
        _cov_row(good, lambda r: (np.asarray(r["map_grid"]) == 5) & ~np.asarray(r["map_inside"], bool),
                 "  5x5 beyond"),
        _cov_row(good, lambda r: np.asarray(r["map_grid"]) == 9, "map 9x9 (inner)"),
    ]
    print(f"{'quantity':28s} {'n':>6s}  {'68% cover':>9s} {'+/-camp':>7s}  {'95% cover':>9s} {'+/-camp':>7s}  {'z rms':>6s}")
    for name, n, p68, c68, p95, c95, zr in rows:
        print(f"{name:28s} {n:6d}  {100 * p68:8.1f}% {100 * c68:6.1f}%  {100 * p95:8.1f}% {100 * c95:6.1f}%  {zr:6.2f}")
        out[name.strip()] = {"n_intervals": n, "cover68": p68, "se68_campaign": c68, "cover95": p95,
                             "se95_campaign": c95, "z_rms": zr}
    s68 = np.array([r["scale_in68"] for r in good], float)
    s95 = np.array([r["scale_in95"] for r in good], float)
    sz = np.array([r["scale_z"] for r in good])
    se = np.array([r["scale_err_ppm"] for r in good])
    p68, e68 = binomial(s68.sum(), len(s68))
    p95, e95 = binomial(s95.sum(), len(s95))
    print(f"{'pixel scale':28s} {len(good):6d}  {100 * p68:8.1f}% {100 * e68:6.1f}%  {100 * p95:8.1f}% {100 * e95:6.1f}%  "
          f"{np.sqrt(np.mean(sz**2)):6.2f}   (binomial se; error ppm: median {np.median(se):+.1f}, "
          f"rms {np.sqrt(np.mean(se**2)):.1f}; posterior sd ppm median "
          f"{np.median([1e6 * r['scale_sd'] / r['scale_true'] for r in good]):.1f})")
    out["pixel scale"] = {"cover68": p68, "cover95": p95, "z_rms": float(np.sqrt(np.mean(sz**2))),
                          "err_ppm_median": float(np.median(se)), "err_ppm_rms": float(np.sqrt(np.mean(se**2)))}
    hr = [r for r in good if "holes_n" in r]
    if hr:
        n = sum(r["holes_n"] for r in hr)
        p68, p95 = sum(r["holes_in68"] for r in hr) / n, sum(r["holes_in95"] for r in hr) / n
        print(f"{'hole errors (x and y)':28s} {n:6d}  {100 * p68:8.1f}%          {100 * p95:8.1f}%          "
              f"(median rms z {np.median([r['holes_rms_z'] for r in hr]):.2f})")
        out["hole errors"] = {"n": n, "cover68": p68, "cover95": p95}
    ma = [r for r in good if "mask_affine_in68" in r]
    if ma:
        a68 = np.concatenate([r["mask_affine_in68"] for r in ma])
        a95 = np.concatenate([r["mask_affine_in95"] for r in ma])
        zz = np.concatenate([(np.array(r["mask_affine_mean"]) - r["mask_affine_true"]) / np.array(r["mask_affine_sd"])
                             for r in ma])
        print(f"{'mask scale + 2 shears':28s} {a68.size:6d}  {100 * a68.mean():8.1f}%          {100 * a95.mean():8.1f}%"
              f"          {np.sqrt(np.mean(zz**2)):6.2f}")
        out["mask affine"] = {"n": int(a68.size), "cover68": float(a68.mean()), "cover95": float(a95.mean()),
                              "z_rms": float(np.sqrt(np.mean(zz**2)))}
    # map error and the peer
    me = np.array([r["map_err_rms_inside_px"] for r in good if r.get("map_err_rms_inside_px") is not None])
    msd = np.array([r["map_sd_rms_inside_px"] for r in good if r.get("map_sd_rms_inside_px") is not None])
    print(f"map error rms inside the footprint (px): median {np.median(me):.4f}, mean {me.mean():.4f}, "
          f"range {me.min():.4f}-{me.max():.4f}; posterior 1-sigma rms there: median {np.median(msd):.4f}")
    out["map_err_rms_inside_px"] = {"median": float(np.median(me)), "mean": float(me.mean()),
                                    "min": float(me.min()), "max": float(me.max())}
    labels = {"peer": "peer as specified (similarity poses, 6 affine hole patterns fixed)",
              "peer_q": "peer_q (the same + the 2 conformal quadratic hole patterns fixed)",
              "peer_t": "peer_t (translation-only poses, 6 affine hole patterns fixed)"}
    for name in PEERS:
        pr = [r for r in good if r.get(f"ratio_to_{name}") is not None]
        if not pr:
            continue
        ratio = np.array([r[f"ratio_to_{name}"] for r in pr])
        pe = np.array([r[f"{name}_err_rms_inside_px"] for r in pr])
        psd = np.array([r[f"{name}_sd_rms_inside_px"] for r in pr])
        p68 = np.mean([r[f"{name}_in68"] for r in pr])
        p95 = np.mean([r[f"{name}_in95"] for r in pr])
        s68 = np.mean([r[f"{name}_in68_scaled"] for r in pr])
        s95 = np.mean([r[f"{name}_in95_scaled"] for r in pr])
        chi = np.array([r[f"{name}_chi2_dof"] for r in pr])
        fl = np.array([r[f"{name}_noisefree_err_rms_inside_px"] for r in pr
                       if r.get(f"{name}_noisefree_err_rms_inside_px") is not None])
        print(f"{labels[name]}:\n   map error rms inside median {np.median(pe):.4f} px (mean {pe.mean():.4f}); "
              f"formal 1-sigma rms median {np.median(psd):.4f} px; coverage 68/95 {100 * p68:.1f} / {100 * p95:.1f} % "
              f"(sigma x sqrt(chi2/dof): {100 * s68:.1f} / {100 * s95:.1f} %); chi2/dof median {np.median(chi):.2f}"
              + (f"; noise-free error (misfit floor) median {np.median(fl):.4f} px" if fl.size else "")
              + f"\n   astrocal / {name} map error: median {np.median(ratio):.3f}, geometric mean "
              f"{np.exp(np.mean(np.log(ratio))):.3f}, range {ratio.min():.3f}-{ratio.max():.3f}; astrocal closer "
              f"in {int(np.sum(ratio < 1))}/{ratio.size}")
        out[name] = {"err_rms_inside_px_median": float(np.median(pe)), "sd_rms_inside_px_median": float(np.median(psd)),
                     "cover68": float(p68), "cover95": float(p95), "cover68_scaled": float(s68),
                     "cover95_scaled": float(s95), "chi2_dof_median": float(np.median(chi)),
                     "noisefree_err_median": float(np.median(fl)) if fl.size else None,
                     "ratio_median": float(np.median(ratio)),
                     "ratio_geomean": float(np.exp(np.mean(np.log(ratio))))}
    for name, text in (("peer_q_bic", "peer_q at its own degree (BIC over 3-8)"),
                       ("peer_q_oracle", "peer_q at its best degree against the truth (oracle)")):
        pr = [r for r in good if r.get(f"ratio_to_{name}") is not None]
        if pr:
            ratio = np.array([r[f"ratio_to_{name}"] for r in pr])
            pe = np.array([r[f"{name}_err_rms_inside_px"] for r in pr])
            degs = [r[f"{name}_degree"] for r in pr]
            print(f"{text}: map error rms inside median {np.median(pe):.4f} px, degrees {sorted(degs)}; astrocal / it: "
                  f"median {np.median(ratio):.3f}, geometric mean {np.exp(np.mean(np.log(ratio))):.3f}, range "
                  f"{ratio.min():.3f}-{ratio.max():.3f}")
            out[name] = {"err_rms_inside_px_median": float(np.median(pe)), "ratio_median": float(np.median(ratio)),
                         "ratio_geomean": float(np.exp(np.mean(np.log(ratio)))), "degrees": degs}
    # degree, residual field, convergence, time
    deg = [r["chosen_degree"] for r in good]
    counts = {d: deg.count(d) for d in sorted(set(deg))}
    top = sum(r["degree_at_top"] for r in good)
    resid = sum(r.get("residual_field", False) for r in good)
    print(f"chosen degree: {counts}; at the top of the range: {top}/{len(good)}; residual field kept: "
          f"{resid}/{len(good)}")
    t = np.array([r["fit_seconds"] for r in good])
    conv = sum(r["converged"] for r in good)
    print(f"fit wall time: median {np.median(t):.1f} s, max {t.max():.1f} s; chains >= 50 tau: {conv}/{len(good)}; "
          f"campaigns with outliers flagged (none injected): {sum(r['n_outliers'] > 0 for r in good)}; "
          f"fit hole set = truth's observed set: {sum(r.get('gauge_holes_match', False) for r in good)}/{len(good)}")
    meas = [r["measured"] for r in good if r.get("measured", {}).get("n_identified")]
    if meas:
        print(f"measured (rendered frames): identified {sum(m['n_identified'] for m in meas)} of "
              f"{sum(m['n_visible'] for m in meas)} visible spots, "
              f"{sum(m.get('n_rejected', 0) for m in meas)} of them flagged and left out by the fit; over the "
              f"spots used, error/sigma rms median {np.median([m['pull_rms'] for m in meas]):.2f}; median sigma "
              f"{np.median([m['median_sigma_px'] for m in meas]):.4f} px; measure time median "
              f"{np.median([r['measure_seconds'] for r in good if 'measure_seconds' in r]):.1f} s")
        # a median over campaigns hides a few with wrong centroids (a fit that slides at the
        # detector's edge once gave rms 3-18 in 8 of 21 campaigns under a median of 1.03)
        pulls = np.array([m["pull_rms"] for m in meas])
        worst = sorted(((m["pull_rms"], r["seed"]) for r, m in zip(
            [r for r in good if r.get("measured", {}).get("n_identified")], meas)), reverse=True)[:3]
        print(f"  error/sigma rms over the campaigns: max {pulls.max():.2f}, above 1.3 in {int((pulls > 1.3).sum())} of "
              f"{len(pulls)} (worst seeds {', '.join(f'{sd} ({p:.2f})' for p, sd in worst)})")
        out["measured_pull_rms_max"] = float(pulls.max())
        out["measured_pull_rms_above_1_3"] = int((pulls > 1.3).sum())
    out.update(degrees=counts, degree_at_top=top, residual_field=resid, converged=conv,
               fit_seconds_median=float(np.median(t)))
    return out


# --------------------------------------------------------------------------- driver
def run(tasks, processes, jsonl):
    """The campaigns of ``tasks`` (:func:`bench_model_coverage.run` with this script's job)."""
    from bench_model_coverage import run as run_tasks

    return run_tasks(tasks, processes, jsonl, job=run_campaign, progress=_progress, maxtasksperchild=5)


def _progress(k, n, rec, t0, fh):
    if fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
    if "error" in rec:
        msg = rec["error"]
    else:
        ins = np.asarray(rec["map_inside"], bool)
        msg = (f"deg {rec['chosen_degree']}{' +res' if rec.get('residual_field') else ''} "
               f"map68 in {np.mean(np.asarray(rec['map_in68'])[ins]):.2f} / beyond "
               f"{np.mean(np.asarray(rec['map_in68'])[~ins]) if (~ins).any() else float('nan'):.2f}, "
               f"err {rec['map_err_rms_inside_px']:.4f} px, peer/peer_q/peer_t {rec.get('peer_err_rms_inside_px') or float('nan'):.4f}/"
               f"{rec.get('peer_q_err_rms_inside_px') or float('nan'):.4f}/{rec.get('peer_t_err_rms_inside_px') or float('nan'):.4f} px, "
               f"scale z {rec['scale_z']:+.2f}, fit {rec['fit_seconds']:.0f} s")
    print(f"[{k}/{n}] {rec['family']} seed {rec['seed']} ({rec['mask']}): {msg}  "
          f"elapsed {time.perf_counter() - t0:.0f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="poly+grf",
                    help=f"one of {ff.FAMILIES}, several separated by commas, or 'all'")
    ap.add_argument("--campaigns", type=int, default=3, help="campaigns per family")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--mask", default="metis", choices=("metis", "dense"))
    ap.add_argument("--inner-inset", type=float, default=205.0, help="inset (px) of the inner 9x9 grid")
    ap.add_argument("--residual", default=None, choices=("none", "matern52", "auto"),
                    help="Priors.residual of the fits (default: the model's default, as astrocal fit runs it)")
    ap.add_argument("--residual-basis", type=int, default=None, metavar="M",
                    help="Priors.residual_basis: M x M functions per component (default: the model's)")
    ap.add_argument("--residual-lengths", default=None, choices=("per_axis", "isotropic"),
                    help="Priors.residual_lengths: one correlation length per axis or one for both (default: the model's)")
    ap.add_argument("--degree-range", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                    help="FitSettings.degree_range of the fits (default: the campaign's, as astrocal fit runs it); "
                         "LO = HI fixes the degree (a diagnostic)")
    ap.add_argument("--sampler", default="emcee", choices=("emcee", "laplace"),
                    help="FitSettings.sampler: emcee (the default fit) or laplace (astrocal fit --quick)")
    ap.add_argument("--campaign-options", type=json.loads, default=None, metavar="JSON",
                    help="foreign_fields.draw_params overrides for every campaign, e.g. "
                         "'{\"offset_range_arcsec\": 3.0}' (wider chopper offsets)")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="copy each campaign (without frames) here")
    ap.add_argument("--out", type=Path, default=None, help="summary JSON (records in <out>.jsonl)")
    ap.add_argument("--summarise", action="store_true", help="only summarise <out>.jsonl")
    ap.add_argument("--resume", action="store_true",
                    help="keep the records already in <out>.jsonl and fit only the campaigns it lacks "
                         "(same family, seed and mask)")
    args = ap.parse_args()
    families = list(ff.FAMILIES) if args.family == "all" else args.family.split(",")
    for f in families:
        if f not in ff.FAMILIES:
            ap.error(f"unknown family {f!r}; one of {ff.FAMILIES}")
    jsonl = args.out.with_suffix(".jsonl") if args.out else None
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.summarise:
        if jsonl is None:
            ap.error("--summarise needs --out")
        records = [json.loads(line) for line in open(jsonl)]
        families = sorted({r["family"] for r in records}, key=lambda f: ff.FAMILIES.index(f))
    else:
        done = []
        if jsonl and jsonl.exists():
            if args.resume:
                done = [json.loads(line) for line in open(jsonl) if line.strip()]
            else:
                jsonl.unlink()
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        tasks = [{"family": f, "seed": s, "mask": args.mask, "inner_inset": args.inner_inset,
                  "keep": str(args.keep) if args.keep else None, "residual": args.residual,
                  "residual_basis": args.residual_basis, "residual_lengths": args.residual_lengths,
                  "sampler": args.sampler, "degree_range": args.degree_range,
                  "campaign_options": args.campaign_options}
                 for f in families for s in range(args.first_seed, args.first_seed + args.campaigns)]
        state = source_state()
        for t in tasks:
            t["source"] = {k: state.get(k) for k in ("commit", "src_modified")}
        print(f"{len(tasks)} campaigns on {args.processes} process(es); astrocal {state.get('commit')}"
              f"{' with uncommitted changes in src/' if state.get('src_modified') else ''}; load average "
              f"{os.getloadavg()[0]:.1f} (shared machine: times are indicative)", flush=True)
        have = {(r["family"], int(r["seed"]), r["mask"]) for r in done}
        tasks = [t for t in tasks if (t["family"], int(t["seed"]), t["mask"]) not in have]
        if done:
            print(f"resuming: {len(done)} campaigns already in {jsonl}, {len(tasks)} to fit", flush=True)
        records = done + run(tasks, args.processes, jsonl)
    summary = {}
    for f in families:
        for mask in sorted({r["mask"] for r in records if r["family"] == f}):
            for res in sorted({str(r.get("residual_setting")) for r in records if r["family"] == f and r["mask"] == mask}):
                sel = [r for r in records if r["family"] == f and r["mask"] == mask
                       and str(r.get("residual_setting")) == res]
                summary[f"{f} ({mask}, residual {res})"] = summarise(sel, f"{f}, mask {mask}, residual {res}")
    summary["wall_seconds"] = time.perf_counter() - t0
    summary["sources"] = sorted({json.dumps(r.get("source"), sort_keys=True) for r in records})
    print(f"\ntotal wall time {summary['wall_seconds']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
