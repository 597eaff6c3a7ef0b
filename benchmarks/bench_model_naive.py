"""Benchmark: our collapsed sampler (fit_joint) versus naive emcee over the full parameter vector.

Problems small enough for the naive sampler: a simulated lab campaign of FP mask #5 with 3
exposures (the default chopper offsets), no hole errors (truth and model), centroid noise
0.005-0.03 px, a field of degree 3 (32 parameters in all) and one of degree 5 (54), each
fitted at its true degree (``FitSettings.degree`` fixed: no evidence scan over degrees).

The two samplers
----------------
* ours: ``fit_joint(points, FitSettings(degree=n, hole_errors=False, ...))``: preliminary fit,
  robust start + outlier EM, MAP and Laplace evidence at the fixed degree, emcee over the
  2 hyperparameters (log jitter, log kappa) until >= 50 tau and ``target_neff`` effective
  samples (at least ``min_steps``, checked every ``check_every`` steps), ``n_draws``
  hyperparameter samples thinned evenly from the chain and ``draws_per_phi`` exact
  conditional draws of the linear parameters for each.  Run with the DEFAULT FitSettings
  and with TUNED ones (``TUNED`` below, printed; ordinary ``FitSettings`` fields a user can
  set in the campaign's ``[fit]`` table).
* naive: emcee over EVERYTHING: the 2 x n_terms field coefficients, the offset frame's
  scale and rotation, 4 pose parameters per non-reference exposure AND the
  hyperparameters, with the same priors and likelihood as ``JointModel`` (a ``JointModel`` is
  built for its arrays: design matrix, focal-plane noise eigen-decomposition with the
  Jacobian of our fit's field, prior widths).  The dense Gaussian likelihood is written
  here, vectorised over walkers: design and data are rotated once into each point's noise
  eigenbasis (fixed: the jitter is isotropic), then the whitened residuals of all walkers
  come from one matrix product ``g A^T - y``.  It is checked against
  ``JointModel.log_likelihood`` through the Gaussian identity ``log p(y|phi) = log p(y, g*|phi)
  + 1/2 log det(2 pi Sigma)`` at the conditional mean ``g*`` (printed; the run stops if they
  differ).  Moves: ``DEMove`` only (emcee 3.1.6's ``DESnookerMove`` does not leave the
  target invariant: its direction is delta / sqrt(|delta|) and its Jacobian exponent
  (d-1)/2, fixed upstream in dfm/emcee#531 after 3.1.6; sds 5-20 % too small on a standard
  normal in 2-8 dimensions), ``2 ndim + 2`` walkers, started from posterior draws of our
  fit (generous: no burn-in search), run in blocks of ``--check-every`` x ``--thin`` steps
  until the chain is >= 50 tau of EVERY parameter long (or ``--max-steps``), thinned in
  storage by ``--thin`` (tau is counted in steps); burn-in 5 tau_max (at least 10 %)
  discarded.

Each sampler is run several times on the SAME data with different seeds: the naive one
``--repeats`` times, ours ``--ours-repeats`` times per settings (default twice as many: it
is cheap), interleaved (two of ours per naive run) so that a change of the shared machine's
load hits both alike.  BLAS single-threaded for both (threadpoolctl).

What is timed (means over the runs)
-----------------------------------
* ours, whole: the ``fit_joint`` call, from the identified points to the posterior draws
  (preliminary fit, outlier EM, MAPs, Laplace evidence, emcee with its convergence checks,
  exact draws, gauge checks).  Sampling phase only: ``inference.run_emcee`` +
  ``inference.draw_linear`` (timed by wrapping them at run time; src untouched).
* naive, whole: building its arrays from the identified points (``JointModel`` + the
  rotation into the noise eigenbases) + the emcee run with its tau checks.  Sampling phase
  only: the emcee run with its tau checks.  Not charged to it: its start points (taken from
  our posterior) and the Jacobian field of its noise model (taken from our fit).
* wall time (``time.perf_counter``) is the headline; the process CPU time
  (``time.process_time``) is printed too: it is less sensitive to the load of the machine.

Effective samples (ESS) of the map coefficients (the 2 x n_terms field coefficients),
measured the same way for both, by two methods:
(a) repeats: ESS_k = posterior variance_k / variance across the runs of the posterior-mean
    estimate of coefficient k (ours: mean of the exact draws ``g_samples``, not
    Rao-Blackwellised; naive: mean of the kept chain); the posterior variance is the
    sampler's own, pooled over its runs.  No autocorrelation estimate is involved.  Its
    68 % interval on the ratio comes from a bootstrap over the runs of each sampler.
(b) autocorrelation (``emcee.autocorr.integrated_time`` on per-walker sequences, averaged
    over the runs).  Naive: the kept chain of every walker, ESS_k = kept steps x walkers /
    tau_k.  Ours: the draws laid out per walker of the hyperparameter chain (each walker's
    kept samples in step order, each followed by its ``draws_per_phi`` draws, cut to the
    shortest walker's length); the ``draws_per_phi`` draws of one hyperparameter sample form
    a block, the variance of the mean is var(block means) x tau(block means) / blocks, and
    ESS_k = posterior variance_k / that (for ``draws_per_phi = 1`` this is draws / tau).  The
    plain per-draw ``integrated_time`` (draws / tau, kept in the JSON as ``ess_ac_plain``)
    is biased high for ours when ``draws_per_phi`` is large: the draws of one block share a
    small correlation (the hyperparameters' share of the posterior variance) over a plateau
    of ``draws_per_phi`` lags, and emcee's window (5 tau) stops long before it ends.
    Autocorrelation estimates over walkers also miss the correlation between the walkers of
    one ensemble; (a) sees everything, at the price of its own noise (few runs).
Both the MEDIAN and the MIN over the map coefficients are printed.  The headline figure is
(a), median, whole wall time: the min of a noisy estimate over many coefficients is biased
low, more so the fewer the runs.  For ours the min is also limited by the hyperparameter
chain: a coefficient whose variance is a fraction f from the hyperparameters' spread has
ESS <= (ESS of the kept hyperparameter samples) / f, whatever ``draws_per_phi``.  Targets
of issue #4: ours / naive >= 30 at degree 3, >= 100 at degree 5.

Posterior agreement (pooled over the runs of each sampler, ours with the tuned settings):
posterior mean of every parameter (naive - ours, in units of the posterior sigma) and
standard deviation (ratio naive / ours); ours from the exact draws for the linear
parameters and from the chain for the hyperparameters.  Targets: means within 0.1 sigma,
sds within 10 %.  The Monte-Carlo noise of the difference of the pooled means is printed.

Headline (issue 21): the ratio with our DEFAULT settings (what ``astrocal fit`` runs); the
tuned settings' ratio is printed beside it (it shows what the exact draws can give, not what
a user gets without changing ``[fit]``).

Run (~30 min on 2 loaded cores):
        python benchmarks/bench_model_naive.py --degrees 3 5 \
            --out benchmarks/results/naive.json
Fewer runs (the spread across runs, hence the repeats-ESS, is noisier; state it with the
figures): ``--repeats 4`` (4 naive runs and 8 of ours per settings and degree instead of 10
and 20); ``--degrees 3`` alone (the naive degree-5 runs take most of the time).
Quick:  python benchmarks/bench_model_naive.py --degrees 3 --repeats 3 --max-steps 20000
"""
from __future__ import annotations

