"""The ``[measure]``, ``[fit]`` and ``[earth]`` tables: how the stages run (output
directories, PSF model, the fit's degree, sampler, priors and the flexure model of the sky
data: ``flexure_degree``, ``flexure_functions``, ``flexure_radius_arcsec``) and which
Earth-orientation tables they use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np

from ..model.flexure import DEFAULT_FUNCTIONS, FlexureBasis
from .keys import DEGREE_CHOICES, EARTH_KEYS, FIELD_PRIORS, FIT_KEYS, MEASURE_KEYS, RESIDUAL_CHOICES
from .schema import EarthSettings, FitSettings, InstrumentSpec, MeasureSettings
from .values import Context, check_keys, existing, integer, one_of, quantity, string


def read_measure(ctx: Context, base: Path, table: dict) -> MeasureSettings:
    """``[measure]``: the output directory and the PSF model.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    table : dict
        The ``[measure]`` table.

    Returns
    -------
    MeasureSettings
    """
    check_keys(ctx, table, MEASURE_KEYS, "measure.")
    output = base / string(ctx, table.get("output", "measured/"), "measure.output")
    psf = string(ctx, table.get("psf", "model"), "measure.psf")
    if psf not in ("model", "epsf"):
        raise ctx.error("measure.psf", f"must be 'model' or 'epsf', got {psf!r}")
    return MeasureSettings(output=output, psf=psf)


def read_flexure(ctx: Context, table: dict, instrument: InstrumentSpec) -> tuple[int, tuple, float]:
    """``flexure_degree``, ``flexure_functions``, ``flexure_radius_arcsec`` of ``[fit]``,
    validated by :class:`~astrocal.model.flexure.FlexureBasis`.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    table : dict
        The ``[fit]`` table.
    instrument : InstrumentSpec
        The instrument (the default radius is half the detector's field of view).

    Returns
    -------
    tuple
        ``(degree, functions, radius)``: int, tuple of str, float [arcsec].
    """
    degree = integer(ctx, table.get("flexure_degree", 2), "fit.flexure_degree", minimum=1)
    if degree > 5:
        raise ctx.error("fit.flexure_degree", f"must be an integer 1..5, got {degree}")
    functions = table.get("flexure_functions", list(DEFAULT_FUNCTIONS))
    if (not isinstance(functions, list) or not functions
            or not all(isinstance(f, str) for f in functions)):
        raise ctx.error("fit.flexure_functions", f"expected a non-empty list of names, got {functions!r}")
    if "flexure_radius_arcsec" in table:
        radius = quantity(ctx, table["flexure_radius_arcsec"], u.arcsec, "fit.flexure_radius_arcsec")
    else:  # half the detector's field of view
        radius = 0.5 * max(instrument.detector_shape) * instrument.pixel_scale_mas / 1e3
    try:
        FlexureBasis(degree, tuple(functions), radius)
    except ValueError as exc:
        key = ("fit.flexure_radius_arcsec" if "radius" in str(exc) else "fit.flexure_functions")
        raise ctx.error(key, str(exc)) from None
    return degree, tuple(functions), float(radius)


def read_fit(ctx: Context, base: Path, table: dict, instrument: InstrumentSpec) -> FitSettings:
    """``[fit]``: the joint fit's settings.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    table : dict
        The ``[fit]`` table.
    instrument : InstrumentSpec
        The instrument (for the flexure model's default radius).

    Returns
    -------
    FitSettings
    """
    check_keys(ctx, table, FIT_KEYS, "fit.")
    degree = table.get("degree", "auto")
    if degree != "auto":
        degree = integer(ctx, degree, "fit.degree", minimum=1)
        if degree > 12:
            raise ctx.error("fit.degree", f"must be 'auto' or 1..12, got {degree}")
    rng = table.get("degree_range", [3, 8])
    if (not isinstance(rng, list) or len(rng) != 2 or not all(isinstance(v, int) for v in rng)
            or not 1 <= rng[0] <= rng[1] <= 12):
        raise ctx.error("fit.degree_range", f"expected [low, high] with 1 <= low <= high <= 12, got {rng!r}")
    output = base / string(ctx, table.get("output", "out/"), "fit.output")
    walkers = integer(ctx, table.get("walkers", 32), "fit.walkers", minimum=4)
    steps = integer(ctx, table.get("steps", 15000), "fit.steps", minimum=1)
    seed = table.get("seed")
    if seed is not None:
        seed = integer(ctx, seed, "fit.seed", minimum=0)
    hole_errors = table.get("hole_errors", True)
    if not isinstance(hole_errors, bool):
        raise ctx.error("fit.hole_errors", f"expected true or false, got {hole_errors!r}")
    field_prior = one_of(ctx, table.get("field_prior", "curved"), "fit.field_prior", FIELD_PRIORS)
    choice = one_of(ctx, table.get("degree_choice", "median"), "fit.degree_choice", DEGREE_CHOICES)
    fdeg, ffun, frad = read_flexure(ctx, table, instrument)
    mask_ppm = table.get("mask_affine_sigma_ppm")
    if mask_ppm is not None:
        mask_ppm = quantity(ctx, mask_ppm, u.dimensionless_unscaled, "fit.mask_affine_sigma_ppm")
        if not np.isfinite(mask_ppm) or mask_ppm < 0:
            raise ctx.error("fit.mask_affine_sigma_ppm", f"must be a number >= 0 (ppm), got {mask_ppm!r}")
    residual = one_of(ctx, table.get("residual", FitSettings.residual), "fit.residual", RESIDUAL_CHOICES)
    return FitSettings(output, degree, tuple(rng), walkers, steps, seed, hole_errors,
                       flexure_degree=fdeg, flexure_functions=ffun, flexure_radius_arcsec=frad,
                       field_prior=field_prior, degree_choice=choice, mask_affine_sigma_ppm=mask_ppm,
                       residual=residual)


def read_earth(ctx: Context, base: Path, table: Any) -> EarthSettings:
    """``[earth]``: the Earth-orientation and leap-second tables.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    table : object
        The ``[earth]`` table.

    Returns
    -------
    EarthSettings
    """
    if not isinstance(table, dict):
        raise ctx.error("earth", f"expected a table [earth], got {table!r}")
    check_keys(ctx, table, EARTH_KEYS, "earth.")
    files = {k: existing(ctx, base, table[k], f"earth.{k}") if table.get(k) is not None else None
             for k in ("iers_file", "leap_second_file")}
    for k, path in files.items():
        if path is not None and not path.is_file():
            raise ctx.error(f"earth.{k}", f"not a file: {path}")
    allow = table.get("allow_download", False)
    if not isinstance(allow, bool):
        raise ctx.error("earth.allow_download", f"expected true or false, got {allow!r}")
    return EarthSettings(files["iers_file"], files["leap_second_file"], allow)

