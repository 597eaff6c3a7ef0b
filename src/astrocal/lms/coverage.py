"""Which slices a campaign's laser spots reach, per echelle setting, and what that leaves
to the priors.

Traces and slice edges measure a slice's geometry along the slice and across the
dispersion, but not a shift along the dispersion: that is a shift in wavelength. Only laser
spots fix a slice's columns (its wavelength zero point). The WCU mask's fine-grid holes lie
every 8 slices across the field, so an exposure's spots fall on one class of slices (slice
number modulo 8), the class its chopper offset across the slices selects; offsets across of
whole slice widths never let an exposure reach two classes (``docs/lms.md``, "Designing the
offsets"). So:

* a slice with no laser spot in a setting has its columns from the prior alone (the
  hierarchical prior that keeps the slices alike) and the data of its neighbours;
* a slice whose spots all come from one exposure has that exposure's chopper error along the
  dispersion (``across_px_per_mas`` x ``offset_sigma_mas``) in its columns, not averaged down
  by other exposures: the mean of a class's exposures is known only from their prior, to
  ``across x offset_sigma / sqrt(n)`` for ``n`` laser exposures.

:func:`laser_coverage` counts, per setting and slice, the laser exposures whose usable spots
reach it; :func:`coverage_notes` says what that leaves to the priors. The LMS fit logs the notes,
writes them to ``lms_fit.json`` (``coverage``, ``coverage_notes``), prints them in the
command's summary and shows them on the report page.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table

from .traces import N_SLICES

__all__ = ["laser_coverage", "coverage_notes"]


def laser_coverage(spots: Table | None, settings_um: Sequence[float]) -> list[dict]:
    """The laser exposures whose spots reach each slice, per echelle setting.

    Parameters
    ----------
    spots : astropy.table.Table or None
        The fit's stacked spots table (:func:`astrocal.lms.fit.stack_tables`: ``slice``
        1..28, ``setting`` the index into ``settings_um``, ``exposure``, ``flags``, ``col``,
        ``row``); only the rows the fit uses count (:func:`astrocal.lms.fit.usable`).
        None: no spots.
    settings_um : sequence of float
        The settings' central wavelengths [um], in the order of the ``setting`` indices.

    Returns
    -------
    list of dict
        Per setting: ``lam_c_um``; ``exposures_per_slice`` (28 counts, slices 1..28);
        ``slices_without_spots`` and ``single_exposure_slices`` (slice numbers).
    """
    from .fit import usable  # lazy: astrocal.lms.fit imports this module

    out = []
    if spots is not None and len(spots):
        ok = usable(spots)
        sl = np.asarray(spots["slice"], int)[ok]
        st = np.asarray(spots["setting"], int)[ok]
        ex = np.asarray(spots["exposure"], int)[ok]
    else:
        sl = st = ex = np.zeros(0, int)
    for k, lam in enumerate(settings_um):
        m = st == k
        pairs = np.unique(np.stack([sl[m], ex[m]], axis=1), axis=0) if m.any() else np.zeros((0, 2), int)
        counts = np.bincount(pairs[:, 0], minlength=N_SLICES + 1)[1:N_SLICES + 1]
        out.append({"lam_c_um": float(lam), "exposures_per_slice": counts.astype(int).tolist(),
                    "slices_without_spots": (np.flatnonzero(counts == 0) + 1).tolist(),
                    "single_exposure_slices": (np.flatnonzero(counts == 1) + 1).tolist()})
    return out


def _ranges(slices):
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    s = sorted(int(v) for v in slices)
    parts, i = [], 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        parts.append(f"{s[i]}-{s[j]}" if j > i else f"{s[i]}")
        i = j + 1
    return ", ".join(parts)


def coverage_notes(coverage: Sequence[dict], across_px_per_mas: float | None = None,
                   offset_sigma_mas: float | None = None) -> list[str]:
    """What :func:`laser_coverage` leaves to the priors, one sentence per setting and case.

    Parameters
    ----------
    coverage : sequence of dict
        :func:`laser_coverage`'s result.
    across_px_per_mas, offset_sigma_mas : float, optional
        The laser exposures' along-dispersion shift per mas of chopper error across the slices
        [px/mas; the fit gives the sampled scale's posterior median] and the chopper's stated
        accuracy [mas]: with both, the single-exposure note gives the error they leave in those
        slices' columns [px].

    Returns
    -------
    list of str
        Empty when every slice of every setting has spots from two exposures or more.
    """
    notes = []
    for c in coverage:
        lam = f"{c['lam_c_um']:g} um"
        none, single = c["slices_without_spots"], c["single_exposure_slices"]
        if none:
            notes.append(f"{lam}: {len(none)} of {N_SLICES} slices have no laser spot (slices {_ranges(none)}): "
                         "their columns (wavelength zero points) rest on the prior that keeps the slices alike, "
                         "as traces and edges do not see a shift along the dispersion; chopper offsets across "
                         "the slices that bring the mask's fine-grid holes onto them (every slice class, slice "
                         "number modulo 8) fix this (docs/lms.md, 'Designing the offsets')")
        if single:
            size = ""
            if across_px_per_mas and offset_sigma_mas:
                size = f" (about {float(across_px_per_mas) * float(offset_sigma_mas):.3g} px)"
            notes.append(f"{lam}: {len(single)} slices have laser spots from one exposure only (slices "
                         f"{_ranges(single)}): that exposure's chopper error along the dispersion{size} stays "
                         "in their columns, not averaged over exposures; more offsets across, giving every "
                         "slice class the same number of laser exposures, lower it")
    return notes
