"""The emcee chain of the hyperparameters: running it, resuming it, and its convergence.

:func:`run_emcee` samples the hyperparameters (walkers evaluated together, optionally split
over a process pool, :class:`PooledPosterior`), writing the chain to HDF5 once per block of
steps (:mod:`astrocal.model.chainstore`) so a killed run resumes (after checking that it was
started with the same inputs); the independence proposal is adapted on the schedule of
:mod:`astrocal.model.proposal`. :func:`chain_summary` and :func:`diagnostics` give the
autocorrelation times, burn-in and effective samples (:class:`Diagnostics`).

emcee (which imports scipy.stats: about a second) and the chain's HDF5 backend are imported
where the chain is run, so the quick look (no chain) does not pay for them.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import AstrocalError
from .proposal import (LATE_ADAPTED_ACCEPTANCE, acceptance, adaptation_end, adaptation_schedule, fit_proposal,
                       laplace_proposal)

if TYPE_CHECKING:
    import emcee

    from .inference import FitSettings
    from .joint import JointModel

log = logging.getLogger(__name__)



@dataclass
class Diagnostics:
    """Convergence of the emcee chain of the hyperparameters (:func:`diagnostics`).

    ``tau``: integrated autocorrelation time per hyperparameter (steps); ``acceptance``:
    mean acceptance fraction; ``n_steps``, ``n_burn``: steps run and discarded as burn-in;
    ``n_effective``: effective samples per hyperparameter after burn-in (all walkers);
    ``converged``: the chain is at least 50 ``tau`` long; ``warnings``: the
    ``ConvergenceWarning`` messages.
    """

    tau: np.ndarray
    acceptance: float
    n_steps: int
    n_burn: int
    n_effective: np.ndarray
    converged: bool
    warnings: list




def _progress(setting):
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


_WORKER_MODEL = None


def _init_worker(model):
    global _WORKER_MODEL
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    _WORKER_MODEL = model


def _worker_log_posterior(phi):
    return _WORKER_MODEL.log_posterior(phi)


#: ``processes = "auto"``: walkers are split over a pool only for fits of at least this many
#: points (a dense mask: each walker's likelihood costs milliseconds); below it one process
#: is as fast, and tests and small fits start no pool
AUTO_POOL_POINTS = 4000
#: ``processes = "auto"``: at most this many worker processes
AUTO_POOL_MAX = 4


def pool_size(processes: int | str, n_points: int) -> int:
    """The worker processes of a fit of ``n_points`` points for the setting ``processes``.

    The chain does not depend on it: each walker's log-posterior is computed alone, so a
    split batch gives the same numbers bit for bit (``tests/model/test_fit.py``).

    Parameters
    ----------
    processes : int or str
        An integer, or ``"auto"``: the CPUs this process may use, at most
        :data:`AUTO_POOL_MAX`, when ``n_points >= AUTO_POOL_POINTS``, else 1.
    n_points : int
        The fit's points.

    Returns
    -------
    int
        At least 1.
    """
    if processes == "auto":
        if n_points < AUTO_POOL_POINTS:
            return 1
        return max(1, min(usable_cpus(), AUTO_POOL_MAX))
    return max(int(processes), 1)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity; elsewhere the machine's count).

    Returns
    -------
    int
        At least 1.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class PooledPosterior:
    """``log_posterior`` of a batch of walkers split over a process pool.

    emcee evaluates the walkers of a step together (``vectorize=True``); this splits the
    batch into one chunk per process. The model is sent to each worker once.
    """

    def __init__(self, model, processes):
        import multiprocessing as mp

        self.processes = int(processes)
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        self.pool = ctx.Pool(self.processes, initializer=_init_worker, initargs=(model,))

    def __call__(self, phi):
        chunks = np.array_split(np.atleast_2d(phi), self.processes)
        chunks = [c for c in chunks if len(c)]
        return np.concatenate(self.pool.map(_worker_log_posterior, chunks))

    def close(self) -> None:
        """Close the pool and wait for its workers."""
        self.pool.close()
        self.pool.join()


def default_moves() -> list[tuple[emcee.moves.Move, float]]:
    """The emcee moves of the hyperparameter chain.

    One :class:`~astrocal.model.moves.AdaptiveIndependenceMove`: differential evolution
    until its proposal is set (from the Laplace approximation at the start, refitted from
    the chain at the steps of :func:`~astrocal.model.proposal.adaptation_schedule`), then
    mostly independence proposals. No DESnookerMove: emcee 3.1.6's does not leave the target
    invariant (sds a few per cent too small; fixed upstream in dfm/emcee#531).

    Returns
    -------
    list of tuple
        ``[(move, weight), ...]``.
    """
    # lazy: moves imports emcee (and scipy.stats: about a second), which the quick look does not need
    from .moves import AdaptiveIndependenceMove

    return [(AdaptiveIndependenceMove(), 1.0)]


def run_emcee(model: JointModel, phi_map: np.ndarray, settings: FitSettings,
              hessian: np.ndarray | None = None) -> tuple[np.ndarray, emcee.EnsembleSampler]:
    """Sample the hyperparameters with emcee.

    The walkers start about ``phi_map`` (spread by the Laplace approximation's sds when
    ``hessian`` is given); with ``settings.backend_path`` the chain is written there once per
    block of steps and, with ``settings.resume``, a stored chain is continued after checking
    that it was started with the same walkers, hyperparameters and ``chain_record``.

    Parameters
    ----------
    model : JointModel
        The model (or any with ``ndim``, ``hyper_names``, ``bounds()`` and a vectorised
        ``log_posterior``, such as the LMS model).
    phi_map : numpy.ndarray
        The hyperparameters' MAP (ndim,).
    settings : astrocal.model.inference.FitSettings
        Walkers, steps, seed, stopping rule, backend, pool.
    hessian : numpy.ndarray, optional
        The Hessian of ``-log p`` at the MAP (the start's spread and the first proposal).

    Returns
    -------
    tuple
        The chain (steps, walkers, ndim) and the emcee sampler.

    Raises
    ------
    ChainMismatchError
        The chain to resume was started with other inputs.
    """
    import emcee

    # lazy: chainstore imports emcee (and scipy.stats: about a second): not for the quick look
    from .chainstore import BlockBackend, stored_iteration
    from .moves import AdaptiveIndependenceMove  # lazy: emcee, as above

    lo, hi = model.bounds()
    rng = np.random.default_rng(settings.seed)
    ndim = model.ndim
    nwalkers = max(int(settings.walkers), 2 * ndim + 2)
    scale = np.full(ndim, 1e-2)
    if hessian is not None:
        try:
            cov = np.linalg.inv(hessian)
            scale = np.sqrt(np.clip(np.diag(cov), 1e-8, 1.0))
        except np.linalg.LinAlgError:
            pass
    p0 = phi_map + scale * rng.standard_normal((nwalkers, ndim))
    p0 = np.clip(p0, lo + 1e-9, hi - 1e-9)
    start = laplace_proposal(phi_map, hessian, lo, hi) if hessian is not None else None
    backend = None
    if settings.backend_path is not None:
        path = Path(settings.backend_path)
        names = json.dumps(list(model.hyper_names))
        if settings.resume and path.exists() and stored_iteration(path) > 0:
            backend = BlockBackend.load(path)
            if backend.shape != (nwalkers, ndim):
                raise ChainMismatchError(f"{path}: the chain to resume has walkers/dimensions "
                                 f"{backend.shape}, this fit needs {(nwalkers, ndim)}")
            stored = backend.attrs.get("hyper_names")
            if stored != names:
                raise ChainMismatchError(f"{path}: the chain to resume has the hyperparameters "
                                 f"{stored or '(not recorded)'}, this fit {names}")
            _check_chain_record(path, backend.attrs.get("chain_record"), settings.chain_record)
        else:
            attrs = {"hyper_names": names}
            if settings.chain_record is not None:
                attrs["chain_record"] = json.dumps(settings.chain_record, sort_keys=True)
            backend = BlockBackend(path, attrs=attrs)
            backend.reset(nwalkers, ndim)
            backend.write()  # the empty chain with what it was started with
    moves = default_moves()
    points = getattr(model, "points", None)  # the LMS model has none: one process unless told
    n_pool = pool_size(settings.processes, points.n_points if points is not None else 0)
    pooled = PooledPosterior(model, n_pool) if n_pool > 1 else None
    if pooled is not None:
        log.info("emcee's walkers split over %d processes", n_pool)
    sampler = emcee.EnsembleSampler(nwalkers, ndim, pooled or model.log_posterior, vectorize=True,
                                    backend=backend, moves=moves)
    try:
        move = next((m for m, _ in moves if isinstance(m, AdaptiveIndependenceMove)), None)
        return _run_blocks(sampler, backend, p0, settings, move, (lo, hi), start)
    finally:
        if pooled is not None:
            pooled.close()


class ChainMismatchError(AstrocalError, ValueError):
    """The chain to resume was started with another campaign, seed or model settings."""


def _check_chain_record(path, stored, record):
    """Refuse to resume the chain in ``path`` when what it was started with (``stored``,
    the JSON text of its ``chain_record`` attr, or None) differs from this fit's
    ``record``, naming every difference."""
    if record is None:
        return
    if stored is None:
        raise ChainMismatchError(f"{path}: the chain records nothing of the campaign and settings it was "
                                 "started with (an older astrocal wrote it); it cannot be resumed safely: "
                                 "start again with --overwrite")
    stored = json.loads(stored)
    record = json.loads(json.dumps(record, sort_keys=True))
    changed = [f"{k}: {stored.get(k)!r} -> {record.get(k)!r}" for k in sorted(set(stored) | set(record))
               if stored.get(k) != record.get(k)]
    if changed:
        raise ChainMismatchError(f"{path}: the chain was started with other inputs than this fit's; not "
                                 f"resumed ({'; '.join(changed)}); restore them, or start again with --overwrite")




def _adapt(move, chain, step, bounds, start):
    """Set ``move``'s proposal for the chain from ``step`` on: the Laplace one (``start``)
    before the first refit, then one fitted to the second half of the steps since the
    previous refit (all walkers) at each refit of :func:`~astrocal.model.proposal.adaptation_schedule`;
    at the last refit, none (differential evolution alone) when the acceptance since the
    refit before is still below :data:`~astrocal.model.proposal.LATE_ADAPTED_ACCEPTANCE`.
    It depends on the stored chain only, so a resumed chain gets the same proposal."""
    past = None if chain is None else chain[:step]
    refits, ended, keep = adaptation_schedule(past)
    fits = [s for s in refits if s <= step]
    if not fits:
        move.proposal = start
        return
    s = fits[-1]
    prev = ([0] + [t for t in refits if t < s])[-1]
    window = chain[(prev + s) // 2:s]
    try:
        move.proposal = fit_proposal(window.reshape(-1, chain.shape[2]), *bounds)
    except ValueError:  # too few distinct samples: keep the one in use
        log.debug("proposal not refitted at step %d", s)
    accepted = acceptance(chain, prev, s)
    if ended and not keep:
        move.proposal = None
        log.info("independence proposal off from step %d: acceptance %.2f over steps %d-%d is below "
                 "%.2f; differential evolution alone", s, accepted, prev, s, LATE_ADAPTED_ACCEPTANCE)
    elif not ended:
        log.info("independence proposal refitted at step %d (acceptance %.2f over steps %d-%d); adapting "
                 "until step %d", s, accepted, prev, s, refits[-1])


def _run_blocks(sampler, backend, p0, settings, move=None, bounds=None, start=None):
    import emcee

    done = backend.iteration if backend is not None else 0
    if done > 0:
        state = backend.get_last_sample()
        log.info("resuming the chain at step %d", done)
    else:
        state = emcee.State(p0, random_state=np.random.RandomState(settings.seed).get_state())
    if move is not None:
        _adapt(move, sampler.get_chain() if done else None, done, bounds, start)
    # run in blocks, stopping once the chain after adaptation is >= 50 tau long and every
    # hyperparameter has target_neff effective samples after burn-in (a deterministic
    # rule, so a resumed run stops where an uninterrupted one would)
    every = int(settings.check_every)
    bar = None
    if _progress(settings.progress):
        from tqdm import tqdm

        bar = tqdm(total=int(settings.steps), initial=done, desc="emcee", unit="step")
    while done < settings.steps:
        if done >= settings.min_steps and _converged(sampler.get_chain(), settings):
            break
        refits, planned = [], []
        if move is not None:
            planned, _, _ = adaptation_schedule(sampler.get_chain() if done else None)
            refits = [s for s in planned if s > done]
        stop = min(done - done % every + every, int(settings.steps), *refits)
        n = stop - done
        state = sampler.run_mcmc(state, n, skip_initial_state_check=True)
        done += n
        if move is not None and done in planned:
            _adapt(move, sampler.get_chain(), done, bounds, start)
        if backend is not None:
            backend.write()  # once per block: a kill or a failed write loses one block at most
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    return sampler.get_chain(), sampler


def chain_summary(chain: np.ndarray, burn: int | str = "auto") -> tuple[np.ndarray, int, np.ndarray, bool]:
    """Autocorrelation times, burn-in, effective samples and convergence of a chain.

    The steps before the end of adaptation (the last refit,
    :func:`~astrocal.model.proposal.adaptation_end`, when the chain is at least twice that
    long) are burn-in; ``tau`` (steps, per hyperparameter) is estimated on the chain after
    them; ``burn`` ``"auto"`` adds 5 ``tau`` (at least a tenth and at most half of the steps
    after adaptation), an int fixes it; ``converged``: the chain after adaptation is at least
    50 ``tau`` long.

    Parameters
    ----------
    chain : numpy.ndarray
        (steps, walkers, ndim).
    burn : int or str
        ``"auto"`` or the steps to discard.

    Returns
    -------
    tuple
        ``(tau, burn, n_effective, converged)``.
    """
    import emcee

    steps, nwalkers, ndim = chain.shape
    end = adaptation_end(chain)
    adapted = end if steps >= 2 * end else 0
    after = chain[adapted:]
    quiet = logging.getLogger("emcee.autocorr")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # a short chain is expected here: that is what we test
    try:
        tau = emcee.autocorr.integrated_time(after, quiet=True)
    except Exception:  # pragma: no cover - emcee raises several types
        tau = np.full(ndim, np.nan)
    finally:
        quiet.setLevel(level)
    length = steps - adapted
    tau_max = float(np.nanmax(tau)) if np.isfinite(tau).any() else float(length)
    if burn == "auto":
        burn = adapted + int(min(max(5 * tau_max, 0.1 * length), length // 2))
    else:
        burn = int(burn)
    kept = steps - burn
    n_eff = kept * nwalkers / np.where(np.isfinite(tau), tau, max(kept, 1))
    converged = bool(np.all(np.isfinite(tau)) and length >= 50 * tau_max)
    return tau, burn, n_eff, converged


def _converged(chain, settings):
    if chain.shape[0] < 2 * adaptation_end(chain):  # not before twice the adaptation's length
        return False
    tau, _, n_eff, converged = chain_summary(chain, settings.burn)
    return converged and bool(np.all(n_eff >= settings.target_neff))


def diagnostics(chain: np.ndarray, sampler: emcee.EnsembleSampler, settings: FitSettings) -> Diagnostics:
    """Autocorrelation times, burn-in, effective samples and warnings of a chain.

    Parameters
    ----------
    chain : numpy.ndarray
        (steps, walkers, ndim).
    sampler : emcee.EnsembleSampler
        The sampler (for its acceptance fractions).
    settings : astrocal.model.inference.FitSettings
        ``burn``: ``"auto"`` or a number of steps (:func:`chain_summary`).

    Returns
    -------
    Diagnostics
        The chain's convergence.
    """
    steps = chain.shape[0]
    notes = []
    tau, burn, n_eff, converged = chain_summary(chain, settings.burn)
    tau_max = float(np.nanmax(tau)) if np.isfinite(tau).any() else float(steps)
    if not np.all(np.isfinite(tau)):
        notes.append("autocorrelation time not estimated")
    if not converged:
        notes.append(f"ConvergenceWarning: chain of {steps} steps is shorter than 50 "
                     f"autocorrelation times (max tau {tau_max:.1f}) after adaptation; run more steps")
    acc = float(np.mean(sampler.acceptance_fraction))
    if not 0.15 <= acc <= 0.95:
        notes.append(f"ConvergenceWarning: mean acceptance fraction {acc:.2f} is unusual")
    return Diagnostics(tau, acc, steps, burn, n_eff, converged, notes)
