"""Blended reference stars as the star matcher sees them.

Reference stars closer to each other than the blend radius are one blended source to
:func:`astrocal.sky.match.match_stars`: predicted at their flux-weighted centre, with
their combined magnitude, and reported with their brightest member.  Positions are
nominal pixels (reference arcsec * 1000 / nominal pixel scale, parity not applied).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["Sources", "blend_groups", "make_sources"]


def blend_groups(c: np.ndarray, radius: float) -> tuple[np.ndarray, int]:
    """Connected groups of points closer than ``radius``.

    Parameters
    ----------
    c : np.ndarray
        (M, 2) positions, nominal px.
    radius : float
        Blend radius, nominal px.

    Returns
    -------
    labels : np.ndarray
        (M,) group index of each point.
    n_groups : int
        The number of groups.
    """
    m = len(c)
    if m == 0:
        return np.zeros(0, np.int64), 0
    pairs = cKDTree(c).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return np.arange(m), m
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    n, labels = connected_components(g, directed=False)
    return labels, n


@dataclass
class Sources:
    """The reference as the matcher sees it: single stars and blended groups."""

    c: np.ndarray             # (K, 2) nominal px, parity NOT applied
    mag: np.ndarray | None    # (K,) combined magnitude
    rep: np.ndarray           # (K,) reference index reported (brightest member)
    members: list             # K arrays of reference indices
    is_blend: np.ndarray      # (K,) bool
    extent: np.ndarray        # (K,) largest distance of a member from the centre (px), 0 for singles


def make_sources(c: np.ndarray, mag: np.ndarray | None, radius: float) -> Sources:
    """Group the reference stars into single and blended sources.

    Parameters
    ----------
    c : np.ndarray
        (M, 2) reference positions, nominal px (parity not applied).
    mag : np.ndarray or None
        (M,) reference magnitudes.
    radius : float
        Blend radius, nominal px.

    Returns
    -------
    Sources
        A blend with finite magnitudes sits at the flux-weighted centre of its members,
        with their combined magnitude, represented by its brightest member; without
        magnitudes at their mean position, represented by its first member.
    """
    labels, n = blend_groups(c, radius)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n + 1))
    members = [order[bounds[k]:bounds[k + 1]] for k in range(n)]
    cs = np.empty((n, 2))
    ms = None if mag is None else np.empty(n)
    rep = np.empty(n, np.int64)
    blend = np.zeros(n, bool)
    extent = np.zeros(n)
    for k, mem in enumerate(members):
        if len(mem) == 1:
            cs[k] = c[mem[0]]
            rep[k] = mem[0]
            if ms is not None:
                ms[k] = mag[mem[0]]
            continue
        blend[k] = True
        if mag is not None and np.all(np.isfinite(mag[mem])):
            f = 10 ** (-0.4 * (mag[mem] - np.min(mag[mem])))
            cs[k] = (f[:, None] * c[mem]).sum(axis=0) / f.sum()
            ms[k] = np.min(mag[mem]) - 2.5 * math.log10(f.sum())
            rep[k] = mem[int(np.argmin(mag[mem]))]
        else:
            cs[k] = c[mem].mean(axis=0)
            rep[k] = mem[0]
            if ms is not None:
                ms[k] = np.nan
        extent[k] = float(np.max(np.hypot(*(c[mem] - cs[k]).T)))
    return Sources(cs, ms, rep, members, blend, extent)