import argparse
import json
import logging
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

# the tuned FitSettings (from a scan at degrees 3 and 5, 10 runs each; see the README): the
# map coefficients depend on the hyperparameters only weakly (0.001-1.5 % of their posterior
# variance comes from the hyperparameters' spread), so exact draws are nearly independent
# and cost ~5-10 us each after the Cholesky factor of their hyperparameter sample, while the
# emcee chain's cost is fixed by its >= 50 tau rule: many draws per kept sample, a chain with
# fewer walkers (cheaper steps), and convergence checked every 50 steps (stops nearer 50 tau)
TUNED = {"walkers": 12, "target_neff": 500, "min_steps": 300, "check_every": 50,
         "n_draws": 1000, "draws_per_phi": 200}


# --------------------------------------------------------------------------- naive posterior
class NaivePosterior:
    """Dense log posterior over (g, phi) of a hole-free ``JointModel``, vectorised over walkers."""

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
        slot = model.pose_slot[pts.exposure]
        has = np.flatnonzero(slot >= 0)
        cols = model.p0 + 4 * slot[has][:, None] + np.arange(4)
        A[has[:, None, None], np.arange(2)[None, :, None], cols[:, None, :]] = model.Q[has]
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
        if model.field_cols.size or model.n_flex:
            raise ValueError("the naive target needs static priors on every linear parameter: "
                             "Priors(field_prior='fixed') and no sky data")
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


