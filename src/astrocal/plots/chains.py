"""Posterior and sampler plots: corner plots (corner), chains and autocorrelation (emcee)."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike


def corner_plot(samples: ArrayLike, names: Sequence[str], title: str | None = None,
                max_points: int = 2000) -> Figure:
    """Corner plot (the ``corner`` package) of posterior draws.

    Columns that never change (no information to plot) are left out and named in the
    title; at most ``max_points`` draws are used (thinned evenly).

    Parameters
    ----------
    samples : array_like
        (n, k) posterior draws.
    names : sequence of str
        The k parameter names.
    title : str, optional
        Figure title.
    max_points : int
        Largest number of draws plotted.

    Returns
    -------
    Figure
        The corner plot (16/50/84 % quantiles shown).

    Raises
    ------
    ValueError
        When the shapes do not match or no parameter varies.
    """
    import corner

    samples = np.asarray(samples, float)
    names = list(names)
    if samples.ndim != 2 or samples.shape[1] != len(names):
        raise ValueError(f"samples of shape {samples.shape} do not match {len(names)} names")
    if len(samples) > max_points:
        samples = samples[np.linspace(0, len(samples) - 1, max_points).astype(int)]
    varies = np.ptp(samples, axis=0) > 0
    dropped = [n for n, v in zip(names, varies) if not v]
    samples = samples[:, varies]
    names = [n for n, v in zip(names, varies) if v]
    if not names:
        raise ValueError("no parameter varies: nothing to plot")
    k = len(names)
    size = max(4.0, 1.7 * k)
    fig = Figure(figsize=(size, size))
    corner.corner(samples, labels=names, fig=fig, quantiles=(0.16, 0.5, 0.84), show_titles=True,
                  plot_datapoints=False, fill_contours=True, bins=25,
                  title_fmt=".3g", title_kwargs={"fontsize": 7}, label_kwargs={"fontsize": 7},
                  max_n_ticks=3)
    for ax in fig.axes:
        ax.tick_params(labelsize=6)
    text = title or ""
    if dropped:
        text += f" (constant, not shown: {', '.join(dropped)})"
    if text:
        fig.suptitle(text, fontsize=9)
    return fig


def autocorrelation_curve(chain: ArrayLike, n_points: int = 8,
                          min_steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Integrated autocorrelation time (emcee) of each parameter against chain length.

    Parameters
    ----------
    chain : array_like
        (steps, walkers, ndim) sampler chain.
    n_points : int
        Number of chain lengths (geometrically spaced from ``min_steps`` to all steps).
    min_steps : int
        The shortest chain length; a shorter chain gives one NaN row.

    Returns
    -------
    lengths : np.ndarray
        Chain lengths, steps.
    tau : np.ndarray
        (len(lengths), ndim) autocorrelation times, steps; NaN where it cannot be
        estimated.
    """
    import emcee

    chain = np.asarray(chain, float)
    steps = chain.shape[0]
    if steps < min_steps:
        return np.array([steps]), np.full((1, chain.shape[2]), np.nan)
    lengths = np.unique(np.geomspace(min_steps, steps, n_points).astype(int))
    quiet = logging.getLogger("emcee.autocorr")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        tau = np.array([emcee.autocorr.integrated_time(chain[:n], quiet=True, has_walkers=True)
                        for n in lengths])
    except Exception:  # pragma: no cover - emcee raises several types
        tau = np.full((len(lengths), chain.shape[2]), np.nan)
    finally:
        quiet.setLevel(level)
    return lengths, tau


def chain_plot(chain: ArrayLike, names: Sequence[str], burn: int = 0, title: str | None = None) -> Figure:
    """Traces of every walker for each hyperparameter (burn-in shaded), and the
    autocorrelation time against chain length with the ``tau = N / 50`` line that the
    fit's convergence rule uses.

    Parameters
    ----------
    chain : array_like
        (steps, walkers, ndim) sampler chain.
    names : sequence of str
        The ndim parameter names.
    burn : int
        Burn-in steps (shaded).
    title : str, optional
        Figure title (default: walkers, steps and burn-in).

    Returns
    -------
    Figure
        One trace panel per parameter and the autocorrelation panel.

    Raises
    ------
    ValueError
        When the number of names does not match the chain.
    """
    chain = np.asarray(chain, float)
    steps, walkers, ndim = chain.shape
    if ndim != len(names):
        raise ValueError(f"chain has {ndim} parameters but {len(names)} names")
    fig = Figure(figsize=(11.0, 1.6 * ndim + 2.8))
    gs = fig.add_gridspec(ndim + 1, 1, height_ratios=[1] * ndim + [1.6])
    for k in range(ndim):
        ax = fig.add_subplot(gs[k])
        ax.plot(chain[:, :, k], lw=0.4, alpha=0.5)
        if burn:
            ax.axvspan(0, burn, color="0.85", zorder=-1)
        ax.set_ylabel(names[k], fontsize=7)
        ax.tick_params(labelsize=7)
        if k < ndim - 1:
            ax.set_xticklabels([])
    ax.set_xlabel("step")
    at = fig.add_subplot(gs[ndim])
    lengths, tau = autocorrelation_curve(chain)
    for k in range(ndim):
        at.loglog(lengths, tau[:, k], "o-", ms=3, label=names[k])
    at.loglog(lengths, lengths / 50.0, "k--", lw=1, label="N / 50")
    at.set_xlabel("chain length N (steps)")
    at.set_ylabel("autocorrelation time")
    at.legend(fontsize=7, ncol=3)
    fig.suptitle(title or f"emcee chain: {walkers} walkers, {steps} steps (burn-in {burn} shaded)",
                 fontsize=9)
    fig.tight_layout()
    return fig
