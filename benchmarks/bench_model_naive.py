"""Benchmark: our collapsed sampler (fit_lab) versus naive emcee over the full parameter vector.

Problems small enough for the naive sampler: a simulated lab campaign of FP mask #5 with 3
exposures (the default chopper offsets), no hole errors (truth and model), centroid noise
0.005-0.03 px, a field of degree 3 and one of degree 5, each fitted at its true degree.

* ours: ``fit_lab(points, FitSettings(degree=n, hole_errors=False))`` (preliminary fit,
  outlier EM, MAP, emcee over the 2 hyperparameters until >= 50 tau and >= 1000 effective
  samples, exact conditional draws of the linear parameters); timed end to end.
* naive: emcee over EVERYTHING: the 2 x n_terms field coefficients, the offset frame's
  scale and rotation, 4 pose parameters per non-reference exposure AND the
  hyperparameters (log jitter, log kappa), with the same priors and likelihood as
  ``LabModel`` (the model object of our fit is reused for its arrays: design matrix,
  focal-plane noise eigen-decomposition, prior widths, kept points).  The dense Gaussian
  likelihood is written here, vectorised over walkers: design and data are rotated once into
  each point's noise eigenbasis (fixed: the jitter is isotropic), then the whitened
  residuals of all walkers come from one matrix product ``g A^T - y``.  Its
  correctness is checked against ``LabModel.log_likelihood`` through the Gaussian identity
  ``log p(y|phi) = log p(y, g*|phi) + 1/2 log det(2 pi Sigma)`` at the conditional mean
  ``g*`` (printed).  Moves: ``DEMove`` only (ours uses DE 0.8 + DE-snooker 0.2, but emcee
  3.1.6's ``DESnookerMove`` does not sample the target: sds 5-20 % too small on a standard
  normal in 2-8 dimensions, 15 % too small here), ``2 ndim + 2`` walkers,
  started from posterior draws of our fit (generous: no real burn-in search), run in
  blocks until the chain is >= 50 tau of EVERY parameter long (or ``--max-steps``), thinned
  in storage by ``--thin`` (tau is counted in steps).

Compared: posterior mean of every parameter (difference / posterior sigma) and standard
deviation (ratio) -- ours from the exact conditional moments averaged over our
hyperparameter draws (Rao-Blackwellised: E[mu(phi)], E[Sigma(phi)] + Var[mu(phi)]) for the
linear parameters, and from the chain for the hyperparameters.  Targets: means within 0.1
sigma, sds within 10 %.

Effective samples per second of the map coefficients:
* naive: min over the 2 x n_terms field coefficients of (kept steps x walkers / tau_k),
  divided by the wall time of the naive emcee run (its setup and the check excluded);
* ours: the draws of the linear parameters are exact and one is drawn per kept
  hyperparameter sample; consecutive draws are only as correlated as their hyperparameter
  samples, so we count effective samples = min(number of draws, min over hyperparameters of
  kept steps x walkers / tau) -- i.e. the hyperparameter chain's effective size, capped by
  the draws kept -- divided by the wall time of the WHOLE fit_lab call.
Targets: ours / naive >= 30 at degree 3, >= 100 at degree 5.  BLAS single-threaded for
both (threadpoolctl).  Also printed: ours counting only its sampling phases (emcee + exact
draws, timed by wrapping ``inference.run_emcee`` / ``draw_linear`` at run time), i.e.
without the fixed cost of the preliminary fit, outlier EM, MAP and Laplace evidence.

Run:    python benchmarks/bench_model_naive.py --degrees 3 5 --out benchmarks/results/naive.json
Quick:  python benchmarks/bench_model_naive.py --degrees 3 --max-steps 20000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model_coverage import make_campaign, quiet_logs  # noqa: E402

import emcee  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

LOG2PI = np.log(2 * np.pi)


class NaivePosterior:
    """Dense log posterior over (g, phi) of a hole-free ``LabModel``, vectorised over walkers."""

    def __init__(self, model):
        if model.hole_errors:
            raise ValueError("the naive posterior is written for hole_errors=False")
        self.model = model
        pts = model.points
        n, nt, G = pts.n_points, model.nt, model.G
        A = np.zeros((n, 2, G))
        A[:, 0, :nt] = model.B
        A[:, 1, nt:2 * nt] = model.B
        A[:, :, 2 * nt:model.p0] = model.E
        for i in range(n):
            slot = model.pose_slot[pts.exposure[i]]
            if slot >= 0:
                s = model.p0 + 4 * slot
                A[i, :, s:s + 4] = model.Q[i]
        # the noise covariance of point i is U_i diag(kappa^2 lam_i + jitter^2) U_i^T for every
        # phi (the jitter is isotropic), so rotate design and data into the eigenbases once
        U = model.U  # (N, 2, 2), columns = eigenvectors
        Ar = np.einsum("nab,nag->nbg", U, A)
        yr = np.einsum("nab,na->nb", U, model.y)
        self.At = Ar.reshape(2 * n, G).T.copy()  # (G, 2N)
        self.y = yr.reshape(2 * n)
        self.lam = model.lam  # (N, 2)
        self.dataset = model.dataset
        self.nd = pts.n_datasets
        self.G = G
        self.n = n
        self.ndim = G + model.ndim
        self.prior_prec = model.prior_precision
        self.g0 = model.g0
        self.prior_const = -0.5 * G * LOG2PI - 0.5 * model.logdet_prior

    def log_joint_given_phi(self, g, phi):
        """log p(y, g | phi) for g (K, G), phi (K, nphi) (no prior on phi)."""
        K = g.shape[0]
        s = (g @ self.At - self.y).reshape(K, self.n, 2)  # residuals in the eigenbasis of C_i
        jit = np.exp(phi[:, :self.nd])
        kappa = np.exp(phi[:, self.nd])
        var = kappa[:, None, None] ** 2 * self.lam[None] + jit[:, self.dataset, None] ** 2
        ll = -0.5 * np.sum(s**2 / var + np.log(var), axis=(1, 2)) - self.n * LOG2PI
        d = g - self.g0
        lp = -0.5 * np.sum(d**2 * self.prior_prec, axis=1) + self.prior_const
        return ll + lp

    def __call__(self, theta):
        theta = np.atleast_2d(theta)
        g, phi = theta[:, :self.G], theta[:, self.G:]
        out = np.full(theta.shape[0], -np.inf)
        lpphi = self.model.log_prior(phi)
        ok = np.isfinite(lpphi)
        if ok.any():
            out[ok] = lpphi[ok] + self.log_joint_given_phi(g[ok], phi[ok])
        return out


def check_against_model(naive, model, phi):
    """|log p(y|phi) from the model - the Gaussian identity on the dense joint|."""
    cond = model.conditional(phi)
    joint = naive.log_joint_given_phi(cond.mean[None], phi[None])[0]
    sign, logdet = np.linalg.slogdet(2 * np.pi * cond.cov)
    return float(model.log_likelihood(phi[None])[0]), float(joint + 0.5 * logdet)


def tau_all(chain):
    """Integrated autocorrelation time of every parameter (stored-step units), quiet."""
    import logging

    lg = logging.getLogger("emcee.autocorr")
    lvl = lg.level
    lg.setLevel(logging.ERROR)
    try:
        return emcee.autocorr.integrated_time(chain, quiet=True)
    finally:
        lg.setLevel(lvl)


def run_naive(naive, fit, args, rng):
    ndim = naive.ndim
    nw = 2 * ndim + 2
    # start from our posterior draws (g, phi): generous to the naive sampler
    k = rng.choice(len(fit.g_samples), nw, replace=False)
    p0 = np.hstack([fit.g_samples[k], fit.phi_samples[k]])
    # DEMove only: emcee 3.1.6's DESnookerMove does not leave the target invariant (its
    # direction vector is delta / sqrt(|delta|), not delta / |delta|, and the Jacobian
    # exponent is (d-1)/2): on a 32-parameter problem it gives sds ~15 % too small
    sampler = emcee.EnsembleSampler(nw, ndim, naive, vectorize=True, moves=emcee.moves.DEMove())
    state = emcee.State(p0, random_state=np.random.RandomState(args.seed).get_state())
    thin = args.thin
    block = args.check_every
    done = 0
    t0 = time.perf_counter()
    tau = np.full(ndim, np.inf)
    last_print = t0
    while done < args.max_steps:
        state = sampler.run_mcmc(state, block, thin_by=thin, skip_initial_state_check=True)
        done += block * thin
        chain = sampler.get_chain()
        stored = chain.shape[0]
        tau = tau_all(chain) * thin  # in steps
        burn = int(min(max(5 * np.max(tau) / thin, 0.1 * stored), stored // 2))
        if np.all(np.isfinite(tau)) and done >= 50 * np.max(tau):
            break
        if time.perf_counter() - last_print > 60:
            last_print = time.perf_counter()
            print(f"   naive: {done} steps, tau max {np.max(tau):.0f} "
                  f"({done / np.max(tau):.1f} tau), {last_print - t0:.0f} s", flush=True)
    secs = time.perf_counter() - t0
    chain = sampler.get_chain()
    stored = chain.shape[0]
    burn = int(min(max(5 * np.max(tau) / thin, 0.1 * stored), stored // 2))
    kept = chain[burn:]
    n_eff = (kept.shape[0] * thin) * nw / tau
    return {"walkers": nw, "steps": done, "seconds": secs, "tau": tau, "burn_steps": burn * thin,
            "n_eff": n_eff, "flat": kept.reshape(-1, ndim), "converged": bool(done >= 50 * np.max(tau)),
            "acceptance": float(np.mean(sampler.acceptance_fraction))}


def ours_moments(fit):
    """Rao-Blackwellised posterior mean and sd of the linear parameters, chain moments of phi."""
    model = fit.model
    mus, variances = [], []
    for phi in fit.phi_samples:
        c = model.conditional(phi)
        mus.append(c.mean)
        variances.append(np.diag(c.cov))
    mus, variances = np.array(mus), np.array(variances)
    mean_g = mus.mean(0)
    sd_g = np.sqrt(variances.mean(0) + mus.var(0))
    flat = fit.phi_chain[fit.diagnostics.n_burn:].reshape(-1, model.ndim)
    return np.concatenate([mean_g, flat.mean(0)]), np.concatenate([sd_g, flat.std(0, ddof=1)])


def time_phases():
    """Wrap (at run time, src untouched) the sampling phases of fit_lab to time them."""
    import astrocal.model.inference as inf

    phases = {"run_emcee": 0.0, "draw_linear": 0.0}
    for name in phases:
        orig = getattr(inf, name)
        orig = getattr(orig, "__wrapped__", orig)

        def wrapper(*a, _orig=orig, _name=name, **k):
            t = time.perf_counter()
            try:
                return _orig(*a, **k)
            finally:
                phases[_name] += time.perf_counter() - t

        wrapper.__wrapped__ = orig
        setattr(inf, name, wrapper)
    return phases


def run_degree(degree, args):
    from astrocal.model.inference import FitSettings, fit_lab

    truth, pts, _ = make_campaign(args.seed + degree, degree, corner_px=3.0, hole_error_um=0.0,
                                  n_exposures=3, sigma_px=(0.005, 0.03))
    print(f"\n== degree {degree}: {pts.n_points} points, {pts.n_holes} holes, 3 exposures, "
          "no hole errors ==", flush=True)
    phases = time_phases()
    t0 = time.perf_counter()
    fit = fit_lab(pts, FitSettings(degree=degree, hole_errors=False, seed=args.seed, progress=False))
    ours_s = time.perf_counter() - t0
    sampling_s = phases["run_emcee"] + phases["draw_linear"]
    model = fit.model
    d = fit.diagnostics
    n_draws = len(fit.g_samples)
    ours_neff = float(min(n_draws, np.min(d.n_effective)))
    print(f"ours: {ours_s:.1f} s; hyperparameter chain {d.n_steps} steps x "
          f"{fit.phi_chain.shape[1]} walkers, tau {np.round(d.tau, 1)}, n_eff {np.round(d.n_effective)}; "
          f"{n_draws} exact draws -> effective samples of the linear parameters {ours_neff:.0f}",
          flush=True)
    naive = NaivePosterior(model)
    with threadpool_limits(1, "blas"):
        a, b = check_against_model(naive, model, fit.phi_map)
        print(f"check: log p(y|phi_MAP) LabModel {a:.6f}, dense joint + Gaussian identity {b:.6f} "
              f"(difference {a - b:.2e})", flush=True)
        rng = np.random.default_rng(args.seed)
        nv = run_naive(naive, fit, args, rng)
    nt = model.nt
    map_idx = np.arange(2 * nt)
    naive_neff_map = float(np.min(nv["n_eff"][map_idx]))
    print(f"naive: {naive.ndim} parameters, {nv['walkers']} walkers, {nv['steps']} steps in "
          f"{nv['seconds']:.1f} s (acceptance {nv['acceptance']:.2f}); tau max {np.max(nv['tau']):.0f} "
          f"steps ({nv['steps'] / np.max(nv['tau']):.0f} tau), map coefficients: tau "
          f"{np.min(nv['tau'][map_idx]):.0f}-{np.max(nv['tau'][map_idx]):.0f}, min n_eff "
          f"{naive_neff_map:.0f}{'' if nv['converged'] else '  (NOT >= 50 tau: max steps reached)'}",
          flush=True)
    # moments
    m_ours, s_ours = ours_moments(fit)
    flat = nv["flat"]
    m_naive, s_naive = flat.mean(0), flat.std(0, ddof=1)
    dz = (m_naive - m_ours) / s_ours
    ratio = s_naive / s_ours
    names = model.param_names + model.hyper_names
    worst = np.argsort(-np.abs(dz))[:3]
    # Monte-Carlo noise expected in the comparison (naive chain dominated)
    mc = np.sqrt(1.0 / nv["n_eff"])
    print(f"posterior means: |naive - ours| / sigma: max {np.max(np.abs(dz)):.3f} "
          f"({', '.join(f'{names[i]} {dz[i]:+.3f}' for i in worst)}), rms {np.sqrt(np.mean(dz**2)):.3f}, "
          f"{np.mean(np.abs(dz) < 0.1) * 100:.0f} % within 0.1 [expected MC noise of the naive "
          f"means: {np.median(mc):.3f} sigma median]")
    wr = np.argsort(-np.abs(ratio - 1))[:3]
    print(f"posterior sds: naive / ours {np.min(ratio):.3f}-{np.max(ratio):.3f} "
          f"({', '.join(f'{names[i]} {ratio[i]:.3f}' for i in wr)}), "
          f"{np.mean(np.abs(ratio - 1) < 0.1) * 100:.0f} % within 10 %")
    lin = np.arange(model.G)
    print(f"   linear parameters only: max |dz| {np.max(np.abs(dz[lin])):.3f}, sd ratio "
          f"{np.min(ratio[lin]):.3f}-{np.max(ratio[lin]):.3f}; hyperparameters: dz "
          f"{np.round(dz[model.G:], 3)}, sd ratio {np.round(ratio[model.G:], 3)}")
    ours_rate = ours_neff / ours_s
    ours_rate_sampling = ours_neff / sampling_s
    naive_rate = naive_neff_map / nv["seconds"]
    target = 30 if degree <= 3 else 100
    print(f"effective samples / s of the map coefficients: ours {ours_rate:.1f} (whole fit_lab, "
          f"{ours_s:.1f} s), naive {naive_rate:.2f}; ratio ours/naive {ours_rate / naive_rate:.1f}x  "
          f"[target >= {target}x]", flush=True)
    print(f"   sampling phases only (ours: emcee + exact draws {sampling_s:.1f} s, without the "
          f"preliminary fit, outlier EM, MAP and evidence): ours {ours_rate_sampling:.1f}, ratio "
          f"{ours_rate_sampling / naive_rate:.1f}x", flush=True)
    return {"degree": degree, "n_points": int(pts.n_points), "ours_seconds": ours_s,
            "ours_n_eff": ours_neff, "ours_tau": d.tau.tolist(), "ours_steps": int(d.n_steps),
            "naive_seconds": nv["seconds"], "naive_steps": nv["steps"], "naive_walkers": nv["walkers"],
            "naive_tau_max": float(np.max(nv["tau"])), "naive_n_eff_map_min": naive_neff_map,
            "naive_converged": nv["converged"], "mean_dz_max": float(np.max(np.abs(dz))),
            "mean_dz_rms": float(np.sqrt(np.mean(dz**2))),
            "frac_mean_within_0.1": float(np.mean(np.abs(dz) < 0.1)),
            "sd_ratio_min": float(np.min(ratio)), "sd_ratio_max": float(np.max(ratio)),
            "frac_sd_within_10pc": float(np.mean(np.abs(ratio - 1) < 0.1)),
            "ours_rate": ours_rate, "naive_rate": naive_rate, "speedup": ours_rate / naive_rate,
            "ours_sampling_seconds": sampling_s, "ours_rate_sampling": ours_rate_sampling,
            "speedup_sampling_only": ours_rate_sampling / naive_rate,
            "check_loglike": [a, b]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--degrees", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--max-steps", type=int, default=1_000_000)
    ap.add_argument("--thin", type=int, default=10, help="store every THIN-th naive step")
    ap.add_argument("--check-every", type=int, default=500, help="stored steps between tau checks")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    quiet_logs()
    t0 = time.perf_counter()
    print("BLAS single-threaded for both; the machine (2 cores) is shared with other developers, "
          "so wall times are indicative (both sides suffer alike)")
    recs = [run_degree(d, args) for d in args.degrees]
    wall = time.perf_counter() - t0
    print(f"\n{'degree':>6s} {'ours s':>7s} {'ours neff':>9s} {'naive s':>8s} {'naive neff':>10s} "
          f"{'ESS/s ours':>10s} {'ESS/s naive':>11s} {'ratio':>7s} {'(sampling)':>10s} {'max|dz|':>8s} "
          f"{'sd ratio':>13s}")
    for r in recs:
        print(f"{r['degree']:6d} {r['ours_seconds']:7.1f} {r['ours_n_eff']:9.0f} {r['naive_seconds']:8.1f} "
              f"{r['naive_n_eff_map_min']:10.0f} {r['ours_rate']:10.2f} {r['naive_rate']:11.4f} "
              f"{r['speedup']:6.1f}x {r['speedup_sampling_only']:9.1f}x {r['mean_dz_max']:8.3f} "
              f"{r['sd_ratio_min']:.3f}-{r['sd_ratio_max']:.3f}")
    print(f"total wall time {wall:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"records": recs, "wall_seconds": wall}, indent=1))


if __name__ == "__main__":
    main()