def naive_setup(points, fit):
    """The naive posterior built from the identified points (timed): ``(naive, seconds)``."""
    from astrocal.model.joint import JointModel

    t0 = time.perf_counter()
    model = JointModel(points, fit.degree, hole_errors=False, jacobian_field=fit.model.jacobian_field,
                     priors=fit.settings.priors, excluded=fit.outliers)
    naive = NaivePosterior(model)
    return naive, time.perf_counter() - t0


def check_against_model(naive, model, phi):
    """log p(y|phi) from ``JointModel`` and from the dense joint + the Gaussian identity."""
    cond = model.conditional(phi)
    joint = naive.log_joint_given_phi(cond.mean[None], phi[None])[0]
    sign, logdet = np.linalg.slogdet(2 * np.pi * cond.cov)
    return float(model.log_likelihood(phi[None])[0]), float(joint + 0.5 * logdet)


def integrated_time(x):
    """``emcee.autocorr.integrated_time`` of x (steps, walkers, ndim), quiet about short chains."""
    lg = logging.getLogger("emcee.autocorr")
    lvl = lg.level
    lg.setLevel(logging.ERROR)
    try:
        return emcee.autocorr.integrated_time(x, quiet=True, has_walkers=True)
    finally:
        lg.setLevel(lvl)


def run_naive(naive, start_g, start_phi, seed, args):
    """One naive emcee run to >= 50 tau of every parameter; moments, tau and ESS of its chain."""
    ndim = naive.ndim
    nw = 2 * ndim + 2
    rng = np.random.default_rng([int(seed), 11])
    # start from our posterior draws (g, phi): generous to the naive sampler
    k = rng.choice(len(start_g), nw, replace=False)
    p0 = np.hstack([start_g[k], start_phi[k]])
    sampler = emcee.EnsembleSampler(nw, ndim, naive, vectorize=True, moves=emcee.moves.DEMove())
    state = emcee.State(p0, random_state=np.random.RandomState(int(seed)).get_state())
    thin = args.thin
    done = 0
    t0 = time.perf_counter()
    tau = np.full(ndim, np.inf)
    last_print = t0
    while done < args.max_steps:
        state = sampler.run_mcmc(state, args.check_every, thin_by=thin, skip_initial_state_check=True)
        done += args.check_every * thin
        tau = integrated_time(sampler.get_chain()) * thin  # in steps
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
    flat = kept.reshape(-1, ndim)
    return {"walkers": nw, "steps": done, "seconds": secs, "tau": tau, "burn_steps": burn * thin,
            "ess_ac": kept.shape[0] * thin * nw / tau, "mean": flat.mean(0),
            "var": flat.var(0, ddof=1), "converged": bool(done >= 50 * np.max(tau)),
            "acceptance": float(np.mean(sampler.acceptance_fraction))}


# --------------------------------------------------------------------------- our sampler
PHASES = {"find_outliers": 0.0, "run_emcee": 0.0, "draw_linear": 0.0}


def time_phases():
    """Wrap (at run time, src untouched) phases of fit_joint to time them into ``PHASES``."""
    import astrocal.model.inference as inf

    for name in PHASES:
        orig = getattr(inf, name)
        orig = getattr(orig, "__wrapped__", orig)

        def wrapper(*a, _orig=orig, _name=name, **k):
            t = time.perf_counter()
            try:
                return _orig(*a, **k)
            finally:
                PHASES[_name] += time.perf_counter() - t

        wrapper.__wrapped__ = orig
        setattr(inf, name, wrapper)


def ours_draw_sequences(fit):
    """Our exact draws laid out per walker of the hyperparameter chain.

    fit_joint keeps ``n_draws`` samples evenly spaced over the flattened post-burn chain
    (step-major) and draws ``draws_per_phi`` linear-parameter vectors for each, consecutive
    in ``g_samples``.  Each walker's kept samples are put in step order, each followed by its
    draws; the sequences are cut to the shortest walker's length.  The reconstruction of
    the kept samples is checked against ``fit.phi_samples``.  Returns ``(draws (L, walkers,
    G), block means (L / draws_per_phi, walkers, G), number of kept samples)``.
    """
    s = fit.settings
    M = int(s.draws_per_phi)
    chain = fit.phi_chain
    steps, nw, ndim = chain.shape
    burn = fit.diagnostics.n_burn
    F = (steps - burn) * nw
    take = min(int(s.n_draws), F)
    idx = np.linspace(0, F - 1, take).astype(int)
    if not np.array_equal(chain[burn:].reshape(-1, ndim)[idx], fit.phi_samples[::M]):
        raise RuntimeError("fit_joint no longer thins the hyperparameter chain as this benchmark "
                           "assumes (evenly over the flattened post-burn chain); update "
                           "ours_draw_sequences")
    walker = idx % nw
    g = fit.g_samples.reshape(take, M, -1)
    per = [g[walker == w] for w in range(nw)]  # (kept of walker w, M, G)
    L = min(len(q) for q in per)
    blocks = np.stack([q[:L] for q in per], axis=1)  # (L, walkers, M, G)
    seq = np.swapaxes(blocks, 1, 2).reshape(L * M, nw, -1)
    return seq, blocks.mean(axis=2), take


