"""What the data leave unconstrained or do not separate: the fit's gauge warnings.

:func:`unconstrained_directions` compares the posterior draws of the global parameters (and
the hole errors) with their priors; :func:`inseparable_directions` looks for combinations
of parameters that only the regularising priors (:func:`weak_parameters`) tell apart, from
the data's own information at one ``phi``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from .joint import JointModel



#: draws used by :func:`unconstrained_directions` (an evenly spaced subset of more)
UNCONSTRAINED_MAX_DRAWS = 5000


def unconstrained_directions(model: JointModel, g_samples: np.ndarray, threshold: float = 0.5,
                             hole_samples: np.ndarray | None = None,
                             phi_samples: np.ndarray | None = None) -> list[str]:
    """Names of the directions the data leave unconstrained.

    Global parameters whose posterior width is more than ``threshold`` of the prior width,
    whitened combinations of them, and the hole errors when their posterior is as wide as
    their prior (the data do not separate them from the distortion). At most
    :data:`UNCONSTRAINED_MAX_DRAWS` draws are used (evenly spaced).

    Parameters
    ----------
    model : JointModel
        The model the draws are of.
    g_samples : numpy.ndarray
        Draws of the global parameters (n, G).
    threshold : float
        Posterior over prior width above which a direction is unconstrained.
    hole_samples : numpy.ndarray, optional
        Draws of the hole errors (n, holes, 2), arcsec.
    phi_samples : numpy.ndarray, optional
        The hyperparameters of each draw (n, ndim); their median sets the prior widths.

    Returns
    -------
    list of str
        The directions' names.
    """
    if len(g_samples) > UNCONSTRAINED_MAX_DRAWS:  # evenly spaced subset: the test needs widths only
        keep = np.linspace(0, len(g_samples) - 1, UNCONSTRAINED_MAX_DRAWS).astype(int)
        g_samples = g_samples[keep]
        hole_samples = None if hole_samples is None else hole_samples[keep]
        phi_samples = None if phi_samples is None else phi_samples[keep]
    phi_mid = None if phi_samples is None else np.median(phi_samples, axis=0)
    prior_sd = model.prior_sd(phi_mid if phi_mid is not None else model.initial_guess(), broad_field=True)
    # parameters that no point depends on (e.g. the chopper frame without lab offsets)
    # are not reported: nothing is claimed about them
    used = np.ones(model.G, bool)
    used[2 * model.nt:model.p0] = np.any(model.E != 0, axis=(0, 1))
    # the mask's net scale and shears are known from their prior alone, by design (the
    # field's affine part absorbs them): stated, not reported
    used[model.mask_cols] = False
    used[model.res_cols] = False  # a Gaussian process: away from the data its prior, by design
    pn = [model.param_names[k] for k in np.flatnonzero(used)]
    g_samples = g_samples[:, used]
    prior_sd = prior_sd[used]
    post = g_samples.std(axis=0, ddof=1)
    ratio = post / prior_sd
    names = [pn[k] for k in np.flatnonzero(ratio > threshold)]
    # also whitened eigen-directions (combinations of parameters)
    cov = np.cov(g_samples.T) / np.outer(prior_sd, prior_sd)
    w, v = np.linalg.eigh(cov)
    for k in np.flatnonzero(np.sqrt(np.maximum(w, 0)) > threshold):
        top = np.argsort(-np.abs(v[:, k]))[:3]
        combo = " + ".join(f"{v[i, k]:+.2f}*{pn[i]}" for i in top)
        if not any(pn[i] in names for i in top[:1]):
            names.append(f"combination {combo}")
    if hole_samples is not None and phi_samples is not None and model.i_hole is not None:
        # holes seen in one exposure only are never separable from the distortion (their
        # posterior is their prior by construction); the question is about the others
        hole_src = model.block_sources[model.hole_blocks]
        seen = np.bincount(model.points.hole, minlength=model.points.n_holes)[hole_src]
        multi = seen >= 2
        hole_sd = np.exp(np.median(phi_samples[:, model.i_hole]))
        if multi.any():
            ratio = np.median(hole_samples[:, multi].std(axis=0, ddof=1)) / hole_sd
            if ratio > threshold:
                names.append(f"hole_errors (posterior width {ratio:.2f} of the prior's: the data do "
                             "not separate the holes' errors from the distortion)")
        else:
            names.append("hole_errors (no hole is seen in two exposures)")
    return names


def weak_parameters(model: JointModel) -> np.ndarray:
    """Global parameters whose prior is a regulariser rather than a measurement.

    The field's coefficients, the flexure coefficients and the sky exposures' poses (the
    telescope's pointing, position angle and scale are not known to the accuracy that
    matters).

    Parameters
    ----------
    model : JointModel
        The model.

    Returns
    -------
    numpy.ndarray
        Bool over the global parameters (G,).
    """
    weak = np.zeros(model.G, bool)
    weak[:2 * model.nt] = True
    weak[model.flex_cols] = True
    pts = model.points
    for e in range(pts.n_exposures):
        slot = model.pose_slot[e]
        if slot >= 0 and pts.exposure_kind[e] == 1:
            weak[model.p0 + 4 * slot:model.p0 + 4 * slot + 4] = True
    return weak


def inseparable_directions(model: JointModel, phi: ArrayLike, threshold: float = 0.5,
                           tol: float = 1e-10) -> list[tuple[str, list[str]]]:
    """Combinations of parameters that the data (and the measured priors: commanded offsets,
    catalogue errors, hole errors) do not separate, named by their largest members.

    The precision of the global parameters with the regularising priors
    (:func:`weak_parameters`) left out is whitened by those priors' widths; a direction
    whose whitened information is below ``1 / threshold**2 - 1`` would have a posterior
    wider than ``threshold`` of its prior (only the prior tells it). A direction is "no
    information" when its Jacobi-scaled information is below ``tol`` (rounding level: the
    scaled matrix has a unit diagonal); a small but real information (e.g. a common shift of
    every sky exposure, told by the catalogue's errors only, ~1e-7 of what one exposure's
    stars give) is compared with its prior like any other.

    Parameters
    ----------
    model : JointModel
        The model.
    phi : array_like
        The hyperparameters (ndim,) (or a row of them) to evaluate the information at.
    threshold : float
        Posterior over prior width above which a direction counts as not separated.
    tol : float
        Scaled information below which a direction has no information.

    Returns
    -------
    list of tuple
        ``(description, members)``: flexure terms that mimic the instrument field (a sky-only
        fit), field terms that mimic the sky poses, and so on.
    """
    phi = np.atleast_2d(np.asarray(phi, float))[:1]
    weak = weak_parameters(model)
    sys = model.system(phi, weak=weak)
    S = sys["S"][0]
    sd = model.prior_sd(phi, broad_field=True)
    idx = np.flatnonzero(weak)
    rest = np.flatnonzero(~weak)
    # information on the weak block after marginalising the others (their priors kept)
    Sww = S[np.ix_(idx, idx)]
    if rest.size:
        Swr = S[np.ix_(idx, rest)]
        Srr = S[np.ix_(rest, rest)]
        Sww = Sww - Swr @ np.linalg.solve(Srr, Swr.T)
    # Jacobi scaling keeps the eigen-decomposition well conditioned whatever the units
    dj = np.sqrt(np.maximum(np.diag(Sww), 1e-300))
    C = Sww / np.outer(dj, dj)
    w, v = np.linalg.eigh(0.5 * (C + C.T))
    limit = 1.0 / threshold**2 - 1.0
    out = []
    for k in range(w.size):
        # the combination theta = t x: the data give t a precision w[k], the priors
        # sum (x / sd)**2; only the prior tells t when the data's share is small
        x = v[:, k] / dj
        prior_prec = float(np.sum((x / sd[idx]) ** 2))
        null = w[k] < tol
        if not (null or w[k] < limit * prior_prec):
            continue
        why = "no information" if null else f"data information {w[k] / prior_prec:.2g} of its prior's"
        combo, members = _describe_direction(v[:, k], [model.param_names[i] for i in idx])
        out.append((f"{combo} ({why})", members))
    return out


def _describe_direction(vec, names, floor=0.1):
    """A readable name for a direction: per kind of parameter (field, flexure, each pose
    component) its largest members; a pose component shared by many exposures is summed
    up as one term."""
    vec = np.asarray(vec) / np.max(np.abs(vec))
    groups = {}
    for i, n in enumerate(names):
        kind = n.split("[", 1)[0]
        kind = "field" if kind in ("cu", "cv") else kind
        groups.setdefault(kind, []).append(i)
    parts, members = [], []
    for kind, ids in groups.items():
        ids = [i for i in ids if abs(vec[i]) >= floor]
        if not ids:
            continue
        ids.sort(key=lambda i: -abs(vec[i]))
        if kind.startswith("pose_") and len(ids) > 3:
            parts.append(f"{kind}[{len(ids)} exposures, mean {np.mean(vec[ids]):+.2f}]")
            members += [names[i] for i in ids]
            continue
        for i in ids[:3]:
            parts.append(f"{vec[i]:+.2f}*{names[i]}")
            members.append(names[i])
    return " + ".join(parts), members