def ours_autocorr_ess(fit):
    """Autocorrelation ESS of every linear parameter from our draws, two ways: ``(plain,
    blocks)``.

    plain: ``integrated_time`` of the per-walker draw sequences, ESS = draws / tau.
    blocks: the ``draws_per_phi`` draws of one hyperparameter sample form a block; the
    variance of the overall mean is var(block means) x tau(block means) / blocks, and
    ESS = posterior variance / that.  The plain estimate is biased high when
    ``draws_per_phi`` is large: the draws of one block share a small correlation (the
    hyperparameters' share of the posterior variance) over a plateau of ``draws_per_phi``
    lags, and emcee's window (5 tau) stops long before the plateau ends.
    """
    seq, bmeans, take = ours_draw_sequences(fit)
    g = fit.g_samples
    plain = len(g) / integrated_time(seq)
    tau_b = integrated_time(bmeans)
    vb = bmeans.reshape(-1, bmeans.shape[2]).var(0, ddof=1)
    blocks = g.var(0, ddof=1) * take / (vb * tau_b)
    return plain, blocks


def run_ours(points, settings):
    """One fit_joint call, timed (wall and CPU); moments of the draws / chain, autocorrelation ESS."""
    from astrocal.model.inference import fit_joint

    for k in PHASES:
        PHASES[k] = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_joint(points, settings)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    model = fit.model
    g = fit.g_samples
    flat = fit.phi_chain[fit.diagnostics.n_burn:].reshape(-1, model.ndim)
    plain, blocks = ours_autocorr_ess(fit)
    return {"fit": fit, "seconds": secs, "cpu_seconds": cpu, "phases": dict(PHASES),
            "sampling_seconds": PHASES["run_emcee"] + PHASES["draw_linear"],
            "mean": np.concatenate([g.mean(0), flat.mean(0)]),
            "var": np.concatenate([g.var(0, ddof=1), flat.var(0, ddof=1)]),
            "ess_ac": blocks, "ess_ac_plain": plain, "n_draws": len(g),
            "n_phi": len(g) // settings.draws_per_phi, "steps": int(fit.diagnostics.n_steps),
            "walkers": int(fit.phi_chain.shape[1]), "tau_phi": fit.diagnostics.tau,
            "converged": bool(fit.diagnostics.converged),
            "n_eff_phi": fit.diagnostics.n_effective}


# --------------------------------------------------------------------------- effective samples
def pooled_moments(runs):
    """Mean and variance of every parameter pooled over repeats (law of total variance)."""
    m = np.array([r["mean"] for r in runs])
    v = np.array([r["var"] for r in runs])
    return m.mean(0), v.mean(0) + m.var(0)


def ess_repeats(runs, idx, pick=None):
    """ESS_k = pooled posterior variance / variance across repeats of the mean, for ``idx``."""
    pick = np.arange(len(runs)) if pick is None else pick
    m = np.array([runs[i]["mean"][idx] for i in pick])
    v = np.array([runs[i]["var"][idx] for i in pick])
    post = v.mean(0) + m.var(0)
    return post / m.var(0, ddof=1)


def summarise(runs, idx):
    """ESS of the map coefficients (repeats; autocorrelation averaged over runs) and times."""
    e_rep = ess_repeats(runs, idx)
    e_ac = np.mean([r["ess_ac"][idx] for r in runs], axis=0)
    out = {"ess_rep_median": float(np.median(e_rep)), "ess_rep_min": float(np.min(e_rep)),
           "ess_ac_median": float(np.median(e_ac)), "ess_ac_min": float(np.min(e_ac)),
           "ess_rep": e_rep.tolist()}
    for key in ("seconds", "cpu_seconds", "sampling_seconds"):
        out[key] = float(np.mean([r[key] for r in runs]))
    out["seconds_sd"] = float(np.std([r["seconds"] for r in runs], ddof=1))
    return out


def bootstrap_ratio(ours, naive, idx, n_boot=2000, seed=0):
    """68 % interval of the ratio of repeats-ESS (median over ``idx``) per wall second, ours /
    naive, by a bootstrap over the repeats of each."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        po = rng.integers(0, len(ours), len(ours))
        pn = rng.integers(0, len(naive), len(naive))
        if len(np.unique(po)) < 2 or len(np.unique(pn)) < 2:
            continue
        ro = np.median(ess_repeats(ours, idx, po)) / np.mean([ours[i]["seconds"] for i in po])
        rn = np.median(ess_repeats(naive, idx, pn)) / np.mean([naive[i]["seconds"] for i in pn])
        out.append(ro / rn)
    return [float(q) for q in np.quantile(out, [0.16, 0.84])]


def posterior_agreement(runs, nruns, model, label):
    """Posterior means (naive - ours, in sigma) and sds (naive / ours) of every parameter,
    pooled over the runs; printed, and returned as a dict."""
    m_ours, v_ours = pooled_moments(runs)
    m_naive, v_naive = pooled_moments(nruns)
    s_ours, s_naive = np.sqrt(v_ours), np.sqrt(v_naive)
    dz = (m_naive - m_ours) / s_ours
    ratio = s_naive / s_ours
    names = model.param_names + model.hyper_names
    all_idx = np.arange(len(names))
    # Monte-Carlo noise of the difference of the pooled means (repeats ESS of each side, x runs)
    mc = np.sqrt(1 / (len(runs) * ess_repeats(runs, all_idx))
                 + 1 / (len(nruns) * ess_repeats(nruns, all_idx)))
    worst = np.argsort(-np.abs(dz))[:3]
    print(f"posterior means (pooled over the runs; ours {label}), |naive - ours| / sigma: max "
          f"{np.max(np.abs(dz)):.3f} ({', '.join(f'{names[i]} {dz[i]:+.3f}' for i in worst)}), rms "
          f"{np.sqrt(np.mean(dz**2)):.3f}; {np.mean(np.abs(dz) < 0.1) * 100:.0f} % within 0.1  "
          f"[Monte-Carlo noise of the difference: median {np.median(mc):.3f}, max {np.max(mc):.3f}]")
    wr = np.argsort(-np.abs(ratio - 1))[:3]
    print(f"posterior sds, naive / ours {label}: {np.min(ratio):.3f}-{np.max(ratio):.3f} "
          f"({', '.join(f'{names[i]} {ratio[i]:.3f}' for i in wr)}); "
          f"{np.mean(np.abs(ratio - 1) < 0.1) * 100:.0f} % within 10 %")
    lin = np.arange(model.G)
    print(f"   linear parameters: max |dz| {np.max(np.abs(dz[lin])):.3f}, sd ratio "
          f"{np.min(ratio[lin]):.3f}-{np.max(ratio[lin]):.3f}; hyperparameters {model.hyper_names}: dz "
          f"{np.round(dz[model.G:], 3)}, sd ratio {np.round(ratio[model.G:], 3)}")
    return dict(mean_dz_max=float(np.max(np.abs(dz))), mean_dz_rms=float(np.sqrt(np.mean(dz**2))),
                mean_dz_mc_noise_median=float(np.median(mc)),
                frac_mean_within_0_1=float(np.mean(np.abs(dz) < 0.1)),
                sd_ratio_min=float(np.min(ratio)), sd_ratio_max=float(np.max(ratio)),
                frac_sd_within_10pc=float(np.mean(np.abs(ratio - 1) < 0.1)),
                linear_dz_max=float(np.max(np.abs(dz[lin]))),
                linear_sd_ratio=[float(np.min(ratio[lin])), float(np.max(ratio[lin]))],
                hyper_names=model.hyper_names, hyper_dz=dz[model.G:].tolist(),
                hyper_sd_ratio=ratio[model.G:].tolist())


# --------------------------------------------------------------------------- driver
def ours_settings(degree, args, tuned):
    from astrocal.model.inference import FitSettings
    from astrocal.model.priors import Priors

    # the field's non-linear coefficients keep the fixed broad width here: the naive
    # sampler's target (NaivePosterior) is written for static Gaussian priors on the
    # linear parameters, and the comparison is of two samplers of one model
    base = dict(degree=degree, hole_errors=False, progress=False, priors=Priors(field_prior="fixed"))
    if tuned:
        base.update(walkers=args.walkers, target_neff=args.target_neff, min_steps=args.min_steps,
                    check_every=args.ours_check_every, n_draws=args.n_draws,
                    draws_per_phi=args.draws_per_phi)
    return FitSettings(**base)


def describe(s):
    return (f"walkers={s.walkers}, target_neff={s.target_neff}, min_steps={s.min_steps}, "
            f"check_every={s.check_every}, n_draws={s.n_draws}, draws_per_phi={s.draws_per_phi}")


def strip(run):
    """A run record without its (large) fit object."""
    return {k: v for k, v in run.items() if k != "fit"}


def run_degree(degree, args):
    from dataclasses import replace

    truth, pts, _ = make_campaign(args.seed + degree, degree, corner_px=3.0, hole_error_um=0.0,
                                  n_exposures=3, sigma_px=(0.005, 0.03))
    print(f"\n== degree {degree}: {pts.n_points} points, {pts.n_holes} holes, 3 exposures, "
          "no hole errors ==", flush=True)
    labels = ["default"] if args.no_tuned else ["default", "tuned"]
    main_label = "default"  # the headline; its fit also seeds the naive sampler
    settings = {lab: ours_settings(degree, args, lab != "default") for lab in labels}
    ours = {lab: [] for lab in labels}
    nruns = []
    naive = fit = None
    # ours and naive interleaved, so that a change of the machine's load hits both alike
    for r in range(args.ours_repeats):
        for lab in labels:
            s = replace(settings[lab], seed=args.seed + 1000 * r + 1)
            run = run_ours(pts, s)
            if lab == main_label and fit is None:
                fit = run["fit"]
            ours[lab].append(strip(run))
        if fit is not None and naive is None:
            with threadpool_limits(1, "blas"):
                naive, setup_s = naive_setup(pts, fit)
                a, b = check_against_model(naive, fit.model, fit.phi_map)
            print(f"check: log p(y|phi_MAP) JointModel {a:.6f}, dense joint + Gaussian identity {b:.6f} "
                  f"(difference {a - b:.2e})", flush=True)
            if not abs(a - b) <= 1e-3 + 1e-7 * abs(a):
                raise RuntimeError("the naive posterior does not reproduce JointModel's likelihood: "
                                   "update NaivePosterior to the model")
        while len(nruns) < args.repeats and len(nruns) * args.ours_repeats <= r * args.repeats:
            with threadpool_limits(1, "blas"):
                c0 = time.process_time()
                nv = run_naive(naive, fit.g_samples, fit.phi_samples, args.seed + 1000 * len(nruns) + 7, args)
                nv["cpu_seconds"] = time.process_time() - c0 + setup_s
            nv["sampling_seconds"] = nv["seconds"]
            nv["seconds"] = nv["seconds"] + setup_s
            nruns.append(nv)
    model = fit.model
    rec = {"degree": degree, "n_points": int(pts.n_points), "n_parameters_naive": int(naive.ndim)}
    for lab in labels:
        runs, s0 = ours[lab], settings[lab]
        ph = {k: np.mean([r["phases"][k] for r in runs]) for k in PHASES}
        other = np.mean([r["seconds"] for r in runs]) - sum(ph.values())
        print(f"ours [{lab}: {describe(s0)}]: "
              f"{len(runs)} runs, {np.mean([r['seconds'] for r in runs]):.2f} s each (emcee "
              f"{ph['run_emcee']:.2f}, exact draws {ph['draw_linear']:.2f}, outlier EM {ph['find_outliers']:.2f}, "
              f"rest {other:.2f}: preliminary fit, MAP, evidence, checks); chain "
              f"{np.mean([r['steps'] for r in runs]):.0f} steps x {runs[0]['walkers']} walkers, "
              f"{runs[0]['n_phi']} kept x {s0.draws_per_phi} = {runs[0]['n_draws']} draws; "
              f"{sum(r['converged'] for r in runs)}/{len(runs)} chains >= 50 tau", flush=True)
    nt = model.nt
    idx = np.arange(2 * nt)
    taus = np.array([nv["tau"] for nv in nruns])
    print(f"naive: {naive.ndim} parameters, {nruns[0]['walkers']} walkers, {len(nruns)} runs, "
          f"{np.mean([nv['steps'] for nv in nruns]):.0f} steps in {np.mean([nv['seconds'] for nv in nruns]):.2f} s "
          f"each (setup {setup_s:.3f} s; acceptance {np.mean([nv['acceptance'] for nv in nruns]):.2f}); "
          f"tau max {np.mean(taus.max(1)):.0f} steps, map coefficients tau {np.mean(taus[:, idx].min(1)):.0f}-"
          f"{np.mean(taus[:, idx].max(1)):.0f}; {sum(nv['converged'] for nv in nruns)}/{len(nruns)} "
          ">= 50 tau", flush=True)
    # ---- posterior agreement, pooled over repeats, for each of our settings
    rec["check_loglike"] = [a, b]
    for lab in labels:
        agreement = posterior_agreement(ours[lab], nruns, model, lab)
        if lab == main_label:
            rec.update(agreement)
        rec.setdefault("agreement", {})[lab] = agreement
    # ---- effective samples per second of the map coefficients
    target = 30 if degree <= 3 else 100
    sn = summarise(nruns, idx)
    rec["naive"] = dict(sn, walkers=nruns[0]["walkers"], steps=float(np.mean([nv["steps"] for nv in nruns])),
                        setup_seconds=setup_s, repeats=len(nruns), tau_max=float(np.mean(taus.max(1))),
                        converged=int(sum(nv["converged"] for nv in nruns)))
    print(f"effective samples (ESS) of the {2 * nt} map coefficients per run [median / min over them] and "
          f"ESS per second of the median (whole wall time; sampling phase only; CPU time):")

    def line(name, x):
        print(f"   {name:10s}: repeats {x['ess_rep_median']:7.0f} / {x['ess_rep_min']:7.0f}, autocorr "
              f"{x['ess_ac_median']:7.0f} / {x['ess_ac_min']:7.0f}; {x['seconds']:6.2f} s -> "
              f"{x['ess_rep_median'] / x['seconds']:8.1f} /s (autocorr {x['ess_ac_median'] / x['seconds']:8.1f}); "
              f"sampling {x['sampling_seconds']:6.2f} s -> {x['ess_rep_median'] / x['sampling_seconds']:8.1f} /s; "
              f"CPU {x['cpu_seconds']:6.2f} s", flush=True)

    line("naive", sn)
    rec["ours"] = {}
    for lab in labels:
        runs, s0 = ours[lab], settings[lab]
        so = summarise(runs, idx)

        def rate(x, ess, secs):
            return x[ess] / x[secs]

        ratios = {
            "rep_median": rate(so, "ess_rep_median", "seconds") / rate(sn, "ess_rep_median", "seconds"),
            "rep_min": rate(so, "ess_rep_min", "seconds") / rate(sn, "ess_rep_min", "seconds"),
            "ac_median": rate(so, "ess_ac_median", "seconds") / rate(sn, "ess_ac_median", "seconds"),
            "ac_min": rate(so, "ess_ac_min", "seconds") / rate(sn, "ess_ac_min", "seconds"),
            "rep_median_sampling": (rate(so, "ess_rep_median", "sampling_seconds")
                                    / rate(sn, "ess_rep_median", "sampling_seconds")),
            "rep_median_cpu": rate(so, "ess_rep_median", "cpu_seconds") / rate(sn, "ess_rep_median", "cpu_seconds"),
        }
        ci = bootstrap_ratio(runs, nruns, idx)
        line(f"ours {lab}", so)
        print(f"      ratio ours/naive: repeats median {ratios['rep_median']:.1f}x (68 % {ci[0]:.1f}-{ci[1]:.1f}), "
              f"min {ratios['rep_min']:.1f}x; autocorr median {ratios['ac_median']:.1f}x, min "
              f"{ratios['ac_min']:.1f}x; sampling phases only {ratios['rep_median_sampling']:.1f}x; CPU time "
              f"{ratios['rep_median_cpu']:.1f}x  [target >= {target}x]", flush=True)
        plain = np.mean([r["ess_ac_plain"][idx] for r in runs], axis=0)
        rec["ours"][lab] = dict(so, settings=describe(s0), repeats=len(runs), ratios=ratios,
                                ratio_rep_median_68=ci, n_draws=runs[0]["n_draws"],
                                ess_ac_plain_median=float(np.median(plain)), ess_ac_plain_min=float(np.min(plain)),
                                steps=float(np.mean([r["steps"] for r in runs])),
                                converged=int(sum(r["converged"] for r in runs)),
                                phases={k: float(np.mean([r["phases"][k] for r in runs])) for k in PHASES})
    rec["target"] = target
    return rec


def git_state():
    """HEAD and whether src/ differs from it (the figures depend on the working copy)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root, capture_output=True,
                               text=True).stdout.strip()
        return {"head": head, "src_modified": bool(dirty)}
    except OSError:
        return {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--degrees", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=10, help="naive runs per degree (different seeds)")
    ap.add_argument("--ours-repeats", type=int, default=None,
                    help="fit_joint runs per degree and settings (default: twice --repeats)")
    ap.add_argument("--max-steps", type=int, default=1_000_000, help="most naive steps per run")
    ap.add_argument("--thin", type=int, default=10, help="store every THIN-th naive step")
    ap.add_argument("--check-every", type=int, default=500, help="stored naive steps between tau checks")
    g = ap.add_argument_group("our tuned FitSettings")
    g.add_argument("--walkers", type=int, default=TUNED["walkers"])
    g.add_argument("--target-neff", type=int, default=TUNED["target_neff"])
    g.add_argument("--min-steps", type=int, default=TUNED["min_steps"])
    g.add_argument("--ours-check-every", type=int, default=TUNED["check_every"])
    g.add_argument("--n-draws", type=int, default=TUNED["n_draws"])
    g.add_argument("--draws-per-phi", type=int, default=TUNED["draws_per_phi"])
    g.add_argument("--no-tuned", action="store_true", help="run ours with the default settings only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.ours_repeats is None:
        args.ours_repeats = 2 * args.repeats
    if args.repeats < 2 or args.ours_repeats < args.repeats:
        ap.error("--repeats must be >= 2 and --ours-repeats >= --repeats (ESS from the spread "
                 "across repeats)")
    quiet_logs()
    time_phases()
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    print(f"BLAS single-threaded for both; load average at start {load0[0]:.2f} {load0[1]:.2f} "
          f"{load0[2]:.2f} (2 shared cores: ours and naive runs are interleaved, so a change of "
          "load hits both alike; CPU-time ratios printed too)")
    recs = [run_degree(d, args) for d in args.degrees]
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    labels = ["default"] if args.no_tuned else ["default", "tuned"]
    print(f"\nsummary (ESS of the map coefficients per second: repeats method, median over the "
          f"coefficients, whole wall time; HEADLINE: ours with the DEFAULT FitSettings, the tuned "
          f"settings beside it; src as installed; {args.repeats} naive and {args.ours_repeats} runs "
          f"of ours per settings and degree):")
    print(f"{'degree':>6s} {'settings':>8s} {'ours s':>7s} {'ours ESS':>9s} {'naive s':>8s} {'naive ESS':>9s} "
          f"{'ESS/s ours':>10s} {'ESS/s naive':>11s} {'ratio':>7s} {'68 %':>11s} {'autocorr':>8s} "
          f"{'sampling':>8s} {'CPU':>6s} {'target':>6s} {'max|dz|':>7s} {'sd ratio':>11s}")
    for r in recs:
        n = r["naive"]
        for lab in labels:
            o, ag = r["ours"][lab], r["agreement"][lab]
            print(f"{r['degree']:6d} {lab:>8s} {o['seconds']:7.2f} {o['ess_rep_median']:9.0f} {n['seconds']:8.2f} "
                  f"{n['ess_rep_median']:9.0f} {o['ess_rep_median'] / o['seconds']:10.1f} "
                  f"{n['ess_rep_median'] / n['seconds']:11.1f} {o['ratios']['rep_median']:6.1f}x "
                  f"{o['ratio_rep_median_68'][0]:5.1f}-{o['ratio_rep_median_68'][1]:<5.1f} "
                  f"{o['ratios']['ac_median']:7.1f}x {o['ratios']['rep_median_sampling']:7.1f}x "
                  f"{o['ratios']['rep_median_cpu']:5.1f}x {r['target']:5d}x {ag['mean_dz_max']:7.3f} "
                  f"{ag['sd_ratio_min']:.3f}-{ag['sd_ratio_max']:.3f}")
        if len(labels) == 2:
            d, t = r["ours"]["default"]["ratios"], r["ours"]["tuned"]["ratios"]
            print(f"{'':6s} degree {r['degree']}: default {d['rep_median']:.1f}x (headline), tuned "
                  f"{t['rep_median']:.1f}x; worst coefficient (autocorrelation) default "
                  f"{d['ac_min']:.1f}x, tuned {t['ac_min']:.1f}x")
    print(f"total wall time {wall:.0f} s; load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"records": recs, "wall_seconds": wall, "load_start": load0,
                                        "load_end": load1, "emcee": emcee.__version__, "git": git_state(),
                                        "command": " ".join(sys.argv)}, indent=1))


if __name__ == "__main__":
    main()
